//! GRUB for both firmware paths, built on the host and written into the
//! disk image without running grub-install (which needs a block device):
//!
//! * UEFI: `grub-mkimage -O x86_64-efi` with an embedded config, copied to
//!   the removable path `EFI/BOOT/BOOTX64.EFI` on the ESP.
//! * BIOS: `grub-mkimage -O i386-pc` gives core.img, written to the BIOS
//!   boot partition; boot.img goes to LBA 0 and is patched as GRUB's
//!   `util/setup.c` would (core.img's LBA at 0x5C, boot drive byte at 0x64,
//!   NOPs at 0x66; core.img's first blocklist points at its own remainder).

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::gpt::{Partition, SECTOR};
use crate::cmd::Cmd;
use crate::config::BootMode;

pub(crate) const GRUB_EFI_DIR: &str = "/usr/lib/grub/x86_64-efi";
pub(crate) const GRUB_PC_DIR: &str = "/usr/lib/grub/i386-pc";

/// Modules both images carry (everything the menu needs; nothing is loaded later).
const COMMON_MODULES: &[&str] = &[
    "part_gpt",
    "part_msdos",
    "ext2",
    "fat",
    "search",
    "search_fs_uuid",
    "search_label",
    "normal",
    "linux",
    "configfile",
    "echo",
    "test",
    "gzio",
    "serial",
    "terminal",
    "boot",
    "ls",
    "cat",
    "sleep",
    "reboot",
    "halt",
];
const EFI_MODULES: &[&str] = &["efi_gop", "efi_uga", "all_video"];
const PC_MODULES: &[&str] = &["biosdisk", "vga_text"];

/// The config embedded in both images: find the root filesystem by UUID
/// and read the menu it carries. The BIOS image first turns on the serial
/// console (UEFI firmware already copies its console there), so that a
/// disk whose root filesystem GRUB cannot find says so where clouds and
/// `biovm test` read, not only on a screen nobody sees.
fn embedded_cfg(root_uuid: &str, serial: bool) -> String {
    let mut s = String::new();
    if serial {
        s.push_str(
            "serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1\n\
terminal_input serial console\n\
terminal_output serial console\n",
        );
    }
    s.push_str(&format!(
        "search --no-floppy --fs-uuid --set=root {root_uuid}\n\
set prefix=($root)/boot/grub\n\
configfile ($root)/boot/grub/grub.cfg\n"
    ));
    s
}

/// The GRUB platform `grub-mkimage` builds for one firmware.
struct Platform {
    /// GRUB's name of the platform (`-O`).
    name: &'static str,
    /// Where its modules are.
    modules_dir: &'static str,
    /// The image file it makes.
    image: &'static str,
    /// The modules only this platform's image carries.
    own_modules: &'static [&'static str],
}

impl Platform {
    /// The platform booted by `firmware`.
    fn of(firmware: BootMode) -> Platform {
        match firmware {
            BootMode::Uefi => Platform {
                name: "x86_64-efi",
                modules_dir: GRUB_EFI_DIR,
                image: "BOOTX64.EFI",
                own_modules: EFI_MODULES,
            },
            BootMode::Bios => Platform {
                name: "i386-pc",
                modules_dir: GRUB_PC_DIR,
                image: "core.img",
                own_modules: PC_MODULES,
            },
        }
    }
}

/// Build GRUB's image for `firmware` in `work`, with the config that finds
/// the root filesystem `root_uuid` embedded.
fn mkimage(work: &Path, firmware: BootMode, root_uuid: &str) -> Result<PathBuf> {
    let p = Platform::of(firmware);
    let cfg = work.join(format!("embedded-{}.cfg", p.name));
    fs::write(&cfg, embedded_cfg(root_uuid, firmware == BootMode::Bios))?;
    let out = work.join(p.image);
    Cmd::new("grub-mkimage")
        .arg("-O")
        .arg(p.name)
        .arg("-d")
        .arg(p.modules_dir)
        .arg("-p")
        .arg("/boot/grub")
        .arg("-c")
        .arg(&cfg)
        .arg("-o")
        .arg(&out)
        .args(COMMON_MODULES)
        .args(p.own_modules)
        .run()
        .with_context(|| format!("building the GRUB image for {} failed", p.name))?;
    Ok(out)
}

/// Build BOOTX64.EFI in `work`.
pub(crate) fn efi_image(work: &Path, root_uuid: &str) -> Result<PathBuf> {
    mkimage(work, BootMode::Uefi, root_uuid)
}

/// Build core.img in `work`.
pub(crate) fn bios_core(work: &Path, root_uuid: &str) -> Result<PathBuf> {
    mkimage(work, BootMode::Bios, root_uuid)
}

// Offsets in boot.img, from GRUB's include/grub/i386/pc/boot.h.
const KERNEL_SECTOR: usize = 0x5c;
const BOOT_DRIVE: usize = 0x64;
const DRIVE_CHECK: usize = 0x66;
/// Where the protective MBR's own bytes (disk signature, partition table, 0x55AA) start.
const MBR_TABLE: usize = 0x1b8;
/// The first blocklist sits in the last 12 bytes of core.img's first sector.
const BLOCKLIST: usize = 512 - 12;
/// Segment core.img's remainder is loaded at: 0x800 + 512/16.
const LOAD_SEGMENT: u16 = 0x820;

/// The first 0x1B8 bytes for LBA 0: GRUB's boot.img patched to load
/// core.img from `core_lba` on the drive the BIOS booted from.
pub(crate) fn boot_code(core_lba: u64) -> Result<Vec<u8>> {
    let p = Path::new(GRUB_PC_DIR).join("boot.img");
    let mut b = fs::read(&p)
        .with_context(|| format!("cannot read {} (package grub-pc-bin)", p.display()))?;
    if b.len() != 512 {
        bail!("{} is {} bytes, not 512", p.display(), b.len());
    }
    b[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
    b[BOOT_DRIVE] = 0xff;
    b[DRIVE_CHECK] = 0x90;
    b[DRIVE_CHECK + 1] = 0x90;
    b.truncate(MBR_TABLE);
    Ok(b)
}

/// Write core.img into the BIOS boot partition with its blocklist set.
pub(crate) fn install_core(disk: &File, core: &Path, part: &Partition) -> Result<()> {
    let mut img = fs::read(core).with_context(|| format!("cannot read {}", core.display()))?;
    let sectors = img.len().div_ceil(SECTOR as usize) as u64;
    if sectors * SECTOR > part.size() {
        bail!(
            "GRUB core.img ({} bytes) does not fit the {}-byte BIOS boot partition",
            img.len(),
            part.size()
        );
    }
    img.resize((sectors * SECTOR) as usize, 0);
    let start = part.first_lba + 1;
    let len = u16::try_from(sectors - 1).context("core.img too large")?;
    img[BLOCKLIST..BLOCKLIST + 8].copy_from_slice(&start.to_le_bytes());
    img[BLOCKLIST + 8..BLOCKLIST + 10].copy_from_slice(&len.to_le_bytes());
    img[BLOCKLIST + 10..BLOCKLIST + 12].copy_from_slice(&LOAD_SEGMENT.to_le_bytes());
    disk.write_all_at(&img, part.offset())?;
    Ok(())
}
