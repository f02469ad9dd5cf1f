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

    let (snapshot_id, upload) = snapshot_of(
        &ec2,
        &client,
        s,
        limits,
        &a.path,
        a.size,
        s.volume_size_gib,
        &format!("biovm {} {} ({})", a.image, a.release, a.sha256),
        &tags,
        &identity,
    )?;
    let data_snapshot = match &a.data_disk {
        Some(d) => {
            let identity = vec![
                (super::TAG_IMAGE.to_string(), a.image.clone()),
                (super::TAG_SHA256.to_string(), d.sha256.clone()),
            ];
            let mut tags = identity.clone();
            tags.push((super::TAG_VERSION.to_string(), a.release.clone()));
            tags.push((TAG_ROLE.to_string(), "data-disk".to_string()));
            let (id, _) = snapshot_of(
                &ec2,
                &client,
                s,
                limits,
                &d.path,
                d.size,
                ebs::volume_size_gib(d.size),
                &format!("biovm {} {} data disk ({})", a.image, a.release, d.sha256),
                &tags,
                &identity,
            )?;
            Some((id, ebs::volume_size_gib(d.size)))
        }
        None => None,
    };

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
        data_snapshot: data_snapshot.clone(),
        tags,
    };
    let image_id = crate::progress::stage("publish", "register", || {
        ami::register(&ec2, &reg, &identity)
    })?;
    log::info!("registered {image_id} ({}) from {snapshot_id}", reg.name);
    Ok(Outcome {
        data_snapshot_id: data_snapshot.map(|d| d.0),
        ..outcome(image_id, true, Some(snapshot_id), upload)
    })
}

/// The tag that marks a data disk's snapshot.
pub const TAG_ROLE: &str = "biovm:role";

/// The completed snapshot of the raw disk `path` (`size` bytes, a volume
/// of `volume_gib`): one an earlier run
/// uploaded (found by `identity`) and that stopped before registering,
/// else uploaded now through the EBS direct APIs and waited for.
#[allow(clippy::too_many_arguments)]
fn snapshot_of(
    ec2: &ec2_api::Ec2<'_>,
    client: &Client,
    s: &Ec2Settings,
    limits: &Limits,
    path: &std::path::Path,
    size: u64,
    volume_gib: u64,
    description: &str,
    tags: &[(String, String)],
    identity: &[(String, String)],
) -> Result<(String, Option<ebs::UploadReport>)> {
    let (snapshot_id, upload) = match ec2
        .completed_snapshots_with_tags(identity)?
        .into_iter()
        .next()
    {
        Some(snap) => {
            log::info!("reusing snapshot {} uploaded earlier", snap.snapshot_id);
            (snap.snapshot_id, None)
        }
        None => {
            let e = ebs::Ebs::new(client, &s.ebs_endpoint);
            let settings = ebs::UploadSettings {
                volume_size_gib: volume_gib,
                description: description.to_string(),
                tags: tags.to_vec(),
                jobs: limits.jobs,
                timeout_minutes: 60,
            };
            let pb = crate::progress::bytes("publish", "upload", size);
            let report = match e.upload(path, &settings, &pb) {
                Ok(r) => r,
                Err(err) => {
                    pb.fail(&format!("{err:#}"));
                    return Err(err.context(format!(
                        "publishing {} to EC2 in {}",
                        path.display(),
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
    Ok((snapshot_id, upload))
}
