//! Key discovery, as apko does it when a build sets up its apk database:
//!
//! * **Alpine**: a repository URL of the shape `http(s)://…/alpine/<branch>/<repo>` names a
//!   release branch; Alpine's `releases.json` lists, per branch and architecture, the URLs of
//!   the keys that sign it (with a `deprecated_since` date after which a key is no longer used).
//! * **Chainguard**: `<repository>/apk-configuration` is a JSON document whose `jwks_uri`
//!   names a JSON Web Key Set; every RSA key in it is the keyring file `<kid>.rsa.pub`.
//!
//! Everything fetched goes through the same cache as indexes and keyring URLs (ETag
//! revalidation, offline from the cache, mirrors applied), and keys are read over https only,
//! except from loopback hosts or with [`Client::insecure_keys`]: a key decides what is trusted,
//! so neither a key nor a document naming one is taken from a plain-http server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine as _;
use serde_json::Value;

use crate::{Client, RepoError, is_loopback, is_remote, parse_url, url_key};

/// Where apko reads Alpine's release branches and their keys from.
pub const ALPINE_RELEASES_URL: &str = "https://alpinelinux.org/releases.json";

/// Largest discovery document (`releases.json` is about 50 KiB, a JWKS a few KiB).
const MAX_DOC_BYTES: u64 = 4 << 20;

/// Keys found for one repository, and what went wrong on the way (discovery in a build is
/// best effort, as in apko: a repository whose keys are missing fails at its index instead).
#[derive(Debug, Default)]
pub struct Discovered {
    pub keys: Vec<DiscoveredKey>,
    pub warnings: Vec<String>,
}

/// One discovered key: the cached file, and the URL apko names it by in a lock file (the
/// key's own URL from `releases.json`, or the repository's URL plus the key's file name for
/// Chainguard-style discovery), without credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveredKey {
    pub path: PathBuf,
    pub url: String,
}

/// The Alpine release branch a repository URL names, under apko's rule
/// `^https?://.+/alpine/([^/]+)/[^/]+$`: `https://dl-cdn.alpinelinux.org/alpine/v3.19/main`
/// gives `v3.19`.
pub fn alpine_branch(repo: &str) -> Option<&str> {
    let rest = repo
        .strip_prefix("https://")
        .or_else(|| repo.strip_prefix("http://"))?;
    let mut it = rest.rsplitn(3, '/');
    let (last, branch, prefix) = (it.next()?, it.next()?, it.next()?);
    let before = prefix.strip_suffix("/alpine")?;
    (!last.is_empty() && !branch.is_empty() && !before.is_empty()).then_some(branch)
}

/// Successful lookups of this process, so a multi-arch build asks each server once.
static MEMO: Mutex<BTreeMap<String, Vec<DiscoveredKey>>> = Mutex::new(BTreeMap::new());

fn memo_get(key: &str) -> Option<Vec<DiscoveredKey>> {
    MEMO.lock().ok()?.get(key).cloned()
}

fn memo_put(key: String, v: &[DiscoveredKey]) {
    if let Ok(mut m) = MEMO.lock() {
        m.insert(key, v.to_vec());
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
fn civil_days(date: &str) -> Option<i64> {
    let mut it = date.splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    Some(era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468)
}

fn today() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| (d.as_secs() / 86_400) as i64)
}

