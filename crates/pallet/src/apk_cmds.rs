//! The APK format commands: version, verify, info, keygen, sign, mkpkg, index, sign-index.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use pallet_apk_stream::{ApkError, ReadOptions, Trust, WriteOptions, read_apk, tarw::Kind};
use pallet_apk_types::{Dependency, PackageInfo, version};
use pallet_keys::{Keyring, SigAlg, SigningKey};
use serde_json::json;

use crate::source_date_epoch;

#[derive(Args)]
#[command(after_help = "Examples:\n  pallet version -t 1.2.3-r0 1.2.10-r0\n  pallet version")]
pub struct VersionArgs {
    /// Compare two versions and print <, = or >, like `apk version -t`.
    #[arg(short = 't', long = "test", num_args = 2, value_names = ["A", "B"])]
    test: Option<Vec<String>>,
    /// Check that each version is valid (exit 1 if one is not), like `apk version -c`.
    #[arg(short = 'c', long = "check", num_args = 1..)]
    check: Option<Vec<String>>,
}

pub fn version_cmd(a: VersionArgs) -> anyhow::Result<ExitCode> {
    if let Some(v) = a.test {
        let sym = match version::compare_bits(&v[0], &v[1], false) {
            version::LESS => "<",
            version::GREATER => ">",
            _ => "=",
        };
        println!("{sym}");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(vs) = a.check {
        let mut bad = 0;
        for v in vs {
            if !version::is_valid(&v) {
                println!("{v}");
                bad += 1;
            }
        }
        return Ok(if bad == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    println!("pallet {}", env!("CARGO_PKG_VERSION"));
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
#[command(
    after_help = "Examples:\n  pallet verify --keyring /etc/apk/keys *.apk\n  pallet verify --keyring keys/ repo/x86_64/APKINDEX.tar.gz"
)]
pub struct VerifyArgs {
    /// Folder of trusted public keys (`*.rsa.pub`), or a single key file; may repeat.
    #[arg(long, short = 'k', required = true)]
    keyring: Vec<PathBuf>,
    /// Packages (`.apk`) or indexes (`APKINDEX.tar.gz`).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print one JSON object per file ({"file", "ok", "verdict", "key"}) instead of text.
    #[arg(long)]
    json: bool,
}

fn is_index(p: &Path) -> bool {
    let n = p
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    n.ends_with(".tar.gz") && !n.ends_with(".apk")
}

/// The one-line verdict `verify` prints for an error, worded like `apk verify`.
fn verdict(e: &ApkError) -> String {
    match e {
        ApkError::Untrusted { .. } => "UNTRUSTED".into(),
        ApkError::BadSignature { key } => format!("BAD signature (key {key})"),
        ApkError::BadDatahash => "BAD signature: data does not match datahash".into(),
        ApkError::BadChecksum { path } => format!("BAD checksum: {path}"),
        other => other.to_string(),
    }
}

pub fn verify_cmd(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let ring = Keyring::from_paths(a.keyring);
    let mut failed = 0usize;
    // Files verify independently: use every core, then report in the order given.
    use rayon::prelude::*;
    let results: Vec<Result<Trust, ApkError>> = a
        .files
        .par_iter()
        .map(|f| {
            if is_index(f) {
                pallet_index::read_index(f, Some(&ring))
                    .map(|i| i.trust)
                    .map_err(|e| match e {
                        pallet_index::IndexError::Apk { source, .. } => source,
                        other => ApkError::Format(other.to_string()),
                    })
            } else {
                File::open(f).map_err(ApkError::from).and_then(|file| {
                    let opts = ReadOptions {
                        keyring: Some(&ring),
                        ..ReadOptions::default()
                    };
                    read_apk(file, &opts, |_, _| Ok(())).map(|m| m.trust)
                })
            }
        })
        .collect();
    for (f, res) in a.files.iter().zip(results) {
        let (ok, text, key) = match &res {
            Ok(Trust::Verified { key, .. }) => (true, "OK".to_string(), Some(key.clone())),
            Ok(Trust::NotChecked) => (true, "OK".to_string(), None),
            Err(e) => (false, verdict(e), None),
        };
        if !ok {
            failed += 1;
        }
        if a.json {
            println!(
                "{}",
                json!({"file": f, "ok": ok, "verdict": text, "key": key})
            );
        } else {
            println!("{}: {text}", f.display());
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(failed.min(99) as u8)
    })
}

#[derive(Args)]
#[command(
    after_help = "Examples:\n  pallet info busybox-1.36.1-r15.apk\n  pallet info --json busybox-1.36.1-r15.apk | jq .files"
)]
pub struct InfoArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Verify against these keys as well (folder or file; may repeat).
    #[arg(long, short = 'k')]
    keyring: Vec<PathBuf>,
    file: PathBuf,
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::File => "file",
        Kind::HardLink => "hardlink",
        Kind::Symlink => "symlink",
        Kind::Char => "char",
        Kind::Block => "block",
        Kind::Dir => "dir",
        Kind::Fifo => "fifo",
    }
}

