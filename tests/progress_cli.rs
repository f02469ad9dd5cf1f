//! Progress reporting of the biovm binary: `--json` events (one JSON
//! object per line on stdout, every started stage finished, byte counts
//! that add up, a `result` or an `error` last), plain lines on stderr when
//! it is not a terminal, bars (no start lines) when it is one. The long
//! command is `biovm publish` against moto on 127.0.0.1 (see
//! tests/publish_common).

mod common;
mod publish_common;

use std::path::Path;

use publish_common::*;
use sha2::{Digest, Sha256};

const IMAGE: &str = r#"name = "tiny"

[base]
distribution = "debian"

[recipes]
include = ["hello"]

[disk]
size = "1GiB"

[targets.ec2]
region = "us-east-1"
ec2-endpoint = "ENDPOINT"
ebs-endpoint = "ENDPOINT"
"#;

const KEYS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "AKIDPROGRESS"),
    ("AWS_SECRET_ACCESS_KEY", "progress-test-secret"),
];

/// images/tiny.toml, recipes/, out/tiny.raw and its manifest; the disk's size.
fn workspace(endpoint: &str, seed: u64) -> (tempfile::TempDir, u64) {
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
    let disk = make_disk(&root.join("out/tiny.raw"), seed);
    let sha: String = Sha256::digest(&disk)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let manifest = serde_json::json!({
        "image": "tiny", "description": "", "suite": "bookworm",
        "architecture": "amd64", "boot": ["uefi", "bios"],
        "artifacts": [{"format": "raw", "file": "tiny.raw", "size": disk.len(), "sha256": sha}],
        "tools": []
    });
    std::fs::write(root.join("out/tiny.manifest.json"), manifest.to_string()).unwrap();
    (d, disk.len() as u64)
}

fn publish(root: &Path, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut args = extra.to_vec();
    args.extend_from_slice(&["publish", "--target", "ec2", "images/tiny.toml"]);
    let mut e = KEYS.to_vec();
    e.extend_from_slice(env);
    biovm(root, &args, &e)
}

