//! The smoke test for container artifacts (OCI image layout,
//! docker-archive, Apptainer SIF, rootfs tarball): their root filesystem is
//! unpacked and the checks drive's `run.sh` runs inside it the way a
//! container runtime would run it.
//!
//! [`unpack_rootfs`] reads each format itself: the OCI layout through its
//! `index.json`, manifest and layers (every blob checked against its
//! sha256), the docker-archive through its `manifest.json` and config
//! (every layer checked against its `diff_id`), the tarball directly, and
//! the SIF's primary system partition (a squashfs) with `unsquashfs`.
//! Layers are applied in order with the OCI whiteout rules (`.wh.<name>`
//! removes a lower layer's file, `.wh..wh..opq` empties a folder of what
//! lower layers put there; OCI image-spec `layer.md`). Nothing is ever
//! written or removed through a symbolic link that leads out of the tree.
//!
//! [`test_container`] then runs the checks as root (with podman's default
//! capabilities) in private mount, PID, network (loopback only), IPC and
//! UTS namespaces (`unshare`), chrooted into the tree, with a fresh
//! `/proc`, a read-only `/sys`, a minimal `/dev` (tmpfs with the usual
//! character devices, `/dev/pts`, `/dev/shm`), and tmpfs `/run` and
//! `/tmp`, as podman would give a container. This is a faithful test
//! harness, not a sandbox for hostile images: root keeps CAP_SYS_CHROOT
//! and the tree is entered with chroot, not pivot_root. The checks
//! run from `/run/biovm-checks` (as in a booted image: a tmpfs) and report
//! to a results file the host reads as it grows; the report is judged
//! exactly as a boot's. The whole namespace is killed when the timeout
//! passes, and the unpacked tree is removed afterwards.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{write_checks_drive, BootReport};
use crate::cmd::Cmd;
use crate::config::Format;
use crate::fsutil;
use crate::manifest::Tool;

/// Unpack the root filesystem of the container artifact `artifact` (of
/// `format`) into `dest`, which must not exist or be empty. Must run as
/// root (owners, device nodes).
pub fn unpack_rootfs(artifact: &Path, format: Format, dest: &Path) -> Result<()> {
    if format.is_disk() {
        bail!(
            "{}: {} is a disk format, not a container format",
            artifact.display(),
            format.as_str()
        );
    }
    fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    if fs::read_dir(dest)
        .with_context(|| format!("cannot read {}", dest.display()))?
        .next()
        .is_some()
    {
        bail!("cannot unpack into {}: it is not empty", dest.display());
    }
    let r = match format {
        Format::Oci => unpack_oci(artifact, dest),
        Format::DockerArchive => unpack_docker_archive(artifact, dest),
        Format::Sif => unpack_sif(artifact, dest),
        _ => File::open(artifact)
            .context("cannot open it")
            .and_then(|f| apply_stream(f, dest, false, None, None)),
    };
    r.with_context(|| {
        format!(
            "cannot unpack the {} artifact {}",
            format.as_str(),
            artifact.display()
        )
    })?;
    set_mode(dest, 0o755)
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", p.display()))
}

// ---------------------------------------------------------------------------
// OCI image layout

/// A content descriptor (OCI `descriptor.md`).
#[derive(Debug, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Debug, Deserialize)]
struct ImageIndex {
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct ImageManifest {
    layers: Vec<Descriptor>,
}

const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The path of a blob in an OCI layout, from its `sha256:<hex>` digest
/// (only sha256 is accepted, and only 64 hex digits: no path tricks).
fn blob_path(dir: &Path, digest: &str) -> Result<(PathBuf, String)> {
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("unsupported digest {digest} (only sha256)"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("malformed digest {digest}");
    }
    Ok((dir.join("blobs/sha256").join(hex), hex.to_ascii_lowercase()))
}

/// A small blob (index, manifest, config), checked against its digest.
fn read_blob(dir: &Path, digest: &str) -> Result<Vec<u8>> {
    let (p, hex) = blob_path(dir, digest)?;
    let bytes = fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
    let got = fsutil::hex(&Sha256::digest(&bytes));
    if got != hex {
        bail!("{} has sha256 {got}, not {hex}", p.display());
    }
    Ok(bytes)
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).with_context(|| format!("{what} is not what it should be"))
}

fn unpack_oci(dir: &Path, dest: &Path) -> Result<()> {
    let layout = dir.join("oci-layout");
    let v: serde_json::Value = parse_json(
        &fs::read(&layout).with_context(|| format!("cannot read {}", layout.display()))?,
        &layout.display().to_string(),
    )?;
    if v["imageLayoutVersion"].as_str().is_none() {
        bail!("{} has no imageLayoutVersion", layout.display());
    }
    let index_path = dir.join("index.json");
    let index: ImageIndex = parse_json(
        &fs::read(&index_path).with_context(|| format!("cannot read {}", index_path.display()))?,
        &index_path.display().to_string(),
    )?;
    let manifest = pick_manifest(dir, index, &index_path.display().to_string(), 0)?;
    for (i, l) in manifest.layers.iter().enumerate() {
        let (p, hex) = blob_path(dir, &l.digest)?;
        let f = File::open(&p).with_context(|| format!("cannot open {}", p.display()))?;
        apply_stream(f, dest, true, Some(&hex), None).with_context(|| {
            format!(
                "layer {} of {} ({}, {})",
                i + 1,
                manifest.layers.len(),
                l.media_type,
                l.digest
            )
        })?;
    }
    Ok(())
}

