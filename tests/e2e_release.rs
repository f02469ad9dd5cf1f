//! End to end: `biovm release` of a small real image
//! (tests/fixtures/release: two tools; raw, Vagrant box and rootfs
//! tarball; BIOS only, so the build and its matrix take a few minutes),
//! published to EC2 on moto (127.0.0.1, through the recording proxy that
//! plays the real EBS block size).
//!
//! Like the other e2e tests these need root, the host packages `.ci/setup`
//! installs, the network to the package archive and minutes, so they are
//! `#[ignore]`d; `.ci/run` runs them. The two tests take turns (one build
//! and one matrix at a time on a small machine).

mod common;
mod publish_common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use common::{copy_tree, scratch};
use publish_common::*;

static TURNS: Mutex<()> = Mutex::new(());

const CREDS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "AKIDRELEASETEST"),
    ("AWS_SECRET_ACCESS_KEY", "release-test-secret-key"),
];

fn run(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let t = Instant::now();
    let o = biovm(cwd, args, env);
    common::biovm_time(args, t.elapsed().as_secs_f64());
    eprintln!(
        "$ biovm {} ({:.1} s, {})\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        t.elapsed().as_secs_f64(),
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    o
}

/// The fixture project, locked once; every test copies the image and its lock.
fn locked_fixture() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let p = scratch("release-locked");
        copy_tree(&repo().join("tests/fixtures/release"), &p);
        // Without a lock the release refuses and says how to make one.
        let o = run(&p, &["release", "images/tiny.toml", "--out", "rel"], &[]);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            text(&o.stderr).contains("run `biovm lock images/tiny.toml`"),
            "{}",
            text(&o.stderr)
        );
        assert!(!p.join("rel/release.json").exists());
        let o = run(&p, &["lock", "images/tiny.toml"], &[]);
        assert!(o.status.success(), "lock failed");
        p
    })
}

fn project(name: &str) -> PathBuf {
    let p = scratch(name);
    copy_tree(locked_fixture(), &p);
    p
}

