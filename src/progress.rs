//! Progress of long commands, reported one way whatever the command:
//!
//! - on a terminal (stderr is a TTY): indicatif spinners for stages and
//!   bars with rates and ETAs where there is a count (bytes uploaded,
//!   boots done), with a line left behind for every finished stage;
//! - not on a terminal: plain lines on stderr
//!   (`[build] bootstrap: started`, `[build] bootstrap: finished in 12.3 s`);
//! - with `--json`: one JSON object per line on stdout for every event
//!   ([`Event`]), for CI;
//! - with `-q`: nothing.
//!
//! The hooks are small: [`stage`] wraps a closure, [`start`] returns a
//! [`Stage`] to finish or fail, [`bytes`] and [`units`] return a counting
//! stage whose `inc` is cheap and may be called from many threads.
//!
//! ```text
//! // Not a doctest (this module is the crate's own, not its public face):
//! // `tests::the_module_example_runs` runs it.
//! crate::progress::stage("build", "bootstrap", || -> anyhow::Result<()> { Ok(()) })?;
//! let upload = crate::progress::bytes("publish", "upload", 40 << 20);
//! upload.inc(512 << 10);
//! upload.finish();
//! ```
//!
//! One reporter serves the whole process: [`init`] chooses its mode once
//! (the CLI does it from `--json` and `-q`); without it, the mode follows
//! stderr (bars on a terminal, plain lines otherwise).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
#[cfg(test)]
use std::sync::Arc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Spinners and bars on stderr.
    Terminal,
    /// Plain lines on stderr.
    Plain,
    /// JSON events on stdout, one per line.
    Json,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// `--json` wins, then `-q`; otherwise bars when stderr is a terminal
    /// (and `TERM` is not `dumb`), plain lines when it is not.
    pub fn detect(json: bool, quiet: bool) -> Mode {
        if json {
            Mode::Json
        } else if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal()
            && std::env::var("TERM").map_or(true, |t| t != "dumb")
        {
            Mode::Terminal
        } else {
            Mode::Plain
        }
    }
}

/// One event. In JSON mode every event is printed as one line: its kind
/// in `event` (`stage-started`, `progress`, `stage-finished`, `message`,
/// `error` or `result`), then its fields; fields without a value are left
/// out.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A stage began; a counting stage says how many units it expects.
    StageStarted {
        /// The part of biovm reporting: `build`, `test`, `publish`, `launch`, ...
        command: String,
        stage: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        total: Option<u64>,
        /// `bytes`, `blocks`, `boots`, ...
        #[serde(skip_serializing_if = "Option::is_none")]
        unit: Option<String>,
    },
    /// A counting stage's count so far.
    Progress {
        command: String,
        stage: String,
        /// Units done so far.
        done: u64,
        /// Units in all.
        total: u64,
        unit: String,
        /// Seconds since the stage started.
        secs: f64,
        /// Units per second since the stage started.
        #[serde(skip_serializing_if = "Option::is_none")]
        rate: Option<f64>,
    },
    /// A stage ended, well (`ok`) or not; a counting stage carries its
    /// last count.
    StageFinished {
        command: String,
        stage: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        done: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        total: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        unit: Option<String>,
        secs: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        rate: Option<f64>,
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A line of news from a command, or from one of its stages.
    Message {
        command: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        stage: Option<String>,
        message: String,
    },
    /// The command failed.
    Error { command: String, message: String },
    /// What the command produced (its JSON output).
    Result {
        command: String,
        result: serde_json::Value,
    },
}

