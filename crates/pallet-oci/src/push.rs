//! A small OCI distribution client on `ureq` for pushing images and indexes.
//!
//! Only loopback registries (or hosts the caller marks insecure) are spoken to
//! over plain http.

use std::fs::File;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;

use crate::image::{MEDIA_INDEX, MEDIA_MANIFEST, sha256_digest};
use crate::write::{BuiltImage, index_of};

/// Push failures, naming the registry, blob or manifest, the HTTP status and
/// the registry's error body.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The registry answered with an unexpected status.
    #[error("{what} at {url}: HTTP {status}: {body}")]
    Status {
        /// What was being done.
        what: String,
        /// Request URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Registry error body.
        body: String,
    },
    /// Authentication failed.
    #[error("authentication to {registry} failed: HTTP {status}: {body}")]
    Auth {
        /// Registry host.
        registry: String,
        /// HTTP status.
        status: u16,
        /// Error body.
        body: String,
    },
    /// The registry could not be reached.
    #[error("{what} at {url}: {source}")]
    Transport {
        /// What was being done.
        what: String,
        /// URL.
        url: String,
        /// Cause.
        #[source]
        source: Box<ureq::Error>,
    },
    /// Reading a local blob failed.
    #[error("read {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Bad reference or configuration.
    #[error("{0}")]
    Invalid(String),
}

/// Credentials for one registry.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

/// A registry client for one `host[:port]`.
pub struct Registry {
    host: String,
    scheme: &'static str,
    agent: ureq::Agent,
    creds: Option<Credentials>,
    auth_header: std::sync::Mutex<Option<String>>,
    mount_from: std::sync::Mutex<Option<String>>,
    /// Blob uploads performed (not skipped), for tests and progress.
    pub uploads: AtomicU64,
    /// Blobs mounted from another repository.
    pub mounts: AtomicU64,
    /// Of `uploads`, those sent in chunks.
    pub chunked: AtomicU64,
}

/// PATCH chunk size; bounds memory per upload.
const CHUNK: usize = 8 << 20;

