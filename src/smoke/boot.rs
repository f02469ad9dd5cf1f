//! One VM boot of one matrix cell: this is where a boot is prepared, run
//! and read, as three steps of [`boot_and_check`]:
//!
//! 1. Prepare ([`Prepared`], which owns every scratch file): the disk QEMU
//!    boots ([`super::boot_disk`]) behind a larger overlay, the instance
//!    data a cloud would hand the guest (a NoCloud seed drive,
//!    [`super::seed`], or EC2's metadata service, [`super::imds`]), and the
//!    checks drive ([`super::checks`]) with the tools' checks and the
//!    system's ([`system`]).
//! 2. Run ([`run_guest`]): QEMU's command line ([`super::qemu`]) under the
//!    accelerator [`super::kvm`] proved, watching the console
//!    ([`console`]) for a failed boot or a stall, and the results port for
//!    the checks' results. A boot that stalls under KVM right after the
//!    boot loader hands over is retried under software emulation, and the
//!    report says so.
//! 3. Read: the results judged as they come ([`super::checks`]), then
//!    where the boot's time went ([`super::stages`]) and the host's own
//!    checks: the metadata reads of an EC2 boot, and the tree on the disk
//!    ([`super::tree`]).

pub mod console;
pub mod system;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::boot_disk::BootDisks;
use super::checks::{judged_on_host, write_checks_drive, ResultsTail};
use super::matrix::Cell;
use super::qemu::{self, Accel, Bus, DiskFormat};
use super::report::BootReport;
use super::seed::{self, Cloud};
use super::slots;
use super::{imds, kvm, stages, tree, TestOptions};
use crate::fsutil::Scratch;
use crate::manifest::Tool;
use console::{Console, ConsoleState};
use system::{imds_check, system_checks};

/// How long a guest may print nothing on its console after the boot loader
/// handed over, before its first result line. The kernel prints its first
/// lines within a second or two of the handover even under software
/// emulation, then the initramfs and systemd report every step; a KVM that
/// cannot run Linux prints nothing at all. Software emulation gets more
/// room: two guests on two loaded cores can be slow, and a false stall
/// there fails a boot that would have passed.
const STALL_KVM: Duration = Duration::from_secs(30);
const STALL_TCG: Duration = Duration::from_secs(120);

/// A test guest: the processors it asks for (it may get fewer: see
/// [`slots::Fewer`]) and what it runs.
#[derive(Debug, Clone, Copy)]
pub struct Guest {
    pub cpus: u32,
    pub work: qemu::GuestWork,
    /// Whether it starts the workbench's servers through their sockets and
    /// checks they answer (see `workbench::system_checks`): the matrix's
    /// first VM cell, and every boot that runs every check.
    pub servers: bool,
}

