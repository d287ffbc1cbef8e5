//! Index records in a compact binary form that loads without parsing any text, and decodes a
//! record only when someone asks for it.
//!
//! Parsing the 5,000 records of an Alpine index takes longer than resolving an image against
//! them, and a resolution looks at a few hundred records at most. The compact form therefore
//! keeps every record as its own byte range and carries a sorted table of every name a record
//! answers to (its own name and its provides) and every name that can trigger an `install_if`:
//! a lookup is a binary search, and a record is decoded the first time it is read.
//!
//! ```text
//! header   magic "PALLETIX" | format version u32 | CRC-32 of the body u32 | body length u64
//! body     source digest [32] | size limit u64 | counts and section offsets (u32 each)
//!          records table   (n + 1) × u32      start of each record in the records section
//!          names table     names × 5 × u32    name offset, name length, list start,
//!                                             providers count, triggered count
//!          lists           u32 record numbers (providers, then triggered, per name)
//!          strings         names and the description
//!          records         one encoded record after the other
//! ```
//!
//! All integers are little-endian; inside a record, strings are a LEB128 length and UTF-8
//! bytes, numbers LEB128, optional values a 0/1 byte first. The header's length and checksum
//! and the version turn a truncated, corrupt or older file into an error before anything is
//! read from it; the section bounds are checked when the file is loaded, and each record is
//! decoded with checked reads.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, OnceLock};

use pallet_apk_types::{Dependency, Op, PackageInfo};

/// Bump whenever the layout or the encoding of any field changes: a file of another version is
/// refused (and rebuilt by the cache).
pub const FORMAT_VERSION: u32 = 1;

const MAGIC: &[u8; 8] = b"PALLETIX";
/// Magic, version, CRC-32 and body length.
const HEADER: usize = 24;
/// Digest, size limit and the eleven counts and offsets.
const BODY_HEADER: usize = 32 + 8 + 11 * 4;
/// Name offset, name length, list start, providers, triggered.
const NAME_ENTRY: usize = 5 * 4;
/// No description.
const NONE: u32 = u32::MAX;

/// Why a compact file was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompactError {
    #[error("not a compact index")]
    Magic,
    #[error("compact index format {0}, this pallet reads format {FORMAT_VERSION}")]
    Version(u32),
    #[error("truncated or overlong: {got} bytes, the header says {want}")]
    Length { got: u64, want: u64 },
    #[error("checksum mismatch")]
    Checksum,
    #[error("made from another index")]
    Source,
    #[error("malformed: {0}")]
    Malformed(&'static str),
    #[error("too large for the compact form (4 GiB)")]
    TooLarge,
}

/// Providers and triggered records of one name.
type NameLists = (Vec<u32>, Vec<u32>);

