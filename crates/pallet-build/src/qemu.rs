//! melange's qemu runner: the build in a microVM of its own. The guest is the build
//! environment's root packed as an initramfs with the workspace at `/home/build`, booted by the
//! kernel the user names (`QEMU_KERNEL_IMAGE`, as melange reads it), with KVM when the guest's
//! architecture is the host's and `/dev/kvm` opens, full-system emulation (TCG) otherwise.
//!
//! Unlike melange there is no SSH server in the guest: pallet's own init (a POSIX shell script
//! that needs only busybox-style tools of the environment) talks to the host over a
//! virtio-serial port on qemu's standard input and output. Each step goes down as a framed
//! script and comes back as its output followed by a marker line with the exit status. When
//! the steps are done the guest writes `/home/build` as a tar onto a raw virtio disk, which the
//! host unpacks into the workspace (refusing anything that would leave it), so what the
//! packager reads is exactly what the steps left, as with the other runners.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use pallet_image::config::Arch;

/// What the qemu runner is given from the outside (melange's environment variables).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QemuConfig {
    /// `QEMU_KERNEL_IMAGE`; melange's default is `/boot/vmlinuz`.
    pub kernel: Option<PathBuf>,
    /// `QEMU_KERNEL_IMAGE_AARCH64` and the like: a kernel per architecture, for builds of
    /// several arches in one run (pallet's; melange has one kernel per run).
    pub arch_kernels: BTreeMap<String, PathBuf>,
    /// `PALLET_QEMU_KERNEL_DIR` (default [`KERNEL_DIR`]): unpacked kernel packages, one folder
    /// per arch (`x86_64/boot/vmlinuz-V` with `x86_64/lib/modules/V`), looked in when no
    /// variable names a kernel.
    pub kernel_dir: Option<PathBuf>,
    /// `QEMU_KERNEL_MODULES`: the kernel's `lib/modules/VERSION` folder. When unset, the folder
    /// beside an unpacked Debian kernel (`…/boot/vmlinuz-V` → `…/lib/modules/V`) is used.
    pub modules: Option<PathBuf>,
    /// Virtual CPUs (`--cpu`, `resources.cpu`); melange's default is 2.
    pub cpus: Option<u32>,
    /// Memory in MiB (`--memory`, `resources.memory`); default min(4 GiB, 85% of free).
    pub memory_mib: Option<u64>,
    /// `--cpumodel`: qemu's `-cpu` instead of `host` (KVM) or the arch's emulated model.
    pub cpu_model: Option<String>,
    /// `--disk`: the workspace disk's size in MiB (default: memory + 512 MiB).
    pub disk_mib: Option<u64>,
    /// `PALLET_QEMU_ACCEL=tcg|kvm` forces an accelerator.
    pub accel: Option<String>,
    /// `QEMU_KERNEL_CMDLINE`: appended to the kernel's command line.
    pub cmdline: Option<String>,
}

impl QemuConfig {
    /// The configuration from melange's variables, read through `get` (the CLI passes the
    /// process environment).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> QemuConfig {
        let nonempty = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        QemuConfig {
            kernel: nonempty("QEMU_KERNEL_IMAGE").map(PathBuf::from),
            kernel_dir: nonempty("PALLET_QEMU_KERNEL_DIR").map(PathBuf::from),
            arch_kernels: Arch::ALL
                .iter()
                .filter_map(|a| {
                    let k = format!("QEMU_KERNEL_IMAGE_{}", a.apk().to_ascii_uppercase());
                    Some((a.apk().to_string(), PathBuf::from(nonempty(&k)?)))
                })
                .collect(),
            modules: nonempty("QEMU_KERNEL_MODULES").map(PathBuf::from),
            cpus: None,
            memory_mib: None,
            cpu_model: None,
            disk_mib: None,
            accel: nonempty("PALLET_QEMU_ACCEL"),
            cmdline: nonempty("QEMU_KERNEL_CMDLINE"),
        }
    }
}

impl QemuConfig {
    /// CPUs and memory from `package.resources` where the command line gave none.
    pub fn size_from(&mut self, r: &crate::compile::Resources) -> Result<(), String> {
        if self.cpus.is_none() {
            self.cpus = r.cpu.as_deref().map(parse_cpus).transpose()?;
        }
        if self.memory_mib.is_none() {
            self.memory_mib = r.memory.as_deref().map(parse_mib).transpose()?;
        }
        Ok(())
    }
}

/// A CPU count as Kubernetes writes it (`2`, `1.5`, `500m`), rounded up to whole CPUs.
pub fn parse_cpus(v: &str) -> Result<u32, String> {
    let v = v.trim();
    let bad = || format!("cpu '{v}' is not a CPU count (2, 1.5 or 500m)");
    let cpus = match v.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().map_err(|_| bad())? / 1000.0,
        None => v.parse::<f64>().map_err(|_| bad())?,
    };
    if !(cpus.is_finite() && cpus > 0.0 && cpus <= 1024.0) {
        return Err(bad());
    }
    Ok(cpus.ceil() as u32)
}

/// A memory size as Kubernetes writes it (`4Gi`, `512Mi`, `8G`, bytes), in MiB, rounded up.
pub fn parse_mib(v: &str) -> Result<u64, String> {
    let v = v.trim();
    let bad = || format!("memory '{v}' is not a size (4Gi, 512Mi, 8G or bytes)");
    let split = v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = n * mult;
    if !(bytes.is_finite() && bytes > 0.0 && bytes < 1e15) {
        return Err(bad());
    }
    Ok((bytes / (1024.0 * 1024.0)).ceil() as u64)
}

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error(
        "qemu runner: no kernel for {arch}: {why}; set QEMU_KERNEL_IMAGE (or QEMU_KERNEL_IMAGE_{upper} for this arch only) to a Linux kernel for {arch} (on Debian: apt-get download linux-image-cloud-{deb} && dpkg-deb -x linux-image-*.deb kernel && export QEMU_KERNEL_IMAGE=$PWD/kernel/boot/vmlinuz-*)"
    )]
    NoKernel {
        arch: &'static str,
        upper: String,
        deb: &'static str,
        why: String,
    },
    #[error(
        "qemu runner: {bin} is not installed (Debian/Ubuntu: apt-get install {pkg}; Fedora: dnf install qemu-system; Alpine/Wolfi: apk add {bin})"
    )]
    NoQemu {
        bin: &'static str,
        pkg: &'static str,
    },
    #[error(
        "qemu runner: cannot open /dev/kvm: {0}; add this user to the kvm group (usermod -aG kvm USER, then log in again), or set PALLET_QEMU_ACCEL=tcg to emulate the CPU (much slower)"
    )]
    Kvm(std::io::Error),
    #[error("qemu runner: {arch} guests are not supported (x86_64 and aarch64 are)")]
    Arch { arch: &'static str },
    #[error(
        "qemu runner: the build environment has no {0}; the guest's init needs a shell and busybox-style tools (sh, mount, head, tar, env, and setpriv or su): add busybox to environment.contents.packages"
    )]
    MissingTool(String),
    #[error("qemu runner: {0}")]
    Io(String),
    #[error(
        "qemu runner: the guest did not come up: {why}; qemu's and the kernel's last messages:\n{console}"
    )]
    Boot { why: String, console: String },
    #[error(
        "qemu runner: the guest stopped answering: {why}; qemu's and the kernel's last messages:\n{console}"
    )]
    Lost { why: String, console: String },
}

