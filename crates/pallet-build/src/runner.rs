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
    /// melange's docker runner: a container of the daemon at `socket`, made from the guest
    /// root imported as an image, that sleeps while each step runs in it as an exec.
    Docker { socket: PathBuf, container: String },
    /// melange's qemu runner: a booted microVM whose init runs each step.
    Qemu(std::sync::Arc<crate::qemu::Vm>),
}

/// Which runner a build uses (melange's `--runner`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Runner {
    #[default]
    Bubblewrap,
    /// The daemon at this socket.
    Docker(PathBuf),
    Qemu(crate::qemu::QemuConfig),
}

impl Runner {
    pub fn name(&self) -> &'static str {
        match self {
            Runner::Bubblewrap => "bubblewrap",
            Runner::Docker(_) => "docker",
            Runner::Qemu(_) => "qemu",
        }
    }
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
    // Not a `source`: the message holds it already, and a report printing the chain would
    // say it twice.
    #[error("docker runner: {0}")]
    Docker(pallet_image::docker::DockerError),
    #[error(transparent)]
    Qemu(#[from] crate::qemu::QemuError),
    #[error(
        "step '{step}' was stopped: the build ran past package.timeout ({limit:?}); raise the timeout or make the step faster; last output:\n{tail}"
    )]
    Timeout {
        step: String,
        limit: std::time::Duration,
        tail: String,
    },
}

