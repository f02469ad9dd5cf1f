//! Container images from the root filesystem: OCI image layout, the
//! `docker save` archive, and a compressed rootfs tarball. All three take
//! their tar from [`super::layer`].
//!
//! The OCI layout follows the OCI Image Format Specification v1.0
//! (`image-layout.md`: `oci-layout`, `index.json`, `blobs/sha256/`;
//! `manifest.md`; `config.md`: `created`, `architecture`, `os`, `config`
//! with `Labels`, `rootfs.diff_ids`, `history`; `annotations.md` for
//! `org.opencontainers.image.ref.name` and the standard labels). The
//! docker-archive follows Docker's image spec v1.2 "Combined Image JSON +
//! Filesystem Changeset Format" as written by `docker save`:
//! `manifest.json` (`Config`, `RepoTags`, `Layers`), the config blob named
//! `<sha256>.json`, and each layer as `<diff_id>/layer.tar`.

use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;

use super::layer::{excludes_of, write_layer_gz, write_layer_tar, LayerDigests};
use super::tarball::DetTar;
use super::{FormatContext, HashWriter};
use crate::config::Format;
use crate::fsutil::{self, AtomicFile};

const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MT_LAYER_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MT_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The image config (OCI `config.md`; Docker reads the same document).
fn config_json(ctx: &FormatContext, diff_id: &str) -> Vec<u8> {
    let created = ctx.created_rfc3339();
    let v = json!({
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
            "Cmd": ["/bin/bash"],
            "Labels": ctx.oci_labels(),
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        "history": [{
            "created": created,
            "created_by": format!("biovm build {} {}", ctx.name, ctx.version),
        }],
    });
    serde_json::to_vec(&v).expect("JSON of plain values")
}

/// A repository name docker and podman accept: lowercase `[a-z0-9._-]`.
pub(crate) fn repo_name(name: &str) -> String {
    let s: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    if s.is_empty() {
        "image".to_string()
    } else {
        s
    }
}

/// Removes a temporary folder unless disarmed.
struct TempDir(Option<PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fsutil::remove_tree(&p);
        }
    }
}

fn put_blob(dir: &Path, bytes: &[u8]) -> Result<(String, u64)> {
    let digest = fsutil::hex(&<sha2::Sha256 as sha2::Digest>::digest(bytes));
    let p = dir.join("blobs/sha256").join(&digest);
    fs::write(&p, bytes).with_context(|| format!("cannot write {}", p.display()))?;
    Ok((digest, bytes.len() as u64))
}

/// Write an OCI image layout folder at `dest_dir` (replacing it) from
/// `rootfs`, leaving out [`super::layer::CONTAINER_EXCLUDES`]. The manifest is tagged
/// [`FormatContext::tag`] (`org.opencontainers.image.ref.name`). Built in
/// a hidden temporary folder beside `dest_dir` and renamed at the end.
pub fn write_oci_layout(
    rootfs: &Path,
    dest_dir: &Path,
    ctx: &FormatContext,
) -> Result<LayerDigests> {
    if let Some(parent) = dest_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let tmp = fsutil::temp_name(dest_dir);
    fsutil::remove_tree(&tmp)?;
    let mut guard = TempDir(Some(tmp.clone()));
    let blobs = tmp.join("blobs/sha256");
    fs::create_dir_all(&blobs).with_context(|| format!("cannot create {}", blobs.display()))?;

    let layer_tmp = blobs.join(".layer.tmp");
    let f = fs::File::create(&layer_tmp)
        .with_context(|| format!("cannot create {}", layer_tmp.display()))?;
    let (w, layer) = write_layer_gz(
        rootfs,
        excludes_of(Format::Oci),
        ctx.source_date_epoch,
        BufWriter::new(f),
    )?;
    super::flush_buf(w, &layer_tmp)?
        .sync_all()
        .with_context(|| format!("cannot write {}", layer_tmp.display()))?;
    fs::rename(&layer_tmp, blobs.join(&layer.digest))?;

    let (config_digest, config_size) = put_blob(&tmp, &config_json(ctx, &layer.diff_id))?;
    let labels = ctx.oci_labels();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": format!("sha256:{config_digest}"), "size": config_size},
        "layers": [{"mediaType": MT_LAYER_GZ, "digest": format!("sha256:{}", layer.digest), "size": layer.size}],
        "annotations": labels,
    });
    let (manifest_digest, manifest_size) = put_blob(
        &tmp,
        &serde_json::to_vec(&manifest).expect("JSON of plain values"),
    )?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{
            "mediaType": MT_MANIFEST,
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest_size,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"org.opencontainers.image.ref.name": ctx.tag()},
        }],
    });
    fs::write(
        tmp.join("index.json"),
        serde_json::to_vec(&index).expect("JSON"),
    )?;
    fs::write(tmp.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;

    fsutil::remove_tree(dest_dir)?;
    fs::rename(&tmp, dest_dir)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), dest_dir.display()))?;
    guard.0 = None;
    Ok(layer)
}

