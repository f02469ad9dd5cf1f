//! The disk a VM boot reads for an artifact, and its QEMU format: the
//! artifact itself, or for an OVA or a Vagrant box the streamOptimized
//! VMDK inside it (copied out as VirtualBox would import it, or hashed in
//! place).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result};

use super::qemu::DiskFormat;
use crate::config::Format;

/// The QEMU format of the disk a `format` artifact boots from (for an OVA
/// or a Vagrant box, of the VMDK inside it); an error naming `artifact`
/// for a container or tree artifact.
pub fn qemu_format(artifact: &Path, format: Format) -> Result<DiskFormat> {
    DiskFormat::of_artifact(format).with_context(|| {
        format!(
            "{}: a {} artifact is not a disk to boot",
            artifact.display(),
            format.as_str()
        )
    })
}

/// Whether the disk of a `format` artifact sits inside an archive.
pub fn disk_in_archive(format: Format) -> bool {
    matches!(format, Format::Ova | Format::Vagrant)
}

/// The disk QEMU boots for `artifact`, and its QEMU format. OVA and
/// Vagrant boxes carry a streamOptimized VMDK inside a tar (gzip-compressed
/// for Vagrant): it is copied out to `scratch`, as VirtualBox would import it.
pub fn disk_to_boot(
    artifact: &Path,
    format: Format,
    scratch: &Path,
) -> Result<(PathBuf, DiskFormat)> {
    let qf = qemu_format(artifact, format)?;
    if disk_in_archive(format) {
        extract_vmdk(artifact, scratch)?;
        Ok((scratch.to_path_buf(), qf))
    } else {
        Ok((artifact.to_path_buf(), qf))
    }
}

/// A copy of an archive's disk, made once (or the error that stopped it).
type Copy = Arc<OnceLock<std::result::Result<PathBuf, String>>>;

/// The disks one test boots: an archive's disk (an OVA's or a Vagrant
/// box's VMDK) is copied out once for the whole test, not once per cell,
/// and serves each cell that boots it (every firmware; QEMU opens it
/// read-only under each cell's overlay) and the comparison of its sectors
/// (see `tree`). The copies live in a scratch folder that goes with this.
pub struct BootDisks {
    scratch: crate::fsutil::Scratch,
    copies: Mutex<HashMap<PathBuf, Copy>>,
}

impl BootDisks {
    /// An empty set, whose copies go into a scratch folder in `run_dir`.
    pub fn new(run_dir: &Path) -> Result<BootDisks> {
        fs::create_dir_all(run_dir)
            .with_context(|| format!("cannot create {}", run_dir.display()))?;
        Ok(BootDisks {
            scratch: crate::fsutil::Scratch::new_in(run_dir, "disks")?,
            copies: Mutex::new(HashMap::new()),
        })
    }

    /// The disk QEMU boots for `artifact` (of `format`) and its QEMU
    /// format, as [`disk_to_boot`] gives it; an archive's disk is copied
    /// out the first time it is asked for (a second caller meanwhile waits
    /// for that copy).
    pub fn get(&self, artifact: &Path, format: Format) -> Result<(PathBuf, DiskFormat)> {
        let qf = qemu_format(artifact, format)?;
        if !disk_in_archive(format) {
            return Ok((artifact.to_path_buf(), qf));
        }
        let (copy, dest) = {
            let mut m = self.copies.lock().unwrap_or_else(|e| e.into_inner());
            let dest = self.scratch.join(format!("disk{}.vmdk", m.len()));
            let copy = m.entry(artifact.to_path_buf()).or_default().clone();
            (copy, dest)
        };
        let got = copy.get_or_init(|| {
            extract_vmdk(artifact, &dest)
                .map(|()| dest)
                .map_err(|e| format!("{e:#}"))
        });
        match got {
            Ok(p) => Ok((p.clone(), qf)),
            Err(e) => Err(anyhow::anyhow!("{e}")),
        }
    }
}

/// Copy the first `.vmdk` member of the (possibly gzip-compressed) tar
/// `archive` to `dest`.
fn extract_vmdk(archive: &Path, dest: &Path) -> Result<()> {
    with_vmdk_member(archive, |name, member| {
        let mut out =
            fs::File::create(dest).with_context(|| format!("cannot create {}", dest.display()))?;
        std::io::copy(member, &mut out)
            .with_context(|| format!("extracting {name} from {}", archive.display()))?;
        Ok(())
    })
}

