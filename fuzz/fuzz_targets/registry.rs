//! What an OCI registry answers, as pallet-registry and `publish` read it: status codes, the
//! `WWW-Authenticate` challenge (Basic, Bearer with its parameters), the token JSON, `Location`
//! headers of uploads, `OCI-Subject`, content types, and manifests and indexes fetched for the
//! referrers fallback. Also image references as users type them.
//!
//! The input scripts a registry: responses separated by `\n%%\n`, each a status line, header
//! lines (`Name: value`) up to an empty line, then the body. A loopback server plays them to
//! the client in order (404 once they run out). So that no input can send the client anywhere
//! else, `realm` may only be written as `@REALM@` (the server's own token URL; any other
//! "realm" is defused) and a `Location` always starts with `/` on this server. Retried
//! statuses (5xx, 429) become 400: the client sleeps before retrying, which would only slow
//! the fuzzer down.
#![no_main]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use pallet_image::config::Arch;
use pallet_image::oci::{self, ArchImage, Blob};
use pallet_registry::{BlobSource, Client, Credentials, Reference};

struct Reply {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

struct Server {
    port: u16,
    script: Mutex<VecDeque<Reply>>,
    dir: tempfile::TempDir,
}

fn server() -> &'static Server {
    static S: OnceLock<&'static Server> = OnceLock::new();
    S.get_or_init(|| {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let dir = tempfile::tempdir().expect("temporary folder");
        // No credentials from the host: an empty docker config, no HTTP_AUTH.
        // SAFETY: set once, before any other thread of this process reads the environment.
        unsafe {
            std::env::set_var("DOCKER_CONFIG", dir.path());
            std::env::remove_var("HTTP_AUTH");
        }
        let s: &'static Server = Box::leak(Box::new(Server {
            port: l.local_addr().expect("address").port(),
            script: Mutex::new(VecDeque::new()),
            dir,
        }));
        std::thread::spawn(move || {
            // A thread per connection: the client may open a new one while an idle one is
            // still in its pool.
            for c in l.incoming().flatten() {
                std::thread::spawn(move || while let Ok(true) = serve(s, &c) {});
            }
        });
        s
    })
}

/// Read one request (headers and body, so the client never writes into a closed socket) and
/// answer it with the next scripted reply, keeping the connection open (a connection per
/// request would cost more than the client's work). Whether another request may follow.
fn serve(s: &Server, c: &TcpStream) -> std::io::Result<bool> {
    let mut r = BufReader::new(c);
    let mut len = 0usize;
    let mut chunked = false;
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Ok(false);
    }
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        let l = line.to_ascii_lowercase();
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if l.starts_with("transfer-encoding:") && l.contains("chunked") {
            chunked = true;
        }
    }
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut skip = vec![0; n + 2];
            r.read_exact(&mut skip)?;
            if n == 0 {
                break;
            }
        }
    } else {
        std::io::copy(&mut (&mut r).take(len as u64), &mut std::io::sink())?;
    }
    let reply = s.script.lock().expect("lock").pop_front().unwrap_or(Reply {
        status: 404,
        headers: vec![],
        body: vec![],
    });
    // These statuses have no body: close after them so a scripted body cannot desynchronise
    // the connection.
    let bodiless = reply.status == 204 || reply.status == 304;
    let mut out = if bodiless {
        format!("HTTP/1.1 {} Fuzz\r\nConnection: close\r\n", reply.status)
    } else {
        format!(
            "HTTP/1.1 {} Fuzz\r\nContent-Length: {}\r\n",
            reply.status,
            reply.body.len()
        )
    }
    .into_bytes();
    for (k, v) in &reply.headers {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !first.starts_with("HEAD ") && !bodiless {
        out.extend_from_slice(&reply.body);
    }
    let mut w = c;
    w.write_all(&out)?;
    w.flush()?;
    Ok(!bodiless)
}

