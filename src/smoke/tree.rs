//! The digest of a root filesystem tree, the same whether it is read from
//! a folder (the build's staging tree, a tree the native checks run in) or
//! straight out of a disk artifact's ext4 root partition (no mount, no loop
//! device). The build records the staging tree's digest in the manifest,
//! and reads the raw disk it wrote back through the kernel to check that
//! the disk holds that tree; the test recomputes the digest from every
//! disk it boots and from the tree the native checks run in (except a raw
//! disk with the very bytes its build read back: its SHA-256 stands for
//! that reading), so a check that passed natively stands for the disk:
//! they are one tree. The comparison is the host-judged check
//! `system/same-tree` ([`same_tree_result`]), in every VM boot's report and
//! the native run's.
//!
//! What counts: every path (in a depth-first walk, children sorted by name
//! bytes), its type, permission bits (with setuid, setgid, sticky), owner
//! and group, a regular file's size and SHA-256, a symbolic link's target.
//! Times do not count (the build clamps them), nor `lost+found` at the
//! root, which `mkfs.ext4` adds.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::boot_disk::disk_to_boot;
use super::checks::{judged_on_host, system_check};
use super::qemu::DiskFormat;
use super::report::CheckResult;
use crate::config::Format;

/// Paths at the root the digest leaves out.
const SKIP_AT_ROOT: &[&[u8]] = &[b"lost+found"];

/// The kinds of file the digest tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
    /// Device node, FIFO or socket: only its metadata counts.
    Special,
}

impl Kind {
    fn tag(self) -> u8 {
        match self {
            Kind::Dir => b'd',
            Kind::File => b'f',
            Kind::Symlink => b'l',
            Kind::Special => b's',
        }
    }
}

/// A running tree digest.
#[derive(Default)]
pub struct TreeDigest {
    sha: Sha256,
    pub entries: u64,
    pub file_bytes: u64,
}

impl TreeDigest {
    /// Add one entry; `content` is a file's SHA-256 and size, a link's
    /// target, or nothing. Every field is length-prefixed, so no two trees
    /// give the same stream.
    fn add(&mut self, path: &[u8], kind: Kind, mode: u32, uid: u32, gid: u32, content: &[u8]) {
        self.entries += 1;
        self.sha.update((path.len() as u64).to_le_bytes());
        self.sha.update(path);
        self.sha.update([kind.tag()]);
        self.sha.update((mode & 0o7777).to_le_bytes());
        self.sha.update(uid.to_le_bytes());
        self.sha.update(gid.to_le_bytes());
        self.sha.update((content.len() as u64).to_le_bytes());
        self.sha.update(content);
    }

    pub fn finish(self) -> String {
        crate::fsutil::hex(&self.sha.finalize())
    }
}

/// A file's content record: its SHA-256 and its size.
fn file_record(sha: Sha256, size: u64) -> Vec<u8> {
    let mut v = sha.finalize().to_vec();
    v.extend(size.to_le_bytes());
    v
}

/// Visit the children `names` of the folder at `rel` in name order (`rel`
/// extended by each name during its visit), leaving out what the digest
/// does not count at the root. Both walks go through here, so they cannot
/// disagree on the order.
fn each_child(
    rel: &mut Vec<u8>,
    mut names: Vec<Vec<u8>>,
    mut visit: impl FnMut(&mut Vec<u8>, &[u8]) -> Result<()>,
) -> Result<()> {
    names.sort();
    for n in names {
        if rel.is_empty() && SKIP_AT_ROOT.contains(&n.as_slice()) {
            continue;
        }
        let len = rel.len();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend(&n);
        let r = visit(rel, &n);
        rel.truncate(len);
        r?;
    }
    Ok(())
}

/// The digest of the tree under the folder `root`.
pub fn digest_dir(root: &Path) -> Result<String> {
    Ok(walk(root, &[])?.full.finish())
}

/// The digests of the tree under the folder `root`: the whole tree's, and
/// for each container format of `formats` the tree an artifact of it made
/// from `root` holds ([`container_digest`]), in one reading.
pub fn digest_dir_and_containers(
    root: &Path,
    formats: &[Format],
) -> Result<(String, BTreeMap<Format, String>)> {
    let d = walk(root, formats)?;
    let views = d.views.into_iter().map(|v| (v.format, v.digest.finish()));
    Ok((d.full.finish(), views.collect()))
}

/// The digest of the tree under the folder `root` (an artifact of the
/// container format `format`, as unpacked) as [`digest_dir_and_containers`]
/// gives it for the tree the artifact was made from.
pub fn container_digest(root: &Path, format: Format) -> Result<String> {
    let d = walk(root, &[format])?;
    let v = d
        .views
        .into_iter()
        .next()
        .context("not a container format")?;
    Ok(v.digest.finish())
}

/// The digests of one walk of `root`: the whole tree's, and the view of
/// each container format of `formats`.
fn walk(root: &Path, formats: &[Format]) -> Result<Digests> {
    let mut d = Digests::new(formats);
    walk_dir(root, &mut Vec::new(), &mut d)?;
    Ok(d)
}

/// What one walk of a folder feeds: the whole tree's digest, and the
/// digest of each container format's view of it.
struct Digests {
    full: TreeDigest,
    views: Vec<View>,
}

