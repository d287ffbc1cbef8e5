//! End to end: repositories that lie, stall or flood, served by the test on 127.0.0.1. Every
//! build against them must end within a bounded time with an error that names the URL, and
//! must leave no cache entry (or temporary file) behind.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// How the server misbehaves.
#[derive(Clone, Copy, Debug)]
enum Evil {
    /// Headers, then one byte a second, forever.
    Drip,
    /// An index that never ends (a stream of zeros with no Content-Length).
    Endless,
    /// Every request is redirected to itself.
    RedirectLoop,
    /// Content-Length says more than is sent, then the connection closes.
    ShortBody,
    /// The index is the real one; packages are another package's bytes.
    SwappedPackages,
}

struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(root: PathBuf, evil: Evil) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    std::thread::spawn(move || {
        while !s2.load(Ordering::Relaxed) {
            let Ok((sock, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let (root, stop) = (root.clone(), s2.clone());
            // One thread per connection, so a stalled answer does not block the next request.
            std::thread::spawn(move || answer(sock, &root, evil, port, &stop));
        }
    });
    Server { port, stop }
}

fn answer(mut sock: TcpStream, root: &Path, evil: Evil, port: u16, stop: &AtomicBool) {
    sock.set_nonblocking(false).unwrap();
    let mut r = BufReader::new(sock.try_clone().unwrap());
    let mut first = String::new();
    if r.read_line(&mut first).is_err() {
        return;
    }
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
    }
    let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
    let file = root.join(path.trim_start_matches('/'));
    let is_index = path.ends_with("APKINDEX.tar.gz");
    match evil {
        Evil::Drip => {
            let _ = write!(sock, "HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n");
            while !stop.load(Ordering::Relaxed) && sock.write_all(b"\x1f").is_ok() {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        Evil::Endless if is_index => {
            let _ = write!(sock, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let zeros = vec![0u8; 1 << 20];
            while !stop.load(Ordering::Relaxed) && sock.write_all(&zeros).is_ok() {}
        }
        Evil::RedirectLoop => {
            let _ = write!(
                sock,
                "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{port}{path}\r\nContent-Length: 0\r\n\r\n"
            );
        }
        Evil::ShortBody if is_index => {
            let body = std::fs::read(&file).unwrap_or_default();
            let _ = write!(
                sock,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len() + 5000
            );
            let _ = sock.write_all(&body[..body.len() / 2]);
        }
        Evil::SwappedPackages if path.ends_with(".apk") => {
            // Always the same other package: valid, signed, but not the one asked for.
            let mut other = None;
            for e in std::fs::read_dir(file.parent().unwrap()).unwrap().flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "apk") && p != file {
                    other = Some(p);
                    break;
                }
            }
            let body = std::fs::read(other.unwrap()).unwrap();
            let _ = write!(
                sock,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(&body);
        }
        _ => {
            let mut body = vec![];
            match std::fs::File::open(&file) {
                Ok(mut f) => {
                    f.read_to_end(&mut body).unwrap();
                    let _ = write!(
                        sock,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(&body);
                }
                Err(_) => {
                    let _ = write!(sock, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                }
            }
        }
    }
}

/// Build from a misbehaving server; returns (output, seconds it took).
fn build_against(evil: Evil, timeout_secs: &str) -> Option<(String, f64, tempfile::TempDir, u16)> {
    let s = shared()?;
    let a = s.join("fixtures/alpine-3.19");
    let t = tempfile::tempdir().unwrap();
    let srv = serve(a.clone(), evil);
    let port = srv.port;
    let c = t.path().join("c.yaml");
    std::fs::write(
        &c,
        format!(
            "contents:\n  repositories:\n    - http://127.0.0.1:{port}\n  keyring:\n{}  packages: [busybox]\narchs: [x86_64]\n",
            keyring_yaml(&a.join("keys"))
        ),
    )
    .unwrap();
    let start = Instant::now();
    let o = run(
        &[
            "image",
            "build",
            c.to_str().unwrap(),
            "h:1",
            "out.tar",
            "--sbom=false",
            "--cache-dir",
            "cache",
        ],
        t.path(),
        &[("PALLET_HTTP_TIMEOUT", timeout_secs)],
    );
    let secs = start.elapsed().as_secs_f64();
    assert!(!o.status.success(), "{evil:?}: the build succeeded");
    assert!(
        !t.path().join("out.tar").exists(),
        "{evil:?}: an output was left"
    );
    drop(srv);
    Some((text(&o), secs, t, port))
}

/// Files in the cache that are not lock files: what a failed fetch must not leave.
fn cache_entries(t: &Path) -> Vec<String> {
    fn walk(d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if !p.to_string_lossy().ends_with(".lock") {
                out.push(p.display().to_string());
            }
        }
    }
    let mut v = vec![];
    walk(&t.join("cache"), &mut v);
    v
}

#[test]
fn a_dripping_server_times_out() {
    let Some((msg, secs, t, port)) = build_against(Evil::Drip, "3") else {
        return;
    };
    assert!(secs < 30.0, "took {secs:.1} s: {msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(
        msg.contains("timed out") || msg.contains("timeout"),
        "{msg}"
    );
    assert_eq!(cache_entries(t.path()), Vec::<String>::new());
}

#[test]
fn an_endless_index_is_cut_off() {
    let Some((msg, secs, t, port)) = build_against(Evil::Endless, "120") else {
        return;
    };
    assert!(secs < 60.0, "took {secs:.1} s: {msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains("limit"), "{msg}");
    assert_eq!(cache_entries(t.path()), Vec::<String>::new());
}

#[test]
fn a_redirect_loop_ends() {
    let Some((msg, secs, t, port)) = build_against(Evil::RedirectLoop, "60") else {
        return;
    };
    assert!(secs < 30.0, "took {secs:.1} s: {msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.to_lowercase().contains("redirect"), "{msg}");
    assert_eq!(cache_entries(t.path()), Vec::<String>::new());
}

#[test]
fn a_short_body_is_an_error() {
    let Some((msg, secs, t, port)) = build_against(Evil::ShortBody, "60") else {
        return;
    };
    assert!(secs < 30.0, "took {secs:.1} s: {msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert_eq!(cache_entries(t.path()), Vec::<String>::new());
}

#[test]
fn a_package_that_is_not_the_indexed_one_is_refused() {
    let Some((msg, _, t, _)) = build_against(Evil::SwappedPackages, "60") else {
        return;
    };
    assert!(msg.contains("does not match the signed index"), "{msg}");
    assert!(msg.contains(".apk"), "{msg}");
    let left: Vec<String> = cache_entries(t.path())
        .into_iter()
        .filter(|p| p.contains("apk-data"))
        .collect();
    assert_eq!(left, Vec::<String>::new());
}
