//! `biovm build`: run the stages in order for one image and write the
//! artifacts, each under a temporary name until it is complete.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::config::{Format, Image};
use crate::disk::{self, DiskIds, FsTime};
use crate::formats::{self, FormatContext};
use crate::fsutil;
use crate::lock::{Lock, LockedDeb, LockedDownload};
use crate::manifest::{Artifact, Manifest};
use crate::pool::Pool;
use crate::rootfs;
use crate::smoke::qemu::DiskFormat;

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub out_dir: PathBuf,
    pub cache_dir: PathBuf,
    /// Overrides the image's mirror.
    pub mirror: Option<String>,
    /// SOURCE_DATE_EPOCH for a build without a lock (default: the
    /// environment's, else now); a lock's always wins.
    pub source_date_epoch: Option<u64>,
    /// A vendor folder (`biovm vendor`) to build from with no network: every
    /// file the lock names comes from it (or the cache's pool).
    pub vendor: Option<PathBuf>,
    /// Bootstrap even when biovm's cache of bootstrapped trees has this
    /// build's ([`rootfs::cache`]); the new tree replaces the entry.
    pub fresh_bootstrap: bool,
}

impl BuildOptions {
    /// Where locked files are looked up: the vendor folder, then the cache's pool.
    pub fn pools(&self) -> Vec<Pool> {
        let mut v: Vec<Pool> = self.vendor.iter().map(|d| Pool::at(d)).collect();
        v.push(Pool::in_cache(&self.cache_dir));
        v
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageTime {
    pub stage: String,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildReport {
    pub image: String,
    pub stages: Vec<StageTime>,
    pub artifacts: Vec<Artifact>,
    pub root_tree_bytes: u64,
    /// Every timestamp in the artifacts.
    pub source_date_epoch: u64,
    /// Whether the build followed a lock file.
    pub locked: bool,
    pub debian_packages: usize,
    /// The hash of everything the build depended on ([`inputs_hash`]), for
    /// a build from a lock: a later build with the same inputs reuses this
    /// one's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_sha256: Option<String>,
    /// Set when this report is an earlier build's, reused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reused: bool,
    /// The key of the cached bootstrap the tree was unpacked from, when it
    /// was ([`rootfs::cache`]); absent when this build bootstrapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_from_cache: Option<String>,
}

/// The hash of everything a build of `image` from the lock `lock_path`
/// depends on: the biovm executable, the lock, the image file, its
/// system files, the formats asked for, and every recipe and data recipe
/// with its test data. (The mirror is not an input: a lock pins every package by
/// SHA-256, wherever it comes from.)
pub fn inputs_hash(image: &Image, lock_path: &Path) -> Result<String> {
    let mut k = crate::store::Key::new();
    k.add("biovm", crate::store::own_sha256()?.as_bytes());
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    k.add("lock", &read(lock_path)?);
    k.add("image", &read(&image.source)?);
    for f in &image.system.files {
        k.add(&format!("file {}", f.path), &f.content);
    }
    let formats: Vec<&str> = image.formats.iter().map(|f| f.as_str()).collect();
    k.add("formats", formats.join(",").as_bytes());
    let mut recipes: Vec<_> = image.recipes.iter().collect();
    recipes.sort_by(|a, b| a.name.cmp(&b.name));
    for r in recipes {
        add_with_test_data(&mut k, &format!("recipe {}", r.name), &r.source, &r.tests)?;
    }
    for d in &image.data {
        add_with_test_data(
            &mut k,
            &format!("data set {}", d.name),
            &d.source_file,
            &d.tests,
        )?;
    }
    Ok(k.finish())
}

/// Add the recipe (or data recipe) file `source` to `k` as `label`, and
/// the data of its tests (named relative to its folder).
fn add_with_test_data(
    k: &mut crate::store::Key,
    label: &str,
    source: &Path,
    tests: &[crate::config::FunctionalTest],
) -> Result<()> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    k.add(label, &read(source)?);
    let dir = source.parent().unwrap_or(Path::new("."));
    for t in tests {
        for d in &t.data {
            k.add(
                &format!("{label} data {}", d.display()),
                &read(&dir.join(d))?,
            );
        }
    }
    Ok(())
}

/// `<out>/<image>.build.json`: the report of the last complete build
/// there, written after every other output.
fn report_path(out: &Path, image: &str) -> PathBuf {
    out.join(format!("{image}.build.json"))
}

/// The earlier build in `out` that a build of `image` would repeat: made
/// from the same inputs ([`inputs_hash`]; only builds from a lock have
/// them), complete, and with every artifact it lists still holding the
/// bytes it had (SHA-256, from the digest memo where the file is
/// unchanged). None, with the reason logged, otherwise.
pub fn reusable(image: &Image, out: &Path) -> Result<Option<BuildReport>> {
    let lock_path = crate::lock::path_for(&image.source);
    if !lock_path.exists() {
        return Ok(None);
    }
    let rpath = report_path(out, &image.name);
    let Ok(text) = std::fs::read_to_string(&rpath) else {
        return Ok(None);
    };
    let Ok(mut report) = serde_json::from_str::<BuildReport>(&text) else {
        log::info!("{}: not a build report; building", rpath.display());
        return Ok(None);
    };
    let inputs = inputs_hash(image, &lock_path)?;
    if report.inputs_sha256.as_deref() != Some(inputs.as_str()) {
        log::info!(
            "{}: the last build there had other inputs (lock, image, recipes, formats or biovm); building",
            out.display()
        );
        return Ok(None);
    }
    let mpath = Manifest::path_for(out, &image.name);
    let manifest = match Manifest::read(&mpath) {
        Ok(m) if m.artifacts == report.artifacts => m,
        _ => {
            log::info!(
                "{}: missing or not the last build's; building",
                mpath.display()
            );
            return Ok(None);
        }
    };
    let data_disk = manifest.data_disk.iter().flat_map(|d| &d.files);
    let all: Vec<Artifact> = manifest
        .artifacts
        .iter()
        .chain(data_disk)
        .cloned()
        .collect();
    if let Some(p) = changed_artifact(out, &all) {
        log::info!(
            "{}: changed or missing since the last build; building",
            p.display()
        );
        return Ok(None);
    }
    for f in [
        "SHA256SUMS".to_string(),
        format!("{}.spdx.json", image.name),
    ] {
        if !out.join(&f).is_file() {
            log::info!("{}: missing; building", out.join(f).display());
            return Ok(None);
        }
    }
    report.reused = true;
    Ok(Some(report))
}

/// The first of `artifacts` (as a manifest in `dir` lists them) that is
/// missing or no longer has its size and SHA-256 (read from the digest
/// memo while the file is unchanged, so an intact build costs a stat each).
pub fn changed_artifact(dir: &Path, artifacts: &[Artifact]) -> Option<PathBuf> {
    artifacts
        .iter()
        .map(|a| (dir.join(&a.file), a))
        .find_map(|(p, a)| {
            let same = std::fs::metadata(&p).is_ok_and(|m| m.len() == a.size)
                && crate::store::sha256(&p).is_ok_and(|s| s == a.sha256);
            (!same).then_some(p)
        })
}

/// Build `image`, or reuse the complete earlier build in `opts.out_dir`
/// made from the same inputs ([`reusable`]) unless `rebuild`.
pub fn build_or_reuse(image: &Image, opts: &BuildOptions, rebuild: bool) -> Result<BuildReport> {
    if !rebuild {
        if let Some(r) = reusable(image, &opts.out_dir)? {
            log::info!(
                "{}: built before from the same inputs (sha256 {}): reused",
                opts.out_dir.display(),
                r.inputs_sha256.as_deref().unwrap_or_default()
            );
            return Ok(r);
        }
    }
    build(image, opts)
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
    let t = Instant::now();
    let v = crate::progress::stage("build", stage, f)?;
    let seconds = t.elapsed().as_secs_f64();
    stages.push(StageTime {
        stage: stage.to_string(),
        seconds,
    });
    Ok(v)
}

/// Build `image` into `opts.out_dir`: the downloads, the bootstrapped and
/// configured tree, the disk and every format, then the SBOM, the sums,
/// the manifest and last the report that says the build is complete.
pub fn build(image: &Image, opts: &BuildOptions) -> Result<BuildReport> {
    crate::doctor::require(crate::doctor::Need::Build)?;
    let mut image = image.clone();
    if let Some(m) = &opts.mirror {
        image.base.mirror = Some(m.clone());
    }
    let out = &opts.out_dir;
    prepare_out_dir(out, &image.name)?;
    // Scratch space next to the outputs (same filesystem), hidden and
    // named like every other temporary so a later run cleans it up.
    let work = fsutil::Scratch::new_in(out, &format!("{}.work", image.name))?;
    let root = work.path().join("root");
    let requested = rootfs::requested_packages(&image);
    let lock_path = crate::lock::path_for(&image.source);
    let lock = read_lock(&image, &requested, &lock_path, opts)?;
    // Taken before anything is read: an input changed during the build
    // then does not match the report.
    let inputs = match &lock {
        Some(_) => Some(inputs_hash(&image, &lock_path)?),
        None => None,
    };
    let (packages, seed, epoch) = match &lock {
        Some(l) => (l.apt_specs(), l.seed.clone(), l.source_date_epoch),
        None => (
            requested.clone(),
            seed(&image),
            opts.source_date_epoch.unwrap_or_else(source_date_epoch),
        ),
    };
    let ids = DiskIds::from_seed(&seed);
    let mut stages = Vec::new();

    // Downloads first: a bad hash stops the build before anything is written.
    let pools = opts.pools();
    let (downloads, pypi_files, data_files) = timed(&mut stages, "downloads", || {
        let (d, p) = fetch_inputs(&image, lock.as_ref(), opts, &pools)?;
        let offline = opts.vendor.is_some();
        let data = crate::data::fetch_all(&image, &opts.cache_dir, &pools, offline)?;
        Ok((d, p, data))
    })?;
    let repo = work.path().join("locked-packages");
    // A locked bootstrap is kept for, and taken from, biovm's cache of trees.
    let cached = match (&lock, rootfs::cache::BootstrapCache::new(&opts.cache_dir)?) {
        (Some(l), Some(c)) => Some((
            c,
            rootfs::cache::Key::of(&image, &packages, &l.debian, epoch)?,
        )),
        _ => None,
    };
    let mut from_cache = None;
    let debs = timed(&mut stages, "bootstrap", || {
        let hit = match &cached {
            Some((c, k)) if !opts.fresh_bootstrap => c.take(k, &root)?,
            _ => None,
        };
        let bootstrapped = hit.is_none();
        let debs = match hit {
            Some(h) => {
                from_cache = Some(h.key);
                h.debian
            }
            None => {
                let (sources, missing) = match &lock {
                    Some(l) => locked_sources(&image, l, &lock_path, opts, &pools, &repo)?,
                    None => (rootfs::Sources::Mirror, Vec::new()),
                };
                rootfs::bootstrap(&image, &packages, sources, &opts.cache_dir, epoch, &root)
                    .map_err(|e| match &lock {
                        Some(_) => locked_bootstrap_failed(e, &image, &lock_path, &missing),
                        None => e,
                    })?;
                let indices = crate::lock::read_indices(&root)?;
                crate::lock::debs_of(&root, &indices)?
            }
        };
        // Unpacked or bootstrapped, the tree holds exactly the lock's packages.
        if let Some(l) = &lock {
            l.verify_tree(&debs, &lock_path)?;
            keep_locked(l, &opts.cache_dir, &image, &downloads, &pypi_files);
        }
        if let (true, Some((c, k))) = (bootstrapped, &cached) {
            c.keep(k, &image.name, &root, &debs);
        }
        Ok(debs)
    })?;
    timed(&mut stages, "configure", || {
        for (file, d) in &downloads {
            crate::fetch::install(file, d, &root)?;
        }
        crate::pypi::install(&image.recipes, &pypi_files, &root, epoch)?;
        crate::workbench::install(&image, &debs, &root)?;
        rootfs::configure(&image, &ids, epoch, &root)
    })?;
    // A stage of its own only for an image with reference data.
    let data = if image.data.is_empty() {
        Vec::new()
    } else {
        timed(&mut stages, "data", || {
            let locked = lock.as_ref().map(|l| l.data.as_slice());
            crate::data::install(&image, &data_files, locked, &root)
        })?
    };
    // On a data disk of its own, the data leaves the root filesystem.
    let data_disk = if image.data_disk {
        Some(timed(&mut stages, "data-disk", || {
            crate::data::disk::build(&image, &root, &seed, epoch, work.path(), out)
        })?)
    } else {
        None
    };
    let root_tree_bytes = tree_size(&root);
    timed(&mut stages, "clamp-times", || {
        fsutil::clamp_mtimes(&root, epoch)?;
        fsutil::require_fresh_bytecode(&root)
    })?;
    let version = env!("CARGO_PKG_VERSION");
    let mut ctx = FormatContext::new(&image.name, version, &seed, epoch);
    ctx.description = &image.description;
    ctx.user = image.system.user.as_ref().map(|u| u.name.as_str());
    let Written {
        artifacts,
        tree_sha256,
        container_trees,
        read_back,
        compared,
    } = write_artifacts(&image, &ids, &ctx, &root, out, work.path(), &mut stages)?;
    let sbom = write_sbom(&image, &ctx, &debs, &pypi_files, &data, out)?;
    let summed: Vec<Artifact> = artifacts
        .iter()
        .chain(data_disk.iter().flat_map(|d| &d.files))
        .cloned()
        .collect();
    write_sums(out, &summed, &sbom)?;
    let mut manifest = Manifest::new(&image, artifacts.clone())?;
    manifest.data_disk = data_disk;
    manifest.tools.extend(crate::data::checks(&image, &data)?);
    manifest.data = data;
    manifest.tree_sha256 = Some(tree_sha256);
    manifest.container_trees = container_trees;
    if read_back {
        manifest.tree_read_back_from = artifacts
            .iter()
            .find(|a| a.format == Format::Raw)
            .map(|a| a.sha256.clone());
    }
    manifest.sectors_compared_with_raw = artifacts
        .iter()
        .filter(|a| compared.contains(&a.format))
        .map(|a| a.sha256.clone())
        .collect();
    manifest.write(out)?;
    let report = BuildReport {
        image: image.name.clone(),
        stages,
        artifacts,
        root_tree_bytes,
        source_date_epoch: epoch,
        locked: lock.is_some(),
        debian_packages: debs.len(),
        inputs_sha256: inputs,
        reused: false,
        bootstrap_from_cache: from_cache,
    };
    fsutil::write_atomic(
        &report_path(out, &image.name),
        (serde_json::to_string_pretty(&report)? + "\n").as_bytes(),
    )?;
    Ok(report)
}

/// Make the output folder, clean its stale temporaries, and remove the
/// report of the last build there: it says a build there is complete, not
/// while this one runs.
fn prepare_out_dir(out: &Path, image: &str) -> Result<()> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create output folder {}", out.display()))?;
    fsutil::remove_stale_temps(out);
    let rpath = report_path(out, image);
    if rpath.exists() {
        std::fs::remove_file(&rpath)
            .with_context(|| format!("cannot remove {}", rpath.display()))?;
    }
    Ok(())
}

/// The image's lock, checked against the image; None (with a warning) when
/// there is none, which a build from a vendor folder refuses.
fn read_lock(
    image: &Image,
    requested: &[String],
    lock_path: &Path,
    opts: &BuildOptions,
) -> Result<Option<Lock>> {
    if lock_path.exists() {
        let l = Lock::read(lock_path)?;
        l.check_matches(image, requested, lock_path)?;
        log::info!("installing exactly what {} says", lock_path.display());
        Ok(Some(l))
    } else if opts.vendor.is_some() {
        bail!(
            "{} does not exist: a build from a vendor folder follows a lock",
            lock_path.display()
        );
    } else {
        log::warn!(
            "{} does not exist: resolving packages from the mirror as of now \
             (run `biovm lock {}` to pin them)",
            lock_path.display(),
            image.source.display()
        );
        Ok(None)
    }
}

/// Every recipe's downloaded files, and the PyPI files.
type Fetched = (
    Vec<(PathBuf, crate::config::Download)>,
    Vec<crate::pypi::PypiFile>,
);

/// The recipes' downloads and PyPI files: with a lock from the pools (the
/// vendor folder must hold them all), else from the network.
fn fetch_inputs(
    image: &Image,
    lock: Option<&Lock>,
    opts: &BuildOptions,
    pools: &[Pool],
) -> Result<Fetched> {
    let offline = opts.vendor.is_some();
    let d = crate::fetch::fetch_all(&image.recipes, &opts.cache_dir, pools, offline)?;
    let p = match lock {
        Some(l) => match crate::pypi::from_pools(&image.recipes, l, pools)? {
            Some(p) => p,
            None if offline => bail!(
                "the vendor folder {} lacks PyPI files the lock names; run `biovm vendor` again",
                opts.vendor.as_deref().unwrap_or(Path::new("")).display()
            ),
            None => crate::pypi::download(&image.recipes, &opts.cache_dir, Some(&l.pypi_hashes()))?,
        },
        None => crate::pypi::download(&image.recipes, &opts.cache_dir, None)?,
    };
    Ok((d, p))
}

/// The error of a bootstrap from a lock, saying what to do: the locked
/// packages `missing` from biovm's store (if any) are likely gone from the
/// mirror too.
fn locked_bootstrap_failed(
    e: anyhow::Error,
    image: &Image,
    lock_path: &Path,
    missing: &[String],
) -> anyhow::Error {
    if missing.is_empty() {
        e.context(format!(
            "a package pinned in {} did not install from biovm's store; run `biovm lock --update {}`",
            lock_path.display(),
            image.source.display()
        ))
    } else {
        e.context(in_neither(image, "(it seems) ", missing))
    }
}

/// What to say of locked packages (`name version`) that neither biovm's
/// store nor the mirror has (`seems`: as far as the failure tells).
fn in_neither(image: &Image, seems: &str, packages: &[String]) -> String {
    format!(
        "{} locked package(s) are in neither biovm's store nor {seems}the mirror: {}; \
         run `biovm lock --check {}` to see what the mirror dropped, or `biovm lock --update {}`",
        packages.len(),
        packages
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        image.source.display(),
        image.source.display()
    )
}

/// The disk (when a disk format is asked for) and every format, while
/// another thread digests the tree every artifact is made from (the
/// formats only read it): `biovm test` compares that digest with the tree
/// of each disk it boots and of each tree the native checks run in.
/// Once written, the raw disk's root filesystem is read back through the
/// kernel (beside the formats, while its pages are fresh) and must hold
/// that very tree: a native run in this disk, as built, need not read it
/// again (see `smoke::tree::read_back_by_build`).
fn write_artifacts(
    image: &Image,
    ids: &DiskIds,
    ctx: &FormatContext,
    root: &Path,
    out: &Path,
    work: &Path,
    stages: &mut Vec<StageTime>,
) -> Result<Written> {
    let raw = out.join(format!("{}.{}", image.name, Format::Raw.extension()));
    let needs_raw = image.formats.iter().any(|f| f.is_disk());
    let time = FsTime {
        source_date_epoch: ctx.source_date_epoch,
    };
    std::thread::scope(|s| -> Result<_> {
        // The walk also digests the tree each container format holds
        // (the tree less what it leaves out).
        let digest = s.spawn(|| {
            let t0 = std::time::Instant::now();
            let d = crate::smoke::tree::digest_dir_and_containers(root, &image.formats);
            log::info!("root tree digested in {:.1} s", t0.elapsed().as_secs_f64());
            d
        });
        let mut read_back = None;
        if needs_raw {
            timed(stages, "disk", || {
                disk::assemble(image, ids, root, work, &time, &raw)
            })?;
            if crate::smoke::tree::can_loop_mount() {
                let (raw, mnt) = (raw.clone(), work.join("read-back"));
                read_back = Some(s.spawn(move || disk_tree_digest(&raw, &mnt)));
            } else {
                log::info!("no loop devices here: the disk's root filesystem is not read back");
            }
        }
        let (artifacts, compared) = timed(stages, "formats", || {
            convert_all(image, ctx, &raw, root, out, work)
        })?;
        let (tree, container_trees) = digest
            .join()
            .map_err(|_| anyhow::anyhow!("the tree digest thread died"))??;
        let mut written = Written {
            artifacts,
            tree_sha256: tree,
            container_trees,
            read_back: false,
            compared,
        };
        let Some(read_back) = read_back else {
            return Ok(written);
        };
        // The time the build waits for it beyond the formats.
        let on_disk = timed(stages, "read-back", || {
            read_back
                .join()
                .map_err(|_| anyhow::anyhow!("the disk's read-back thread died"))?
        })?;
        same_tree_on_disk(&raw, &on_disk, &written.tree_sha256)?;
        written.read_back = true;
        Ok(written)
    })
}

/// What [`write_artifacts`] wrote, and what it proved of it.
struct Written {
    artifacts: Vec<Artifact>,
    /// The digest of the tree every artifact was made from.
    tree_sha256: String,
    /// The digest of the tree each container format holds.
    container_trees: std::collections::BTreeMap<Format, String>,
    /// Whether the raw disk was read back and holds that tree.
    read_back: bool,
    /// The formats whose disk holds every sector of the raw disk.
    compared: Vec<Format>,
}

/// The digest of the root filesystem of the disk file `raw`, read through
/// the kernel (mounted read-only at the empty folder `mnt`).
fn disk_tree_digest(raw: &Path, mnt: &Path) -> Result<String> {
    let t0 = std::time::Instant::now();
    let offset = crate::smoke::tree::root_partition_offset(raw)?;
    let d = crate::smoke::tree::mounted_digest(raw, offset, mnt)?;
    log::info!(
        "the disk's root filesystem read back in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(d)
}

/// Fail unless the digest `on_disk` of the root filesystem written to
/// `raw` is the digest `tree` of the tree it was made from.
fn same_tree_on_disk(raw: &Path, on_disk: &str, tree: &str) -> Result<()> {
    if on_disk != tree {
        bail!(
            "the root filesystem written to {} is not the tree the build made: \
             its digest is {on_disk}, the tree's {tree}",
            raw.display()
        );
    }
    Ok(())
}

/// Write the image's SPDX SBOM into `out` and return its path.
fn write_sbom(
    image: &Image,
    ctx: &FormatContext,
    debs: &[LockedDeb],
    pypi_files: &[crate::pypi::PypiFile],
    data: &[crate::data::BuiltData],
    out: &Path,
) -> Result<PathBuf> {
    let sbom = formats::spdx::sbom_path(out, &image.name);
    formats::spdx::write_sbom(
        &sbom,
        &formats::spdx::SbomInput {
            image: &image.name,
            description: &image.description,
            suite: &image.base.suite,
            tool_version: ctx.version,
            seed: ctx.seed,
            source_date_epoch: ctx.source_date_epoch,
            debian: debs,
            pypi: pypi_files
                .iter()
                .map(|p| (p.file.clone(), p.sha256.clone()))
                .collect(),
            downloads: image
                .recipes
                .iter()
                .flat_map(|r| {
                    r.install
                        .downloads
                        .iter()
                        .map(|d| (r.name.clone(), d.url.clone(), d.sha256.clone()))
                })
                .collect(),
            data,
        },
    )?;
    Ok(sbom)
}

/// The path of an image's artifact in `out`.
pub fn artifact_path(out: &Path, image: &str, f: Format) -> PathBuf {
    out.join(format!("{image}.{}", f.extension()))
}

/// Write every format the image asks for, in parallel: one thread per
/// chain (the OVA and the Vagrant box reuse the one VMDK), each reading
/// the raw disk or the tree once. Returns the artifacts in `image.formats`
/// order.
fn convert_all(
    image: &Image,
    ctx: &FormatContext,
    raw: &Path,
    root: &Path,
    out: &Path,
    work: &Path,
) -> Result<(Vec<Artifact>, Vec<Format>)> {
    let want = |f: Format| image.formats.contains(&f);
    let dest = |f: Format| artifact_path(out, &image.name, f);
    // The formats whose disk was found to hold the raw disk's sectors.
    let compared = std::sync::Mutex::new(Vec::new());
    let compare = |disk: &Path, qf: DiskFormat, formats: &[Format]| -> Result<()> {
        same_sectors_as_raw(raw, disk, qf)?;
        compared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(formats);
        Ok(())
    };
    type Job<'a> = Box<dyn FnOnce() -> Result<()> + Send + 'a>;
    // Each chain is named by the format it writes first.
    let mut jobs: Vec<(Format, Job)> = Vec::new();
    if want(Format::Qcow2) {
        jobs.push((
            Format::Qcow2,
            Box::new(|| {
                formats::write_qcow2(raw, &dest(Format::Qcow2), ctx)?;
                compare(&dest(Format::Qcow2), DiskFormat::Qcow2, &[Format::Qcow2])
            }),
        ));
    }
    if want(Format::Vdi) {
        jobs.push((
            Format::Vdi,
            Box::new(|| {
                formats::write_vdi(raw, &dest(Format::Vdi), ctx)?;
                compare(&dest(Format::Vdi), DiskFormat::Vdi, &[Format::Vdi])
            }),
        ));
    }
    if want(Format::Vmdk) || want(Format::Ova) || want(Format::Vagrant) {
        jobs.push((
            Format::Vmdk,
            Box::new(|| {
                // The VMDK artifact, or a scratch one when only the OVA/box want it.
                let vmdk = if want(Format::Vmdk) {
                    dest(Format::Vmdk)
                } else {
                    work.join("disk.vmdk")
                };
                formats::write_vmdk(raw, &vmdk, ctx)?;
                // The OVA and the box carry this very VMDK.
                let carriers = [Format::Vmdk, Format::Ova, Format::Vagrant];
                let carriers: Vec<Format> = carriers.into_iter().filter(|f| want(*f)).collect();
                compare(&vmdk, DiskFormat::Vmdk, &carriers)?;
                if want(Format::Ova) {
                    formats::write_ova_from_vmdk(&vmdk, &dest(Format::Ova), ctx)?;
                }
                if want(Format::Vagrant) {
                    formats::write_vagrant_box_from_vmdk(&vmdk, &dest(Format::Vagrant), ctx)?;
                }
                Ok(())
            }),
        ));
    }
    if want(Format::Oci) {
        jobs.push((
            Format::Oci,
            Box::new(|| formats::write_oci_layout(root, &dest(Format::Oci), ctx).map(|_| ())),
        ));
    }
    if want(Format::DockerArchive) {
        jobs.push((
            Format::DockerArchive,
            Box::new(|| formats::write_docker_archive(root, &dest(Format::DockerArchive), ctx)),
        ));
    }
    if want(Format::Sif) {
        jobs.push((
            Format::Sif,
            Box::new(|| formats::write_sif(root, &dest(Format::Sif), ctx)),
        ));
    }
    if want(Format::Tarball) {
        jobs.push((
            Format::Tarball,
            Box::new(|| {
                formats::write_rootfs_tarball(root, &dest(Format::Tarball), ctx).map(|_| ())
            }),
        ));
    }
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|(name, job)| {
                (
                    name,
                    s.spawn(move || {
                        crate::progress::stage("build", &format!("formats/{name}"), job)
                    }),
                )
            })
            .collect();
        for (name, h) in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("writing {name} panicked"))?
                .with_context(|| format!("writing the {name} format failed"))?;
        }
        Ok(())
    })?;
    let mut artifacts = Vec::new();
    for f in &image.formats {
        artifacts.push(artifact(*f, &dest(*f))?);
    }
    let compared = compared.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok((artifacts, compared))
}