/// The tree a container artifact of `format` holds, as its writer made
/// it (`formats::layer`, `formats::sif`): not the paths it leaves out
/// (`excludes`: the kernel, modules and firmware, but for a rootfs
/// tarball), not sockets (an archive cannot hold them), not the root
/// folder itself (an archive has no entry for it; the runtime makes it).
struct View {
    format: Format,
    excludes: &'static [&'static str],
    digest: TreeDigest,
}

impl Digests {
    /// Fresh digests of the whole tree and of each container format's
    /// view of it (disk formats have none).
    fn new(formats: &[Format]) -> Digests {
        Digests {
            full: TreeDigest::default(),
            views: formats
                .iter()
                .filter(|f| !f.is_disk())
                .map(|&format| View {
                    format,
                    excludes: crate::formats::layer::excludes_of(format),
                    digest: TreeDigest::default(),
                })
                .collect(),
        }
    }

    fn add(&mut self, rel: &[u8], kind: Kind, meta: &fs::Metadata, content: &[u8]) {
        let socket = meta.file_type().is_socket();
        let (mode, uid, gid) = (meta.mode(), meta.uid(), meta.gid());
        self.add_entry(rel, (kind, mode, uid, gid, socket), content);
    }

    fn add_entry(&mut self, rel: &[u8], what: EntryMeta, content: &[u8]) {
        let (kind, mode, uid, gid, socket) = what;
        self.full.add(rel, kind, mode, uid, gid, content);
        if self.views.is_empty() || rel.is_empty() || socket {
            return;
        }
        let path = String::from_utf8_lossy(rel);
        for v in &mut self.views {
            if !crate::formats::layer::is_excluded(&path, v.excludes) {
                v.digest.add(rel, kind, mode, uid, gid, content);
            }
        }
    }
}

/// An entry's kind, mode, owner, group, and whether it is a socket.
type EntryMeta = (Kind, u32, u32, u32, bool);

/// The entries of a tree as they were written, one by one (by an unpack:
/// see `container::unpack`), for its digest without reading the tree
/// again: each file is hashed right after it is written, while its pages
/// are in memory. A later reading of BioLinux's unpacked OCI tree took
/// 49.9 s, beside a boot. Whoever writes the tree calls [`Self::lose`]
/// when it removes or redirects anything, and the tree is then walked.
#[derive(Default)]
pub struct TreeRecords {
    /// By the path with `/` as the lowest byte, so that the map's order is
    /// the walk's (a folder's entries right after it, names in byte order).
    entries: BTreeMap<Vec<u8>, (EntryMeta, Vec<u8>)>,
    lost: bool,
}

impl TreeRecords {
    /// Record the entry at `rel` (relative) of the tree at `root` as it now
    /// is on disk.
    pub fn record(&mut self, root: &Path, rel: &Path) -> Result<()> {
        use std::os::unix::ffi::OsStrExt;
        if self.lost {
            return Ok(());
        }
        let here = root.join(rel);
        let meta = fs::symlink_metadata(&here)
            .with_context(|| format!("cannot stat {}", here.display()))?;
        let ft = meta.file_type();
        let (kind, content, _) = entry_content(&here, ft)?;
        let what = (kind, meta.mode(), meta.uid(), meta.gid(), ft.is_socket());
        self.entries
            .insert(walk_key(rel.as_os_str().as_bytes()), (what, content));
        Ok(())
    }

    /// Record the entry at `rel` as an archive describes it, nothing
    /// written (see `container::unpack::stream_digest`): what it is, its
    /// permission bits, owner and group. A symbolic link's own bits are
    /// always 0777 on Linux, whatever the archive says; a hard link is the
    /// file it links to (one inode: its bits, owner and content), which must
    /// be recorded already. A path described twice (a later entry replacing
    /// an earlier one) or a link to nothing recorded loses the records.
    pub fn describe(&mut self, rel: &Path, entry: Described<'_>, mode: u32, uid: u32, gid: u32) {
        use std::os::unix::ffi::OsStrExt;
        if self.lost {
            return;
        }
        let key = walk_key(rel.as_os_str().as_bytes());
        // Below a link or a file (an earlier entry's), an unpack writes
        // elsewhere than the name says: not described.
        let parent = rel.parent().map(|p| walk_key(p.as_os_str().as_bytes()));
        if let Some(r) = parent.and_then(|p| self.entries.get(&p)) {
            if r.0 .0 != Kind::Dir {
                return self.lose();
            }
        }
        let record = match entry {
            Described::Dir => ((Kind::Dir, mode, uid, gid, false), Vec::new()),
            Described::File { sha, size } => {
                ((Kind::File, mode, uid, gid, false), file_record(sha, size))
            }
            Described::Symlink(target) => {
                ((Kind::Symlink, 0o777, uid, gid, false), target.to_vec())
            }
            Described::Special => ((Kind::Special, mode, uid, gid, false), Vec::new()),
            Described::HardLink(target) => {
                match self.entries.get(&walk_key(target.as_os_str().as_bytes())) {
                    Some(r) if r.0 .0 == Kind::File => r.clone(),
                    _ => return self.lose(),
                }
            }
        };
        if self.entries.insert(key, record).is_some() {
            self.lose();
        }
    }

    /// The records no longer say what the tree holds.
    pub fn lose(&mut self) {
        self.lost = true;
        self.entries.clear();
    }