fn io(what: &str, e: impl std::fmt::Display) -> QemuError {
    QemuError::Io(format!("{what}: {e}"))
}

/// The qemu binary, machine, CPU and console of a guest architecture.
struct Machine {
    bin: &'static str,
    pkg: &'static str,
    deb: &'static str,
    machine: &'static str,
    emulated_cpu: &'static str,
    console: &'static str,
}

fn machine(arch: Arch) -> Result<Machine, QemuError> {
    Ok(match arch {
        Arch::Amd64 => Machine {
            bin: "qemu-system-x86_64",
            pkg: "qemu-system-x86",
            deb: "amd64",
            machine: "q35",
            emulated_cpu: "Haswell-v4",
            console: "ttyS0",
        },
        Arch::Arm64 => Machine {
            bin: "qemu-system-aarch64",
            pkg: "qemu-system-arm",
            deb: "arm64",
            machine: "virt",
            emulated_cpu: "cortex-a76",
            console: "ttyAMA0",
        },
        other => return Err(QemuError::Arch { arch: other.apk() }),
    })
}

/// Where unpacked kernel packages are found when no variable names a kernel.
pub const KERNEL_DIR: &str = "/var/cache/pallet/kernel";

/// The newest `boot/vmlinuz-*` of the arch's folder under the kernel folder.
fn unpacked_kernel(cfg: &QemuConfig, arch: Arch) -> Option<PathBuf> {
    let dir = cfg
        .kernel_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(KERNEL_DIR))
        .join(arch.apk())
        .join("boot");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// The kernel for `arch`, checked to be one: a missing file or a kernel of another
/// architecture is refused before qemu starts.
pub fn kernel(cfg: &QemuConfig, arch: Arch) -> Result<PathBuf, QemuError> {
    let m = machine(arch)?;
    let no = |why: String| QemuError::NoKernel {
        arch: arch.apk(),
        upper: arch.apk().to_ascii_uppercase(),
        deb: m.deb,
        why,
    };
    let given = cfg
        .arch_kernels
        .get(arch.apk())
        .or(cfg.kernel.as_ref())
        .cloned();
    let path = given
        .clone()
        .or_else(|| unpacked_kernel(cfg, arch))
        .unwrap_or_else(|| PathBuf::from("/boot/vmlinuz"));
    let mut head = vec![0u8; 0x240];
    let n = std::fs::File::open(&path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| {
            no(if given.is_none() {
                format!(
                    "QEMU_KERNEL_IMAGE is not set, {}/{} holds no boot/vmlinuz-*, and /boot/vmlinuz cannot be read ({e})",
                    cfg.kernel_dir
                        .as_deref()
                        .unwrap_or(Path::new(KERNEL_DIR))
                        .display(),
                    arch.apk()
                )
            } else {
                format!("{}: {e}", path.display())
            })
        })?;
    let head = &head[..n];
    // x86 boot protocol: "HdrS" at 0x202. arm64 Image: "ARM\x64" at 0x38; Debian ships it
    // gzip-compressed, which qemu unpacks itself.
    let kind = if head.get(0x202..0x206) == Some(b"HdrS") {
        Some(Arch::Amd64)
    } else if head.get(0x38..0x3c) == Some(b"ARM\x64") || head.starts_with(&[0x1f, 0x8b]) {
        Some(Arch::Arm64)
    } else {
        None
    };
    match kind {
        Some(k) if k == arch => Ok(path),
        Some(k) => Err(no(format!(
            "{} is a kernel for {}, not {}",
            path.display(),
            k.apk(),
            arch.apk()
        ))),
        None => Err(no(format!(
            "{} is not a Linux kernel image",
            path.display()
        ))),
    }
}

/// The modules folder: `QEMU_KERNEL_MODULES`, else `lib/modules/VERSION` beside an unpacked
/// Debian kernel package, else none (a kernel with the virtio drivers built in).
fn modules_dir(cfg: &QemuConfig, kernel: &Path) -> Option<PathBuf> {
    // QEMU_KERNEL_MODULES goes with QEMU_KERNEL_IMAGE; a per-arch kernel has its own.
    let per_arch = cfg.arch_kernels.values().any(|k| k == kernel);
    if let (Some(m), false) = (&cfg.modules, per_arch) {
        return Some(m.clone());
    }
    let name = kernel.file_name()?.to_str()?;
    let version = name.strip_prefix("vmlinuz-")?;
    let dir = kernel.parent()?.parent()?.join("lib/modules").join(version);
    dir.is_dir().then_some(dir)
}

/// The modules the guest needs, with what they depend on first.
const WANTED: [&str; 5] = [
    "virtio_pci",
    "virtio_console",
    "virtio_blk",
    "virtio_net",
    "virtio_rng",
];

