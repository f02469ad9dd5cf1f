//! The one deterministic tar writer for a root filesystem tree, shared by the
//! OCI layout, the docker-archive and the rootfs tarball.
//!
//! Follows the OCI Image Format Specification v1.0, "Image Layer
//! Filesystem Changeset" (`layer.md`): a tar of the tree with relative
//! paths, file types (regular, directory, symlink, hard link, character and
//! block devices, FIFOs), mode, uid/gid kept as in the tree, and extended
//! attributes as PAX `SCHILY.xattr.*` records. For reproducibility
//! (reproducible-builds.org "Archive metadata"): entries are sorted by
//! byte-wise name, depth first; user and group names are empty; mtimes are
//! clamped to SOURCE_DATE_EPOCH; sockets are left out (they cannot be
//! archived); the second and later names of a multiply linked file are hard
//! links to the first one written.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use anyhow::{Context, Result};
use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};

use super::HashWriter;

/// Paths left out of container images (relative to the root). Containers
/// run on the host's kernel and are not booted by firmware, so the kernel
/// and initramfs (`boot/*`, the `vmlinuz`/`initrd.img` links at the root),
/// kernel modules, firmware blobs and the GRUB bootloader modules are dead
/// weight. A pattern ending in `/*` keeps the folder itself (an empty
/// mount point) and leaves out what is inside; any other pattern leaves out
/// the path and everything below it. Both the merged-/usr and the legacy
/// spellings are listed: on merged-/usr trees `lib` is a symlink, which the
/// walk does not follow, so only the `usr/` forms match there.
pub(crate) const CONTAINER_EXCLUDES: &[&str] = &[
    "boot/*",
    "vmlinuz",
    "vmlinuz.old",
    "initrd.img",
    "initrd.img.old",
    "lib/modules/*",
    "usr/lib/modules/*",
    "lib/firmware",
    "usr/lib/firmware",
    "usr/lib/grub",
];

/// What the container artifact `format` leaves out of the tree: a rootfs
/// tarball is the whole tree, the images containers run leave out
/// [`CONTAINER_EXCLUDES`].
pub(crate) fn excludes_of(format: crate::config::Format) -> &'static [&'static str] {
    match format {
        crate::config::Format::Tarball => &[],
        _ => CONTAINER_EXCLUDES,
    }
}

/// Whether `rel` (relative, `/`-separated, no leading `./`) is excluded.
pub(crate) fn is_excluded(rel: &str, excludes: &[&str]) -> bool {
    excludes.iter().any(|p| match p.strip_suffix("/*") {
        Some(dir) => {
            rel.len() > dir.len() + 1 && rel.starts_with(dir) && rel.as_bytes()[dir.len()] == b'/'
        }
        None => rel == *p || (rel.starts_with(p) && rel.as_bytes().get(p.len()) == Some(&b'/')),
    })
}

/// What a compressed layer is known by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDigests {
    /// sha256 hex of the uncompressed tar (OCI `diff_id`).
    pub(crate) diff_id: String,
    /// Size of the uncompressed tar.
    pub(crate) tar_size: u64,
    /// sha256 hex of the compressed blob.
    pub(crate) digest: String,
    /// Size of the compressed blob.
    pub(crate) size: u64,
}

/// Write the tar of `rootfs` (minus `excludes`) to `w`, gzip-compressed
/// with a fixed gzip header (mtime 0, no name), and return the digests of
/// both the tar and the compressed stream.
pub(crate) fn write_layer_gz<W: Write>(
    rootfs: &Path,
    excludes: &[&str],
    source_date_epoch: u64,
    w: W,
) -> Result<(W, LayerDigests)> {
    let outer = HashWriter::new(w);
    let gz: GzEncoder<HashWriter<W>> = GzBuilder::new()
        .mtime(0)
        .write(outer, Compression::default());
    let inner = HashWriter::new(gz);
    let inner = write_layer_tar(rootfs, excludes, source_date_epoch, inner)?;
    let (gz, diff_id, tar_size) = inner.finish();
    let outer = gz.finish().context("cannot finish gzip stream")?;
    let (w, digest, size) = outer.finish();
    Ok((
        w,
        LayerDigests {
            diff_id,
            tar_size,
            digest,
            size,
        },
    ))
}

