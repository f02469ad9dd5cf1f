//! `biovm release`: build each image from its lock, run the whole test
//! matrix, and only when every cell passed write the release into one
//! folder: the artifacts, the SBOMs, the manifests, the test reports,
//! Vagrant catalog metadata, SHA256SUMS and, last, the release index
//! `release.json` (schema: docs/release-index.schema.json).
//!
//! Layout of the release folder `DIR`:
//!
//! ```text
//! DIR/release.json               the index, renamed into place last
//! DIR/SHA256SUMS                 every file the index lists
//! DIR/<name>.<ext>               the artifacts (an OCI layout is a folder)
//! DIR/<name>.spdx.json           the SBOM
//! DIR/<name>.manifest.json       what `biovm test` needs to test an artifact later
//! DIR/<name>.test/               report.json, junit.xml, *.serial.log, *.results.log, *.imds.log
//! DIR/<name>.vagrant.json        Vagrant catalog metadata (images with the vagrant format)
//! DIR/.staging/<name>-<inputs>/  the build and its tests, kept for re-runs
//! ```
//!
//! Re-runs: a build is keyed by the hash of its inputs (the lock, the image
//! file, every recipe file and test data file the image uses, the files it
//! installs, and biovm's version). A staging folder with the same key holds
//! a finished build (and, once its matrix passed, a marker saying so), so a
//! second release reuses both; release files are hard links to the staged
//! ones, and publishing is idempotent by tags.
//!
//! Version: `--version`, else the lock's SOURCE_DATE_EPOCH as
//! `YYYYMMDD.HHMMSS` (UTC): the same lock always gives the same version, a
//! new lock a newer one, and Vagrant accepts it as a box version.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::build::{build, inputs_hash, BuildOptions};
use crate::config::{Format, Image};
use crate::fsutil::{self, place};
use crate::lock::Lock;
use crate::manifest::Manifest;
use crate::smoke::{self, report, TestOptions};

/// Version of the release index format (`format_version` in release.json).
pub(crate) const INDEX_FORMAT_VERSION: u32 = 1;

/// The index file's name in the release folder.
pub(crate) const INDEX_FILE: &str = "release.json";

/// Staging folders live here inside the release folder.
pub(crate) const STAGING: &str = ".staging";

#[derive(Debug, Clone)]
pub(crate) struct ReleaseOptions {
    pub(crate) out_dir: PathBuf,
    pub(crate) cache_dir: PathBuf,
    /// Overrides every image's mirror (for locking).
    pub(crate) mirror: Option<String>,
    /// The release version (default: from each lock's SOURCE_DATE_EPOCH).
    pub(crate) version: Option<String>,
    /// Where the release folder will be served from; Vagrant metadata URLs
    /// are `<base-url>/<file>` (default: the bare file name, relative).
    pub(crate) base_url: Option<String>,
    /// Lock an image that has no lock (instead of refusing).
    pub(crate) lock_missing: bool,
    /// Collect the Debian source packages and PyPI source distributions
    /// of every image's lock into `sources/` (see [`crate::sources`]).
    pub(crate) sources: bool,
    pub(crate) test: TestOptions,
}

/// One thing a publish target made for an image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Published {
    /// The cloud it went to: `ec2` or `eucalyptus`.
    pub target: String,
    /// The cloud's region.
    pub region: String,
    /// The release name tagged on the cloud image.
    pub release: String,
    /// The machine image ID (`ami-...`, `emi-...`).
    pub image_id: String,
    /// EC2: the EBS snapshot the AMI boots from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// EC2: the data disk's snapshot, which the AMI maps to /dev/sdf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_snapshot_id: Option<String>,
    /// Eucalyptus: the bucket and manifest of the uploaded bundle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_location: Option<String>,
    /// Whether this run created it (false: it was already there).
    pub created: bool,
}

/// Publishes one image's raw disk to every target its image file names;
/// called only after every image of the release passed its tests.
pub(crate) trait Publisher {
    fn publish(&self, image: &Image, raw: &Path, release: &str) -> Result<Vec<Published>>;
}

/// A file in the release folder, by path relative to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileRef {
    /// Its path relative to the release folder.
    pub file: String,
    /// The SHA-256 of its bytes (lower-case hex).
    pub sha256: String,
}

/// One artifact of a released image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexArtifact {
    /// Its format.
    pub format: Format,
    /// Its path relative to the release folder (for an OCI layout, a
    /// folder, its `index.json`).
    pub file: String,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 of `file`'s bytes.
    pub sha256: String,
}