    /// The digest of the tree the records describe, as
    /// [`container_digest`] gives it for `format`; None when they were lost.
    pub fn container_digest(self, format: Format) -> Option<String> {
        if self.lost {
            return None;
        }
        let mut d = Digests::new(&[format]);
        for (key, (what, content)) in self.entries {
            let rel: Vec<u8> = key.iter().map(|&b| if b == 0 { b'/' } else { b }).collect();
            d.add_entry(&rel, what, &content);
        }
        d.views.pop().map(|v| v.digest.finish())
    }
}

/// An entry as an archive describes it, for [`TreeRecords::describe`].
pub enum Described<'a> {
    Dir,
    /// A regular file: the SHA-256 of its content, and its size.
    File {
        sha: Sha256,
        size: u64,
    },
    /// A symbolic link and its target.
    Symlink(&'a [u8]),
    /// A device node or FIFO.
    Special,
    /// A second name of the regular file at this path (relative).
    HardLink(&'a Path),
}

/// A relative path as [`TreeRecords`] keys it: `/` as the lowest byte, so
/// that the keys' order is the walk's (a folder's entries right after it,
/// names in byte order).
fn walk_key(rel: &[u8]) -> Vec<u8> {
    rel.iter().map(|&b| if b == b'/' { 0 } else { b }).collect()
}

fn walk_dir(root: &Path, rel: &mut Vec<u8>, d: &mut Digests) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let here = root.join(std::ffi::OsStr::from_bytes(rel));
    let meta =
        fs::symlink_metadata(&here).with_context(|| format!("cannot stat {}", here.display()))?;
    let (kind, content, size) = entry_content(&here, meta.file_type())?;
    d.full.file_bytes += size;
    d.add(rel, kind, &meta, &content);
    if kind == Kind::Dir {
        let names: Vec<Vec<u8>> = fs::read_dir(&here)
            .with_context(|| format!("cannot list {}", here.display()))?
            .map(|e| e.map(|e| e.file_name().as_bytes().to_vec()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("cannot list {}", here.display()))?;
        each_child(rel, names, |rel, _| walk_dir(root, rel, d))?;
    }
    Ok(())
}

/// The kind of the entry at `here` (of type `ft`), what of it the digest
/// counts (a file's record, a link's target, nothing), and a file's size.
fn entry_content(here: &Path, ft: fs::FileType) -> Result<(Kind, Vec<u8>, u64)> {
    use std::os::unix::ffi::OsStrExt;
    if ft.is_dir() {
        Ok((Kind::Dir, Vec::new(), 0))
    } else if ft.is_file() {
        let mut f =
            fs::File::open(here).with_context(|| format!("cannot open {}", here.display()))?;
        let mut sha = Sha256::new();
        let size = std::io::copy(&mut f, &mut sha)
            .with_context(|| format!("cannot read {}", here.display()))?;
        Ok((Kind::File, file_record(sha, size), size))
    } else if ft.is_symlink() {
        let t = fs::read_link(here).with_context(|| format!("cannot read {}", here.display()))?;
        Ok((Kind::Symlink, t.as_os_str().as_bytes().to_vec(), 0))
    } else {
        Ok((Kind::Special, Vec::new(), 0))
    }
}

/// A disk image file read from an offset (the root partition's start).
struct Partition {
    file: fs::File,
    offset: u64,
}

impl ext4_view::Ext4Read for Partition {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(dst, self.offset + start_byte)?;
        Ok(())
    }
}

/// The byte offset of the Linux root partition (x86-64 root type) of the
/// raw GPT disk `raw`.
pub fn root_partition_offset(raw: &Path) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let f = fs::File::open(raw).with_context(|| format!("cannot open {}", raw.display()))?;
    let mut hdr = [0u8; 92];
    f.read_exact_at(&mut hdr, 512)
        .with_context(|| format!("{}: no GPT header", raw.display()))?;
    if &hdr[0..8] != b"EFI PART" {
        bail!("{}: not a GPT disk", raw.display());
    }
    let le64 = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
    let le32 = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or_default());
    let entries_lba = le64(&hdr[72..80]);
    let count = le32(&hdr[80..84]).min(1024) as u64;
    let size = le32(&hdr[84..88]) as u64;
    if size < 128 {
        bail!("{}: GPT entries of {size} bytes", raw.display());
    }
    let root = crate::disk::gpt::Guid::parse(crate::disk::gpt::types::ROOT_X86_64)?.to_disk();
    let mut e = vec![0u8; size as usize];
    for i in 0..count {
        f.read_exact_at(&mut e, entries_lba * 512 + i * size)
            .with_context(|| format!("cannot read {}'s partition table", raw.display()))?;
        if e[0..16] == root {
            return Ok(le64(&e[32..40]) * 512);
        }
    }
    bail!("{}: no Linux root partition in its GPT", raw.display())
}

/// The disk of `artifact` as a raw disk file: the artifact itself when it
/// is raw, else a sparse raw copy in `scratch` made by `qemu-img convert`
/// (for an OVA or a Vagrant box, of the VMDK inside it). The caller removes
/// a copy when done with it.
pub fn raw_view(artifact: &Path, format: crate::config::Format, scratch: &Path) -> Result<PathBuf> {
    let (disk, qf) = disk_to_boot(artifact, format, &scratch.join("disk.tmp"))?;
    let raw = as_raw(artifact, (&disk, qf), scratch);
    if disk != artifact {
        let _ = fs::remove_file(&disk);
    }
    raw
}

