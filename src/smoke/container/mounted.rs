//! The native run's tree without a copy: a disk artifact whose bytes are
//! the ones its build recorded (so its filesystem is one `mkfs.ext4` made
//! from the build's tree, not a crafted one) is mounted read-only, inside
//! the container's own mount namespace, under a writable overlay, and the
//! checks run in that. Copying a large image's tree out of its disk cost
//! minutes (BioLinux: 11 GB, 72 s on an idle machine, 187 s beside other
//! work); mounting costs nothing, and the tree's digest is read from the
//! disk while the checks run (mounted read-only once more, in a namespace
//! of the digest's own: see `tree::mounted_digest`), unless its build read
//! it back from these very bytes. Every mount lives only in its
//! namespace: it, and the loop device under it, go when the namespace's
//! last process (or thread) ends, however the run ends. A disk whose
//! bytes differ from the build's (or one no manifest lists) is copied out
//! as before.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};

use super::MOUNT_POINTS;
use crate::cmd::Cmd;
use crate::config::Format;
use crate::manifest::Manifest;
use crate::smoke::tree;

/// A disk the build wrote, as a raw disk file to mount.
pub(super) struct BuiltDisk {
    /// The raw disk: the artifact itself, or a raw copy of its disk in the
    /// run's scratch folder.
    pub raw: PathBuf,
    /// Where its root partition starts, in bytes.
    offset: u64,
    /// Its root filesystem, read on the host (no mount).
    fs4: ext4_view::Ext4,
}

/// Whether the kernel can give a container a loop-mounted disk under an
/// overlay.
fn kernel_can_mount() -> bool {
    let overlay = fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false);
    overlay && crate::smoke::tree::can_loop_mount()
}

/// Whether `file` has the SHA-256 its build recorded; says so when not.
fn as_built(file: &Path, recorded: &str) -> Result<bool> {
    let sha = crate::store::sha256(file)?;
    if sha != recorded {
        log::warn!(
            "{}: its SHA-256 is {sha}, its build recorded {recorded}: the trees are copied out, not mounted",
            file.display()
        );
    }
    Ok(sha == recorded)
}

/// Whether the data disk `d`, if any, has the bytes its build recorded:
/// only then may it be mounted (with the OS disk).
pub(super) fn data_disk_as_built(d: Option<&crate::smoke::DataDiskFiles>) -> Result<bool> {
    d.map_or(Ok(true), |d| as_built(&d.raw, &d.raw_sha256))
}

impl BuiltDisk {
    /// Where its root partition starts, in bytes.
    pub(super) fn offset(&self) -> u64 {
        self.offset
    }

    /// `artifact` (of `format`) as a disk to mount, when a manifest beside
    /// it lists it with exactly its SHA-256; its raw copy, if one is
    /// needed, goes into `work`. None otherwise: the tree is then copied
    /// out of the disk.
    pub(super) fn of(artifact: &Path, format: Format, work: &Path) -> Result<Option<BuiltDisk>> {
        if !kernel_can_mount() {
            log::info!(
                "{}: the kernel offers no loop devices or overlays here; the tree is copied out",
                artifact.display()
            );
            return Ok(None);
        }
        let Ok(m) = Manifest::for_artifact(artifact) else {
            return Ok(None);
        };
        let Some(built) = m.entry(artifact, format) else {
            return Ok(None);
        };
        if !as_built(artifact, &built.sha256)? {
            return Ok(None);
        }
        let raw = tree::raw_view(artifact, format, work)?;
        let offset = tree::root_partition_offset(&raw)?;
        let fs4 = tree::open_root(&raw)?;
        Ok(Some(BuiltDisk { raw, offset, fs4 }))
    }

    /// The text of `/rel` in the disk's root filesystem (a link in it is
    /// followed inside that filesystem, never out of it).
    pub(super) fn read(&self, rel: &str) -> Result<String> {
        let p = format!("/{rel}");
        self.fs4
            .read_to_string(p.as_str())
            .map_err(|e| anyhow!("cannot read /{rel} of the image: {e}"))
    }