impl Event {
    /// The line printed for this event when stderr is not a terminal.
    pub fn plain(&self) -> Option<String> {
        let head = |command: &str, stage: Option<&str>| match stage {
            Some(s) => format!("[{command}] {s}"),
            None => format!("[{command}]"),
        };
        match self {
            Event::StageStarted { command, stage, .. } => {
                Some(format!("{}: started", head(command, Some(stage))))
            }
            Event::Progress {
                command,
                stage,
                done,
                total,
                unit,
                rate,
                ..
            } => {
                let amount = Amount {
                    done: *done,
                    total: Some(*total),
                    unit,
                    rate: *rate,
                };
                Some(format!(
                    "{}: {}",
                    head(command, Some(stage)),
                    amount.text(true)
                ))
            }
            Event::StageFinished {
                command,
                stage,
                done,
                total,
                unit,
                secs,
                rate,
                ok,
                message,
            } => {
                let head = head(command, Some(stage));
                let amount = match done {
                    Some(done) => {
                        let amount = Amount {
                            done: *done,
                            total: *total,
                            unit: unit.as_deref().unwrap_or(""),
                            rate: *rate,
                        };
                        format!(" ({})", amount.text(false))
                    }
                    None => String::new(),
                };
                if *ok {
                    Some(format!("{head}: finished in {secs:.1} s{amount}"))
                } else {
                    let why = message
                        .as_deref()
                        .map(|m| format!(": {}", first_line(m, 200)))
                        .unwrap_or_default();
                    Some(format!("{head}: failed after {secs:.1} s{amount}{why}"))
                }
            }
            Event::Message {
                command,
                stage,
                message,
            } => Some(format!("{}: {message}", head(command, stage.as_deref()))),
            Event::Error { .. } | Event::Result { .. } => None,
        }
    }

    /// Whether a terminal shows this event as a line above its bars (the
    /// bars themselves show starts and progress).
    fn stays_on_terminal(&self) -> bool {
        matches!(self, Event::StageFinished { .. } | Event::Message { .. })
    }
}

/// A count as a plain line shows it.
struct Amount<'a> {
    done: u64,
    total: Option<u64>,
    /// `bytes` shows sizes and byte rates; any other unit is a word.
    unit: &'a str,
    rate: Option<f64>,
}

/// The unit whose counts are shown as sizes.
const BYTES: &str = "bytes";

impl Amount<'_> {
    /// "12.0 MiB of 40.0 MiB (30%), 5.1 MiB/s, ETA 6 s" or "3 of 12 boots".
    fn text(&self, running: bool) -> String {
        let (unit, done) = (self.unit, self.done);
        let bytes = unit == BYTES;
        let fmt = |n: u64| {
            if bytes {
                HumanBytes(n).to_string()
            } else {
                n.to_string()
            }
        };
        let unit_word = if bytes {
            String::new()
        } else {
            format!(" {unit}")
        };
        let mut s = match self.total {
            // A finished count: just the amount.
            Some(t) if !running && done == t => format!("{}{unit_word}", fmt(done)),
            Some(t) if t > 0 => format!(
                "{} of {}{unit_word} ({}%)",
                fmt(done),
                fmt(t),
                done.min(t) * 100 / t
            ),
            _ if bytes => fmt(done),
            _ => format!("{done} {unit}"),
        };
        if let Some(r) = self.rate.filter(|r| *r > 0.0) {
            if bytes {
                s.push_str(&format!(", {}/s", HumanBytes(r as u64)));
            } else {
                s.push_str(&format!(", {} {unit}/s", rate_text(r)));
            }
            if let (true, Some(t)) = (running, self.total) {
                if t > done {
                    s.push_str(&format!(", ETA {:.0} s", (t - done) as f64 / r));
                }
            }
        }
        s
    }
}

/// A rate with about three significant digits: 0.0412, 1.25, 37.5, 1200.
fn rate_text(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else if r >= 10.0 {
        format!("{r:.1}")
    } else if r >= 1.0 {
        format!("{r:.2}")
    } else {
        format!("{r:.3}")
    }
}

/// `r` rounded to three significant digits, for the JSON events.
fn round3(r: f64) -> f64 {
    if r <= 0.0 || !r.is_finite() {
        return 0.0;
    }
    let scale = 10f64.powi(2 - r.log10().floor() as i32);
    (r * scale).round() / scale
}

fn first_line(s: &str, max: usize) -> String {
    let l = s.lines().next().unwrap_or_default();
    if l.chars().count() > max {
        format!("{}...", l.chars().take(max).collect::<String>())
    } else {
        l.to_string()
    }
}

/// Where the lines go.
enum Sink {
    /// The process's stdout (JSON) or stderr (plain lines).
    Std,
    /// A buffer, for tests.
    #[cfg(test)]
    Buffer(Arc<Mutex<Vec<u8>>>),
}