/// Write the tar of `rootfs` (minus `excludes`) to `w`.
pub(crate) fn write_layer_tar<W: Write>(
    rootfs: &Path,
    excludes: &[&str],
    source_date_epoch: u64,
    w: W,
) -> Result<W> {
    let mut t = LayerTar {
        b: tar::Builder::new(w),
        clamp: source_date_epoch,
        links: HashMap::new(),
        excludes,
    };
    t.dir(rootfs, "")?;
    t.b.into_inner().context("cannot finish layer tar")
}

struct LayerTar<'a, W: Write> {
    b: tar::Builder<W>,
    clamp: u64,
    /// (dev, inode) of multiply linked files already written -> their name.
    links: HashMap<(u64, u64), String>,
    excludes: &'a [&'a str],
}

impl<W: Write> LayerTar<'_, W> {
    fn dir(&mut self, abs: &Path, rel: &str) -> Result<()> {
        let mut names: Vec<_> = fs::read_dir(abs)
            .with_context(|| format!("cannot read {}", abs.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("cannot read {}", abs.display()))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let child_abs = abs.join(&name);
            let name = name.to_string_lossy();
            let child_rel = if rel.is_empty() {
                name.into_owned()
            } else {
                format!("{rel}/{name}")
            };
            if is_excluded(&child_rel, self.excludes) {
                continue;
            }
            let meta = fs::symlink_metadata(&child_abs)
                .with_context(|| format!("cannot stat {}", child_abs.display()))?;
            self.entry(&child_abs, &child_rel, &meta)?;
            if meta.is_dir() {
                self.dir(&child_abs, &child_rel)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, abs: &Path, rel: &str, meta: &fs::Metadata) -> Result<()> {
        let ft = meta.file_type();
        if ft.is_socket() {
            log::debug!("leaving socket {} out of the layer", abs.display());
            return Ok(());
        }
        let mut h = tar::Header::new_ustar();
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(u64::from(meta.uid()));
        h.set_gid(u64::from(meta.gid()));
        h.set_mtime(meta.mtime().max(0).unsigned_abs().min(self.clamp));
        h.set_size(0);
        let xattrs = read_xattrs(abs)?;
        if !xattrs.is_empty() {
            self.pax(rel, &xattrs)?;
        }
        let ctx = || format!("cannot add {} to the layer", abs.display());
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            self.b
                .append_data(&mut h, format!("{rel}/"), std::io::empty())
                .with_context(ctx)?;
        } else if ft.is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            let target = fs::read_link(abs).with_context(ctx)?;
            self.b.append_link(&mut h, rel, target).with_context(ctx)?;
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = self.links.get(&key) {
                    h.set_entry_type(tar::EntryType::Link);
                    let first = first.clone();
                    self.b.append_link(&mut h, rel, first).with_context(ctx)?;
                    return Ok(());
                }
                self.links.insert(key, rel.to_string());
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(meta.len());
            let f = fs::File::open(abs).with_context(ctx)?;
            self.b
                .append_data(&mut h, rel, std::io::BufReader::with_capacity(1 << 20, f))
                .with_context(ctx)?;
        } else if ft.is_char_device() || ft.is_block_device() {
            h.set_entry_type(if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            let (major, minor) = dev_numbers(meta.rdev());
            h.set_device_major(major).with_context(ctx)?;
            h.set_device_minor(minor).with_context(ctx)?;
            self.b
                .append_data(&mut h, rel, std::io::empty())
                .with_context(ctx)?;
        } else if ft.is_fifo() {
            h.set_entry_type(tar::EntryType::Fifo);
            self.b
                .append_data(&mut h, rel, std::io::empty())
                .with_context(ctx)?;
        }
        Ok(())
    }

    /// A PAX extended header ('x') carrying the next entry's xattrs.
    fn pax(&mut self, rel: &str, xattrs: &[(String, Vec<u8>)]) -> Result<()> {
        let mut data = Vec::new();
        for (k, v) in xattrs {
            data.extend(pax_record(&format!("SCHILY.xattr.{k}"), v));
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        let base = rel.rsplit('/').next().unwrap_or(rel);
        let base: String = base.chars().take(80).collect();
        self.b
            .append_data(&mut h, format!("PaxHeaders/{base}"), &data[..])
            .with_context(|| format!("cannot add xattrs of {rel}"))
    }
}

/// One PAX record: "<len> <key>=<value>\n", where len counts itself.
pub(crate) fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// Linux `major`/`minor` of a device number (glibc's encoding).
fn dev_numbers(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major as u32, minor as u32)
}

