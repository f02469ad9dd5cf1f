//! `<image>.lock`: the exact content of an image. `biovm lock` bootstraps
//! the image once and records every Debian package that ends up in it
//! (the whole dependency closure) with its version and the sha256 the
//! archive's signed index gives for it (apt checks the index signature
//! against the Debian archive keyring), every download with its sha256,
//! the timestamp builds use as SOURCE_DATE_EPOCH and the seed all
//! identifiers derive from. `biovm build` installs exactly what it says.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::cmd::Cmd;
use crate::config::Image;

pub mod check;
mod version;

/// An image's lock (`<image>.lock`, written by `biovm lock`, read by
/// `biovm build`): the exact Debian packages, PyPI files and downloads, each
/// with its SHA-256, and the seed and timestamp every artifact derives
/// from, so two builds from one lock give the same bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Lock {
    pub(crate) image: String,
    pub(crate) suite: String,
    pub(crate) architecture: String,
    /// Timestamps in every artifact.
    pub source_date_epoch: u64,
    /// Every identifier (UUIDs, GUIDs) derives from this.
    pub seed: String,
    /// The snapshot archive's point in time the lock was resolved at
    /// (`[base.snapshot] time`), when the image names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) snapshot: Option<String>,
    /// What the image asked for when the lock was made (recipes + base).
    pub(crate) requested: Vec<String>,
    /// Every Debian package the image gets, dependencies included.
    #[serde(default)]
    pub debian: Vec<LockedDeb>,
    #[serde(default)]
    pub(crate) download: Vec<LockedDownload>,
    #[serde(default)]
    pub(crate) pypi: Vec<LockedPypi>,
    /// Every reference data set: where its bytes came from and the size
    /// and sha256 of each file built from them (content and indexes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) data: Vec<crate::data::BuiltData>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct LockedPypi {
    pub(crate) recipe: String,
    pub(crate) file: String,
    pub(crate) sha256: String,
}

/// One Debian package of a lock, exactly: the `.deb` a build installs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct LockedDeb {
    /// The package's name.
    pub name: String,
    /// Its exact Debian version (with epoch and revision).
    pub version: String,
    /// `amd64`, or `all` for an architecture-independent package.
    pub architecture: String,
    /// The SHA-256 of its `.deb`, as the archive's index gives it.
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct LockedDownload {
    pub(crate) recipe: String,
    pub(crate) url: String,
    pub(crate) sha256: String,
}

/// The lock file of an image file: `images/x.toml` → `images/x.lock`.
pub fn path_for(image_file: &Path) -> PathBuf {
    image_file.with_extension("lock")
}

