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
}

/// For each job, whether it repeats an earlier job's boot: a VM cell whose
/// disk is byte-for-byte an earlier cell's (an OVA and a Vagrant box carry
/// the very VMDK the build wrote as the `vmdk` artifact), read by QEMU in
/// the same format, on the same controller, under the same firmware and
/// cloud. Only disks that another artifact could match are hashed. A disk
/// that cannot be read is not shared: its own boot reports why.
pub fn shared_boots(jobs: &[Job]) -> Vec<Sharing> {
    use std::collections::HashMap;
    // Each VM job's cell and how its disk boots, bytes aside: QEMU's disk
    // format, the controller, the cloud data source.
    type How = (DiskFormat, Bus, Cloud);
    let vms: Vec<Option<(&Cell, How)>> = jobs
        .iter()
        .map(|j| match j {
            Job::Vm(c) => qemu_format(&c.artifact, c.format)
                .ok()
                .map(|f| (c, (f, c.bus, c.cloud))),
            Job::Container { .. } => None,
        })
        .collect();
    let mut digests: HashMap<&Path, String> = HashMap::new();
    for &(c, how) in vms.iter().flatten() {
        let could_match = vms
            .iter()
            .flatten()
            .any(|&(o, h)| o.artifact != c.artifact && h == how);
        if !could_match || digests.contains_key(c.artifact.as_path()) {
            continue;
        }
        match boot_disk_sha256(&c.artifact, c.format) {
            Ok(sha) => {
                digests.insert(&c.artifact, sha);
            }
            Err(e) => log::warn!("{e:#}: its cells boot on their own"),
        }
    }
    // The first job of each disk, way of booting and firmware.
    let mut first: HashMap<(&str, How, BootMode), usize> = HashMap::new();
    let mut sharing = vec![Sharing::default(); jobs.len()];
    for (i, vm) in vms.iter().enumerate() {
        let Some((c, how)) = vm else { continue };
        let Some(sha) = digests.get(c.artifact.as_path()) else {
            continue;
        };
        sharing[i].disk_sha256 = Some(sha.clone());
        let p = *first.entry((sha, *how, c.firmware)).or_insert(i);
        sharing[i].same_boot_as = (p != i).then_some(p);
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
                // The raw disk boots on NVMe with EC2's metadata service and
                // the VDI is read as VDI: the same bytes, another boot.
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
        assert_eq!(
            hashed,
            [
                "vmdk-uefi",
                "vmdk-bios",
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
