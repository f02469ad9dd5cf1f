//! `biovm publish --target eucalyptus` against moto (EC2 and S3, path
//! style) through the recording proxy: the bundle goes to the bucket, an
//! independent unbundler (tests/fixtures/publish/unbundle.py: Python's
//! standard library and `cryptography`) gets the raw disk back byte for
//! byte from what is in the bucket, RegisterImage names its location, and a
//! rerun changes nothing.

mod common;
mod publish_common;

use std::path::Path;

use publish_common::*;

fn openssl_identity(dir: &Path, name: &str) {
    biovm::cmd::Cmd::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        ])
        .arg(format!("/CN=biovm-test-{name}"))
        .arg("-keyout")
        .arg(dir.join(format!("{name}-key.pem")))
        .arg("-out")
        .arg(dir.join(format!("{name}-cert.pem")))
        .run()
        .expect("openssl req");
}

const IMAGE: &str = r#"name = "tiny"

[base]
distribution = "debian"

[recipes]
include = ["hello"]

[disk]
size = "1GiB"

[targets.eucalyptus]
region = "lab-cloud-1"
ec2-endpoint = "ENDPOINT/"
s3-endpoint = "ENDPOINT"
bucket = "biovm-images"
cloud-cert = "../keys/cloud-cert.pem"
"#;

