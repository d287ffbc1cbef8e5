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
}

impl BuildGrid {
    /// `None`, with a `SKIPPED:` line, when the venv is absent. `keepalive` is the scheduler's
    /// `bot-session-keepalive-timeout` in seconds: how long a bot that stopped answering keeps
    /// its leases before they go back to the queue.
    pub fn start(dir: &Path, keepalive: u32) -> Option<BuildGrid> {
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
        std::fs::write(&cfg, buildgrid_config(port, &db, keepalive)).unwrap();
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
        format!("grpc://127.0.0.1:{}", self.port)
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
