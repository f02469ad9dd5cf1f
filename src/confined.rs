//! Writes (and reads) confined by the kernel to one folder tree.
//!
//! biovm runs as root and writes into an image's root filesystem paths
//! that come from untrusted recipes and images, into a tree where packages,
//! archives and earlier steps may have planted symlinks. A [`Tree`] holds a
//! file descriptor of the tree's top folder and resolves every path with
//! `openat2(2)` and `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`: the kernel
//! treats the top folder as `/` for that lookup, so `..` stops at it and an
//! absolute symlink (`/etc/motd -> /tmp/marker`) resolves inside the tree,
//! as it would for a program chrooted there. The last component of a path
//! written is never followed: files and links are created under a temporary
//! name with `O_EXCL | O_NOFOLLOW` and renamed over the old name, which
//! replaces a symlink rather than writing through it. Folders are made one
//! component at a time with `mkdirat` relative to the resolved parent.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

/// `struct open_how` of `openat2(2)` (libc's is `non_exhaustive`).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// How every path of a [`Tree`] is resolved: the tree's top is `/`, and
/// `/proc`-style magic links (which could name any file) are refused.
const RESOLVE: u64 = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;

/// A folder tree every path of which is resolved inside it.
#[derive(Debug)]
pub struct Tree {
    fd: OwnedFd,
    /// For messages only: where the tree was opened.
    path: PathBuf,
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `openat2(dirfd, path, flags, mode)` resolving inside `dirfd`.
fn openat2(dirfd: RawFd, path: &Path, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: u64::from(mode),
        resolve: RESOLVE,
    };
    loop {
        // SAFETY: a valid NUL-terminated path and an open_how of the size passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if r >= 0 {
            // SAFETY: openat2 returned a new descriptor that we now own.
            return Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
        }
        let e = io::Error::last_os_error();
        // EAGAIN: a rename elsewhere raced the lookup; the kernel asks to retry.
        if e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(e);
        }
    }
}

/// Open the file `rel` below the folder `dir` for reading, refusing any
/// resolution that leaves `dir` (`RESOLVE_BENEATH`: no `..` above it, no
/// absolute symlink, no magic link) rather than clamping it.
pub fn open_beneath(dir: &Path, rel: &Path) -> io::Result<File> {
    let top = File::open(dir)?;
    let c = cstr(rel)?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: a valid NUL-terminated path and an open_how of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            top.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new descriptor that we now own.
    Ok(unsafe { File::from_raw_fd(r as RawFd) })
}

/// `path` as plain components inside a tree: a leading `/` and `.` are
/// dropped; `..` is refused (the kernel would stop it at the top anyway,
/// but a path that tries is a mistake worth naming).
pub fn inner_components(path: &Path) -> Result<Vec<&OsStr>> {
    let mut v = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => v.push(n),
            Component::ParentDir => bail!("path {} climbs out with `..`", path.display()),
            Component::Prefix(_) => bail!("path {} is not a Unix path", path.display()),
        }
    }
    Ok(v)
}

/// A temporary name beside `name`, hidden and ending in `.tmp`.
fn temp_name(name: &OsStr) -> OsString {
    let mut s = OsString::from(".");
    s.push(name);
    s.push(format!(".biovm.{}.tmp", std::process::id()));
    s
}

impl Tree {
    /// Open the folder `path` (which must exist) as a tree.
    pub fn open(path: &Path) -> Result<Tree> {
        let c = cstr(path)?;
        // SAFETY: a valid NUL-terminated path.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        check(fd).with_context(|| format!("cannot open folder {}", path.display()))?;
        Ok(Tree {
            // SAFETY: open returned a new descriptor that we now own.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: path.to_path_buf(),
        })
    }

    /// How `rel` reads in messages: from the tree's top, e.g. `/etc/motd`.
    pub fn show(&self, rel: &Path) -> String {
        format!("/{}", rel.to_string_lossy().trim_start_matches('/'))
    }

