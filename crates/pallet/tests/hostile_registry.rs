//! End to end: registries that refuse every token, flood, lie about digests or stall, served by
//! the test on 127.0.0.1. Publishing to them must end within a bounded time and bounded memory,
//! exit non-zero, and print an error that names the URL.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// How the registry misbehaves; everything else it answers like a registry that stores nothing
/// (blobs are missing, uploads are accepted, manifests are accepted with their true digest).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Evil {
    /// Every registry request is answered 401 with a Bearer challenge; the token service hands
    /// out a token, which is refused again.
    AuthLoop,
    /// The token service answers with zeros that never end.
    EndlessToken,
    /// The token service announces 500 MB.
    HugeToken,
    /// The referrers fallback tag (read back after the SBOM) is zeros that never end.
    EndlessManifest,
    /// Manifest PUTs are answered with another Docker-Content-Digest.
    WrongManifestDigest,
    /// Blob upload commits are answered with another Docker-Content-Digest.
    WrongBlobDigest,
    /// HEAD says every blob is there, with another digest.
    HeadWrongDigest,
    /// HEAD says every blob is there, with another size.
    HeadWrongSize,
    /// HEAD answers half a status line, then nothing.
    StallHeaders,
    /// The token service sends its headers and part of the body, then nothing.
    StallBody,
}

const OTHER: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