/// How a released image was tested: the reports, the logs, and the matrix.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexTests {
    /// `report.json`: one entry per matrix cell.
    pub report: FileRef,
    /// `junit.xml`: the same results for CI.
    pub junit: FileRef,
    /// Each cell's logs: serial consoles (`*.serial.log`), results
    /// (`*.results.log`) and, for EC2 cells, the metadata service's requests
    /// (`*.imds.log`).
    pub logs: Vec<FileRef>,
    /// Matrix cells run (artifact x firmware, and each container artifact).
    pub cells: usize,
    /// Where the checks ran: `native-and-boot-sample` (every check once
    /// natively in the disk's own tree, each boot the system's checks and
    /// one tool per install source, each container artifact holding the
    /// build's tree the sample) or `every-check-in-every-boot` (`--full`).
    pub checks: String,
    /// Whether every cell passed: always true, since a release is only
    /// written when every cell passed.
    pub passed: bool,
}

/// One image of a release: what it was built from, its artifacts, how it
/// was tested and where it was published.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexImage {
    /// The image's name.
    pub name: String,
    /// The image's description.
    pub description: String,
    /// The release version: `--version`, else the lock's
    /// SOURCE_DATE_EPOCH as `YYYYMMDD.HHMMSS` (UTC).
    pub version: String,
    /// sha256 of the build inputs (lock, image file, recipes, files, biovm version).
    pub inputs: String,
    /// Every timestamp in the artifacts (from the lock).
    pub source_date_epoch: u64,
    /// The Debian suite the image is built from.
    pub suite: String,
    /// The Debian architecture (`amd64`).
    pub architecture: String,
    /// The firmware its disks boot under (`uefi`, `bios`).
    pub boot: Vec<String>,
    /// The SHA-256 of the lock file it was built from.
    pub lock_sha256: String,
    /// Every artifact built.
    pub artifacts: Vec<IndexArtifact>,
    /// The SPDX 2.3 JSON SBOM.
    pub sbom: FileRef,
    /// `<name>.manifest.json`: the artifacts and every tool check (what
    /// `biovm test` reads).
    pub manifest: FileRef,
    /// How it was tested.
    pub tests: IndexTests,
    /// The Vagrant box catalog metadata (images with the vagrant format).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vagrant: Option<FileRef>,
    /// Every cloud image made from it.
    pub published: Vec<Published>,
    /// The lock against the mirror when the release was made (`biovm lock
    /// --check`): what a lock that builds forever also freezes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_check: Option<LockCheck>,
    /// The sources of the image's lock (`--sources`): each Debian source
    /// package with its binaries and files, each PyPI sdist with its
    /// wheels; the files are in the release's `sources/` folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<crate::sources::Sources>,
    /// The reference data sets the image carries, each verified in it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<IndexData>,
    /// The browser workbench, when the image carries one (checked in
    /// every boot of its test).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workbench: Option<crate::config::Workbench>,
}

/// One reference data set of a released image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexData {
    /// The data recipe's name.
    pub name: String,
    /// The organism.
    pub organism: String,
    /// The build, which names its folder in the image.
    pub build: String,
    /// The version of the data.
    pub version: String,
    /// Its licence or terms of use.
    pub license: String,
    /// Whether it may be redistributed.
    pub redistributable: bool,
    /// Its folder in the image.
    pub folder: String,
    /// Files in the folder (the content and every index output).
    pub files: usize,
    /// The SHA-256 of the content (the first file).
    pub sha256: String,
}

/// What the mirror said about an image's lock when the release was made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockCheck {
    /// When the mirror's indices were read (RFC 3339).
    pub checked: String,
    /// Locked versions the mirror no longer serves (`name version`); the
    /// build took them from biovm's store.
    pub gone: Vec<String>,
    /// Whether the mirror's sources had a security suite to compare with.
    pub security_index: bool,
    /// Locked packages the security suite has newer versions of.
    pub superseded: Vec<crate::lock::check::Superseded>,
}

/// `biovm lock --check` for a released image; a mirror that cannot be
/// asked leaves a warning, not a failed release.
fn lock_check(image: &Image, cache: &Path) -> Option<LockCheck> {
    match crate::lock::check::check(image, cache, None) {
        Ok(r) => Some(LockCheck {
            checked: jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string(),
            gone: r
                .gone
                .iter()
                .map(|g| format!("{} {}", g.deb.name, g.deb.version))
                .collect(),
            security_index: r.security_index,
            superseded: r.superseded,
        }),
        Err(e) => {
            log::warn!(
                "{}: cannot check the lock against the mirror: {e:#}",
                image.name
            );
            None
        }
    }
}

/// The release index, `release.json`: every image of a release, written
/// last into the release folder (schema: `docs/release-index.schema.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Index {
    /// The index format's version; a change that breaks readers raises it.
    pub format_version: u32,
    /// The biovm that wrote the release.
    pub biovm_version: String,
    /// When this index was written (RFC 3339, UTC).
    pub created: String,
    /// Every image of the release.
    pub images: Vec<IndexImage>,
}

/// What a release run did, with timings.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Outcome {
    pub(crate) index: Index,
    pub(crate) stages: Vec<StageLine>,
    pub(crate) seconds: f64,
}