/// The key URLs `releases.json` gives for `branch` and `arch` that are not deprecated on
/// `today` (days since the epoch). `None` when the branch is not listed.
pub(crate) fn alpine_key_urls(
    releases: &Value,
    branch: &str,
    arch: &str,
    today: i64,
) -> Result<Option<Vec<String>>, String> {
    let branches = releases
        .get("release_branches")
        .and_then(Value::as_array)
        .ok_or("no release_branches list")?;
    let Some(b) = branches
        .iter()
        .find(|b| b.get("rel_branch").and_then(Value::as_str) == Some(branch))
    else {
        return Ok(None);
    };
    let mut urls = vec![];
    let keys = b
        .get("keys")
        .and_then(|k| k.get(arch))
        .and_then(Value::as_array);
    for k in keys.into_iter().flatten() {
        let Some(url) = k.get("url").and_then(Value::as_str) else {
            return Err(format!("branch {branch}: a key of {arch} has no url"));
        };
        let deprecated = match k.get("deprecated_since") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(
                civil_days(s)
                    .ok_or_else(|| format!("{url}: deprecated_since {s:?} is not YYYY-MM-DD"))?,
            ),
            Some(other) => return Err(format!("{url}: deprecated_since {other} is not a date")),
        };
        // Kept while the deprecation day is still ahead (apko: deprecated.After(now)).
        if deprecated.is_none_or(|d| d > today) {
            // The published URLs have a space (%20) where the @ of the key name belongs.
            urls.push(url.replace("%20", "@"));
        }
    }
    Ok(Some(urls))
}

/// A key file: its name and its PEM text.
type KeyFile = (String, String);

/// The RSA keys of a JSON Web Key Set as `(file name, PEM)`; keys of other types, or without
/// a usable `kid`, are reported in the second list and skipped.
pub(crate) fn jwks_keys(jwks: &Value) -> Result<(Vec<KeyFile>, Vec<String>), String> {
    let list = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no \"keys\" list")?;
    let b64 = |field: &str, k: &Value| -> Result<Vec<u8>, String> {
        let s = k
            .get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no \"{field}\""))?;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|e| format!("\"{field}\" is not base64url: {e}"))
    };
    let (mut keys, mut skipped) = (vec![], vec![]);
    for k in list {
        let kid = k.get("kid").and_then(Value::as_str).unwrap_or("");
        let name = format!("{kid}.rsa.pub");
        if kid.is_empty() || !crate::pallet_keys_name_ok(&name) {
            skipped.push(format!(
                "a key with kid {kid:?} (a kid must be a plain file name)"
            ));
            continue;
        }
        let kty = k.get("kty").and_then(Value::as_str).unwrap_or("");
        if kty != "RSA" {
            skipped.push(format!(
                "key {kid:?} of type {kty:?} (apk signatures are RSA)"
            ));
            continue;
        }
        let pem = b64("n", k)
            .and_then(|n| Ok((n, b64("e", k)?)))
            .and_then(|(n, e)| pallet_keys::rsa_public_pem(&n, &e));
        match pem {
            Ok(pem) => keys.push((name, pem)),
            Err(e) => skipped.push(format!("key {kid:?}: {e}")),
        }
    }
    Ok((keys, skipped))
}

impl Client {
    /// Whether `url` may be trusted to name or carry keys (https, loopback, or
    /// [`Client::insecure_keys`]).
    fn key_transport_ok(&self, url: &str) -> bool {
        url.starts_with("https://") || self.insecure_keys || is_loopback(&parse_url(url).host)
    }

    /// Fetch (or revalidate, or offline take from the cache) a JSON document.
    fn json_doc(&self, url: &str, missing_ok: bool) -> Result<Option<Value>, RepoError> {
        let clean = parse_url(url).clean;
        let dir = self.cache_dir.join("discovery-v1");
        let key = url_key(&clean);
        let Some(path) = self.cached_get_opt(
            url,
            &dir.join(format!("{key}.json")),
            &dir.join(format!("{key}.etag")),
            MAX_DOC_BYTES,
            missing_ok,
        )?
        else {
            return Ok(None);
        };
        let bytes = std::fs::read(&path).map_err(|source| RepoError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RepoError::Http {
                url: clean,
                message: format!("not a JSON document: {e}"),
            })
    }

