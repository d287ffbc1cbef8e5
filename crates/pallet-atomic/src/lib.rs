//! Atomic writes for caches and outputs, safe under `kill -9` and shared by concurrent builds.
//!
//! Everything pallet writes into a cache or an output folder is first written under a
//! temporary name in the same folder and then renamed into place, so a reader never sees half a
//! file. A writer killed midway leaves its temporary file behind; to tell such leftovers from a
//! file another live process is still writing, every temporary holds an advisory lock (`flock`)
//! for as long as its writer lives. The kernel drops the lock when the process dies, however it
//! dies, so [`sweep`] removes exactly the temporaries whose writer is gone, across processes and
//! pid namespaces alike.
//!
//! [`EntryLock`] is the other half: builds sharing one cache take a lock per entry before they
//! fetch or unpack it, so the second waits for the first and then finds the entry made.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Every temporary name starts with this, so [`sweep`] never touches anything else.
pub const TEMP_PREFIX: &str = ".pallet-tmp.";

fn temp_name(hint: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    // The hint is only for people looking at the folder; keep it to harmless characters.
    let hint: String = hint
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(48)
        .collect();
    format!(
        "{TEMP_PREFIX}{}.{}.{hint}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A file being written under a locked temporary name; removed when dropped unless persisted.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    /// A new, empty, locked temporary file in `dir` (created when missing).
    pub fn new_in(dir: &Path, hint: &str) -> io::Result<TempFile> {
        Self::new_in_mode(dir, hint, 0o666)
    }

    /// [`TempFile::new_in`] created with `mode` (less the umask) from the start, so a private
    /// key is never readable by others, not even while it is being written.
    pub fn new_in_mode(dir: &Path, hint: &str, mode: u32) -> io::Result<TempFile> {
        use std::os::unix::fs::OpenOptionsExt as _;
        fs::create_dir_all(dir)?;
        loop {
            let path = dir.join(temp_name(hint));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)?;
            file.lock()?;
            // Between creating the file and locking it, another build's sweep may have found
            // it unlocked and removed it: then take a new name.
            if still_named(&path, &file) {
                return Ok(TempFile {
                    path,
                    file: Some(file),
                });
            }
        }
    }

    /// The temporary file's path (for tools that want a name).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("open until persisted")
    }

    /// Flush to disk and rename onto `to`: readers see the old file or the new one, never a
    /// part.
    pub fn persist(mut self, to: &Path) -> io::Result<()> {
        let f = self.file.take().expect("open until persisted");
        f.sync_all()?;
        fs::rename(&self.path, to)?;
        // The lock goes with the file descriptor; the name now belongs to the finished file.
        drop(f);
        self.path = PathBuf::new();
        Ok(())
    }
}

impl TempFile {
    /// Rename onto `to` without flushing to disk first: for cache entries whose reader takes a
    /// cut file for a miss. A killed writer loses nothing the kernel already has, so only a
    /// power loss can cost anything, and then the file reads back cut, never with blocks it
    /// did not write (ext4's ordered mode, xfs and btrfs alike), and is made again. Syncing
    /// every entry made the package and layer caches cost a third of a cold image build, and
    /// package managers' caches (cargo's, uv's) are not synced either.
    pub fn persist_unsynced(mut self, to: &Path) -> io::Result<()> {
        let f = self.file.take().expect("open until persisted");
        rename_over(&self.path, to)?;
        drop(f);
        self.path = PathBuf::new();
        Ok(())
    }
}