fn location(r: &ureq::http::Response<ureq::Body>) -> &str {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn is_loopback(host: &str) -> bool {
    let h = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    h == "localhost" || h.starts_with("127.") || h == "[::1]"
}

impl Registry {
    /// A client for `host` (`host[:port]`); http only for loopback hosts or
    /// when `insecure`.
    pub fn new(host: &str, creds: Option<Credentials>, insecure: bool) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build();
        Registry {
            host: host.to_string(),
            scheme: if insecure || is_loopback(host) {
                "http"
            } else {
                "https"
            },
            agent: ureq::Agent::new_with_config(config),
            creds,
            auth_header: std::sync::Mutex::new(None),
            mount_from: std::sync::Mutex::new(None),
            uploads: AtomicU64::new(0),
            mounts: AtomicU64::new(0),
            chunked: AtomicU64::new(0),
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}://{}{}", self.scheme, self.host, path)
        }
    }

    /// Sends a request, answering one auth challenge, retrying transport
    /// errors and 5xx with backoff.
    fn send(
        &self,
        method: &str,
        url: &str,
        content_type: Option<&str>,
        body: Body<'_>,
        what: &str,
    ) -> Result<ureq::http::Response<ureq::Body>, PushError> {
        let mut attempt = 0;
        let mut challenged = false;
        loop {
            let mut b = ureq::http::Request::builder().method(method).uri(url);
            if let Some(a) = self.auth_header.lock().unwrap().clone() {
                b = b.header("Authorization", a);
            }
            if let Some(ct) = content_type {
                b = b.header("Content-Type", ct);
            }
            let res = match &body {
                Body::Empty => self.agent.run(b.body(()).unwrap()),
                Body::Bytes(bytes) => self.agent.run(b.body(bytes.to_vec()).unwrap()),
                Body::File(path, size) => {
                    let mut f = File::open(path).map_err(|e| PushError::Io {
                        path: path.display().to_string(),
                        source: e,
                    })?;
                    let mut reader: &mut dyn Read = &mut f;
                    let b = b.header("Content-Length", size.to_string());
                    self.agent
                        .run(b.body(ureq::SendBody::from_reader(&mut reader)).unwrap())
                }
            };
            match res {
                Ok(mut r) => {
                    let status = r.status().as_u16();
                    if status == 401 && !challenged {
                        challenged = true;
                        let ch = r
                            .headers()
                            .get("www-authenticate")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        self.authenticate(&ch)?;
                        continue;
                    }
                    if status == 401 || status == 403 {
                        let body = r.body_mut().read_to_string().unwrap_or_default();
                        return Err(PushError::Auth {
                            registry: self.host.clone(),
                            status,
                            body,
                        });
                    }
                    if status >= 500 && attempt < 3 {
                        attempt += 1;
                        std::thread::sleep(Duration::from_millis(200 << attempt));
                        continue;
                    }
                    return Ok(r);
                }
                Err(e) => {
                    if attempt < 3 {
                        attempt += 1;
                        std::thread::sleep(Duration::from_millis(200 << attempt));
                        continue;
                    }
                    return Err(PushError::Transport {
                        what: what.into(),
                        url: url.into(),
                        source: Box::new(e),
                    });
                }
            }
        }
    }

    fn basic(&self) -> Option<String> {
        self.creds.as_ref().map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.username, c.password))
            )
        })
    }

    fn authenticate(&self, challenge: &str) -> Result<(), PushError> {
        let lower = challenge.to_ascii_lowercase();
        if lower.starts_with("basic") {
            let Some(b) = self.basic() else {
                return Err(PushError::Auth {
                    registry: self.host.clone(),
                    status: 401,
                    body: "credentials required".into(),
                });
            };
            *self.auth_header.lock().unwrap() = Some(b);
            return Ok(());
        }
        if lower.starts_with("bearer") {
            let params = parse_challenge(&challenge[6..]);
            let realm = params
                .iter()
                .find(|(k, _)| k == "realm")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let mut url = realm.clone();
            let mut sep = if url.contains('?') { '&' } else { '?' };
            for (k, v) in &params {
                if k == "service" || k == "scope" {
                    url.push(sep);
                    sep = '&';
                    url.push_str(&format!("{k}={}", v.replace(' ', "%20")));
                }
            }
            let mut req = self.agent.get(&url);
            if let Some(b) = self.basic() {
                req = req.header("Authorization", b);
            }
            let mut r = req.call().map_err(|e| PushError::Transport {
                what: "token".into(),
                url: url.clone(),
                source: Box::new(e),
            })?;
            let status = r.status().as_u16();
            let body = r.body_mut().read_to_string().unwrap_or_default();
            if status != 200 {
                return Err(PushError::Auth {
                    registry: self.host.clone(),
                    status,
                    body,
                });
            }
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let tok = v["token"]
                .as_str()
                .or(v["access_token"].as_str())
                .unwrap_or_default();
            *self.auth_header.lock().unwrap() = Some(format!("Bearer {tok}"));
            return Ok(());
        }
        Err(PushError::Auth {
            registry: self.host.clone(),
            status: 401,
            body: format!("unsupported challenge: {challenge}"),
        })
    }

    fn check(
        &self,
        mut r: ureq::http::Response<ureq::Body>,
        ok: &[u16],
        what: &str,
        url: &str,
    ) -> Result<ureq::http::Response<ureq::Body>, PushError> {
        let status = r.status().as_u16();
        if ok.contains(&status) {
            Ok(r)
        } else {
            let body = r.body_mut().read_to_string().unwrap_or_default();
            Err(PushError::Status {
                what: what.into(),
                url: url.into(),
                status,
                body,
            })
        }
    }

    /// Uploads a blob unless the registry has it (HEAD first): a cross-repo
    /// mount from [`Registry::mount_from`] when set, else chunked PATCHes for
    /// files (bounded memory), falling back to one monolithic PUT when the
    /// registry refuses chunks.
    pub fn push_blob(&self, repo: &str, digest: &str, body: Body<'_>) -> Result<(), PushError> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let r = self.send(
            "HEAD",
            &url,
            None,
            Body::Empty,
            &format!("check blob {digest}"),
        )?;
        if r.status().as_u16() == 200 {
            return Ok(());
        }
        let what = format!("upload blob {digest}");
        let mount = self.mount_from.lock().unwrap().clone();
        if let Some(from) = mount.filter(|f| f != repo) {
            let m = self.url(&format!(
                "/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"
            ));
            let r = self.send("POST", &m, None, Body::Empty, &what)?;
            if r.status().as_u16() == 201 {
                self.mounts.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            // 202: the registry opened an ordinary upload instead; start afresh.
        }
        if let Body::File(path, size) = body
            && size > CHUNK as u64
            && self.push_chunked(repo, digest, path, &what)?
        {
            self.uploads.fetch_add(1, Ordering::Relaxed);
            self.chunked.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let loc = self.start_upload(repo, &what)?;
        let put = format!(
            "{loc}{}digest={digest}",
            if loc.contains('?') { '&' } else { '?' }
        );
        let r = self.send("PUT", &put, Some("application/octet-stream"), body, &what)?;
        self.check(r, &[201], &what, &put)?;
        self.uploads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn start_upload(&self, repo: &str, what: &str) -> Result<String, PushError> {
        let start = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let r = self.send("POST", &start, None, Body::Empty, what)?;
        let r = self.check(r, &[202], what, &start)?;
        Ok(self.url(location(&r)))
    }

    /// Returns false when the registry refused a chunk (then the caller
    /// uploads monolithically).
    fn push_chunked(
        &self,
        repo: &str,
        digest: &str,
        path: &std::path::Path,
        what: &str,
    ) -> Result<bool, PushError> {
        let mut loc = self.start_upload(repo, what)?;
        let mut f = File::open(path).map_err(|e| PushError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        let mut buf = vec![0u8; CHUNK];
        let mut offset = 0u64;
        loop {
            let mut n = 0;
            while n < CHUNK {
                let k = f.read(&mut buf[n..]).map_err(|e| PushError::Io {
                    path: path.display().to_string(),
                    source: e,
                })?;
                if k == 0 {
                    break;
                }
                n += k;
            }
            if n == 0 {
                break;
            }
            let end = offset + n as u64 - 1;
            let r = self.send_range(&loc, offset, end, &buf[..n], what)?;
            if r.status().as_u16() != 202 {
                return Ok(false);
            }
            loc = self.url(location(&r));
            offset += n as u64;
        }
        let put = format!(
            "{loc}{}digest={digest}",
            if loc.contains('?') { '&' } else { '?' }
        );
        let r = self.send("PUT", &put, None, Body::Empty, what)?;
        self.check(r, &[201], what, &put)?;
        Ok(true)
    }

    fn send_range(
        &self,
        url: &str,
        start: u64,
        end: u64,
        chunk: &[u8],
        what: &str,
    ) -> Result<ureq::http::Response<ureq::Body>, PushError> {
        let mut b = ureq::http::Request::builder()
            .method("PATCH")
            .uri(url)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{start}-{end}"));
        if let Some(a) = self.auth_header.lock().unwrap().clone() {
            b = b.header("Authorization", a);
        }
        self.agent
            .run(b.body(chunk.to_vec()).unwrap())
            .map_err(|e| PushError::Transport {
                what: what.into(),
                url: url.into(),
                source: Box::new(e),
            })
    }

    /// Blobs missing here are first tried as a cross-repository mount from
    /// `repo` on the same registry.
    pub fn set_mount_from(&self, repo: Option<String>) {
        *self.mount_from.lock().unwrap() = repo;
    }

    /// PUTs a manifest or index under `reference` (tag or digest).
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), PushError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let what = format!("put manifest {}", sha256_digest(bytes));
        let r = self.send("PUT", &url, Some(media_type), Body::Bytes(bytes), &what)?;
        self.check(r, &[201], &what, &url)?;
        Ok(())
    }
}