/// Boot `cell` once and run every check of `tools` and the system's: the
/// boot is prepared, run and read.
pub fn boot_and_check(
    cell: &Cell,
    tools: &[Tool],
    run_dir: &Path,
    disks: &BootDisks,
    guest: Guest,
    opts: &TestOptions,
) -> Result<BootReport> {
    fs::create_dir_all(run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    // Prepare: the disk behind its overlay, the instance data, and the
    // checks drive with the tools' checks and the system's.
    let t_prepare = Instant::now();
    let prepared = Prepared::new(cell, run_dir, disks).with_context(|| {
        format!(
            "{}: its disk cannot be readied to boot",
            cell.artifact.display()
        )
    })?;
    let checks = prepared.write_checks(tools, opts, guest.servers)?;
    let prepare_secs = t_prepare.elapsed().as_secs_f64();
    // Run: the guest, until its checks are done.
    let mut report = run_with_retry(&prepared, &checks, guest, opts)?;
    report.prepare_secs = prepare_secs;
    // Read: a check that never reported fails; then the host's own checks.
    report.mark_not_run(&checks);
    prepared.judge_on_host(&mut report, opts);
    Ok(report)
}

/// Run the prepared guest under the accelerator [`kvm`] chose; a guest
/// that stalls under KVM right after the handover runs again under TCG
/// (and KVM is not used again), and the report says why.
fn run_with_retry(
    prepared: &Prepared,
    checks: &[Tool],
    guest: Guest,
    opts: &TestOptions,
) -> Result<BootReport> {
    let accel = kvm::accel();
    Ok(match run_guest(prepared, checks, accel, guest, opts)? {
        Run::Finished(r) => r,
        Run::Stalled(r, why) if accel == Accel::Kvm => {
            kvm::demote(&why);
            let mut again = match run_guest(prepared, checks, Accel::Tcg, guest, opts)? {
                Run::Finished(r) => r,
                Run::Stalled(mut r, why) => {
                    r.error = Some(why);
                    r
                }
            };
            again.accel_note = Some(format!(
                "retried under TCG: under KVM {why} (first try {:.0} s)",
                r.total_secs
            ));
            again
        }
        Run::Stalled(mut r, why) => {
            r.error = Some(why);
            r
        }
    })
}

/// The category of the recipes a workbench is made of (`recipes/workbench/`).
const WORKBENCH_CATEGORY: &str = "workbench";

/// The tool checks a VM boot runs beside the system's when every check
/// already ran natively in the same tree: one version check per install
/// source the image has (Debian, PyPI, download), the first of each in
/// catalogue order, so every way a tool gets into the image is proven in
/// the booted system too. With a `workbench`, the workbench's own tools
/// (JupyterLab) are left to `system/workbench`, which runs their server in
/// every boot; starting a second JupyterLab for its version took minutes
/// of an emulated boot. Without sources (an old manifest), the first
/// version check. An image's `[checks] boot-sample` names its own (tools
/// whose checks are cheap under emulation; the image file's loader saw
/// that it covers every source); names the tools no longer have are
/// skipped. Every data set's digest check (`data/<name>`) runs too:
/// the booted disk holds each reference file with the digest it was built
/// with.
pub fn boot_sample(tools: &[Tool], workbench: bool, named: &[String]) -> Vec<Tool> {
    let mut seen = std::collections::BTreeSet::new();
    let mut v: Vec<Tool> = if named.is_empty() {
        tools
            .iter()
            .filter(|t| !(workbench && t.category == WORKBENCH_CATEGORY))
            .filter(|t| t.source.is_some_and(|s| seen.insert(s)))
            .cloned()
            .collect()
    } else {
        tools
            .iter()
            .filter(|t| t.source.is_some() && named.contains(&t.name))
            .cloned()
            .collect()
    };
    if v.is_empty() {
        v.extend(tools.iter().find(|t| !t.name.contains('/')).cloned());
    }
    v.extend(
        tools
            .iter()
            .filter(|t| t.category == crate::data::CATEGORY && t.name.matches('/').count() == 1)
            .cloned(),
    );
    v
}

/// A cell's disk, instance data and checks drive, ready to boot; the
/// scratch files go when it is dropped, whichever way the boot ends.
struct Prepared<'a> {
    cell: &'a Cell,
    /// The disk QEMU boots under the overlay (the artifact, or the disk
    /// copied out of its archive), and its QEMU format.
    disk: (PathBuf, DiskFormat),
    label: String,
    run_dir: &'a Path,
    scratch: Scratch,
    /// The overlay QEMU boots: larger than the image, over the artifact.
    overlay: PathBuf,
    /// The NoCloud seed drive (a NoCloud cell).
    seed_drive: PathBuf,
    /// The metadata service's state and log (an EC2 cell).
    imds_dir: PathBuf,
    /// The checks drive.
    checks: PathBuf,
    /// The disk's size as built, and as booted (with room to grow).
    image_bytes: u64,
    disk_bytes: u64,
}

