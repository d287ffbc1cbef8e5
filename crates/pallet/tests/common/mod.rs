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

/// The binary under the name `name` (`apko`, `melange`): a symlink in `d`, made once.
pub fn face(d: &Path, name: &str) -> PathBuf {
    let f = d.join(name);
    if !f.exists() {
        std::os::unix::fs::symlink(pallet(), &f).unwrap();
    }
    f
}

/// Run the `name` face in `d` with `args` and `env`.
pub fn run_face(d: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(face(d, name));
    c.args(args).current_dir(d);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("pallet runs")
}

/// The `apko` face in `d`, with a fixed SOURCE_DATE_EPOCH.
pub fn apko(d: &Path, args: &[&str]) -> Output {
    run_face(d, "apko", args, &[("SOURCE_DATE_EPOCH", "1700000000")])
}

/// The `melange` face in `d`.
pub fn melange(d: &Path) -> PathBuf {
    face(d, "melange")
}

pub fn run_melange(d: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    run_face(d, "melange", args, env)
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
    /// Every path asked for, in order: what a client fetched, or tried to.
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FileServer {
    pub fn start(root: PathBuf, basic: Option<(&str, &str)>) -> FileServer {
        FileServer::serve(root, basic, 0)
    }

    /// A server on a given port: the same URL again after another server on it stopped.
    pub fn start_on(root: PathBuf, port: u16) -> FileServer {
        FileServer::serve(root, None, port)
    }

    fn serve(root: PathBuf, basic: Option<(&str, &str)>, port: u16) -> FileServer {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
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
        let requests = Arc::new(std::sync::Mutex::new(vec![]));
        let (f2, s2, r2) = (full.clone(), stop.clone(), requests.clone());
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
                r2.lock().unwrap().push(path.clone());
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
            requests,
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

/// A private Docker daemon (Debian's docker.io) on a socket in `dir`, with its own data and exec
/// roots, no bridge and no iptables; stopped when dropped. `None` (with a SKIPPED line) when
/// dockerd is missing or does not start.
pub struct Daemon {
    child: std::process::Child,
    dir: PathBuf,
}

impl Daemon {
    pub fn start(dir: &Path) -> Option<Daemon> {
        if !(have("dockerd") && have("docker")) {
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let child = std::process::Command::new("dockerd")
            .arg("--host")
            .arg(format!("unix://{}", dir.join("sock").display()))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("pid"))
            .args(["--bridge=none", "--iptables=false"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon {
            child,
            dir: dir.to_path_buf(),
        };
        for _ in 0..120 {
            if d.docker(&["info"]).status.success() {
                return Some(d);
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        eprintln!(
            "SKIPPED: dockerd did not start: {}",
            std::fs::read_to_string(dir.join("log"))
                .unwrap_or_default()
                .lines()
                .last()
                .unwrap_or("")
        );
        None
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.join("sock").display())
    }

    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", self.host())
            .output()
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..40 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The x86_64 kernel for qemu runner tests: `PALLET_TEST_KERNEL`, else the one pallet finds
/// on its own. `None` (with a SKIPPED line) when there is none or qemu is missing.
pub fn qemu_kernel() -> Option<PathBuf> {
    if let Some(k) = std::env::var_os("PALLET_TEST_KERNEL") {
        return have("qemu-system-x86_64").then(|| PathBuf::from(k));
    }
    qemu_kernel_for("x86_64")
}

/// The kernel pallet's qemu runner finds for `arch` (x86_64, aarch64) when no variable names
/// one: Debian's cloud kernel that scripts/install-deps.sh unpacks in
/// `/var/cache/pallet/kernel/ARCH` (`PALLET_QEMU_KERNEL_DIR` moves it), with the qemu that boots
/// it.
pub fn qemu_kernel_for(arch: &str) -> Option<PathBuf> {
    let bin = if arch == "x86_64" {
        "qemu-system-x86_64"
    } else {
        "qemu-system-aarch64"
    };
    if !have(bin) {
        return None;
    }
    let dir = std::env::var_os("PALLET_QEMU_KERNEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/pallet/kernel"))
        .join(arch);
    let found = std::fs::read_dir(dir.join("boot")).ok().and_then(|rd| {
        rd.flatten().map(|e| e.path()).find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
    });
    if found.is_none() {
        eprintln!(
            "SKIPPED part: no {arch} kernel for the qemu runner in {} (scripts/install-deps.sh unpacks Debian's cloud kernel there)",
            dir.display()
        );
    }
    found
}

/// A detached tmux session running a shell command on a real terminal; killed when dropped.
pub struct Tmux {
    name: String,
}

impl Tmux {
    pub fn start(name: &str, command: &str) -> Option<Tmux> {
        if !have("tmux") {
            return None;
        }
        let name = format!("{name}-{}", std::process::id());
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                "220",
                "-y",
                "60",
                command,
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "tmux new-session");
        Some(Tmux { name })
    }

    pub fn send(&self, keys: &str) {
        let ok = Command::new("tmux")
            .args(["send-keys", "-t", &self.name, keys, "Enter"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "tmux send-keys");
    }

    /// The whole pane, history included.
    pub fn screen(&self) -> String {
        let o = Command::new("tmux")
            .args(["capture-pane", "-p", "-J", "-S", "-500", "-t", &self.name])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Wait until the pane shows `needle`; the pane's text either way.
    pub fn wait_for(&self, needle: &str, secs: u64) -> Result<String, String> {
        self.wait_for_any(&[needle], secs)
    }

    /// Wait until the pane shows one of `needles`; the pane's text either way.
    pub fn wait_for_any(&self, needles: &[&str], secs: u64) -> Result<String, String> {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let s = self.screen();
            if needles.iter().any(|n| s.contains(n)) {
                return Ok(s);
            }
            if std::time::Instant::now() > end {
                return Err(s);
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}

/// BuildGrid on 127.0.0.1 (shared with the pallet-reapi tests).
#[allow(unused_imports)]
pub use pallet_test_support::buildgrid::{BuildGrid, buildgrid_venv};
