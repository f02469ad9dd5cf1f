//! A data disk (`[data] location = "disk"`): the image's data sets on an
//! ext4 filesystem of their own, labelled [`DATA_DISK_LABEL`], which the
//! image's fstab mounts read-only at `/data/genomes` (`nofail`: an
//! instance started without it still boots, and its data checks fail).
//! A 30 GB index then ships once, as `<image>.data.raw` (and
//! `<image>.data.qcow2` when the image builds qcow2), not inside every OS
//! disk; `biovm test` attaches it to every boot and reads it into the tree
//! the native checks run in, and `biovm publish` makes an EBS snapshot of
//! it that every instance of the AMI gets as a second volume.
//!
//! The filesystem is made like the root filesystem (`mkfs.ext4 -d`, its
//! UUID and hash seed from the lock's seed, every time SOURCE_DATE_EPOCH),
//! so two builds from one lock give the same bytes. It has no partition
//! table: an EBS volume or a virtual disk holding a bare filesystem mounts
//! by its label like any other.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::cmd::Cmd;
use crate::config::{Format, Image, DATA_DISK_LABEL, DATA_ROOT};
use crate::confined::Tree;
use crate::disk::gpt::Guid;
use crate::fsutil::AtomicFile;
use crate::manifest::DataDisk;

const MIB: u64 = 1 << 20;

/// The fstab line that mounts the data disk.
pub fn fstab_line() -> String {
    format!(
        "LABEL={DATA_DISK_LABEL} /{DATA_ROOT} ext4 ro,nofail,x-systemd.device-timeout=30s 0 2\n"
    )
}

/// The file of the data disk in `format` (raw or qcow2) in `out`.
pub fn file_name(image: &str, format: Format) -> String {
    format!("{image}.data.{}", format.extension())
}

/// Move every data set's folder out of the tree `root` (where its indexes
/// were built) into `staging`, leaving `/data/genomes` empty as the data
/// disk's mount point. The folders hold regular files only (see
/// `data::install`); each is read through the confined tree. Returns the
/// bytes and the number of files moved.
pub fn take_out(image: &Image, root: &Path, staging: &Path) -> Result<(u64, u64)> {
    let tree = Tree::open(root)?;
    let (mut bytes, mut files) = (0, 0);
    fs::create_dir_all(staging).with_context(|| format!("cannot create {}", staging.display()))?;
    for d in &image.data {
        let folder = d.folder();
        let dest = staging.join(&d.build);
        fs::create_dir(&dest).with_context(|| format!("cannot create {}", dest.display()))?;
        for (name, kind) in tree.read_dir(&folder)? {
            let rel = folder.join(&name);
            anyhow::ensure!(kind.is_file(), "{} is not a regular file", tree.show(&rel));
            let mut from = tree
                .open_file(&rel)
                .with_context(|| format!("cannot open {}", tree.show(&rel)))?;
            let to_path = dest.join(&name);
            let mut to = fs::File::create(&to_path)
                .with_context(|| format!("cannot create {}", to_path.display()))?;
            bytes += std::io::copy(&mut from, &mut to)
                .with_context(|| format!("cannot copy {} out", tree.show(&rel)))?;
            fs::set_permissions(
                &to_path,
                std::os::unix::fs::PermissionsExt::from_mode(0o644),
            )?;
            tree.remove_file(&rel)?;
            files += 1;
        }
        fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        tree.remove_dir(&folder)?;
    }
    Ok((bytes, files))
}

/// The size of a data disk for `bytes` of data in `files` files: room for
/// every file's last partial block, the filesystem's own tables, and 5%
/// more, in whole MiB, at least 32 MiB.
pub fn size_for(bytes: u64, files: u64) -> u64 {
    let need = bytes + bytes / 20 + files * 4096 + 16 * MIB;
    need.div_ceil(MIB).max(32) * MIB
}

/// Write the data disk of the tree `staging` (the data sets' folders) to
/// `dest` (raw), its identifiers from `seed`, every time `epoch`. `dest`
/// appears only when complete.
pub fn write_raw(
    staging: &Path,
    size: u64,
    seed: &str,
    epoch: u64,
    work: &Path,
    dest: &Path,
) -> Result<()> {
    let (out, file) = AtomicFile::create(dest)?;
    file.set_len(size)
        .with_context(|| format!("cannot size {}", out.path().display()))?;
    drop(file);
    let disk = out.path().to_path_buf();
    Cmd::new("mkfs.ext4")
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        // No journal (the disk is mounted read-only) and no blocks kept
        // for root: all of it is data.
        .args(["-q", "-F", "-t", "ext4", "-O", "^has_journal", "-m", "0"])
        .args(["-L", DATA_DISK_LABEL])
        .arg("-U")
        .arg(Guid::derive(seed, "data-filesystem").to_string())
        .arg("-E")
        .arg(format!(
            "hash_seed={},root_owner=0:0",
            Guid::derive(seed, "data-hash-seed")
        ))
        .arg("-d")
        .arg(staging)
        .arg(&disk)
        .run()
        .context("writing the data disk's filesystem failed")?;
    crate::disk::ext4::index_directories(&disk, 0, epoch)?;
    crate::disk::ext4::normalize_times(&disk, 0, epoch, work)?;
    out.commit()
}

