//! One test boot of one matrix cell, in three steps: ready the disk and the
//! instance data ([`Prepared`], which owns every scratch file), run the
//! guest while watching its console and its results ([`run_guest`]), and
//! judge what it reported. A boot that stalls under KVM right after the
//! boot loader hands over is retried under software emulation, and the
//! report says so.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::qemu::{self, Accel};
use super::{
    imds, judge, seed, system_checks, write_checks_drive, BootReport, Cell, CheckResult, Cloud,
    ResultsTail, TestOptions,
};
use crate::fsutil::Scratch;
use crate::manifest::Tool;

/// What GRUB prints when it hands over to the kernel.
const HANDOVER: &[&str] = &["Booting `", "Loading Linux "];

/// How long a guest may print nothing on its console after the boot loader
/// handed over, before its first result line. The kernel prints its first
/// lines within a second or two of the handover even under software
/// emulation, then the initramfs and systemd report every step; a KVM that
/// cannot run Linux prints nothing at all. Software emulation gets more
/// room: two guests on two loaded cores can be slow, and a false stall
/// there fails a boot that would have passed.
const STALL_KVM: Duration = Duration::from_secs(30);
const STALL_TCG: Duration = Duration::from_secs(120);

/// What firmware, GRUB, the kernel and the initramfs print when a boot has
/// failed for good.
const FATAL_CONSOLE: &[&str] = &[
    "No bootable device",
    "No bootable option or device was found",
    "error: no such device",
    "grub rescue>",
    "Kernel panic - not syncing",
    "Dropping to a shell",
    // OVMF found nothing to boot and started its shell.
    "Shell> ",
];

/// Boot `cell` once and run every check of `tools` and the system's.
pub fn boot_and_check(
    cell: &Cell,
    tools: &[Tool],
    run_dir: &Path,
    cpus: u32,
    opts: &TestOptions,
) -> Result<BootReport> {
    fs::create_dir_all(run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    let t_prepare = Instant::now();
    let prepared = Prepared::new(cell, run_dir).with_context(|| {
        format!(
            "{}: its disk cannot be readied to boot",
            cell.artifact.display()
        )
    })?;
    let all: Vec<Tool> = tools
        .iter()
        .cloned()
        .chain(system_checks(
            prepared.image_bytes,
            prepared.disk_bytes,
            cell.cloud,
        ))
        .collect();
    write_checks_drive(&all, &prepared.checks)?;
    let prepare_secs = t_prepare.elapsed().as_secs_f64();

    let accel = qemu::accel();
    let mut report = match run_guest(&prepared, &all, accel, cpus, opts)? {
        Run::Finished(r) => r,
        Run::Stalled(r, why) if accel == Accel::Kvm => {
            super::kvm::demote(&why);
            let mut again = match run_guest(&prepared, &all, Accel::Tcg, cpus, opts)? {
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
    };
    report.prepare_secs = prepare_secs;
    report.mark_not_run(&all);
    if cell.cloud == Cloud::Ec2 {
        prepared.judge_imds(&mut report);
    }
    if let Some(want) = &opts.tree_sha256 {
        // The tree the native checks ran in must be this disk's.
        let got =
            super::tree::disk_digest(&cell.artifact, cell.format, prepared.scratch.path(), None)
                .unwrap_or_else(|e| format!("unreadable ({e:#})"));
        report.results.push(super::same_tree_result(want, &got));
    }
    Ok(report)
}

/// A cell's disk and instance data, ready to boot; the scratch files go
/// when it is dropped.
struct Prepared<'a> {
    cell: &'a Cell,
    label: String,
    run_dir: &'a Path,
    scratch: Scratch,
    /// The overlay QEMU boots: larger than the image, over the artifact.
    overlay: PathBuf,
    seed_drive: PathBuf,
    imds_dir: PathBuf,
    checks: PathBuf,
    image_bytes: u64,
    disk_bytes: u64,
}

impl<'a> Prepared<'a> {
    fn new(cell: &'a Cell, run_dir: &'a Path) -> Result<Prepared<'a>> {
        let label = cell.label();
        let scratch = Scratch::new_in(run_dir, &format!("{label}.boot"))?;
        let (disk, disk_format) =
            super::disk_to_boot(&cell.artifact, cell.format, &scratch.join("disk.tmp"))?;
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

    /// Judged on the host: did the guest read its metadata with IMDSv2?
    /// The metadata service's log is kept beside the serial log.
    fn judge_imds(&self, report: &mut BootReport) {
        let audit = imds::audit(&self.imds_dir);
        let t = super::imds_check();
        report.results.push(CheckResult {
            tool: t.name.clone(),
            outcome: judge(&t, 0, &audit),
            status: 0,
            seconds: 0.0,
            output: audit,
        });
        let _ = fs::copy(
            self.imds_dir.join("imds.log"),
            self.run_dir.join(format!("{}.imds.log", self.label)),
        );
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
    cpus: u32,
    opts: &TestOptions,
) -> Result<Run> {
    let (mut cmd, files) = guest_vm(p, accel, cpus, opts).command()?;
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
    let t0 = Instant::now();
    let mut guest = cmd.spawn()?;
    let watched = watch_guest(&mut guest, &files, tools, accel, opts, &mut report, t0);
    stop_guest(
        &mut guest,
        &p.label,
        watched.done,
        watched.stalled.is_some(),
        &mut report,
    );
    report.total_secs = t0.elapsed().as_secs_f64();
    super::stages::fill(&mut report, watched.console.marks(t0));
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
fn guest_vm<'a>(p: &'a Prepared, accel: Accel, cpus: u32, opts: &TestOptions) -> qemu::Vm<'a> {
    let cell = p.cell;
    qemu::Vm {
        disk: &p.overlay,
        disk_format: "qcow2",
        bus: cell.bus,
        label: &p.label,
        checks_drive: Some(&p.checks),
        seed_drive: (cell.cloud == Cloud::NoCloud).then_some(p.seed_drive.as_path()),
        imds: (cell.cloud == Cloud::Ec2).then_some(p.imds_dir.as_path()),
        ssh_forward: None,
        console_on_terminal: false,
        firmware: cell.firmware,
        accel,
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
            "QEMU ended ({status}) before the checks finished: {}",
            guest
                .stderr_tail()
                .lines()
                .last()
                .unwrap_or("see the serial log")
        ));
    }
    guest.kill();
}