/// Rename `from` onto `to` atomically, as `rename` does, for a file written without a sync:
/// when `to` is an existing file (or symlink) the two are swapped with `RENAME_EXCHANGE` and
/// the old one, now named `from`, is removed. Why: on ext4 (`auto_da_alloc`, the default) a
/// rename that replaces a file starts writing the new file's data out at once, in the
/// caller's time; replacing a 15 MB image tarball took 25 ms here that way, and 1.2 ms with
/// the swap (the data is written back later, as for any other file). Where the swap is not
/// supported (older kernels, some filesystems), a plain rename.
pub fn rename_over(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let replaces_file = fs::symlink_metadata(to).is_ok_and(|m| !m.is_dir());
    if replaces_file
        && let (Ok(a), Ok(b)) = (
            std::ffi::CString::new(from.as_os_str().as_bytes()),
            std::ffi::CString::new(to.as_os_str().as_bytes()),
        )
    {
        // SAFETY: two NUL-terminated paths that outlive the call.
        let r = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if r == 0 {
            // `from` now holds the old file; should the swap have raced with a folder made
            // at `to`, put it back and let rename report it.
            if fs::symlink_metadata(from).is_ok_and(|m| m.is_dir()) {
                // SAFETY: as above.
                unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
            } else {
                // A leftover would be an unlocked temporary: the next sweep takes it.
                let _ = fs::remove_file(from);
                return Ok(());
            }
        }
    }
    fs::rename(from, to)
}

impl Write for TempFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A folder being filled under a locked temporary name (an OCI layout, say); removed with
/// everything in it when dropped unless persisted.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    lock: Option<File>,
}

