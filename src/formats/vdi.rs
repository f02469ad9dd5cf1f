//! VirtualBox VDI, dynamic ("normal") image.
//!
//! Follows VirtualBox's VDI format as defined in its sources
//! (`src/VBox/Storage/VDICore.h`: `VDIPREHEADER`, `VDIHEADER1PLUS`) and as
//! read by qemu (`block/vdi.c`): a 64-byte text banner, signature
//! 0xBEDA107F, version 1.1; a 400-byte header (type 1 = dynamic, block map
//! offset, data offset, legacy and LCHS geometry, disk size, 1 MiB blocks,
//! block counts and four UUIDs); a block map of little-endian u32 entries
//! (the data block's index, or 0xFFFFFFFF = unallocated, read as zeros);
//! then the allocated 1 MiB blocks. Block map and data start on 1 MiB
//! boundaries, as VirtualBox lays them out.
//!
//! The image and modification UUIDs derive from the seed (`qemu-img`
//! writes random ones). The linkage and parent-modification UUIDs stay nil:
//! a non-nil linkage UUID names a parent image, which a base image has not.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result};

use super::sparse::SparseReader;
use super::FormatContext;
use crate::fsutil::AtomicFile;

const BANNER: &[u8] = b"<<< Oracle VM VirtualBox Disk Image >>>\n";
const SIGNATURE: u32 = 0xBEDA_107F;
const VERSION_1_1: u32 = 0x0001_0001;
const HEADER_SIZE: u32 = 400;
const TYPE_DYNAMIC: u32 = 1;
/// VDI block size (the only one VirtualBox and qemu accept).
pub(crate) const BLOCK: u64 = 1 << 20;
const ALIGN: u64 = 1 << 20;
/// Block map entry of a block that is not stored (reads as zeros).
pub(crate) const BLOCK_FREE: u32 = u32::MAX;

/// The 512-byte pre-header + header.
fn header(
    ctx: &FormatContext,
    disk: u64,
    blocks: u32,
    allocated: u32,
    off_map: u64,
    off_data: u64,
) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..BANNER.len()].copy_from_slice(BANNER);
    h[64..68].copy_from_slice(&SIGNATURE.to_le_bytes());
    h[68..72].copy_from_slice(&VERSION_1_1.to_le_bytes());
    let b = 72; // VDIHEADER1PLUS
    let put32 =
        |h: &mut Vec<u8>, o: usize, v: u32| h[b + o..b + o + 4].copy_from_slice(&v.to_le_bytes());
    put32(&mut h, 0, HEADER_SIZE);
    put32(&mut h, 4, TYPE_DYNAMIC);
    put32(&mut h, 8, 0); // flags
    let comment = format!("{} {}", ctx.name, ctx.version);
    let c = comment.as_bytes();
    let n = c.len().min(255);
    h[b + 12..b + 12 + n].copy_from_slice(&c[..n]);
    put32(&mut h, 268, off_map as u32);
    put32(&mut h, 272, off_data as u32);
    // Legacy geometry: 0/0/0 lets VirtualBox and qemu compute their own.
    put32(&mut h, 276, 0);
    put32(&mut h, 280, 0);
    put32(&mut h, 284, 0);
    put32(&mut h, 288, 512);
    put32(&mut h, 292, 0); // unused
    h[b + 296..b + 304].copy_from_slice(&disk.to_le_bytes());
    put32(&mut h, 304, BLOCK as u32);
    put32(&mut h, 308, 0); // extra data per block
    put32(&mut h, 312, blocks);
    put32(&mut h, 316, allocated);
    h[b + 320..b + 336].copy_from_slice(&ctx.uuid("vdi-image").to_disk());
    h[b + 336..b + 352].copy_from_slice(&ctx.uuid("vdi-modification").to_disk());
    // 352..368 linkage UUID, 368..384 parent modification UUID: nil.
    // LCHS geometry (384..400): 0/0/0/512, computed by the reader.
    put32(&mut h, 396, 512);
    h
}

/// Write `raw` as a dynamic VDI to `dest`. Zero blocks are left
/// unallocated; the file is written with holes where VirtualBox pads.
pub fn write_vdi(raw: &Path, dest: &Path, ctx: &FormatContext) -> Result<()> {
    let mut reader = SparseReader::open(raw, BLOCK)?;
    let disk = reader.size();
    let blocks = u32::try_from(reader.chunks()).context("disk too large for VDI")?;
    let off_map = ALIGN;
    let off_data = (off_map + u64::from(blocks) * 4).div_ceil(ALIGN) * ALIGN;
    let mut map = vec![BLOCK_FREE; blocks as usize];

    let (a, mut f) = AtomicFile::create(dest)?;
    let mut allocated: u32 = 0;
    let mut buf = vec![0u8; BLOCK as usize];
    f.seek(SeekFrom::Start(off_data))?;
    {
        let mut w = std::io::BufWriter::with_capacity(4 << 20, &mut f);
        while let Some(idx) = reader.next_nonzero(&mut buf)? {
            map[idx as usize] = allocated;
            allocated += 1;
            w.write_all(&buf)
                .with_context(|| format!("cannot write {}", a.path().display()))?;
        }
        w.flush()?;
    }
    let end = off_data + u64::from(allocated) * BLOCK;
    f.set_len(end)?;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&header(ctx, disk, blocks, allocated, off_map, off_data))?;
    f.seek(SeekFrom::Start(off_map))?;
    let bytes: Vec<u8> = map.iter().flat_map(|e| e.to_le_bytes()).collect();
    f.write_all(&bytes)
        .with_context(|| format!("cannot write {}", a.path().display()))?;
    drop(f);
    a.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le32(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }

    #[test]
    fn layout_and_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("disk.raw");
        let mut disk = vec![0u8; 8 << 20];
        disk[5] = 1;
        disk[(6 << 20) + 9] = 2;
        std::fs::write(&raw, &disk).unwrap();
        let ctx = FormatContext::new("t", "1", "seed", 0);
        let dest = d.path().join("t.vdi");
        write_vdi(&raw, &dest, &ctx).unwrap();
        let v = std::fs::read(&dest).unwrap();
        assert_eq!(&v[..BANNER.len()], BANNER);
        assert_eq!(le32(&v, 64), SIGNATURE);
        assert_eq!(le32(&v, 68), VERSION_1_1);
        assert_eq!(le32(&v, 72), 400);
        assert_eq!(le32(&v, 76), TYPE_DYNAMIC);
        let off_map = le32(&v, 72 + 268) as usize;
        let off_data = le32(&v, 72 + 272) as usize;
        assert_eq!((off_map, off_data), (1 << 20, 2 << 20));
        assert_eq!(le32(&v, 72 + 312), 8, "blocks");
        assert_eq!(le32(&v, 72 + 316), 2, "allocated");
        let map: Vec<u32> = (0..8).map(|i| le32(&v, off_map + 4 * i)).collect();
        assert_eq!(
            map,
            vec![0, BLOCK_FREE, BLOCK_FREE, BLOCK_FREE, BLOCK_FREE, BLOCK_FREE, 1, BLOCK_FREE]
        );
        assert_eq!(v.len(), off_data + (2 << 20));
        assert_eq!(v[off_data + 5], 1);
        assert_eq!(v[off_data + (1 << 20) + 9], 2);
        // Image UUID is version 4 in RTUUID layout (byte 7 holds the version nibble).
        assert_eq!(v[72 + 320 + 7] >> 4, 4);
        assert_eq!(&v[72 + 352..72 + 384], &[0u8; 32][..], "no parent");
    }
}
