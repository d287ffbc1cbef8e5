//! Reading a staged file's extended attributes (Linux `llistxattr`/`lgetxattr`, so a symlink's
//! own attributes and never its target's).

use std::ffi::{CString, c_char, c_void};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Attributes melange leaves out of packages: security modules and host file systems set them,
/// and installing them needs privileges (`xattrIgnoreList`).
pub const IGNORED: [&str; 6] = [
    "com.apple.provenance",
    "security.csm",
    "security.selinux",
    "com.docker.grpcfuse.ownership",
    "trusted.SGI_ACL_FILE",
    "trusted.SGI_ACL_DEFAULT",
];

unsafe extern "C" {
    fn llistxattr(path: *const c_char, list: *mut c_char, size: usize) -> isize;
    fn lgetxattr(
        path: *const c_char,
        name: *const c_char,
        value: *mut c_void,
        size: usize,
    ) -> isize;
}

fn unsupported(e: &io::Error) -> bool {
    // ENOTSUP (EOPNOTSUPP): the file system keeps no attributes.
    e.raw_os_error() == Some(95)
}

/// Call `f` with a growing buffer until the value fits (it can change between calls).
fn sized(mut f: impl FnMut(*mut u8, usize) -> isize) -> io::Result<Vec<u8>> {
    loop {
        let n = f(std::ptr::null_mut(), 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; n as usize];
        if buf.is_empty() {
            return Ok(buf);
        }
        let m = f(buf.as_mut_ptr(), buf.len());
        if m >= 0 {
            buf.truncate(m as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        // ERANGE: it grew meanwhile.
        if e.raw_os_error() != Some(34) {
            return Err(e);
        }
    }
}

/// The extended attributes of `path` (not following a final symlink), by name, minus
/// [`IGNORED`]. A file system without attributes has none; an attribute that vanishes while
/// being read is skipped, as melange skips what it cannot read.
pub fn read(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: `c` is a NUL-terminated path; the buffer pointer and size describe a live buffer
    // (or are null and 0, which asks for the size).
    let names = match sized(|p, n| unsafe { llistxattr(c.as_ptr(), p.cast(), n) }) {
        Ok(v) => v,
        Err(e) if unsupported(&e) => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut out = vec![];
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(s) = std::str::from_utf8(name) else {
            continue;
        };
        if IGNORED.contains(&s) {
            continue;
        }
        let cn = CString::new(name).expect("split at NUL bytes");
        // SAFETY: as above; `cn` is a NUL-terminated attribute name.
        match sized(|p, n| unsafe { lgetxattr(c.as_ptr(), cn.as_ptr(), p.cast(), n) }) {
            Ok(v) => out.push((s.to_string(), v)),
            Err(_) => continue,
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_file_has_no_attributes_and_a_missing_one_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        assert!(
            read(&f)
                .unwrap()
                .iter()
                .all(|(k, _)| !k.starts_with("user."))
        );
        assert!(read(&d.path().join("missing")).is_err());
    }
}
