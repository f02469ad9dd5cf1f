//! The pool: every file a lock names (.deb, wheel, download) kept under its
//! SHA-256, so a build from the lock does not depend on what a mirror still
//! serves. A Debian suite keeps only its newest versions; a point release
//! or a security update removes the locked one, and without a pool the
//! lock could no longer be built a week later.
//!
//! Layout (the same for the cache's pool and a vendor folder, which is a
//! pool that travels): `sha256/<hex>` holds the file, `control/<hex>` a
//! .deb's control stanza (so the apt index of a build is written without
//! opening every package again). Integrity rests on the lock: a file goes
//! in only when its content has the locked SHA-256, and is used only while
//! it still has it. Everything fetched from a mirror is still checked by
//! apt against the mirror's signed index first.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cmd::Cmd;
use crate::fsutil;
use crate::lock::LockedDeb;

/// A folder of files named by their SHA-256.
#[derive(Debug, Clone)]
pub struct Pool {
    root: PathBuf,
}

impl Pool {
    /// The pool in biovm's cache folder.
    pub fn in_cache(cache: &Path) -> Pool {
        Pool {
            root: cache.join("pool"),
        }
    }

    /// A pool at `dir` (a vendor folder).
    pub fn at(dir: &Path) -> Pool {
        Pool {
            root: dir.to_path_buf(),
        }
    }

    /// Where the file with this SHA-256 is (or would be) kept.
    pub fn path(&self, sha: &str) -> PathBuf {
        self.root.join("sha256").join(sha)
    }

    fn control_path(&self, sha: &str) -> PathBuf {
        self.root.join("control").join(sha)
    }

    /// The kept file with this SHA-256, if there is one and its content
    /// still has it (a file changed in the pool is not used).
    pub fn get(&self, sha: &str) -> Option<PathBuf> {
        if !is_sha256(sha) {
            return None;
        }
        let p = self.path(sha);
        if !p.is_file() {
            return None;
        }
        match crate::store::sha256(&p) {
            Ok(s) if s == sha => Some(p),
            Ok(s) => {
                log::warn!("{} has sha256 {s}; not using it", p.display());
                None
            }
            Err(e) => {
                log::warn!("{e:#}");
                None
            }
        }
    }

    pub fn has(&self, sha: &str) -> bool {
        self.get(sha).is_some()
    }

    /// Keep `file` under `sha`, which its content must have: a hard link
    /// when it is on the pool's filesystem, else a copy. The name appears
    /// only when the file is whole.
    pub fn keep(&self, file: &Path, sha: &str) -> Result<PathBuf> {
        if !is_sha256(sha) {
            bail!("`{sha}` is not a sha256");
        }
        if let Some(p) = self.get(sha) {
            return Ok(p);
        }
        let got = crate::store::sha256(file)?;
        if got != sha {
            bail!(
                "{} has sha256 {got}, not the locked {sha}; not keeping it",
                file.display()
            );
        }
        let dest = self.path(sha);
        let dir = self.root.join("sha256");
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let tmp = fsutil::temp_name(&dest);
        if fs::hard_link(file, &tmp).is_err() {
            fs::copy(file, &tmp)
                .with_context(|| format!("cannot copy {} to {}", file.display(), tmp.display()))?;
        }
        fs::rename(&tmp, &dest)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), dest.display()))?;
        Ok(dest)
    }

    /// The control stanza of the kept .deb `sha` (read once with dpkg-deb,
    /// then from `control/`).
    fn control(&self, sha: &str, deb: &Path) -> Result<String> {
        let p = self.control_path(sha);
        if let Ok(s) = fs::read_to_string(&p) {
            return Ok(s);
        }
        let text = Cmd::new("dpkg-deb").arg("--field").arg(deb).output()?;
        if !text.contains("Package:") {
            bail!("{} has no control stanza", deb.display());
        }
        fs::create_dir_all(self.root.join("control"))?;
        fsutil::write_atomic(&p, text.as_bytes())?;
        Ok(text)
    }

    /// The control stanza of the kept .deb `sha`, when the pool has it.
    pub fn control_text(&self, sha: &str) -> Option<String> {
        if let Ok(s) = fs::read_to_string(self.control_path(sha)) {
            return Some(s);
        }
        let deb = self.get(sha)?;
        self.control(sha, &deb).ok()
    }

    /// Copy (or hard-link) everything `self` has of `shas` into `other`.
    pub fn copy_to(&self, other: &Pool, shas: &[&str]) -> Result<()> {
        for sha in shas {
            let Some(p) = self.get(sha) else {
                bail!("{sha} is not in {}", self.root.display());
            };
            other.keep(&p, sha)?;
            if let Ok(c) = fs::read_to_string(self.control_path(sha)) {
                fs::create_dir_all(other.root.join("control"))?;
                fsutil::write_atomic(&other.control_path(sha), c.as_bytes())?;
            }
        }
        Ok(())
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The first of `pools` that has `sha`.
pub fn find<'a>(pools: &'a [Pool], sha: &str) -> Option<(&'a Pool, PathBuf)> {
    pools.iter().find_map(|p| p.get(sha).map(|f| (p, f)))
}

