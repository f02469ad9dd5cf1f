//! CLI tests of loading and validation: `biovm check` on broken inputs
//! (tests/fixtures/broken/<case>/), and check/list/show/plan on the
//! repository's real recipes and images.
//!
//! Each broken case is a small tree run with the case folder as the current
//! folder. `args` (optional) holds the arguments after `biovm check`, one per
//! line (none: check the default `recipes/` and `images/*.toml`);
//! `expected.txt` holds the exact standard error. Run with
//! `BIOVM_BLESS=1` to rewrite the `expected.txt` files from the output.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{repo, text};
use pretty_assertions::assert_eq;

mod common;

/// biovm in `cwd`, without log settings or colours (the output is
/// compared with the expected files as it is).
fn biovm(cwd: &Path, args: &[&str]) -> Output {
    let mut c = common::biovm_command(cwd);
    c.env_remove("BIOVM_LOG").env("NO_COLOR", "1");
    c.args(args).output().expect("run biovm")
}

fn broken_cases() -> Vec<PathBuf> {
    let dir = repo().join("tests/fixtures/broken");
    let mut cases: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("tests/fixtures/broken")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    cases
}

#[test]
fn broken_inputs_are_reported_exactly() {
    let bless = std::env::var_os("BIOVM_BLESS").is_some();
    let cases = broken_cases();
    assert!(cases.len() >= 18, "only {} broken cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let args_text = fs::read_to_string(case.join("args")).unwrap_or_default();
        let mut args = vec!["check"];
        args.extend(args_text.lines().map(str::trim).filter(|l| !l.is_empty()));
        let out = biovm(case, &args);
        let stderr = text(&out.stderr);
        let expected_path = case.join("expected.txt");
        if bless {
            fs::write(&expected_path, &stderr).unwrap();
        }
        let expected = fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{name}: no expected.txt"));
        if !expected.starts_with("error: ") {
            failures.push(format!("{name}: expected.txt does not start with an error"));
        }
        if out.status.code() != Some(2) {
            failures.push(format!(
                "{name}: exit status {:?}, not 2",
                out.status.code()
            ));
        }
        if !out.stdout.is_empty() {
            failures.push(format!("{name}: stdout not empty: {}", text(&out.stdout)));
        }
        if stderr != expected {
            failures.push(format!(
                "{name}: stderr differs\n--- expected\n{expected}--- got\n{stderr}"
            ));
        }
        assert!(
            !stderr.contains(&*repo().to_string_lossy()),
            "{name}: absolute path in output"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn real_recipes_and_images_pass() {
    let out = biovm(&repo(), &["check"]);
    assert_eq!(text(&out.stderr), "");
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("ok: "), "{stdout}");
    assert!(stdout.contains("recipes, "), "{stdout}");

    // Paths given explicitly: a recipe file, a category folder, an image.
    let out = biovm(
        &repo(),
        &[
            "check",
            "recipes/alignment/bwa.toml",
            "recipes/qc",
            "images/minimal.toml",
        ],
    );
    assert_eq!(text(&out.stderr), "");
    assert!(out.status.success());
}

#[test]
fn list_shows_the_catalogue() {
    let out = biovm(&repo(), &["list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "CATEGORY", "SOURCE", "SUMMARY"]);
    let samtools = stdout
        .lines()
        .find(|l| l.starts_with("samtools "))
        .expect("samtools row");
    let cells: Vec<&str> = samtools.split_whitespace().collect();
    assert_eq!(&cells[..3], ["samtools", "bam-vcf-utilities", "debian"]);

    let out = biovm(&repo(), &["list", "--category", "alignment"]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("\nbwa "), "{stdout}");
    assert!(stdout.contains("\nminimap2 "), "{stdout}");
    assert!(!stdout.contains("samtools"), "{stdout}");
}

#[test]
fn list_json() {
    let out = biovm(&repo(), &["list", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = v.as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|r| r["name"].as_str().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let bwa = list.iter().find(|r| r["name"] == "bwa").unwrap();
    assert_eq!(bwa["category"], "alignment");
    assert_eq!(bwa["license"], "GPL-3.0-only");
    assert_eq!(bwa["homepage"], "https://github.com/lh3/bwa");
    assert_eq!(bwa["install"]["debian"], serde_json::json!(["bwa"]));
    assert_eq!(bwa["install"]["pypi"], serde_json::json!([]));
    assert_eq!(bwa["install"]["downloads"], serde_json::json!([]));
    assert_eq!(bwa["check"]["command"], "bwa");
    assert_eq!(bwa["check"]["expect"], r"Version: 0\.7\.\d+");
    assert_eq!(bwa["check"]["status"], 1);
    assert!(bwa["tests"].is_array());
}

#[test]
fn list_unknown_category_suggests() {
    let out = biovm(&repo(), &["list", "--category", "alignmnt"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        text(&out.stderr),
        "error: recipes: unknown category `alignmnt`\n  = help: did you mean `alignment`?\n"
    );
}

#[test]
fn show_one_recipe() {
    let out = biovm(&repo(), &["show", "bwa"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for want in [
        "name:      bwa\n",
        "category:  alignment\n",
        "license:   GPL-3.0-only\n",
        "homepage:  https://github.com/lh3/bwa\n",
        "file:      recipes/alignment/bwa.toml\n",
        "  debian:  bwa\n",
        "  command: bwa\n",
        "  expect:  Version: 0\\.7\\.\\d+\n",
        "  status:  1\n",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in\n{stdout}");
    }
    let out = biovm(&repo(), &["show", "--json", "samtools"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["install"]["debian"], serde_json::json!(["samtools"]));
}

#[test]
fn show_unknown_tool_suggests() {
    let out = biovm(&repo(), &["show", "samtool"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        text(&out.stderr),
        "error: recipes: unknown recipe `samtool`\n  = help: did you mean `samtools`?\n"
    );
}

#[test]
fn plan_minimal_image() {
    let out = biovm(&repo(), &["plan", "images/minimal.toml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for want in [
        "image:        minimal (images/minimal.toml)\n",
        "base:         debian bookworm amd64\n",
        "mirror:       mmdebstrap default\n",
        "recipes (5):\n",
        "  bwa       alignment          debian\n",
        "  samtools  bam-vcf-utilities  debian\n",
        "  hostname:   biovm-minimal\n",
        "  size:       3GiB\n",
        "  boot:       uefi, bios\n",
        "artifacts:\n  out/minimal.raw\n",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in\n{stdout}");
    }
    // Recipe packages, the image's own and the ones biovm always adds.
    for pkg in [
        "samtools",
        "bwa",
        "bcftools",
        "minimap2",
        "fastp",
        "less",
        "nano",
        "openssh-server",
    ] {
        assert!(
            stdout.contains(&format!("\n  {pkg}\n")),
            "no package {pkg} in\n{stdout}"
        );
    }
}

#[test]
fn plan_json() {
    let out = biovm(
        &repo(),
        &["plan", "--json", "--out", "build", "images/minimal.toml"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "minimal");
    assert_eq!(v["base"]["suite"], "bookworm");
    assert_eq!(v["base"]["mirror"], serde_json::Value::Null);
    assert_eq!(
        v["recipes"],
        serde_json::json!(["bcftools", "bwa", "fastp", "minimap2", "samtools"])
    );
    let debs: Vec<&str> = v["debian_packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for pkg in ["samtools", "bwa", "less", "nano"] {
        assert!(debs.contains(&pkg), "{debs:?}");
    }
    assert_eq!(v["disk"]["size_bytes"], 3u64 << 30);
    assert_eq!(v["disk"]["boot"], serde_json::json!(["uefi", "bios"]));
    assert_eq!(v["system"]["user"]["name"], "biovm");
    assert_eq!(v["system"]["files"][0]["path"], "/etc/motd");
    let artifacts: Vec<&str> = v["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(artifacts.len(), 10, "{artifacts:?}");
    for a in [
        "build/minimal.raw",
        "build/minimal.qcow2",
        "build/minimal.ova",
        "build/minimal.sif",
    ] {
        assert!(artifacts.contains(&a), "{artifacts:?}");
    }
}

#[test]
fn plan_with_a_broken_image_builds_nothing() {
    let case = repo().join("tests/fixtures/broken/image-bad-size");
    let out = biovm(&case, &["plan", "images/x.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).starts_with("error: images/x.toml:"));
}

#[test]
fn image_extra_recipe_folder() {
    let dir = repo().join("tests/fixtures/lab");
    let out = biovm(&dir, &["plan", "--json", "images/lab.toml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["recipes"], serde_json::json!(["labtool", "samtools"]));
    let out = biovm(&dir, &["check"]);
    assert_eq!(text(&out.stderr), "");
    assert_eq!(text(&out.stdout), "ok: 3 recipes, 1 image\n");
}

/// A project in a temporary folder: `images/x.toml` with `system` (TOML
/// lines) and `files`, the one recipe samtools, and a folder `shared`
/// beside it holding `motd`.
fn project(system: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    fs::create_dir_all(p.join("images/files")).unwrap();
    fs::create_dir_all(p.join("recipes/bam-vcf-utilities")).unwrap();
    fs::create_dir_all(p.join("shared")).unwrap();
    fs::write(p.join("shared/motd"), "from the lab's shared folder\n").unwrap();
    fs::copy(
        repo()
            .join("tests/fixtures/broken/image-bad-system/recipes/bam-vcf-utilities/samtools.toml"),
        p.join("recipes/bam-vcf-utilities/samtools.toml"),
    )
    .unwrap();
    fs::write(
        p.join("images/x.toml"),
        format!(
            "name = \"x\"\n\n[base]\ndistribution = \"debian\"\n\n[recipes]\ninclude = [\"samtools\"]\n\n\
             [system]\n{system}\n[disk]\nsize = \"2GiB\"\n"
        ),
    )
    .unwrap();
    d
}

/// A source outside the image's folder (here through a symlink) is refused
/// unless the command line allows that folder; the file never can.
#[test]
fn host_paths_need_the_command_line_opt_in() {
    let d = project("[[system.files]]\npath = \"/etc/motd\"\nsource = \"files/motd\"\n");
    let p = d.path();
    std::os::unix::fs::symlink(p.join("shared/motd"), p.join("images/files/motd")).unwrap();
    let shared = p.join("shared").canonicalize().unwrap();
    let out = biovm(p, &["check", "images/x.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: images/x.toml:12:10: source `files/motd` resolves to {}/motd, outside the image file's folder `images`\n   \
             |\n12 | source = \"files/motd\"\n   |          ^^^^^^^^^^^^\n   \
             = help: biovm reads only files inside the image file's folder `images`; to allow another folder, \
             pass `--allow-host-path DIR` on the command line\n",
            shared.display()
        )
    );
    for cmd in ["check", "plan"] {
        let out = biovm(p, &[cmd, "--allow-host-path", "shared", "images/x.toml"]);
        assert!(out.status.success(), "{cmd}: {}", text(&out.stderr));
    }
    let out = biovm(
        p,
        &["check", "--allow-host-path", "nowhere", "images/x.toml"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .starts_with("error: nowhere: --allow-host-path: cannot resolve the folder"),
        "{}",
        text(&out.stderr)
    );
    // `build` and `lock` take the flag too (checked before anything runs).
    for cmd in ["build", "lock"] {
        let out = biovm(p, &[cmd, "--help"]);
        assert!(
            text(&out.stdout).contains("--allow-host-path <DIR>"),
            "{cmd}"
        );
    }
}

/// A locale is checked against the host's list of supported locales when
/// the host has one (package `locales`); without it, a warning says so.
#[test]
fn locales_are_checked_against_the_hosts_list() {
    let d = project("locale = \"en_US.utf8\"\n");
    let out = biovm(d.path(), &["check", "images/x.toml"]);
    let err = text(&out.stderr);
    if Path::new("/usr/share/i18n/SUPPORTED").exists() {
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            err,
            "error: images/x.toml:10:10: unknown locale `en_US.utf8`\n   |\n10 | locale = \"en_US.utf8\"\n   \
             |          ^^^^^^^^^^^^\n   = help: did you mean `en_US.UTF-8`?\n"
        );
        let d = project("locale = \"de_DE.UTF-8\"\ntimezone = \"Europe/Berlin\"\n");
        let out = biovm(d.path(), &["check", "images/x.toml"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    } else {
        assert!(out.status.success());
        assert!(err.contains("cannot check locale `en_US.utf8`"), "{err}");
    }
}

/// `build`, `lock` and `plan` load the image as `check` does: an image or
/// recipe aimed at host paths stops them before anything is made.
#[test]
fn commands_that_build_refuse_host_paths_first() {
    let case = repo().join("tests/fixtures/broken/image-host-paths");
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let expected = fs::read_to_string(case.join("expected.txt")).unwrap();
    for args in [
        vec!["build", "images/x.toml", "--out", out.to_str().unwrap()],
        vec!["lock", "images/x.toml"],
        vec!["plan", "images/x.toml"],
    ] {
        let o = biovm(&case, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert_eq!(text(&o.stderr), expected, "{args:?}");
    }
    assert!(!out.exists(), "build made its output folder");
    assert!(!case.join("images/x.lock").exists());
    assert!(!Path::new("/tmp/biovm-host-marker").exists());
}

/// `list --against`: each entry of a reference list covered by a recipe,
/// excluded with the reason of recipes/exclusions.toml, without a Debian
/// package, or missing (exit 1 while one is).
#[test]
fn list_against_a_reference_names_what_is_missing() {
    let d = common::scratch("cli-list-against");
    let table = d.join("tools.tsv");
    fs::write(
        &table,
        "tool\tcategory\tdebian_bookworm_package\n\
         SAMtools\talignment\tsamtools\n\
         Cufflinks\trnaseq\tcufflinks\n\
         NoSuchTool\tnone\tno-such-tool\n\
         GATK\tvariants\t-\n",
    )
    .unwrap();
    let o = biovm(&repo(), &["list", "--against", table.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("4 entries, 3 with a Debian 12 package: 1 covered, 1 excluded, 1 missing"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["missing", "NoSuchTool", "no-such-tool"]),
        "{out}"
    );
    assert!(out.contains("excluded           Cufflinks"), "{out}");
    assert!(
        out.contains("not-in-main: not in Debian 12's main component"),
        "{out}"
    );
    // JSON: every entry, the covering recipe named.
    let o = biovm(
        &repo(),
        &["--json", "list", "--against", table.to_str().unwrap()],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let entries = v[0]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[0]["recipes"], serde_json::json!(["samtools"]));
    assert_eq!(entries[1]["reason"], "not-in-main");
    assert_eq!(entries[3]["status"], "no-debian-package");
}
