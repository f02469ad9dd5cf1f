//! The validated, typed model of recipes and images.
//!
//! Raw TOML is parsed into the structs of `raw.rs` and validated into these;
//! every later stage only ever sees these types.

use std::collections::BTreeMap;
use std::path::PathBuf;

use regex::Regex;

/// One analysis tool: `recipes/<category>/<name>.toml`.
#[derive(Debug, Clone)]
pub(crate) struct Recipe {
    pub(crate) name: String,
    pub(crate) summary: String,
    pub(crate) category: String,
    pub(crate) homepage: String,
    pub(crate) license: String,
    pub(crate) install: Install,
    pub(crate) check: Check,
    /// Functional tests on tiny data (may be empty).
    pub(crate) tests: Vec<FunctionalTest>,
    /// The file the recipe came from.
    pub(crate) source: PathBuf,
}

impl Recipe {
    /// The tool's version: its first Debian package's (pinned, else from
    /// `locked`, name → version), else its first PyPI pin.
    pub(crate) fn version_in(
        &self,
        locked: &std::collections::BTreeMap<String, String>,
    ) -> Option<String> {
        self.install
            .debian
            .first()
            .and_then(|p| p.version.clone().or_else(|| locked.get(&p.name).cloned()))
            .or_else(|| self.install.pypi.first().map(|p| p.version.clone()))
    }
}

