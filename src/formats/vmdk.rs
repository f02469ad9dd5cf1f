//! VMDK, `streamOptimized` subformat: the disk format of OVA packages and
//! Vagrant boxes.
//!
//! Follows the *Virtual Disk Format 5.0* specification (VMware), section
//! "Stream-Optimized Compressed Sparse Extents": a hosted sparse extent
//! header (version 3, flags: valid new-line test, compressed grains,
//! markers; `gdOffset` = GD_AT_END), the embedded descriptor at sector 1,
//! then each non-zero 64 KiB grain as a grain marker (LBA, compressed size)
//! followed by its zlib-deflated data padded to a sector; after the grains
//! of each 32 MiB span its grain table (metadata marker type 1), then the
//! grain directory (type 2), a footer (type 3: a copy of the header with the
//! real `gdOffset`) and the end-of-stream marker. Grain tables whose grains
//! are all zero are not written (grain directory entry 0), so sparse regions
//! cost nothing. qemu-img reads the footer at end - 1536 bytes as VirtualBox
//! does, so the footer + end-of-stream layout is fixed.
//!
//! Unlike `qemu-img convert -O vmdk`, the content ID (CID), long content ID
//! and image UUID derive from the seed, so two runs give the same bytes.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use flate2::write::ZlibEncoder;
use flate2::Compression;

use super::sparse::SparseReader;
use super::FormatContext;
use crate::fsutil::AtomicFile;

const SECTOR: u64 = 512;
/// Grain size in sectors (64 KiB), as VMware and qemu-img use.
pub(crate) const GRAIN_SECTORS: u64 = 128;
const GRAIN: u64 = GRAIN_SECTORS * SECTOR;
/// Grain table entries per grain table.
const GTES_PER_GT: u64 = 512;
const DESC_OFFSET: u64 = 1;
const DESC_SECTORS: u64 = 20;
/// Where the first grain goes (sectors): one grain in, after header and descriptor.
const OVERHEAD: u64 = 128;
/// `gdOffset` value meaning "read the footer".
const GD_AT_END: u64 = u64::MAX;

const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;

/// Grains compressed in parallel per batch.
const BATCH: usize = 256;

/// What was written.
#[derive(Debug, Clone, Copy)]
pub struct VmdkInfo {
    /// Virtual disk size in bytes.
    pub capacity: u64,
    /// Size of the VMDK file in bytes.
    pub file_size: u64,
}

/// Write `raw` as a streamOptimized VMDK to `dest`.
pub fn write_vmdk(raw: &Path, dest: &Path, ctx: &FormatContext) -> Result<VmdkInfo> {
    let (a, f) = AtomicFile::create(dest)?;
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("{}.vmdk", ctx.name));
    let info = write_vmdk_stream(raw, BufWriter::new(f), ctx, &file_name)
        .with_context(|| format!("cannot write {}", dest.display()))?;
    a.commit()?;
    Ok(info)
}

/// The 512-byte sparse extent header (spec: "Header" / SparseExtentHeader).
fn header(capacity_sectors: u64, gd_offset: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[0..4].copy_from_slice(b"KDMV");
    h[4..8].copy_from_slice(&3u32.to_le_bytes());
    // bit 0: valid new-line detection test; 16: compressed grains; 17: markers.
    let flags: u32 = 1 | (1 << 16) | (1 << 17);
    h[8..12].copy_from_slice(&flags.to_le_bytes());
    h[12..20].copy_from_slice(&capacity_sectors.to_le_bytes());
    h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
    h[28..36].copy_from_slice(&DESC_OFFSET.to_le_bytes());
    h[36..44].copy_from_slice(&DESC_SECTORS.to_le_bytes());
    h[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
    // rgdOffset (48..56) stays 0: no redundant grain directory.
    h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
    h[64..72].copy_from_slice(&OVERHEAD.to_le_bytes());
    h[72] = 0; // uncleanShutdown
    h[73] = b'\n';
    h[74] = b' ';
    h[75] = b'\r';
    h[76] = b'\n';
    h[77..79].copy_from_slice(&1u16.to_le_bytes()); // COMPRESSION_DEFLATE
    h
}

/// A metadata marker: numSectors, size 0, type, padding to a sector.
fn marker(num_sectors: u64, kind: u32) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[0..8].copy_from_slice(&num_sectors.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

/// The embedded descriptor (spec: "The Descriptor File").
pub(crate) fn descriptor(ctx: &FormatContext, capacity_sectors: u64, file_name: &str) -> String {
    let cid = {
        let d = ctx.digest("vmdk-cid");
        let c = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        // 0xffffffff means "no parent"; never use it as a content ID.
        if c == u32::MAX {
            0xfffffffe
        } else {
            c
        }
    };
    let long_cid = crate::fsutil::hex(&ctx.digest("vmdk-long-cid")[..16]);
    let cylinders = (capacity_sectors / (16 * 63)).clamp(1, 16383);
    let file_name = file_name.replace('"', "_");
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {capacity_sectors} SPARSE \"{file_name}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.virtualHWVersion = \"4\"\n\
         ddb.adapterType = \"{adapter}\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"16\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.longContentID = \"{long_cid}\"\n\
         ddb.uuid.image = \"{uuid}\"\n",
        adapter = ctx.vmdk_adapter.ddb_value(),
        uuid = ctx.uuid("vmdk-image"),
    )
}

/// Sequential writer that knows its position in sectors.
struct Out<W: Write> {
    w: W,
    pos: u64,
}

impl<W: Write> Out<W> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.w.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }

    /// Zero-pad to the next sector boundary.
    fn pad(&mut self) -> Result<()> {
        let r = self.pos % SECTOR;
        if r != 0 {
            self.put(&vec![0u8; (SECTOR - r) as usize])?;
        }
        Ok(())
    }

    fn sector(&self) -> u64 {
        debug_assert_eq!(self.pos % SECTOR, 0);
        self.pos / SECTOR
    }
}