/// The linux/amd64 image manifest of an index, following nested indexes.
fn pick_manifest(dir: &Path, index: ImageIndex, what: &str, depth: u32) -> Result<ImageManifest> {
    if depth > 4 {
        bail!("{what}: image indexes nest too deep");
    }
    let d = index
        .manifests
        .into_iter()
        .find(|d| {
            d.platform
                .as_ref()
                .map_or(true, |p| p.os == "linux" && p.architecture == "amd64")
        })
        .with_context(|| format!("{what} lists no linux/amd64 image"))?;
    let bytes = read_blob(dir, &d.digest)?;
    let inner = format!("{what} -> {}", d.digest);
    if d.media_type == MT_INDEX || d.media_type == MT_DOCKER_LIST {
        pick_manifest(dir, parse_json(&bytes, &inner)?, &inner, depth + 1)
    } else {
        parse_json(&bytes, &inner)
    }
}

// ---------------------------------------------------------------------------
// docker-archive (`docker save`)

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerImage {
    config: String,
    layers: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ImageConfig {
    rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// A member of the outer archive: where its data starts and how long it
/// is, or which member it links to.
enum Member {
    Data { offset: u64, size: u64 },
    Link(String),
}

fn unpack_docker_archive(file: &Path, dest: &Path) -> Result<()> {
    let mut members = HashMap::new();
    let mut ar = tar::Archive::new(File::open(file).context("cannot open it")?);
    for e in ar.entries_with_seek().context("not a tar archive")? {
        let e = e.context("cannot read the archive")?;
        let name = normalise(&e.path()?.to_string_lossy());
        let kind = e.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = e.link_name()?.unwrap_or_default();
            let target = target.to_string_lossy();
            // Symbolic links are relative to the member's folder, hard
            // links to the archive's root.
            let target = if kind.is_symlink() {
                let base = name.rsplit_once('/').map_or("", |(d, _)| d);
                normalise(&format!("{base}/{target}"))
            } else {
                normalise(&target)
            };
            members.insert(name, Member::Link(target));
        } else if kind.is_file() {
            members.insert(
                name,
                Member::Data {
                    offset: e.raw_file_position(),
                    size: e.size(),
                },
            );
        }
    }
    let read_member = |name: &str| -> Result<Box<dyn Read>> {
        let mut name = normalise(name);
        for _ in 0..8 {
            match members.get(&name) {
                Some(Member::Link(t)) => name = t.clone(),
                Some(Member::Data { offset, size }) => {
                    let mut f = File::open(file)?;
                    f.seek(SeekFrom::Start(*offset))?;
                    return Ok(Box::new(f.take(*size)));
                }
                None => bail!("it has no member {name}"),
            }
        }
        bail!("member {name} is a loop of links")
    };
    let mut bytes = Vec::new();
    read_member("manifest.json")?.read_to_end(&mut bytes)?;
    let images: Vec<DockerImage> = parse_json(&bytes, "manifest.json")?;
    let image = images
        .into_iter()
        .next()
        .context("manifest.json lists no image")?;
    let mut bytes = Vec::new();
    read_member(&image.config)?.read_to_end(&mut bytes)?;
    let config: ImageConfig = parse_json(&bytes, &image.config)?;
    if config.rootfs.diff_ids.len() != image.layers.len() {
        bail!(
            "{} lists {} diff_ids for {} layers",
            image.config,
            config.rootfs.diff_ids.len(),
            image.layers.len()
        );
    }
    for (i, (layer, diff_id)) in image.layers.iter().zip(&config.rootfs.diff_ids).enumerate() {
        let hex = diff_id
            .strip_prefix("sha256:")
            .with_context(|| format!("unsupported diff_id {diff_id}"))?;
        apply_stream(read_member(layer)?, dest, true, None, Some(hex))
            .with_context(|| format!("layer {} of {} ({layer})", i + 1, image.layers.len()))?;
    }
    Ok(())
}

/// A member name without `./`, empty or `..` components resolved.
fn normalise(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

// ---------------------------------------------------------------------------
// SIF

const SIF_DESCR_LEN: usize = 585;
const SIF_DATA_PARTITION: i32 = 0x4004;
const SIF_FS_SQUASH: i32 = 1;
const SIF_PART_PRIMSYS: i32 = 2;

fn le32(b: &[u8], o: usize) -> i32 {
    i32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], o: usize) -> i64 {
    i64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

/// Where the SIF's primary system partition (a squashfs) lies: (offset, size).
fn sif_system_partition(file: &Path) -> Result<(u64, u64)> {
    let mut f = File::open(file).context("cannot open it")?;
    let len = f.metadata()?.len();
    let mut h = [0u8; 128];
    f.read_exact(&mut h)
        .context("it is too short for a SIF header")?;
    if &h[32..41] != b"SIF_MAGIC" {
        bail!("it is not a SIF image (no SIF_MAGIC in its header)");
    }
    let (total, table_off) = (le64(&h, 88), le64(&h, 96));
    if !(0..=4096).contains(&total) || table_off < 128 {
        bail!("its header is corrupt ({total} descriptors at offset {table_off})");
    }
    let mut table = vec![0u8; total as usize * SIF_DESCR_LEN];
    f.seek(SeekFrom::Start(table_off as u64))?;
    f.read_exact(&mut table)
        .context("its descriptor table is cut short")?;
    for d in table.chunks(SIF_DESCR_LEN) {
        let used = d[4] != 0;
        if !used || le32(d, 0) != SIF_DATA_PARTITION || le32(d, 205) != SIF_PART_PRIMSYS {
            continue;
        }
        let fs_type = le32(d, 201);
        if fs_type != SIF_FS_SQUASH {
            bail!("its system partition is not a squashfs (file system type {fs_type})");
        }
        let (off, size) = (le64(d, 17), le64(d, 25));
        if off < 0 || size <= 0 || off as u64 + size as u64 > len {
            bail!("its system partition ({size} bytes at {off}) lies outside the file");
        }
        return Ok((off as u64, size as u64));
    }
    bail!("it holds no primary system partition")
}

fn unpack_sif(file: &Path, dest: &Path) -> Result<()> {
    let (offset, _) = sif_system_partition(file)?;
    Cmd::new("unsquashfs")
        .args(["-n", "-q", "-f", "-o", &offset.to_string(), "-d"])
        .arg(dest)
        .arg(file)
        .run()?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Layers

/// A reader that feeds what passes through it to a hasher.
struct Hashing<'a, R> {
    inner: R,
    hasher: Option<&'a mut Sha256>,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = self.hasher.as_deref_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Apply one layer (a tar, gzip-compressed or not) to `dest`. When given,
/// `blob_sha` is checked against the stream as read and `tar_sha` against
/// the uncompressed tar.
fn apply_stream(
    raw: impl Read,
    dest: &Path,
    whiteouts: bool,
    blob_sha: Option<&str>,
    tar_sha: Option<&str>,
) -> Result<()> {
    let mut blob_h = Sha256::new();
    let mut tar_h = Sha256::new();
    let mut raw = BufReader::with_capacity(
        1 << 20,
        Hashing {
            inner: raw,
            hasher: blob_sha.map(|_| &mut blob_h),
        },
    );
    let head = raw.fill_buf().context("cannot read it")?;
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        bail!("zstd-compressed layers are not supported");
    }
    {
        let decoded: Box<dyn Read + '_> = if gzip {
            Box::new(flate2::bufread::MultiGzDecoder::new(&mut raw))
        } else {
            Box::new(&mut raw)
        };
        let mut tar = Hashing {
            inner: decoded,
            hasher: tar_sha.map(|_| &mut tar_h),
        };
        apply_tar(&mut tar, dest, whiteouts)?;
        // The end-of-archive blocks and any padding count for the digests.
        io::copy(&mut tar, &mut io::sink()).context("cannot read it to its end")?;
    }
    io::copy(&mut raw, &mut io::sink()).context("cannot read it to its end")?;
    drop(raw);
    for (want, h, what) in [
        (blob_sha, blob_h, "blob"),
        (tar_sha, tar_h, "uncompressed tar"),
    ] {
        if let Some(want) = want {
            let got = fsutil::hex(&h.finalize());
            if !got.eq_ignore_ascii_case(want) {
                bail!("its {what} has sha256 {got}, not {want}");
            }
        }
    }
    Ok(())
}

/// A tar entry's path relative to the root; None for the root itself.
fn relative(p: &Path) -> Result<Option<PathBuf>> {
    let mut rel = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::CurDir | Component::RootDir => {}
            _ => bail!("entry {} leads out of the root", p.display()),
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

/// Where `rel` really lies: its parent resolved (symbolic links followed)
/// and checked to be inside `root`, plus its own name (not followed).
/// None when the parent does not exist.
fn resolve_in(root: &Path, rel: &Path) -> Result<Option<PathBuf>> {
    let name = rel.file_name().context("entry without a name")?;
    let parent = root.join(rel.parent().unwrap_or(Path::new("")));
    match parent.canonicalize() {
        Ok(p) if p.starts_with(root) => Ok(Some(p.join(name))),
        Ok(p) => bail!(
            "{} leads out of the root through a symbolic link (to {})",
            rel.display(),
            p.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot resolve {}", parent.display())),
    }
}

/// Apply the tar `r` to `root`; with `whiteouts`, `.wh.` entries remove
/// what lower layers put there instead of being unpacked.
fn apply_tar(r: impl Read, root: &Path, whiteouts: bool) -> Result<()> {
    let root = root
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", root.display()))?;
    let mut ar = tar::Archive::new(r);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(true);
    ar.set_overwrite(true);
    // What this layer has written so far: an opaque folder keeps it.
    let mut written: HashSet<PathBuf> = HashSet::new();
    for e in ar.entries().context("it is not a tar archive")? {
        let mut e = e.context("cannot read the next entry")?;
        let path = e.path().context("entry with a bad path")?.into_owned();
        let Some(rel) = relative(&path)? else {
            continue;
        };
        let what = || format!("entry {}", path.display());
        let name = rel
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        if whiteouts && name.starts_with(b".wh.") {
            let dir = rel.parent().unwrap_or(Path::new(""));
            if name == b".wh..wh..opq" {
                make_opaque(&root, dir, &written).with_context(what)?;
            } else if !name.starts_with(b".wh..wh.") {
                let target = dir.join(std::ffi::OsStr::from_bytes(&name[4..]));
                if !written.contains(&target) {
                    if let Some(p) = resolve_in(&root, &target).with_context(what)? {
                        fsutil::remove_tree(&p).with_context(what)?;
                    }
                }
            }
            // Other `.wh..wh.` names are aufs bookkeeping: nothing to do.
            continue;
        }
        let kind = e.header().entry_type();
        // Replace whatever a lower layer left at this path, never writing
        // through it (it may be a symbolic link), unless both are folders.
        if let Some(p) = resolve_in(&root, &rel).with_context(what)? {
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() && kind.is_dir() => {}
                Ok(_) => fsutil::remove_tree(&p).with_context(what)?,
                Err(_) => {}
            }
        }
        match kind {
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                make_node(&root, &rel, &e).with_context(what)?
            }
            tar::EntryType::XGlobalHeader => continue,
            _ => {
                if !e.unpack_in(&root).with_context(what)? {
                    bail!("{} leads out of the root", what());
                }
            }
        }
        if whiteouts {
            written.insert(rel);
        }
    }
    Ok(())
}

/// Remove from folder `dir` (relative to `root`) everything lower layers
/// put there, keeping what this layer wrote.
fn make_opaque(root: &Path, dir: &Path, written: &HashSet<PathBuf>) -> Result<()> {
    let abs = if dir.as_os_str().is_empty() {
        root.to_path_buf()
    } else {
        match resolve_in(root, dir)? {
            Some(p) => p,
            None => return Ok(()),
        }
    };
    if !fs::symlink_metadata(&abs).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    for e in fs::read_dir(&abs).with_context(|| format!("cannot read {}", abs.display()))? {
        let e = e?;
        let rel = dir.join(e.file_name());
        if written.contains(&rel) {
            if e.file_type()?.is_dir() {
                make_opaque(root, &rel, written)?;
            }
        } else {
            fsutil::remove_tree(&e.path())?;
        }
    }
    Ok(())
}

/// A device node or FIFO entry (the tar crate would write them as files).
fn make_node<R: Read>(root: &Path, rel: &Path, e: &tar::Entry<R>) -> Result<()> {
    use std::os::unix::fs::lchown;
    let parent = root.join(rel.parent().unwrap_or(Path::new("")));
    fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let p = resolve_in(root, rel)?.context("its folder vanished")?;
    let h = e.header();
    let mode = h.mode()? & 0o7777;
    let (kind, dev) = match h.entry_type() {
        tar::EntryType::Char => (libc::S_IFCHR, device(h)?),
        tar::EntryType::Block => (libc::S_IFBLK, device(h)?),
        _ => (libc::S_IFIFO, 0),
    };
    let c = std::ffi::CString::new(p.as_os_str().as_bytes())?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::mknod(c.as_ptr(), kind | mode, dev) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("cannot make node {}", p.display()));
    }
    lchown(&p, Some(h.uid()? as u32), Some(h.gid()? as u32))
        .with_context(|| format!("cannot set the owner of {}", p.display()))?;
    // mknod's mode went through the umask.
    set_mode(&p, mode)
}