/// The disk `disk` (of QEMU format `qf`, the disk of `artifact`) as a raw
/// disk file: itself when raw, else a sparse raw copy in `scratch`.
fn as_raw(artifact: &Path, (disk, qf): (&Path, DiskFormat), scratch: &Path) -> Result<PathBuf> {
    if qf == DiskFormat::Raw {
        return Ok(disk.to_path_buf());
    }
    let raw = scratch.join("disk.raw.tmp");
    crate::cmd::Cmd::new("qemu-img")
        .args(["convert", "-f", qf.name(), "-O", DiskFormat::Raw.name()])
        .arg(disk)
        .arg(&raw)
        .run()
        .with_context(|| format!("cannot read the disk of {}", artifact.display()))?;
    Ok(raw)
}

/// How this process came to know a disk's tree digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum How {
    /// Its root filesystem was read.
    Read,
    /// Its build read it back from these very bytes ([`read_back_by_build`]).
    ReadBack,
    /// Every sector QEMU reads from it is the one of `disk`, the raw disk
    /// of the same build, whose tree was known (`how`): they hold one
    /// filesystem. Compared by its build, which recorded these very bytes
    /// (`by_build`, see [`compared_by_build`]), or now
    /// ([`same_sectors_as_raw`]).
    SameSectors {
        disk: PathBuf,
        how: Box<How>,
        by_build: bool,
    },
}

/// A disk's tree digest this process has, and how it came to have it.
#[derive(Clone)]
struct Known {
    digest: String,
    how: How,
}

type KnownDisks = std::collections::HashMap<PathBuf, Known>;

/// Digests of disks' root filesystems known so far in this process, by
/// artifact.
static DISK_DIGESTS: std::sync::Mutex<Option<KnownDisks>> = std::sync::Mutex::new(None);

/// The digest of `artifact`'s root filesystem (a disk of `format`): the
/// one this process already has unless `again`; else, unless `again`, one
/// known without reading the disk ([`known_without_reading`]; `boot` is
/// the disk QEMU boots for it and its QEMU format, where the caller has
/// it); else `read()`'s. Remembered either way. One disk is read at a
/// time: two at once on two cores would only slow both.
fn remembered_digest(
    artifact: &Path,
    format: crate::config::Format,
    again: bool,
    boot: Option<(&Path, DiskFormat)>,
    read: impl FnOnce() -> Result<String>,
) -> Result<String> {
    let mut done = DISK_DIGESTS.lock().unwrap_or_else(|e| e.into_inner());
    let map = done.get_or_insert_with(Default::default);
    if let (Some(k), false) = (map.get(artifact), again) {
        return Ok(k.digest.clone());
    }
    let known = if again {
        None
    } else {
        known_without_reading(map, artifact, format, boot)
    };
    let known = match known {
        Some(k) => k,
        None => {
            let t0 = std::time::Instant::now();
            let digest = read()?;
            log::info!(
                "{}: root filesystem read in {:.1} s",
                artifact.display(),
                t0.elapsed().as_secs_f64()
            );
            Known {
                digest,
                how: How::Read,
            }
        }
    };
    map.insert(artifact.to_path_buf(), known.clone());
    Ok(known.digest)
}

/// `artifact`'s tree digest where it can be known without reading its
/// root filesystem: its build read it back from these very bytes
/// ([`read_back_by_build`]), or (another format of the build's disk, with
/// `boot`, the disk QEMU boots for it) every sector of it is the raw
/// disk's beside it, whose tree is known ([`same_sectors_as_raw`]).
fn known_without_reading(
    map: &mut KnownDisks,
    artifact: &Path,
    format: crate::config::Format,
    boot: Option<(&Path, DiskFormat)>,
) -> Option<Known> {
    if let Some(digest) = read_back_by_build(artifact, format) {
        return Some(Known {
            digest,
            how: How::ReadBack,
        });
    }
    if format == crate::config::Format::Raw {
        return None;
    }
    let m = crate::manifest::Manifest::for_artifact(artifact).ok()?;
    compared_by_build(map, &m, artifact, format)
        .or_else(|| same_sectors_as_raw(map, &m, artifact, boot?))
}

/// The raw disk of the build that made `artifact` (listed in its manifest
/// `m`, beside it) and its tree, when this process read it or its build
/// read it back from its very bytes.
fn known_raw(
    map: &mut KnownDisks,
    m: &crate::manifest::Manifest,
    artifact: &Path,
) -> Option<(PathBuf, Known)> {
    use crate::config::Format;
    let entry = m.artifacts.iter().find(|a| a.format == Format::Raw)?;
    // A file beside the artifact, never a path the manifest could point
    // anywhere with.
    let name = Path::new(&entry.file);
    if name.file_name() != Some(name.as_os_str()) {
        return None;
    }
    let raw = artifact.with_file_name(name);
    // A raw disk's tree is only ever read or read back (never taken from
    // another disk's sectors).
    let known = match map.get(&raw) {
        Some(k) => k.clone(),
        None => {
            let k = Known {
                digest: read_back_by_build(&raw, Format::Raw)?,
                how: How::ReadBack,
            };
            map.insert(raw.clone(), k.clone());
            k
        }
    };
    Some((raw, known))
}

