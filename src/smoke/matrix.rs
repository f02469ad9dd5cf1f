//! The whole test matrix of a built image: every VM cell (artifact ×
//! firmware, on its destination's disk controller) and every container
//! artifact, run from one work queue up to `--jobs` at once, with the
//! reports written next to the serial logs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::{boot_and_check, container, default_jobs, report, BootReport, Cell, TestOptions};
use crate::config::{BootMode, Format};
use crate::manifest::Tool;

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
    fn failed(&self, e: &anyhow::Error) -> BootReport {
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
    let mut v: Vec<Job> = super::vm_cells(artifacts, modes)
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
/// then run the system's checks and [`super::boot_sample`] only. None when
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
    type How = (&'static str, &'static str, &'static str);
    let vms: Vec<Option<(&Cell, How)>> = jobs
        .iter()
        .map(|j| match j {
            Job::Vm(c) => super::qemu_format(&c.artifact, c.format)
                .ok()
                .map(|f| (c, (f, c.bus.as_str(), c.cloud.datasource()))),
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
        match super::boot_disk_sha256(&c.artifact, c.format) {
            Ok(sha) => {
                digests.insert(&c.artifact, sha);
            }
            Err(e) => log::warn!("{e:#}: its cells boot on their own"),
        }
    }
    // The first job of each disk, way of booting and firmware.
    let mut first: HashMap<(&str, How, &str), usize> = HashMap::new();
    let mut sharing = vec![Sharing::default(); jobs.len()];
    for (i, vm) in vms.iter().enumerate() {
        let Some((c, how)) = vm else { continue };
        let Some(sha) = digests.get(c.artifact.as_path()) else {
            continue;
        };
        sharing[i].disk_sha256 = Some(sha.clone());
        let p = *first.entry((sha, *how, c.firmware.as_str())).or_insert(i);
        sharing[i].same_boot_as = (p != i).then_some(p);
    }
    sharing
}

/// Run every job, up to `opts.jobs` at once; VM guests get an equal share
/// of the cores. A job whose result is stored ([`super::reuse`]: the same
/// artifact bytes, checks and runner passed before) is not run again
/// unless `opts.rerun`: its report is the stored one and says so. A VM cell
/// that would repeat an earlier cell's boot exactly ([`shared_boots`]) is
/// not booted again unless `opts.boot_identical_disks`: its report is that
/// boot's, naming it. Reports come back in the jobs' order; a job that
/// fails to start gets a failed report naming why.
pub fn run_jobs(
    jobs: &[Job],
    tools: &[Tool],
    run_dir: &Path,
    opts: &TestOptions,
) -> Vec<BootReport> {
    // With a native run of every check in the same tree, boots run the
    // system's checks and a sample; otherwise (or with --full) every check.
    let has_native = jobs
        .iter()
        .any(|j| matches!(j, Job::Container { format, .. } if format.is_disk()));
    let sample;
    let boot_tools = if has_native && !opts.full {
        sample = super::boot_sample(tools);
        &sample[..]
    } else {
        tools
    };
    let checks_of = |j: &Job| match j {
        Job::Vm(_) => boot_tools,
        Job::Container { .. } => tools,
    };
    let store = crate::store::Results::open();
    let keys: Vec<Option<String>> = jobs
        .iter()
        .map(|j| match super::reuse::key(j, checks_of(j), opts) {
            Ok(k) => Some(k),
            Err(e) => {
                log::warn!("{}: {e:#}; its result is not stored", j.label());
                None
            }
        })
        .collect();
    let mut reports: Vec<Option<BootReport>> = keys
        .iter()
        .map(|k| match k {
            Some(k) if !opts.rerun => super::reuse::lookup(&store, k, run_dir),
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
    let fresh = run_fresh(&fresh_jobs, tools, boot_tools, run_dir, opts);
    for (&i, r) in todo.iter().zip(fresh) {
        if let (true, Some(k)) = (r.passed(), &keys[i]) {
            if let Err(e) = super::reuse::keep(&store, k, &r, run_dir, &jobs[i].label()) {
                log::warn!("{}: its result is not stored: {e:#}", jobs[i].label());
            }
        }
        reports[i] = Some(r);
    }
    reports.into_iter().flatten().collect()
}

/// Run `jobs` (none of them reused): VM jobs with `boot_tools`, the others
/// with every tool.
fn run_fresh(
    jobs: &[Job],
    tools: &[Tool],
    boot_tools: &[Tool],
    run_dir: &Path,
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
    let own: Vec<usize> = (0..jobs.len())
        .filter(|&i| sharing[i].same_boot_as.is_none())
        .collect();
    let workers = opts.jobs.clamp(1, own.len().max(1));
    let cpus = (default_jobs() / workers).max(1) as u32;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<BootReport>>> =
        jobs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let done = crate::progress::units("test", "boots", own.len() as u64, "boots");
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(&i) = own.get(n) else { break };
                let job = &jobs[i];
                let stage = crate::progress::start("test", &job.label());
                let r = match job {
                    Job::Vm(cell) => {
                        log::info!("booting {} ({})", cell.label(), cell.bus.as_str());
                        boot_and_check(cell, boot_tools, run_dir, cpus, opts)
                    }
                    Job::Container { artifact, format } => {
                        log::info!("running the checks in {}", artifact.display());
                        container::test_container(
                            artifact,
                            *format,
                            tools,
                            run_dir,
                            container_timeout(tools),
                            opts.tree_sha256.as_deref(),
                            opts.default_user.as_deref().filter(|_| format.is_disk()),
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
        log::info!(
            "{}: its disk is byte-for-byte the disk of {} (sha256 {}), booted the same way: \
             its results are that boot's",
            r.cell(),
            reports[p].cell(),
            share.disk_sha256.as_deref().unwrap_or("")
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
    let mut jobs = jobs(artifacts, modes);
    if !opts.full && jobs.iter().any(|j| matches!(j, Job::Vm(_))) {
        // First: it is quick, and a tool that fails shows at once.
        if let Some(n) = native_job(artifacts) {
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
    let reports = run_jobs(&jobs, tools, report_dir, opts);
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
        let r = run_jobs(&jobs, &[], d.path(), &opts);
        assert_eq!(r.len(), 1);
        assert!(!r[0].passed());
        assert_eq!(
            (r[0].artifact.as_str(), r[0].firmware),
            ("gone.tar.gz", super::report::Runner::Container)
        );
        assert!(
            r[0].error.as_deref().unwrap().contains("gone.tar.gz"),
            "{:?}",
            r[0].error
        );
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
    fn disk() -> Vec<u8> {
        b"not really a disk, but the same bytes in three artifacts".repeat(1000)
    }

    /// Raw, VMDK and VDI disks and a Vagrant box all holding [`disk`], an
    /// OVA holding `ova_disk`, and a tarball (not a disk).
    fn artifacts(dir: &Path, ova_disk: &[u8]) -> Vec<(PathBuf, Format)> {
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
        let jobs = jobs(&arts, &[BootMode::Bios]);
        let mut opts = TestOptions {
            boot_timeout: Duration::from_secs(5),
            jobs: 2,
            memory_mib: 256,
            boot_identical_disks: false,
            ..TestOptions::default()
        };
        let r = run_jobs(&jobs, &[], d.path(), &opts);
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
        let r = run_jobs(&jobs, &[], d.path(), &opts);
        assert_eq!(r[1].same_boot_as, None);
        let e = r[1].error.as_deref().unwrap();
        assert!(e.contains("m.ova"), "{e}");
    }
}
