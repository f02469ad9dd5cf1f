//! qcow2 through `qemu-img convert -O qcow2` (QEMU's qcow2 specification,
//! `docs/interop/qcow2.txt`, version 3).
//!
//! qcow2 carries no UUID or timestamp, and `qemu-img convert` writes
//! clusters in guest order when run without `-W` (out-of-order writes), so
//! its output is byte-identical across runs; `tests/formats.rs` checks that.
//! Zero clusters of the raw disk are not allocated.

use std::path::Path;

use anyhow::Result;

use super::FormatContext;
use crate::cmd::Cmd;
use crate::fsutil::AtomicFile;

/// Convert `raw` into qcow2 at `dest`.
pub fn write_qcow2(raw: &Path, dest: &Path, _ctx: &FormatContext) -> Result<()> {
    convert(raw, dest)
}

/// Convert the raw disk `raw` (an OS disk or a data disk) into qcow2 at
/// `dest`, which appears only when complete.
pub(crate) fn convert(raw: &Path, dest: &Path) -> Result<()> {
    let (a, f) = AtomicFile::create(dest)?;
    drop(f);
    Cmd::new("qemu-img")
        .args([
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            "compat=1.1",
        ])
        .arg(raw)
        .arg(a.path())
        .run()?;
    a.commit()
}
