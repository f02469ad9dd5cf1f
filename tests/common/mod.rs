//! What the test binaries share: the repository, the biovm binary, scratch
//! folders under Cargo's test temporary folder, and copies of project
//! files. Each test file includes it with `mod common;` and uses what it
//! needs (so some items go unused in some binaries).
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

/// The biovm binary Cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_biovm");

/// The repository (recipes/, images/, tests/fixtures/).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An empty folder `name` under Cargo's test temporary folder; whatever an
/// earlier run left there is removed first, and what this run leaves stays
/// for a look after a failure.
pub fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// Copy the folder tree `from` to `to` (files and folders only).
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A copy of the repository's `images/<file>` in scratch folder
/// `project`/images/, so what biovm writes beside it (the lock) stays in
/// the scratch folder.
pub fn project_image(project: &str, file: &str) -> PathBuf {
    let p = scratch(project).join("images");
    fs::create_dir_all(&p).unwrap();
    let img = p.join(file);
    fs::copy(repo().join("images").join(file), &img).unwrap();
    img
}

/// Bytes as text, invalid UTF-8 replaced.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A command running biovm in `cwd`, with no standard input.
pub fn biovm_command(cwd: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(cwd).stdin(Stdio::null());
    c
}

/// Run `c` (a [`biovm_command`] with its arguments `args`) and show what
/// it printed on the test's stderr (seen when the test fails).
pub fn run_logged(mut c: Command, args: &[&str]) -> Output {
    let t0 = Instant::now();
    let out = c.args(args).output().expect("run biovm");
    biovm_time(args, t0.elapsed().as_secs_f64());
    eprintln!(
        "$ biovm {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// `biovm ARGS` in `cwd` with extra environment variables, logged.
pub fn biovm_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = biovm_command(cwd);
    c.envs(env.iter().copied());
    run_logged(c, args)
}

/// Prints the test's name and seconds when dropped, on the real standard
/// error (past the test harness's capture), so a long suite's log shows
/// where its time went: `let _t = common::timed();` first in a test.
pub struct Timed(Instant);

/// Start timing the current test (named by its thread, as libtest names it).
pub fn timed() -> Timed {
    Timed(Instant::now())
}

impl Drop for Timed {
    fn drop(&mut self) {
        use std::io::Write;
        let name = std::thread::current().name().unwrap_or("?").to_string();
        let how = if std::thread::panicking() {
            "failed"
        } else {
            "passed"
        };
        let line = format!(
            "[test time] {name}: {how} in {:.0} s\n",
            self.0.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

/// Print one biovm run's seconds on the real standard error (past the
/// harness's capture, as [`Timed`] does), with the test that ran it and
/// its arguments shortened to file names, so the suite's log shows which
/// of a test's builds and boots took its time.
pub fn biovm_time(args: &[&str], secs: f64) {
    use std::io::Write;
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let said: Vec<&str> = args
        .iter()
        .map(|a| a.rsplit('/').next().unwrap_or(a))
        .collect();
    let line = format!(
        "[biovm time] {test}: biovm {}: {secs:.0} s\n",
        said.join(" ")
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// A new ed25519 key pair without a passphrase: `path` and `path.pub`.
pub fn ssh_keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "e2e@biovm", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success(), "ssh-keygen failed");
}
