//! What biovm keeps between runs so nothing is done twice: the SHA-256 of
//! files it has read before (looked up by the file's identity, so an
//! unchanged multi-GiB artifact is not read again), and test results stored
//! under a key made of what was tested, with which checks, and where.
//!
//! Both live in the cache folder ([`crate::fsutil::cache_dir`]):
//! `digests/` holds one small file per (path, device, inode, size, mtime,
//! ctime) naming its content's SHA-256; `results/` one JSON report per
//! result key. A file's ctime cannot be set from user space, so a file
//! changed in any way (written, truncated, replaced, touched back to its
//! old mtime) gets a new identity and is read again.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::fsutil;

/// `cache/digests/<identity>`: where the digest of a file with this
/// identity is kept.
fn memo_path(cache: &Path, path: &Path, m: &std::fs::Metadata) -> PathBuf {
    let mut h = Sha256::new();
    h.update(path.as_os_str().as_encoded_bytes());
    for n in [
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime() as u64,
        m.mtime_nsec() as u64,
        m.ctime() as u64,
        m.ctime_nsec() as u64,
    ] {
        h.update(n.to_le_bytes());
    }
    cache.join("digests").join(fsutil::hex(&h.finalize()))
}

/// The SHA-256 of `path`'s content (lowercase hex): from the memo when the
/// file is the one digested before, else read (and remembered). A folder
/// (an OCI layout) is digested over its entries' names, kinds and contents.
pub fn sha256(path: &Path) -> Result<String> {
    sha256_in(&fsutil::cache_dir(), path)
}

fn sha256_in(cache: &Path, path: &Path) -> Result<String> {
    let path = absolute(path)?;
    let m = std::fs::symlink_metadata(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if m.is_dir() {
        return dir_sha256(cache, &path);
    }
    if !m.is_file() {
        anyhow::bail!("{} is not a file or folder", path.display());
    }
    let memo = memo_path(cache, &path, &m);
    if let Ok(s) = std::fs::read_to_string(&memo) {
        let s = s.trim();
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(s.to_string());
        }
    }
    let sha = fsutil::sha256_file(&path)?;
    // Read again: a file that changed while it was read keeps no memo.
    let after = std::fs::symlink_metadata(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if memo_path(cache, &path, &after) == memo {
        let stored = std::fs::create_dir_all(memo.parent().unwrap_or(cache))
            .map_err(anyhow::Error::from)
            .and_then(|()| fsutil::write_atomic(&memo, format!("{sha}\n").as_bytes()));
        if let Err(e) = stored {
            log::debug!("not remembering the digest of {}: {e:#}", path.display());
        }
    }
    Ok(sha)
}

/// `p` from the root (the memo is keyed by where the file is).
fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let here = std::env::current_dir().context("cannot read the current folder")?;
    Ok(here.join(p))
}

fn dir_sha256(cache: &Path, dir: &Path) -> Result<String> {
    let mut h = Sha256::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(dir.join(&rel))
            .with_context(|| format!("cannot read {}", dir.join(&rel).display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("cannot read {}", dir.join(&rel).display()))?;
        names.sort();
        // Folders are pushed in reverse so they are walked in name order.
        for name in names.into_iter().rev() {
            let r = rel.join(&name);
            let p = dir.join(&r);
            let m = std::fs::symlink_metadata(&p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            let entry = if m.is_dir() {
                stack.push(r.clone());
                "dir".to_string()
            } else if m.is_file() {
                format!("file {}", sha256_in(cache, &p)?)
            } else if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p)
                    .with_context(|| format!("cannot read {}", p.display()))?;
                format!("link {}", t.display())
            } else {
                anyhow::bail!("{}: not a file, folder or link", p.display());
            };
            h.update(r.as_os_str().as_encoded_bytes());
            h.update(b"\0");
            h.update(entry.as_bytes());
            h.update(b"\0");
        }
    }
    Ok(fsutil::hex(&h.finalize()))
}