/// The tree of `artifact` (a disk of `format`, listed in its manifest
/// `m`) when its build compared its disk sector by sector with the raw
/// disk beside it and found them equal (`sectors_compared_with_raw`), and
/// it still has those very bytes (its SHA-256 is the one recorded): the
/// raw disk's tree, when known ([`known_raw`]). Nothing is read but the
/// artifact's SHA-256, which a test has anyway (and remembers).
fn compared_by_build(
    map: &mut KnownDisks,
    m: &crate::manifest::Manifest,
    artifact: &Path,
    format: crate::config::Format,
) -> Option<Known> {
    let recorded = &m.entry(artifact, format)?.sha256;
    if !m.sectors_compared_with_raw.contains(recorded)
        || !has_recorded_bytes(m, artifact, format, recorded)
    {
        return None;
    }
    let (raw, raw_known) = known_raw(map, m, artifact)?;
    log::info!(
        "{}: its build found every sector equal to {}'s, and its SHA-256 is unchanged: its root filesystem is that disk's, not read",
        artifact.display(),
        raw.display()
    );
    Some(Known {
        digest: raw_known.digest,
        how: How::SameSectors {
            disk: raw,
            how: Box::new(raw_known.how),
            by_build: true,
        },
    })
}

/// The tree of `artifact`, a disk of another format than raw whose QEMU
/// view is `boot` (the artifact, or the VMDK copied out of its archive),
/// when its build's raw disk sits beside it (listed in the same manifest)
/// with a tree this process knows or its build read back from its very
/// bytes, and every sector QEMU reads from `boot` is that disk's (the same
/// virtual size; `qemu-img compare`): the two hold one root filesystem,
/// so one tree. A qcow2 is compared at the speed of the disk (BioLinux's
/// 11 GB: 12.6 s, where reading its tree took 67 s); a disk with one
/// changed byte is not equal, and is read.
fn same_sectors_as_raw(
    map: &mut KnownDisks,
    m: &crate::manifest::Manifest,
    artifact: &Path,
    boot: (&Path, DiskFormat),
) -> Option<Known> {
    if boot.1 == DiskFormat::Raw {
        return None;
    }
    let (raw, raw_known) = known_raw(map, m, artifact)?;
    let t0 = std::time::Instant::now();
    match super::boot_disk::same_contents(&raw, DiskFormat::Raw, boot.0, boot.1) {
        Ok(true) => {
            log::info!(
                "{}: every sector equal to {}'s ({:.1} s): its root filesystem is that disk's, not read",
                artifact.display(),
                raw.display(),
                t0.elapsed().as_secs_f64()
            );
            Some(Known {
                digest: raw_known.digest,
                how: How::SameSectors {
                    disk: raw,
                    how: Box::new(raw_known.how),
                    by_build: false,
                },
            })
        }
        Ok(false) => {
            log::info!(
                "{}: not every sector is {}'s: its root filesystem is read",
                artifact.display(),
                raw.display()
            );
            None
        }
        Err(e) => {
            log::warn!("{e:#}: its root filesystem is read");
            None
        }
    }
}

/// The tree digest of `artifact` when its build read it back from these
/// very bytes: a raw disk whose manifest's `tree_read_back_from` is its
/// SHA-256 (and lists it with that SHA-256). The build mounted that disk
/// once written and found the tree it made (or failed); a disk with one
/// byte changed has another SHA-256 and is read again.
fn read_back_by_build(artifact: &Path, format: crate::config::Format) -> Option<String> {
    if format != crate::config::Format::Raw {
        return None;
    }
    let m = crate::manifest::Manifest::for_artifact(artifact).ok()?;
    let from = m.tree_read_back_from.as_deref()?;
    if !has_recorded_bytes(&m, artifact, format, from) {
        return None;
    }
    log::info!(
        "{}: its root filesystem is the tree its build read back from these very bytes (SHA-256 {}…): not read again",
        artifact.display(),
        &from[..from.len().min(12)]
    );
    m.tree_sha256
}

/// Whether `artifact` (of `format`) is listed in its manifest `m` with the
/// SHA-256 `recorded`, and still has it: the very bytes its build proved
/// something of.
fn has_recorded_bytes(
    m: &crate::manifest::Manifest,
    artifact: &Path,
    format: crate::config::Format,
    recorded: &str,
) -> bool {
    m.entry(artifact, format)
        .is_some_and(|e| e.sha256 == recorded)
        && crate::store::sha256(artifact).is_ok_and(|sha| sha == recorded)
}

/// How this process came to know `artifact`'s tree digest, if it has it.
pub fn how_known(artifact: &Path) -> Option<How> {
    DISK_DIGESTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|m| m.get(artifact))
        .map(|k| k.how.clone())
}

/// Whether the kernel offers loop devices (to mount a disk file).
pub fn can_loop_mount() -> bool {
    Path::new("/dev/loop-control").exists()
}

/// The digest of the root filesystem of the disk artifact `artifact`,
/// read once per process: cells of one disk under two firmwares, and the
/// native run that copied the tree out of it (`extract_to`), share it.
/// With `extract_to` the tree is always read, and written there; without,
/// a raw disk its build read back is not read ([`read_back_by_build`]).
pub fn disk_digest(
    artifact: &Path,
    format: crate::config::Format,
    scratch: &Path,
    extract_to: Option<&Path>,
) -> Result<String> {
    remembered_digest(artifact, format, extract_to.is_some(), None, || {
        let raw = raw_view(artifact, format, scratch)?;
        let d = digest_disk(&raw, extract_to);
        if raw != artifact {
            let _ = fs::remove_file(&raw);
        }
        d
    })
}