/// apt's name for a downloaded package: `name_version_arch.deb`, the epoch
/// colon written `%3a`.
pub fn deb_file_name(d: &LockedDeb) -> String {
    format!(
        "{}_{}_{}.deb",
        d.name,
        d.version.replace(':', "%3a"),
        d.architecture
    )
}

/// Take into `pool` the locked packages that the name-keyed package cache
/// `debs` already holds with the locked content (what earlier builds
/// downloaded). Returns how many were added.
pub fn adopt_debs(pool: &Pool, debs_dir: &Path, locked: &[LockedDeb]) -> usize {
    let mut n = 0;
    for d in locked {
        if pool.has(&d.sha256) {
            continue;
        }
        let f = debs_dir.join(deb_file_name(d));
        if !f.is_file() {
            continue;
        }
        match pool.keep(&f, &d.sha256) {
            Ok(_) => n += 1,
            Err(e) => log::debug!("{e:#}"),
        }
    }
    n
}

/// Write a flat apt repository at `dir` (its `Packages` and `Release`, each
/// package a symbolic link to its pool file) holding exactly the locked
/// packages of `debs` that one of `pools` has. Returns the ones none has.
/// `relative`: link as `../sha256/<hex>` (a vendor folder, which may move)
/// rather than by absolute path.
pub fn apt_repo<'a>(
    pools: &[Pool],
    debs: &'a [LockedDeb],
    dir: &Path,
    relative: bool,
) -> Result<Vec<&'a LockedDeb>> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut packages = String::new();
    let mut missing = Vec::new();
    for d in debs {
        let Some((pool, file)) = find(pools, &d.sha256) else {
            missing.push(d);
            continue;
        };
        let name = deb_file_name(d);
        let link = dir.join(&name);
        let target = if relative {
            Path::new("../sha256").join(&d.sha256)
        } else {
            // A pool named by a relative path (`--vendor v`) still resolves.
            fs::canonicalize(&file).with_context(|| format!("cannot resolve {}", file.display()))?
        };
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
        let size = fs::metadata(&file)?.len();
        let control = pool.control(&d.sha256, &file)?;
        let field = |k: &str| {
            control
                .lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
                .map(str::trim)
                .unwrap_or_default()
        };
        let got = (field("Package"), field("Version"), field("Architecture"));
        if got != (d.name.as_str(), d.version.as_str(), d.architecture.as_str()) {
            bail!(
                "the lock names {} {} ({}) with sha256 {}, but the package with that sha256 is {} {} ({}); \
                 the lock was changed by hand: run `biovm lock --update`",
                d.name,
                d.version,
                d.architecture,
                d.sha256,
                got.0,
                got.1,
                got.2
            );
        }
        packages.push_str(control.trim_end());
        packages.push_str(&format!(
            "\nFilename: ./{name}\nSize: {size}\nSHA256: {}\n\n",
            d.sha256
        ));
    }
    fsutil::write_atomic(&dir.join("Packages"), packages.as_bytes())?;
    let release = format!(
        "Origin: biovm\nLabel: locked packages\nSHA256:\n {} {} Packages\n",
        fsutil::sha256_file(&dir.join("Packages"))?,
        packages.len()
    );
    fsutil::write_atomic(&dir.join("Release"), release.as_bytes())?;
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha_of(bytes: &[u8]) -> String {
        use sha2::Digest;
        fsutil::hex(&sha2::Sha256::digest(bytes))
    }

    #[test]
    fn keeps_only_the_locked_content_and_stops_using_a_changed_file() {
        let d = tempfile::tempdir().unwrap();
        let pool = Pool::at(&d.path().join("pool"));
        let f = d.path().join("a.deb");
        fs::write(&f, b"package").unwrap();
        let sha = sha_of(b"package");
        assert!(!pool.has(&sha));
        let e = pool.keep(&f, &"0".repeat(64)).unwrap_err().to_string();
        assert!(e.contains("not the locked"), "{e}");
        let kept = pool.keep(&f, &sha).unwrap();
        assert_eq!(kept, pool.path(&sha));
        assert!(pool.has(&sha));
        // A kept file whose content changes is no longer used.
        fs::remove_file(&kept).unwrap();
        fs::write(&kept, b"tampered").unwrap();
        assert!(!pool.has(&sha));
        assert!(!pool.has("../../etc/passwd"));
    }

    #[test]
    fn deb_names_write_the_epoch_like_apt() {
        let d = LockedDeb {
            name: "cpp".into(),
            version: "4:12.2.0-3".into(),
            architecture: "amd64".into(),
            sha256: "x".into(),
        };
        assert_eq!(deb_file_name(&d), "cpp_4%3a12.2.0-3_amd64.deb");
    }
}
