//! Registry credentials as users already keep them: `HTTP_AUTH`,
//! `~/.docker/config.json` (`auths`, `credHelpers`, `credsStore`), and
//! `login`, which writes that file as `docker login` does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;

use crate::push::Credentials;

/// The docker config file: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// `HTTP_AUTH=basic:<host>:<user>:<pass>` as apko reads it.
pub fn from_http_auth(value: &str, host: &str) -> Option<Credentials> {
    let rest = value.strip_prefix("basic:")?;
    let rest = rest.strip_prefix(host)?.strip_prefix(':')?;
    let (u, p) = rest.split_once(':')?;
    Some(Credentials {
        username: u.into(),
        password: p.into(),
    })
}

/// Credentials for `host`: `HTTP_AUTH` first, then the docker config at `path`.
pub fn lookup(host: &str, path: Option<&Path>) -> Result<Option<Credentials>, String> {
    if let Ok(v) = std::env::var("HTTP_AUTH")
        && let Some(c) = from_http_auth(&v, host)
    {
        return Ok(Some(c));
    }
    let Some(path) = path.map(Path::to_path_buf).or_else(docker_config_path) else {
        return Ok(None);
    };
    let Ok(text) = std::fs::read(&path) else {
        return Ok(None);
    };
    let cfg: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let keys = [
        host.to_string(),
        format!("https://{host}"),
        format!("http://{host}"),
    ];
    let docker_hub = host == "index.docker.io" || host == "docker.io";
    if let Some(helper) = keys.iter().find_map(|k| cfg["credHelpers"][k].as_str()) {
        return helper_get(helper, host);
    }
    for k in keys
        .iter()
        .map(String::as_str)
        .chain(docker_hub.then_some("https://index.docker.io/v1/"))
    {
        if let Some(auth) = cfg["auths"][k]["auth"].as_str() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth)
                .map_err(|e| format!("{}: auths.{k}: {e}", path.display()))?;
            let s = String::from_utf8_lossy(&raw);
            if let Some((u, p)) = s.split_once(':') {
                return Ok(Some(Credentials {
                    username: u.into(),
                    password: p.into(),
                }));
            }
        }
    }
    if let Some(store) = cfg["credsStore"].as_str() {
        return helper_get(store, host);
    }
    Ok(None)
}

/// Runs `docker-credential-NAME get` with `host` on stdin.
fn helper_get(name: &str, host: &str) -> Result<Option<Credentials>, String> {
    let prog = format!("docker-credential-{name}");
    let mut child = Command::new(&prog)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{prog}: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(host.as_bytes())
        .map_err(|e| format!("{prog}: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{prog}: {e}"))?;
    if !out.status.success() {
        // Helpers say "credentials not found" for unknown hosts: anonymous then.
        return Ok(None);
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("{prog}: {e}"))?;
    Ok(Some(Credentials {
        username: v["Username"].as_str().unwrap_or_default().into(),
        password: v["Secret"].as_str().unwrap_or_default().into(),
    }))
}

/// Stores `user:password` for `registry` under `auths` in the docker config
/// at `path` (default [`docker_config_path`]), keeping the other keys; the file
/// is replaced atomically with mode 0600.
pub fn login(
    registry: &str,
    user: &str,
    password: &str,
    path: Option<&Path>,
) -> Result<PathBuf, String> {
    let path = path
        .map(Path::to_path_buf)
        .or_else(docker_config_path)
        .ok_or("no HOME for docker config")?;
    let mut cfg: serde_json::Value = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display()))?,
        Err(_) => serde_json::json!({}),
    };
    if !cfg.is_object() {
        cfg = serde_json::json!({});
    }
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    if !cfg["auths"].is_object() {
        cfg["auths"] = serde_json::json!({});
    }
    cfg["auths"][registry] = serde_json::json!({ "auth": auth });
    let dir = path.parent().ok_or("docker config has no directory")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    tmp.write_all(&serde_json::to_vec_pretty(&cfg).expect("json"))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    tmp.persist(&path)
        .map_err(|e| format!("{}: {}", path.display(), e.error))?;
    Ok(path)
}
