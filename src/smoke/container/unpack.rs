//! Unpacking a container artifact into a root tree, as a container runtime
//! would: [`unpack_rootfs`] reads each format itself: the OCI layout
//! through its `index.json`, manifest and layers (every blob checked
//! against its sha256), the docker-archive through its `manifest.json` and
//! config (every layer checked against its `diff_id`), the tarball
//! directly, and the SIF's primary system partition (a squashfs, found by
//! [`crate::formats::sif::system_partition`]) with `unsquashfs`. Layers
//! are applied in order with the OCI whiteout rules (`.wh.<name>` removes a
//! lower layer's file, `.wh..wh..opq` empties a folder of what lower layers
//! put there; OCI image-spec `layer.md`). Nothing is ever written or
//! removed through a symbolic link that leads out of the tree.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::cmd::Cmd;
use crate::config::Format;
use crate::fsutil;
use crate::smoke::tree::TreeRecords;

/// Unpack the root filesystem of the container artifact `artifact` (of
/// `format`) into `dest`, which must not exist or be empty. Must run as
/// root (owners, device nodes).
pub fn unpack_rootfs(artifact: &Path, format: Format, dest: &Path) -> Result<()> {
    unpack_recording(artifact, format, dest, &mut None)
}

/// [`unpack_rootfs`], and the digest of the tree unpacked as
/// `tree::container_digest` gives it: from each entry as it was written
/// (see `tree::TreeRecords`), or, when the unpack removed or redirected
/// anything (whiteouts, a path replaced) or cannot say what it wrote (a
/// SIF, which `unsquashfs` unpacks), by reading the tree again; true
/// when it came from the records.
pub fn unpack_and_digest(artifact: &Path, format: Format, dest: &Path) -> Result<(String, bool)> {
    let mut records = (format != Format::Sif).then(TreeRecords::default);
    unpack_recording(artifact, format, dest, &mut records)?;
    match records.and_then(|r| r.container_digest(format)) {
        Some(d) => Ok((d, true)),
        None => Ok((crate::smoke::tree::container_digest(dest, format)?, false)),
    }
}

/// The digest of the tree the container artifact `artifact` (of `format`)
/// unpacks to, as [`unpack_and_digest`] gives it, read from its layers as
/// they stream past (every blob still checked against its digest), with
/// nothing written: each entry as its archive describes it (see
/// `tree::TreeRecords::describe`). None when the stream alone cannot say
/// what the unpacked tree would hold: a later layer that removes or
/// replaces what an earlier one put there (whiteouts, a path given twice),
/// an entry kind the unpack would not write as it is, or a SIF (a
/// squashfs, not a stream). Its tree is then unpacked to be known.
pub fn stream_digest(artifact: &Path, format: Format) -> Result<Option<String>> {
    not_a_disk(artifact, format)?;
    if format == Format::Sif {
        return Ok(None);
    }
    let mut records = TreeRecords::default();
    let excludes = crate::formats::layer::excludes_of(format);
    let mut with = Layers::Describe(&mut records, excludes);
    read_layers(artifact, format, &mut with).with_context(|| {
        format!(
            "cannot read the {} artifact {}",
            format.as_str(),
            artifact.display()
        )
    })?;
    Ok(records.container_digest(format))
}

/// Refuse a disk format where a container format must be.
fn not_a_disk(artifact: &Path, format: Format) -> Result<()> {
    if format.is_disk() {
        bail!(
            "{}: {} is a disk format, not a container format",
            artifact.display(),
            format.as_str()
        );
    }
    Ok(())
}

