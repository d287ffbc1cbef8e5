//! Pushing images to registries that speak the OCI distribution API: blobs checked with HEAD
//! and skipped when present, cross-repository mounts, chunked uploads with a monolithic
//! fallback, retries with backoff, manifests by digest, then every tag; Basic and Bearer auth
//! from the challenge; credentials from docker's `config.json` (`auths`, `credsStore`,
//! `credHelpers`) and `HTTP_AUTH`; SBOMs attached as OCI referrers, with the `sha256-<hex>` tag
//! fallback for registries without the referrers API.

mod auth;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use auth::{Credentials, login, lookup_credentials};

/// The largest manifest or index read back from a registry. The distribution registry refuses
/// manifests over 4 MiB (and containerd reads no more), so nothing a registry may hold is
/// larger; a longer or endless answer is a broken or hostile registry, cut off here.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// The largest token-service reply read. Tokens are JWTs of a few kilobytes (registries with
/// refresh tokens send a few more); a megabyte is far above any, and bounds memory against a
/// token service that never stops.
pub const MAX_TOKEN_REPLY_BYTES: u64 = 1 << 20;
/// How much of an error answer is kept for the message.
pub const MAX_ERROR_BODY_BYTES: u64 = 4096;
/// Challenges answered per request. One 401 is how every registry asks for a token; a second
/// one for the request just sent with that token means the credentials (or the token they
/// bought) were refused, and asking again would loop for ever against a registry that refuses
/// everything.
pub const MAX_AUTH_ATTEMPTS: u32 = 1;
/// Tries per request for transient failures (connection errors, 5xx, 429), with backoff.
/// Timeouts are not retried: the time limit is for the whole request, not each try.
pub const MAX_ATTEMPTS: u32 = 4;
/// The longest one request may take, from connecting to the last byte of the answer, when
/// [`HTTP_TIMEOUT_ENV`] is unset: the repository client's limit, so a stalled registry ends a
/// publish like a stalled repository ends a build. Chunks are 8 MiB, so this is a very slow link.
pub const DEFAULT_HTTP_TIMEOUT: Duration = pallet_repo::DEFAULT_HTTP_TIMEOUT;
/// The longest a TCP connection may take to open.
pub const CONNECT_TIMEOUT: Duration = pallet_repo::CONNECT_TIMEOUT;
/// Whole seconds overriding [`DEFAULT_HTTP_TIMEOUT`]; the same variable the repository client
/// reads.
pub const HTTP_TIMEOUT_ENV: &str = "PALLET_HTTP_TIMEOUT";

/// [`HTTP_TIMEOUT_ENV`] (whole seconds, at least 1) or the default.
pub fn http_timeout() -> Duration {
    parse_timeout(std::env::var(HTTP_TIMEOUT_ENV).ok().as_deref())
}

fn parse_timeout(v: Option<&str>) -> Duration {
    v.and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(DEFAULT_HTTP_TIMEOUT, Duration::from_secs)
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0} is not an image reference (expected HOST[:PORT]/REPOSITORY[:TAG])")]
    BadRef(String),
    #[error("{registry} refused {who}: HTTP {status} for {url}; {hint}")]
    Auth {
        registry: String,
        who: &'static str,
        url: String,
        status: u16,
        hint: String,
    },
    #[error("{what}: HTTP {status}: {body}")]
    Http {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what}: {message} (is the registry running and reachable?)")]
    Transport { what: String, message: String },
    #[error("{what}: {url}: the answer is larger than {limit} bytes, the limit for {kind}")]
    TooLarge {
        what: String,
        url: String,
        kind: &'static str,
        limit: u64,
    },
    /// The registry answered, but with something that contradicts what was sent or asked.
    #[error("{what}: {url}: {message}")]
    Answer {
        what: String,
        url: String,
        message: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// `registry/repository:tag`, split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let bad = || RegistryError::BadRef(s.to_string());
        let (registry, rest) = s.split_once('/').ok_or_else(bad)?;
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            // Docker Hub short names are not a target pallet pushes to without a host.
            return Err(bad());
        }
        let (repository, tag) = match rest.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_string(), Some(t.to_string())),
            _ => (rest.to_string(), None),
        };
        let repository = repository.split('@').next().unwrap_or("").to_string();
        if repository.is_empty() {
            return Err(bad());
        }
        Ok(Reference {
            registry: registry.to_string(),
            repository,
            tag,
        })
    }

    /// Loopback registries are spoken to over plain http without any flag.
    pub fn is_loopback(&self) -> bool {
        let host = if self.registry.starts_with('[') {
            self.registry
                .split(']')
                .next()
                .unwrap_or("")
                .trim_start_matches('[')
                .to_string()
        } else {
            self.registry
                .rsplit_once(':')
                .map(|(h, _)| h.to_string())
                .unwrap_or_else(|| self.registry.clone())
        };
        host == "localhost" || host == "::1" || host.starts_with("127.")
    }
}