/// A request body.
pub enum Body<'a> {
    /// None.
    Empty,
    /// In memory.
    Bytes(&'a [u8]),
    /// Streamed from a file of the given size.
    File(&'a std::path::Path, u64),
}

fn parse_challenge(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        rest = &rest[eq + 1..];
        let (val, r) = if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            (r[..end].to_string(), &r[(end + 1).min(r.len())..])
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            (rest[..end].to_string(), &rest[end..])
        };
        out.push((key, val));
        rest = r;
    }
    out
}

/// Pushes `images` to `registry/repo`: blobs, each manifest by digest, then
/// the index (always, as apko) under every tag,
/// so no tag points at a half-pushed image. Returns `REPO@sha256:…` per tag.
pub fn push(
    reg: &Registry,
    repo: &str,
    images: &[BuiltImage],
    tags: &[String],
) -> Result<Vec<String>, PushError> {
    if images.is_empty() {
        return Err(PushError::Invalid("no image to push".into()));
    }
    for img in images {
        for l in &img.layers {
            reg.push_blob(repo, &l.digests.digest, Body::File(&l.path, l.digests.size))?;
        }
        reg.push_blob(repo, &sha256_digest(&img.config), Body::Bytes(&img.config))?;
        reg.put_manifest(repo, &img.digest(), MEDIA_MANIFEST, &img.manifest)?;
    }
    // Always an index, even for one architecture, as apko publishes.
    let (top_bytes, media) = (index_of(images).to_bytes(), MEDIA_INDEX);
    let top = sha256_digest(&top_bytes);
    reg.put_manifest(repo, &top, media, &top_bytes)?;
    let mut refs = Vec::new();
    for t in tags {
        reg.put_manifest(repo, t, media, &top_bytes)?;
        refs.push(format!("{}/{repo}@{top}", reg.host));
    }
    Ok(refs)
}

