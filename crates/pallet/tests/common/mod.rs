//! Helpers shared by the end-to-end tests: the real `pallet` binary, the shared fixtures, and
//! the real image consumers (skopeo, umoci, runc).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use std::process::{Command, Output};

#[allow(unused_imports)]
pub use pallet_test_support::shared;

pub fn pallet() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pallet"))
}

pub fn run(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(pallet());
    c.args(args).current_dir(cwd);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("pallet runs")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED part: {tool} is not installed (scripts/install-deps.sh installs it)");
    }
    ok
}

/// Keys of a folder as a YAML list body.
pub fn keyring_yaml(dir: &Path) -> String {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| format!("    - {}\n", e.unwrap().path().display()))
        .collect();
    v.sort();
    v.concat()
}

/// Unpack an OCI layout reference with umoci and run it with runc; returns what it printed.
pub fn run_bundle(oci_ref: &str, work: &Path, name: &str) -> String {
    let bundle = work.join(format!("bundle-{name}"));
    let o = Command::new("umoci")
        .args(["unpack", "--image", oci_ref])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(o.status.success(), "umoci unpack failed: {}", text(&o));
    let cfg = bundle.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["process"]["terminal"] = serde_json::Value::Bool(false);
    std::fs::write(&cfg, serde_json::to_vec(&v).unwrap()).unwrap();
    let o = Command::new("runc")
        .args(["run", &format!("pallet-test-{name}-{}", std::process::id())])
        .current_dir(&bundle)
        .output()
        .unwrap();
    assert!(o.status.success(), "runc run failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A small HTTP server on 127.0.0.1 serving a folder, with ETags, optional Basic auth, and a
/// count of full (200) responses. It stops when dropped.
pub struct FileServer {
    pub port: u16,
    pub full_responses: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FileServer {
    pub fn start(root: PathBuf, basic: Option<(&str, &str)>) -> FileServer {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let full = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let want_auth = basic.map(|(u, p)| {
            use base64::Engine as _;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let (f2, s2) = (full.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                let Ok((mut sock, _)) = l.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                };
                sock.set_nonblocking(false).unwrap();
                let mut r = BufReader::new(sock.try_clone().unwrap());
                let mut first = String::new();
                if r.read_line(&mut first).is_err() {
                    continue;
                }
                let mut headers = vec![];
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    headers.push(h.trim().to_string());
                }
                let header = |name: &str| {
                    headers.iter().find_map(|h| {
                        let (k, v) = h.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                    })
                };
                let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
                let reply = |sock: &mut std::net::TcpStream,
                             status: &str,
                             extra: &str,
                             body: &[u8]| {
                    let _ = write!(
                        sock,
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(body);
                };
                if let Some(w) = &want_auth
                    && header("authorization").as_deref() != Some(w.as_str())
                {
                    reply(
                        &mut sock,
                        "401 Unauthorized",
                        "WWW-Authenticate: Basic realm=\"t\"\r\n",
                        b"",
                    );
                    continue;
                }
                let file = root.join(path.trim_start_matches('/'));
                match std::fs::read(&file) {
                    Ok(body) => {
                        use sha2::Digest as _;
                        let etag = format!(
                            "\"{}\"",
                            sha2::Sha256::digest(&body)
                                .iter()
                                .map(|b| format!("{b:02x}"))
                                .collect::<String>()
                        );
                        if header("if-none-match").as_deref() == Some(etag.as_str()) {
                            reply(
                                &mut sock,
                                "304 Not Modified",
                                &format!("ETag: {etag}\r\n"),
                                b"",
                            );
                        } else {
                            f2.fetch_add(1, Ordering::Relaxed);
                            reply(&mut sock, "200 OK", &format!("ETag: {etag}\r\n"), &body);
                        }
                    }
                    Err(_) => reply(&mut sock, "404 Not Found", "", b""),
                }
            }
        });
        FileServer {
            port,
            full_responses: full,
            stop,
        }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Every regular file under `dir` (relative path → SHA-256), skipping `skip`ped names; empty
/// when `dir` does not exist.
pub fn tree_digests(dir: &Path, skip: &[&str]) -> std::collections::BTreeMap<String, String> {
    let mut m = std::collections::BTreeMap::new();
    for e in walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
    {
        if !e.file_type().is_file() {
            continue;
        }
        let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
        if skip.iter().any(|s| rel.contains(s)) {
            continue;
        }
        m.insert(rel, sha256_hex(&std::fs::read(e.path()).unwrap()));
    }
    m
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Debian's docker-registry on 127.0.0.1, serving `dir/data`, stopped when dropped.
pub struct Registry {
    pub child: std::process::Child,
    pub port: u16,
    pub dir: PathBuf,
    pub htpasswd: Option<PathBuf>,
}

impl Registry {
    pub fn start(dir: &Path, htpasswd: Option<PathBuf>, port: Option<u16>) -> Registry {
        let port = port.unwrap_or_else(free_port);
        let mut cfg = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        if let Some(h) = &htpasswd {
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                h.display()
            ));
        }
        let path = dir.join(format!("reg-{port}.yml"));
        std::fs::write(&path, cfg).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Registry {
            child,
            port,
            dir: dir.to_path_buf(),
            htpasswd,
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One member of a package's gzip streams, as text (`.PKGINFO`, or a file of the data).
pub fn apk_member(apk: &Path, member: &str) -> String {
    let o = Command::new("tar")
        .arg("-xzOf")
        .arg(apk)
        .arg(member)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A package's `.PKGINFO`.
pub fn pkginfo(apk: &Path) -> String {
    apk_member(apk, ".PKGINFO")
}