/// The names a record answers to and the `install_if` names that can trigger it, as the
/// solver looks them up: name → (providers, triggered), each list ascending and without
/// repeats. A record whose `install_if` atoms are all conflicts is listed as triggered by the
/// empty name (no package has that name), since nothing needs to be chosen to trigger it.
fn name_lists(packages: &[PackageInfo]) -> BTreeMap<&str, NameLists> {
    let mut names: BTreeMap<&str, NameLists> = BTreeMap::new();
    let push = |v: &mut Vec<u32>, i: u32| {
        if v.last() != Some(&i) {
            v.push(i);
        }
    };
    for (i, p) in packages.iter().enumerate() {
        let i = i as u32;
        push(&mut names.entry(&p.name).or_default().0, i);
        for pv in &p.provides {
            push(&mut names.entry(&pv.name).or_default().0, i);
        }
        let mut positive = false;
        for d in p.install_if.iter().filter(|d| !d.conflict) {
            positive = true;
            push(&mut names.entry(&d.name).or_default().1, i);
        }
        if !positive && !p.install_if.is_empty() {
            push(&mut names.entry("").or_default().1, i);
        }
    }
    names
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: &Option<String>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

fn put_opt_num(out: &mut Vec<u8>, n: Option<u64>) {
    match n {
        None => out.push(0),
        Some(n) => {
            out.push(1);
            put_varint(out, n);
        }
    }
}

fn put_deps(out: &mut Vec<u8>, deps: &[Dependency]) {
    put_varint(out, deps.len() as u64);
    for d in deps {
        let Dependency {
            name,
            tag,
            op,
            version,
            conflict,
        } = d;
        put_str(out, name);
        put_opt_str(out, tag);
        out.push(op.0);
        put_str(out, version);
        out.push(u8::from(*conflict));
    }
}

/// One record. The destructuring names every field, so a field added to [`PackageInfo`] does
/// not compile until it is encoded here (and [`FORMAT_VERSION`] is bumped).
fn put_record(out: &mut Vec<u8>, p: &PackageInfo) {
    let PackageInfo {
        name,
        version,
        arch,
        description,
        url,
        license,
        origin,
        maintainer,
        commit,
        packager,
        build_time,
        installed_size,
        file_size,
        checksum,
        provider_priority,
        replaces_priority,
        depends,
        provides,
        install_if,
        replaces,
        triggers,
        datahash,
        extra,
    } = p;
    for s in [name, version, arch, description, url, license] {
        put_str(out, s);
    }
    for s in [origin, maintainer, commit, packager] {
        put_opt_str(out, s);
    }
    for n in [build_time, installed_size, file_size] {
        put_varint(out, *n);
    }
    put_opt_str(out, checksum);
    put_opt_num(out, *provider_priority);
    put_opt_num(out, *replaces_priority);
    for d in [depends, provides, install_if, replaces] {
        put_deps(out, d);
    }
    put_varint(out, triggers.len() as u64);
    for t in triggers {
        put_str(out, t);
    }
    put_opt_str(out, datahash);
    put_varint(out, extra.len() as u64);
    for (k, v) in extra {
        put_str(out, k);
        put_str(out, v);
    }
}

fn offset(n: usize) -> Result<u32, CompactError> {
    u32::try_from(n).map_err(|_| CompactError::TooLarge)
}

/// The compact file of `packages` (in their order), made from the index whose SHA-256 is
/// `digest` and read within `size_limit` decompressed bytes.
pub fn encode(
    packages: &[PackageInfo],
    description: Option<&str>,
    digest: &[u8; 32],
    size_limit: u64,
) -> Result<Vec<u8>, CompactError> {
    let names = name_lists(packages);
    let mut records = Vec::new();
    let mut starts = Vec::with_capacity(packages.len() + 1);
    for p in packages {
        starts.push(offset(records.len())?);
        put_record(&mut records, p);
    }
    starts.push(offset(records.len())?);
    let mut strings = Vec::new();
    let mut lists = Vec::new();
    let mut table = Vec::with_capacity(names.len() * NAME_ENTRY);
    for (name, (provs, trigs)) in &names {
        put_u32(&mut table, offset(strings.len())?);
        put_u32(&mut table, offset(name.len())?);
        put_u32(&mut table, offset(lists.len())?);
        put_u32(&mut table, offset(provs.len())?);
        put_u32(&mut table, offset(trigs.len())?);
        strings.extend_from_slice(name.as_bytes());
        lists.extend(provs.iter().chain(trigs));
    }
    let (desc_at, desc_len) = match description {
        Some(d) => {
            let at = offset(strings.len())?;
            strings.extend_from_slice(d.as_bytes());
            (at, offset(d.len())?)
        }
        None => (NONE, NONE),
    };
    // Sections follow the body header in this order; offsets are from the body's start.
    let records_table = BODY_HEADER;
    let names_table = records_table + starts.len() * 4;
    let lists_at = names_table + table.len();
    let strings_at = lists_at + lists.len() * 4;
    let records_at = strings_at + strings.len();
    let body_len = records_at + records.len();
    let mut body = Vec::with_capacity(body_len);
    body.extend_from_slice(digest);
    body.extend_from_slice(&size_limit.to_le_bytes());
    for v in [
        offset(packages.len())?,
        offset(names.len())?,
        desc_at,
        desc_len,
        offset(records_table)?,
        offset(names_table)?,
        offset(lists_at)?,
        offset(lists.len())?,
        offset(strings_at)?,
        offset(strings.len())?,
        offset(records_at)?,
    ] {
        put_u32(&mut body, v);
    }
    for s in &starts {
        put_u32(&mut body, *s);
    }
    body.extend_from_slice(&table);
    for l in &lists {
        put_u32(&mut body, *l);
    }
    body.extend_from_slice(&strings);
    body.extend_from_slice(&records);
    debug_assert_eq!(body.len(), body_len);
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    put_u32(&mut out, FORMAT_VERSION);
    put_u32(&mut out, crc32fast::hash(&body));
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Where the sections of a loaded file lie, as absolute offsets into its bytes.
#[derive(Clone, Copy, Debug)]
struct Layout {
    count: usize,
    names: usize,
    description: Option<(usize, usize)>,
    records_table: usize,
    names_table: usize,
    lists: usize,
    lists_len: usize,
    strings: usize,
    strings_len: usize,
    records: usize,
    records_len: usize,
    size_limit: u64,
}

/// Whether `len` items from `at` end within `end`.
fn fits(at: usize, len: usize, end: usize) -> bool {
    at.checked_add(len).is_some_and(|e| e <= end)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

impl Layout {
    /// Check the header and every section bound of `data`.
    fn check(data: &[u8], digest: Option<&[u8; 32]>) -> Result<Layout, CompactError> {
        if data.len() < HEADER || &data[..8] != MAGIC {
            return Err(CompactError::Magic);
        }
        let version = u32_at(data, 8);
        if version != FORMAT_VERSION {
            return Err(CompactError::Version(version));
        }
        let want = u64::from_le_bytes(data[16..24].try_into().expect("8 bytes"));
        let body = &data[HEADER..];
        if body.len() as u64 != want {
            return Err(CompactError::Length {
                got: body.len() as u64,
                want,
            });
        }
        if crc32fast::hash(body) != u32_at(data, 12) {
            return Err(CompactError::Checksum);
        }
        let bad = CompactError::Malformed;
        if body.len() < BODY_HEADER {
            return Err(bad("short body"));
        }
        if digest.is_some_and(|d| &body[..32] != d) {
            return Err(CompactError::Source);
        }
        let size_limit = u64::from_le_bytes(body[32..40].try_into().expect("8 bytes"));
        let f: Vec<usize> = (0..11).map(|i| u32_at(body, 40 + i * 4) as usize).collect();
        let (count, names) = (f[0], f[1]);
        let within = |at: usize, len: usize| fits(at, len, body.len());
        let description = if f[2] == NONE as usize {
            None
        } else {
            Some((f[2], f[3]))
        };
        let l = Layout {
            count,
            names,
            description,
            records_table: HEADER + f[4],
            names_table: HEADER + f[5],
            lists: HEADER + f[6],
            lists_len: f[7],
            strings: HEADER + f[8],
            strings_len: f[9],
            records: HEADER + f[10],
            records_len: body.len().saturating_sub(f[10]),
            size_limit,
        };
        if !within(f[4], (count + 1) * 4)
            || !within(f[5], names * NAME_ENTRY)
            || !within(f[6], f[7] * 4)
            || !within(f[8], f[9])
            || f[10] > body.len()
        {
            return Err(bad("a section lies outside the file"));
        }
        if let Some((at, len)) = description
            && !fits(at, len, l.strings_len)
        {
            return Err(bad("the description lies outside the strings"));
        }
        // Record starts ascend and stay inside the records section.
        let mut prev = 0;
        for i in 0..=count {
            let s = u32_at(data, l.records_table + i * 4) as usize;
            if s < prev || s > l.records_len {
                return Err(bad("record offsets"));
            }
            prev = s;
        }
        // Name entries and lists are checked as they are read (see `Records::lists`): a
        // lookup reads a dozen entries of the tens of thousands.
        Ok(l)
    }

    /// Name entry `i`: its name's bytes and where its lists lie (start, providers, triggered).
    fn name_entry<'d>(&self, data: &'d [u8], i: usize) -> Option<(&'d [u8], usize, usize, usize)> {
        let e = self.names_table + i * NAME_ENTRY;
        let (at, len) = (u32_at(data, e) as usize, u32_at(data, e + 4) as usize);
        let (list, np, nt) = (
            u32_at(data, e + 8) as usize,
            u32_at(data, e + 12) as usize,
            u32_at(data, e + 16) as usize,
        );
        (fits(at, len, self.strings_len) && fits(list, np + nt, self.lists_len)).then(|| {
            (
                &data[self.strings + at..self.strings + at + len],
                list,
                np,
                nt,
            )
        })
    }
}

/// What a record or name that does not decode says (possible only if the file was altered in
/// a way that kept its checksum, or written by a broken pallet).
fn altered(what: &str) -> ! {
    panic!(
        "compact index {what} does not decode: the cache file was altered; remove pallet's cache folder"
    )
}

/// A checked reader over one record's bytes.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Option<u8> {
        let v = *self.b.get(self.at)?;
        self.at += 1;
        Some(v)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn len(&mut self) -> Option<usize> {
        let n = usize::try_from(self.varint()?).ok()?;
        // A list can never hold more items than there are bytes left.
        (n <= self.b.len() - self.at).then_some(n)
    }

    fn str(&mut self) -> Option<String> {
        let n = self.len()?;
        let s = std::str::from_utf8(self.b.get(self.at..self.at + n)?).ok()?;
        self.at += n;
        Some(s.to_string())
    }

    fn flag(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    fn opt_str(&mut self) -> Option<Option<String>> {
        Some(if self.flag()? {
            Some(self.str()?)
        } else {
            None
        })
    }

    fn opt_num(&mut self) -> Option<Option<u64>> {
        Some(if self.flag()? {
            Some(self.varint()?)
        } else {
            None
        })
    }

    fn deps(&mut self) -> Option<Vec<Dependency>> {
        let n = self.len()?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(Dependency {
                name: self.str()?,
                tag: self.opt_str()?,
                op: Op(self.byte()?),
                version: self.str()?,
                conflict: self.flag()?,
            });
        }
        Some(v)
    }

    fn record(&mut self) -> Option<PackageInfo> {
        let p = PackageInfo {
            name: self.str()?,
            version: self.str()?,
            arch: self.str()?,
            description: self.str()?,
            url: self.str()?,
            license: self.str()?,
            origin: self.opt_str()?,
            maintainer: self.opt_str()?,
            commit: self.opt_str()?,
            packager: self.opt_str()?,
            build_time: self.varint()?,
            installed_size: self.varint()?,
            file_size: self.varint()?,
            checksum: self.opt_str()?,
            provider_priority: self.opt_num()?,
            replaces_priority: self.opt_num()?,
            depends: self.deps()?,
            provides: self.deps()?,
            install_if: self.deps()?,
            replaces: self.deps()?,
            triggers: {
                let n = self.len()?;
                (0..n).map(|_| self.str()).collect::<Option<_>>()?
            },
            datahash: self.opt_str()?,
            extra: {
                let n = self.len()?;
                (0..n)
                    .map(|_| Some((self.str()?, self.str()?)))
                    .collect::<Option<_>>()?
            },
        };
        (self.at == self.b.len()).then_some(p)
    }
}

/// What a [`Records`] reads from.
enum Backing {
    /// A checked compact file; records decoded on first use.
    Compact {
        data: Vec<u8>,
        layout: Layout,
        decoded: Box<[OnceLock<Box<PackageInfo>>]>,
    },
    /// Records already in memory; the name lists are built the first time one is asked for.
    Plain {
        packages: Vec<PackageInfo>,
        names: OnceLock<HashMap<String, NameLists>>,
    },
}

/// An index's records, in index order, cheap to clone (clones share the records and what has
/// been decoded). Indexing (`records[i]`) decodes record `i` on first use.
#[derive(Clone)]
pub struct Records(Arc<Backing>);

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &*self.0 {
            Backing::Compact { .. } => "compact",
            Backing::Plain { .. } => "plain",
        };
        write!(f, "Records({} {kind} records)", self.len())
    }
}

