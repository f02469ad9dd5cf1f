//! The CI workflow and the release index schema, checked without building
//! an image: `.github/workflows/ci.yml` parses (PyYAML) and every biovm
//! command and option it runs exists; an index as biovm writes it validates
//! against docs/release-index.schema.json (Python `jsonschema`) and broken
//! ones do not. Both Python packages come with the venv `.ci/setup` makes.

mod common;
mod publish_common;

use std::path::Path;

use biovm::lock::check::Superseded;
use biovm::release::{
    FileRef, Index, IndexArtifact, IndexData, IndexImage, IndexTests, LockCheck, Published,
};
use biovm::sources::{DebianSource, PypiSdist, SourceFile, Sources};
use publish_common::*;

/// Run Python from the venv with `script`; its stdout, or the error.
fn python(script: &str, args: &[&Path]) -> Result<String, String> {
    let mut c = biovm::cmd::Cmd::new(venv_python());
    c.args(["-c", script]);
    for a in args {
        c.arg(a);
    }
    c.output().map_err(|e| format!("{e:#}"))
}

fn workflow() -> serde_json::Value {
    let out = python(
        "import json, sys, yaml\nprint(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        &[&repo().join(".github/workflows/ci.yml")],
    )
    .expect("ci.yml parses as YAML");
    serde_json::from_str(&out).unwrap()
}

fn steps_run(job: &serde_json::Value) -> Vec<String> {
    job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["run"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_workflow_tests_every_push_and_releases_version_tags() {
    let w = workflow();
    // YAML 1.1 reads the key `on` as true.
    let on = if w["on"].is_null() {
        &w["true"]
    } else {
        &w["on"]
    };
    assert!(on["push"].is_object(), "{on}");
    assert!(on.get("pull_request").is_some(), "{on}");
    assert_eq!(on["push"]["tags"][0], "v*");

    let test = &w["jobs"]["test"];
    assert_eq!(test["container"]["image"], "debian:12");
    assert!(test["container"]["options"]
        .as_str()
        .unwrap()
        .contains("--privileged"));
    assert!(steps_run(test).iter().any(|r| r.trim() == ".ci/run"));
    let cache = test["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/cache@"))
        })
        .expect("a cache step");
    let paths = cache["with"]["path"].as_str().unwrap();
    for p in ["/var/cache/biovm\n", "/var/cache/biovm-ci\n"] {
        assert!(paths.contains(p), "{paths}");
    }
    let key = cache["with"]["key"].as_str().unwrap();
    assert!(
        key.contains("hashFiles('Cargo.lock')") && key.contains("recipes/**"),
        "{key}"
    );

    // Daily: the locks job checks every lock and proposes new ones.
    assert!(on["schedule"][0]["cron"].is_string(), "{on}");
    assert_eq!(test["if"], "github.event_name != 'schedule'");
    let locks = &w["jobs"]["locks"];
    let runs = steps_run(locks).join("\n");
    for needle in ["lock --check \"$img\"", "lock --update \"$img\""] {
        assert!(runs.contains(needle), "{runs}");
    }
    assert!(locks["steps"].as_array().unwrap().iter().any(|s| s["uses"]
        .as_str()
        .is_some_and(|u| u.starts_with("peter-evans/create-pull-request@"))));

    let rel = &w["jobs"]["release"];
    assert_eq!(rel["needs"], "test");
    assert!(rel["if"]
        .as_str()
        .unwrap()
        .contains("startsWith(github.ref, 'refs/tags/v')"));
    for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        assert_eq!(rel["env"][k], format!("${{{{ secrets.{k} }}}}"));
    }
    let release_step = steps_run(rel)
        .into_iter()
        .find(|r| r.contains("biovm\" release"))
        .expect("a step running biovm release");
    let line = release_step.replace("\\\n", " ");
    assert!(line.contains(" --publish"), "{line}");
    assert!(line.contains(" --out release"), "{line}");
    // Every option the step passes is one `biovm release` has.
    let help = biovm(&repo(), &["release", "--help"], &[]);
    assert!(help.status.success());
    let help = text(&help.stdout);
    let opts: Vec<&str> = line
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .collect();
    assert!(opts.len() >= 5, "{opts:?}");
    for o in opts {
        assert!(help.contains(o), "`biovm release` has no {o}:\n{help}");
    }
    // And clap accepts the whole command line (a missing image is the
    // first thing it finds wrong, after parsing every option).
    let o = biovm(
        &repo(),
        &[
            "release",
            "no-such-image.toml",
            "--out",
            "release",
            "--lock",
            "--publish",
            "--version",
            "1.2.0",
            "--base-url",
            "https://example.org/r",
        ],
        &[],
    );
    let err = text(&o.stderr);
    assert!(!err.contains("unexpected argument"), "{err}");
    assert!(err.contains("no-such-image.toml"), "{err}");
}