/// Shows the progress of one process (see the module documentation).
pub struct Reporter {
    mode: Mode,
    sink: Sink,
    multi: Option<MultiProgress>,
    /// Least time between two progress events of one stage.
    interval: Duration,
    /// Serialises writes so lines from worker threads never interleave.
    lock: Mutex<()>,
}

/// Seconds between progress lines (plain) or events (JSON), unless
/// `BIOVM_PROGRESS_INTERVAL` says otherwise.
fn interval_for(mode: Mode) -> Duration {
    if let Some(s) = std::env::var("BIOVM_PROGRESS_INTERVAL")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
    {
        return Duration::from_secs_f64(s);
    }
    match mode {
        Mode::Json => Duration::from_secs(1),
        _ => Duration::from_secs(10),
    }
}

impl Reporter {
    pub fn new(mode: Mode) -> Reporter {
        let multi = (mode == Mode::Terminal)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Reporter {
            mode,
            sink: Sink::Std,
            multi,
            interval: interval_for(mode),
            lock: Mutex::new(()),
        }
    }

    /// A reporter writing plain lines or JSON events into a buffer.
    #[cfg(test)]
    pub fn buffered(mode: Mode, interval: Duration) -> (Reporter, Arc<Mutex<Vec<u8>>>) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let r = Reporter {
            mode,
            sink: Sink::Buffer(Arc::clone(&buf)),
            multi: None,
            interval,
            lock: Mutex::new(()),
        };
        (r, buf)
    }

    fn write_line(&self, line: &str, stdout: bool) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        match &self.sink {
            #[cfg(test)]
            Sink::Buffer(b) => {
                let mut b = b.lock().unwrap_or_else(|e| e.into_inner());
                b.extend_from_slice(line.as_bytes());
                b.push(b'\n');
            }
            // A closed pipe must not kill the command: errors are ignored.
            Sink::Std if stdout => {
                let mut o = std::io::stdout().lock();
                let _ = writeln!(o, "{line}");
                let _ = o.flush();
            }
            Sink::Std => match &self.multi {
                Some(m) => {
                    let _ = m.println(line);
                }
                None => eprintln!("{line}"),
            },
        }
    }

    /// Print `e` as this mode prints it.
    pub fn emit(&self, e: &Event) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Json => {
                if let Ok(line) = serde_json::to_string(e) {
                    self.write_line(&line, true);
                }
            }
            Mode::Plain => {
                if let Some(l) = e.plain() {
                    self.write_line(&l, false);
                }
            }
            // The bars show starts and progress; finished stages and
            // messages stay as lines above them.
            Mode::Terminal => {
                if e.stays_on_terminal() {
                    if let Some(l) = e.plain() {
                        self.write_line(&l, false);
                    }
                }
            }
        }
    }

    /// Start a stage without a count (a spinner on a terminal).
    pub fn start(&self, command: &str, stage: &str) -> Stage<'_> {
        self.begin(command, stage, None, None)
    }

    /// Start a stage that counts `total` units of `unit` (`bytes` shows
    /// sizes and byte rates).
    pub fn count(&self, command: &str, stage: &str, total: u64, unit: &str) -> Stage<'_> {
        self.begin(command, stage, Some(total), Some(unit))
    }

    fn begin(
        &self,
        command: &str,
        stage: &str,
        total: Option<u64>,
        unit: Option<&str>,
    ) -> Stage<'_> {
        let bar = self.multi.as_ref().map(|m| {
            let prefix = format!("[{command}] {stage}");
            let pb = match (total, unit) {
                (Some(t), Some(BYTES)) => ProgressBar::new(t).with_style(style(
                    "{spinner} {prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                )),
                (Some(t), u) => ProgressBar::new(t).with_style(style(&format!(
                    "{{spinner}} {{prefix}} [{{bar:30}}] {{human_pos}}/{{human_len}} {} {{per_sec}} ETA {{eta}} {{msg}}",
                    u.unwrap_or("")
                ))),
                _ => ProgressBar::new_spinner().with_style(style("{spinner} {prefix} {elapsed} {msg}")),
            };
            let pb = m.add(pb.with_prefix(prefix));
            pb.enable_steady_tick(Duration::from_millis(150));
            pb
        });
        let s = Stage {
            r: self,
            command: command.to_string(),
            stage: stage.to_string(),
            started: Instant::now(),
            total: AtomicU64::new(total.unwrap_or(0)),
            counted: total.is_some(),
            unit: unit.map(str::to_string),
            done: AtomicU64::new(0),
            emitted: AtomicU64::new(0),
            last: Mutex::new(Instant::now()),
            ended: AtomicBool::new(false),
            bar,
        };
        self.emit(&Event::StageStarted {
            command: command.to_string(),
            stage: stage.to_string(),
            total,
            unit: s.unit.clone(),
        });
        s
    }

    /// A line of news from a command (`[launch] i-0abc is pending`).
    pub fn message(&self, command: &str, stage: Option<&str>, text: &str) {
        self.emit(&Event::Message {
            command: command.to_string(),
            stage: stage.map(str::to_string),
            message: text.to_string(),
        });
    }

    /// The command failed: an `error` event (JSON only; the CLI prints
    /// the error itself on stderr).
    pub fn error(&self, command: &str, message: &str) {
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
        if self.mode == Mode::Json {
            self.emit(&Event::Error {
                command: command.to_string(),
                message: message.to_string(),
            });
        }
    }

    /// What the command produced, as the last JSON event (JSON only).
    pub fn result(&self, command: &str, value: serde_json::Value) {
        if self.mode == Mode::Json {
            self.emit(&Event::Result {
                command: command.to_string(),
                result: value,
            });
        }
    }

    /// Run `f` with the terminal's bars put away (for log lines).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.multi {
            Some(m) => m.suspend(f),
            None => f(),
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// A stage in progress. Finish it with [`Stage::finish`] or
/// [`Stage::fail`]; one dropped unfinished (an early return, a panic) is
/// reported as failed.
pub struct Stage<'r> {
    r: &'r Reporter,
    command: String,
    stage: String,
    started: Instant,
    counted: bool,
    total: AtomicU64,
    unit: Option<String>,
    done: AtomicU64,
    /// `done` when the last progress event went out.
    emitted: AtomicU64,
    last: Mutex<Instant>,
    ended: AtomicBool,
    bar: Option<ProgressBar>,
}

