//! `biovm launch --target ec2` against moto's server mode on 127.0.0.1,
//! through the recording proxy of the publish tests: the AMI `biovm
//! publish` made is found by its tags (the local build's, else the newest,
//! or a `--release`), RunInstances carries exactly what was asked (type,
//! key pair or cloud-init user data with the public key, security group,
//! subnet, tags), the instance runs in moto, and failures say what failed.

mod common;
mod publish_common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use base64::Engine;
use publish_common::*;
use sha2::{Digest, Sha256};

const IMAGE: &str = r#"name = "tiny"
description = "A synthetic disk"

[base]
distribution = "debian"

[recipes]
include = ["hello"]

[system.user]
name = "researcher"

[disk]
size = "1GiB"
boot = ["uefi", "bios"]

[targets.ec2]
region = "us-east-1"
ec2-endpoint = "ENDPOINT"
ebs-endpoint = "ENDPOINT"
instance-type = "t3.micro"
"#;

const SECRET: &str = "launch-canary-secret-5c1e7a90d2";
const KEYS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "AKIDLAUNCHTEST"),
    ("AWS_SECRET_ACCESS_KEY", SECRET),
];

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// images/tiny.toml, recipes/, out/tiny.raw (a synthetic disk) and its
/// manifest, and key.pub (an OpenSSH public key).
fn workspace(endpoint: &str, seed: u64) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    std::fs::create_dir_all(root.join("images")).unwrap();
    write_recipe(root);
    std::fs::write(
        root.join("images/tiny.toml"),
        IMAGE.replace("ENDPOINT", endpoint),
    )
    .unwrap();
    build_disk(root, seed);
    std::fs::write(root.join("key.pub"), format!("{}\n", public_key())).unwrap();
    d
}

/// A new out/tiny.raw and manifest, as a new build would leave them.
fn build_disk(root: &Path, seed: u64) -> String {
    std::fs::create_dir_all(root.join("out")).unwrap();
    let disk = make_disk(&root.join("out/tiny.raw"), seed);
    let sha = hex(&Sha256::digest(&disk));
    let manifest = serde_json::json!({
        "image": "tiny", "description": "A synthetic disk", "suite": "bookworm",
        "architecture": "amd64", "boot": ["uefi", "bios"],
        "artifacts": [{"format": "raw", "file": "tiny.raw", "size": disk.len(), "sha256": sha}],
        "tools": []
    });
    std::fs::write(root.join("out/tiny.manifest.json"), manifest.to_string()).unwrap();
    sha
}

