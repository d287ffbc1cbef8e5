//! The workspace cache: what each node's key produced, content-addressed, and what each node
//! was last built from (to say why it is stale). Everything is written to a temporary name and
//! renamed, so a killed build leaves either the old entry or the new one.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bump when the meaning of a key or an entry changes: old entries are then never read.
const LAYOUT: &str = "workspace-v1";

/// A file a node produced.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutFile {
    /// Where it goes, relative to the node's output folder.
    pub name: String,
    pub sha256: String,
    pub size: u64,
    /// For a package, the checksum its index record carries (`Q1…`): a repository whose
    /// index names another checksum for this file is brought back in line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_checksum: Option<String>,
}

/// What a key produced.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub files: Vec<OutFile>,
}

/// What a node's key is made of. Maps are sorted, so the serialised form (and the key) does not
/// depend on the order things were found in.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Inputs {
    pub pallet: String,
    pub kind: String,
    pub arch: String,
    /// The compiled recipe (or merged image configuration), hashed.
    pub config: String,
    /// Source files the build sees: relative path → `MODE SHA256`.
    pub sources: BTreeMap<String, String>,
    /// The resolved environment: name → `VERSION CHECKSUM`.
    pub environment: BTreeMap<String, String>,
    /// Everything else that reaches the output, by name.
    pub options: BTreeMap<String, String>,
}

impl Inputs {
    pub fn key(&self) -> String {
        sha256_json(self)
    }

    /// The key results are shared under between machines and users: the content key without
    /// the signing key. Packages are built unsigned and each client signs what it takes with
    /// its own key, and an environment names the workspace's packages by their control
    /// checksums, which a signature does not change; so two users with different keys get the
    /// same bytes from the same inputs and can share them. The local cache keeps signed files,
    /// so its key ([`Inputs::key`]) still names the signing key.
    pub fn shared_key(&self) -> String {
        let mut s = self.clone();
        s.options.remove("signing key");
        s.key()
    }
}

/// The last build of a node, by node identity (file and arch, not path on disk).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Last {
    pub key: String,
    pub inputs: Inputs,
    pub files: Vec<OutFile>,
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn sha256_file(p: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex(&h.finalize()), n))
}

/// The SHA-256 of a value's JSON: struct fields in order and maps sorted, so equal values
/// give equal digests.
pub fn sha256_json<T: Serialize>(v: &T) -> String {
    hex(&Sha256::digest(
        serde_json::to_vec(v).expect("values serialise"),
    ))
}

pub fn sha256_str(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes()))
}

