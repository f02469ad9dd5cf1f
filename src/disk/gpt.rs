//! A GUID partition table writer (UEFI spec 2.10, chapter 5): protective
//! MBR, primary header and entries at LBA 1-33, backup entries and header at
//! the end of the disk. Written by hand so every GUID can be seeded and the
//! table is byte-for-byte reproducible; GUIDs themselves are the `uuid`
//! crate's.

use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub(crate) const SECTOR: u64 = 512;
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
/// Sectors the 128 entries take: 128 * 128 / 512.
const ENTRY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;

/// A GUID. The `uuid` crate parses and prints it and gives its on-disk
/// (mixed-endian) layout; biovm only adds the seeded derivation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(Uuid);

impl Guid {
    /// Parse `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (that form only).
    pub(crate) fn parse(s: &str) -> Result<Guid> {
        if s.len() != HYPHENATED_LEN {
            bail!("not a GUID: {s}");
        }
        let u = Uuid::try_parse(s).with_context(|| format!("not a GUID: {s}"))?;
        Ok(Guid(u))
    }

    /// A random-looking (version 4 layout) GUID derived from a seed and a
    /// purpose, so the same seed always gives the same GUIDs.
    pub(crate) fn derive(seed: &str, purpose: &str) -> Guid {
        let d = Sha256::new()
            .chain_update(seed.as_bytes())
            .chain_update([0])
            .chain_update(purpose.as_bytes())
            .finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        Guid(uuid::Builder::from_random_bytes(b).into_uuid())
    }

    /// The on-disk form: the first three fields little-endian.
    pub(crate) fn to_disk(self) -> [u8; 16] {
        self.0.to_bytes_le()
    }