impl From<Vec<PackageInfo>> for Records {
    fn from(packages: Vec<PackageInfo>) -> Self {
        Records(Arc::new(Backing::Plain {
            packages,
            names: OnceLock::new(),
        }))
    }
}

impl Records {
    /// Load a compact file, checking its header, checksum and section bounds (and, when given,
    /// that it was made from the index with SHA-256 `digest`). Nothing is decoded yet.
    pub fn load(data: Vec<u8>, digest: Option<&[u8; 32]>) -> Result<Records, CompactError> {
        let layout = Layout::check(&data, digest)?;
        let decoded = (0..layout.count).map(|_| OnceLock::new()).collect();
        Ok(Records(Arc::new(Backing::Compact {
            data,
            layout,
            decoded,
        })))
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        match &*self.0 {
            Backing::Compact { layout, .. } => layout.count,
            Backing::Plain { packages, .. } => packages.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The largest decompressed index size the records were read within (compact files only).
    pub fn size_limit(&self) -> Option<u64> {
        match &*self.0 {
            Backing::Compact { layout, .. } => Some(layout.size_limit),
            Backing::Plain { .. } => None,
        }
    }

    /// The index's description (compact files only; [`crate::Index`] carries it otherwise).
    pub fn description(&self) -> Option<String> {
        match &*self.0 {
            Backing::Compact { data, layout, .. } => {
                let (at, len) = layout.description?;
                let b = &data[layout.strings + at..layout.strings + at + len];
                Some(String::from_utf8_lossy(b).into_owned())
            }
            Backing::Plain { .. } => None,
        }
    }

    /// Record `i`, decoding it on first use. A record that does not decode (possible only if
    /// the file was altered in a way that kept its checksum) is a panic that names the cause.
    pub fn get(&self, i: usize) -> Option<&PackageInfo> {
        match &*self.0 {
            Backing::Plain { packages, .. } => packages.get(i),
            Backing::Compact {
                data,
                layout,
                decoded,
            } => {
                let cell = decoded.get(i)?;
                Some(cell.get_or_init(|| {
                    let at = |k: usize| u32_at(data, layout.records_table + k * 4) as usize;
                    let b = &data[layout.records + at(i)..layout.records + at(i + 1)];
                    let p = Cursor { b, at: 0 }
                        .record()
                        .unwrap_or_else(|| altered(&format!("record {i}")));
                    Box::new(p)
                }))
            }
        }
    }

    /// Every record in order (decoding all of them).
    pub fn iter(&self) -> impl Iterator<Item = &PackageInfo> {
        (0..self.len()).map(|i| &self[i])
    }

    /// Every record, decoded and copied.
    pub fn to_vec(&self) -> Vec<PackageInfo> {
        self.iter().cloned().collect()
    }

    /// The two lists of `name`: providers (records whose name or a provide is `name`) and
    /// triggered (records with a positive `install_if` atom on `name`; for the empty name,
    /// records whose `install_if` atoms are all conflicts). Ascending, without repeats.
    fn lists(&self, name: &str) -> (Vec<usize>, Vec<usize>) {
        match &*self.0 {
            Backing::Plain { packages, names } => {
                let names = names.get_or_init(|| {
                    name_lists(packages)
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect()
                });
                let widen = |v: &Vec<u32>| v.iter().map(|i| *i as usize).collect();
                names
                    .get(name)
                    .map_or_else(Default::default, |(p, t)| (widen(p), widen(t)))
            }
            Backing::Compact { data, layout, .. } => {
                let (mut lo, mut hi) = (0, layout.names);
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    let (n, list, np, nt) = layout
                        .name_entry(data, mid)
                        .unwrap_or_else(|| altered(&format!("name entry {mid}")));
                    match n.cmp(name.as_bytes()) {
                        std::cmp::Ordering::Less => lo = mid + 1,
                        std::cmp::Ordering::Greater => hi = mid,
                        std::cmp::Ordering::Equal => {
                            let read = |k: usize| {
                                let r = u32_at(data, layout.lists + (list + k) * 4) as usize;
                                if r >= layout.count {
                                    altered(&format!("list of '{name}'"));
                                }
                                r
                            };
                            return (
                                (0..np).map(read).collect(),
                                (np..np + nt).map(read).collect(),
                            );
                        }
                    }
                }
                Default::default()
            }
        }
    }

    /// Records whose own name or a provide is `name`, ascending, each once.
    pub fn providers(&self, name: &str) -> Vec<usize> {
        self.lists(name).0
    }

    /// Records with a positive `install_if` atom on `name`, ascending, each once; for the
    /// empty name, records whose `install_if` atoms are all conflicts.
    pub fn triggered_by(&self, name: &str) -> Vec<usize> {
        self.lists(name).1
    }
}

impl std::ops::Index<usize> for Records {
    type Output = PackageInfo;