impl<'a> Prepared<'a> {
    fn new(cell: &'a Cell, run_dir: &'a Path, disks: &BootDisks) -> Result<Prepared<'a>> {
        let label = cell.label();
        let scratch = Scratch::new_in(run_dir, &format!("{label}.boot"))?;
        let (disk, disk_format) = disks.get(&cell.artifact, cell.format)?;
        // The guest boots a larger disk than the image (as on a bigger
        // cloud volume) through an overlay, so the artifact is never written.
        let image_bytes = seed::virtual_size(&disk, disk_format)?;
        let disk_bytes = image_bytes + seed::GROW_BYTES;
        let overlay = scratch.join("overlay.qcow2");
        seed::create_overlay(&disk, disk_format, &overlay, disk_bytes)?;
        let seed_drive = scratch.join("seed.img");
        let imds_dir = scratch.join("imds");
        let user_data = seed::user_data(seed::SEED_USER, seed::SEED_KEY);
        match cell.cloud {
            Cloud::NoCloud => {
                seed::write_nocloud_seed(&seed_drive, &format!("biovm-test-{label}"), &user_data)?
            }
            Cloud::Ec2 => imds::Config {
                token: format!("biovm-{label}-{}", std::process::id()),
                instance_id: "i-0b10b10b10b10b10b".into(),
                ami_id: "ami-0b10b10b10b10b10b".into(),
                instance_type: "t3.medium".into(),
                region: "us-east-1".into(),
                public_key: seed::SEED_KEY.into(),
                user_data,
            }
            .write(&imds_dir)?,
        }
        Ok(Prepared {
            cell,
            disk: (disk, disk_format),
            checks: scratch.join("checks.tar"),
            label,
            run_dir,
            scratch,
            overlay,
            seed_drive,
            imds_dir,
            image_bytes,
            disk_bytes,
        })
    }

    /// Write the checks drive: every check of `tools`, then the system's
    /// (see [`system`]). Returns every check it holds.
    fn write_checks(&self, tools: &[Tool], opts: &TestOptions, servers: bool) -> Result<Vec<Tool>> {
        let all: Vec<Tool> = tools
            .iter()
            .cloned()
            .chain(system_checks(
                self.image_bytes,
                self.disk_bytes,
                self.cell.cloud,
                self.cell.bus == Bus::Nvme,
            ))
            .chain(
                opts.workbench
                    .iter()
                    .flat_map(|w| crate::workbench::system_checks(w, servers)),
            )
            .collect();
        write_checks_drive(&all, &self.checks)?;
        Ok(all)
    }

    /// The host's own checks of the boot, into `report`: for EC2, whether
    /// the guest read its metadata with IMDSv2 (the metadata service's log
    /// is kept beside the serial log); with the build's tree digest, whether
    /// the disk holds that tree, the one the native checks ran in.
    fn judge_on_host(&self, report: &mut BootReport, opts: &TestOptions) {
        if self.cell.cloud == Cloud::Ec2 {
            let audit = imds::audit(&self.imds_dir);
            report.results.push(judged_on_host(&imds_check(), audit));
            let _ = fs::copy(
                self.imds_dir.join("imds.log"),
                self.run_dir.join(format!("{}.imds.log", self.label)),
            );
        }
        if let Some(want) = &opts.tree_sha256 {
            let cell = self.cell;
            let boot = (self.disk.0.as_path(), self.disk.1);
            let got =
                tree::booted_disk_digest(&cell.artifact, cell.format, boot, self.scratch.path())
                    .unwrap_or_else(|e| format!("unreadable ({e:#})"));
            report
                .results
                .push(tree::same_tree_result(&cell.artifact, want, &got));
        }
    }
}

/// How one run of the guest ended.
enum Run {
    /// The checks finished, or the boot failed in a way a retry would not
    /// change (the report's error says how).
    Finished(BootReport),
    /// The guest printed nothing for too long after the boot loader handed
    /// over (why, in words).
    Stalled(BootReport, String),
}

/// Start the guest under `accel` and follow it until its checks are done,
/// it fails, stalls or runs out of time.
fn run_guest(
    p: &Prepared,
    tools: &[Tool],
    accel: Accel,
    guest: Guest,
    opts: &TestOptions,
) -> Result<Run> {
    // The machine's cores are shared with every other biovm's guests: wait
    // for this guest's slots before its clock starts. It has as many
    // processors as it got slots.
    let slots = slots::take(
        &slots::folder(),
        slots::count()?,
        guest.cpus,
        slots::Fewer::After(slots::TEST_GRACE),
        |n| {
            log::info!(
                "{}: waiting for {n} free guest slot(s): other biovm guests on this machine hold them ({})",
                p.label,
                slots::folder().display()
            )
        },
    )?;
    let cpus = slots.count();
    let (mut cmd, files) = guest_vm(p, accel, cpus, guest.work, opts).command()?;
    for f in [&files.console_log, &files.results_log] {
        let _ = fs::remove_file(f);
    }
    let cell = p.cell;
    let mut report = BootReport::new(
        cell.format,
        cell.firmware.into(),
        cell.bus.into(),
        accel.into(),
        files.console_log.clone(),
    );
    report.name_cell(cell);
    report.slot_wait_secs = slots.waited.as_secs_f64();
    report.cpus = Some(cpus);
    let t0 = Instant::now();
    let mut guest = cmd.spawn()?;
    let mut watched = watch_guest(&mut guest, &files, tools, accel, opts, &mut report, t0);
    stop_guest(
        &mut guest,
        &p.label,
        watched.done,
        watched.stalled.is_some(),
        &mut report,
    );
    // QEMU itself can die under a KVM that cannot run Linux (an assertion
    // on the guest's MSRs, on some hosts, instead of a silent hang): like
    // a stall, that is KVM's failure, not the disk's, and is retried.
    let qemu_died = report
        .error
        .as_deref()
        .is_some_and(|e| e.starts_with(QEMU_ENDED));
    if accel == Accel::Kvm && !watched.done && report.boot_secs.is_none() && qemu_died {
        watched.stalled = report.error.take();
    }
    report.total_secs = t0.elapsed().as_secs_f64();
    drop(slots);
    read_stages(&mut report, watched.console.marks(t0));
    Ok(match watched.stalled {
        Some(why) => {
            // Keep the stalled run's console beside the retry's.
            let kept = p
                .run_dir
                .join(format!("{}.{}.stalled.serial.log", p.label, accel.as_str()));
            let _ = fs::rename(&files.console_log, &kept);
            Run::Stalled(report, format!("{why} (see {})", kept.display()))
        }
        None => Run::Finished(report),
    })
}