/// `depends=` of a module's `.modinfo` section (ELF64 only: the module's own class).
fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    let u16_at = |o: usize| ko.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        ko.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    // Little-endian ELF64 only (x86_64 and aarch64 modules).
    if !ko.starts_with(b"\x7fELF\x02\x01") {
        return vec![];
    }
    let (Some(shoff), Some(shentsize), Some(shnum), Some(shstrndx)) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e))
    else {
        return vec![];
    };
    let section = |i: usize| -> Option<(u32, usize, usize)> {
        let base = (shoff as usize).checked_add(i.checked_mul(shentsize as usize)?)?;
        let name = u32::from_le_bytes(ko.get(base..base + 4)?.try_into().ok()?);
        let off = u64_at(base + 0x18)? as usize;
        let size = u64_at(base + 0x20)? as usize;
        Some((name, off, size))
    };
    let Some((_, str_off, str_size)) = section(shstrndx as usize) else {
        return vec![];
    };
    let Some(names) = ko.get(str_off..str_off.saturating_add(str_size)) else {
        return vec![];
    };
    for i in 0..shnum as usize {
        let Some((name, off, size)) = section(i) else {
            continue;
        };
        let n = names.get(name as usize..).unwrap_or_default();
        let n = &n[..n.iter().position(|&b| b == 0).unwrap_or(n.len())];
        if n != b".modinfo" {
            continue;
        }
        let Some(body) = ko.get(off..off.saturating_add(size)) else {
            return vec![];
        };
        for item in body.split(|&b| b == 0) {
            if let Some(d) = item.strip_prefix(b"depends=") {
                return String::from_utf8_lossy(d)
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
            }
        }
    }
    vec![]
}

/// A module's bytes, decompressed: busybox's insmod takes plain ELF only.
fn read_module(path: &Path) -> Result<Vec<u8>, QemuError> {
    let what = path.display().to_string();
    let raw = std::fs::read(path).map_err(|e| io(&what, e))?;
    let name = path.to_string_lossy();
    if name.ends_with(".xz") {
        let mut out = vec![];
        lzma_rs::xz_decompress(&mut &raw[..], &mut out).map_err(|e| io(&what, format!("{e:?}")))?;
        Ok(out)
    } else if name.ends_with(".zst") {
        let mut out = vec![];
        ruzstd::decoding::StreamingDecoder::new(&raw[..])
            .map_err(|e| io(&what, e))
            .and_then(|mut d| d.read_to_end(&mut out).map_err(|e| io(&what, e)))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// The virtio modules of `dir` in load order (dependencies first), as (name, bytes). Modules
/// the kernel does not have (built in, or not built) are left out.
fn modules(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, QemuError> {
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .flatten()
    {
        let name = e.file_name().to_string_lossy();
        for ext in [".ko", ".ko.xz", ".ko.zst"] {
            if let Some(stem) = name.strip_suffix(ext) {
                files.insert(stem.replace('-', "_"), e.path().to_path_buf());
            }
        }
    }
    let mut out: Vec<(String, Vec<u8>)> = vec![];
    fn visit(
        name: &str,
        files: &BTreeMap<String, PathBuf>,
        out: &mut Vec<(String, Vec<u8>)>,
        depth: usize,
    ) -> Result<(), QemuError> {
        if depth > 32 || out.iter().any(|(n, _)| n == name) {
            return Ok(());
        }
        let Some(path) = files.get(name) else {
            return Ok(());
        };
        let bytes = read_module(path)?;
        for d in modinfo_depends(&bytes) {
            visit(&d.replace('-', "_"), files, out, depth + 1)?;
        }
        if !out.iter().any(|(n, _)| n == name) {
            out.push((name.to_string(), bytes));
        }
        Ok(())
    }
    for w in WANTED {
        visit(w, &files, &mut out, 0)?;
    }
    Ok(out)
}

/// The guest's init: mounts, modules, loopback and SLIRP networking, then the control loop.
const INIT: &str = r#"#!/bin/sh
# pallet's qemu guest init: runs each step the host sends over the virtio-serial port.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /dev/shm 2>/dev/null
if [ -f /.pallet/modules ]; then
  while read -r m; do
    insmod "/.pallet/$m.ko" || echo "pallet: cannot load $m"
  done < /.pallet/modules
fi
ifconfig lo 127.0.0.1 up 2>/dev/null || ip link set lo up 2>/dev/null
if [ -e /sys/class/net/eth0 ]; then
  if command -v ip >/dev/null; then
    ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up && ip route add default via 10.0.2.2
  else
    ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up && route add default gw 10.0.2.2
  fi
  [ -s /etc/resolv.conf ] || echo "nameserver 10.0.2.3" > /etc/resolv.conf
fi
marker=
for w in $(cat /proc/cmdline); do
  case "$w" in pallet.marker=*) marker=${w#pallet.marker=} ;; esac
done
port=
i=0
while [ -z "$port" ] && [ "$i" -lt 200 ]; do
  for p in /sys/class/virtio-ports/*; do
    [ -f "$p/name" ] && [ "$(cat "$p/name")" = pallet.0 ] && port=/dev/${p##*/}
  done
  [ -n "$port" ] || { sleep 0.05 2>/dev/null || sleep 1; i=$((i+1)); }
done
[ -n "$port" ] || { echo "pallet: no control port"; reboot -f; }
exec 3<>"$port" </dev/null
user_of() {
  while IFS=: read -r n x u rest; do [ "$u" = "$1" ] && { echo "$n"; return; }; done < /etc/passwd
}
echo READY >&3
while IFS=' ' read -r cmd a b c <&3; do
  case "$cmd" in
  RUN|SHELL)
    head -c "$a" <&3 > /.pallet/step
    if [ "$b" = 0 ]; then
      set -- sh /.pallet/step
    elif command -v setpriv >/dev/null && setpriv --reuid="$b" --regid="$c" --clear-groups true 2>/dev/null; then
      set -- setpriv --reuid="$b" --regid="$c" --clear-groups sh /.pallet/step
    else
      set -- su -s /bin/sh "$(user_of "$b")" -c "sh /.pallet/step"
    fi
    if [ "$cmd" = SHELL ]; then
      "$@" <&3 >&3 2>&3 3>&-
    else
      "$@" </dev/null >&3 2>&3 3>&-
    fi
    printf '\n%s %s\n' "$marker" "$?" >&3
    ;;
  TAR)
    tar -C /home/build -cf /dev/vda .
    r=$?
    sync
    echo "TARRED $r" >&3
    ;;
  OFF)
    sync
    reboot -f
    ;;
  esac
done
reboot -f
"#;

/// What the guest needs from the environment, checked before it boots.
const TOOLS: [&str; 5] = ["sh", "mount", "head", "tar", "env"];

