//! Tests of the checks drive: result lines parse, checks are judged, the
//! drive carries every script and data file, and `run.sh` itself (run by
//! the host's sh in container mode) reports each check whole, several at
//! once.

use super::*;
use crate::manifest::ToolCheck;

fn tool(expect: &str, status: i32) -> Tool {
    Tool {
        name: "bwa".into(),
        category: "alignment".into(),
        check: ToolCheck {
            command: "bwa".into(),
            expect: expect.into(),
            status,
            timeout: 60,
            data: vec![],
        },
        source: None,
    }
}

#[test]
fn parses_result_lines() {
    assert_eq!(parse_line("BIOVM start 4.52\r"), Some(Line::Start(4.52)));
    assert_eq!(
        parse_line("BIOVM check bwa 1 12 VmVyc2lvbjogMC43LjE3"),
        Some(Line::Check {
            name: "bwa".into(),
            status: 1,
            millis: 12,
            output: "Version: 0.7.17".into()
        })
    );
    assert_eq!(
        parse_line("BIOVM check x 0 3 "),
        Some(Line::Check {
            name: "x".into(),
            status: 0,
            millis: 3,
            output: String::new()
        })
    );
    assert_eq!(parse_line("BIOVM done"), Some(Line::Done));
    assert_eq!(
        parse_line("\x1b[2J\x1b[01;01HBIOVM start 3.5"),
        Some(Line::Start(3.5))
    );
    assert_eq!(parse_line("[  OK  ] Started foo"), None);
    assert_eq!(parse_line("BIOVM check bwa notanumber 1 x"), None);
}

#[test]
fn judging() {
    let t = tool(r"Version: 0\.7\.\d+", 1);
    assert_eq!(
        judge(&t, 1, "\nProgram: bwa\nVersion: 0.7.17-r1188\n"),
        CheckOutcome::Passed
    );
    assert_eq!(
        judge(&t, 0, "Version: 0.7.17"),
        CheckOutcome::WrongStatus {
            expected: 1,
            got: 0
        }
    );
    assert!(matches!(
        judge(&t, 1, "Version: 0.8.0"),
        CheckOutcome::NoMatch { .. }
    ));
    assert_eq!(judge(&t, 124, ""), CheckOutcome::TimedOut);
    // Multi-line mode: ^ matches at any line start.
    let t = tool(r"^samtools 1\.\d+", 0);
    assert_eq!(
        judge(&t, 0, "warning\nsamtools 1.16.1\n"),
        CheckOutcome::Passed
    );
}

fn entry_names(tar_file: &Path) -> Vec<String> {
    tar::Archive::new(fs::File::open(tar_file).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn functional_test_data_travels_on_the_drive() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("ref.fa");
    fs::write(&data, ">chr1\nACGT\n").unwrap();
    let mut t = tool("x", 0);
    t.name = "bwa/index".into();
    t.check.data = vec![crate::manifest::DataFile::read(&data).unwrap()];
    let p = d.path().join("c.tar");
    write_checks_drive(std::slice::from_ref(&t), &p).unwrap();
    let names = entry_names(&p);
    assert_eq!(
        names,
        vec!["run.sh", "checks/bwa/index.sh", "data/bwa/index/ref.fa"]
    );
    assert!(run_script(&[t])
        .contains("\nbwa/index 60 $here/checks/bwa/index.sh $here/data/bwa/index\n"));
}

/// Unpack the checks drive for `tools` and run its run.sh with the
/// host's sh in container mode, `jobs` checks at once; the result lines.
fn run_drive(tools: &[Tool], jobs: usize) -> (Vec<Line>, String, tempfile::TempDir) {
    let d = tempfile::tempdir().unwrap();
    let tar = d.path().join("c.tar");
    write_checks_drive(tools, &tar).unwrap();
    let root = d.path().join("unpacked");
    fs::create_dir(&root).unwrap();
    tar::Archive::new(fs::File::open(&tar).unwrap())
        .unpack(&root)
        .unwrap();
    let results = d.path().join("results.log");
    crate::cmd::Cmd::new("sh")
        .arg("./run.sh")
        .current_dir(&root)
        .env("BIOVM_CONTAINER", "1")
        .env("BIOVM_RESULTS", &results)
        .env("BIOVM_CHECK_JOBS", jobs.to_string())
        .run()
        .unwrap();
    let text = fs::read_to_string(&results).unwrap();
    let lines = text.lines().filter_map(parse_line).collect();
    (lines, text, d)
}

/// The check results by name: (status, output).
fn checks_of(lines: &[Line]) -> std::collections::BTreeMap<String, (i32, String)> {
    let mut m = std::collections::BTreeMap::new();
    for l in lines {
        if let Line::Check {
            name,
            status,
            output,
            ..
        } = l
        {
            assert!(
                m.insert(name.clone(), (*status, output.clone())).is_none(),
                "{name} reported twice"
            );
        }
    }
    m
}

/// run.sh itself, run by the host's sh in container mode: every check
/// reports its status, time and output; the script ends with `done`.
#[test]
fn run_script_reports_each_check_in_container_mode() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("in.txt");
    fs::write(&data, "planted\n").unwrap();
    let mut ok = tool("^hello", 0);
    ok.name = "greet".into();
    ok.check.command = "echo hello; echo to-stderr >&2".into();
    let mut fail = tool("x", 0);
    fail.name = "reads/data".into();
    fail.check.command = "cat in.txt; touch out; exit 3".into();
    fail.check.data = vec![crate::manifest::DataFile::read(&data).unwrap()];
    // Several at once: one version check, the functional tests, the
    // other version checks.
    let mut other = ok.clone();
    other.name = "other".into();
    let script = run_script(&[ok.clone(), other, fail.clone()]);
    let xargs_list =
        &script[script.find("xargs -P").unwrap()..script.find("\nelse\nwhile").unwrap()];
    let names: Vec<&str> = xargs_list
        .lines()
        .skip(1)
        .filter_map(|l| l.split(' ').next())
        .filter(|n| *n != "EOF")
        .collect();
    assert_eq!(names, ["greet", "reads/data", "other"], "{script}");
    for jobs in [1, 2] {
        let (lines, text, run) = run_drive(&[ok.clone(), fail.clone()], jobs);
        assert!(matches!(lines[0], Line::Start(_)), "{text}");
        let checks = checks_of(&lines);
        assert_eq!(
            checks.get("greet"),
            Some(&(0, "hello\nto-stderr".to_string())),
            "{text}"
        );
        assert_eq!(
            checks.get("reads/data"),
            Some(&(3, "planted".to_string())),
            "{text}"
        );
        assert_eq!(lines.last(), Some(&Line::Done), "{text}");
        assert_eq!(lines.len(), 4, "{text}");
        if jobs == 1 {
            // One at a time, in the given order.
            assert!(
                matches!(&lines[1], Line::Check { name, .. } if name == "greet"),
                "{text}"
            );
        }
        // The test data was copied, never written in place.
        let root = run.path().join("unpacked");
        assert!(root.join("data/reads/data").is_dir());
        assert!(!root.join("data/reads/data/out").exists());
    }
}

