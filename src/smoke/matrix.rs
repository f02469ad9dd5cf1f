//! What the test of a built image runs (its matrix): every VM cell (a
//! disk artifact under one firmware, on its destination's disk controller,
//! with its cloud's instance data: a [`Cell`]), every container artifact,
//! and the native run of every check in the tree of one disk; and which
//! cells would only repeat another cell's boot ([`shared_boots`]). The
//! jobs are run by [`super::queue`].

use std::path::{Path, PathBuf};

use super::boot_disk::{boot_disk_sha256, qemu_format};
use super::kvm;
use super::qemu::{Bus, DiskFormat};
use super::report::BootReport;
use super::seed::Cloud;
use crate::config::{BootMode, Format};

/// One cell of the test matrix, and what one VM boot boots: a disk
/// artifact under one firmware, on its destination's disk controller, with
/// its destination's instance data.
#[derive(Debug, Clone)]
pub struct Cell {
    pub artifact: PathBuf,
    pub format: Format,
    pub firmware: BootMode,
    pub bus: Bus,
    pub cloud: Cloud,
}

impl Cell {
    /// `raw-uefi`, `ova-bios`...: names the cell's logs.
    pub fn label(&self) -> String {
        format!("{}-{}", self.format.as_str(), self.firmware.as_str())
    }
}

/// The VM cells for `artifacts` (disk formats only), every firmware each.
pub fn vm_cells(artifacts: &[(PathBuf, Format)], modes: &[BootMode]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for (path, format) in artifacts {
        if !format.is_disk() {
            continue;
        }
        for m in modes {
            cells.push(Cell {
                artifact: path.clone(),
                format: *format,
                firmware: *m,
                bus: Bus::for_format(*format),
                cloud: Cloud::for_format(*format),
            });
        }
    }
    cells
}

/// One unit of the matrix.
#[derive(Debug, Clone)]
pub enum Job {
    /// Boot a disk artifact under one firmware.
    Vm(Cell),
    /// Run the checks in a container artifact's root filesystem, or (for a
    /// disk format) natively in the root filesystem read out of the disk.
    Container { artifact: PathBuf, format: Format },
}

impl Job {
    /// `raw-uefi`, `oci`...: names the job's logs.
    pub fn label(&self) -> String {
        match self {
            Job::Vm(c) => c.label(),
            Job::Container { format, .. } if format.is_disk() => {
                format!("{}-native", format.as_str())
            }
            Job::Container { format, .. } => format.as_str().to_string(),
        }
    }

    /// A native run: every check in a disk's root tree (see [`native_job`]).
    pub fn is_native(&self) -> bool {
        matches!(self, Job::Container { format, .. } if format.is_disk())
    }

    /// The report of a job that could not even start.
    pub fn failed(&self, e: &anyhow::Error) -> BootReport {
        match self {
            Job::Vm(c) => BootReport::failed_to_start(c, e),
            Job::Container { artifact, format } => {
                BootReport::container_failed_to_start(artifact, *format, e)
            }
        }
    }
}

/// The matrix for `artifacts`: each disk under every firmware in `modes`
/// (VM jobs first: they take longest), then each container artifact.
pub fn jobs(artifacts: &[(PathBuf, Format)], modes: &[BootMode]) -> Vec<Job> {
    let mut v: Vec<Job> = vm_cells(artifacts, modes)
        .into_iter()
        .map(Job::Vm)
        .collect();
    v.extend(
        artifacts
            .iter()
            .filter(|(_, f)| !f.is_disk())
            .map(|(a, f)| Job::Container {
                artifact: a.clone(),
                format: *f,
            }),
    );
    v
}