/// [`disk_digest`] of `artifact`, a disk whose bytes are the ones its
/// build recorded, which the caller has as the raw file `raw` (see
/// [`raw_view`]) with its root filesystem at byte `offset`: read through
/// the kernel, see [`mounted_digest`].
pub fn built_disk_digest(
    artifact: &Path,
    format: crate::config::Format,
    raw: &Path,
    offset: u64,
    mnt: &Path,
) -> Result<String> {
    remembered_digest(artifact, format, false, None, || {
        mounted_digest(raw, offset, mnt)
    })
}

/// [`disk_digest`] of `artifact`, whose disk QEMU boots is `boot` (and its
/// QEMU format: the artifact, or the disk a test copied out of its
/// archive, see `boot_disk::BootDisks`): another format of the build's raw
/// disk is compared with it sector by sector ([`same_sectors_as_raw`])
/// before its tree is read (through a raw copy in `scratch`).
pub fn booted_disk_digest(
    artifact: &Path,
    format: crate::config::Format,
    boot: (&Path, DiskFormat),
    scratch: &Path,
) -> Result<String> {
    remembered_digest(artifact, format, false, Some(boot), || {
        let raw = as_raw(artifact, boot, scratch)?;
        let d = digest_disk(&raw, None);
        if raw != boot.0 {
            let _ = fs::remove_file(&raw);
        }
        d
    })
}

/// The digest of the ext4 filesystem at byte `offset` of the disk file
/// `raw`, as the kernel reads it: mounted read-only (no journal replay) at
/// the empty folder `mnt`, in a mount namespace of a thread of its own, so
/// no other process sees the mount and it goes with that thread however
/// biovm ends. The kernel's ext4 looks each name up once, in its caches;
/// [`digest_disk`]'s reader resolves every file's whole path again,
/// checksumming each folder block on the way (BioLinux's 11 GB tree: 129 s
/// beside other work). For disks whose bytes their build recorded only (a
/// filesystem `mkfs.ext4` made from the build's tree, the one the native
/// checks mount too), never for a disk from elsewhere.
pub fn mounted_digest(raw: &Path, offset: u64, mnt: &Path) -> Result<String> {
    let (raw, mnt) = (raw.to_path_buf(), mnt.to_path_buf());
    let what = format!("the root filesystem of {}", raw.display());
    std::thread::spawn(move || -> Result<String> {
        fs::create_dir_all(&mnt).with_context(|| format!("cannot create {}", mnt.display()))?;
        private_mount_namespace()?;
        crate::cmd::Cmd::new("mount")
            .arg("-o")
            .arg(format!(
                "ro,noload,nodev,nosuid,noexec,loop,offset={offset}"
            ))
            .arg(&raw)
            .arg(&mnt)
            .run()?;
        let d = digest_dir(&mnt);
        // The namespace (and the mount, and its loop device) would go with
        // this thread anyway.
        let _ = crate::cmd::Cmd::new("umount").arg(&mnt).run();
        d
    })
    .join()
    .map_err(|_| anyhow::anyhow!("reading {what} failed"))?
    .with_context(|| format!("reading {what}"))
}

/// Give the calling thread a mount namespace of its own (with its own root
/// and working folder), whose mounts never propagate to the host's.
fn private_mount_namespace() -> Result<()> {
    // SAFETY: unshare takes flags only; CLONE_FS gives this thread its own
    // root and working folder, so the new namespace is this thread's alone.
    if unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_FS) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot make a mount namespace");
    }
    let root = std::ffi::CString::new("/").expect("no NUL");
    // SAFETY: a propagation change of "/": null source, type and data are
    // what mount(2) takes for it.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error())
            .context("cannot make the mount namespace's mounts private");
    }
    Ok(())
}

/// The host-side check that a tree is the build's: `got` is the digest of
/// the tree read from the disk `artifact` (or the tree the native checks
/// ran in), `want` the one the build recorded in the manifest. Its output
/// says when the digest is the build's read-back of these very bytes
/// rather than the disk read now.
pub fn same_tree_result(artifact: &Path, want: &str, got: &str) -> CheckResult {
    let mut r = same_digest_result(
        "same-tree",
        "the digest of the root filesystem read from the disk",
        ("same tree as built", "root filesystem"),
        want,
        got,
    );
    if let Some(how) = how_known(artifact) {
        r.output.push_str(&how_said(&how));
    }
    r
}

/// The host-side check that a container artifact's tree, as unpacked
/// (digest `got`: [`container_digest`]), is the build's tree less what
/// its format leaves out (`want`, from the manifest): the tree the native
/// checks ran in, so they stand for this artifact too.
pub fn same_container_tree_result(want: &str, got: &str) -> CheckResult {
    same_digest_result(
        "same-tree",
        "the digest of the container's root filesystem as unpacked, against the build's tree \
         less what this format leaves out",
        (
            "same tree as built, as this format holds it",
            "container root filesystem",
        ),
        want,
        got,
    )
}