/// Two checks that each need the other running at the same time pass
/// with two slots and time out with one; the system's checks still run
/// one after another, after every tool's check.
#[test]
fn tool_checks_run_at_once_and_system_checks_after_them() {
    let pair = |me: &str, other: &str| {
        let mut t = tool("^met$", 0);
        t.name = me.into();
        t.check.timeout = 5;
        t.check.command = format!(
            "touch \"$TMPDIR/{me}\"\nwhile [ ! -e \"$TMPDIR/{other}\" ]; do sleep 0.05; done\necho met"
        );
        t
    };
    let mut sys1 = tool("^first$", 0);
    sys1.name = "system/first".into();
    sys1.category = SYSTEM_CATEGORY.into();
    // Every tool check has reported by now, and no other system check
    // runs beside this one.
    sys1.check.command = "for n in a b; do test -e \"$TMPDIR/$n\"; done\n\
        test ! -e \"$TMPDIR/second\"\nsleep 0.3\ntouch \"$TMPDIR/first\"\necho first"
        .into();
    let mut sys2 = tool("^second$", 0);
    sys2.name = "system/second".into();
    sys2.category = SYSTEM_CATEGORY.into();
    sys2.check.command = "test -e \"$TMPDIR/first\"\ntouch \"$TMPDIR/second\"\necho second".into();
    let tools = [sys1, pair("a", "b"), sys2, pair("b", "a")];
    let script = run_script(&tools);
    assert!(
        script.find("check system/second").unwrap() > script.find("check system/first").unwrap(),
        "system checks keep their order:\n{script}"
    );

    let (lines, text, _run) = run_drive(&tools, 2);
    let checks = checks_of(&lines);
    for (name, out) in [
        ("a", "met"),
        ("b", "met"),
        ("system/first", "first"),
        ("system/second", "second"),
    ] {
        assert_eq!(checks.get(name), Some(&(0, out.to_string())), "{text}");
    }
    let order: Vec<&str> = lines
        .iter()
        .filter_map(|l| match l {
            Line::Check { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(&order[2..], ["system/first", "system/second"], "{text}");

    // One slot: the first of the pair waits for the second in vain.
    let (lines, text, _run) = run_drive(&tools, 1);
    let checks = checks_of(&lines);
    assert_eq!(checks.get("a").map(|c| c.0), Some(124), "{text}");
}

/// Many checks with long outputs, four at once: every result line
/// arrives whole.
#[test]
fn parallel_result_lines_never_interleave() {
    let tools: Vec<Tool> = (0..12)
        .map(|i| {
            let mut t = tool("x", 0);
            t.name = format!("t{i}");
            // 48 KiB of this check's own letter, in several writes.
            t.check.command = format!(
                "for i in $(seq 48); do head -c 1023 /dev/zero | tr '\\0' '{}'; echo; done",
                (b'a' + i as u8) as char
            );
            t
        })
        .collect();
    let (lines, text, _run) = run_drive(&tools, 4);
    let checks = checks_of(&lines);
    assert_eq!(checks.len(), 12, "{}", &text[..text.len().min(2000)]);
    for (i, t) in tools.iter().enumerate() {
        let letter = (b'a' + i as u8) as char;
        let (status, out) = &checks[&t.name];
        assert_eq!(*status, 0);
        assert_eq!(out.len(), 48 * 1024 - 1, "{}", t.name);
        assert!(
            out.chars().all(|c| c == letter || c == '\n'),
            "{}: foreign bytes in its output",
            t.name
        );
    }
}

#[test]
fn checks_drive_holds_script_and_checks() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("c.tar");
    write_checks_drive(&[tool("x", 0)], &p).unwrap();
    let names = entry_names(&p);
    assert_eq!(names, vec!["run.sh", "checks/bwa.sh"]);
    let script = run_script(&[tool("x", 0)]);
    assert!(script.contains("\nbwa 60 $here/checks/bwa.sh -\n"));
    assert!(script.contains("emit done"));
}
