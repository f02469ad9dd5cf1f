//! `biovm lock --check`: whether an image's lock can still be built,
//! without building. It downloads the mirror's current signed package
//! indices (the `apt-get update` of a bootstrap, nothing more) and tells
//! which locked Debian versions the mirror no longer serves, and for each
//! whether biovm's store or a vendor folder still has it (a build takes
//! them from there); and which locked packages the suite's security
//! updates have superseded (a warning: the lock still builds, with the
//! old version).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{Index, Lock, LockedDeb};
use crate::config::Image;
use crate::pool::Pool;

/// A locked package the mirror no longer serves with its locked version
/// and sha256.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Gone {
    /// The locked package (name, version, architecture, sha256).
    #[serde(flatten)]
    pub(crate) deb: LockedDeb,
    /// The sha256 the mirror's index gives this version, when it still
    /// serves it but with other content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) mirror_sha256: Option<String>,
    /// biovm's store (the cache's pool) has the locked file.
    pub(crate) in_store: bool,
    /// The vendor folder given has it.
    pub(crate) in_vendor: bool,
}

impl Gone {
    /// A build takes this package from the store or the vendor folder.
    pub(crate) fn kept(&self) -> bool {
        self.in_store || self.in_vendor
    }
}

/// A locked package the security suite has at a newer version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Superseded {
    /// The package's name.
    pub name: String,
    /// The version the lock has.
    pub locked: String,
    /// The newest version the security suite's index has.
    pub security: String,
}

/// What `lock --check` found.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) lock: PathBuf,
    /// How many locked Debian packages were checked.
    pub(crate) debian_packages: usize,
    /// The Packages indices the mirror served (apt's list file names).
    pub(crate) indices: Vec<String>,
    pub(crate) vendor: Option<PathBuf>,
    pub(crate) gone: Vec<Gone>,
    /// Whether the sources had a security suite to compare with.
    pub(crate) security_index: bool,
    pub(crate) superseded: Vec<Superseded>,
    /// Whether a build from the lock would find every locked package.
    pub(crate) buildable: bool,
}

/// Check the lock of `image` against the mirror's current indices, biovm's
/// store in `cache` and the vendor folder `vendor`.
pub(crate) fn check(image: &Image, cache: &Path, vendor: Option<&Path>) -> Result<Report> {
    // A lock that no longer matches its image does not build either.
    let (lock_path, lock) = Lock::of_image(image)?;
    let vendor_pool = match vendor {
        Some(v) if !v.is_dir() => bail!("the vendor folder {} does not exist", v.display()),
        Some(v) => Some(Pool::at(v)),
        None => None,
    };
    let indices = crate::progress::stage("lock", "indices", || mirror_indices(image, cache))?;
    let mut gone = gone(&lock.debian, &indices);
    let store = Pool::in_cache(cache);
    // What earlier builds downloaded into the name-keyed package cache
    // counts as kept, as it does for a build.
    let gone_debs: Vec<LockedDeb> = gone.iter().map(|g| g.deb.clone()).collect();
    crate::pool::adopt_debs(&store, &crate::rootfs::deb_cache(cache, image), &gone_debs);
    mark_kept(&mut gone, &store, vendor_pool.as_ref());
    let security_index = indices.iter().any(Index::is_security);
    let superseded = superseded(&lock.debian, &indices);
    Ok(Report {
        lock: lock_path,
        debian_packages: lock.debian.len(),
        indices: indices.iter().map(|i| i.file.clone()).collect(),
        vendor: vendor.map(Path::to_path_buf),
        buildable: gone.iter().all(Gone::kept),
        gone,
        security_index,
        superseded,
    })
}

/// Of `want` (locked packages no pool has), those the mirror's current
/// signed indices do not serve with their locked version and sha256: what
/// a build would otherwise find missing or different only at the end of
/// its bootstrap.
pub(crate) fn not_served(image: &Image, cache: &Path, want: &[LockedDeb]) -> Result<Vec<Gone>> {
    Ok(gone(want, &mirror_indices(image, cache)?))
}

