//! End to end: untrusted input never touches the build host, and a killed
//! build leaves nothing behind but hidden scratch that the next build
//! removes.
//!
//! These build real images (root, the network to the package archive,
//! minutes), so they are `#[ignore]`d like the other e2e tests;
//! `cargo test --release -- --include-ignored` runs them.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{repo, scratch, BIN};

fn biovm(cwd: &Path, args: &[&str]) -> Output {
    common::biovm_in(cwd, args, &[("NO_PROXY", "127.0.0.1")])
}

fn sha256_hex(bytes: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(bytes)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

/// Serve `files` (path -> body) over HTTP on 127.0.0.1 until the test ends.
fn serve(files: Vec<(String, Vec<u8>)>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut first = String::new();
            let _ = r.read_line(&mut first);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 2 {
                line.clear();
            }
            let path = first.split(' ').nth(1).unwrap_or("").to_string();
            match files.iter().find(|(p, _)| *p == path) {
                Some((_, body)) => {
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(body);
                }
                None => {
                    let _ = s.write_all(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                }
            }
        }
    });
    base
}

/// A gzip tar holding `tool/bin/tool` and a link `tool/current -> bin`.
fn tool_archive() -> Vec<u8> {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("tool/bin")).unwrap();
    fs::write(d.path().join("tool/bin/tool"), "#!/bin/sh\necho evil 1.0\n").unwrap();
    std::os::unix::fs::symlink("bin", d.path().join("tool/current")).unwrap();
    let o = Command::new("tar")
        .args(["-czf", "-", "-C"])
        .arg(d.path())
        .arg("tool")
        .output()
        .unwrap();
    assert!(o.status.success());
    o.stdout
}

/// Host paths the malicious inputs aim at: through Debian's absolute links
/// /var/lock -> /run/lock and /var/run -> /run, which a builder that joins
/// strings follows out of the tree onto the host.
struct Markers {
    system_file: PathBuf,
    download: PathBuf,
    unpacked: PathBuf,
    tag: String,
}

impl Markers {
    fn new() -> Markers {
        let tag = format!("biovm-marker-{}", std::process::id());
        Markers {
            system_file: PathBuf::from(format!("/run/lock/{tag}-file")),
            download: PathBuf::from(format!("/run/{tag}-download")),
            unpacked: PathBuf::from(format!("/run/lock/{tag}-unpacked")),
            tag,
        }
    }

    fn assert_absent(&self) {
        for p in [&self.system_file, &self.download, &self.unpacked] {
            assert!(!p.exists(), "{} appeared on the host", p.display());
        }
        assert!(!Path::new("/tmp/biovm-host-marker").exists());
    }
}

/// A malicious image and recipe: `..` is refused before anything runs;
/// writes through links planted in the tree (Debian's own absolute links)
/// land inside the image, never on the host.
#[test]
#[ignore = "needs root, network and minutes"]
fn malicious_inputs_never_touch_the_host() {
    let _t = common::timed();
    let m = Markers::new();
    m.assert_absent();

    // Through `..`: refused at load time by build too, exit 2, nothing built.
    let case = repo().join("tests/fixtures/broken/image-host-paths");
    let out_dotdot = scratch("containment-dotdot");
    let o = biovm(
        &case,
        &[
            "build",
            "images/x.toml",
            "--out",
            out_dotdot.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("contains `..`"));
    assert_eq!(fs::read_dir(&out_dotdot).unwrap().count(), 0);
    m.assert_absent();

    // Through planted links: a real build.
    let archive = tool_archive();
    let script = b"#!/bin/sh\necho evil 1.0\n".to_vec();
    let base = serve(vec![
        ("/tool.tar.gz".into(), archive.clone()),
        ("/tool.sh".into(), script.clone()),
    ]);
    let project = scratch("containment-project");
    fs::create_dir_all(project.join("images")).unwrap();
    fs::create_dir_all(project.join("recipes/utilities")).unwrap();
    let tag = &m.tag;
    fs::write(
        project.join("recipes/utilities/evil.toml"),
        format!(
            r#"name = "evil"
summary = "Aims its downloads at host paths through links in the tree"
category = "utilities"
homepage = "https://example.org/evil"
license = "MIT"

[install]
debian = ["less"]

[[install.download]]
url = "{base}/tool.tar.gz"
sha256 = "{archive_sha}"
dest = "/var/lock/{tag}-unpacked"
unpack = true

[[install.download]]
url = "{base}/tool.sh"
sha256 = "{script_sha}"
dest = "/var/run/{tag}-download"

[check]
command = "less --version"
expect = '^less \d+'
"#,
            archive_sha = sha256_hex(&archive),
            script_sha = sha256_hex(&script),
        ),
    )
    .unwrap();
    fs::write(
        project.join("images/evil.toml"),
        format!(
            r#"name = "evil"

[base]
distribution = "debian"
suite = "bookworm"

[recipes]
include = ["evil"]

[[system.files]]
path = "/var/lock/{tag}-file"
content = "written through /var/lock"

[disk]
size = "2GiB"

[output]
formats = ["tarball"]
"#
        ),
    )
    .unwrap();
    let out = project.join("out");
    let o = biovm(
        &project,
        &["build", "images/evil.toml", "--out", out.to_str().unwrap()],
    );
    assert!(o.status.success(), "the build failed");
    m.assert_absent();
    // Everything went into the image, where the links lead inside it.
    let list = Command::new("tar")
        .arg("-tzf")
        .arg(out.join("evil.rootfs.tar.gz"))
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for want in [
        format!("run/lock/{tag}-file"),
        format!("run/{tag}-download"),
        format!("run/lock/{tag}-unpacked/tool/bin/tool"),
        format!("run/lock/{tag}-unpacked/tool/current"),
    ] {
        assert!(
            list.lines().any(|l| l.trim_start_matches("./") == want),
            "{want} is not in the image"
        );
    }
}

/// Mount points at or below `dir`, as this process sees them.
fn mounts_below(dir: &Path) -> Vec<String> {
    let canon = dir.canonicalize().unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(&canon))
        .map(str::to_string)
        .collect()
}

