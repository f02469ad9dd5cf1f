//! `biovm run`: boot a built disk locally for interactive use, the way a
//! researcher tries an image on a laptop before launching it in a cloud.
//!
//! The artifact itself is never written: the guest boots a qcow2 overlay
//! (larger than the image, so cloud-init grows the root filesystem as a
//! cloud volume would) in a state folder. cloud-init gets a NoCloud seed
//! drive with the user's public key for the image's default user. The only
//! network is QEMU user networking with `restrict=on`: the guest reaches
//! nothing, and the host reaches the guest's SSH port through one port
//! forwarded on 127.0.0.1.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::Cmd;
use crate::config::{BootMode, Format};
use crate::smoke::boot_disk::disk_to_boot;
use crate::smoke::qemu::{self, Accel, Bus, DiskFormat};
use crate::smoke::{kvm, seed, slots};

/// What to boot and how.
pub struct RunOptions {
    pub artifact: PathBuf,
    pub format: Format,
    pub firmware: BootMode,
    /// The public key (one line, `ssh-ed25519 AAAA... comment`).
    pub public_key: String,
    /// Port on 127.0.0.1 forwarded to the guest's port 22 (0: a free one).
    pub ssh_port: u16,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Bytes the boot disk has beyond the image's own size.
    pub grow_bytes: u64,
    /// Overlay, seed, console log and pid file go here.
    pub state_dir: PathBuf,
    /// Run in the background and wait for SSH, instead of the console on
    /// this terminal.
    pub detach: bool,
    /// How long a detached guest may take to answer on its SSH port.
    pub ssh_timeout: Duration,
    /// The image's workbench, forwarded next to SSH.
    pub workbench: Option<WorkbenchForward>,
    /// The image's default user and the private key that logs in as it
    /// (the workbench is reached through an SSH tunnel, as on a cloud).
    pub user: String,
    pub identity: Option<PathBuf>,
    /// The image's data disk, attached as a second disk (never written).
    pub data_disk: Option<PathBuf>,
}

/// How `biovm run` reaches an image's workbench: its proxy listens on the
/// guest's loopback only, so through an SSH tunnel (what a researcher does
/// on a cloud); in public mode also the guest's HTTPS port, forwarded.
#[derive(Debug, Clone, Copy)]
pub struct WorkbenchForward {
    /// The proxy's port on the guest's 127.0.0.1.
    pub guest_port: u16,
    /// The port on this machine's 127.0.0.1 forwarded to it (0: a free one).
    pub host_port: u16,
    /// Public mode: the guest serves HTTPS on all its interfaces (port
    /// 443), as it would on a cloud; forwarded from a free local port.
    pub public: bool,
}

/// A detached guest's workbench, once its proxy and JupyterLab answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkbenchAccess {
    /// The port on 127.0.0.1 that reaches the guest's proxy.
    pub port: u16,
    /// The instance's token, from its console.
    pub token: String,
    /// The sha256 fingerprint of the instance's TLS certificate.
    pub tls_sha256: Option<String>,
    /// Public mode: the local port that reaches the guest's HTTPS port.
    pub https_port: Option<u16>,
}

impl WorkbenchAccess {
    /// The address that opens the landing page (and sets the cookie).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/?token={}", self.port, self.token)
    }
}

/// A guest started with `detach`.
#[derive(Debug)]
pub struct Detached {
    pub pid: u32,
    pub ssh_port: u16,
    pub console_log: PathBuf,
    pub accel: Accel,
    /// Seconds from start until the guest's SSH server answered.
    pub ssh_secs: f64,
    /// The workbench, when the image has one.
    pub workbench: Option<WorkbenchAccess>,
    /// The SSH tunnel to the workbench (a process of its own that ends
    /// when the guest does).
    pub tunnel_pid: Option<u32>,
    /// Seconds from start until the workbench answered.
    pub workbench_secs: Option<f64>,
}

/// A port on 127.0.0.1 nobody listens on right now.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot find a free port on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