/// SPDX SBOM artifact type.
pub const SPDX_ARTIFACT: &str = "application/spdx+json";
const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

/// Attaches `sbom` (SPDX JSON) to the manifest `subject` (its bytes and media
/// type) as an OCI referrer: an artifact manifest with `subject`. When the
/// registry has no referrers API (no `OCI-Subject` in the answer, as with
/// docker-registry 2.8), the referrers index under the tag `sha256-<hex>` is
/// updated as the distribution spec's fallback says. Returns the artifact
/// manifest's digest.
pub fn attach_sbom(
    reg: &Registry,
    repo: &str,
    subject: &[u8],
    subject_media: &str,
    sbom: &[u8],
) -> Result<String, PushError> {
    use crate::image::{Descriptor, Index, Manifest};
    reg.push_blob(repo, &sha256_digest(b"{}"), Body::Bytes(b"{}"))?;
    reg.push_blob(repo, &sha256_digest(sbom), Body::Bytes(sbom))?;
    let subject_desc = Descriptor::of(subject_media, subject);
    let manifest = Manifest {
        schema_version: 2,
        media_type: MEDIA_MANIFEST.into(),
        artifact_type: Some(SPDX_ARTIFACT.into()),
        config: Descriptor::of(EMPTY_CONFIG, b"{}"),
        layers: vec![Descriptor::of(SPDX_ARTIFACT, sbom)],
        subject: Some(subject_desc.clone()),
        annotations: Default::default(),
    }
    .to_bytes();
    let digest = sha256_digest(&manifest);
    let url = reg.url(&format!("/v2/{repo}/manifests/{digest}"));
    let what = format!("put SBOM manifest {digest}");
    let r = reg.send(
        "PUT",
        &url,
        Some(MEDIA_MANIFEST),
        Body::Bytes(&manifest),
        &what,
    )?;
    let r = reg.check(r, &[201], &what, &url)?;
    if r.headers().get("oci-subject").is_some() {
        return Ok(digest);
    }
    let tag = subject_desc.digest.replace(':', "-");
    let url = reg.url(&format!("/v2/{repo}/manifests/{tag}"));
    let mut get = ureq::http::Request::builder()
        .method("GET")
        .uri(&url)
        .header("Accept", MEDIA_INDEX);
    if let Some(a) = reg.auth_header.lock().unwrap().clone() {
        get = get.header("Authorization", a);
    }
    let mut index = match reg.agent.run(get.body(()).unwrap()) {
        Ok(mut r) if r.status().as_u16() == 200 => {
            let body = r.body_mut().read_to_vec().unwrap_or_default();
            serde_json::from_slice::<Index>(&body).unwrap_or_else(|_| Index::new(vec![]))
        }
        _ => Index::new(vec![]),
    };
    let mut desc = Descriptor::of(MEDIA_MANIFEST, &manifest);
    desc.artifact_type = Some(SPDX_ARTIFACT.into());
    if !index.manifests.iter().any(|m| m.digest == digest) {
        index.manifests.push(desc);
    }
    reg.put_manifest(repo, &tag, MEDIA_INDEX, &index.to_bytes())?;
    Ok(digest)
}

