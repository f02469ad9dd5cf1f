//! Apptainer / Singularity Image Format (SIF).
//!
//! The container layout follows the SIF specification as implemented by
//! sylabs/sif v2 (`pkg/sif/sif.go` header, `descriptor.go` raw descriptor,
//! `create.go` layout; all fields little-endian, packed): a 128-byte global
//! header (32-byte launch script, "SIF_MAGIC", version "01", arch "02" =
//! amd64, image UUID, created/modified times, descriptor counts, offsets
//! and sizes), 48 descriptor slots of 585 bytes from offset 4096, then the
//! data objects from the end of the descriptor table: the definition file,
//! the JSON labels, and the squashfs root as the primary system partition
//! (fs type 1 squashfs, partition type 2 primary system, arch amd64),
//! aligned to 4096 bytes. IDs derive from the seed and every time is
//! SOURCE_DATE_EPOCH.
//!
//! The squashfs comes from `mksquashfs` (squashfs-tools, reproducible by
//! default since 4.4) with SOURCE_DATE_EPOCH as filesystem time and as the
//! clamp for file times; owners and
//! xattrs are kept; [`super::layer::CONTAINER_EXCLUDES`] are left out.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::sparse::copy_file_into;
use super::FormatContext;
use crate::cmd::Cmd;
use crate::config::Format;
use crate::fsutil::AtomicFile;

const LAUNCH: &[u8] = b"#!/usr/bin/env run-singularity\n";
const HEADER_LEN: usize = 128;
const DESCR_OFFSET: u64 = 4096;
/// The length of one descriptor of the table.
pub(crate) const DESCR_LEN: usize = 585;
const DESCR_CAPACITY: u64 = 48;
const GROUP_MASK: u32 = 0xf000_0000;

const DATA_DEFFILE: i32 = 0x4001;
const DATA_LABELS: i32 = 0x4003;
const DATA_PARTITION: i32 = 0x4004;
const FS_SQUASH: i32 = 1;
const PART_PRIMSYS: i32 = 2;
const ARCH_AMD64: &[u8; 3] = b"02\0";

/// One data object to place.
struct Object<'a> {
    kind: i32,
    len: u64,
    align: u64,
    extra: Vec<u8>,
    data: ObjectData<'a>,
}

enum ObjectData<'a> {
    Bytes(Vec<u8>),
    File(&'a Path),
}

fn descriptor(id: u32, o: &Object, offset: u64, padded: u64, time: i64) -> [u8; DESCR_LEN] {
    let mut d = [0u8; DESCR_LEN];
    d[0..4].copy_from_slice(&o.kind.to_le_bytes());
    d[4] = 1; // used
    d[5..9].copy_from_slice(&id.to_le_bytes());
    d[9..13].copy_from_slice(&(GROUP_MASK | 1).to_le_bytes());
    // 13..17 linked ID: none.
    d[17..25].copy_from_slice(&(offset as i64).to_le_bytes());
    d[25..33].copy_from_slice(&(o.len as i64).to_le_bytes());
    d[33..41].copy_from_slice(&(padded as i64).to_le_bytes());
    d[41..49].copy_from_slice(&time.to_le_bytes());
    d[49..57].copy_from_slice(&time.to_le_bytes());
    // 57..73 deprecated UID/GID: 0. 73..201 name: empty.
    d[201..201 + o.extra.len()].copy_from_slice(&o.extra);
    d
}

/// The definition file stored in the image: documentation of its origin
/// (`Bootstrap: scratch`, since the tree came from biovm, not a recipe
/// Apptainer could rerun) and its labels.
fn deffile(ctx: &FormatContext) -> String {
    let mut s = format!(
        "# {} {}: built by biovm from a Debian root filesystem.\nBootstrap: scratch\n\n%labels\n",
        ctx.name, ctx.version
    );
    for (k, v) in ctx.oci_labels() {
        s.push_str(&format!("    {k} {}\n", v.replace('\n', " ")));
    }
    s
}

