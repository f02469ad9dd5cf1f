//! File helpers shared by every stage: outputs that appear under their final
//! name only when complete, the cache location, hashing.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// A file being written in its destination folder under a temporary name.
/// `commit` renames it into place; dropping it uncommitted removes it.
pub(crate) struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

/// The temporary name used for `dest` while it is written: hidden, and
/// ending in `.tmp`, so no half-written file ever carries a final name.
pub(crate) fn temp_name(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

impl AtomicFile {
    /// Create (truncate) the temporary file for `dest`.
    pub(crate) fn create(dest: &Path) -> Result<(AtomicFile, File)> {
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create folder {}", parent.display()))?;
        }
        let tmp = temp_name(dest);
        let f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok((
            AtomicFile {
                tmp,
                dest: dest.to_path_buf(),
                committed: false,
            },
            f,
        ))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.tmp
    }

    /// Flush to disk and rename to the final name.
    pub(crate) fn commit(mut self) -> Result<()> {
        File::open(&self.tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot sync {}", self.tmp.display()))?;
        fs::rename(&self.tmp, &self.dest).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.tmp.display(),
                self.dest.display()
            )
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Write `bytes` to `dest` atomically.
pub(crate) fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    let (a, mut f) = AtomicFile::create(dest)?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", a.path().display()))?;
    drop(f);
    a.commit()
}

/// A scratch folder owned by whoever made it: hidden and ending in `.tmp`
/// (so [`remove_stale_temps`] clears it after a crash), removed with
/// everything in it, never across a mount, when dropped, on every exit path.
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    /// A fresh `.<name>.<pid>.tmp` folder in `parent` (any leftover of the
    /// same name is removed first).
    pub(crate) fn new_in(parent: &Path, name: &str) -> Result<Scratch> {
        let p = temp_name(&parent.join(name));
        remove_tree(&p)?;
        fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
        Ok(Scratch(p))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// `self.path().join(name)`.
    pub(crate) fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }

    /// A fresh folder beside `dest` (its parent created if needed, so on
    /// the same filesystem) that becomes `dest` with [`Scratch::replace`].
    pub(crate) fn beside(dest: &Path) -> Result<Scratch> {
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        Scratch::new_in(parent, &name)
    }

    /// Give the finished folder the name `dest`, in place of whatever had
    /// it; it is then no longer removed.
    pub(crate) fn replace(self, dest: &Path) -> Result<()> {
        if fs::symlink_metadata(dest).is_ok() {
            remove_tree(dest)?;
        }
        fs::rename(&self.0, dest)
            .with_context(|| format!("cannot rename {} to {}", self.0.display(), dest.display()))?;
        std::mem::forget(self);
        Ok(())
    }
}

/// Scratch folders being removed in threads of their own, so that whoever
/// is done with one goes on while it goes (an unpacked BioLinux tree: 38
/// s); dropping this waits until every one is gone.
#[derive(Debug, Default)]
pub(crate) struct Removals(std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>);

impl Removals {
    /// Remove `s` in a thread of its own.
    pub(crate) fn remove(&self, s: Scratch) {
        let h = std::thread::spawn(move || {
            let (t0, what) = (std::time::Instant::now(), s.path().display().to_string());
            drop(s);
            log::info!("{what} removed in {:.1} s", t0.elapsed().as_secs_f64());
        });
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(h);
    }
}

impl Drop for Removals {
    fn drop(&mut self) {
        let handles = std::mem::take(self.0.get_mut().unwrap_or_else(|e| e.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.0) {
            log::warn!("cannot remove {}: {e:#}", self.0.display());
        }
    }
}

/// The process that owns a temporary name `.NAME.PID.tmp`, if it says.
fn temp_owner(name: &str) -> Option<u32> {
    name.strip_suffix(".tmp")?.rsplit('.').next()?.parse().ok()
}

/// Remove temporary files and work folders that interrupted earlier runs
/// left in `dir` (their process is gone); those of another biovm still
/// running (its PID alive) are left alone.
pub(crate) fn remove_stale_temps(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let running = temp_owner(&name).is_some_and(|pid| {
            pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
        });
        if name.starts_with('.') && name.ends_with(".tmp") && !running {
            log::info!("removing leftover {}", e.path().display());
            if let Err(err) = remove_tree(&e.path()) {
                log::warn!("{err:#}");
            }
        }
    }
}