/// Call `f` with the name and contents of the first `.vmdk` member of the
/// (possibly gzip-compressed) tar `archive`.
fn with_vmdk_member<T>(
    archive: &Path,
    f: impl FnOnce(&str, &mut dyn std::io::Read) -> Result<T>,
) -> Result<T> {
    use std::io::Read;
    let open =
        || fs::File::open(archive).with_context(|| format!("cannot open {}", archive.display()));
    let mut magic = [0u8; 2];
    let gz = open()?.read(&mut magic)? == 2 && magic == [0x1f, 0x8b];
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(open()?))
    } else {
        Box::new(open()?)
    };
    let mut ar = tar::Archive::new(reader);
    for e in ar
        .entries()
        .with_context(|| format!("{} is not a tar archive", archive.display()))?
    {
        let mut e = e.with_context(|| format!("reading {}", archive.display()))?;
        let name = e.path()?.to_string_lossy().into_owned();
        if name.ends_with(".vmdk") {
            return f(&name, &mut e);
        }
    }
    anyhow::bail!("{} holds no .vmdk disk", archive.display())
}

/// Whether disks `a` and `b` (in QEMU formats `fa` and `fb`) hold the same
/// bytes as a guest reads them: the same virtual size, and `qemu-img
/// compare` (QEMU's own block drivers, the ones a boot reads through) finds
/// no sector that differs. A VDI and a VMDK the build wrote from one raw
/// disk do; one changed byte anywhere does not.
pub fn same_contents(a: &Path, fa: DiskFormat, b: &Path, fb: DiskFormat) -> Result<bool> {
    use super::seed::virtual_size;
    if virtual_size(a, fa)? != virtual_size(b, fb)? {
        return Ok(false);
    }
    let o = std::process::Command::new("qemu-img")
        .args(["compare", "-q", "-f", fa.name(), "-F", fb.name()])
        .arg(a)
        .arg(b)
        .output()
        .context("cannot run qemu-img")?;
    // 0: identical, 1: a sector differs, anything else: it could not tell.
    match o.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => anyhow::bail!(
            "qemu-img compare {} {} failed ({}): {}",
            a.display(),
            b.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
    }
}

/// The SHA-256 of the disk QEMU boots for `artifact` (for an OVA or a
/// Vagrant box, of the VMDK inside it, read from the archive without
/// writing it out).
pub fn boot_disk_sha256(artifact: &Path, format: Format) -> Result<String> {
    use sha2::Digest;
    if !disk_in_archive(format) {
        return crate::store::sha256(artifact);
    }
    with_vmdk_member(artifact, |name, member| {
        let mut h = sha2::Sha256::new();
        std::io::copy(member, &mut h)
            .with_context(|| format!("reading {name} in {}", artifact.display()))?;
        Ok(crate::fsutil::hex(&h.finalize()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar archive `path` holding `disk.vmdk` with `bytes`.
    fn ova(path: &Path, bytes: &[u8]) {
        let mut b = tar::Builder::new(fs::File::create(path).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "disk.vmdk", bytes).unwrap();
        b.finish().unwrap();
    }

    #[test]
    fn an_archive_s_disk_is_copied_out_once_per_test_and_goes_with_it() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a.ova"), d.path().join("b.ova"));
        ova(&a, b"disk of a");
        ova(&b, b"disk of b");
        let run = d.path().join("run");
        let disks = BootDisks::new(&run).unwrap();
        let (p1, f1) = disks.get(&a, Format::Ova).unwrap();
        let (p2, _) = disks.get(&a, Format::Ova).unwrap();
        let (p3, _) = disks.get(&b, Format::Ova).unwrap();
        assert_eq!(f1, DiskFormat::Vmdk);
        assert_eq!(p1, p2, "one copy for both cells");
        assert_ne!(p1, p3);
        assert_eq!(fs::read(&p1).unwrap(), b"disk of a");
        assert_eq!(fs::read(&p3).unwrap(), b"disk of b");
        // A disk outside an archive is booted where it is.
        let raw = d.path().join("m.raw");
        assert_eq!(disks.get(&raw, Format::Raw).unwrap().0, raw);
        // An archive without a disk: an error naming it, each time asked.
        let empty = d.path().join("empty.ova");
        tar::Builder::new(fs::File::create(&empty).unwrap())
            .finish()
            .unwrap();
        for _ in 0..2 {
            let e = disks.get(&empty, Format::Ova).unwrap_err().to_string();
            assert!(e.contains("empty.ova holds no .vmdk disk"), "{e}");
        }
        drop(disks);
        assert_eq!(fs::read_dir(&run).unwrap().count(), 0, "the copies go");
    }
}
