//! An image node: the apko configuration built against the workspace's repository (and its
//! key) besides what it lists, written as a tarball and/or layout with its SBOMs beside it.

use std::path::{Path, PathBuf};

use crate::cache::OutFile;
use crate::run::Ctx;

/// Where image `j`'s build log goes.
pub(crate) fn log_path(ctx: &Ctx, j: usize) -> PathBuf {
    ctx.ws
        .root
        .join(&ctx.ws.images_rel)
        .join("buildlogs")
        .join(format!("{}.log", ctx.ws.images[j].name))
}

/// The SBOM folder beside an image's tarball: `images/NAME.tar` → `images/NAME.sbom/`.
fn sbom_dir(tarball: &Path) -> PathBuf {
    tarball.with_extension("sbom")
}

pub(crate) fn build_image(ctx: &Ctx, j: usize) -> Result<Vec<OutFile>, String> {
    let ws = ctx.ws;
    let img = &ws.images[j];
    let log = pallet_build::log::Log::to_file(&log_path(ctx, j))
        .map_err(|e| format!("creating {}: {e}", log_path(ctx, j).display()))?;
    let scratch = ctx
        .cache
        .scratch()
        .map_err(|e| format!("creating a scratch folder: {e}"))?;
    let tag = img
        .tags
        .first()
        .cloned()
        .unwrap_or_else(|| format!("{}:latest", img.name));
    let mut req = pallet_image::image::ImageRequest::new(
        ws.root.join(&img.file),
        tag.clone(),
        ctx.build_options(false),
    );
    req.archs = img.archs.iter().map(|a| a.apk().to_string()).collect();
    req.epoch = Some(ctx.ro.source_date_epoch);
    // The git remote differs between clones of one repository; the image must not.
    req.vcs = false;
    let built =
        pallet_image::image::build_image(&req, scratch.path(), &|l| log.line(l)).map_err(|e| {
            log.line(format_args!("error: {e}"));
            e.to_string()
        })?;
    let mut staged: Vec<(PathBuf, String)> = vec![];
    if let Some(t) = &img.tarball {
        let tmp = scratch.path().join("image.tar");
        built
            .write_tarball(&tmp, &tag, None)
            .map_err(|e| e.to_string())?;
        staged.push((tmp, t.display().to_string()));
        let sboms = scratch.path().join("sbom");
        built.write_sboms(&sboms).map_err(|e| e.to_string())?;
        let dir = sbom_dir(t);
        let mut names: Vec<_> = std::fs::read_dir(&sboms)
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        names.sort();
        for n in names {
            staged.push((sboms.join(&n), dir.join(&n).display().to_string()));
        }
    }
    if let Some(l) = &img.layout {
        let dir = ws.root.join(l);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        built.write_layout(&dir, &tag).map_err(|e| e.to_string())?;
    }
    let mut files = vec![];
    for (from, rel) in staged {
        let rec = ctx
            .cache
            .put_blob(&from, &rel)
            .map_err(|e| format!("caching {rel}: {e}"))?;
        let to = ws.root.join(&rel);
        ctx.cache
            .restore(&rec, &to)
            .map_err(|e| format!("writing {}: {e}", to.display()))?;
        files.push(rec);
    }
    log.line(format_args!(
        "built {} ({})",
        img.name,
        built.index_digest()
    ));
    Ok(files)
}