fn has_tool(tree: &pallet_fs::Tree, name: &str) -> bool {
    ["bin", "sbin", "usr/bin", "usr/sbin"]
        .iter()
        .any(|d| tree.follow(&format!("{d}/{name}")).is_some())
}

/// Put the guest's init, modules and the workspace (owned by the build user) into `tree`,
/// and write it as a newc initramfs at `out`.
pub fn write_initramfs(
    tree: &mut pallet_fs::Tree,
    cfg: &QemuConfig,
    kernel: &Path,
    workspace: &Path,
    owner: (u32, u32),
    out: &Path,
) -> Result<(), QemuError> {
    use pallet_fs::Node;
    for t in TOOLS {
        if !has_tool(tree, t) {
            return Err(QemuError::MissingTool(t.to_string()));
        }
    }
    if !has_tool(tree, "setpriv") && !has_tool(tree, "su") {
        return Err(QemuError::MissingTool("setpriv or su".into()));
    }
    tree.mkdir_all(".pallet", 0o755, 0);
    tree.put(
        ".pallet/init",
        Node::file(INIT.as_bytes().to_vec(), 0o755, 0),
    );
    if let Some(dir) = modules_dir(cfg, kernel) {
        let mods = modules(&dir)?;
        if !has_tool(tree, "insmod") && !mods.is_empty() {
            return Err(QemuError::MissingTool("insmod".into()));
        }
        let mut list = String::new();
        for (name, bytes) in mods {
            list.push_str(&name);
            list.push('\n');
            tree.put(&format!(".pallet/{name}.ko"), Node::file(bytes, 0o644, 0));
        }
        tree.put(".pallet/modules", Node::file(list.into_bytes(), 0o644, 0));
    }
    // The workspace, as the steps will see it: owned by the build user, who writes into it.
    tree.mkdir_all("home/build", 0o755, 0);
    for e in walkdir::WalkDir::new(workspace)
        .min_depth(1)
        .sort_by_file_name()
        .follow_links(false)
    {
        let e = e.map_err(|e| io("reading the workspace", e))?;
        let rel = e
            .path()
            .strip_prefix(workspace)
            .expect("inside the workspace")
            .to_string_lossy()
            .to_string();
        let md = e
            .path()
            .symlink_metadata()
            .map_err(|e| io("reading the workspace", e))?;
        use std::os::unix::fs::MetadataExt as _;
        let mtime = md.mtime().max(0) as u64;
        let mut node = if md.is_dir() {
            Node::dir(md.mode() & 0o7777, mtime)
        } else if md.is_symlink() {
            let target =
                std::fs::read_link(e.path()).map_err(|e| io("reading the workspace", e))?;
            Node::symlink(&target.to_string_lossy(), mtime)
        } else if md.is_file() {
            let mut n = Node::file(vec![], md.mode() & 0o7777, mtime);
            n.content = pallet_fs::Content::Extent {
                file: std::sync::Arc::new(e.path().to_path_buf()),
                offset: 0,
                len: md.len(),
            };
            n.size = md.len();
            n
        } else {
            continue;
        };
        node.uid = owner.0;
        node.gid = owner.1;
        tree.put(&format!("home/build/{rel}"), node);
    }
    if let Some(n) = tree.nodes.get_mut("home/build") {
        n.uid = owner.0;
        n.gid = owner.1;
    }
    // A scratch file of this build only: no other reader, so no temporary name.
    std::fs::File::create(out)
        .and_then(|f| {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            pallet_image::cpio::write_newc(tree, &mut w)?;
            w.flush()
        })
        .map_err(|e| io("writing the initramfs", e))
}

/// How long an automatically chosen KVM guest may take to answer before emulation is tried.
const KVM_BUDGET: Duration = Duration::from_secs(20);
/// How long an emulated guest may take to answer (a slow host emulating another arch).
const TCG_BUDGET: Duration = Duration::from_secs(900);

/// A running guest. Steps go to it one at a time; dropping it stops the VM.
pub struct Vm {
    child: Mutex<Child>,
    stdin: Mutex<ChildStdin>,
    chunks: Mutex<Receiver<Vec<u8>>>,
    /// What came from the guest and was not taken yet.
    pending: Mutex<Vec<u8>>,
    console: PathBuf,
    disk: PathBuf,
    marker: String,
    /// The guest is gone (it stopped answering or a deadline killed it).
    dead: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm").field("disk", &self.disk).finish()
    }
}

/// A fresh marker for the end of each step's output, so that no output is taken for it.
fn new_marker() -> String {
    use sha2::Digest as _;
    let mut seed = vec![];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| {
        seed.resize(32, 0);
        f.read_exact(&mut seed)
    });
    seed.extend_from_slice(&std::process::id().to_le_bytes());
    seed.extend_from_slice(&format!("{:?}", Instant::now()).into_bytes());
    let h: String = sha2::Sha256::digest(&seed)
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("pallet-step-end-{h}")
}

/// How a step ended.
pub enum StepEnd {
    Exited(i32),
    TimedOut,
}

/// The accelerator for `arch`: KVM for the host's own architecture when `/dev/kvm` exists
/// (an error when it exists but cannot be opened), emulation otherwise.
fn accel(cfg: &QemuConfig, arch: Arch) -> Result<&'static str, QemuError> {
    match cfg.accel.as_deref() {
        Some("tcg") => return Ok("tcg"),
        Some("kvm") => {}
        Some(other) => {
            return Err(QemuError::Io(format!(
                "PALLET_QEMU_ACCEL={other}: use kvm or tcg"
            )));
        }
        None if arch != Arch::host() || !Path::new("/dev/kvm").exists() => return Ok("tcg"),
        None => {}
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(QemuError::Kvm)?;
    Ok("kvm")
}

fn free_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

