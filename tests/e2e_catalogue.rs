//! The catalogue against the real Debian archive: every recipe of the
//! biolinux image resolves together, and a package the archive lacks is
//! named. `#[ignore]`d: needs the network to the package archive.

use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_biovm");

fn biovm(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run biovm");
    eprintln!(
        "$ biovm {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_catalogue_has_150_tools_each_with_a_check() {
    let o = biovm(&["list", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tools = v.as_array().unwrap();
    assert!(tools.len() >= 150, "{} tools", tools.len());
    for t in tools {
        let cmd = t["check"]["command"].as_str().unwrap_or("");
        let expect = t["check"]["expect"].as_str().unwrap_or("");
        assert!(!cmd.is_empty() && expect.len() >= 3, "{t}");
    }
}

#[test]
#[ignore = "needs the network to the package archive"]
fn every_biolinux_package_resolves_together() {
    let o = biovm(&["plan", "images/biolinux.toml", "--resolve"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Debian packages install together"));
}

#[test]
#[ignore = "needs the network to the package archive"]
fn a_package_the_archive_lacks_is_named() {
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
