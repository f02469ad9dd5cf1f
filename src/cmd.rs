//! The one way biovm runs external commands.
//!
//! Every command is logged with its exact command line, gets `/dev/null` as
//! stdin, has its stderr captured (streamed to the debug log, its tail kept
//! for the error message) and is killed when biovm dies (`PR_SET_PDEATHSIG`).
//! No other module uses `std::process::Command` directly.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How many lines of stderr an error message carries.
const TAIL_LINES: usize = 20;

/// Errors callers may branch on.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// The program is not on the PATH.
    #[error("`{program}` is not installed (run `biovm doctor` to see what provides it)")]
    Missing {
        /// The program's name, as given.
        program: String,
    },
    /// The program exists but could not be started.
    #[error("could not start `{command}`: {source}")]
    Spawn {
        /// The command line (see [`Cmd::display`]).
        command: String,
        /// Why the operating system refused.
        source: std::io::Error,
    },
    /// The program ran and exited with a failure status or a signal.
    #[error("`{command}` failed ({status}){}", fmt_tail(.stderr_tail))]
    Failed {
        /// The command line (see [`Cmd::display`]).
        command: String,
        /// How it ended, in words (`exit status 2`, `killed by signal 9`).
        status: String,
        /// The last lines it wrote on stderr.
        stderr_tail: String,
    },
}

fn fmt_tail(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!(":\n{}", indent(tail.trim_end()))
    }
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `unshare`'s options for [`Cmd::isolated`]: new mount and PID
/// namespaces, mounts not propagated to the host, a fresh /proc for the new
/// PID namespace, and the child killed when `unshare` dies.
const ISOLATION: &[&str] = &[
    "--mount",
    "--propagation",
    "private",
    "--pid",
    "--fork",
    "--kill-child",
    "--mount-proc",
];

/// A command to run; build it like `std::process::Command`.
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    inner: Command,
}

/// Quote one word for display the way a shell would need it.
fn shell_quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

impl Cmd {
    /// A command that runs `program` (looked up on the PATH) with no
    /// arguments, its stdin closed, and killed if biovm dies.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let program = program.as_ref().to_os_string();
        let mut inner = Command::new(&program);
        inner.stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe; this runs in the child between fork and exec.
        unsafe {
            inner.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        Cmd {
            program,
            args: Vec::new(),
            inner,
        }
    }

    /// `program` in namespaces of its own, for commands that mount (the
    /// bootstrap mounts /proc, /sys and /dev inside the tree) or may leave
    /// daemons behind (package scripts in a chroot): `unshare` gives it a
    /// private mount namespace, so its mounts are never seen by the host
    /// and vanish with it, and a PID namespace whose first process dies
    /// with `unshare` (`--kill-child`), taking every process in it along.
    /// However biovm ends, even by SIGKILL, nothing stays mounted or running.
    pub(crate) fn isolated(program: impl AsRef<OsStr>) -> Self {
        let mut c = Cmd::new("unshare");
        c.args(ISOLATION).arg(program);
        c
    }

    /// Add one argument.
    pub fn arg(&mut self, a: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(a.as_ref().to_os_string());
        self.inner.arg(a);
        self
    }

    /// Add each of `args` as an argument.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self.arg(a);
        }
        self
    }

    /// Set the environment variable `k` to `v` for the program.
    pub fn env(&mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> &mut Self {
        self.inner.env(k, v);
        self
    }

    #[cfg(test)]
    pub(crate) fn env_remove(&mut self, k: impl AsRef<OsStr>) -> &mut Self {
        self.inner.env_remove(k);
        self
    }

    /// Run the program in the folder `d`.
    pub fn current_dir(&mut self, d: impl AsRef<Path>) -> &mut Self {
        self.inner.current_dir(d);
        self
    }

    /// The command line as a shell would take it, for logs and errors.
    pub fn display(&self) -> String {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(|a| a.as_os_str()))
            .map(shell_quote)
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn check_present(&self) -> Result<(), CmdError> {
        let p = Path::new(&self.program);
        if p.components().count() == 1 && which::which(&self.program).is_err() {
            return Err(CmdError::Missing {
                program: self.program.to_string_lossy().into_owned(),
            });
        }
        Ok(())
    }

    fn start(&mut self, stdout: Stdio) -> Result<Running, CmdError> {
        self.check_present()?;
        let command = self.display();
        log::debug!("$ {command}");
        self.inner.stdout(stdout).stderr(Stdio::piped());
        let mut child = self.inner.spawn().map_err(|source| CmdError::Spawn {
            command: command.clone(),
            source,
        })?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let tail2 = Arc::clone(&tail);
        let prog = Path::new(&self.program)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line).into_owned();
                log::debug!("[{prog}] {line}");
                let mut t = tail2.lock().unwrap();
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        Ok(Running {
            command,
            child,
            tail,
            reader: Some(reader),
        })
    }

    /// Run to completion; stdout goes to the debug log.
    pub fn run(&mut self) -> Result<(), CmdError> {
        let mut r = self.start(Stdio::piped())?;
        let stdout = r.child.stdout.take().expect("stdout is piped");
        let prog = self.program.to_string_lossy().into_owned();
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            log::debug!("[{prog}] {}", String::from_utf8_lossy(&line));
        }
        r.finish()
    }

    /// Run to completion with stdout written to `out` (a decompressor's
    /// output, say).
    pub(crate) fn run_to_file(&mut self, out: std::fs::File) -> Result<(), CmdError> {
        self.start(Stdio::from(out))?.finish()
    }

    /// Run attached to this terminal (stdin, stdout and stderr inherited)
    /// until it ends; its exit status, whatever it is.
    pub(crate) fn run_on_terminal(&mut self) -> Result<ExitStatus, CmdError> {
        self.check_present()?;
        let command = self.display();
        log::debug!("$ {command}");
        self.inner
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        self.inner
            .status()
            .map_err(|source| CmdError::Spawn { command, source })
    }

    /// Run to completion and return stdout.
    pub fn output(&mut self) -> Result<String, CmdError> {
        let mut r = self.start(Stdio::piped())?;
        let mut out = Vec::new();
        r.child
            .stdout
            .take()
            .expect("stdout is piped")
            .read_to_end(&mut out)
            .ok();
        r.finish()?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Start in the background; the returned guard kills the process when dropped.
    pub fn spawn(&mut self) -> Result<Running, CmdError> {
        self.start(Stdio::null())
    }
}

