//! Stage 2: the raw disk. A GPT disk with a BIOS boot partition, an EFI
//! system partition and an ext4 root, assembled into one sparse file with
//! no loop devices and no mounts: `mkfs.ext4 -d` and `mkfs.fat` write
//! straight into the partitions' byte ranges, mtools fills the ESP, and the
//! partition table and boot code are written by biovm itself.

pub(crate) mod ext4;
pub(crate) mod gpt;
pub(crate) mod grub;

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::cmd::Cmd;
use crate::config::{BootMode, Image};
use crate::fsutil::AtomicFile;
use gpt::{Guid, Partition, Table, SECTOR};

const MIB: u64 = 1 << 20;
/// BIOS boot partition: 1 MiB at 1 MiB.
const BIOS_START: u64 = MIB;
const BIOS_SIZE: u64 = MIB;
/// EFI system partition: 64 MiB, FAT32.
const ESP_START: u64 = 2 * MIB;
const ESP_SIZE: u64 = 64 * MIB;
const ROOT_START: u64 = ESP_START + ESP_SIZE;
/// Filesystem label of the root partition.
pub(crate) const ROOT_LABEL: &str = "biovm-root";

/// Every identifier written into a disk, derived from one seed so the same
/// seed always gives the same disk.
#[derive(Debug, Clone)]
pub struct DiskIds {
    pub(crate) disk_guid: Guid,
    pub(crate) bios_part: Guid,
    pub(crate) esp_part: Guid,
    pub(crate) root_part: Guid,
    pub(crate) root_fs_uuid: Guid,
    pub(crate) root_hash_seed: Guid,
    /// FAT volume ID, 8 hex digits.
    pub esp_volume_id: String,
}

impl DiskIds {
    /// The identifiers of the disk built from `seed` (the lock's): each
    /// derived from the seed and what it identifies.
    pub fn from_seed(seed: &str) -> DiskIds {
        let g = |p| Guid::derive(seed, p);
        DiskIds {
            disk_guid: g("disk"),
            bios_part: g("bios-boot-partition"),
            esp_part: g("esp-partition"),
            root_part: g("root-partition"),
            root_fs_uuid: g("root-filesystem"),
            root_hash_seed: g("root-hash-seed"),
            esp_volume_id: crate::fsutil::hex(&g("esp-volume-id").bytes()[..4]),
        }
    }
}

/// The partition table for a disk of `size` bytes.
pub(crate) fn layout(size: u64, ids: &DiskIds) -> Result<Table> {
    let mut t = Table {
        disk_guid: ids.disk_guid,
        size_bytes: size,
        partitions: Vec::new(),
    };
    let (_, last_usable) = t.usable();
    // Keep the root's end aligned to 1 MiB below the backup table.
    let root_end = ((last_usable + 1) * SECTOR) / MIB * MIB;
    if root_end <= ROOT_START + 256 * MIB {
        bail!("disk size {size} bytes is too small: it needs at least 1 GiB");
    }
    let part =
        |type_guid: &str, guid: Guid, start: u64, end: u64, name: &str| -> Result<Partition> {
            Ok(Partition {
                type_guid: Guid::parse(type_guid)?,
                guid,
                first_lba: start / SECTOR,
                last_lba: end / SECTOR - 1,
                name: name.into(),
                attributes: 0,
            })
        };
    t.partitions = vec![
        part(
            gpt::types::BIOS_BOOT,
            ids.bios_part,
            BIOS_START,
            BIOS_START + BIOS_SIZE,
            "BIOS boot",
        )?,
        part(
            gpt::types::ESP,
            ids.esp_part,
            ESP_START,
            ESP_START + ESP_SIZE,
            "EFI system",
        )?,
        part(
            gpt::types::ROOT_X86_64,
            ids.root_part,
            ROOT_START,
            root_end,
            "root",
        )?,
    ];
    Ok(t)
}

/// Options that make the filesystems reproducible.
pub(crate) struct FsTime {
    /// Seconds since the epoch written as every filesystem timestamp.
    pub(crate) source_date_epoch: u64,
}