/// How a disk's tree digest was known, as the `system/same-tree` output's
/// tail says it (nothing when the disk was read).
fn how_said(how: &How) -> String {
    match how {
        How::Read => String::new(),
        How::ReadBack => {
            " (read back from this disk by its build; its SHA-256 is unchanged)".into()
        }
        How::SameSectors {
            disk,
            how,
            by_build,
        } => {
            let name = disk.file_name().unwrap_or_default().to_string_lossy();
            let of_it = match **how {
                How::ReadBack => "read back from it by its build",
                _ => "read from it",
            };
            let compared = if *by_build {
                "compared by its build (qemu-img compare; its SHA-256 is unchanged)"
            } else {
                "by qemu-img compare"
            };
            format!(" (every sector equal to {name}'s, {compared}; that disk's tree {of_it})")
        }
    }
}

/// A host-side check `name` (of `what`) that the digest `got` is `want`:
/// its output starts with `said.0` when they are the same, else names
/// `said.1` with both digests.
fn same_digest_result(
    name: &str,
    what: &str,
    said: (&str, &str),
    want: &str,
    got: &str,
) -> CheckResult {
    let output = if got == want {
        format!("{}: {got}", said.0)
    } else {
        format!("{} {got}, but the build made {want}", said.1)
    };
    let check = system_check(
        name,
        format!("(judged on the host: {what})"),
        &format!("^{}: ", said.0),
        0,
    );
    judged_on_host(&check, output)
}

/// Hashes what is written to it, and copies it to a file if it has one.
struct Tee {
    sha: Sha256,
    copy: Option<fs::File>,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(c) = self.copy.as_mut() {
            c.write_all(buf)?;
        }
        self.sha.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.copy.as_mut().map_or(Ok(()), |c| c.flush())
    }
}

/// The root filesystem of the raw disk `raw`.
pub fn open_root(raw: &Path) -> Result<ext4_view::Ext4> {
    let offset = root_partition_offset(raw)?;
    let file = fs::File::open(raw).with_context(|| format!("cannot open {}", raw.display()))?;
    ext4_view::Ext4::load(Box::new(Partition { file, offset }))
        .map_err(|e| anyhow::anyhow!("{}: its root filesystem cannot be read: {e}", raw.display()))
}

/// The digest of the data disk `raw` (a bare ext4 filesystem, see
/// `data::disk`); with `extract_to` (the data's mount point in the tree
/// the native checks run in, an empty folder) its tree is written there.
pub fn data_disk_digest(raw: &Path, extract_to: Option<&Path>) -> Result<String> {
    let file = fs::File::open(raw).with_context(|| format!("cannot open {}", raw.display()))?;
    let fs4 = ext4_view::Ext4::load(Box::new(Partition { file, offset: 0 }))
        .map_err(|e| anyhow::anyhow!("{}: its filesystem cannot be read: {e}", raw.display()))?;
    digest_ext4(&fs4, extract_to)
        .with_context(|| format!("reading the data disk {}", raw.display()))
}

/// The host-side check that the data disk's tree, read into the tree the
/// native checks ran in, is the one the build made.
pub fn same_data_tree_result(want: &str, got: &str) -> CheckResult {
    same_digest_result(
        "same-data-disk",
        "the digest of the data disk's tree",
        ("same data disk as built", "data disk"),
        want,
        got,
    )
}

/// The digest of the root filesystem of the raw disk `raw`; with
/// `extract_to`, the tree is also written there (owners, modes with
/// setuid bits, links; device nodes, FIFOs and sockets are left out, as a
/// container gets its own /dev).
pub fn digest_disk(raw: &Path, extract_to: Option<&Path>) -> Result<String> {
    let fs4 = open_root(raw)?;
    digest_ext4(&fs4, extract_to)
        .with_context(|| format!("reading the root filesystem of {}", raw.display()))
}

/// The digest of the filesystem `fs4`, written to `extract_to` if given.
fn digest_ext4(fs4: &ext4_view::Ext4, extract_to: Option<&Path>) -> Result<String> {
    let mut d = TreeDigest::default();
    let root = ext4_view::PathBuf::new("/");
    let meta = fs4.symlink_metadata(&root).map_err(e4)?;
    walk_ext4(fs4, &root, meta, &mut Vec::new(), extract_to, &mut d)?;
    Ok(d.finish())
}