impl Vm {
    /// Boot `initramfs` with `kernel` in `scratch` (console log and the workspace disk live
    /// there) and wait until the guest's init answers.
    pub fn boot(
        cfg: &QemuConfig,
        arch: Arch,
        kernel: &Path,
        initramfs: &Path,
        scratch: &Path,
        log: &crate::log::Log,
    ) -> Result<Vm, QemuError> {
        let accel = accel(cfg, arch)?;
        if accel == "kvm" && cfg.accel.is_none() {
            // Some hosts offer /dev/kvm without hardware paging for nested guests, where a
            // KVM guest boots a hundred times slower than an emulated one (measured: no
            // answer in two minutes against 5 s with TCG). Chosen on our own, KVM gets a
            // budget a healthy host meets many times over; past it, emulate.
            match Self::boot_with(
                cfg, arch, "kvm", KVM_BUDGET, kernel, initramfs, scratch, log,
            ) {
                Err(QemuError::Boot { why, .. }) if why.starts_with("no answer") => {
                    log.line(format_args!(
                        "note: the KVM guest gave no answer in {}s (this host's KVM is too slow for it); emulating with TCG instead (PALLET_QEMU_ACCEL=kvm insists on KVM, =tcg skips the try)",
                        KVM_BUDGET.as_secs()
                    ));
                }
                other => return other,
            }
            return Self::boot_with(
                cfg, arch, "tcg", TCG_BUDGET, kernel, initramfs, scratch, log,
            );
        }
        let budget = if accel == "kvm" {
            Duration::from_secs(120)
        } else {
            TCG_BUDGET
        };
        Self::boot_with(cfg, arch, accel, budget, kernel, initramfs, scratch, log)
    }