impl From<pallet_image::docker::DockerError> for RunError {
    fn from(e: pallet_image::docker::DockerError) -> Self {
        RunError::Docker(e)
    }
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
    /// melange's `--interactive`: a failed step opens a shell in the guest, on our terminal.
    pub interactive: bool,
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
        // Debian's /bin/sh (dash) has no pipefail: a bootstrap build uses the host's bash.
        let shell = match &self.guest {
            Guest::Bootstrap if Path::new("/bin/bash").exists() => "/bin/bash",
            _ => "/bin/sh",
        };
        self.bwrap(step, &[shell, "-c", &self.script(step)], true)
    }

    /// bwrap with the guest's mounts, user and environment, running `argv`. `new_session`
    /// detaches it from our terminal (so a step cannot push input into it); only the debug
    /// shell keeps the terminal.
    fn bwrap(&self, step: &Step, argv: &[&str], new_session: bool) -> Command {
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
            // `run` hands docker and qemu guests to their own runners before any bwrap
            // command is made.
            Guest::Docker { .. } | Guest::Qemu(_) => {
                unreachable!("docker and qemu guests do not run in bwrap")
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
        c.args(["--unshare-pid", "--die-with-parent"]);
        if new_session {
            c.arg("--new-session");
        }
        c.args(["--clearenv", "--chdir", "/home/build"]);
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
        c.args(argv);
        c
    }

    /// Run one step, streaming its output to our stderr and keeping the last lines for the
    /// error report.
    pub fn run(&self, step: &Step) -> Result<(), RunError> {
        let r = self.run_once(step);
        if !self.interactive || !matches!(r, Err(RunError::StepFailed { .. })) {
            return r;
        }
        if let Err(e) = &r {
            eprintln!("{e}");
        }
        eprintln!(
            "step '{}' failed: a shell in the build guest, in its working folder with its environment (its script is in the shell's history). `exit 0` continues the build; any other exit stops it.",
            step.name
        );
        match self.debug_shell(step)? {
            0 => Ok(()),
            _ => r,
        }
    }

    /// The shell of `--interactive`: `cd` to the step's folder, then an interactive `sh`.
    fn shell_script(&self, step: &Step) -> String {
        let workdir = if step.workdir.is_empty() {
            "/home/build"
        } else {
            step.workdir.as_str()
        };
        format!("cd {} 2>/dev/null; exec /bin/sh -i", shell_quote(workdir))
    }

    /// melange's debugger: a shell in the same guest as the failed step, on our terminal;
    /// returns the shell's exit status. The failed script is put in `~/.ash_history` (so the
    /// up arrow recalls it) and removed afterwards.
    fn debug_shell(&self, step: &Step) -> Result<i32, RunError> {
        let history = self.workspace.join(".ash_history");
        let _ = std::fs::write(&history, format!("{}\n", step.runs.trim_end()));
        let status = match &self.guest {
            Guest::Docker { socket, container } => self.docker_shell(step, socket, container),
            Guest::Qemu(vm) => {
                let code = vm.shell(
                    &self.qemu_wrap(step, &self.shell_script(step)),
                    self.identity.uid,
                    self.identity.gid,
                )?;
                Ok(code)
            }
            _ => {
                let st = self
                    .bwrap(step, &["/bin/sh", "-c", &self.shell_script(step)], false)
                    .status()
                    .map_err(RunError::Spawn)?;
                Ok(st.code().unwrap_or(1))
            }
        };
        let _ = std::fs::remove_file(&history);
        status
    }

    /// Create an exec of `script` in `container` with the step's environment, as the build
    /// user in `/home/build`; returns its id. `stdin` attaches our input (the debug shell).
    fn docker_exec(
        &self,
        engine: &pallet_image::docker::Engine,
        container: &str,
        step: &Step,
        script: &str,
        stdin: bool,
    ) -> Result<String, RunError> {
        let env: Vec<String> = self
            .step_env(step)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let created = engine.ok(
            "POST",
            &format!("/containers/{container}/exec"),
            pallet_image::docker::Body::Json(&serde_json::json!({
                "AttachStdin": stdin,
                "AttachStdout": true,
                "AttachStderr": true,
                "Cmd": ["/bin/sh", "-c", script],
                "Env": env,
                "User": format!("{}:{}", self.identity.uid, self.identity.gid),
                "WorkingDir": "/home/build",
            })),
        )?;
        Ok(serde_json::from_slice::<serde_json::Value>(&created)
            .ok()
            .and_then(|v| v["Id"].as_str().map(str::to_string))
            .unwrap_or_default())
    }

    /// The debug shell as an attached `docker exec`: our standard input goes to it, its
    /// output comes back multiplexed.
    fn docker_shell(&self, step: &Step, socket: &Path, container: &str) -> Result<i32, RunError> {
        use pallet_image::docker::{Body, Engine};
        use std::io::{Read as _, Write as _};
        let engine = Engine::new(socket.to_path_buf());
        let id = self.docker_exec(&engine, container, step, &self.shell_script(step), true)?;
        let mut stream = engine.hijack(
            &format!("/exec/{id}/start"),
            &serde_json::json!({"Detach": false, "Tty": false}),
        )?;
        let mut input = stream
            .try_clone()
            .map_err(|e| RunError::Spawn(std::io::Error::other(e)))?;
        // Stays blocked on our terminal after the shell is gone; the build moves on.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let stdin = std::io::stdin();
            let mut stdin = stdin.lock();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || input.write_all(&buf[..n]).is_err() {
                    let _ = input.shutdown(std::net::Shutdown::Write);
                    break;
                }
            }
        });
        // Frames: a byte for the stream (1 out, 2 err), three zeros, a big-endian length.
        let mut head = [0u8; 8];
        while stream.read_exact(&mut head).is_ok() {
            let n = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
            let mut data = vec![0u8; n];
            if stream.read_exact(&mut data).is_err() {
                break;
            }
            if head[0] == 2 {
                let _ = std::io::stderr().write_all(&data);
            } else {
                let mut out = std::io::stdout();
                let _ = out.write_all(&data).and_then(|_| out.flush());
            }
        }
        let info: serde_json::Value =
            serde_json::from_slice(&engine.ok("GET", &format!("/exec/{id}/json"), Body::None)?)
                .unwrap_or_default();
        Ok(info["ExitCode"].as_i64().unwrap_or(1) as i32)
    }

    fn run_once(&self, step: &Step) -> Result<(), RunError> {
        if let Guest::Docker { socket, container } = &self.guest {
            return self.run_docker(step, socket, container);
        }
        if let Guest::Qemu(vm) = &self.guest {
            return self.run_qemu(step, vm);
        }
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

impl Sandbox {
    /// The environment a step sees, as every runner sets it.
    fn step_env(&self, step: &Step) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        env.extend(step.env.clone());
        env.entry("PATH".into()).or_insert_with(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/bin:/usr/sbin:/sbin:/bin".into()
        });
        env.entry("HOME".into())
            .or_insert_with(|| "/home/build".into());
        env
    }

    /// One step as a `docker exec` in the build's container, as melange's docker runner runs
    /// it; the output comes back when the step ends.
    fn run_docker(&self, step: &Step, socket: &Path, container: &str) -> Result<(), RunError> {
        use pallet_image::docker::{Body, Engine};
        let engine = Engine::new(socket.to_path_buf());
        let id = self.docker_exec(&engine, container, step, &self.script(step), false)?;
        let out = std::thread::scope(|s| {
            let run = s.spawn(|| {
                engine.ok(
                    "POST",
                    &format!("/exec/{id}/start"),
                    Body::Json(&serde_json::json!({"Detach": false, "Tty": false})),
                )
            });
            // package.timeout: stop the container's processes when the deadline passes.
            loop {
                if run.is_finished() {
                    return (run.join().expect("exec thread"), false);
                }
                if self.deadline.is_some_and(|(d, _)| Instant::now() >= d) {
                    let _ =
                        engine.call("POST", &format!("/containers/{container}/kill"), Body::None);
                    return (run.join().expect("exec thread"), true);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let (res, timed_out) = out;
        let text = pallet_image::docker::demux(&res?);
        let mut tail: std::collections::VecDeque<String> = Default::default();
        for line in text.lines() {
            self.log.line(format_args!("  | {line}"));
            tail.push_back(line.to_string());
            if tail.len() > 25 {
                tail.pop_front();
            }
        }
        let tail = tail.into_iter().collect::<Vec<_>>().join("\n");
        if let (true, Some((_, limit))) = (timed_out, self.deadline) {
            return Err(RunError::Timeout {
                step: step.name.clone(),
                limit,
                tail,
            });
        }
        let info: serde_json::Value =
            serde_json::from_slice(&engine.ok("GET", &format!("/exec/{id}/json"), Body::None)?)
                .unwrap_or_default();
        match info["ExitCode"].as_i64() {
            Some(0) => Ok(()),
            code => Err(RunError::StepFailed {
                step: step.name.clone(),
                status: code.map_or_else(|| "unknown".to_string(), |c| c.to_string()),
                tail,
            }),
        }
    }
}

impl Sandbox {
    /// The script the qemu guest's init runs for a step: the step's environment and nothing
    /// else (`env -i`, as bubblewrap's `--clearenv`), then melange's script.
    pub fn qemu_script(&self, step: &Step) -> String {
        self.qemu_wrap(step, &self.script(step))
    }

    fn qemu_wrap(&self, step: &Step, script: &str) -> String {
        let mut s = String::from("exec env -i");
        for (k, v) in self.step_env(step) {
            s.push(' ');
            s.push_str(&shell_quote(&format!("{k}={v}")));
        }
        s.push_str(" /bin/sh -c ");
        s.push_str(&shell_quote(script));
        s.push('\n');
        s
    }

    /// One step in the microVM, its output streamed as it comes.
    fn run_qemu(&self, step: &Step, vm: &crate::qemu::Vm) -> Result<(), RunError> {
        let mut tail: std::collections::VecDeque<String> = Default::default();
        let end = vm.run(
            &self.qemu_script(step),
            self.identity.uid,
            self.identity.gid,
            self.deadline.map(|(d, _)| d),
            |l| {
                let l = String::from_utf8_lossy(l).to_string();
                self.log.line(format_args!("  | {l}"));
                tail.push_back(l);
                if tail.len() > 25 {
                    tail.pop_front();
                }
            },
        )?;
        let tail = tail.into_iter().collect::<Vec<_>>().join("\n");
        match end {
            crate::qemu::StepEnd::Exited(0) => Ok(()),
            crate::qemu::StepEnd::Exited(code) => Err(RunError::StepFailed {
                step: step.name.clone(),
                status: code.to_string(),
                tail,
            }),
            crate::qemu::StepEnd::TimedOut => Err(RunError::Timeout {
                step: step.name.clone(),
                limit: self.deadline.map(|(_, l)| l).unwrap_or_default(),
                tail,
            }),
        }
    }
}

/// A docker runner's image and container, removed (with `--rm`'s default) when dropped.
pub struct DockerGuest {
    pub socket: PathBuf,
    pub image: String,
    pub container: String,
}

impl DockerGuest {
    /// Import `rootfs_tar` as `melange:<pid>-<16hex>` and start a sleeping container of it
    /// with the workspace and cache mounted, Docker's default capabilities plus `caps` (after
    /// dropping all), and the host's network, as melange's runner does.
    pub fn start(
        socket: &Path,
        rootfs_tar: &Path,
        workspace: &Path,
        cache: Option<&Path>,
        caps: &[String],
        owner: Option<(u32, u32)>,
    ) -> Result<DockerGuest, RunError> {
        use pallet_image::docker::{Body, Engine};
        use sha2::Digest as _;
        let engine = Engine::new(socket.to_path_buf());
        let h: String = sha2::Sha256::digest(workspace.as_os_str().as_encoded_bytes())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        let tag = format!("{}-{h}", std::process::id());
        // Steps run as the build user, not as the daemon's root: the mounted workspace (and
        // cache) must be theirs, as bubblewrap's user namespace makes them.
        if let Some(uid) = owner {
            for dir in std::iter::once(workspace).chain(cache) {
                for e in walkdir::WalkDir::new(dir).into_iter().flatten() {
                    let _ = std::os::unix::fs::lchown(e.path(), Some(uid.0), Some(uid.1));
                }
            }
        }
        pallet_image::docker::import(socket, rootfs_tar, "melange", &tag)?;
        let image = format!("melange:{tag}");
        // The daemon takes a relative path for a volume name: mounts are absolute.
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let mut binds = vec![format!("{}:/home/build", abs(workspace).display())];
        if let Some(c) = cache.filter(|c| c.is_dir()) {
            binds.push(format!("{}:/var/cache/melange", abs(c).display()));
        }
        let created = engine.ok(
            "POST",
            "/containers/create",
            Body::Json(&serde_json::json!({
                "Image": image,
                "Cmd": ["/bin/sh", "-c", "while :; do sleep 3600; done"],
                "WorkingDir": "/home/build",
                "Labels": {"dev.chainguard.melange": "true", "dev.chainguard.melange.runner": "pallet"},
                "HostConfig": {
                    "Binds": binds,
                    "NetworkMode": "host",
                    "CapDrop": ["ALL"],
                    "CapAdd": caps.iter().map(|c| c.trim_start_matches("CAP_")).collect::<Vec<_>>(),
                    "Tmpfs": {"/tmp": ""},
                    "Init": true,
                }
            })),
        );
        let created = match created {
            Ok(c) => c,
            Err(e) => {
                let _ = engine.call("DELETE", &format!("/images/{image}?force=1"), Body::None);
                return Err(e.into());
            }
        };
        let container = serde_json::from_slice::<serde_json::Value>(&created)
            .ok()
            .and_then(|v| v["Id"].as_str().map(str::to_string))
            .unwrap_or_default();
        let g = DockerGuest {
            socket: socket.to_path_buf(),
            image,
            container,
        };
        engine.ok(
            "POST",
            &format!("/containers/{}/start", g.container),
            Body::None,
        )?;
        Ok(g)
    }
}

impl Drop for DockerGuest {
    fn drop(&mut self) {
        use pallet_image::docker::{Body, Engine};
        let e = Engine::new(self.socket.clone());
        let _ = e.call(
            "DELETE",
            &format!("/containers/{}?force=1", self.container),
            Body::None,
        );
        let _ = e.call(
            "DELETE",
            &format!("/images/{}?force=1", self.image),
            Body::None,
        );
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
            interactive: false,
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
            interactive: false,
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
