//! The validated, typed model of recipes and images.
//!
//! Raw TOML is parsed into the structs of `raw.rs` and validated into these;
//! every later stage only ever sees these types.

use std::collections::BTreeMap;
use std::path::PathBuf;

use regex::Regex;

/// One analysis tool: `recipes/<category>/<name>.toml`.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub name: String,
    pub summary: String,
    pub category: String,
    pub homepage: String,
    pub license: String,
    pub install: Install,
    pub check: Check,
    /// Functional tests on tiny data (may be empty).
    pub tests: Vec<FunctionalTest>,
    /// The file the recipe came from.
    pub source: PathBuf,
}

/// How a recipe is installed. At least one source is non-empty.
#[derive(Debug, Clone, Default)]
pub struct Install {
    /// Debian binary packages, optionally pinned as `name=version`.
    pub debian: Vec<DebPackage>,
    /// PyPI requirements installed into the image's isolated environment.
    pub pypi: Vec<PypiPackage>,
    /// Files fetched over HTTP(S), checked against their sha256.
    pub downloads: Vec<Download>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DebPackage {
    pub name: String,
    pub version: Option<String>,
}

impl DebPackage {
    /// The form apt and mmdebstrap take: `name` or `name=version`.
    pub fn apt_spec(&self) -> String {
        match &self.version {
            Some(v) => format!("{}={}", self.name, v),
            None => self.name.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PypiPackage {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone)]
pub struct Download {
    pub url: String,
    pub sha256: String,
    /// Absolute path inside the image the file (or unpacked archive) goes to.
    pub dest: String,
    /// Unpack a tar/zip archive into `dest` instead of copying the file.
    pub unpack: bool,
}

/// A version check: `command` runs in the booted image under `sh -c`; it
/// passes when it exits with `status` and its combined stdout and stderr
/// match `expect`.
#[derive(Debug, Clone)]
pub struct Check {
    pub command: String,
    pub expect: Regex,
    pub status: i32,
    pub timeout_secs: u32,
}

/// A functional test on tiny data shipped in the repository.
#[derive(Debug, Clone)]
pub struct FunctionalTest {
    pub name: String,
    pub script: String,
    pub expect: Regex,
    pub status: i32,
    /// Files (relative to the recipe's folder) delivered to the guest next to the script.
    pub data: Vec<PathBuf>,
    pub timeout_secs: u32,
}

/// One image definition: `images/<name>.toml`, with its recipe selection resolved.
#[derive(Debug, Clone)]
pub struct Image {
    pub name: String,
    pub description: String,
    pub source: PathBuf,
    pub base: Base,
    /// The selected recipes, sorted by name.
    pub recipes: Vec<Recipe>,
    pub system: System,
    pub disk: Disk,
    pub formats: Vec<Format>,
    pub targets: Targets,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    pub distribution: String,
    pub suite: String,
    pub architecture: String,
    /// `None` means the bootstrap tool's default mirror.
    pub mirror: Option<String>,
    /// The keyring (its bytes) the mirror signs with; `None`: Debian's.
    pub keyring: Option<Vec<u8>>,
    /// A point in time of a snapshot archive, used instead of `mirror`.
    pub snapshot: Option<Snapshot>,
    /// Extra Debian packages beyond the recipes' (e.g. an editor).
    pub packages: Vec<DebPackage>,
    pub kernel: Kernel,
}

/// A point in time of a snapshot archive of Debian.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub url: String,
    /// RFC 3339, UTC (`2026-12-01T00:00:00Z`).
    pub time: String,
    pub security_url: Option<String>,
}

impl Snapshot {
    /// The time as the archive writes it in its paths: `20261201T000000Z`.
    pub fn stamp(&self) -> String {
        self.time.replace(['-', ':'], "")
    }