/// One stage of one image: what happened and how long it took.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StageLine {
    pub(crate) image: String,
    pub(crate) stage: &'static str,
    /// `built`, `reused`, `passed`, `published`, `already published`, ...
    pub(crate) result: String,
    pub(crate) seconds: f64,
}

/// The release failed because cells of the test matrix failed; nothing was
/// written to the release folder and nothing was published.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {cells} test cells failed; nothing was released or published:\n  {}", .lines.join("\n  "))]
pub(crate) struct TestsFailed {
    pub(crate) failed: usize,
    pub(crate) cells: usize,
    pub(crate) lines: Vec<String>,
}

/// The default version for a lock: its SOURCE_DATE_EPOCH as `YYYYMMDD.HHMMSS`.
pub(crate) fn default_version(source_date_epoch: u64) -> String {
    let t = crate::formats::rfc3339(source_date_epoch);
    // 2026-11-26T04:30:12Z
    let digits: String = t.chars().filter(|c| c.is_ascii_digit()).collect();
    format!("{}.{}", &digits[..8], &digits[8..14])
}

/// Written into a staging folder once its build finished, and updated once
/// its matrix passed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct StagingState {
    inputs: String,
    built: bool,
    tested: bool,
}

const STATE_FILE: &str = "staging.json";

fn read_state(dir: &Path) -> Option<StagingState> {
    let s = std::fs::read_to_string(dir.join(STATE_FILE)).ok()?;
    serde_json::from_str(&s).ok()
}

fn write_state(dir: &Path, s: &StagingState) -> Result<()> {
    fsutil::write_atomic(
        &dir.join(STATE_FILE),
        (serde_json::to_string_pretty(s)? + "\n").as_bytes(),
    )
}

/// One image, built and tested in its staging folder.
struct Staged {
    image: Image,
    dir: PathBuf,
    inputs: String,
    lock: Lock,
    lock_sha256: String,
    manifest: Manifest,
    reports: Vec<report::BootReport>,
    sources: Option<crate::sources::Sources>,
}

fn stage_line(
    stages: &mut Vec<StageLine>,
    image: &str,
    stage: &'static str,
    result: &str,
    t: Instant,
) {
    let seconds = t.elapsed().as_secs_f64();
    log::info!("{image}: {stage} {result} in {seconds:.1} s");
    stages.push(StageLine {
        image: image.to_string(),
        stage,
        result: result.to_string(),
        seconds,
    });
}

/// Make sure the image has a lock: refuse (telling how to make one), or
/// lock it when `opts.lock_missing`.
fn ensure_lock(
    image: &Image,
    opts: &ReleaseOptions,
    stages: &mut Vec<StageLine>,
) -> Result<PathBuf> {
    let lock_path = crate::lock::path_for(&image.source);
    if lock_path.exists() {
        return Ok(lock_path);
    }
    if !opts.lock_missing {
        bail!(
            "{} has no lock ({} does not exist): a release is built from a lock; run `biovm lock {}` \
             (and commit the lock), or pass --lock to lock it now",
            image.source.display(),
            lock_path.display(),
            image.source.display()
        );
    }
    let t = Instant::now();
    log::info!("{}: locking (no lock existed)", image.name);
    let (p, _, _) = crate::build::lock(image, &opts.cache_dir, false)
        .with_context(|| format!("locking {} failed", image.source.display()))?;
    stage_line(stages, &image.name, "lock", "written", t);
    Ok(p)
}

fn build_and_test(
    image: &Image,
    opts: &ReleaseOptions,
    stages: &mut Vec<StageLine>,
) -> Result<Staged> {
    let mut image = image.clone();
    if let Some(m) = &opts.mirror {
        image.base.mirror = Some(m.clone());
    }
    let lock_path = ensure_lock(&image, opts, stages)?;
    let lock = Lock::read(&lock_path)?;
    lock.check_matches(
        &image,
        &crate::rootfs::requested_packages(&image),
        &lock_path,
    )?;
    // Before the build: a source the mirror lacks fails the release early.
    let sources = if opts.sources {
        Some(collect_sources(&image, &lock, opts, stages)?)
    } else {
        None
    };
    let inputs = inputs_hash(&image, &lock_path)?;
    let dir = opts
        .out_dir
        .join(STAGING)
        .join(format!("{}-{}", image.name, &inputs[..16]));
    let state = read_state(&dir).filter(|s| s.inputs == inputs);

    let (manifest, was_reused) = build_staged(&image, opts, &dir, &inputs, state.as_ref(), stages)?;
    let tested = was_reused && state.as_ref().is_some_and(|s| s.tested);
    let reports = test_staged(&image, opts, &dir, &inputs, &manifest, tested, stages)?;
    Ok(Staged {
        lock_sha256: fsutil::sha256_file(&lock_path)?,
        image,
        dir,
        inputs,
        lock,
        manifest,
        reports,
        sources,
    })
}

