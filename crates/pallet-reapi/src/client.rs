//! The blocking client: one tokio runtime and one HTTP/2 channel per server, shared by every
//! thread that calls it (the rest of pallet is synchronous and builds on plain threads).

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::proto::{
    self, ActionResult, Digest, ExecuteRequest, ExecuteResponse, FindMissingBlobsRequest,
    GetActionResultRequest, GetCapabilitiesRequest, ServerCapabilities, UpdateActionResultRequest,
    WaitExecutionRequest, action_cache_client::ActionCacheClient,
    capabilities_client::CapabilitiesClient, content_addressable_storage_client as cas,
    execution_client::ExecutionClient,
};
use crate::tree::{Blobs, Source};
use crate::{Error, digest};
use bazel_remote_apis::google::bytestream::{
    ReadRequest, WriteRequest, byte_stream_client::ByteStreamClient,
};

/// gRPC's usual message limit, which BuildGrid keeps: a batch must fit in it with room for
/// the request's own fields.
const GRPC_LIMIT: u64 = 4 * 1024 * 1024;
/// What one blob costs in a batch beyond its bytes (digest, status, framing), rounded up.
const PER_BLOB: u64 = 256;
/// ByteStream chunk size.
const CHUNK: usize = 1 << 20;
/// Digests per FindMissingBlobs call (about 80 bytes each, far under the limit).
const FIND_PAGE: usize = 4096;
/// Responses may be larger than tonic's 4 MiB default (a batch read at the server's limit plus
/// its framing).
const DECODE_LIMIT: usize = 64 << 20;

/// Bytes and blobs moved, for reports and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    pub uploaded_bytes: AtomicU64,
    pub uploaded_blobs: AtomicU64,
    pub downloaded_bytes: AtomicU64,
    pub downloaded_blobs: AtomicU64,
}

/// What a connection needs beyond the server's address.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// A PEM file of CA certificates trusted, besides the system's, to sign a `grpcs://`
    /// server's certificate (a private cluster's own CA).
    pub tls_ca: Option<PathBuf>,
    /// Metadata sent with every call (an `authorization` token, an API key).
    pub headers: Headers,
}

/// gRPC metadata sent with every call. The values are credentials: nothing prints them
/// (`Debug` shows the names only) and they are marked sensitive, so HTTP/2 never puts them
/// in its compression tables.
#[derive(Clone, Default)]
pub struct Headers(Arc<Vec<(AsciiMetadataKey, AsciiMetadataValue)>>);

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, _)| (k.as_str(), "<masked>")))
            .finish()
    }
}

