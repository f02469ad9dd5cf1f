//! End to end: build images/minimal.toml for real (mmdebstrap from the
//! Debian archive, root) and boot it in QEMU under UEFI and BIOS.
//!
//! These tests need root, the host packages `.ci/setup` installs, the
//! network to the package archive and minutes, so they are `#[ignore]`d;
//! `cargo test --release -- --include-ignored` (what `.ci/run` does) runs them.
//!
//! One test binary, one file per area: `build` (the artifacts, a failed or
//! interrupted build, reproducibility, the SBOM and OVA), `boot` (the VM
//! and container matrix, broken disks, KVM), `lock` and `store`. They
//! share one build of the image ([`minimal`]), which is why they are
//! modules of one binary and not binaries of their own. (`biovm run` is
//! tested on the workbench image, in `e2e_workbench`, whose test boots one
//! with it anyway.)

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

#[path = "../common/mod.rs"]
mod common;

mod boot;
mod build;
mod lock;
mod store;

use common::{copy_tree, repo, scratch, BIN};

fn biovm(args: &[&str]) -> Output {
    biovm_env(args, &[])
}

/// `biovm ARGS` with extra environment variables, in the repository.
fn biovm_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    common::biovm_in(&repo(), args, env)
}

/// Tests that run `biovm test` on [`minimal`]'s own artifacts take turns:
/// their reports share its `minimal.test` folder, which one `biovm test`
/// at a time may use (a second is refused, naming the folder).
static SHARED_REPORTS: Mutex<()> = Mutex::new(());

/// Build the minimal image once for every test in this file, from the
/// committed lock, exactly as the main job (README command 1) builds it:
/// `images/minimal.toml` into the repository's `out`. Where the main job
/// ran first (as in `.ci/run`), biovm finds its complete build from the
/// same inputs there and reuses it (the reuse test shows that rule), and
/// `biovm test` of its artifacts takes the main job's stored results
/// instead of booting the same disks again, and says so; the
/// reproducibility test builds afresh beside it. Locking afresh is tested
/// by the release and catalogue tests.
fn minimal() -> &'static Path {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let out = repo().join("out");
        let o = build_into(&repo().join("images/minimal.toml"), &out);
        assert!(o.status.success(), "build failed");
        out
    })
}

/// A copy of images/minimal.toml in a scratch folder `name`/images/.
fn project_image(name: &str) -> PathBuf {
    common::project_image(name, "minimal.toml")
}

fn lock_of(img: &Path) -> PathBuf {
    img.with_extension("lock")
}

/// `biovm build IMG --out OUT` with the repository's recipes.
fn build_into(img: &Path, out: &Path) -> Output {
    biovm(&build_args(img, out, &[]))
}

/// `--recipes recipes build IMG --out OUT EXTRA...`: biovm's arguments to
/// build with the repository's recipes.
fn build_args<'a>(img: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--recipes",
        "recipes",
        "build",
        img.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    v.extend_from_slice(extra);
    v
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn biovm_sha(p: &Path) -> String {
    let o = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}