/// What is done with each layer of an artifact: applied to a folder (the
/// entries written recorded, when records are given), or only described
/// to records.
enum Layers<'a> {
    Apply {
        dest: &'a Path,
        records: &'a mut Option<TreeRecords>,
    },
    /// With the paths the format's writer leaves out: an entry there
    /// loses the records (the digest would not count it, but an unpack
    /// would write it, and through it, if it is a link).
    Describe(&'a mut TreeRecords, &'a [&'a str]),
}

/// Read each layer of `artifact` (a layered container format) in order,
/// doing `with` with it.
fn read_layers(artifact: &Path, format: Format, with: &mut Layers) -> Result<()> {
    match format {
        Format::Oci => oci_layers(artifact, with),
        Format::DockerArchive => docker_archive_layers(artifact, with),
        Format::Sif => bail!("a SIF holds a squashfs, not layers"),
        _ => File::open(artifact)
            .context("cannot open it")
            .and_then(|f| read_layer(f, with, false, (None, None))),
    }
}

/// [`unpack_rootfs`], recording each entry written in `records`.
fn unpack_recording(
    artifact: &Path,
    format: Format,
    dest: &Path,
    records: &mut Option<TreeRecords>,
) -> Result<()> {
    not_a_disk(artifact, format)?;
    fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    if fs::read_dir(dest)
        .with_context(|| format!("cannot read {}", dest.display()))?
        .next()
        .is_some()
    {
        bail!("cannot unpack into {}: it is not empty", dest.display());
    }
    let r = match format {
        Format::Sif => unpack_sif(artifact, dest),
        _ => read_layers(artifact, format, &mut Layers::Apply { dest, records }),
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

pub(super) fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", p.display()))
}

// ---------------------------------------------------------------------------
// OCI image layout

/// A content descriptor (OCI `descriptor.md`).
#[derive(Debug, Deserialize)]
pub(super) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    pub(super) digest: String,
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
pub(super) struct ImageManifest {
    pub(super) layers: Vec<Descriptor>,
}

const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The path of a blob in an OCI layout, from its `sha256:<hex>` digest
/// (only sha256 is accepted, and only 64 hex digits: no path tricks).
pub(super) fn blob_path(dir: &Path, digest: &str) -> Result<(PathBuf, String)> {
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("unsupported digest {digest} (only sha256)"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("malformed digest {digest}");
    }
    Ok((dir.join("blobs/sha256").join(hex), hex.to_ascii_lowercase()))
}

/// A small blob (index, manifest, config), checked against its digest.
pub(super) fn read_blob(dir: &Path, digest: &str) -> Result<Vec<u8>> {
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

fn oci_layers(dir: &Path, with: &mut Layers) -> Result<()> {
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
        read_layer(f, with, true, (Some(&hex), None)).with_context(|| {
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

fn docker_archive_layers(file: &Path, with: &mut Layers) -> Result<()> {
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
        read_layer(read_member(layer)?, with, true, (None, Some(hex)))
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

fn unpack_sif(file: &Path, dest: &Path) -> Result<()> {
    let (offset, _) = crate::formats::sif::system_partition(file)?;
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

/// Read one layer (a tar, gzip-compressed or not), with whiteouts or not,
/// doing `with` with it. When given, `blob_sha` is checked against the
/// stream as read and `tar_sha` against the uncompressed tar.
fn read_layer(
    raw: impl Read,
    with: &mut Layers,
    whiteouts: bool,
    (blob_sha, tar_sha): (Option<&str>, Option<&str>),
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
        match with {
            Layers::Apply { dest, records } => {
                apply_tar(&mut tar, dest, whiteouts, records.as_mut())?
            }
            Layers::Describe(records, excludes) => {
                describe_tar(&mut tar, (whiteouts, excludes), records)?
            }
        }
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
/// what lower layers put there instead of being unpacked. Each entry
/// written is recorded in `records` (lost on any removal, or an entry
/// whose folder is a link).
fn apply_tar(
    r: impl Read,
    root: &Path,
    whiteouts: bool,
    mut records: Option<&mut TreeRecords>,
) -> Result<()> {
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
    each_entry(&mut ar, |mut e, path, rel| {
        let what = || format!("entry {}", path.display());
        let name = rel
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        if whiteouts && name.starts_with(b".wh.") {
            if let Some(r) = records.as_deref_mut() {
                r.lose();
            }
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
            return Ok(true);
        }
        let kind = e.header().entry_type();
        // Replace whatever a lower layer left at this path, never writing
        // through it (it may be a symbolic link), unless both are folders.
        if let Some(p) = resolve_in(&root, &rel).with_context(what)? {
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() && kind.is_dir() => {}
                Ok(_) => {
                    fsutil::remove_tree(&p).with_context(what)?;
                    if let Some(r) = records.as_deref_mut() {
                        r.lose();
                    }
                }
                Err(_) => {}
            }
        }
        match kind {
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                make_node(&root, &rel, &e).with_context(what)?
            }
            tar::EntryType::XGlobalHeader => return Ok(true),
            _ => {
                if !e.unpack_in(&root).with_context(what)? {
                    bail!("{} leads out of the root", what());
                }
            }
        }
        if let Some(r) = records.as_deref_mut() {
            // Written through a link (an earlier entry's) is not where its
            // name says: the tree is read instead.
            match resolve_in(&root, &rel).with_context(what)? {
                Some(at) if at == root.join(&rel) => r.record(&root, &rel).with_context(what)?,
                _ => r.lose(),
            }
        }
        if whiteouts {
            written.insert(rel);
        }
        Ok(true)
    })
}

/// Do `f` with each entry of the archive `ar` but its root's, its path as
/// named and relative to the root, until `f` says to stop (false).
fn each_entry<R: Read>(
    ar: &mut tar::Archive<R>,
    mut f: impl FnMut(tar::Entry<'_, R>, &Path, PathBuf) -> Result<bool>,
) -> Result<()> {
    for e in ar.entries().context("it is not a tar archive")? {
        let e = e.context("cannot read the next entry")?;
        let path = e.path().context("entry with a bad path")?.into_owned();
        let Some(rel) = relative(&path)? else {
            continue;
        };
        if !f(e, &path, rel)? {
            break;
        }
    }
    Ok(())
}

/// Describe each entry of the tar `r` to `records`, as [`apply_tar`] would
/// write it (nothing is written). What the description could get wrong
/// loses them: whiteouts, pax owners (which the unpack does not apply),
/// kinds it does not write as they are, an entry at a path of `excludes`
/// (the format's writer never makes one), a name ending in `/` in an old
/// (not ustar) header that is no folder's (the unpack makes a folder), a
/// hard link to an absolute or outward name.
fn describe_tar(
    r: impl Read,
    (whiteouts, excludes): (bool, &[&str]),
    records: &mut TreeRecords,
) -> Result<()> {
    use crate::smoke::tree::Described;
    each_entry(&mut tar::Archive::new(r), |mut e, path, rel| {
        let what = || format!("entry {}", path.display());
        let name = rel.file_name().map(OsStrExt::as_bytes).unwrap_or_default();
        let old_folder_name = e.header().as_ustar().is_none()
            && e.path_bytes().ends_with(b"/")
            && e.header().entry_type() != tar::EntryType::Directory;
        if old_folder_name || crate::formats::layer::is_excluded(&rel.to_string_lossy(), excludes) {
            records.lose();
            return Ok(false);
        }
        let pax_owner = e
            .pax_extensions()
            .with_context(what)?
            .into_iter()
            .flatten()
            .any(|x| x.is_ok_and(|x| matches!(x.key(), Ok("uid" | "gid"))));
        if (whiteouts && name.starts_with(b".wh.")) || pax_owner {
            records.lose();
            return Ok(false);
        }
        let h = e.header();
        let kind = h.entry_type();
        let mode = h.mode().with_context(what)? & 0o7777;
        let (uid, gid) = (h.uid().with_context(what)?, h.gid().with_context(what)?);
        let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
            records.lose();
            return Ok(false);
        };
        let link = e.link_name_bytes().map(|l| l.into_owned());
        let described = match kind {
            tar::EntryType::Directory => Described::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut sha = Sha256::new();
                let size = io::copy(&mut e, &mut sha).with_context(what)?;
                Described::File { sha, size }
            }
            tar::EntryType::Symlink => Described::Symlink(link.as_deref().unwrap_or_default()),
            tar::EntryType::Link => {
                let target = link.as_deref().unwrap_or_default();
                let t = Path::new(std::ffi::OsStr::from_bytes(target));
                match relative(t).ok().flatten().filter(|_| !t.is_absolute()) {
                    Some(t) => {
                        records.describe(&rel, Described::HardLink(&t), mode, uid, gid);
                        return Ok(true);
                    }
                    None => {
                        records.lose();
                        return Ok(false);
                    }
                }
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                Described::Special
            }
            tar::EntryType::XGlobalHeader => return Ok(true),
            _ => {
                records.lose();
                return Ok(false);
            }
        };
        records.describe(&rel, described, mode, uid, gid);
        Ok(true)
    })
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