fn collect_sources(
    image: &Image,
    lock: &Lock,
    opts: &ReleaseOptions,
    stages: &mut Vec<StageLine>,
) -> Result<crate::sources::Sources> {
    let t = Instant::now();
    let s = crate::sources::collect(image, lock, &opts.cache_dir)
        .with_context(|| format!("{}: collecting the sources of its lock failed", image.name))?;
    let files = s.files();
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    stage_line(
        stages,
        &image.name,
        "sources",
        &format!(
            "{} Debian source packages, {} PyPI sdists ({} files, {:.1} MiB)",
            s.debian.len(),
            s.pypi.len(),
            files.len(),
            bytes as f64 / (1024.0 * 1024.0)
        ),
        t,
    );
    Ok(s)
}

/// The staged build in `dir` of `inputs`: reused when `state` says it was
/// built and its artifacts are unchanged, else built again from scratch.
/// Returns its manifest and whether it was reused.
fn build_staged(
    image: &Image,
    opts: &ReleaseOptions,
    dir: &Path,
    inputs: &str,
    state: Option<&StagingState>,
    stages: &mut Vec<StageLine>,
) -> Result<(Manifest, bool)> {
    let t = Instant::now();
    let mpath = Manifest::path_for(dir, &image.name);
    let reused = match state {
        Some(s) if s.built => match Manifest::read(&mpath) {
            // A staged build someone changed is built again.
            Ok(m) if crate::build::changed_artifact(dir, &m.artifacts).is_none() => Some(m),
            _ => {
                log::warn!(
                    "{}: the staged build is incomplete or changed; building again",
                    dir.display()
                );
                None
            }
        },
        _ => None,
    };
    let (manifest, was_reused) = match reused {
        Some(m) => (m, true),
        None => {
            if dir.exists() {
                fsutil::remove_tree(dir)?;
            }
            log::info!("{}: building into {}", image.name, dir.display());
            let bopts = BuildOptions {
                out_dir: dir.to_path_buf(),
                cache_dir: opts.cache_dir.clone(),
                mirror: None,
                source_date_epoch: None,
                vendor: None,
                fresh_bootstrap: false,
            };
            build(image, &bopts)
                .with_context(|| format!("building {} failed", image.source.display()))?;
            write_state(
                dir,
                &StagingState {
                    inputs: inputs.to_string(),
                    built: true,
                    tested: false,
                },
            )?;
            (Manifest::read(&mpath)?, false)
        }
    };
    stage_line(
        stages,
        &image.name,
        "build",
        if was_reused { "reused" } else { "built" },
        t,
    );
    Ok((manifest, was_reused))
}

/// The matrix: every artifact the manifest lists, with its tools, under
/// every boot mode of the image; when `tested` (the staged build passed
/// it before), only the count of its cells from the report kept in `dir`.
/// A matrix that passes is recorded in the staging state.
fn test_staged(
    image: &Image,
    opts: &ReleaseOptions,
    dir: &Path,
    inputs: &str,
    manifest: &Manifest,
    tested: bool,
    stages: &mut Vec<StageLine>,
) -> Result<Vec<report::BootReport>> {
    let t = Instant::now();
    let report_dir = dir.join(format!("{}.test", image.name));
    let report_json = report_dir.join("report.json");
    if tested {
        let text = std::fs::read_to_string(&report_json)
            .with_context(|| format!("cannot read {}", report_json.display()))?;
        let v: Vec<serde_json::Value> = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a test report", report_json.display()))?;
        stage_line(
            stages,
            &image.name,
            "test",
            &format!("reused ({} cells passed)", v.len()),
            t,
        );
        Ok(Vec::new())
    } else {
        let artifacts = artifacts_of(dir, manifest)?;
        let r = smoke::test_artifacts(
            &artifacts,
            &manifest.tools,
            &manifest.boot_modes(),
            &report_dir,
            &TestOptions {
                tree_sha256: manifest.tree_sha256.clone(),
                container_trees: manifest.container_trees.clone(),
                default_user: manifest.default_user.clone(),
                workbench: manifest.workbench,
                data_disk: manifest
                    .data_disk
                    .as_ref()
                    .map(|d| d.in_dir(dir))
                    .transpose()?,
                stop_on_native_failure: true,
                full: opts.test.full || manifest.every_check_in_every_boot,
                boot_sample: manifest.boot_sample.clone(),
                ..opts.test.clone()
            },
        )?;
        let ok = r.iter().all(|x| x.passed());
        if ok {
            write_state(
                dir,
                &StagingState {
                    inputs: inputs.to_string(),
                    built: true,
                    tested: true,
                },
            )?;
        }
        stage_line(
            stages,
            &image.name,
            "test",
            &format!(
                "{} of {} cells passed",
                r.iter().filter(|x| x.passed()).count(),
                r.len()
            ),
            t,
        );
        Ok(r)
    }
}