    /// The apt sources of the suite at that time: the suite and its
    /// updates, and its security updates when the archive has them. The
    /// archive's Release files have long expired, so apt is told not to
    /// check that.
    pub fn sources(&self, suite: &str) -> Vec<String> {
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
pub enum Kernel {
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
    pub fn as_str(self) -> &'static str {
        crate::names::Named::name(self)
    }

    /// The Debian package (its metapackage, following the suite's kernel).
    pub fn package(self) -> &'static str {
        match self {
            Kernel::Cloud => "linux-image-cloud-amd64",
            Kernel::Generic => "linux-image-amd64",
        }
    }
}

#[derive(Debug, Clone)]
pub struct System {
    pub hostname: String,
    pub locale: String,
    pub timezone: String,
    pub user: Option<User>,
    pub files: Vec<ExtraFile>,
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub shell: String,
    pub sudo: bool,
    pub ssh_authorized_keys: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ExtraFile {
    /// Absolute path inside the image.
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
}

#[derive(Debug, Clone)]
pub struct Disk {
    pub size_bytes: u64,
    pub boot: Vec<BootMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BootMode {
    Uefi,
    Bios,
}

impl BootMode {
    pub fn as_str(self) -> &'static str {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    Raw,
    Qcow2,
    Vmdk,
    Vdi,
    Ova,
    Vagrant,
    Oci,
    DockerArchive,
    Sif,
    Tarball,
}

impl Format {
    /// Formats made for VirtualBox, whose disks sit on an AHCI (SATA)
    /// controller.
    pub fn for_virtualbox(self) -> bool {
        matches!(
            self,
            Format::Vmdk | Format::Vdi | Format::Ova | Format::Vagrant
        )
    }

    pub const ALL: [Format; 10] = [
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

    pub fn as_str(self) -> &'static str {
        crate::names::Named::name(self)
    }

    /// The artifact's file (or, for OCI, folder) name suffix.
    pub fn extension(self) -> &'static str {
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
    pub fn from_file_name(name: &str) -> Option<Format> {
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
    pub fn is_disk(self) -> bool {
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
pub struct Catalog {
    pub recipes: BTreeMap<String, Recipe>,
}

impl Catalog {
    pub fn categories(&self) -> Vec<String> {
        let mut c: Vec<String> = self.recipes.values().map(|r| r.category.clone()).collect();
        c.sort();
        c.dedup();
        c
    }
}

/// `[targets]`: where `biovm publish` puts the image.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub ec2: Option<Ec2Target>,
    pub eucalyptus: Option<EucalyptusTarget>,
}

/// How EC2 boots the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ec2BootMode {
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
    pub fn as_str(self) -> &'static str {
        crate::names::Named::name(self)
    }

    /// The mode a disk booting `modes` gets: a hybrid disk prefers UEFI.
    pub fn for_disk(modes: &[BootMode]) -> Ec2BootMode {
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
    pub fn fits(self, modes: &[BootMode]) -> bool {
        match self {
            Ec2BootMode::Uefi => modes.contains(&BootMode::Uefi),
            Ec2BootMode::LegacyBios => modes.contains(&BootMode::Bios),
            Ec2BootMode::UefiPreferred => {
                modes.contains(&BootMode::Uefi) && modes.contains(&BootMode::Bios)
            }
        }
    }
}

pub const EC2_VOLUME_TYPES: [&str; 5] = ["gp3", "gp2", "io1", "io2", "standard"];

/// `[targets.ec2]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Target {
    pub region: Option<String>,
    pub ec2_endpoint: Option<String>,
    pub ebs_endpoint: Option<String>,
    pub volume_type: String,
    pub volume_size_bytes: Option<u64>,
    /// `None`: from the disk's boot modes.
    pub boot_mode: Option<Ec2BootMode>,
    pub ena: bool,
    pub imds_v2: bool,
    /// `biovm launch`'s instance type; `None`: its default.
    pub instance_type: Option<String>,
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
pub struct EucalyptusTarget {
    pub region: String,
    pub ec2_endpoint: String,
    pub s3_endpoint: String,
    pub bucket: String,
    pub cloud_cert: PathBuf,
    pub user_cert: Option<PathBuf>,
    pub user_key: Option<PathBuf>,
    pub account_id: Option<String>,
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
