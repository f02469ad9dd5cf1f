//! `biovm launch --target ec2 IMAGE|AMI-ID`: start an instance of a
//! published image, wait until it runs, and say how to connect.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use rand::Rng;
use serde::Serialize;

use super::GlobalArgs;
use crate::config::Image;
use crate::manifest::Manifest;
use crate::publish::aws::launch::{self as l, Ami, AmiQuery, Instance, LaunchSpec};
use crate::publish::aws::{self, ec2::Ec2};
use crate::publish::credentials::{self, Env, ProcessEnv};
use crate::publish::http::Client;
use crate::publish::{TAG_IMAGE, TAG_VERSION};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// AWS EC2 (or an EC2-compatible API: --ec2-endpoint).
    Ec2,
}

#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// Where to launch.
    #[arg(long, value_enum)]
    pub target: Target,
    /// The image file (images/<name>.toml: the AMI `biovm publish` made of
    /// it, found by its tags) or an AMI ID (ami-...).
    pub image: String,
    /// With an image file: the folder of its build; the AMI of that exact
    /// build is preferred when it is published.
    #[arg(long, default_value = "out", value_name = "DIR")]
    pub out: PathBuf,
    /// With an image file: launch this release (its `biovm:version` tag)
    /// rather than the newest.
    #[arg(long, value_name = "NAME")]
    pub release: Option<String>,
    /// Instance type (default: the image file's `[targets.ec2] instance-type`, else t3.medium).
    #[arg(long, value_name = "TYPE")]
    pub instance_type: Option<String>,
    /// An existing EC2 key pair to log in with.
    #[arg(long, value_name = "NAME")]
    pub key_name: Option<String>,
    /// An OpenSSH public key (FILE.pub) given to the login user at first
    /// boot through cloud-init user data.
    #[arg(long, value_name = "FILE.pub")]
    pub ssh_key: Option<PathBuf>,
    /// The login user (default: the image's `[system.user]`, else biovm).
    #[arg(long)]
    pub user: Option<String>,
    /// Security group ID (repeatable; default: the subnet's VPC default group).
    #[arg(long = "security-group", value_name = "SG-ID")]
    pub security_groups: Vec<String>,
    /// Subnet ID (default: a default subnet of the region's default VPC).
    #[arg(long, value_name = "SUBNET-ID")]
    pub subnet: Option<String>,
    /// The instance's Name tag (default: biovm-<image>).
    #[arg(long)]
    pub name: Option<String>,
    /// Seconds to wait for the instance to be running (and, before that,
    /// for a freshly registered AMI to be available).
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub wait_timeout: u64,
    #[command(flatten)]
    pub aws: super::publish::AwsArgs,
}

/// What `biovm launch` did (the `result` of `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Launched {
    pub target: &'static str,
    pub region: String,
    pub image_id: String,
    pub ami_name: String,
    /// The image the AMI was published from (its `biovm:image` tag).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    pub instance: Instance,
    /// The address to connect to (public if there is one).
    pub host: Option<String>,
    pub user: String,
    /// The command that logs in.
    pub ssh: Option<String>,
    pub seconds: f64,
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
        .find(|a| a.format == crate::config::Format::Raw)
        .map(|a| a.sha256.clone())
}

fn region_and_endpoint(
    a: &LaunchArgs,
    image: Option<&Image>,
    env: &dyn Env,
) -> Result<(String, String)> {
    let t = image
        .and_then(|i| i.targets.ec2.clone())
        .unwrap_or_default();
    let region = a.aws.region(t.region.clone(), env)?;
    let endpoint = a
        .aws
        .ec2_endpoint
        .clone()
        .or(t.ec2_endpoint.clone())
        .or_else(|| credentials::endpoint_from_env("ec2", env))
        .unwrap_or_else(|| aws::default_ec2_endpoint(&region));
    Ok((region, endpoint))
}

