//! `biovm launch`'s steps, once its arguments are resolved: find the AMI
//! (by ID, or by the tags `biovm publish` put on it) and wait until it is
//! available, start one instance of it, wait until it runs, tag it, and say
//! how to log in. The EC2 calls themselves are in [`super::launch`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rand::Rng;
use serde::Serialize;

use super::ec2_api::Ec2;
use super::launch::{self as ec2_launch, Ami, AmiQuery, Instance, LaunchSpec};
use crate::publish::credentials::Credentials;
use crate::publish::http::{Client, RetryPolicy};
use crate::publish::{TAG_IMAGE, TAG_VERSION};

/// Seconds between two looks at an AMI or instance that is not ready yet.
const POLL: Duration = Duration::from_secs(5);

/// Which AMI to start.
#[derive(Debug, Clone)]
pub enum AmiChoice {
    /// This AMI ID.
    Id(String),
    /// The newest AMI `biovm publish` made of an image file (preferring the
    /// one of the local build, when its digest is known).
    Published {
        /// The image file, as the user named it (for the error that says
        /// how to publish it).
        file: String,
        query: AmiQuery,
    },
}

/// Everything `launch` needs, resolved from flags, the image file and the
/// environment.
#[derive(Debug)]
pub struct LaunchRequest {
    pub ami: AmiChoice,
    /// The image's name, when launched from an image file.
    pub image: Option<String>,
    pub region: String,
    pub ec2_endpoint: String,
    pub credentials: Credentials,
    pub retry: RetryPolicy,
    pub instance_type: String,
    pub key_name: Option<String>,
    /// The OpenSSH public key file given to the login user, and its text.
    pub ssh_key: Option<(PathBuf, String)>,
    /// The login user.
    pub user: String,
    pub security_groups: Vec<String>,
    pub subnet: Option<String>,
    /// The instance's Name tag (default: biovm-<image>).
    pub name: Option<String>,
    /// How long the AMI may take to become available, and then the
    /// instance to run.
    pub wait_timeout: Duration,
    /// The image's workbench, when it has one (or `--public` asked for it).
    pub workbench: Option<LaunchWorkbench>,
}

/// What `biovm launch` does for an image's workbench.
#[derive(Debug, Clone, Copy)]
pub struct LaunchWorkbench {
    /// The proxy's port on the instance's 127.0.0.1.
    pub port: u16,
    /// Public mode, by user data: HTTPS on port 443 of every interface.
    pub public: bool,
    /// How long to read the instance's console for its token.
    pub wait: Duration,
}

/// How to reach a launched instance's workbench.
#[derive(Debug, Clone, Serialize)]
pub struct LaunchedWorkbench {
    /// The instance's token, when its console showed it in time.
    pub token: Option<String>,
    /// Its TLS certificate's sha256 fingerprint, likewise.
    pub tls_sha256: Option<String>,
    /// The SSH tunnel to run on the researcher's machine.
    pub tunnel: Option<String>,
    /// What to open through the tunnel.
    pub url: String,
    /// Public mode: what to open directly.
    pub public_url: Option<String>,
    /// How to read the token when it is not here yet.
    pub token_from: String,
    /// Public mode: the security group rule that lets HTTPS in.
    pub firewall: Option<String>,
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
    /// How to reach the image's workbench.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workbench: Option<LaunchedWorkbench>,
}