/// The mirror's current Packages indices for `image`, downloaded (signature
/// checked by apt) into a scratch folder of the cache that goes with them.
fn mirror_indices(image: &Image, cache: &Path) -> Result<Vec<Index>> {
    let work_parent = cache.join("work");
    std::fs::create_dir_all(&work_parent)
        .with_context(|| format!("cannot create {}", work_parent.display()))?;
    let work =
        crate::fsutil::Scratch::new_in(&work_parent, &format!("lock-check-{}.work", image.name))?;
    let lists = crate::rootfs::fetch_indices(image, &work.join("root"), false)?;
    let indices = super::list_indices(&lists)?;
    if indices.is_empty() {
        bail!(
            "apt left no Packages index in {} for {} {}",
            lists.display(),
            image.base.suite,
            image.base.architecture
        );
    }
    Ok(indices)
}

/// The locked packages no index serves with the locked version and sha256
/// (neither in the store nor the vendor folder yet: see [`mark_kept`]).
fn gone(locked: &[LockedDeb], indices: &[Index]) -> Vec<Gone> {
    let mut served: BTreeMap<(&str, &str, &str), BTreeSet<&str>> = BTreeMap::new();
    for i in indices {
        for s in super::stanzas(&i.text) {
            if let (Some(p), Some(v), Some(a), Some(h)) = (
                s.get("Package"),
                s.get("Version"),
                s.get("Architecture"),
                s.get("SHA256"),
            ) {
                served.entry((p, v, a)).or_default().insert(h);
            }
        }
    }
    locked
        .iter()
        .filter_map(|d| {
            let key = (d.name.as_str(), d.version.as_str(), d.architecture.as_str());
            let hashes = served.get(&key);
            if hashes.is_some_and(|h| h.contains(d.sha256.as_str())) {
                return None;
            }
            Some(Gone {
                deb: d.clone(),
                mirror_sha256: hashes.and_then(|h| h.first()).map(|h| h.to_string()),
                in_store: false,
                in_vendor: false,
            })
        })
        .collect()
}

/// Record which gone packages the store and the vendor folder have (with
/// the locked content).
fn mark_kept(gone: &mut [Gone], store: &Pool, vendor: Option<&Pool>) {
    for g in gone {
        g.in_store = store.has(&g.deb.sha256);
        g.in_vendor = vendor.is_some_and(|v| v.has(&g.deb.sha256));
    }
}