/// A parsed image reference `[host[:port]/]repo[:tag][@digest]`, with Docker
/// Hub defaults (`index.docker.io`, `library/`) as docker and apko apply them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host, with port.
    pub host: String,
    /// Repository path.
    pub repo: String,
    /// Tag, `latest` when neither tag nor digest is given.
    pub tag: Option<String>,
    /// `sha256:…` when given.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `s`.
    pub fn parse(s: &str) -> Result<Reference, PushError> {
        let bad = || PushError::Invalid(format!("invalid image reference: {s:?}"));
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.to_string())),
            None => (s, None),
        };
        let (host, path) = match rest.split_once('/') {
            Some((h, p)) if h.contains('.') || h.contains(':') || h == "localhost" => {
                (h.to_string(), p.to_string())
            }
            _ => ("index.docker.io".to_string(), rest.to_string()),
        };
        let (repo, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_string(), Some(t.to_string())),
            _ => (path.clone(), None),
        };
        let repo = if host == "index.docker.io" && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo
        };
        if repo.is_empty()
            || !repo
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
        {
            return Err(bad());
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".into())
        } else {
            tag
        };
        Ok(Reference {
            host,
            repo,
            tag,
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = Reference::parse("127.0.0.1:5000/a/b:v1").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repo.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "a/b", Some("v1"))
        );
        let r = Reference::parse("alpine").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repo.as_str(), r.tag.as_deref()),
            ("index.docker.io", "library/alpine", Some("latest"))
        );
        let r = Reference::parse("localhost/x@sha256:00").unwrap();
        assert_eq!(
            (r.repo.as_str(), r.tag, r.digest.as_deref()),
            ("x", None, Some("sha256:00"))
        );
        assert!(Reference::parse("Bad/Repo").is_err());
        assert!(
            is_loopback("127.0.0.1:5000") && is_loopback("localhost") && is_loopback("[::1]:80")
        );
        assert!(!is_loopback("example.com:5000"));
        assert_eq!(
            parse_challenge(
                r#"realm="https://a/token",service="reg",scope="repository:x:push,pull""#
            ),
            vec![
                ("realm".to_string(), "https://a/token".to_string()),
                ("service".to_string(), "reg".to_string()),
                ("scope".to_string(), "repository:x:push,pull".to_string())
            ]
        );
    }
}