/// Build the data disk of `image` from the tree `root` into `out`: the
/// raw file, and qcow2 when the image builds qcow2. Returns what the
/// manifest records of it.
pub fn build(
    image: &Image,
    root: &Path,
    seed: &str,
    epoch: u64,
    work: &Path,
    out: &Path,
) -> Result<DataDisk> {
    let staging = work.join("data-disk");
    let (bytes, files) = take_out(image, root, &staging)?;
    crate::fsutil::clamp_mtimes(&staging, epoch)?;
    let tree_sha256 = crate::smoke::tree::digest_dir(&staging)?;
    let raw = out.join(file_name(&image.name, Format::Raw));
    write_raw(&staging, size_for(bytes, files), seed, epoch, work, &raw)?;
    fs::remove_dir_all(&staging).with_context(|| format!("cannot remove {}", staging.display()))?;
    let mut made = vec![(raw.clone(), Format::Raw)];
    if image.formats.contains(&Format::Qcow2) {
        let q = out.join(file_name(&image.name, Format::Qcow2));
        crate::formats::qcow2::convert(&raw, &q)?;
        made.push((q, Format::Qcow2));
    }
    let files = made
        .into_iter()
        .map(|(p, format)| crate::build::artifact(format, &p))
        .collect::<Result<Vec<_>>>()?;
    Ok(DataDisk {
        label: DATA_DISK_LABEL.to_string(),
        files,
        tree_sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_leave_room_and_round_to_mib() {
        assert_eq!(size_for(0, 0), 32 * MIB);
        let s = size_for(1 << 30, 10);
        assert_eq!(s % MIB, 0);
        assert!(s > (1 << 30) + (1 << 30) / 20);
    }

    /// A data disk holds the staged tree exactly (its digest, read back
    /// from the filesystem, is the tree's), the same bytes twice, and one
    /// byte changed in a file changes the digest the native run checks.
    #[test]
    fn the_disk_holds_the_tree_byte_for_byte_and_a_changed_byte_shows() {
        let d = tempfile::tempdir().unwrap();
        let staging = d.path().join("staging");
        fs::create_dir_all(staging.join("lambda")).unwrap();
        fs::write(
            staging.join("lambda/lambda.fa"),
            ">lambda\nACGTACGTTTGA\n".repeat(300),
        )
        .unwrap();
        fs::write(staging.join("lambda/SHA256SUMS"), "x  lambda.fa\n").unwrap();
        crate::fsutil::clamp_mtimes(&staging, 1_700_000_000).unwrap();
        let want = crate::smoke::tree::digest_dir(&staging).unwrap();
        let (a, b) = (d.path().join("a.raw"), d.path().join("b.raw"));
        for p in [&a, &b] {
            write_raw(
                &staging,
                size_for(8000, 2),
                "seed",
                1_700_000_000,
                d.path(),
                p,
            )
            .unwrap();
        }
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap(), "reproducible");
        let got = crate::smoke::tree::data_disk_digest(&a, None).unwrap();
        assert_eq!(got, want);
        let label = Cmd::new("e2label").arg(&a).output().unwrap();
        assert_eq!(label.trim(), DATA_DISK_LABEL);
        // One byte of the file's content, found on the disk and changed.
        let mut bytes = fs::read(&a).unwrap();
        let at = bytes
            .windows(12)
            .position(|w| w == b"ACGTACGTTTGA")
            .unwrap();
        bytes[at] = b'T';
        fs::write(&a, &bytes).unwrap();
        let changed = crate::smoke::tree::data_disk_digest(&a, None).unwrap();
        assert_ne!(changed, want);
    }

    #[test]
    fn the_fstab_line_mounts_by_label_read_only_and_never_blocks_boot() {
        let l = fstab_line();
        assert!(l.starts_with("LABEL=biovm-data /data/genomes ext4 "), "{l}");
        assert!(l.contains("ro,nofail"), "{l}");
    }
}
