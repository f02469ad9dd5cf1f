use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use super::GlobalArgs;
use crate::config::{Ec2BootMode, Format, Image};
use crate::manifest::Manifest;
use crate::publish::aws::{self, ebs::volume_size_gib, Ec2Settings};
use crate::publish::credentials::{self, Env, ProcessEnv};
use crate::publish::eucalyptus::{self, EucalyptusSettings};
use crate::publish::http::{RetryPolicy, Service};
use crate::publish::{setting, Artifact, Limits, Outcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Target {
    /// AWS EC2: EBS snapshot through the EBS direct APIs, then RegisterImage.
    Ec2,
    /// A Eucalyptus-compatible cloud: AMI bundle in S3, then RegisterImage.
    Eucalyptus,
}

/// What every command that talks to AWS (or an EC2-compatible cloud)
/// takes: where, as whom, and how hard to try.
#[derive(Debug, Clone, Args)]
pub(crate) struct AwsArgs {
    /// Profile in the shared credentials and config files (default: AWS_PROFILE, else `default`).
    #[arg(long)]
    pub(crate) profile: Option<String>,
    /// Region (default: the image file's, else AWS_REGION, AWS_DEFAULT_REGION or the profile's).
    #[arg(long)]
    pub(crate) region: Option<String>,
    /// EC2 API URL (default: the image file's, else AWS_ENDPOINT_URL_EC2 or AWS_ENDPOINT_URL, else AWS's).
    #[arg(long, value_name = "URL")]
    pub(crate) ec2_endpoint: Option<String>,
    /// Seconds each request may take, from connecting to the end of the answer.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub(crate) request_timeout: f64,
    /// Attempts per request (throttling, 5xx and dropped connections are retried).
    #[arg(long, default_value_t = 10)]
    pub(crate) attempts: u32,
    /// First wait before a retry, in milliseconds; it doubles per attempt, up to 20 s.
    #[arg(long, default_value_t = 200, value_name = "MS")]
    pub(crate) retry_delay: u64,
}

impl Default for AwsArgs {
    fn default() -> AwsArgs {
        AwsArgs {
            profile: None,
            region: None,
            ec2_endpoint: None,
            request_timeout: 60.0,
            attempts: 10,
            retry_delay: 200,
        }
    }
}

impl AwsArgs {
    /// The retry policy of every request.
    pub(crate) fn retry(&self) -> Result<RetryPolicy> {
        if !(self.request_timeout > 0.0 && self.request_timeout <= 3600.0) {
            bail!("--request-timeout must be more than 0 and at most 3600 seconds");
        }
        if self.attempts == 0 {
            bail!("--attempts must be at least 1");
        }
        Ok(RetryPolicy {
            attempts: self.attempts,
            base_delay: Duration::from_millis(self.retry_delay),
            max_delay: Duration::from_secs(20),
            request_timeout: Duration::from_secs_f64(self.request_timeout),
        })
    }

    /// The region and the EC2 API URL, each from the flag, else the image
    /// file's `[targets.ec2]` (`t`), else the environment (or the profile,
    /// or AWS's endpoint for the region).
    pub(crate) fn region_and_ec2_endpoint(
        &self,
        t: &crate::config::Ec2Target,
        env: &dyn Env,
    ) -> Result<(String, String)> {
        let region = self.region(t.region.clone(), env)?;
        let endpoint = setting::endpoint(
            self.ec2_endpoint.clone(),
            t.ec2_endpoint.clone(),
            Service::Ec2,
            env,
            || aws::default_ec2_endpoint(&region),
        );
        Ok((region, endpoint))
    }

    /// The region: the flag, else the image file's `[targets.ec2]`, else the
    /// environment or the profile.
    pub(crate) fn region(&self, file: Option<String>, env: &dyn Env) -> Result<String> {
        // The environment's lookup reads the profile's config file, which
        // can fail: it is read only when neither the flag nor the file says.
        match setting::flag_file_or_env(self.region.clone(), file, || None) {
            Some(r) => Ok(r),
            None => credentials::region(self.profile.as_deref(), env)?.context(
                "no region: pass --region, set `region` in [targets.ec2], or set AWS_REGION",
            ),
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// Where to publish.
    #[arg(long, value_enum)]
    pub(crate) target: Target,
    /// The image file (images/<name>.toml; its raw disk is taken from --out)
    /// or a built raw disk (out/<name>.raw, described by the manifest next to it).
    pub(crate) path: PathBuf,
    /// With a raw disk: take the target settings from this image file.
    #[arg(long, value_name = "IMAGE")]
    pub(crate) image: Option<PathBuf>,
    /// With an image file: the folder `biovm build` wrote to.
    #[arg(long, default_value = "out", value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Release name, tagged on the image and part of its name (default: sha-<first 12 hex digits of the sha256>).
    #[arg(long, value_name = "NAME")]
    pub(crate) release: Option<String>,
    #[command(flatten)]
    pub(crate) aws: AwsArgs,
    /// EBS direct API URL (default: the image file's, else AWS_ENDPOINT_URL_EBS or AWS_ENDPOINT_URL, else AWS's).
    #[arg(long, value_name = "URL")]
    pub(crate) ebs_endpoint: Option<String>,
    /// S3 API URL for Eucalyptus (default: the image file's, else AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL).
    #[arg(long, value_name = "URL")]
    pub(crate) s3_endpoint: Option<String>,
    /// Eucalyptus: the bucket the bundle goes to.
    #[arg(long)]
    pub(crate) bucket: Option<String>,
    /// Eucalyptus: the cloud's certificate (default: the image file's, else EUCALYPTUS_CERT).
    #[arg(long, value_name = "PEM")]
    pub(crate) cloud_cert: Option<PathBuf>,
    /// Eucalyptus: your certificate (default: the image file's, else EC2_CERT).
    #[arg(long, value_name = "PEM")]
    pub(crate) user_cert: Option<PathBuf>,
    /// Eucalyptus: your private key (default: the image file's, else EC2_PRIVATE_KEY).
    #[arg(long, value_name = "PEM")]
    pub(crate) user_key: Option<PathBuf>,
    /// Eucalyptus: your 12-digit account number (default: the image file's, else EC2_USER_ID).
    #[arg(long)]
    pub(crate) account_id: Option<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub(crate) jobs: usize,
    /// Seconds to wait for the snapshot to complete.
    #[arg(long, default_value_t = 1800, value_name = "SECS")]
    pub(crate) snapshot_wait: u64,
}

/// The artifact and the image settings that go with it.
fn artifact_and_image(g: &GlobalArgs, a: &PublishArgs) -> Result<(Artifact, Option<Image>)> {
    let load = |p: &Path| -> Result<Image> {
        let dir = crate::config::default_recipe_dir(Some(p), g.recipes.as_deref());
        Ok(crate::config::load_image(p, &dir)?)
    };
    let is_toml = a.path.extension().is_some_and(|e| e == "toml");
    if is_toml {
        if a.image.is_some() {
            bail!("--image goes with a raw disk, not with an image file");
        }
        let image = load(&a.path)?;
        let raw = crate::build::artifact_path(&a.out, &image.name, Format::Raw);
        if !raw.is_file() {
            bail!(
                "{} not found: build the image first (`biovm build {} --out {}`), or pass --out",
                raw.display(),
                a.path.display(),
                a.out.display()
            );
        }
        let art = Artifact::open(
            &raw,
            &image.name,
            &image.description,
            image.disk.boot.clone(),
            a.release.as_deref(),
        )?
        .with_data_disk()?;
        return Ok((art, Some(image)));
    }
    let named_raw = a
        .path
        .file_name()
        .and_then(|n| Format::from_file_name(&n.to_string_lossy()))
        == Some(Format::Raw);
    if a.path.extension().is_some() && !named_raw {
        bail!(
            "{}: biovm publishes raw disks (.raw) or image files (.toml)",
            a.path.display()
        );
    }
    let image = a.image.as_deref().map(load).transpose()?;
    let (name, description, boot) = match (Manifest::for_artifact(&a.path), &image) {
        (Ok(m), _) => {
            let b = m.boot_modes();
            (m.image, m.description, b)
        }
        (Err(_), Some(img)) => (
            img.name.clone(),
            img.description.clone(),
            img.disk.boot.clone(),
        ),
        (Err(e), None) => {
            return Err(e.context(format!("cannot tell which image {} is", a.path.display())))
        }
    };
    if let Some(img) = &image {
        if img.name != name {
            bail!(
                "{} is a disk of image `{name}`, but --image names `{}`",
                a.path.display(),
                img.name
            );
        }
    }
    let art = Artifact::open(&a.path, &name, &description, boot, a.release.as_deref())?
        .with_data_disk()?;
    Ok((art, image))
}

pub(super) fn limits(a: &PublishArgs) -> Result<Limits> {
    if a.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    Ok(Limits {
        retry: a.aws.retry()?,
        jobs: a.jobs,
        snapshot_wait: Duration::from_secs(a.snapshot_wait),
        poll: Duration::from_secs(5).min(Duration::from_secs(a.snapshot_wait.max(1))),
    })
}

pub(super) fn ec2_settings(
    a: &PublishArgs,
    art: &Artifact,
    image: Option<&Image>,
    env: &dyn Env,
) -> Result<Ec2Settings> {
    let t = image
        .and_then(|i| i.targets.ec2.clone())
        .unwrap_or_default();
    let (region, ec2_endpoint) = a.aws.region_and_ec2_endpoint(&t, env)?;
    let ebs_endpoint = setting::endpoint(
        a.ebs_endpoint.clone(),
        t.ebs_endpoint.clone(),
        Service::Ebs,
        env,
        || aws::default_ebs_endpoint(&region),
    );
    let min = volume_size_gib(art.size);
    let volume = t.volume_size_bytes.map(|b| b >> 30).unwrap_or(min).max(min);
    let boot_mode = t
        .boot_mode
        .unwrap_or_else(|| Ec2BootMode::for_disk(&art.boot));
    Ok(Ec2Settings {
        region,
        ec2_endpoint,
        ebs_endpoint,
        volume_type: t.volume_type,
        volume_size_gib: volume,
        boot_mode,
        ena: t.ena,
        imds_v2: t.imds_v2,
    })
}

pub(super) fn eucalyptus_settings(
    a: &PublishArgs,
    art: &Artifact,
    image: Option<&Image>,
    env: &dyn Env,
) -> Result<EucalyptusSettings> {
    let t = image.and_then(|i| i.targets.eucalyptus.clone());
    let region = setting::flag_file_or_env(
        a.aws.region.clone(),
        t.as_ref().map(|t| t.region.clone()),
        || None,
    )
    .unwrap_or_else(|| "eucalyptus".to_string());
    let ec2_endpoint = setting::flag_file_or_env(
        a.aws.ec2_endpoint.clone(),
        t.as_ref().map(|t| t.ec2_endpoint.clone()),
        || setting::endpoint_from_env(Service::Ec2, env),
    )
    .context(
        "no EC2 endpoint: pass --ec2-endpoint or set `ec2-endpoint` in [targets.eucalyptus]",
    )?;
    let s3_endpoint = setting::flag_file_or_env(
        a.s3_endpoint.clone(),
        t.as_ref().map(|t| t.s3_endpoint.clone()),
        || setting::endpoint_from_env(Service::S3, env),
    )
    .context("no S3 endpoint: pass --s3-endpoint or set `s3-endpoint` in [targets.eucalyptus]")?;
    let bucket = setting::flag_file_or_env(
        a.bucket.clone(),
        t.as_ref().map(|t| t.bucket.clone()),
        || None,
    )
    .context("no bucket: pass --bucket or set `bucket` in [targets.eucalyptus]")?;
    crate::config::check_bucket(&bucket).map_err(|e| anyhow::anyhow!("--bucket: {e}"))?;
    let cloud_cert = setting::flag_file_or_env(
        a.cloud_cert.clone(),
        t.as_ref().map(|t| t.cloud_cert.clone()),
        || setting::env_var(env, &["EUCALYPTUS_CERT"]).map(PathBuf::from),
    )
    .context(
        "no cloud certificate: pass --cloud-cert, set `cloud-cert` in [targets.eucalyptus] \
         or set EUCALYPTUS_CERT",
    )?;
    let user_cert = setting::flag_file_or_env(
        a.user_cert.clone(),
        t.as_ref().and_then(|t| t.user_cert.clone()),
        || setting::env_var(env, &["EC2_CERT"]).map(PathBuf::from),
    )
    .context(
        "no user certificate: pass --user-cert, set `user-cert` in [targets.eucalyptus] \
         or set EC2_CERT",
    )?;
    let user_key = setting::flag_file_or_env(
        a.user_key.clone(),
        t.as_ref().and_then(|t| t.user_key.clone()),
        || setting::env_var(env, &["EC2_PRIVATE_KEY"]).map(PathBuf::from),
    )
    .context(
        "no user private key: pass --user-key, set `user-key` in [targets.eucalyptus] \
         or set EC2_PRIVATE_KEY",
    )?;
    let account_id = setting::flag_file_or_env(
        a.account_id.clone(),
        t.as_ref().and_then(|t| t.account_id.clone()),
        || setting::env_var(env, &["EC2_USER_ID"]),
    )
    .context(
        "no account id: pass --account-id, set `account-id` in [targets.eucalyptus] \
         or set EC2_USER_ID",
    )?;
    crate::config::check_account_id(&account_id).map_err(|e| anyhow::anyhow!("account id: {e}"))?;
    let dir = art
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok(EucalyptusSettings {
        region,
        ec2_endpoint: ec2_endpoint.trim_end_matches('/').to_string(),
        s3_endpoint: s3_endpoint.trim_end_matches('/').to_string(),
        bucket,
        cloud_cert,
        user_cert,
        user_key,
        account_id,
        bundle_dir: dir.join(format!("{}.bundle", art.image)),
    })
}

fn print(o: &Outcome, json: bool) -> Result<()> {
    if json {
        crate::progress::result("publish", serde_json::to_value(o)?);
        return Ok(());
    }
    if o.created {
        println!(
            "published {} {} as {} in {}",
            o.image, o.release, o.image_id, o.region
        );
    } else {
        println!(
            "{} {} is already published as {} in {}; nothing changed",
            o.image, o.release, o.image_id, o.region
        );
    }
    if let Some(u) = &o.upload {
        println!(
            "snapshot {}: {} of {} blocks of {} KiB written ({} MiB) in {:.1} s",
            u.snapshot_id,
            u.blocks_written,
            u.blocks_total,
            u.block_size >> 10,
            u.block_bytes >> 20,
            u.seconds
        );
    }
    if let Some(l) = &o.image_location {
        println!("bundle: {l}");
    }
    println!(
        "{} requests, {} retried, {} bytes sent",
        o.requests, o.retries, o.bytes_sent
    );
    Ok(())
}

pub(crate) fn run(g: &GlobalArgs, a: PublishArgs) -> Result<ExitCode> {
    let env = ProcessEnv;
    let limits = limits(&a)?;
    let (art, image) = artifact_and_image(g, &a)?;
    let creds = credentials::load(a.aws.profile.as_deref(), &env)?;
    log::info!("credentials from {}", creds.source);
    let outcome = match a.target {
        Target::Ec2 => {
            let s = ec2_settings(&a, &art, image.as_ref(), &env)?;
            aws::publish(&art, &s, creds, &limits)?
        }
        Target::Eucalyptus => {
            let s = eucalyptus_settings(&a, &art, image.as_ref(), &env)?;
            eucalyptus::publish(&art, &s, creds, &limits)?
        }
    };
    print(&outcome, g.json)?;
    Ok(ExitCode::SUCCESS)
}