/// A blob to push: a file on disk, or bytes.
#[derive(Clone, Debug)]
pub struct BlobSource {
    pub digest: String,
    pub size: u64,
    pub path: Option<PathBuf>,
    pub bytes: Option<Vec<u8>>,
    pub media_type: String,
}

/// Upload counters, for reports and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub blobs_uploaded: usize,
    pub blobs_skipped: usize,
    pub blobs_mounted: usize,
    pub manifests_pushed: usize,
    pub referrers_api: Option<bool>,
}

/// What a request sends.
#[derive(Clone, Copy)]
enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// `len` bytes of a file from `offset`.
    File(&'a std::path::Path, u64, u64),
}

/// A client for one registry and repository.
pub struct Client {
    pub r: Reference,
    scheme: &'static str,
    agent: ureq::Agent,
    creds: Option<Credentials>,
    /// The Authorization header value once a challenge was answered.
    auth: Option<String>,
    pub stats: Stats,
    /// Bytes per PATCH when uploading in chunks.
    pub chunk_size: u64,
    /// The longest one request may take, answer included ([`http_timeout`]).
    timeout: Duration,
}

fn body_text(resp: ureq::http::Response<ureq::Body>) -> String {
    let mut v = vec![];
    let _ = resp
        .into_body()
        .into_reader()
        .take(MAX_ERROR_BODY_BYTES)
        .read_to_end(&mut v);
    String::from_utf8_lossy(&v).trim().to_string()
}

/// A transport error in words: a timeout says which limit it hit and how to raise it.
fn explain(e: &str, timeout: Duration) -> String {
    if e.contains("timeout") || e.contains("timed out") {
        format!(
            "no complete answer within {} s, timed out ({e}); raise the limit with {HTTP_TIMEOUT_ENV}=SECONDS if the registry is only slow",
            timeout.as_secs()
        )
    } else {
        e.to_string()
    }
}

fn header<'a>(resp: &'a Response, name: &str) -> Option<&'a str> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The body of `resp`, at most `limit` bytes: a longer one, by its Content-Length or by what
/// arrives, is an error naming the URL and the limit, and is read no further.
fn read_limited(
    resp: Response,
    limit: u64,
    kind: &'static str,
    url: &str,
    what: &str,
    timeout: Duration,
) -> Result<Vec<u8>, RegistryError> {
    let too_large = || RegistryError::TooLarge {
        what: what.to_string(),
        url: url.to_string(),
        kind,
        limit,
    };
    if header(&resp, "content-length")
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit)
    {
        return Err(too_large());
    }
    let mut v = vec![];
    resp.into_body()
        .into_reader()
        .take(limit + 1)
        .read_to_end(&mut v)
        .map_err(|e| RegistryError::Transport {
            what: what.to_string(),
            message: format!(
                "{url}: reading the answer: {}",
                explain(&e.to_string(), timeout)
            ),
        })?;
    if v.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(v)
}

