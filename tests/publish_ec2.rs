//! `biovm publish --target ec2` against moto's server mode on 127.0.0.1,
//! through a proxy that records every request (moto ignores checksums,
//! most RegisterImage fields and says the wrong block size, so the
//! assertions are on what biovm sent) and, in one test, fails about 10% of
//! requests (500s, throttling, resets, stalls past the request timeout).

mod common;
mod publish_common;

use std::collections::BTreeSet;
use std::path::Path;

use base64::Engine;
use publish_common::*;
use sha2::{Digest, Sha256};

const IMAGE: &str = r#"name = "tiny"
description = "A synthetic disk"

[base]
distribution = "debian"

[recipes]
include = ["hello"]

[disk]
size = "1GiB"
boot = ["uefi", "bios"]

[targets.ec2]
region = "us-east-1"
ec2-endpoint = "ENDPOINT"
ebs-endpoint = "ENDPOINT"
volume-type = "gp3"
"#;

/// A work folder holding images/tiny.toml, recipes/ (one recipe), out/tiny.raw and its manifest.
fn workspace(endpoint: &str, seed: u64) -> (tempfile::TempDir, Vec<u8>) {
    workspace_of(endpoint, seed, 14)
}

fn workspace_of(endpoint: &str, seed: u64, blocks: usize) -> (tempfile::TempDir, Vec<u8>) {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    std::fs::create_dir_all(root.join("images")).unwrap();
    write_recipe(root);
    std::fs::write(
        root.join("images/tiny.toml"),
        IMAGE.replace("ENDPOINT", endpoint),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("out")).unwrap();
    let disk = make_disk_of(&root.join("out/tiny.raw"), seed, blocks);
    let manifest = serde_json::json!({
        "image": "tiny", "description": "A synthetic disk", "suite": "bookworm",
        "architecture": "amd64", "boot": ["uefi", "bios"],
        "artifacts": [{"format": "raw", "file": "tiny.raw", "size": disk.len(), "sha256": hex(&Sha256::digest(&disk))}],
        "tools": []
    });
    std::fs::write(root.join("out/tiny.manifest.json"), manifest.to_string()).unwrap();
    (d, disk)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const KEYS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "AKIDPUBLISHTEST"),
    ("AWS_SECRET_ACCESS_KEY", "publish-test-secret-key"),
];

fn publish(root: &Path, extra: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let mut args = vec![
        "publish",
        "--target",
        "ec2",
        "images/tiny.toml",
        "--out",
        "out",
        "--json",
    ];
    args.extend_from_slice(extra);
    let mut e: Vec<(&str, &str)> = KEYS.to_vec();
    e.extend_from_slice(env);
    let out = biovm(root, &args, &e);
    assert!(
        out.status.success(),
        "biovm publish failed ({:?}):\n{}",
        out.status,
        text(&out.stderr)
    );
    result_of(&out.stdout)
}

/// Every block of the snapshot, read back from moto, equals the disk; blocks
/// not in the snapshot are zeros on the disk.
fn assert_snapshot_equals_disk(moto: u16, snapshot: &str, disk: &[u8]) {
    let listed = list_blocks(moto, snapshot);
    assert_eq!(listed, nonzero_blocks(disk), "blocks in the snapshot");
    for i in 0..disk.len().div_ceil(BLOCK) as u64 {
        let expected = block(disk, i);
        if listed.contains(&i) {
            assert!(
                get_block(moto, snapshot, i) == expected,
                "block {i} differs"
            );
        } else {
            assert!(expected.iter().all(|&b| b == 0), "block {i} missing");
        }
    }
}

