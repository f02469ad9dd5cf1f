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

impl Held {
    /// Let a child process inherit the slots' locks (clear close-on-exec):
    /// a guest that outlives this process (`biovm run --detach`) holds
    /// its slots until it ends, as the lock belongs to the open file, which
    /// the child then shares.
    pub fn inherit(&self) -> Result<()> {
        for f in &self._files {
            // SAFETY: F_SETFD on a descriptor this value owns.
            if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .context("cannot pass a guest slot on to QEMU");
            }
        }
        Ok(())
    }
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
    // Every user's biovm shares the slots: anyone may add a slot file
    // (sticky, as /tmp). Only the folder's owner can set this; for anyone
    // else it is already set, or the files they need already exist.
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o1777));
    }
    let want = (cpus as usize).clamp(1, total);
    let t0 = Instant::now();
    let mut waiting = Some(waiting);
    loop {
        let mut got = Vec::with_capacity(want);
        for i in 0..total {
            let path = dir.join(format!("slot-{i}"));
            let f = open_slot(&path)?;
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

/// A slot's file, opened read-only when it exists (a lock needs no write
/// access, so a file another user made serves as well), else created.
fn open_slot(path: &Path) -> Result<File> {
    match File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path),
        other => other,
    }
    .with_context(|| format!("cannot open {}", path.display()))
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
        drop(all);
        // The folder is open to every user (sticky), and a slot file that
        // cannot be written still serves: the lock needs no write access.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o1777, "{mode:o}");
        let slot = d.path().join("slot-0");
        std::fs::set_permissions(&slot, std::fs::Permissions::from_mode(0o444)).unwrap();
        let f = open_slot(&slot).unwrap();
        // SAFETY: F_GETFL on a descriptor `f` owns.
        let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(
            flags & libc::O_ACCMODE,
            libc::O_RDONLY,
            "an existing slot opens read-only"
        );
        drop(f);
        take(d.path(), 1, 1, |_| panic!("the slot was free")).unwrap();
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
