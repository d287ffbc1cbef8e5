//! An image written as an initramfs file: apko's `build-cpio` and melange's `initramfs`.
//! The configuration is installed as for an image, and its tree goes out as one newc archive
//! ([`crate::cpio`]), gzip-compressed when the file name ends in `.gz`, under a temporary name
//! that is renamed once complete, so a killed run leaves no half archive under the real name.

use std::io::Write;
use std::path::Path;

use crate::build::{self, BuildError, BuildOptions};
use crate::config::{Arch, ImageConfiguration};

/// What was written.
#[derive(Clone, Debug)]
pub struct Written {
    pub packages: usize,
    pub entries: usize,
}

/// melange's default init for its microVMs and the repository it comes from.
pub const MELANGE_INIT_PACKAGE: &str = "microvm-init";
pub const MELANGE_INIT_REPOSITORY: &str = "https://apk.cgr.dev/chainguard";

/// The configuration melange's `initramfs` builds: the init package and the extra packages,
/// from `repositories` as build repositories (they are not written into the image's
/// `/etc/apk/repositories`), verified with `keyring` plus whatever key discovery finds.
pub fn melange_configuration(
    init_package: &str,
    packages: &[String],
    repositories: &[String],
    keyring: &[String],
) -> ImageConfiguration {
    let mut cfg = ImageConfiguration::default();
    cfg.contents.build_repositories = repositories.to_vec();
    cfg.contents.keyring = keyring.to_vec();
    cfg.contents.packages = std::iter::once(init_package.to_string())
        .chain(packages.iter().cloned())
        .filter(|p| !p.is_empty())
        .collect();
    cfg
}

/// Install `cfg` for `arch` and write it to `out` as a newc cpio archive.
pub fn write(
    cfg: &ImageConfiguration,
    arch: Arch,
    opts: &BuildOptions,
    out: &Path,
) -> Result<Written, BuildError> {
    let installed = build::install(cfg, arch, opts)?;
    let gzip = out.to_string_lossy().ends_with(".gz");
    let mut entries = 0;
    pallet_atomic::write_with(out, |t| {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, t);
        if gzip {
            // mtime 0: the same inputs give the same bytes.
            let mut gz = flate2::GzBuilder::new()
                .mtime(0)
                .write(&mut w, flate2::Compression::new(6));
            entries = crate::cpio::write_newc(&installed.tree, &mut gz)?;
            gz.finish()?;
        } else {
            entries = crate::cpio::write_newc(&installed.tree, &mut w)?;
        }
        w.flush()
    })
    .map_err(|source| BuildError::Io {
        context: format!("writing {}", out.display()),
        source,
    })?;
    Ok(Written {
        packages: installed.packages.len(),
        entries,
    })
}