fn device(h: &tar::Header) -> Result<libc::dev_t> {
    let major = h.device_major()?.unwrap_or(0);
    let minor = h.device_minor()?.unwrap_or(0);
    Ok(libc::makedev(major, minor))
}

// ---------------------------------------------------------------------------
// Running the checks

/// The container's fresh mount points; each must be a real folder in the
/// image (or absent: it is then made).
const MOUNT_POINTS: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("tmp", 0o1777),
];

/// The capabilities root keeps inside the container: podman's default set
/// (containers.conf `default_capabilities`), so a check that needs more
/// (mounting, raw sockets, loading modules) fails here as it would under
/// podman. Hex: 0x800405fb.
const CAPABILITIES: &str = "-all,+chown,+dac_override,+fowner,+fsetid,+kill,+net_bind_service,\
+setfcap,+setgid,+setpcap,+setuid,+sys_chroot";

/// Run by the host's `sh` as PID 1 of the new namespaces: the mounts a
/// container runtime makes, then the checks, chrooted into the tree, as
/// root with a container's capabilities and a clean environment (the one
/// the image's config sets, plus HOME).
/// Arguments: root, checks archive, results folder, host name, capabilities.
const SETUP: &str = r#"set -eu
root=$1 checks=$2 results=$3 name=$4 caps=$5
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$root/run"
mkdir -m 0700 "$root/run/biovm-checks" "$root/run/biovm-results"
tar -xf "$checks" -C "$root/run/biovm-checks"
mount --bind "$results" "$root/run/biovm-results"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
mount -t tmpfs -o mode=0755,nosuid,size=65536k tmpfs "$root/dev"
mknod -m 0666 "$root/dev/null" c 1 3
mknod -m 0666 "$root/dev/zero" c 1 5
mknod -m 0666 "$root/dev/full" c 1 7
mknod -m 0666 "$root/dev/random" c 1 8
mknod -m 0666 "$root/dev/urandom" c 1 9
mknod -m 0666 "$root/dev/tty" c 5 0
mkdir "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
hostname "$name"
ip link set lo up
exec setpriv --bounding-set="$caps" \
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    HOME=/root BIOVM_CONTAINER=1 BIOVM_RESULTS=/run/biovm-results/results.log \
    chroot "$root" /bin/sh -c 'cd /run/biovm-checks && exec sh ./run.sh'