    /// Alpine's keys for `branch` (`v3.19`) and `arch`, fetched into the cache by URL; none
    /// when `releases.json` does not list the branch or has no keys for the architecture.
    pub fn alpine_keys(&self, branch: &str, arch: &str) -> Result<Vec<DiscoveredKey>, RepoError> {
        let memo = format!("alpine {} {branch} {arch}", self.cache_dir.display());
        if let Some(v) = memo_get(&memo) {
            return Ok(v);
        }
        let url = self.rewrite(ALPINE_RELEASES_URL);
        let doc = self.json_doc(&url, false)?.expect("404 is an error here");
        let urls =
            alpine_key_urls(&doc, branch, arch, today()).map_err(|message| RepoError::Http {
                url: parse_url(&url).clean,
                message,
            })?;
        let mut out = vec![];
        for u in urls.unwrap_or_default() {
            out.push(DiscoveredKey {
                path: self.key(&u)?,
                url: crate::redact(&u),
            });
        }
        memo_put(memo, &out);
        Ok(out)
    }

    /// Chainguard-style discovery for `repo`: its `apk-configuration` document names a JWKS,
    /// whose RSA keys are written into the cache as `<kid>.rsa.pub`. A repository without the
    /// document (404) has no keys to offer. Returns the key files and the JWKS entries that
    /// were skipped (other key types, unusable `kid`s).
    pub fn chainguard_keys(
        &self,
        repo: &str,
    ) -> Result<(Vec<DiscoveredKey>, Vec<String>), RepoError> {
        let base = self.rewrite(repo).trim_end_matches('/').to_string();
        let doc_url = format!("{base}/apk-configuration");
        let clean = parse_url(&doc_url).clean;
        let memo = format!("chainguard {} {clean}", self.cache_dir.display());
        if let Some(v) = memo_get(&memo) {
            return Ok((v, vec![]));
        }
        let insecure = |url: &str| RepoError::Http {
            url: parse_url(url).clean,
            message: "key discovery reads keys over https only (plain http lets anyone on the \
                      path choose the keys); use https, or --insecure-keyring"
                .into(),
        };
        if !is_remote(&base) {
            return Ok((vec![], vec![]));
        }
        if !self.key_transport_ok(&doc_url) {
            return Err(insecure(&doc_url));
        }
        let Some(doc) = self.json_doc(&doc_url, true)? else {
            memo_put(memo, &[]);
            return Ok((vec![], vec![]));
        };
        let jwks_url = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .filter(|u| is_remote(u))
            .ok_or_else(|| RepoError::Http {
                url: clean.clone(),
                message: "no jwks_uri naming an http(s) URL".into(),
            })?
            .to_string();
        if !self.key_transport_ok(&jwks_url) {
            return Err(insecure(&jwks_url));
        }
        let jwks = self
            .json_doc(&jwks_url, false)?
            .expect("404 is an error here");
        let jwks_clean = parse_url(&jwks_url).clean;
        let (keys, skipped) = jwks_keys(&jwks).map_err(|message| RepoError::Http {
            url: jwks_clean.clone(),
            message,
        })?;
        let dir = self
            .cache_dir
            .join("keys-v1")
            .join(format!("jwks-{}", url_key(&jwks_clean)));
        let mut out = vec![];
        let shown = crate::redact(repo);
        for (name, pem) in keys {
            let path = dir.join(&name);
            write_if_changed(&path, pem.as_bytes())?;
            out.push(DiscoveredKey {
                path,
                url: format!("{}/{name}", shown.trim_end_matches('/')),
            });
        }
        memo_put(memo, &out);
        Ok((out, skipped))
    }

    /// Both kinds of discovery for one repository line's URL (tag removed), best effort: what
    /// fails is reported in [`Discovered::warnings`]. Repositories that are local (or that a
    /// mirror maps to a local folder) are skipped, as apko skips non-http ones; offline, only
    /// what the cache holds is used; a plain-http repository offers no Chainguard keys.
    pub fn discover_keys(&self, repo: &str, arch: &str) -> Discovered {
        let mut d = Discovered::default();
        let effective = self.rewrite(repo);
        if !is_remote(&effective) {
            return d;
        }
        let shown = crate::redact(repo);
        if let Some(branch) = alpine_branch(repo) {
            match self.alpine_keys(branch, arch) {
                Ok(k) => d.keys.extend(k),
                Err(RepoError::Offline { .. }) => {}
                Err(e) => d.warnings.push(format!(
                    "Alpine key discovery for {shown} ({branch}, {arch}): {e}"
                )),
            }
        }
        let doc_url = format!("{}/apk-configuration", effective.trim_end_matches('/'));
        if self.key_transport_ok(&doc_url) {
            match self.chainguard_keys(repo) {
                Ok((k, skipped)) => {
                    d.keys.extend(k);
                    d.warnings.extend(
                        skipped
                            .into_iter()
                            .map(|s| format!("key discovery for {shown}: skipped {s}")),
                    );
                }
                Err(RepoError::Offline { .. }) => {}
                Err(e) => d.warnings.push(format!("key discovery for {shown}: {e}")),
            }
        }
        d
    }
}

