//! Distribution formats: turn biovm's raw disk and root filesystem into every
//! artifact a user can take (qcow2, VMDK streamOptimized, VDI, OVA, Vagrant
//! box, OCI image layout, docker-archive, rootfs tarball, Apptainer SIF).
//!
//! Every writer is deterministic: identifiers (VMDK CID, VDI UUIDs, SIF IDs,
//! MAC addresses) derive from [`FormatContext::seed`], every timestamp is
//! [`FormatContext::source_date_epoch`], archives are sorted with clamped
//! mtimes. Two runs with the same inputs give byte-identical files.
//!
//! Every writer writes its destination through [`crate::fsutil::AtomicFile`]
//! (or a hidden temporary folder renamed at the end), so nothing half-written
//! ever carries a final name. Disk writers read the raw disk once, in order,
//! skipping holes and all-zero blocks, so sparse regions stay sparse.

use std::collections::BTreeMap;
use std::io::{self, Write};

use sha2::{Digest, Sha256};

pub(crate) use crate::disk::gpt::Guid;

pub(crate) mod layer;
pub(crate) mod oci;
pub(crate) mod ova;
pub(crate) mod qcow2;
pub(crate) mod sif;
pub(crate) mod sparse;
pub mod spdx;
pub(crate) mod tarball;
pub(crate) mod vagrant;
pub(crate) mod vdi;
pub(crate) mod vmdk;

pub use oci::{write_docker_archive, write_oci_layout, write_rootfs_tarball};
pub use ova::{write_ova, write_ova_from_vmdk};
pub use qcow2::write_qcow2;
pub use sif::write_sif;
pub use vagrant::{write_vagrant_box, write_vagrant_box_from_vmdk};
pub use vdi::write_vdi;
pub use vmdk::write_vmdk;

/// The network card a VirtualBox import (OVA, Vagrant box) gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NicModel {
    /// Intel PRO/1000 MT Desktop (82540EM): every guest has a driver.
    E1000,
    /// virtio-net: fastest; the Debian cloud kernel always has its driver.
    #[default]
    Virtio,
}

impl NicModel {
    /// The OVF `rasd:ResourceSubType` VirtualBox reads for this card.
    pub(crate) fn ovf_subtype(self) -> &'static str {
        match self {
            NicModel::E1000 => "E1000",
            NicModel::Virtio => "virtio",
        }
    }
}

/// The disk controller a VMDK descriptor names (`ddb.adapterType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VmdkAdapter {
    /// LSI Logic SCSI: what VirtualBox and VMware expect by default.
    #[default]
    LsiLogic,
    /// An IDE controller.
    Ide,
    /// BusLogic SCSI, which older VMware guests expect.
    BusLogic,
    /// VMware ESX's legacy descriptor value.
    LegacyEsx,
}

impl VmdkAdapter {
    /// The `ddb.adapterType` value.
    pub(crate) fn ddb_value(self) -> &'static str {
        match self {
            VmdkAdapter::LsiLogic => "lsilogic",
            VmdkAdapter::Ide => "ide",
            VmdkAdapter::BusLogic => "buslogic",
            VmdkAdapter::LegacyEsx => "legacyESX",
        }
    }
}

/// What every format writer needs to know about the image.
#[derive(Debug, Clone)]
pub struct FormatContext<'a> {
    /// Image name (file names inside archives, OVF system name, SIF label).
    pub(crate) name: &'a str,
    /// Image version (OCI tag, labels).
    pub(crate) version: &'a str,
    /// The image's description (OVF annotation, OCI labels).
    pub description: &'a str,
    /// Every UUID, ID, CID and MAC derives from this (sha256-based).
    pub seed: &'a str,
    /// Every timestamp written (SOURCE_DATE_EPOCH).
    pub(crate) source_date_epoch: u64,
    /// Virtual machine CPU count (OVF).
    pub cpus: u32,
    /// Virtual machine memory in MiB (OVF).
    pub memory_mib: u32,
    /// The image's login user (Vagrant `config.ssh.username`), if any.
    pub user: Option<&'a str>,
    /// Extra labels for container images; merged over the standard
    /// `org.opencontainers.image.*` ones.
    pub(crate) labels: BTreeMap<String, String>,
    /// The VMDK descriptor's disk controller.
    pub vmdk_adapter: VmdkAdapter,
    /// OVA / Vagrant network card.
    pub nic: NicModel,
    /// `org.opencontainers.image.source` (project URL); empty to leave out.
    pub source_url: &'a str,
    /// `org.opencontainers.image.licenses` (SPDX expression); empty to leave out.
    pub licenses: &'a str,
}

impl<'a> FormatContext<'a> {
    /// A context with the usual defaults (2 CPUs, 2048 MiB, lsilogic, virtio).
    pub fn new(name: &'a str, version: &'a str, seed: &'a str, source_date_epoch: u64) -> Self {
        FormatContext {
            name,
            version,
            description: "",
            seed,
            source_date_epoch,
            cpus: 2,
            memory_mib: 2048,
            user: None,
            labels: BTreeMap::new(),
            vmdk_adapter: VmdkAdapter::default(),
            nic: NicModel::default(),
            source_url: "",
            licenses: "",
        }
    }

