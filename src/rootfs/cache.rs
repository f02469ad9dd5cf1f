//! Bootstrapped trees, kept for the next build with the same bootstrap.
//!
//! With a lock, a bootstrap is a pure function of what it is given: the
//! exact packages (each pinned by version and SHA-256), the suite,
//! architecture, mirror and keyring, SOURCE_DATE_EPOCH, the code that
//! runs it (this module's parent, `rootfs.rs`) and the host's mmdebstrap,
//! apt and dpkg. Builds from one lock give byte-identical trees (the
//! reproducibility tests show it), and dpkg's serial work is most of a
//! build: BioLinux's bootstrap takes 550 s of CPU, unpacking its tree
//! from an archive 40 s. So a locked build keeps its tree, just after the
//! bootstrap, as a zstd-compressed tar (ownership by number, modes,
//! extended attributes and ACLs, holes, nanosecond mtimes) under a key
//! made of all of the above, and a later build with the same key unpacks
//! it instead of bootstrapping.
//!
//! The entry is `bootstraps/KEY.tar.zst` with `KEY.json` beside it (the
//! package set the bootstrap installed, checked against the lock again on
//! every use, and where it came from), each written under a temporary
//! name and renamed when whole; the JSON comes last, so an entry without
//! it is not one. zstd checks its frames' checksums while unpacking: a
//! damaged archive is dropped and the build bootstraps. The cache keeps
//! the most recently used entries within `BIOVM_BOOTSTRAP_CACHE_GIB`
//! (default 10; 0 turns it off). `biovm build --rebuild` always
//! bootstraps, and its tree replaces the entry.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cmd::Cmd;
use crate::config::Image;
use crate::fsutil::{self, AtomicFile};
use crate::lock::LockedDeb;

/// Bump when something outside `rootfs.rs` changes what a bootstrap
/// writes into the tree.
const FORMAT: &str = "biovm bootstrap cache 1";

/// The host programs whose versions the tree may depend on.
const HOST_TOOLS: &[&str] = &["mmdebstrap", "apt", "dpkg"];

/// What an entry records beside its tree.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    /// The key's text, hashed into its name (for a person reading it).
    made_from: String,
    image: String,
    /// Seconds since the epoch when the entry was made.
    made_at: u64,
    tree_bytes: u64,
    archive_bytes: u64,
    /// Every package installed in the tree, with its SHA-256.
    debian: Vec<LockedDeb>,
}

/// The cache of bootstrapped trees in a biovm cache folder.
pub(crate) struct BootstrapCache {
    dir: PathBuf,
    budget: u64,
}

/// A bootstrap's key: its text and the SHA-256 of that text.
pub(crate) struct Key {
    text: String,
    pub(crate) sha256: String,
}

/// A tree taken from the cache.
pub(crate) struct Hit {
    pub(crate) debian: Vec<LockedDeb>,
    pub(crate) key: String,
}

impl Key {
    /// The key of bootstrapping `image` with exactly `packages` (a lock's
    /// `name=version` specs), whose `.deb` files are `debs` (the lock's, by
    /// SHA-256), at `epoch`.
    pub(crate) fn of(
        image: &Image,
        packages: &[String],
        debs: &[LockedDeb],
        epoch: u64,
    ) -> Result<Key> {
        let mut text = String::new();
        let mut line = |k: &str, v: &str| {
            text.push_str(k);
            text.push_str(": ");
            text.push_str(v);
            text.push('\n');
        };
        line("format", FORMAT);
        for t in HOST_TOOLS {
            line(t, &host_version(t)?);
        }
        line("suite", &image.base.suite);
        line("architecture", &image.base.architecture);
        line("mirror", &super::mirror_args(image).join(" "));
        let keyring = match &image.base.keyring {
            Some(k) => fsutil::hex(&Sha256::digest(k)),
            None => "the Debian archive keyring".into(),
        };
        line("keyring", &keyring);
        line("source-date-epoch", &epoch.to_string());
        line("packages", &packages.join(" "));
        // A lock's hash that is not the archive's is refused before the
        // bootstrap, naming both: never from a tree kept under the right one.
        let files: Vec<String> = debs
            .iter()
            .map(|d| format!("{}_{}_{}={}", d.name, d.version, d.architecture, d.sha256))
            .collect();
        line("debs", &files.join(" "));
        line(
            "bootstrap-code",
            &fsutil::hex(&Sha256::digest(include_str!("../rootfs.rs"))),
        );
        let sha256 = fsutil::hex(&Sha256::digest(text.as_bytes()));
        Ok(Key { text, sha256 })
    }
}

