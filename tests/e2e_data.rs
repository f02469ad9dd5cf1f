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
        plan.contains("data (2, 1.4 MiB to fetch, onto a data disk of its own (genomes.data.raw, label biovm-data), mounted read-only at /data/genomes):"),
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

    // The data is on its own disk (raw, and qcow2 as the image builds
    // qcow2), in SHA256SUMS, and not in the image's own tree.
    let disk = &manifest["data_disk"];
    assert_eq!(disk["label"], "biovm-data", "{disk}");
    let sums = fs::read_to_string(p.join("out/SHA256SUMS")).unwrap();
    for f in disk["files"].as_array().unwrap() {
        let name = f["file"].as_str().unwrap();
        assert!(p.join("out").join(name).is_file(), "{name}");
        assert!(
            sums.contains(&format!("{}  {name}\n", f["sha256"].as_str().unwrap())),
            "{sums}"
        );
    }
    let formats: Vec<&str> = disk["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["format"].as_str().unwrap())
        .collect();
    assert_eq!(formats, ["raw", "qcow2"]);
    let mut listed = String::new();
    for blob in fs::read_dir(p.join("out/genomes.oci/blobs/sha256")).unwrap() {
        let o = std::process::Command::new("tar")
            .arg("-tzf")
            .arg(blob.unwrap().path())
            .output()
            .unwrap();
        listed.push_str(&text(&o.stdout));
    }
    assert!(
        listed.contains("data/genomes/"),
        "the mount point is in the image"
    );
    assert!(
        !listed.contains("data/genomes/lambda"),
        "no data set is in the image's own tree"
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
    let mut got = passed("native");
    got.sort();
    assert_eq!(got, every, "natively, the data disk read into the tree");
    // The container artifact carries no data: its cell has no data rows.
    let container = report
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["firmware"] == "container")
        .expect("the OCI cell");
    assert!(
        container["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| !r["tool"].as_str().unwrap().starts_with("data/")),
        "{container}"
    );
    // The booted disk, with the data disk attached, holds every file with
    // its digest; natively the data disk's tree is the one built.
    let mut booted = passed("uefi");
    booted.sort();
    assert_eq!(booted, ["data/ecoli-536", "data/lambda-phage"]);
    let native = report
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["firmware"] == "native")
        .unwrap();
    assert!(
        native["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["tool"] == "system/same-data-disk" && r["result"] == "passed"),
        "{native}"
    );

    // One byte changed inside lambda.fa on the data disk (and the qcow2
    // made again from it) is caught natively and in the boot, by name.
    let raw = p.join("out/genomes.data.raw");
    let at = byte_of_file_on_ext4(&raw, "/lambda/lambda.fa") + 100;
    let mut bytes = fs::read(&raw).unwrap();
    bytes[at as usize] ^= 0x20;
    fs::write(&raw, &bytes).unwrap();
    let qcow2 = p.join("out/genomes.data.qcow2");
    let converted = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow2)
        .status()
        .unwrap();
    assert!(converted.success());
    let out = biovm(&p, &["test", "images/genomes.toml", "--out", "out"]);
    assert_eq!(out.status.code(), Some(1));
    let report = json(&p.join("out/genomes.test/report.json"));
    let failed = |firmware: &str| -> Vec<String> {
        let mut v: Vec<String> = report
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["firmware"] == firmware)
            .flat_map(|c| c["results"].as_array().unwrap().iter())
            .filter(|r| r["result"] != "passed")
            .map(|r| r["tool"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        failed("native"),
        ["data/lambda-phage", "system/same-data-disk"],
        "{report}"
    );
    assert_eq!(failed("uefi"), ["data/lambda-phage"], "{report}");
    assert!(failed("container").is_empty(), "{report}");
}

/// The byte offset of the first block of the file `path` in the bare ext4
/// filesystem `fs_image` (debugfs's `bmap`, times the block size).
fn byte_of_file_on_ext4(fs_image: &Path, path: &str) -> u64 {
    let run = |req: &str| -> String {
        let o = std::process::Command::new("debugfs")
            .arg("-R")
            .arg(req)
            .arg(fs_image)
            .output()
            .unwrap();
        text(&o.stdout)
    };
    let block: u64 = run(&format!("bmap {path} 0")).trim().parse().unwrap();
    let stats = run("stats");
    let size: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    block * size
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
