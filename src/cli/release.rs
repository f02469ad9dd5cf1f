use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::publish::{ec2_settings, eucalyptus_settings, limits, AwsArgs, PublishArgs, Target};
use super::GlobalArgs;
use crate::config::Image;
use crate::publish::credentials::{self, ProcessEnv};
use crate::publish::{aws, eucalyptus, Artifact};
use crate::release::{self, Published, Publisher, ReleaseOptions};

#[derive(Debug, Args)]
pub(crate) struct ReleaseArgs {
    /// Image files (images/<name>.toml), each with its lock (<name>.lock) next to it.
    #[arg(required = true)]
    pub(crate) images: Vec<PathBuf>,
    /// The release folder: artifacts, SBOMs, test reports, SHA256SUMS,
    /// Vagrant metadata and release.json (builds are staged in DIR/.staging).
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Publish each image to the targets its image file names
    /// ([targets.ec2], [targets.eucalyptus]) once every test passed.
    #[arg(long)]
    pub(crate) publish: bool,
    /// Lock an image that has no lock yet (default: refuse; a release is
    /// built from a committed lock).
    #[arg(long)]
    pub(crate) lock: bool,
    /// Release version (default: the lock's SOURCE_DATE_EPOCH as YYYYMMDD.HHMMSS, UTC).
    #[arg(long, value_name = "VERSION")]
    pub(crate) version: Option<String>,
    /// URL the release folder is served from; Vagrant metadata points at
    /// <URL>/<name>.box (default: the bare file name).
    #[arg(long, value_name = "URL")]
    pub(crate) base_url: Option<String>,
    /// Also collect the sources behind the release into DIR/sources/: the
    /// Debian source packages of every locked binary and the PyPI source
    /// distributions of every locked wheel, each checked against its
    /// index's sha256, listed in release.json and the SBOM.
    #[arg(long)]
    pub(crate) sources: bool,
    #[command(flatten)]
    pub(crate) matrix: super::test::MatrixArgs,
    /// Debian mirror (default: the image's, else mmdebstrap's default).
    #[arg(long, value_name = "URL")]
    pub(crate) mirror: Option<String>,
    /// Cache folder shared by builds (default: $BIOVM_CACHE_DIR, else ~/.cache/biovm).
    #[arg(long, value_name = "DIR")]
    pub(crate) cache: Option<PathBuf>,
    /// Profile in the shared AWS credentials and config files.
    #[arg(long)]
    pub(crate) profile: Option<String>,
}

/// Publishes through the same settings `biovm publish` uses (image file,
/// then environment), with its default limits.
struct CliPublisher {
    profile: Option<String>,
}

impl CliPublisher {
    fn args(&self, target: Target, raw: &Path, release: &str) -> PublishArgs {
        PublishArgs {
            target,
            path: raw.to_path_buf(),
            image: None,
            out: PathBuf::from("out"),
            release: Some(release.to_string()),
            aws: AwsArgs {
                profile: self.profile.clone(),
                ..AwsArgs::default()
            },
            ebs_endpoint: None,
            s3_endpoint: None,
            bucket: None,
            cloud_cert: None,
            user_cert: None,
            user_key: None,
            account_id: None,
            jobs: 8,
            snapshot_wait: 1800,
        }
    }
}

impl Publisher for CliPublisher {
    fn publish(&self, image: &Image, raw: &Path, release: &str) -> Result<Vec<Published>> {
        let env = ProcessEnv;
        let art = Artifact::open(
            raw,
            &image.name,
            &image.description,
            image.disk.boot.clone(),
            Some(release),
        )?
        .with_data_disk()?;
        let mut out = Vec::new();
        let mut targets = Vec::new();
        if image.targets.ec2.is_some() {
            targets.push(Target::Ec2);
        }
        if image.targets.eucalyptus.is_some() {
            targets.push(Target::Eucalyptus);
        }
        for t in targets {
            let a = self.args(t, raw, release);
            let lim = limits(&a)?;
            let creds = credentials::load(self.profile.as_deref(), &env)?;
            log::info!("credentials from {}", creds.source);
            let o = match t {
                Target::Ec2 => {
                    let s = ec2_settings(&a, &art, Some(image), &env)?;
                    aws::publish(&art, &s, creds, &lim)?
                }
                Target::Eucalyptus => {
                    let s = eucalyptus_settings(&a, &art, Some(image), &env)?;
                    eucalyptus::publish(&art, &s, creds, &lim)?
                }
            };
            log::info!(
                "{}: {} {} as {} in {}",
                o.target,
                if o.created {
                    "published"
                } else {
                    "already published"
                },
                o.image,
                o.image_id,
                o.region
            );
            out.push(Published {
                target: o.target.clone(),
                region: o.region.clone(),
                release: o.release.clone(),
                image_id: o.image_id.clone(),
                snapshot_id: o.snapshot_id.clone(),
                data_snapshot_id: o.data_snapshot_id.clone(),
                image_location: o.image_location.clone(),
                created: o.created,
            });
        }
        Ok(out)
    }
}

pub(crate) fn run(g: &GlobalArgs, a: ReleaseArgs) -> Result<ExitCode> {
    let mut images = Vec::new();
    for p in &a.images {
        let dir = crate::config::default_recipe_dir(Some(p), g.recipes.as_deref());
        images.push(crate::config::load_image(p, &dir)?);
    }
    let opts = ReleaseOptions {
        out_dir: a.out.clone(),
        cache_dir: a.cache.clone().unwrap_or_else(crate::fsutil::cache_dir),
        mirror: a.mirror.clone(),
        version: a.version.clone(),
        base_url: a.base_url.clone(),
        lock_missing: a.lock,
        sources: a.sources,
        test: a.matrix.options()?,
    };
    let publisher = CliPublisher {
        profile: a.profile.clone(),
    };
    let outcome = release::release(
        &images,
        &opts,
        a.publish.then_some(&publisher as &dyn Publisher),
    )
    .with_context(|| format!("release into {} failed", a.out.display()))?;
    if g.json {
        crate::progress::result("release", serde_json::to_value(&outcome.index)?);
        return Ok(ExitCode::SUCCESS);
    }
    for s in &outcome.stages {
        println!(
            "{:<16} {:<8} {:<36} {:>7.1} s",
            s.image, s.stage, s.result, s.seconds
        );
    }
    for i in &outcome.index.images {
        println!(
            "{} {}: {} artifacts, {} test cells passed",
            i.name,
            i.version,
            i.artifacts.len(),
            i.tests.cells
        );
        for p in &i.published {
            println!(
                "  {} {} in {}{}",
                p.target,
                p.image_id,
                p.region,
                if p.created {
                    ""
                } else {
                    " (already published)"
                }
            );
        }
    }
    println!(
        "release written to {} in {:.1} s",
        a.out.join(release::INDEX_FILE).display(),
        outcome.seconds
    );
    Ok(ExitCode::SUCCESS)
}
