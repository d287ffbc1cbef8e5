//! `package.setcap`: file capabilities given in the recipe, checked against melange's
//! allow-list and packed as the `security.capability` extended attribute of the named files.
//!
//! melange applies them after every pipeline has run, to the main package only, in the kernel's
//! `struct vfs_ns_cap_data` layout (revision 3, 24 bytes, little endian):
//!
//! | bytes | field |
//! |-------|-------|
//! | 0..4  | `magic_etc`: `VFS_CAP_REVISION_3` (`0x03000000`), or'ed with `VFS_CAP_FLAGS_EFFECTIVE` (1) when any capability is effective |
//! | 4..8  | permitted, capabilities 0–31 |
//! | 8..12 | inheritable, capabilities 0–31 |
//! | 12..16 | permitted, capabilities 32–63 (always 0: every allowed capability is below 32) |
//! | 16..20 | inheritable, capabilities 32–63 (0) |
//! | 20..24 | `rootid` (0) |

use std::collections::BTreeMap;

use crate::compile::Setcap;

/// The name of the extended attribute that holds file capabilities.
pub const XATTR: &str = "security.capability";

/// `VFS_CAP_REVISION_3` of `<linux/capability.h>`.
pub const VFS_CAP_REVISION_3: u32 = 0x0300_0000;
/// `VFS_CAP_FLAGS_EFFECTIVE`: the file's permitted set is raised into the effective set on exec.
pub const VFS_CAP_FLAGS_EFFECTIVE: u32 = 0x0000_0001;

/// The capabilities melange accepts in `setcap`, with their bit numbers (`<linux/capability.h>`).
pub const ALLOWED: [(&str, u32); 5] = [
    ("cap_net_bind_service", 10),
    ("cap_net_admin", 12),
    ("cap_net_raw", 13),
    ("cap_ipc_lock", 14),
    ("cap_sys_admin", 21),
];

fn bit(name: &str) -> Option<u32> {
    ALLOWED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| 1u32 << b)
}

/// The capability sets of one file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileCaps {
    pub effective: u32,
    pub permitted: u32,
    pub inheritable: u32,
}

impl FileCaps {
    /// The `security.capability` value, as melange writes it (see the module notes).
    pub fn encode(&self) -> [u8; 24] {
        let mut magic = VFS_CAP_REVISION_3;
        if self.effective != 0 {
            magic |= VFS_CAP_FLAGS_EFFECTIVE;
        }
        let mut out = [0u8; 24];
        out[0..4].copy_from_slice(&magic.to_le_bytes());
        out[4..8].copy_from_slice(&self.permitted.to_le_bytes());
        out[8..12].copy_from_slice(&self.inheritable.to_le_bytes());
        // High words and rootid stay 0.
        out
    }
}

/// Check `setcap` as melange's `validateCapabilities` does: every capability named (a key may
/// list several, `cap_net_raw,cap_net_admin`) must be on the allow-list, and every entry needs
/// a `reason`. All problems are reported, one a line.
pub fn validate(setcap: &[Setcap]) -> Result<(), String> {
    let allowed = ALLOWED.map(|(n, _)| n).join(", ");
    let mut errs = vec![];
    for s in setcap {
        for key in s.add.keys() {
            for cap in key.split(',') {
                if bit(cap).is_none() {
                    errs.push(format!(
                        "package.setcap: invalid capability {cap:?} for path {:?} (melange \
                         accepts only {allowed})",
                        s.path
                    ));
                }
            }
        }
        if s.reason.is_empty() {
            errs.push(format!(
                "package.setcap: the entry for path {:?} has no reason: melange requires a \
                 reason justifying each file capability",
                s.path
            ));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("\n"))
    }
}

/// The flags of one `add` value: the letters `e`, `p` and `i` anywhere in it (`+ep`, `=eip`);
/// anything else is ignored, as melange does.
fn flags(v: &str) -> (bool, bool, bool) {
    (v.contains('e'), v.contains('p'), v.contains('i'))
}

/// The capabilities of each path named in a validated `setcap` (entries naming the same path
/// are merged), keyed by the path as written.
pub fn resolve(setcap: &[Setcap]) -> BTreeMap<String, FileCaps> {
    let mut out: BTreeMap<String, FileCaps> = BTreeMap::new();
    for s in setcap {
        for (key, v) in &s.add {
            let (e, p, i) = flags(v);
            for cap in key.split(',') {
                let b = bit(cap).unwrap_or(0);
                let c = out.entry(s.path.clone()).or_default();
                if e {
                    c.effective |= b;
                }
                if p {
                    c.permitted |= b;
                }
                if i {
                    c.inheritable |= b;
                }
            }
        }
    }
    out
}

/// The package-relative name (`usr/bin/ping`) of a `setcap` path: melange joins it under the
/// package's output folder, so a leading `/` is optional and `.`/`..` are resolved the way Go's
/// `filepath.Join` cleans them. A path that climbs out of the package names nothing in it.
pub fn package_path(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = vec![];
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(parts.join("/"))
}

