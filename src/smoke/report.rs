//! Test results: per-boot reports, the terminal table and the JSON report.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::qemu::{Accel, Bus};
use crate::config::{BootMode, Format};

/// The name serde gives a unit variant (its JSON name), for text.
fn serde_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

/// Where a report's checks ran (JSON `firmware`): a VM under one firmware,
/// natively in the tree read out of a disk, or in a container artifact's
/// tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runner {
    Uefi,
    Bios,
    Native,
    Container,
}

impl From<BootMode> for Runner {
    fn from(m: BootMode) -> Runner {
        match m {
            BootMode::Uefi => Runner::Uefi,
            BootMode::Bios => Runner::Bios,
        }
    }
}

impl Runner {
    /// A native or container run (no VM).
    pub fn in_namespaces(self) -> bool {
        matches!(self, Runner::Native | Runner::Container)
    }
}

/// What the checks' machine sat on (JSON `bus`): the boot disk's
/// controller, or the namespaces of a native or container run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attachment {
    Virtio,
    Nvme,
    Ahci,
    Namespaces,
}

impl From<Bus> for Attachment {
    fn from(b: Bus) -> Attachment {
        match b {
            Bus::Virtio => Attachment::Virtio,
            Bus::Nvme => Attachment::Nvme,
            Bus::Ahci => Attachment::Ahci,
        }
    }
}

/// How the checks' machine ran (JSON `accel`): a VM under KVM or TCG, or
/// no VM at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    Kvm,
    Tcg,
    Native,
    Container,
}

impl From<Accel> for Engine {
    fn from(a: Accel) -> Engine {
        match a {
            Accel::Kvm => Engine::Kvm,
            Accel::Tcg => Engine::Tcg,
        }
    }
}

macro_rules! display_by_serde_name {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(&serde_name(self))
            }
        }
    )*};
}
display_by_serde_name!(Runner, Attachment, Engine);

/// Where a report's results came from when they were not run again: the
/// stored result of an earlier test of the same artifact bytes with the
/// same checks, run the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reused {
    /// The result key (see `smoke::reuse`).
    pub key: String,
    /// When the stored result was made (RFC 3339).
    pub tested_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum CheckOutcome {
    Passed,
    WrongStatus {
        expected: i32,
        got: i32,
    },
    NoMatch {
        pattern: String,
    },
    BadPattern {
        error: String,
    },
    TimedOut,
    /// The guest never reported this check.
    NotRun,
    /// The guest reported a check nobody asked for.
    Unexpected,
}

impl CheckOutcome {
    pub fn passed(&self) -> bool {
        *self == CheckOutcome::Passed
    }

