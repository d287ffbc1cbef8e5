//! Pushing images to registries that speak the OCI distribution API: blobs checked with HEAD
//! and skipped when present, cross-repository mounts, chunked uploads with a monolithic
//! fallback, retries with backoff, manifests by digest, then every tag; Basic and Bearer auth
//! from the challenge; credentials from docker's `config.json` (`auths`, `credsStore`,
//! `credHelpers`) and `HTTP_AUTH`; SBOMs attached as OCI referrers, with the `sha256-<hex>` tag
//! fallback for registries without the referrers API.

mod auth;

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

pub use auth::{Credentials, login, lookup_credentials};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0} is not an image reference (expected HOST[:PORT]/REPOSITORY[:TAG])")]
    BadRef(String),
    #[error(
        "{registry}: authentication failed (HTTP {status}); check the credentials (`pallet login {registry}`, ~/.docker/config.json, or HTTP_AUTH)"
    )]
    Auth { registry: String, status: u16 },
    #[error("{what}: HTTP {status}: {body}")]
    Http {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what}: {message} (is the registry running and reachable?)")]
    Transport { what: String, message: String },
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
}

fn body_text(resp: ureq::http::Response<ureq::Body>) -> String {
    let mut s = String::new();
    let _ = resp
        .into_body()
        .into_reader()
        .take(4096)
        .read_to_string(&mut s);
    s.trim().to_string()
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
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(600)))
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

    /// Answer a 401 challenge: Basic with the credentials, or a Bearer token from the realm.
    fn authenticate(&mut self, challenge: &str) -> Result<(), RegistryError> {
        use base64::Engine as _;
        let fail = |status| RegistryError::Auth {
            registry: self.r.registry.clone(),
            status,
        };
        let basic = self.creds.as_ref().map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.username, c.password))
            )
        });
        let lower = challenge.to_ascii_lowercase();
        if lower.starts_with("basic") {
            self.auth = Some(basic.ok_or_else(|| fail(401))?);
            return Ok(());
        }
        if lower.starts_with("bearer") {
            let params = parse_challenge(&challenge[6..]);
            let realm = params.get("realm").cloned().ok_or_else(|| fail(401))?;
            let mut url = format!("{realm}?scope=repository:{}:pull,push", self.r.repository);
            if let Some(s) = params.get("service") {
                url.push_str(&format!("&service={s}"));
            }
            let mut req = self.agent.get(&url);
            if let Some(b) = &basic {
                req = req.header("Authorization", b);
            }
            let resp = req.call().map_err(|e| RegistryError::Transport {
                what: format!("token from {realm}"),
                message: e.to_string(),
            })?;
            if resp.status().as_u16() != 200 {
                return Err(fail(resp.status().as_u16()));
            }
            let v: serde_json::Value = serde_json::from_str(&body_text(resp)).unwrap_or_default();
            let t = v["token"]
                .as_str()
                .or(v["access_token"].as_str())
                .ok_or_else(|| fail(401))?;
            self.auth = Some(format!("Bearer {t}"));
            return Ok(());
        }
        Err(fail(401))
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
        let mut authed = false;
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
                Ok(resp) if resp.status().as_u16() == 401 && !authed => {
                    authed = true;
                    let challenge = resp
                        .headers()
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    self.authenticate(&challenge)?;
                    continue;
                }
                Ok(resp) if resp.status().as_u16() == 401 || resp.status().as_u16() == 403 => {
                    return Err(RegistryError::Auth {
                        registry: self.r.registry.clone(),
                        status: resp.status().as_u16(),
                    });
                }
                Ok(resp)
                    if (resp.status().is_server_error() || resp.status().as_u16() == 429)
                        && attempt < 4 => {}
                Ok(resp) => return Ok(resp),
                Err(e) if attempt >= 4 => {
                    return Err(RegistryError::Transport {
                        what: what.to_string(),
                        message: e.to_string(),
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
        let url = self.url(&format!("/blobs/{digest}"));
        let resp = self.send(
            "HEAD",
            &url,
            &[],
            Payload::Empty,
            &format!("checking blob {digest}"),
        )?;
        Ok(resp.status().as_u16() == 200)
    }

    /// Push a blob unless the registry has it: a cross-repository mount from `mount_from`
    /// first, then a chunked upload, falling back to one monolithic PUT if PATCH is refused.
    pub fn push_blob(
        &mut self,
        b: &BlobSource,
        mount_from: Option<&str>,
    ) -> Result<(), RegistryError> {
        let what = format!("uploading blob {}", b.digest);
        if self.has_blob(&b.digest)? {
            self.stats.blobs_skipped += 1;
            return Ok(());
        }
        let mut start = self.url("/blobs/uploads/");
        if let Some(from) = mount_from.filter(|f| *f != self.r.repository) {
            start = format!("{start}?mount={}&from={from}", b.digest);
        }
        let resp = self.send("POST", &start, &[], Payload::Empty, &what)?;
        if resp.status().as_u16() == 201 {
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
                Self::expect(resp, &[201], &what)?;
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
        let resp = self.send(
            "PUT",
            &with_digest(&location, &b.digest),
            &[],
            Payload::Empty,
            what,
        )?;
        Self::expect(resp, &[201], what)?;
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
        let mut v = vec![];
        resp.into_body()
            .into_reader()
            .take(8 << 20)
            .read_to_end(&mut v)
            .map_err(|source| RegistryError::Io { what, source })?;
        Ok(Some(v))
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

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#" realm="https://auth.example/token",service="registry.example",scope="repository:x:pull""#,
        );
        assert_eq!(c["realm"], "https://auth.example/token");
        assert_eq!(c["service"], "registry.example");
    }
}
