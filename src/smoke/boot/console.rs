//! A running guest's console, as the host follows it (its serial log):
//! a line that shows the boot failed for good, the boot loader's handover
//! to the kernel, and silence after it (a stall); and when the boot loader
//! took over and handed over, for the boot's stages.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::smoke::stages::{ConsoleMarks, LOADER_MARKS};

/// What GRUB prints when it hands over to the kernel.
const HANDOVER: &[&str] = &["Booting `", "Loading Linux "];

/// What firmware, GRUB, the kernel and the initramfs print when a boot has
/// failed for good.
const FATAL_CONSOLE: &[&str] = &[
    "No bootable device",
    "No bootable option or device was found",
    "error: no such device",
    "grub rescue>",
    "Kernel panic - not syncing",
    "Dropping to a shell",
    // OVMF found nothing to boot and started its shell.
    "Shell> ",
];

/// What the console shows so far.
#[derive(Debug, PartialEq)]
pub enum ConsoleState {
    Fine,
    /// A line that shows the boot failed for good.
    Fatal(String),
    /// Nothing printed for too long since the handover (why).
    Stalled(String),
}

/// Follows a guest's console log: fatal lines, the boot loader's handover,
/// and silence after it.
pub struct Console {
    path: PathBuf,
    /// Bytes of complete lines already looked at.
    seen: usize,
    /// The log's length at the last look, and when it last grew.
    len: u64,
    grew_at: Instant,
    handed_over: bool,
    last_line: String,
    /// When the boot loader took over, and when it handed over.
    loader_at: Option<Instant>,
    handover_at: Option<Instant>,
}

impl Console {
    /// A follower of the console log at `path` (which may not exist yet).
    pub fn new(path: &Path) -> Console {
        Console {
            path: path.to_path_buf(),
            seen: 0,
            len: 0,
            grew_at: Instant::now(),
            handed_over: false,
            last_line: String::new(),
            loader_at: None,
            handover_at: None,
        }
    }

    /// When the boot loader took over and handed over, in seconds since `t0`.
    pub fn marks(&self, t0: Instant) -> ConsoleMarks {
        let secs = |i: Option<Instant>| i.map(|i| i.saturating_duration_since(t0).as_secs_f64());
        ConsoleMarks {
            loader: secs(self.loader_at),
            handover: secs(self.handover_at),
        }
    }

    /// Look at what the console printed since the last look: a failed
    /// boot, or nothing for longer than `stall_limit` since the handover.
    pub fn poll(&mut self, stall_limit: Duration) -> ConsoleState {
        use std::io::{Read, Seek, SeekFrom};
        let len = fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if len != self.len {
            self.len = len;
            self.grew_at = Instant::now();
        } else if self.handed_over && self.grew_at.elapsed() > stall_limit {
            return ConsoleState::Stalled(format!(
                "the guest printed nothing for {} s after \"{}\"",
                stall_limit.as_secs(),
                self.last_line
            ));
        }
        // Only what arrived since the last complete line is read.
        let mut bytes = Vec::new();
        let read = fs::File::open(&self.path).and_then(|mut f| {
            f.seek(SeekFrom::Start(self.seen as u64))?;
            f.read_to_end(&mut bytes)
        });
        if read.is_err() || bytes.is_empty() {
            return ConsoleState::Fine;
        }
        if let Some(nl) = bytes.iter().rposition(|b| *b == b'\n') {
            self.seen += nl + 1;
        }
        // The unfinished last line is looked at too: a prompt such as
        // OVMF's `Shell> ` never ends its line.
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if self.loader_at.is_none() && LOADER_MARKS.iter().any(|m| text.contains(m)) {
            self.loader_at = Some(Instant::now());
        }
        for l in text.split(['\n', '\r']) {
            let clean = plain_text(l);
            if clean.is_empty() {
                continue;
            }
            if FATAL_CONSOLE.iter().any(|p| l.contains(p)) {
                return ConsoleState::Fatal(clean);
            }
            if HANDOVER.iter().any(|h| l.contains(h)) {
                self.handed_over = true;
                self.handover_at.get_or_insert_with(Instant::now);
            }
            self.last_line = clean;
        }
        ConsoleState::Fine
    }
}

