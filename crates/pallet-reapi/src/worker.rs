//! A worker for BuildGrid's Bots API: take leases, run each leased Action's Command in a fresh
//! folder holding its input root, upload the outputs, and hand the ActionResult back in the
//! lease (reapi.md §2: `COMPLETED`, an OK status, and `Any(ActionResult)`; a status other than
//! OK only when the action could not be run to completion).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prost::Message as _;

use crate::bots::{BotStatus, Bots, LeaseState};
use crate::proto::{Action, ActionResult, Command, Digest, ExecutedActionMetadata, OutputFile};
use crate::tree::Blobs;
use crate::{Client, Error, digest};

const ACTION: &str = "build.bazel.remote.execution.v2.Action";
const ACTION_RESULT: &str = "build.bazel.remote.execution.v2.ActionResult";
const DIGEST: &str = "build.bazel.remote.execution.v2.Digest";

/// How a worker runs.
pub struct Options {
    /// Unique among the scheduler's bots.
    pub bot_id: String,
    /// The primary device's properties (`OSFamily`, `ISA`): actions are matched on them.
    pub properties: Vec<(String, String)>,
    /// Leases held at once.
    pub capacity: usize,
    /// Each action runs in a fresh folder under here, removed afterwards.
    pub work_dir: PathBuf,
    /// `arguments[0]` names that stand for a program of this machine (`pallet` → this
    /// binary), so that an action need not know where it is installed.
    pub programs: BTreeMap<String, PathBuf>,
    /// Variables every command gets unless it sets them itself (`PATH`, caches).
    pub base_env: Vec<(String, String)>,
    /// Input blobs kept between actions, by digest, so that an environment shared by many
    /// actions is downloaded once.
    pub blob_cache: Option<PathBuf>,
    /// The blob cache's bound in bytes: after each checkout the least recently used blobs
    /// beyond it are removed (see [`crate::tree::evict`]).
    pub blob_cache_size: u64,
    /// How often a worker with running actions reports that it is alive.
    pub heartbeat: Duration,
    /// Progress lines.
    pub log: Arc<dyn Fn(&str) + Send + Sync>,
}

struct Running {
    handle: JoinHandle<LeaseOutcome>,
    cancel: Arc<AtomicBool>,
    label: String,
}

/// What a lease ends with: a result to report, or a status saying why there is none.
struct LeaseOutcome {
    result: Option<ActionResult>,
    code: i32,
    message: String,
}

/// gRPC codes as the Bots API's `google.rpc.Status` carries them.
const OK: i32 = 0;
const FAILED_PRECONDITION: i32 = 9;
const INTERNAL: i32 = 13;
const DEADLINE_EXCEEDED: i32 = 4;
const UNAVAILABLE: i32 = 14;

