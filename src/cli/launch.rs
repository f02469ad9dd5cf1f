//! `biovm launch --target ec2 IMAGE|AMI-ID`: start an instance of a
//! published image, wait until it runs, and say how to connect. This file
//! turns the arguments into a [`LaunchRequest`]; the steps are in
//! [`crate::publish::aws::launcher`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};

use super::GlobalArgs;
use crate::config::{Format, Image};
use crate::manifest::Manifest;
use crate::publish::aws::launch::{AmiQuery, DEFAULT_INSTANCE_TYPE};
use crate::publish::aws::launcher::{AmiChoice, LaunchRequest, LaunchWorkbench, Launched};
use crate::publish::credentials::{self, Env, ProcessEnv};
use crate::publish::http::RetryPolicy;
use crate::publish::setting;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Target {
    /// AWS EC2 (or an EC2-compatible API: --ec2-endpoint).
    Ec2,
}

#[derive(Debug, Args)]
pub(crate) struct LaunchArgs {
    /// Where to launch.
    #[arg(long, value_enum)]
    pub(crate) target: Target,
    /// The image file (images/<name>.toml: the AMI `biovm publish` made of
    /// it, found by its tags) or an AMI ID (ami-...).
    pub(crate) image: String,
    /// With an image file: the folder of its build; the AMI of that exact
    /// build is preferred when it is published.
    #[arg(long, default_value = "out", value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// With an image file: launch this release (its `biovm:version` tag)
    /// rather than the newest.
    #[arg(long, value_name = "NAME")]
    pub(crate) release: Option<String>,
    /// Instance type (default: the image file's `[targets.ec2] instance-type`, else t3.medium).
    #[arg(long, value_name = "TYPE")]
    pub(crate) instance_type: Option<String>,
    /// An existing EC2 key pair to log in with.
    #[arg(long, value_name = "NAME")]
    pub(crate) key_name: Option<String>,
    /// An OpenSSH public key (FILE.pub) given to the login user at first
    /// boot through cloud-init user data.
    #[arg(long, value_name = "FILE.pub")]
    pub(crate) ssh_key: Option<PathBuf>,
    /// The login user (default: the image's `[system.user]`, else biovm).
    #[arg(long)]
    pub(crate) user: Option<String>,
    /// Security group ID (repeatable; default: the subnet's VPC default group).
    #[arg(long = "security-group", value_name = "SG-ID")]
    pub(crate) security_groups: Vec<String>,
    /// The workbench's public mode (user data): HTTPS with the instance's
    /// token on port 443 of every interface; open port 443 to your address
    /// in the security group. Default: the workbench is on the instance's
    /// 127.0.0.1 only, reached through an SSH tunnel.
    #[arg(long)]
    pub(crate) public: bool,
    /// Seconds to read the instance's console for its workbench token
    /// (0: do not wait; the output says how to read it later).
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub(crate) workbench_wait: u64,
    /// Subnet ID (default: a default subnet of the region's default VPC).
    #[arg(long, value_name = "SUBNET-ID")]
    pub(crate) subnet: Option<String>,
    /// The instance's Name tag (default: biovm-<image>).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Seconds to wait for the instance to be running (and, before that,
    /// for a freshly registered AMI to be available).
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub(crate) wait_timeout: u64,
    #[command(flatten)]
    pub(crate) aws: super::publish::AwsArgs,
}

/// `ami-` and 8 or 17 hex digits.
fn is_ami_id(s: &str) -> bool {
    s.strip_prefix("ami-").is_some_and(|h| {
        (h.len() == 8 || h.len() == 17) && h.chars().all(|c| c.is_ascii_hexdigit())
    })
}

/// The raw disk's sha256 from the build's manifest, if there is a build.
fn local_build_sha256(out: &Path, image: &str) -> Option<String> {
    let m = Manifest::read(&Manifest::path_for(out, image)).ok()?;
    m.artifacts
        .iter()
        .find(|a| a.format == Format::Raw)
        .map(|a| a.sha256.clone())
}

/// The image file `a.image` names, loaded; none for an AMI ID.
fn image_file(g: &GlobalArgs, a: &LaunchArgs) -> Result<Option<Image>> {
    if is_ami_id(&a.image) {
        if a.release.is_some() {
            bail!("--release goes with an image file, not with an AMI ID");
        }
        return Ok(None);
    }
    let p = Path::new(&a.image);
    if !p.extension().is_some_and(|e| e == "toml") {
        bail!(
            "`{}` is neither an image file (images/<name>.toml) nor an AMI ID (ami- and 8 or 17 hex digits)",
            a.image
        );
    }
    if let Some(r) = &a.release {
        crate::publish::check_release(r)?;
    }
    let dir = crate::config::default_recipe_dir(Some(p), g.recipes.as_deref());
    Ok(Some(crate::config::load_image(p, &dir)?))
}

