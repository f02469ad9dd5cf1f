//! The work queue that runs the test matrix ([`super::matrix`]) of a built
//! image: the native run first and alone, then up to `--jobs` jobs at once,
//! VM boots ([`super::boot`]) with an equal share of the cores among the
//! guests, and container runs ([`super::container`]); results stored from
//! an earlier test are taken instead of running again ([`super::reuse`]),
//! a cell that would repeat another's boot gets that boot's report, and the
//! reports are written as `report.json` and `junit.xml` next to the serial
//! logs ([`super::report`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::boot::{boot_and_check, boot_sample, Guest};
use super::boot_disk::BootDisks;
use super::matrix::{self, shared_boots, Job, Sharing};
use super::qemu::GuestWork;
use super::report::{self, BootReport};
use super::{container, default_jobs, reuse, TestOptions};
use crate::config::{BootMode, Format};
use crate::manifest::Tool;

/// How long a container's checks may run: every check's own timeout, plus a
/// minute for the container to start.
fn container_timeout(tools: &[Tool]) -> Duration {
    Duration::from_secs(
        60 + tools
            .iter()
            .map(|t| u64::from(t.check.timeout))
            .sum::<u64>(),
    )
}

/// Run every job, up to `opts.jobs` at once; VM guests get an equal share
/// of the cores among the guests. A job whose result is stored ([`super::reuse`]: the same
/// artifact bytes, checks and runner passed before) is not run again
/// unless `opts.rerun`: its report is the stored one and says so. A VM cell
/// that would repeat an earlier cell's boot exactly ([`shared_boots`]) is
/// not booted again unless `opts.boot_identical_disks`: its report is that
/// boot's, naming it. Reports come back in the jobs' order; a job that
/// fails to start gets a failed report naming why. `native`: the test's
/// native run of every check in the same tree (among `jobs` or not).
pub fn run_jobs(
    jobs: &[Job],
    native: Option<&Job>,
    tools: &[Tool],
    run_dir: &Path,
    opts: &TestOptions,
) -> Vec<BootReport> {
    // With a native run of every check in the same tree, boots run the
    // system's checks and a sample; otherwise (or with --full) every check.
    let sample_only = native.is_some() && !opts.full;
    let sample;
    let boot_tools = if sample_only {
        sample = boot_sample(tools, opts.workbench.is_some(), &opts.boot_sample);
        &sample[..]
    } else {
        tools
    };
    // A container artifact carries no data when it is on a data disk.
    let without_data: Vec<Tool>;
    let container_tools = if opts.data_disk.is_some() {
        without_data = tools
            .iter()
            .filter(|t| t.category != crate::data::CATEGORY)
            .cloned()
            .collect();
        &without_data[..]
    } else {
        tools
    };
    // A container artifact whose tree the build recorded (the native
    // run's tree less what its format leaves out) runs the sample too: its
    // `system/same-tree` shows it holds the tree every check passed in.
    let container_sample =
        boot_sample(container_tools, opts.workbench.is_some(), &opts.boot_sample);
    let checks_of = |j: &Job| match j {
        Job::Vm(_) => boot_tools,
        j if j.is_native() => tools,
        Job::Container { format, .. }
            if sample_only && opts.container_trees.contains_key(format) =>
        {
            &container_sample[..]
        }
        Job::Container { .. } => container_tools,
    };
    // The matrix's first boot starts the workbench's servers (see
    // `Guest::servers`), as does every boot that runs every check; a
    // stored result counts only for a boot that did the same.
    let first_vm = jobs.iter().position(|j| matches!(j, Job::Vm(_)));
    let servers: Vec<bool> = (0..jobs.len())
        .map(|i| opts.workbench.is_some() && (!sample_only || Some(i) == first_vm))
        .collect();
    let store = crate::store::Results::open();
    let keys: Vec<Option<String>> = jobs
        .iter()
        .zip(&servers)
        .map(
            |(j, &servers)| match reuse::key(j, checks_of(j), servers, opts) {
                Ok(k) => Some(k),
                Err(e) => {
                    log::warn!("{}: {e:#}; its result is not stored", j.label());
                    None
                }
            },
        )
        .collect();
    let mut reports: Vec<Option<BootReport>> = keys
        .iter()
        .map(|k| match k {
            Some(k) if !opts.rerun => reuse::lookup(&store, k, run_dir),
            _ => None,
        })
        .collect();
    let todo: Vec<usize> = (0..jobs.len()).filter(|&i| reports[i].is_none()).collect();
    for (i, r) in reports.iter().enumerate() {
        if let Some(r) = r {
            let when = r.reused.as_ref().map_or("", |u| u.tested_at.as_str());
            log::info!(
                "{}: passed at {when}, unchanged since: not run again",
                jobs[i].label()
            );
        }
    }
    let fresh_jobs: Vec<Job> = todo.iter().map(|&i| jobs[i].clone()).collect();
    let fresh_servers: Vec<bool> = todo.iter().map(|&i| servers[i]).collect();
    // Under software emulation, a guest that runs any tool gets a CPU that
    // every tool runs on (see `qemu::TCG_CPU_TOOLS`).
    let work = if sample_only {
        GuestWork::Boot
    } else {
        GuestWork::Tools
    };
    // The disk whose tree the native run runs every check in: a container
    // artifact running the sample runs it there when its layers show it
    // holds that tree (see `container::Native::tree_disk`).
    let tree_disk = native.and_then(|j| match j {
        Job::Container { artifact, format } if sample_only && format.is_disk() => {
            Some((artifact.as_path(), *format))
        }
        _ => None,
    });
    let fresh = run_fresh(
        &fresh_jobs,
        &checks_of,
        Guests {
            work,
            servers: &fresh_servers,
        },
        (run_dir, tree_disk),
        opts,
    );
    for (&i, r) in todo.iter().zip(fresh) {
        if let (true, Some(k)) = (r.passed(), &keys[i]) {
            if let Err(e) = reuse::keep(&store, k, &r, run_dir, &jobs[i].label()) {
                log::warn!("{}: its result is not stored: {e:#}", jobs[i].label());
            }
        }
        reports[i] = Some(r);
    }
    reports.into_iter().flatten().collect()
}