/// Assemble the raw disk at `dest` from the configured root tree `root`.
/// `work` is a scratch folder. `dest` appears only when complete.
pub(crate) fn assemble(
    image: &Image,
    ids: &DiskIds,
    root: &Path,
    work: &Path,
    time: &FsTime,
    dest: &Path,
) -> Result<()> {
    let table = layout(image.disk.size_bytes, ids)?;
    let (bios, esp, rootp) = (
        &table.partitions[0],
        &table.partitions[1],
        &table.partitions[2],
    );
    let (out, file) = AtomicFile::create(dest)?;
    file.set_len(image.disk.size_bytes)
        .with_context(|| format!("cannot size {}", out.path().display()))?;
    let disk = out.path().to_path_buf();
    let epoch = time.source_date_epoch.to_string();

    // Root filesystem, written at its partition's offset.
    let uuid = ids.root_fs_uuid.to_string();
    Cmd::new("mkfs.ext4")
        .env("E2FSPROGS_FAKE_TIME", &epoch)
        .args(["-q", "-F", "-t", "ext4", "-L", ROOT_LABEL, "-U", &uuid])
        .arg("-E")
        .arg(format!(
            "offset={},hash_seed={},root_owner=0:0",
            rootp.offset(),
            ids.root_hash_seed
        ))
        .arg("-d")
        .arg(root)
        .arg(&disk)
        .arg(format!("{}k", rootp.size() / 1024))
        .run()
        .with_context(|| {
            format!(
                "writing the root filesystem ({} MiB, disk.size in {}) failed; if it is full, raise disk.size",
                rootp.size() / MIB,
                image.source.display()
            )
        })?;
    ext4::index_directories(&disk, rootp.offset(), time.source_date_epoch)?;
    // mkfs copies each inode's ctime and atime from the staging tree.
    ext4::normalize_times(&disk, rootp.offset(), time.source_date_epoch, work)?;

    // EFI system partition: built as its own small file (mkfs.fat sizes
    // its clusters from the file it is given), then copied into place.
    let esp_img = work.join("esp.img");
    write_esp(image, ids, work, &uuid, &epoch, &esp_img, esp.size())?;
    copy_into(&esp_img, &file, esp.offset())?;

    // BIOS: core.img in its partition, boot.img in the MBR.
    let boot_code = if image.disk.boot.contains(&BootMode::Bios) {
        let core = grub::bios_core(work, &uuid)?;
        grub::install_core(&file, &core, bios)?;
        Some(grub::boot_code(bios.first_lba)?)
    } else {
        None
    };
    table.write(&file, boot_code.as_deref())?;
    drop(file);
    out.commit()
}

fn write_esp(
    image: &Image,
    ids: &DiskIds,
    work: &Path,
    root_uuid: &str,
    epoch: &str,
    esp_img: &Path,
    size: u64,
) -> Result<()> {
    let _ = std::fs::remove_file(esp_img);
    // mkfs.fat stamps the volume label's folder entry with the current time
    // (4.2 ignores SOURCE_DATE_EPOCH); --invariant makes that a constant,
    // and mlabel below restamps it with SOURCE_DATE_EPOCH. The volume ID
    // comes from the seed: -i must follow --invariant, which otherwise
    // replaces it with its own constant.
    Cmd::new("mkfs.fat")
        .args(["-F", "32", "-n", "EFI", "--invariant"])
        .args(["-i", &ids.esp_volume_id])
        .arg("-C")
        .arg(esp_img)
        .arg((size / 1024).to_string())
        .run()
        .context("creating the EFI system partition failed")?;
    // mtools takes "now" from SOURCE_DATE_EPOCH and writes FAT times (which
    // are local times) in TZ's zone: UTC, so the host's zone does not matter.
    let mtools = |args: &[&str]| -> Result<()> {
        let img = esp_img.to_string_lossy();
        let mut c = Cmd::new(args[0]);
        c.env("MTOOLS_SKIP_CHECK", "1")
            .env("SOURCE_DATE_EPOCH", epoch)
            .env("TZ", "UTC")
            .args(["-i", &img])
            .args(&args[1..])
            .run()
            .context("filling the EFI system partition failed")?;
        Ok(())
    };
    mtools(&["mlabel", "::EFI"])?;
    if !image.disk.boot.contains(&BootMode::Uefi) {
        return Ok(());
    }
    let efi = grub::efi_image(work, root_uuid)?;
    set_mtime(&efi, epoch.parse().unwrap_or(0))?;
    mtools(&["mmd", "::/EFI"])?;
    mtools(&["mmd", "::/EFI/BOOT"])?;
    mtools(&[
        "mcopy",
        "-m",
        &efi.to_string_lossy(),
        "::/EFI/BOOT/BOOTX64.EFI",
    ])?;
    Ok(())
}

fn set_mtime(path: &Path, secs: u64) -> Result<()> {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(t))
        .with_context(|| format!("cannot set the time of {}", path.display()))
}

/// Copy `src` into `dst` at `offset`, skipping all-zero blocks so the
/// destination stays sparse.
fn copy_into(src: &Path, dst: &std::fs::File, offset: u64) -> Result<()> {
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    let mut f =
        std::fs::File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        for (i, block) in chunk.chunks(4096).enumerate() {
            if block.iter().any(|b| *b != 0) {
                dst.write_all_at(block, offset + pos + (i * 4096) as u64)?;
            }
        }
        pos += n as u64;
    }
    Ok(())
}

/// For tests: a raw GPT disk of 1 GiB at `raw` whose root partition holds
/// the tree `tree` (no boot loader: enough for what reads only the root
/// filesystem).
#[cfg(test)]
pub(crate) fn raw_disk_of(tree: &Path, raw: &Path) {
    let ids = DiskIds::from_seed("seed");
    let size = 1u64 << 30;
    let table = layout(size, &ids).unwrap();
    let f = std::fs::File::create(raw).unwrap();
    f.set_len(size).unwrap();
    table.write(&f, None).unwrap();
    drop(f);
    let root = &table.partitions[2];
    Cmd::new("mkfs.ext4")
        .args(["-q", "-F", "-t", "ext4"])
        .arg("-E")
        .arg(format!("offset={},root_owner=0:0", root.offset()))
        .arg("-d")
        .arg(tree)
        .arg(raw)
        .arg(format!("{}k", root.size() / 1024))
        .run()
        .unwrap();
}