    fn index(&self, i: usize) -> &PackageInfo {
        self.get(i).unwrap_or_else(|| {
            panic!(
                "record {i} of an index with {} records asked for",
                self.len()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<PackageInfo> {
        let deps = |s: &str| Dependency::parse_list_lenient(s).unwrap();
        vec![
            // Every field set, so a field the encoder forgets fails the round trip.
            PackageInfo {
                name: "busybox".into(),
                version: "1.36.1-r15".into(),
                arch: "x86_64".into(),
                description: "Size optimized toolbox — ünïcode".into(),
                url: "https://busybox.net/".into(),
                license: "GPL-2.0-only".into(),
                origin: Some("busybox".into()),
                maintainer: Some("Someone <s@example.org>".into()),
                commit: Some(String::new()),
                packager: Some("Buildozer".into()),
                build_time: 1_700_000_000,
                installed_size: 1 << 40,
                file_size: 500_000,
                checksum: Some("Q1fjUxL26AIO2/CYDcHHMNKxaJr2o=".into()),
                provider_priority: Some(100),
                replaces_priority: Some(0),
                depends: deps("so:libc.musl-x86_64.so.1 !busybox-extras libc@edge>=1.2"),
                provides: deps("/bin/sh cmd:busybox=1.36.1-r15"),
                install_if: deps("busybox-base !nope"),
                replaces: deps("busybox-initscripts<1"),
                triggers: vec!["/bin".into(), "/usr/bin".into()],
                datahash: Some("ab".repeat(32)),
                extra: vec![("x".into(), "y".into())],
            },
            PackageInfo {
                name: "musl".into(),
                version: "1.2.4-r4".into(),
                provides: deps("so:libc.musl-x86_64.so.1=1"),
                ..Default::default()
            },
            PackageInfo {
                name: "odd".into(),
                version: "1".into(),
                // Provides its own name twice: listed once.
                provides: deps("odd odd=1"),
                install_if: deps("!busybox"),
                ..Default::default()
            },
        ]
    }

    fn encoded() -> Vec<u8> {
        encode(&sample(), Some("v3.19"), &[7; 32], 300 << 20).unwrap()
    }

    #[test]
    fn round_trip() {
        let r = Records::load(encoded(), Some(&[7; 32])).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r.to_vec(), sample());
        assert_eq!(r.description().as_deref(), Some("v3.19"));
        assert_eq!(r.size_limit(), Some(300 << 20));
        assert_eq!(r.providers("so:libc.musl-x86_64.so.1"), [1]);
        assert_eq!(r.providers("odd"), [2]);
        assert_eq!(r.providers("/bin/sh"), [0]);
        assert!(r.providers("nothing").is_empty());
        assert_eq!(r.triggered_by("busybox-base"), [0]);
        // `!nope` is a conflict: it triggers nothing; `odd` has only conflicts.
        assert!(r.triggered_by("nope").is_empty());
        assert_eq!(r.triggered_by(""), [2]);
        assert!(r.triggered_by("busybox").is_empty());
        // The in-memory form answers the same.
        let plain = Records::from(sample());
        for n in [
            "busybox",
            "odd",
            "/bin/sh",
            "",
            "so:libc.musl-x86_64.so.1",
            "x",
        ] {
            assert_eq!(plain.providers(n), r.providers(n), "{n}");
            assert_eq!(plain.triggered_by(n), r.triggered_by(n), "{n}");
        }
        // No description, no records.
        let e = Records::load(encode(&[], None, &[0; 32], 1).unwrap(), None).unwrap();
        assert!(e.is_empty() && e.description().is_none());
        assert!(e.providers("a").is_empty());
    }

    #[test]
    fn another_index_digest_is_refused() {
        assert_eq!(
            Records::load(encoded(), Some(&[8; 32])).unwrap_err(),
            CompactError::Source
        );
    }

    #[test]
    fn every_corrupt_byte_is_caught() {
        let good = encoded();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            assert!(Records::load(bad, Some(&[7; 32])).is_err(), "byte {i}");
        }
    }

    #[test]
    fn truncated_and_extended_files_are_refused() {
        let good = encoded();
        for n in [0, 7, 8, 23, 24, 60, good.len() / 2, good.len() - 1] {
            let e = Records::load(good[..n].to_vec(), None).unwrap_err();
            assert!(
                matches!(e, CompactError::Magic | CompactError::Length { .. }),
                "{n}: {e}"
            );
        }
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            Records::load(long, None).unwrap_err(),
            CompactError::Length { .. }
        ));
    }