/// Learn the root filesystem's tree of each distinct disk the VM jobs of
/// `jobs` boot (see `tree::booted_disk_digest`), one after the other, so
/// that their boots find it known. A disk that cannot be read here is
/// read again by its boot, whose `system/same-tree` says why it failed.
fn know_trees_of(jobs: &[&Job], disks: &BootDisks, run_dir: &Path) {
    let mut seen = std::collections::HashSet::new();
    let Ok(scratch) = crate::fsutil::Scratch::new_in(run_dir, "trees") else {
        return;
    };
    for j in jobs {
        let Job::Vm(cell) = j else { continue };
        if !seen.insert(&cell.artifact) {
            continue;
        }
        let known = disks.get(&cell.artifact, cell.format).and_then(|(d, qf)| {
            super::tree::booted_disk_digest(&cell.artifact, cell.format, (&d, qf), scratch.path())
        });
        if let Err(e) = known {
            log::warn!("{}: {e:#}", cell.artifact.display());
        }
    }
}

/// The jobs `own` keeps (those not sharing another's boot), in the order
/// they start: the boot that starts the workbench's servers (`servers`:
/// the longest) first, then the container runs, whose unpacking is
/// decompression and disk writes, which overlap a boot's emulated
/// processor better than a second boot does (run last, BioLinux's OCI
/// layout ran alone for 98 s after the last boot), then the other boots,
/// each kind in the matrix's order.
fn start_order(jobs: &[Job], servers: &[bool], own: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..jobs.len()).filter(|&i| own(i)).collect();
    order.sort_by_key(|&i| match &jobs[i] {
        Job::Vm(_) if servers[i] => 0,
        Job::Container { .. } => 1,
        Job::Vm(_) => 2,
    });
    order
}

/// What the guests of a batch of jobs do: `work`, and for each job whether
/// it starts the workbench's servers (see `Guest::servers`).
#[derive(Clone, Copy)]
struct Guests<'a> {
    work: GuestWork,
    servers: &'a [bool],
}