/// Remove a file or a folder tree without ever crossing into another
/// filesystem: an interrupted bootstrap can leave /proc or /dev mounted
/// inside its tree, and those must not be emptied. Mount points are
/// unmounted (lazily) first; if that fails the tree is left and reported.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", path.display())),
    };
    if !meta.is_dir() {
        return fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()));
    }
    unmount_below(path);
    fn walk(dir: &Path, dev: u64) -> Result<()> {
        for e in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let e = e?;
            let p = e.path();
            let m = fs::symlink_metadata(&p)?;
            if m.is_dir() {
                if m.dev() != dev {
                    anyhow::bail!(
                        "{} is a mount point; not removing {}",
                        p.display(),
                        dir.display()
                    );
                }
                walk(&p, dev)?;
                fs::remove_dir(&p).with_context(|| format!("cannot remove {}", p.display()))?;
            } else {
                fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
            }
        }
        Ok(())
    }
    walk(path, meta.dev())?;
    fs::remove_dir(path).with_context(|| format!("cannot remove {}", path.display()))
}

/// Lazily unmount every mount at or below `dir`, deepest first.
fn unmount_below(dir: &Path) {
    let Ok(canon) = dir.canonicalize() else {
        return;
    };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(&canon))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        log::warn!("unmounting {} left by an interrupted build", p.display());
        // SAFETY: umount2 with a valid NUL-terminated path.
        if let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) {
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Python bytecode under `dir` that its interpreter would reject: cached
/// `__pycache__/NAME.TAG.pyc` files that record their source's time and
/// size (rather than a hash of it) and no longer agree with the source
/// beside them. Python compiles such a module again at every import (and
/// cannot save the result on a read-only or throw-away disk).
pub(crate) fn stale_bytecode(dir: &Path) -> Result<Vec<PathBuf>> {
    use std::os::unix::fs::MetadataExt;
    fn walk(p: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for e in fs::read_dir(p).with_context(|| format!("cannot read {}", p.display()))? {
            let e = e?;
            if !e.file_type()?.is_dir() {
                continue;
            }
            let path = e.path();
            if e.file_name() == "__pycache__" {
                check_cache(&path, out)?;
            } else {
                walk(&path, out)?;
            }
        }
        Ok(())
    }
    fn check_cache(cache: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let Some(pkg) = cache.parent() else {
            return Ok(());
        };
        for e in fs::read_dir(cache)? {
            let pyc = e?.path();
            let name = pyc.file_name().unwrap_or_default().to_string_lossy();
            let Some(module) = name.strip_suffix(".pyc").and_then(|n| n.split('.').next()) else {
                continue;
            };
            let Ok(src) = fs::metadata(pkg.join(format!("{module}.py"))) else {
                continue;
            };
            let mut header = [0u8; 16];
            let read = File::open(&pyc).and_then(|mut f| f.read_exact(&mut header));
            if read.is_err() {
                out.push(pyc);
                continue;
            }
            let word = |i: usize| {
                u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]])
            };
            // PEP 552: bit 0 of the flags marks hash-based bytecode.
            if word(4) & 1 == 1 {
                continue;
            }
            if word(8) != src.mtime() as u32 || word(12) != src.size() as u32 {
                out.push(pyc);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Fail, naming the count and three of the files, when the tree at `root`
/// holds stale bytecode ([`stale_bytecode`]) once its times are clamped.
pub(crate) fn require_fresh_bytecode(root: &Path) -> Result<()> {
    let stale = stale_bytecode(root)?;
    if stale.is_empty() {
        return Ok(());
    }
    let some: Vec<String> = stale
        .iter()
        .take(3)
        .map(|p| format!("/{}", p.strip_prefix(root).unwrap_or(p).display()))
        .collect();
    anyhow::bail!(
        "{} Python bytecode files no longer match their sources once the file times \
         are set to SOURCE_DATE_EPOCH, so every import would compile them again \
         (among them {}); whatever wrote them must run with SOURCE_DATE_EPOCH set",
        stale.len(),
        some.join(", ")
    )
}

/// Set every mtime in the tree that is later than `epoch` to `epoch`
/// (symlinks themselves, not their targets), and that of every folder, so
/// filesystems and archives made from the tree depend neither on when it
/// was built nor on the order packages were unpacked in (a folder shared by
/// several packages, such as /usr/share/man, otherwise keeps the time of
/// whichever came first, and that order follows the package index).
pub(crate) fn clamp_mtimes(dir: &Path, epoch: u64) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    fn walk(p: &Path, epoch: i64) -> Result<()> {
        let m = fs::symlink_metadata(p).with_context(|| format!("cannot stat {}", p.display()))?;
        if m.is_dir() {
            for e in fs::read_dir(p)? {
                walk(&e?.path(), epoch)?;
            }
        }
        if m.mtime() > epoch || m.is_dir() {
            let c = std::ffi::CString::new(p.as_os_str().as_bytes())?;
            let t = libc::timespec {
                tv_sec: epoch,
                tv_nsec: 0,
            };
            let times = [t, t];
            // SAFETY: valid path and two timespecs, as utimensat requires.
            let r = unsafe {
                libc::utimensat(
                    libc::AT_FDCWD,
                    c.as_ptr(),
                    times.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("cannot set the time of {}", p.display()));
            }
        }
        Ok(())
    }
    walk(dir, epoch as i64)
}

/// biovm's cache folder (package cache, stage outputs): `$BIOVM_CACHE_DIR`,
/// else `$XDG_CACHE_HOME/biovm`, else `~/.cache/biovm`. Never inside an
/// output folder, so builds into different folders share it.
pub(crate) fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BIOVM_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("biovm");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache").join("biovm")
}