/// Start `biovm --json build` (with `extra` arguments) in a process
/// group of its own.
fn start_build(img: &Path, out: &Path, extra: &[&str]) -> Child {
    Command::new(BIN)
        .args(["--json", "--recipes"])
        .arg(repo().join("recipes"))
        .arg("build")
        .arg(img)
        .arg("--out")
        .arg(out)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .expect("start biovm")
}

/// Read the build's JSON events until `stage` starts; then wait `after`
/// and kill its whole process group with SIGKILL, as a power cut would.
fn kill_in_stage(mut child: Child, stage: &str, after: Duration) {
    let stdout = child.stdout.take().unwrap();
    let mut seen = false;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["event"] == "stage-started" && v["stage"] == stage {
            seen = true;
            break;
        }
    }
    assert!(seen, "the build ended before its {stage} stage");
    std::thread::sleep(after);
    let pgid = child.id() as i32;
    // SAFETY: signalling a process group we created.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
    // The group is gone (its members may take a moment to be reaped).
    let t = Instant::now();
    // SAFETY: signal 0 only probes.
    while unsafe { libc::kill(-pgid, 0) } == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "processes of the killed build survive"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "killed the build {}s into its {stage} stage",
        after.as_secs()
    );
}

/// What a killed build may leave in its output folder: hidden `.tmp`
/// scratch, and under a final name only what an earlier stage completed
/// (`complete`: the raw disk once the disk stage is over, whole) or a
/// conversion that finished before the kill (the qcow2, compared with the
/// raw disk); no mount.
fn assert_nothing_partial_or_mounted(out: &Path, stage: &str, complete: &[&str]) {
    for e in fs::read_dir(out).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".tmp") {
            continue;
        }
        // A conversion may finish before the kill: under its final name it
        // must then be whole, the raw disk's content to the last byte.
        if name == "minimal.qcow2" && complete.contains(&"minimal.raw") {
            let o = Command::new("qemu-img")
                .args(["compare", "-f", "raw", "-F", "qcow2"])
                .arg(out.join("minimal.raw"))
                .arg(out.join(&name))
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "killed in {stage}: {name} carries a final name but is not the raw disk's content: {}",
                String::from_utf8_lossy(&o.stdout)
            );
            continue;
        }
        assert!(
            complete.contains(&name.as_str()),
            "killed in {stage}: {name} carries a final name"
        );
    }
    if complete.contains(&"minimal.raw") {
        let raw = out.join("minimal.raw");
        assert_eq!(
            fs::metadata(&raw).unwrap().len(),
            3 << 30,
            "minimal.raw is whole"
        );
        let o = Command::new("sfdisk")
            .arg("--json")
            .arg(&raw)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "minimal.raw has no valid partition table"
        );
    }
    assert_eq!(
        mounts_below(out),
        Vec::<String>::new(),
        "killed in {stage}: mounts left"
    );
}

/// Kill the build at three points (bootstrap, disk, formats); after each,
/// no final-named file and no mount remain, and the next build succeeds,
/// removing the dead builds' scratch.
#[test]
#[ignore = "needs root, network and minutes"]
fn a_killed_build_leaves_no_mounts_and_the_next_one_succeeds() {
    let _t = common::timed();
    let project = scratch("containment-kill");
    fs::create_dir_all(project.join("images")).unwrap();
    // The committed image and its lock, built as raw and qcow2 only; the
    // builds after the first kill take their tree from biovm's cache of
    // bootstraps.
    let img = project.join("images/minimal.toml");
    for f in ["minimal.toml", "minimal.lock"] {
        fs::copy(
            repo().join("images").join(f),
            project.join("images").join(f),
        )
        .unwrap();
    }
    let out = project.join("out");
    fs::create_dir_all(&out).unwrap();
    // Bootstrap: mmdebstrap (--rebuild: not biovm's cache of bootstraps)
    // has /proc, /sys and /dev mounted in the tree within seconds of
    // starting. The later stages' builds unpack their tree from that cache.
    const FORMATS: [&str; 4] = ["--format", "raw", "--format", "qcow2"];
    let points: [(&str, &[&str], u64, &[&str]); 3] = [
        (
            "bootstrap",
            &["--rebuild", "--format", "raw", "--format", "qcow2"],
            25,
            &[],
        ),
        ("disk", &FORMATS, 1, &[]),
        ("formats", &FORMATS, 1, &["minimal.raw"]),
    ];
    for (stage, extra, after, complete) in points {
        kill_in_stage(
            start_build(&img, &out, extra),
            stage,
            Duration::from_secs(after),
        );
        assert_nothing_partial_or_mounted(&out, stage, complete);
    }
    let o = biovm(
        &project,
        &[
            "--recipes",
            repo().join("recipes").to_str().unwrap(),
            "build",
            img.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--format",
            "raw",
            "--format",
            "qcow2",
        ],
    );
    assert!(o.status.success(), "the build after the kills failed");
    let mut names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "SHA256SUMS",
            "minimal.build.json",
            "minimal.manifest.json",
            "minimal.qcow2",
            "minimal.raw",
            "minimal.spdx.json"
        ],
        "the dead builds' scratch is gone"
    );
}