pub fn info_cmd(a: InfoArgs) -> anyhow::Result<ExitCode> {
    let ring = (!a.keyring.is_empty()).then(|| Keyring::from_paths(a.keyring.clone()));
    let f = File::open(&a.file).with_context(|| format!("cannot open {}", a.file.display()))?;
    let mut files = Vec::new();
    let opts = ReadOptions {
        keyring: ring.as_ref(),
        ..ReadOptions::default()
    };
    let meta = read_apk(f, &opts, |e, _| {
        files.push(e.clone());
        Ok(())
    })
    .with_context(|| format!("{}", a.file.display()))?;
    let i = &meta.info;
    let deps = |d: &[Dependency]| d.iter().map(ToString::to_string).collect::<Vec<_>>();
    if a.json {
        let v = json!({
            "name": i.name, "version": i.version, "arch": i.arch, "description": i.description,
            "url": i.url, "license": i.license, "origin": i.origin, "maintainer": i.maintainer,
            "commit": i.commit, "build_time": i.build_time, "installed_size": i.installed_size,
            "file_size": meta.file_size, "checksum": meta.identity, "datahash": i.datahash,
            "depends": deps(&i.depends), "provides": deps(&i.provides),
            "install_if": deps(&i.install_if), "replaces": deps(&i.replaces),
            "provider_priority": i.provider_priority, "triggers": i.triggers,
            "extra": i.extra.iter().map(|(k, v)| json!({k: v})).collect::<Vec<_>>(),
            "scripts": meta.scripts.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            "signed_by": match &meta.trust { Trust::Verified { key, .. } => Some(key), _ => None },
            "files": files.iter().map(|e| json!({
                "path": e.path, "type": kind_name(e.kind), "mode": format!("{:04o}", e.mode),
                "uid": e.uid, "gid": e.gid, "size": e.size,
                "link": (!e.link.is_empty()).then_some(&e.link),
                "sha1": e.sha1.map(hex_encode),
            })).collect::<Vec<_>>(),
        });
        crate::emit(&(serde_json::to_string_pretty(&v)? + "\n"))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}-{} ({})", i.name, i.version, i.arch);
    println!("description: {}", i.description);
    println!("url: {}", i.url);
    println!("license: {}", i.license);
    if let Some(o) = &i.origin {
        println!("origin: {o}");
    }
    println!("installed size: {}", i.installed_size);
    println!("checksum: {}", meta.identity);
    for (label, d) in [
        ("depends", &i.depends),
        ("provides", &i.provides),
        ("install_if", &i.install_if),
        ("replaces", &i.replaces),
    ] {
        if !d.is_empty() {
            println!("{label}: {}", deps(d).join(" "));
        }
    }
    if !meta.scripts.is_empty() {
        let names: Vec<&str> = meta.scripts.iter().map(|(n, _)| n.as_str()).collect();
        println!("scripts: {}", names.join(" "));
    }
    println!("files:");
    for e in &files {
        match e.kind {
            Kind::Symlink => println!("  {} -> {}", e.path, e.link),
            Kind::Dir => println!("  {}/", e.path),
            _ => println!("  {}", e.path),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn hex_encode(b: [u8; 20]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Args)]
#[command(
    after_help = "Examples:\n  pallet keygen my-repo.rsa        # writes my-repo.rsa and my-repo.rsa.pub\n  pallet keygen --bits 2048 test.rsa"
)]
pub struct KeygenArgs {
    /// Private key file to write; the public key goes to NAME.pub.
    #[arg(default_value = "melange.rsa")]
    name: PathBuf,
    /// Key size in bits.
    #[arg(long, alias = "key-size", default_value_t = 4096)]
    bits: u32,
}