/// How a recipe is installed. At least one source is non-empty.
#[derive(Debug, Clone, Default)]
pub(crate) struct Install {
    /// Debian binary packages, optionally pinned as `name=version`.
    pub(crate) debian: Vec<DebPackage>,
    /// PyPI requirements installed into the image's isolated environment.
    pub(crate) pypi: Vec<PypiPackage>,
    /// The recipe's own PyPI environment (`/opt/biovm/<name>`), if not
    /// the shared one.
    pub(crate) pypi_env: Option<String>,
    /// Files fetched over HTTP(S), checked against their sha256.
    pub(crate) downloads: Vec<Download>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct DebPackage {
    pub(crate) name: String,
    pub(crate) version: Option<String>,
}

impl DebPackage {
    /// The form apt and mmdebstrap take: `name` or `name=version`.
    pub(crate) fn apt_spec(&self) -> String {
        match &self.version {
            Some(v) => format!("{}={}", self.name, v),
            None => self.name.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PypiPackage {
    pub(crate) name: String,
    pub(crate) version: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Download {
    pub(crate) url: String,
    pub(crate) sha256: String,
    /// Absolute path inside the image the file (or unpacked archive) goes to.
    pub(crate) dest: String,
    /// Unpack a tar/zip archive into `dest` instead of copying the file.
    pub(crate) unpack: bool,
}

/// A version check: `command` runs in the booted image under `sh -c`; it
/// passes when it exits with `status` and its combined stdout and stderr
/// match `expect`.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    pub(crate) command: String,
    pub(crate) expect: Regex,
    pub(crate) status: i32,
    pub(crate) timeout_secs: u32,
}

/// A functional test on tiny data shipped in the repository.
#[derive(Debug, Clone)]
pub(crate) struct FunctionalTest {
    pub(crate) name: String,
    pub(crate) script: String,
    pub(crate) expect: Regex,
    pub(crate) status: i32,
    /// Files (relative to the recipe's folder) delivered to the guest next to the script.
    pub(crate) data: Vec<PathBuf>,
    pub(crate) timeout_secs: u32,
}

/// One image definition: `images/<name>.toml`, with its recipe selection resolved.
#[derive(Debug, Clone)]
pub struct Image {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) source: PathBuf,
    pub(crate) base: Base,
    /// The selected recipes, sorted by name.
    pub(crate) recipes: Vec<Recipe>,
    pub(crate) system: System,
    pub(crate) disk: Disk,
    pub(crate) formats: Vec<Format>,
    pub(crate) targets: Targets,
    /// The selected reference data sets, sorted by name.
    pub(crate) data: Vec<DataSet>,
    /// Whether they go onto a data disk of their own (`[data] location =
    /// "disk"`) instead of into the root filesystem.
    pub(crate) data_disk: bool,
    /// The browser workbench, when the image has one.
    pub(crate) workbench: Option<Workbench>,
    /// Where `biovm test` runs the tools' checks (`[checks]`).
    pub(crate) checks: Checks,
}

/// `[checks]`: what each VM boot runs beside the system's checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Checks {
    /// Every check in every boot, as `--full`.
    pub(crate) every_boot: bool,
    /// The recipes whose version check each boot runs (empty: the first
    /// of each install source, see `smoke::boot::boot_sample`).
    pub(crate) boot_sample: Vec<String>,
}

/// `[workbench]`: what the image's browser workbench serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Workbench {
    /// The Xfce desktop through noVNC.
    pub desktop: bool,
    /// The token-checking proxy's port on the guest's 127.0.0.1.
    pub port: u16,
}

/// The recipe that brings JupyterLab into a workbench image.
pub(crate) const WORKBENCH_RECIPE: &str = "jupyterlab";

/// Where the data sets go in the image: `/data/genomes/<build>`.
pub(crate) const DATA_ROOT: &str = "data/genomes";

/// The filesystem label of a data disk, which the image's fstab mounts
/// (read-only) at [`DATA_ROOT`].
pub const DATA_DISK_LABEL: &str = "biovm-data";

/// A reference data set: `data/<name>.toml`.
#[derive(Debug, Clone)]
pub(crate) struct DataSet {
    pub(crate) name: String,
    pub(crate) summary: String,
    pub(crate) organism: String,
    pub(crate) build: String,
    pub(crate) version: String,
    pub(crate) license: String,
    pub(crate) redistributable: bool,
    /// The unpacked content's file name in the data set's folder.
    pub(crate) file: String,
    /// The unpacked content's sha256.
    pub(crate) sha256: String,
    pub(crate) source: DataSource,
    pub(crate) indexes: Vec<DataIndex>,
    /// Checks of the data in the built image.
    pub(crate) tests: Vec<FunctionalTest>,
    /// The file the data set came from.
    pub(crate) source_file: PathBuf,
}

impl DataSet {
    /// The data set's folder in the image, from its root: `data/genomes/<build>`.
    pub(crate) fn folder(&self) -> PathBuf {
        PathBuf::from(DATA_ROOT).join(&self.build)
    }
}

/// Where a data set's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DataSource {
    pub(crate) from: DataOrigin,
    pub(crate) sha256: String,
    pub(crate) size: u64,
    pub(crate) unpack: Unpack,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DataOrigin {
    /// A file inside a Debian package the image installs.
    Debian { package: String, path: String },
    /// The same bytes at each URL, tried in order.
    Urls(Vec<String>),
}

/// How a data source's bytes become the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unpack {
    None,
    Gzip,
}

/// Files a tool builds from a data set's content during the image build.
#[derive(Debug, Clone)]
pub(crate) struct DataIndex {
    pub(crate) name: String,
    pub(crate) recipe: String,
    pub(crate) command: String,
    pub(crate) outputs: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Base {
    pub(crate) distribution: String,
    pub(crate) suite: String,
    pub(crate) architecture: String,
    /// `None` means the bootstrap tool's default mirror.
    pub(crate) mirror: Option<String>,
    /// The keyring (its bytes) the mirror signs with; `None`: Debian's.
    pub(crate) keyring: Option<Vec<u8>>,
    /// A point in time of a snapshot archive, used instead of `mirror`.
    pub(crate) snapshot: Option<Snapshot>,
    /// Extra Debian packages beyond the recipes' (e.g. an editor).
    pub(crate) packages: Vec<DebPackage>,
    pub(crate) kernel: Kernel,
}

/// A point in time of a snapshot archive of Debian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) url: String,
    /// RFC 3339, UTC (`2026-12-01T00:00:00Z`).
    pub(crate) time: String,
    pub(crate) security_url: Option<String>,
}