fn linear(disk: &[u8]) -> String {
    let mut h = Sha256::new();
    for i in nonzero_blocks(disk) {
        h.update(Sha256::digest(block(disk, i)));
    }
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

#[test]
fn publishes_the_exact_blocks_registers_once_and_a_rerun_changes_nothing() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, Faults::default());
    let (dir, disk) = workspace(&proxy.url(), 7);
    let root = dir.path();

    let o = publish(root, &["--release", "2026.11"], &[]);
    assert_eq!(o["created"], true, "{o}");
    let snapshot = o["snapshot_id"].as_str().unwrap().to_string();
    let image_id = o["image_id"].as_str().unwrap().to_string();
    let sha = hex(&Sha256::digest(&disk));
    assert_eq!(o["sha256"], sha);
    let reqs = proxy.take();
    let calls: Vec<String> = reqs.iter().map(|r| r.call()).collect();

    // Exactly one snapshot, started with the tags, the volume size in GiB.
    let starts: Vec<_> = reqs
        .iter()
        .filter(|r| r.service() == "ebs" && r.path == "/snapshots")
        .collect();
    assert_eq!(starts.len(), 1, "{calls:?}");
    let start: serde_json::Value = serde_json::from_slice(&starts[0].body).unwrap();
    assert_eq!(start["VolumeSize"], 1);
    let tags = start["Tags"].as_array().unwrap();
    for (k, v) in [
        ("biovm:image", "tiny"),
        ("biovm:version", "2026.11"),
        ("biovm:sha256", sha.as_str()),
    ] {
        assert!(
            tags.contains(&serde_json::json!({"Key": k, "Value": v})),
            "{tags:?}"
        );
    }

    // One PutSnapshotBlock per non-zero block, never a zero block, each a
    // full 512 KiB block with its SHA-256.
    let puts: Vec<_> = reqs.iter().filter(|r| r.method == "PUT").collect();
    let mut put_idx: Vec<u64> = puts
        .iter()
        .map(|r| r.path.rsplit('/').next().unwrap().parse().unwrap())
        .collect();
    put_idx.sort();
    assert_eq!(put_idx, nonzero_blocks(&disk));
    for r in &puts {
        let i: u64 = r.path.rsplit('/').next().unwrap().parse().unwrap();
        assert_eq!(r.path, format!("/snapshots/{snapshot}/blocks/{i}"));
        assert_eq!(r.body.len(), BLOCK);
        assert!(r.body == block(&disk, i), "block {i} body");
        assert_eq!(r.headers["x-amz-data-length"], BLOCK.to_string());
        assert_eq!(r.headers["x-amz-checksum-algorithm"], "SHA256");
        assert_eq!(
            r.headers["x-amz-checksum"],
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&r.body))
        );
        assert_eq!(r.headers["content-type"], "application/octet-stream");
        assert_eq!(r.headers["x-amz-content-sha256"], "UNSIGNED-PAYLOAD");
        assert!(
            r.headers["authorization"].starts_with("AWS4-HMAC-SHA256 Credential=AKIDPUBLISHTEST/")
        );
    }

    // CompleteSnapshot: the count and the linear aggregate.
    let completes: Vec<_> = reqs
        .iter()
        .filter(|r| r.path.starts_with("/snapshots/completion/"))
        .collect();
    assert_eq!(completes.len(), 1);
    let c = completes[0];
    assert_eq!(c.path, format!("/snapshots/completion/{snapshot}"));
    assert_eq!(
        c.headers["x-amz-changedblockscount"],
        nonzero_blocks(&disk).len().to_string()
    );
    assert_eq!(c.headers["x-amz-checksum"], linear(&disk));
    assert_eq!(c.headers["x-amz-checksum-algorithm"], "SHA256");
    assert_eq!(c.headers["x-amz-checksum-aggregation-method"], "LINEAR");

    // RegisterImage with everything EC2 needs.
    let regs: Vec<_> = reqs
        .iter()
        .filter(|r| r.action().as_deref() == Some("RegisterImage"))
        .collect();
    assert_eq!(regs.len(), 1);
    let f = regs[0].form();
    for (k, v) in [
        ("Name", "biovm-tiny-2026.11"),
        ("Architecture", "x86_64"),
        ("VirtualizationType", "hvm"),
        ("RootDeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
        ("BlockDeviceMapping.1.Ebs.SnapshotId", snapshot.as_str()),
        ("BlockDeviceMapping.1.Ebs.VolumeType", "gp3"),
        ("BlockDeviceMapping.1.Ebs.VolumeSize", "1"),
        ("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true"),
        ("EnaSupport", "true"),
        ("BootMode", "uefi-preferred"),
        ("ImdsSupport", "v2.0"),
        ("TagSpecification.1.ResourceType", "image"),
    ] {
        assert_eq!(f.get(k).map(String::as_str), Some(v), "{k} in {f:?}");
    }
    // Tags on the image (and the snapshot) with CreateTags, which moto keeps.
    let tag_calls: Vec<_> = reqs
        .iter()
        .filter(|r| r.action().as_deref() == Some("CreateTags"))
        .collect();
    assert_eq!(tag_calls.len(), 1);
    let tf = tag_calls[0].form();
    assert_eq!(tf["ResourceId.1"], image_id);
    assert_eq!(tf["ResourceId.2"], snapshot);
    let described = ec2_call(
        moto.port,
        &format!("Action=DescribeImages&ImageId.1={image_id}"),
    );
    assert!(
        described.contains("<key>biovm:sha256</key><value>") && described.contains(&sha),
        "{described}"
    );

    // The data in the cloud is the disk.
    assert_snapshot_equals_disk(moto.port, &snapshot, &disk);

    // Publishing again finds the image by its tags and changes nothing.
    let o2 = publish(root, &["--release", "2026.11"], &[]);
    assert_eq!(o2["created"], false, "{o2}");
    assert_eq!(o2["image_id"], image_id.as_str());
    let reqs2 = proxy.take();
    let calls2: Vec<String> = reqs2.iter().map(|r| r.call()).collect();
    assert_eq!(calls2, ["ec2:DescribeImages"], "a rerun only looks");
    let f = reqs2[0].form();
    assert_eq!(f["Owner.1"], "self");
    let filters: BTreeSet<(String, String)> = (1..=2)
        .map(|i| {
            (
                f[&format!("Filter.{i}.Name")].clone(),
                f[&format!("Filter.{i}.Value.1")].clone(),
            )
        })
        .collect();
    assert!(
        filters.contains(&("tag:biovm:sha256".to_string(), sha.clone())),
        "{filters:?}"
    );
    assert!(filters.contains(&("tag:biovm:image".to_string(), "tiny".to_string())));

    // The raw disk given directly (as `biovm build` leaves it) is the same artifact.
    let out = biovm(
        root,
        &[
            "publish",
            "--target",
            "ec2",
            "out/tiny.raw",
            "--region",
            "us-east-1",
            "--ec2-endpoint",
            &proxy.url(),
            "--ebs-endpoint",
            &proxy.url(),
        ],
        &KEYS,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("already published as {image_id}")),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn injected_faults_are_retried_and_the_snapshot_still_equals_the_disk() {
    let moto = Moto::start();
    let proxy = Proxy::start(
        moto.port,
        Faults {
            rate: 0.1,
            seed: 20261126,
            stall: std::time::Duration::from_secs(5),
            ..Faults::default()
        },
    );
    // 40 MiB: about 60 requests, so about 6 faults.
    let (dir, disk) = workspace_of(&proxy.url(), 11, 80);
    let root = dir.path();
    let fast = [
        "--request-timeout",
        "1",
        "--retry-delay",
        "20",
        "--attempts",
        "12",
        "--jobs",
        "4",
    ];
    let o = publish(root, &fast, &[]);
    let snapshot = o["snapshot_id"].as_str().unwrap().to_string();
    let reqs = proxy.take();
    let faults: Vec<&str> = reqs.iter().filter_map(|r| r.fault).collect();
    assert!(
        faults.len() >= 5,
        "the proxy injected too few faults to mean anything: {faults:?}"
    );
    assert!(o["retries"].as_u64().unwrap() >= faults.len() as u64, "{o}");
    // No zero block ever went up, and the completion counted each block once.
    for r in reqs.iter().filter(|r| r.method == "PUT") {
        let i: u64 = r.path.rsplit('/').next().unwrap().parse().unwrap();
        assert!(nonzero_blocks(&disk).contains(&i), "zero block {i} sent");
    }
    let c: Vec<_> = reqs
        .iter()
        .filter(|r| r.path.starts_with("/snapshots/completion/") && r.ok())
        .collect();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].headers["x-amz-checksum"], linear(&disk));
    assert_snapshot_equals_disk(moto.port, &snapshot, &disk);

    // A second publish, still under faults, changes nothing.
    let o2 = publish(root, &fast, &[]);
    assert_eq!(o2["created"], false, "{o2}");
    assert_eq!(o2["image_id"], o["image_id"]);
    let reqs2 = proxy.take();
    assert!(
        reqs2
            .iter()
            .all(|r| r.action().as_deref() == Some("DescribeImages")),
        "{:?}",
        reqs2.iter().map(|r| r.call()).collect::<Vec<_>>()
    );
}