impl TempDir {
    pub fn new_in(dir: &Path, hint: &str) -> io::Result<TempDir> {
        fs::create_dir_all(dir)?;
        loop {
            let path = dir.join(temp_name(hint));
            fs::create_dir(&path)?;
            let lock = match File::open(&path) {
                Ok(f) => f,
                // Swept before we could even open it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            lock.lock()?;
            if still_named(&path, &lock) {
                return Ok(TempDir {
                    path,
                    lock: Some(lock),
                });
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rename the folder onto `to` (which must not exist or be an empty folder).
    pub fn persist(mut self, to: &Path) -> io::Result<()> {
        fs::rename(&self.path, to)?;
        self.lock.take();
        self.path = PathBuf::new();
        Ok(())
    }

    /// Stop managing the folder: it stays where it is, under its temporary name.
    pub fn keep(mut self) -> PathBuf {
        self.lock.take();
        std::mem::take(&mut self.path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Write `data` to `path` atomically (temporary name, sync, rename).
pub fn write(path: &Path, data: &[u8]) -> io::Result<()> {
    write_with(path, |w| w.write_all(data))
}

/// [`write`] with the file created as `mode` (less the umask).
pub fn write_mode(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let hint = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut t = TempFile::new_in_mode(parent(path), &hint, mode)?;
    t.write_all(data)?;
    t.persist(path)
}

/// Write `path` atomically from what `fill` writes; on any error nothing is left behind and
/// the old file, if any, is untouched.
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut TempFile) -> io::Result<()>,
) -> io::Result<()> {
    temp_beside(path, fill)?.persist(path)
}

/// [`write`] for a cache entry: renamed without a sync (see [`TempFile::persist_unsynced`]).
pub fn write_cache(path: &Path, data: &[u8]) -> io::Result<()> {
    write_cache_with(path, |w| w.write_all(data))
}

/// [`write_with`] for a cache entry: renamed without a sync (see
/// [`TempFile::persist_unsynced`]), so its reader must tell a cut file from a whole one.
pub fn write_cache_with(
    path: &Path,
    fill: impl FnOnce(&mut TempFile) -> io::Result<()>,
) -> io::Result<()> {
    temp_beside(path, fill)?.persist_unsynced(path)
}

/// A temporary beside `path`, named after it, filled by `fill`.
fn temp_beside(
    path: &Path,
    fill: impl FnOnce(&mut TempFile) -> io::Result<()>,
) -> io::Result<TempFile> {
    let hint = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut t = TempFile::new_in(parent(path), &hint)?;
    fill(&mut t)?;
    Ok(t)
}

/// Whether `path` still names the file or folder `f` is open on (a sweep has not removed it).
fn still_named(path: &Path, f: &File) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (fs::symlink_metadata(path), f.metadata()) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Remove the temporaries in `dir` whose writer is gone (their lock is free); returns how many.
/// Temporaries of live writers, in this process or another, are left alone.
pub fn sweep(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let p = e.path();
        let Ok(f) = File::open(&p) else { continue };
        // Taking the lock proves its owner is gone; hold it while removing so that no one
        // else's sweep races us into an error.
        if f.try_lock().is_err() {
            continue;
        }
        let removed = match e.file_type() {
            Ok(t) if t.is_dir() => fs::remove_dir_all(&p),
            _ => fs::remove_file(&p),
        };
        if removed.is_ok() {
            n += 1;
        }
    }
    n
}

/// An exclusive advisory lock on one cache entry, held until dropped.
///
/// All entries of a folder share one lock file, `.entries.lock`, each locking its own byte of
/// it (an open-file-description lock, which excludes other threads of this process as well as
/// other processes, and goes away with the process however it dies). A lock file per entry
/// cost a cold image build a file creation per package, which on ext4 right after a cache was
/// removed costs about as much as unpacking the package. Where the kernel or filesystem has no
/// such locks, the entry gets its own `NAME.lock` file (kept: removing it would let a third
/// process lock a new file while the second still holds the old one).
#[derive(Debug)]
pub struct EntryLock {
    _file: File,
}

/// The folder's shared lock file.
pub const ENTRIES_LOCK: &str = ".entries.lock";

impl EntryLock {
    /// Wait for and take the lock of `entry`.
    pub fn acquire(entry: &Path) -> io::Result<EntryLock> {
        let name = entry.file_name().unwrap_or_default();
        let dir = parent(entry);
        fs::create_dir_all(dir)?;
        let open = |p: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(p)
        };
        let shared = open(&dir.join(ENTRIES_LOCK))?;
        match lock_byte(&shared, entry_offset(name.as_encoded_bytes())) {
            Ok(()) => return Ok(EntryLock { _file: shared }),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {}
            Err(e) => return Err(e),
        }
        let mut own = name.to_os_string();
        own.push(".lock");
        let file = open(&dir.join(own))?;
        file.lock()?;
        Ok(EntryLock { _file: file })
    }
}

/// Where an entry's byte lies in the shared lock file: FNV-1a of its name, kept below 2^62 so
/// that it is a valid, positive file offset. Two names on one byte only wait for each other.
fn entry_offset(name: &[u8]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 2) as i64
}

/// Wait for an exclusive open-file-description lock on the byte at `offset` of `f`.
fn lock_byte(f: &File, offset: i64) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: `flock` is a plain C struct for which all zeroes is a valid value, and fcntl
    // only reads it; the descriptor is open for as long as `f` lives.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = offset as libc::off_t;
    fl.l_len = 1;
    loop {
        // SAFETY: see above; `fl` outlives the call.
        let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLKW, &fl) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_replaces_whole_files_and_leaves_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.txt");
        write(&p, b"one").unwrap();
        write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let err = write_with(&p, |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("boom"))
        });
        assert!(err.is_err());
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn rename_over_swaps_out_an_old_file_and_keeps_nothing_of_it() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("new"), d.path().join("out"));
        // No file there yet: a plain rename.
        fs::write(&a, b"one").unwrap();
        rename_over(&a, &b).unwrap();
        assert_eq!(fs::read(&b).unwrap(), b"one");
        // A file there: it is replaced, and its old content is gone from the folder.
        fs::write(&a, b"two").unwrap();
        rename_over(&a, &b).unwrap();
        assert_eq!(fs::read(&b).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
        // A symlink there is replaced itself, its target left alone.
        let target = d.path().join("target");
        fs::write(&target, b"kept").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        fs::write(&a, b"three").unwrap();
        rename_over(&a, &link).unwrap();
        assert!(!fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(fs::read(&link).unwrap(), b"three");
        assert_eq!(fs::read(&target).unwrap(), b"kept");
        // A folder there is refused, as rename refuses it, and nothing moves.
        let dir = d.path().join("dir");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("inside"), b"x").unwrap();
        fs::write(&a, b"four").unwrap();
        assert!(rename_over(&a, &dir).is_err());
        assert_eq!(fs::read(&a).unwrap(), b"four");
        assert_eq!(fs::read(dir.join("inside")).unwrap(), b"x");
    }

    #[test]
    fn cache_writes_are_atomic_too() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("entry");
        write_cache(&p, b"one").unwrap();
        let err = write_cache_with(&p, |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("boom"))
        });
        assert!(err.is_err());
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn sweep_removes_only_what_dead_writers_left() {
        let d = tempfile::tempdir().unwrap();
        // A live writer in this process: locked, so kept.
        let live = TempFile::new_in(d.path(), "live").unwrap();
        let live_dir = TempDir::new_in(d.path(), "layout").unwrap();
        // A dead writer's leftovers: the same names, no lock held.
        let dead = d.path().join(format!("{TEMP_PREFIX}1.2.dead"));
        fs::write(&dead, b"partial").unwrap();
        let dead_dir = d.path().join(format!("{TEMP_PREFIX}1.3.dir"));
        fs::create_dir_all(dead_dir.join("blobs")).unwrap();
        fs::write(d.path().join("keep.txt"), b"not ours").unwrap();
        assert_eq!(sweep(d.path()), 2);
        assert!(!dead.exists() && !dead_dir.exists());
        assert!(live.path().exists() && live_dir.path().exists());
        assert!(d.path().join("keep.txt").exists());
        drop(live);
        drop(live_dir);
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_killed_writer_is_swept() {
        // A child process takes the lock and is killed; its temporary is then stale.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(format!("{TEMP_PREFIX}x.0.child"));
        fs::write(&p, b"").unwrap();
        // `-o`: the lock stays with flock itself, not with the `sleep` it runs.
        let mut child = std::process::Command::new("flock")
            .arg("-o")
            .arg(&p)
            .arg("sleep")
            .arg("30")
            .spawn();
        let Ok(c) = child.as_mut() else {
            eprintln!("SKIPPED: flock(1) is not installed");
            return;
        };
        // Wait until the child holds the lock (a loaded machine may take a while to start it).
        let f = File::open(&p).unwrap();
        let mut held = false;
        for _ in 0..1000 {
            if f.try_lock().is_err() {
                held = true;
                break;
            }
            f.unlock().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(f);
        assert!(held, "flock(1) never took the lock");
        assert_eq!(sweep(d.path()), 0, "a live writer's file was swept");
        c.kill().unwrap();
        c.wait().unwrap();
        assert_eq!(sweep(d.path()), 1);
    }

    #[test]
    fn entry_locks_serialize_writers() {
        let d = tempfile::tempdir().unwrap();
        let entry = d.path().join("e.tar");
        let order = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let first = EntryLock::acquire(&entry).unwrap();
        let o2 = order.clone();
        let e2 = entry.clone();
        let t = std::thread::spawn(move || {
            let _l = EntryLock::acquire(&e2).unwrap();
            o2.lock().unwrap().push("second");
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        order.lock().unwrap().push("first");
        drop(first);
        t.join().unwrap();
        assert_eq!(*order.lock().unwrap(), ["first", "second"]);
    }

    #[test]
    fn entries_of_one_folder_share_a_lock_file_without_waiting_for_each_other() {
        let d = tempfile::tempdir().unwrap();
        let a = EntryLock::acquire(&d.path().join("a.tar")).unwrap();
        let b = EntryLock::acquire(&d.path().join("b.tar")).unwrap();
        // Letting go of one entry's lock keeps the other's: b is still held below.
        drop(a);
        let again = EntryLock::acquire(&d.path().join("a.tar")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let bp = d.path().join("b.tar");
        let t = std::thread::spawn(move || {
            let _l = EntryLock::acquire(&bp).unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err(),
            "b was taken while held"
        );
        drop(b);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("b free once dropped");
        t.join().unwrap();
        drop(again);
        let names: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [ENTRIES_LOCK]);
    }

    #[test]
    fn a_sweep_racing_new_temporaries_never_takes_a_live_one() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sweeper = {
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    sweep(&dir);
                }
            })
        };
        for _ in 0..2000 {
            let t = TempDir::new_in(&dir, "d").unwrap();
            assert!(t.path().is_dir(), "a new temporary folder was swept");
            let mut f = TempFile::new_in(&dir, "f").unwrap();
            f.write_all(b"x").unwrap();
            f.persist(&dir.join("out")).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        sweeper.join().unwrap();
    }
}