"#;

/// Make sure every mount point is a real folder of the tree.
fn prepare_mount_points(root: &Path) -> Result<()> {
    for (mp, mode) in MOUNT_POINTS {
        let p = root.join(mp);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!(
                "/{mp} in the image is not a folder; the container's /{mp} cannot be mounted there"
            ),
            Err(_) => {
                fs::create_dir(&p).with_context(|| format!("cannot create {}", p.display()))?;
                set_mode(&p, *mode)?;
            }
        }
    }
    Ok(())
}

/// The image's host name (its /etc/hostname), or "biovm".
fn hostname_of(root: &Path) -> String {
    let name = fs::symlink_metadata(root.join("etc/hostname"))
        .ok()
        .filter(|m| m.is_file())
        .and_then(|_| fs::read_to_string(root.join("etc/hostname")).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if valid {
        name
    } else {
        "biovm".into()
    }
}

/// Unpack the container artifact `artifact` (of `format`) into a temporary
/// folder under `run_dir`, run every check of `tools` inside it as a
/// container (see the module documentation) and judge the results as a
/// boot's are. A disk artifact is read instead: its root filesystem is
/// copied out of the disk (no mount) and digested on the way, and with
/// `expected_tree` (the build's tree digest) the report gets a
/// `system/same-tree` result saying whether the tree the checks ran in is
/// the one the build made, so these native checks stand for the disk's
/// boots. `timeout` bounds the run of the checks (not the unpacking);
/// when it passes, every process of the container is killed and the report
/// says so. The report's `firmware` and `accel` are "container" ("native"
/// for a disk), its `format` the format's name; `boot_secs` counts from
/// the start of the unpacking to the first result line; the results the
/// container wrote are kept in `run_dir/<label>.results.log` (the report's
/// `serial_log`). Needs root.
pub fn test_container(
    artifact: &Path,
    format: Format,
    tools: &[Tool],
    run_dir: &Path,
    timeout: Duration,
    expected_tree: Option<&str>,
) -> Result<BootReport> {
    let native = format.is_disk();
    let label = if native {
        format!("{}-native", format.as_str())
    } else {
        format.as_str().to_string()
    };
    crate::doctor::require(crate::doctor::Need::ContainerTest)?;
    fs::create_dir_all(run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    let log_path = run_dir.join(format!("{label}.results.log"));
    let _ = fs::remove_file(&log_path);
    let t0 = Instant::now();
    let work = fsutil::Scratch::new_in(run_dir, &format!("{label}.container"))?;
    let root = work.join("root");
    let tree = if native {
        fs::create_dir(&root).with_context(|| format!("cannot create {}", root.display()))?;
        Some(super::tree::disk_digest(
            artifact,
            format,
            work.path(),
            Some(&root),
        )?)
    } else {
        unpack_rootfs(artifact, format, &root)?;
        None
    };
    log::info!(
        "{}: unpacked in {:.1} s",
        artifact.display(),
        t0.elapsed().as_secs_f64()
    );
    prepare_mount_points(&root)
        .with_context(|| format!("cannot run {} as a container", artifact.display()))?;
    let checks = work.join("checks.tar");
    write_checks_drive(tools, &checks)?;
    let results_dir = work.join("results");
    fs::create_dir(&results_dir)
        .with_context(|| format!("cannot create {}", results_dir.display()))?;
    let results = results_dir.join("results.log");

    let mut report = BootReport {
        artifact: artifact
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        format: format.as_str(),
        firmware: if native { "native" } else { "container" },
        bus: "namespaces",
        prepare_secs: t0.elapsed().as_secs_f64(),
        accel: if native { "native" } else { "container" },
        accel_note: None,
        boot_secs: None,
        first_check_secs: None,
        guest_uptime_at_start: None,
        total_secs: 0.0,
        results: Vec::new(),
        error: None,
        serial_log: log_path.clone(),
        boot_analysis: Default::default(),
        boot_stages: Vec::new(),
        disk_sha256: None,
        same_boot_as: None,
    };
    let mut cmd = Cmd::new("unshare");
    // --kill-child: when unshare dies (or is killed at the timeout), the
    // namespace's PID 1 gets SIGKILL, and with it every process inside.
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--fork",
        "--kill-child",
        "--net",
        "--ipc",
        "--uts",
        "--",
        "sh",
        "-c",
        SETUP,
        "biovm-container",
    ])
    .arg(&root)
    .arg(&checks)
    .arg(&results_dir)
    .arg(hostname_of(&root))
    .arg(CAPABILITIES);
    let run_t0 = Instant::now();
    let mut child = cmd.spawn()?;
    let mut tail = super::ResultsTail::new(&results);
    let mut done = false;
    loop {
        let exited = child.try_wait();
        done |= tail.pump(&mut report, tools, t0, false);
        if done || exited.is_some() {
            break;
        }
        if run_t0.elapsed() > timeout {
            report.error = Some(format!(
                "the checks did not finish within {} s; the container was stopped",
                timeout.as_secs()
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if done {
        // run.sh is the namespace's PID 1: its end ends the container.
        if child.wait_timeout(Duration::from_secs(10)).is_none() {
            log::warn!("{label} container did not end after its checks; stopping it");
        }
    } else if report.error.is_none() {
        let status = child
            .try_wait()
            .map(crate::cmd::describe_status)
            .unwrap_or_default();
        let tail = child.stderr_tail();
        report.error = Some(format!(
            "the container ended ({status}) before the checks finished: {}",
            tail.lines().last().unwrap_or("it wrote nothing on stderr")
        ));
    }
    child.kill();
    report.total_secs = t0.elapsed().as_secs_f64();
    report.mark_not_run(tools);
    if let (Some(got), Some(want)) = (&tree, expected_tree) {
        report.results.push(super::same_tree_result(want, got));
    }
    match fs::rename(&results, &log_path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot move {} to {}",
                    results.display(),
                    log_path.display()
                )
            })
        }
    }
    let t_rm = Instant::now();
    drop(work);
    log::info!(
        "{}: unpacked tree removed in {:.1} s",
        artifact.display(),
        t_rm.elapsed().as_secs_f64()
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{self, FormatContext};
    use crate::manifest::ToolCheck;
    use crate::smoke::{CheckOutcome, CheckResult};
    use std::collections::BTreeMap;
    use std::os::unix::fs::{symlink, MetadataExt};

    /// Host programs run.sh and the test checks need.
    const PROGRAMS: &[&str] = &[
        "sh", "base64", "cat", "cp", "cut", "date", "head", "mkdir", "mktemp", "sleep", "stty",
        "timeout", "wc", "xargs", "flock", "nproc",
    ];

    /// A tiny root filesystem: the host's programs above with their
    /// libraries (as `ldd` lists them), in a merged-/usr layout.
    fn tiny_root(at: &Path) {
        for d in [
            "usr/bin",
            "usr/lib",
            "usr/lib64",
            "etc",
            "root",
            "tmp",
            "dev",
            "proc",
        ] {
            fs::create_dir_all(at.join(d)).unwrap();
        }
        for l in ["bin", "lib", "lib64"] {
            symlink(format!("usr/{l}"), at.join(l)).unwrap();
        }
        fs::write(at.join("etc/hostname"), "tiny-test\n").unwrap();
        let mut libs = std::collections::BTreeSet::new();
        for p in PROGRAMS {
            let host = which::which(p).unwrap();
            fs::copy(&host, at.join("usr/bin").join(p)).unwrap();
            let ldd = Cmd::new("ldd").arg(&host).output().unwrap();
            for w in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
                libs.insert(w.to_string());
            }
        }
        for l in libs {
            let dest = at.join(l.trim_start_matches('/'));
            fs::create_dir_all(dest.parent().unwrap()).unwrap();
            fs::copy(&l, &dest).unwrap();
        }
    }

    /// Every container artifact of one tree, written by biovm's own writers.
    struct Artifacts {
        _dir: tempfile::TempDir,
        root: PathBuf,
        files: Vec<(Format, PathBuf)>,
    }

    fn artifacts() -> Artifacts {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        tiny_root(&root);
        let ctx = FormatContext::new("tiny", "1.0", "seed", 1_700_000_000);
        let out = |n: &str| dir.path().join(n);
        formats::write_oci_layout(&root, &out("tiny.oci"), &ctx).unwrap();
        formats::write_docker_archive(&root, &out("tiny.docker.tar"), &ctx).unwrap();
        formats::write_sif(&root, &out("tiny.sif"), &ctx).unwrap();
        formats::write_rootfs_tarball(&root, &out("tiny.rootfs.tar.gz"), &ctx).unwrap();
        Artifacts {
            files: vec![
                (Format::Oci, out("tiny.oci")),
                (Format::DockerArchive, out("tiny.docker.tar")),
                (Format::Sif, out("tiny.sif")),
                (Format::Tarball, out("tiny.rootfs.tar.gz")),
            ],
            root,
            _dir: dir,
        }
    }

    /// Every path of a tree with its type, mode, owner and content (or
    /// link target), for comparing trees.
    fn listing(root: &Path) -> BTreeMap<String, String> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                let m = fs::symlink_metadata(&p).unwrap();
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                let what = if m.file_type().is_symlink() {
                    format!("link {}", fs::read_link(&p).unwrap().display())
                } else if m.is_dir() {
                    walk(root, &p, out);
                    "dir".into()
                } else {
                    format!("file {}", fsutil::sha256_file(&p).unwrap())
                };
                out.insert(
                    rel,
                    format!("{what} {:o} {}:{}", m.mode(), m.uid(), m.gid()),
                );
            }
        }
        let mut out = BTreeMap::new();
        walk(root, root, &mut out);
        out
    }

    #[test]
    fn every_format_unpacks_to_the_tree_it_was_made_from() {
        let a = artifacts();
        let want = listing(&a.root);
        assert!(want.contains_key("usr/bin/sh") && want["lib"].starts_with("link usr/lib"));
        let d = tempfile::tempdir().unwrap();
        for (f, file) in &a.files {
            let dest = d.path().join(f.as_str());
            unpack_rootfs(file, *f, &dest).unwrap();
            assert_eq!(listing(&dest), want, "{}", f.as_str());
        }
        // Into a folder that is not empty: refused, naming it.
        let err = unpack_rootfs(&a.files[0].1, Format::Oci, &d.path().join("oci")).unwrap_err();
        assert!(format!("{err:#}").contains("is not empty"), "{err:#}");
    }

    #[test]
    fn broken_artifacts_are_refused_naming_them() {
        let a = artifacts();
        let d = tempfile::tempdir().unwrap();
        // A layer blob replaced by another valid layer: its digest differs.
        let oci = d.path().join("t.oci");
        copy_dir(&a.files[0].1, &oci);
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(oci.join("index.json")).unwrap()).unwrap();
        let m = index["manifests"][0]["digest"].as_str().unwrap();
        let manifest: ImageManifest = serde_json::from_slice(&read_blob(&oci, m).unwrap()).unwrap();
        let (blob, _) = blob_path(&oci, &manifest.layers[0].digest).unwrap();
        let other = d.path().join("other");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("f"), "x").unwrap();
        let (gz, _) = formats::layer::write_layer_gz(&other, &[], 0, Vec::new()).unwrap();
        fs::write(&blob, gz).unwrap();
        let err = unpack_rootfs(&oci, Format::Oci, &d.path().join("u1")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("cannot unpack the oci artifact") && msg.contains("t.oci"),
            "{msg}"
        );
        assert!(
            msg.contains("layer 1 of 1") && msg.contains("its blob has sha256"),
            "{msg}"
        );

        // Not a SIF at all, and a SIF without a system partition.
        let fake = d.path().join("fake.sif");
        fs::write(&fake, vec![0u8; 4096]).unwrap();
        let err = unpack_rootfs(&fake, Format::Sif, &d.path().join("u2")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("fake.sif") && msg.contains("no SIF_MAGIC"),
            "{msg}"
        );
        let mut sif = fs::read(&a.files[2].1).unwrap();
        let third = 4096 + 2 * SIF_DESCR_LEN;
        sif[third + 4] = 0; // the partition's descriptor: unused
        fs::write(&fake, sif).unwrap();
        let err = unpack_rootfs(&fake, Format::Sif, &d.path().join("u3")).unwrap_err();
        assert!(
            format!("{err:#}").contains("holds no primary system partition"),
            "{err:#}"
        );

        // A docker-archive whose manifest names a missing layer.
        let t = d.path().join("t.docker.tar");
        let mut b = tar::Builder::new(File::create(&t).unwrap());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, data).unwrap();
        };
        add(
            "manifest.json",
            br#"[{"Config":"c.json","RepoTags":[],"Layers":["x/layer.tar"]}]"#,
        );
        add(
            "c.json",
            br#"{"rootfs":{"type":"layers","diff_ids":["sha256:00"]}}"#,
        );
        b.finish().unwrap();
        drop(b);
        let err = unpack_rootfs(&t, Format::DockerArchive, &d.path().join("u4")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("t.docker.tar") && msg.contains("no member x/layer.tar"),
            "{msg}"
        );

        let err = unpack_rootfs(&t, Format::Qcow2, &d.path().join("u5")).unwrap_err();
        assert!(err.to_string().contains("not a container format"), "{err}");
    }

    fn copy_dir(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &to.join(e.file_name()));
            } else {
                fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }

    /// A tar layer from (path, content) pairs: a trailing `/` makes a
    /// folder, `-> target` a symbolic link.
    fn layer(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, content) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(1);
            h.set_uid(0);
            h.set_gid(0);
            if path.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, path, io::empty()).unwrap();
            } else if let Some(target) = content.strip_prefix("-> ") {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target).unwrap();
            } else {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(content.len() as u64);
                b.append_data(&mut h, path, content.as_bytes()).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    /// An OCI layout with these layers (the first gzip-compressed, the
    /// others plain tar).
    fn oci_with_layers(dir: &Path, layers: &[Vec<u8>]) {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        let put = |bytes: &[u8]| {
            let hex = fsutil::hex(&Sha256::digest(bytes));
            fs::write(blobs.join(&hex), bytes).unwrap();
            format!("sha256:{hex}")
        };
        let mut descs = Vec::new();
        for (i, l) in layers.iter().enumerate() {
            let (bytes, mt) = if i == 0 {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                io::Write::write_all(&mut gz, l).unwrap();
                (
                    gz.finish().unwrap(),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )
            } else {
                (l.clone(), "application/vnd.oci.image.layer.v1.tar")
            };
            descs.push(
                serde_json::json!({"mediaType": mt, "digest": put(&bytes), "size": bytes.len()}),
            );
        }
        let config = put(b"{}");
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
            "layers": descs,
        });
        let m = serde_json::to_vec(&manifest).unwrap();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(&m), "size": m.len(),
                 "platform": {"architecture": "amd64", "os": "linux"}},
            ],
        });
        fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    }

    #[test]
    fn layers_apply_in_order_with_whiteouts_and_opaque_folders() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("precious"), "untouched").unwrap();
        let outside_link = format!("-> {}", outside.join("precious").display());
        let lower = layer(&[
            ("a/", ""),
            ("a/keep", "k"),
            ("a/gone", "g"),
            ("b/", ""),
            ("b/old", "o"),
            ("b/sub/", ""),
            ("b/sub/old2", "o"),
            ("c/", ""),
            ("c/x", "x"),
            ("etc/", ""),
            ("etc/f", "f"),
            ("link", &outside_link),
        ]);
        let upper = layer(&[
            ("a/.wh.gone", ""),
            // Written before the opaque marker, in the same layer: kept.
            ("b/new", "n"),
            ("b/.wh..wh..opq", ""),
            ("c", "now a file"),
            // Replaces the symbolic link, never writes through it.
            ("link", "inside"),
            (".wh.etc", ""),
        ]);
        let oci = d.path().join("two.oci");
        oci_with_layers(&oci, &[lower, upper]);
        let dest = d.path().join("root");
        unpack_rootfs(&oci, Format::Oci, &dest).unwrap();
        let l = listing(&dest);
        let names: Vec<&str> = l.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["a", "a/keep", "b", "b/new", "c", "link"]);
        assert_eq!(fs::read_to_string(dest.join("c")).unwrap(), "now a file");
        assert_eq!(fs::read_to_string(dest.join("link")).unwrap(), "inside");
        assert_eq!(
            fs::read_to_string(outside.join("precious")).unwrap(),
            "untouched"
        );
    }

    #[test]
    fn layers_cannot_reach_out_of_the_root_through_a_link() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("victim"), "untouched").unwrap();
        let to_outside = format!("-> {}", outside.display());
        for (case, upper) in [
            ("whiteout", layer(&[("evil/.wh.victim", "")])),
            ("file", layer(&[("evil/victim", "overwritten")])),
            // An opaque marker below a link empties nothing (the link is
            // not a folder of the image).
            ("opaque", layer(&[("evil/.wh..wh..opq", "")])),
        ] {
            let oci = d.path().join(format!("{case}.oci"));
            oci_with_layers(&oci, &[layer(&[("evil", &to_outside)]), upper]);
            let r = unpack_rootfs(&oci, Format::Oci, &d.path().join(case));
            if case == "opaque" {
                r.unwrap();
            } else {
                let msg = format!("{:#}", r.unwrap_err());
                assert!(msg.contains(&format!("{case}.oci")), "{case}: {msg}");
                assert!(
                    msg.contains("leads out of the root") || msg.contains("outside of destination"),
                    "{case}: {msg}"
                );
            }
            assert_eq!(
                fs::read_to_string(outside.join("victim")).unwrap(),
                "untouched",
                "{case}"
            );
        }
    }

    fn tool(name: &str, command: &str, expect: &str) -> Tool {
        Tool {
            name: name.into(),
            category: "test".into(),
            check: ToolCheck {
                command: command.into(),
                expect: expect.into(),
                status: 0,
                timeout: 30,
                data: vec![],
            },
            source: None,
        }
    }

    #[test]
    fn checks_pass_and_fail_inside_every_container_format() {
        let a = artifacts();
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("reads.txt");
        fs::write(&data, "read1 planted\n").unwrap();
        let mut functional = tool("reader/count", "cat reads.txt; wc -l < reads.txt", "^1$");
        functional.check.data = vec![crate::manifest::DataFile::read(&data).unwrap()];
        let tools = vec![
            tool("greet", "echo hello; echo to-stderr >&2", "^hello$"),
            tool("wrong", "echo version 1.0", r"^version 9\."),
            functional,
            // Private namespaces: only loopback, a fresh PID space, the
            // image's host name, a writable /tmp and /dev/null.
            // podman's default capabilities, nothing more.
            tool(
                "capabilities",
                "cat /proc/self/status",
                r"^CapEff:\s+00000000800405fb$",
            ),
            tool(
                "isolated",
                "wc -l < /proc/net/dev; cut -d' ' -f1 /proc/self/stat; cat /proc/sys/kernel/hostname; \
                 echo t > /tmp/t && cat /tmp/t; echo x > /dev/null && echo null-ok",
                r"\A3\n([1-9]|[1-9][0-9])\ntiny-test\nt\nnull-ok\z",
            ),
        ];
        for (f, file) in &a.files {
            let run = d.path().join("run");
            let r = test_container(file, *f, &tools, &run, Duration::from_secs(120), None).unwrap();
            let label = f.as_str();
            assert_eq!((r.firmware, r.format), ("container", label));
            assert!(r.error.is_none(), "{label}: {:?}", r.error);
            let by_name: BTreeMap<&str, &CheckResult> =
                r.results.iter().map(|c| (c.tool.as_str(), c)).collect();
            assert_eq!(by_name.len(), 5, "{label}: {:?}", r.results);
            for ok in ["greet", "reader/count", "isolated", "capabilities"] {
                assert!(
                    by_name[ok].outcome.passed(),
                    "{label} {ok}: {:?} {:?}",
                    by_name[ok].outcome,
                    by_name[ok].output
                );
            }
            assert_eq!(by_name["greet"].output, "hello\nto-stderr");
            assert!(matches!(
                by_name["wrong"].outcome,
                CheckOutcome::NoMatch { .. }
            ));
            let failures = super::super::report::failures(std::slice::from_ref(&r));
            assert_eq!(
                failures,
                vec![format!(
                    "wrong in {} under container: FAILED: output does not match /^version 9\\./",
                    file.file_name().unwrap().to_string_lossy()
                )]
            );
            // The table's columns line up, whatever the format's name.
            let table = super::super::report::table(std::slice::from_ref(&r));
            let lines: Vec<&str> = table.lines().collect();
            let col = lines[0].find("TOOL").unwrap();
            let row = lines.iter().find(|l| l.contains("greet")).unwrap();
            assert_eq!(row.find("greet"), Some(col), "{table}");
            // Only the results are left behind.
            let left: Vec<String> = fs::read_dir(&run)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(left, vec![format!("{label}.results.log")], "{label}");
            fs::remove_dir_all(&run).unwrap();
        }
    }

    #[test]
    fn an_image_without_a_shell_fails_saying_why() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        fs::create_dir_all(tree.join("etc")).unwrap();
        let file = d.path().join("empty.rootfs.tar.gz");
        let ctx = FormatContext::new("empty", "1", "seed", 0);
        formats::write_rootfs_tarball(&tree, &file, &ctx).unwrap();
        let tools = vec![tool("greet", "echo hello", "^hello$")];
        let run = d.path().join("run");
        let r = test_container(
            &file,
            Format::Tarball,
            &tools,
            &run,
            Duration::from_secs(60),
            None,
        )
        .unwrap();
        let err = r.error.clone().unwrap_or_default();
        assert!(
            err.starts_with("the container ended (exit status 127) before the checks finished")
                && err.contains("/bin/sh"),
            "{err}"
        );
        assert_eq!(r.results[0].outcome, CheckOutcome::NotRun);
        assert_eq!(fs::read_dir(&run).unwrap().count(), 0, "nothing left");
    }

    #[test]
    fn a_hung_check_is_stopped_at_the_timeout_with_its_whole_container() {
        let a = artifacts();
        let d = tempfile::tempdir().unwrap();
        let marker = format!("hang-{}", std::process::id());
        let tools = vec![
            tool("first", "echo ok", "^ok$"),
            tool(&marker, "sleep 1000 & sleep 1000", "never"),
            tool("after", "echo ok", "^ok$"),
        ];
        let (f, file) = &a.files[3];
        let t = Instant::now();
        let r = test_container(file, *f, &tools, d.path(), Duration::from_secs(3), None).unwrap();
        assert!(t.elapsed() < Duration::from_secs(60));
        let err = r.error.clone().unwrap_or_default();
        assert!(err.contains("did not finish within 3 s"), "{err}");
        let outcomes: BTreeMap<&str, &CheckOutcome> = r
            .results
            .iter()
            .map(|c| (c.tool.as_str(), &c.outcome))
            .collect();
        // With two or more cores the checks run two at once, so the one
        // after the hung check ran beside it; with one, it never ran.
        let after = if crate::smoke::default_jobs() > 1 {
            CheckOutcome::Passed
        } else {
            CheckOutcome::NotRun
        };
        assert_eq!(
            outcomes,
            BTreeMap::from([
                ("first", &CheckOutcome::Passed),
                (marker.as_str(), &CheckOutcome::NotRun),
                ("after", &after),
            ])
        );
        assert!(!r.passed());
        // No process of the container survives (the check's script path
        // carries the marker).
        std::thread::sleep(Duration::from_millis(500));
        for e in fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmd) = fs::read(e.path().join("cmdline")) {
                assert!(
                    !String::from_utf8_lossy(&cmd).contains(&marker),
                    "process {} survived",
                    e.file_name().to_string_lossy()
                );
            }
        }
        let left: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec!["tarball.results.log".to_string()]);
    }
}
