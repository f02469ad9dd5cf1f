//! `biovm publish`: put a built raw disk into a cloud, once.
//!
//! - `aws`: EC2. The disk goes into an EBS snapshot through the EBS direct
//!   APIs (`aws::ebs`), then RegisterImage makes an AMI of it (`aws::ami`).
//! - `eucalyptus`: Eucalyptus-compatible clouds (EC2 and S3 APIs of 2016).
//!   The disk becomes an AMI bundle (`eucalyptus::bundle`) uploaded to a
//!   bucket (`eucalyptus::s3`), then RegisterImage with its location.
//!
//! Every published image carries tags naming the image, the release and the
//! artifact's sha256; publishing the same artifact again finds the image by
//! those tags and changes nothing. Requests are signed with SigV4
//! (`http`), credentials come from the environment or the shared files
//! (`credentials`), and no secret is ever printed or logged.

pub mod aws;
pub mod credentials;
pub mod eucalyptus;
pub mod http;
pub mod setting;
pub mod xml;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::config::BootMode;

pub const TAG_IMAGE: &str = "biovm:image";
pub const TAG_VERSION: &str = "biovm:version";
pub const TAG_SHA256: &str = "biovm:sha256";

/// The raw disk being published.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub path: PathBuf,
    /// The image's name (`minimal`).
    pub image: String,
    pub description: String,
    pub size: u64,
    pub sha256: String,
    pub boot: Vec<BootMode>,
    /// The release name (`--release`, default: `sha-` and the first 12 hex
    /// digits of the sha256).
    pub release: String,
    /// The image's data disk (raw), when its data sets are on one: EC2
    /// gets it as a second snapshot every instance of the AMI attaches.
    pub data_disk: Option<DataDiskFile>,
}

/// A raw data disk to publish beside the OS disk.
#[derive(Debug, Clone)]
pub struct DataDiskFile {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

impl Artifact {
    /// Describe the raw disk at `path` (hashing it).
    pub fn open(
        path: &Path,
        image: &str,
        description: &str,
        boot: Vec<BootMode>,
        release: Option<&str>,
    ) -> Result<Artifact> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if !meta.is_file() {
            bail!("{} is not a file", path.display());
        }
        if meta.len() == 0 {
            bail!("{} is empty", path.display());
        }
        log::info!("hashing {}", path.display());
        let sha256 = crate::fsutil::sha256_file(path)?;
        let release = match release {
            Some(r) => {
                check_release(r)?;
                r.to_string()
            }
            None => format!("sha-{}", &sha256[..12]),
        };
        Ok(Artifact {
            path: path.to_path_buf(),
            image: image.to_string(),
            description: description.to_string(),
            size: meta.len(),
            sha256,
            boot,
            release,
            data_disk: None,
        })
    }

    /// With the data disk the manifest beside the raw disk names, if any
    /// (its SHA-256 checked against the manifest's).
    pub fn with_data_disk(mut self) -> Result<Artifact> {
        let Ok(m) = crate::manifest::Manifest::for_artifact(&self.path) else {
            return Ok(self);
        };
        let Some(d) = &m.data_disk else {
            return Ok(self);
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let files = d.in_dir(dir)?;
        log::info!("hashing {}", files.raw.display());
        let sha256 = crate::store::sha256(&files.raw)?;
        if sha256 != files.raw_sha256 {
            bail!(
                "{} has sha256 {sha256}, but the build recorded {}: build the image again",
                files.raw.display(),
                files.raw_sha256
            );
        }
        self.data_disk = Some(DataDiskFile {
            size: std::fs::metadata(&files.raw)
                .with_context(|| format!("cannot read {}", files.raw.display()))?
                .len(),
            path: files.raw,
            sha256,
        });
        Ok(self)
    }

    /// The tags every published image and snapshot carries.
    pub fn tags(&self) -> Vec<(String, String)> {
        vec![
            (TAG_IMAGE.to_string(), self.image.clone()),
            (TAG_VERSION.to_string(), self.release.clone()),
            (TAG_SHA256.to_string(), self.sha256.clone()),
        ]
    }

    /// The tags that identify the same artifact of the same image.
    pub fn identity_tags(&self) -> Vec<(String, String)> {
        vec![
            (TAG_IMAGE.to_string(), self.image.clone()),
            (TAG_SHA256.to_string(), self.sha256.clone()),
        ]
    }

    /// The image name in the cloud: `biovm-<image>-<release>`.
    pub fn cloud_name(&self) -> String {
        format!("biovm-{}-{}", self.image, self.release)
    }
}

/// Release names become part of AMI names and object keys.
pub fn check_release(r: &str) -> Result<()> {
    let ok = !r.is_empty()
        && r.len() <= 64
        && r.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !ok {
        bail!("invalid release `{r}`: use 1 to 64 letters, digits, `.`, `-` and `_`");
    }
    Ok(())
}

/// Limits shared by both targets.
#[derive(Debug, Clone)]
pub struct Limits {
    pub retry: http::RetryPolicy,
    /// Concurrent uploads.
    pub jobs: usize,
    /// How long to wait for a snapshot to complete.
    pub snapshot_wait: Duration,
    pub poll: Duration,
}

/// What a publish did, printed by `biovm publish` (`--json` for CI).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub target: String,
    pub region: String,
    pub image: String,
    pub release: String,
    pub sha256: String,
    /// The cloud's image ID (`ami-…`, `emi-…`).
    pub image_id: String,
    /// Whether this run created it (false: it was there already).
    pub created: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// The data disk's snapshot (EC2), which the AMI maps to /dev/sdf.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_snapshot_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload: Option<aws::ebs::UploadReport>,
    pub disk_bytes: u64,
    /// Request bodies sent, retries included.
    pub bytes_sent: u64,
    pub requests: u64,
    pub retries: u64,
    pub seconds: f64,
}

impl Outcome {
    /// What publishing `a` to `target` in `region` came to: `image_id`
    /// (made by this run or not), with `client`'s request counters and the
    /// seconds since `started`. The target-specific fields start empty.
    pub fn new(
        target: &str,
        region: &str,
        a: &Artifact,
        client: &http::Client,
        started: std::time::Instant,
        image_id: String,
        created: bool,
    ) -> Outcome {
        use std::sync::atomic::Ordering::Relaxed;
        Outcome {
            target: target.to_string(),
            region: region.to_string(),
            image: a.image.clone(),
            release: a.release.clone(),
            sha256: a.sha256.clone(),
            image_id,
            created,
            snapshot_id: None,
            data_snapshot_id: None,
            image_location: None,
            upload: None,
            disk_bytes: a.size,
            bytes_sent: client.counters.body_bytes_sent.load(Relaxed),
            requests: client.counters.requests.load(Relaxed),
            retries: client.counters.retries.load(Relaxed),
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_tags_and_names() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.raw");
        std::fs::write(&p, b"abc").unwrap();
        let a = Artifact::open(&p, "minimal", "", vec![BootMode::Uefi], None).unwrap();
        assert_eq!(a.release, "sha-ba7816bf8f01");
        assert_eq!(a.cloud_name(), "biovm-minimal-sha-ba7816bf8f01");
        assert_eq!(a.tags().len(), 3);
        assert!(a.identity_tags().iter().all(|t| a.tags().contains(t)));
        assert!(Artifact::open(&p, "m", "", vec![], Some("bad name")).is_err());
        assert!(Artifact::open(&p, "m", "", vec![], Some("2026.11-1")).is_ok());
    }
}