    /// Open `rel` inside the tree (`flags` as for open(2)).
    fn open_at(&self, rel: &Path, flags: i32, mode: u32) -> io::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        openat2(self.fd.as_raw_fd(), rel, flags, mode)
    }

    /// The folder `rel`, made (with `mode`, one component at a time) if
    /// missing, as an `O_PATH` descriptor.
    fn dir(&self, rel: &Path, mode: u32) -> Result<OwnedFd> {
        let parts = inner_components(rel)?;
        let mut parent = self.open_at(Path::new("."), libc::O_PATH | libc::O_DIRECTORY, 0)?;
        let mut prefix = PathBuf::new();
        for name in parts {
            prefix.push(name);
            let flags = libc::O_PATH | libc::O_DIRECTORY;
            parent = match self.open_at(&prefix, flags, 0) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let c = cstr(Path::new(name))?;
                    // SAFETY: a valid directory descriptor and a one-component name.
                    let r = unsafe { libc::mkdirat(parent.as_raw_fd(), c.as_ptr(), mode) };
                    match check(r) {
                        Ok(_) => {}
                        // Made meanwhile, or a dangling symlink: look again.
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(e) => {
                            return Err(e).with_context(|| {
                                format!(
                                    "cannot create folder {} in {}",
                                    self.show(&prefix),
                                    self.path.display()
                                )
                            })
                        }
                    }
                    self.open_at(&prefix, flags, 0).with_context(|| {
                        format!(
                            "cannot open folder {} in {}",
                            self.show(&prefix),
                            self.path.display()
                        )
                    })?
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "cannot open folder {} in {}",
                            self.show(&prefix),
                            self.path.display()
                        )
                    })
                }
            };
        }
        Ok(parent)
    }

    /// Make the folder `rel` and every missing folder above it (mode 0755).
    pub fn create_dir_all(&self, rel: &Path) -> Result<()> {
        self.dir(rel, 0o755).map(drop)
    }

    /// The folder `rel` (made if missing) as a tree of its own: paths in it
    /// cannot leave it either.
    pub fn subtree(&self, rel: &Path) -> Result<Tree> {
        let fd = self.dir(rel, 0o755)?;
        Ok(Tree {
            fd,
            path: self.path.join(rel.strip_prefix("/").unwrap_or(rel)),
        })
    }

    /// The folder holding `rel` (made if missing) and `rel`'s last component.
    fn parent_of<'p>(&self, rel: &'p Path) -> Result<(OwnedFd, &'p OsStr)> {
        let mut parts = inner_components(rel)?;
        let Some(name) = parts.pop() else {
            bail!(
                "{} names the top of the tree, not a file in it",
                rel.display()
            );
        };
        let parent: PathBuf = parts.iter().collect();
        Ok((self.dir(&parent, 0o755)?, name))
    }

    /// Write `rel` with the bytes of `content` and `mode`, replacing what
    /// was there (a symlink is replaced, never written through).
    pub fn write(&self, rel: &Path, content: &[u8], mode: u32) -> Result<()> {
        self.write_from(rel, &mut &content[..], mode)
    }

    /// Like [`Tree::write`], streaming the content from `r`.
    pub fn write_from(&self, rel: &Path, r: &mut dyn Read, mode: u32) -> Result<()> {
        let what = || format!("cannot write {} in {}", self.show(rel), self.path.display());
        let (dir, name) = self.parent_of(rel).with_context(what)?;
        let tmp = temp_name(name);
        let ctmp = cstr(Path::new(&tmp))?;
        // A leftover of a killed run would block O_EXCL.
        // SAFETY: valid descriptor and name; unlinkat never follows links.
        unsafe { libc::unlinkat(dir.as_raw_fd(), ctmp.as_ptr(), 0) };
        // SAFETY: valid descriptor and name.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                ctmp.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600,
            )
        };
        check(fd).with_context(what)?;
        // SAFETY: a new descriptor we now own.
        let mut f = unsafe { File::from_raw_fd(fd) };
        let done = io::copy(r, &mut f)
            .and_then(|_| f.flush())
            .and_then(|_| check(unsafe { libc::fchmod(f.as_raw_fd(), mode) }).map(drop))
            .and_then(|_| rename_at(&dir, &tmp, name));
        if let Err(e) = done {
            // SAFETY: as above.
            unsafe { libc::unlinkat(dir.as_raw_fd(), ctmp.as_ptr(), 0) };
            return Err(e).with_context(what);
        }
        Ok(())
    }

    /// Make `rel` a symlink to `target`, replacing a file or link there.
    pub fn symlink(&self, target: &Path, rel: &Path) -> Result<()> {
        let what = || {
            format!(
                "cannot make {} a link to {} in {}",
                self.show(rel),
                target.display(),
                self.path.display()
            )
        };
        let (dir, name) = self.parent_of(rel).with_context(what)?;
        let tmp = temp_name(name);
        let (ct, ctmp) = (cstr(target)?, cstr(Path::new(&tmp))?);
        // SAFETY: valid descriptor and names.
        unsafe { libc::unlinkat(dir.as_raw_fd(), ctmp.as_ptr(), 0) };
        // SAFETY: valid descriptor and names.
        check(unsafe { libc::symlinkat(ct.as_ptr(), dir.as_raw_fd(), ctmp.as_ptr()) })
            .with_context(what)?;
        rename_at(&dir, &tmp, name).with_context(what)
    }

    /// Make `rel` a hard link to the file `existing` (both inside the tree;
    /// neither's last component is followed).
    pub fn hard_link(&self, existing: &Path, rel: &Path) -> Result<()> {
        let what = || {
            format!(
                "cannot link {} to {} in {}",
                self.show(rel),
                self.show(existing),
                self.path.display()
            )
        };
        let (sdir, sname) = self.parent_of(existing).with_context(what)?;
        let (dir, name) = self.parent_of(rel).with_context(what)?;
        let tmp = temp_name(name);
        let (cs, ctmp) = (cstr(Path::new(sname))?, cstr(Path::new(&tmp))?);
        // SAFETY: valid descriptors and names; flags 0: the source is not followed.
        unsafe { libc::unlinkat(dir.as_raw_fd(), ctmp.as_ptr(), 0) };
        check(unsafe {
            libc::linkat(
                sdir.as_raw_fd(),
                cs.as_ptr(),
                dir.as_raw_fd(),
                ctmp.as_ptr(),
                0,
            )
        })
        .with_context(what)?;
        rename_at(&dir, &tmp, name).with_context(what)
    }

    /// Remove the file or link `rel` (never what a link points to); false
    /// when there was none.
    pub fn remove_file(&self, rel: &Path) -> Result<bool> {
        let (dir, name) = match self.existing_parent(rel)? {
            Some(x) => x,
            None => return Ok(false),
        };
        let c = cstr(Path::new(name))?;
        // SAFETY: valid descriptor and name.
        match check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) }) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "cannot remove {} in {}",
                    self.show(rel),
                    self.path.display()
                )
            }),
        }
    }

    /// Remove the empty folder `rel` (a link there is an error, never followed).
    pub fn remove_dir(&self, rel: &Path) -> Result<()> {
        let what = || {
            format!(
                "cannot remove folder {} in {}",
                self.show(rel),
                self.path.display()
            )
        };
        let Some((dir, name)) = self.existing_parent(rel).with_context(what)? else {
            return Ok(());
        };
        let c = cstr(Path::new(name))?;
        // SAFETY: valid descriptor and name.
        check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) })
            .with_context(what)?;
        Ok(())
    }

    /// The folder holding `rel` if it exists (nothing is made), and the name.
    fn existing_parent<'p>(&self, rel: &'p Path) -> Result<Option<(OwnedFd, &'p OsStr)>> {
        let mut parts = inner_components(rel)?;
        let Some(name) = parts.pop() else {
            bail!(
                "{} names the top of the tree, not a file in it",
                rel.display()
            );
        };
        let parent: PathBuf = parts.iter().collect();
        match self.open_at(&parent, libc::O_PATH | libc::O_DIRECTORY, 0) {
            Ok(fd) => Ok(Some((fd, name))),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                Ok(None)
            }
            Err(e) => Err(e).with_context(|| {
                format!(
                    "cannot open folder {} in {}",
                    self.show(&parent),
                    self.path.display()
                )
            }),
        }
    }

    /// Open the file `rel` for reading, following links inside the tree.
    pub fn open_file(&self, rel: &Path) -> io::Result<File> {
        inner_components(rel).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let fd = self.open_at(rel, libc::O_RDONLY, 0)?;
        Ok(File::from(fd))
    }

    /// The whole content of the file `rel`.
    pub fn read(&self, rel: &Path) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.open_file(rel)
            .and_then(|mut f| f.read_to_end(&mut v))
            .with_context(|| {
                format!("cannot read {} in {}", self.show(rel), self.path.display())
            })?;
        Ok(v)
    }

    /// Whether `rel` exists (following links inside the tree) and is a file.
    pub fn is_file(&self, rel: &Path) -> bool {
        self.open_at(rel, libc::O_PATH, 0)
            .ok()
            .map(File::from)
            .and_then(|f| f.metadata().ok())
            .is_some_and(|m| m.is_file())
    }

    /// Set the mode of the file or folder `rel` (not of a link's target:
    /// a link there is an error).
    pub fn set_mode(&self, rel: &Path, mode: u32) -> Result<()> {
        // SAFETY: a valid descriptor.
        self.on_node(rel, "mode", |fd| unsafe { libc::fchmod(fd, mode) })
    }

    /// Give the file or folder `rel` (not a link's target: a link there is
    /// an error) to the user `uid` and group `gid`.
    pub fn set_owner(&self, rel: &Path, uid: u32, gid: u32) -> Result<()> {
        // SAFETY: a valid descriptor.
        self.on_node(rel, "owner", |fd| unsafe { libc::fchown(fd, uid, gid) })
    }

    /// Run `f` on a descriptor of the file or folder `rel` itself (opened
    /// without following a link there); `what` names what `f` sets.
    fn on_node(
        &self,
        rel: &Path,
        what: &str,
        f: impl FnOnce(std::os::fd::RawFd) -> libc::c_int,
    ) -> Result<()> {
        let what = || {
            format!(
                "cannot set the {what} of {} in {}",
                self.show(rel),
                self.path.display()
            )
        };
        inner_components(rel).with_context(what)?;
        let fd = self
            .open_at(rel, libc::O_RDONLY | libc::O_NOFOLLOW, 0)
            .with_context(what)?;
        check(f(fd.as_raw_fd())).with_context(what)?;
        Ok(())
    }

    /// The names in the folder `rel` with their types (links not followed),
    /// sorted; empty when the folder does not exist.
    pub fn read_dir(&self, rel: &Path) -> Result<Vec<(OsString, std::fs::FileType)>> {
        let what = || {
            format!(
                "cannot read folder {} in {}",
                self.show(rel),
                self.path.display()
            )
        };
        let fd = match self.open_at(rel, libc::O_RDONLY | libc::O_DIRECTORY, 0) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(what),
        };
        // The descriptor's own entry in /proc names exactly this folder,
        // wherever it is; read_dir's entries are not followed.
        let proc = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let mut v = Vec::new();
        for e in std::fs::read_dir(&proc).with_context(what)? {
            let e = e.with_context(what)?;
            v.push((e.file_name(), e.file_type().with_context(what)?));
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }

    /// Empty every regular file in the folder `rel` and the folders below
    /// it (links are neither followed nor changed).
    pub fn truncate_files_below(&self, rel: &Path) -> Result<()> {
        for (name, t) in self.read_dir(rel)? {
            let p = rel.join(&name);
            if t.is_dir() {
                self.truncate_files_below(&p)?;
            } else if t.is_file() {
                let fd = self
                    .open_at(&p, libc::O_WRONLY | libc::O_TRUNC | libc::O_NOFOLLOW, 0)
                    .with_context(|| {
                        format!("cannot empty {} in {}", self.show(&p), self.path.display())
                    })?;
                drop(fd);
            }
        }
        Ok(())
    }

    /// Copy the host file `from` to `rel` in the tree with `mode`.
    pub fn copy_in(&self, from: &Path, rel: &Path, mode: u32) -> Result<()> {
        let mut f = File::open(from).with_context(|| format!("cannot open {}", from.display()))?;
        self.write_from(rel, &mut f, mode)
    }
}