/// What [`install_keys`] did.
#[derive(Debug, Default)]
pub struct InstalledKeys {
    /// The key files written.
    pub written: Vec<PathBuf>,
    /// Repositories passed over, and keys skipped, with the reason.
    pub notes: Vec<String>,
    /// Repositories whose discovery failed.
    pub errors: Vec<String>,
}

/// apko's `install-keys`: Chainguard-style discovery for every repository listed in
/// `<root>/etc/apk/repositories`, each key written to `<root>/etc/apk/keys/<kid>.rsa.pub`.
/// Comments, blank lines and local repositories are passed over (apko discovers for http(s)
/// repositories only), and so are plain-http repositories on other hosts, whose keys could be
/// anyone's. A repository whose discovery fails is reported and the others still get their
/// keys.
pub fn install_keys(client: &Client, root: &Path) -> Result<InstalledKeys, RepoError> {
    let list = root.join("etc/apk/repositories");
    let text = std::fs::read_to_string(&list).map_err(|source| RepoError::Io {
        path: list.clone(),
        source,
    })?;
    let keys_dir = root.join("etc/apk/keys");
    let mut r = InstalledKeys::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // `@tag URL` pins a repository; the URL is what has keys.
        let repo = match line.strip_prefix('@') {
            Some(rest) => rest
                .split_once(char::is_whitespace)
                .map_or("", |(_, u)| u.trim()),
            None => line,
        };
        let effective = client.rewrite(repo);
        let shown = crate::redact(repo);
        if !is_remote(&effective) {
            continue;
        }
        if !client.key_transport_ok(&format!("{effective}/apk-configuration")) {
            r.notes.push(format!(
                "{shown}: skipped (plain http: keys are discovered over https only, or with --insecure-keyring)"
            ));
            continue;
        }
        match client.chainguard_keys(repo) {
            Ok((keys, skipped)) => {
                r.notes
                    .extend(skipped.into_iter().map(|s| format!("{shown}: skipped {s}")));
                if keys.is_empty() {
                    r.notes
                        .push(format!("{shown}: offers no keys (no apk-configuration)"));
                }
                for DiscoveredKey { path: k, .. } in keys {
                    let name = k.file_name().expect("key files have names");
                    let data = std::fs::read(&k).map_err(|source| RepoError::Io {
                        path: k.clone(),
                        source,
                    })?;
                    std::fs::create_dir_all(&keys_dir).map_err(|source| RepoError::Io {
                        path: keys_dir.clone(),
                        source,
                    })?;
                    let dest = keys_dir.join(name);
                    pallet_keys::write_atomic(&dest, &data, 0o644).map_err(|e| RepoError::Io {
                        path: dest.clone(),
                        source: std::io::Error::other(e.to_string()),
                    })?;
                    r.written.push(dest);
                }
            }
            // Offline, a repository the cache knows nothing of has nothing to offer.
            Err(RepoError::Offline { .. }) => r.notes.push(format!(
                "{shown}: skipped (offline, and nothing of it in the cache)"
            )),
            Err(e) => r.errors.push(format!("{shown}: {e}")),
        }
    }
    Ok(r)
}

