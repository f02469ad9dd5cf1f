//! Reading a (sparse) raw disk once, in order, in fixed-size chunks, skipping
//! holes (`SEEK_DATA`) without reading them and all-zero chunks after reading
//! them. Every disk format writer is built on this.

use std::fs::File;
use std::io::Read;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Iterates over the non-zero `chunk`-sized pieces of a raw disk.
pub(crate) struct SparseReader {
    file: File,
    path: PathBuf,
    size: u64,
    chunk: u64,
    /// Index of the next chunk to look at.
    next: u64,
}

impl SparseReader {
    /// Open `path`; its size must be a multiple of `chunk`.
    pub(crate) fn open(path: &Path, chunk: u64) -> Result<SparseReader> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let size = file
            .metadata()
            .with_context(|| format!("cannot stat {}", path.display()))?
            .len();
        if size % chunk != 0 {
            bail!(
                "{}: size {size} is not a multiple of {chunk} bytes",
                path.display()
            );
        }
        Ok(SparseReader {
            file,
            path: path.to_path_buf(),
            size,
            chunk,
            next: 0,
        })
    }

    /// Disk size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Number of chunks on the disk.
    pub(crate) fn chunks(&self) -> u64 {
        self.size / self.chunk
    }

    /// The offset of the first data byte at or after `off` (SEEK_DATA), or
    /// the disk size when only a hole follows. Filesystems without
    /// SEEK_DATA report everything as data, which is still correct.
    fn next_data(&self, off: u64) -> u64 {
        // SAFETY: lseek on a file descriptor we own; no memory is touched.
        let r = unsafe { libc::lseek(self.file.as_raw_fd(), off as libc::off_t, libc::SEEK_DATA) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                return self.size;
            }
            return off;
        }
        r as u64
    }

    /// Fill `buf` (exactly `chunk` bytes) with the next chunk holding a
    /// non-zero byte and return its index, or `None` at the end.
    pub(crate) fn next_nonzero(&mut self, buf: &mut [u8]) -> Result<Option<u64>> {
        assert_eq!(buf.len() as u64, self.chunk);
        while self.next < self.chunks() {
            let data = self.next_data(self.next * self.chunk);
            if data >= self.size {
                self.next = self.chunks();
                break;
            }
            let idx = data / self.chunk;
            self.next = idx + 1;
            read_exact_at(&self.file, buf, idx * self.chunk)
                .with_context(|| format!("cannot read {}", self.path.display()))?;
            if !is_zero(buf) {
                return Ok(Some(idx));
            }
        }
        Ok(None)
    }
}

fn read_exact_at(f: &File, buf: &mut [u8], off: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.read_exact_at(buf, off)
}

/// Whether every byte of `buf` is zero.
pub(crate) fn is_zero(buf: &[u8]) -> bool {
    // SAFETY: every bit pattern is a valid u128.
    let (pre, mid, post) = unsafe { buf.align_to::<u128>() };
    pre.iter().all(|&b| b == 0) && mid.iter().all(|&w| w == 0) && post.iter().all(|&b| b == 0)
}

/// Copy `src` into `dst` entirely (used to place a finished temporary file
/// inside an archive).
pub(crate) fn copy_file_into(src: &Path, dst: &mut impl std::io::Write) -> Result<u64> {
    let mut f = File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", src.display()))?;
        if k == 0 {
            return Ok(n);
        }
        dst.write_all(&buf[..k])?;
        n += k as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn yields_only_nonzero_chunks_in_order() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk.raw");
        let mut f = File::create(&p).unwrap();
        f.set_len(16 * 4096).unwrap();
        f.seek(SeekFrom::Start(4096 * 3 + 17)).unwrap();
        f.write_all(b"x").unwrap();
        f.seek(SeekFrom::Start(4096 * 5)).unwrap();
        f.write_all(&[0u8; 4096]).unwrap(); // allocated but zero
        f.seek(SeekFrom::Start(4096 * 15 + 4095)).unwrap();
        f.write_all(b"y").unwrap();
        drop(f);
        let mut r = SparseReader::open(&p, 4096).unwrap();
        assert_eq!(r.chunks(), 16);
        let mut buf = vec![0u8; 4096];
        assert_eq!(r.next_nonzero(&mut buf).unwrap(), Some(3));
        assert_eq!(buf[17], b'x');
        assert_eq!(r.next_nonzero(&mut buf).unwrap(), Some(15));
        assert_eq!(buf[4095], b'y');
        assert_eq!(r.next_nonzero(&mut buf).unwrap(), None);
    }

    #[test]
    fn rejects_unaligned_size() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk.raw");
        std::fs::write(&p, b"abc").unwrap();
        assert!(SparseReader::open(&p, 512).is_err());
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 1000]));
        let mut v = vec![0u8; 1000];
        v[999] = 1;
        assert!(!is_zero(&v));
        v[999] = 0;
        v[1] = 1;
        assert!(!is_zero(&v[1..]));
    }
}
