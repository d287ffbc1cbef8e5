//! Credentials as users already keep them: docker's `config.json` (`auths` with base64
//! `auth` or username/password, `credHelpers` per registry, `credsStore` for all), and
//! `HTTP_AUTH=basic:HOST:USER:PASS`. `login` writes `auths` the way `docker login` does.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine as _;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

fn config_path() -> PathBuf {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("config.json");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".docker/config.json")
}

fn helper(name: &str, registry: &str) -> Option<Credentials> {
    let mut child = Command::new(format!("docker-credential-{name}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(registry.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(Credentials {
        username: v["Username"].as_str()?.to_string(),
        password: v["Secret"].as_str()?.to_string(),
    })
}

/// Credentials for `registry` from the environment and docker's configuration.
pub fn lookup_credentials(registry: &str) -> Option<Credentials> {
    // HTTP_AUTH names a host with or without its port.
    let env = pallet_repo::Auth::from_env();
    let host = registry.split(':').next().unwrap_or(registry);
    if let Some((u, p)) = env.for_host(registry).or_else(|| env.for_host(host)) {
        return Some(Credentials {
            username: u.into(),
            password: p.into(),
        });
    }
    let text = std::fs::read_to_string(config_path()).ok()?;
    let cfg: serde_json::Value = serde_json::from_str(&text).ok()?;
    if let Some(h) = cfg["credHelpers"][registry].as_str() {
        return helper(h, registry);
    }
    let keys = [
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ];
    for k in &keys {
        let a = &cfg["auths"][k.as_str()];
        if let Some(auth) = a["auth"].as_str() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth)
                .ok()?;
            let s = String::from_utf8(raw).ok()?;
            let (u, p) = s.split_once(':')?;
            return Some(Credentials {
                username: u.into(),
                password: p.into(),
            });
        }
        if let (Some(u), Some(p)) = (a["username"].as_str(), a["password"].as_str()) {
            return Some(Credentials {
                username: u.into(),
                password: p.into(),
            });
        }
    }
    if let Some(store) = cfg["credsStore"].as_str() {
        return helper(store, registry);
    }
    None
}

/// Store credentials for `registry` in docker's `config.json`, keeping everything else in it.
pub fn login(registry: &str, creds: &Credentials) -> std::io::Result<PathBuf> {
    let path = config_path();
    let mut cfg: serde_json::Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    if !cfg.is_object() {
        cfg = serde_json::json!({});
    }
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", creds.username, creds.password));
    if !cfg["auths"].is_object() {
        cfg["auths"] = serde_json::json!({});
    }
    cfg["auths"][registry] = serde_json::json!({ "auth": auth });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(&cfg).expect("JSON"))?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}