/// Write a SIF from an existing squashfs image.
pub(crate) fn write_sif_from_squashfs(
    squashfs: &Path,
    dest: &Path,
    ctx: &FormatContext,
) -> Result<()> {
    let time = ctx.source_date_epoch as i64;
    let sq_len = std::fs::metadata(squashfs)
        .with_context(|| format!("cannot stat {}", squashfs.display()))?
        .len();
    let labels = serde_json::to_vec_pretty(&ctx.oci_labels()).expect("JSON of strings");
    let def = deffile(ctx).into_bytes();
    let mut part_extra = Vec::with_capacity(11);
    part_extra.extend_from_slice(&FS_SQUASH.to_le_bytes());
    part_extra.extend_from_slice(&PART_PRIMSYS.to_le_bytes());
    part_extra.extend_from_slice(ARCH_AMD64);
    let objects = [
        Object {
            kind: DATA_DEFFILE,
            len: def.len() as u64,
            align: 1,
            extra: Vec::new(),
            data: ObjectData::Bytes(def),
        },
        Object {
            kind: DATA_LABELS,
            len: labels.len() as u64,
            align: 1,
            extra: Vec::new(),
            data: ObjectData::Bytes(labels),
        },
        Object {
            kind: DATA_PARTITION,
            len: sq_len,
            align: 4096,
            extra: part_extra,
            data: ObjectData::File(squashfs),
        },
    ];

    let descr_size = DESCR_CAPACITY * DESCR_LEN as u64;
    let data_off = DESCR_OFFSET + descr_size;
    let mut table = vec![0u8; descr_size as usize];
    let mut placed = Vec::new(); // (offset, padding before)
    let mut data_size = 0u64;
    for (i, o) in objects.iter().enumerate() {
        let unaligned = data_off + data_size;
        let offset = unaligned.div_ceil(o.align) * o.align;
        let padded = offset - unaligned + o.len;
        table[i * DESCR_LEN..(i + 1) * DESCR_LEN].copy_from_slice(&descriptor(
            i as u32 + 1,
            o,
            offset,
            padded,
            time,
        ));
        placed.push((offset, offset - unaligned));
        data_size += padded;
    }

    let mut h = [0u8; HEADER_LEN];
    h[..LAUNCH.len()].copy_from_slice(LAUNCH);
    h[32..42].copy_from_slice(b"SIF_MAGIC\0");
    h[42..45].copy_from_slice(b"01\0");
    h[45..48].copy_from_slice(ARCH_AMD64);
    h[48..64].copy_from_slice(&ctx.uuid("sif-image").bytes());
    let nums = [
        time,
        time,
        (DESCR_CAPACITY - objects.len() as u64) as i64,
        DESCR_CAPACITY as i64,
        DESCR_OFFSET as i64,
        descr_size as i64,
        data_off as i64,
        data_size as i64,
    ];
    for (i, n) in nums.iter().enumerate() {
        h[64 + 8 * i..72 + 8 * i].copy_from_slice(&n.to_le_bytes());
    }

    let (a, f) = AtomicFile::create(dest)?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    w.write_all(&h)?;
    w.write_all(&vec![0u8; DESCR_OFFSET as usize - HEADER_LEN])?;
    w.write_all(&table)?;
    for (o, (_, pad)) in objects.iter().zip(&placed) {
        w.write_all(&vec![0u8; *pad as usize])?;
        match &o.data {
            ObjectData::Bytes(b) => w.write_all(b)?,
            ObjectData::File(p) => {
                let n = copy_file_into(p, &mut w)?;
                anyhow::ensure!(n == o.len, "{} changed while being copied", p.display());
            }
        }
    }
    drop(super::flush_buf(w, a.path())?);
    a.commit()
}