    #[allow(clippy::too_many_arguments)]
    fn boot_with(
        cfg: &QemuConfig,
        arch: Arch,
        accel: &'static str,
        limit: Duration,
        kernel: &Path,
        initramfs: &Path,
        scratch: &Path,
        log: &crate::log::Log,
    ) -> Result<Vm, QemuError> {
        let m = machine(arch)?;
        let cpus = cfg.cpus.unwrap_or(2).max(1);
        // melange: the configured memory capped at 85% of what is free; 4 GiB without one.
        let cap = free_mib().map_or(4096, |f| f * 85 / 100).max(256);
        let mem = cfg.memory_mib.unwrap_or(4096).min(cap).max(256);
        let console = scratch.join("qemu-console.log");
        let disk = scratch.join("qemu-workspace.raw");
        // The workspace comes back through this disk, so it must hold what the guest's memory
        // can: a sparse file costs only what is written.
        std::fs::File::create(&disk)
            .and_then(|f| f.set_len(cfg.disk_mib.unwrap_or(0).max(mem + 512) << 20))
            .map_err(|e| io("creating the workspace disk", e))?;
        // The end-of-step marker travels on the command line, where init reads it.
        let marker = new_marker();
        let mut append = format!(
            "console={} rdinit=/.pallet/init panic=-1 quiet loglevel=3 pallet.marker={marker}",
            m.console
        );
        if let Some(extra) = &cfg.cmdline {
            append.push(' ');
            append.push_str(extra);
        }
        let mut c = Command::new(m.bin);
        let machine = format!("{},accel={accel}", m.machine);
        c.args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
            .args(["-M", &machine])
            .args([
                "-cpu",
                // Some hosts (nested virtualisation) refuse the ARCH_CAPABILITIES MSR that
                // `host` passes through, and qemu aborts: the guest never needs it.
                match (cfg.cpu_model.as_deref(), accel, arch) {
                    (Some(model), _, _) => model,
                    (None, "kvm", Arch::Amd64) => "host,-arch-capabilities",
                    (None, "kvm", _) => "host",
                    _ => m.emulated_cpu,
                },
            ])
            .args(["-smp", &cpus.to_string(), "-m", &mem.to_string()])
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initramfs)
            .args(["-append", &append])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .args(["-monitor", "none"])
            .args(["-chardev", "stdio,id=ctl,signal=off"])
            .args(["-device", "virtio-serial-pci"])
            .args(["-device", "virtserialport,chardev=ctl,name=pallet.0"])
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=none,id=ws,cache=unsafe",
                disk.display()
            ))
            .args(["-device", "virtio-blk-pci,drive=ws"])
            // melange's SLIRP user networking: the guest reaches what the host reaches.
            .args(["-netdev", "user,id=net0"])
            .args(["-device", "virtio-net-pci,netdev=net0,romfile="])
            .args(["-device", "virtio-rng-pci"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(
                std::fs::File::create(scratch.join("qemu-stderr.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            );
        let mut child = c.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                QemuError::NoQemu {
                    bin: m.bin,
                    pkg: m.pkg,
                }
            } else {
                io(&format!("starting {}", m.bin), e)
            }
        })?;
        log.line(format_args!(
            "started a {} guest ({accel}, {cpus} CPUs, {mem} MiB)",
            arch.apk()
        ));
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            let mut r = stdout;
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let vm = Vm {
            child: Mutex::new(child),
            stdin: Mutex::new(stdin),
            chunks: Mutex::new(rx),
            pending: Default::default(),
            console,
            disk,
            marker,
            dead: Default::default(),
        };
        let start = Instant::now();
        loop {
            match vm.next_line(Duration::from_millis(200)) {
                Ok(Some(l)) if l == b"READY" => break,
                Ok(_) => {}
                Err(()) => {
                    vm.kill();
                    return Err(QemuError::Boot {
                        why: "qemu exited".into(),
                        console: vm.console_tail(),
                    });
                }
            }
            if start.elapsed() > limit {
                vm.kill();
                return Err(QemuError::Boot {
                    why: format!("no answer in {}s", limit.as_secs()),
                    console: vm.console_tail(),
                });
            }
        }
        log.line(format_args!(
            "guest ready in {:.1}s",
            start.elapsed().as_secs_f64()
        ));
        Ok(vm)
    }

    /// The next line from the guest: `Ok(None)` when none came in `wait`, `Err` when qemu is
    /// gone.
    fn next_line(&self, wait: Duration) -> Result<Option<Vec<u8>>, ()> {
        let mut pending = self.pending.lock().expect("pending");
        loop {
            if let Some(i) = pending.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = pending.drain(..=i).collect();
                line.pop();
                return Ok(Some(line));
            }
            match self.chunks.lock().expect("chunks").recv_timeout(wait) {
                Ok(c) => pending.extend_from_slice(&c),
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => return Err(()),
            }
        }
    }

    /// melange's debug shell: `script` runs with the control port as its terminal; our
    /// standard input goes to it and its output comes back as it is written (prompts have no
    /// newline). Returns the shell's exit status.
    pub fn shell(&self, script: &str, uid: u32, gid: u32) -> Result<i32, QemuError> {
        use std::os::fd::AsFd as _;
        use std::sync::atomic::{AtomicBool, Ordering};
        self.send(
            &format!("SHELL {} {uid} {gid}\n", script.len()),
            script.as_bytes(),
        )?;
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let input = self
            .stdin
            .lock()
            .expect("stdin")
            .as_fd()
            .try_clone_to_owned()
            .map(std::fs::File::from)
            .map_err(|e| io("the guest's input", e))?;
        {
            let done = done.clone();
            let mut input = input;
            // Stays blocked on our terminal after the shell is gone; what is typed then is
            // dropped, never sent to the guest's init.
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut stdin = std::io::stdin().lock();
                while let Ok(n) = stdin.read(&mut buf) {
                    if n == 0 || done.load(Ordering::SeqCst) || input.write_all(&buf[..n]).is_err()
                    {
                        break;
                    }
                }
            });
        }
        let end = format!("\n{} ", self.marker);
        let mut out = std::io::stdout();
        let mut pending = std::mem::take(&mut *self.pending.lock().expect("pending"));
        loop {
            if let Some(at) = pending.windows(end.len()).position(|w| w == end.as_bytes()) {
                let rest = &pending[at + end.len()..];
                if let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                    let _ = out.write_all(&pending[..at]).and_then(|_| out.flush());
                    let code = String::from_utf8_lossy(&rest[..nl])
                        .trim()
                        .parse()
                        .unwrap_or(1);
                    *self.pending.lock().expect("pending") = rest[nl + 1..].to_vec();
                    done.store(true, Ordering::SeqCst);
                    return Ok(code);
                }
            } else {
                // All but what could be the start of the marker.
                let keep = pending.len().min(end.len());
                let upto = pending.len() - keep;
                let _ = out.write_all(&pending[..upto]).and_then(|_| out.flush());
                pending.drain(..upto);
            }
            match self
                .chunks
                .lock()
                .expect("chunks")
                .recv_timeout(Duration::from_millis(100))
            {
                Ok(c) => pending.extend_from_slice(&c),
                Err(RecvTimeoutError::Timeout) => {
                    // A prompt waits for input: show it, unless it may be a marker's start.
                    if !end.as_bytes().starts_with(&pending) {
                        let _ = out.write_all(&pending).and_then(|_| out.flush());
                        pending.clear();
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    done.store(true, Ordering::SeqCst);
                    return Err(self.lost("qemu exited during the shell"));
                }
            }
        }
    }

    /// What qemu said and the kernel's last console lines, for errors.
    pub fn console_tail(&self) -> String {
        let mut text =
            std::fs::read(self.console.with_file_name("qemu-stderr.log")).unwrap_or_default();
        text.extend(std::fs::read(&self.console).unwrap_or_default());
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        if tail.trim().is_empty() {
            "(nothing)".into()
        } else {
            tail
        }
    }

    fn send(&self, head: &str, body: &[u8]) -> Result<(), QemuError> {
        let mut w = self.stdin.lock().expect("stdin");
        w.write_all(head.as_bytes())
            .and_then(|_| w.write_all(body))
            .and_then(|_| w.flush())
            .map_err(|e| QemuError::Lost {
                why: format!("writing to the guest: {e}"),
                console: self.console_tail(),
            })
    }

    fn lost(&self, why: &str) -> QemuError {
        self.dead.store(true, std::sync::atomic::Ordering::SeqCst);
        QemuError::Lost {
            why: why.into(),
            console: self.console_tail(),
        }
    }

    /// Run `script` as `uid:gid`, handing each output line to `line`; a `deadline` that
    /// passes stops the guest. With `interactive`, the script's terminal is the guest's console
    /// instead (melange's debug shell), and the call returns when the shell exits.
    pub fn run(
        &self,
        script: &str,
        uid: u32,
        gid: u32,
        deadline: Option<Instant>,
        mut line: impl FnMut(&[u8]),
    ) -> Result<StepEnd, QemuError> {
        if self.dead.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(self.lost("the guest was stopped"));
        }
        self.send(
            &format!("RUN {} {uid} {gid}\n", script.len()),
            script.as_bytes(),
        )?;
        let end = format!("{} ", self.marker);
        // The guest writes a newline before the marker so that it starts a line: the empty
        // line that makes when the output ended with one is not the step's.
        let mut held: Option<Vec<u8>> = None;
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.kill();
                return Ok(StepEnd::TimedOut);
            }
            match self.next_line(Duration::from_millis(200)) {
                Err(()) => return Err(self.lost("qemu exited during the step")),
                Ok(None) => {}
                Ok(Some(l)) => {
                    if let Some(rest) = l.strip_prefix(end.as_bytes()) {
                        if let Some(h) = held.take().filter(|h| !h.is_empty()) {
                            line(&h);
                        }
                        let code = String::from_utf8_lossy(rest).trim().parse().unwrap_or(-1);
                        return Ok(StepEnd::Exited(code));
                    }
                    if let Some(h) = held.replace(l) {
                        line(&h);
                    }
                }
            }
        }
    }

    /// Bring `/home/build` back into `workspace`, replacing what is there.
    pub fn retrieve(&self, workspace: &Path) -> Result<(), QemuError> {
        self.send("TAR\n", b"")?;
        let start = Instant::now();
        loop {
            match self.next_line(Duration::from_millis(200)) {
                Err(()) => return Err(self.lost("qemu exited while writing the workspace")),
                Ok(Some(l)) if l.starts_with(b"TARRED ") => {
                    if l != b"TARRED 0" {
                        return Err(self.lost(&format!(
                            "the guest could not write the workspace ({})",
                            String::from_utf8_lossy(&l)
                        )));
                    }
                    break;
                }
                Ok(_) => {}
            }
            if start.elapsed() > Duration::from_secs(3600) {
                return Err(self.lost("writing the workspace took over an hour"));
            }
        }
        for e in std::fs::read_dir(workspace).map_err(|e| io("emptying the workspace", e))? {
            let p = e.map_err(|e| io("emptying the workspace", e))?.path();
            let r = if p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(|e| io(&format!("emptying the workspace ({})", p.display()), e))?;
        }
        let f = std::fs::File::open(&self.disk).map_err(|e| io("reading the workspace disk", e))?;
        unpack_workspace(BufReader::new(f), workspace)
    }

    /// Stop the guest now.
    pub fn kill(&self) {
        self.dead.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut c = self.child.lock().expect("child");
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if !self.dead.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = self.send("OFF\n", b"");
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut c = self.child.lock().expect("child");
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }
}

