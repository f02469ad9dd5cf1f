//! End to end: nothing is done twice. A build whose inputs did not change
//! is reused; a test of unchanged artifacts with unchanged checks takes
//! the stored results (and `--rerun` runs them again), and
//! `--verify-reproducible` compares that build with a second one from a
//! fresh bootstrap; a build
//! in another folder takes its tree from biovm's cache of bootstraps and
//! gives the same artifact. Built
//! from the committed lock of images/minimal.toml, docker-archive only
//! (an uncompressed tar: the gzip of the rootfs tarball cost each build
//! more than its disk would), so each build is a bootstrap and no disk.
//!
//! Needs root, the host packages `.ci/setup` installs, the network to the
//! package archive and minutes: `#[ignore]`d; `.ci/run` runs it.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;
use std::time::Instant;

use common::{copy_tree, repo, scratch};

/// `biovm ARGS` from the repository, logged and timed.
fn biovm(args: &[&str]) -> (Output, f64) {
    let t = Instant::now();
    let out = common::biovm_in(&repo(), args, &[]);
    (out, t.elapsed().as_secs_f64())
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const REUSED_BUILD: &str = "holds a complete build from the same inputs";

#[test]
#[ignore = "needs root, network and minutes"]
fn an_unchanged_build_and_test_are_reused_and_the_flags_run_them_again() {
    let _t = common::timed();
    // The committed image and lock, in a project of their own.
    let project = scratch("e2e-reuse");
    fs::create_dir_all(project.join("images")).unwrap();
    for f in ["minimal.toml", "minimal.lock"] {
        fs::copy(
            repo().join("images").join(f),
            project.join("images").join(f),
        )
        .unwrap();
    }
    let img = project.join("images/minimal.toml");
    let out = project.join("out");
    let build_in = |dir: &Path, extra: &[&str]| {
        let mut args = vec![
            "--recipes",
            "recipes",
            "build",
            img.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
            "--format",
            "docker-archive",
        ];
        args.extend(extra);
        let (o, secs) = biovm(&args);
        assert!(
            o.status.success(),
            "the build into {} failed",
            dir.display()
        );
        (stdout(&o), secs)
    };
    let build = |extra: &[&str]| build_in(&out, extra);
    let archive = out.join("minimal.docker.tar");
    let identity = |p: &Path| {
        let m = fs::metadata(p).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec())
    };

    let (first, _) = build(&[]);
    assert!(!first.contains(REUSED_BUILD), "{first}");
    let built = identity(&archive);
    let sha = fs::read_to_string(out.join("SHA256SUMS")).unwrap();

    // Same inputs: reused, the artifact untouched.
    let (again, secs) = build(&[]);
    assert!(again.contains(REUSED_BUILD), "{again}");
    assert_eq!(identity(&archive), built, "the artifact was not rewritten");
    eprintln!("reused build: {secs:.1} s");

    // (An artifact changed since is built again: the unit test
    // `build::tests::a_complete_build_is_reused_until_an_artifact_or_output_changes`
    // shows it without a bootstrap.)

    // --verify-reproducible: the complete build is reused as the first,
    // and a second build from a fresh bootstrap (in a folder inside the
    // output folder, removed after) gives the same bytes in every output.
    // (`--rebuild` in a folder holding a complete build is shown in
    // e2e_minimal's `two_builds_from_one_lock_give_identical_artifacts`.)
    let (verified, _) = build(&["--verify-reproducible"]);
    assert!(verified.contains(REUSED_BUILD), "{verified}");
    assert!(
        verified.contains("reproducible: a second build, from a fresh bootstrap, gave the same"),
        "{verified}"
    );
    assert_eq!(
        identity(&archive),
        built,
        "the first build's artifact stays"
    );
    let names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with('.')),
        "the verification build is removed: {names:?}"
    );
    assert_eq!(fs::read_to_string(out.join("SHA256SUMS")).unwrap(), sha);

    // The fresh bootstrap of the verification was kept: a build of the same lock
    // in another folder unpacks that tree instead of bootstrapping, and
    // its artifact is the very one the fresh builds made.
    let elsewhere = project.join("elsewhere");
    let (said, secs) = build_in(&elsewhere, &[]);
    assert!(!said.contains(REUSED_BUILD), "{said}");
    assert!(
        said.contains("the tree of an earlier bootstrap of the same locked packages"),
        "{said}"
    );
    assert_eq!(
        fs::read_to_string(elsewhere.join("SHA256SUMS")).unwrap(),
        sha
    );
    eprintln!("build with a cached bootstrap: {secs:.1} s");

    // The test: run (--rerun: another test of these very bytes may have
    // stored its results already), then reused, then run again on demand.
    let test = |extra: &[&str]| {
        let mut args = vec!["--recipes", "recipes", "test", archive.to_str().unwrap()];
        args.extend(extra);
        let (o, secs) = biovm(&args);
        assert!(o.status.success(), "test failed");
        (stdout(&o), secs)
    };
    let reused = "minimal.docker.tar container: reused: not run again";
    let (ran, _) = test(&["--rerun"]);
    assert!(
        ran.contains("minimal.docker.tar container: PASSED") && !ran.contains(reused),
        "{ran}"
    );
    let (again, secs) = test(&[]);
    assert!(again.contains(reused), "{again}");
    eprintln!("reused test: {secs:.1} s");
    // The report in the test's folder is the stored one, with its log there.
    let report: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(out.join("minimal.docker.test/report.json")).unwrap(),
    )
    .unwrap();
    let cell = &report[0];
    assert!(cell["reused"]["key"].is_string(), "{cell}");
    let log = fs::read_to_string(cell["serial_log"].as_str().unwrap()).unwrap();
    assert!(log.starts_with("BIOVM start ") && log.ends_with("BIOVM done\n"));

    // A check changed (its pattern): the stored result does not apply.
    // The pattern is new to every run of this test (an alternative that
    // never matches, naming the run): a run before this one, on this
    // machine with this very biovm, stored the result of its own change.
    let recipes = project.join("recipes");
    copy_tree(&repo().join("recipes"), &recipes);
    let samtools = recipes.join("bam-vcf-utilities/samtools.toml");
    let s = fs::read_to_string(&samtools).unwrap();
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let changed = s.replace(
        r"'^samtools 1\.\d+'",
        &format!(r"'^samtools 1\.\d+|^never printed by run {run}'"),
    );
    assert_ne!(changed, s, "the recipe changed");
    fs::write(&samtools, changed).unwrap();
    let (o, _) = biovm(&[
        "--recipes",
        recipes.to_str().unwrap(),
        "test",
        archive.to_str().unwrap(),
        "--image",
        img.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert!(!stdout(&o).contains(reused), "{}", stdout(&o));
}