/// The artifacts a manifest lists, as paths in `dir` (an OCI layout by its folder).
fn artifacts_of(dir: &Path, m: &Manifest) -> Result<Vec<(PathBuf, Format)>> {
    m.artifacts
        .iter()
        .map(|a| Ok((dir.join(top_component(&a.file)), a.format)))
        .collect()
}

/// `x.oci/index.json` -> `x.oci`; `x.raw` -> `x.raw`.
fn top_component(file: &str) -> &str {
    file.split('/').next().unwrap_or(file)
}

fn file_ref(root: &Path, rel: &str) -> Result<FileRef> {
    Ok(FileRef {
        file: rel.to_string(),
        sha256: fsutil::sha256_file(&root.join(rel))?,
    })
}

/// Vagrant box catalog metadata (what `vagrant box add URL-of-this-file`
/// reads): this version, plus the versions an earlier metadata file in the
/// folder already listed.
pub(crate) fn vagrant_metadata(
    previous: Option<&serde_json::Value>,
    name: &str,
    description: &str,
    version: &str,
    url: &str,
    sha256: &str,
) -> serde_json::Value {
    let this = serde_json::json!({
        "version": version,
        "providers": [{
            "name": "virtualbox",
            "url": url,
            "checksum_type": "sha256",
            "checksum": sha256,
        }],
    });
    let mut versions = vec![this];
    if let Some(old) = previous
        .and_then(|p| p.get("versions"))
        .and_then(|v| v.as_array())
    {
        versions.extend(
            old.iter()
                .filter(|v| v.get("version").and_then(|x| x.as_str()) != Some(version))
                .cloned(),
        );
    }
    serde_json::json!({
        "name": name,
        "description": description,
        "versions": versions,
    })
}