fn compress(grain: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::with_capacity(grain.len() / 2), Compression::default());
    e.write_all(grain).expect("writing to a Vec cannot fail");
    e.finish().expect("writing to a Vec cannot fail")
}

/// Compress a batch of grains on every core, keeping their order.
fn compress_batch(batch: &[(u64, Vec<u8>)]) -> Vec<Vec<u8>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(batch.len().max(1));
    if threads <= 1 {
        return batch.iter().map(|(_, g)| compress(g)).collect();
    }
    let per = batch.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = batch
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().map(|(_, g)| compress(g)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("compression thread panicked"))
            .collect()
    })
}

/// Write `raw` as a streamOptimized VMDK to `w` (sequentially; `w` need not
/// seek). `file_name` is the extent name in the embedded descriptor.
pub(crate) fn write_vmdk_stream<W: Write>(
    raw: &Path,
    w: W,
    ctx: &FormatContext,
    file_name: &str,
) -> Result<VmdkInfo> {
    let mut reader = SparseReader::open(raw, GRAIN)?;
    let capacity = reader.size();
    let capacity_sectors = capacity / SECTOR;
    let grains = reader.chunks();
    let num_gts = grains.div_ceil(GTES_PER_GT);
    let mut gd = vec![0u32; num_gts as usize];

    let mut out = Out { w, pos: 0 };
    out.put(&header(capacity_sectors, GD_AT_END))?;
    let desc = descriptor(ctx, capacity_sectors, file_name);
    anyhow::ensure!(
        desc.len() as u64 <= DESC_SECTORS * SECTOR,
        "VMDK descriptor too long"
    );
    let mut d = desc.into_bytes();
    d.resize((DESC_SECTORS * SECTOR) as usize, 0);
    out.put(&d)?;
    out.put(&vec![
        0u8;
        ((OVERHEAD - DESC_OFFSET - DESC_SECTORS) * SECTOR)
            as usize
    ])?;

    // The grain table being filled, and which one it is.
    let mut gt = vec![0u32; GTES_PER_GT as usize];
    let mut gt_index: Option<u64> = None;

    fn flush_gt<W: Write>(
        out: &mut Out<W>,
        gt: &mut [u32],
        index: u64,
        gd: &mut [u32],
    ) -> Result<()> {
        let gt_sectors = GTES_PER_GT * 4 / SECTOR;
        out.put(&marker(gt_sectors, MARKER_GT))?;
        gd[index as usize] = u32::try_from(out.sector()).context("VMDK larger than 2 TiB")?;
        let bytes: Vec<u8> = gt.iter().flat_map(|e| e.to_le_bytes()).collect();
        out.put(&bytes)?;
        gt.iter_mut().for_each(|e| *e = 0);
        Ok(())
    }

    let mut buf = vec![0u8; GRAIN as usize];
    loop {
        let mut batch: Vec<(u64, Vec<u8>)> = Vec::with_capacity(BATCH);
        while batch.len() < BATCH {
            match reader.next_nonzero(&mut buf)? {
                Some(i) => batch.push((i, buf.clone())),
                None => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        let compressed = compress_batch(&batch);
        for ((idx, _), data) in batch.iter().zip(compressed) {
            let this_gt = idx / GTES_PER_GT;
            if let Some(cur) = gt_index.filter(|&c| c != this_gt) {
                flush_gt(&mut out, &mut gt, cur, &mut gd)?;
            }
            gt_index = Some(this_gt);
            gt[(idx % GTES_PER_GT) as usize] =
                u32::try_from(out.sector()).context("VMDK larger than 2 TiB")?;
            let mut m = Vec::with_capacity(12);
            m.extend_from_slice(&(idx * GRAIN_SECTORS).to_le_bytes());
            m.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.put(&m)?;
            out.put(&data)?;
            out.pad()?;
        }
    }
    if let Some(cur) = gt_index {
        flush_gt(&mut out, &mut gt, cur, &mut gd)?;
    }

    let gd_bytes_len = (num_gts * 4).div_ceil(SECTOR) * SECTOR;
    out.put(&marker(gd_bytes_len / SECTOR, MARKER_GD))?;
    let gd_offset = out.sector();
    let mut gd_bytes: Vec<u8> = gd.iter().flat_map(|e| e.to_le_bytes()).collect();
    gd_bytes.resize(gd_bytes_len as usize, 0);
    out.put(&gd_bytes)?;

    out.put(&marker(1, MARKER_FOOTER))?;
    out.put(&header(capacity_sectors, gd_offset))?;
    out.put(&marker(0, MARKER_EOS))?;
    out.w.flush()?;
    Ok(VmdkInfo {
        capacity,
        file_size: out.pos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn le32(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn le64(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    /// Parse the file back the way a reader would (footer -> GD -> GT ->
    /// grain marker -> inflate) and compare with the raw disk.
    #[test]
    fn round_trips_through_footer_gd_gt() {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("disk.raw");
        let mut disk = vec![0u8; 64 << 20];
        for (i, off) in [0usize, 70_000, 33 << 20, (64 << 20) - 1]
            .iter()
            .enumerate()
        {
            disk[*off] = i as u8 + 1;
        }
        std::fs::write(&raw, &disk).unwrap();
        let ctx = FormatContext::new("t", "1", "seed", 0);
        let dest = d.path().join("t.vmdk");
        let info = write_vmdk(&raw, &dest, &ctx).unwrap();
        let v = std::fs::read(&dest).unwrap();
        assert_eq!(info.file_size, v.len() as u64);
        assert_eq!(&v[0..4], b"KDMV");
        assert_eq!(le64(&v, 56), GD_AT_END);
        let desc = String::from_utf8_lossy(&v[512..512 * 21]);
        assert!(desc.contains("createType=\"streamOptimized\""), "{desc}");
        assert!(desc.contains("RW 131072 SPARSE \"t.vmdk\""), "{desc}");

        let n = v.len();
        assert_eq!(&v[n - 512..], &[0u8; 512][..], "end-of-stream marker");
        let footer_marker = &v[n - 1536..n - 1024];
        assert_eq!(le64(footer_marker, 0), 1);
        assert_eq!(le32(footer_marker, 12), MARKER_FOOTER);
        let footer = &v[n - 1024..n - 512];
        assert_eq!(&footer[0..4], b"KDMV");
        let gd_off = le64(footer, 56) as usize * 512;
        let gd_marker = &v[gd_off - 512..gd_off];
        assert_eq!(le32(gd_marker, 12), MARKER_GD);

        let mut back = vec![0u8; disk.len()];
        let mut grains = 0;
        for g in 0..2 {
            let gt_sector = le32(&v, gd_off + 4 * g) as usize;
            assert_ne!(gt_sector, 0, "both 32 MiB spans have data");
            for e in 0..512 {
                let s = le32(&v, gt_sector * 512 + 4 * e) as usize;
                if s == 0 {
                    continue;
                }
                grains += 1;
                let lba = le64(&v, s * 512) as usize;
                assert_eq!(lba, (g * 512 + e) * 128);
                let size = le32(&v, s * 512 + 8) as usize;
                let mut z = flate2::read::ZlibDecoder::new(&v[s * 512 + 12..s * 512 + 12 + size]);
                let mut out = Vec::new();
                z.read_to_end(&mut out).unwrap();
                assert_eq!(out.len(), 65536);
                back[lba * 512..lba * 512 + 65536].copy_from_slice(&out);
            }
        }
        assert_eq!(grains, 4);
        assert!(back == disk);
    }

    #[test]
    fn empty_disk_has_no_grain_tables() {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("disk.raw");
        std::fs::File::create(&raw)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let ctx = FormatContext::new("t", "1", "seed", 0);
        let info = write_vmdk(&raw, &d.path().join("t.vmdk"), &ctx).unwrap();
        // header+descriptor+pad (128 sectors), GD marker + 1 GD sector, footer, EOS.
        assert_eq!(info.file_size, (128 + 2 + 2 + 1) * 512);
    }

    #[test]
    fn descriptor_ids_follow_the_seed() {
        let a = descriptor(&FormatContext::new("t", "1", "a", 0), 2048, "x.vmdk");
        let a2 = descriptor(&FormatContext::new("t", "1", "a", 0), 2048, "x.vmdk");
        let b = descriptor(&FormatContext::new("t", "1", "b", 0), 2048, "x.vmdk");
        assert_eq!(a, a2);
        assert_ne!(a, b);
        assert!(a.contains("ddb.adapterType = \"lsilogic\""));
        assert!(a.contains("ddb.virtualHWVersion = \"4\""));
    }
}
