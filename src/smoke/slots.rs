//! Guest slots shared by every biovm process of the machine: a software-
//! emulated guest keeps one core busy, so two `biovm test` or `biovm
//! release` runs side by side (two CI jobs, a lab's two terminals) would
//! otherwise start more guests than there are cores, and each would run
//! slower than its timeouts allow (a systemd device timeout inside a
//! starved guest fails a boot that would have passed).
//!
//! A slot is an exclusive `flock` on one of N files in a folder every
//! process sees (`/run/lock/biovm-guests`, else the temporary folder); the
//! kernel drops it when its holder exits however it ends, so a killed
//! process never leaves a slot taken. A guest with `cpus` processors takes
//! `cpus` slots. N is the number of cores, or `BIOVM_GUEST_SLOTS`.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Slots held for one guest; dropped, they are free again.
#[derive(Debug)]
pub struct Held {
    _files: Vec<File>,
    /// How long the guest waited for them.
    pub waited: Duration,
}

/// How many slots the machine has: `BIOVM_GUEST_SLOTS`, else one per core.
pub fn count() -> Result<usize> {
    match std::env::var("BIOVM_GUEST_SLOTS") {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => anyhow::bail!("BIOVM_GUEST_SLOTS={v:?} is not a positive whole number"),
        },
        Err(_) => Ok(super::default_jobs()),
    }
}

/// The folder of the machine's slot files.
pub fn folder() -> PathBuf {
    let run = Path::new("/run/lock");
    if run.is_dir() && fs::metadata(run).is_ok_and(|m| !m.permissions().readonly()) {
        run.join("biovm-guests")
    } else {
        std::env::temp_dir().join("biovm-guests")
    }
}

/// Take `cpus` of the `total` slots in `dir`, waiting while other guests
/// hold them; `waiting` is called once, when the first try finds too few
/// free. A guest wanting more slots than exist takes them all.
pub fn take(dir: &Path, total: usize, cpus: u32, waiting: impl FnOnce(usize)) -> Result<Held> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let want = (cpus as usize).clamp(1, total);
    let t0 = Instant::now();
    let mut waiting = Some(waiting);
    loop {
        let mut got = Vec::with_capacity(want);
        for i in 0..total {
            let path = dir.join(format!("slot-{i}"));
            let f = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            // SAFETY: flock on a file descriptor this function owns.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                got.push(f);
            } else {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()));
                }
                continue;
            }
            if got.len() == want {
                return Ok(Held {
                    _files: got,
                    waited: t0.elapsed(),
                });
            }
        }
        // Too few free: give back what this try took, so two guests
        // wanting two slots each never hold one each and wait forever.
        drop(got);
        if let Some(w) = waiting.take() {
            w(want);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_exclusive_across_holders_and_free_again_when_dropped() {
        let d = tempfile::tempdir().unwrap();
        let a = take(d.path(), 2, 1, |_| panic!("a slot was free")).unwrap();
        let b = take(d.path(), 2, 1, |_| panic!("a slot was free")).unwrap();
        // Both taken: a third guest waits until one is dropped.
        let said = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                take(d.path(), 2, 1, |n| {
                    said.store(n, std::sync::atomic::Ordering::SeqCst)
                })
                .unwrap()
            });
            std::thread::sleep(Duration::from_millis(800));
            assert!(!waiter.is_finished(), "the third guest did not wait");
            drop(a);
            let c = waiter.join().unwrap();
            assert!(c.waited >= Duration::from_millis(500), "{:?}", c.waited);
        });
        assert_eq!(said.into_inner(), 1, "the wait was announced once");
        drop(b);
        // A guest wanting more processors than slots exist takes them all.
        let all = take(d.path(), 2, 4, |_| panic!("both were free")).unwrap();
        assert_eq!(all._files.len(), 2);
    }

    #[test]
    fn the_slot_count_comes_from_the_environment_or_the_cores() {
        // Only this test sets the variable.
        std::env::set_var("BIOVM_GUEST_SLOTS", "3");
        assert_eq!(count().unwrap(), 3);
        std::env::set_var("BIOVM_GUEST_SLOTS", "none");
        let e = count().unwrap_err().to_string();
        assert!(e.contains("BIOVM_GUEST_SLOTS=\"none\""), "{e}");
        std::env::remove_var("BIOVM_GUEST_SLOTS");
        assert_eq!(count().unwrap(), super::super::default_jobs());
    }
}