struct Server {
    port: u16,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(evil: Evil) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicUsize::new(0));
    let (s2, r2) = (stop.clone(), requests.clone());
    std::thread::spawn(move || {
        while !s2.load(Ordering::Relaxed) {
            let Ok((sock, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let (stop, requests) = (s2.clone(), r2.clone());
            // One thread per connection, so a stalled answer does not block the next request.
            std::thread::spawn(move || {
                let _ = answer(sock, evil, port, &stop, &requests);
            });
        }
    });
    Server {
        port,
        requests,
        stop,
    }
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(b);
    format!(
        "sha256:{}",
        h.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

fn wait_for_stop(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn endless(sock: &mut TcpStream, stop: &AtomicBool) {
    let _ = write!(
        sock,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
    );
    let zeros = vec![b'0'; 1 << 20];
    while !stop.load(Ordering::Relaxed) && sock.write_all(&zeros).is_ok() {}
}

/// Answer requests on one connection until it closes.
fn answer(
    mut sock: TcpStream,
    evil: Evil,
    port: u16,
    stop: &AtomicBool,
    requests: &AtomicUsize,
) -> std::io::Result<()> {
    sock.set_nonblocking(false)?;
    sock.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut r = BufReader::new(sock.try_clone()?);
    loop {
        let mut first = String::new();
        if r.read_line(&mut first)? == 0 {
            return Ok(());
        }
        let mut len = 0u64;
        let mut authorized = false;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("authorization:") {
                authorized = true;
            }
        }
        let mut body = vec![];
        (&mut r).take(len).read_to_end(&mut body)?;
        requests.fetch_add(1, Ordering::Relaxed);
        let mut words = first.split_whitespace();
        let method = words.next().unwrap_or("").to_string();
        let target = words.next().unwrap_or("/").to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let reply = |sock: &mut TcpStream, status: &str, extra: &str, body: &[u8]| {
            let _ = write!(
                sock,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{extra}\r\n",
                body.len()
            );
            let _ = sock.write_all(body);
        };
        let challenge = format!(
            "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"hostile\"\r\n"
        );
        let token_service = matches!(
            evil,
            Evil::AuthLoop | Evil::EndlessToken | Evil::HugeToken | Evil::StallBody
        );
        if path == "/token" {
            match evil {
                Evil::EndlessToken => {
                    endless(&mut sock, stop);
                    return Ok(());
                }
                Evil::HugeToken => {
                    let _ = write!(
                        sock,
                        "HTTP/1.1 200 OK\r\nContent-Length: 500000000\r\nConnection: close\r\n\r\n{{\"token\":\""
                    );
                    let zeros = vec![b'0'; 1 << 20];
                    while !stop.load(Ordering::Relaxed) && sock.write_all(&zeros).is_ok() {}
                    return Ok(());
                }
                Evil::StallBody => {
                    let _ = write!(
                        sock,
                        "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{{\"token\":\"ab"
                    );
                    let _ = sock.flush();
                    wait_for_stop(stop);
                    return Ok(());
                }
                _ => reply(&mut sock, "200 OK", "", br#"{"token":"t"}"#),
            }
            continue;
        }
        if evil == Evil::AuthLoop || (token_service && !authorized) {
            reply(&mut sock, "401 Unauthorized", &challenge, b"");
            continue;
        }
        let upload = format!("Location: /v2/team/app/blobs/uploads/{}\r\n", body.len());
        match method.as_str() {
            "HEAD" if path.contains("/blobs/") => match evil {
                Evil::HeadWrongDigest => {
                    let _ = write!(
                        sock,
                        "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nDocker-Content-Digest: {OTHER}\r\n\r\n"
                    );
                }
                Evil::HeadWrongSize => {
                    let digest = path.rsplit('/').next().unwrap_or("");
                    let _ = write!(
                        sock,
                        "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nDocker-Content-Digest: {digest}\r\n\r\n"
                    );
                }
                Evil::StallHeaders => {
                    let _ = sock.write_all(b"HTTP/1.1 20");
                    let _ = sock.flush();
                    wait_for_stop(stop);
                    return Ok(());
                }
                _ => reply(&mut sock, "404 Not Found", "", b""),
            },
            "POST" => reply(&mut sock, "202 Accepted", &upload, b""),
            "PATCH" => reply(&mut sock, "202 Accepted", &upload, b""),
            "PUT" if path.contains("/blobs/uploads/") => {
                let digest = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("digest="))
                    .unwrap_or("")
                    .replace("%3A", ":");
                let digest = if evil == Evil::WrongBlobDigest {
                    OTHER.to_string()
                } else {
                    digest
                };
                reply(
                    &mut sock,
                    "201 Created",
                    &format!("Docker-Content-Digest: {digest}\r\n"),
                    b"",
                );
            }
            "PUT" if path.contains("/manifests/") => {
                let digest = if evil == Evil::WrongManifestDigest {
                    OTHER.to_string()
                } else {
                    sha256(&body)
                };
                reply(
                    &mut sock,
                    "201 Created",
                    &format!("Docker-Content-Digest: {digest}\r\n"),
                    b"",
                );
            }
            "GET" if path.contains("/manifests/") && evil == Evil::EndlessManifest => {
                endless(&mut sock, stop);
                return Ok(());
            }
            _ => reply(&mut sock, "404 Not Found", "", b""),
        }
    }
}

/// What one publish did: its output, seconds, peak memory in kB, and the server's port.
struct Outcome {
    msg: String,
    secs: f64,
    peak_kb: u64,
    port: u16,
    requests: usize,
}

/// The peak resident memory of a running process, from /proc.
fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Publish an image built from the shared fixtures to a misbehaving registry.
fn publish_to(evil: Evil, timeout_secs: &str) -> Option<Outcome> {
    let s = shared()?;
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let srv = serve(evil);
    let port = srv.port;
    let c = t.path().join("c.yaml");
    std::fs::write(
        &c,
        format!(
            "contents:\n  repositories:\n    - {}\n  keyring:\n{}  packages: [busybox]\narchs: [x86_64]\n",
            a.display(),
            keyring_yaml(&a.join("keys"))
        ),
    )
    .unwrap();
    let start = Instant::now();
    let mut child = Command::new(pallet())
        .args([
            "image",
            "publish",
            c.to_str().unwrap(),
            &format!("127.0.0.1:{port}/team/app:1"),
            "--cache-dir",
            "cache",
        ])
        .current_dir(t.path())
        .env("PALLET_HTTP_TIMEOUT", timeout_secs)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("DOCKER_CONFIG", t.path().join("docker"))
        .env("HTTP_AUTH", "basic:127.0.0.1:user:secret")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut v = vec![];
        let _ = out.read_to_end(&mut v);
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = vec![];
        let _ = err.read_to_end(&mut v);
        v
    });
    let mut peak_kb = 0;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        peak_kb = peak_kb.max(vm_hwm_kb(pid).unwrap_or(0));
        if start.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{evil:?}: publish still running after 300 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let secs = start.elapsed().as_secs_f64();
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&o.join().unwrap()),
        String::from_utf8_lossy(&e.join().unwrap())
    );
    assert!(!status.success(), "{evil:?}: the publish succeeded: {msg}");
    assert!(
        msg.contains(&format!("http://127.0.0.1:{port}/")),
        "{evil:?}: the error names no URL: {msg}"
    );
    // Bounded memory: a flood is cut off at its limit, not held.
    assert!(
        peak_kb < 400_000,
        "{evil:?}: peak memory {peak_kb} kB: {msg}"
    );
    let requests = srv.requests.load(Ordering::Relaxed);
    drop(srv);
    eprintln!("{evil:?}: {secs:.1} s, {peak_kb} kB, {requests} requests: {msg}");
    Some(Outcome {
        msg,
        secs,
        peak_kb,
        port,
        requests,
    })
}