/// Unpack the guest's tar of `/home/build` into `dest`. Entries are hostile input: absolute
/// paths, `..`, and paths through a symlink are refused; links are made, never followed;
/// owners are not kept (the host's user owns its workspace, as with bubblewrap); directory
/// modes are applied last so that a read-only folder still gets its children.
pub fn unpack_workspace(r: impl Read, dest: &Path) -> Result<(), QemuError> {
    use std::os::unix::fs::PermissionsExt as _;
    let bad = |p: &str, why: &str| QemuError::Io(format!("the guest's workspace: {p}: {why}"));
    let mut ar = tar::Archive::new(r);
    let mut dirs: Vec<(PathBuf, u32)> = vec![];
    for e in ar
        .entries()
        .map_err(|e| io("reading the guest's workspace", e))?
    {
        let mut e = e.map_err(|e| io("reading the guest's workspace", e))?;
        let raw = e
            .path()
            .map_err(|e| io("reading the guest's workspace", e))?
            .to_string_lossy()
            .to_string();
        let rel = raw.trim_start_matches("./").trim_end_matches('/');
        if rel.is_empty() || rel == "." {
            continue;
        }
        pallet_apk_stream::check_path(rel).map_err(|why| bad(rel, why))?;
        let target = dest.join(rel);
        // Every folder on the way must be a real folder made by this unpacking or the
        // workspace itself: never a link.
        let mut here = dest.to_path_buf();
        for part in Path::new(rel)
            .parent()
            .into_iter()
            .flat_map(|p| p.components())
        {
            here.push(part);
            match here.symlink_metadata() {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(bad(rel, "a parent is not a folder")),
                Err(_) => std::fs::create_dir(&here).map_err(|e| io(rel, e))?,
            }
        }
        let mode = e.header().mode().unwrap_or(0o644) & 0o7777;
        let mtime = e.header().mtime().unwrap_or(0);
        match e.header().entry_type() {
            tar::EntryType::Directory => {
                match target.symlink_metadata() {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(bad(rel, "a folder over a file")),
                    Err(_) => std::fs::create_dir(&target).map_err(|e| io(rel, e))?,
                }
                dirs.push((target, mode));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let _ = std::fs::remove_file(&target);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(|e| io(rel, e))?;
                std::io::copy(&mut e, &mut f).map_err(|e| io(rel, e))?;
                drop(f);
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| io(rel, e))?;
                set_mtime(&target, mtime);
            }
            tar::EntryType::Symlink => {
                let link = e
                    .link_name()
                    .map_err(|e| io(rel, e))?
                    .ok_or_else(|| bad(rel, "a link without a target"))?;
                let _ = std::fs::remove_file(&target);
                std::os::unix::fs::symlink(&link, &target).map_err(|e| io(rel, e))?;
            }
            tar::EntryType::Link => {
                let link = e
                    .link_name()
                    .map_err(|e| io(rel, e))?
                    .ok_or_else(|| bad(rel, "a hard link without a target"))?
                    .to_string_lossy()
                    .to_string();
                let lrel = link.trim_start_matches("./");
                pallet_apk_stream::check_path(lrel).map_err(|why| bad(&link, why))?;
                let src = dest.join(lrel);
                if !src.symlink_metadata().is_ok_and(|m| m.is_file()) {
                    return Err(bad(rel, "a hard link to something that is not a file here"));
                }
                let _ = std::fs::remove_file(&target);
                std::fs::hard_link(&src, &target).map_err(|e| io(rel, e))?;
            }
            // Devices and FIFOs: nothing a package may ship from a workspace.
            _ => {}
        }
    }
    for (d, mode) in dirs.into_iter().rev() {
        let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode));
    }
    Ok(())
}