/// A started command. Dropping it kills the process if it is still running.
pub struct Running {
    command: String,
    child: Child,
    tail: Arc<Mutex<VecDeque<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Running {
    pub(crate) fn command(&self) -> &str {
        &self.command
    }

    #[cfg(test)]
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has ended.
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Wait up to `limit` for the process to end.
    pub(crate) fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if start.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last lines the process wrote to stderr.
    pub(crate) fn stderr_tail(&mut self) -> String {
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
        let t = self.tail.lock().unwrap();
        t.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Wait for the end and turn a non-zero exit into an error.
    pub(crate) fn finish(&mut self) -> Result<(), CmdError> {
        let status = self.child.wait().map_err(|source| CmdError::Spawn {
            command: self.command.clone(),
            source,
        })?;
        let stderr_tail = self.stderr_tail();
        if status.success() {
            Ok(())
        } else {
            Err(CmdError::Failed {
                command: self.command.clone(),
                status: describe_status(status),
                stderr_tail,
            })
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            log::debug!("killing `{}`", self.command);
            self.kill();
        }
    }
}

/// "exit status 3" or "killed by signal 9".
pub(crate) fn describe_status(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_display() {
        let mut c = Cmd::new("sh");
        c.args(["-c", "echo hello; echo 'to err' >&2"]);
        assert_eq!(c.display(), "sh -c 'echo hello; echo '\\''to err'\\'' >&2'");
        assert_eq!(c.output().unwrap(), "hello\n");
    }

    #[test]
    fn failure_carries_stderr_tail() {
        let err = Cmd::new("sh")
            .args([
                "-c",
                "for i in $(seq 1 30); do echo line$i >&2; done; exit 3",
            ])
            .run()
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("`sh -c "), "{msg}");
        assert!(msg.contains("(exit status 3)"), "{msg}");
        assert!(msg.contains("line30") && msg.contains("line11"), "{msg}");
        assert!(!msg.contains("line10\n"), "only the tail is kept: {msg}");
    }

    #[test]
    fn missing_program_is_typed() {
        let err = Cmd::new("biovm-no-such-tool").run().unwrap_err();
        assert!(matches!(err, CmdError::Missing { .. }), "{err}");
    }

    #[test]
    fn stdin_is_closed() {
        // `cat` with stdin from /dev/null ends at once instead of waiting.
        assert_eq!(Cmd::new("cat").output().unwrap(), "");
    }

    /// A mount made by an isolated command is not seen outside it, and
    /// its processes do not outlive it.
    #[test]
    fn isolated_commands_keep_their_mounts_and_processes() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let mnt = d.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let script = format!(
            "mount -t tmpfs none {0} && grep -c ' {0} ' /proc/self/mountinfo && (sleep 313.37 &) && echo $$",
            mnt.display()
        );
        let out = Cmd::isolated("sh").args(["-c", &script]).output().unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "1", "the mount was made inside: {out}");
        assert_eq!(
            lines[1], "1",
            "sh is the first process of its PID namespace"
        );
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !info.contains(&format!(" {} ", mnt.display())),
            "mount leaked"
        );
        // The background sleep died with the namespace.
        let sleeping = Cmd::new("pgrep")
            .args(["-x", "-f", "sleep 313.37"])
            .output();
        assert!(
            sleeping.map_or(true, |o| o.trim().is_empty()),
            "a process outlived its namespace"
        );
    }

    #[test]
    fn dropping_a_running_command_kills_it() {
        let r = Cmd::new("sleep").arg("30").spawn().unwrap();
        let pid = r.id() as i32;
        drop(r);
        // SAFETY: signal 0 only probes whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "sleep {pid} survived its guard");
    }
}