#[test]
fn a_registry_refusing_every_token_ends_with_refused_credentials() {
    let Some(o) = publish_to(Evil::AuthLoop, "120") else {
        return;
    };
    assert!(o.secs < 60.0, "took {:.1} s: {}", o.secs, o.msg);
    assert!(
        o.msg.contains(&format!("127.0.0.1:{}", o.port)),
        "{}",
        o.msg
    );
    assert!(o.msg.contains("refused the credentials"), "{}", o.msg);
    // One challenge answered, then the refusal: no loop.
    assert!(o.requests <= 4, "{} requests: {}", o.requests, o.msg);
}

#[test]
fn an_endless_token_reply_is_cut_off_at_its_limit() {
    for evil in [Evil::EndlessToken, Evil::HugeToken] {
        let Some(o) = publish_to(evil, "120") else {
            return;
        };
        assert!(o.secs < 60.0, "took {:.1} s: {}", o.secs, o.msg);
        assert!(o.msg.contains("/token"), "{}", o.msg);
        assert!(o.msg.contains("limit for a token reply"), "{}", o.msg);
        assert!(o.msg.contains(&(1u64 << 20).to_string()), "{}", o.msg);
        assert!(o.peak_kb > 0);
    }
}

#[test]
fn an_endless_manifest_is_cut_off_at_its_limit() {
    let Some(o) = publish_to(Evil::EndlessManifest, "120") else {
        return;
    };
    assert!(o.secs < 60.0, "took {:.1} s: {}", o.secs, o.msg);
    assert!(o.msg.contains("/manifests/sha256-"), "{}", o.msg);
    assert!(o.msg.contains("limit for a manifest or index"), "{}", o.msg);
    assert!(o.msg.contains(&(4u64 << 20).to_string()), "{}", o.msg);
}

#[test]
fn a_digest_the_registry_changed_fails_the_publish() {
    for (evil, path, says) in [
        (
            Evil::WrongManifestDigest,
            "/manifests/",
            "Docker-Content-Digest",
        ),
        (
            Evil::WrongBlobDigest,
            "/blobs/uploads/",
            "Docker-Content-Digest",
        ),
        (
            Evil::HeadWrongDigest,
            "/blobs/sha256:",
            "Docker-Content-Digest",
        ),
        (Evil::HeadWrongSize, "/blobs/sha256:", "with 7 bytes"),
    ] {
        let Some(o) = publish_to(evil, "120") else {
            return;
        };
        assert!(o.secs < 60.0, "{evil:?}: took {:.1} s: {}", o.secs, o.msg);
        assert!(o.msg.contains(path), "{evil:?}: {}", o.msg);
        assert!(o.msg.contains(says), "{evil:?}: {}", o.msg);
        assert!(o.msg.contains("not trusted"), "{evil:?}: {}", o.msg);
        assert!(!o.msg.contains("pushed 127.0.0.1"), "{evil:?}: {}", o.msg);
    }
}

#[test]
fn a_stalled_registry_ends_within_the_time_limit() {
    for evil in [Evil::StallHeaders, Evil::StallBody] {
        let Some(o) = publish_to(evil, "3") else {
            return;
        };
        // 3 s per request, not retried: well under 30 s even with the build first.
        assert!(o.secs < 30.0, "{evil:?}: took {:.1} s: {}", o.secs, o.msg);
        assert!(o.msg.contains("timed out"), "{evil:?}: {}", o.msg);
        assert!(o.msg.contains("PALLET_HTTP_TIMEOUT"), "{evil:?}: {}", o.msg);
    }
}