/// `renameat(dir/from, dir/to)`: replaces `to` (a link is replaced, not followed).
fn rename_at(dir: &OwnedFd, from: &OsStr, to: &OsStr) -> io::Result<()> {
    let (a, b) = (cstr(Path::new(from))?, cstr(Path::new(to))?);
    // SAFETY: valid descriptor and names.
    check(unsafe { libc::renameat(dir.as_raw_fd(), a.as_ptr(), dir.as_raw_fd(), b.as_ptr()) })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// A tree with the two kinds of planted link, each aimed at a marker
    /// outside it: `etc/motd -> <outside>/marker` (absolute) and
    /// `etc/up -> ../../outside` (climbing).
    fn planted() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        symlink(outside.join("marker"), root.join("etc/motd")).unwrap();
        symlink("../../outside", root.join("etc/up")).unwrap();
        symlink(&outside, root.join("opt")).unwrap();
        (d, root, outside)
    }

    fn empty(dir: &Path) -> bool {
        fs::read_dir(dir).unwrap().next().is_none()
    }

    #[test]
    fn a_planted_link_is_replaced_not_written_through() {
        let (_d, root, outside) = planted();
        let t = Tree::open(&root).unwrap();
        t.write(Path::new("/etc/motd"), b"hello\n", 0o644).unwrap();
        assert!(empty(&outside), "a write left the tree");
        let m = fs::symlink_metadata(root.join("etc/motd")).unwrap();
        assert!(m.is_file());
        assert_eq!(m.permissions().mode() & 0o7777, 0o644);
        assert_eq!(fs::read(root.join("etc/motd")).unwrap(), b"hello\n");
    }

    #[test]
    fn links_in_folders_resolve_inside_the_tree() {
        let (_d, root, outside) = planted();
        let t = Tree::open(&root).unwrap();
        // `opt` is an absolute link to the outside folder: inside the tree
        // it means <root>/<outside path>, which does not exist: an error,
        // not a write outside.
        let e = t
            .write(Path::new("opt/tool/bin/x"), b"x", 0o755)
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("cannot write /opt/tool/bin/x"),
            "{e:#}"
        );
        assert!(empty(&outside), "a write left the tree");
        // Once it exists inside the tree, that is where the write goes.
        let inside = root.join(outside.strip_prefix("/").unwrap());
        fs::create_dir_all(&inside).unwrap();
        t.write(Path::new("opt/tool/bin/x"), b"x", 0o755).unwrap();
        // `etc/up` climbs twice: it stops at the top of the tree.
        fs::create_dir(root.join("outside")).unwrap();
        t.write(Path::new("etc/up/y"), b"y", 0o644).unwrap();
        assert!(empty(&outside), "a write left the tree");
        assert_eq!(fs::read(inside.join("tool/bin/x")).unwrap(), b"x");
        assert_eq!(fs::read(root.join("outside/y")).unwrap(), b"y");
        // A link planted to the outside and then named as a folder of a
        // subtree cannot lead out of the subtree either.
        let sub = t.subtree(Path::new("srv/data")).unwrap();
        symlink("/", root.join("srv/data/escape")).unwrap();
        sub.write(Path::new("escape/z"), b"z", 0o644).unwrap();
        assert_eq!(fs::read(root.join("srv/data/z")).unwrap(), b"z");
    }

    #[test]
    fn dot_dot_is_refused_and_reads_stay_inside() {
        let (_d, root, outside) = planted();
        fs::write(outside.join("secret"), b"host").unwrap();
        let t = Tree::open(&root).unwrap();
        let e = t
            .write(Path::new("/etc/../../outside/secret"), b"x", 0o644)
            .unwrap_err();
        assert!(format!("{e:#}").contains("climbs out with `..`"), "{e:#}");
        assert_eq!(fs::read(outside.join("secret")).unwrap(), b"host");
        // A read through a planted link finds nothing outside.
        symlink(outside.join("secret"), root.join("etc/shadow")).unwrap();
        assert!(t.read(Path::new("etc/shadow")).is_err());
        assert!(!t.is_file(Path::new("etc/shadow")));
        // Magic links are refused outright.
        symlink("/proc/self/root/etc/passwd", root.join("etc/magic")).unwrap();
        assert!(t.read(Path::new("etc/magic")).is_err());
    }

    #[test]
    fn symlinks_hard_links_modes_and_removal() {
        let (_d, root, outside) = planted();
        let t = Tree::open(&root).unwrap();
        t.symlink(Path::new("/usr/share/zoneinfo/UTC"), Path::new("etc/motd"))
            .unwrap();
        assert_eq!(
            fs::read_link(root.join("etc/motd")).unwrap(),
            Path::new("/usr/share/zoneinfo/UTC")
        );
        t.write(Path::new("a/f"), b"1", 0o600).unwrap();
        t.hard_link(Path::new("a/f"), Path::new("a/g")).unwrap();
        assert_eq!(fs::read(root.join("a/g")).unwrap(), b"1");
        t.set_mode(Path::new("a"), 0o700).unwrap();
        assert_eq!(
            fs::metadata(root.join("a")).unwrap().permissions().mode() & 0o7777,
            0o700
        );
        // set_mode does not follow a link to the host.
        assert!(t.set_mode(Path::new("etc/up"), 0o777).is_err());
        assert!(
            t.remove_dir(Path::new("etc/up")).is_err(),
            "a link is not a folder"
        );
        assert!(t.remove_file(Path::new("etc/up")).unwrap());
        t.create_dir_all(Path::new("b/c")).unwrap();
        t.remove_dir(Path::new("b/c")).unwrap();
        assert!(!root.join("b/c").exists() && root.join("b").is_dir());
        assert!(!t.remove_file(Path::new("etc/up")).unwrap());
        assert!(!t.remove_file(Path::new("no/such/file")).unwrap());
        assert!(outside.exists());
        let names: Vec<String> = t
            .read_dir(Path::new("a"))
            .unwrap()
            .into_iter()
            .map(|(n, _)| n.to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["f", "g"]);
    }

    #[test]
    fn truncation_does_not_follow_links() {
        let (_d, root, outside) = planted();
        fs::write(outside.join("host.log"), b"keep").unwrap();
        fs::create_dir_all(root.join("var/log/apt")).unwrap();
        fs::write(root.join("var/log/apt/history.log"), b"build").unwrap();
        symlink(outside.join("host.log"), root.join("var/log/link.log")).unwrap();
        symlink(&outside, root.join("var/log/dir")).unwrap();
        let t = Tree::open(&root).unwrap();
        t.truncate_files_below(Path::new("var/log")).unwrap();
        assert_eq!(fs::read(root.join("var/log/apt/history.log")).unwrap(), b"");
        assert_eq!(fs::read(outside.join("host.log")).unwrap(), b"keep");
    }
}
