//! BuildGrid, the REAPI scheduler the remote-execution tests run against: a real server from
//! PyPI (the venv `scripts/install-deps.sh` makes), on 127.0.0.1 and a free port, with its
//! config, database and log in a test's temporary folder.

use std::path::{Path, PathBuf};
use std::process::Command;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// BuildGrid's venv (`scripts/install-deps.sh` makes it): `$PALLET_BUILDGRID/venv`, default
/// `/opt/pallet-buildgrid/venv`.
pub fn buildgrid_venv() -> PathBuf {
    std::env::var_os("PALLET_BUILDGRID")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/pallet-buildgrid"))
        .join("venv")
}

/// A BuildGrid server (0.2.53, scheduler in a SQLite file, CAS and ActionCache in memory) on
/// 127.0.0.1, with its config, database and log in `dir`; stopped (SIGTERM, then SIGKILL)
/// when dropped.
pub struct BuildGrid {
    child: std::process::Child,
    pub port: u16,
    pub dir: PathBuf,
    /// With [`Security::tls`]: the CA that signed the server's certificate (PEM).
    pub ca: Option<PathBuf>,
    jwt_secret: Option<PathBuf>,
}

/// How a [`BuildGrid`] is reached: plaintext and open by default.
#[derive(Clone, Copy, Default)]
pub struct Security {
    /// Serve TLS only, with a certificate for 127.0.0.1 signed by a CA made for the test.
    pub tls: bool,
    /// Refuse calls without `authorization: Bearer JWT` signed with a secret of the test
    /// (BuildGrid's `jwt` method, HS256; requests from 127.0.0.1 are not exempted).
    pub jwt: bool,
}

impl Security {
    /// What a production cluster asks for: TLS and a token.
    pub const TLS_AND_JWT: Security = Security {
        tls: true,
        jwt: true,
    };
}

/// A CA, and a server certificate for the IP address 127.0.0.1 it signed, in `dir`
/// (`ca.pem`, `server.pem`, `server.key`), made with the openssl CLI.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(o.status.success(), "openssl {args:?}: {}", text(&o));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=pallet test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    // rustls checks the name against the subjectAltName only, and wants a leaf certificate
    // for server authentication.
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
}

impl BuildGrid {
    /// `None`, with a `SKIPPED:` line, when the venv is absent. `keepalive` is the scheduler's
    /// `bot-session-keepalive-timeout` in seconds: how long a bot that stopped answering keeps
    /// its leases before they go back to the queue.
    pub fn start(dir: &Path, keepalive: u32) -> Option<BuildGrid> {
        BuildGrid::start_secured(dir, keepalive, Security::default())
    }

    /// [`BuildGrid::start`] with TLS, a token check, or both.
    pub fn start_secured(dir: &Path, keepalive: u32, security: Security) -> Option<BuildGrid> {
        let venv = buildgrid_venv();
        if !venv.join("bin/bgd").is_file() {
            eprintln!(
                "SKIPPED: BuildGrid is not installed in {} (scripts/install-deps.sh makes it)",
                venv.display()
            );
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let db = dir.join("bgd.db");
        // 0.2.53 has no `bgd migrate`: the tables come from the package's own models.
        let o = Command::new(venv.join("bin/python"))
            .arg("-c")
            .arg(format!(
                "import sqlalchemy; from buildgrid.server.sql.models import Base; \
                 Base.metadata.create_all(sqlalchemy.create_engine('sqlite:///{}'))",
                db.display()
            ))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "creating BuildGrid's tables: {}",
            text(&o)
        );
        let port = free_port();
        let cfg = dir.join("server.yml");
        let mut config = buildgrid_config(port, &db, keepalive);
        let mut ca = None;
        if security.tls {
            make_certificates(dir);
            config = config.replace(
                "    insecure-mode: true\n",
                &format!(
                    "    insecure-mode: false\n    credentials:\n      tls-server-key: {}\n      \
                     tls-server-cert: {}\n",
                    dir.join("server.key").display(),
                    dir.join("server.pem").display()
                ),
            );
            ca = Some(dir.join("ca.pem"));
        }
        let mut jwt_secret = None;
        if security.jwt {
            let secret = dir.join("jwt.secret");
            std::fs::write(&secret, format!("pallet-test-{}\n", std::process::id())).unwrap();
            config = config.replace(
                "authorization:\n  method: none\n",
                &format!(
                    "authorization:\n  method: jwt\n  algorithm: hs256\n  secret: {}\n",
                    secret.display()
                ),
            );
            jwt_secret = Some(secret);
        }
        assert!(
            (!security.tls || !config.contains("insecure-mode: true"))
                && (!security.jwt || !config.contains("method: none")),
            "buildgrid.yml no longer has the lines the secured variants replace"
        );
        std::fs::write(&cfg, config).unwrap();
        let child = Command::new(venv.join("bin/bgd"))
            .args(["server", "start", "--pid-file"])
            .arg(dir.join("bgd.pid"))
            .arg(&cfg)
            .stdout(std::fs::File::create(dir.join("server.log")).unwrap())
            .stderr(std::process::Stdio::from(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(dir.join("server.log"))
                    .unwrap(),
            ))
            .spawn()
            .unwrap();
        let mut g = BuildGrid {
            child,
            port,
            dir: dir.to_path_buf(),
            ca,
            jwt_secret,
        };
        // About 2.5 s on this machine.
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(g);
            }
            if let Ok(Some(s)) = g.child.try_wait() {
                panic!("bgd exited ({s}): {}", g.log());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        g.stop();
        panic!("bgd did not listen on 127.0.0.1:{port}: {}", g.log());
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "grpcs" } else { "grpc" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// With [`Security::jwt`]: a token the server takes (HS256 with its secret, an hour long),
    /// made with the venv's PyJWT, as the value of an `authorization` header.
    pub fn bearer(&self) -> String {
        let secret = self
            .jwt_secret
            .as_ref()
            .expect("started with Security::jwt");
        let o = Command::new(buildgrid_venv().join("bin/python"))
            .arg("-c")
            .arg(
                "import jwt, sys, time; \
                 key = open(sys.argv[1]).read().strip(); \
                 print(jwt.encode({'sub': 'pallet-test', 'exp': int(time.time()) + 3600}, key, \
                 algorithm='HS256'))",
            )
            .arg(secret)
            .output()
            .unwrap();
        assert!(o.status.success(), "minting a token: {}", text(&o));
        format!("Bearer {}", String::from_utf8_lossy(&o.stdout).trim())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BuildGrid {
    fn drop(&mut self) {
        self.stop();
    }
}

/// reapi.md's loopback configuration: one instance named "", every service, the CAS in
/// memory, clients allowed to write the ActionCache, expired bot sessions reaped every second.
fn buildgrid_config(port: u16, db: &Path, keepalive: u32) -> String {
    // The same file serves scripts/bench-remote.sh, which fills the placeholders with sed.
    include_str!("buildgrid.yml")
        .replace("{port}", &port.to_string())
        .replace("{db}", &db.display().to_string())
        .replace("{keepalive}", &keepalive.to_string())
}