/// Lowercase hex SHA-256 of a file's contents.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// `bytes` in lowercase hexadecimal, two digits a byte, as digests are
/// written everywhere biovm writes one.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The offset of the first byte where files `a` and `b` differ; when one
/// is a prefix of the other, the shorter one's length. `None` when they
/// are identical.
pub(crate) fn first_difference(a: &Path, b: &Path) -> Result<Option<u64>> {
    let open = |p: &Path| File::open(p).with_context(|| format!("cannot open {}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut pos = 0u64;
    loop {
        let na =
            read_full(&mut fa, &mut ba).with_context(|| format!("cannot read {}", a.display()))?;
        let nb =
            read_full(&mut fb, &mut bb).with_context(|| format!("cannot read {}", b.display()))?;
        let n = na.min(nb);
        if let Some(i) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            return Ok(Some(pos + i as u64));
        }
        if na != nb {
            return Ok(Some(pos + n as u64));
        }
        if na == 0 {
            return Ok(None);
        }
        pos += n as u64;
    }
}

/// Fill `buf` as far as the file allows; returns the bytes read.
fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Bytes actually allocated on disk for a (possibly sparse) file.
pub(crate) fn allocated_bytes(path: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
    Ok(m.blocks() * 512)
}

/// Put `src` (a file or a folder tree) at `dest` (a release or sources folder):
/// a hard link when both are on one filesystem, else a copy; files appear
/// under their final name only when complete.
pub(crate) fn place(src: &Path, dest: &Path) -> Result<()> {
    let meta =
        fs::symlink_metadata(src).with_context(|| format!("cannot read {}", src.display()))?;
    if meta.is_dir() {
        fs::create_dir_all(dest)
            .with_context(|| format!("cannot create folder {}", dest.display()))?;
        let mut entries: Vec<_> = fs::read_dir(src)?.collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            place(&e.path(), &dest.join(e.file_name()))?;
        }
        return Ok(());
    }
    if let (Ok(a), Ok(b)) = (fs::metadata(dest), fs::metadata(src)) {
        use std::os::unix::fs::MetadataExt;
        if a.dev() == b.dev() && a.ino() == b.ino() {
            return Ok(()); // already this file (a re-run)
        }
    }
    let tmp = temp_name(dest);
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(src, &tmp).is_err() {
        fs::copy(src, &tmp)
            .with_context(|| format!("cannot copy {} to {}", src.display(), tmp.display()))?;
    }
    fs::rename(&tmp, dest)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), dest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_file_appears_only_on_commit() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("disk.raw");
        let (a, mut f) = AtomicFile::create(&dest).unwrap();
        f.write_all(b"half").unwrap();
        assert!(!dest.exists());
        assert!(a
            .path()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with(".tmp"));
        a.commit().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"half");
    }

    #[test]
    fn a_scratch_folder_goes_with_its_owner() {
        let d = tempfile::tempdir().unwrap();
        let kept;
        {
            let s = Scratch::new_in(d.path(), "boot").unwrap();
            fs::create_dir(s.join("sub")).unwrap();
            fs::write(s.join("sub/f"), b"x").unwrap();
            kept = s.path().to_path_buf();
            let name = kept.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                name.starts_with(".boot.") && name.ends_with(".tmp"),
                "{name}"
            );
        }
        assert!(!kept.exists());
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn scratch_folders_removed_aside_are_gone_when_their_removals_end() {
        let d = tempfile::tempdir().unwrap();
        let removals = Removals::default();
        for name in ["a", "b"] {
            let s = Scratch::new_in(d.path(), name).unwrap();
            for i in 0..200 {
                fs::write(s.join(format!("f{i}")), b"x").unwrap();
            }
            removals.remove(s);
        }
        drop(removals);
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn dropped_atomic_file_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("disk.raw");
        {
            let (_a, mut f) = AtomicFile::create(&dest).unwrap();
            f.write_all(b"half").unwrap();
        }
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn stale_temps_are_removed_and_others_kept() {
        let d = tempfile::tempdir().unwrap();
        // PIDs never exceed 2^22 on Linux: these owners cannot be running.
        fs::write(d.path().join(".disk.raw.4294967295.tmp"), b"x").unwrap();
        fs::create_dir(d.path().join(".x.work.4294967294.tmp")).unwrap();
        fs::write(d.path().join(".old-style.tmp"), b"x").unwrap();
        fs::write(d.path().join("keep.raw"), b"x").unwrap();
        // A running build's (PID 1 is always running).
        fs::create_dir(d.path().join(".y.work.1.tmp")).unwrap();
        remove_stale_temps(d.path());
        let mut left: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [".y.work.1.tmp", "keep.raw"]);
    }

    #[test]
    fn remove_tree_removes_nested_folders_and_files() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join(".w.tmp");
        fs::create_dir_all(t.join("a/b")).unwrap();
        fs::write(t.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", t.join("a/link")).unwrap();
        remove_tree(&t).unwrap();
        assert!(!t.exists());
        assert!(Path::new("/etc").exists(), "symlinks are not followed");
    }

    /// Timestamp bytecode goes stale when the clamp lowers its source's
    /// time; hash-checked bytecode (what SOURCE_DATE_EPOCH selects) does not.
    #[test]
    fn clamping_makes_timestamp_bytecode_stale_but_not_hashed() {
        let d = tempfile::tempdir().unwrap();
        for (sub, epoch_env) in [("stamped", false), ("hashed", true)] {
            let pkg = d.path().join(sub);
            fs::create_dir_all(&pkg).unwrap();
            fs::write(pkg.join("mod.py"), "X = 1\n").unwrap();
            let mut c = crate::cmd::Cmd::new("python3");
            c.args(["-m", "py_compile"]).arg(pkg.join("mod.py"));
            if epoch_env {
                c.env("SOURCE_DATE_EPOCH", "1000000");
            } else {
                c.env_remove("SOURCE_DATE_EPOCH");
            }
            c.run().unwrap();
        }
        assert_eq!(stale_bytecode(d.path()).unwrap(), Vec::<PathBuf>::new());
        require_fresh_bytecode(d.path()).unwrap();
        clamp_mtimes(d.path(), 1_000_000).unwrap();
        let stale = stale_bytecode(d.path()).unwrap();
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert!(stale[0].starts_with(d.path().join("stamped/__pycache__")));
        // What the build says: the count and the file, from the tree's root.
        let e = require_fresh_bytecode(d.path()).unwrap_err().to_string();
        assert!(
            e.starts_with("1 Python bytecode files no longer match")
                && e.contains("(among them /stamped/__pycache__/mod."),
            "{e}"
        );
    }

    #[test]
    fn clamp_mtimes_lowers_files_and_sets_folders() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("sub")).unwrap();
        fs::write(d.path().join("sub/new"), b"x").unwrap();
        std::os::unix::fs::symlink("/nonexistent", d.path().join("link")).unwrap();
        clamp_mtimes(d.path(), 1_000_000).unwrap();
        for p in ["sub", "sub/new", "link"] {
            assert_eq!(
                fs::symlink_metadata(d.path().join(p)).unwrap().mtime(),
                1_000_000,
                "{p}"
            );
        }
        clamp_mtimes(d.path(), 2_000_000_000).unwrap();
        assert_eq!(
            fs::metadata(d.path().join("sub/new")).unwrap().mtime(),
            1_000_000,
            "a file's older time stays"
        );
        assert_eq!(
            fs::metadata(d.path().join("sub")).unwrap().mtime(),
            2_000_000_000,
            "a folder takes the epoch, whatever its time was"
        );
    }

    #[test]
    fn first_difference_finds_the_offset() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let mut v = vec![7u8; (1 << 20) + 5000];
        fs::write(&a, &v).unwrap();
        fs::write(&b, &v).unwrap();
        assert_eq!(first_difference(&a, &b).unwrap(), None);
        v[(1 << 20) + 17] = 8;
        fs::write(&b, &v).unwrap();
        assert_eq!(first_difference(&a, &b).unwrap(), Some((1 << 20) + 17));
        v.truncate(100);
        fs::write(&b, &v).unwrap();
        assert_eq!(first_difference(&a, &b).unwrap(), Some(100), "shorter file");
        assert_eq!(first_difference(&b, &a).unwrap(), Some(100));
    }

    #[test]
    fn sha256_of_known_content() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