/// The SHA-256 of the running biovm executable: results and builds made by
/// another biovm are never taken for this one's.
pub fn own_sha256() -> Result<String> {
    static OWN: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    OWN.get_or_init(|| {
        std::env::current_exe()
            .map_err(anyhow::Error::from)
            .and_then(|p| sha256(&p))
            .map_err(|e| format!("cannot digest biovm's own executable: {e:#}"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// A key over labelled parts: each part's label and length go in with its
/// bytes, so no two different lists of parts give one key.
#[derive(Default)]
pub struct Key(Sha256);

impl Key {
    pub fn new() -> Key {
        Key::default()
    }

    pub fn add(&mut self, label: &str, bytes: &[u8]) -> &mut Key {
        self.0
            .update(format!("{label}\0{}\0", bytes.len()).as_bytes());
        self.0.update(bytes);
        self
    }

    pub fn finish(self) -> String {
        fsutil::hex(&self.0.finalize())
    }
}

/// Test results by key, in `cache/results/`.
pub struct Results {
    dir: PathBuf,
}

impl Results {
    /// The store in biovm's cache folder.
    pub fn open() -> Results {
        Results::at(&fsutil::cache_dir())
    }

    pub fn at(cache: &Path) -> Results {
        Results {
            dir: cache.join("results"),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// The value stored under `key`, if there is one that reads as a `T`.
    pub fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        let p = self.path(key);
        let text = std::fs::read_to_string(&p).ok()?;
        match serde_json::from_str(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                log::warn!("{}: not a stored result ({e}); running again", p.display());
                None
            }
        }
    }

    /// Store `value` under `key` (whole or not at all).
    pub fn put<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let json = serde_json::to_string_pretty(value)? + "\n";
        fsutil::write_atomic(&self.path(key), json.as_bytes())
    }

    /// The folder a stored result's own files (a serial log) go to.
    pub fn files_dir(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_digest_is_remembered_until_the_file_changes() {
        let t = tempfile::tempdir().unwrap();
        let cache = t.path().join("cache");
        let f = t.path().join("disk.raw");
        std::fs::write(&f, b"one").unwrap();
        let one = sha256_in(&cache, &f).unwrap();
        assert_eq!(one, fsutil::hex(&Sha256::digest(b"one")));
        let memos = || std::fs::read_dir(cache.join("digests")).unwrap().count();
        assert_eq!(memos(), 1);
        // The memo is what answers: plant a different digest in it.
        let memo = memo_path(
            &cache,
            &absolute(&f).unwrap(),
            &std::fs::symlink_metadata(&f).unwrap(),
        );
        std::fs::write(&memo, format!("{}\n", "ab".repeat(32))).unwrap();
        assert_eq!(sha256_in(&cache, &f).unwrap(), "ab".repeat(32));
        // Same size, mtime set back: the ctime still moves, so it is read again.
        let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .unwrap()
            .write_all(b"two")
            .unwrap();
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(
            sha256_in(&cache, &f).unwrap(),
            fsutil::hex(&Sha256::digest(b"two"))
        );
    }

    #[test]
    fn a_folder_digest_covers_names_and_contents() {
        let t = tempfile::tempdir().unwrap();
        let cache = t.path().join("cache");
        let d = t.path().join("x.oci");
        std::fs::create_dir_all(d.join("blobs/sha256")).unwrap();
        std::fs::write(d.join("index.json"), b"{}").unwrap();
        std::fs::write(d.join("blobs/sha256/aa"), b"layer").unwrap();
        let a = sha256_in(&cache, &d).unwrap();
        assert_eq!(a, sha256_in(&cache, &d).unwrap());
        std::fs::rename(d.join("blobs/sha256/aa"), d.join("blobs/sha256/ab")).unwrap();
        let b = sha256_in(&cache, &d).unwrap();
        assert_ne!(a, b, "a renamed blob");
        std::fs::write(d.join("blobs/sha256/ab"), b"layeR").unwrap();
        assert_ne!(b, sha256_in(&cache, &d).unwrap(), "a changed blob");
    }

    #[test]
    fn keys_separate_their_parts() {
        let k = |parts: &[(&str, &str)]| {
            let mut k = Key::new();
            for (l, b) in parts {
                k.add(l, b.as_bytes());
            }
            k.finish()
        };
        assert_ne!(k(&[("a", "bc")]), k(&[("a", "b"), ("", "c")]));
        assert_ne!(k(&[("ab", "c")]), k(&[("a", "bc")]));
        assert_eq!(k(&[("a", "bc")]), k(&[("a", "bc")]));
    }

    #[test]
    fn results_round_trip_and_a_damaged_one_is_not_used() {
        let t = tempfile::tempdir().unwrap();
        let r = Results::at(t.path());
        assert_eq!(r.get::<Vec<u32>>("k"), None);
        r.put("k", &vec![1u32, 2]).unwrap();
        assert_eq!(r.get::<Vec<u32>>("k"), Some(vec![1, 2]));
        std::fs::write(t.path().join("results/k.json"), "{").unwrap();
        assert_eq!(r.get::<Vec<u32>>("k"), None);
    }
}
