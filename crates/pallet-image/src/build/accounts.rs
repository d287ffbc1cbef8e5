//! `accounts:`: the users and groups written into `/etc/passwd`, `/etc/group` and
//! `/etc/shadow`, and their home folders.

use pallet_fs::{Node, Tree};

use super::{BuildError, file};
use crate::config::ImageConfiguration;

/// Apply `accounts:` to the tree (nothing when the configuration has none).
pub(super) fn accounts(
    tree: &mut Tree,
    cfg: &ImageConfiguration,
    epoch: u64,
) -> Result<(), BuildError> {
    let read = |tree: &Tree, p: &str| {
        String::from_utf8_lossy(&tree.read(p).ok().flatten().unwrap_or_default()).into_owned()
    };
    let Some(acc) = &cfg.accounts else {
        if tree.get("etc/passwd").is_none() {
            file(tree, "etc/passwd", vec![], 0o644, 0);
        }
        return Ok(());
    };
    let mut passwd = read(tree, "etc/passwd");
    let mut shadow = read(tree, "etc/shadow");
    for u in &acc.users {
        if !passwd.is_empty() && !passwd.ends_with('\n') {
            passwd.push('\n');
        }
        let home = u
            .homedir
            .clone()
            .unwrap_or_else(|| format!("/home/{}", u.username));
        let shell = u.shell.clone().unwrap_or_else(|| "/bin/sh".into());
        passwd.push_str(&format!(
            "{}:x:{}:{}:Account created by apko:{}:{}\n",
            u.username,
            u.uid,
            u.gid.unwrap_or(u.uid),
            home,
            shell
        ));
        if !shadow.is_empty() && !shadow.ends_with('\n') {
            shadow.push('\n');
        }
        shadow.push_str(&format!("{}:!:::::::\n", u.username));
    }
    file(tree, "etc/passwd", passwd.clone().into_bytes(), 0o644, 0);
    if !acc.users.is_empty() {
        file(tree, "etc/shadow", shadow.into_bytes(), 0o640, 0);
    }
    if !acc.groups.is_empty() {
        let mut group = read(tree, "etc/group");
        for g in &acc.groups {
            if !group.is_empty() && !group.ends_with('\n') {
                group.push('\n');
            }
            group.push_str(&format!(
                "{}:x:{}:{}\n",
                g.groupname,
                g.gid,
                g.members.join(",")
            ));
        }
        file(tree, "etc/group", group.into_bytes(), 0o644, 0);
    }
    // Home folders of every account that lacks one (mode 0700, owned by the user).
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            continue;
        }
        let home = f[5].trim_start_matches('/');
        if home.is_empty() || f[5] == "/dev/null" || tree.get(home).is_some() {
            continue;
        }
        let (uid, gid) = (f[2].parse().unwrap_or(0), f[3].parse().unwrap_or(0));
        if let Some((parent, _)) = home.rsplit_once('/') {
            tree.mkdir_all(parent, 0o755, epoch);
        }
        tree.put(
            home,
            Node {
                uid,
                gid,
                ..Node::dir(0o700, 0)
            },
        );
    }
    Ok(())
}
