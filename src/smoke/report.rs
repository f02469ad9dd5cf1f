//! Test results: per-boot reports, the terminal table and the JSON report.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::qemu::Accel;
use crate::config::BootMode;

#[derive(Debug, Clone, PartialEq, Serialize)]
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

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub tool: String,
    #[serde(flatten)]
    pub outcome: CheckOutcome,
    pub status: i32,
    pub seconds: f64,
    pub output: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BootReport {
    pub firmware: &'static str,
    pub accel: &'static str,
    /// Seconds from QEMU start to the guest's first report line.
    pub boot_secs: Option<f64>,
    /// Seconds from QEMU start to the first check result.
    pub first_check_secs: Option<f64>,
    /// The guest's own uptime when the checks started.
    pub guest_uptime_at_start: Option<f64>,
    pub total_secs: f64,
    pub results: Vec<CheckResult>,
    /// Why the boot itself failed, if it did.
    pub error: Option<String>,
    pub serial_log: PathBuf,
    /// What the guest said about its boot (systemd-analyze), by topic.
    pub boot_analysis: std::collections::BTreeMap<String, String>,
}

impl BootReport {
    pub fn new(firmware: BootMode, accel: Accel, serial_log: PathBuf) -> BootReport {
        BootReport {
            firmware: firmware.as_str(),
            accel: accel.as_str(),
            boot_secs: None,
            first_check_secs: None,
            guest_uptime_at_start: None,
            total_secs: 0.0,
            results: Vec::new(),
            error: None,
            serial_log,
            boot_analysis: Default::default(),
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

/// Output lines shown per failed check.
const FAIL_LINES: usize = 6;

/// The terminal table: firmware, tool, result, seconds, output on failure.
pub fn table(artifact: &Path, reports: &[BootReport]) -> String {
    let mut s = String::new();
    let w = reports
        .iter()
        .flat_map(|r| r.results.iter().map(|c| c.tool.len()))
        .max()
        .unwrap_or(4)
        .max(4);
    // Wide enough for a container format's name ("docker-archive").
    let fw = reports
        .iter()
        .map(|r| r.firmware.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let _ = writeln!(s, "{}", artifact.display());
    let _ = writeln!(
        s,
        "{:<fw$} {:<w$} {:>7}  RESULT",
        "FIRMWARE", "TOOL", "SECONDS"
    );
    for r in reports {
        for c in &r.results {
            let _ = writeln!(
                s,
                "{:<fw$} {:<w$} {:>7.2}  {}",
                r.firmware,
                c.tool,
                c.seconds,
                c.outcome.describe()
            );
            if !c.outcome.passed() && !c.output.is_empty() {
                let lines: Vec<&str> = c.output.lines().collect();
                for l in lines.iter().take(FAIL_LINES) {
                    let _ = writeln!(s, "{:<fw$} {:<w$} {:>7}  | {l}", "", "", "");
                }
                if lines.len() > FAIL_LINES {
                    let _ = writeln!(
                        s,
                        "{:<fw$} {:<w$} {:>7}  | ... ({} more lines)",
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
        let _ = writeln!(
            s,
            "{}: {} ({}, {timing}, checks {:.1} s, total {:.1} s) serial log: {}",
            r.firmware,
            if r.passed() { "PASSED" } else { "FAILED" },
            r.accel,
            r.checks_secs(),
            r.total_secs,
            r.serial_log.display()
        );
        if let Some(e) = &r.error {
            let _ = writeln!(s, "{}: error: {e}", r.firmware);
        }
    }
    s
}

/// One line per failure, naming tool and firmware, for the end of the output.
pub fn failures(reports: &[BootReport]) -> Vec<String> {
    let mut v = Vec::new();
    for r in reports {
        if let Some(e) = &r.error {
            v.push(format!("{}: {e}", r.firmware));
        }
        for c in r.results.iter().filter(|c| !c.outcome.passed()) {
            v.push(format!(
                "{} under {}: {}",
                c.tool,
                r.firmware,
                c.outcome.describe()
            ));
        }
    }
    v
}