fn set_mtime(p: &Path, secs: u64) {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(secs);
    if let Ok(f) = std::fs::File::options().write(true).open(p) {
        let _ = f.set_modified(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_comes_from_melanges_variables() {
        let vars = BTreeMap::from([
            ("QEMU_KERNEL_IMAGE", "/k/boot/vmlinuz-6.1"),
            ("QEMU_KERNEL_MODULES", ""),
            ("PALLET_QEMU_ACCEL", "tcg"),
        ]);
        let c = QemuConfig::from_vars(|k| vars.get(k).map(|v| v.to_string()));
        assert_eq!(c.kernel, Some(PathBuf::from("/k/boot/vmlinuz-6.1")));
        assert_eq!(c.modules, None, "an empty variable is unset");
        assert_eq!(c.accel.as_deref(), Some("tcg"));
    }

    #[test]
    fn sizes_read_as_kubernetes_writes_them() {
        assert_eq!(parse_cpus("2"), Ok(2));
        assert_eq!(parse_cpus("1.5"), Ok(2));
        assert_eq!(parse_cpus("500m"), Ok(1));
        assert!(parse_cpus("lots").is_err() && parse_cpus("0").is_err());
        assert_eq!(parse_mib("4Gi"), Ok(4096));
        assert_eq!(parse_mib("512Mi"), Ok(512));
        assert_eq!(parse_mib("1G"), Ok(954));
        assert_eq!(parse_mib("1048576"), Ok(1));
        assert!(parse_mib("4 parsecs").is_err() && parse_mib("-1Gi").is_err());
        let mut c = QemuConfig {
            cpus: Some(8),
            ..Default::default()
        };
        c.size_from(&crate::compile::Resources {
            cpu: Some("2".into()),
            memory: Some("2Gi".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((c.cpus, c.memory_mib), (Some(8), Some(2048)), "flags win");
    }

    #[test]
    fn kernels_are_checked_before_qemu_starts() {
        let d = tempfile::tempdir().unwrap();
        let missing = QemuConfig {
            kernel: Some(d.path().join("nope")),
            ..Default::default()
        };
        let e = kernel(&missing, Arch::Amd64).unwrap_err().to_string();
        assert!(e.contains("QEMU_KERNEL_IMAGE") && e.contains("nope"), "{e}");
        let mut x86 = vec![0u8; 0x300];
        x86[0x202..0x206].copy_from_slice(b"HdrS");
        std::fs::write(d.path().join("bz"), &x86).unwrap();
        let cfg = QemuConfig {
            kernel: Some(d.path().join("bz")),
            ..Default::default()
        };
        assert_eq!(kernel(&cfg, Arch::Amd64).unwrap(), d.path().join("bz"));
        let e = kernel(&cfg, Arch::Arm64).unwrap_err().to_string();
        assert!(e.contains("for x86_64, not aarch64"), "{e}");
        std::fs::write(d.path().join("txt"), b"hello").unwrap();
        let cfg = QemuConfig {
            kernel: Some(d.path().join("txt")),
            ..Default::default()
        };
        let e = kernel(&cfg, Arch::Amd64).unwrap_err().to_string();
        assert!(e.contains("not a Linux kernel image"), "{e}");
        // No variable: the newest unpacked kernel of the arch's folder.
        let kd = d.path().join("kernels");
        std::fs::create_dir_all(kd.join("x86_64/boot")).unwrap();
        std::fs::write(kd.join("x86_64/boot/vmlinuz-6.1.0-1-cloud-amd64"), &x86).unwrap();
        std::fs::write(kd.join("x86_64/boot/vmlinuz-6.1.0-2-cloud-amd64"), &x86).unwrap();
        let cfg = QemuConfig {
            kernel_dir: Some(kd.clone()),
            ..Default::default()
        };
        assert_eq!(
            kernel(&cfg, Arch::Amd64).unwrap(),
            kd.join("x86_64/boot/vmlinuz-6.1.0-2-cloud-amd64")
        );
        let cfg = QemuConfig {
            kernel: Some(d.path().join("txt")),
            ..Default::default()
        };
        assert!(
            kernel(&cfg, Arch::S390x)
                .unwrap_err()
                .to_string()
                .contains("not supported")
        );
    }

    #[test]
    fn modules_beside_a_debian_kernel_are_found() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("boot")).unwrap();
        std::fs::create_dir_all(d.path().join("lib/modules/6.1.0-9-cloud-amd64")).unwrap();
        let k = d.path().join("boot/vmlinuz-6.1.0-9-cloud-amd64");
        assert_eq!(
            modules_dir(&QemuConfig::default(), &k),
            Some(d.path().join("lib/modules/6.1.0-9-cloud-amd64"))
        );
        assert_eq!(
            modules_dir(&QemuConfig::default(), &d.path().join("boot/other")),
            None
        );
    }

    /// A minimal ELF64 object with a `.modinfo` section.
    fn fake_module(depends: &str) -> Vec<u8> {
        let modinfo = format!("license=GPL\0depends={depends}\0name=x\0");
        let shstr = b"\0.modinfo\0.shstrtab\0";
        let mut b = vec![0u8; 64];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let modinfo_off = b.len();
        b.extend_from_slice(modinfo.as_bytes());
        let shstr_off = b.len();
        b.extend_from_slice(shstr);
        let shoff = b.len();
        let sh = |name: u32, off: usize, size: usize| {
            let mut s = vec![0u8; 64];
            s[..4].copy_from_slice(&name.to_le_bytes());
            s[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            s[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            s
        };
        b.extend(sh(0, 0, 0));
        b.extend(sh(1, modinfo_off, modinfo.len()));
        b.extend(sh(10, shstr_off, shstr.len()));
        b[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        b[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        b[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        b[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        b
    }

    #[test]
    fn modules_load_after_what_they_depend_on() {
        assert_eq!(
            modinfo_depends(&fake_module("virtio,virtio_ring")),
            ["virtio", "virtio_ring"]
        );
        assert!(modinfo_depends(b"not an elf").is_empty());
        // Truncated: no panic, no dependencies.
        let m = fake_module("virtio");
        assert!(modinfo_depends(&m[..70]).is_empty());
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("kernel/drivers");
        std::fs::create_dir_all(&k).unwrap();
        std::fs::write(k.join("virtio.ko"), fake_module("")).unwrap();
        std::fs::write(k.join("virtio_ring.ko"), fake_module("virtio")).unwrap();
        std::fs::write(k.join("virtio_blk.ko"), fake_module("virtio,virtio_ring")).unwrap();
        std::fs::write(k.join("virtio-rng.ko"), fake_module("virtio_ring")).unwrap();
        let names: Vec<String> = modules(d.path())
            .unwrap()
            .into_iter()
            .map(|m| m.0)
            .collect();
        assert_eq!(names, ["virtio", "virtio_ring", "virtio_blk", "virtio_rng"]);
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(vec![]);
        for (path, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o755);
            h.set_size(data.len() as u64);
            // Written raw: the tar crate's own setters refuse the hostile names tested here.
            h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            if !link.is_empty() {
                h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn the_guests_workspace_cannot_leave_its_folder() {
        use tar::EntryType as T;
        let d = tempfile::tempdir().unwrap();
        let ws = d.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        let good = tar_of(&[
            ("./", T::Directory, b"", ""),
            ("./melange-out/", T::Directory, b"", ""),
            ("./melange-out/a", T::Regular, b"hi", ""),
            ("./melange-out/l", T::Symlink, b"", "/etc/passwd"),
            ("./melange-out/h", T::Link, b"", "./melange-out/a"),
        ]);
        unpack_workspace(&good[..], &ws).unwrap();
        assert_eq!(std::fs::read(ws.join("melange-out/a")).unwrap(), b"hi");
        assert!(
            ws.join("melange-out/l")
                .symlink_metadata()
                .unwrap()
                .is_symlink()
        );
        for (evil, why) in [
            (tar_of(&[("../escape", T::Regular, b"x", "")]), ".."),
            (tar_of(&[("/abs", T::Regular, b"x", "")]), "absolute"),
            (
                tar_of(&[
                    ("./up", T::Symlink, b"", ".."),
                    ("./up/escape", T::Regular, b"x", ""),
                ]),
                "through a link",
            ),
            (
                tar_of(&[("./h", T::Link, b"", "../outside")]),
                "hard link out",
            ),
        ] {
            let ws = tempfile::tempdir_in(d.path()).unwrap();
            assert!(unpack_workspace(&evil[..], ws.path()).is_err(), "{why}");
        }
        assert!(!d.path().join("escape").exists());
    }
}