pub fn run(g: &GlobalArgs, a: LaunchArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let env = ProcessEnv;
    let retry = a.aws.retry()?;
    let by_id = is_ami_id(&a.image);
    let image = if by_id {
        if a.release.is_some() {
            bail!("--release goes with an image file, not with an AMI ID");
        }
        None
    } else {
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
        Some(crate::config::load_image(p, &dir)?)
    };
    let instance_type = a
        .instance_type
        .clone()
        .or_else(|| {
            image
                .as_ref()
                .and_then(|i| i.targets.ec2.as_ref())
                .and_then(|t| t.instance_type.clone())
        })
        .unwrap_or_else(|| l::DEFAULT_INSTANCE_TYPE.to_string());
    crate::config::check_instance_type(&instance_type)
        .map_err(|e| anyhow::anyhow!("--instance-type: {e}"))?;
    let user = a
        .user
        .clone()
        .or_else(|| {
            image
                .as_ref()
                .and_then(|i| i.system.user.as_ref())
                .map(|u| u.name.clone())
        })
        .unwrap_or_else(|| "biovm".to_string());
    let public_key = a
        .ssh_key
        .as_deref()
        .map(crate::sshkey::read_public_key)
        .transpose()?;
    let (region, endpoint) = region_and_endpoint(&a, image.as_ref(), &env)?;
    let creds = credentials::load(a.aws.profile.as_deref(), &env)?;
    log::info!("credentials from {}", creds.source);
    let client = Client::new(creds, &region, retry)?;
    let ec2 = Ec2::new(&client, &endpoint);
    let poll = Duration::from_secs(5);

    let ami: Ami = crate::progress::stage("launch", "find-ami", || -> Result<Ami> {
        let ami = match &image {
            None => l::ami_by_id(&ec2, &a.image)?,
            Some(img) => {
                let q = AmiQuery {
                    image: img.name.clone(),
                    release: a.release.clone(),
                    sha256: local_build_sha256(&a.out, &img.name),
                };
                match l::find_published(&ec2, &q)? {
                    Some(ami) => ami,
                    None => bail!(
                        "no AMI of image `{}`{} in region {} (none carries the tag {TAG_IMAGE}={}{}): publish it first: biovm publish --target ec2 {}",
                        img.name,
                        a.release.as_deref().map(|r| format!(", release {r},")).unwrap_or_default(),
                        region,
                        img.name,
                        a.release.as_deref().map(|r| format!(" and {TAG_VERSION}={r}")).unwrap_or_default(),
                        a.image
                    ),
                }
            }
        };
        l::wait_for_ami(
            &ec2,
            ami,
            Instant::now() + Duration::from_secs(a.wait_timeout),
            poll,
        )
    })?;
    let image_name = ami
        .tag(TAG_IMAGE)
        .map(str::to_string)
        .or_else(|| image.as_ref().map(|i| i.name.clone()));
    let name = a.name.clone().unwrap_or_else(|| match &image_name {
        Some(n) => format!("biovm-{n}"),
        None => format!("biovm-{}", ami.image_id),
    });
    let mut tags = vec![("Name".to_string(), name)];
    if let Some(n) = &image_name {
        tags.push((TAG_IMAGE.to_string(), n.clone()));
    }
    tags.push((l::TAG_AMI.to_string(), ami.image_id.clone()));
    let spec = LaunchSpec {
        image_id: ami.image_id.clone(),
        instance_type,
        key_name: a.key_name.clone(),
        user_data: public_key
            .as_deref()
            .map(|k| l::ssh_key_user_data(&user, k)),
        security_groups: a.security_groups.clone(),
        subnet: a.subnet.clone(),
        tags: tags.clone(),
        client_token: {
            let mut r = rand::thread_rng();
            (0..32)
                .map(|_| format!("{:x}", r.gen_range(0..16u8)))
                .collect()
        },
    };
    let first = crate::progress::stage("launch", "run-instances", || l::run_instance(&ec2, &spec))?;
    let id = first.instance_id.clone();
    log::info!(
        "started {id} ({}) from {}",
        spec.instance_type,
        ami.image_id
    );

    let wait = crate::progress::start("launch", "wait");
    let timeout = Duration::from_secs(a.wait_timeout);
    let inst = match l::wait_running(&ec2, &id, timeout, poll, |state| {
        wait.message(&format!("{id} is {state}"))
    }) {
        Ok(i) => {
            wait.finish();
            i
        }
        Err(e) => {
            wait.fail(&format!("{e:#}"));
            return Err(e);
        }
    };
    l::ensure_tags(&ec2, &inst, &tags)?;

    let host = inst.host().map(str::to_string);
    let identity = match (&a.ssh_key, &a.key_name) {
        (Some(p), _) => Some(crate::sshkey::private_key_for(p).display().to_string()),
        (None, Some(k)) => Some(format!("{k}.pem")),
        (None, None) => None,
    };
    let ssh = host.as_ref().map(|h| {
        let mut s = "ssh".to_string();
        if let Some(i) = &identity {
            s.push_str(&format!(" -i {}", l::shell_word(i)));
        }
        s.push_str(&format!(" {}", l::shell_word(&format!("{user}@{h}"))));
        s
    });
    let out = Launched {
        target: "ec2",
        region,
        image_id: ami.image_id.clone(),
        ami_name: ami.name.clone(),
        image: image_name,
        release: ami.tag(TAG_VERSION).map(str::to_string),
        instance: inst,
        host,
        user,
        ssh,
        seconds: started.elapsed().as_secs_f64(),
    };
    print(&out, g.json, a.ssh_key.is_none() && a.key_name.is_none())?;
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