/// Write a `docker save`-style archive (what `docker load` and `podman
/// load` take) of `rootfs`, leaving out [`super::layer::CONTAINER_EXCLUDES`], tagged
/// `<repo_name(name)>:<tag>`.
pub fn write_docker_archive(rootfs: &Path, dest: &Path, ctx: &FormatContext) -> Result<()> {
    // The uncompressed layer goes to a hidden temporary file first: its
    // size must be known before its tar header is written.
    let (layer_tmp, f) = super::temp_beside(dest, "layer.tar")?;
    let hw = write_layer_tar(
        rootfs,
        excludes_of(Format::DockerArchive),
        ctx.source_date_epoch,
        HashWriter::new(BufWriter::new(f)),
    )?;
    let (w, diff_id, _) = hw.finish();
    super::flush_buf(w, layer_tmp.path())?;

    let config = config_json(ctx, &diff_id);
    let config_name = format!(
        "{}.json",
        fsutil::hex(&<sha2::Sha256 as sha2::Digest>::digest(&config))
    );
    let layer_name = format!("{diff_id}/layer.tar");
    let repo_tag = format!("{}:{}", repo_name(ctx.name), ctx.tag());
    let manifest = json!([{
        "Config": config_name,
        "RepoTags": [repo_tag],
        "Layers": [layer_name],
    }]);
    let repositories = json!({ repo_name(ctx.name): { ctx.tag(): diff_id } });

    let (a, f) = AtomicFile::create(dest)?;
    let mut t = DetTar::new(BufWriter::new(f), ctx.source_date_epoch);
    t.add_bytes(&config_name, &config)?;
    t.add_file(&layer_name, layer_tmp.path())?;
    t.add_bytes(
        "manifest.json",
        &serde_json::to_vec(&manifest).expect("JSON"),
    )?;
    t.add_bytes(
        "repositories",
        &serde_json::to_vec(&repositories).expect("JSON"),
    )?;
    super::flush_buf(t.finish()?, a.path())?;
    drop(layer_tmp);
    a.commit()
}

/// Write the whole root filesystem (kernel included: it is the complete
/// tree, for chroots, systemd-nspawn, WSL or rebuilding a disk) as a
/// gzip-compressed tar at `dest` (conventionally `.tar.gz`).
pub fn write_rootfs_tarball(
    rootfs: &Path,
    dest: &Path,
    ctx: &FormatContext,
) -> Result<LayerDigests> {
    let (a, f) = AtomicFile::create(dest)?;
    let (w, d) = write_layer_gz(
        rootfs,
        excludes_of(Format::Tarball),
        ctx.source_date_epoch,
        BufWriter::new(f),
    )?;
    super::flush_buf(w, a.path())?;
    a.commit()?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::create_dir_all(d.path().join("boot")).unwrap();
        fs::write(d.path().join("boot/vmlinuz"), b"k").unwrap();
        fs::write(d.path().join("etc/hostname"), b"bio\n").unwrap();
        d
    }

    #[test]
    fn repo_names_are_valid() {
        assert_eq!(repo_name("BioLinux"), "biolinux");
        assert_eq!(repo_name("my image"), "my-image");
        assert_eq!(repo_name("--"), "image");
    }

    #[test]
    fn oci_layout_blobs_match_their_digests() {
        let root = tree();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("img.oci");
        let ctx = FormatContext::new("bio", "1.0", "s", 86_400);
        let layer = write_oci_layout(root.path(), &dest, &ctx).unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(dest.join("index.json")).unwrap()).unwrap();
        assert_eq!(
            index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
            "1.0"
        );
        for e in fs::read_dir(dest.join("blobs/sha256")).unwrap() {
            let e = e.unwrap();
            assert_eq!(
                fsutil::sha256_file(&e.path()).unwrap(),
                e.file_name().to_string_lossy()
            );
        }
        let m = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(dest.join("blobs/sha256").join(m)).unwrap()).unwrap();
        assert_eq!(
            manifest["layers"][0]["digest"],
            format!("sha256:{}", layer.digest)
        );
        let c = manifest["config"]["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(&fs::read(dest.join("blobs/sha256").join(c)).unwrap()).unwrap();
        assert_eq!(config["created"], "1970-01-02T00:00:00Z");
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            format!("sha256:{}", layer.diff_id)
        );
        assert_eq!(
            config["config"]["Labels"]["org.opencontainers.image.title"],
            "bio"
        );
        // Written again over the old one, same bytes; no temporary left.
        let again = write_oci_layout(root.path(), &dest, &ctx).unwrap();
        assert_eq!(layer, again);
        assert_eq!(fs::read_dir(out.path()).unwrap().count(), 1);
    }

    #[test]
    fn docker_archive_lists_its_members() {
        let root = tree();
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("img.docker.tar");
        let ctx = FormatContext::new("Bio", "1.0", "s", 0);
        write_docker_archive(root.path(), &dest, &ctx).unwrap();
        let bytes = fs::read(&dest).unwrap();
        let mut ar = tar::Archive::new(&bytes[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 4);
        assert!(names[1].ends_with("/layer.tar"));
        assert_eq!(&names[2..], ["manifest.json", "repositories"]);
        assert_eq!(
            fs::read_dir(out.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }
}