/// `PACKAGE=VERSION` of an installed host package.
fn host_version(package: &str) -> Result<String> {
    let v = Cmd::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .output()
        .with_context(|| format!("cannot tell the host's version of {package}"))?;
    Ok(format!("{package}={v}"))
}

impl BootstrapCache {
    /// The cache under `cache_dir`, or none when `BIOVM_BOOTSTRAP_CACHE_GIB`
    /// is 0.
    pub(crate) fn new(cache_dir: &Path) -> Result<Option<BootstrapCache>> {
        let gib = match std::env::var("BIOVM_BOOTSTRAP_CACHE_GIB") {
            Ok(s) => s.trim().parse::<u64>().with_context(|| {
                format!("BIOVM_BOOTSTRAP_CACHE_GIB={s}: not a whole number of GiB")
            })?,
            Err(_) => 10,
        };
        Ok((gib > 0).then(|| BootstrapCache {
            dir: cache_dir.join("bootstraps"),
            budget: gib << 30,
        }))
    }

    fn archive(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.tar.zst"))
    }

    fn meta(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// Unpack the tree of `key` into `root` (which must not exist) if the
    /// cache has it. A damaged entry is dropped, `root` removed, and
    /// `None` returned: the caller bootstraps.
    pub(crate) fn take(&self, key: &Key, root: &Path) -> Result<Option<Hit>> {
        let meta_path = self.meta(&key.sha256);
        let Ok(text) = fs::read_to_string(&meta_path) else {
            return Ok(None);
        };
        let unpacked = serde_json::from_str::<Meta>(&text)
            .with_context(|| format!("{} is not an entry's description", meta_path.display()))
            .and_then(|meta| {
                fs::create_dir(root)
                    .with_context(|| format!("cannot create {}", root.display()))?;
                unpack(&self.archive(&key.sha256), root)?;
                same_packages(root, &meta.debian)?;
                Ok(meta)
            });
        match unpacked {
            Ok(meta) => {
                // Most recently used: kept longest.
                if let Ok(f) = fs::File::options().append(true).open(&meta_path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                Ok(Some(Hit {
                    debian: meta.debian,
                    key: key.sha256.clone(),
                }))
            }
            Err(e) => {
                log::warn!(
                    "the cached bootstrap {} cannot be used, bootstrapping instead: {e:#}",
                    self.archive(&key.sha256).display()
                );
                self.remove(&key.sha256);
                if root.exists() {
                    fsutil::remove_tree(root)?;
                }
                Ok(None)
            }
        }
    }

    /// Keep the freshly bootstrapped `root` (whose installed packages are
    /// `debian`) under `key`. A failure costs only the entry: it is logged
    /// and the build goes on.
    pub(crate) fn keep(&self, key: &Key, image: &str, root: &Path, debian: &[LockedDeb]) {
        let t = std::time::Instant::now();
        match self.write(key, image, root, debian) {
            Ok(bytes) => {
                log::info!(
                    "bootstrap kept for the next build with the same key ({} MiB in {:.1} s): {}",
                    bytes >> 20,
                    t.elapsed().as_secs_f64(),
                    self.archive(&key.sha256).display()
                );
                self.evict(&key.sha256);
            }
            Err(e) => log::warn!("the bootstrap was not kept for later builds: {e:#}"),
        }
    }

    fn write(&self, key: &Key, image: &str, root: &Path, debian: &[LockedDeb]) -> Result<u64> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        fsutil::remove_stale_temps(&self.dir);
        let archive = self.archive(&key.sha256);
        let (tmp, file) = AtomicFile::create(&archive)?;
        drop(file);
        pack(root, tmp.path())?;
        let archive_bytes = fs::metadata(tmp.path())?.len();
        tmp.commit()?;
        let meta = Meta {
            made_from: key.text.clone(),
            image: image.to_string(),
            made_at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            tree_bytes: crate::build::tree_size(root),
            archive_bytes,
            debian: debian.to_vec(),
        };
        fsutil::write_atomic(
            &self.meta(&key.sha256),
            (serde_json::to_string_pretty(&meta)? + "\n").as_bytes(),
        )?;
        Ok(archive_bytes)
    }

    fn remove(&self, key: &str) {
        let _ = fs::remove_file(self.meta(key));
        let _ = fs::remove_file(self.archive(key));
    }

    /// Remove the least recently used entries until the rest fit the
    /// budget; `keep` (the entry just made) stays.
    fn evict(&self, keep: &str) {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<(SystemTime, String, u64)> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let key = name.strip_suffix(".json")?.to_string();
                let used = e.metadata().ok()?.modified().ok()?;
                let bytes = fs::metadata(self.archive(&key)).map(|m| m.len()).ok()?;
                Some((used, key, bytes))
            })
            .collect();
        // Newest first: what is kept is a prefix.
        entries.sort_by_key(|e| std::cmp::Reverse(e.0));
        let mut total = entries.iter().find(|e| e.1 == keep).map_or(0, |e| e.2);
        for (_, key, bytes) in entries.iter().filter(|e| e.1 != keep) {
            if total + bytes > self.budget {
                log::info!("dropping the cached bootstrap {key} (least recently used)");
                self.remove(key);
            } else {
                total += bytes;
            }
        }
    }
}