/// Run `jobs` (none of them reused), each with the checks `checks_of`
/// gives it, its guests doing `work`.
fn run_fresh<'t>(
    jobs: &[Job],
    checks_of: &(dyn Fn(&Job) -> &'t [Tool] + Sync),
    guests_do: Guests,
    (run_dir, tree_disk): (&Path, Option<(&Path, Format)>),
    opts: &TestOptions,
) -> Vec<BootReport> {
    if jobs.is_empty() {
        return Vec::new();
    }
    let sharing = if opts.boot_identical_disks {
        vec![Sharing::default(); jobs.len()]
    } else {
        shared_boots(jobs)
    };
    let own = start_order(jobs, guests_do.servers, |i| {
        sharing[i].same_boot_as.is_none()
    });
    let workers = opts.jobs.clamp(1, own.len().max(1));
    // The cores are shared among the guests that run at once, not among
    // every worker: a native or container run beside one guest (BioLinux's
    // test) leaves it every core. Its checks in parallel with cloud-init
    // and the workbench's servers made a one-processor boot of BioLinux
    // take 129 s, a two-processor one 76 s.
    let guests = own
        .iter()
        .filter(|&&i| matches!(jobs[i], Job::Vm(_)))
        .count();
    let cpus = (default_jobs() / workers.min(guests).max(1)).max(1) as u32;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<BootReport>>> =
        jobs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let disks = match BootDisks::new(run_dir) {
        Ok(d) => d,
        Err(e) => return jobs.iter().map(|j| j.failed(&e)).collect(),
    };
    let done = crate::progress::units("test", "boots", own.len() as u64, "boots");
    // Container runs' trees are removed while the next jobs run; all are
    // gone before the reports are.
    let removals = crate::fsutil::Removals::default();
    std::thread::scope(|s| {
        // The tree on each disk the boots read, known while they boot
        // rather than after each (a qcow2 or an OVA's VMDK compared with
        // the build's raw disk, or read), once per disk; each boot's
        // `system/same-tree` then takes it.
        if opts.tree_sha256.is_some() {
            let booted: Vec<&Job> = own.iter().map(|&i| &jobs[i]).collect();
            let disks = &disks;
            s.spawn(move || know_trees_of(&booted, disks, run_dir));
        }
        for _ in 0..workers {
            s.spawn(|| loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(&i) = own.get(n) else { break };
                let job = &jobs[i];
                let stage = crate::progress::start("test", &job.label());
                let r = match job {
                    Job::Vm(cell) => {
                        log::info!("booting {} ({})", cell.label(), cell.bus.as_str());
                        let guest = Guest {
                            cpus,
                            work: guests_do.work,
                            servers: guests_do.servers[i],
                        };
                        boot_and_check(cell, checks_of(job), run_dir, &disks, guest, opts)
                    }
                    Job::Container { artifact, format } => {
                        log::info!("running the checks in {}", artifact.display());
                        container::test_container(
                            artifact,
                            *format,
                            checks_of(job),
                            run_dir,
                            container_timeout(checks_of(job)),
                            container::Native {
                                expected_tree: if format.is_disk() {
                                    opts.tree_sha256.as_deref()
                                } else {
                                    opts.container_trees.get(format).map(String::as_str)
                                },
                                user: opts.default_user.as_deref().filter(|_| format.is_disk()),
                                data_disk: opts.data_disk.as_ref(),
                                removals: Some(&removals),
                                tree_disk: tree_disk.filter(|_| {
                                    !format.is_disk() && opts.container_trees.contains_key(format)
                                }),
                            },
                        )
                    }
                };
                let r = r.unwrap_or_else(|e| job.failed(&e));
                match (r.passed(), &r.error) {
                    (true, _) => stage.finish(),
                    (false, Some(e)) => stage.fail(e),
                    (false, None) => stage.fail(&format!(
                        "{} of {} checks failed",
                        r.results.iter().filter(|c| !c.outcome.passed()).count(),
                        r.results.len()
                    )),
                }
                done.inc(1);
                *slots[i].lock().unwrap() = Some(r);
            });
        }
    });
    done.finish();
    drop(removals);
    let mut reports: Vec<BootReport> = slots
        .into_iter()
        .zip(jobs)
        .map(|(m, j)| {
            m.into_inner().unwrap().unwrap_or_else(|| {
                j.failed(&anyhow::anyhow!("{}: the test thread died", j.label()))
            })
        })
        .collect();
    for (i, share) in sharing.iter().enumerate() {
        reports[i].disk_sha256.clone_from(&share.disk_sha256);
        let (Some(p), Job::Vm(cell)) = (share.same_boot_as, &jobs[i]) else {
            continue;
        };
        let mut r = reports[p].clone();
        r.name_cell(cell);
        r.same_boot_as = Some(reports[p].cell());
        r.same_boot_by_contents = share.by_contents;
        let other = reports[p].cell();
        let same = if share.by_contents {
            format!(
                "gives the guest what the disk of {other} gives it (the same virtual size, \
                 every sector equal: qemu-img compare)"
            )
        } else {
            let sha = share.disk_sha256.as_deref().unwrap_or("");
            format!("is byte-for-byte the disk of {other} (sha256 {sha})")
        };
        log::info!(
            "{}: its disk {same}, booted the same way: its results are that boot's",
            r.cell()
        );
        reports[i] = r;
    }
    reports
}

