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
use crate::smoke::{kvm, seed};

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
}

/// A port on 127.0.0.1 nobody listens on right now.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot find a free port on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

/// The user data of a `biovm run` boot: the key for the default user.
fn user_data(key: &str) -> String {
    format!("#cloud-config\n# Written by biovm run.\nssh_authorized_keys:\n  - {key}\n")
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
fn prepare(o: &RunOptions, port: u16) -> Result<(Cmd, PathBuf)> {
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
    seed::write_nocloud_seed(&seed_drive, &instance, &user_data(&o.public_key))?;
    let vm = qemu::Vm {
        disk: &overlay,
        disk_format: DiskFormat::Qcow2,
        bus: Bus::for_format(o.format),
        label: "run",
        checks_drive: None,
        seed_drive: Some(&seed_drive),
        imds: None,
        ssh_forward: Some(port),
        console_on_terminal: !o.detach,
        firmware: o.firmware,
        accel: kvm::accel(),
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
    let (mut cmd, _) = prepare(o, port)?;
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
    let port = if o.ssh_port == 0 {
        free_port()?
    } else {
        o.ssh_port
    };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
        bail!("port {port} on 127.0.0.1 is in use; pick another with --ssh-port");
    }
    let (mut cmd, console_log) = prepare(o, port)?;
    let pidfile = o.state_dir.join("qemu.pid");
    let _ = std::fs::remove_file(&pidfile);
    let t0 = Instant::now();
    // QEMU forks into the background once the machine is set up; the
    // daemon is a grandchild, so it outlives biovm.
    cmd.arg("-daemonize").arg("-pidfile").arg(&pidfile);
    cmd.run().context("starting QEMU failed")?;
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
    Ok(Detached {
        pid,
        ssh_port: port,
        console_log,
        accel: kvm::accel(),
        ssh_secs: t0.elapsed().as_secs_f64(),
    })
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
        let u = user_data(seed::SEED_KEY);
        assert!(u.starts_with("#cloud-config\n"));
        assert!(u.contains(&format!("ssh_authorized_keys:\n  - {}\n", seed::SEED_KEY)));
    }
}