/// Extended attributes of `path` (not following symlinks), sorted by
/// name, without `security.selinux` (a host labelling, not image content).
fn read_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let c = CString::new(path.as_os_str().as_bytes()).context("path with NUL byte")?;
    // SAFETY: size query with a null buffer.
    let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if n <= 0 {
        return Ok(Vec::new());
    }
    let mut names = vec![0u8; n as usize];
    // SAFETY: the buffer has the length passed.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        return Ok(Vec::new());
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let key = String::from_utf8_lossy(name).into_owned();
        if key == "security.selinux" {
            continue;
        }
        let cname = CString::new(name).expect("split on NUL");
        // SAFETY: size query with a null buffer.
        let len = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            continue;
        }
        let mut val = vec![0u8; len as usize];
        // SAFETY: the buffer has the length passed.
        let len = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                val.as_mut_ptr().cast(),
                val.len(),
            )
        };
        if len < 0 {
            continue;
        }
        val.truncate(len as usize);
        out.push((key, val));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn exclusion_patterns() {
        let ex = CONTAINER_EXCLUDES;
        assert!(!is_excluded("boot", ex), "mount point kept");
        assert!(is_excluded("boot/vmlinuz-6.1", ex));
        assert!(is_excluded("usr/lib/firmware", ex));
        assert!(is_excluded("usr/lib/firmware/x.bin", ex));
        assert!(!is_excluded("usr/lib/firmware2", ex));
        assert!(!is_excluded("usr/lib/modules", ex));
        assert!(is_excluded("usr/lib/modules/6.1/kernel", ex));
        assert!(is_excluded("vmlinuz", ex));
        assert!(!is_excluded("bootstrap", ex));
        assert!(!is_excluded("usr/lib/grubby", ex));
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let r = pax_record("SCHILY.xattr.user.a", b"1");
        let s = String::from_utf8(r.clone()).unwrap();
        let n: usize = s.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(n, r.len());
        // Crossing a digit boundary: 95 + 2 digits = 97 < 100, 98 + 2 = 100 needs 3.
        for extra in 0..20 {
            let r = pax_record("k", &vec![b'v'; 90 + extra]);
            let n: usize = String::from_utf8_lossy(&r)
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(n, r.len());
        }
    }

    #[test]
    fn tar_is_sorted_clamped_with_hardlinks_and_exclusions() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("boot/grub")).unwrap();
        fs::write(root.join("boot/vmlinuz-1"), b"kernel").unwrap();
        fs::write(root.join("etc/b"), b"bee").unwrap();
        fs::write(root.join("etc/a"), b"ay").unwrap();
        fs::set_permissions(root.join("etc/a"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::hard_link(root.join("etc/a"), root.join("etc/c")).unwrap();
        std::os::unix::fs::symlink("etc/a", root.join("link")).unwrap();
        let tar = write_layer_tar(&root, CONTAINER_EXCLUDES, 1000, Vec::new()).unwrap();
        let mut ar = tar::Archive::new(&tar[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            assert!(h.mtime().unwrap() <= 1000);
            assert_eq!(h.username().unwrap(), Some(""));
            assert_eq!(h.groupname().unwrap(), Some(""));
            match p.as_str() {
                "etc/a" => assert_eq!(h.mode().unwrap(), 0o4755),
                "etc/c" => {
                    assert_eq!(h.entry_type(), tar::EntryType::Link);
                    assert_eq!(e.link_name().unwrap().unwrap().to_str(), Some("etc/a"));
                }
                "link" => assert_eq!(h.entry_type(), tar::EntryType::Symlink),
                _ => {}
            }
            seen.push(p);
        }
        assert_eq!(
            seen,
            vec!["boot/", "etc/", "etc/a", "etc/b", "etc/c", "link"]
        );
        let again = write_layer_tar(&root, CONTAINER_EXCLUDES, 1000, Vec::new()).unwrap();
        assert!(tar == again);
    }

    #[test]
    fn gz_digests_match_content() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("f"), b"x").unwrap();
        let (gz, dg) = write_layer_gz(d.path(), &[], 0, Vec::new()).unwrap();
        assert_eq!(dg.size, gz.len() as u64);
        assert_eq!(
            dg.digest,
            crate::fsutil::hex(&<sha2::Sha256 as sha2::Digest>::digest(&gz))
        );
        let mut tar = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut tar).unwrap();
        assert_eq!(dg.tar_size, tar.len() as u64);
        assert_eq!(
            dg.diff_id,
            crate::fsutil::hex(&<sha2::Sha256 as sha2::Digest>::digest(&tar))
        );
    }
}