/// Test `artifacts` with `tools` (the whole matrix), and write
/// `report.json` and `junit.xml` into `report_dir` (next to the serial
/// logs). Returns the reports; the caller judges them.
pub fn test_artifacts(
    artifacts: &[(PathBuf, Format)],
    tools: &[Tool],
    modes: &[BootMode],
    report_dir: &Path,
    opts: &TestOptions,
) -> Result<Vec<BootReport>> {
    let mut jobs = matrix::jobs(artifacts, modes);
    if !opts.full && jobs.iter().any(|j| matches!(j, Job::Vm(_))) {
        // First: it is quick, and a tool that fails shows at once.
        if let Some(n) = matrix::native_job(artifacts) {
            jobs.insert(0, n);
        }
    }
    if jobs.is_empty() {
        anyhow::bail!("nothing to test: no disk or container artifact among the targets");
    }
    if jobs.iter().any(|j| matches!(j, Job::Vm(_))) {
        crate::doctor::require(crate::doctor::Need::Test)?;
    }
    let _lock = lock_report_dir(report_dir)?;
    // The native run goes alone, before the rest: its checks fill every
    // core, and a guest booted beside them ran as if on a slower machine
    // (BioLinux: native run and boot together 109 s, the boot alone 76 s
    // after it, each of its stages slower, even with the native run at a
    // lower priority).
    let native = jobs.first().filter(|j| j.is_native());
    let reports = if native.is_some() && jobs.len() > 1 {
        let mut reports = run_jobs(&jobs[..1], native, tools, report_dir, opts);
        if reports.iter().all(BootReport::passed) || !opts.stop_on_native_failure {
            reports.extend(run_jobs(&jobs[1..], native, tools, report_dir, opts));
        } else {
            log::warn!(
                "the native checks failed: none of the other {} cells was started",
                jobs.len() - 1
            );
        }
        reports
    } else {
        run_jobs(&jobs, native, tools, report_dir, opts)
    };
    let json = serde_json::to_string_pretty(&reports)? + "\n";
    crate::fsutil::write_atomic(&report_dir.join("report.json"), json.as_bytes())?;
    crate::fsutil::write_atomic(
        &report_dir.join("junit.xml"),
        report::junit(&reports).as_bytes(),
    )?;
    Ok(reports)
}