    /// The 16 bytes in the canonical string's order.
    pub(crate) fn bytes(self) -> [u8; 16] {
        *self.0.as_bytes()
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
const HYPHENATED_LEN: usize = 36;

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

pub(crate) mod types {
    /// BIOS boot partition (GRUB's core.img lives here).
    pub(crate) const BIOS_BOOT: &str = "21686148-6449-6e6f-744e-656564454649";
    /// EFI system partition.
    pub(crate) const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
    /// Linux root (x86-64), per the Discoverable Partitions Specification.
    pub(crate) const ROOT_X86_64: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
}

#[derive(Debug, Clone)]
pub(crate) struct Partition {
    pub(crate) type_guid: Guid,
    pub(crate) guid: Guid,
    pub(crate) first_lba: u64,
    /// Inclusive.
    pub(crate) last_lba: u64,
    pub(crate) name: String,
    pub(crate) attributes: u64,
}

impl Partition {
    pub(crate) fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }
    pub(crate) fn size(&self) -> u64 {
        (self.last_lba - self.first_lba + 1) * SECTOR
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub(crate) disk_guid: Guid,
    pub(crate) size_bytes: u64,
    pub(crate) partitions: Vec<Partition>,
}

impl Table {
    pub(crate) fn total_sectors(&self) -> u64 {
        self.size_bytes / SECTOR
    }

    /// The first and last LBA partitions may use.
    pub(crate) fn usable(&self) -> (u64, u64) {
        (2 + ENTRY_SECTORS, self.total_sectors() - 2 - ENTRY_SECTORS)
    }

    fn validate(&self) -> Result<()> {
        if self.size_bytes % SECTOR != 0 {
            bail!(
                "disk size {} is not a whole number of sectors",
                self.size_bytes
            );
        }
        let (first, last) = self.usable();
        let mut sorted: Vec<&Partition> = self.partitions.iter().collect();
        sorted.sort_by_key(|p| p.first_lba);
        let mut next = first;
        for p in sorted {
            if p.first_lba < next || p.last_lba < p.first_lba || p.last_lba > last {
                bail!(
                    "partition {:?} ({}..{}) overlaps another or lies outside {first}..{last}",
                    p.name,
                    p.first_lba,
                    p.last_lba
                );
            }
            next = p.last_lba + 1;
        }
        if self.partitions.len() > ENTRIES as usize {
            bail!("too many partitions");
        }
        Ok(())
    }

    fn entries(&self) -> Vec<u8> {
        let mut buf = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
        for (i, p) in self.partitions.iter().enumerate() {
            let e = &mut buf[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
            e[0..16].copy_from_slice(&p.type_guid.to_disk());
            e[16..32].copy_from_slice(&p.guid.to_disk());
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
            for (j, u) in p.name.encode_utf16().take(36).enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
            }
        }
        buf
    }

    fn header(
        &self,
        my_lba: u64,
        alternate_lba: u64,
        entries_lba: u64,
        entries_crc: u32,
    ) -> Vec<u8> {
        let (first, last) = self.usable();
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        // 16..20: header CRC, filled below; 20..24 reserved.
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
        h[40..48].copy_from_slice(&first.to_le_bytes());
        h[48..56].copy_from_slice(&last.to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_disk());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[0..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// The protective MBR's partition table and signature (bytes 446..512).
    pub(crate) fn protective_mbr_tail(&self) -> [u8; 66] {
        let mut t = [0u8; 66];
        let e = &mut t[0..16];
        e[0] = 0x00; // not active
        e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
        e[4] = 0xee;
        e[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
        e[8..12].copy_from_slice(&1u32.to_le_bytes());
        let n = (self.total_sectors() - 1).min(u32::MAX as u64) as u32;
        e[12..16].copy_from_slice(&n.to_le_bytes());
        t[64] = 0x55;
        t[65] = 0xaa;
        t
    }

    /// Write the protective MBR (keeping bytes 0..446, the boot code, as
    /// they are in `boot_code` or zero), both headers and both entry arrays.
    pub(crate) fn write(&self, f: &File, boot_code: Option<&[u8]>) -> Result<()> {
        self.validate()?;
        let n = self.total_sectors();
        let mut mbr = [0u8; 512];
        if let Some(code) = boot_code {
            let len = code.len().min(446);
            mbr[..len].copy_from_slice(&code[..len]);
        }
        // 440..444 is the disk signature; leave it zero (seeded GUIDs identify the disk).
        mbr[446..512].copy_from_slice(&self.protective_mbr_tail());
        let entries = self.entries();
        let crc = crc32fast::hash(&entries);
        let primary = self.header(1, n - 1, 2, crc);
        let backup = self.header(n - 1, 1, n - 1 - ENTRY_SECTORS, crc);
        f.write_all_at(&mbr, 0)?;
        f.write_all_at(&primary, SECTOR)?;
        f.write_all_at(&entries, 2 * SECTOR)?;
        f.write_all_at(&entries, (n - 1 - ENTRY_SECTORS) * SECTOR)?;
        f.write_all_at(&backup, (n - 1) * SECTOR)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_round_trip_and_disk_order() {
        let g = Guid::parse(types::ESP).unwrap();
        assert_eq!(g.to_string(), types::ESP);
        // The ESP type GUID as it appears on disk.
        assert_eq!(
            crate::fsutil::hex(&g.to_disk()),
            "28732ac11ff8d211ba4b00a0c93ec93b"
        );
        assert!(Guid::parse("nope").is_err());
        assert!(Guid::parse("c12a7328f81f11d2ba4b00a0c93ec93b").is_err());
        assert!(Guid::parse("c12a7328-f81f-11d2-ba4b-00a0c93ec93g").is_err());
        // Byte for byte what the hand-written derivation gave before the
        // uuid crate (partition GUIDs are part of every disk's bytes).
        assert_eq!(
            Guid::derive("seed", "root").to_string(),
            "f0abe75a-7431-4359-91ea-9babef8eb17d"
        );
    }

    #[test]
    fn derived_guids_are_stable_and_distinct() {
        let a = Guid::derive("seed", "root");
        assert_eq!(a, Guid::derive("seed", "root"));
        assert_ne!(a, Guid::derive("seed", "esp"));
        assert_ne!(a, Guid::derive("other", "root"));
        let s = a.to_string();
        assert_eq!(&s[14..15], "4", "version 4 layout: {s}");
    }

    #[test]
    fn overlapping_partitions_are_refused() {
        let g = Guid::derive("s", "x");
        let p = |a, b| Partition {
            type_guid: g,
            guid: g,
            first_lba: a,
            last_lba: b,
            name: "p".into(),
            attributes: 0,
        };
        let t = Table {
            disk_guid: g,
            size_bytes: 64 << 20,
            partitions: vec![p(2048, 4095), p(4000, 8000)],
        };
        let f = tempfile::tempfile().unwrap();
        assert!(t.write(&f, None).is_err());
    }
}
