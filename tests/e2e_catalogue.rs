//! The catalogue against the real Debian archive: every recipe of the
//! biolinux image resolves together, a package the archive lacks is
//! named, and the whole biolinux image builds from its lock and passes
//! every check in one boot. `#[ignore]`d: needs the network to the package
//! archive (and root and many minutes for the build).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::Instant;

mod common;

use common::{repo, scratch};

fn biovm(args: &[&str]) -> Output {
    common::biovm_in(&repo(), args, &[])
}

#[test]
fn the_catalogue_has_300_tools_each_with_a_check_and_100_functional_tests() {
    let o = biovm(&["list", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tools = v.as_array().unwrap();
    assert!(tools.len() >= 300, "{} tools", tools.len());
    for t in tools {
        let cmd = t["check"]["command"].as_str().unwrap_or("");
        let expect = t["check"]["expect"].as_str().unwrap_or("");
        assert!(!cmd.is_empty() && expect.len() >= 3, "{t}");
    }
    let tested = tools
        .iter()
        .filter(|t| !t["tests"].as_array().unwrap().is_empty())
        .count();
    assert!(tested >= 100, "{tested} tools with a functional test");
}

/// Every tool of both reference lists (Cloud BioLinux's, with a Debian 12
/// package, and Debian Med's cloud task) has a recipe or an exclusion
/// with its reason.
#[test]
fn every_reference_tool_is_covered_or_excluded() {
    let o = biovm(&[
        "list",
        "--against",
        "docs/reference/cloudbiolinux-tools.tsv",
        "--against",
        "docs/reference/debian-med-cloud-bookworm.txt",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert_eq!(out.matches(", 0 missing").count(), 2, "{out}");
    assert!(
        !out.lines().any(|l| l.trim_start().starts_with("missing ")),
        "{out}"
    );
}

#[test]
#[ignore = "needs the network to the package archive"]
fn every_biolinux_package_resolves_together() {
    let _t = common::timed();
    let o = biovm(&["plan", "images/biolinux.toml", "--resolve"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Debian packages install together"));
}

#[test]
#[ignore = "needs the network to the package archive"]
fn a_package_the_archive_lacks_is_named() {
    let _t = common::timed();
    let d = tempfile::tempdir().unwrap();
    let images = d.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images/minimal.toml"),
    )
    .unwrap()
    .replace(
        "packages = [\"less\", \"nano\"]",
        "packages = [\"less\", \"biovm-no-such-package\"]",
    );
    let img = images.join("minimal.toml");
    std::fs::write(&img, text).unwrap();
    let recipes = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("recipes");
    let o = biovm(&[
        "--recipes",
        recipes.to_str().unwrap(),
        "plan",
        img.to_str().unwrap(),
        "--resolve",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("do not resolve") && e.contains("biovm-no-such-package"),
        "{e}"
    );
}

#[test]
fn the_committed_catalogue_page_is_current() {
    let o = biovm(&["list", "--markdown"]);
    assert!(o.status.success());
    let page = String::from_utf8(o.stdout).unwrap();
    let rows = page.lines().filter(|l| l.starts_with("| [")).count();
    assert!(rows >= 150, "{rows} rows");
    let committed = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("recipes/CATALOGUE.md"),
    )
    .unwrap();
    assert_eq!(
        page, committed,
        "run `biovm list --markdown > recipes/CATALOGUE.md`"
    );
}

/// The biolinux image file and its committed lock copied to a scratch
/// project once for the tests below. `biovm lock` there confirms the lock
/// still matches the recipes (a recipe changed without `biovm lock
/// --update images/biolinux.toml` fails here), or makes one when none is
/// committed (a whole bootstrap).
fn locked_biolinux() -> &'static Path {
    static IMG: OnceLock<PathBuf> = OnceLock::new();
    IMG.get_or_init(|| {
        let img = project_image("e2e-biolinux");
        let o = biovm(&["--recipes", "recipes", "lock", img.to_str().unwrap()]);
        assert!(o.status.success(), "lock failed");
        img
    })
}

/// A copy of images/biolinux.toml (and its lock) in a scratch folder `name`/images/.
fn project_image(name: &str) -> PathBuf {
    let p = scratch(name).join("images");
    std::fs::create_dir_all(&p).unwrap();
    let img = p.join("biolinux.toml");
    let images = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images");
    std::fs::copy(images.join("biolinux.toml"), &img).unwrap();
    if images.join("biolinux.lock").exists() {
        std::fs::copy(images.join("biolinux.lock"), img.with_extension("lock")).unwrap();
    }
    img
}

/// The whole catalogue in one image, built from its lock (the raw disk
/// only: the other formats are byte conversions the minimal image's tests
/// cover) and booted once under UEFI: every tool's check and functional
/// test passes. Prints the figures the issue note records.
#[test]
#[ignore = "needs root, network and many minutes"]
fn biolinux_builds_from_its_lock_and_every_check_passes_in_one_boot() {
    let _t = common::timed();
    let img = locked_biolinux();
    let out = scratch("e2e-biolinux-out");
    let t0 = Instant::now();
    let o = biovm(&[
        "--recipes",
        "recipes",
        "build",
        img.to_str().unwrap(),
        "--format",
        "raw",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "build failed");
    eprintln!("build: {:.0} s", t0.elapsed().as_secs_f64());
    let build: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("biolinux.build.json")).unwrap())
            .unwrap();
    assert_eq!(build["locked"], true, "built from the lock");
    let raw = out.join("biolinux.raw");
    let t0 = Instant::now();
    let o = biovm(&[
        "--recipes",
        "recipes",
        "test",
        raw.to_str().unwrap(),
        "--firmware",
        "uefi",
        "--boot-timeout",
        "900",
    ]);
    eprintln!("test: {:.0} s", t0.elapsed().as_secs_f64());
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("biolinux.test/report.json")).unwrap(),
    )
    .unwrap();
    // Every check runs natively in the disk's own tree; the boot runs the
    // system's checks and one tool per install source.
    let cells = report.as_array().unwrap();
    let native = cells
        .iter()
        .find(|c| c["firmware"] == "native")
        .expect("a native run");
    let boot = cells
        .iter()
        .find(|c| c["firmware"] == "uefi")
        .expect("a UEFI boot");
    // The disk the build wrote is mounted, not copied out (11 GB).
    assert_eq!(native["disk_mounted"], true, "{native}");
    eprintln!(
        "native: disk mounted in {:.1} s, checks {:.1} s wall; boot: to first check {:.1} s, total {:.1} s",
        native["prepare_secs"].as_f64().unwrap_or(f64::NAN),
        native["total_secs"].as_f64().unwrap_or(f64::NAN)
            - native["prepare_secs"].as_f64().unwrap_or(0.0),
        boot["first_check_secs"].as_f64().unwrap_or(f64::NAN),
        boot["total_secs"].as_f64().unwrap_or(f64::NAN),
    );
    let same_tree = |c: &serde_json::Value| {
        c["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["tool"] == "system/same-tree" && r["result"] == "passed")
    };
    assert!(same_tree(native) && same_tree(boot), "{report}");
    // The workbench's boot check, with its servers (this test's first
    // boot): JupyterLab and the desktop started through their sockets.
    // It is the workbench's boot test in this suite (e2e_workbench boots
    // its image once, with `biovm run`).
    let workbench = boot["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tool"] == "system/workbench")
        .unwrap_or_else(|| panic!("no system/workbench in the boot: {boot}"));
    assert_eq!(workbench["result"], "passed", "{workbench}");
    let said = workbench["output"].as_str().unwrap_or_default();
    for line in [
        "token made at this boot",
        "JupyterLab started at its socket's first connection, answered with the token",
        "desktop stopped, its socket listening",
    ] {
        assert!(said.contains(line), "{line:?} not in {workbench}");
    }
    // The boot's tools are the image's [checks] boot-sample.
    let mut sampled: Vec<&str> = boot["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["tool"].as_str())
        .filter(|t| !t.starts_with("system/") && !t.starts_with("data/"))
        .collect();
    sampled.sort_unstable();
    assert_eq!(sampled, ["pyhmmer", "samtools"], "{report}");
    let mut results: Vec<(f64, String, String)> = native["results"]
        .as_array()
        .unwrap()
        .iter()
        .chain(boot["results"].as_array().unwrap())
        .map(|r| {
            (
                r["seconds"].as_f64().unwrap_or(0.0),
                r["tool"].as_str().unwrap_or("").to_string(),
                r["result"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    results.sort_by(|a, b| b.0.total_cmp(&a.0));
    eprintln!(
        "all checks {:.0} s of check time; slowest: {:?}",
        results.iter().map(|r| r.0).sum::<f64>(),
        &results[..results.len().min(10)]
    );
    assert!(o.status.success(), "biovm test failed");
    // Every tool of the catalogue (and every functional test) reported.
    let list = biovm(&["list", "--json"]);
    let tools: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    for t in tools.as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        assert!(
            results.iter().any(|r| r.1 == name),
            "{name} has no result in the report"
        );
    }
    assert!(results.iter().all(|r| r.2 == "passed"), "{results:?}");
}

/// A PyPI file whose hash differs from the lock's stops the build before
/// anything is written, naming the recipe and both hashes.
#[test]
#[ignore = "needs root, network and many minutes"]
fn a_tampered_pypi_hash_in_the_lock_stops_the_build_writing_nothing() {
    let _t = common::timed();
    // BioLinux's committed lock, whose PyPI files the build checks before
    // its bootstrap (no bootstrap needed here, nor a lock made for it).
    let img = project_image("e2e-pypi-tampered");
    let lock = std::fs::read_to_string(img.with_extension("lock")).unwrap();
    // The first locked PyPI file: its recipe and sha256.
    let block = lock
        .split("[[pypi]]")
        .nth(1)
        .expect("the lock has PyPI files");
    let field = |k: &str| {
        block
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = \"")))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap()
            .to_string()
    };
    let (recipe, sha) = (field("recipe"), field("sha256"));
    let zeros = "0".repeat(64);
    std::fs::write(img.with_extension("lock"), lock.replace(&sha, &zeros)).unwrap();
    let out = scratch("e2e-pypi-tampered-out");
    let o = biovm(&[
        "--recipes",
        "recipes",
        "build",
        img.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    for needle in [&format!("recipe {recipe}"), &sha, &zeros] {
        assert!(e.contains(needle.as_str()), "missing {needle:?} in: {e}");
    }
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The lab admin's example: biolinux's selection without one category,
/// plus a recipe from the lab's own folder, with one package pinned (also
/// where a recipe asks for it).
#[test]
fn the_lab_example_drops_a_category_adds_a_local_recipe_and_pins_a_package() {
    let o = biovm(&["plan", "images/lab-example.toml"]);
    assert!(o.status.success());
    let plan = String::from_utf8(o.stdout).unwrap();
    let recipe_rows: Vec<Vec<&str>> = plan
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() == 3 && ["debian", "pypi", "download"].contains(&f[2]))
        .collect();
    assert!(recipe_rows.len() >= 150, "{plan}");
    assert!(
        !recipe_rows.iter().any(|f| f[1] == "proteomics"),
        "proteomics is dropped:\n{plan}"
    );
    assert!(recipe_rows
        .iter()
        .any(|f| f[0] == "prinseq-lite" && f[1] == "qc"));
    let biolinux = String::from_utf8(biovm(&["plan", "images/biolinux.toml"]).stdout).unwrap();
    assert!(biolinux.lines().any(|l| l.contains(" proteomics ")));
    assert!(!biolinux
        .lines()
        .any(|l| l.trim_start().starts_with("prinseq-lite ")));
    // The Debian package list asks for samtools at the pinned version only.
    let debs: Vec<&str> = plan.lines().map(str::trim).collect();
    assert!(debs.contains(&"samtools=1.16.1-1"), "{plan}");
    assert!(!debs.contains(&"samtools"), "{plan}");
}
