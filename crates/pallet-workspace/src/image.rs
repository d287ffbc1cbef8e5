//! An image node: the apko configuration built against the workspace's repository (and its
//! key) besides what it lists, written as a tarball and/or layout with its SBOMs beside it.

use std::path::{Path, PathBuf};

use crate::cache::OutFile;
use crate::run::{Ctx, NodeRef};

/// Where image `j`'s build log goes.
pub(crate) fn log_path(ctx: &Ctx, j: usize) -> PathBuf {
    ctx.ws
        .root
        .join(&ctx.ws.images_rel)
        .join("buildlogs")
        .join(format!("{}.log", ctx.ws.images[j].name))
}

/// The SBOM folder beside an image's tarball: `images/NAME.tar` → `images/NAME.sbom/`.
pub(crate) fn sbom_dir(tarball: &Path) -> PathBuf {
    tarball.with_extension("sbom")
}

/// The cache marker of an image key pushed to a reference.
fn published_key(key: &str, reference: &str) -> String {
    crate::cache::sha256_str(&format!("published {key} {reference}"))
}

/// The publish targets of node `n` that this key has not been pushed to yet.
pub(crate) fn unpublished(ctx: &Ctx, n: NodeRef, key: &str) -> Vec<String> {
    let NodeRef::Image(j) = n else {
        return vec![];
    };
    ctx.ws.images[j]
        .publish
        .iter()
        .filter(|r| ctx.cache.entry(&published_key(key, r)).is_none())
        .cloned()
        .collect()
}

pub(crate) fn build_image(ctx: &Ctx, j: usize, key: &str) -> Result<Vec<OutFile>, String> {
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
            .write_tarball_tags(&tmp, &img.tags)
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
    let mut first_repo: std::collections::BTreeMap<String, String> = Default::default();
    for target in &img.publish {
        let r = pallet_registry::Reference::parse(target)
            .map_err(|e| format!("publish target {target}: {e}"))?;
        let mut client = pallet_registry::Client::new(r.clone(), &[]);
        // Later repositories of one registry mount the blobs from the first.
        let mount = first_repo.get(&r.registry).cloned();
        pallet_image::publish::push(
            &mut client,
            built.images(),
            built.index(),
            built.sboms(),
            mount.as_deref(),
        )
        .map_err(|e| format!("publishing to {target}: {e}"))?;
        first_repo
            .entry(r.registry.clone())
            .or_insert_with(|| r.repository.clone());
        log.line(format_args!("pushed {target}@{}", built.index_digest()));
        ctx.cache
            .put_entry(&published_key(key, target), &crate::cache::Entry::default())
            .map_err(|e| format!("writing the cache entry: {e}"))?;
    }
    Ok(files)
}