#[test]
fn json_events_pair_every_stage_count_the_bytes_and_end_with_the_result() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, Faults::default());
    let (dir, size) = workspace(&proxy.url(), 3);
    let root = dir.path();
    // A progress event for every count that changed.
    let o = publish(root, &["--json"], &[("BIOVM_PROGRESS_INTERVAL", "0")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // Every line of stdout is one event.
    let ev = events(&o.stdout);
    for e in &ev {
        assert_eq!(e["command"], "publish", "{e}");
        let kind = e["event"].as_str().unwrap();
        assert!(
            ["stage-started", "progress", "stage-finished", "result"].contains(&kind),
            "{e}"
        );
    }
    let order: Vec<String> = ev
        .iter()
        .filter(|e| e["event"] != "progress")
        .map(|e| {
            format!(
                "{} {}",
                e["event"].as_str().unwrap(),
                e["stage"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            "stage-started upload",
            "stage-finished upload",
            "stage-started snapshot",
            "stage-finished snapshot",
            "stage-started register",
            "stage-finished register",
            "result ",
        ]
    );
    for e in ev.iter().filter(|e| e["event"] == "stage-finished") {
        assert_eq!(e["ok"], true, "{e}");
        assert!(e["secs"].as_f64().unwrap() >= 0.0, "{e}");
    }
    // The upload counts the disk's bytes up to its size, never down.
    assert_eq!(ev[0]["total"], size);
    assert_eq!(ev[0]["unit"], "bytes");
    let progress: Vec<u64> = ev
        .iter()
        .filter(|e| e["event"] == "progress")
        .map(|e| {
            assert_eq!(e["stage"], "upload");
            assert_eq!(e["total"], size);
            e["done"].as_u64().unwrap()
        })
        .collect();
    // (Blocks finishing at the same moment on two workers share an event.)
    assert!(progress.len() >= 2, "{progress:?}");
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");
    assert_eq!(*progress.last().unwrap(), size);
    let finished = ev
        .iter()
        .find(|e| e["event"] == "stage-finished" && e["stage"] == "upload")
        .unwrap();
    assert_eq!(finished["done"], size);
    let result = result_of(&o.stdout);
    assert_eq!(result["created"], true);
    assert!(result["image_id"].as_str().unwrap().starts_with("ami-"));

    // Published already: the rerun's events still pair up.
    let o = publish(root, &["--json"], &[]);
    assert!(o.status.success());
    let ev = events(&o.stdout);
    assert_eq!(ev.len(), 1, "nothing to do, nothing but the result: {ev:?}");
    assert_eq!(result_of(&o.stdout)["created"], false);
}

#[test]
fn plain_lines_when_stderr_is_not_a_terminal() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, Faults::default());
    let (dir, _) = workspace(&proxy.url(), 4);
    // No count lines, however slow the machine (they are tested above as events).
    let o = publish(dir.path(), &[], &[("BIOVM_PROGRESS_INTERVAL", "3600")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    let plain: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with('['))
        .filter(|l| !l.starts_with("[20"))
        .collect();
    assert_eq!(plain.len(), 6, "{err}");
    let re = |s: &str| regex::Regex::new(s).unwrap();
    assert_eq!(plain[0], "[publish] upload: started");
    assert!(
        re(r"^\[publish\] upload: finished in \d+\.\d s \(7\.00 MiB(, [\d.]+ [KMG]iB/s)?\)$")
            .is_match(plain[1]),
        "{}",
        plain[1]
    );
    assert_eq!(plain[2], "[publish] snapshot: started");
    assert!(re(r"^\[publish\] snapshot: finished in \d+\.\d s$").is_match(plain[3]));
    assert_eq!(plain[4], "[publish] register: started");
    assert!(re(r"^\[publish\] register: finished in \d+\.\d s$").is_match(plain[5]));
    // The command's own output stays on stdout, as before.
    assert!(
        text(&o.stdout).starts_with("published tiny sha-"),
        "{}",
        text(&o.stdout)
    );

    // Counts as lines, when they are due (here: always).
    let (dir, _) = workspace(&proxy.url(), 8);
    let o = publish(dir.path(), &[], &[("BIOVM_PROGRESS_INTERVAL", "0")]);
    assert!(o.status.success());
    let err = text(&o.stderr);
    let counts = re(
        r"(?m)^\[publish\] upload: \d+\.\d\d [KM]iB of 7\.00 MiB \(\d+%\)(, [\d.]+ [KMG]iB/s(, ETA \d+ s)?)?$",
    );
    assert!(counts.find_iter(&err).count() >= 2, "{err}");

    // -q: no progress at all.
    let (dir, _) = workspace(&proxy.url(), 5);
    let o = publish(dir.path(), &["-q"], &[]);
    assert!(o.status.success());
    assert_eq!(text(&o.stderr), "");
}

#[test]
fn a_terminal_gets_bars_and_a_line_per_finished_stage() {
    // `script` runs biovm on a pseudo-terminal (util-linux, always on Debian).
    if which::which("script").is_err() {
        panic!("`script` (util-linux) is needed to give biovm a terminal");
    }
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, Faults::default());
    let (dir, _) = workspace(&proxy.url(), 6);
    let root = dir.path();
    let log = root.join("tty.log");
    let cmd = format!(
        "{} publish --target ec2 images/tiny.toml",
        env!("CARGO_BIN_EXE_biovm")
    );
    let o = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &cmd])
        .arg(&log)
        .current_dir(root)
        .env("HOME", root)
        .env("TERM", "xterm")
        .env_remove("BIOVM_LOG")
        .env_remove("AWS_PROFILE")
        .envs(KEYS)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let tty = text(&std::fs::read(&log).unwrap());
    assert!(tty.contains("[publish] upload: finished in "), "{tty}");
    assert!(tty.contains("[publish] register: finished in "), "{tty}");
    // Bars instead of start lines.
    assert!(!tty.contains("[publish] upload: started"), "{tty}");
    assert!(tty.contains("published tiny sha-"), "{tty}");
}

#[test]
fn an_error_is_the_last_event_and_the_exit_status_says_so() {
    // Invalid input: exit 2, one error event holding the diagnostics.
    let case = repo().join("tests/fixtures/broken/image-bad-ec2-target");
    let o = biovm(&case, &["--json", "check"], &[]);
    assert_eq!(o.status.code(), Some(2));
    let ev = events(&o.stdout);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["event"], "error");
    assert_eq!(ev[0]["command"], "check");
    let expected = std::fs::read_to_string(case.join("expected.txt")).unwrap();
    assert_eq!(ev[0]["message"].as_str().unwrap(), expected);
    // The same error on stderr, as without --json.
    assert_eq!(text(&o.stderr), expected);

    // A failing long command: its stage fails, then the error event.
    let moto = Moto::start();
    let proxy = Proxy::start(
        moto.port,
        Faults {
            reject_keys: vec![("AKIDPROGRESS".to_string(), "InvalidClientTokenId")],
            ..Faults::default()
        },
    );
    let (dir, _) = workspace(&proxy.url(), 7);
    let o = publish(dir.path(), &["--json"], &[]);
    assert_eq!(o.status.code(), Some(1));
    let ev = events(&o.stdout);
    let last = ev.last().unwrap();
    assert_eq!(last["event"], "error", "{ev:?}");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("the cloud refused the credentials (InvalidClientTokenId"),
        "{last}"
    );
    assert!(text(&o.stderr).contains("error: "));

    // A successful check: its result.
    let o = biovm(&repo(), &["check", "--json"], &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let r = result_of(&o.stdout);
    assert!(r["recipes"].as_u64().unwrap() >= 150, "{r}");
}