/// What the console shows so far.
#[derive(Debug, PartialEq)]
enum ConsoleState {
    Fine,
    /// A line that shows the boot failed for good.
    Fatal(String),
    /// Nothing printed for too long since the handover (why).
    Stalled(String),
}

/// Follows a guest's console log: fatal lines, the boot loader's handover,
/// and silence after it.
struct Console {
    path: PathBuf,
    /// Bytes of complete lines already looked at.
    seen: usize,
    /// The log's length at the last look, and when it last grew.
    len: u64,
    grew_at: Instant,
    handed_over: bool,
    last_line: String,
    /// When the boot loader took over, and when it handed over.
    loader_at: Option<Instant>,
    handover_at: Option<Instant>,
}

impl Console {
    fn new(path: &Path) -> Console {
        Console {
            path: path.to_path_buf(),
            seen: 0,
            len: 0,
            grew_at: Instant::now(),
            handed_over: false,
            last_line: String::new(),
            loader_at: None,
            handover_at: None,
        }
    }

    /// When the boot loader took over and handed over, in seconds since `t0`.
    fn marks(&self, t0: Instant) -> super::stages::ConsoleMarks {
        let secs = |i: Option<Instant>| i.map(|i| i.saturating_duration_since(t0).as_secs_f64());
        super::stages::ConsoleMarks {
            loader: secs(self.loader_at),
            handover: secs(self.handover_at),
        }
    }

    fn poll(&mut self, stall_limit: Duration) -> ConsoleState {
        use std::io::{Read, Seek, SeekFrom};
        let len = fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if len != self.len {
            self.len = len;
            self.grew_at = Instant::now();
        } else if self.handed_over && self.grew_at.elapsed() > stall_limit {
            return ConsoleState::Stalled(format!(
                "the guest printed nothing for {} s after \"{}\"",
                stall_limit.as_secs(),
                self.last_line
            ));
        }
        // Only what arrived since the last complete line is read.
        let mut bytes = Vec::new();
        let read = fs::File::open(&self.path).and_then(|mut f| {
            f.seek(SeekFrom::Start(self.seen as u64))?;
            f.read_to_end(&mut bytes)
        });
        if read.is_err() || bytes.is_empty() {
            return ConsoleState::Fine;
        }
        if let Some(nl) = bytes.iter().rposition(|b| *b == b'\n') {
            self.seen += nl + 1;
        }
        // The unfinished last line is looked at too: a prompt such as
        // OVMF's `Shell> ` never ends its line.
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if self.loader_at.is_none() && super::stages::LOADER_MARKS.iter().any(|m| text.contains(m))
        {
            self.loader_at = Some(Instant::now());
        }
        for l in text.split(['\n', '\r']) {
            let clean = plain_text(l);
            if clean.is_empty() {
                continue;
            }
            if FATAL_CONSOLE.iter().any(|p| l.contains(p)) {
                return ConsoleState::Fatal(clean);
            }
            if HANDOVER.iter().any(|h| l.contains(h)) {
                self.handed_over = true;
                self.handover_at.get_or_insert_with(Instant::now);
            }
            self.last_line = clean;
        }
        ConsoleState::Fine
    }
}

