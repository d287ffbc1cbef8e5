//! Running build steps in a bubblewrap sandbox, as melange's bubblewrap runner does: the guest
//! root built from the environment's packages, the workspace at `/home/build`, the cache at
//! `/var/cache/melange`, the host's network, a cleared environment, each step under `/bin/sh`
//! with `set -eo pipefail` in its working directory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::policy::Identity;

/// One step, fully compiled: its final shell text, environment and working directory.
#[derive(Clone, Debug, Default)]
pub struct Step {
    pub name: String,
    pub runs: String,
    pub workdir: String,
    pub env: BTreeMap<String, String>,
}

/// Where the guest root comes from.
#[derive(Clone, Debug)]
pub enum Guest {
    /// A folder holding the root built from the environment's packages.
    Root(PathBuf),
    /// The host's own root, read-only: for the first packages of a repository, when no APK
    /// packages exist yet to build an environment from.
    Bootstrap,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "bwrap (bubblewrap) is not installed; install it (Debian/Ubuntu: apt-get install bubblewrap, Fedora: dnf install bubblewrap, Alpine/Wolfi: apk add bubblewrap)"
    )]
    NoBwrap,
    #[error("step '{step}' failed with exit status {status}; last output:\n{tail}")]
    StepFailed {
        step: String,
        status: String,
        tail: String,
    },
    #[error("cannot start bwrap: {0}")]
    Spawn(std::io::Error),
    #[error(
        "step '{step}' was stopped: the build ran past package.timeout ({limit:?}); raise the timeout or make the step faster; last output:\n{tail}"
    )]
    Timeout {
        step: String,
        limit: std::time::Duration,
        tail: String,
    },
}

/// The sandbox for one build.
#[derive(Clone, Debug)]
pub struct Sandbox {
    pub guest: Guest,
    pub workspace: PathBuf,
    pub cache: Option<PathBuf>,
    /// Extra environment for every step (melange's defaults and `environment.environment`).
    pub env: BTreeMap<String, String>,
    pub debug: bool,
    /// Who the steps run as and the capabilities they keep.
    pub identity: Identity,
    /// When the whole build must have finished (`package.timeout`), and that limit.
    pub deadline: Option<(Instant, Duration)>,
    /// Where each line the step prints goes.
    pub log: crate::log::Log,
}

impl Default for Identity {
    /// melange's build user with Docker's default capabilities.
    fn default() -> Self {
        Identity {
            uid: crate::policy::BUILD_UID,
            gid: crate::policy::BUILD_UID,
            caps: crate::policy::DEFAULT_CAPS
                .iter()
                .map(|c| c.to_string())
                .collect(),
        }
    }
}

