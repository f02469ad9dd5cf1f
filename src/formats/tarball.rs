//! Deterministic outer archives (OVA, Vagrant box, docker-archive): POSIX
//! ustar (POSIX.1-1988 / IEEE Std 1003.1, "pax" interchange format's ustar
//! headers) members with owner 0/0, empty owner names, mode 0644 and mtime =
//! SOURCE_DATE_EPOCH, in the order the caller adds them.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// A tar stream whose members carry only what the caller chose.
pub(crate) struct DetTar<W: Write> {
    b: tar::Builder<W>,
    mtime: u64,
}

impl<W: Write> DetTar<W> {
    pub(crate) fn new(w: W, mtime: u64) -> Self {
        let mut b = tar::Builder::new(w);
        b.mode(tar::HeaderMode::Deterministic);
        DetTar { b, mtime }
    }

    fn header(&self, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(self.mtime);
        h
    }

    /// Add a regular file with `bytes` as content.
    pub(crate) fn add_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let mut h = self.header(bytes.len() as u64);
        self.b
            .append_data(&mut h, name, bytes)
            .with_context(|| format!("cannot add {name} to archive"))
    }

    /// Add a regular file with the content of `src`.
    pub(crate) fn add_file(&mut self, name: &str, src: &Path) -> Result<()> {
        let f =
            std::fs::File::open(src).with_context(|| format!("cannot open {}", src.display()))?;
        let len = f.metadata()?.len();
        let mut h = self.header(len);
        self.b
            .append_data(&mut h, name, std::io::BufReader::with_capacity(1 << 20, f))
            .with_context(|| format!("cannot add {name} to archive"))
    }

    /// Write the end-of-archive blocks and return the inner writer.
    pub(crate) fn finish(self) -> Result<W> {
        self.b.into_inner().context("cannot finish archive")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_normalised() {
        let mut t = DetTar::new(Vec::new(), 1234);
        t.add_bytes("a.txt", b"hello").unwrap();
        let v = t.finish().unwrap();
        let mut ar = tar::Archive::new(&v[..]);
        let e = ar.entries().unwrap().next().unwrap().unwrap();
        let h = e.header();
        assert_eq!(h.path().unwrap().to_str(), Some("a.txt"));
        assert_eq!(h.mtime().unwrap(), 1234);
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
        assert_eq!(h.mode().unwrap(), 0o644);
        assert_eq!(h.username().unwrap(), Some(""));
        assert!(h.as_ustar().is_some());
    }
}