/// A console line without its terminal escape sequences (`ESC [ ... m`,
/// cursor moves) and other control characters, trimmed.
fn plain_text(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // A control sequence ends at its first byte in '@'..='~'.
            if chars.next() == Some('[') {
                for f in chars.by_ref() {
                    if ('@'..='~').contains(&f) {
                        break;
                    }
                }
            }
        } else if !c.is_control() {
            out.push(c);
        }
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn fatal(c: &mut Console) -> Option<String> {
        match c.poll(STALL_TCG) {
            ConsoleState::Fatal(l) => Some(l),
            _ => None,
        }
    }

    #[test]
    fn a_failed_boot_is_seen_on_the_console() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("c.log");
        let mut c = Console::new(&log);
        assert_eq!(fatal(&mut c), None, "no log yet");
        fs::write(&log, "SeaBIOS\nBooting from Hard Disk...\n").unwrap();
        assert_eq!(fatal(&mut c), None);
        // A partial line is looked at (and again once it is complete).
        fs::write(
            &log,
            "SeaBIOS\nBooting from Hard Disk...\nALERT!  UUID=1 does not exist.  Dropping to",
        )
        .unwrap();
        assert_eq!(fatal(&mut c), None);
        fs::write(&log, "SeaBIOS\nBooting from Hard Disk...\nALERT!  UUID=1 does not exist.  Dropping to a shell!\r\n").unwrap();
        assert_eq!(
            fatal(&mut c).as_deref(),
            Some("ALERT!  UUID=1 does not exist.  Dropping to a shell!")
        );
        assert_eq!(fatal(&mut c), None, "each line once");
        // OVMF without a bootloader on the disk ends in its shell, whose
        // prompt ends no line (as captured from a real boot).
        let ovmf = "\x1b[16;01HPress \x1b[1m\x1b[37m\x1b[40mESC\x1b[0m\x1b[37m\x1b[40m in 1 seconds to skip \x1b[1m\x1b[33m\x1b[40mstartup.nsh\x1b[0m\x1b[37m\x1b[40m or any other key to continue.\r\n\x1b[17;01H\x1b[1m\x1b[33m\x1b[40mShell> \x1b[0m\x1b[37m\x1b[40m";
        fs::write(&log, ovmf).unwrap();
        assert_eq!(fatal(&mut Console::new(&log)).as_deref(), Some("Shell>"));
    }

    #[test]
    fn silence_after_the_handover_is_a_stall_and_silence_before_it_is_not() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("c.log");
        fs::write(&log, "Welcome to GRUB!\n").unwrap();
        let mut c = Console::new(&log);
        assert_eq!(c.poll(Duration::ZERO), ConsoleState::Fine);
        std::thread::sleep(Duration::from_millis(20));
        // Firmware and GRUB may take their time: not a stall yet.
        assert_eq!(c.poll(Duration::ZERO), ConsoleState::Fine);
        let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
        writeln!(
            f,
            "\x1b[H\x1b[J\x1b[1;1H  Booting `Debian GNU/Linux (minimal)'"
        )
        .unwrap();
        assert_eq!(c.poll(Duration::ZERO), ConsoleState::Fine, "it just grew");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            c.poll(Duration::ZERO),
            ConsoleState::Stalled(
                "the guest printed nothing for 0 s after \"Booting `Debian GNU/Linux (minimal)'\""
                    .into()
            )
        );
        // Kernel lines after the handover keep it alive.
        let mut c = Console::new(&log);
        c.poll(Duration::from_secs(3600));
        writeln!(f, "[    0.000000] Linux version 6.1.0").unwrap();
        assert_eq!(c.poll(Duration::from_secs(3600)), ConsoleState::Fine);
    }
}