pub fn keygen_cmd(a: KeygenArgs) -> anyhow::Result<ExitCode> {
    if ![2048, 3072, 4096, 8192].contains(&a.bits) {
        bail!("--bits must be 2048, 3072, 4096 or 8192 (got {})", a.bits);
    }
    pallet_keys::generate(&a.name, a.bits)
        .with_context(|| format!("generating {}", a.name.display()))?;
    eprintln!(
        "wrote private key {} and public key {}.pub",
        a.name.display(),
        a.name.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
#[command(after_help = "Examples:\n  pallet sign --signing-key my.rsa out/x86_64/*.apk")]
pub struct SignArgs {
    /// Private key (PKCS#1 or PKCS#8 PEM). Signatures name it `<basename>.pub`.
    #[arg(long, visible_alias = "key")]
    signing_key: PathBuf,
    /// Sign with SHA-1 (`.SIGN.RSA.`) instead of SHA-256, for apk-tools older than 2.12.
    #[arg(long)]
    sha1: bool,
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

fn load_key(p: &Path) -> anyhow::Result<SigningKey> {
    SigningKey::load(p).with_context(|| {
        format!(
            "cannot use signing key {} (create one with `pallet keygen {}`)",
            p.display(),
            p.display()
        )
    })
}

fn sig_alg(sha1: bool) -> SigAlg {
    if sha1 {
        SigAlg::RsaSha1
    } else {
        SigAlg::RsaSha256
    }
}

pub fn sign_cmd(a: SignArgs) -> anyhow::Result<ExitCode> {
    let key = load_key(&a.signing_key)?;
    for f in &a.files {
        pallet_apk_stream::resign_apk(f, &key, sig_alg(a.sha1), Some(source_date_epoch()?))
            .with_context(|| format!("signing {}", f.display()))?;
        eprintln!("signed {}", f.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
#[command(
    after_help = "Examples:\n  pallet mkpkg --info name=hello --info version=1.0-r0 --info arch=x86_64 \\\n      --info depend=musl --files ./root -o hello-1.0-r0.apk --signing-key my.rsa"
)]
pub struct MkpkgArgs {
    /// Metadata as KEY=VALUE with `.PKGINFO` keys (name/pkgname, version/pkgver, arch,
    /// description/pkgdesc, url, license, origin, maintainer, depend, provides, replaces,
    /// install_if, provider_priority, …); list keys may repeat.
    #[arg(long = "info", short = 'I', value_name = "KEY=VALUE")]
    info: Vec<String>,
    /// Folder whose contents become the package's files.
    #[arg(long, short = 'F')]
    files: PathBuf,
    /// Output file.
    #[arg(long, short = 'o')]
    output: PathBuf,
    /// Sign with this private key.
    #[arg(long)]
    signing_key: Option<PathBuf>,
    /// Install scripts as TYPE=FILE (e.g. post-install=./setup.sh).
    #[arg(long, value_name = "TYPE=FILE")]
    script: Vec<String>,
}

pub fn mkpkg_cmd(a: MkpkgArgs) -> anyhow::Result<ExitCode> {
    let mut lines = String::new();
    for kv in &a.info {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--info '{kv}' is not KEY=VALUE"))?;
        let key = match k {
            "name" => "pkgname",
            "version" => "pkgver",
            "description" => "pkgdesc",
            "depends" => "depend",
            other => other,
        };
        lines.push_str(&format!("{key} = {v}\n"));
    }
    let mut info = PackageInfo::parse_pkginfo(&lines)
        .map_err(|e| anyhow::anyhow!("--info: {e} (give --info name=NAME)"))?;
    if info.version.is_empty() {
        bail!("--info version=VERSION is required (e.g. 1.0-r0)");
    }
    if info.arch.is_empty() {
        info.arch = crate::host_arch().to_string();
    }
    let epoch = source_date_epoch()?;
    if info.build_time == 0 {
        info.build_time = epoch;
    }
    if !a.files.is_dir() {
        bail!("--files {}: not a folder", a.files.display());
    }
    let mut scripts = Vec::new();
    for s in &a.script {
        let (t, f) = s
            .split_once('=')
            .with_context(|| format!("--script '{s}' is not TYPE=FILE"))?;
        let data = std::fs::read(f).with_context(|| format!("reading script {f}"))?;
        scripts.push((format!(".{}", t.trim_start_matches('.')), data));
    }
    let key = a.signing_key.as_deref().map(load_key).transpose()?;
    let opts = WriteOptions {
        source_date_epoch: epoch,
        signing_key: key.as_ref(),
        ..WriteOptions::default()
    };
    let w = pallet_apk_stream::write_apk(&a.files, &info, &scripts, &opts, &a.output)
        .with_context(|| format!("writing {}", a.output.display()))?;
    eprintln!(
        "wrote {} ({} bytes, {})",
        a.output.display(),
        w.info.file_size,
        w.info.nv()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
#[command(
    after_help = "Examples:\n  pallet index -o APKINDEX.tar.gz --signing-key my.rsa *.apk\n  pallet index --merge -o repo/x86_64/APKINDEX.tar.gz new-1.0-r0.apk"
)]
pub struct IndexArgs {
    /// Output index file.
    #[arg(long, short = 'o', default_value = "APKINDEX.tar.gz")]
    output: PathBuf,
    /// Sign the index with this private key.
    #[arg(long)]
    signing_key: Option<PathBuf>,
    /// Repository description (the index's DESCRIPTION entry).
    #[arg(long, short = 'd')]
    description: Option<String>,
    /// Keep the records already in the output index (new packages replace same name-version).
    #[arg(long, short = 'm')]
    merge: bool,
    /// Verify each package's signature against these keys before indexing it.
    #[arg(long, short = 'k')]
    keyring: Vec<PathBuf>,
    /// List `noarch` packages under this architecture. By default, when the index or the
    /// packages sit in a folder named after an architecture (`repo/x86_64/`), that one, as
    /// Alpine's repositories do: apk finds packages under `$repo/$arch/`.
    #[arg(long)]
    rewrite_arch: Option<String>,
    /// Index only packages of this architecture (and noarch ones); others are skipped with a
    /// line each, as `melange index -a`.
    #[arg(long)]
    arch: Option<String>,
    /// An existing index whose records are kept (new packages replace the same name-version),
    /// as `melange index -s`.
    #[arg(long)]
    source: Option<PathBuf>,
    /// Print the record count as JSON.
    #[arg(long)]
    json: bool,
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

const KNOWN_ARCHS: &[&str] = &[
    "x86_64",
    "aarch64",
    "armv7",
    "armhf",
    "x86",
    "ppc64le",
    "s390x",
    "riscv64",
    "loongarch64",
];

fn folder_arch(p: &Path) -> Option<String> {
    let abs = std::path::absolute(p).ok()?;
    let name = abs.parent()?.file_name()?.to_str()?;
    KNOWN_ARCHS.contains(&name).then(|| name.to_string())
}

pub fn index_cmd(a: IndexArgs) -> anyhow::Result<ExitCode> {
    let ring = (!a.keyring.is_empty()).then(|| Keyring::from_paths(a.keyring.clone()));
    let mut records = pallet_index::records_for(&a.files, ring.as_ref())?;
    if let Some(want) = &a.arch {
        records.retain(|r| {
            let keep = r.arch == *want || r.arch == "noarch";
            if !keep {
                eprintln!("skipping {}: its arch is {}, not {want}", r.nv(), r.arch);
            }
            keep
        });
    }
    let arch = a
        .rewrite_arch
        .clone()
        .or_else(|| folder_arch(&a.output))
        .or_else(|| a.files.first().and_then(|f| folder_arch(f)));
    if let Some(arch) = arch.filter(|a| a != "noarch") {
        for r in records.iter_mut().filter(|r| r.arch == "noarch") {
            r.arch = arch.clone();
        }
    }
    let mut description = a.description.clone();
    let existing = a
        .source
        .clone()
        .or_else(|| (a.merge && a.output.exists()).then(|| a.output.clone()));
    if let Some(src) = existing {
        let old = pallet_index::read_index(&src, None)
            .with_context(|| format!("reading the existing index {}", src.display()))?;
        description = description.or(old.description);
        records = pallet_index::merge(old.packages, records);
    }
    warn_unresolved(&records);
    let key = a.signing_key.as_deref().map(load_key).transpose()?;
    pallet_index::write_index(
        &records,
        description.as_deref(),
        key.as_ref(),
        source_date_epoch()?,
        &a.output,
    )?;
    if a.json {
        println!("{}", json!({"index": a.output, "packages": records.len()}));
    } else {
        eprintln!(
            "Index has {} packages: {}",
            records.len(),
            a.output.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Like `apk index`, warn about dependencies nothing in the index provides.
fn warn_unresolved(records: &[PackageInfo]) {
    let mut provided: BTreeMap<&str, ()> = BTreeMap::new();
    for r in records {
        provided.insert(&r.name, ());
        for p in &r.provides {
            provided.insert(&p.name, ());
        }
    }
    let mut missing: Vec<String> = records
        .iter()
        .flat_map(|r| r.depends.iter())
        .filter(|d| !d.conflict && !provided.contains_key(d.name.as_str()))
        .map(|d| d.name.clone())
        .collect();
    missing.sort();
    missing.dedup();
    if !missing.is_empty() {
        eprintln!(
            "WARNING: No provider for the dependencies: {}",
            missing.join(" ")
        );
    }
}

#[derive(Args)]
#[command(
    after_help = "Examples:\n  pallet sign-index --signing-key my.rsa repo/x86_64/APKINDEX.tar.gz"
)]
pub struct SignIndexArgs {
    #[arg(long, visible_alias = "key")]
    signing_key: PathBuf,
    index: PathBuf,
}

pub fn sign_index_cmd(a: SignIndexArgs) -> anyhow::Result<ExitCode> {
    let key = load_key(&a.signing_key)?;
    pallet_index::sign_index(&a.index, &key, source_date_epoch()?)?;
    eprintln!("signed {}", a.index.display());
    Ok(ExitCode::SUCCESS)
}
