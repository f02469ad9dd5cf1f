//! Results that are not run twice. A job's result is stored under a key
//! made of everything that decides it: the artifact's bytes (its SHA-256),
//! the checks it ran (each command, pattern, status, timeout and data
//! file, as the manifest carries them), where it ran (native, a container,
//! or a VM under which firmware, on which controller, with which cloud data
//! source, accelerator and memory), the tree the disk must hold, and the
//! biovm executable itself. A later job with the same key takes the stored
//! result instead of running, and its report says so. Only passing results
//! are stored: a failure is always looked at again.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::matrix::Job;
use super::report::{BootReport, Reused};
use super::TestOptions;
use crate::manifest::Tool;
use crate::store;

/// A stored result: the report and when it was made.
#[derive(Serialize, Deserialize)]
struct Stored {
    tested_at: String,
    report: BootReport,
}

/// The key of `job` run with `checks` under `opts`.
pub fn key(job: &Job, checks: &[Tool], servers: bool, opts: &TestOptions) -> Result<String> {
    let mut k = store::Key::new();
    k.add("biovm", store::own_sha256()?.as_bytes());
    if servers {
        // The workbench's servers started in the boot (a part of
        // `system/workbench`); a boot without them stands for no boot with.
        k.add("workbench-servers", b"started");
    }
    let (artifact, runner) = match job {
        Job::Vm(c) => (
            &c.artifact,
            format!(
                "vm {} {} {} {} {} MiB",
                c.label(),
                c.bus.as_str(),
                c.cloud.datasource(),
                super::kvm::accel().as_str(),
                opts.memory_mib
            ),
        ),
        Job::Container { artifact, format } => (
            artifact,
            format!(
                "namespaces {} as {}",
                job.label(),
                match &opts.default_user {
                    Some(u) if format.is_disk() => u,
                    _ => "root",
                }
            ),
        ),
    };
    k.add("artifact", store::sha256(artifact)?.as_bytes());
    k.add("runner", runner.as_bytes());
    k.add("full", &[u8::from(opts.full)]);
    k.add(
        "tree",
        opts.tree_sha256.as_deref().unwrap_or_default().as_bytes(),
    );
    if let Job::Container { format, .. } = job {
        if let Some(t) = opts.container_trees.get(format) {
            k.add("container-tree", t.as_bytes());
        }
    }
    if let Some(d) = &opts.data_disk {
        // The bytes the job reads, not what the manifest says of them.
        k.add("data-disk", store::sha256(&d.raw)?.as_bytes());
        if let Some(q) = &d.qcow2 {
            k.add("data-disk-qcow2", store::sha256(q)?.as_bytes());
        }
        k.add("data-tree", d.tree_sha256.as_bytes());
    }
    k.add(
        "checks",
        &serde_json::to_vec(checks).context("cannot encode the checks")?,
    );
    Ok(k.finish())
}

/// The stored, passing result under `key`, marked as reused, with the
/// logs of its run put back into `run_dir` under their own names (a
/// release publishes them; the report names them there).
pub fn lookup(results: &store::Results, key: &str, run_dir: &Path) -> Option<BootReport> {
    let s: Stored = results.get(key)?;
    let mut r = s.report;
    if !r.passed() {
        return None;
    }
    if let Err(e) = restore_logs(&results.files_dir(key), run_dir) {
        log::warn!("the stored logs of {}: {e:#}; running it again", r.cell());
        return None;
    }
    if let Some(name) = r.serial_log.file_name() {
        r.serial_log = run_dir.join(name);
    }
    r.reused = Some(Reused {
        key: key.to_string(),
        tested_at: s.tested_at,
    });
    Some(r)
}

fn restore_logs(from: &Path, run_dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(from) else {
        return Ok(());
    };
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    for e in entries {
        let e = e.with_context(|| format!("cannot read {}", from.display()))?;
        let bytes = std::fs::read(e.path())
            .with_context(|| format!("cannot read {}", e.path().display()))?;
        crate::fsutil::write_atomic(&run_dir.join(e.file_name()), &bytes)?;
    }
    Ok(())
}

/// Store `report` (a passing result of the job labelled `label`) under
/// `key`, with a copy of each of its logs in `run_dir` (the files named
/// `<label>.*`: console, results, metadata service): the test's own folder
/// is rewritten by the next test.
pub fn keep(
    results: &store::Results,
    key: &str,
    report: &BootReport,
    run_dir: &Path,
    label: &str,
) -> Result<()> {
    let mut r = report.clone();
    r.reused = None;
    let dir = results.files_dir(key);
    if dir.exists() {
        crate::fsutil::remove_tree(&dir)?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let prefix = format!("{label}.");
    for e in
        std::fs::read_dir(run_dir).with_context(|| format!("cannot read {}", run_dir.display()))?
    {
        let e = e.with_context(|| format!("cannot read {}", run_dir.display()))?;
        let name = e.file_name();
        let ours = name.to_str().is_some_and(|n| n.starts_with(&prefix));
        if ours && e.file_type().is_ok_and(|t| t.is_file()) {
            let bytes = std::fs::read(e.path())
                .with_context(|| format!("cannot read {}", e.path().display()))?;
            crate::fsutil::write_atomic(&dir.join(&name), &bytes)?;
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    results.put(
        key,
        &Stored {
            tested_at: crate::formats::rfc3339(now),
            report: r,
        },
    )
}