/// Write one image's files into the release folder; returns its index entry
/// (without what publishing adds).
fn write_image(s: &Staged, opts: &ReleaseOptions, version: &str) -> Result<IndexImage> {
    let out = &opts.out_dir;
    let name = &s.image.name;
    let mut artifacts = Vec::new();
    for a in &s.manifest.artifacts {
        let top = top_component(&a.file);
        place(&s.dir.join(top), &out.join(top))?;
        artifacts.push(IndexArtifact {
            format: a.format,
            file: a.file.clone(),
            size: a.size,
            sha256: a.sha256.clone(),
        });
    }
    let sbom_name = format!("{name}.spdx.json");
    match &s.sources {
        None => place(&s.dir.join(&sbom_name), &out.join(&sbom_name))?,
        Some(src) => write_sources(s, src, opts, &sbom_name)?,
    }
    let manifest_name = format!("{name}.manifest.json");
    place(&s.dir.join(&manifest_name), &out.join(&manifest_name))?;
    let test_name = format!("{name}.test");
    let test_dir = out.join(&test_name);
    if test_dir.exists() {
        fsutil::remove_tree(&test_dir)?;
    }
    // The reports and the logs (not the scratch files of the test runs,
    // such as the checks drives).
    std::fs::create_dir_all(&test_dir)
        .with_context(|| format!("cannot create folder {}", test_dir.display()))?;
    let staged_tests = s.dir.join(&test_name);
    let mut names: Vec<String> = std::fs::read_dir(&staged_tests)
        .with_context(|| format!("cannot read {}", staged_tests.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log") && !n.starts_with('.'))
        .collect();
    names.sort();
    for n in ["report.json", "junit.xml"]
        .iter()
        .map(|n| n.to_string())
        .chain(names.iter().cloned())
    {
        place(&staged_tests.join(&n), &test_dir.join(&n))?;
    }
    let mut logs_refs = Vec::new();
    for l in names {
        logs_refs.push(file_ref(out, &format!("{test_name}/{l}"))?);
    }
    let report_rel = format!("{test_name}/report.json");
    let cells = {
        let text = std::fs::read_to_string(out.join(&report_rel))?;
        let v: Vec<serde_json::Value> = serde_json::from_str(&text)?;
        v.len()
    };
    let vagrant = match s
        .manifest
        .artifacts
        .iter()
        .find(|a| a.format == Format::Vagrant)
    {
        None => None,
        Some(b) => {
            let meta_name = format!("{name}.vagrant.json");
            let meta_path = out.join(&meta_name);
            let previous = std::fs::read_to_string(&meta_path)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
            let url = match &opts.base_url {
                Some(base) => format!("{}/{}", base.trim_end_matches('/'), b.file),
                None => b.file.clone(),
            };
            let meta = vagrant_metadata(
                previous.as_ref(),
                name,
                &s.image.description,
                version,
                &url,
                &b.sha256,
            );
            fsutil::write_atomic(
                &meta_path,
                (serde_json::to_string_pretty(&meta)? + "\n").as_bytes(),
            )?;
            Some(file_ref(out, &meta_name)?)
        }
    };
    Ok(IndexImage {
        name: name.clone(),
        description: s.image.description.clone(),
        version: version.to_string(),
        inputs: s.inputs.clone(),
        source_date_epoch: s.lock.source_date_epoch,
        suite: s.manifest.suite.clone(),
        architecture: s.manifest.architecture.clone(),
        boot: s.manifest.boot.clone(),
        lock_sha256: s.lock_sha256.clone(),
        artifacts,
        sbom: file_ref(out, &sbom_name)?,
        manifest: file_ref(out, &manifest_name)?,
        tests: IndexTests {
            report: file_ref(out, &report_rel)?,
            junit: file_ref(out, &format!("{test_name}/junit.xml"))?,
            logs: logs_refs,
            cells,
            checks: checks_rule(opts.test.full || s.manifest.every_check_in_every_boot).into(),
            passed: true,
        },
        vagrant,
        published: Vec::new(),
        lock_check: lock_check(&s.image, &opts.cache_dir),
        sources: s.sources.clone(),
        data: index_data(&s.manifest.data),
        workbench: s.manifest.workbench,
    })
}

/// The release index's entry for each data set an image carries.
fn index_data(data: &[crate::data::BuiltData]) -> Vec<IndexData> {
    data.iter()
        .map(|d| IndexData {
            name: d.name.clone(),
            organism: d.organism.clone(),
            build: d.build.clone(),
            version: d.version.clone(),
            license: d.license.clone(),
            redistributable: d.redistributable,
            folder: d.folder(),
            files: d.files.len(),
            sha256: d
                .files
                .first()
                .map(|f| f.sha256.clone())
                .unwrap_or_default(),
        })
        .collect()
}

/// The source files into `sources/` (from biovm's store) and the SBOM
/// with the sources added.
fn write_sources(
    s: &Staged,
    src: &crate::sources::Sources,
    opts: &ReleaseOptions,
    sbom_name: &str,
) -> Result<()> {
    crate::sources::place(src, &opts.cache_dir, &opts.out_dir)?;
    let built = s.dir.join(sbom_name);
    let text = std::fs::read_to_string(&built)
        .with_context(|| format!("cannot read {}", built.display()))?;
    let sbom = crate::sources::with_sources(&text, src, &s.manifest.suite)?;
    fsutil::write_atomic(&opts.out_dir.join(sbom_name), sbom.as_bytes())
}

/// How the checks were spread over native runs and boots (recorded in
/// release.json): `full` when every check ran in every boot (`--full`, or
/// the image's `[checks] every-boot`).
pub(crate) fn checks_rule(full: bool) -> &'static str {
    if full {
        "every-check-in-every-boot"
    } else {
        "native-and-boot-sample"
    }
}

/// SHA256SUMS of the whole release (`sha256sum -c SHA256SUMS` in DIR checks
/// it): every artifact file, SBOM, manifest, Vagrant metadata, test report
/// and source file.
pub fn sums(index: &Index) -> String {
    let mut lines = Vec::new();
    for i in &index.images {
        for a in &i.artifacts {
            lines.push((a.file.clone(), a.sha256.clone()));
        }
        for r in [&i.sbom, &i.manifest, &i.tests.report, &i.tests.junit]
            .into_iter()
            .chain(i.tests.logs.iter())
            .chain(i.vagrant.iter())
        {
            lines.push((r.file.clone(), r.sha256.clone()));
        }
        for f in i.sources.iter().flat_map(|s| s.files()) {
            lines.push((f.file.clone(), f.sha256.clone()));
        }
    }
    // Images of one release share source files: each is listed once.
    let mut seen = std::collections::BTreeSet::new();
    lines.retain(|l| seen.insert(l.0.clone()));
    lines.iter().map(|(f, s)| format!("{s}  {f}\n")).collect()
}

/// Build, test and (if every cell passed) release `images` into
/// `opts.out_dir`; with a publisher, publish each image and record what it
/// made. On a failed cell nothing is written to the release folder (the
/// staging folder keeps the build and the reports) and nothing is published.
pub(crate) fn release(
    images: &[Image],
    opts: &ReleaseOptions,
    publisher: Option<&dyn Publisher>,
) -> Result<Outcome> {
    let start = Instant::now();
    if images.is_empty() {
        bail!("no image to release");
    }
    let mut names = std::collections::BTreeSet::new();
    for i in images {
        if !names.insert(i.name.clone()) {
            bail!(
                "two images are named `{}`; a release holds each name once",
                i.name
            );
        }
    }
    if let Some(v) = &opts.version {
        crate::publish::check_release(v).context("--version")?;
    }
    std::fs::create_dir_all(opts.out_dir.join(STAGING))
        .with_context(|| format!("cannot create {}", opts.out_dir.join(STAGING).display()))?;
    fsutil::remove_stale_temps(&opts.out_dir);
    let mut stages = Vec::new();
    let mut staged = Vec::new();
    for image in images {
        staged.push(build_and_test(image, opts, &mut stages)?);
    }
    let all: Vec<&report::BootReport> = staged.iter().flat_map(|s| s.reports.iter()).collect();
    let failed: Vec<&&report::BootReport> = all.iter().filter(|r| !r.passed()).collect();
    if !failed.is_empty() {
        let mut lines = Vec::new();
        for s in &staged {
            for f in report::failures(&s.reports) {
                lines.push(format!("{}: {f}", s.image.name));
            }
            if s.reports.iter().any(|r| !r.passed()) {
                lines.push(format!(
                    "{}: reports in {}",
                    s.image.name,
                    s.dir.join(format!("{}.test", s.image.name)).display()
                ));
            }
        }
        return Err(TestsFailed {
            failed: failed.len(),
            cells: all.len(),
            lines,
        }
        .into());
    }

    let mut index = Index {
        format_version: INDEX_FORMAT_VERSION,
        biovm_version: env!("CARGO_PKG_VERSION").to_string(),
        created: crate::formats::rfc3339(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        ),
        images: Vec::new(),
    };
    for s in &staged {
        let t = Instant::now();
        let version = opts
            .version
            .clone()
            .unwrap_or_else(|| default_version(s.lock.source_date_epoch));
        let mut entry = write_image(s, opts, &version)?;
        stage_line(&mut stages, &s.image.name, "release", "written", t);
        if let Some(p) = publisher {
            let t = Instant::now();
            let wants = s.image.targets.ec2.is_some() || s.image.targets.eucalyptus.is_some();
            if wants {
                if !s.image.formats.contains(&Format::Raw) {
                    bail!(
                        "{}: publishing needs the raw format (add \"raw\" to [output] formats)",
                        s.image.source.display()
                    );
                }
                let raw = opts.out_dir.join(format!("{}.raw", s.image.name));
                entry.published = p
                    .publish(&s.image, &raw, &version)
                    .with_context(|| format!("publishing {} failed", s.image.name))?;
                let created = entry.published.iter().filter(|p| p.created).count();
                let result = format!(
                    "{} new, {} already published",
                    created,
                    entry.published.len() - created
                );
                stage_line(&mut stages, &s.image.name, "publish", &result, t);
            } else {
                log::info!("{}: the image file names no publish target", s.image.name);
            }
        }
        index.images.push(entry);
    }
    fsutil::write_atomic(&opts.out_dir.join("SHA256SUMS"), sums(&index).as_bytes())?;
    fsutil::write_atomic(
        &opts.out_dir.join(INDEX_FILE),
        (serde_json::to_string_pretty(&index)? + "\n").as_bytes(),
    )?;
    remove_old_staging(&opts.out_dir, &staged);
    Ok(Outcome {
        index,
        stages,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// After a release, staging folders of its images with other inputs are
/// out of date: remove them.
fn remove_old_staging(out: &Path, staged: &[Staged]) {
    let Ok(rd) = std::fs::read_dir(out.join(STAGING)) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let keep = staged.iter().any(|s| s.dir == p);
        let ours = staged.iter().any(|s| {
            name.strip_prefix(&format!("{}-", s.image.name))
                .is_some_and(|h| h.len() == 16 && h.chars().all(|c| c.is_ascii_hexdigit()))
        });
        if ours && !keep {
            log::info!("removing out-of-date staging folder {}", p.display());
            if let Err(err) = fsutil::remove_tree(&p) {
                log::warn!("{err:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_set_is_indexed_by_its_folder_and_content() {
        let file = |path: &str, sha: &str| crate::data::DataFileDigest {
            path: path.into(),
            size: 3,
            sha256: sha.repeat(32),
        };
        let d = crate::data::BuiltData {
            name: "lambda-phage".into(),
            summary: "s".into(),
            organism: "Escherichia phage lambda".into(),
            build: "lambda".into(),
            version: "NC_001416.1".into(),
            license: "public-domain".into(),
            redistributable: true,
            source: "debian:bowtie2-examples:/x.fa.gz".into(),
            source_size: 1,
            source_sha256: "cd".repeat(32),
            files: vec![
                file("/data/genomes/lambda/lambda.fa", "ab"),
                file("/data/genomes/lambda/lambda.fa.fai", "ef"),
            ],
        };
        let i = index_data(&[d]);
        assert_eq!(i[0].folder, "/data/genomes/lambda");
        assert_eq!(i[0].files, 2);
        assert_eq!(i[0].sha256, "ab".repeat(32));
        let json = serde_json::to_value(&i[0]).unwrap();
        assert_eq!(json["version"], "NC_001416.1");
    }

    #[test]
    fn the_default_version_is_the_locks_date_and_time() {
        assert_eq!(default_version(0), "19700101.000000");
        // 2026-11-26T04:30:12Z
        assert_eq!(default_version(1_795_667_412), "20261126.043012");
    }

    #[test]
    fn vagrant_metadata_keeps_other_versions_and_replaces_this_one() {
        let first = vagrant_metadata(None, "m", "d", "1", "m.box", "aa");
        let second = vagrant_metadata(Some(&first), "m", "d", "2", "https://x/m.box", "bb");
        let again = vagrant_metadata(Some(&second), "m", "d", "2", "https://x/m.box", "cc");
        let versions: Vec<_> = again["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["version"].as_str().unwrap().to_string(),
                    v["providers"][0]["checksum"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            versions,
            [("2".into(), "cc".into()), ("1".into(), "aa".into())] as [(String, String); 2]
        );
        assert_eq!(
            again["versions"][0]["providers"][0]["checksum_type"],
            "sha256"
        );
        assert_eq!(again["versions"][0]["providers"][0]["name"], "virtualbox");
    }

    #[test]
    fn place_links_files_and_folders_and_a_rerun_keeps_them() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("s");
        std::fs::create_dir_all(src.join("x.oci/blobs")).unwrap();
        std::fs::write(src.join("x.oci/index.json"), b"{}").unwrap();
        std::fs::write(src.join("x.oci/blobs/a"), b"layer").unwrap();
        std::fs::write(src.join("x.raw"), b"disk").unwrap();
        let out = d.path().join("o");
        std::fs::create_dir_all(&out).unwrap();
        for _ in 0..2 {
            place(&src.join("x.oci"), &out.join("x.oci")).unwrap();
            place(&src.join("x.raw"), &out.join("x.raw")).unwrap();
        }
        assert_eq!(std::fs::read(out.join("x.oci/blobs/a")).unwrap(), b"layer");
        assert_eq!(std::fs::read(out.join("x.raw")).unwrap(), b"disk");
        let names: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary left: {names:?}");
        // A changed staged file replaces the released one.
        std::fs::remove_file(src.join("x.raw")).unwrap();
        std::fs::write(src.join("x.raw"), b"disk2").unwrap();
        place(&src.join("x.raw"), &out.join("x.raw")).unwrap();
        assert_eq!(std::fs::read(out.join("x.raw")).unwrap(), b"disk2");
    }

    #[test]
    fn the_inputs_hash_follows_the_lock_the_image_and_the_recipes() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("images")).unwrap();
        std::fs::create_dir_all(root.join("recipes/misc")).unwrap();
        let recipe = root.join("recipes/misc/hello.toml");
        std::fs::write(
            &recipe,
            "name = \"hello\"\nsummary = \"Says hello\"\ncategory = \"misc\"\nhomepage = \"https://example.org/hello\"\nlicense = \"GPL-3.0-or-later\"\n\n[install]\ndebian = [\"hello\"]\n\n[check]\ncommand = \"hello\"\nexpect = \"Hello\"\n\n[[test]]\nname = \"greet\"\nscript = \"hello < in.txt\"\nexpect = \"Hello\"\ndata = [\"data/hello/in.txt\"]\n",
        )
        .unwrap();
        let data = root.join("recipes/misc/data/hello/in.txt");
        std::fs::create_dir_all(data.parent().unwrap()).unwrap();
        std::fs::write(&data, "one").unwrap();
        let img = root.join("images/t.toml");
        std::fs::write(
            &img,
            "name = \"t\"\ndescription = \"t\"\n[base]\ndistribution = \"debian\"\nsuite = \"bookworm\"\n[recipes]\ninclude = [\"hello\"]\n[disk]\nsize = \"1GiB\"\n[output]\nformats = [\"raw\"]\n",
        )
        .unwrap();
        let lock = root.join("images/t.lock");
        std::fs::write(&lock, "lock one").unwrap();
        let load = || crate::config::load_image(&img, &root.join("recipes")).unwrap();
        let h1 = inputs_hash(&load(), &lock).unwrap();
        assert_eq!(h1, inputs_hash(&load(), &lock).unwrap());
        std::fs::write(&lock, "lock two").unwrap();
        let h2 = inputs_hash(&load(), &lock).unwrap();
        assert_ne!(h1, h2);
        let text = std::fs::read_to_string(&recipe)
            .unwrap()
            .replace("Hello", "Hello,");
        std::fs::write(&recipe, text).unwrap();
        let h3 = inputs_hash(&load(), &lock).unwrap();
        assert_ne!(h2, h3);
        std::fs::write(&data, "two").unwrap();
        let h4 = inputs_hash(&load(), &lock).unwrap();
        assert_ne!(h3, h4, "the test data is an input");
        std::fs::write(&img, std::fs::read_to_string(&img).unwrap() + "# comment\n").unwrap();
        assert_ne!(h4, inputs_hash(&load(), &lock).unwrap());
    }
}