/// The `security.capability` xattrs `setcap` gives, by package-relative path.
pub fn xattrs(setcap: &[Setcap]) -> BTreeMap<String, Vec<u8>> {
    resolve(setcap)
        .into_iter()
        .filter_map(|(p, c)| package_path(&p).map(|p| (p, c.encode().to_vec())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, add: &[(&str, &str)], reason: &str) -> Setcap {
        Setcap {
            path: path.into(),
            add: add
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            reason: reason.into(),
        }
    }

    #[test]
    fn net_raw_ep_is_the_kernel_v3_layout() {
        let c = resolve(&[entry("/usr/bin/ping", &[("cap_net_raw", "+ep")], "ping")]);
        let enc = c["/usr/bin/ping"].encode();
        // What `setfattr -n security.capability -v 0x010000030020000000000000000000000000000000000000`
        // stores and `getcap` shows as cap_net_raw=ep.
        assert_eq!(
            hex(&enc),
            "010000030020000000000000000000000000000000000000"
        );
        assert_eq!(enc.len(), 24);
    }

    #[test]
    fn several_caps_flags_and_entries_merge() {
        let c = resolve(&[
            entry(
                "/usr/bin/x",
                &[
                    ("cap_net_bind_service,cap_net_admin", "+eip"),
                    ("cap_sys_admin", "+p"),
                ],
                "r",
            ),
            entry("/usr/bin/x", &[("cap_ipc_lock", "=i")], "r"),
        ]);
        let x = c["/usr/bin/x"];
        assert_eq!(x.effective, (1 << 10) | (1 << 12));
        assert_eq!(x.permitted, (1 << 10) | (1 << 12) | (1 << 21));
        assert_eq!(x.inheritable, (1 << 10) | (1 << 12) | (1 << 14));
        let enc = x.encode();
        assert_eq!(&enc[0..4], &[1, 0, 0, 3]);
        assert_eq!(
            u32::from_le_bytes(enc[4..8].try_into().unwrap()),
            x.permitted
        );
        assert_eq!(
            u32::from_le_bytes(enc[8..12].try_into().unwrap()),
            x.inheritable
        );
        assert_eq!(&enc[12..24], &[0u8; 12]);
    }

    #[test]
    fn no_effective_bit_leaves_the_flag_clear() {
        let c = resolve(&[entry("a", &[("cap_net_admin", "p")], "r")]);
        assert_eq!(
            hex(&c["a"].encode()),
            "000000030010000000000000000000000000000000000000"
        );
        // An empty flag string sets nothing, as melange's.
        let c = resolve(&[entry("a", &[("cap_net_admin", "")], "r")]);
        assert_eq!(c["a"], FileCaps::default());
    }

    #[test]
    fn refuses_caps_off_the_allow_list_and_missing_reasons() {
        assert!(validate(&[entry("/b", &[("cap_net_raw,cap_net_admin", "+ep")], "r")]).is_ok());
        let e = validate(&[entry(
            "/usr/bin/b",
            &[("cap_net_raw,cap_sys_ptrace", "+ep")],
            "r",
        )])
        .unwrap_err();
        assert!(e.contains("\"cap_sys_ptrace\""), "{e}");
        assert!(e.contains("\"/usr/bin/b\""), "{e}");
        assert!(!e.contains("\"cap_net_raw\" for"), "{e}");
        // Names are case- and space-sensitive, as melange's map look-up.
        assert!(validate(&[entry("/b", &[("CAP_NET_RAW", "+ep")], "r")]).is_err());
        assert!(validate(&[entry("/b", &[("cap_net_raw, cap_net_admin", "+ep")], "r")]).is_err());
        let e = validate(&[entry("/b", &[("cap_net_raw", "+ep")], "")]).unwrap_err();
        assert!(e.contains("reason"), "{e}");
        let e = validate(&[
            entry("/a", &[("cap_chown", "+ep")], ""),
            entry("/b", &[("cap_setuid", "+ep")], "r"),
        ])
        .unwrap_err();
        assert_eq!(e.lines().count(), 3, "{e}");
    }

    #[test]
    fn paths_are_cleaned_under_the_package() {
        assert_eq!(package_path("/usr/bin/x").as_deref(), Some("usr/bin/x"));
        assert_eq!(package_path("usr//bin/./x").as_deref(), Some("usr/bin/x"));
        assert_eq!(
            package_path("/usr/sbin/../bin/x").as_deref(),
            Some("usr/bin/x")
        );
        assert_eq!(package_path("/../../etc/shadow"), None);
        assert_eq!(package_path("/"), None);
        let x = xattrs(&[entry("/usr/bin/x", &[("cap_net_raw", "+ep")], "r")]);
        assert_eq!(x.keys().collect::<Vec<_>>(), ["usr/bin/x"]);
    }

    #[test]
    fn compiled_schema_refuses_unknown_keys() {
        let ok: Result<Vec<Setcap>, _> = serde_saphyr::from_str(
            "- path: /usr/bin/x\n  add:\n    cap_net_raw: +ep\n  reason: needs raw sockets\n",
        );
        let ok = ok.unwrap();
        assert_eq!(ok[0].add["cap_net_raw"], "+ep");
        let bad: Result<Vec<Setcap>, _> = serde_saphyr::from_str(
            "- path: /usr/bin/x\n  add:\n    cap_net_raw: +ep\n  reason: r\n  drop: {}\n",
        );
        assert!(bad.is_err());
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }
}
