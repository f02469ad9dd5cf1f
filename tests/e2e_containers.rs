//! End to end: build images/minimal.toml for real in the container formats
//! only (OCI layout, docker-archive, SIF, rootfs tarball) and run every
//! tool check inside each artifact as a container
//! (`biovm::smoke::container::test_container`).
//!
//! These tests need root, the host packages `.ci/setup` installs, the
//! network to the package archive and minutes, so they are `#[ignore]`d;
//! `cargo test --release -- --include-ignored` (what `.ci/run` does) runs them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use biovm::config::Format;
use biovm::manifest::Manifest;
use biovm::smoke::container::test_container;
use biovm::smoke::report;
use biovm::smoke::CheckOutcome;

const BIN: &str = env!("CARGO_BIN_EXE_biovm");

const FORMATS: [Format; 4] = [
    Format::Oci,
    Format::DockerArchive,
    Format::Sif,
    Format::Tarball,
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// Containers share two cores; one at a time keeps their timings meaningful.
static RUNS: Mutex<()> = Mutex::new(());

/// Build the minimal image once, in the container formats only: a copy of
/// images/minimal.toml whose `[output] formats` lists just those.
fn minimal() -> &'static Path {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let images = scratch("e2e-containers-project").join("images");
        fs::create_dir_all(&images).unwrap();
        let img = images.join("minimal.toml");
        let text = fs::read_to_string(repo().join("images/minimal.toml")).unwrap();
        let formats: Vec<String> = FORMATS
            .iter()
            .map(|f| format!("\"{}\"", f.as_str()))
            .collect();
        let mut replaced = 0;
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("formats = ") {
                    replaced += 1;
                    format!("formats = [{}]\n", formats.join(", "))
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        assert_eq!(replaced, 1, "images/minimal.toml has one formats line");
        fs::write(&img, text).unwrap();
        let out = scratch("e2e-containers");
        let t = Instant::now();
        let o = Command::new(BIN)
            .args(["--recipes", "recipes", "build"])
            .arg(&img)
            .arg("--out")
            .arg(&out)
            .current_dir(repo())
            .stdin(Stdio::null())
            .output()
            .expect("run biovm");
        eprintln!(
            "$ biovm build {} ({:.0} s)\n--- stdout\n{}--- stderr\n{}",
            img.display(),
            t.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "build failed");
        out
    })
}

fn artifact(out: &Path, f: Format) -> PathBuf {
    out.join(format!("minimal.{}", f.extension()))
}

#[test]
#[ignore = "needs root, network and minutes"]
fn every_check_passes_inside_every_container_artifact() {
    let out = minimal();
    let _g = RUNS.lock().unwrap_or_else(|e| e.into_inner());
    let mut timings = Vec::new();
    for f in FORMATS {
        let a = artifact(out, f);
        let tools = Manifest::for_artifact(&a).unwrap().tools;
        assert!(tools.len() >= 10, "checks and functional tests: {tools:?}");
        let run = out.join("minimal.test");
        let t = Instant::now();
        let r = test_container(&a, f, &tools, &run, Duration::from_secs(600)).unwrap();
        let wall = t.elapsed().as_secs_f64();
        print!("{}", report::table(std::slice::from_ref(&r)));
        assert!(
            r.passed(),
            "{}: {:?}",
            f.as_str(),
            report::failures(std::slice::from_ref(&r))
        );
        assert_eq!(r.results.len(), tools.len());
        for tool in ["bcftools", "bwa", "fastp", "minimap2", "samtools"] {
            assert!(
                r.results
                    .iter()
                    .any(|c| c.tool == tool && c.outcome.passed()),
                "{tool} in {}",
                f.as_str()
            );
        }
        // The results the container wrote are kept; nothing else is.
        let log = fs::read_to_string(&r.serial_log).unwrap();
        assert!(log.starts_with("BIOVM start ") && log.ends_with("BIOVM done\n"));
        let left: Vec<String> = fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".results.log"))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        timings.push(format!(
            "{:<15} unpack+start {:>5.1} s  checks {:>5.1} s  total {:>5.1} s  with cleanup {:>5.1} s  ({} checks)",
            f.as_str(),
            r.boot_secs.unwrap_or_default(),
            r.checks_secs(),
            r.total_secs,
            wall,
            r.results.len()
        ));
    }
    eprintln!("container tests of the minimal image:");
    for t in timings {
        eprintln!("  {t}");
    }
}

#[test]
#[ignore = "needs root, network and minutes"]
fn a_wrong_check_pattern_fails_inside_a_container_and_names_the_tool() {
    let out = minimal();
    let _g = RUNS.lock().unwrap_or_else(|e| e.into_inner());
    let a = artifact(out, Format::Oci);
    let mut tools = Manifest::for_artifact(&a).unwrap().tools;
    let samtools = tools.iter_mut().find(|t| t.name == "samtools").unwrap();
    samtools.check.expect = r"^samtools 9\.\d+".into();
    let run = out.join("minimal.wrong.test");
    let r = test_container(&a, Format::Oci, &tools, &run, Duration::from_secs(600)).unwrap();
    assert_eq!(
        report::failures(std::slice::from_ref(&r)),
        vec![
            r"samtools in minimal.oci under container: FAILED: output does not match /^samtools 9\.\d+/"
                .to_string()
        ]
    );
    let c = r.results.iter().find(|c| c.tool == "samtools").unwrap();
    assert!(matches!(c.outcome, CheckOutcome::NoMatch { .. }));
    assert!(c.output.contains("samtools 1."), "{}", c.output);
}