/// A console line without its terminal escape sequences (`ESC [ ... m`,
/// cursor moves) and other control characters, trimmed.
fn plain_text(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // A control sequence ends at its first byte in '@'..='~'.
            if chars.next() == Some('[') {
                for f in chars.by_ref() {
                    if ('@'..='~').contains(&f) {
                        break;
                    }
                }
            }
        } else if !c.is_control() {
            out.push(c);
        }
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn fatal(c: &mut Console) -> Option<String> {
        match c.poll(Duration::from_secs(120)) {
            ConsoleState::Fatal(l) => Some(l),
            _ => None,
        }
    }

    #[test]
    fn a_failed_boot_is_seen_on_the_console() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("c.log");
        let mut c = Console::new(&log);
        assert_eq!(fatal(&mut c), None, "no log yet");
        fs::write(&log, "SeaBIOS\nBooting from Hard Disk...\n").unwrap();
        assert_eq!(fatal(&mut c), None);
        // A partial line is looked at (and again once it is complete).
        fs::write(
            &log,
            "SeaBIOS\nBooting from Hard Disk...\nALERT!  UUID=1 does not exist.  Dropping to",
        )
        .unwrap();
        assert_eq!(fatal(&mut c), None);
        fs::write(&log, "SeaBIOS\nBooting from Hard Disk...\nALERT!  UUID=1 does not exist.  Dropping to a shell!\r\n").unwrap();
        assert_eq!(
            fatal(&mut c).as_deref(),
            Some("ALERT!  UUID=1 does not exist.  Dropping to a shell!")
        );
        assert_eq!(fatal(&mut c), None, "each line once");
        // OVMF without a bootloader on the disk ends in its shell, whose
        // prompt ends no line (as captured from a real boot).
        let ovmf = "\x1b[16;01HPress \x1b[1m\x1b[37m\x1b[40mESC\x1b[0m\x1b[37m\x1b[40m in 1 seconds to skip \x1b[1m\x1b[33m\x1b[40mstartup.nsh\x1b[0m\x1b[37m\x1b[40m or any other key to continue.\r\n\x1b[17;01H\x1b[1m\x1b[33m\x1b[40mShell> \x1b[0m\x1b[37m\x1b[40m";
        fs::write(&log, ovmf).unwrap();
        assert_eq!(fatal(&mut Console::new(&log)).as_deref(), Some("Shell>"));
    }

    #[test]
    fn silence_after_the_handover_is_a_stall_and_silence_before_it_is_not() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("c.log");
        fs::write(&log, "Welcome to GRUB!\n").unwrap();
        let mut c = Console::new(&log);
        assert_eq!(c.poll(Duration::ZERO), ConsoleState::Fine);
        std::thread::sleep(Duration::from_millis(20));
        // Firmware and GRUB may take their time: not a stall yet.
        assert_eq!(c.poll(Duration::ZERO), ConsoleState::Fine);
        let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
        writeln!(
            f,
            "\x1b[H\x1b[J\x1b[1;1H  Booting `Debian GNU/Linux (minimal)'"
        )
        .unwrap();
        assert_eq!(c.poll(Duration::ZERO), ConsoleState::Fine, "it just grew");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            c.poll(Duration::ZERO),
            ConsoleState::Stalled(
                "the guest printed nothing for 0 s after \"Booting `Debian GNU/Linux (minimal)'\""
                    .into()
            )
        );
        // Kernel lines after the handover keep it alive.
        let mut c = Console::new(&log);
        c.poll(Duration::from_secs(3600));
        writeln!(f, "[    0.000000] Linux version 6.1.0").unwrap();
        assert_eq!(c.poll(Duration::from_secs(3600)), ConsoleState::Fine);
    }
}
