//! Whether KVM can boot Linux here, proved by booting Linux.
//!
//! `/dev/kvm` can exist and still be unable to run a real guest: a
//! paravirtual KVM may run a real-mode boot sector and then hang a Linux
//! kernel right after the boot loader hands over. So the probe boots an
//! actual Linux kernel under KVM, with no root filesystem and `panic=-1`:
//! the kernel decompresses itself, enters long mode with paging, takes
//! timer interrupts through its calibration and every initcall, fails to
//! mount its root and panics, and QEMU (`-no-reboot`) ends. The kernel's
//! own console lines are the verdict. Under software emulation that takes
//! about 3 s on these machines; under a working KVM well under one.
//!
//! The kernel comes from (in order): `$BIOVM_PROBE_KERNEL`, the host's
//! `/boot`, a kernel package in biovm's package cache (every build puts the
//! image's kernel there), or the host's apt (`apt-get download` of the
//! cloud kernel). The verdict is kept in the cache for the host's current
//! boot, so only the first command after a reboot pays for the probe.
//!
//! `BIOVM_ACCEL=tcg` skips KVM; `BIOVM_ACCEL=kvm` uses it unproven (a boot
//! that then stalls is still retried under TCG: see [`demote`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::qemu::{Accel, QEMU};
use crate::cmd::Cmd;

/// How long the probe kernel may take to reach its root mount under KVM.
/// It needs under a second when KVM works and about 3 s even under
/// software emulation; a KVM that cannot run Linux prints nothing at all.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// What the kernel prints when it has run far enough: its banner, the
/// switch to a calibrated clock source (timers and interrupts work), and
/// the panic at the root mount (every initcall has run).
const PROBE_MILESTONES: &[&str] = &[
    "Linux version ",
    "clocksource: Switched to clocksource",
    "Kernel panic - not syncing: VFS:",
];

/// The cloud kernel's meta package, whose dependency is the kernel the
/// probe downloads when no other is at hand.
const KERNEL_META: &str = "linux-image-cloud-amd64";

/// The accelerator to use and what was proved about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub accel: Accel,
    /// One sentence: what the probe did and saw.
    pub detail: String,
}

/// The accelerator for the next boot: KVM only where the probe proved it
/// and no boot has stalled under it since.
pub fn accel() -> Accel {
    current().accel
}

/// The verdict that holds now (the probe's, or a later demotion's).
pub fn current() -> Verdict {
    if let Some(v) = DEMOTED.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        return v;
    }
    probed().clone()
}

static DEMOTED: Mutex<Option<Verdict>> = Mutex::new(None);

/// A boot under KVM stalled although the probe passed (or was skipped):
/// every later boot of this process uses software emulation.
pub fn demote(why: &str) {
    let v = Verdict {
        accel: Accel::Tcg,
        detail: format!("KVM stalled a real boot ({why}); software emulation (TCG) from now on"),
    };
    log::warn!("{}", v.detail);
    *DEMOTED.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
}

fn probed() -> &'static Verdict {
    static V: OnceLock<Verdict> = OnceLock::new();
    V.get_or_init(|| match std::env::var("BIOVM_ACCEL").as_deref() {
        Ok("tcg") => Verdict {
            accel: Accel::Tcg,
            detail: "software emulation (TCG), as BIOVM_ACCEL=tcg asks".into(),
        },
        Ok("kvm") => Verdict {
            accel: Accel::Kvm,
            detail: "KVM, unproven, as BIOVM_ACCEL=kvm asks".into(),
        },
        _ => probe(&crate::fsutil::cache_dir()).unwrap_or_else(|e| Verdict {
            accel: Accel::Tcg,
            detail: format!("KVM not proven ({e:#}); software emulation (TCG)"),
        }),
    })
}

/// The kept verdict, valid for one host boot, one QEMU and one kernel.
#[derive(Serialize, Deserialize)]
struct Kept {
    key: String,
    verdict: Verdict,
}

fn probe(cache: &Path) -> Result<Verdict> {
    if let Err(e) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Ok(Verdict {
            accel: Accel::Tcg,
            detail: format!("/dev/kvm cannot be opened ({e}); software emulation (TCG)"),
        });
    }
    let kernel = probe_kernel(cache)?;
    let key = format!(
        "{} {} {} {}",
        fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .unwrap_or_default()
            .trim(),
        Cmd::new(QEMU)
            .arg("--version")
            .output()?
            .lines()
            .next()
            .unwrap_or(""),
        kernel.display(),
        fs::metadata(&kernel).map(|m| m.len()).unwrap_or(0)
    );
    let kept_path = cache.join("kvm-probe.json");
    if let Some(k) = fs::read(&kept_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Kept>(&b).ok())
        .filter(|k| k.key == key)
    {
        log::info!("KVM: {} (kept from this boot's probe)", k.verdict.detail);
        return Ok(k.verdict);
    }
    let verdict = boot_probe_kernel(&kernel, Accel::Kvm)?;
    log::info!("KVM probe: {}", verdict.detail);
    let kept = serde_json::to_vec_pretty(&Kept {
        key,
        verdict: verdict.clone(),
    })?;
    if let Err(e) = crate::fsutil::write_atomic(&kept_path, &kept) {
        log::debug!(
            "cannot keep the KVM verdict in {}: {e:#}",
            kept_path.display()
        );
    }
    Ok(verdict)
}

