//! What a cloud hands a booting instance, made locally: where its
//! cloud-init looks for it ([`Cloud`]), a NoCloud seed drive (a small FAT
//! filesystem labelled `CIDATA` holding `meta-data` and `user-data`, as
//! cloud-init's NoCloud data source reads it; EC2's metadata service is
//! [`super::imds`]), and a disk overlay larger than the image, so the guest
//! grows its root filesystem as it would on a bigger cloud volume. Neither
//! touches the artifact.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use super::qemu::DiskFormat;
use crate::cmd::Cmd;
use crate::config::Format;

/// The user a test boot asks cloud-init to create.
pub const SEED_USER: &str = "biovm-seed";

/// The public key a test boot injects: a well-formed ed25519 public key
/// whose 32 key bytes spell "biovm test key: no private half." (so there is
/// no private half); only its presence in the guest is checked.
pub const SEED_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJpb3ZtIHRlc3Qga2V5OiBubyBwcml2YXRlIGhhbGYu biovm-test-seed";

/// How much larger than the image the overlay disk of a test boot is.
pub const GROW_BYTES: u64 = 1 << 30;

/// Where a booting guest's cloud-init finds its instance data, as at the
/// artifact's destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cloud {
    /// A seed drive labelled CIDATA (local VMs, VirtualBox, KVM clouds'
    /// config drives).
    NoCloud,
    /// EC2: the metadata service at 169.254.169.254 with IMDSv2 session
    /// tokens, on a machine whose firmware says "Amazon EC2".
    Ec2,
}

impl Cloud {
    /// Raw disks go to EC2; every other disk gets a NoCloud seed.
    pub fn for_format(f: Format) -> Cloud {
        if f == Format::Raw {
            Cloud::Ec2
        } else {
            Cloud::NoCloud
        }
    }

    /// The cloud-init data source that must have been used.
    pub fn datasource(self) -> &'static str {
        match self {
            Cloud::NoCloud => "NoCloud",
            Cloud::Ec2 => "Ec2",
        }
    }
}

/// The `#cloud-config` user data of a test boot: the image's default user
/// gets `key`, and `user` is created with the same key, as a cloud would.
pub fn user_data(user: &str, key: &str) -> String {
    [
        "#cloud-config",
        "# Written by biovm for one boot.",
        "users:",
        "  - default",
        &format!("  - name: {user}"),
        "    shell: /bin/bash",
        "    lock_passwd: true",
        "    ssh_authorized_keys:",
        &format!("      - {key}"),
        "ssh_authorized_keys:",
        &format!("  - {key}"),
        "",
    ]
    .join("\n")
}

/// Write a NoCloud seed drive to `path` (replacing it): a 1 MiB FAT image
/// labelled CIDATA holding `meta-data` (the instance ID) and `user-data`.
pub fn write_nocloud_seed(path: &Path, instance_id: &str, user_data: &str) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{}: no parent folder", path.display()))?;
    let _ = fs::remove_file(path);
    Cmd::new("mkfs.fat")
        .args(["-n", "CIDATA", "-C"])
        .arg(path)
        .arg("1024")
        .run()
        .with_context(|| format!("creating the NoCloud seed {} failed", path.display()))?;
    let staging = tempfile::tempdir_in(dir)?;
    let meta = staging.path().join("meta-data");
    let user = staging.path().join("user-data");
    fs::write(&meta, format!("instance-id: {instance_id}\n"))?;
    fs::write(&user, user_data)?;
    Cmd::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(path)
        .arg(&meta)
        .arg(&user)
        .arg("::")
        .run()
        .with_context(|| format!("filling the NoCloud seed {} failed", path.display()))?;
    Ok(())
}

/// The virtual size of the disk image `disk` in QEMU format `format`.
pub fn virtual_size(disk: &Path, format: DiskFormat) -> Result<u64> {
    if format == DiskFormat::Raw {
        return Ok(fs::metadata(disk)
            .with_context(|| format!("cannot read {}", disk.display()))?
            .len());
    }
    let out = Cmd::new("qemu-img")
        .args(["info", "--output=json", "-f", format.name()])
        .arg(disk)
        .output()?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .with_context(|| format!("qemu-img info {}: not JSON", disk.display()))?;
    v["virtual-size"]
        .as_u64()
        .with_context(|| format!("qemu-img info {}: no virtual-size", disk.display()))
}

/// Create `overlay`, a qcow2 disk of `size` bytes whose first blocks read
/// through to `base` (opened read-only): the guest writes only the overlay.
pub fn create_overlay(base: &Path, format: DiskFormat, overlay: &Path, size: u64) -> Result<()> {
    let base = base
        .canonicalize()
        .with_context(|| format!("cannot find {}", base.display()))?;
    let _ = fs::remove_file(overlay);
    Cmd::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            DiskFormat::Qcow2.name(),
            "-F",
            format.name(),
            "-b",
        ])
        .arg(&base)
        .arg(overlay)
        .arg(size.to_string())
        .run()
        .with_context(|| format!("creating the overlay {} failed", overlay.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_is_a_cidata_fat_drive_with_both_files() {
        let d = tempfile::tempdir().unwrap();
        let seed = d.path().join("seed.img");
        write_nocloud_seed(&seed, "i-123", &user_data("alice", SEED_KEY)).unwrap();
        let label = Cmd::new("mlabel")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-s")
            .arg("-i")
            .arg(&seed)
            .arg("::")
            .output()
            .unwrap();
        assert!(label.contains("CIDATA"), "{label}");
        let meta = Cmd::new("mtype")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&seed)
            .arg("::meta-data")
            .output()
            .unwrap();
        assert_eq!(meta, "instance-id: i-123\n");
        let user = Cmd::new("mtype")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&seed)
            .arg("::user-data")
            .output()
            .unwrap();
        assert!(user.starts_with("#cloud-config\n"), "{user}");
        assert!(user.contains("  - name: alice\n"), "{user}");
        assert_eq!(user.matches(SEED_KEY).count(), 2, "{user}");
        // As cloud-init reads it: YAML.
        let json = Cmd::new("python3")
            .args([
                "-c",
                "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.argv[1])))",
                &user,
            ])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["users"][0], "default");
        assert_eq!(v["users"][1]["name"], "alice");
        assert_eq!(v["users"][1]["ssh_authorized_keys"][0], SEED_KEY);
        assert_eq!(v["ssh_authorized_keys"][0], SEED_KEY);
    }

    #[test]
    fn the_overlay_is_larger_and_leaves_its_base_alone() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("base.raw");
        fs::write(&base, vec![7u8; 1 << 20]).unwrap();
        let overlay = d.path().join("o.qcow2");
        create_overlay(&base, DiskFormat::Raw, &overlay, (1 << 20) + GROW_BYTES).unwrap();
        assert_eq!(virtual_size(&base, DiskFormat::Raw).unwrap(), 1 << 20);
        assert_eq!(
            virtual_size(&overlay, DiskFormat::Qcow2).unwrap(),
            (1 << 20) + GROW_BYTES
        );
        // A write through the overlay lands in the overlay only.
        Cmd::new("qemu-io")
            .args(["-f", "qcow2", "-c", "write -P 9 0 4k"])
            .arg(&overlay)
            .output()
            .unwrap();
        assert_eq!(fs::read(&base).unwrap(), vec![7u8; 1 << 20]);
    }
}