/// Whether `bwrap` can be run.
pub fn bwrap_available() -> bool {
    Command::new("bwrap")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Quote a string for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Sandbox {
    /// The script melange runs for a step.
    pub fn script(&self, step: &Step) -> String {
        let workdir = if step.workdir.is_empty() {
            "/home/build"
        } else {
            step.workdir.as_str()
        };
        let flags = if self.debug { "-exo" } else { "-eo" };
        format!(
            "set {flags} pipefail\n[ -d {wd} ] || mkdir -p {wd}\ncd {wd}\n{}\nexit 0",
            step.runs,
            wd = shell_quote(workdir)
        )
    }

    fn command(&self, step: &Step) -> Command {
        let mut c = Command::new("bwrap");
        match &self.guest {
            Guest::Root(root) => {
                c.arg("--bind").arg(root).arg("/");
                c.args([
                    "--dev",
                    "/dev",
                    "--proc",
                    "/proc",
                    "--ro-bind",
                    "/sys",
                    "/sys",
                    "--tmpfs",
                    "/tmp",
                ]);
                if Path::new("/etc/resolv.conf").exists() {
                    c.args(["--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"]);
                }
                c.arg("--bind").arg(&self.workspace).arg("/home/build");
            }
            Guest::Bootstrap => {
                c.args([
                    "--ro-bind",
                    "/",
                    "/",
                    "--dev",
                    "/dev",
                    "--proc",
                    "/proc",
                    "--tmpfs",
                    "/tmp",
                    "--tmpfs",
                    "/home",
                ]);
                c.arg("--bind").arg(&self.workspace).arg("/home/build");
            }
        }
        if let Some(cache) = self.cache.as_ref().filter(|c| c.is_dir()) {
            if matches!(self.guest, Guest::Bootstrap) {
                c.args(["--tmpfs", "/var/cache"]);
            }
            c.arg("--bind").arg(cache).arg("/var/cache/melange");
        }
        // A user namespace maps the steps' uid onto ours, so the build user owns the workspace
        // it writes without being root anywhere; only the listed capabilities survive in it.
        c.arg("--unshare-user")
            .arg("--uid")
            .arg(self.identity.uid.to_string())
            .arg("--gid")
            .arg(self.identity.gid.to_string());
        c.args(["--cap-drop", "ALL"]);
        for cap in &self.identity.caps {
            c.arg("--cap-add").arg(cap);
        }
        c.args([
            "--unshare-pid",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
            "--chdir",
            "/home/build",
        ]);
        let mut env = self.env.clone();
        env.extend(step.env.clone());
        env.entry("PATH".into()).or_insert_with(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/bin:/usr/sbin:/sbin:/bin".into()
        });
        env.entry("HOME".into())
            .or_insert_with(|| "/home/build".into());
        for (k, v) in &env {
            c.arg("--setenv").arg(k).arg(v);
        }
        // Debian's /bin/sh (dash) has no pipefail: a bootstrap build uses the host's bash.
        let shell = match &self.guest {
            Guest::Bootstrap if Path::new("/bin/bash").exists() => "/bin/bash",
            _ => "/bin/sh",
        };
        c.args([shell, "-c", &self.script(step)]);
        c
    }

    /// Run one step, streaming its output to our stderr and keeping the last lines for the
    /// error report.
    pub fn run(&self, step: &Step) -> Result<(), RunError> {
        if !bwrap_available() {
            return Err(RunError::NoBwrap);
        }
        let mut cmd = self.command(step);
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().map_err(RunError::Spawn)?;
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let mut readers = vec![];
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            }));
        }
        drop(tx);
        let mut tail: std::collections::VecDeque<String> = Default::default();
        let mut timed_out = false;
        loop {
            // Wake up now and then to enforce the deadline even when the step prints nothing.
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    self.log.line(format_args!("  | {line}"));
                    tail.push_back(line);
                    if tail.len() > 25 {
                        tail.pop_front();
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            if !timed_out && self.deadline.is_some_and(|(d, _)| Instant::now() >= d) {
                // bwrap runs with --die-with-parent and its own pid namespace: killing it
                // ends every process of the step, so the pipes close and the loop ends.
                let _ = child.kill();
                timed_out = true;
            }
        }
        for r in readers {
            let _ = r.join();
        }
        let status = child.wait().map_err(RunError::Spawn)?;
        if let (true, Some((_, limit))) = (timed_out, self.deadline) {
            return Err(RunError::Timeout {
                step: step.name.clone(),
                limit,
                tail: tail.into_iter().collect::<Vec<_>>().join("\n"),
            });
        }
        if status.success() {
            return Ok(());
        }
        Err(RunError::StepFailed {
            step: step.name.clone(),
            status: status
                .code()
                .map_or_else(|| "killed by a signal".to_string(), |c| c.to_string()),
            tail: tail.into_iter().collect::<Vec<_>>().join("\n"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_quote_the_workdir() {
        let s = Sandbox {
            guest: Guest::Bootstrap,
            workspace: PathBuf::from("/tmp/ws"),
            cache: None,
            env: BTreeMap::new(),
            debug: false,
            identity: Identity::default(),
            deadline: None,
            log: Default::default(),
        };
        let step = Step {
            name: "x".into(),
            runs: "echo hi".into(),
            workdir: "/home/build/a b'c".into(),
            env: BTreeMap::new(),
        };
        let script = s.script(&step);
        assert!(script.starts_with("set -eo pipefail\n"));
        assert!(script.contains("cd '/home/build/a b'\\''c'"));
        assert!(script.ends_with("echo hi\nexit 0"));
    }

    #[test]
    fn bootstrap_steps_run_and_failures_are_reported() {
        if !bwrap_available() {
            eprintln!("SKIPPED: bwrap is not installed");
            return;
        }
        let ws = tempfile::tempdir().unwrap();
        let s = Sandbox {
            guest: Guest::Bootstrap,
            workspace: ws.path().to_path_buf(),
            cache: None,
            env: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
            debug: false,
            identity: Identity::default(),
            deadline: None,
            log: Default::default(),
        };
        let ok = Step {
            name: "write".into(),
            runs: "echo \"$GREETING\" > out.txt; mkdir -p melange-out/x".into(),
            workdir: "/home/build/sub".into(),
            env: BTreeMap::new(),
        };
        s.run(&ok).unwrap();
        assert_eq!(
            std::fs::read_to_string(ws.path().join("sub/out.txt")).unwrap(),
            "hello\n"
        );
        let bad = Step {
            name: "fails".into(),
            runs: "echo about to fail; exit 3".into(),
            ..ok.clone()
        };
        let err = s.run(&bad).unwrap_err().to_string();
        assert!(
            err.contains("'fails'") && err.contains("status 3") && err.contains("about to fail"),
            "{err}"
        );
        // pipefail: a failing command inside a pipeline fails the step.
        let pipe = Step {
            name: "pipe".into(),
            runs: "false | cat".into(),
            ..ok
        };
        assert!(s.run(&pipe).is_err());
    }
}