fn sample() -> Index {
    let f = |file: &str, c: char| FileRef {
        file: file.into(),
        sha256: std::iter::repeat(c).take(64).collect(),
    };
    Index {
        format_version: 1,
        biovm_version: "0.1.0".into(),
        created: "2026-11-26T04:30:12Z".into(),
        images: vec![IndexImage {
            name: "tiny".into(),
            description: "d".into(),
            version: "20261126.043012".into(),
            inputs: "1".repeat(64),
            source_date_epoch: 1_795_667_412,
            suite: "bookworm".into(),
            architecture: "amd64".into(),
            boot: vec!["bios".into()],
            lock_sha256: "2".repeat(64),
            artifacts: vec![IndexArtifact {
                format: biovm::config::Format::Raw,
                file: "tiny.raw".into(),
                size: 1 << 30,
                sha256: "3".repeat(64),
            }],
            sbom: f("tiny.spdx.json", '4'),
            manifest: f("tiny.manifest.json", '5'),
            tests: IndexTests {
                report: f("tiny.test/report.json", '6'),
                junit: f("tiny.test/junit.xml", '7'),
                logs: vec![f("tiny.test/raw-bios.serial.log", '8')],
                cells: 1,
                checks: "native-and-boot-sample".into(),
                passed: true,
            },
            vagrant: None,
            published: vec![Published {
                target: "ec2".into(),
                region: "us-east-1".into(),
                release: "20261126.043012".into(),
                image_id: "ami-0123456789abcdef0".into(),
                snapshot_id: Some("snap-0123".into()),
                data_snapshot_id: None,
                image_location: None,
                created: true,
            }],
            sources: Some(Sources {
                debian: vec![DebianSource {
                    package: "htslib".into(),
                    version: "1.16+ds-3".into(),
                    binaries: vec!["libhts3 1.16+ds-3 amd64".into()],
                    files: vec![SourceFile {
                        file: "sources/debian/htslib_1.16+ds-3.dsc".into(),
                        sha256: "9".repeat(64),
                        size: 2086,
                    }],
                }],
                pypi: vec![PypiSdist {
                    name: "pysam".into(),
                    version: "0.22.0".into(),
                    wheels: vec!["pysam-0.22.0-cp311-cp311-manylinux_2_28_x86_64.whl".into()],
                    file: SourceFile {
                        file: "sources/pypi/pysam-0.22.0.tar.gz".into(),
                        sha256: "a".repeat(64),
                        size: 4_800_000,
                    },
                }],
            }),
            lock_check: Some(LockCheck {
                checked: "2026-11-26T04:30:00Z".into(),
                gone: vec!["libde265-0 1.0.11-1+deb12u3".into()],
                security_index: true,
                superseded: vec![Superseded {
                    name: "libde265-0".into(),
                    locked: "1.0.11-1+deb12u3".into(),
                    security: "1.0.11-1+deb12u4".into(),
                }],
            }),
            data: vec![IndexData {
                name: "lambda-phage".into(),
                organism: "Escherichia phage lambda".into(),
                build: "lambda".into(),
                version: "NC_001416.1".into(),
                license: "public-domain".into(),
                redistributable: true,
                folder: "/data/genomes/lambda".into(),
                files: 13,
                sha256: "a".repeat(64),
            }],
            workbench: Some(biovm::config::Workbench {
                desktop: true,
                port: 8080,
            }),
        }],
    }
}

fn validate(doc: &serde_json::Value) -> Result<String, String> {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("release.json");
    std::fs::write(&p, serde_json::to_string(doc).unwrap()).unwrap();
    python(
        "import json, sys, jsonschema\n\
         schema = json.load(open(sys.argv[1]))\n\
         jsonschema.Draft202012Validator.check_schema(schema)\n\
         e = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(json.load(open(sys.argv[2]))))\n\
         sys.exit(f'invalid: {e.message} at {list(e.absolute_path)}') if e else print('valid')",
        &[&repo().join("docs/release-index.schema.json"), &p],
    )
}

#[test]
fn an_index_as_biovm_writes_it_validates_and_broken_ones_do_not() {
    let good = serde_json::to_value(sample()).unwrap();
    assert_eq!(validate(&good).unwrap().trim(), "valid");

    type Break = fn(&mut serde_json::Value);
    let broken: [(&str, Break); 6] = [
        ("upper-case sha256", |v| {
            v["images"][0]["sbom"]["sha256"] = "A".repeat(64).into()
        }),
        ("a path out of the folder", |v| {
            v["images"][0]["artifacts"][0]["file"] = "../tiny.raw".into()
        }),
        ("an unknown format", |v| {
            v["images"][0]["artifacts"][0]["format"] = "iso".into()
        }),
        ("a failed test", |v| {
            v["images"][0]["tests"]["passed"] = false.into()
        }),
        ("an unknown field", |v| v["images"][0]["extra"] = 1.into()),
        ("a source file outside sources/", |v| {
            v["images"][0]["sources"]["debian"][0]["files"][0]["file"] = "../x.dsc".into()
        }),
    ];
    for (what, f) in broken {
        let mut v = good.clone();
        f(&mut v);
        let e = validate(&v).expect_err(what);
        assert!(e.contains("invalid: "), "{what}: {e}");
    }
}

#[test]
fn sha256sums_lists_each_source_file_once_for_images_that_share_it() {
    let mut index = sample();
    let mut other = index.images[0].clone();
    other.name = "other".into();
    index.images.push(other);
    let sums = biovm::release::sums(&index);
    for file in [
        "sources/debian/htslib_1.16+ds-3.dsc",
        "sources/pypi/pysam-0.22.0.tar.gz",
    ] {
        assert_eq!(
            sums.lines()
                .filter(|l| l.ends_with(&format!("  {file}")))
                .count(),
            1,
            "{sums}"
        );
    }
    assert!(sums.contains(&format!(
        "{}  sources/pypi/pysam-0.22.0.tar.gz\n",
        "a".repeat(64)
    )));
}