/// Write `data` to `path` atomically unless it already holds exactly that.
fn write_if_changed(path: &Path, data: &[u8]) -> Result<(), RepoError> {
    if std::fs::read(path).is_ok_and(|old| old == data) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| RepoError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    crate::write_atomic_from(path, &mut &data[..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn alpine_branches_as_apko_matches_them() {
        assert_eq!(
            alpine_branch("https://dl-cdn.alpinelinux.org/alpine/v3.19/main"),
            Some("v3.19")
        );
        assert_eq!(
            alpine_branch("http://mirror.example/pub/alpine/edge/testing"),
            Some("edge")
        );
        assert_eq!(alpine_branch("https://x/alpine/v3.19/main/"), None);
        assert_eq!(alpine_branch("https://alpine/v3.19/main"), None);
        assert_eq!(alpine_branch("/srv/alpine/v3.19/main"), None);
        assert_eq!(alpine_branch("https://packages.wolfi.dev/os"), None);
    }

    #[test]
    fn releases_keys_by_branch_arch_and_deprecation() {
        let doc = json!({"release_branches": [
            {"rel_branch": "v3.19", "keys": {"x86_64": [
                {"url": "https://alpinelinux.org/keys/alpine-devel%20lists.alpinelinux.org-4a6a0840.rsa.pub"},
                {"url": "https://k/old.rsa.pub", "deprecated_since": "2020-01-01"},
                {"url": "https://k/soon.rsa.pub", "deprecated_since": "2020-01-03"},
                {"url": "https://k/null.rsa.pub", "deprecated_since": null},
            ]}},
        ]});
        let day = civil_days("2020-01-02").unwrap();
        assert_eq!(civil_days("1970-01-02"), Some(1));
        let urls = alpine_key_urls(&doc, "v3.19", "x86_64", day)
            .unwrap()
            .unwrap();
        assert_eq!(
            urls,
            [
                "https://alpinelinux.org/keys/alpine-devel@lists.alpinelinux.org-4a6a0840.rsa.pub",
                "https://k/soon.rsa.pub",
                "https://k/null.rsa.pub"
            ]
        );
        // Deprecated on the day itself: gone.
        let urls = alpine_key_urls(&doc, "v3.19", "x86_64", day + 1)
            .unwrap()
            .unwrap();
        assert_eq!(urls.len(), 2);
        assert_eq!(
            alpine_key_urls(&doc, "v3.19", "riscv64", day).unwrap(),
            Some(vec![])
        );
        assert_eq!(alpine_key_urls(&doc, "v9.9", "x86_64", day).unwrap(), None);
        assert!(alpine_key_urls(&json!({}), "v3.19", "x86_64", day).is_err());
    }

    #[test]
    fn jwks_rsa_keys_become_pem_files_and_others_are_skipped() {
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xc5u8; 256]);
        let doc = json!({"keys": [
            {"kty": "RSA", "kid": "signing-1", "n": n, "e": "AQAB"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "../evil", "n": n, "e": "AQAB"},
            {"kty": "RSA", "n": n, "e": "AQAB"},
        ]});
        let (keys, skipped) = jwks_keys(&doc).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].0, "signing-1.rsa.pub");
        assert!(keys[0].1.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(jwks_keys(&json!({"nokeys": 1})).is_err());
    }

    #[test]
    fn local_and_mirrored_repositories_are_not_probed() {
        let t = tempfile::tempdir().unwrap();
        let mut c = Client::new(t.path().to_path_buf());
        c.mirrors = vec![(
            "https://dl-cdn.alpinelinux.org/alpine".into(),
            "/srv/mirror".into(),
        )];
        let d = c.discover_keys("https://dl-cdn.alpinelinux.org/alpine/v3.19/main", "x86_64");
        assert!(d.keys.is_empty() && d.warnings.is_empty());
        let d = c.discover_keys("/srv/repo", "x86_64");
        assert!(d.keys.is_empty() && d.warnings.is_empty());
        // Plain http to a remote host: no Chainguard document is even asked for.
        c.offline = true;
        let d = c.discover_keys("http://example.invalid/os", "x86_64");
        assert!(d.keys.is_empty() && d.warnings.is_empty());
    }
}