/// Serve leases until `stop` is set (then say goodbye with `BOT_TERMINATING`) or the server
/// cannot be reached for a minute.
pub fn run(client: &Client, opts: &Options, stop: &AtomicBool) -> Result<(), Error> {
    let mut bots = Bots::new(client);
    let props: Vec<(&str, &str)> = opts
        .properties
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let poll = Duration::from_secs(10);
    let mut session = bots.create(&opts.bot_id, &props, opts.capacity, poll)?;
    (opts.log)(&format!("worker {}: session {}", opts.bot_id, session.name));
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut failing_since: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            for r in running.values() {
                r.cancel.store(true, Ordering::Relaxed);
            }
            // Running leases go back to the scheduler as UNAVAILABLE, which it retries on
            // another bot (a CANCELLED lease would close the session instead).
            for l in &mut session.leases {
                if running.contains_key(&l.id) {
                    l.state = LeaseState::Completed as i32;
                    let mut st = l.status.take().unwrap_or_default();
                    st.code = UNAVAILABLE;
                    st.message = format!("worker {} is stopping", opts.bot_id);
                    l.status = Some(st);
                    l.result = None;
                }
            }
            session.status = BotStatus::BotTerminating as i32;
            let _ = bots.update(&session, Duration::from_secs(5), None);
            return Ok(());
        }
        // Leases the server no longer lists were cancelled (or given to another bot).
        let listed: Vec<String> = session.leases.iter().map(|l| l.id.clone()).collect();
        running.retain(|id, r| {
            let keep = listed.contains(id);
            if !keep {
                (opts.log)(&format!("lease {id} ({}) withdrawn: stopping it", r.label));
                r.cancel.store(true, Ordering::Relaxed);
            }
            keep
        });
        for l in &session.leases {
            if l.state != LeaseState::Active as i32 && l.state != LeaseState::Pending as i32 {
                continue;
            }
            if running.contains_key(&l.id) {
                continue;
            }
            let payload = l.payload.clone().unwrap_or_default();
            let cancel = Arc::new(AtomicBool::new(false));
            let (c, o, cn, id) = (
                client.clone(),
                opts_for_thread(opts),
                cancel.clone(),
                l.id.clone(),
            );
            let label = format!("lease {}", l.id);
            (opts.log)(&format!("{label}: started"));
            let handle = std::thread::spawn(move || run_lease(&c, &o, &payload, &cn, &id));
            running.insert(
                l.id.clone(),
                Running {
                    handle,
                    cancel,
                    label,
                },
            );
        }
        // Give running actions a moment to finish, so a result is reported without waiting
        // for the next heartbeat.
        let until = Instant::now() + opts.heartbeat;
        while !running.is_empty()
            && !running.values().any(|r| r.handle.is_finished())
            && Instant::now() < until
            && !stop.load(Ordering::Relaxed)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let finished: Vec<String> = running
            .iter()
            .filter(|(_, r)| r.handle.is_finished())
            .map(|(id, _)| id.clone())
            .collect();
        let mut outcomes: HashMap<String, LeaseOutcome> = HashMap::new();
        for id in &finished {
            let r = running.remove(id).expect("listed");
            let o = r.handle.join().unwrap_or_else(|_| LeaseOutcome {
                result: None,
                code: INTERNAL,
                message: "the worker thread panicked".into(),
            });
            (opts.log)(&format!(
                "{}: done ({})",
                r.label,
                match &o.result {
                    Some(res) => format!("exit code {}", res.exit_code),
                    None => o.message.clone(),
                }
            ));
            outcomes.insert(id.clone(), o);
        }
        let mut out = session.clone();
        out.status = BotStatus::Ok as i32;
        out.leases
            .retain(|l| running.contains_key(&l.id) || outcomes.contains_key(&l.id));
        for l in &mut out.leases {
            if let Some(o) = outcomes.remove(&l.id) {
                l.state = LeaseState::Completed as i32;
                let mut st = l.status.take().unwrap_or_default();
                st.code = o.code;
                st.message = o.message;
                l.status = Some(st);
                l.result = o.result.map(|r| crate::any(ACTION_RESULT, &r));
            } else {
                l.state = LeaseState::Active as i32;
            }
        }
        // With nothing running the server may hold the call while it waits for work.
        let deadline = if running.is_empty() {
            poll
        } else {
            Duration::from_secs(30)
        };
        match bots.update(&out, deadline, Some(stop)) {
            Ok(s) => {
                session = s;
                failing_since = None;
            }
            Err(e)
                if e.code() == Some(tonic::Code::NotFound)
                    || e.code() == Some(tonic::Code::InvalidArgument) =>
            {
                // The server closed the session (it expired): open a new one; what was running
                // has been given back to the queue.
                (opts.log)(&format!(
                    "session closed by the server ({e}); opening a new one"
                ));
                for r in running.values() {
                    r.cancel.store(true, Ordering::Relaxed);
                }
                running.clear();
                session = bots.create(&opts.bot_id, &props, opts.capacity, poll)?;
            }
            Err(_) if stop.load(Ordering::Relaxed) => {
                // Abandoned to leave: report what finished in the goodbye below.
                session = out;
            }
            Err(e) if e.is_transient() => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(60) {
                    return Err(e);
                }
                (opts.log)(&format!("{e}; trying again"));
                // Keep the outcomes: report them on the next call.
                session = out;
                for l in &mut session.leases {
                    if l.state == LeaseState::Completed as i32 {
                        l.state = LeaseState::Active as i32;
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The parts of [`Options`] a lease's thread needs.
fn opts_for_thread(o: &Options) -> Arc<ThreadOpts> {
    Arc::new(ThreadOpts {
        bot_id: o.bot_id.clone(),
        work_dir: o.work_dir.clone(),
        programs: o.programs.clone(),
        base_env: o.base_env.clone(),
        blob_cache: o.blob_cache.clone(),
        blob_cache_size: o.blob_cache_size,
    })
}

struct ThreadOpts {
    bot_id: String,
    work_dir: PathBuf,
    programs: BTreeMap<String, PathBuf>,
    base_env: Vec<(String, String)>,
    blob_cache: Option<PathBuf>,
    blob_cache_size: u64,
}

fn run_lease(
    client: &Client,
    o: &ThreadOpts,
    payload: &prost_types::Any,
    cancel: &AtomicBool,
    lease: &str,
) -> LeaseOutcome {
    let fail = |code: i32, message: String| LeaseOutcome {
        result: None,
        code,
        message,
    };
    let action = match decode_payload(client, payload) {
        Ok(a) => a,
        Err(e) => return fail(FAILED_PRECONDITION, e.to_string()),
    };
    let dir = o.work_dir.join(format!("action-{lease}"));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return fail(INTERNAL, format!("creating {}: {e}", dir.display()));
    }
    let r = execute(client, o, &action, &dir, cancel);
    let _ = std::fs::remove_dir_all(&dir);
    match r {
        Ok(result) => LeaseOutcome {
            result: Some(result),
            code: OK,
            message: String::new(),
        },
        Err((code, message)) => fail(code, message),
    }
}

/// The leased Action: BuildGrid sends the Action itself, or only its digest when it did not
/// store the Action.
fn decode_payload(client: &Client, any: &prost_types::Any) -> Result<Action, Error> {
    let bad = |message: String| Error::Protocol {
        server: client.server().to_string(),
        call: "UpdateBotSession",
        message,
    };
    if any.type_url.ends_with(ACTION) {
        return Action::decode(any.value.as_slice())
            .map_err(|e| bad(format!("lease payload: {e}")));
    }
    if any.type_url.ends_with(DIGEST) {
        let d =
            Digest::decode(any.value.as_slice()).map_err(|e| bad(format!("lease payload: {e}")))?;
        let b = client.read_blob(&d)?;
        return Action::decode(b.as_slice())
            .map_err(|e| bad(format!("action {}: {e}", digest::show(&d))));
    }
    Err(bad(format!("a lease payload of type {}", any.type_url)))
}

fn execute(
    client: &Client,
    o: &ThreadOpts,
    action: &Action,
    dir: &Path,
    cancel: &AtomicBool,
) -> Result<ActionResult, (i32, String)> {
    let fetch_started = std::time::SystemTime::now();
    // A missing input will not appear by trying again: FAILED_PRECONDITION ends the job; any
    // other trouble is INTERNAL, which BuildGrid retries on another bot.
    let classify = |e: Error| {
        let code = match e.code() {
            Some(tonic::Code::NotFound) => FAILED_PRECONDITION,
            _ => INTERNAL,
        };
        (code, e.to_string())
    };
    let cmd_digest = action.command_digest.clone().unwrap_or_else(digest::empty);
    let command = client
        .read_blob(&cmd_digest)
        .map_err(classify)
        .and_then(|b| {
            Command::decode(b.as_slice())
                .map_err(|e| (FAILED_PRECONDITION, format!("command: {e}")))
        })?;
    let root = dir.join("root");
    std::fs::create_dir(&root).map_err(|e| (INTERNAL, e.to_string()))?;
    let input_root = action
        .input_root_digest
        .clone()
        .unwrap_or_else(digest::empty);
    crate::tree::checkout_with_cache(client, &input_root, &root, o.blob_cache.as_deref())
        .map_err(classify)?;
    // After the checkout, which has its copies: what is evicted now is only fetched again.
    // A cache that cannot be trimmed is no reason to fail the action.
    if let Some(c) = &o.blob_cache {
        let _ = crate::tree::evict(c, o.blob_cache_size);
    }
    let wd = if command.working_directory.is_empty() {
        root.clone()
    } else {
        crate::tree::segments(&command.working_directory).map_err(classify)?;
        root.join(&command.working_directory)
    };
    // `output_paths` (REAPI 2.1) only: pallet's clients never send the deprecated lists.
    let outputs: Vec<String> = command.output_paths.clone();
    for p in &outputs {
        crate::tree::segments(p).map_err(classify)?;
        if let Some(parent) = wd.join(p).parent() {
            std::fs::create_dir_all(parent).map_err(|e| (INTERNAL, e.to_string()))?;
        }
    }
    let Some(arg0) = command.arguments.first() else {
        return Err((FAILED_PRECONDITION, "a command without arguments".into()));
    };
    let program = o
        .programs
        .get(arg0)
        .cloned()
        .unwrap_or_else(|| PathBuf::from(arg0));
    let stdout_path = dir.join("stdout");
    let stderr_path = dir.join("stderr");
    let file = |p: &Path| {
        std::fs::File::create(p).map_err(|e| (INTERNAL, format!("{}: {e}", p.display())))
    };
    let mut cmd = std::process::Command::new(&program);
    cmd.args(&command.arguments[1..])
        .current_dir(&wd)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(file(&stdout_path)?)
        .stderr(file(&stderr_path)?);
    for (k, v) in &o.base_env {
        cmd.env(k, v);
    }
    for v in &command.environment_variables {
        cmd.env(&v.name, &v.value);
    }
    let exec_started = std::time::SystemTime::now();
    let mut child = cmd.spawn().map_err(|e| {
        (
            FAILED_PRECONDITION,
            format!("starting {}: {e}", program.display()),
        )
    })?;
    let limit = action
        .timeout
        .as_ref()
        .filter(|t| t.seconds > 0)
        .map(|t| Duration::from_secs(u64::try_from(t.seconds).unwrap_or(u64::MAX)));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) => return Err((INTERNAL, e.to_string())),
        }
        if cancel.load(Ordering::Relaxed) {
            let _ = child.kill();
            let _ = child.wait();
            return Err((INTERNAL, "cancelled".into()));
        }
        if limit.is_some_and(|l| started.elapsed() > l) {
            let _ = child.kill();
            let _ = child.wait();
            return Err((
                DEADLINE_EXCEEDED,
                format!(
                    "the action ran over its {} s limit",
                    limit.unwrap_or_default().as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let exec_done = std::time::SystemTime::now();
    let mut blobs = Blobs::new();
    let mut files = vec![];
    for p in &outputs {
        let at = wd.join(p);
        let Ok(meta) = std::fs::symlink_metadata(&at) else {
            continue; // An output the command did not make is simply not in the result.
        };
        if !meta.is_file() {
            return Err((
                FAILED_PRECONDITION,
                format!("output {p} is not a regular file (only file outputs are supported)"),
            ));
        }
        use std::os::unix::fs::PermissionsExt as _;
        let d = blobs.add_file(&at).map_err(classify)?;
        files.push(OutputFile {
            path: p.clone(),
            digest: Some(d),
            is_executable: meta.permissions().mode() & 0o111 != 0,
            ..Default::default()
        });
    }
    let stdout_digest = blobs.add_file(&stdout_path).map_err(classify)?;
    let stderr_digest = blobs.add_file(&stderr_path).map_err(classify)?;
    client.upload(&blobs).map_err(classify)?;
    let ts = |t: std::time::SystemTime| {
        let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bazel_remote_apis::google::protobuf::Timestamp {
            seconds: i64::try_from(d.as_secs()).unwrap_or(0),
            nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        }
    };
    Ok(ActionResult {
        output_files: files,
        exit_code: status.code().unwrap_or(128 + 9),
        stdout_digest: Some(stdout_digest),
        stderr_digest: Some(stderr_digest),
        execution_metadata: Some(ExecutedActionMetadata {
            worker: o.bot_id.clone(),
            input_fetch_start_timestamp: Some(ts(fetch_started)),
            execution_start_timestamp: Some(ts(exec_started)),
            execution_completed_timestamp: Some(ts(exec_done)),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Set `stop` when SIGINT or SIGTERM arrives (watched on the client's runtime).
pub fn stop_on_signals(client: &Client, stop: Arc<AtomicBool>) -> Result<(), Error> {
    use tokio::signal::unix::{SignalKind, signal};
    for kind in [SignalKind::interrupt(), SignalKind::terminate()] {
        let stop = stop.clone();
        let mut s = client
            .block_on(async { signal(kind) })
            .map_err(Error::Runtime)?;
        client.spawn(async move {
            s.recv().await;
            stop.store(true, Ordering::Relaxed);
        });
    }
    Ok(())
}