/// The options both ends of the archive agree on: ids by number (the
/// host's user names never map), extended attributes (file capabilities)
/// and ACLs.
const TAR_METADATA: &[&str] = &[
    "--numeric-owner",
    "--xattrs",
    "--xattrs-include=*",
    "--acls",
];

fn pack(root: &Path, archive: &Path) -> Result<()> {
    Cmd::new("tar")
        .arg("--create")
        .arg(format!("--file={}", archive.display()))
        .arg("--use-compress-program=zstd -T0 -3")
        .args(TAR_METADATA)
        .args(["--format=posix", "--sparse", "--sort=name"])
        .arg("--directory")
        .arg(root)
        .arg(".")
        .run()
        .with_context(|| format!("cannot archive the tree {}", root.display()))?;
    Ok(())
}

fn unpack(archive: &Path, root: &Path) -> Result<()> {
    Cmd::new("tar")
        .arg("--extract")
        .arg(format!("--file={}", archive.display()))
        .arg("--use-compress-program=zstd")
        .args(TAR_METADATA)
        .args(["--same-permissions", "--same-owner"])
        .arg("--directory")
        .arg(root)
        .run()
        .with_context(|| format!("cannot unpack {}", archive.display()))?;
    Ok(())
}

/// The unpacked tree has exactly the packages its entry says it has.
fn same_packages(root: &Path, debian: &[LockedDeb]) -> Result<()> {
    let status = fs::read_to_string(root.join("var/lib/dpkg/status"))
        .context("reading the unpacked tree's dpkg status")?;
    let have = crate::lock::installed(&status);
    let said: std::collections::BTreeSet<(String, String, String)> = debian
        .iter()
        .map(|d| (d.name.clone(), d.version.clone(), d.architecture.clone()))
        .collect();
    if have != said {
        let extra = have.difference(&said).next();
        let missing = said.difference(&have).next();
        bail!("the unpacked tree's packages differ from its entry's (installed but not listed: {extra:?}; listed but not installed: {missing:?})");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