impl Stage<'_> {
    /// Seconds since the start, to the millisecond.
    fn secs(&self) -> f64 {
        (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
    }

    /// The count so far and its rate, for a counting stage.
    fn count(&self, secs: f64) -> Option<(u64, u64, Option<f64>)> {
        self.counted.then(|| {
            let done = self.done.load(Ordering::Relaxed);
            let rate = (secs > 0.0 && done > 0).then(|| round3(done as f64 / secs));
            (done, self.total.load(Ordering::Relaxed), rate)
        })
    }

    /// A `progress` event with the count so far (only counting stages
    /// send one).
    fn progress_event(&self) -> Event {
        let secs = self.secs();
        let (done, total, rate) = self.count(secs).unwrap_or((0, 0, None));
        Event::Progress {
            command: self.command.clone(),
            stage: self.stage.clone(),
            done,
            total,
            unit: self.unit.clone().unwrap_or_default(),
            secs,
            rate,
        }
    }

    /// `n` more units done. Cheap; callable from many threads at once.
    pub fn inc(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        }
        // A stage that does not count has no progress to report.
        if self.counted && matches!(self.r.mode, Mode::Plain | Mode::Json) {
            // Emitted under the lock, so counts only ever go up, whichever
            // thread reports.
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() >= self.r.interval {
                *last = Instant::now();
                let e = self.progress_event();
                let done = self.done.load(Ordering::Relaxed);
                if done > self.emitted.load(Ordering::Relaxed) {
                    self.emitted.store(done, Ordering::Relaxed);
                    self.r.emit(&e);
                }
            }
        }
    }

    /// The count, when it becomes known after the start.
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_length(total);
        }
    }

    /// News about the stage: the spinner's message on a terminal, a line
    /// or a `message` event otherwise.
    pub fn message(&self, text: &str) {
        match &self.bar {
            Some(b) => b.set_message(text.to_string()),
            None => self.r.message(&self.command, Some(&self.stage), text),
        }
    }

    fn end(&self, ok: bool, message: Option<&str>) {
        if self.ended.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Some(b) = &self.bar {
            b.finish_and_clear();
            if let Some(m) = &self.r.multi {
                m.remove(b);
            }
        }
        // The last count, if the last progress event did not carry it.
        if self.counted && self.r.mode == Mode::Json {
            let _last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if self.done.load(Ordering::Relaxed) != self.emitted.load(Ordering::Relaxed) {
                self.r.emit(&self.progress_event());
            }
        }
        let secs = self.secs();
        let count = self.count(secs);
        self.r.emit(&Event::StageFinished {
            command: self.command.clone(),
            stage: self.stage.clone(),
            done: count.map(|c| c.0),
            total: count.map(|c| c.1),
            unit: count.and(self.unit.clone()),
            secs,
            rate: count.and_then(|c| c.2),
            ok,
            message: message.map(str::to_string),
        });
    }

    pub fn finish(self) {
        self.end(true, None);
    }

    pub fn fail(self, message: &str) {
        self.end(false, Some(message));
    }
}

