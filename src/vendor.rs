//! `biovm vendor`: everything an image's lock names (every .deb, wheel and
//! download) in one self-contained folder that `biovm build --vendor DIR`
//! builds from with no network at all.
//!
//! The folder is a pool ([`crate::pool`]: `sha256/<hex>`, `control/<hex>`)
//! plus `debian/`, a flat apt repository (`Packages`, `Release`, each
//! package a relative link into `sha256/`) that apt can use directly
//! (`deb [trusted=yes] file:DIR/debian ./`), a copy of the lock and
//! `vendor.toml`, which says which lock it serves. It can be moved, copied
//! or kept next to the image files; integrity rests on the lock's hashes,
//! which are checked again on every use.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::Image;
use crate::fsutil;
use crate::lock::Lock;
use crate::pool::Pool;
use crate::rootfs;

/// `vendor.toml`: what a vendor folder holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VendorInfo {
    pub image: String,
    /// The SHA-256 of the lock file the folder was written for.
    pub lock_sha256: String,
    pub debian_packages: usize,
    pub pypi_files: usize,
    pub downloads: usize,
    pub bytes: u64,
}

/// Write the vendor folder `out` for `image` (which must have a lock),
/// fetching into biovm's store first whatever it does not have yet.
pub fn vendor(image: &Image, cache: &Path, out: &Path) -> Result<VendorInfo> {
    let (lock_path, lock) = Lock::of_image(image)?;
    let store = Pool::in_cache(cache);
    fill_store(image, &lock, cache, &store)?;

    let empty = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_none());
    if out.exists() && !empty && !out.join("vendor.toml").is_file() {
        bail!(
            "{} exists and is not a vendor folder; name a new, an empty or a vendor folder",
            out.display()
        );
    }
    let work = fsutil::Scratch::beside(out)?;
    let pool = Pool::at(work.path());
    let shas: Vec<&str> = lock
        .debian
        .iter()
        .map(|d| d.sha256.as_str())
        .chain(lock.pypi.iter().map(|p| p.sha256.as_str()))
        .chain(lock.download.iter().map(|d| d.sha256.as_str()))
        .chain(data_shas(&lock))
        .collect();
    store.copy_to(&pool, &shas)?;
    let missing = crate::pool::apt_repo(
        std::slice::from_ref(&pool),
        &lock.debian,
        &work.join("debian"),
        true,
    )?;
    if let Some(d) = missing.first() {
        bail!("{} {} did not reach the vendor folder", d.name, d.version);
    }
    let lock_bytes = std::fs::read(&lock_path)?;
    fsutil::write_atomic(
        &work.join(lock_path.file_name().unwrap_or_default()),
        &lock_bytes,
    )?;
    let mut bytes = 0;
    for sha in &shas {
        bytes += std::fs::metadata(pool.path(sha))?.len();
    }
    let info = VendorInfo {
        image: image.name.clone(),
        lock_sha256: fsutil::sha256_file(&lock_path)?,
        debian_packages: lock.debian.len(),
        pypi_files: lock.pypi.len(),
        downloads: lock.download.len(),
        bytes,
    };
    fsutil::write_atomic(
        &work.join("vendor.toml"),
        toml::to_string(&info)?.as_bytes(),
    )?;
    work.replace(out)?;
    Ok(info)
}

/// The sha256 of every data set's downloaded bytes (not those taken from
/// a Debian package, which the package itself carries).
fn data_shas(lock: &Lock) -> impl Iterator<Item = &str> {
    lock.data
        .iter()
        .filter(|d| !d.source.starts_with("debian:"))
        .map(|d| d.source_sha256.as_str())
}

/// Make biovm's store hold every file `lock` names: the packages earlier
/// builds downloaded are taken from the package cache; for the rest the
/// image is bootstrapped once from the mirror (beside the store), the
/// wheels come from PyPI and the downloads from their URLs.
fn fill_store(image: &Image, lock: &Lock, cache: &Path, store: &Pool) -> Result<()> {
    let stores = std::slice::from_ref(store);
    for (path, d) in crate::fetch::fetch_all(&image.recipes, cache, stores, false)? {
        store.keep(&path, &d.sha256)?;
    }
    // Data sets downloaded from URLs (those from Debian packages come
    // with the packages).
    let data = crate::data::fetch_all(image, cache, stores, false)?;
    for (path, d) in data.iter().zip(&image.data) {
        if let Some(p) = path {
            store.keep(p, &d.source.sha256)?;
        }
    }
    if crate::pypi::from_pools(&image.recipes, lock, stores)?.is_none() {
        let files = crate::pypi::download(&image.recipes, cache, Some(&lock.pypi_hashes()))?;
        for f in files {
            store.keep(&f.path, &f.sha256)?;
        }
    }
    let debs = rootfs::deb_cache(cache, image);
    crate::pool::adopt_debs(store, &debs, &lock.debian);
    let work_parent = cache.join("work");
    std::fs::create_dir_all(&work_parent)?;
    let work = fsutil::Scratch::new_in(&work_parent, &format!("vendor-{}.work", image.name))?;
    let repo = work.join("locked-packages");
    let missing = crate::pool::apt_repo(stores, &lock.debian, &repo, false)?;
    if missing.is_empty() {
        return Ok(());
    }
    log::info!(
        "{} locked packages are not in biovm's store yet: bootstrapping once to fetch them",
        missing.len()
    );
    crate::progress::stage("vendor", "bootstrap", || {
        rootfs::bootstrap(
            image,
            &lock.apt_specs(),
            rootfs::Sources::MirrorAndLocal(&repo),
            cache,
            lock.source_date_epoch,
            &work.join("root"),
        )
    })
    .with_context(|| {
        format!(
            "fetching the locked packages failed; `biovm lock --check {}` shows what the mirror dropped",
            image.source.display()
        )
    })?;
    crate::pool::adopt_debs(store, &debs, &lock.debian);
    if let Some(d) = crate::pool::apt_repo(stores, &lock.debian, &repo, false)?.first() {
        bail!(
            "{} {} is still not in biovm's store after the bootstrap",
            d.name,
            d.version
        );
    }
    Ok(())
}
