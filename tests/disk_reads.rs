//! Each disk format reads the raw disk at most once, never reads its holes,
//! and writes a sparse result.
//!
//! The kernel's I/O accounting (`/proc/self/io`, `rchar`: bytes returned by
//! read system calls, including those of reaped child processes such as
//! `qemu-img`) measures what each writer read. This file holds a single test
//! so no other test's reads are counted in the same process.

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use biovm::formats::{self, FormatContext};

const MIB: u64 = 1 << 20;

fn rchar() -> u64 {
    let io = fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    io.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("rchar in /proc/self/io")
}

/// Bytes read while running `f`.
fn reads(f: impl FnOnce()) -> u64 {
    let before = rchar();
    f();
    rchar() - before
}

fn allocated(p: &Path) -> u64 {
    fs::metadata(p).unwrap().blocks() * 512
}

#[test]
fn disk_formats_read_the_raw_disk_once_and_stay_sparse() {
    let d = tempfile::tempdir().unwrap();
    // A 1 GiB disk holding 24 MiB of data in three extents (not
    // compressible to nothing, so the outputs' sizes mean something); the
    // rest is a hole.
    let raw = d.path().join("disk.raw");
    let f = fs::File::create(&raw).unwrap();
    f.set_len(1024 * MIB).unwrap();
    let mut x: u32 = 12345;
    let mut chunk = vec![0u8; (8 * MIB) as usize];
    for at in [0, 300 * MIB, 1016 * MIB] {
        for b in chunk.iter_mut() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 24) as u8 & 0x0f;
        }
        f.write_all_at(&chunk, at).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    let data = allocated(&raw);
    assert!((24 * MIB..26 * MIB).contains(&data), "raw allocates {data}");

    let ctx = FormatContext::new("t", "1", "seed", 1_700_000_000);
    let out = d.path().join("out");
    let mut rows = Vec::new();
    let mut check = |name: &str, read: u64, file: &Path| {
        let (size, used) = (fs::metadata(file).unwrap().len(), allocated(file));
        rows.push(format!(
            "{name:<7} read {:>5.1} MiB of the raw disk's {:.1} MiB of data ({:.0} MiB apparent); \
             wrote {:>6.1} MiB, {:>5.1} MiB allocated",
            read as f64 / MIB as f64,
            data as f64 / MIB as f64,
            1024.0,
            size as f64 / MIB as f64,
            used as f64 / MIB as f64
        ));
        // Once: at least the data, never the holes, never twice (1 MiB of
        // slack for qemu-img's probing and headers).
        assert!(read >= 24 * MIB, "{name}: read only {read} bytes");
        assert!(read <= data + MIB, "{name}: read {read} bytes of {data}");
        // Sparse: nothing like the 1 GiB disk is allocated.
        assert!(used <= 26 * MIB, "{name}: allocates {used} bytes");
    };

    let qcow2 = out.join("t.qcow2");
    let r = reads(|| formats::write_qcow2(&raw, &qcow2, &ctx).unwrap());
    check("qcow2", r, &qcow2);
    let vdi = out.join("t.vdi");
    let r = reads(|| formats::write_vdi(&raw, &vdi, &ctx).unwrap());
    check("vdi", r, &vdi);
    let vmdk = out.join("t.vmdk");
    let r = reads(|| {
        formats::write_vmdk(&raw, &vmdk, &ctx).unwrap();
    });
    check("vmdk", r, &vmdk);
    // The OVA and the box are made from that VMDK: the raw disk is not
    // read again at all.
    let (ova, vbox) = (out.join("t.ova"), out.join("t.box"));
    let r = reads(|| {
        formats::write_ova_from_vmdk(&vmdk, &ova, &ctx).unwrap();
        formats::write_vagrant_box_from_vmdk(&vmdk, &vbox, &ctx).unwrap();
    });
    let vmdk_size = fs::metadata(&vmdk).unwrap().len();
    assert!(
        r <= 4 * vmdk_size + MIB,
        "OVA + box read {r} bytes: more than copying and hashing the {vmdk_size}-byte VMDK twice"
    );
    for row in rows {
        println!("{row}");
    }
}
