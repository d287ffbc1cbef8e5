//! Who a build's steps run as, with which capabilities, and for how long: melange's rules,
//! decided from the configuration alone (no I/O), so every runner applies the same policy.
//!
//! melange injects a `build` user (uid/gid 1000) into the environment's accounts and runs the
//! steps as `environment.accounts.run-as`, or as that user when none is given. The sandbox gets
//! Docker's default capability set, plus `capabilities.add`, minus `capabilities.drop`: a build
//! script is code from outside and must not hold `CAP_SYS_ADMIN` and friends by default.

use std::time::Duration;

use pallet_image::config::{Accounts, Group, ImageConfiguration, User};

/// melange's build user.
pub const BUILD_USER: &str = "build";
/// melange's build user's uid and gid.
pub const BUILD_UID: u32 = 1000;

/// Docker's default capability set (moby `oci/caps/defaults.go`), which melange's runners give
/// every build.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability Linux knows, by its `CAP_` name, in bit order.
pub const ALL_CAPS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Why a policy could not be decided; the message names the key to fix.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "capabilities: unknown capability '{0}' (use a Linux capability name such as CAP_NET_ADMIN)"
    )]
    UnknownCap(String),
    #[error(
        "environment.accounts.run-as: '{0}' is neither a uid nor a user of environment.accounts.users"
    )]
    UnknownUser(String),
    #[error(
        "package.timeout: '{0}' is not a duration (write it as Go does: 90s, 30m, 1h30m, or whole seconds)"
    )]
    BadTimeout(String),
}

/// The identity and privileges of a build's steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Capability names (`CAP_…`) the steps keep, sorted in bit order.
    pub caps: Vec<String>,
}

/// `name` as a `CAP_` name that Linux knows: `net_admin`, `NET_ADMIN` and `CAP_NET_ADMIN` are
/// one capability.
pub fn normalize_cap(name: &str) -> Result<String, PolicyError> {
    let up = name.trim().to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    if ALL_CAPS.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(PolicyError::UnknownCap(name.to_string()))
    }
}

/// Docker's defaults plus `add` minus `drop`, in bit order.
pub fn capabilities(add: &[String], drop: &[String]) -> Result<Vec<String>, PolicyError> {
    let add: Vec<String> = add
        .iter()
        .map(|c| normalize_cap(c))
        .collect::<Result<_, _>>()?;
    let drop: Vec<String> = drop
        .iter()
        .map(|c| normalize_cap(c))
        .collect::<Result<_, _>>()?;
    Ok(ALL_CAPS
        .iter()
        .filter(|c| {
            (DEFAULT_CAPS.contains(c) || add.iter().any(|a| a == *c))
                && !drop.iter().any(|d| d == *c)
        })
        .map(|c| c.to_string())
        .collect())
}

/// Add melange's `build` user and group to `env`'s accounts when they are not there, as
/// melange does before it builds the guest, so the steps' uid has a name and a home.
pub fn add_build_user(env: &mut ImageConfiguration) {
    let accounts = env.accounts.get_or_insert_with(Accounts::default);
    if !accounts.groups.iter().any(|g| g.groupname == BUILD_USER) {
        accounts.groups.push(Group {
            groupname: BUILD_USER.into(),
            gid: BUILD_UID,
            members: vec![BUILD_USER.into()],
        });
    }
    if !accounts.users.iter().any(|u| u.username == BUILD_USER) {
        accounts.users.push(User {
            username: BUILD_USER.into(),
            uid: BUILD_UID,
            gid: Some(BUILD_UID),
            shell: None,
            homedir: Some("/home/build".into()),
        });
    }
}

/// The uid and gid that `environment.accounts.run-as` names (a user name or a number), or the
/// build user's when it names none.
pub fn run_as(env: &ImageConfiguration) -> Result<(u32, u32), PolicyError> {
    let accounts = env.accounts.clone().unwrap_or_default();
    let who = accounts
        .run_as
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(BUILD_USER);
    if who == "root" {
        return Ok((0, 0));
    }
    let user = accounts
        .users
        .iter()
        .find(|u| u.username == who || u.uid.to_string() == who);
    match (user, who.parse::<u32>()) {
        (Some(u), _) => Ok((u.uid, u.gid.unwrap_or(u.uid))),
        (None, Ok(n)) => Ok((n, n)),
        (None, Err(_)) if who == BUILD_USER => Ok((BUILD_UID, BUILD_UID)),
        (None, Err(_)) => Err(PolicyError::UnknownUser(who.to_string())),
    }
}

/// Who the steps of a build in `env` run as, and with which capabilities.
pub fn identity(
    env: &ImageConfiguration,
    add: &[String],
    drop: &[String],
) -> Result<Identity, PolicyError> {
    let (uid, gid) = run_as(env)?;
    Ok(Identity {
        uid,
        gid,
        caps: capabilities(add, drop)?,
    })
}

/// `package.timeout` as Go's `time.ParseDuration` reads it (`1h30m`, `90s`, `1.5h`, `500ms`);
/// a bare number is whole seconds. Empty or zero means no limit.
pub fn parse_timeout(s: &str) -> Result<Option<Duration>, PolicyError> {
    let t = s.trim();
    let bad = || PolicyError::BadTimeout(s.to_string());
    if t.is_empty() {
        return Ok(None);
    }
    if let Ok(n) = t.parse::<u64>() {
        return Ok((n > 0).then(|| Duration::from_secs(n)));
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_len);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = tail;
    }
    Ok((total > 0.0).then(|| Duration::from_secs_f64(total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_caps_add_and_drop() {
        let c = capabilities(&[], &[]).unwrap();
        assert_eq!(c.len(), DEFAULT_CAPS.len());
        assert!(!c.contains(&"CAP_SYS_ADMIN".to_string()));
        let c = capabilities(
            &["sys_admin".into()],
            &["CAP_CHOWN".into(), "net_raw".into()],
        )
        .unwrap();
        assert!(c.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(!c.contains(&"CAP_CHOWN".to_string()));
        assert!(!c.contains(&"CAP_NET_RAW".to_string()));
        assert!(capabilities(&["CAP_NOPE".into()], &[]).is_err());
    }

    #[test]
    fn run_as_defaults_to_the_build_user() {
        let mut env = ImageConfiguration::default();
        assert_eq!(run_as(&env).unwrap(), (1000, 1000));
        add_build_user(&mut env);
        add_build_user(&mut env);
        let a = env.accounts.clone().unwrap();
        assert_eq!(a.users.len(), 1);
        assert_eq!(a.groups.len(), 1);
        env.accounts.as_mut().unwrap().run_as = Some("root".into());
        assert_eq!(run_as(&env).unwrap(), (0, 0));
        env.accounts.as_mut().unwrap().run_as = Some("4242".into());
        assert_eq!(run_as(&env).unwrap(), (4242, 4242));
        env.accounts.as_mut().unwrap().run_as = Some("nobody-here".into());
        assert!(run_as(&env).is_err());
    }

    #[test]
    fn timeouts_read_as_go_durations() {
        assert_eq!(parse_timeout("").unwrap(), None);
        assert_eq!(parse_timeout("90").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_timeout("1h30m").unwrap(),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(
            parse_timeout("1.5s").unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert!(parse_timeout("soon").is_err());
        assert!(parse_timeout("5x").is_err());
    }
}