#[test]
fn rejected_credentials_and_missing_permissions_fail_at_once() {
    let moto = Moto::start();
    let proxy = Proxy::start(
        moto.port,
        Faults {
            reject_keys: vec![
                ("AKIDBADKEY".to_string(), "AuthFailure"),
                ("AKIDNOPERM".to_string(), "UnauthorizedOperation"),
            ],
            ..Faults::default()
        },
    );
    let (dir, _) = workspace(&proxy.url(), 3);
    let root = dir.path();
    let out = biovm(
        root,
        &["publish", "--target", "ec2", "images/tiny.toml"],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDBADKEY"),
            ("AWS_SECRET_ACCESS_KEY", "wrong-secret-value"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("refused the credentials (AuthFailure"),
        "{err}"
    );
    assert!(
        err.contains("environment variables AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        "{err}"
    );
    assert!(!err.contains("wrong-secret-value"), "{err}");
    assert_eq!(proxy.take().len(), 1, "no retry of a refused identity");

    let out = biovm(
        root,
        &["publish", "--target", "ec2", "images/tiny.toml"],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDNOPERM"),
            ("AWS_SECRET_ACCESS_KEY", "some-secret-value"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("permission denied (UnauthorizedOperation"),
        "{err}"
    );
    assert!(
        err.contains("AKIDNOPERM needs permission for ec2:DescribeImages"),
        "{err}"
    );
    assert_eq!(proxy.take().len(), 1);

    // No credentials anywhere: say where biovm looked.
    let out = biovm(
        root,
        &["publish", "--target", "ec2", "images/tiny.toml"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("no AWS credentials") && err.contains(".aws/credentials"),
        "{err}"
    );
}

#[test]
fn a_canary_secret_never_appears_in_any_output_or_file() {
    let moto = Moto::start();
    let proxy = Proxy::start(
        moto.port,
        Faults {
            rate: 0.15,
            seed: 99,
            stall: std::time::Duration::from_secs(5),
            ..Faults::default()
        },
    );
    let (dir, _) = workspace(&proxy.url(), 5);
    let root = dir.path();
    let secret = "CANARYsecretKEY0123456789abcdefCANARY";
    let token = "CANARYsessionTOKENzyxwvutsrqponCANARY";
    std::fs::create_dir_all(root.join(".aws")).unwrap();
    std::fs::write(
        root.join(".aws/credentials"),
        format!("[canary]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = {secret}\naws_session_token = {token}\n"),
    )
    .unwrap();
    std::fs::write(
        root.join(".aws/config"),
        "[profile canary]\nregion = us-east-1\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "-vv",
            "publish",
            "--target",
            "ec2",
            "images/tiny.toml",
            "--profile",
            "canary",
            "--request-timeout",
            "1",
            "--retry-delay",
            "10",
            "--attempts",
            "12",
        ];
        args.extend_from_slice(extra);
        biovm(
            root,
            &args,
            &[("BIOVM_LOG", "trace"), ("RUST_LOG", "trace")],
        )
    };
    let first = run(&[]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let second = run(&["--json"]);
    assert!(second.status.success(), "{}", text(&second.stderr));
    // A failing run too: a profile that does not exist, and its error.
    let mut outputs = vec![first, second];
    let bad = biovm(
        root,
        &[
            "-vv",
            "publish",
            "--target",
            "ec2",
            "images/tiny.toml",
            "--profile",
            "nosuch",
        ],
        &[("BIOVM_LOG", "trace")],
    );
    assert!(!bad.status.success());
    outputs.push(bad);
    let mut seen = 0;
    for o in &outputs {
        for stream in [&o.stdout, &o.stderr] {
            let t = text(stream);
            seen += t.len();
            assert!(
                !t.contains(secret) && !t.contains(token),
                "secret in output:\n{t}"
            );
            assert!(!t.contains("CANARY"), "part of a secret in output:\n{t}");
        }
    }
    assert!(
        seen > 1000,
        "trace logging printed almost nothing ({seen} bytes)"
    );
    assert!(text(&outputs[0].stderr).contains("credentials from profile `canary`"));
    for f in all_files(root) {
        if f.starts_with(root.join(".aws")) {
            continue;
        }
        let data = std::fs::read(&f).unwrap();
        let t = String::from_utf8_lossy(&data);
        assert!(
            !t.contains(secret) && !t.contains(token),
            "secret in {}",
            f.display()
        );
    }
    // The secrets were really used: the signed requests carried the token.
    let reqs = proxy.take();
    assert!(reqs
        .iter()
        .any(|r| r.headers.get("x-amz-security-token").map(String::as_str) == Some(token)));
}

#[test]
fn snapshot_failures_are_reported_and_an_interrupted_publish_resumes() {
    let moto = Moto::start();
    // The cloud fails the snapshot, with its own message.
    let failing = Proxy::start(
        moto.port,
        Faults {
            snapshot_status: Some(
                "<status>error</status><statusMessage>Internal error while copying blocks</statusMessage>".into(),
            ),
            ..Faults::default()
        },
    );
    let (dir, disk) = workspace(&failing.url(), 17);
    let root = dir.path();
    let out = biovm(
        root,
        &["publish", "--target", "ec2", "images/tiny.toml"],
        &KEYS,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("failed (error): Internal error while copying blocks"),
        "{err}"
    );

    // A snapshot that never completes: the wait is bounded and says how far it got.
    let slow = Proxy::start(
        moto.port,
        Faults {
            snapshot_status: Some("<status>pending</status><progress>40%</progress>".into()),
            ..Faults::default()
        },
    );
    let slow_url = slow.url();
    let endpoints = ["--ec2-endpoint", &slow_url, "--ebs-endpoint", &slow_url];
    let mut args = vec![
        "publish",
        "--target",
        "ec2",
        "images/tiny.toml",
        "--snapshot-wait",
        "1",
    ];
    args.extend_from_slice(&endpoints);
    let out = biovm(root, &args, &KEYS);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("is still `pending` (40% done) after 1 s"),
        "{err}"
    );

    // RegisterImage fails once: the next publish reuses the completed
    // snapshot (no second upload) and registers it. (A fresh moto: in this
    // one the snapshots above are complete, whatever the proxies said.)
    let moto = Moto::start();
    let flaky = Proxy::start(
        moto.port,
        Faults {
            fail_once: vec![("RegisterImage", "InvalidParameterValue")],
            ..Faults::default()
        },
    );
    let url = flaky.url();
    let endpoints = [
        "--ec2-endpoint",
        url.as_str(),
        "--ebs-endpoint",
        url.as_str(),
    ];
    let mut args = vec![
        "publish",
        "--target",
        "ec2",
        "out/tiny.raw",
        "--region",
        "us-east-1",
        "--json",
    ];
    args.extend_from_slice(&endpoints);
    let out = biovm(root, &args, &KEYS);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("InvalidParameterValue"),
        "{}",
        text(&out.stderr)
    );
    let first = flaky.take();
    let snapshot = first
        .iter()
        .find(|r| r.path.starts_with("/snapshots/completion/"))
        .map(|r| r.path.rsplit('/').next().unwrap().to_string())
        .expect("the first run completed its snapshot");
    let out = biovm(root, &args, &KEYS);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let o = result_of(&out.stdout);
    assert_eq!(o["created"], true);
    assert_eq!(o["snapshot_id"], snapshot.as_str());
    let second = flaky.take();
    assert!(
        second.iter().all(|r| r.service() != "ebs"),
        "uploaded again"
    );
    let reg = second
        .iter()
        .find(|r| r.action().as_deref() == Some("RegisterImage"))
        .unwrap();
    assert_eq!(reg.form()["BlockDeviceMapping.1.Ebs.SnapshotId"], snapshot);
    assert_snapshot_equals_disk(moto.port, &snapshot, &disk);
}

/// The benchmark (tests/bench-publish.sh runs it with `--nocapture`):
/// publishes `$BIOVM_BENCH_DISK` (a disk `biovm build` wrote, next to its
/// manifest; default: a synthetic 96 MiB disk with
/// 40 MiB of data in runs, as a filesystem lays files out) to moto through
/// the proxy and prints bytes uploaded against the disk's non-zero data and
/// the upload throughput. The byte target is asserted on the synthetic
/// disk at the snapshot's granularity; nothing is timed.
#[test]
#[ignore = "benchmark: tests/bench-publish.sh"]
fn bench_publish() {
    use std::io::Read;
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, Faults::default());
    let (dir, _) = workspace(&proxy.url(), 1);
    let root = dir.path();
    let given = std::env::var_os("BIOVM_BENCH_DISK").map(std::path::PathBuf::from);
    let disk = match &given {
        Some(p) => std::fs::canonicalize(p).expect("BIOVM_BENCH_DISK"),
        None => {
            let p = root.join("out/tiny.raw");
            let mut d = vec![0u8; 96 << 20];
            let mut x: u64 = 88172645463325252;
            let mut fill = |range: std::ops::Range<usize>, d: &mut Vec<u8>| {
                for b in &mut d[range] {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
            };
            // Runs of data of 1 to 9 MiB, starting at 4 KiB boundaries.
            let mut off = 1 << 20;
            for i in 0..8usize {
                let len = (1 + i % 9) << 20;
                fill(off + 4096 * i..off + 4096 * i + len, &mut d);
                off += len + (5 << 20);
            }
            std::fs::write(&p, &d).unwrap();
            p
        }
    };
    // Non-zero data: the 4 KiB blocks (the filesystem's block) holding any
    // byte, and the 512 KiB blocks (the snapshot's) holding any byte.
    let mut f = std::fs::File::open(&disk).unwrap();
    let size = f.metadata().unwrap().len();
    let mut buf = vec![0u8; BLOCK];
    let (mut nonzero, mut nonzero_blocks) = (0u64, 0u64);
    loop {
        let mut n = 0;
        while n < BLOCK {
            let r = f.read(&mut buf[n..]).unwrap();
            if r == 0 {
                break;
            }
            n += r;
        }
        if n == 0 {
            break;
        }
        for c in buf[..n].chunks(4096) {
            if c.iter().any(|&b| b != 0) {
                nonzero += c.len() as u64;
            }
        }
        if buf[..n].iter().any(|&b| b != 0) {
            nonzero_blocks += BLOCK as u64;
        }
    }
    let disk_s = disk.to_str().unwrap();
    let out = biovm(
        root,
        &[
            "publish",
            "--target",
            "ec2",
            disk_s,
            "--region",
            "us-east-1",
            "--ec2-endpoint",
            &proxy.url(),
            "--ebs-endpoint",
            &proxy.url(),
            "--json",
        ],
        &KEYS,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let o = result_of(&out.stdout);
    let u = &o["upload"];
    let block_bytes = u["block_bytes"].as_u64().unwrap();
    let sent = o["bytes_sent"].as_u64().unwrap();
    let secs = u["seconds"].as_f64().unwrap();
    let ratio = sent as f64 / nonzero as f64;
    let block_ratio = sent as f64 / nonzero_blocks as f64;
    println!(
        "disk                 {} ({} MiB)",
        disk.display(),
        size >> 20
    );
    println!(
        "non-zero data        {:.1} MiB (4 KiB blocks holding data)",
        nonzero as f64 / 1048576.0
    );
    println!(
        "blocks written       {} of {} ({} KiB each)",
        u["blocks_written"],
        u["blocks_total"],
        u["block_size"].as_u64().unwrap() >> 10
    );
    println!(
        "bytes uploaded       {:.1} MiB of block data, {:.1} MiB of request bodies",
        block_bytes as f64 / 1048576.0,
        sent as f64 / 1048576.0
    );
    println!("uploaded / non-zero  {ratio:.3} of the 4 KiB-block data (target: at most 1.05)");
    println!("uploaded / non-zero  {block_ratio:.3} of the 512 KiB-block data (what EBS can take)");
    println!(
        "upload               {secs:.1} s, {:.1} MiB/s to moto on 127.0.0.1",
        block_bytes as f64 / 1048576.0 / secs
    );
    println!(
        "whole publish        {:.1} s, {} requests",
        o["seconds"].as_f64().unwrap(),
        o["requests"]
    );
    // Nothing but the non-zero snapshot blocks, each once.
    assert!(
        block_ratio <= 1.05,
        "uploaded {sent} bytes for {nonzero_blocks} bytes of non-zero blocks"
    );
}

#[test]
fn a_data_disk_becomes_a_second_snapshot_that_the_ami_maps() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, Faults::default());
    let (dir, disk) = workspace(&proxy.url(), 11);
    let root = dir.path();
    // The manifest names a data disk beside the OS disk.
    let data = make_disk_of(&root.join("out/tiny.data.raw"), 12, 14);
    let data_sha = hex(&Sha256::digest(&data));
    let mpath = root.join("out/tiny.manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    m["data_disk"] = serde_json::json!({
        "label": "biovm-data",
        "files": [{"format": "raw", "file": "tiny.data.raw", "size": data.len(), "sha256": data_sha}],
        "tree_sha256": "0".repeat(64),
    });
    std::fs::write(&mpath, m.to_string()).unwrap();

    let o = publish(root, &["--release", "2026.12"], &[]);
    assert_eq!(o["created"], true, "{o}");
    let os = o["snapshot_id"].as_str().unwrap().to_string();
    let data_snap = o["data_snapshot_id"]
        .as_str()
        .expect("a data snapshot")
        .to_string();
    assert_ne!(os, data_snap);
    assert_snapshot_equals_disk(moto.port, &os, &disk);
    assert_snapshot_equals_disk(moto.port, &data_snap, &data);

    let reqs = proxy.take();
    // The data snapshot carries its own digest and says what it is.
    let starts: Vec<serde_json::Value> = reqs
        .iter()
        .filter(|r| r.service() == "ebs" && r.path == "/snapshots")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(starts.len(), 2);
    let tagged = |v: &serde_json::Value, k: &str, val: &str| {
        v["Tags"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"Key": k, "Value": val}))
    };
    assert!(
        starts
            .iter()
            .any(|s| tagged(s, "biovm:sha256", &data_sha) && tagged(s, "biovm:role", "data-disk")),
        "{starts:?}"
    );
    // RegisterImage maps it to /dev/sdf, deleted with the instance.
    let reg = reqs
        .iter()
        .find(|r| r.action().as_deref() == Some("RegisterImage"))
        .expect("RegisterImage")
        .form();
    assert_eq!(reg["BlockDeviceMapping.1.Ebs.SnapshotId"], os);
    assert_eq!(reg["BlockDeviceMapping.2.DeviceName"], "/dev/sdf");
    assert_eq!(reg["BlockDeviceMapping.2.Ebs.SnapshotId"], data_snap);
    assert_eq!(reg["BlockDeviceMapping.2.Ebs.DeleteOnTermination"], "true");

    // A data disk that is not what the build recorded is refused.
    std::fs::write(root.join("out/tiny.data.raw"), b"changed").unwrap();
    let out = biovm(
        root,
        &[
            "publish",
            "--target",
            "ec2",
            "images/tiny.toml",
            "--out",
            "out",
            "--release",
            "2026.12-b",
        ],
        &KEYS,
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("tiny.data.raw") && err.contains(&data_sha),
        "{err}"
    );
}