impl Snapshot {
    /// The time as the archive writes it in its paths: `20261201T000000Z`.
    pub(crate) fn stamp(&self) -> String {
        self.time.replace(['-', ':'], "")
    }

    /// The apt sources of the suite at that time: the suite and its
    /// updates, and its security updates when the archive has them. The
    /// archive's Release files have long expired, so apt is told not to
    /// check that.
    pub(crate) fn sources(&self, suite: &str) -> Vec<String> {
        let at = |url: &str| format!("{}/{}/", url.trim_end_matches('/'), self.stamp());
        let mut v = vec![
            format!("deb [check-valid-until=no] {} {suite} main", at(&self.url)),
            format!(
                "deb [check-valid-until=no] {} {suite}-updates main",
                at(&self.url)
            ),
        ];
        if let Some(s) = &self.security_url {
            v.push(format!(
                "deb [check-valid-until=no] {} {suite}-security main",
                at(s)
            ));
        }
        v
    }
}

/// Which Debian kernel the image boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// `linux-image-cloud-amd64`: small, for KVM clouds and EC2 (virtio,
    /// NVMe, ENA, Xen), without the drivers of physical or VirtualBox
    /// hardware (no AHCI).
    Cloud,
    /// `linux-image-amd64`: every driver, for VirtualBox and hardware too.
    Generic,
}

impl crate::names::Named for Kernel {
    const WHAT: &'static str = "kernel";
    const MEMBERS: &'static [Self] = &[Kernel::Cloud, Kernel::Generic];
    fn name(self) -> &'static str {
        match self {
            Kernel::Cloud => "cloud",
            Kernel::Generic => "generic",
        }
    }
}

impl Kernel {
    /// The kernel's name, as `base.kernel` and the plan write it.
    pub(crate) fn as_str(self) -> &'static str {
        crate::names::Named::name(self)
    }

    /// The Debian package (its metapackage, following the suite's kernel).
    pub(crate) fn package(self) -> &'static str {
        match self {
            Kernel::Cloud => "linux-image-cloud-amd64",
            Kernel::Generic => "linux-image-amd64",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct System {
    pub(crate) hostname: String,
    pub(crate) locale: String,
    pub(crate) timezone: String,
    pub(crate) user: Option<User>,
    pub(crate) files: Vec<ExtraFile>,
}

#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) shell: String,
    pub(crate) sudo: bool,
    pub(crate) ssh_authorized_keys: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct ExtraFile {
    /// Absolute path inside the image.
    pub(crate) path: String,
    pub(crate) content: Vec<u8>,
    pub(crate) mode: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct Disk {
    pub(crate) size_bytes: u64,
    pub(crate) boot: Vec<BootMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum BootMode {
    Uefi,
    Bios,
}

impl BootMode {
    pub(crate) fn as_str(self) -> &'static str {
        crate::names::Named::name(self)
    }
}

impl crate::names::Named for BootMode {
    const WHAT: &'static str = "boot mode";
    const MEMBERS: &'static [Self] = &[BootMode::Uefi, BootMode::Bios];
    fn name(self) -> &'static str {
        match self {
            BootMode::Uefi => "uefi",
            BootMode::Bios => "bios",
        }
    }
}
crate::named_set!(BootMode);

/// An artifact format an image is built in (`[output] formats`): a disk
/// to boot, or a container image or tree of the same root filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    /// The raw GPT disk every other disk format is made from; what EC2
    /// imports.
    Raw,
    /// A qcow2 disk, for KVM clouds and local QEMU.
    Qcow2,
    /// A streamOptimized VMDK disk, for VirtualBox and VMware.
    Vmdk,
    /// A VirtualBox VDI disk.
    Vdi,
    /// An OVA: the VMDK with an OVF descriptor, for a VirtualBox import.
    Ova,
    /// A Vagrant box for the `virtualbox` provider (`.box`).
    Vagrant,
    /// An OCI image layout (a folder).
    Oci,
    /// A `docker save` archive, for `docker load` or `podman load`.
    DockerArchive,
    /// An Apptainer (Singularity) SIF image.
    Sif,
    /// The root filesystem as a compressed tarball.
    Tarball,
}