impl Drop for Stage<'_> {
    fn drop(&mut self) {
        if !self.ended.load(Ordering::Relaxed) {
            let why = if std::thread::panicking() {
                "panicked"
            } else {
                "stopped before finishing"
            };
            self.end(false, Some(why));
        }
    }
}

static GLOBAL: OnceLock<Reporter> = OnceLock::new();

/// Choose how this process reports progress; the first call wins.
pub fn init(mode: Mode) {
    let _ = GLOBAL.set(Reporter::new(mode));
}

/// The process's reporter.
pub fn global() -> &'static Reporter {
    GLOBAL.get_or_init(|| Reporter::new(Mode::detect(false, false)))
}

/// Run `f` as stage `stage` of `command`: started, then finished or failed
/// with the error.
pub fn stage<T, E: std::fmt::Display>(
    command: &str,
    stage: &str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let s = start(command, stage);
    match f() {
        Ok(v) => {
            s.finish();
            Ok(v)
        }
        Err(e) => {
            s.fail(&format!("{e:#}"));
            Err(e)
        }
    }
}

/// Start a stage (a spinner); finish or fail the handle.
pub fn start(command: &str, stage: &str) -> Stage<'static> {
    global().start(command, stage)
}

/// Start a stage counting `total` bytes (a bar with a byte rate and ETA).
pub fn bytes(command: &str, stage: &str, total: u64) -> Stage<'static> {
    global().count(command, stage, total, BYTES)
}

/// Start a stage counting `total` units (`boots`, `blocks`, `parts`).
pub fn units(command: &str, stage: &str, total: u64, unit: &str) -> Stage<'static> {
    global().count(command, stage, total, unit)
}

/// The command failed (an `error` event in JSON mode).
pub fn error(command: &str, message: &str) {
    global().error(command, message)
}

/// What the command produced, as a `result` event (JSON mode only).
pub fn result(command: &str, value: serde_json::Value) {
    global().result(command, value)
}

