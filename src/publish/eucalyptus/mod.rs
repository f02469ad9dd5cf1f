//! Eucalyptus-compatible clouds: the disk becomes an AMI bundle, the bundle
//! goes to a bucket, and RegisterImage with its location makes an
//! instance-store image.

pub mod bundle;
pub mod s3;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::aws::ec2_api::Ec2;
use super::credentials::Credentials;
use super::http::Client;
use super::{Artifact, Limits, Outcome};

/// Everything the Eucalyptus target needs, resolved.
#[derive(Debug, Clone)]
pub struct EucalyptusSettings {
    pub region: String,
    pub ec2_endpoint: String,
    pub s3_endpoint: String,
    pub bucket: String,
    pub cloud_cert: PathBuf,
    pub user_cert: PathBuf,
    pub user_key: PathBuf,
    pub account_id: String,
    /// Where the bundle is written (`<artifact folder>/<image>.bundle`).
    pub bundle_dir: PathBuf,
}

pub fn publish(
    a: &Artifact,
    s: &EucalyptusSettings,
    creds: Credentials,
    limits: &Limits,
) -> Result<Outcome> {
    if let Some(d) = &a.data_disk {
        anyhow::bail!(
            "{}: image {} keeps its data on a data disk ({}), which a Eucalyptus instance-store \
             bundle cannot carry; publish it to EC2, or set `[data] location = \"root\"` for Eucalyptus",
            a.path.display(),
            a.image,
            d.path.display()
        );
    }
    let started = Instant::now();
    let client = Client::new(creds, &s.region, limits.retry.clone())?;
    let ec2 = Ec2::new(&client, &s.ec2_endpoint);
    let store = s3::S3::new(&client, &s.s3_endpoint);
    let identity = a.identity_tags();
    let prefix = a.cloud_name();
    let location = format!("{}/{prefix}/{}.manifest.xml", s.bucket, a.image);
    let outcome = |image_id: String, created: bool| Outcome {
        image_location: Some(location.clone()),
        ..Outcome::new(
            "eucalyptus",
            &s.region,
            a,
            &client,
            started,
            image_id,
            created,
        )
    };

    if let Some(found) = ec2.images_with_tags(&identity)?.into_iter().next() {
        log::info!(
            "{} is already published as {}; nothing to do",
            a.path.display(),
            found.image_id
        );
        return Ok(outcome(found.image_id, false));
    }
    let keys = bundle::Keys::load(&s.cloud_cert, &s.user_cert, &s.user_key, &s.account_id)?;
    store.check_bucket(&s.bucket)?;

    log::info!(
        "bundling {} into {}",
        a.path.display(),
        s.bundle_dir.display()
    );
    let b = crate::progress::stage("publish", "bundle", || {
        bundle::bundle(&a.path, &a.image, &s.bundle_dir, &keys)
            .with_context(|| format!("bundling {}", a.path.display()))
    })?;
    log::info!("{} parts, {} bytes", b.parts.len(), b.bundled_size);

    upload_bundle(&store, &b, &s.bucket, &prefix, limits.jobs)?;
    let image_id = register_image(&ec2, a, &location, &prefix, &identity)?;
    ec2.create_tags(&[&image_id], &a.tags())?;
    log::info!("registered {image_id} from {location}");
    Ok(outcome(image_id, true))
}

/// Upload the bundle `b` under `prefix` of `bucket`: its parts in parallel
/// (`jobs` at once, at most 8), then its manifest, so a bundle is never
/// visible without its parts.
fn upload_bundle(
    store: &s3::S3,
    b: &bundle::Bundle,
    bucket: &str,
    prefix: &str,
    jobs: usize,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let upload = crate::progress::bytes("publish", "upload", b.bundled_size);
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, 8) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= b.parts.len() || failed.load(Ordering::Relaxed) {
                    return;
                }
                let part = &b.parts[i];
                let r = std::fs::read(b.dir.join(part))
                    .with_context(|| format!("cannot read {}", b.dir.join(part).display()))
                    .and_then(|data| {
                        store
                            .put(
                                bucket,
                                &format!("{prefix}/{part}"),
                                &data,
                                "application/octet-stream",
                            )
                            .map_err(anyhow::Error::from)
                            .map(|()| upload.inc(data.len() as u64))
                    });
                if let Err(e) = r {
                    failed.store(true, Ordering::Relaxed);
                    first_error.lock().unwrap().get_or_insert(e);
                    return;
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap() {
        upload.fail(&format!("{e:#}"));
        return Err(e);
    }
    upload.finish();
    let manifest = std::fs::read(b.dir.join(&b.manifest))?;
    store.put(
        bucket,
        &format!("{prefix}/{}", b.manifest),
        &manifest,
        "application/xml",
    )?;
    Ok(())
}

/// RegisterImage the uploaded bundle at `location` as `prefix`; when that
/// name is taken, the image with the artifact's `identity` tags (published
/// before) is the one. Returns the image's id.
fn register_image(
    ec2: &Ec2,
    a: &Artifact,
    location: &str,
    prefix: &str,
    identity: &[(String, String)],
) -> Result<String> {
    let params: Vec<(String, String)> = [
        ("ImageLocation", location.to_string()),
        ("Name", prefix.to_string()),
        (
            "Description",
            if a.description.is_empty() {
                format!("biovm image {}", a.image)
            } else {
                a.description.clone()
            },
        ),
        ("Architecture", "x86_64".to_string()),
        ("VirtualizationType", "hvm".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    match ec2.call(
        "RegisterImage",
        &params,
        format!("RegisterImage {location}"),
    ) {
        Ok(root) => match root.child_text("imageId") {
            Some(id) if !id.is_empty() => Ok(id.to_string()),
            _ => bail!("RegisterImage {location}: the answer has no imageId"),
        },
        Err(e) if e.code() == Some("InvalidAMIName.Duplicate") => {
            match ec2.images_with_tags(identity)?.into_iter().next() {
                Some(found) => Ok(found.image_id),
                None => bail!("{e}\nan image named {prefix} already exists with other content: deregister it, or publish under another --release"),
            }
        }
        Err(e) => Err(e.into()),
    }
}
