//! The committed locks match their images: a change to an image file or to
//! one of its recipes that changes what it installs must come with
//! `biovm lock --update` in the same commit, or the main job (which builds
//! images/minimal.toml from its lock) would stop at its first step.

use std::path::Path;

use biovm::config::load_image;
use biovm::lock::{path_for, Lock};
use common::repo;

mod common;

fn assert_lock_matches(image_file: &str) {
    let img = repo().join(image_file);
    let image = load_image(&img, &repo().join("recipes"))
        .unwrap_or_else(|d| panic!("{image_file} does not load: {d:?}"));
    let lock_path = path_for(&img);
    let lock = Lock::read(&lock_path).unwrap_or_else(|e| {
        panic!(
            "{} is missing or unreadable ({e:#}): run `biovm lock {image_file}`",
            lock_path.display()
        )
    });
    let requested = biovm::rootfs::requested_packages(&image);
    if let Err(e) = lock.check_matches(&image, &requested, Path::new(&lock_path)) {
        panic!("{e:#}");
    }
}

#[test]
fn the_main_jobs_image_is_locked_and_its_lock_is_current() {
    assert_lock_matches("images/minimal.toml");
}

#[test]
fn the_biolinux_lock_is_current() {
    assert_lock_matches("images/biolinux.toml");
}
