//! `pallet worker`: a remote-execution worker for a REAPI scheduler that speaks the Bots API
//! (BuildGrid), and `pallet build-node`, the command its actions run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::Args;

/// How to reach a REAPI server beyond its URL: the flags `pallet build` and `pallet worker`
/// share, spelled as Bazel's `--tls_certificate` and `--remote_header`.
#[derive(Args, Clone, Default)]
pub struct ConnectArgs {
    /// A PEM file of CA certificates trusted, besides the system's, to sign a grpcs://
    /// server's certificate (a private cluster's CA).
    #[arg(long, alias = "tls-certificate", value_name = "FILE")]
    remote_tls_ca: Option<PathBuf>,
    /// gRPC metadata sent with every call (repeatable), e.g.
    /// `authorization=Bearer TOKEN`; `NAME=@env:VAR` takes the value from the variable VAR.
    /// Values are never printed.
    #[arg(long, value_name = "NAME=VALUE")]
    remote_header: Vec<String>,
}

impl ConnectArgs {
    pub fn options(&self) -> anyhow::Result<pallet_reapi::ConnectOptions> {
        Ok(pallet_reapi::ConnectOptions {
            tls_ca: self.remote_tls_ca.clone(),
            headers: pallet_reapi::Headers::parse(&self.remote_header)?,
        })
    }
}

#[derive(Args)]
#[command(
    after_help = "Examples:\n  pallet worker --executor grpc://127.0.0.1:50051\n  pallet worker --executor grpc://build.example:50051 --instance main -j 4\n  pallet worker --executor grpcs://rbe.example:443 --remote-header authorization=@env:RBE_TOKEN\n\nEach leased action runs `pallet build-node` in a fresh folder holding the action's input\nroot; the package build inside it runs in bubblewrap as an unprivileged user, as a local\n`pallet build` does. Packages leave unsigned: the client that asked signs them. Stop the\nworker with Ctrl-C (it tells the scheduler it is leaving); a worker that dies instead keeps\nits lease until the scheduler's keepalive timeout, after which another worker runs it."
)]
pub struct WorkerArgs {
    /// The scheduler: grpc://HOST:PORT (plaintext), grpcs://HOST:PORT (TLS).
    #[arg(long)]
    executor: String,
    #[command(flatten)]
    connect: ConnectArgs,
    /// The scheduler's instance name.
    #[arg(long, default_value = "")]
    instance: String,
    /// Actions at once.
    #[arg(short = 'j', long, default_value_t = 1)]
    jobs: usize,
    /// Where actions run (a fresh folder each, removed afterwards; default: a temporary one).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Cache of downloaded packages (default: $XDG_CACHE_HOME/pallet).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// The bot's name at the scheduler (default: HOSTNAME-PID).
    #[arg(long)]
    name: Option<String>,
    /// Bound of the input blob cache (CACHE/reapi-blobs) in MiB; the least recently used
    /// blobs beyond it are removed after each checkout. Workers may share the folder.
    #[arg(long, default_value_t = 10240, value_name = "MIB")]
    blob_cache_size: u64,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "worker".into())
}

/// The REAPI platform name of this machine's ISA (remote-apis' platform lexicon).
fn isa() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        "aarch64" => "aarch64",
        other => other,
    }
}

pub fn worker_cmd(a: WorkerArgs) -> anyhow::Result<ExitCode> {
    let client =
        pallet_reapi::Client::connect_with(&a.executor, &a.instance, &a.connect.options()?)?;
    let tmp;
    let work_dir = match &a.work_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new().prefix("pallet-worker").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&work_dir)?;
    let cache = a
        .cache_dir
        .clone()
        .unwrap_or_else(crate::melange_build::default_apk_cache);
    let me = std::env::current_exe()?;
    let mut base_env = vec![(
        "PALLET_WORKER_CACHE".to_string(),
        cache.display().to_string(),
    )];
    for k in ["PATH", "HOME", "TMPDIR", "PALLET_HTTP_TIMEOUT"] {
        if let Ok(v) = std::env::var(k) {
            base_env.push((k.to_string(), v));
        }
    }
    let bot_id = a
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", host_name(), std::process::id()));
    let opts = pallet_reapi::worker::Options {
        bot_id: bot_id.clone(),
        properties: vec![
            ("OSFamily".into(), "linux".into()),
            ("ISA".into(), isa().into()),
        ],
        capacity: a.jobs.max(1),
        work_dir,
        programs: [("pallet".to_string(), me)].into(),
        base_env,
        blob_cache: Some(cache.join("reapi-blobs")),
        blob_cache_size: a.blob_cache_size.saturating_mul(1 << 20),
        heartbeat: Duration::from_secs(1),
        log: Arc::new(|l: &str| eprintln!("{l}")),
    };
    let stop = Arc::new(AtomicBool::new(false));
    // Ctrl-C or SIGTERM: leave the scheduler politely, so no lease waits for a keepalive.
    pallet_reapi::worker::stop_on_signals(&client, stop.clone())?;
    eprintln!(
        "worker {bot_id}: serving {} (instance '{}'), {} at once",
        a.executor, a.instance, opts.capacity
    );
    pallet_reapi::worker::run(&client, &opts, &stop)?;
    eprintln!("worker {bot_id}: stopped");
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct BuildNodeArgs {
    /// The node's description (node.json in an action's input root).
    spec: PathBuf,
}

/// What a worker's action runs: one workspace node from its input root, unsigned, into
/// `out/`. Not meant to be run by hand.
pub fn build_node_cmd(a: BuildNodeArgs) -> anyhow::Result<ExitCode> {
    let cache = std::env::var_os("PALLET_WORKER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(crate::melange_build::default_apk_cache);
    match pallet_workspace::remote::build_node(&a.spec, &cache) {
        Ok(files) => {
            for f in files {
                eprintln!("built {}", f.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
