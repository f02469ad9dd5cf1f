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
    /// Run the checks in a container artifact's root filesystem.
    Container { artifact: PathBuf, format: Format },
}

impl Job {
    /// `raw-uefi`, `oci`...: names the job's logs.
    pub fn label(&self) -> String {
        match self {
            Job::Vm(c) => c.label(),
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
/// of the cores. Reports come back in the jobs' order; a job that fails to
/// start gets a failed report naming why.
pub fn run_jobs(
    jobs: &[Job],
    tools: &[Tool],
    run_dir: &Path,
    opts: &TestOptions,
) -> Vec<BootReport> {
    let workers = opts.jobs.clamp(1, jobs.len().max(1));
    let cpus = (default_jobs() / workers).max(1) as u32;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<BootReport>>> =
        jobs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let done = crate::progress::units("test", "boots", jobs.len() as u64, "boots");
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(job) = jobs.get(i) else { break };
                let stage = crate::progress::start("test", &job.label());
                let r = match job {
                    Job::Vm(cell) => {
                        log::info!("booting {} ({})", cell.label(), cell.bus.as_str());
                        boot_and_check(cell, tools, run_dir, cpus, opts)
                    }
                    Job::Container { artifact, format } => {
                        log::info!("running the checks in {}", artifact.display());
                        container::test_container(
                            artifact,
                            *format,
                            tools,
                            run_dir,
                            container_timeout(tools),
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
    slots
        .into_iter()
        .zip(jobs)
        .map(|(m, j)| {
            m.into_inner().unwrap().unwrap_or_else(|| {
                j.failed(&anyhow::anyhow!("{}: the test thread died", j.label()))
            })
        })
        .collect()
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
    let jobs = jobs(artifacts, modes);
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
        };
        let r = run_jobs(&jobs, &[], d.path(), &opts);
        assert_eq!(r.len(), 1);
        assert!(!r[0].passed());
        assert_eq!(
            (r[0].artifact.as_str(), r[0].firmware),
            ("gone.tar.gz", "container")
        );
        assert!(
            r[0].error.as_deref().unwrap().contains("gone.tar.gz"),
            "{:?}",
            r[0].error
        );
    }
}
