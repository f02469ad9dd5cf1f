//! EC2: the raw disk goes into an EBS snapshot through the EBS direct APIs,
//! then RegisterImage makes an AMI of it. `launch` has the calls that start
//! an instance of it, `launcher` the steps of `biovm launch`.

pub mod ami;
pub mod ebs;
pub mod ec2_api;
pub mod launch;
pub mod launcher;

use std::time::Instant;

use anyhow::Result;

use super::credentials::Credentials;
use super::http::Client;
use super::{Artifact, Limits, Outcome};
use crate::config::Ec2BootMode;

/// Everything the EC2 target needs, resolved.
#[derive(Debug, Clone)]
pub struct Ec2Settings {
    pub region: String,
    pub ec2_endpoint: String,
    pub ebs_endpoint: String,
    pub volume_type: String,
    pub volume_size_gib: u64,
    pub boot_mode: Ec2BootMode,
    pub ena: bool,
    pub imds_v2: bool,
}

pub fn default_ec2_endpoint(region: &str) -> String {
    format!("https://ec2.{region}.amazonaws.com")
}

pub fn default_ebs_endpoint(region: &str) -> String {
    format!("https://ebs.{region}.amazonaws.com")
}

pub fn publish(
    a: &Artifact,
    s: &Ec2Settings,
    creds: Credentials,
    limits: &Limits,
) -> Result<Outcome> {
    let started = Instant::now();
    let client = Client::new(creds, &s.region, limits.retry.clone())?;
    let ec2 = ec2_api::Ec2::new(&client, &s.ec2_endpoint);
    let identity = a.identity_tags();
    let tags = a.tags();
    let outcome = |image_id: String,
                   created: bool,
                   snapshot_id: Option<String>,
                   upload: Option<ebs::UploadReport>| Outcome {
        snapshot_id,
        upload,
        ..Outcome::new("ec2", &s.region, a, &client, started, image_id, created)
    };

    if let Some(found) = ec2.images_with_tags(&identity)?.into_iter().next() {
        log::info!(
            "{} is already published as {} ({}); nothing to do",
            a.path.display(),
            found.image_id,
            found.name
        );
        return Ok(outcome(found.image_id, false, None, None));
    }

    // A snapshot completed by an earlier run that stopped before
    // registering is reused rather than uploaded again.
    let (snapshot_id, upload) = match ec2
        .completed_snapshots_with_tags(&identity)?
        .into_iter()
        .next()
    {
        Some(snap) => {
            log::info!("reusing snapshot {} uploaded earlier", snap.snapshot_id);
            (snap.snapshot_id, None)
        }
        None => {
            let e = ebs::Ebs::new(&client, &s.ebs_endpoint);
            let settings = ebs::UploadSettings {
                volume_size_gib: s.volume_size_gib,
                description: format!("biovm {} {} ({})", a.image, a.release, a.sha256),
                tags: tags.clone(),
                jobs: limits.jobs,
                timeout_minutes: 60,
            };
            let pb = crate::progress::bytes("publish", "upload", a.size);
            let report = match e.upload(&a.path, &settings, &pb) {
                Ok(r) => r,
                Err(err) => {
                    pb.fail(&format!("{err:#}"));
                    return Err(err.context(format!(
                        "publishing {} to EC2 in {}",
                        a.path.display(),
                        s.region
                    )));
                }
            };
            pb.finish();
            (report.snapshot_id.clone(), Some(report))
        }
    };
    crate::progress::stage("publish", "snapshot", || {
        ec2.wait_for_snapshot(&snapshot_id, limits.snapshot_wait, limits.poll)
    })?;

    let reg = ami::Registration {
        name: a.cloud_name(),
        description: if a.description.is_empty() {
            format!("biovm image {}", a.image)
        } else {
            a.description.clone()
        },
        snapshot_id: snapshot_id.clone(),
        volume_type: s.volume_type.clone(),
        volume_size_gib: s.volume_size_gib,
        boot_mode: s.boot_mode,
        ena: s.ena,
        imds_v2: s.imds_v2,
        tags,
    };
    let image_id = crate::progress::stage("publish", "register", || {
        ami::register(&ec2, &reg, &identity)
    })?;
    log::info!("registered {image_id} ({}) from {snapshot_id}", reg.name);
    Ok(outcome(image_id, true, Some(snapshot_id), upload))
}