/// The locked packages whose name the security suite's index has at a
/// newer version than the locked one, with the newest such version.
fn superseded(locked: &[LockedDeb], indices: &[Index]) -> Vec<Superseded> {
    let names: BTreeSet<&str> = locked.iter().map(|d| d.name.as_str()).collect();
    // Every version the security suite has of a locked package.
    let mut security: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for i in indices.iter().filter(|i| i.is_security()) {
        for s in super::stanzas(&i.text) {
            if let (Some(p), Some(v)) = (s.get("Package"), s.get("Version")) {
                if names.contains(p) {
                    security.entry(p).or_default().push(v);
                }
            }
        }
    }
    let mut out = Vec::new();
    for d in locked {
        let Some(versions) = security.get(d.name.as_str()) else {
            continue;
        };
        let newest = versions
            .iter()
            .filter(|v| **v != d.version)
            .copied()
            .max_by(|a, b| super::version::compare(a, b));
        if let Some(newest) = newest {
            if super::version::compare(newest, &d.version).is_gt() {
                out.push(Superseded {
                    name: d.name.clone(),
                    locked: d.version.clone(),
                    security: newest.to_string(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deb(name: &str, version: &str, sha: &str) -> LockedDeb {
        LockedDeb {
            name: name.into(),
            version: version.into(),
            architecture: "amd64".into(),
            sha256: sha.into(),
        }
    }

    fn index(file: &str, text: &str) -> Index {
        Index {
            file: file.into(),
            text: text.into(),
        }
    }

    fn stanza(name: &str, version: &str, sha: &str) -> String {
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: amd64\nDescription: x\n more\nSHA256: {sha}\n\n"
        )
    }

    /// The suite's main index and its security index.
    fn mirror() -> Vec<Index> {
        let main = [
            stanza("bwa", "0.7.17-7+b2", "aa"),
            stanza("libc6", "2.36-9+deb12u10", "bb"),
            stanza("openssl", "3.0.15-1~deb12u1", "cc"),
            stanza("zlib1g", "1:1.2.13.dfsg-1", "dd"),
        ]
        .concat();
        let security = [
            stanza("openssl", "3.0.17-1~deb12u2", "ee"),
            stanza("openssl", "3.0.16-1~deb12u1", "ff"),
            stanza("libc6", "2.36-9+deb12u9", "gg"),
            stanza("zlib1g", "1:1.2.13.dfsg-1", "dd"),
            stanza("not-locked", "9", "hh"),
        ]
        .concat();
        vec![
            index(
                "mirror_debian_dists_bookworm_main_binary-amd64_Packages",
                &main,
            ),
            index(
                "mirror_debian-security_dists_bookworm-security_main_binary-amd64_Packages",
                &security,
            ),
        ]
    }

    #[test]
    fn only_the_security_suite_s_index_is_security() {
        let m = mirror();
        assert!(!m[0].is_security());
        assert!(m[1].is_security());
        assert!(!index("x_dists_bookworm-updates_main_binary-amd64_Packages", "").is_security());
    }

    #[test]
    fn a_version_or_hash_the_mirror_does_not_serve_is_gone() {
        let locked = [
            deb("bwa", "0.7.17-7+b2", "aa"),
            deb("bwa-old", "1", "11"),
            deb("libc6", "2.36-9+deb12u4", "bb"),
            deb("openssl", "3.0.15-1~deb12u1", "00"),
            // Served by the security index only: not gone.
            deb("openssl", "3.0.16-1~deb12u1", "ff"),
        ];
        let g = gone(&locked, &mirror());
        let names: Vec<(&str, &str)> = g
            .iter()
            .map(|g| (g.deb.name.as_str(), g.deb.version.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("bwa-old", "1"),
                ("libc6", "2.36-9+deb12u4"),
                ("openssl", "3.0.15-1~deb12u1")
            ]
        );
        assert_eq!(g[0].mirror_sha256, None);
        assert_eq!(g[1].mirror_sha256, None);
        // Served at that version with other content: gone too, and why.
        assert_eq!(g[2].mirror_sha256.as_deref(), Some("cc"));
        // The locked architecture counts.
        let mut all = deb("bwa", "0.7.17-7+b2", "aa");
        all.architecture = "all".into();
        assert_eq!(gone(&[all], &mirror()).len(), 1);
    }

    #[test]
    fn a_gone_package_the_store_or_vendor_folder_has_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("libc6.deb");
        std::fs::write(&file, b"libc6 package").unwrap();
        let sha = crate::fsutil::sha256_file(&file).unwrap();
        let store = Pool::at(&d.path().join("store"));
        let vendor = Pool::at(&d.path().join("vendor"));
        let locked = [deb("libc6", "2.36-9+deb12u4", &sha), deb("gone", "1", "11")];
        let mut g = gone(&locked, &mirror());
        mark_kept(&mut g, &store, Some(&vendor));
        assert!(!g.iter().any(Gone::kept), "{g:?}");

        store.keep(&file, &sha).unwrap();
        mark_kept(&mut g, &store, Some(&vendor));
        assert!(g[0].in_store && !g[0].in_vendor && g[0].kept());
        assert!(!g[1].kept());

        vendor.keep(&file, &sha).unwrap();
        mark_kept(&mut g, &Pool::at(&d.path().join("empty")), Some(&vendor));
        assert!(!g[0].in_store && g[0].in_vendor && g[0].kept());
        mark_kept(&mut g, &Pool::at(&d.path().join("empty")), None);
        assert!(!g[0].kept());
    }

    #[test]
    fn a_newer_security_version_supersedes_an_equal_or_older_one_does_not() {
        let locked = [
            deb("bwa", "0.7.17-7+b2", "aa"),
            // Older in the lock than two security versions: the newest is named.
            deb("openssl", "3.0.15-1~deb12u1", "cc"),
            // The security suite has an older one only.
            deb("libc6", "2.36-9+deb12u10", "bb"),
            // The same version.
            deb("zlib1g", "1:1.2.13.dfsg-1", "dd"),
        ];
        assert_eq!(
            superseded(&locked, &mirror()),
            [Superseded {
                name: "openssl".into(),
                locked: "3.0.15-1~deb12u1".into(),
                security: "3.0.17-1~deb12u2".into(),
            }]
        );
        // Without a security index nothing is superseded.
        assert!(superseded(&locked, &mirror()[..1]).is_empty());
    }
}