/// An ed25519 public key in OpenSSH's format (its blob is well-formed;
/// the key itself is made up).
fn public_key() -> String {
    let mut blob = Vec::new();
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend_from_slice(&[7u8; 32]);
    format!(
        "ssh-ed25519 {} launch-test@biovm",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

fn run(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut e: Vec<(&str, &str)> = KEYS.to_vec();
    e.extend_from_slice(env);
    biovm(root, args, &e)
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "biovm failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
}

fn publish(root: &Path, release: &str) -> String {
    let o = run(
        root,
        &[
            "--json",
            "publish",
            "--target",
            "ec2",
            "images/tiny.toml",
            "--release",
            release,
        ],
        &[],
    );
    ok(&o);
    result_of(&o.stdout)["image_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The text of the first `<name>` element in an XML answer.
fn xml_field(xml: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{name}> in {xml}"))
        + open.len();
    let end = start + xml[start..].find(&format!("</{name}>")).unwrap();
    xml[start..end].to_string()
}

/// Every stage that started finished, once, in order; nothing after the
/// last event.
fn assert_paired(events: &[serde_json::Value]) {
    let mut open: Vec<String> = Vec::new();
    for e in events {
        let stage = format!("{}/{}", e["command"], e["stage"]);
        match e["event"].as_str().unwrap() {
            "stage-started" => open.push(stage),
            "stage-finished" => {
                let i = open
                    .iter()
                    .position(|s| *s == stage)
                    .unwrap_or_else(|| panic!("{stage} finished without starting: {events:?}"));
                open.remove(i);
                assert!(e["secs"].as_f64().unwrap() >= 0.0);
                assert!(e["ok"].is_boolean());
            }
            "progress" => assert!(open.contains(&stage), "progress outside its stage: {e}"),
            _ => {}
        }
    }
    assert!(open.is_empty(), "never finished: {open:?}");
}

fn requests_of<'a>(reqs: &'a [Recorded], action: &str) -> Vec<&'a Recorded> {
    reqs.iter()
        .filter(|r| r.action().as_deref() == Some(action))
        .collect()
}

/// The tags of TagSpecification `n` of a RunInstances request.
fn tag_spec(form: &std::collections::BTreeMap<String, String>, n: u32) -> Vec<(String, String)> {
    (1..)
        .map_while(|i| {
            let k = form.get(&format!("TagSpecification.{n}.Tag.{i}.Key"))?;
            let v = form.get(&format!("TagSpecification.{n}.Tag.{i}.Value"))?;
            Some((k.clone(), v.clone()))
        })
        .collect()
}

#[test]
fn launches_a_published_image_by_file_and_by_ami_id() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, Faults::default());
    let dir = workspace(&proxy.url(), 11);
    let root = dir.path();
    let ami = publish(root, "r1");
    proxy.take();
    let sg = xml_field(
        &ec2_call(
            moto.port,
            "Action=CreateSecurityGroup&GroupName=biovm-launch&GroupDescription=launch%20test",
        ),
        "groupId",
    );
    let subnet = xml_field(&ec2_call(moto.port, "Action=DescribeSubnets"), "subnetId");

    // By image file, a public key as user data, JSON events.
    let o = run(
        root,
        &[
            "--json",
            "launch",
            "--target",
            "ec2",
            "images/tiny.toml",
            "--ssh-key",
            "key.pub",
            "--security-group",
            &sg,
            "--subnet",
            &subnet,
            "--name",
            "lab-vm",
        ],
        &[],
    );
    ok(&o);
    let ev = events(&o.stdout);
    assert_paired(&ev);
    let stages: Vec<&str> = ev
        .iter()
        .filter(|e| e["event"] == "stage-finished")
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["find-ami", "run-instances", "wait"]);
    assert!(ev.iter().all(|e| e["ok"] != false), "{ev:?}");
    let r = result_of(&o.stdout);
    let id = r["instance"]["instance_id"].as_str().unwrap().to_string();
    assert_eq!(r["image_id"], ami.as_str());
    assert_eq!(r["image"], "tiny");
    assert_eq!(r["release"], "r1");
    assert_eq!(r["instance"]["state"], "running");
    assert_eq!(r["instance"]["instance_type"], "t3.micro");
    assert_eq!(r["user"], "researcher");
    let host = r["host"].as_str().unwrap();
    assert_eq!(r["instance"]["public_ip"], host);
    assert_eq!(r["ssh"], format!("ssh -i key researcher@{host}"));

    // Exactly what biovm asked for.
    let reqs = proxy.take();
    let calls: Vec<String> = reqs.iter().map(|r| r.call()).collect();
    assert_eq!(
        calls,
        [
            "ec2:DescribeImages",
            "ec2:RunInstances",
            "ec2:DescribeInstances"
        ]
    );
    let run_req = requests_of(&reqs, "RunInstances")[0];
    assert!(
        run_req.headers["authorization"].starts_with("AWS4-HMAC-SHA256 Credential=AKIDLAUNCHTEST/")
    );
    assert!(run_req.headers["authorization"].contains("/us-east-1/ec2/aws4_request"));
    let f = run_req.form();
    assert_eq!(f["ImageId"], ami);
    assert_eq!(f["InstanceType"], "t3.micro", "from [targets.ec2]");
    assert_eq!(f["MinCount"], "1");
    assert_eq!(f["MaxCount"], "1");
    assert_eq!(f["SecurityGroupId.1"], sg);
    assert_eq!(f["SubnetId"], subnet);
    assert!(!f.contains_key("KeyName"));
    assert_eq!(f["ClientToken"].len(), 32);
    let user_data = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(&f["UserData"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        user_data,
        format!(
            "#cloud-config\nusers:\n  - name: \"researcher\"\n    ssh_authorized_keys:\n      - \"{}\"\n",
            public_key()
        )
    );
    let want_tags = vec![
        ("Name".to_string(), "lab-vm".to_string()),
        ("biovm:image".to_string(), "tiny".to_string()),
        ("biovm:ami".to_string(), ami.clone()),
    ];
    assert_eq!(f["TagSpecification.1.ResourceType"], "instance");
    assert_eq!(tag_spec(&f, 1), want_tags);
    assert_eq!(f["TagSpecification.2.ResourceType"], "volume");
    assert_eq!(tag_spec(&f, 2), want_tags);

    // The instance, as moto has it.
    let xml = ec2_call(
        moto.port,
        &format!("Action=DescribeInstances&InstanceId.1={id}"),
    );
    assert_eq!(xml_field(&xml, "name"), "running");
    assert_eq!(xml_field(&xml, "imageId"), ami);
    assert_eq!(xml_field(&xml, "instanceType"), "t3.micro");
    assert_eq!(xml_field(&xml, "subnetId"), subnet);
    assert!(xml.contains(&format!("<groupId>{sg}</groupId>")), "{xml}");
    for (k, v) in &want_tags {
        assert!(
            xml.contains(&format!("<key>{k}</key><value>{v}</value>")),
            "tag {k}: {xml}"
        );
    }
    let attr = ec2_call(
        moto.port,
        &format!("Action=DescribeInstanceAttribute&InstanceId={id}&Attribute=userData"),
    );
    let stored = base64::engine::general_purpose::STANDARD
        .decode(xml_field(&attr, "value"))
        .unwrap();
    assert_eq!(text(&stored), user_data);

    // By AMI ID, with a key pair, as text (stderr is no terminal: plain lines).
    ec2_call(moto.port, "Action=CreateKeyPair&KeyName=lab");
    let url = proxy.url();
    let o = run(
        root,
        &[
            "launch",
            "--target",
            "ec2",
            &ami,
            "--region",
            "us-east-1",
            "--ec2-endpoint",
            &url,
            "--key-name",
            "lab",
            "--instance-type",
            "m5.large",
        ],
        &[],
    );
    ok(&o);
    let out = text(&o.stdout);
    let err = text(&o.stderr);
    assert!(
        out.contains(" (m5.large) is running in us-east-1, launched from "),
        "{out}"
    );
    let ssh = out
        .lines()
        .find_map(|l| l.strip_prefix("connect: "))
        .unwrap_or_else(|| panic!("no connect line: {out}"));
    assert!(
        regex::Regex::new(r"^ssh -i lab\.pem biovm@\d+\.\d+\.\d+\.\d+$")
            .unwrap()
            .is_match(ssh),
        "{ssh}"
    );
    for line in [
        "[launch] find-ami: started",
        "[launch] run-instances: started",
        "[launch] wait: started",
    ] {
        assert!(err.lines().any(|l| l == line), "{line} in:\n{err}");
    }
    assert!(
        regex::Regex::new(r"(?m)^\[launch\] wait: finished in \d+\.\d s$")
            .unwrap()
            .is_match(&err),
        "{err}"
    );
    let reqs = proxy.take();
    let f = requests_of(&reqs, "RunInstances")[0].form();
    assert_eq!(f["KeyName"], "lab");
    assert_eq!(f["InstanceType"], "m5.large");
    assert!(!f.contains_key("UserData"));
    assert!(!f.contains_key("SubnetId"));
    assert_eq!(
        tag_spec(&f, 1),
        vec![
            ("Name".to_string(), "biovm-tiny".to_string()),
            ("biovm:image".to_string(), "tiny".to_string()),
            ("biovm:ami".to_string(), ami.clone()),
        ],
        "the image name comes from the AMI's tags"
    );
    let key = xml_field(
        &ec2_call(
            moto.port,
            "Action=DescribeInstances&Filter.1.Name=key-name&Filter.1.Value.1=lab",
        ),
        "keyName",
    );
    assert_eq!(key, "lab");
}

