//! End to end: reference data. `images/genomes.toml` carries two small
//! real genomes Debian ships (lambda phage and E. coli 536), unpacked into
//! /data/genomes and indexed at build time by the image's own samtools,
//! BWA and Bowtie 2; built from its committed lock, its data checks
//! (every file's digest, reads mapped back to where they were cut from)
//! pass natively, in the container and in the booted disk. A digest that
//! differs fails its check by name, and a data recipe whose content digest
//! is wrong stops the lock naming both hashes.
//!
//! Needs root, the host packages `.ci/setup` installs, the network to the
//! package archive and minutes: `#[ignore]`d; `.ci/run` runs it.

mod common;

use std::fs;
use std::path::Path;

use common::{copy_tree, repo, scratch, text};

fn biovm(cwd: &Path, args: &[&str]) -> std::process::Output {
    common::biovm_in(cwd, args, &[])
}

/// A project holding a copy of the repository's recipes, data recipes and
/// the genomes image with its lock.
fn project(name: &str) -> std::path::PathBuf {
    let p = scratch(name);
    copy_tree(&repo().join("recipes"), &p.join("recipes"));
    copy_tree(&repo().join("data"), &p.join("data"));
    fs::create_dir_all(p.join("images")).unwrap();
    for f in ["genomes.toml", "genomes.lock"] {
        fs::copy(repo().join("images").join(f), p.join("images").join(f)).unwrap();
    }
    p
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
#[ignore = "needs root, network and minutes"]
fn genomes_build_from_the_lock_and_every_data_check_passes() {
    let _t = common::timed();
    let p = project("e2e-data");

    // The plan names the data, its size and where it goes, before any download.
    let out = biovm(&p, &["plan", "images/genomes.toml"]);
    assert!(out.status.success());
    let plan = text(&out.stdout);
    assert!(
        plan.contains("data (2, 1.4 MiB to fetch, into the root filesystem):"),
        "{plan}"
    );
    assert!(
        plan.contains("lambda-phage  Escherichia phage lambda NC_001416.1  15.0 KiB  -> /data/genomes/lambda with indexes faidx, bwa, bowtie2"),
        "{plan}"
    );

    let out = biovm(&p, &["build", "images/genomes.toml", "--out", "out"]);
    assert!(out.status.success(), "the build failed");
    let manifest = json(&p.join("out/genomes.manifest.json"));
    let data = manifest["data"].as_array().unwrap();
    let names: Vec<&str> = data.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ecoli-536", "lambda-phage"]);
    // The build made exactly the files the lock pins.
    let lock: toml::Value =
        toml::from_str(&fs::read_to_string(p.join("images/genomes.lock")).unwrap()).unwrap();
    for (built, locked) in data.iter().zip(lock["data"].as_array().unwrap()) {
        let files = |v: &serde_json::Value| -> Vec<(String, String)> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    (
                        f["path"].as_str().unwrap().to_string(),
                        f["sha256"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        };
        let locked_files: Vec<(String, String)> = locked["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["path"].as_str().unwrap().to_string(),
                    f["sha256"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(files(&built["files"]), locked_files);
    }
    assert_eq!(
        data[1]["files"].as_array().unwrap().len(),
        13,
        "lambda: fasta + 12 index files"
    );
    // The SBOM lists each data set with its licence and content digest.
    let sbom = json(&p.join("out/genomes.spdx.json"));
    let lambda = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "lambda-phage")
        .expect("lambda-phage in the SBOM");
    assert_eq!(lambda["licenseDeclared"], "LicenseRef-public-domain");
    assert_eq!(lambda["versionInfo"], "NC_001416.1");
    assert_eq!(
        lambda["checksums"][0]["checksumValue"],
        "0a04f81952deb68c204e8ae67e0573cb97d348f18ab1b527630d57c294028cf5"
    );

    let out = biovm(&p, &["test", "images/genomes.toml", "--out", "out"]);
    assert!(out.status.success(), "the test failed");
    let report = json(&p.join("out/genomes.test/report.json"));
    let passed = |firmware: &str| -> Vec<String> {
        report
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["firmware"] == firmware)
            .flat_map(|c| c["results"].as_array().unwrap().iter())
            .filter(|r| r["tool"].as_str().unwrap().starts_with("data/") && r["result"] == "passed")
            .map(|r| r["tool"].as_str().unwrap().to_string())
            .collect()
    };
    let every = [
        "data/ecoli-536",
        "data/ecoli-536/bwa-maps-reads",
        "data/lambda-phage",
        "data/lambda-phage/bowtie2-maps-reads",
        "data/lambda-phage/bwa-maps-reads",
        "data/lambda-phage/faidx-region",
    ];
    for runner in ["native", "container"] {
        let mut got = passed(runner);
        got.sort();
        assert_eq!(got, every, "{runner}");
    }
    // The booted disk holds every file with its digest.
    let mut booted = passed("uefi");
    booted.sort();
    assert_eq!(booted, ["data/ecoli-536", "data/lambda-phage"]);

    // A digest that differs fails its check, by name: the manifest's
    // lambda digests say another content than the image holds.
    let mpath = p.join("out/genomes.manifest.json");
    let real = fs::read_to_string(&mpath).unwrap();
    let content = "0a04f81952deb68c204e8ae67e0573cb97d348f18ab1b527630d57c294028cf5";
    let other = "1a04f81952deb68c204e8ae67e0573cb97d348f18ab1b527630d57c294028cf5";
    assert!(real.contains(content));
    fs::write(&mpath, real.replace(content, other)).unwrap();
    let out = biovm(&p, &["test", "out/genomes.oci"]);
    fs::write(&mpath, real).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(
        said.contains("data/lambda-phage") && said.contains("FAILED"),
        "{said}"
    );
}

#[test]
#[ignore = "needs root, network and minutes"]
fn a_wrong_content_digest_stops_the_lock_naming_both_hashes() {
    let _t = common::timed();
    let p = project("e2e-data-wrong");
    let recipe = p.join("data/lambda-phage.toml");
    let right = "0a04f81952deb68c204e8ae67e0573cb97d348f18ab1b527630d57c294028cf5";
    let wrong = "ff".repeat(32);
    let t = fs::read_to_string(&recipe).unwrap();
    fs::write(&recipe, t.replace(right, &wrong)).unwrap();
    // The committed lock no longer matches the recipe: a build says so.
    let out = biovm(&p, &["build", "images/genomes.toml", "--out", "out"]);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("data set lambda-phage") && said.contains("biovm lock --update"),
        "{said}"
    );
    // Locking again unpacks the real bytes, and refuses them.
    let lock = p.join("images/genomes.lock");
    let before = fs::read(&lock).unwrap();
    let out = biovm(&p, &["lock", "--update", "images/genomes.toml"]);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    for part in ["data set lambda-phage", right, wrong.as_str()] {
        assert!(said.contains(part), "{part} not in: {said}");
    }
    assert_eq!(
        fs::read(&lock).unwrap(),
        before,
        "the lock is not rewritten"
    );
    assert!(!p.join("out/genomes.manifest.json").exists());
}