/// A writer for log lines that keeps the terminal's bars intact (give it
/// to the logger).
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        global().suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in the module's documentation.
    #[test]
    fn the_module_example_runs() -> anyhow::Result<()> {
        crate::progress::stage("build", "bootstrap", || -> anyhow::Result<()> { Ok(()) })?;
        let upload = crate::progress::bytes("publish", "upload", 40 << 20);
        upload.inc(512 << 10);
        upload.finish();
        Ok(())
    }

    fn lines(b: &Arc<Mutex<Vec<u8>>>) -> Vec<String> {
        String::from_utf8(b.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn plain_lines_name_the_command_stage_and_time() {
        let (r, buf) = Reporter::buffered(Mode::Plain, Duration::from_secs(3600));
        r.start("build", "bootstrap").finish();
        r.start("build", "disk")
            .fail("mkfs.ext4 failed\nsecond line");
        let l = lines(&buf);
        assert_eq!(l.len(), 4, "{l:?}");
        assert_eq!(l[0], "[build] bootstrap: started");
        assert!(
            regex::Regex::new(r"^\[build\] bootstrap: finished in \d+\.\d s$")
                .unwrap()
                .is_match(&l[1]),
            "{}",
            l[1]
        );
        assert_eq!(l[2], "[build] disk: started");
        assert!(
            l[3].starts_with("[build] disk: failed after ") && l[3].ends_with(": mkfs.ext4 failed"),
            "{}",
            l[3]
        );
    }

    #[test]
    fn json_events_pair_starts_with_finishes_and_count() {
        let (r, buf) = Reporter::buffered(Mode::Json, Duration::ZERO);
        let up = r.count("publish", "upload", 3 << 20, "bytes");
        for _ in 0..3 {
            up.inc(1 << 20);
        }
        up.finish();
        let _ = r.start("launch", "wait");
        r.result("publish", serde_json::json!({"image_id": "ami-1"}));
        let ev: Vec<serde_json::Value> = lines(&buf)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let kinds: Vec<&str> = ev.iter().map(|e| e["event"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "stage-started",
                "progress",
                "progress",
                "progress",
                "stage-finished",
                "stage-started",
                "stage-finished",
                "result"
            ]
        );
        assert_eq!(ev[0]["total"], 3 << 20);
        assert_eq!(ev[0]["unit"], "bytes");
        assert_eq!(ev[3]["done"], 3 << 20);
        assert_eq!(ev[4]["ok"], true);
        assert_eq!(ev[4]["done"], 3 << 20);
        assert!(ev[4]["secs"].as_f64().unwrap() >= 0.0);
        // Dropped unfinished: a failure.
        assert_eq!(ev[6]["stage"], "wait");
        assert_eq!(ev[6]["ok"], false);
        assert_eq!(ev[6]["message"], "stopped before finishing");
        assert_eq!(ev[7]["result"]["image_id"], "ami-1");
    }

    #[test]
    fn progress_is_throttled_but_the_last_count_always_goes_out() {
        let (r, buf) = Reporter::buffered(Mode::Json, Duration::from_secs(3600));
        let s = r.count("test", "matrix", 4, "boots");
        for _ in 0..4 {
            s.inc(1);
        }
        s.finish();
        let ev: Vec<serde_json::Value> = lines(&buf)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let progress: Vec<_> = ev.iter().filter(|e| e["event"] == "progress").collect();
        assert_eq!(progress.len(), 1, "{ev:?}");
        assert_eq!(progress[0]["done"], 4);
        assert_eq!(progress[0]["total"], 4);
    }

    #[test]
    fn plain_progress_shows_sizes_rates_and_eta() {
        let progress = |done, total, unit: &str, rate| Event::Progress {
            command: "publish".into(),
            stage: "upload".into(),
            done,
            total,
            unit: unit.into(),
            secs: 0.0,
            rate: Some(rate),
        };
        assert_eq!(
            progress(12 << 20, 48 << 20, "bytes", (6 << 20) as f64)
                .plain()
                .unwrap(),
            "[publish] upload: 12.00 MiB of 48.00 MiB (25%), 6.00 MiB/s, ETA 6 s"
        );
        assert_eq!(
            progress(3, 12, "boots", 0.25).plain().unwrap(),
            "[publish] upload: 3 of 12 boots (25%), 0.250 boots/s, ETA 36 s"
        );
        let finished = Event::StageFinished {
            command: "publish".into(),
            stage: "upload".into(),
            done: Some(12),
            total: Some(12),
            unit: Some("boots".into()),
            secs: 48.0,
            rate: Some(0.25),
            ok: true,
            message: None,
        };
        assert_eq!(
            finished.plain().unwrap(),
            "[publish] upload: finished in 48.0 s (12 boots, 0.250 boots/s)"
        );
        assert_eq!(round3(0.0416666), 0.0417);
        assert_eq!(round3(123456.0), 123000.0);
        assert_eq!(rate_text(1234.5), "1234");
    }

    #[test]
    fn quiet_prints_nothing_and_errors_are_json_only() {
        let (r, buf) = Reporter::buffered(Mode::Quiet, Duration::ZERO);
        r.start("build", "x").finish();
        r.error("build", "boom");
        assert!(lines(&buf).is_empty());
        let (r, buf) = Reporter::buffered(Mode::Plain, Duration::ZERO);
        r.error("build", "boom");
        r.result("build", serde_json::json!(1));
        assert!(lines(&buf).is_empty());
        let (r, buf) = Reporter::buffered(Mode::Json, Duration::ZERO);
        r.error("build", "boom");
        let l = lines(&buf);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&l[0]).unwrap(),
            serde_json::json!({"event": "error", "command": "build", "message": "boom"})
        );
    }
}