/// The launch the arguments ask for, each setting from the flag, else the
/// image file, else the environment (or a default).
fn request(
    a: &LaunchArgs,
    image: Option<&Image>,
    retry: RetryPolicy,
    env: &dyn Env,
) -> Result<LaunchRequest> {
    let ec2 = image
        .and_then(|i| i.targets.ec2.clone())
        .unwrap_or_default();
    let instance_type =
        setting::flag_file_or_env(a.instance_type.clone(), ec2.instance_type.clone(), || None)
            .unwrap_or_else(|| DEFAULT_INSTANCE_TYPE.to_string());
    crate::config::check_instance_type(&instance_type)
        .map_err(|e| anyhow::anyhow!("--instance-type: {e}"))?;
    let image_user = image
        .and_then(|i| i.system.user.as_ref())
        .map(|u| u.name.clone());
    let user = setting::flag_file_or_env(a.user.clone(), image_user, || None)
        .unwrap_or_else(|| "biovm".to_string());
    let ssh_key = match &a.ssh_key {
        Some(p) => Some((p.clone(), crate::sshkey::read_public_key(p)?)),
        None => None,
    };
    let (region, ec2_endpoint) = a.aws.region_and_ec2_endpoint(&ec2, env)?;
    let credentials = credentials::load(a.aws.profile.as_deref(), env)?;
    log::info!("credentials from {}", credentials.source);
    let ami = match image {
        None => AmiChoice::Id(a.image.clone()),
        Some(img) => AmiChoice::Published {
            file: a.image.clone(),
            query: AmiQuery {
                image: img.name.clone(),
                release: a.release.clone(),
                sha256: local_build_sha256(&a.out, &img.name),
            },
        },
    };
    Ok(LaunchRequest {
        ami,
        image: image.map(|i| i.name.clone()),
        region,
        ec2_endpoint,
        credentials,
        retry,
        instance_type,
        key_name: a.key_name.clone(),
        ssh_key,
        user,
        security_groups: a.security_groups.clone(),
        subnet: a.subnet.clone(),
        name: a.name.clone(),
        wait_timeout: Duration::from_secs(a.wait_timeout),
        workbench: workbench(a, image)?,
    })
}

/// The workbench to reach: the image file's, or with an AMI ID the
/// default one when `--public` asks for it.
fn workbench(a: &LaunchArgs, image: Option<&Image>) -> Result<Option<LaunchWorkbench>> {
    let port = match image {
        Some(i) => match i.workbench {
            Some(w) => w.port,
            None if a.public => bail!(
                "--public: the image `{}` has no workbench (no [workbench] in its file)",
                i.name
            ),
            None => return Ok(None),
        },
        None if a.public => 8080,
        None => return Ok(None),
    };
    Ok(Some(LaunchWorkbench {
        port,
        public: a.public,
        wait: Duration::from_secs(a.workbench_wait),
    }))
}

pub(crate) fn run(g: &GlobalArgs, a: LaunchArgs) -> Result<ExitCode> {
    let retry = a.aws.retry()?;
    let image = image_file(g, &a)?;
    let req = request(&a, image.as_ref(), retry, &ProcessEnv)?;
    let launched = crate::publish::aws::launcher::launch(req)?;
    print(
        &launched,
        g.json,
        a.ssh_key.is_none() && a.key_name.is_none(),
    )?;
    Ok(ExitCode::SUCCESS)
}

fn print(o: &Launched, json: bool, no_key: bool) -> Result<()> {
    if json {
        crate::progress::result("launch", serde_json::to_value(o)?);
        return Ok(());
    }
    let i = &o.instance;
    println!(
        "{} ({}) is running in {}, launched from {} ({}) in {:.1} s",
        i.instance_id, i.instance_type, o.region, o.image_id, o.ami_name, o.seconds
    );
    match (&i.public_ip, &i.public_dns) {
        (Some(ip), Some(dns)) => println!("public address: {ip} ({dns})"),
        (Some(a), None) | (None, Some(a)) => println!("public address: {a}"),
        (None, None) => {
            let private = i.private_ip.as_deref().or(i.private_dns.as_deref());
            println!(
                "no public address; private address: {} (reach it from inside the VPC, or launch in a subnet that assigns public addresses)",
                private.unwrap_or("none yet")
            );
        }
    }
    match &o.ssh {
        Some(s) => println!("connect: {s}"),
        None => println!(
            "connect: the cloud gave no address yet; `aws ec2 describe-instances --instance-ids {}` shows it",
            i.instance_id
        ),
    }
    if no_key {
        println!("(no --key-name or --ssh-key: log in with a key the image itself authorises)");
    }
    if let Some(w) = &o.workbench {
        println!("workbench (JupyterLab, desktop, tool list), on the instance's 127.0.0.1 only:");
        if let Some(t) = &w.tunnel {
            println!("  1. tunnel: {t}");
            println!("  2. open:   {}", w.url);
        } else {
            println!(
                "  open {} through an SSH tunnel once the instance has an address",
                w.url
            );
        }
        if w.token.is_none() {
            println!("  its token (made at its first boot): {}", w.token_from);
        }
        if let Some(u) = &w.public_url {
            println!("  public mode: {u}");
            if let Some(f) = &w.firewall {
                println!("  let HTTPS in from your address only: {f}");
            }
            if let Some(fp) = &w.tls_sha256 {
                println!("  its self-signed certificate's sha256: {fp}");
            }
        }
    }
    println!(
        "stop paying for it: aws ec2 terminate-instances --instance-ids {} --region {}",
        i.instance_id, o.region
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ami_ids_and_private_keys() {
        assert!(is_ami_id("ami-0123456789abcdef0"));
        assert!(is_ami_id("ami-12345678"));
        assert!(!is_ami_id("ami-xyz"));
        assert!(!is_ami_id("images/minimal.toml"));
    }
}
