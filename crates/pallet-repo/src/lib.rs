//! Repositories: local folders and http(s) servers behind one interface, with a download cache
//! for indexes (ETag-aware, written atomically so a killed build never leaves a torn file),
//! offline mode, mirrors that rewrite public repository URLs to local copies, and credentials
//! from `HTTP_AUTH` or the URL, as apko reads them.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use sha2::Digest as _;

mod discover;
pub use discover::{
    ALPINE_RELEASES_URL, Discovered, DiscoveredKey, InstalledKeys, alpine_branch, install_keys,
};

/// The largest index accepted from a server. Wolfi's, the largest real one, is about 20 MiB
/// compressed; anything far past that is a broken or hostile server filling the disk.
pub const MAX_INDEX_BYTES: u64 = 256 << 20;
/// The largest public key accepted from a server: an RSA-8192 PEM is under 2 KiB.
pub const MAX_KEY_BYTES: u64 = 64 << 10;
/// The largest HTTP answer of any kind by default (apko's `--max-http-response-size`).
pub const DEFAULT_MAX_HTTP_RESPONSE: u64 = 8 << 30;

static MAX_HTTP_RESPONSE: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_MAX_HTTP_RESPONSE);

/// Set, for this process, the largest HTTP answer read from a server (indexes and keys keep
/// their own smaller limits too); `u64::MAX` for none. apko's `--max-http-response-size`.
pub fn set_max_http_response_size(bytes: u64) {
    MAX_HTTP_RESPONSE.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

/// The largest HTTP answer read from a server, as set by [`set_max_http_response_size`].
pub fn max_http_response_size() -> u64 {
    MAX_HTTP_RESPONSE.load(std::sync::atomic::Ordering::Relaxed)
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error(
        "{url}: not in the cache and --offline forbids downloading it (run once online, or name a local mirror)"
    )]
    Offline { url: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// `HTTP_AUTH=basic:<host>:<user>:<pass>` entries (comma separated).
#[derive(Clone, Debug, Default)]
pub struct Auth {
    entries: Vec<(String, String, String)>,
}

impl Auth {
    pub fn from_env() -> Self {
        std::env::var("HTTP_AUTH")
            .map(|v| Self::parse(&v))
            .unwrap_or_default()
    }
    pub fn parse(v: &str) -> Self {
        let entries = v
            .split(',')
            .filter_map(|e| {
                let mut it = e.trim().splitn(4, ':');
                match (it.next(), it.next(), it.next(), it.next()) {
                    (Some("basic"), Some(h), Some(u), Some(p)) => {
                        Some((h.to_string(), u.to_string(), p.to_string()))
                    }
                    _ => None,
                }
            })
            .collect();
        Auth { entries }
    }
    /// The user and password given for `host`.
    pub fn for_host(&self, host: &str) -> Option<(&str, &str)> {
        self.entries
            .iter()
            .find(|(h, _, _)| h == host)
            .map(|(_, u, p)| (u.as_str(), p.as_str()))
    }
}

/// Where repositories come from and where downloads are kept.
#[derive(Clone, Debug)]
pub struct Client {
    pub cache_dir: PathBuf,
    pub offline: bool,
    /// Fetch keys over plain http from hosts other than loopback. A key is what every
    /// signature is checked against, so one read over plain http trusts whoever is on the path.
    pub insecure_keys: bool,
    /// (prefix, replacement) pairs: a repository URL starting with `prefix` is read from
    /// `replacement` instead (a local folder or another server).
    pub mirrors: Vec<(String, String)>,
    pub auth: Auth,
    /// The longest one request may take, body included: a server that drips bytes or never
    /// finishes is cut off after this ([`DEFAULT_HTTP_TIMEOUT`], or `PALLET_HTTP_TIMEOUT`
    /// seconds from the environment).
    pub timeout: Duration,
}

/// The longest one HTTP request may take, from connecting to the last byte of the body: long
/// enough for a large package over a slow link, short enough that a stalled server ends a build.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest a TCP connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Redirects followed before giving up (a loop ends here).
pub const MAX_REDIRECTS: u32 = 10;

/// `PALLET_HTTP_TIMEOUT` (whole seconds, at least 1) or the default.
fn timeout_from_env() -> Duration {
    std::env::var("PALLET_HTTP_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(DEFAULT_HTTP_TIMEOUT, Duration::from_secs)
}

/// A repository URL split into what requests need.
struct Parsed {
    /// The URL without credentials (safe to print and to key the cache with).
    clean: String,
    host: String,
    basic: Option<(String, String)>,
}

fn parse_url(url: &str) -> Parsed {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = rest
        .split_once('/')
        .map(|(a, p)| (a, format!("/{p}")))
        .unwrap_or((rest, String::new()));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let basic = userinfo.map(|u| {
        let (user, pass) = u.split_once(':').unwrap_or((u, ""));
        (user.to_string(), pass.to_string())
    });
    let host = hostport.split(':').next().unwrap_or("").to_string();
    Parsed {
        clean: format!("{scheme}://{hostport}{path}"),
        host,
        basic,
    }
}

/// Remove credentials from a URL for messages.
pub fn redact(url: &str) -> String {
    if url.contains("://") {
        parse_url(url).clean
    } else {
        url.to_string()
    }
}

pub fn is_remote(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

impl Client {
    pub fn new(cache_dir: PathBuf) -> Self {
        Client {
            cache_dir,
            offline: false,
            insecure_keys: false,
            mirrors: vec![],
            auth: Auth::from_env(),
            timeout: timeout_from_env(),
        }
    }

    /// A transport error in words that say what to do.
    fn explain(&self, e: &str) -> String {
        if e.contains("timeout") || e.contains("timed out") {
            format!(
                "the server did not answer in full within {} s, timed out ({e}); raise the limit with PALLET_HTTP_TIMEOUT=SECONDS if it is only slow",
                self.timeout.as_secs()
            )
        } else if e.to_lowercase().contains("redirect") {
            format!("more than {MAX_REDIRECTS} redirects (a redirect loop?): {e}")
        } else {
            e.to_string()
        }
    }

    /// Apply the first matching mirror.
    pub fn rewrite(&self, url: &str) -> String {
        for (from, to) in &self.mirrors {
            if let Some(rest) = url.strip_prefix(from.as_str()) {
                return format!("{to}{rest}");
            }
        }
        url.to_string()
    }

    fn agent(&self) -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_global(Some(self.timeout))
            .timeout_connect(Some(CONNECT_TIMEOUT.min(self.timeout)))
            .max_redirects(MAX_REDIRECTS)
            .user_agent(concat!("pallet/", env!("CARGO_PKG_VERSION")))
            .http_status_as_error(false)
            .build()
            .into()
    }

    fn get(
        &self,
        url: &str,
        etag: Option<&str>,
    ) -> Result<ureq::http::Response<ureq::Body>, RepoError> {
        let p = parse_url(url);
        let cred = p.basic.clone().or_else(|| {
            self.auth
                .for_host(&p.host)
                .map(|(u, pw)| (u.to_string(), pw.to_string()))
        });
        let agent = self.agent();
        // Retry transient failures a few times with backoff; a 4xx is final.
        let mut delay = Duration::from_millis(200);
        for attempt in 0..4 {
            let mut req = agent.get(&p.clean);
            if let Some((u, pw)) = &cred {
                let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{pw}"));
                req = req.header("Authorization", format!("Basic {token}"));
            }
            if let Some(e) = etag {
                req = req.header("If-None-Match", e);
            }
            match req.call() {
                Ok(r) if r.status().is_server_error() && attempt < 3 => {}
                Ok(r) => return Ok(r),
                // A timeout or a redirect loop is final: retrying would only multiply the wait.
                Err(e @ (ureq::Error::Timeout(_) | ureq::Error::TooManyRedirects)) => {
                    return Err(RepoError::Http {
                        url: p.clean,
                        message: self.explain(&e.to_string()),
                    });
                }
                Err(e) if attempt == 3 => {
                    return Err(RepoError::Http {
                        url: p.clean,
                        message: format!("{e} (is the server reachable?)"),
                    });
                }
                Err(_) => {}
            }
            std::thread::sleep(delay);
            delay *= 2;
        }
        Err(RepoError::Http {
            url: p.clean,
            message: "server kept failing".into(),
        })
    }

    /// The local path of `$repo/$arch/APKINDEX.tar.gz`, downloading it (or revalidating the
    /// cached copy with its ETag) for remote repositories.
    pub fn index(&self, repo: &str, arch: &str) -> Result<PathBuf, RepoError> {
        let url = self.rewrite(repo);
        if !is_remote(&url) {
            let dir = PathBuf::from(url.strip_prefix("file://").unwrap_or(&url));
            return Ok(dir.join(arch).join("APKINDEX.tar.gz"));
        }
        let full = format!("{}/{arch}/APKINDEX.tar.gz", url.trim_end_matches('/'));
        let key = url_key(&parse_url(&full).clean);
        let dir = self.cache_dir.join("indexes-v1");
        self.cached_get(
            &full,
            &dir.join(format!("{key}-APKINDEX.tar.gz")),
            &dir.join(format!("{key}.etag")),
            MAX_INDEX_BYTES,
        )
    }

    /// The local path of a public key named by `key` (a path, a `file://` URL or an http(s)
    /// URL). Remote keys are kept in the cache under their own file name, since signatures
    /// name the key they were made with, and revalidated with their ETag; offline, the cached
    /// copy is used.
    pub fn key(&self, key: &str) -> Result<PathBuf, RepoError> {
        let url = self.rewrite(key);
        if !is_remote(&url) {
            return Ok(PathBuf::from(url.strip_prefix("file://").unwrap_or(&url)));
        }
        let p = parse_url(&url);
        if url.starts_with("http://") && !self.insecure_keys && !is_loopback(&p.host) {
            return Err(RepoError::Http {
                url: p.clean,
                message: "keys are fetched over https only (plain http lets anyone on the path \
                          choose the key); use https, a local copy, or --insecure-keyring"
                    .into(),
            });
        }
        let path_part = p.clean.split(['?', '#']).next().unwrap_or("");
        // `alpine-devel%40lists…rsa.pub` is the key `alpine-devel@lists…rsa.pub`: signatures
        // name the decoded file, as Go's URL parser gives apko.
        let raw = path_part.rsplit('/').next().unwrap_or("");
        let decoded = percent_decode(raw);
        let name = decoded.as_str();
        if !pallet_keys_name_ok(name) {
            return Err(RepoError::Http {
                url: p.clean,
                message: "the URL does not end in a key file name (NAME.rsa.pub)".into(),
            });
        }
        let dir = self.cache_dir.join("keys-v1").join(url_key(&p.clean));
        self.cached_get(&url, &dir.join(name), &dir.join(".etag"), MAX_KEY_BYTES)
    }

    /// Download `url` to `path` (at most `limit` bytes), or revalidate the copy there with the
    /// ETag kept in `etag_path`. Offline, the cached copy or an error.
    fn cached_get(
        &self,
        url: &str,
        path: &Path,
        etag_path: &Path,
        limit: u64,
    ) -> Result<PathBuf, RepoError> {
        self.cached_get_opt(url, path, etag_path, limit, false)
            .map(|p| p.expect("only a 404 with missing_ok gives no path"))
    }

    /// [`Client::cached_get`]; with `missing_ok`, a 404 is `Ok(None)` and drops the cached
    /// copy (the server no longer offers the document, so offline must not revive it).
    fn cached_get_opt(
        &self,
        url: &str,
        path: &Path,
        etag_path: &Path,
        limit: u64,
        missing_ok: bool,
    ) -> Result<Option<PathBuf>, RepoError> {
        let limit = limit.min(max_http_response_size());
        let clean = parse_url(url).clean;
        if self.offline {
            return if path.exists() {
                Ok(Some(path.to_path_buf()))
            } else {
                Err(RepoError::Offline { url: clean })
            };
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|source| RepoError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        // Builds sharing the cache revalidate one at a time, so a second build waits for the
        // first download and then asks with its ETag instead of downloading again.
        let _lock = pallet_atomic::EntryLock::acquire(path).map_err(|source| RepoError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let etag = path
            .exists()
            .then(|| fs::read_to_string(etag_path).ok())
            .flatten();
        let resp = self.get(url, etag.as_deref())?;
        match resp.status().as_u16() {
            304 if path.exists() => Ok(Some(path.to_path_buf())),
            404 if missing_ok => {
                let _ = fs::remove_file(path);
                let _ = fs::remove_file(etag_path);
                Ok(None)
            }
            200 => {
                let new_etag = resp
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let mut body = resp.into_body();
                let mut reader = Limited {
                    inner: body.as_reader(),
                    left: limit,
                    limit,
                };
                write_atomic_from(path, &mut reader).map_err(|e| match e {
                    RepoError::Io { source, .. }
                        if source.kind() == io::ErrorKind::FileTooLarge =>
                    {
                        RepoError::Http {
                            url: clean.clone(),
                            message: format!("the answer is larger than the {limit}-byte limit"),
                        }
                    }
                    RepoError::Io { source, .. }
                        if !matches!(
                            source.kind(),
                            io::ErrorKind::PermissionDenied | io::ErrorKind::StorageFull
                        ) =>
                    {
                        RepoError::Http {
                            url: clean.clone(),
                            message: self.explain(&format!("reading the answer failed: {source}")),
                        }
                    }
                    e => e,
                })?;
                // The ETag is written after the body, so a kill between the two leaves a body
                // with no ETag (fetched again next time), never an ETag for a body not there.
                match new_etag {
                    Some(e) => write_atomic_from(etag_path, &mut e.as_bytes())?,
                    None => {
                        let _ = fs::remove_file(etag_path);
                    }
                }
                Ok(Some(path.to_path_buf()))
            }
            s => Err(RepoError::Http {
                url: clean,
                message: format!(
                    "HTTP {s}{}",
                    if s == 401 || s == 403 {
                        " (credentials: HTTP_AUTH=basic:HOST:USER:PASS or user:pass@ in the URL)"
                    } else {
                        ""
                    }
                ),
            }),
        }
    }

    /// Open `$repo/$arch/<file>` for streaming: a local file, or an HTTP body. The caller
    /// verifies what it reads (against the signed index) and caches the result.
    pub fn open_package(
        &self,
        repo: &str,
        arch: &str,
        file: &str,
    ) -> Result<Box<dyn Read + Send>, RepoError> {
        let url = self.rewrite(repo);
        if !is_remote(&url) {
            let p = PathBuf::from(url.strip_prefix("file://").unwrap_or(&url))
                .join(arch)
                .join(file);
            let f = fs::File::open(&p).map_err(|source| RepoError::Io { path: p, source })?;
            return Ok(Box::new(f));
        }
        self.open_url(&format!("{}/{arch}/{file}", url.trim_end_matches('/')))
    }

    /// Open an http(s) URL for streaming, with the client's credentials, retries, time limit
    /// and response size limit; refused when offline. The caller checks what it reads.
    pub fn open_url(&self, url: &str) -> Result<Box<dyn Read + Send>, RepoError> {
        if self.offline {
            return Err(RepoError::Offline {
                url: parse_url(url).clean,
            });
        }
        let resp = self.get(url, None)?;
        if resp.status().as_u16() != 200 {
            return Err(RepoError::Http {
                url: parse_url(url).clean,
                message: format!("HTTP {}", resp.status().as_u16()),
            });
        }
        let limit = max_http_response_size();
        Ok(Box::new(Limited {
            inner: resp.into_body().into_reader(),
            left: limit,
            limit,
        }))
    }
}

/// `%XX` escapes decoded; text with a malformed escape, or that does not decode to UTF-8, is
/// kept as written.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(v) => {
                    out.push(v);
                    i += 3;
                    continue;
                }
                None => return s.to_string(),
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

/// The cache's name for a URL: a short hash of it without credentials.
fn url_key(clean: &str) -> String {
    sha2::Sha256::digest(clean.as_bytes())
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `host` is this machine (plain http to it never leaves the host).
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A key file name that may be written into `etc/apk/keys/`: one plain path component.
fn pallet_keys_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && !name
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\')
}

/// A reader that fails once more than `left` bytes come through it.
struct Limited<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Read one byte past the limit so that an answer of exactly the limit still passes.
        let want = buf
            .len()
            .min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("the answer is larger than the {}-byte limit", self.limit),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Write a file from a reader under a temporary name, then rename it into place.
pub fn write_atomic_from(path: &Path, r: &mut dyn Read) -> Result<(), RepoError> {
    let err = |source| RepoError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    // Downloads killed midway leave locked temporaries; sweep those whose writer is gone.
    pallet_atomic::sweep(dir);
    pallet_atomic::write_with(path, |t| io::copy(r, t).map(|_| ())).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_auth() {
        let p = parse_url("https://u:p%40ss@example.com:8443/alpine/v3.19/main");
        assert_eq!(p.clean, "https://example.com:8443/alpine/v3.19/main");
        assert_eq!(p.host, "example.com");
        assert_eq!(p.basic, Some(("u".into(), "p%40ss".into())));
        let a = Auth::parse("basic:example.com:me:secret,junk");
        assert_eq!(a.for_host("example.com"), Some(("me", "secret")));
        assert_eq!(redact("https://u:p@h/x"), "https://h/x");
    }

    #[test]
    fn key_names_are_percent_decoded() {
        assert_eq!(
            percent_decode("alpine-devel%40lists.alpinelinux.org-4a6a0840.rsa.pub"),
            "alpine-devel@lists.alpinelinux.org-4a6a0840.rsa.pub"
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert!(!pallet_keys_name_ok(&percent_decode("a%2Fb")));
    }

    #[test]
    fn mirrors_rewrite_prefixes() {
        let mut c = Client::new(PathBuf::from("/tmp/x"));
        c.mirrors = vec![(
            "https://dl-cdn.alpinelinux.org/alpine".into(),
            "/srv/mirror/alpine".into(),
        )];
        assert_eq!(
            c.rewrite("https://dl-cdn.alpinelinux.org/alpine/v3.19/main"),
            "/srv/mirror/alpine/v3.19/main"
        );
        assert_eq!(c.rewrite("/local"), "/local");
    }
}