/// Replace `from` by `to` everywhere, ASCII case-insensitively.
fn replace_ci(v: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v.len() - i >= from.len() && v[i..i + from.len()].eq_ignore_ascii_case(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    out
}

fn script(data: &[u8], port: u16) -> VecDeque<Reply> {
    let realm = format!("realm=\"http://127.0.0.1:{port}/token\"");
    let mut out = VecDeque::new();
    for part in pallet_fuzz::split(data, b"\n%%\n", 64) {
        let (head, body) = match part.windows(2).position(|w| w == b"\n\n") {
            Some(p) => (&part[..p], &part[p + 2..]),
            None => (part, &b""[..]),
        };
        let mut lines = head.split(|b| *b == b'\n');
        let status = std::str::from_utf8(lines.next().unwrap_or(b""))
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok())
            .filter(|s| (100..600).contains(s) && !(100..200).contains(s))
            .map(|s| if s >= 500 || s == 429 { 400 } else { s })
            .unwrap_or(200);
        let mut headers = vec![];
        for l in lines {
            let Some(colon) = l.iter().position(|b| *b == b':') else {
                continue;
            };
            let name = &l[..colon];
            if name.is_empty() || !name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-') {
                continue;
            }
            let name = String::from_utf8_lossy(name).into_owned();
            if ["content-length", "connection", "transfer-encoding"]
                .contains(&name.to_ascii_lowercase().as_str())
            {
                continue;
            }
            // Header values cannot hold control characters on the wire.
            let mut value: Vec<u8> = l[colon + 1..]
                .iter()
                .map(|b| {
                    if *b < 0x20 && *b != b'\t' || *b == 0x7f {
                        b'?'
                    } else {
                        *b
                    }
                })
                .collect();
            while value.first() == Some(&b' ') {
                value.remove(0);
            }
            match name.to_ascii_lowercase().as_str() {
                "www-authenticate" => {
                    value = replace_ci(&value, b"realm", b"rea_m");
                    value = replace_ci(&value, b"@rea_m@", realm.as_bytes());
                }
                "location" if value.first() != Some(&b'/') => value.insert(0, b'/'),
                _ => {}
            }
            headers.push((name, value));
        }
        out.push_back(Reply {
            status,
            headers,
            body: body.to_vec(),
        });
    }
    out
}

fn blob(dir: &std::path::Path, name: &str, bytes: &[u8]) -> Blob {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write blob");
    Blob {
        digest: oci::sha256_digest(bytes),
        size: bytes.len() as u64,
        path,
    }
}

fuzz_target!(|data: &[u8]| {
    let s = server();
    // The first line is also an image reference as a user would type it.
    if let Some(line) = data.split(|b| *b == b'\n').next()
        && let Ok(text) = std::str::from_utf8(line)
        && let Ok(r) = Reference::parse(text)
    {
        assert!(!r.repository.is_empty());
        let _ = r.is_loopback();
    }
    // The rest (after the first line) is the registry's script.
    let rest = data
        .iter()
        .position(|b| *b == b'\n')
        .map_or(&b""[..], |p| &data[p + 1..]);
    *s.script.lock().expect("lock") = script(rest, s.port);
    let r = Reference::parse(&format!("127.0.0.1:{}/fuzz/repo:tag", s.port)).expect("reference");
    let mut c = Client::new(r, &[]).with_credentials(Some(Credentials {
        username: "user".into(),
        password: "secret".into(),
    }));
    // Small chunks, so an upload takes several PATCH requests and Location hops.
    c.chunk_size = 3;
    let digest = oci::sha256_digest(b"hello");
    let _ = c.has_blob(&digest);
    let b = BlobSource {
        digest: digest.clone(),
        size: 5,
        path: None,
        bytes: Some(b"hello".to_vec()),
        media_type: "application/octet-stream".into(),
    };
    let _ = c.push_blob(&b, Some("fuzz/other"));
    let _ = c.put_manifest("tag", oci::MT_MANIFEST, b"{}");
    let _ = c.get_manifest("tag", oci::MT_INDEX);
    let _ = c.has_referrers_api(&digest);
    // A whole publish: blobs from files, the manifest, SBOMs as referrers (with the tag
    // fallback that reads back an index the registry holds), the index, the tag.
    let d = s.dir.path();
    let image = ArchImage {
        arch: Arch::Amd64,
        config: blob(d, "config", b"{\"architecture\":\"amd64\"}"),
        manifest: blob(d, "manifest", b"{\"schemaVersion\":2}"),
        layers: vec![blob(d, "layer", b"layer-bytes")],
    };
    let index = blob(d, "index", b"{\"schemaVersion\":2,\"manifests\":[]}");
    let sboms = vec![
        (
            "sbom-x86_64.spdx.json".to_string(),
            serde_json::json!({"spdxVersion": "SPDX-2.3"}),
        ),
        (
            "sbom-index.spdx.json".to_string(),
            serde_json::json!({"spdxVersion": "SPDX-2.3"}),
        ),
    ];
    let _ = pallet_image::publish::push(&mut c, &[image], &index, &sboms, Some("fuzz/other"));
    s.script.lock().expect("lock").clear();
});