impl Headers {
    /// `NAME=VALUE` arguments, as Bazel's `--remote_header` takes them; `NAME=@env:VAR` reads
    /// the value from the variable `VAR`, so that a token need not be on the command line.
    /// Errors name the header or the variable, never the value.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Headers, Error> {
        Headers::parse_with(args, |var| std::env::var(var).ok())
    }

    /// [`Headers::parse`] with variables looked up by `env`.
    fn parse_with<S: AsRef<str>>(
        args: &[S],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Headers, Error> {
        let mut out = vec![];
        for a in args {
            let a = a.as_ref();
            let bad = |name: &str, message: &str| Error::Header {
                name: name.to_string(),
                message: message.to_string(),
            };
            // Without `=` the whole argument may be a secret (`Authorization: Bearer …`):
            // it is not repeated.
            let Some((name, value)) = a.split_once('=') else {
                return Err(bad("?", "expected NAME=VALUE (the argument is not shown)"));
            };
            let name = name.trim();
            let key = AsciiMetadataKey::from_bytes(name.as_bytes()).map_err(|_| {
                bad(
                    name,
                    "not a gRPC metadata name (letters, digits, `-`, `_`, `.`; no `-bin` suffix)",
                )
            })?;
            let value = match value.strip_prefix("@env:") {
                Some(var) => env(var).ok_or_else(|| {
                    bad(
                        name,
                        &format!("the variable {var} is not set (or not UTF-8)"),
                    )
                })?,
                None => value.to_string(),
            };
            let mut value = AsciiMetadataValue::try_from(value.as_str())
                .map_err(|_| bad(name, "the value is not printable ASCII"))?;
            value.set_sensitive(true);
            out.push((key, value));
        }
        Ok(Headers(Arc::new(out)))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl tonic::service::Interceptor for Headers {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        for (k, v) in self.0.iter() {
            req.metadata_mut().append(k.clone(), v.clone());
        }
        Ok(req)
    }
}

/// The channel every call goes through: the server's HTTP/2 connection, with the headers.
pub type Transport = InterceptedService<Channel, Headers>;

/// A connection to one REAPI server and instance.
#[derive(Clone)]
pub struct Client {
    rt: Arc<tokio::runtime::Runtime>,
    channel: Channel,
    headers: Headers,
    server: String,
    instance: String,
    /// Largest batch (request or response) the server takes, in bytes.
    max_batch: u64,
    caps: ServerCapabilities,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// The URI tonic dials: `grpc://HOST:PORT` as `http://` (plaintext HTTP/2), `grpcs://HOST:PORT`
/// as `https://` (TLS).
pub fn endpoint_uri(url: &str) -> Result<String, Error> {
    let (scheme, rest) = if let Some(r) = url
        .strip_prefix("grpc://")
        .or_else(|| url.strip_prefix("http://"))
    {
        ("http", r)
    } else if let Some(r) = url
        .strip_prefix("grpcs://")
        .or_else(|| url.strip_prefix("https://"))
    {
        ("https", r)
    } else {
        return Err(Error::Address(url.to_string()));
    };
    if rest.is_empty() || rest.contains('/') {
        return Err(Error::Address(url.to_string()));
    }
    Ok(format!("{scheme}://{rest}"))
}

/// The TLS settings of a `grpcs://` endpoint: the system's roots and the CA file's.
fn tls_endpoint(
    endpoint: tonic::transport::Endpoint,
    url: &str,
    ca_file: Option<&Path>,
) -> Result<tonic::transport::Endpoint, Error> {
    let base = ClientTlsConfig::new().timeout(Duration::from_secs(10));
    let Some(path) = ca_file else {
        return endpoint
            .tls_config(base.with_native_roots())
            .map_err(|e| Error::Tls {
                server: url.to_string(),
                message: format!(
                    "{} (no CA certificates on this system: install ca-certificates, or pass \
                     --remote-tls-ca FILE)",
                    source_chain(&e)
                ),
            });
    };
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let pem = std::fs::read(path).map_err(io)?;
    // tonic skips what does not parse: an empty or mistyped file would silently trust only
    // the system's roots.
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(Error::TlsCa {
            path: path.to_path_buf(),
            message: "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
        });
    }
    let with_ca = base.ca_certificate(Certificate::from_pem(&pem));
    // A machine without system roots can still trust the file's CA alone.
    endpoint
        .clone()
        .tls_config(with_ca.clone().with_native_roots())
        .or_else(|_| endpoint.tls_config(with_ca))
        .map_err(|e| Error::TlsCa {
            path: path.to_path_buf(),
            message: source_chain(&e),
        })
}

/// Whether a connection error happened below TLS (no server there, no route, no name), so
/// that the TLS advice would mislead.
fn below_tls(chain: &str) -> bool {
    let c = chain.to_ascii_lowercase();
    [
        "connection refused",
        "timed out",
        "unreachable",
        "dns error",
        "failed to lookup",
        "name or service not known",
    ]
    .iter()
    .any(|m| c.contains(m))
}

impl Client {
    /// Connect and ask for the server's capabilities (which must offer SHA-256).
    pub fn connect(url: &str, instance: &str) -> Result<Client, Error> {
        Client::connect_with(url, instance, &ConnectOptions::default())
    }

    /// [`Client::connect`] with TLS roots and headers.
    pub fn connect_with(url: &str, instance: &str, opts: &ConnectOptions) -> Result<Client, Error> {
        let uri = endpoint_uri(url)?;
        let tls = uri.starts_with("https://");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pallet-reapi")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let connect_err = |message: String| Error::Connect {
            server: url.to_string(),
            message,
        };
        let endpoint = tonic::transport::Endpoint::from_shared(uri)
            .map_err(|e| connect_err(e.to_string()))?
            .connect_timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let endpoint = if tls {
            tls_endpoint(endpoint, url, opts.tls_ca.as_deref())?
        } else {
            endpoint
        };
        let channel = rt.block_on(endpoint.connect()).map_err(|e| {
            let chain = source_chain(&e);
            if tls && !below_tls(&chain) {
                Error::Tls {
                    server: url.to_string(),
                    message: chain,
                }
            } else {
                connect_err(chain)
            }
        })?;
        let mut c = Client {
            rt: Arc::new(rt),
            channel,
            headers: opts.headers.clone(),
            server: url.to_string(),
            instance: instance.to_string(),
            max_batch: GRPC_LIMIT - 64 * 1024,
            caps: ServerCapabilities::default(),
            stats: Arc::new(Stats::default()),
        };
        let caps = c.fetch_capabilities()?;
        if let Some(cc) = &caps.cache_capabilities {
            let sha = proto::digest_function::Value::Sha256 as i32;
            if !cc.digest_functions.is_empty() && !cc.digest_functions.contains(&sha) {
                return Err(Error::Protocol {
                    server: c.server.clone(),
                    call: "GetCapabilities",
                    message: "the server does not offer SHA-256 digests".into(),
                });
            }
            let limit = u64::try_from(cc.max_batch_total_size_bytes).unwrap_or(0);
            if limit > 0 {
                c.max_batch = c.max_batch.min(limit);
            }
        }
        c.caps = caps;
        Ok(c)
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub fn capabilities(&self) -> &ServerCapabilities {
        &self.caps
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The channel with the headers, for the other services of the same server (the Bots
    /// API).
    pub fn transport(&self) -> Transport {
        InterceptedService::new(self.channel.clone(), self.headers.clone())
    }

    /// Run a future in the background on this client's runtime.
    pub fn spawn<F>(&self, f: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.rt.spawn(f);
    }

    /// Run a future on this client's runtime, from synchronous code.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn err(&self, call: &'static str) -> impl Fn(tonic::Status) -> Error + '_ {
        move |s| Error::call(&self.server, call, &s)
    }

    fn fetch_capabilities(&self) -> Result<ServerCapabilities, Error> {
        let mut c = CapabilitiesClient::new(self.transport());
        let req = GetCapabilitiesRequest {
            instance_name: self.instance.clone(),
        };
        self.rt
            .block_on(c.get_capabilities(req))
            .map(tonic::Response::into_inner)
            .map_err(self.err("GetCapabilities"))
    }

    fn cas(&self) -> cas::ContentAddressableStorageClient<Transport> {
        cas::ContentAddressableStorageClient::new(self.transport())
            .max_decoding_message_size(DECODE_LIMIT)
    }

    /// Of `digests`, those the CAS does not hold (the empty blob never counts as missing).
    pub fn find_missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, Error> {
        let wanted: Vec<Digest> = digests
            .iter()
            .filter(|d| d.size_bytes > 0)
            .cloned()
            .collect();
        let mut missing = vec![];
        for page in wanted.chunks(FIND_PAGE) {
            let req = FindMissingBlobsRequest {
                instance_name: self.instance.clone(),
                blob_digests: page.to_vec(),
                ..Default::default()
            };
            let r = self
                .rt
                .block_on(self.cas().find_missing_blobs(req))
                .map_err(self.err("FindMissingBlobs"))?;
            missing.extend(r.into_inner().missing_blob_digests);
        }
        Ok(missing)
    }

    /// Upload what the CAS lacks of `blobs`: FindMissingBlobs first, then the small ones in
    /// batches that fit the server's limit, and the rest through ByteStream. Returns how many
    /// blobs and bytes went up.
    pub fn upload(&self, blobs: &Blobs) -> Result<(u64, u64), Error> {
        let missing = self.find_missing(&blobs.digests())?;
        let mut batch: Vec<proto::batch_update_blobs_request::Request> = vec![];
        let mut batch_size = 0u64;
        let (mut n, mut bytes) = (0u64, 0u64);
        for d in &missing {
            let Some((_, src)) = blobs.map.get(&d.hash) else {
                continue;
            };
            let size = digest::size(d);
            n += 1;
            bytes += size;
            if size + PER_BLOB > self.max_batch {
                self.write_stream(d, src)?;
                continue;
            }
            if batch_size + size + PER_BLOB > self.max_batch {
                self.batch_update(std::mem::take(&mut batch))?;
                batch_size = 0;
            }
            let data = match src {
                Source::Memory(b) => b.clone(),
                Source::File(p) => std::fs::read(p).map_err(|source| Error::Io {
                    path: p.clone(),
                    source,
                })?,
            };
            // The file may have changed since it was hashed: never upload bytes under
            // another digest.
            if digest::of_bytes(&data) != *d {
                return Err(Error::Protocol {
                    server: self.server.clone(),
                    call: "BatchUpdateBlobs",
                    message: format!("{} changed while uploading", digest::show(d)),
                });
            }
            batch_size += size + PER_BLOB;
            batch.push(proto::batch_update_blobs_request::Request {
                digest: Some(d.clone()),
                data,
                ..Default::default()
            });
        }
        self.batch_update(batch)?;
        self.stats.uploaded_blobs.fetch_add(n, Ordering::Relaxed);
        self.stats
            .uploaded_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        Ok((n, bytes))
    }

    fn batch_update(
        &self,
        requests: Vec<proto::batch_update_blobs_request::Request>,
    ) -> Result<(), Error> {
        if requests.is_empty() {
            return Ok(());
        }
        let req = proto::BatchUpdateBlobsRequest {
            instance_name: self.instance.clone(),
            requests,
            ..Default::default()
        };
        let r = self
            .rt
            .block_on(self.cas().batch_update_blobs(req))
            .map_err(self.err("BatchUpdateBlobs"))?;
        // Each blob succeeds or fails on its own.
        for resp in r.into_inner().responses {
            if let Some(s) = resp.status.filter(|s| s.code != 0) {
                return Err(Error::Call {
                    server: self.server.clone(),
                    call: "BatchUpdateBlobs",
                    code: tonic::Code::from(s.code),
                    message: format!(
                        "{}: {}",
                        resp.digest.as_ref().map(digest::show).unwrap_or_default(),
                        s.message
                    ),
                });
            }
        }
        Ok(())
    }

    fn resource(&self, tail: &str) -> String {
        if self.instance.is_empty() {
            tail.to_string()
        } else {
            format!("{}/{tail}", self.instance)
        }
    }

    /// One blob through ByteStream.Write, in 1 MiB chunks read as they are sent.
    fn write_stream(&self, d: &Digest, src: &Source) -> Result<(), Error> {
        let name = self.resource(&format!(
            "uploads/{}/blobs/{}",
            uuid::Uuid::new_v4(),
            digest::show(d)
        ));
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteRequest>(4);
        let src = src.clone();
        let total = digest::size(d);
        // The reader runs on its own thread so a large file is never held in memory whole.
        let reader = std::thread::spawn(move || -> Result<(), Error> {
            let mut r: Box<dyn std::io::Read> = match &src {
                Source::Memory(b) => Box::new(std::io::Cursor::new(b.clone())),
                Source::File(p) => {
                    Box::new(std::fs::File::open(p).map_err(|source| Error::Io {
                        path: p.clone(),
                        source,
                    })?)
                }
            };
            let mut off = 0u64;
            let mut first = true;
            loop {
                let mut buf = vec![0u8; CHUNK];
                let mut k = 0;
                while k < CHUNK {
                    let m = r.read(&mut buf[k..]).map_err(|source| Error::Io {
                        path: match &src {
                            Source::File(p) => p.clone(),
                            Source::Memory(_) => "(memory)".into(),
                        },
                        source,
                    })?;
                    if m == 0 {
                        break;
                    }
                    k += m;
                }
                buf.truncate(k);
                let finish = off + k as u64 >= total || k == 0;
                let req = WriteRequest {
                    resource_name: if first { name.clone() } else { String::new() },
                    write_offset: i64::try_from(off).unwrap_or(i64::MAX),
                    finish_write: finish,
                    data: buf,
                };
                first = false;
                off += k as u64;
                if tx.blocking_send(req).is_err() || finish {
                    return Ok(());
                }
            }
        });
        let mut bs = ByteStreamClient::new(self.transport());
        let r = self
            .rt
            .block_on(bs.write(tokio_stream::wrappers::ReceiverStream::new(rx)));
        let read = reader.join().expect("the upload reader does not panic");
        let r = r.map_err(self.err("ByteStream.Write"))?;
        read?;
        let committed = u64::try_from(r.into_inner().committed_size).unwrap_or(0);
        if committed != total {
            return Err(Error::Protocol {
                server: self.server.clone(),
                call: "ByteStream.Write",
                message: format!(
                    "{}: committed {committed} of {total} bytes",
                    digest::show(d)
                ),
            });
        }
        Ok(())
    }

    /// The bytes of each digest, by hash, each checked against its digest. Small blobs come in
    /// batches within the server's limit, large ones through ByteStream.
    pub fn read_blobs(&self, digests: &[Digest]) -> Result<HashMap<String, Vec<u8>>, Error> {
        let mut out = HashMap::new();
        let mut batch: Vec<Digest> = vec![];
        let mut batch_size = 0u64;
        for d in digests {
            if out.contains_key(&d.hash) || batch.iter().any(|b| b.hash == d.hash) {
                continue;
            }
            if d.size_bytes == 0 {
                out.insert(d.hash.clone(), vec![]);
                continue;
            }
            let size = digest::size(d);
            if size + PER_BLOB > self.max_batch {
                let mut v = vec![];
                self.read_stream(d, &mut v)?;
                out.insert(d.hash.clone(), v);
                continue;
            }
            if batch_size + size + PER_BLOB > self.max_batch {
                self.batch_read(std::mem::take(&mut batch), &mut out)?;
                batch_size = 0;
            }
            batch_size += size + PER_BLOB;
            batch.push(d.clone());
        }
        self.batch_read(batch, &mut out)?;
        Ok(out)
    }

    fn batch_read(
        &self,
        digests: Vec<Digest>,
        out: &mut HashMap<String, Vec<u8>>,
    ) -> Result<(), Error> {
        if digests.is_empty() {
            return Ok(());
        }
        let req = proto::BatchReadBlobsRequest {
            instance_name: self.instance.clone(),
            digests: digests.clone(),
            ..Default::default()
        };
        let r = self
            .rt
            .block_on(self.cas().batch_read_blobs(req))
            .map_err(self.err("BatchReadBlobs"))?;
        for resp in r.into_inner().responses {
            let Some(d) = resp.digest else { continue };
            if let Some(s) = resp.status.filter(|s| s.code != 0) {
                return Err(Error::Call {
                    server: self.server.clone(),
                    call: "BatchReadBlobs",
                    code: tonic::Code::from(s.code),
                    message: format!("{}: {}", digest::show(&d), s.message),
                });
            }
            self.check(&d, &resp.data)?;
            out.insert(d.hash.clone(), resp.data);
        }
        if let Some(d) = digests.iter().find(|d| !out.contains_key(&d.hash)) {
            return Err(Error::Protocol {
                server: self.server.clone(),
                call: "BatchReadBlobs",
                message: format!("no answer for {}", digest::show(d)),
            });
        }
        Ok(())
    }

    fn check(&self, d: &Digest, data: &[u8]) -> Result<(), Error> {
        let got = digest::of_bytes(data);
        if got != *d {
            return Err(Error::Corrupt {
                server: self.server.clone(),
                digest: digest::show(d),
                got: digest::show(&got),
            });
        }
        self.stats
            .downloaded_bytes
            .fetch_add(digest::size(d), Ordering::Relaxed);
        self.stats.downloaded_blobs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// One blob through ByteStream.Read into `w`, hashed on the way; an answer that is not
    /// exactly the digest's bytes is an error.
    fn read_stream(&self, d: &Digest, w: &mut dyn std::io::Write) -> Result<(), Error> {
        let name = self.resource(&format!("blobs/{}", digest::show(d)));
        let mut bs =
            ByteStreamClient::new(self.transport()).max_decoding_message_size(DECODE_LIMIT);
        let server = self.server.clone();
        let (hash, n) = self.rt.block_on(async {
            let mut s = bs
                .read(ReadRequest {
                    resource_name: name,
                    read_offset: 0,
                    read_limit: 0,
                })
                .await
                .map_err(|e| Error::call(&server, "ByteStream.Read", &e))?
                .into_inner();
            let mut h = Sha256::new();
            let mut n = 0u64;
            while let Some(chunk) = s
                .message()
                .await
                .map_err(|e| Error::call(&server, "ByteStream.Read", &e))?
            {
                h.update(&chunk.data);
                n += chunk.data.len() as u64;
                if n > digest::size(d) {
                    break;
                }
                w.write_all(&chunk.data).map_err(|source| Error::Io {
                    path: "(download)".into(),
                    source,
                })?;
            }
            Ok::<_, Error>((digest::hex(&h.finalize()), n))
        })?;
        let got = Digest {
            hash,
            size_bytes: i64::try_from(n).unwrap_or(i64::MAX),
        };
        if got != *d {
            return Err(Error::Corrupt {
                server: self.server.clone(),
                digest: digest::show(d),
                got: digest::show(&got),
            });
        }
        self.stats.downloaded_bytes.fetch_add(n, Ordering::Relaxed);
        self.stats.downloaded_blobs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// One blob's bytes.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, Error> {
        let mut m = self.read_blobs(std::slice::from_ref(d))?;
        Ok(m.remove(&d.hash).unwrap_or_default())
    }

    /// One blob into the file `to` (created or replaced), checked against its digest; a blob
    /// that does not verify leaves no file behind.
    pub fn download(&self, d: &Digest, to: &Path) -> Result<(), Error> {
        let io = |source| Error::Io {
            path: to.to_path_buf(),
            source,
        };
        let r = if digest::size(d) + PER_BLOB > self.max_batch {
            let mut f = std::fs::File::create(to).map_err(io)?;
            self.read_stream(d, &mut f)
                .and_then(|()| f.flush().map_err(io))
        } else {
            self.read_blob(d)
                .and_then(|b| std::fs::write(to, b).map_err(io))
        };
        if r.is_err() {
            let _ = std::fs::remove_file(to);
        }
        r
    }

    /// The ActionCache's result for an action, `None` when it has none.
    pub fn get_action_result(&self, action: &Digest) -> Result<Option<ActionResult>, Error> {
        let mut ac =
            ActionCacheClient::new(self.transport()).max_decoding_message_size(DECODE_LIMIT);
        let req = GetActionResultRequest {
            instance_name: self.instance.clone(),
            action_digest: Some(action.clone()),
            ..Default::default()
        };
        match self.rt.block_on(ac.get_action_result(req)) {
            Ok(r) => Ok(Some(r.into_inner())),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(Error::call(&self.server, "GetActionResult", &s)),
        }
    }

    /// Record a result for an action (its Action, Command and outputs must be in the CAS).
    pub fn update_action_result(
        &self,
        action: &Digest,
        result: &ActionResult,
    ) -> Result<(), Error> {
        let mut ac = ActionCacheClient::new(self.transport());
        let req = UpdateActionResultRequest {
            instance_name: self.instance.clone(),
            action_digest: Some(action.clone()),
            action_result: Some(result.clone()),
            ..Default::default()
        };
        self.rt
            .block_on(ac.update_action_result(req))
            .map(|_| ())
            .map_err(self.err("UpdateActionResult"))
    }

    /// Execute an action and wait for its response: the Execute stream until its operation is
    /// done, resumed with WaitExecution when the stream ends early. `skip_cache_lookup` runs it
    /// even when the ActionCache holds a result (a result that failed verification).
    /// `on_update` hears each stage the server reports (`ExecutionStage` values: 2 queued,
    /// 3 executing, 4 completed) with the worker it names (empty when none), so a caller can
    /// tell an action that went back to the queue or moved to another worker.
    pub fn execute(
        &self,
        action: &Digest,
        skip_cache_lookup: bool,
        on_update: &dyn Fn(i32, &str),
    ) -> Result<ExecuteResponse, Error> {
        let server = self.server.clone();
        let mut ex = ExecutionClient::new(self.transport()).max_decoding_message_size(DECODE_LIMIT);
        let req = ExecuteRequest {
            instance_name: self.instance.clone(),
            action_digest: Some(action.clone()),
            skip_cache_lookup,
            ..Default::default()
        };
        self.rt.block_on(async move {
            let mut stream = ex
                .execute(req)
                .await
                .map_err(|e| Error::call(&server, "Execute", &e))?
                .into_inner();
            let mut name = String::new();
            let mut resumed = 0;
            loop {
                match stream.message().await {
                    Ok(Some(op)) => {
                        name.clone_from(&op.name);
                        if let Some(m) = &op.metadata
                            && let Ok(meta) =
                                <proto::ExecuteOperationMetadata as prost::Message>::decode(
                                    m.value.as_slice(),
                                )
                        {
                            let worker = meta
                                .partial_execution_metadata
                                .as_ref()
                                .map(|m| m.worker.as_str())
                                .unwrap_or("");
                            on_update(meta.stage, worker);
                        }
                        if op.done {
                            return operation_response(&server, op);
                        }
                    }
                    // The server closed the stream (a keepalive limit, a restart): wait on
                    // the operation by name, a few times.
                    Ok(None) | Err(_) if !name.is_empty() && resumed < 20 => {
                        resumed += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        match ex
                            .wait_execution(WaitExecutionRequest { name: name.clone() })
                            .await
                        {
                            Ok(s) => stream = s.into_inner(),
                            Err(e) if e.code() == tonic::Code::Unavailable => {}
                            Err(e) => return Err(Error::call(&server, "WaitExecution", &e)),
                        }
                    }
                    Ok(None) => {
                        return Err(Error::Protocol {
                            server,
                            call: "Execute",
                            message: "the stream ended before the operation was done".into(),
                        });
                    }
                    Err(e) => return Err(Error::call(&server, "Execute", &e)),
                }
            }
        })
    }
}

fn operation_response(
    server: &str,
    op: bazel_remote_apis::google::longrunning::Operation,
) -> Result<ExecuteResponse, Error> {
    use bazel_remote_apis::google::longrunning::operation::Result as R;
    match op.result {
        Some(R::Response(any)) => {
            prost::Message::decode(any.value.as_slice()).map_err(|e| Error::Protocol {
                server: server.to_string(),
                call: "Execute",
                message: format!("the response does not decode as an ExecuteResponse: {e}"),
            })
        }
        Some(R::Error(s)) => Err(Error::Call {
            server: server.to_string(),
            call: "Execute",
            code: tonic::Code::from(s.code),
            message: s.message,
        }),
        None => Err(Error::Protocol {
            server: server.to_string(),
            call: "Execute",
            message: "a done operation without a result".into(),
        }),
    }
}

/// An error and its causes on one line (tonic's transport errors hide the useful part in
/// their sources). A cause that only repeats the text before it is left out.
pub(crate) fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.ends_with(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            endpoint_uri("grpc://127.0.0.1:50051").unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(endpoint_uri("grpcs://h:1").unwrap(), "https://h:1");
        assert!(endpoint_uri("grpc://h:1/x").is_err());
        assert!(endpoint_uri("grpcs://").is_err());
        assert!(endpoint_uri("h:1").is_err());
    }

    #[test]
    fn headers_parse_and_never_show_their_values() {
        let env = |v: &str| (v == "TOKEN").then(|| "Bearer from-env".to_string());
        let h = Headers::parse_with(
            &["Authorization=Bearer s3cret", "x-api-key=@env:TOKEN"],
            env,
        )
        .unwrap();
        let names: Vec<&str> = h.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["authorization", "x-api-key"]);
        assert_eq!(h.0[0].1, "Bearer s3cret");
        assert_eq!(h.0[1].1, "Bearer from-env");
        assert!(h.0.iter().all(|(_, v)| v.is_sensitive()));
        let shown = format!(
            "{h:?} {:?}",
            ConnectOptions {
                tls_ca: None,
                headers: h.clone()
            }
        );
        assert!(
            !shown.contains("s3cret") && !shown.contains("from-env"),
            "{shown}"
        );
        assert!(shown.contains("authorization"), "{shown}");

        // A header pasted curl-style is not repeated in the error; a missing variable is named.
        let e = Headers::parse(&["Authorization: Bearer s3cret"]).unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = Headers::parse_with(&["a=@env:UNSET"], env).unwrap_err();
        assert!(e.to_string().contains("UNSET"), "{e}");
        let e = Headers::parse(&["bad name=s3cret"]).unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = Headers::parse(&["a=s3cret\n"]).unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("ca.pem");
        std::fs::write(&f, "not a certificate\n").unwrap();
        let opts = ConnectOptions {
            tls_ca: Some(f.clone()),
            ..Default::default()
        };
        let e = Client::connect_with("grpcs://127.0.0.1:1", "", &opts).unwrap_err();
        assert!(matches!(e, Error::TlsCa { .. }), "{e}");
        assert!(e.to_string().contains(f.to_str().unwrap()), "{e}");
    }

    #[test]
    fn an_unreachable_server_is_named_in_the_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = Client::connect(&format!("grpc://127.0.0.1:{port}"), "").unwrap_err();
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
        assert!(e.is_transient());
    }
}