#[test]
fn the_bundle_round_trips_registers_and_a_rerun_changes_nothing() {
    let moto = Moto::start();
    let proxy = Proxy::start(
        moto.port,
        Faults {
            region_alias: Some(("lab-cloud-1".to_string(), "us-east-1".to_string())),
            ..Faults::default()
        },
    );
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    write_recipe(root);
    std::fs::create_dir_all(root.join("images")).unwrap();
    std::fs::create_dir_all(root.join("keys")).unwrap();
    std::fs::create_dir_all(root.join("out")).unwrap();
    openssl_identity(&root.join("keys"), "cloud");
    openssl_identity(&root.join("keys"), "user");
    std::fs::write(
        root.join("images/tiny.toml"),
        IMAGE.replace("ENDPOINT", &proxy.url()),
    )
    .unwrap();
    // 22 MiB, two thirds random: one full 10 MiB part and a second one.
    let disk = make_disk_of(&root.join("out/tiny.raw"), 21, 44);
    let user_cert = root.join("keys/user-cert.pem");
    let user_key = root.join("keys/user-key.pem");
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIDEUCA"),
        ("AWS_SECRET_ACCESS_KEY", "euca-secret-key-value"),
        ("EC2_CERT", user_cert.to_str().unwrap()),
        ("EC2_PRIVATE_KEY", user_key.to_str().unwrap()),
        ("EC2_USER_ID", "000123456789"),
    ];
    let args = [
        "publish",
        "--target",
        "eucalyptus",
        "images/tiny.toml",
        "--release",
        "r1",
        "--json",
    ];

    // The bucket does not exist yet: a clear failure, nothing registered.
    let out = biovm(root, &args, &env);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("bucket `biovm-images` does not exist at"),
        "{err}"
    );
    assert!(proxy
        .take()
        .iter()
        .all(|r| r.action().as_deref() != Some("RegisterImage")));

    let auth = fake_auth("s3");
    let (status, _, body) = raw_request(
        moto.port,
        "PUT",
        "/biovm-images",
        &[("Authorization", &auth)],
        b"",
    )
    .unwrap();
    assert_eq!(status, 200, "{}", text(&body));

    let out = biovm(root, &args, &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let o = result_of(&out.stdout);
    assert_eq!(o["created"], true);
    assert_eq!(o["region"], "lab-cloud-1");
    let location = "biovm-images/biovm-tiny-r1/tiny.manifest.xml";
    assert_eq!(o["image_location"], location);
    let image_id = o["image_id"].as_str().unwrap().to_string();

    let reqs = proxy.take();
    // Signed for the region of the user's choice, per service.
    for r in &reqs {
        let a = &r.headers["authorization"];
        assert!(
            a.contains("/lab-cloud-1/") && (a.contains("/s3/") || a.contains("/ec2/")),
            "{a}"
        );
    }
    // Path-style uploads: parts, then the manifest last.
    let puts: Vec<&Recorded> = reqs.iter().filter(|r| r.method == "PUT").collect();
    let paths: Vec<&str> = puts.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths.last(),
        Some(&"/biovm-images/biovm-tiny-r1/tiny.manifest.xml"),
        "{paths:?}"
    );
    let mut parts: Vec<&str> = paths[..paths.len() - 1].to_vec();
    parts.sort();
    assert_eq!(
        parts,
        [
            "/biovm-images/biovm-tiny-r1/tiny.part.00",
            "/biovm-images/biovm-tiny-r1/tiny.part.01",
        ]
    );
    for r in &puts {
        assert!(r.body.len() <= 10 << 20);
        let sha = sha2::Sha256::digest(&r.body);
        assert_eq!(
            r.headers["x-amz-content-sha256"],
            hex(&sha),
            "S3 payloads are signed"
        );
    }
    let reg: Vec<&Recorded> = reqs
        .iter()
        .filter(|r| r.action().as_deref() == Some("RegisterImage"))
        .collect();
    assert_eq!(reg.len(), 1);
    let f = reg[0].form();
    assert_eq!(f["ImageLocation"], location);
    assert_eq!(f["Name"], "biovm-tiny-r1");
    assert_eq!(f["Architecture"], "x86_64");
    assert_eq!(f["VirtualizationType"], "hvm");
    assert!(reqs.iter().any(
        |r| r.action().as_deref() == Some("CreateTags") && r.form()["ResourceId.1"] == image_id
    ));

    // The bundle in the bucket unbundles to the disk, byte for byte.
    let restored = root.join("restored.raw");
    let py = biovm::cmd::Cmd::new(venv_python())
        .arg(repo().join("tests/fixtures/publish/unbundle.py"))
        .arg(moto.url())
        .args(["biovm-images", "biovm-tiny-r1/tiny.manifest.xml"])
        .arg(&user_key)
        .arg(&user_cert)
        .arg(root.join("keys/cloud-key.pem"))
        .arg(&restored)
        .output()
        .expect("unbundle.py");
    let summary: serde_json::Value = serde_json::from_str(&py).unwrap();
    assert_eq!(summary["user"], "000123456789");
    assert_eq!(summary["type"], "machine");
    assert_eq!(summary["architecture"], "x86_64");
    assert_eq!(summary["name"], "tiny.raw");
    assert_eq!(summary["parts"], 2);
    assert_eq!(summary["version"], "2007-10-10");
    assert!(
        std::fs::read(&restored).unwrap() == disk,
        "the unbundled disk differs"
    );
    // The secret key is in no output and no file (the bundle included).
    for t in [text(&out.stdout), text(&out.stderr), py.clone()] {
        assert!(!t.contains("euca-secret-key-value"), "{t}");
    }
    for f in all_files(root) {
        let data = std::fs::read(&f).unwrap();
        assert!(
            !data.windows(21).any(|w| w == b"euca-secret-key-value"),
            "secret in {}",
            f.display()
        );
    }
    // The bundle also stays next to the disk, complete, under its final name only.
    assert!(root.join("out/tiny.bundle/tiny.manifest.xml").is_file());
    assert!(std::fs::read_dir(root.join("out")).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));

    // Again: found by its tags, nothing uploaded or registered.
    let out = biovm(root, &args, &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let o2 = result_of(&out.stdout);
    assert_eq!(o2["created"], false);
    assert_eq!(o2["image_id"], image_id.as_str());
    let calls: Vec<String> = proxy.take().iter().map(|r| r.call()).collect();
    assert_eq!(calls, ["ec2:DescribeImages"]);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

use sha2::Digest;