fn sha256(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut f = fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Validate `doc` against docs/release-index.schema.json with the
/// `jsonschema` package (in the venv .ci/setup makes); the error text on failure.
fn validate(doc: &Path) -> Result<(), String> {
    let o = biovm::cmd::Cmd::new(venv_python())
        .args([
            "-c",
            "import json, sys, jsonschema\n\
             schema = json.load(open(sys.argv[1]))\n\
             jsonschema.Draft202012Validator.check_schema(schema)\n\
             e = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(json.load(open(sys.argv[2]))))\n\
             sys.exit(f'invalid: {e.message} at {list(e.absolute_path)}') if e else print('valid')\n",
        ])
        .arg(repo().join("docs/release-index.schema.json"))
        .arg(doc)
        .run();
    o.map(|_| ()).map_err(|e| format!("{e:#}"))
}

fn names_in(d: &Path) -> Vec<String> {
    fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
#[ignore = "needs root, network and minutes"]
fn a_release_is_tested_indexed_published_and_a_rerun_reuses_it() {
    let _t = common::timed();
    let _t = TURNS.lock().unwrap_or_else(|e| e.into_inner());
    let root = project("release-good");
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, Faults::default());
    let endpoint = proxy.url();
    let mut env = CREDS.to_vec();
    env.push(("AWS_ENDPOINT_URL", &endpoint));
    let args = [
        "release",
        "images/tiny.toml",
        "--out",
        "rel",
        "--publish",
        "--base-url",
        "https://example.org/rel/",
    ];
    let t = Instant::now();
    let o = run(&root, &args, &env);
    let first = t.elapsed().as_secs_f64();
    assert!(o.status.success(), "the release failed");
    let rel = root.join("rel");
    let index_path = rel.join("release.json");
    validate(&index_path).unwrap();
    let index = json(&index_path);
    assert_eq!(index["images"].as_array().unwrap().len(), 1);
    let img = &index["images"][0];
    assert_eq!(img["name"], "tiny");
    let version = img["version"].as_str().unwrap().to_string();
    assert!(
        regex::Regex::new(r"^\d{8}\.\d{6}$")
            .unwrap()
            .is_match(&version),
        "{version}"
    );
    assert_eq!(
        img["lock_sha256"],
        sha256(&root.join("images/tiny.lock")).as_str()
    );

    // Every checksum in the index matches its file.
    let formats: Vec<&str> = img["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["format"].as_str().unwrap())
        .collect();
    assert_eq!(formats, ["raw", "vagrant", "tarball"]);
    let mut listed = Vec::new();
    for a in img["artifacts"].as_array().unwrap() {
        let f = rel.join(a["file"].as_str().unwrap());
        assert_eq!(a["size"].as_u64().unwrap(), fs::metadata(&f).unwrap().len());
        assert_eq!(a["sha256"].as_str().unwrap(), sha256(&f), "{}", f.display());
        listed.push(a["file"].as_str().unwrap().to_string());
    }
    let mut refs = vec![
        &img["sbom"],
        &img["manifest"],
        &img["tests"]["report"],
        &img["tests"]["junit"],
        &img["vagrant"],
    ];
    refs.extend(img["tests"]["logs"].as_array().unwrap().iter());
    // raw and the box under BIOS (console and results; raw boots as on EC2,
    // so its metadata-service log too), the tarball's results, and the
    // native run of every check in the raw disk's tree.
    let logs: Vec<&str> = img["tests"]["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["file"].as_str().unwrap())
        .collect();
    assert_eq!(
        logs,
        [
            "tiny.test/raw-bios.imds.log",
            "tiny.test/raw-bios.results.log",
            "tiny.test/raw-bios.serial.log",
            "tiny.test/raw-native.results.log",
            "tiny.test/tarball.results.log",
            "tiny.test/vagrant-bios.results.log",
            "tiny.test/vagrant-bios.serial.log"
        ]
    );
    for r in refs {
        let f = rel.join(r["file"].as_str().unwrap());
        assert_eq!(r["sha256"].as_str().unwrap(), sha256(&f), "{}", f.display());
        listed.push(r["file"].as_str().unwrap().to_string());
    }
    assert_eq!(img["sbom"]["file"], "tiny.spdx.json");
    // raw-bios, vagrant-bios, the tarball, the native run.
    assert_eq!(img["tests"]["cells"], 4);
    assert_eq!(img["tests"]["checks"], "native-and-boot-sample");
    let report = json(&rel.join("tiny.test/report.json"));
    let mut released = names_in(&rel.join("tiny.test"));
    released.sort();
    let mut expected: Vec<String> = logs
        .iter()
        .map(|l| l.trim_start_matches("tiny.test/").to_string())
        .collect();
    expected.extend(["junit.xml".to_string(), "report.json".to_string()]);
    expected.sort();
    assert_eq!(released, expected, "only the reports and logs are released");
    assert!(report
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["error"].is_null()));
    // As release.json says: every check ran in the native run, and each
    // boot ran the system's checks and the sample, one tool for the one
    // install source (Debian), though the native run went first and alone;
    // so did the tarball, which holds the tree the native run's checks ran in.
    for cell in report.as_array().unwrap() {
        let tools: Vec<&str> = cell["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["tool"].as_str().unwrap())
            .filter(|t| !t.starts_with("system/"))
            .collect();
        match cell["firmware"].as_str().unwrap() {
            "bios" | "container" => assert_eq!(tools.len(), 1, "{tools:?}"),
            _ => assert!(tools.len() > 2, "{tools:?}"),
        }
    }

    // SHA256SUMS lists exactly those files and sha256sum agrees.
    let sums = fs::read_to_string(rel.join("SHA256SUMS")).unwrap();
    let mut in_sums: Vec<String> = sums
        .lines()
        .map(|l| l.split_once("  ").unwrap().1.to_string())
        .collect();
    in_sums.sort();
    listed.sort();
    assert_eq!(in_sums, listed);
    let c = biovm::cmd::Cmd::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(&rel)
        .output();
    assert!(c.is_ok(), "sha256sum -c: {c:?}");

    // Vagrant catalog metadata.
    let v = json(&rel.join("tiny.vagrant.json"));
    assert_eq!(v["name"], "tiny");
    assert_eq!(v["versions"][0]["version"], version.as_str());
    let p = &v["versions"][0]["providers"][0];
    assert_eq!(p["name"], "virtualbox");
    assert_eq!(p["url"], "https://example.org/rel/tiny.box");
    assert_eq!(p["checksum_type"], "sha256");
    assert_eq!(
        p["checksum"].as_str().unwrap(),
        sha256(&rel.join("tiny.box"))
    );

    // The AMI in the index exists in moto, tagged with the raw disk's sha256.
    let published = img["published"].as_array().unwrap();
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(published[0]["target"], "ec2");
    assert_eq!(published[0]["created"], true);
    assert_eq!(published[0]["release"], version.as_str());
    let ami = published[0]["image_id"].as_str().unwrap().to_string();
    assert!(ami.starts_with("ami-"), "{ami}");
    let described = ec2_call(moto.port, &format!("Action=DescribeImages&ImageId.1={ami}"));
    assert!(
        described.contains(&ami) && described.contains(&sha256(&rel.join("tiny.raw"))),
        "{described}"
    );
    let tagged = ec2_call(
        moto.port,
        "Action=DescribeImages&Filter.1.Name=tag-key&Filter.1.Value.1=biovm:image",
    );
    assert_eq!(tagged.matches("<imageId>").count(), 1, "{tagged}");
    assert!(tagged.contains(&ami), "{tagged}");
    let snap = published[0]["snapshot_id"].as_str().unwrap();
    assert!(ec2_call(
        moto.port,
        &format!("Action=DescribeSnapshots&SnapshotId.1={snap}")
    )
    .contains(snap));
    proxy.take();

    // A second run reuses the build, the tests and the AMI.
    let inode = fs::metadata(rel.join("tiny.raw")).unwrap().ino();
    let t = Instant::now();
    let o = run(&root, &args, &env);
    let second = t.elapsed().as_secs_f64();
    assert!(o.status.success());
    let out = text(&o.stdout);
    for needle in [
        "build    reused",
        "test     reused (4 cells passed)",
        "already published",
    ] {
        assert!(out.contains(needle), "{needle:?} in {out}");
    }
    assert_eq!(
        fs::metadata(rel.join("tiny.raw")).unwrap().ino(),
        inode,
        "the disk was not rebuilt"
    );
    let again = json(&index_path);
    validate(&index_path).unwrap();
    assert_eq!(again["images"][0]["artifacts"], img["artifacts"]);
    assert_eq!(again["images"][0]["published"][0]["image_id"], ami.as_str());
    assert_eq!(again["images"][0]["published"][0]["created"], false);
    let calls: Vec<String> = proxy.take().iter().map(|r| r.call()).collect();
    assert_eq!(calls, ["ec2:DescribeImages"], "a rerun only looks");
    eprintln!("first release {first:.1} s, second (reused) {second:.1} s");
    assert!(
        second < first / 4.0,
        "the re-run took {second:.1} s of {first:.1} s"
    );
}

#[test]
#[ignore = "needs root, network and minutes"]
fn a_release_with_a_failing_check_writes_and_publishes_nothing() {
    let _t = common::timed();
    let _t = TURNS.lock().unwrap_or_else(|e| e.into_inner());
    let root = project("release-broken");
    let f = root.join("recipes/bam-vcf-utilities/samtools.toml");
    let s = fs::read_to_string(&f)
        .unwrap()
        .replace(r"'^samtools 1\.\d+'", r"'^samtools 9\.\d+'");
    assert!(s.contains("samtools 9"), "the recipe changed");
    fs::write(&f, s).unwrap();
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, Faults::default());
    let endpoint = proxy.url();
    let mut env = CREDS.to_vec();
    env.push(("AWS_ENDPOINT_URL", &endpoint));
    let o = run(
        &root,
        &["release", "images/tiny.toml", "--out", "rel", "--publish"],
        &env,
    );
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains(
            "samtools in tiny.raw under native: FAILED: output does not match /^samtools 9\\.\\d+/"
        ),
        "{err}"
    );
    assert!(err.contains("nothing was released or published"), "{err}");
    // The native checks ran first, alone; after their failure no guest
    // booted and no container ran.
    assert!(
        err.contains("the native checks failed: none of the other 3 cells was started"),
        "{err}"
    );
    assert!(!err.contains("under bios"), "{err}");
    let rel = root.join("rel");
    assert!(!rel.join("release.json").exists());
    assert!(!rel.join("SHA256SUMS").exists());
    assert!(!rel.join("tiny.raw").exists());
    assert!(!rel.join("tiny.vagrant.json").exists());
    // Not one request reached the cloud, and moto holds no image.
    assert_eq!(proxy.take().len(), 0);
    // (moto comes with public images and snapshots: look for biovm's tags.)
    let tagged = "Filter.1.Name=tag-key&Filter.1.Value.1=biovm:image";
    let images = ec2_call(moto.port, &format!("Action=DescribeImages&{tagged}"));
    assert!(!images.contains("<imageId>"), "{images}");
    let snaps = ec2_call(moto.port, &format!("Action=DescribeSnapshots&{tagged}"));
    assert!(!snaps.contains("<snapshotId>"), "{snaps}");
}