/// One stanza of a Debian control-style file, as field → value.
pub(crate) fn stanzas(text: &str) -> Vec<BTreeMap<&str, &str>> {
    let mut out = Vec::new();
    let mut cur = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else if !line.starts_with([' ', '\t']) {
            if let Some((k, v)) = line.split_once(':') {
                cur.insert(k, v.trim());
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Installed packages from a dpkg status file: (name, version, architecture).
pub(crate) fn installed(status: &str) -> BTreeSet<(String, String, String)> {
    stanzas(status)
        .into_iter()
        .filter(|s| s.get("Status").is_some_and(|v| v.ends_with(" installed")))
        .filter_map(|s| {
            Some((
                s.get("Package")?.to_string(),
                s.get("Version")?.to_string(),
                s.get("Architecture")?.to_string(),
            ))
        })
        .collect()
}

/// sha256 by (name, version, architecture) from apt's Packages indices.
pub(crate) fn index_hashes(packages: &[String]) -> BTreeMap<(String, String, String), String> {
    let mut m = BTreeMap::new();
    for text in packages {
        for s in stanzas(text) {
            if let (Some(p), Some(v), Some(a), Some(h)) = (
                s.get("Package"),
                s.get("Version"),
                s.get("Architecture"),
                s.get("SHA256"),
            ) {
                m.insert((p.to_string(), v.to_string(), a.to_string()), h.to_string());
            }
        }
    }
    m
}

/// One of apt's Packages index files: its name in apt's lists folder
/// (which tells the mirror, suite and component it came from) and its
/// text.
#[derive(Debug, Clone)]
pub(crate) struct Index {
    pub(crate) file: String,
    pub(crate) text: String,
}

impl Index {
    /// Whether this index is the security suite's (`<suite>-security`).
    pub(crate) fn is_security(&self) -> bool {
        self.file.contains("-security_")
    }
}

/// Every Packages index in apt's lists folder `lists`, decompressed (any
/// compression; apt's own helper reads it), sorted by file name.
pub(crate) fn list_indices(lists: &Path) -> Result<Vec<Index>> {
    list_indices_of(lists, "_Packages")
}

/// Every index in apt's lists folder `lists` whose file name contains
/// `kind` (`_Packages`, `_Sources`), decompressed.
pub(crate) fn list_indices_of(lists: &Path, kind: &str) -> Result<Vec<Index>> {
    let mut v = Vec::new();
    for e in fs::read_dir(lists).with_context(|| format!("cannot read {}", lists.display()))? {
        let p = e
            .with_context(|| format!("cannot read {}", lists.display()))?
            .path();
        let file = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if file.contains(kind) {
            let text = Cmd::new("/usr/lib/apt/apt-helper")
                .arg("cat-file")
                .arg(&p)
                .output()
                .with_context(|| format!("cannot read the package index {}", p.display()))?;
            v.push(Index { file, text });
        }
    }
    v.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(v)
}

/// Read every Packages index apt left in `root`, then remove the lists so
/// they do not ship.
pub(crate) fn read_indices(root: &Path) -> Result<Vec<String>> {
    let lists = root.join("var/lib/apt/lists");
    let texts = list_indices(&lists)?.into_iter().map(|i| i.text).collect();
    for e in fs::read_dir(&lists)? {
        let p = e?.path();
        if p.is_file() {
            fs::remove_file(&p)?;
        }
    }
    Ok(texts)
}

/// The locked package set of a freshly bootstrapped tree.
pub(crate) fn debs_of(root: &Path, indices: &[String]) -> Result<Vec<LockedDeb>> {
    let status = fs::read_to_string(root.join("var/lib/dpkg/status"))
        .context("reading the image's dpkg status")?;
    let hashes = index_hashes(indices);
    let mut v = Vec::new();
    for (name, version, arch) in installed(&status) {
        let key = (name.clone(), version.clone(), arch.clone());
        let Some(sha) = hashes.get(&key) else {
            bail!("{name} {version} ({arch}) is installed but in no signed package index of the mirror");
        };
        v.push(LockedDeb {
            name,
            version,
            architecture: arch,
            sha256: sha.clone(),
        });
    }
    Ok(v)
}

impl Lock {
    /// The lock of `image` (`<image>.lock`), which must exist and still
    /// match the image; with its path.
    pub(crate) fn of_image(image: &Image) -> Result<(PathBuf, Lock)> {
        let lock_path = path_for(&image.source);
        if !lock_path.exists() {
            bail!(
                "{} does not exist; run `biovm lock {}` first",
                lock_path.display(),
                image.source.display()
            );
        }
        let lock = Lock::read(&lock_path)?;
        lock.check_matches(image, &crate::rootfs::requested_packages(image), &lock_path)?;
        Ok((lock_path, lock))
    }

    /// Read the lock file at `path`; an error names the file when it is
    /// missing or not a biovm lock.
    pub fn read(path: &Path) -> Result<Lock> {
        let s =
            fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&s)
            .with_context(|| format!("{} is not a valid biovm lock file", path.display()))
    }

    pub(crate) fn write(&self, path: &Path) -> Result<()> {
        let body = toml::to_string(self)?;
        let text = format!(
            "# Written by `biovm lock`; read by `biovm build`. Update with `biovm lock --update`.\n{body}"
        );
        crate::fsutil::write_atomic(path, text.as_bytes())
    }

    /// Refuse a lock that no longer matches the image's recipes.
    pub fn check_matches(
        &self,
        image: &Image,
        requested: &[String],
        lock_path: &Path,
    ) -> Result<()> {
        let update = format!("run `biovm lock --update {}`", image.source.display());
        if self.suite != image.base.suite || self.architecture != image.base.architecture {
            bail!(
                "{} is for {} {}, but the image is {} {}; {update}",
                lock_path.display(),
                self.suite,
                self.architecture,
                image.base.suite,
                image.base.architecture
            );
        }
        let want_snapshot = image.base.snapshot.as_ref().map(|s| &s.time);
        if self.snapshot.as_ref() != want_snapshot {
            let show = |t: Option<&String>| match t {
                Some(t) => format!("the snapshot of {t}"),
                None => "no snapshot".to_string(),
            };
            bail!(
                "{} was resolved at {}, but the image names {}; {update}",
                lock_path.display(),
                show(self.snapshot.as_ref()),
                show(want_snapshot)
            );
        }
        let have: BTreeSet<&String> = self.requested.iter().collect();
        let want: BTreeSet<&String> = requested.iter().collect();
        if have != want {
            let added: Vec<&str> = want.difference(&have).map(|s| s.as_str()).collect();
            let removed: Vec<&str> = have.difference(&want).map(|s| s.as_str()).collect();
            bail!(
                "{} no longer matches the image: {}{}; {update}",
                lock_path.display(),
                if added.is_empty() {
                    String::new()
                } else {
                    format!("now also asks for {}", added.join(", "))
                },
                if removed.is_empty() {
                    String::new()
                } else {
                    format!(
                        "{}no longer asks for {}",
                        if added.is_empty() { "" } else { "; " },
                        removed.join(", ")
                    )
                }
            );
        }
        let locked: BTreeMap<(&str, &str), &str> = self
            .download
            .iter()
            .map(|d| ((d.recipe.as_str(), d.url.as_str()), d.sha256.as_str()))
            .collect();
        for d in &image.data {
            let pinned = self.data.iter().find(|l| l.name == d.name);
            if let Some(p) = pinned.filter(|p| p.source_sha256 != d.source.sha256) {
                bail!(
                    "data set {}: its source has sha256 {} in {} but {} in {}; {update}",
                    d.name,
                    d.source.sha256,
                    d.source_file.display(),
                    p.source_sha256,
                    lock_path.display()
                );
            }
            let content = pinned.and_then(|l| l.files.first());
            match content {
                Some(f) if f.sha256 == d.sha256 => {}
                Some(f) => bail!(
                    "data set {}: its content has sha256 {} in {} but {} in {}; {update}",
                    d.name,
                    d.sha256,
                    d.source_file.display(),
                    f.sha256,
                    lock_path.display()
                ),
                None => bail!(
                    "data set {} is not in {}; {update}",
                    d.name,
                    lock_path.display()
                ),
            }
        }
        if let Some(extra) = self
            .data
            .iter()
            .find(|l| !image.data.iter().any(|d| d.name == l.name))
        {
            bail!(
                "{} pins data set {}, which the image no longer has; {update}",
                lock_path.display(),
                extra.name
            );
        }
        for r in &image.recipes {
            for d in &r.install.downloads {
                match locked.get(&(r.name.as_str(), d.url.as_str())) {
                    Some(sha) if *sha == d.sha256 => {}
                    Some(sha) => bail!(
                        "recipe {}: {} has sha256 {} in the recipe but {} in {}; {update}",
                        r.name,
                        d.url,
                        d.sha256,
                        sha,
                        lock_path.display()
                    ),
                    None => bail!(
                        "recipe {}: {} is not in {}; {update}",
                        r.name,
                        d.url,
                        lock_path.display()
                    ),
                }
            }
        }
        Ok(())
    }

    /// PyPI file name → sha256.
    pub(crate) fn pypi_hashes(&self) -> BTreeMap<String, String> {
        self.pypi
            .iter()
            .map(|p| (p.file.clone(), p.sha256.clone()))
            .collect()
    }

    /// What mmdebstrap must install: every locked package at its version.
    pub(crate) fn apt_specs(&self) -> Vec<String> {
        self.debian
            .iter()
            .map(|d| format!("{}={}", d.name, d.version))
            .collect()
    }

    /// After a locked bootstrap: the tree holds exactly the locked packages,
    /// each with the locked sha256.
    pub(crate) fn verify_tree(&self, got: &[LockedDeb], lock_path: &Path) -> Result<()> {
        let want: BTreeSet<&LockedDeb> = self.debian.iter().collect();
        let have: BTreeSet<&LockedDeb> = got.iter().collect();
        if let Some(d) = have.difference(&want).next() {
            let locked = self.debian.iter().find(|l| l.name == d.name);
            match locked {
                Some(l) if l.version == d.version => {
                    return Err(other_content(l, &d.sha256, lock_path));
                }
                Some(l) => bail!(
                    "package {} was installed at {}, {} locks {}; run `biovm lock --update`",
                    d.name,
                    d.version,
                    lock_path.display(),
                    l.version
                ),
                None => bail!(
                    "package {} {} was installed but is not in {}; run `biovm lock --update`",
                    d.name,
                    d.version,
                    lock_path.display()
                ),
            }
        }
        if let Some(d) = want.difference(&have).next() {
            bail!(
                "package {} {} from {} was not installed",
                d.name,
                d.version,
                lock_path.display()
            );
        }
        Ok(())
    }
}

/// The refusal of a locked package whose version the mirror's signed
/// index gives with another sha256 than `lock_path` locks.
pub(crate) fn other_content(
    locked: &LockedDeb,
    mirror_sha256: &str,
    lock_path: &Path,
) -> anyhow::Error {
    anyhow::anyhow!(
        "package {} {}: the mirror's signed index gives sha256 {}, {} locks {}; refusing to build",
        locked.name,
        locked.version,
        mirror_sha256,
        lock_path.display(),
        locked.sha256
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: bwa\nStatus: install ok installed\nArchitecture: amd64\nVersion: 0.7.17-7+b2\nDescription: x\n continued\n\nPackage: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n";
    const PACKAGES: &str = "Package: bwa\nVersion: 0.7.17-7+b2\nArchitecture: amd64\nSHA256: abc123\nFilename: pool/main/b/bwa/bwa_0.7.17-7+b2_amd64.deb\n\nPackage: bwa\nVersion: 0.7.18-1\nArchitecture: amd64\nSHA256: def456\n";

    #[test]
    fn installed_packages_and_their_index_hashes() {
        let i = installed(STATUS);
        assert_eq!(i.len(), 1, "only installed packages count");
        let h = index_hashes(&[PACKAGES.to_string()]);
        assert_eq!(
            h[&("bwa".into(), "0.7.17-7+b2".into(), "amd64".into())],
            "abc123"
        );
        assert_eq!(h.len(), 2);
    }

    fn lock() -> Lock {
        Lock {
            image: "m".into(),
            suite: "bookworm".into(),
            architecture: "amd64".into(),
            source_date_epoch: 1,
            seed: "s".into(),
            snapshot: None,
            data: vec![],
            requested: vec!["bwa".into()],
            debian: vec![LockedDeb {
                name: "bwa".into(),
                version: "1".into(),
                architecture: "amd64".into(),
                sha256: "aa".into(),
            }],
            download: vec![],
            pypi: vec![],
        }
    }

    #[test]
    fn a_changed_hash_or_version_is_refused() {
        let l = lock();
        let p = Path::new("images/m.lock");
        assert!(l.verify_tree(&l.debian, p).is_ok());
        let mut other = l.debian.clone();
        other[0].sha256 = "bb".into();
        let e = l.verify_tree(&other, p).unwrap_err().to_string();
        assert!(
            e.contains("package bwa 1") && e.contains("bb") && e.contains("aa"),
            "{e}"
        );
        other[0].version = "2".into();
        let e = l.verify_tree(&other, p).unwrap_err().to_string();
        assert!(
            e.contains("installed at 2") && e.contains("lock --update"),
            "{e}"
        );
    }

    #[test]
    fn round_trips_through_toml() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.lock");
        lock().write(&p).unwrap();
        assert_eq!(Lock::read(&p).unwrap(), lock());
        assert!(fs::read_to_string(&p)
            .unwrap()
            .starts_with("# Written by `biovm lock`"));
    }
}
