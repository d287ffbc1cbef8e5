//! Reading finished packages for the commands that look back at them (`scan`, `rebuild`,
//! `license-check`): every tar entry of the whole `.apk` stream (signature, control and data
//! sections read as one archive, the way Go's `archive/tar` over a multi-member gzip reader sees
//! them), and unpacking the data section into a folder.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use pallet_apk_stream::tarw::Kind;

/// One entry of the stream: its name, type flag and content.
#[derive(Clone, Debug)]
pub struct RawEntry {
    pub name: String,
    /// The tar type flag (`b'0'` regular file, `b'5'` folder, `b'2'` symlink …).
    pub typeflag: u8,
    pub data: Vec<u8>,
}

fn octal(field: &[u8]) -> io::Result<u64> {
    // GNU base-256 for large values.
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for b in &field[1..] {
            v = v.checked_shl(8).unwrap_or(u64::MAX) | *b as u64;
        }
        return Ok(v);
    }
    let s: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(s, 8)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad tar number"))
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Walk every entry of the `.apk` at `r`, in order, handing its name (PAX and GNU long names
/// applied; the PAX headers themselves are not passed), type flag and content to `on`.
/// Entries larger than `max_entry` bytes are refused. `on` returns whether to go on.
pub fn walk(
    r: impl Read,
    max_entry: u64,
    mut on: impl FnMut(&str, u8, &mut dyn Read) -> io::Result<bool>,
) -> io::Result<()> {
    let mut z = flate2::read::MultiGzDecoder::new(io::BufReader::new(r));
    let mut long_name: Option<String> = None;
    let mut header = [0u8; 512];
    loop {
        // End of stream (possibly after the data section's zero blocks).
        let mut got = 0;
        while got < 512 {
            let n = z.read(&mut header[got..])?;
            if n == 0 {
                break;
            }
            got += n;
        }
        if got == 0 {
            break;
        }
        if got < 512 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated tar header",
            ));
        }
        if header.iter().all(|b| *b == 0) {
            continue;
        }
        let size = octal(&header[124..136])?;
        if size > max_entry {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a package entry of {size} bytes is larger than the {max_entry} allowed"),
            ));
        }
        let pad = (512 - size % 512) % 512;
        let typeflag = header[156];
        let mut name = cstr(&header[0..100]);
        if &header[257..262] == b"ustar" {
            let prefix = cstr(&header[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        if matches!(typeflag, b'x' | b'L' | b'g') {
            if size > 1 << 20 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a tar extended header larger than 1 MiB",
                ));
            }
            let mut data = vec![0u8; size as usize];
            z.read_exact(&mut data)?;
            io::copy(&mut (&mut z).take(pad), &mut io::sink())?;
            match typeflag {
                b'x' => {
                    // PAX records: "LEN key=value\n".
                    let text = String::from_utf8_lossy(&data);
                    for rec in text.split('\n') {
                        if let Some((_, kv)) = rec.split_once(' ')
                            && let Some(p) = kv.strip_prefix("path=")
                        {
                            long_name = Some(p.to_string());
                        }
                    }
                }
                b'L' => long_name = Some(cstr(&data)),
                _ => {}
            }
            continue;
        }
        if let Some(n) = long_name.take() {
            name = n;
        }
        let name = name.trim_start_matches("./").trim_end_matches('/');
        let mut body = (&mut z).take(size);
        if !on(name, typeflag, &mut body)? {
            return Ok(());
        }
        io::copy(&mut body, &mut io::sink())?;
        io::copy(&mut (&mut z).take(pad), &mut io::sink())?;
    }
    Ok(())
}

/// Every entry of the `.apk` at `r` with its content (see [`walk`]).
pub fn entries(r: impl Read, max_entry: u64) -> io::Result<Vec<RawEntry>> {
    let mut out = vec![];
    walk(r, max_entry, |name, typeflag, body| {
        let mut data = vec![];
        body.read_to_end(&mut data)?;
        out.push(RawEntry {
            name: name.to_string(),
            typeflag,
            data,
        });
        Ok(true)
    })?;
    Ok(out)
}

/// The control files of a package (`.PKGINFO`, `.melange.yaml`, scripts), as written.
pub fn control_files(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let f = fs::File::open(path)?;
    let meta = pallet_apk_stream::read_apk(
        f,
        &pallet_apk_stream::ReadOptions {
            control_only: true,
            ..Default::default()
        },
        |_, _| Ok(()),
    )
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let mut out = meta.scripts;
    // `.PKGINFO` as written (comment lines included), from the stream itself.
    let f = fs::File::open(path)?;
    let mut pkginfo = None;
    walk(f, u64::MAX, |name, _, body| {
        if pkginfo.is_none() && name == ".PKGINFO" {
            let mut data = vec![];
            body.take(64 << 20).read_to_end(&mut data)?;
            pkginfo = Some(data);
        }
        Ok(pkginfo.is_none())
    })?;
    if let Some(data) = pkginfo {
        out.insert(0, (".PKGINFO".into(), data));
    }
    Ok(out)
}

/// Unpack the data section of the package at `path` into `dest` (created): folders, regular
/// files with their permission bits (owner-writable so the folder can be removed), symlinks as
/// written and hard links as copies. Device nodes and fifos are skipped. Returns the parsed
/// metadata.
pub fn unpack(path: &Path, dest: &Path) -> io::Result<pallet_apk_stream::ApkMeta> {
    fs::create_dir_all(dest)?;
    let f = fs::File::open(path)?;
    let mut links = vec![];
    let meta = pallet_apk_stream::read_apk(f, &Default::default(), |e, data| {
        // The reader refuses absolute names and `..` components.
        let to = dest.join(&e.path);
        let res = (|| -> io::Result<()> {
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent)?;
            }
            match e.kind {
                Kind::Dir => {
                    fs::create_dir_all(&to)?;
                }
                Kind::File => {
                    let mut out = fs::File::create(&to)?;
                    io::copy(data, &mut out)?;
                    use std::os::unix::fs::PermissionsExt as _;
                    fs::set_permissions(&to, fs::Permissions::from_mode((e.mode & 0o777) | 0o200))?;
                }
                Kind::Symlink => {
                    let _ = fs::remove_file(&to);
                    std::os::unix::fs::symlink(&e.link, &to)?;
                }
                Kind::HardLink => links.push((e.path.clone(), e.link.clone())),
                _ => {}
            }
            Ok(())
        })();
        res.map_err(pallet_apk_stream::ApkError::from)
    })
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    for (path, target) in links {
        let (from, to) = (dest.join(&target), dest.join(&path));
        if from.is_file() {
            fs::copy(from, to)?;
        }
    }
    Ok(meta)
}