/// Start one instance as `r` says and wait until it runs.
pub fn launch(r: LaunchRequest) -> Result<Launched> {
    let started = Instant::now();
    let client = Client::new(r.credentials.clone(), &r.region, r.retry.clone())?;
    let ec2 = Ec2::new(&client, &r.ec2_endpoint);

    let ami = crate::progress::stage("launch", "find-ami", || find_ami(&ec2, &r))?;
    let image_name = ami
        .tag(TAG_IMAGE)
        .map(str::to_string)
        .or_else(|| r.image.clone());
    let tags = instance_tags(&r, &ami, image_name.as_deref());
    let spec = LaunchSpec {
        image_id: ami.image_id.clone(),
        instance_type: r.instance_type.clone(),
        key_name: r.key_name.clone(),
        user_data: user_data(&r),
        security_groups: r.security_groups.clone(),
        subnet: r.subnet.clone(),
        tags: tags.clone(),
        client_token: client_token(),
    };
    let first = crate::progress::stage("launch", "run-instances", || {
        ec2_launch::run_instance(&ec2, &spec)
    })?;
    let id = first.instance_id.clone();
    log::info!(
        "started {id} ({}) from {}",
        spec.instance_type,
        ami.image_id
    );

    let wait = crate::progress::start("launch", "wait");
    let inst = match ec2_launch::wait_running(&ec2, &id, r.wait_timeout, POLL, |state| {
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
    ec2_launch::ensure_tags(&ec2, &inst, &tags)?;

    let host = inst.host().map(str::to_string);
    let ssh = host.as_deref().map(|h| ssh_command(&r, h, ""));
    let workbench = match r.workbench {
        Some(w) => Some(workbench_access(&ec2, &r, w, &inst, host.as_deref())?),
        None => None,
    };
    Ok(Launched {
        target: "ec2",
        region: r.region,
        image_id: ami.image_id.clone(),
        ami_name: ami.name.clone(),
        image: image_name,
        release: ami.tag(TAG_VERSION).map(str::to_string),
        instance: inst,
        host,
        user: r.user,
        ssh,
        seconds: started.elapsed().as_secs_f64(),
        workbench,
    })
}

/// The user data: the login key, and public mode for the workbench.
fn user_data(r: &LaunchRequest) -> Option<String> {
    let key = r
        .ssh_key
        .as_ref()
        .map(|(_, key)| ec2_launch::ssh_key_user_data(&r.user, key));
    match (key, r.workbench.filter(|w| w.public)) {
        (k, Some(_)) => Some(
            k.unwrap_or_else(|| "#cloud-config\n".to_string())
                + &crate::workbench::public_mode_user_data(),
        ),
        (k, None) => k,
    }
}

/// Read the instance's console until its workbench token shows (at most
/// `w.wait`), and say how to reach the workbench.
fn workbench_access(
    ec2: &Ec2<'_>,
    r: &LaunchRequest,
    w: LaunchWorkbench,
    inst: &ec2_launch::Instance,
    host: Option<&str>,
) -> Result<LaunchedWorkbench> {
    let id = &inst.instance_id;
    let deadline = Instant::now() + w.wait;
    let mut found = None;
    if !w.wait.is_zero() {
        let step = crate::progress::start("launch", "workbench-token");
        loop {
            step.message(&format!("reading the console of {id}"));
            if let Some(text) = ec2_launch::console_output(ec2, id)? {
                found = crate::workbench::from_console(&text);
            }
            if found.is_some() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(POLL.max(Duration::from_secs(1)));
        }
        step.finish();
    }
    let token = found.as_ref().map(|f| f.token.clone());
    let shown = token.clone().unwrap_or_else(|| "TOKEN".to_string());
    let tunnel = host.map(|h| ssh_command(r, h, &format!("-N -L {p}:127.0.0.1:{p} ", p = w.port)));
    Ok(LaunchedWorkbench {
        tls_sha256: found.and_then(|f| f.tls_sha256),
        tunnel,
        url: format!("http://127.0.0.1:{}/?token={shown}", w.port),
        public_url: w
            .public
            .then(|| format!("https://{}/?token={shown}", host.unwrap_or("ADDRESS"))),
        token_from: format!(
            "aws ec2 get-console-output --instance-id {id} --region {} --latest --output text | grep biovm-workbench:",
            r.region
        ),
        firewall: w.public.then(|| {
            format!(
                "aws ec2 authorize-security-group-ingress --region {} --group-id {} --protocol tcp --port 443 --cidr YOUR.ADDRESS/32",
                r.region,
                r.security_groups.first().map(String::as_str).unwrap_or("SG-ID")
            )
        }),
        token,
    })
}

/// The AMI to start, once it is available.
fn find_ami(ec2: &Ec2<'_>, r: &LaunchRequest) -> Result<Ami> {
    let ami = match &r.ami {
        AmiChoice::Id(id) => ec2_launch::ami_by_id(ec2, id)?,
        AmiChoice::Published { file, query } => match ec2_launch::find_published(ec2, query)? {
            Some(ami) => ami,
            None => bail!(
                "no AMI of image `{}`{} in region {} (none carries the tag {TAG_IMAGE}={}{}): publish it first: biovm publish --target ec2 {}",
                query.image,
                query.release.as_deref().map(|r| format!(", release {r},")).unwrap_or_default(),
                r.region,
                query.image,
                query.release.as_deref().map(|r| format!(" and {TAG_VERSION}={r}")).unwrap_or_default(),
                file
            ),
        },
    };
    ec2_launch::wait_for_ami(ec2, ami, Instant::now() + r.wait_timeout, POLL)
}

/// `Name`, the image the AMI was made of (when known) and the AMI.
fn instance_tags(r: &LaunchRequest, ami: &Ami, image_name: Option<&str>) -> Vec<(String, String)> {
    let name = r.name.clone().unwrap_or_else(|| match image_name {
        Some(n) => format!("biovm-{n}"),
        None => format!("biovm-{}", ami.image_id),
    });
    let mut tags = vec![("Name".to_string(), name)];
    if let Some(n) = image_name {
        tags.push((TAG_IMAGE.to_string(), n.to_string()));
    }
    tags.push((ec2_launch::TAG_AMI.to_string(), ami.image_id.clone()));
    tags
}

/// RunInstances' idempotency token: 32 random hex digits.
fn client_token() -> String {
    let mut r = rand::thread_rng();
    (0..32)
        .map(|_| format!("{:x}", r.gen_range(0..16u8)))
        .collect()
}

/// `ssh OPTIONS[-i KEY] USER@HOST`, with the private key beside the
/// `--ssh-key` public key, or the key pair's `.pem`; `options` (each
/// followed by a space) go first.
fn ssh_command(r: &LaunchRequest, host: &str, options: &str) -> String {
    let identity = match (&r.ssh_key, &r.key_name) {
        (Some((p, _)), _) => Some(crate::sshkey::private_key_for(p).display().to_string()),
        (None, Some(k)) => Some(format!("{k}.pem")),
        (None, None) => None,
    };
    let mut s = format!("ssh {options}");
    if let Some(i) = &identity {
        s.push_str(&format!("-i {} ", ec2_launch::shell_word(i)));
    }
    s.push_str(&ec2_launch::shell_word(&format!("{}@{host}", r.user)));
    s
}