    /// A version-4-shaped UUID derived from the seed and `purpose` (so each
    /// identifier in an artifact differs); the same derivation as the
    /// disk's partition GUIDs.
    pub fn uuid(&self, purpose: &str) -> Guid {
        Guid::derive(self.seed, &format!("formats:{purpose}"))
    }

    /// sha256("biovm:" purpose ":" seed).
    pub(crate) fn digest(&self, purpose: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"biovm:");
        h.update(purpose.as_bytes());
        h.update(b":");
        h.update(self.seed.as_bytes());
        h.finalize().into()
    }

    /// A locally administered-looking VirtualBox MAC (OUI 08:00:27) as 12
    /// upper-case hex digits, derived from the seed.
    pub(crate) fn mac(&self) -> String {
        let d = self.digest("mac");
        format!("080027{:02X}{:02X}{:02X}", d[0], d[1], d[2])
    }

    /// `source_date_epoch` as RFC 3339 UTC (`2024-01-02T03:04:05Z`).
    pub(crate) fn created_rfc3339(&self) -> String {
        rfc3339(self.source_date_epoch)
    }

    /// The OCI reference name (tag) of the image: the version when it is a
    /// valid tag, else "latest".
    pub(crate) fn tag(&self) -> String {
        let v = self.version;
        let valid = !v.is_empty()
            && v.len() <= 128
            && v.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if valid {
            v.to_string()
        } else {
            "latest".to_string()
        }
    }

    /// The standard `org.opencontainers.image.*` labels, then `labels`.
    pub(crate) fn oci_labels(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            if !v.is_empty() {
                m.insert(format!("org.opencontainers.image.{k}"), v.to_string());
            }
        };
        put("title", self.name);
        put("description", self.description);
        put("version", self.version);
        put("created", &self.created_rfc3339());
        put("source", self.source_url);
        put("licenses", self.licenses);
        for (k, v) in &self.labels {
            m.insert(k.clone(), v.clone());
        }
        m
    }
}

/// A hidden temporary file beside `dest` (`.<dest name>.<suffix>.<pid>.tmp`)
/// for an intermediate product; removed when the guard drops uncommitted.
pub(crate) fn temp_beside(
    dest: &std::path::Path,
    suffix: &str,
) -> anyhow::Result<(crate::fsutil::AtomicFile, std::fs::File)> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    crate::fsutil::AtomicFile::create(&dest.with_file_name(format!("{name}.{suffix}")))
}

/// Flush a buffered file writer and hand back the file; errors name `path`.
pub(crate) fn flush_buf(
    w: std::io::BufWriter<std::fs::File>,
    path: &std::path::Path,
) -> anyhow::Result<std::fs::File> {
    use anyhow::Context;
    w.into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Seconds since the epoch as RFC 3339 UTC (`2024-01-02T03:04:05Z`);
/// past jiff's range (the end of the year 9999) the range's last second.
pub fn rfc3339(epoch: u64) -> String {
    let last = jiff::Timestamp::MAX.as_second();
    let secs = i64::try_from(epoch).map_or(last, |s| s.min(last));
    jiff::Timestamp::from_second(secs)
        .expect("within jiff's range")
        .to_string()
}

/// A writer that passes bytes through and keeps their SHA-256 and count.
pub(crate) struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The inner writer, the lowercase hex digest and the byte count.
    pub(crate) fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            crate::fsutil::hex(&self.hasher.finalize()),
            self.count,
        )
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-30T22:00:00Z");
    }

    #[test]
    fn uuids_are_seeded_versioned_and_distinct() {
        let a = FormatContext::new("n", "1", "seed-a", 0);
        let b = FormatContext::new("n", "1", "seed-b", 0);
        assert_eq!(a.uuid("x"), a.uuid("x"));
        assert_ne!(a.uuid("x"), a.uuid("y"));
        assert_ne!(a.uuid("x"), b.uuid("x"));
        let s = a.uuid("x").to_string();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!("89ab".contains(&s[19..20]), "{s}");
    }

    #[test]
    fn tag_falls_back_to_latest() {
        assert_eq!(FormatContext::new("n", "1.2.3", "s", 0).tag(), "1.2.3");
        assert_eq!(FormatContext::new("n", "", "s", 0).tag(), "latest");
        assert_eq!(FormatContext::new("n", "a/b", "s", 0).tag(), "latest");
        assert_eq!(FormatContext::new("n", "-x", "s", 0).tag(), "latest");
    }

    #[test]
    fn labels_have_standard_keys_and_overrides() {
        let mut c = FormatContext::new("bio", "1.0", "s", 0);
        c.licenses = "MIT";
        c.labels
            .insert("org.opencontainers.image.title".into(), "Bio Linux".into());
        let l = c.oci_labels();
        assert_eq!(l["org.opencontainers.image.title"], "Bio Linux");
        assert_eq!(
            l["org.opencontainers.image.created"],
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(l["org.opencontainers.image.licenses"], "MIT");
        assert!(!l.contains_key("org.opencontainers.image.source"));
    }

    #[test]
    fn mac_is_virtualbox_oui() {
        let m = FormatContext::new("n", "1", "s", 0).mac();
        assert!(m.starts_with("080027") && m.len() == 12, "{m}");
    }
}