/// `sha256:<hex>` of bytes.
fn sha256_digest(b: &[u8]) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(b);
    let mut s = String::from("sha256:");
    for x in h {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// A `Docker-Content-Digest` answer that names another digest than `expected`: the registry
/// stored something else than what was sent (or says so), so nothing built on it is trusted.
/// docker and crane take the registry's word; containerd refuses the push ("got digest X,
/// expected Y"), and so does pallet. No header is fine: the spec does not require it.
fn check_digest(
    resp: &Response,
    expected: &str,
    url: &str,
    what: &str,
) -> Result<(), RegistryError> {
    match header(resp, "docker-content-digest") {
        Some(d) if d != expected => Err(RegistryError::Answer {
            what: what.to_string(),
            url: url.to_string(),
            message: format!(
                "the registry answered with Docker-Content-Digest {d}, but what was sent is {expected}: it holds something else than was pushed, so the push is not trusted"
            ),
        }),
        _ => Ok(()),
    }
}

fn parse_challenge(s: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut rest = s.trim();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = &rest[eq + 1..];
        let (val, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (&q[..end], q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.insert(key, val.to_string());
        rest = next.trim_start_matches(',').trim();
    }
    out
}

type Response = ureq::http::Response<ureq::Body>;

impl Client {
    /// `insecure` hosts get plain http; loopback registries always do.
    pub fn new(r: Reference, insecure: &[String]) -> Self {
        let plain = r.is_loopback() || insecure.contains(&r.registry);
        let timeout = http_timeout();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(timeout))
            .user_agent(concat!("pallet/", env!("CARGO_PKG_VERSION")))
            .max_redirects(0)
            .build()
            .into();
        let creds = lookup_credentials(&r.registry);
        Client {
            r,
            scheme: if plain { "http" } else { "https" },
            agent,
            creds,
            auth: None,
            stats: Stats::default(),
            chunk_size: 8 << 20,
            timeout,
        }
    }

    /// Use these credentials instead of the ones found in docker's config.
    pub fn with_credentials(mut self, c: Option<Credentials>) -> Self {
        if c.is_some() {
            self.creds = c;
        }
        self
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}://{}/v2/{}{path}",
            self.scheme, self.r.registry, self.r.repository
        )
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}://{}{location}", self.scheme, self.r.registry)
        }
    }

    /// The error for a request the registry refused although its challenge was answered.
    fn refused(&self, url: &str, status: u16) -> RegistryError {
        let registry = self.r.registry.clone();
        let (who, hint) = if self.creds.is_some() {
            (
                "the credentials",
                format!(
                    "check them (`pallet login {registry}`, ~/.docker/config.json, or HTTP_AUTH)"
                ),
            )
        } else {
            (
                "anonymous access (no credentials were found for it)",
                format!(
                    "give credentials with `pallet login {registry}`, ~/.docker/config.json, or HTTP_AUTH"
                ),
            )
        };
        RegistryError::Auth {
            registry,
            who,
            url: url.to_string(),
            status,
            hint,
        }
    }

    /// Answer a 401 challenge for `url`: Basic with the credentials, or a Bearer token from the
    /// realm.
    fn authenticate(&mut self, challenge: &str, url: &str) -> Result<(), RegistryError> {
        use base64::Engine as _;
        let basic = self.creds.as_ref().map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.username, c.password))
            )
        });
        let lower = challenge.to_ascii_lowercase();
        if lower.starts_with("basic") {
            self.auth = Some(basic.ok_or_else(|| self.refused(url, 401))?);
            return Ok(());
        }
        if !lower.starts_with("bearer") {
            return Err(self.refused(url, 401));
        }
        let params = parse_challenge(&challenge[6..]);
        let realm = params
            .get("realm")
            .cloned()
            .ok_or_else(|| self.refused(url, 401))?;
        let sep = if realm.contains('?') { '&' } else { '?' };
        let mut token_url = format!(
            "{realm}{sep}scope=repository:{}:pull,push",
            self.r.repository
        );
        if let Some(s) = params.get("service") {
            token_url.push_str(&format!("&service={s}"));
        }
        let what = format!("getting a token for {}", self.r.registry);
        let mut req = self.agent.get(&token_url);
        if let Some(b) = &basic {
            req = req.header("Authorization", b);
        }
        let resp = req.call().map_err(|e| RegistryError::Transport {
            what: what.clone(),
            message: format!("{token_url}: {}", explain(&e.to_string(), self.timeout)),
        })?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(self.refused(&token_url, status));
        }
        let body = read_limited(
            resp,
            MAX_TOKEN_REPLY_BYTES,
            "a token reply",
            &token_url,
            &what,
            self.timeout,
        )?;
        let bad = |message: String| RegistryError::Answer {
            what: what.clone(),
            url: token_url.clone(),
            message,
        };
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| bad(format!("the token reply is not JSON: {e}")))?;
        let t = v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .ok_or_else(|| bad("the token reply holds no token".into()))?;
        self.auth = Some(format!("Bearer {t}"));
        Ok(())
    }

    /// One request, answering an auth challenge once and retrying transient failures with
    /// backoff (connection errors, 5xx, 429).
    fn send(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        payload: Payload<'_>,
        what: &str,
    ) -> Result<Response, RegistryError> {
        let mut delay = Duration::from_millis(200);
        let mut auth_attempts = 0;
        let mut attempt = 0;
        // The URL and headers partly come from the registry (`Location`, the token): one the
        // http crate cannot hold (a space, a line break) fails this request instead of
        // panicking, and is not retried since it would fail the same way again.
        let refused = |e: ureq::http::Error| RegistryError::Transport {
            what: what.to_string(),
            message: format!("cannot send a request to {url}: {e}"),
        };
        loop {
            attempt += 1;
            let mut b = ureq::http::Request::builder().method(method).uri(url);
            for (k, v) in headers {
                b = b.header(*k, v);
            }
            if let Some(a) = &self.auth {
                b = b.header("Authorization", a);
            }
            let result = match payload {
                Payload::Empty => {
                    let req = b.header("Content-Length", "0").body(()).map_err(refused)?;
                    self.agent.run(req)
                }
                Payload::Bytes(bytes) => {
                    let req = b
                        .header("Content-Length", bytes.len().to_string())
                        .body(bytes.to_vec())
                        .map_err(refused)?;
                    self.agent.run(req)
                }
                Payload::File(path, offset, len) => {
                    use std::io::Seek;
                    let mut f = File::open(path).map_err(|source| RegistryError::Io {
                        what: what.to_string(),
                        source,
                    })?;
                    f.seek(std::io::SeekFrom::Start(offset)).map_err(|source| {
                        RegistryError::Io {
                            what: what.to_string(),
                            source,
                        }
                    })?;
                    let mut reader = f.take(len);
                    let req = b
                        .header("Content-Length", len.to_string())
                        .body(ureq::SendBody::from_reader(&mut reader))
                        .map_err(refused)?;
                    self.agent.run(req)
                }
            };
            match result {
                Ok(resp) if resp.status().as_u16() == 401 && auth_attempts < MAX_AUTH_ATTEMPTS => {
                    auth_attempts += 1;
                    let challenge = resp
                        .headers()
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    self.authenticate(&challenge, url)?;
                    continue;
                }
                Ok(resp) if resp.status().as_u16() == 401 || resp.status().as_u16() == 403 => {
                    return Err(self.refused(url, resp.status().as_u16()));
                }
                Ok(resp)
                    if (resp.status().is_server_error() || resp.status().as_u16() == 429)
                        && attempt < MAX_ATTEMPTS => {}
                Ok(resp) => return Ok(resp),
                Err(e) if attempt >= MAX_ATTEMPTS || matches!(e, ureq::Error::Timeout(_)) => {
                    return Err(RegistryError::Transport {
                        what: what.to_string(),
                        message: format!("{url}: {}", explain(&e.to_string(), self.timeout)),
                    });
                }
                Err(_) => {}
            }
            std::thread::sleep(delay);
            delay *= 3;
        }
    }

    fn expect(resp: Response, ok: &[u16], what: &str) -> Result<Response, RegistryError> {
        let status = resp.status().as_u16();
        if ok.contains(&status) {
            Ok(resp)
        } else {
            Err(RegistryError::Http {
                what: what.to_string(),
                status,
                body: body_text(resp),
            })
        }
    }

    /// Whether the registry already has a blob.
    pub fn has_blob(&mut self, digest: &str) -> Result<bool, RegistryError> {
        self.head_blob(digest, None)
    }

    /// HEAD a blob. A registry that says it holds it under another digest, or with another
    /// size than `size`, holds something else: that is an error, not "present", since a
    /// manifest pushed on that word would point at content that does not pull.
    fn head_blob(&mut self, digest: &str, size: Option<u64>) -> Result<bool, RegistryError> {
        let url = self.url(&format!("/blobs/{digest}"));
        let what = format!("checking blob {digest}");
        let resp = self.send("HEAD", &url, &[], Payload::Empty, &what)?;
        if resp.status().as_u16() != 200 {
            return Ok(false);
        }
        check_digest(&resp, digest, &url, &what)?;
        if let (Some(want), Some(n)) = (
            size,
            header(&resp, "content-length").and_then(|v| v.parse::<u64>().ok()),
        ) && n != want
        {
            return Err(RegistryError::Answer {
                what,
                url,
                message: format!(
                    "the registry says it holds this blob with {n} bytes, but it is {want} bytes: it holds something else under this digest, so the push is not trusted"
                ),
            });
        }
        Ok(true)
    }

    /// Push a blob unless the registry has it: a cross-repository mount from `mount_from`
    /// first, then a chunked upload, falling back to one monolithic PUT if PATCH is refused.
    pub fn push_blob(
        &mut self,
        b: &BlobSource,
        mount_from: Option<&str>,
    ) -> Result<(), RegistryError> {
        let what = format!("uploading blob {}", b.digest);
        if self.head_blob(&b.digest, Some(b.size))? {
            self.stats.blobs_skipped += 1;
            return Ok(());
        }
        let mut start = self.url("/blobs/uploads/");
        if let Some(from) = mount_from.filter(|f| *f != self.r.repository) {
            start = format!("{start}?mount={}&from={from}", b.digest);
        }
        let resp = self.send("POST", &start, &[], Payload::Empty, &what)?;
        if resp.status().as_u16() == 201 {
            check_digest(&resp, &b.digest, &start, &what)?;
            self.stats.blobs_mounted += 1;
            return Ok(());
        }
        let resp = Self::expect(resp, &[202], &what)?;
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| self.absolute(l))
            .ok_or_else(|| RegistryError::Http {
                what: what.clone(),
                status: 202,
                body: "no Location header".into(),
            })?;
        match self.upload_chunked(b, &location, &what) {
            Ok(()) => {}
            Err(RegistryError::Http { status, .. }) if status != 401 && status != 403 => {
                // Some registries refuse PATCH: start again with one PUT.
                let resp = self.send(
                    "POST",
                    &self.url("/blobs/uploads/"),
                    &[],
                    Payload::Empty,
                    &what,
                )?;
                let resp = Self::expect(resp, &[202], &what)?;
                let location = resp
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .map(|l| self.absolute(l))
                    .unwrap_or_default();
                let url = with_digest(&location, &b.digest);
                let payload = match (&b.path, &b.bytes) {
                    (Some(p), _) => Payload::File(p, 0, b.size),
                    (None, Some(bytes)) => Payload::Bytes(bytes),
                    _ => Payload::Empty,
                };
                let resp = self.send(
                    "PUT",
                    &url,
                    &[("Content-Type", "application/octet-stream".into())],
                    payload,
                    &what,
                )?;
                let resp = Self::expect(resp, &[201], &what)?;
                check_digest(&resp, &b.digest, &url, &what)?;
            }
            Err(e) => return Err(e),
        }
        self.stats.blobs_uploaded += 1;
        Ok(())
    }

    fn upload_chunked(
        &mut self,
        b: &BlobSource,
        location: &str,
        what: &str,
    ) -> Result<(), RegistryError> {
        let mut location = location.to_string();
        let mut offset = 0u64;
        while offset < b.size {
            let len = self.chunk_size.min(b.size - offset);
            let payload = match (&b.path, &b.bytes) {
                (Some(p), _) => Payload::File(p, offset, len),
                (None, Some(bytes)) => {
                    Payload::Bytes(&bytes[offset as usize..(offset + len) as usize])
                }
                _ => Payload::Empty,
            };
            let headers = [
                ("Content-Type", "application/octet-stream".to_string()),
                ("Content-Range", format!("{}-{}", offset, offset + len - 1)),
            ];
            let resp = self.send("PATCH", &location, &headers, payload, what)?;
            let resp = Self::expect(resp, &[202], what)?;
            if let Some(l) = resp.headers().get("location").and_then(|v| v.to_str().ok()) {
                location = self.absolute(l);
            }
            offset += len;
        }
        let url = with_digest(&location, &b.digest);
        let resp = self.send("PUT", &url, &[], Payload::Empty, what)?;
        let resp = Self::expect(resp, &[201], what)?;
        check_digest(&resp, &b.digest, &url, what)?;
        Ok(())
    }

    /// PUT a manifest or index under a tag or digest; returns the `OCI-Subject` header (set by
    /// registries that implement the referrers API when the manifest has a subject).
    pub fn put_manifest(
        &mut self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Option<String>, RegistryError> {
        let what = format!("pushing manifest {reference}");
        let url = self.url(&format!("/manifests/{reference}"));
        let resp = self.send(
            "PUT",
            &url,
            &[("Content-Type", media_type.to_string())],
            Payload::Bytes(bytes),
            &what,
        )?;
        let resp = Self::expect(resp, &[201, 200], &what)?;
        check_digest(&resp, &sha256_digest(bytes), &url, &what)?;
        self.stats.manifests_pushed += 1;
        Ok(resp
            .headers()
            .get("oci-subject")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }

    /// Fetch a manifest (for the referrers fallback tag).
    pub fn get_manifest(
        &mut self,
        reference: &str,
        accept: &str,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let what = format!("reading manifest {reference}");
        let url = self.url(&format!("/manifests/{reference}"));
        let resp = self.send(
            "GET",
            &url,
            &[("Accept", accept.to_string())],
            Payload::Empty,
            &what,
        )?;
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        let resp = Self::expect(resp, &[200], &what)?;
        read_limited(
            resp,
            MAX_MANIFEST_BYTES,
            "a manifest or index",
            &url,
            &what,
            self.timeout,
        )
        .map(Some)
    }

    /// Download a blob into `to`, hashing it on the way: `Ok(false)` when the registry does
    /// not have it; content that is not `size` bytes with `digest` (`sha256:…`) is an error
    /// and leaves no file behind.
    pub fn get_blob(&mut self, digest: &str, size: u64, to: &Path) -> Result<bool, RegistryError> {
        use sha2::Digest as _;
        let what = format!("downloading blob {digest}");
        let url = self.url(&format!("/blobs/{digest}"));
        let resp = self.send("GET", &url, &[], Payload::Empty, &what)?;
        if resp.status().as_u16() == 404 {
            return Ok(false);
        }
        let resp = Self::expect(resp, &[200], &what)?;
        let transport = |message: String| RegistryError::Transport {
            what: what.clone(),
            message,
        };
        let result = (|| {
            let mut f = std::fs::File::create(to)
                .map_err(|e| transport(format!("creating {}: {e}", to.display())))?;
            let mut r = resp.into_body().into_reader().take(size + 1);
            let mut h = sha2::Sha256::new();
            let mut n = 0u64;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let k = r.read(&mut buf).map_err(|e| {
                    transport(format!("{url}: {}", explain(&e.to_string(), self.timeout)))
                })?;
                if k == 0 {
                    break;
                }
                h.update(&buf[..k]);
                n += k as u64;
                std::io::Write::write_all(&mut f, &buf[..k])
                    .map_err(|e| transport(format!("writing {}: {e}", to.display())))?;
            }
            let got = format!(
                "sha256:{}",
                h.finalize()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            );
            if got != digest || n != size {
                return Err(transport(format!(
                    "{url}: the registry sent {n} bytes with digest {got}, not {size} with {digest}"
                )));
            }
            Ok(true)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(to);
        }
        result
    }

    /// Whether `GET /v2/<repo>/referrers/<digest>` is served (OCI distribution 1.1).
    pub fn has_referrers_api(&mut self, digest: &str) -> Result<bool, RegistryError> {
        let url = self.url(&format!("/referrers/{digest}"));
        let resp = self.send(
            "GET",
            &url,
            &[("Accept", "application/vnd.oci.image.index.v1+json".into())],
            Payload::Empty,
            "probing the referrers API",
        )?;
        Ok(resp.status().as_u16() == 200
            && resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.contains("image.index")))
    }
}

fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = Reference::parse("127.0.0.1:5000/bar/pub:1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "bar/pub", Some("1"))
        );
        assert!(r.is_loopback());
        assert!(Reference::parse("localhost/x").unwrap().is_loopback());
        assert!(Reference::parse("[::1]:5000/x:y").unwrap().is_loopback());
        assert!(!Reference::parse("ghcr.io/o/r:t").unwrap().is_loopback());
        assert!(Reference::parse("notaref").is_err());
    }

    /// A registry on loopback that answers each connection with the next of `replies` (raw
    /// HTTP responses), after reading the request.
    fn scripted_registry(replies: impl FnOnce(u16) -> Vec<String>) -> u16 {
        use std::io::{BufRead, BufReader, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let replies = replies(port);
        std::thread::spawn(move || {
            for (reply, c) in replies.into_iter().zip(l.incoming()) {
                let mut c = c.unwrap();
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut len = 0u64;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                std::io::copy(&mut r.take(len), &mut std::io::sink()).unwrap();
                c.write_all(reply.as_bytes()).unwrap();
            }
        });
        port
    }

    fn client(port: u16) -> Client {
        let r = Reference::parse(&format!("127.0.0.1:{port}/r:t")).unwrap();
        Client::new(r, &[]).with_credentials(Some(Credentials {
            username: "u".into(),
            password: "p".into(),
        }))
    }

    /// Found by fuzzing (fuzz/fuzz_targets/registry.rs): a `Location` the http crate cannot
    /// take as a URI panicked with "valid request" instead of failing the upload.
    #[test]
    fn a_location_that_is_no_uri_is_an_error() {
        let port = scripted_registry(|_| {
            vec![
            "HTTP/1.1 404 No\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
            "HTTP/1.1 202 Go\r\nLocation: /v2/r/blobs/uploads/a b\"c\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
        ]
        });
        let b = BlobSource {
            digest: "sha256:0".into(),
            size: 5,
            path: None,
            bytes: Some(b"hello".to_vec()),
            media_type: "application/octet-stream".into(),
        };
        let err = client(port).push_blob(&b, None).unwrap_err();
        assert!(matches!(err, RegistryError::Transport { .. }), "{err}");
    }

    /// Found by fuzzing: a token with a line break cannot be a header value.
    #[test]
    fn a_token_that_is_no_header_value_is_an_error() {
        let token = r#"{"token":"a\nb"}"#;
        let port = scripted_registry(|port| {
            vec![
                format!(
                    "HTTP/1.1 401 No\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                ),
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{token}",
                    token.len()
                ),
            ]
        });
        let err = client(port).has_blob("sha256:0").unwrap_err();
        assert!(matches!(err, RegistryError::Transport { .. }), "{err}");
    }

    fn raw(status: &str, headers: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn challenge(port: u16) -> String {
        raw(
            "401 No",
            &format!("WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\"\r\n"),
            "",
        )
    }

    /// A token that is refused again ends the request after [`MAX_AUTH_ATTEMPTS`] challenges,
    /// with an error that names the URL and says the credentials were refused.
    #[test]
    fn a_refused_token_is_not_asked_for_again() {
        let mut replies = vec![];
        let port = scripted_registry(|port| {
            for _ in 0..MAX_AUTH_ATTEMPTS {
                replies.push(challenge(port));
                replies.push(raw("200 OK", "", r#"{"token":"t"}"#));
            }
            replies.push(challenge(port));
            // Anything after this would be another round of the loop.
            replies.push(raw("200 OK", "", r#"{"token":"t"}"#));
            replies.clone()
        });
        let err = client(port).has_blob("sha256:0").unwrap_err().to_string();
        assert!(err.contains("refused the credentials"), "{err}");
        assert!(
            err.contains(&format!("http://127.0.0.1:{port}/v2/r/blobs/sha256:0")),
            "{err}"
        );
    }

    #[test]
    fn a_token_reply_over_the_limit_is_an_error() {
        let big = format!(
            r#"{{"token":"{}"}}"#,
            "a".repeat(MAX_TOKEN_REPLY_BYTES as usize)
        );
        let port = scripted_registry(|port| vec![challenge(port), raw("200 OK", "", &big)]);
        let err = client(port).has_blob("sha256:0").unwrap_err();
        assert!(matches!(err, RegistryError::TooLarge { .. }), "{err}");
        let err = err.to_string();
        assert!(err.contains(&MAX_TOKEN_REPLY_BYTES.to_string()), "{err}");
        assert!(
            err.contains(&format!("http://127.0.0.1:{port}/token")),
            "{err}"
        );
    }

    #[test]
    fn a_token_just_under_the_limit_is_taken() {
        let pad = MAX_TOKEN_REPLY_BYTES as usize - r#"{"token":"t","x":""}"#.len();
        let body = format!(r#"{{"token":"t","x":"{}"}}"#, "a".repeat(pad));
        assert_eq!(body.len() as u64, MAX_TOKEN_REPLY_BYTES);
        let port = scripted_registry(|port| {
            vec![
                challenge(port),
                raw("200 OK", "", &body),
                raw("404 No", "", ""),
            ]
        });
        assert!(!client(port).has_blob("sha256:0").unwrap());
    }

    #[test]
    fn a_manifest_over_the_limit_is_an_error() {
        // Announced larger than the limit: refused before reading it.
        let port = scripted_registry(|_| {
            vec![format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{{",
                MAX_MANIFEST_BYTES + 1
            )]
        });
        let err = client(port).get_manifest("t", "x").unwrap_err().to_string();
        assert!(err.contains(&MAX_MANIFEST_BYTES.to_string()), "{err}");
        assert!(err.contains("/v2/r/manifests/t"), "{err}");
        // No length, one byte too many.
        let body = "x".repeat(MAX_MANIFEST_BYTES as usize + 1);
        let port = scripted_registry(|_| {
            vec![format!(
                "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{body}"
            )]
        });
        let err = client(port).get_manifest("t", "x").unwrap_err();
        assert!(matches!(err, RegistryError::TooLarge { .. }), "{err}");
        // Exactly the limit is read.
        let body = "x".repeat(MAX_MANIFEST_BYTES as usize);
        let port = scripted_registry(|_| vec![raw("200 OK", "", &body)]);
        let got = client(port).get_manifest("t", "x").unwrap().unwrap();
        assert_eq!(got.len() as u64, MAX_MANIFEST_BYTES);
    }

    #[test]
    fn a_manifest_stored_under_another_digest_is_an_error() {
        let other = format!("sha256:{}", "0".repeat(64));
        let port = scripted_registry(|_| {
            vec![raw(
                "201 Created",
                &format!("Docker-Content-Digest: {other}\r\n"),
                "",
            )]
        });
        let err = client(port).put_manifest("t", "x", b"{}").unwrap_err();
        assert!(matches!(err, RegistryError::Answer { .. }), "{err}");
        // The true digest, or none, is success.
        let d = sha256_digest(b"{}");
        let port = scripted_registry(|_| {
            vec![
                raw(
                    "201 Created",
                    &format!("Docker-Content-Digest: {d}\r\n"),
                    "",
                ),
                raw("201 Created", "", ""),
            ]
        });
        let mut c = client(port);
        c.put_manifest("t", "x", b"{}").unwrap();
        c.put_manifest("t", "x", b"{}").unwrap();
    }

    #[test]
    fn a_blob_present_with_another_size_is_an_error() {
        let b = BlobSource {
            digest: sha256_digest(b"hello"),
            size: 5,
            path: None,
            bytes: Some(b"hello".to_vec()),
            media_type: "application/octet-stream".into(),
        };
        let d = b.digest.clone();
        let port = scripted_registry(|_| {
            vec![format!(
                "HTTP/1.1 200 OK\r\nDocker-Content-Digest: {d}\r\nContent-Length: 7\r\nConnection: close\r\n\r\n"
            )]
        });
        let err = client(port).push_blob(&b, None).unwrap_err().to_string();
        assert!(err.contains("with 7 bytes"), "{err}");
    }

    #[test]
    fn the_time_limit_comes_from_the_environment_name_the_repositories_use() {
        assert_eq!(parse_timeout(None), DEFAULT_HTTP_TIMEOUT);
        assert_eq!(parse_timeout(Some("0")), DEFAULT_HTTP_TIMEOUT);
        assert_eq!(parse_timeout(Some("x")), DEFAULT_HTTP_TIMEOUT);
        assert_eq!(parse_timeout(Some(" 7 ")), Duration::from_secs(7));
        assert_eq!(HTTP_TIMEOUT_ENV, "PALLET_HTTP_TIMEOUT");
    }

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#" realm="https://auth.example/token",service="registry.example",scope="repository:x:pull""#,
        );
        assert_eq!(c["realm"], "https://auth.example/token");
        assert_eq!(c["service"], "registry.example");
    }
}