/// Create `dir` and hold an exclusive lock on it while the returned file
/// lives: two tests of one artifact would otherwise write the same
/// overlays and logs (and QEMU would refuse the second with a lock error
/// that names neither test).
fn lock_report_dir(dir: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let f = std::fs::File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    // SAFETY: flock on a file descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            anyhow::bail!(
                "{} is in use by another `biovm test` of the same artifacts; \
                 wait for it to finish",
                dir.display()
            );
        }
        return Err(e).with_context(|| format!("cannot lock {}", dir.display()));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smoke::matrix::tests::{artifacts, disk};

    #[test]
    fn a_second_test_of_the_same_artifacts_is_refused_until_the_first_ends() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("minimal.test");
        let first = lock_report_dir(&dir).unwrap();
        let e = lock_report_dir(&dir).unwrap_err().to_string();
        assert!(
            e.contains("minimal.test is in use by another `biovm test`"),
            "{e}"
        );
        drop(first);
        lock_report_dir(&dir).unwrap();
    }

    #[test]
    fn the_servers_boot_starts_first_then_the_containers() {
        let d = tempfile::tempdir().unwrap();
        let jobs = matrix::jobs(
            &artifacts(d.path(), &disk()),
            &[BootMode::Uefi, BootMode::Bios],
        );
        let label = |i: &usize| jobs[*i].label();
        let first_vm = jobs.iter().position(|j| matches!(j, Job::Vm(_))).unwrap();
        let servers: Vec<bool> = (0..jobs.len()).map(|i| i == first_vm).collect();
        let order = start_order(&jobs, &servers, |_| true);
        assert_eq!(order.len(), jobs.len());
        let kinds: Vec<&str> = order
            .iter()
            .map(|&i| match &jobs[i] {
                Job::Vm(_) if servers[i] => "servers",
                Job::Container { .. } => "container",
                Job::Vm(_) => "vm",
            })
            .collect();
        let containers = jobs.iter().filter(|j| !matches!(j, Job::Vm(_))).count();
        assert!(containers > 0 && containers + 1 < jobs.len());
        assert_eq!(kinds[0], "servers");
        assert!(
            kinds[1..=containers].iter().all(|k| *k == "container"),
            "{kinds:?}"
        );
        assert!(
            kinds[containers + 1..].iter().all(|k| *k == "vm"),
            "{kinds:?}"
        );
        // Each kind keeps the matrix's order; a job left out is not started.
        let vms: Vec<String> = order[containers + 1..].iter().map(label).collect();
        let mut sorted = order[containers + 1..].to_vec();
        sorted.sort_unstable();
        assert_eq!(vms, sorted.iter().map(label).collect::<Vec<_>>());
        let without_first = start_order(&jobs, &servers, |i| i != first_vm);
        assert_eq!(without_first.len(), jobs.len() - 1);
        assert!(!without_first.contains(&first_vm));
    }

    #[test]
    fn a_job_that_cannot_start_gets_a_failed_report_naming_why() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("gone.tar.gz");
        let jobs = vec![Job::Container {
            artifact: missing,
            format: Format::Tarball,
        }];
        let opts = TestOptions {
            boot_timeout: Duration::from_secs(5),
            jobs: 1,
            memory_mib: 256,
            boot_identical_disks: false,
            ..TestOptions::default()
        };
        let r = run_jobs(&jobs, None, &[], d.path(), &opts);
        assert_eq!(r.len(), 1);
        assert!(!r[0].passed());
        assert_eq!(
            (r[0].artifact.as_str(), r[0].firmware),
            ("gone.tar.gz", report::Runner::Container)
        );
        assert!(
            r[0].error.as_deref().unwrap().contains("gone.tar.gz"),
            "{:?}",
            r[0].error
        );
    }

    /// A cell that shares a boot reports that boot's results under its own
    /// artifact's name and names the boot; with `boot_identical_disks`
    /// every cell boots (here: fails to, the disks are not disks).
    #[test]
    fn a_shared_cell_reports_the_boot_it_shares_under_its_own_name() {
        let d = tempfile::tempdir().unwrap();
        let arts: Vec<(PathBuf, Format)> = artifacts(d.path(), &disk())
            .into_iter()
            .filter(|(_, f)| matches!(f, Format::Vmdk | Format::Ova))
            .collect();
        let jobs = matrix::jobs(&arts, &[BootMode::Bios]);
        let mut opts = TestOptions {
            boot_timeout: Duration::from_secs(5),
            jobs: 2,
            memory_mib: 256,
            boot_identical_disks: false,
            ..TestOptions::default()
        };
        let r = run_jobs(&jobs, None, &[], d.path(), &opts);
        assert_eq!(
            (r[0].cell().as_str(), r[1].cell().as_str()),
            ("m.vmdk bios", "m.ova bios")
        );
        assert_eq!(r[1].format, Format::Ova);
        assert_eq!(r[1].same_boot_as.as_deref(), Some("m.vmdk bios"));
        assert_eq!(r[0].same_boot_as, None);
        assert_eq!(r[1].disk_sha256, r[0].disk_sha256);
        // The boot failed (no disk QEMU can read), and so does its copy.
        let e = r[0].error.as_deref().unwrap();
        assert!(e.contains("m.vmdk"), "{e}");
        assert_eq!(r[1].error.as_deref(), Some(e));
        let table = report::table(&r);
        assert!(
            table.contains("m.ova bios: FAILED (") && table.contains("same disk as m.vmdk bios"),
            "{table}"
        );
        let junit = report::junit(&r);
        assert!(
            junit.contains("<property name=\"same-boot-as\" value=\"m.vmdk bios\"/>"),
            "{junit}"
        );
        opts.boot_identical_disks = true;
        let r = run_jobs(&jobs, None, &[], d.path(), &opts);
        assert_eq!(r[1].same_boot_as, None);
        let e = r[1].error.as_deref().unwrap();
        assert!(e.contains("m.ova"), "{e}");
    }
}