/// The job that runs every check natively, once, in the root filesystem of
/// one of `artifacts`' disks (the raw disk where there is one): VM boots
/// then run the system's checks and [`super::boot::boot_sample`] only. None when
/// there is no disk, or no tool check to run.
pub fn native_job(artifacts: &[(PathBuf, Format)]) -> Option<Job> {
    let disks = || artifacts.iter().filter(|(_, f)| f.is_disk());
    disks()
        .find(|(_, f)| *f == Format::Raw)
        .or_else(|| disks().next())
        .map(|(a, f)| Job::Container {
            artifact: a.clone(),
            format: *f,
        })
}

/// How the matrix treats one job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sharing {
    /// The earlier job whose boot this one would repeat exactly.
    pub same_boot_as: Option<usize>,
    /// The SHA-256 of the disk QEMU boots, where it was compared.
    pub disk_sha256: Option<String>,
    /// Whether the disk is another file (another format) whose contents, as
    /// the guest reads them, were compared sector by sector with that job's
    /// (`qemu-img compare`); false when it is the very same bytes.
    pub by_contents: bool,
}

/// For each job, whether it repeats an earlier job's boot: a VM cell whose
/// disk gives the guest exactly what an earlier cell's disk gives it, on
/// the same controller, under the same firmware and cloud. Either the disk
/// is byte-for-byte the earlier one (an OVA and a Vagrant box carry the
/// very VMDK the build wrote as the `vmdk` artifact), or it is another
/// format of the same disk (a VDI beside that VMDK, both VirtualBox's)
/// whose virtual size and every sector QEMU reads from it are the earlier
/// disk's. Only disks another artifact could match are read. A disk that
/// cannot be read is not shared: its own boot reports why.
pub fn shared_boots(jobs: &[Job]) -> Vec<Sharing> {
    use std::collections::HashMap;
    // Where a disk boots, bytes aside: the controller, the cloud data source.
    type Dest = (Bus, Cloud);
    // Each VM job's disk: its artifact, format, QEMU's format and where it boots.
    struct Disk<'a> {
        artifact: &'a Path,
        format: Format,
        qemu: DiskFormat,
        dest: Dest,
    }
    let vms: Vec<Option<(&Cell, Disk)>> = jobs
        .iter()
        .map(|j| match j {
            Job::Vm(c) => qemu_format(&c.artifact, c.format).ok().map(|qemu| {
                let d = Disk {
                    artifact: &c.artifact,
                    format: c.format,
                    qemu,
                    dest: (c.bus, c.cloud),
                };
                (c, d)
            }),
            Job::Container { .. } => None,
        })
        .collect();
    // The distinct disks, in job order, each with its SHA-256 where another
    // disk could give the same boot.
    let mut disks: Vec<(&Disk, Option<String>)> = Vec::new();
    for (_, d) in vms.iter().flatten() {
        if disks.iter().any(|(o, _)| o.artifact == d.artifact) {
            continue;
        }
        let could_match = vms
            .iter()
            .flatten()
            .any(|(_, o)| o.artifact != d.artifact && o.dest == d.dest);
        let sha = could_match.then(|| boot_disk_sha256(d.artifact, d.format));
        let sha = match sha {
            Some(Ok(sha)) => Some(sha),
            Some(Err(e)) => {
                log::warn!("{e:#}: its cells boot on their own");
                None
            }
            None => None,
        };
        disks.push((d, sha));
    }
    // Each disk's first equal among the disks before it (itself if none),
    // and whether that took comparing contents.
    let mut equal_to: Vec<(usize, bool)> = Vec::with_capacity(disks.len());
    for (i, (d, sha)) in disks.iter().enumerate() {
        let found = sha.as_ref().and_then(|sha| {
            (0..i)
                .filter(|&j| equal_to[j].0 == j && disks[j].0.dest == d.dest)
                .find_map(|j| {
                    let (o, osha) = &disks[j];
                    let osha = osha.as_ref()?;
                    if osha == sha && o.qemu == d.qemu {
                        return Some((j, false));
                    }
                    // Another format of the same disk: compared where QEMU
                    // reads both files as they are (not inside an archive).
                    if o.qemu == d.qemu
                        || super::boot_disk::disk_in_archive(o.format)
                        || super::boot_disk::disk_in_archive(d.format)
                    {
                        return None;
                    }
                    match super::boot_disk::same_contents(o.artifact, o.qemu, d.artifact, d.qemu) {
                        Ok(true) => Some((j, true)),
                        Ok(false) => None,
                        Err(e) => {
                            log::warn!("{e:#}: its cells boot on their own");
                            None
                        }
                    }
                })
        });
        equal_to.push(found.unwrap_or((i, false)));
    }
    let disk_of = |a: &Path| disks.iter().position(|(d, _)| d.artifact == a);
    // The first job of each disk (up to equality), way of booting and firmware.
    let mut first: HashMap<(usize, Dest, BootMode), usize> = HashMap::new();
    let mut sharing = vec![Sharing::default(); jobs.len()];
    for (i, vm) in vms.iter().enumerate() {
        let Some((c, d)) = vm else { continue };
        let Some(k) = disk_of(d.artifact) else {
            continue;
        };
        let Some(sha) = &disks[k].1 else { continue };
        sharing[i].disk_sha256 = Some(sha.clone());
        let (class, by_contents) = equal_to[k];
        let p = *first.entry((class, d.dest, c.firmware)).or_insert(i);
        if p != i {
            sharing[i].same_boot_as = Some(p);
            sharing[i].by_contents = by_contents;
        }
    }
    sharing
}