    /// Every container mount point the image has must be a folder (one it
    /// lacks is made in the overlay); with a data disk, so must each
    /// component of its mount point: the container's setup mounts there,
    /// and a link would point the mount elsewhere.
    pub(super) fn check_mount_points(&self, data_disk: bool) -> Result<()> {
        for (mp, _) in MOUNT_POINTS {
            let p = format!("/{mp}");
            if let Ok(m) = self.fs4.symlink_metadata(p.as_str()) {
                if !m.is_dir() {
                    bail!("/{mp} in the image is not a folder; the container's /{mp} cannot be mounted there");
                }
            }
        }
        if data_disk {
            let mut p = String::new();
            for c in crate::config::DATA_ROOT.split('/') {
                p = format!("{p}/{c}");
                let dir = self
                    .fs4
                    .symlink_metadata(p.as_str())
                    .is_ok_and(|m| m.is_dir());
                if !dir {
                    bail!(
                        "{p} in the image is not a folder; the data disk cannot be mounted at /{}",
                        crate::config::DATA_ROOT
                    );
                }
            }
        }
        Ok(())
    }

    /// Whether `rel` (relative, `/`-separated) and every folder on the way
    /// to it are real folders of the disk's root filesystem (no link).
    fn real_folder(&self, rel: &str) -> bool {
        let mut p = String::new();
        rel.split('/').all(|c| {
            p = format!("{p}/{c}");
            self.fs4
                .symlink_metadata(p.as_str())
                .is_ok_and(|m| m.is_dir())
        })
    }

    /// What of the disk's root filesystem a container artifact of `format`
    /// does not hold: what its writer leaves out
    /// (`formats::layer::excludes_of`: the kernel, its modules, firmware),
    /// and `lost+found` at the root, which `mkfs.ext4` made. Each as a path
    /// relative to the root whose every folder on the way is a real folder
    /// of the disk, so that removing it from the overlay (see `SETUP`)
    /// removes only it, never anything a link leads to.
    pub(super) fn left_out_of(&self, format: Format) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let whole = crate::formats::layer::excludes_of(format)
            .iter()
            .map(|p| (*p, false))
            .chain([("lost+found", true)]);
        for (pattern, at_root) in whole {
            if let Some(dir) = pattern.strip_suffix("/*") {
                if !self.real_folder(dir) {
                    continue;
                }
                let entries = self
                    .fs4
                    .read_dir(format!("/{dir}").as_str())
                    .map_err(|e| anyhow!("cannot list /{dir} of the image: {e}"))?;
                for e in entries {
                    let e = e.map_err(|e| anyhow!("cannot list /{dir} of the image: {e}"))?;
                    let name = e.file_name();
                    let name: &[u8] = name.as_ref();
                    if name != b"." && name != b".." {
                        out.push([dir.as_bytes(), b"/", name].concat());
                    }
                }
                continue;
            }
            let parent = pattern.rsplit_once('/').map(|(d, _)| d);
            let exists = self.fs4.symlink_metadata(format!("/{pattern}").as_str());
            if parent.map_or(true, |d| self.real_folder(d))
                && exists.is_ok_and(|m| !at_root || m.is_dir())
            {
                out.push(pattern.as_bytes().to_vec());
            }
        }
        Ok(out)
    }

    /// Tell the container's setup (`SETUP`) to mount this disk at its
    /// root, with the overlay's layers in the new folder `layers`, and the
    /// data disk `data` (a bare ext4 filesystem) at the image's data
    /// mount point.
    pub(super) fn mount_in(&self, cmd: &mut Cmd, layers: &Path, data: Option<&Path>) {
        let points: Vec<String> = MOUNT_POINTS
            .iter()
            .map(|(mp, mode)| format!("{mp}:{mode:o}"))
            .collect();
        cmd.env("BIOVM_DISK", &self.raw)
            .env("BIOVM_DISK_OFFSET", self.offset.to_string())
            .env("BIOVM_LAYERS", layers)
            .env("BIOVM_MOUNT_POINTS", points.join(" "))
            .env("BIOVM_DATA_AT", crate::config::DATA_ROOT);
        if let Some(d) = data {
            cmd.env("BIOVM_DATA_DISK", d);
        }
    }
}