fn le32(b: &[u8], o: usize) -> i32 {
    i32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], o: usize) -> i64 {
    i64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

/// Where the SIF `file`'s primary system partition (a squashfs) lies:
/// (offset, size); the reader of what [`write_sif_from_squashfs`] writes,
/// for unpacking a SIF's tree.
pub(crate) fn system_partition(file: &Path) -> Result<(u64, u64)> {
    let mut f = File::open(file).context("cannot open it")?;
    let len = f.metadata()?.len();
    let mut h = [0u8; HEADER_LEN];
    f.read_exact(&mut h)
        .context("it is too short for a SIF header")?;
    if &h[32..41] != b"SIF_MAGIC" {
        bail!("it is not a SIF image (no SIF_MAGIC in its header)");
    }
    let (total, table_off) = (le64(&h, 88), le64(&h, 96));
    if !(0..=4096).contains(&total) || table_off < HEADER_LEN as i64 {
        bail!("its header is corrupt ({total} descriptors at offset {table_off})");
    }
    let mut table = vec![0u8; total as usize * DESCR_LEN];
    f.seek(SeekFrom::Start(table_off as u64))?;
    f.read_exact(&mut table)
        .context("its descriptor table is cut short")?;
    for d in table.chunks(DESCR_LEN) {
        let used = d[4] != 0;
        if !used || le32(d, 0) != DATA_PARTITION || le32(d, 205) != PART_PRIMSYS {
            continue;
        }
        let fs_type = le32(d, 201);
        if fs_type != FS_SQUASH {
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

/// Make the squashfs of `rootfs` (minus [`super::layer::CONTAINER_EXCLUDES`]) at `out`.
pub(crate) fn make_squashfs(rootfs: &Path, out: &Path, source_date_epoch: u64) -> Result<()> {
    let t = source_date_epoch.to_string();
    let mut c = Cmd::new("mksquashfs");
    c.arg(rootfs)
        .arg(out)
        .args(["-noappend", "-quiet", "-no-progress", "-reproducible"])
        // SOURCE_DATE_EPOCH (set here, overriding any inherited value) makes
        // it the filesystem time and clamps newer file times to it; the
        // -mkfs-time/-all-time options cannot be combined with it.
        .env("SOURCE_DATE_EPOCH", &t)
        .args(["-wildcards", "-e"])
        .args(super::layer::excludes_of(Format::Sif));
    c.run()?;
    Ok(())
}

/// Write `rootfs` as an Apptainer SIF image at `dest`.
pub fn write_sif(rootfs: &Path, dest: &Path, ctx: &FormatContext) -> Result<()> {
    let (sq, f) = super::temp_beside(dest, "squashfs")?;
    drop(f);
    make_squashfs(rootfs, sq.path(), ctx.source_date_epoch)?;
    write_sif_from_squashfs(sq.path(), dest, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le64(b: &[u8], o: usize) -> i64 {
        i64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    #[test]
    fn layout_matches_the_spec() {
        let d = tempfile::tempdir().unwrap();
        let sq = d.path().join("fake.squashfs");
        std::fs::write(&sq, b"hsqs-not-really").unwrap();
        let ctx = FormatContext::new("bio", "1.0", "s", 1_700_000_000);
        let dest = d.path().join("bio.sif");
        write_sif_from_squashfs(&sq, &dest, &ctx).unwrap();
        let v = std::fs::read(&dest).unwrap();
        assert_eq!(&v[32..41], b"SIF_MAGIC");
        assert_eq!(le64(&v, 64), 1_700_000_000);
        assert_eq!(le64(&v, 80), 45, "free descriptors");
        assert_eq!(le64(&v, 96), 4096);
        assert_eq!(le64(&v, 104), 48 * 585);
        let data_off = le64(&v, 112) as usize;
        assert_eq!(data_off, 4096 + 48 * 585);
        let p = 4096 + 2 * 585; // third descriptor: the partition
        assert_eq!(
            i32::from_le_bytes(v[p..p + 4].try_into().unwrap()),
            DATA_PARTITION
        );
        let off = le64(&v, p + 17) as usize;
        let len = le64(&v, p + 25) as usize;
        assert_eq!(off % 4096, 0);
        assert_eq!(&v[off..off + len], b"hsqs-not-really");
        assert_eq!(v.len(), off + len);
        assert_eq!(le64(&v, 120) as usize, v.len() - data_off, "data size");
        assert_eq!(
            &v[p + 201..p + 212],
            &[1, 0, 0, 0, 2, 0, 0, 0, b'0', b'2', 0]
        );
        let def = 4096;
        let doff = le64(&v, def + 17) as usize;
        let dlen = le64(&v, def + 25) as usize;
        assert!(String::from_utf8_lossy(&v[doff..doff + dlen]).contains("Bootstrap: scratch"));
    }
}