/// Boot `kernel` under `accel` and judge it by what it printed (the verdict
/// names KVM; `accel` is TCG only to test the judging on a real kernel).
fn boot_probe_kernel(kernel: &Path, accel: Accel) -> Result<Verdict> {
    let machine = format!("q35,accel={accel}");
    let cpu = match accel {
        Accel::Kvm => "host",
        Accel::Tcg => super::qemu::TCG_CPU,
    };
    let dir = tempfile::tempdir()?;
    let console = dir.path().join("console.log");
    let t0 = Instant::now();
    let mut run = Cmd::new(QEMU)
        .args(["-machine", &machine, "-cpu", cpu, "-m", "256"])
        .args(["-smp", "1", "-nodefaults", "-display", "none", "-no-reboot"])
        .args(["-monitor", "none", "-serial"])
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(kernel)
        .args([
            "-append",
            "console=ttyS0 panic=-1 root=/dev/biovm-probe-none",
        ])
        .spawn()?;
    let status = run.wait_timeout(PROBE_TIMEOUT);
    let secs = t0.elapsed().as_secs_f64();
    run.kill();
    let text = String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).into_owned();
    Ok(judge_probe(kernel, &text, status.is_some(), secs))
}

/// The verdict from the probe kernel's console `text`; `ended`: QEMU
/// exited by itself within the time limit.
fn judge_probe(kernel: &Path, text: &str, ended: bool, secs: f64) -> Verdict {
    let name = kernel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let missing: Vec<&str> = PROBE_MILESTONES
        .iter()
        .copied()
        .filter(|m| !text.contains(m))
        .collect();
    if ended && missing.is_empty() {
        return Verdict {
            accel: Accel::Kvm,
            detail: format!(
                "KVM works: the Linux kernel {name} booted under it to its root mount in {secs:.1} s \
                 (long mode, paging, interrupts and timers)"
            ),
        };
    }
    let last = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| format!("its last console line was \"{l}\""))
        .unwrap_or_else(|| "it printed nothing on its console".into());
    let missing = if text.trim().is_empty() {
        String::new()
    } else {
        format!("; it never printed: {}", missing.join(" | "))
    };
    let how = if ended {
        format!("QEMU ended after {secs:.1} s")
    } else {
        format!("it was stopped after {} s", PROBE_TIMEOUT.as_secs())
    };
    Verdict {
        accel: Accel::Tcg,
        detail: format!(
            "KVM cannot boot Linux here: the kernel {name} under KVM did not reach its root mount \
             ({how}; {last}{missing}); software emulation (TCG)"
        ),
    }
}

