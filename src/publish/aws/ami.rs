//! Registering an AMI from a snapshot, and finding one published before.

use anyhow::{bail, Result};

use super::ec2_api::{tag_params, Ec2};
use crate::config::Ec2BootMode;
use crate::publish::http::ApiError;

/// The root device every biovm AMI uses.
pub const ROOT_DEVICE: &str = "/dev/xvda";

#[derive(Debug, Clone)]
pub struct Registration {
    pub name: String,
    pub description: String,
    pub snapshot_id: String,
    pub volume_type: String,
    pub volume_size_gib: u64,
    pub boot_mode: Ec2BootMode,
    pub ena: bool,
    pub imds_v2: bool,
    /// The data disk's snapshot and volume size (GiB), mapped to
    /// [`DATA_DEVICE`]: every instance gets it as a second volume.
    pub data_snapshot: Option<(String, u64)>,
    pub tags: Vec<(String, String)>,
}

/// Where a data disk's volume is attached (an NVMe namespace on Nitro
/// instances; the image mounts it by its filesystem label either way).
pub const DATA_DEVICE: &str = "/dev/sdf";

impl Registration {
    /// The RegisterImage parameters.
    pub fn params(&self) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = [
            ("Name", self.name.clone()),
            ("Description", self.description.clone()),
            ("Architecture", "x86_64".to_string()),
            ("VirtualizationType", "hvm".to_string()),
            ("RootDeviceName", ROOT_DEVICE.to_string()),
            ("BlockDeviceMapping.1.DeviceName", ROOT_DEVICE.to_string()),
            (
                "BlockDeviceMapping.1.Ebs.SnapshotId",
                self.snapshot_id.clone(),
            ),
            (
                "BlockDeviceMapping.1.Ebs.VolumeType",
                self.volume_type.clone(),
            ),
            (
                "BlockDeviceMapping.1.Ebs.VolumeSize",
                self.volume_size_gib.to_string(),
            ),
            (
                "BlockDeviceMapping.1.Ebs.DeleteOnTermination",
                "true".to_string(),
            ),
            ("EnaSupport", self.ena.to_string()),
            ("BootMode", self.boot_mode.as_str().to_string()),
            ("TagSpecification.1.ResourceType", "image".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if self.imds_v2 {
            p.push(("ImdsSupport".to_string(), "v2.0".to_string()));
        }
        if let Some((snapshot, gib)) = &self.data_snapshot {
            for (k, v) in [
                ("DeviceName", DATA_DEVICE.to_string()),
                ("Ebs.SnapshotId", snapshot.clone()),
                ("Ebs.VolumeType", self.volume_type.clone()),
                ("Ebs.VolumeSize", gib.to_string()),
                ("Ebs.DeleteOnTermination", "true".to_string()),
            ] {
                p.push((format!("BlockDeviceMapping.2.{k}"), v));
            }
        }
        p.extend(tag_params("TagSpecification.1.Tag", &self.tags));
        p
    }
}

/// Register the AMI and tag it and its snapshot. If the name is taken
/// because a retried call had in fact succeeded, the image carrying our
/// tags is the one we made.
pub fn register(ec2: &Ec2<'_>, r: &Registration, identity: &[(String, String)]) -> Result<String> {
    let id = match ec2.call(
        "RegisterImage",
        &r.params(),
        format!("RegisterImage {}", r.name),
    ) {
        Ok(root) => match root.child_text("imageId") {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => bail!("RegisterImage {}: the answer has no imageId", r.name),
        },
        Err(e) if e.code() == Some("InvalidAMIName.Duplicate") => {
            match ec2.images_with_tags(identity)?.into_iter().next() {
                Some(found) => found.image_id,
                None => bail!(
                    "{e}\nan AMI named {} already exists with other content: deregister it, or publish under another --release",
                    r.name
                ),
            }
        }
        Err(e) => return Err(e.into()),
    };
    // Clouds that ignore TagSpecification (the 2016 API, emulators) get the
    // tags this way; on EC2 this repeats them, harmlessly.
    tag_after_register(ec2, &[&id, &r.snapshot_id], &r.tags)?;
    Ok(id)
}

pub fn tag_after_register(
    ec2: &Ec2<'_>,
    resources: &[&str],
    tags: &[(String, String)],
) -> Result<(), ApiError> {
    ec2.create_tags(resources, tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_name_everything_ec2_needs() {
        let r = Registration {
            name: "biovm-minimal-1".into(),
            description: "d".into(),
            snapshot_id: "snap-1".into(),
            volume_type: "gp3".into(),
            volume_size_gib: 3,
            boot_mode: Ec2BootMode::UefiPreferred,
            ena: true,
            imds_v2: true,
            data_snapshot: None,
            tags: vec![("biovm:image".into(), "minimal".into())],
        };
        let p = r.params();
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("BootMode"), Some("uefi-preferred"));
        assert_eq!(get("EnaSupport"), Some("true"));
        assert_eq!(get("RootDeviceName"), Some("/dev/xvda"));
        assert_eq!(get("BlockDeviceMapping.1.Ebs.VolumeType"), Some("gp3"));
        assert_eq!(get("ImdsSupport"), Some("v2.0"));
        assert_eq!(get("TagSpecification.1.Tag.1.Key"), Some("biovm:image"));
        assert_eq!(get("BlockDeviceMapping.2.DeviceName"), None, "no data disk");
    }

    #[test]
    fn a_data_disk_is_the_second_mapping_and_goes_with_the_instance() {
        let r = Registration {
            name: "biovm-genomes-1".into(),
            description: "d".into(),
            snapshot_id: "snap-os".into(),
            volume_type: "gp3".into(),
            volume_size_gib: 3,
            boot_mode: Ec2BootMode::Uefi,
            ena: true,
            imds_v2: true,
            data_snapshot: Some(("snap-data".into(), 1)),
            tags: vec![],
        };
        let p = r.params();
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("BlockDeviceMapping.1.Ebs.SnapshotId"), Some("snap-os"));
        assert_eq!(get("BlockDeviceMapping.2.DeviceName"), Some("/dev/sdf"));
        assert_eq!(
            get("BlockDeviceMapping.2.Ebs.SnapshotId"),
            Some("snap-data")
        );
        assert_eq!(get("BlockDeviceMapping.2.Ebs.VolumeSize"), Some("1"));
        assert_eq!(
            get("BlockDeviceMapping.2.Ebs.DeleteOnTermination"),
            Some("true")
        );
    }
}