    #[test]
    fn other_versions_are_refused() {
        let mut v = encoded();
        v[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        assert_eq!(
            Records::load(v, None).unwrap_err(),
            CompactError::Version(FORMAT_VERSION + 1)
        );
    }

    #[test]
    fn bad_bounds_with_a_valid_checksum_are_refused() {
        // Someone rewrote the body and its checksum: the section checks still hold.
        let mut v = encoded();
        let body = HEADER;
        // The records table offset, pointed past the end.
        v[body + 40 + 16..body + 40 + 20].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32fast::hash(&v[HEADER..]);
        v[12..16].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            Records::load(v, None).unwrap_err(),
            CompactError::Malformed(_)
        ));
    }

    #[test]
    fn an_altered_list_with_a_valid_checksum_is_never_followed() {
        let mut v = encoded();
        let lists = HEADER + u32_at(&v, HEADER + 40 + 24) as usize;
        for k in 0..u32_at(&v, HEADER + 40 + 28) as usize {
            v[lists + k * 4..lists + k * 4 + 4].copy_from_slice(&7u32.to_le_bytes());
        }
        let crc = crc32fast::hash(&v[HEADER..]);
        v[12..16].copy_from_slice(&crc.to_le_bytes());
        let r = Records::load(v, None).unwrap();
        let looked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.providers("musl")));
        assert!(looked.is_err());
    }

    #[test]
    fn records_decode_once_and_clones_share_them() {
        let r = Records::load(encoded(), None).unwrap();
        let c = r.clone();
        assert!(std::ptr::eq(&r[1], &c[1]));
        assert!(r.get(3).is_none());
    }
}