fn e4(e: ext4_view::Ext4Error) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Visit `path` (whose metadata `meta` its parent's entry gave: looking a
/// name up costs a read of its folder's blocks, so each file is looked up
/// once, to open it).
fn walk_ext4(
    fs4: &ext4_view::Ext4,
    path: &ext4_view::PathBuf,
    meta: ext4_view::Metadata,
    rel: &mut Vec<u8>,
    out: Option<&Path>,
    d: &mut TreeDigest,
) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let ft = meta.file_type();
    let (mode, uid, gid) = (u32::from(meta.mode()), meta.uid(), meta.gid());
    let dest: Option<PathBuf> = out.map(|o| o.join(std::ffi::OsStr::from_bytes(rel)));
    let own = |p: &Path, chmod: bool| -> Result<()> {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid))
            .with_context(|| format!("cannot chown {}", p.display()))?;
        if chmod {
            fs::set_permissions(p, fs::Permissions::from_mode(mode))
                .with_context(|| format!("cannot chmod {}", p.display()))?;
        }
        Ok(())
    };
    if ft.is_dir() {
        d.add(rel, Kind::Dir, mode, uid, gid, &[]);
        if let Some(p) = &dest {
            if !rel.is_empty() {
                fs::create_dir(p).with_context(|| format!("cannot create {}", p.display()))?;
            }
        }
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut metas = std::collections::HashMap::new();
        for entry in fs4.read_dir(path).map_err(e4)? {
            let entry = entry.map_err(e4)?;
            let name = entry.file_name();
            let n: &[u8] = name.as_ref();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
                metas.insert(n.to_vec(), entry.metadata().map_err(e4)?);
            }
        }
        each_child(rel, names, |rel, n| {
            let meta = metas
                .remove(n)
                .with_context(|| format!("{}: a name listed twice", path.join(n).display()))?;
            walk_ext4(fs4, &path.join(n), meta, rel, out, d)
        })?;
        // Owner and mode last: the folder may not be writable by them.
        if let Some(p) = &dest {
            own(p, true)?;
        }
    } else if ft.is_regular_file() {
        let mut f = fs4.open(path).map_err(e4)?;
        // A new file only: a name met twice (a corrupt or crafted disk)
        // never writes through what the first one made.
        let copy = match &dest {
            Some(p) => Some(
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(p)
                    .with_context(|| format!("cannot create {}", p.display()))?,
            ),
            None => None,
        };
        let mut tee = Tee {
            sha: Sha256::new(),
            copy,
        };
        let size = std::io::copy(&mut f, &mut tee)
            .with_context(|| format!("cannot copy {}", path.display()))?;
        let (sha, w) = (tee.sha, tee.copy);
        d.file_bytes += size;
        d.add(rel, Kind::File, mode, uid, gid, &file_record(sha, size));
        if let Some(p) = &dest {
            drop(w);
            // chown clears setuid bits: the mode goes on after it.
            own(p, true)?;
        }
    } else if ft.is_symlink() {
        let target = fs4.read_link(path).map_err(e4)?;
        let t: &[u8] = target.as_ref();
        d.add(rel, Kind::Symlink, mode, uid, gid, t);
        if let Some(p) = &dest {
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(t), p)
                .with_context(|| format!("cannot create {}", p.display()))?;
            own(p, false)?;
        }
    } else {
        d.add(rel, Kind::Special, mode, uid, gid, &[]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(d: &Path) {
        fs::create_dir_all(d.join("usr/bin")).unwrap();
        fs::write(d.join("usr/bin/tool"), b"#!/bin/sh\necho 1\n").unwrap();
        fs::set_permissions(d.join("usr/bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::symlink("usr/bin", d.join("bin")).unwrap();
        fs::write(d.join("etc"), b"x").unwrap();
    }

    #[test]
    fn equal_trees_give_equal_digests_and_any_change_shows() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        tree(a.path());
        tree(b.path());
        let da = digest_dir(a.path()).unwrap();
        assert_eq!(da, digest_dir(b.path()).unwrap());
        // lost+found at the root does not count.
        fs::create_dir(b.path().join("lost+found")).unwrap();
        assert_eq!(da, digest_dir(b.path()).unwrap());
        // One byte of content, a mode bit, a link target: each shows.
        fs::write(b.path().join("usr/bin/tool"), b"#!/bin/sh\necho 2\n").unwrap();
        let changed = digest_dir(b.path()).unwrap();
        assert_ne!(da, changed);
        tree_reset(b.path());
        fs::set_permissions(
            b.path().join("usr/bin/tool"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert_ne!(da, digest_dir(b.path()).unwrap());
        tree_reset(b.path());
        fs::remove_file(b.path().join("bin")).unwrap();
        std::os::unix::fs::symlink("usr/sbin", b.path().join("bin")).unwrap();
        assert_ne!(da, digest_dir(b.path()).unwrap());
    }

    fn tree_reset(d: &Path) {
        fs::remove_dir_all(d.join("usr")).unwrap();
        fs::remove_file(d.join("bin")).unwrap();
        fs::remove_file(d.join("etc")).unwrap();
        tree(d);
    }

    /// A tree written into an ext4 image by `mkfs.ext4 -d` (as the build
    /// writes the root partition) reads back to the same digest, and
    /// extracting it gives a folder with the same digest.
    #[test]
    #[ignore = "needs root (file owners) and mkfs.ext4"]
    fn an_ext4_image_reads_back_as_the_tree_it_was_made_from() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir(&src).unwrap();
        tree(&src);
        std::os::unix::fs::lchown(src.join("etc"), Some(1000), Some(100)).unwrap();
        let img = d.path().join("root.ext4");
        crate::cmd::Cmd::new("mkfs.ext4")
            .args(["-q", "-d"])
            .arg(&src)
            .arg(&img)
            .arg("16M")
            .run()
            .unwrap();
        // A raw GPT disk around it is what tests read; here the partition
        // is the whole file.
        let fs4 = ext4_view::Ext4::load(Box::new(Partition {
            file: fs::File::open(&img).unwrap(),
            offset: 0,
        }))
        .unwrap();
        let out = d.path().join("out");
        fs::create_dir(&out).unwrap();
        let mut dig = TreeDigest::default();
        let root = ext4_view::PathBuf::new("/");
        let meta = fs4.symlink_metadata(&root).unwrap();
        walk_ext4(&fs4, &root, meta, &mut Vec::new(), Some(&out), &mut dig).unwrap();
        let want = digest_dir(&src).unwrap();
        assert_eq!(dig.finish(), want);
        assert_eq!(digest_dir(&out).unwrap(), want);
        let m = fs::metadata(out.join("usr/bin/tool")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o4755);
        assert_eq!(fs::symlink_metadata(out.join("etc")).unwrap().uid(), 1000);
    }
}