impl BootReport {
    /// Name `cell`'s artifact (its file name), format and disk controller.
    pub fn name_cell(&mut self, cell: &Cell) {
        self.artifact = cell
            .artifact
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.format = cell.format;
        self.bus = cell.bus.into();
    }

    /// The report of a cell whose boot could not even be set up.
    pub fn failed_to_start(cell: &Cell, e: &anyhow::Error) -> BootReport {
        let mut r = BootReport::new(
            cell.format,
            cell.firmware.into(),
            cell.bus.into(),
            kvm::accel().into(),
            PathBuf::new(),
        );
        r.name_cell(cell);
        r.error = Some(format!("{e:#}"));
        r
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn the_matrix_has_every_disk_under_every_firmware_then_the_containers() {
        let arts: Vec<(PathBuf, Format)> = [
            ("m.raw", Format::Raw),
            ("m.oci", Format::Oci),
            ("m.ova", Format::Ova),
            ("m.sif", Format::Sif),
        ]
        .iter()
        .map(|(p, f)| (PathBuf::from(p), *f))
        .collect();
        let labels: Vec<String> = jobs(&arts, &[BootMode::Uefi, BootMode::Bios])
            .iter()
            .map(Job::label)
            .collect();
        assert_eq!(
            labels,
            ["raw-uefi", "raw-bios", "ova-uefi", "ova-bios", "oci", "sif"]
        );
        // Without firmware, only the containers remain.
        let labels: Vec<String> = jobs(&arts, &[]).iter().map(Job::label).collect();
        assert_eq!(labels, ["oci", "sif"]);
    }

    /// A tar archive at `path` holding `members` (name, bytes), gzip-compressed
    /// when `gz` (as a Vagrant box is).
    fn archive(path: &Path, members: &[(&str, &[u8])], gz: bool) {
        let file = std::fs::File::create(path).unwrap();
        let w: Box<dyn std::io::Write> = if gz {
            Box::new(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::fast(),
            ))
        } else {
            Box::new(file)
        };
        let mut b = tar::Builder::new(w);
        for (name, bytes) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *bytes).unwrap();
        }
        b.into_inner().unwrap().flush().unwrap();
    }

    /// The bytes of the test's disks.
    pub(crate) fn disk() -> Vec<u8> {
        b"not really a disk, but the same bytes in three artifacts".repeat(1000)
    }

    /// Raw, VMDK and VDI disks and a Vagrant box all holding [`disk`], an
    /// OVA holding `ova_disk`, and a tarball (not a disk).
    pub(crate) fn artifacts(dir: &Path, ova_disk: &[u8]) -> Vec<(PathBuf, Format)> {
        let disk = disk();
        let p = |n: &str| dir.join(n);
        std::fs::write(p("m.raw"), &disk).unwrap();
        std::fs::write(p("m.vmdk"), &disk).unwrap();
        std::fs::write(p("m.vdi"), &disk).unwrap();
        archive(
            &p("m.ova"),
            &[("m.ovf", b"<Envelope/>"), ("m-disk001.vmdk", ova_disk)],
            false,
        );
        archive(
            &p("m.box"),
            &[("metadata.json", b"{}"), ("box-disk001.vmdk", &disk)],
            true,
        );
        [
            ("m.raw", Format::Raw),
            ("m.vmdk", Format::Vmdk),
            ("m.vdi", Format::Vdi),
            ("m.ova", Format::Ova),
            ("m.box", Format::Vagrant),
            ("m.tar.gz", Format::Tarball),
        ]
        .iter()
        .map(|(n, f)| (p(n), *f))
        .collect()
    }

    /// Which job each job shares its boot with, by label.
    fn shared_labels(jobs: &[Job]) -> Vec<(String, Option<String>)> {
        shared_boots(jobs)
            .iter()
            .zip(jobs)
            .map(|(s, j)| (j.label(), s.same_boot_as.map(|p| jobs[p].label())))
            .collect()
    }

    #[test]
    fn identical_disks_share_a_boot_per_firmware_and_nothing_else_does() {
        let d = tempfile::tempdir().unwrap();
        let arts = artifacts(d.path(), &disk());
        let jobs = jobs(&arts, &[BootMode::Uefi, BootMode::Bios]);
        let s = |l: &str, p: Option<&str>| (l.to_string(), p.map(String::from));
        assert_eq!(
            shared_labels(&jobs),
            [
                // The raw disk boots on NVMe with EC2's metadata service;
                // QEMU cannot read these bytes as a VMDK or a VDI, so the
                // VDI's contents cannot be compared with the VMDK's: it
                // boots on its own (see the next test for real disks).
                s("raw-uefi", None),
                s("raw-bios", None),
                s("vmdk-uefi", None),
                s("vmdk-bios", None),
                s("vdi-uefi", None),
                s("vdi-bios", None),
                s("ova-uefi", Some("vmdk-uefi")),
                s("ova-bios", Some("vmdk-bios")),
                s("vagrant-uefi", Some("vmdk-uefi")),
                s("vagrant-bios", Some("vmdk-bios")),
                s("tarball", None),
            ]
        );
        // Only disks another artifact could match were read and hashed.
        let sharing = shared_boots(&jobs);
        let hashed: Vec<String> = sharing
            .iter()
            .zip(&jobs)
            .filter(|(s, _)| s.disk_sha256.is_some())
            .map(|(_, j)| j.label())
            .collect();
        // (The VDI boots where the VMDK does: it could have matched.)
        assert_eq!(
            hashed,
            [
                "vmdk-uefi",
                "vmdk-bios",
                "vdi-uefi",
                "vdi-bios",
                "ova-uefi",
                "ova-bios",
                "vagrant-uefi",
                "vagrant-bios"
            ]
        );
        assert_eq!(
            sharing[2].disk_sha256.as_deref(),
            Some(
                crate::fsutil::sha256_file(&d.path().join("m.vmdk"))
                    .unwrap()
                    .as_str()
            )
        );
    }

    /// `raw` written by qemu-img as `name` in QEMU format `format` (a
    /// streamOptimized VMDK, as the build writes them).
    fn convert(raw: &Path, name: &Path, format: &str) {
        let mut c = std::process::Command::new("qemu-img");
        c.args(["convert", "-f", "raw", "-O", format]);
        if format == "vmdk" {
            c.args(["-o", "subformat=streamOptimized"]);
        }
        assert!(c.arg(raw).arg(name).status().unwrap().success());
    }

    #[test]
    fn another_format_of_the_same_disk_shares_its_boot_and_one_changed_sector_does_not() {
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n);
        let mut raw = vec![0u8; 4 << 20];
        raw[..disk().len()].copy_from_slice(&disk());
        raw[3 << 20] = 7;
        std::fs::write(p("m.img"), &raw).unwrap();
        convert(&p("m.img"), &p("m.vmdk"), "vmdk");
        convert(&p("m.img"), &p("m.vdi"), "vdi");
        convert(&p("m.img"), &p("m.qcow2"), "qcow2");
        let arts: Vec<(PathBuf, Format)> = [
            ("m.vmdk", Format::Vmdk),
            ("m.vdi", Format::Vdi),
            ("m.qcow2", Format::Qcow2),
        ]
        .iter()
        .map(|(n, f)| (p(n), *f))
        .collect();
        let jobs = jobs(&arts, &[BootMode::Uefi, BootMode::Bios]);
        let sharing = shared_boots(&jobs);
        let s = |l: &str, p: Option<&str>| (l.to_string(), p.map(String::from));
        assert_eq!(
            shared_labels(&jobs),
            [
                s("vmdk-uefi", None),
                s("vmdk-bios", None),
                // VirtualBox's controller and cloud, the same sectors.
                s("vdi-uefi", Some("vmdk-uefi")),
                s("vdi-bios", Some("vmdk-bios")),
                // The same sectors too, but another destination's controller.
                s("qcow2-uefi", None),
                s("qcow2-bios", None),
            ]
        );
        assert!(sharing[2].by_contents && sharing[3].by_contents);
        assert!(!sharing[0].by_contents);
        // Its own file's digest, not the VMDK's.
        assert_eq!(
            sharing[2].disk_sha256.as_deref(),
            Some(crate::fsutil::sha256_file(&p("m.vdi")).unwrap().as_str())
        );
        // One byte of the last megabyte changed: the VDI boots on its own.
        raw[(3 << 20) + 1] = 1;
        std::fs::write(p("m.img"), &raw).unwrap();
        std::fs::remove_file(p("m.vdi")).unwrap();
        convert(&p("m.img"), &p("m.vdi"), "vdi");
        assert_eq!(shared_boots(&jobs)[2].same_boot_as, None);
        // The same sectors on a larger disk (zeros after them): a guest
        // sees another disk, which boots on its own.
        raw[(3 << 20) + 1] = 0;
        raw.resize(5 << 20, 0);
        std::fs::write(p("m.img"), &raw).unwrap();
        std::fs::remove_file(p("m.vdi")).unwrap();
        convert(&p("m.img"), &p("m.vdi"), "vdi");
        assert_eq!(shared_boots(&jobs)[2].same_boot_as, None);
    }

    #[test]
    fn a_disk_that_differs_by_one_byte_or_cannot_be_read_boots_on_its_own() {
        let d = tempfile::tempdir().unwrap();
        let mut disk = disk();
        disk[4321] ^= 1;
        let arts = artifacts(d.path(), &disk);
        let jobs = jobs(&arts, &[BootMode::Uefi]);
        let shared: Vec<(String, Option<String>)> = shared_labels(&jobs)
            .into_iter()
            .filter(|(_, p)| p.is_some())
            .collect();
        assert_eq!(
            shared,
            [("vagrant-uefi".to_string(), Some("vmdk-uefi".to_string()))]
        );
        // An OVA that is not a tar archive: no sharing, and its own boot
        // will say what is wrong with it.
        std::fs::write(d.path().join("m.ova"), b"garbage").unwrap();
        let shared = shared_labels(&jobs);
        assert_eq!(shared[3], ("ova-uefi".to_string(), None));
        assert_eq!(
            shared[4],
            ("vagrant-uefi".to_string(), Some("vmdk-uefi".to_string()))
        );
    }
}