/// The user data of a `biovm run` boot: the key for the default user,
/// and the workbench's public mode when asked for.
fn user_data(key: &str, public_workbench: bool) -> String {
    let mut u =
        format!("#cloud-config\n# Written by biovm run.\nssh_authorized_keys:\n  - {key}\n");
    if public_workbench {
        u.push_str(&crate::workbench::public_mode_user_data());
    }
    u
}

/// Whether an SSH server answers on `addr`: QEMU accepts forwarded
/// connections before the guest listens, so only the banner counts.
pub fn ssh_answers(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) => buf[..n].starts_with(b"SSH-2.0-"),
        Err(_) => false,
    }
}

/// Prepare the overlay and seed, and the QEMU command line.
fn prepare(o: &RunOptions, port: u16, forwards: &[(u16, u16)]) -> Result<(Cmd, PathBuf)> {
    crate::doctor::require(crate::doctor::Need::Test)?;
    std::fs::create_dir_all(&o.state_dir)
        .with_context(|| format!("cannot create {}", o.state_dir.display()))?;
    let scratch = o.state_dir.join("disk.vmdk");
    let (disk, disk_format) = disk_to_boot(&o.artifact, o.format, &scratch)?;
    let size = seed::virtual_size(&disk, disk_format)? + o.grow_bytes;
    let overlay = o.state_dir.join("disk.qcow2");
    seed::create_overlay(&disk, disk_format, &overlay, size)?;
    let seed_drive = o.state_dir.join("seed.img");
    let instance = format!(
        "biovm-run-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    );
    let public = o.workbench.is_some_and(|w| w.public);
    seed::write_nocloud_seed(&seed_drive, &instance, &user_data(&o.public_key, public))?;
    let vm = qemu::Vm {
        disk: &overlay,
        disk_format: DiskFormat::Qcow2,
        bus: Bus::for_format(o.format),
        label: "run",
        checks_drive: None,
        seed_drive: Some(&seed_drive),
        imds: None,
        ssh_forward: Some(port),
        also_forward: forwards,
        data_drive: o.data_disk.as_deref().map(|d| (d, DiskFormat::Raw)),
        console_on_terminal: !o.detach,
        firmware: o.firmware,
        accel: kvm::accel(),
        // A researcher runs any tool of the image in it.
        work: qemu::GuestWork::Tools,
        cpus: o.cpus,
        memory_mib: o.memory_mib,
        run_dir: &o.state_dir,
        scratch: &o.state_dir,
    };
    let (cmd, files) = vm.command()?;
    Ok((cmd, files.console_log))
}

/// Boot in the foreground: the console on this terminal until the guest
/// powers off (or Ctrl-A X quits QEMU). Returns QEMU's exit status.
pub fn run_foreground(o: &RunOptions) -> Result<std::process::ExitStatus> {
    let port = if o.ssh_port == 0 {
        free_port()?
    } else {
        o.ssh_port
    };
    let forwards = workbench_ports(o)?;
    let (mut cmd, _) = prepare(o, port, forwarded_by_qemu(&forwards))?;
    eprintln!(
        "booting {} ({}, {}); the console follows, Ctrl-A X quits.\nSSH when it is up: port {port} on 127.0.0.1",
        o.artifact.display(),
        o.firmware.as_str(),
        kvm::accel()
    );
    Ok(cmd.run_on_terminal()?)
}

/// Boot in the background and wait until the guest's SSH server answers.
pub fn run_detached(o: &RunOptions) -> Result<Detached> {
    let port = local_port(o.ssh_port, "--ssh-port")?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let forwards = workbench_ports(o)?;
    let (mut cmd, console_log) = prepare(o, port, forwarded_by_qemu(&forwards))?;
    let pidfile = o.state_dir.join("qemu.pid");
    let _ = std::fs::remove_file(&pidfile);
    // The guest holds its share of the machine's guest slots for as long
    // as it runs (QEMU inherits the locks), so tests and other guests on
    // this machine never start more guests than there are cores.
    let slots = slots::take(
        &slots::folder(),
        slots::count()?,
        o.cpus,
        slots::Fewer::Never,
        |n| {
            log::info!(
            "waiting for {n} free guest slot(s): other biovm guests on this machine hold them ({})",
            slots::folder().display()
        )
        },
    )?;
    slots.inherit()?;
    let t0 = Instant::now();
    // QEMU forks into the background once the machine is set up; the
    // daemon is a grandchild, so it outlives biovm.
    cmd.arg("-daemonize").arg("-pidfile").arg(&pidfile);
    cmd.run().context("starting QEMU failed")?;
    // QEMU holds the slots now; nothing else started here may inherit them.
    drop(slots);
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .with_context(|| format!("QEMU wrote no pid file {}", pidfile.display()))?
        .trim()
        .parse()
        .with_context(|| format!("{}: not a pid", pidfile.display()))?;
    let alive = || Path::new(&format!("/proc/{pid}")).exists();
    loop {
        if ssh_answers(addr) {
            break;
        }
        if !alive() {
            bail!(
                "the guest stopped before its SSH server answered (see {})",
                console_log.display()
            );
        }
        if t0.elapsed() > o.ssh_timeout {
            stop(pid);
            bail!(
                "the guest's SSH server did not answer within {} s; it was stopped (see {})",
                o.ssh_timeout.as_secs(),
                console_log.display()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let ssh_secs = t0.elapsed().as_secs_f64();
    let mut tunnel = None;
    let workbench = match (o.workbench, forwards.first()) {
        (Some(w), Some(&(host, _))) => {
            let https = forwards.get(1).map(|&(h, _)| h).filter(|_| w.public);
            let deadline = t0 + o.ssh_timeout;
            let mut t = Tunnel {
                o,
                ssh_port: port,
                local: host,
                guest: w.guest_port,
                child: None,
            };
            let r = wait_for_workbench(&mut t, https, &console_log, deadline, alive);
            let r = r.and_then(|a| Ok((a, t.detach()?)));
            match r {
                Ok((a, pid)) => {
                    tunnel = Some(pid);
                    Some(a)
                }
                Err(e) => {
                    stop(pid);
                    return Err(e.context(format!(
                        "the workbench did not come up; the guest was stopped (see {})",
                        console_log.display()
                    )));
                }
            }
        }
        _ => None,
    };
    Ok(Detached {
        pid,
        ssh_port: port,
        console_log,
        accel: kvm::accel(),
        ssh_secs,
        workbench_secs: workbench.as_ref().map(|_| t0.elapsed().as_secs_f64()),
        workbench,
        tunnel_pid: tunnel,
    })
}

/// The port on 127.0.0.1 the user asked for (`flag`), refused when
/// something listens there already; 0: a free one.
fn local_port(asked: u16, flag: &str) -> Result<u16> {
    if asked == 0 {
        return free_port();
    }
    let addr: SocketAddr = ([127, 0, 0, 1], asked).into();
    if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
        bail!("port {asked} on 127.0.0.1 is in use; pick another with {flag}");
    }
    Ok(asked)
}

/// The ports besides SSH, (port on 127.0.0.1, guest port): the
/// workbench's (reached through the SSH tunnel, not forwarded by QEMU)
/// first, then in public mode the guest's HTTPS port (forwarded).
fn workbench_ports(o: &RunOptions) -> Result<Vec<(u16, u16)>> {
    let Some(w) = o.workbench else {
        return Ok(Vec::new());
    };
    let host = local_port(w.host_port, "--workbench-port")?;
    let mut v = vec![(host, w.guest_port)];
    if w.public {
        v.push((free_port()?, 443));
    }
    Ok(v)
}

/// The ports QEMU forwards: public mode's HTTPS (the workbench's own
/// port is on the guest's loopback, which only a tunnel reaches).
fn forwarded_by_qemu(forwards: &[(u16, u16)]) -> &[(u16, u16)] {
    forwards.get(1..).unwrap_or(&[])
}

/// The SSH tunnel from a port on 127.0.0.1 to the workbench's port on the
/// guest's loopback, restarted until it holds (the guest's SSH server
/// answers before cloud-init has installed the key).
struct Tunnel<'a> {
    o: &'a RunOptions,
    ssh_port: u16,
    local: u16,
    guest: u16,
    child: Option<std::process::Child>,
}

impl Tunnel<'_> {
    /// Start the tunnel if it is not running.
    fn ensure(&mut self) -> Result<()> {
        if let Some(c) = &mut self.child {
            if c.try_wait()?.is_none() {
                return Ok(());
            }
        }
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(self.o.state_dir.join("tunnel.log"))?;
        let mut c = std::process::Command::new("ssh");
        c.args([
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-o",
            "BatchMode=yes",
        ])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=4",
        ]);
        if let Some(k) = &self.o.identity {
            c.arg("-i").arg(k);
        }
        c.arg("-p")
            .arg(self.ssh_port.to_string())
            .arg("-L")
            .arg(format!("127.0.0.1:{}:127.0.0.1:{}", self.local, self.guest))
            .arg(format!("{}@127.0.0.1", self.o.user))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            // Its own process group: it outlives biovm, as the guest does.
            .process_group(0);
        self.child = Some(
            c.spawn()
                .context("cannot start ssh for the workbench's tunnel")?,
        );
        Ok(())
    }

    /// Leave the tunnel running; its pid.
    fn detach(&mut self) -> Result<u32> {
        let c = self.child.take().context("the tunnel is not running")?;
        Ok(c.id())
    }
}