/// Fail unless every sector QEMU reads from `disk` (a disk of QEMU format
/// `qf` the build just wrote from the raw disk `raw`) is `raw`'s, with the
/// same virtual size (`qemu-img compare`): biovm's own writers must give
/// back the disk they were given. The manifest then records the
/// artifact's SHA-256 (`sectors_compared_with_raw`), and a test of those
/// very bytes takes the raw disk's tree for its own (see `smoke::tree`):
/// for BioLinux 13 s for the qcow2 and 50 s for the VMDK (QEMU inflates
/// its grains), beside the OCI layout's writing, where a test would read
/// or compare each disk again, beside its boots.
fn same_sectors_as_raw(raw: &Path, disk: &Path, qf: DiskFormat) -> Result<()> {
    let t0 = std::time::Instant::now();
    if !crate::smoke::boot_disk::same_contents(raw, DiskFormat::Raw, disk, qf)? {
        bail!(
            "{} does not hold the sectors of {}, the disk it was written from",
            disk.display(),
            raw.display()
        );
    }
    log::info!(
        "{}: every sector equal to {}'s ({:.1} s)",
        disk.display(),
        raw.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// SHA256SUMS (`sha256sum -c` reads it): every artifact, then the SBOM.
fn write_sums(out: &Path, artifacts: &[Artifact], sbom: &Path) -> Result<()> {
    let mut sums: String = artifacts
        .iter()
        .map(|a| format!("{}  {}\n", a.sha256, a.file))
        .collect();
    let sbom_name = sbom.file_name().unwrap_or_default().to_string_lossy();
    sums.push_str(&format!("{}  {sbom_name}\n", fsutil::sha256_file(sbom)?));
    fsutil::write_atomic(&out.join("SHA256SUMS"), sums.as_bytes())
}

/// Files that two builds from one lock must give byte for byte: every
/// artifact (an OCI layout folder file by file), SHA256SUMS, the SBOM and
/// the manifest. (`<image>.build.json` holds timings and is left out.)
pub fn reproducible_outputs(image: &Image) -> Vec<String> {
    let mut v: Vec<String> = image
        .formats
        .iter()
        .map(|f| format!("{}.{}", image.name, f.extension()))
        .collect();
    if image.data_disk {
        v.push(crate::data::disk::file_name(&image.name, Format::Raw));
        if image.formats.contains(&Format::Qcow2) {
            v.push(crate::data::disk::file_name(&image.name, Format::Qcow2));
        }
    }
    v.push("SHA256SUMS".into());
    v.push(format!("{}.spdx.json", image.name));
    v.push(
        crate::manifest::Manifest::path_for(Path::new(""), &image.name)
            .to_string_lossy()
            .into_owned(),
    );
    v
}

/// Two builds gave different bytes.
#[derive(Debug, thiserror::Error)]
#[error("not reproducible: {artifact} {what}")]
pub struct NotReproducible {
    /// The file, relative to the output folder (`minimal.oci/blobs/sha256/...`).
    pub artifact: String,
    /// The first differing byte, when both builds wrote the file.
    pub offset: Option<u64>,
    what: String,
}

/// Compare `names` (files or folders) in the output folders `a` and `b`;
/// the first difference is named with its file and offset.
pub fn compare_outputs(a: &Path, b: &Path, names: &[String]) -> Result<u64> {
    fn walk(a: &Path, b: &Path, rel: &str, compared: &mut u64) -> Result<()> {
        let ma = std::fs::symlink_metadata(a).ok();
        let mb = std::fs::symlink_metadata(b).ok();
        let (ma, mb) = match (ma, mb) {
            (Some(x), Some(y)) => (x, y),
            (None, None) => {
                return Err(NotReproducible {
                    artifact: rel.to_string(),
                    offset: None,
                    what: "is written by neither build".into(),
                }
                .into())
            }
            (x, _) => {
                let (has, lacks) = if x.is_some() {
                    ("first", "second")
                } else {
                    ("second", "first")
                };
                return Err(NotReproducible {
                    artifact: rel.to_string(),
                    offset: None,
                    what: format!("is written by the {has} build but not by the {lacks}"),
                }
                .into());
            }
        };
        if ma.is_dir() != mb.is_dir() {
            return Err(NotReproducible {
                artifact: rel.to_string(),
                offset: None,
                what: "is a folder in one build and a file in the other".into(),
            }
            .into());
        }
        if ma.is_dir() {
            let names = |d: &Path| -> Result<std::collections::BTreeSet<String>> {
                let mut s = std::collections::BTreeSet::new();
                for e in
                    std::fs::read_dir(d).with_context(|| format!("cannot read {}", d.display()))?
                {
                    s.insert(e?.file_name().to_string_lossy().into_owned());
                }
                Ok(s)
            };
            let all: std::collections::BTreeSet<String> =
                names(a)?.union(&names(b)?).cloned().collect();
            for n in all {
                walk(&a.join(&n), &b.join(&n), &format!("{rel}/{n}"), compared)?;
            }
            return Ok(());
        }
        if let Some(off) = fsutil::first_difference(a, b)? {
            let what = if ma.len() != mb.len() && off == ma.len().min(mb.len()) {
                format!(
                    "differs between the two builds from byte {off} on: one is {} bytes, the other {}",
                    ma.len(),
                    mb.len()
                )
            } else {
                format!("differs between the two builds at byte {off} (0x{off:x})")
            };
            return Err(NotReproducible {
                artifact: rel.to_string(),
                offset: Some(off),
                what,
            }
            .into());
        }
        *compared += ma.len();
        Ok(())
    }
    let mut compared = 0;
    for n in names {
        walk(&a.join(n), &b.join(n), n, &mut compared)?;
    }
    Ok(compared)
}

/// `biovm build --verify-reproducible`: after the build `first` into
/// `opts.out_dir` (reused, from a kept bootstrap or fresh), build again
/// from a fresh bootstrap into a hidden temporary folder inside it (same
/// lock, same SOURCE_DATE_EPOCH, another folder and time), compare every
/// output and remove the second build. Returns the bytes compared. The
/// first build's tree came from a bootstrap too, at another time (a kept
/// one is a fresh bootstrap's tree), so equal outputs show two bootstraps
/// giving the same bytes.
pub fn verify_reproducible(image: &Image, opts: &BuildOptions, first: &BuildReport) -> Result<u64> {
    let second = fsutil::Scratch::new_in(&opts.out_dir, &format!("{}.verify", image.name))?;
    let mut o = opts.clone();
    o.out_dir = second.path().to_path_buf();
    o.source_date_epoch = Some(first.source_date_epoch);
    o.fresh_bootstrap = true;
    log::info!(
        "building {} again into {} to compare",
        image.name,
        second.path().display()
    );
    build(image, &o).context("the second build (--verify-reproducible) failed")?;
    compare_outputs(&opts.out_dir, second.path(), &reproducible_outputs(image))
}

/// An artifact's size and sha256 (at its final name); an OCI layout folder is named by the
/// sha256 of its index.json (which pins every blob by digest).
pub(crate) fn artifact(format: Format, path: &Path) -> Result<Artifact> {
    let (file, hashed) = if path.is_dir() {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        (format!("{name}/index.json"), path.join("index.json"))
    } else {
        (
            path.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            path.to_path_buf(),
        )
    };
    Ok(Artifact {
        format,
        file,
        size: std::fs::metadata(&hashed)?.len(),
        // Remembered by the file's identity: a later test or build of the
        // unchanged file does not read it again.
        sha256: crate::store::sha256(&hashed)?,
    })
}

/// Apparent size of every regular file under `dir` (symlinks not followed).
pub(crate) fn tree_size(dir: &Path) -> u64 {
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

/// Where a build from `lock` takes its packages: a local repository (in
/// `repo`) of every locked package the pools have, alone when they have
/// them all, else beside the mirror, once the mirror's signed indices show
/// it serves the rest as locked. Also returns the packages no pool has.
fn locked_sources<'a>(
    image: &Image,
    lock: &Lock,
    lock_path: &Path,
    opts: &BuildOptions,
    pools: &[Pool],
    repo: &'a Path,
) -> Result<(rootfs::Sources<'a>, Vec<String>)> {
    // What earlier builds downloaded into the name-keyed cache counts too.
    let cache_pool = Pool::in_cache(&opts.cache_dir);
    let adopted = crate::pool::adopt_debs(
        &cache_pool,
        &rootfs::deb_cache(&opts.cache_dir, image),
        &lock.debian,
    );
    if adopted > 0 {
        log::info!("kept {adopted} locked packages from the package cache in biovm's store");
    }
    let missing_debs = crate::pool::apt_repo(pools, &lock.debian, repo, false)?;
    let missing: Vec<String> = missing_debs
        .iter()
        .map(|d| format!("{} {}", d.name, d.version))
        .collect();
    if missing.is_empty() {
        log::info!(
            "all {} locked packages are in biovm's store: building from it, not the mirror",
            lock.debian.len()
        );
        return Ok((rootfs::Sources::Local(repo), missing));
    }
    if let Some(v) = &opts.vendor {
        bail!(
            "the vendor folder {} lacks {} locked package(s): {}; run `biovm vendor {} --out {}` again",
            v.display(),
            missing.len(),
            missing.iter().take(8).cloned().collect::<Vec<_>>().join(", "),
            image.source.display(),
            v.display()
        );
    }
    log::info!(
        "{} of {} locked packages come from the mirror, {} from biovm's store",
        missing.len(),
        lock.debian.len(),
        lock.debian.len() - missing.len()
    );
    // The mirror's signed indices first (what the bootstrap's apt reads
    // anyway): a package it serves with other content, or no longer
    // serves, stops the build now, not at the end of a bootstrap (ten
    // minutes for BioLinux).
    let wanted: Vec<LockedDeb> = missing_debs.into_iter().cloned().collect();
    let gone = crate::lock::check::not_served(image, &opts.cache_dir, &wanted)?;
    let before = "found before the bootstrap, in the mirror's signed indices";
    if let Some((g, sha)) = gone
        .iter()
        .find_map(|g| g.mirror_sha256.as_deref().map(|s| (g, s)))
    {
        return Err(crate::lock::other_content(&g.deb, sha, lock_path).context(before));
    }
    if !gone.is_empty() {
        let names: Vec<String> = gone
            .iter()
            .map(|g| format!("{} {}", g.deb.name, g.deb.version))
            .collect();
        return Err(anyhow::anyhow!(in_neither(image, "", &names)).context(before));
    }
    Ok((rootfs::Sources::MirrorAndLocal(repo), missing))
}

/// After a build from `lock`: keep every locked file it used in the cache's
/// pool, so the next build does not need the mirror, PyPI or the download
/// site to still serve it. A failure here costs only that.
fn keep_locked(
    lock: &Lock,
    cache: &Path,
    image: &Image,
    downloads: &[(PathBuf, crate::config::Download)],
    pypi: &[crate::pypi::PypiFile],
) {
    let pool = Pool::in_cache(cache);
    crate::pool::adopt_debs(&pool, &rootfs::deb_cache(cache, image), &lock.debian);
    let files = downloads
        .iter()
        .map(|(p, d)| (p.as_path(), d.sha256.as_str()))
        .chain(pypi.iter().map(|f| (f.path.as_path(), f.sha256.as_str())));
    for (path, sha) in files {
        if let Err(e) = pool.keep(path, sha) {
            log::warn!("{e:#}");
        }
    }
}

/// `biovm lock`: bootstrap the image once and record what it got.
pub fn lock(image: &Image, cache: &Path, update: bool) -> Result<(PathBuf, Lock, bool)> {
    crate::doctor::require(crate::doctor::Need::Build)?;
    let lock_path = crate::lock::path_for(&image.source);
    let requested = rootfs::requested_packages(image);
    if lock_path.exists() && !update {
        let l = Lock::read(&lock_path)?;
        l.check_matches(image, &requested, &lock_path)?;
        return Ok((lock_path, l, false));
    }
    let downloads = crate::fetch::fetch_all(&image.recipes, cache, &[], false)?;
    let pypi_files = crate::pypi::download(&image.recipes, cache, None)?;
    let data_files = crate::data::fetch_all(image, cache, &[], false)?;
    let work_parent = cache.join("work");
    std::fs::create_dir_all(&work_parent)?;
    let work = fsutil::Scratch::new_in(&work_parent, &format!("lock-{}.work", image.name))?;
    let root = work.path().join("root");
    let epoch = source_date_epoch();
    crate::progress::stage("lock", "bootstrap", || {
        rootfs::bootstrap(
            image,
            &requested,
            rootfs::Sources::Mirror,
            cache,
            epoch,
            &root,
        )
    })?;
    let indices = crate::lock::read_indices(&root)?;
    let debian = crate::lock::debs_of(&root, &indices)?;
    // The data sets built once in the bootstrapped tree (which has every
    // Debian tool): the lock pins each file's digest.
    let data = crate::progress::stage("lock", "data", || {
        crate::data::install(image, &data_files, None, &root)
    })?;
    let seed_src = format!(
        "{}:{epoch}:{}",
        seed(image),
        debian
            .iter()
            .map(|d| format!("{}={}", d.name, d.sha256))
            .collect::<Vec<_>>()
            .join(",")
    );
    let l = Lock {
        image: image.name.clone(),
        suite: image.base.suite.clone(),
        architecture: image.base.architecture.clone(),
        source_date_epoch: epoch,
        seed: fsutil::hex(&sha2::Sha256::digest(seed_src.as_bytes())),
        snapshot: image.base.snapshot.as_ref().map(|s| s.time.clone()),
        requested,
        debian,
        download: downloads
            .iter()
            .map(|(_, d)| LockedDownload {
                recipe: image
                    .recipes
                    .iter()
                    .find(|r| r.install.downloads.iter().any(|x| x.url == d.url))
                    .map(|r| r.name.clone())
                    .unwrap_or_default(),
                url: d.url.clone(),
                sha256: d.sha256.clone(),
            })
            .collect(),
        pypi: pypi_files
            .iter()
            .map(|p| crate::lock::LockedPypi {
                recipe: p.recipe.clone(),
                file: p.file.clone(),
                sha256: p.sha256.clone(),
            })
            .collect(),
        data,
    };
    l.write(&lock_path)?;
    Ok((lock_path, l, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        for o in [&a, &b] {
            std::fs::create_dir_all(o.join("x.oci/blobs/sha256")).unwrap();
            std::fs::write(o.join("x.raw"), vec![1u8; 10_000]).unwrap();
            std::fs::write(o.join("x.oci/index.json"), b"{}").unwrap();
            std::fs::write(o.join("x.oci/blobs/sha256/abc"), b"layer").unwrap();
        }
        (d, a, b)
    }

    fn names() -> Vec<String> {
        vec!["x.raw".into(), "x.oci".into()]
    }

    fn mismatch(e: anyhow::Error) -> NotReproducible {
        e.downcast::<NotReproducible>()
            .expect("a NotReproducible error")
    }

    #[test]
    fn identical_outputs_compare_equal() {
        let (_d, a, b) = setup();
        assert_eq!(compare_outputs(&a, &b, &names()).unwrap(), 10_000 + 2 + 5);
    }

    #[test]
    fn a_difference_names_the_file_and_offset() {
        let (_d, a, b) = setup();
        let mut v = vec![1u8; 10_000];
        v[4242] = 2;
        std::fs::write(b.join("x.raw"), v).unwrap();
        let e = compare_outputs(&a, &b, &names()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "not reproducible: x.raw differs between the two builds at byte 4242 (0x1092)"
        );
        let m = mismatch(e);
        assert_eq!((m.artifact.as_str(), m.offset), ("x.raw", Some(4242)));
    }

    #[test]
    fn a_difference_inside_a_folder_and_a_missing_file_are_named() {
        let (_d, a, b) = setup();
        std::fs::write(b.join("x.oci/blobs/sha256/abc"), b"layers").unwrap();
        let m = mismatch(compare_outputs(&a, &b, &names()).unwrap_err());
        assert_eq!(m.artifact, "x.oci/blobs/sha256/abc");
        assert_eq!(m.offset, Some(5), "the shorter file's length");
        assert!(m.to_string().contains("one is 5 bytes, the other 6"), "{m}");
        std::fs::write(b.join("x.oci/blobs/sha256/abc"), b"layer").unwrap();
        std::fs::write(b.join("x.oci/blobs/sha256/def"), b"extra").unwrap();
        let m = mismatch(compare_outputs(&a, &b, &names()).unwrap_err());
        assert_eq!(m.artifact, "x.oci/blobs/sha256/def");
        assert!(
            m.to_string()
                .contains("written by the second build but not by the first"),
            "{m}"
        );
    }

    #[test]
    fn every_artifact_and_the_sums_sbom_and_manifest_are_compared() {
        let img = crate::config::load_image(Path::new("images/minimal.toml"), Path::new("recipes"))
            .unwrap();
        let v = reproducible_outputs(&img);
        assert_eq!(v.len(), img.formats.len() + 3);
        for n in [
            "minimal.raw",
            "minimal.oci",
            "minimal.box",
            "SHA256SUMS",
            "minimal.spdx.json",
            "minimal.manifest.json",
        ] {
            assert!(v.iter().any(|x| x == n), "{n} in {v:?}");
        }
    }

    #[test]
    fn the_disk_is_read_back_and_a_tree_it_does_not_hold_fails_the_build() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/motd"), "as built\n").unwrap();
        let raw = d.path().join("tiny.raw");
        disk::raw_disk_of(&tree, &raw);
        let on_disk = disk_tree_digest(&raw, &d.path().join("mnt")).unwrap();
        let made = crate::smoke::tree::digest_dir(&tree).unwrap();
        same_tree_on_disk(&raw, &on_disk, &made).unwrap();
        // The tree changed after the disk was written: not the disk's.
        std::fs::write(tree.join("etc/motd"), "as built!\n").unwrap();
        let other = crate::smoke::tree::digest_dir(&tree).unwrap();
        let e = same_tree_on_disk(&raw, &on_disk, &other).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains(&format!("its digest is {on_disk}, the tree's {other}")),
            "{e}"
        );
        assert!(e.contains("tiny.raw"), "{e}");
    }

    #[test]
    fn a_complete_build_is_reused_until_an_artifact_or_output_changes() {
        let img = crate::config::load_image(Path::new("images/minimal.toml"), Path::new("recipes"))
            .unwrap();
        let d = tempfile::tempdir().unwrap();
        let out = d.path();
        let raw = out.join("minimal.raw");
        std::fs::write(&raw, b"the disk").unwrap();
        let artifacts = vec![Artifact {
            format: Format::Raw,
            file: "minimal.raw".into(),
            size: 8,
            sha256: fsutil::sha256_file(&raw).unwrap(),
        }];
        Manifest::new(&img, artifacts.clone())
            .unwrap()
            .write(out)
            .unwrap();
        std::fs::write(out.join("SHA256SUMS"), b"sums\n").unwrap();
        std::fs::write(out.join("minimal.spdx.json"), b"{}").unwrap();
        let report = |inputs: &str| BuildReport {
            image: "minimal".into(),
            stages: Vec::new(),
            artifacts: artifacts.clone(),
            root_tree_bytes: 0,
            source_date_epoch: 0,
            locked: true,
            debian_packages: 0,
            inputs_sha256: Some(inputs.into()),
            reused: false,
            bootstrap_from_cache: None,
        };
        let write_report = |r: &BuildReport| {
            std::fs::write(
                report_path(out, "minimal"),
                serde_json::to_string(r).unwrap(),
            )
            .unwrap()
        };
        let inputs = inputs_hash(&img, &crate::lock::path_for(&img.source)).unwrap();
        write_report(&report(&inputs));
        let again = reusable(&img, out)
            .unwrap()
            .expect("the same inputs, intact");
        assert!(again.reused);
        assert_eq!(again.artifacts, artifacts);

        // One byte more in the disk: built again.
        std::fs::write(&raw, b"the disk!").unwrap();
        assert!(reusable(&img, out).unwrap().is_none());
        // The same size, one byte changed: built again.
        std::fs::write(&raw, b"the dusk").unwrap();
        assert!(reusable(&img, out).unwrap().is_none());
        std::fs::write(&raw, b"the disk").unwrap();
        assert!(reusable(&img, out).unwrap().is_some(), "restored");
        // Another output gone, or other inputs: built again.
        std::fs::remove_file(out.join("SHA256SUMS")).unwrap();
        assert!(reusable(&img, out).unwrap().is_none());
        std::fs::write(out.join("SHA256SUMS"), b"sums\n").unwrap();
        write_report(&report(&"0".repeat(64)));
        assert!(reusable(&img, out).unwrap().is_none());
    }
}