#[test]
fn picks_the_local_build_else_the_newest_or_the_release_asked_for() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, Faults::default());
    let dir = workspace(&proxy.url(), 21);
    let root = dir.path();
    let first_manifest = std::fs::read(root.join("out/tiny.manifest.json")).unwrap();
    let ami1 = publish(root, "r1");
    // AMI creation times have whole seconds.
    std::thread::sleep(Duration::from_millis(1100));
    build_disk(root, 22);
    let ami2 = publish(root, "r2");
    assert_ne!(ami1, ami2);
    let launched = |extra: &[&str]| {
        let mut args = vec!["--json", "launch", "--target", "ec2", "images/tiny.toml"];
        args.extend_from_slice(extra);
        let o = run(root, &args, &[]);
        ok(&o);
        result_of(&o.stdout)["image_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(launched(&[]), ami2, "the local build (also the newest)");
    assert_eq!(launched(&["--release", "r1"]), ami1, "--release");
    std::fs::write(root.join("out/tiny.manifest.json"), &first_manifest).unwrap();
    assert_eq!(launched(&[]), ami1, "the local build, though older");
    assert_eq!(
        launched(&["--out", "elsewhere"]),
        ami2,
        "no build: the newest"
    );
    let o = run(
        root,
        &[
            "launch",
            "--target",
            "ec2",
            "images/tiny.toml",
            "--release",
            "r9",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("no AMI of image `tiny`, release r9, in region us-east-1"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn unknown_amis_unpublished_images_and_bad_credentials_fail_clearly() {
    let moto = Moto::start();
    let proxy = Proxy::start(
        moto.port,
        Faults {
            reject_keys: vec![("AKIDREVOKED".to_string(), "AuthFailure")],
            ..Faults::default()
        },
    );
    let dir = workspace(&proxy.url(), 31);
    let root = dir.path();
    let url = proxy.url();
    let trace = [("BIOVM_LOG", "trace")];
    let mut outputs = Vec::new();

    // An AMI the region does not have.
    let o = run(
        root,
        &[
            "-vv",
            "launch",
            "--target",
            "ec2",
            "ami-0123456789abcdef0",
            "--region",
            "us-east-1",
            "--ec2-endpoint",
            &url,
        ],
        &trace,
    );
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains(
            "error: AMI ami-0123456789abcdef0 not found in region us-east-1 (EC2 endpoint "
        ),
        "{err}"
    );
    assert!(err.contains("InvalidAMIID.NotFound"), "{err}");
    outputs.push(o);

    // An image never published: the JSON stream ends with an error event.
    let o = run(
        root,
        &[
            "--json",
            "-vv",
            "launch",
            "--target",
            "ec2",
            "images/tiny.toml",
        ],
        &trace,
    );
    assert_eq!(o.status.code(), Some(1));
    let ev = events(&o.stdout);
    assert_paired(&ev);
    let last = ev.last().unwrap();
    assert_eq!(last["event"], "error");
    assert_eq!(last["command"], "launch");
    let msg = last["message"].as_str().unwrap();
    assert!(
        msg.contains("no AMI of image `tiny` in region us-east-1"),
        "{msg}"
    );
    assert!(
        msg.ends_with("publish it first: biovm publish --target ec2 images/tiny.toml"),
        "{msg}"
    );
    let failed: Vec<_> = ev
        .iter()
        .filter(|e| e["event"] == "stage-finished" && e["ok"] == false)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["stage"], "find-ami");
    assert!(text(&o.stderr).contains("error: no AMI of image `tiny`"));
    outputs.push(o);

    // Refused credentials: named, and nothing launched.
    let o = biovm(
        root,
        &["-vv", "launch", "--target", "ec2", "images/tiny.toml"],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDREVOKED"),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("BIOVM_LOG", "trace"),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("the cloud refused the credentials (AuthFailure"),
        "{err}"
    );
    assert!(
        err.contains("they came from environment variables AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    outputs.push(o);

    // A private key where the public one belongs: refused before any request.
    let private = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----\n";
    std::fs::write(root.join("id_ed25519"), private).unwrap();
    let before = proxy.take().len();
    let o = run(
        root,
        &[
            "launch",
            "--target",
            "ec2",
            "images/tiny.toml",
            "--ssh-key",
            "id_ed25519",
        ],
        &trace,
    );
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("id_ed25519 is a private key: pass the public one"),
        "{err}"
    );
    assert!(
        !err.contains("b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"),
        "{err}"
    );
    assert!(proxy.take().is_empty(), "requests after {before}");
    outputs.push(o);

    // A bad instance type never reaches the cloud.
    let o = run(
        root,
        &[
            "launch",
            "--target",
            "ec2",
            "images/tiny.toml",
            "--instance-type",
            "huge",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("--instance-type: invalid instance type `huge`"),
        "{}",
        text(&o.stderr)
    );
    outputs.push(o);

    let all = proxy.take();
    assert!(
        all.iter()
            .all(|r| r.action().as_deref() != Some("RunInstances")),
        "an instance was started"
    );
    // The secret key is in no output, at trace verbosity.
    for o in &outputs {
        for stream in [&o.stdout, &o.stderr] {
            assert!(!text(stream).contains(SECRET), "{}", text(stream));
        }
    }
}

#[test]
fn an_instance_that_stops_or_never_runs_is_reported_with_its_reason() {
    let moto = Moto::start();
    let seed_proxy = Proxy::start(moto.port, Faults::default());
    let dir = workspace(&seed_proxy.url(), 41);
    let root = dir.path();
    let ami = publish(root, "r1");

    let launch = |proxy: &Proxy, extra: &[&str]| {
        let url = proxy.url();
        let mut args = vec![
            "--json",
            "launch",
            "--target",
            "ec2",
            ami.as_str(),
            "--region",
            "us-east-1",
            "--ec2-endpoint",
            url.as_str(),
        ];
        args.extend_from_slice(extra);
        run(root, &args, &[])
    };

    // The cloud terminates it at once, saying why.
    let terminating = Proxy::start(
        moto.port,
        Faults {
            rewrite: vec![
                (
                    "DescribeInstances",
                    "<name>running</name>".to_string(),
                    "<name>terminated</name>".to_string(),
                ),
                (
                    "DescribeInstances",
                    "<stateReason><code/><message/></stateReason>".to_string(),
                    "<stateReason><code>Server.InternalError</code><message>Server.InternalError: Internal error on launch</message></stateReason>".to_string(),
                ),
            ],
            ..Faults::default()
        },
    );
    let o = launch(&terminating, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        regex::Regex::new(r"error: instance i-[0-9a-f]+ is `terminated` instead of running: Server\.InternalError: Server\.InternalError: Internal error on launch")
            .unwrap()
            .is_match(&err),
        "{err}"
    );
    let ev = events(&o.stdout);
    assert_paired(&ev);
    let wait = ev
        .iter()
        .find(|e| e["event"] == "stage-finished" && e["stage"] == "wait")
        .unwrap();
    assert_eq!(wait["ok"], false);
    assert!(ev
        .iter()
        .any(|e| e["event"] == "message"
            && e["message"].as_str().unwrap().ends_with(" is terminated")));
    assert_eq!(ev.last().unwrap()["event"], "error");

    // It never leaves `pending`: the bounded wait ends, naming the state.
    let stuck = Proxy::start(
        moto.port,
        Faults {
            rewrite: vec![(
                "DescribeInstances",
                "<name>running</name>".to_string(),
                "<name>pending</name>".to_string(),
            )],
            ..Faults::default()
        },
    );
    let t = Instant::now();
    let o = launch(&stuck, &["--wait-timeout", "3"]);
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        regex::Regex::new(
            r"error: instance i-[0-9a-f]+ is still `pending` after 3 s; raise --wait-timeout"
        )
        .unwrap()
        .is_match(&err),
        "{err}"
    );
    assert!(secs < 30.0, "the wait took {secs:.1} s");
    let polls = stuck
        .take()
        .iter()
        .filter(|r| r.action().as_deref() == Some("DescribeInstances"))
        .count();
    assert!(polls >= 2, "polled {polls} times");
}

/// An image with a workbench: `--public` adds public mode to the user
/// data; the instance's console is read for its token (moto's console
/// never shows one, so the output says how to read it later), and the
/// output gives the SSH tunnel, the address to open and the security
/// group rule for HTTPS.
#[test]
fn a_workbench_image_says_how_to_reach_it_by_tunnel_and_in_public_mode() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, Faults::default());
    let dir = workspace(&proxy.url(), 31);
    let root = dir.path();
    std::fs::create_dir_all(root.join("recipes/workbench")).unwrap();
    std::fs::copy(
        common::repo().join("recipes/workbench/jupyterlab.toml"),
        root.join("recipes/workbench/jupyterlab.toml"),
    )
    .unwrap();
    let image = root.join("images/tiny.toml");
    let text0 = std::fs::read_to_string(&image).unwrap();
    std::fs::write(&image, format!("{text0}\n[workbench]\nport = 8888\n")).unwrap();
    publish(root, "r1");
    let sg = xml_field(
        &ec2_call(
            moto.port,
            "Action=CreateSecurityGroup&GroupName=biovm-wb&GroupDescription=workbench",
        ),
        "groupId",
    );
    proxy.take();
    let o = run(
        root,
        &[
            "--json",
            "launch",
            "--target",
            "ec2",
            "images/tiny.toml",
            "--ssh-key",
            "key.pub",
            "--security-group",
            &sg,
            "--public",
            "--workbench-wait",
            "2",
        ],
        &[],
    );
    ok(&o);
    let r = result_of(&o.stdout);
    let host = r["host"].as_str().unwrap();
    let id = r["instance"]["instance_id"].as_str().unwrap();
    let w = &r["workbench"];
    assert_eq!(w["token"], serde_json::Value::Null, "{w}");
    assert_eq!(
        w["tunnel"],
        format!("ssh -N -L 8888:127.0.0.1:8888 -i key researcher@{host}")
    );
    assert_eq!(w["url"], "http://127.0.0.1:8888/?token=TOKEN");
    assert_eq!(w["public_url"], format!("https://{host}/?token=TOKEN"));
    assert_eq!(
        w["token_from"],
        format!("aws ec2 get-console-output --instance-id {id} --region us-east-1 --latest --output text | grep biovm-workbench:")
    );
    assert!(
        w["firewall"]
            .as_str()
            .unwrap()
            .contains(&format!("--group-id {sg} --protocol tcp --port 443")),
        "{w}"
    );
    let reqs = proxy.take();
    assert!(
        !requests_of(&reqs, "GetConsoleOutput").is_empty(),
        "the console was read"
    );
    let f = requests_of(&reqs, "RunInstances")[0].form();
    let user_data = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(&f["UserData"])
            .unwrap(),
    )
    .unwrap();
    assert!(
        user_data.ends_with(
            "write_files:\n  - path: /etc/biovm/workbench.conf\n    content: \"public=true\\n\"\n"
        ),
        "{user_data}"
    );
    assert!(user_data.contains("ssh_authorized_keys"), "{user_data}");

    // Without a workbench, --public is refused.
    std::fs::write(&image, text0).unwrap();
    let o = run(
        root,
        &["launch", "--target", "ec2", "images/tiny.toml", "--public"],
        &[],
    );
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("--public: the image `tiny` has no workbench"),
        "{}",
        text(&o.stderr)
    );
}
