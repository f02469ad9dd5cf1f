//! `biovm build`: run the stages in order for one image and write the
//! artifacts, each under a temporary name until it is complete.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::config::{Format, Image};
use crate::disk::{self, DiskIds, FsTime};
use crate::fsutil;
use crate::manifest::{Artifact, Manifest};
use crate::rootfs;

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub out_dir: PathBuf,
    pub cache_dir: PathBuf,
    /// Overrides the image's mirror.
    pub mirror: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageTime {
    pub stage: &'static str,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub image: String,
    pub stages: Vec<StageTime>,
    pub artifacts: Vec<Artifact>,
    pub root_tree_bytes: u64,
}

/// The seed every identifier in the image derives from.
pub fn seed(image: &Image) -> String {
    format!(
        "biovm:{}:{}",
        image.name,
        rootfs::requested_packages(image).join(",")
    )
}

/// SOURCE_DATE_EPOCH from the environment, else now.
fn source_date_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        })
}

fn timed<T>(
    stages: &mut Vec<StageTime>,
    stage: &'static str,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    log::info!("{stage}...");
    let t = Instant::now();
    let v = f()?;
    let seconds = t.elapsed().as_secs_f64();
    log::info!("{stage}: {seconds:.1} s");
    stages.push(StageTime { stage, seconds });
    Ok(v)
}

pub fn build(image: &Image, opts: &BuildOptions) -> Result<BuildReport> {
    crate::doctor::require(crate::doctor::Need::Build)?;
    let mut image = image.clone();
    if let Some(m) = &opts.mirror {
        image.base.mirror = Some(m.clone());
    }
    let out = &opts.out_dir;
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create output folder {}", out.display()))?;
    fsutil::remove_stale_temps(out);
    // Scratch space next to the outputs (same filesystem), hidden and
    // named like every other temporary so a later run cleans it up.
    let work = WorkDir::create(out, &image.name)?;
    let root = work.path().join("root");
    let ids = DiskIds::from_seed(&seed(&image));
    let time = FsTime {
        source_date_epoch: source_date_epoch(),
    };
    let mut stages = Vec::new();

    timed(&mut stages, "bootstrap", || {
        rootfs::bootstrap(&image, &opts.cache_dir, &root)
    })?;
    timed(&mut stages, "configure", || {
        rootfs::configure(&image, &ids, &root)
    })?;
    let root_tree_bytes = tree_size(&root);
    let mut artifacts = Vec::new();
    for f in &image.formats {
        match f {
            Format::Raw => {
                let dest = out.join(format!("{}.{}", image.name, f.extension()));
                timed(&mut stages, "disk", || {
                    disk::assemble(&image, &ids, &root, work.path(), &time, &dest)
                })?;
                artifacts.push(artifact(*f, &dest)?);
            }
        }
    }
    Manifest::new(&image, artifacts.clone()).write(out)?;
    let report = BuildReport {
        image: image.name.clone(),
        stages,
        artifacts,
        root_tree_bytes,
    };
    fsutil::write_atomic(
        &out.join(format!("{}.build.json", image.name)),
        (serde_json::to_string_pretty(&report)? + "\n").as_bytes(),
    )?;
    Ok(report)
}

/// The scratch folder of one build, removed (without crossing mounts) when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create(out: &Path, name: &str) -> Result<WorkDir> {
        let p = out.join(format!(".{name}.work.{}.tmp", std::process::id()));
        fsutil::remove_tree(&p)?;
        std::fs::create_dir(&p).with_context(|| format!("cannot create {}", p.display()))?;
        Ok(WorkDir(p))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = fsutil::remove_tree(&self.0) {
            log::warn!("{e:#}");
        }
    }
}

fn artifact(format: Format, path: &Path) -> Result<Artifact> {
    Ok(Artifact {
        format: format.as_str().into(),
        file: path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        size: std::fs::metadata(path)?.len(),
        sha256: fsutil::sha256_file(path)?,
    })
}

/// Apparent size of every regular file under `dir` (symlinks not followed).
fn tree_size(dir: &Path) -> u64 {
    let mut n = 0;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    for e in rd.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => n += tree_size(&e.path()),
            Ok(t) if t.is_file() => n += e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => {}
        }
    }
    n
}
