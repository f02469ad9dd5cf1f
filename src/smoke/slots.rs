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
//!
//! A test guest may start with fewer processors than it asked for
//! ([`Fewer`]): it keeps the slots it got while it waits for the rest, and
//! after a grace period starts with those, so neither a run of one-slot
//! guests nor two guests holding one slot each keep it waiting for ever.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Slots held for one guest; dropped, they are free again.
#[derive(Debug)]
pub struct Held {
    files: Vec<File>,
    /// How long the guest waited for them.
    pub waited: Duration,
}

impl Held {
    /// How many slots are held: the guest's processors.
    pub fn count(&self) -> u32 {
        self.files.len() as u32
    }

    /// Let a child process inherit the slots' locks (clear close-on-exec):
    /// a guest that outlives this process (`biovm run --detach`) holds
    /// its slots until it ends, as the lock belongs to the open file, which
    /// the child then shares.
    pub fn inherit(&self) -> Result<()> {
        for f in &self.files {
            // SAFETY: F_SETFD on a descriptor this value owns.
            if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .context("cannot pass a guest slot on to QEMU");
            }
        }
        Ok(())
    }
}

/// Whether a guest may start with fewer slots than it wants.
#[derive(Debug, Clone, Copy)]
pub enum Fewer {
    /// Never: a guest whose processors the user chose (`biovm run`) waits
    /// for all of them, holding none meanwhile, so two such guests never
    /// hold one slot each and wait for ever.
    Never,
    /// After this long: a test guest keeps the slots it got and waits this
    /// long for the rest, then starts with those it holds (at least one).
    After(Duration),
}

/// How long a test guest waits for all the processors it asked for before
/// it starts with fewer: a boot with two processors beside nothing took 76
/// s where one with one took 129 s (BioLinux, 2 cores, TCG), but when the
/// other slot is another process's guest, it is free only when that boot
/// ends, a minute or more later.
pub const TEST_GRACE: Duration = Duration::from_secs(10);

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
/// hold them (with fewer, as `fewer` allows); `waiting` is called once,
/// when the first try finds too few free. A guest wanting more slots than
/// exist takes them all.
pub fn take(
    dir: &Path,
    total: usize,
    cpus: u32,
    fewer: Fewer,
    waiting: impl FnOnce(usize),
) -> Result<Held> {
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
    // Slot numbers held, with their locked files.
    let mut got: Vec<(usize, File)> = Vec::with_capacity(want);
    loop {
        for i in 0..total {
            if got.len() == want {
                break;
            }
            if got.iter().any(|(n, _)| *n == i) {
                continue;
            }
            let path = dir.join(format!("slot-{i}"));
            let f = open_slot(&path)?;
            // SAFETY: flock on a file descriptor this function owns.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                got.push((i, f));
            } else {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                    return Err(e).with_context(|| format!("cannot lock {}", path.display()));
                }
            }
        }
        let enough = match fewer {
            _ if got.len() == want => true,
            Fewer::After(grace) => !got.is_empty() && t0.elapsed() >= grace,
            Fewer::Never => false,
        };
        if enough {
            return Ok(Held {
                files: got.into_iter().map(|(_, f)| f).collect(),
                waited: t0.elapsed(),
            });
        }
        if matches!(fewer, Fewer::Never) {
            // Too few free: give back what this try took, so two guests
            // wanting two slots each never hold one each and wait forever.
            got.clear();
        }
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
        let a = take(d.path(), 2, 1, Fewer::Never, |_| panic!("a slot was free")).unwrap();
        let b = take(d.path(), 2, 1, Fewer::Never, |_| panic!("a slot was free")).unwrap();
        // Both taken: a third guest waits until one is dropped.
        let said = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                take(d.path(), 2, 1, Fewer::Never, |n| {
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
        let all = take(d.path(), 2, 4, Fewer::Never, |_| panic!("both were free")).unwrap();
        assert_eq!(all.count() as usize, 2);
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
        take(d.path(), 1, 1, Fewer::Never, |_| {
            panic!("the slot was free")
        })
        .unwrap();
    }

    #[test]
    fn a_test_guest_keeps_what_it_got_and_starts_with_fewer_after_the_grace() {
        let d = tempfile::tempdir().unwrap();
        let grace = Duration::from_millis(700);
        // One slot held elsewhere: a guest wanting both waits for the
        // other, and gets both when it is freed within the grace.
        let other = take(d.path(), 2, 1, Fewer::Never, |_| panic!("free")).unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| take(d.path(), 2, 2, Fewer::After(grace), |_| ()).unwrap());
            std::thread::sleep(Duration::from_millis(300));
            drop(other);
            let both = waiter.join().unwrap();
            assert_eq!(both.count(), 2);
            assert!(both.waited < grace, "{:?}", both.waited);
        });
        // One held elsewhere for longer than the grace: the guest starts
        // with the one it got, once the grace is over.
        let other = take(d.path(), 2, 1, Fewer::Never, |_| panic!("free")).unwrap();
        let one = take(d.path(), 2, 2, Fewer::After(grace), |_| ()).unwrap();
        assert_eq!(one.count(), 1);
        assert!(one.waited >= grace, "{:?}", one.waited);
        // Meanwhile it held its slot: a third guest finds none free.
        let said = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let third = s.spawn(|| {
                take(d.path(), 2, 1, Fewer::After(grace), |_| {
                    said.store(true, std::sync::atomic::Ordering::SeqCst)
                })
                .unwrap()
            });
            // None free: past the grace it still waits (it has no slot).
            std::thread::sleep(grace + Duration::from_millis(300));
            assert!(!third.is_finished(), "a guest started with no slot");
            drop(one);
            assert_eq!(third.join().unwrap().count(), 1);
        });
        assert!(said.into_inner());
        drop(other);
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