impl Format {
    /// Formats made for VirtualBox, whose disks sit on an AHCI (SATA)
    /// controller.
    pub(crate) fn for_virtualbox(self) -> bool {
        matches!(
            self,
            Format::Vmdk | Format::Vdi | Format::Ova | Format::Vagrant
        )
    }

    pub(crate) const ALL: [Format; 10] = [
        Format::Raw,
        Format::Qcow2,
        Format::Vmdk,
        Format::Vdi,
        Format::Ova,
        Format::Vagrant,
        Format::Oci,
        Format::DockerArchive,
        Format::Sif,
        Format::Tarball,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        crate::names::Named::name(self)
    }

    /// The artifact's file (or, for OCI, folder) name suffix.
    pub(crate) fn extension(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vdi => "vdi",
            Format::Ova => "ova",
            Format::Vagrant => "box",
            Format::Oci => "oci",
            Format::DockerArchive => "docker.tar",
            Format::Sif => "sif",
            Format::Tarball => "rootfs.tar.gz",
        }
    }

    /// The format an artifact's file name says (the longest matching
    /// suffix: `.rootfs.tar.gz` is a tarball; `.img` is a raw disk).
    pub(crate) fn from_file_name(name: &str) -> Option<Format> {
        if name.ends_with(".img") {
            return Some(Format::Raw);
        }
        Format::ALL
            .iter()
            .copied()
            .filter(|f| name.ends_with(&format!(".{}", f.extension())))
            .max_by_key(|f| f.extension().len())
    }

    /// Whether the format holds a bootable disk (versus a container or tree).
    pub(crate) fn is_disk(self) -> bool {
        matches!(
            self,
            Format::Raw
                | Format::Qcow2
                | Format::Vmdk
                | Format::Vdi
                | Format::Ova
                | Format::Vagrant
        )
    }
}

impl crate::names::Named for Format {
    const WHAT: &'static str = "format";
    const MEMBERS: &'static [Self] = &Format::ALL;
    fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Vdi => "vdi",
            Format::Ova => "ova",
            Format::Vagrant => "vagrant",
            Format::Oci => "oci",
            Format::DockerArchive => "docker-archive",
            Format::Sif => "sif",
            Format::Tarball => "tarball",
        }
    }
}
crate::named_set!(Format);

/// All recipes found under the recipe folders, keyed by name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Catalog {
    pub(crate) recipes: BTreeMap<String, Recipe>,
}

impl Catalog {
    pub(crate) fn categories(&self) -> Vec<String> {
        let mut c: Vec<String> = self.recipes.values().map(|r| r.category.clone()).collect();
        c.sort();
        c.dedup();
        c
    }
}

/// `[targets]`: where `biovm publish` puts the image.
#[derive(Debug, Clone, Default)]
pub(crate) struct Targets {
    pub(crate) ec2: Option<Ec2Target>,
    pub(crate) eucalyptus: Option<EucalyptusTarget>,
}

/// How EC2 boots the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ec2BootMode {
    Uefi,
    LegacyBios,
    UefiPreferred,
}

impl crate::names::Named for Ec2BootMode {
    const WHAT: &'static str = "boot mode";
    const MEMBERS: &'static [Self] = &[
        Ec2BootMode::Uefi,
        Ec2BootMode::LegacyBios,
        Ec2BootMode::UefiPreferred,
    ];
    fn name(self) -> &'static str {
        match self {
            Ec2BootMode::Uefi => "uefi",
            Ec2BootMode::LegacyBios => "legacy-bios",
            Ec2BootMode::UefiPreferred => "uefi-preferred",
        }
    }
}
crate::named_set!(Ec2BootMode);