    pub fn describe(&self) -> String {
        match self {
            CheckOutcome::Passed => "passed".into(),
            CheckOutcome::WrongStatus { expected, got } => {
                format!("FAILED: exit status {got}, expected {expected}")
            }
            CheckOutcome::NoMatch { pattern } => {
                format!("FAILED: output does not match /{pattern}/")
            }
            CheckOutcome::BadPattern { error } => format!("FAILED: bad pattern: {error}"),
            CheckOutcome::TimedOut => "FAILED: timed out".into(),
            CheckOutcome::NotRun => "FAILED: not run".into(),
            CheckOutcome::Unexpected => "FAILED: unexpected check".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    pub tool: String,
    #[serde(flatten)]
    pub outcome: CheckOutcome,
    pub status: i32,
    pub seconds: f64,
    pub output: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootReport {
    /// The artifact's file name.
    pub artifact: String,
    pub format: Format,
    /// Where the checks ran: the VM's firmware, or `native`/`container`.
    pub firmware: Runner,
    /// The boot disk's controller (`virtio`, `nvme`, `ahci`), or
    /// `namespaces` for a native or container run.
    pub bus: Attachment,
    pub accel: Engine,
    /// Why the accelerator differs from the one first tried (a boot that
    /// stalled under KVM and was retried under TCG).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accel_note: Option<String>,
    /// Seconds from QEMU start to the guest's first report line.
    pub boot_secs: Option<f64>,
    /// Seconds from QEMU start to the first check result.
    pub first_check_secs: Option<f64>,
    /// The guest's own uptime when the checks started.
    pub guest_uptime_at_start: Option<f64>,
    /// Seconds spent getting the disk ready to boot (e.g. out of an OVA).
    pub prepare_secs: f64,
    /// Seconds the guest waited for its slots ([`super::slots`]) while
    /// other biovm guests on the machine held them; not part of its boot.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub slot_wait_secs: f64,
    /// A VM boot's processors (its guest slots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    pub total_secs: f64,
    pub results: Vec<CheckResult>,
    /// Why the boot itself failed, if it did.
    pub error: Option<String>,
    pub serial_log: PathBuf,
    /// What the guest said about its boot (systemd-analyze), by topic.
    pub boot_analysis: std::collections::BTreeMap<String, String>,
    /// Where a VM boot's time went, stage by stage (see `stages`).
    pub boot_stages: Vec<super::stages::Stage>,
    /// The SHA-256 of the disk QEMU booted, where it was compared with
    /// another cell's.
    pub disk_sha256: Option<String>,
    /// The cell (`minimal.vmdk uefi`) whose boot this cell's results are:
    /// its disk is byte-for-byte that cell's, booted on the same controller
    /// under the same firmware and cloud, so booting it again would repeat
    /// that boot.
    pub same_boot_as: Option<String>,
    /// Whether that cell's disk is another file in another format, whose
    /// contents as the guest reads them (virtual size and every sector)
    /// were compared with this cell's and found equal; false where the
    /// disks are the same bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub same_boot_by_contents: bool,
    /// The user the checks ran as, where not root (the native run runs
    /// them as the image's default user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Set when these results were not run again but taken from the store:
    /// the same artifact bytes, checks and runner passed before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused: Option<Reused>,
    /// A native run whose disk (the very bytes the build wrote) was mounted
    /// read-only under a writable overlay instead of copied out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disk_mounted: bool,
    /// A container run whose checks ran in this disk artifact's tree (file
    /// name), mounted as the native run's is, less what the container's
    /// format leaves out: the container's layers were read and shown to
    /// hold that very tree (its `system/same-tree`), so it was not unpacked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_of: Option<String>,
}

impl BootReport {
    /// An empty report of a run of `format`'s artifact.
    pub fn new(
        format: Format,
        firmware: Runner,
        bus: Attachment,
        accel: Engine,
        serial_log: PathBuf,
    ) -> BootReport {
        BootReport {
            artifact: String::new(),
            format,
            firmware,
            bus,
            prepare_secs: 0.0,
            slot_wait_secs: 0.0,
            cpus: None,
            accel,
            accel_note: None,
            boot_secs: None,
            first_check_secs: None,
            guest_uptime_at_start: None,
            total_secs: 0.0,
            results: Vec::new(),
            error: None,
            serial_log,
            boot_analysis: Default::default(),
            boot_stages: Vec::new(),
            disk_sha256: None,
            same_boot_as: None,
            same_boot_by_contents: false,
            user: None,
            reused: None,
            disk_mounted: false,
            tree_of: None,
        }
    }

    pub fn passed(&self) -> bool {
        self.error.is_none() && self.results.iter().all(|r| r.outcome.passed())
    }

    /// Seconds the checks themselves took (first check to last).
    pub fn checks_secs(&self) -> f64 {
        self.results.iter().map(|r| r.seconds).sum()
    }
}

impl BootReport {
    /// The report of a container artifact whose checks could not start.
    pub fn container_failed_to_start(
        artifact: &std::path::Path,
        format: crate::config::Format,
        e: &anyhow::Error,
    ) -> BootReport {
        let mut r = BootReport::in_namespaces(artifact, format, PathBuf::new());
        r.error = Some(format!("{e:#}"));
        r
    }

    /// An empty report of the native run (in the tree of a disk
    /// `artifact`) or container run (in a container `artifact`'s tree).
    pub fn in_namespaces(artifact: &std::path::Path, format: Format, log: PathBuf) -> BootReport {
        let (runner, engine) = if format.is_disk() {
            (Runner::Native, Engine::Native)
        } else {
            (Runner::Container, Engine::Container)
        };
        let mut r = BootReport::new(format, runner, Attachment::Namespaces, engine, log);
        r.artifact = artifact
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        r
    }

    /// `minimal.raw uefi`: how a cell is named in tables and failures.
    pub fn cell(&self) -> String {
        format!("{} {}", self.artifact, self.firmware)
    }
}

/// Output lines shown per failed check.
const FAIL_LINES: usize = 6;

/// The terminal table: artifact, firmware, tool, seconds, result, and the
/// output of failed checks; then one summary line per boot.
pub fn table(reports: &[BootReport]) -> String {
    let mut s = String::new();
    let w = reports
        .iter()
        .flat_map(|r| r.results.iter().map(|c| c.tool.len()))
        .max()
        .unwrap_or(4)
        .max(4);
    // Wide enough for "container" as well as the firmware names.
    let fw = reports
        .iter()
        .map(|r| r.firmware.to_string().len())
        .max()
        .unwrap_or(8)
        .max(8);
    let aw = reports
        .iter()
        .map(|r| r.artifact.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let _ = writeln!(
        s,
        "{:<aw$} {:<fw$} {:<w$} {:>7}  RESULT",
        "ARTIFACT", "FIRMWARE", "TOOL", "SECONDS"
    );
    for r in reports {
        for c in &r.results {
            let _ = writeln!(
                s,
                "{:<aw$} {:<fw$} {:<w$} {:>7.2}  {}",
                r.artifact,
                r.firmware,
                c.tool,
                c.seconds,
                c.outcome.describe()
            );
            if !c.outcome.passed() && !c.output.is_empty() {
                let lines: Vec<&str> = c.output.lines().collect();
                for l in lines.iter().take(FAIL_LINES) {
                    let _ = writeln!(s, "{:<aw$} {:<fw$} {:<w$} {:>7}  | {l}", "", "", "", "");
                }
                if lines.len() > FAIL_LINES {
                    let _ = writeln!(
                        s,
                        "{:<aw$} {:<fw$} {:<w$} {:>7}  | ... ({} more lines)",
                        "",
                        "",
                        "",
                        "",
                        lines.len() - FAIL_LINES
                    );
                }
            }
        }
    }
    for r in reports {
        let timing = match (r.boot_secs, r.first_check_secs) {
            (Some(b), Some(f)) => format!("boot {b:.1} s, first check at {f:.1} s"),
            (Some(b), None) => format!("boot {b:.1} s"),
            _ => "did not boot".into(),
        };
        let container = r.firmware.in_namespaces();
        let prepare = match (r.prepare_secs >= 0.05, container) {
            _ if r.disk_mounted => match &r.tree_of {
                Some(d) => format!(
                    "layers read {:.1} s, run in {d}'s tree (the same), ",
                    r.prepare_secs
                ),
                None => format!("disk mounted read-only {:.1} s, ", r.prepare_secs),
            },
            (false, _) => String::new(),
            (true, false) => format!("disk prepared {:.1} s, ", r.prepare_secs),
            (true, true) => format!("unpacked {:.1} s, ", r.prepare_secs),
        };
        let prepare = if r.slot_wait_secs >= 0.05 {
            format!(
                "waited {:.1} s for a guest slot, {prepare}",
                r.slot_wait_secs
            )
        } else {
            prepare
        };
        let log = if container {
            "results log"
        } else {
            "serial log"
        };
        let user = match &r.user {
            Some(u) => format!("as {u}, "),
            None => String::new(),
        };
        let shared = match &r.same_boot_as {
            Some(c) if r.same_boot_by_contents => {
                format!(
                    "same disk contents as {c} (compared sector by sector), results of that boot, "
                )
            }
            Some(c) => format!("same disk as {c}, results of that boot, "),
            None => String::new(),
        };
        let cpus = match r.cpus {
            Some(1) => ", 1 processor".to_string(),
            Some(n) => format!(", {n} processors"),
            None => String::new(),
        };
        let _ = writeln!(
            s,
            "{}: {} ({}, {}{cpus}, {user}{shared}{prepare}{timing}, checks {:.1} s, total {:.1} s) {log}: {}",
            r.cell(),
            if r.passed() { "PASSED" } else { "FAILED" },
            r.accel,
            r.bus,
            r.checks_secs(),
            r.total_secs,
            r.serial_log.display()
        );
        if let Some(n) = &r.accel_note {
            let _ = writeln!(s, "{}: {n}", r.cell());
        }
        if let Some(u) = &r.reused {
            let _ = writeln!(
                s,
                "{}: reused: not run again, these are the results of {} (same artifact bytes, \
                 checks and runner; --rerun runs it again)",
                r.cell(),
                u.tested_at
            );
        }
        if let Some(e) = &r.error {
            let _ = writeln!(s, "{}: error: {e}", r.cell());
        }
    }
    s
}

/// One line per failure, naming tool, artifact and firmware, for the end
/// of the output.
pub fn failures(reports: &[BootReport]) -> Vec<String> {
    let mut v = Vec::new();
    for r in reports {
        if let Some(e) = &r.error {
            v.push(format!("{}: {e}", r.cell()));
        }
        for c in r.results.iter().filter(|c| !c.outcome.passed()) {
            v.push(format!(
                "{} in {} under {}: {}",
                c.tool,
                r.artifact,
                r.firmware,
                c.outcome.describe()
            ));
        }
    }
    v
}

/// Text made safe for XML: markup escaped, characters XML 1.0 forbids
/// (most control characters) replaced.
fn xml_escape(t: &str) -> String {
    let mut o = String::with_capacity(t.len());
    for ch in t.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' | '\n' | '\r' => o.push(ch),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

/// JUnit XML (the dialect Jenkins, GitLab and GitHub reporters read): one
/// `testsuite` per boot (artifact and firmware), one `testcase` per check,
/// plus a `boot` test case that fails when the guest never reached its
/// checks.
pub fn junit(reports: &[BootReport]) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let total: usize = reports.iter().map(|r| r.results.len() + 1).sum();
    let failed: usize = reports
        .iter()
        .map(|r| {
            r.results.iter().filter(|c| !c.outcome.passed()).count()
                + usize::from(r.error.is_some())
        })
        .sum();
    let time: f64 = reports.iter().map(|r| r.total_secs).sum();
    let _ = writeln!(
        s,
        "<testsuites name=\"biovm test\" tests=\"{total}\" failures=\"{failed}\" time=\"{time:.3}\">"
    );
    for r in reports {
        let class = xml_escape(&format!("{}.{}", r.artifact, r.firmware));
        let fails = r.results.iter().filter(|c| !c.outcome.passed()).count()
            + usize::from(r.error.is_some());
        let _ = writeln!(
            s,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{fails}\" time=\"{:.3}\">",
            xml_escape(&r.cell()),
            r.results.len() + 1,
            r.total_secs
        );
        let _ = writeln!(s, "    <properties>");
        for (k, v) in [
            ("artifact", r.artifact.as_str()),
            ("format", r.format.as_str()),
            ("firmware", &r.firmware.to_string()),
            ("bus", &r.bus.to_string()),
            ("accel", &r.accel.to_string()),
            ("accel-note", r.accel_note.as_deref().unwrap_or("")),
            ("disk-sha256", r.disk_sha256.as_deref().unwrap_or("")),
            ("same-boot-as", r.same_boot_as.as_deref().unwrap_or("")),
            (
                "same-boot-by-contents",
                if r.same_boot_by_contents { "true" } else { "" },
            ),
        ] {
            if v.is_empty() {
                continue;
            }
            let _ = writeln!(
                s,
                "      <property name=\"{k}\" value=\"{}\"/>",
                xml_escape(v)
            );
        }
        let _ = writeln!(s, "    </properties>");
        let boot_time = r.boot_secs.unwrap_or(r.total_secs);
        match &r.error {
            None => {
                let _ = writeln!(
                    s,
                    "    <testcase classname=\"{class}\" name=\"boot\" time=\"{boot_time:.3}\"/>"
                );
            }
            Some(e) => {
                let _ = writeln!(
                    s,
                    "    <testcase classname=\"{class}\" name=\"boot\" time=\"{boot_time:.3}\">\n      <failure message=\"{}\">serial log: {}</failure>\n    </testcase>",
                    xml_escape(e),
                    xml_escape(&r.serial_log.display().to_string())
                );
            }
        }
        for c in &r.results {
            let name = xml_escape(&c.tool);
            if c.outcome.passed() {
                let _ = writeln!(
                    s,
                    "    <testcase classname=\"{class}\" name=\"{name}\" time=\"{:.3}\"/>",
                    c.seconds
                );
            } else {
                let _ = writeln!(
                    s,
                    "    <testcase classname=\"{class}\" name=\"{name}\" time=\"{:.3}\">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                    c.seconds,
                    xml_escape(&c.outcome.describe()),
                    xml_escape(&c.output)
                );
            }
        }
        let _ = writeln!(s, "  </testsuite>");
    }
    s.push_str("</testsuites>\n");
    s
}

/// For serde: leave out a zero wait.
fn is_zero(secs: &f64) -> bool {
    *secs == 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(fw: BootMode, results: Vec<(&str, CheckOutcome, &str)>) -> BootReport {
        let mut r = BootReport::new(
            Format::Ova,
            fw.into(),
            Attachment::Ahci,
            Accel::Tcg.into(),
            PathBuf::from("/o/minimal.test/x.log"),
        );
        r.artifact = "minimal.ova".into();
        r.total_secs = 12.5;
        r.boot_secs = Some(7.0);
        r.results = results
            .into_iter()
            .map(|(t, o, out)| CheckResult {
                tool: t.into(),
                outcome: o,
                status: 0,
                seconds: 1.25,
                output: out.into(),
            })
            .collect();
        r
    }

    #[test]
    fn a_report_reads_back_as_written_with_the_names_it_had() {
        let mut r = report(
            BootMode::Bios,
            vec![(
                "samtools",
                CheckOutcome::WrongStatus {
                    expected: 0,
                    got: 1,
                },
                "x",
            )],
        );
        r.reused = Some(Reused {
            key: "k".into(),
            tested_at: "2026-12-05T19:00:00Z".into(),
        });
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            (&v["format"], &v["firmware"], &v["bus"], &v["accel"]),
            (
                &serde_json::json!("ova"),
                &serde_json::json!("bios"),
                &serde_json::json!("ahci"),
                &serde_json::json!("tcg")
            )
        );
        assert_eq!(v["results"][0]["result"], "wrong-status");
        let back: BootReport = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), v);
        let n = BootReport::in_namespaces(
            std::path::Path::new("/o/minimal.raw"),
            Format::Raw,
            PathBuf::new(),
        );
        assert_eq!(
            format!("{} {} {} {}", n.cell(), n.bus, n.accel, n.format.as_str()),
            "minimal.raw native namespaces native raw"
        );
        assert!(table(&[r]).contains("minimal.ova bios: reused: not run again"));
    }

    #[test]
    fn junit_has_a_case_per_check_and_per_boot_and_parses() {
        let mut broken = report(BootMode::Bios, vec![("bwa", CheckOutcome::NotRun, "")]);
        broken.error = Some("the guest did not reach the checks within 300 s".into());
        let reports = vec![
            report(
                BootMode::Uefi,
                vec![
                    ("bwa", CheckOutcome::Passed, "Version: 0.7"),
                    (
                        "samtools/sort",
                        CheckOutcome::NoMatch {
                            pattern: "^x<y".into(),
                        },
                        "bad \u{1b}[0m <output> & more",
                    ),
                ],
            ),
            broken,
        ];
        let xml = junit(&reports);
        // An independent parser reads it and counts what it holds.
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("junit.xml");
        std::fs::write(&f, &xml).unwrap();
        let py = "import sys, xml.etree.ElementTree as E\n\
r = E.parse(sys.argv[1]).getroot()\n\
cases = r.findall('./testsuite/testcase')\n\
print(r.get('tests'), r.get('failures'), len(r.findall('testsuite')), len(cases), sum(1 for c in cases if c.find('failure') is not None))\n\
print([c.get('classname') + ':' + c.get('name') for c in cases if c.find('failure') is not None])\n\
print(r.find('./testsuite/testcase[@name=\"samtools/sort\"]/failure').text)";
        let out = crate::cmd::Cmd::new("python3")
            .args(["-c", py])
            .arg(&f)
            .output()
            .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        // 2 boots + 3 checks = 5 cases; failures: samtools, bios boot, bwa not run.
        assert_eq!(lines[0], "5 3 2 5 3", "{xml}");
        assert_eq!(
            lines[1],
            "['minimal.ova.uefi:samtools/sort', 'minimal.ova.bios:boot', 'minimal.ova.bios:bwa']"
        );
        assert_eq!(lines[2], "bad \u{fffd}[0m <output> & more");
    }

    #[test]
    fn failures_name_tool_artifact_and_firmware() {
        let r = report(
            BootMode::Bios,
            vec![
                ("bwa", CheckOutcome::Passed, ""),
                ("samtools", CheckOutcome::TimedOut, ""),
            ],
        );
        assert_eq!(
            failures(std::slice::from_ref(&r)),
            vec!["samtools in minimal.ova under bios: FAILED: timed out"]
        );
        let t = table(&[r]);
        assert!(
            t.contains("minimal.ova bios: FAILED (tcg, ahci, boot 7.0 s"),
            "{t}"
        );
    }
}