impl Drop for Tunnel<'_> {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The status code of `GET path` on 127.0.0.1:`port` (plain HTTP), if
/// something answered with HTTP.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::Write;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let line = std::str::from_utf8(&buf[..got]).ok()?;
    line.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

/// Wait until the guest printed its workbench token on the console and
/// JupyterLab answers with it through the tunnel and the proxy.
fn wait_for_workbench(
    tunnel: &mut Tunnel<'_>,
    https_port: Option<u16>,
    console_log: &Path,
    deadline: Instant,
    alive: impl Fn() -> bool,
) -> Result<WorkbenchAccess> {
    let port = tunnel.local;
    loop {
        let console = std::fs::read(console_log).unwrap_or_default();
        let found = crate::workbench::from_console(&String::from_utf8_lossy(&console));
        if let Some(f) = found {
            tunnel.ensure()?;
            let path = format!("/jupyter/api/status?token={}", f.token);
            if http_status(port, &path) == Some(200) {
                return Ok(WorkbenchAccess {
                    port,
                    token: f.token,
                    tls_sha256: f.tls_sha256,
                    https_port,
                });
            }
        }
        if !alive() {
            bail!("the guest stopped before its workbench answered");
        }
        if Instant::now() > deadline {
            let log =
                std::fs::read_to_string(tunnel.o.state_dir.join("tunnel.log")).unwrap_or_default();
            bail!(
                "the workbench did not answer with its token in time{}",
                if log.trim().is_empty() {
                    String::new()
                } else {
                    format!(" (the SSH tunnel said: {})", log.trim())
                }
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Stop a detached guest.
pub fn stop(pid: u32) {
    // SAFETY: kill(2) with a pid QEMU wrote for itself.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_ssh_banner_counts_as_an_answer() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            use std::io::Write;
            // First a listener that closes at once (as QEMU's forwarder
            // does before the guest listens), then a real banner.
            drop(l.accept().unwrap());
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n").unwrap();
        });
        assert!(!ssh_answers(addr));
        assert!(ssh_answers(addr));
        t.join().unwrap();
    }

    #[test]
    fn user_data_gives_the_default_user_the_key() {
        let u = user_data(seed::SEED_KEY, false);
        assert!(u.starts_with("#cloud-config\n"));
        assert!(u.contains(&format!("ssh_authorized_keys:\n  - {}\n", seed::SEED_KEY)));
        assert!(!u.contains("write_files"));
        // Public mode: the file the workbench's first boot reads.
        let doc = crate::rootfs::yaml_as_json(&user_data(seed::SEED_KEY, true));
        assert_eq!(
            doc["write_files"][0]["path"],
            crate::workbench::USER_CONF,
            "{doc}"
        );
        assert_eq!(doc["write_files"][0]["content"], "public=true\n");
    }
}
