//! The smoke test: every artifact of a build is used as it would be, and
//! every tool's check runs in it, before anyone gets it. Each disk is
//! booted exactly as it ships (read through a QEMU overlay, no network but
//! an EC2 disk's metadata service), under each firmware, on its
//! destination's disk controller; each container artifact's tree runs as
//! a container; and, where there is a disk, every check runs once natively
//! in the tree read out of it, so the boots need only run the system's
//! checks and a sample of the tools'.
//!
//! Where each step lives:
//!
//! - [`matrix`]: what is tested: each disk under each firmware (a
//!   [`matrix::Cell`]), each container artifact, the native run, and which
//!   cells would only repeat another's boot.
//! - [`queue`]: runs the matrix up to `--jobs` at once ([`test_artifacts`]),
//!   takes stored results instead of running again ([`reuse`]), and writes
//!   `report.json` and `junit.xml` ([`report`]).
//! - [`boot`]: one VM boot, prepared, run and read
//!   ([`boot::boot_and_check`]); its console follower ([`boot::console`])
//!   and the checks of the booted system ([`boot::system`]).
//! - [`container`]: one native or container run: the tree unpacked (or read
//!   out of the disk), the checks run in new namespaces.
//! - [`checks`]: what both carry and read back: the checks drive, the
//!   result lines, and how a check's result is judged.
//! - [`boot_disk`] (the disk QEMU boots for an artifact), [`qemu`] (its disk
//!   formats and command line), [`kvm`] (whether KVM can boot Linux here),
//!   [`seed`] and [`imds`] (the instance data a cloud would hand the guest).
//! - [`tree`]: the digest of a root filesystem, from a folder or straight
//!   out of a disk, and the `system/same-tree` check built on it.
//! - [`stages`]: where a boot's time went.
//! - [`slots`]: the machine's guest slots, shared by every biovm process,
//!   so that side-by-side tests never start more guests than there are cores.

pub mod boot;
pub mod boot_disk;
pub mod checks;
pub mod container;
pub mod imds;
pub mod kvm;
pub mod matrix;
pub mod qemu;
pub mod queue;
pub mod report;
pub mod reuse;
pub mod seed;
pub mod slots;
pub mod stages;
pub mod tree;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use queue::test_artifacts;

/// How a test runs its matrix: how long a boot may take, how many jobs run
/// at once, each guest's memory, which boots and checks run, and what the
/// build recorded that every run must match.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// Longest wait from QEMU start to the first result line.
    pub boot_timeout: Duration,
    /// Parallel guests.
    pub jobs: usize,
    /// Memory of a guest per processor it has (MiB).
    pub memory_mib: u32,
    /// Boot every cell, even one whose disk gives the guest exactly what
    /// another cell's disk booted the same way gives it (byte for byte, or
    /// sector by sector in another format: see `matrix::shared_boots`).
    pub boot_identical_disks: bool,
    /// Every check in every boot, as well as natively (for runners where
    /// KVM makes boots cheap); otherwise boots run [`boot::boot_sample`].
    pub full: bool,
    /// The image's `[checks] boot-sample` (from the manifest): the tools
    /// each boot checks; empty for [`boot::boot_sample`]'s default.
    pub boot_sample: Vec<String>,
    /// The build's tree digest (from the manifest): every disk booted, and
    /// the tree the native checks run in, must have it.
    pub tree_sha256: Option<String>,
    /// The build's digest of the tree each container format holds (from
    /// the manifest): a container artifact unpacked to it runs the boot
    /// sample beside a native run, not every check again.
    pub container_trees: std::collections::BTreeMap<crate::config::Format, String>,
    /// The image's default user (from the manifest): the native run runs
    /// every check as this user of the tree.
    pub default_user: Option<String>,
    /// Run every job again, even one whose passing result is stored
    /// (see [`reuse`]).
    pub rerun: bool,
    /// The image's workbench (from the manifest): every boot checks it.
    pub workbench: Option<crate::config::Workbench>,
    /// The image's data disk (from the manifest): every boot attaches it,
    /// the native run reads it into its tree; container artifacts, which
    /// carry no data, skip the data checks.
    pub data_disk: Option<DataDiskFiles>,
    /// When a native check fails, boot nothing (the native run goes
    /// first): the verdict is already no (`biovm release`, which then
    /// releases nothing, gives it without minutes of emulated boots).
    pub stop_on_native_failure: bool,
}

/// A data disk's files, as a test attaches them (see `data::disk`).
#[derive(Debug, Clone)]
pub struct DataDiskFiles {
    pub raw: PathBuf,
    pub qcow2: Option<PathBuf>,
    /// The raw file's SHA-256 (as the manifest records it).
    pub raw_sha256: String,
    /// The digest of its tree, as built.
    pub tree_sha256: String,
}

impl Default for TestOptions {
    fn default() -> Self {
        TestOptions {
            boot_timeout: Duration::from_secs(300),
            jobs: default_jobs(),
            memory_mib: 2048,
            boot_identical_disks: false,
            full: false,
            boot_sample: Vec::new(),
            tree_sha256: None,
            container_trees: Default::default(),
            default_user: None,
            workbench: None,
            data_disk: None,
            rerun: false,
            stop_on_native_failure: false,
        }
    }
}

/// One guest per core: each software-emulated guest keeps one core busy.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The folder a test of `artifact` writes its reports and logs to:
/// `<stem>.test` beside it (`minimal.raw` → `minimal.test`).
pub fn report_dir_for(artifact: &Path) -> PathBuf {
    let stem = artifact
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    artifact.with_file_name(format!("{stem}.test"))
}