impl Ec2BootMode {
    pub(crate) fn as_str(self) -> &'static str {
        crate::names::Named::name(self)
    }

    /// The mode a disk booting `modes` gets: a hybrid disk prefers UEFI.
    pub(crate) fn for_disk(modes: &[BootMode]) -> Ec2BootMode {
        match (
            modes.contains(&BootMode::Uefi),
            modes.contains(&BootMode::Bios),
        ) {
            (true, true) => Ec2BootMode::UefiPreferred,
            (false, true) => Ec2BootMode::LegacyBios,
            _ => Ec2BootMode::Uefi,
        }
    }

    /// Whether a disk booting `modes` boots this way.
    pub(crate) fn fits(self, modes: &[BootMode]) -> bool {
        match self {
            Ec2BootMode::Uefi => modes.contains(&BootMode::Uefi),
            Ec2BootMode::LegacyBios => modes.contains(&BootMode::Bios),
            Ec2BootMode::UefiPreferred => {
                modes.contains(&BootMode::Uefi) && modes.contains(&BootMode::Bios)
            }
        }
    }
}

pub(crate) const EC2_VOLUME_TYPES: [&str; 5] = ["gp3", "gp2", "io1", "io2", "standard"];

/// `[targets.ec2]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ec2Target {
    pub(crate) region: Option<String>,
    pub(crate) ec2_endpoint: Option<String>,
    pub(crate) ebs_endpoint: Option<String>,
    pub(crate) volume_type: String,
    pub(crate) volume_size_bytes: Option<u64>,
    /// `None`: from the disk's boot modes.
    pub(crate) boot_mode: Option<Ec2BootMode>,
    pub(crate) ena: bool,
    pub(crate) imds_v2: bool,
    /// `biovm launch`'s instance type; `None`: its default.
    pub(crate) instance_type: Option<String>,
}

impl Default for Ec2Target {
    fn default() -> Self {
        Ec2Target {
            region: None,
            ec2_endpoint: None,
            ebs_endpoint: None,
            volume_type: "gp3".to_string(),
            volume_size_bytes: None,
            boot_mode: None,
            ena: true,
            imds_v2: true,
            instance_type: None,
        }
    }
}

/// `[targets.eucalyptus]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EucalyptusTarget {
    pub(crate) region: String,
    pub(crate) ec2_endpoint: String,
    pub(crate) s3_endpoint: String,
    pub(crate) bucket: String,
    pub(crate) cloud_cert: PathBuf,
    pub(crate) user_cert: Option<PathBuf>,
    pub(crate) user_key: Option<PathBuf>,
    pub(crate) account_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_gives_the_suites_sources_at_its_time() {
        let mut s = Snapshot {
            url: "http://127.0.0.1:8000/archive/debian/".into(),
            time: "2026-12-01T00:00:00Z".into(),
            security_url: None,
        };
        assert_eq!(s.stamp(), "20261201T000000Z");
        assert_eq!(
            s.sources("bookworm"),
            [
                "deb [check-valid-until=no] http://127.0.0.1:8000/archive/debian/20261201T000000Z/ bookworm main",
                "deb [check-valid-until=no] http://127.0.0.1:8000/archive/debian/20261201T000000Z/ bookworm-updates main",
            ]
        );
        s.security_url = Some("http://127.0.0.1:8000/archive/debian-security".into());
        assert_eq!(
            s.sources("bookworm")[2],
            "deb [check-valid-until=no] http://127.0.0.1:8000/archive/debian-security/20261201T000000Z/ bookworm-security main"
        );
    }

    #[test]
    fn an_artifacts_name_says_its_format() {
        let f = Format::from_file_name;
        assert_eq!(f("out/minimal.rootfs.tar.gz"), Some(Format::Tarball));
        assert_eq!(f("minimal.docker.tar"), Some(Format::DockerArchive));
        assert_eq!(f("minimal.box"), Some(Format::Vagrant));
        assert_eq!(f("disk.img"), Some(Format::Raw));
        assert_eq!(f("minimal.oci"), Some(Format::Oci));
        assert_eq!(f("notes.txt"), None);
    }
}