/// The QEMU machine of the prepared boot `p` under `accel` with `cpus`.
fn guest_vm<'a>(
    p: &'a Prepared,
    accel: Accel,
    cpus: u32,
    work: qemu::GuestWork,
    opts: &'a TestOptions,
) -> qemu::Vm<'a> {
    let cell = p.cell;
    qemu::Vm {
        disk: &p.overlay,
        disk_format: DiskFormat::Qcow2,
        bus: cell.bus,
        label: &p.label,
        checks_drive: Some(&p.checks),
        seed_drive: (cell.cloud == Cloud::NoCloud).then_some(p.seed_drive.as_path()),
        imds: (cell.cloud == Cloud::Ec2).then_some(p.imds_dir.as_path()),
        ssh_forward: None,
        also_forward: &[],
        data_drive: opts.data_disk.as_ref().map(|d| match (&d.qcow2, cell.bus) {
            (Some(q), Bus::Virtio) => (q.as_path(), DiskFormat::Qcow2),
            _ => (d.raw.as_path(), DiskFormat::Raw),
        }),
        console_on_terminal: false,
        firmware: cell.firmware,
        accel,
        work,
        cpus,
        // Each processor runs a check at once: each gets the memory one
        // guest of one processor would have.
        memory_mib: opts.memory_mib.saturating_mul(cpus.max(1)),
        run_dir: p.run_dir,
        scratch: p.scratch.path(),
    }
}

/// How the watch of a running guest ended.
struct Watched {
    /// Its checks all reported.
    done: bool,
    /// Its console went silent after the handover (why).
    stalled: Option<String>,
    /// What its console showed.
    console: Console,
}