#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    pub fn new(cache_dir: &Path) -> Cache {
        Cache {
            root: cache_dir.join(LAYOUT),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.root
    }

    fn json<T: for<'de> Deserialize<'de>>(p: &Path) -> Option<T> {
        let b = std::fs::read(p).ok()?;
        serde_json::from_slice(&b).ok()
    }

    fn put_json<T: Serialize>(&self, p: &Path, v: &T) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(v).expect("serialise");
        self.write_atomic(p, |w| w.write_all(&json))
    }

    /// Write `to` through a temporary in the cache's own `tmp/`: whichever entry a killed
    /// writer was making, what it leaves is in the one folder [`Cache::sweep`] clears.
    pub(crate) fn write_atomic(
        &self,
        to: &Path,
        fill: impl FnOnce(&mut pallet_atomic::TempFile) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let tmp = self.root.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        if let Some(d) = to.parent() {
            std::fs::create_dir_all(d)?;
        }
        let mut t = pallet_atomic::TempFile::new_in(&tmp, "entry")?;
        fill(&mut t)?;
        t.persist(to)
    }

    /// Remove what killed writers left in the cache (only temporaries whose writer is gone).
    pub fn sweep(&self) {
        pallet_atomic::sweep(&self.root.join("tmp"));
    }

    fn entry_path(&self, key: &str) -> PathBuf {
        self.root
            .join("keys")
            .join(&key[..2])
            .join(format!("{key}.json"))
    }

    /// What `key` produced, when every file of it is still in the cache.
    pub fn entry(&self, key: &str) -> Option<Entry> {
        let e: Entry = Self::json(&self.entry_path(key))?;
        e.files
            .iter()
            .all(|f| self.blob(&f.sha256).is_file())
            .then_some(e)
    }

    pub fn put_entry(&self, key: &str, e: &Entry) -> std::io::Result<()> {
        self.put_json(&self.entry_path(key), e)
    }

    fn last_path(&self, id: &str) -> PathBuf {
        self.root
            .join("last")
            .join(format!("{}.json", sha256_str(id)))
    }

    pub fn last(&self, id: &str) -> Option<Last> {
        Self::json(&self.last_path(id))
    }

    pub fn put_last(&self, id: &str, l: &Last) -> std::io::Result<()> {
        self.put_json(&self.last_path(id), l)
    }

    pub fn blob(&self, sha: &str) -> PathBuf {
        self.root
            .join("blobs")
            .join(&sha[..2.min(sha.len())])
            .join(sha)
    }

    /// Where a package of an external repository is kept once fetched and verified, named by
    /// its control checksum (`Q1…`, as the index gives it) so that any repository serving the
    /// same package shares the file.
    pub fn env_package(&self, checksum: &str) -> PathBuf {
        // The checksum is base64 (with `/` and `+`): its hash names the file safely.
        let name = hex(&Sha256::digest(checksum.as_bytes()));
        self.root
            .join("env-apk")
            .join(&name[..2])
            .join(format!("{name}.apk"))
    }

    /// Store `file` by its content; returns its record under `name`.
    pub fn put_blob(&self, file: &Path, name: &str) -> std::io::Result<OutFile> {
        let (sha, size) = sha256_file(file)?;
        let to = self.blob(&sha);
        if !to.is_file() {
            let mut src = std::fs::File::open(file)?;
            self.write_atomic(&to, |w| std::io::copy(&mut src, w).map(|_| ()))?;
        }
        Ok(OutFile {
            name: name.to_string(),
            sha256: sha,
            size,
            index_checksum: None,
        })
    }

    /// Copy a stored file to `to` (atomically), checking its digest on the way: a cache entry
    /// that does not verify is an error, never an output.
    pub fn restore(&self, f: &OutFile, to: &Path) -> std::io::Result<()> {
        let mut src = std::fs::File::open(self.blob(&f.sha256))?;
        if let Some(d) = to.parent() {
            std::fs::create_dir_all(d)?;
        }
        pallet_atomic::write_with(to, |w| {
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let k = src.read(&mut buf)?;
                if k == 0 {
                    break;
                }
                h.update(&buf[..k]);
                w.write_all(&buf[..k])?;
            }
            if hex(&h.finalize()) != f.sha256 {
                return Err(std::io::Error::other(format!(
                    "cache blob {} does not match its digest (remove it and build again)",
                    f.sha256
                )));
            }
            Ok(())
        })
    }

    /// A lock for one shared output (a repository index), held while it is rewritten.
    pub fn lock(&self, what: &str) -> std::io::Result<pallet_atomic::EntryLock> {
        pallet_atomic::EntryLock::acquire(&self.root.join("locks").join(sha256_str(what)))
    }

    /// A scratch folder that goes away with the returned value (and is swept if killed).
    pub fn scratch(&self) -> std::io::Result<pallet_atomic::TempDir> {
        let d = self.root.join("tmp");
        std::fs::create_dir_all(&d)?;
        pallet_atomic::sweep(&d);
        pallet_atomic::TempDir::new_in(&d, "node")
    }
}

/// Whether `path` holds exactly `f` (by size, then digest).
pub fn holds(path: &Path, f: &OutFile) -> bool {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() == f.size => {
            sha256_file(path).is_ok_and(|(s, _)| s == f.sha256)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_ignore_insertion_order_and_entries_round_trip() {
        let mut a = Inputs::default();
        a.sources.insert("b".into(), "1".into());
        a.sources.insert("a".into(), "2".into());
        let mut b = Inputs::default();
        b.sources.insert("a".into(), "2".into());
        b.sources.insert("b".into(), "1".into());
        assert_eq!(a.key(), b.key());
        b.options.insert("x".into(), "y".into());
        assert_ne!(a.key(), b.key());

        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path());
        let f = d.path().join("f");
        std::fs::write(&f, b"bytes").unwrap();
        let rec = c.put_blob(&f, "f.apk").unwrap();
        c.put_entry(
            &a.key(),
            &Entry {
                files: vec![rec.clone()],
            },
        )
        .unwrap();
        assert_eq!(c.entry(&a.key()).unwrap().files, std::slice::from_ref(&rec));
        let out = d.path().join("out/f.apk");
        c.restore(&rec, &out).unwrap();
        assert!(holds(&out, &rec));
        // A blob changed behind our back is refused, and nothing is written.
        std::fs::write(c.blob(&rec.sha256), b"other").unwrap();
        let out2 = d.path().join("out/g.apk");
        assert!(c.restore(&rec, &out2).is_err());
        assert!(!out2.exists());
    }
}
