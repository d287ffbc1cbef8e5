//! Foreign architectures: a guest for another architecture runs under qemu-user through the
//! kernel's binfmt_misc. The handler must have the `F` flag (the interpreter is opened when
//! it is registered), or the sandbox, which has no qemu binary inside, could not start it.

use std::path::Path;

use pallet_image::config::Arch;

/// Where the kernel lists binfmt_misc handlers.
pub const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// qemu's name for `arch`, or `None` when this host runs it natively.
pub fn qemu_name(arch: Arch, host: Arch) -> Option<&'static str> {
    if arch == host || (host == Arch::Amd64 && arch == Arch::X86) {
        return None;
    }
    Some(match arch {
        Arch::X86 => "i386",
        Arch::Amd64 => "x86_64",
        Arch::Arm64 => "aarch64",
        Arch::ArmV6 | Arch::ArmV7 => "arm",
        Arch::Loong64 => "loongarch64",
        Arch::Ppc64le => "ppc64le",
        Arch::Riscv64 => "riscv64",
        Arch::S390x => "s390x",
    })
}

/// Whether a build for `arch` can run here: natively, or through an enabled qemu-user handler
/// with the `F` flag under `binfmt_dir` (normally [`BINFMT_MISC`]). The error says what to run.
pub fn check(arch: Arch, host: Arch, binfmt_dir: &Path) -> Result<(), String> {
    let Some(q) = qemu_name(arch, host) else {
        return Ok(());
    };
    let handler = binfmt_dir.join(format!("qemu-{q}"));
    let fix = format!(
        "on Debian, as root:\n  apt-get install qemu-user-static binfmt-support\n  mountpoint -q {dir} || mount -t binfmt_misc binfmt_misc {dir}\n  update-binfmts --enable qemu-{q}",
        dir = binfmt_dir.display()
    );
    let text = match std::fs::read_to_string(&handler) {
        Ok(t) => t,
        Err(_) => {
            return Err(format!(
                "building for {} on this {} machine runs the guest under qemu-user, but no binfmt_misc handler is registered ({} is missing); {fix}",
                arch.apk(),
                host.apk(),
                handler.display()
            ));
        }
    };
    if text.lines().next() != Some("enabled") {
        return Err(format!(
            "the qemu-user handler {} is disabled; {fix}",
            handler.display()
        ));
    }
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .unwrap_or("")
        .trim();
    if !flags.contains('F') {
        return Err(format!(
            "the qemu-user handler {} lacks the F flag (flags: {flags:?}), so the sandbox cannot start its interpreter; install Debian's qemu-user-static (its handlers have F), then:\n  update-binfmts --disable qemu-{q}; update-binfmts --enable qemu-{q}",
            handler.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handlers_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let (a64, amd) = (Arch::Arm64, Arch::Amd64);
        assert!(check(amd, amd, d.path()).is_ok());
        assert!(check(Arch::X86, amd, d.path()).is_ok());
        let e = check(a64, amd, d.path()).unwrap_err();
        assert!(
            e.contains("update-binfmts --enable qemu-aarch64") && e.contains("qemu-user-static"),
            "{e}"
        );
        let h = d.path().join("qemu-aarch64");
        std::fs::write(&h, "disabled\ninterpreter /x\nflags: F\n").unwrap();
        assert!(check(a64, amd, d.path()).unwrap_err().contains("disabled"));
        std::fs::write(&h, "enabled\ninterpreter /x\nflags: P\n").unwrap();
        assert!(check(a64, amd, d.path()).unwrap_err().contains("F flag"));
        std::fs::write(&h, "enabled\ninterpreter /x\nflags: PF\n").unwrap();
        assert!(check(a64, amd, d.path()).is_ok());
        assert_eq!(qemu_name(Arch::ArmV7, amd), Some("arm"));
    }
}