/// A Linux kernel image to probe with (see the module documentation).
fn probe_kernel(cache: &Path) -> Result<PathBuf> {
    if let Some(k) = std::env::var_os("BIOVM_PROBE_KERNEL").filter(|k| !k.is_empty()) {
        return Ok(PathBuf::from(k));
    }
    if let Some(k) = newest(Path::new("/boot"), |n| n.starts_with("vmlinuz-")) {
        return Ok(k);
    }
    let dir = cache.join("probe-kernel");
    if let Some(k) = newest(&dir, |n| n.starts_with("vmlinuz-")) {
        return Ok(k);
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut debs: Vec<PathBuf> = fs::read_dir(cache.join("debs"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|d| newest(&d.path(), is_kernel_deb))
        .collect();
    debs.sort();
    let deb = match debs.pop() {
        Some(d) => d,
        None => download_kernel(&dir)?,
    };
    extract_vmlinuz(&deb, &dir)
}

/// A kernel package proper (not a meta package such as
/// `linux-image-amd64`, which holds no kernel).
fn is_kernel_deb(name: &str) -> bool {
    name.starts_with("linux-image-")
        && name.ends_with(".deb")
        && name
            .split('_')
            .next()
            .is_some_and(|p| p.as_bytes().get(12).is_some_and(u8::is_ascii_digit))
}

/// The last (by name) file in `dir` whose name `want`s.
fn newest(dir: &Path, want: impl Fn(&str) -> bool) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| want(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    found.sort();
    found.pop()
}

/// Fetch the cloud kernel's package into `dir` with the host's apt.
fn download_kernel(dir: &Path) -> Result<PathBuf> {
    let deps = Cmd::new("apt-cache")
        .args(["depends", "--important", KERNEL_META])
        .output()
        .context("no Linux kernel to probe KVM with, and apt cannot name one")?;
    let pkg = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .with_context(|| format!("apt names no kernel package behind {KERNEL_META}"))?
        .to_string();
    log::info!("downloading {pkg} to probe KVM with a real kernel");
    Cmd::new("apt-get")
        .args(["download", &pkg])
        .current_dir(dir)
        .run()
        .with_context(|| format!("cannot download the kernel package {pkg} to probe KVM"))?;
    newest(dir, is_kernel_deb).with_context(|| format!("apt-get download {pkg} left no package"))
}

/// Copy the kernel image (`/boot/vmlinuz-*`) out of the package `deb` into
/// `dir`, under its own name once complete.
fn extract_vmlinuz(deb: &Path, dir: &Path) -> Result<PathBuf> {
    let tmp = tempfile::tempdir_in(dir)?;
    Cmd::new("sh")
        .args([
            "-c",
            "dpkg-deb --fsys-tarfile \"$1\" | tar -x -C \"$2\" --wildcards './boot/vmlinuz-*'",
            "sh",
        ])
        .arg(deb)
        .arg(tmp.path())
        .run()
        .with_context(|| format!("cannot take the kernel out of {}", deb.display()))?;
    let k = newest(&tmp.path().join("boot"), |n| n.starts_with("vmlinuz-"))
        .with_context(|| format!("{} holds no /boot/vmlinuz-*", deb.display()))?;
    let dest = dir.join(k.file_name().unwrap_or_default());
    fs::rename(&k, &dest)
        .with_context(|| format!("cannot move the kernel to {}", dest.display()))?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOTED: &str = "[    0.000000] Linux version 6.1.0-57-cloud-amd64 (gcc-12)\n\
        [    0.862787] clocksource: Switched to clocksource tsc-early\n\
        [    1.594510] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n";

    #[test]
    fn a_kernel_that_reached_its_root_mount_proves_kvm() {
        let v = judge_probe(Path::new("/c/vmlinuz-6.1"), BOOTED, true, 0.7);
        assert_eq!(v.accel, Accel::Kvm);
        assert!(
            v.detail.contains("vmlinuz-6.1 booted under it"),
            "{}",
            v.detail
        );
    }

    #[test]
    fn a_silent_or_stopped_kernel_does_not() {
        let v = judge_probe(Path::new("/c/vmlinuz-6.1"), "", false, 20.0);
        assert_eq!(v.accel, Accel::Tcg);
        assert!(
            v.detail.contains("stopped after 20 s; it printed nothing"),
            "{}",
            v.detail
        );
        // Stopped at the time limit, even with every line printed.
        assert_eq!(
            judge_probe(Path::new("/k"), BOOTED, false, 20.0).accel,
            Accel::Tcg
        );
        // Ended early (a crash) without reaching the root mount.
        let early = "[    0.000000] Linux version 6.1\n[    0.1] general protection fault\n";
        let v = judge_probe(Path::new("/k"), early, true, 0.3);
        assert_eq!(v.accel, Accel::Tcg);
        assert!(
            v.detail.contains("\"[    0.1] general protection fault\""),
            "{}",
            v.detail
        );
        assert!(
            v.detail.contains("never printed: clocksource"),
            "{}",
            v.detail
        );
    }

    /// The probe, run under software emulation on a real kernel (found or
    /// downloaded as `biovm doctor` would), sees every milestone: the
    /// judging is not something only a broken KVM can fail.
    #[test]
    #[ignore = "needs QEMU and a Linux kernel package (downloads one with apt)"]
    fn a_real_kernel_reaches_every_milestone_under_emulation() {
        let kernel = probe_kernel(&crate::fsutil::cache_dir()).unwrap();
        let v = boot_probe_kernel(&kernel, Accel::Tcg).unwrap();
        assert_eq!(v.accel, Accel::Kvm, "{}", v.detail);
    }

    #[test]
    fn kernel_packages_are_told_from_meta_packages() {
        assert!(is_kernel_deb(
            "linux-image-6.1.0-57-cloud-amd64_6.1.192-3_amd64.deb"
        ));
        assert!(!is_kernel_deb(
            "linux-image-cloud-amd64_6.1.192-3_amd64.deb"
        ));
        assert!(!is_kernel_deb("linux-image-amd64_6.1.192-3_amd64.deb"));
        assert!(!is_kernel_deb(
            "linux-headers-6.1.0-57-amd64_6.1.192-3_amd64.deb"
        ));
    }
}