/// Follow the running `guest` (started at `t0`): read its results into
/// `report` as they come, until its checks are done, it exits, its console
/// shows a failed boot or stalls, or it runs out of time (the last two
/// set the report's error).
fn watch_guest(
    guest: &mut crate::cmd::Running,
    files: &qemu::VmFiles,
    tools: &[Tool],
    accel: Accel,
    opts: &TestOptions,
    report: &mut BootReport,
    t0: Instant,
) -> Watched {
    let checks_budget: u64 = tools.iter().map(|t| u64::from(t.check.timeout) + 5).sum();
    let deadline = opts.boot_timeout + Duration::from_secs(checks_budget + 60);
    let stall_limit = match accel {
        Accel::Kvm => STALL_KVM,
        Accel::Tcg => STALL_TCG,
    };
    let mut results = ResultsTail::new(&files.results_log);
    let mut console = Console::new(&files.console_log);
    let mut done = false;
    let mut stalled = None;
    loop {
        let exited = guest.try_wait();
        done |= results.pump(report, tools, t0, true);
        if done || exited.is_some() {
            break;
        }
        if report.boot_secs.is_none() {
            match console.poll(stall_limit) {
                ConsoleState::Fine => {}
                // A boot that has visibly failed ends now, not at the timeout.
                ConsoleState::Fatal(line) => {
                    report.error = Some(format!(
                        "the guest failed to boot: \"{line}\" (see {})",
                        files.console_log.display()
                    ));
                    break;
                }
                ConsoleState::Stalled(why) => {
                    stalled = Some(why);
                    break;
                }
            }
        }
        let elapsed = t0.elapsed();
        if report.boot_secs.is_none() && elapsed > opts.boot_timeout {
            report.error = Some(format!(
                "the guest did not reach the checks within {} s (see {})",
                opts.boot_timeout.as_secs(),
                files.console_log.display()
            ));
            break;
        }
        if elapsed > deadline {
            report.error = Some(format!(
                "the checks did not finish within {} s",
                deadline.as_secs()
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Watched {
        done,
        stalled,
        console,
    }
}

/// How a report's error starts when QEMU itself ended early.
const QEMU_ENDED: &str = "QEMU ended";

/// Stop the guest: after its checks, give it a moment to power itself off;
/// when it ended early and neither a stall nor an error says why, the
/// report's error says how QEMU ended.
fn stop_guest(
    guest: &mut crate::cmd::Running,
    label: &str,
    done: bool,
    stalled: bool,
    report: &mut BootReport,
) {
    if done {
        // The guest powers itself off; give it a moment, then stop it.
        if guest.wait_timeout(Duration::from_secs(30)).is_none() {
            log::warn!(
                "{} guest did not power off after its checks; stopping it",
                label
            );
        }
    } else if report.error.is_none() && !stalled {
        let status = guest
            .try_wait()
            .map(crate::cmd::describe_status)
            .unwrap_or_default();
        report.error = Some(format!(
            "{QEMU_ENDED} ({status}) before the checks finished: {}",
            guest
                .stderr_tail()
                .lines()
                .last()
                .unwrap_or("see the serial log")
        ));
    }
    guest.kill();
}

/// Fill `report`'s `boot_stages` from its guest's `stages` report and the
/// console `marks`, and turn cloud-init's raw events into its blame list.
fn read_stages(report: &mut BootReport, marks: stages::ConsoleMarks) {
    report.boot_stages = stages::breakdown(
        marks,
        report.boot_secs,
        report.guest_uptime_at_start,
        report.total_secs,
        report.boot_analysis.get("stages").map(String::as_str),
    );
    if let Some(ev) = report.boot_analysis.remove("cloud-init-events") {
        let blame: String = stages::cloud_init_blame(&ev)
            .lines()
            .take(30)
            .map(|l| format!("{l}\n"))
            .collect();
        report
            .boot_analysis
            .insert("cloud-init-blame".into(), blame);
    }
    if !report.boot_stages.is_empty() {
        log::info!(
            "{} boot stages: {}",
            report.cell(),
            stages::summary(&report.boot_stages)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{InstallSource, ToolCheck};

    fn tool(name: &str, category: &str, source: Option<InstallSource>) -> Tool {
        Tool {
            name: name.into(),
            category: category.into(),
            check: ToolCheck {
                command: name.into(),
                expect: ".".into(),
                status: 0,
                timeout: 60,
                data: vec![],
            },
            source,
        }
    }

    #[test]
    fn the_sample_has_one_tool_per_source_and_leaves_the_workbench_to_its_check() {
        use InstallSource::*;
        let tools = vec![
            tool("jupyterlab", "workbench", Some(Pypi)),
            tool("bwa", "alignment", Some(Debian)),
            tool("bwa/index-and-map", "alignment", None),
            tool("samtools", "bam-vcf-utilities", Some(Debian)),
            tool("nanoplot", "qc", Some(Pypi)),
            tool("data/lambda-phage", crate::data::CATEGORY, None),
        ];
        let names = |v: Vec<Tool>| v.into_iter().map(|t| t.name).collect::<Vec<_>>();
        assert_eq!(
            names(boot_sample(&tools, false, &[])),
            ["jupyterlab", "bwa", "data/lambda-phage"]
        );
        assert_eq!(
            names(boot_sample(&tools, true, &[])),
            ["bwa", "nanoplot", "data/lambda-phage"]
        );
        // The image's own sample, in catalogue order; a functional test's
        // name never makes it in, the data checks always do.
        let named = [
            "nanoplot".to_string(),
            "samtools".into(),
            "bwa/index-and-map".into(),
        ];
        assert_eq!(
            names(boot_sample(&tools, true, &named)),
            ["samtools", "nanoplot", "data/lambda-phage"]
        );
    }
}
