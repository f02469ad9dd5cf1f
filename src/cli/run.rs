use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use super::GlobalArgs;
use crate::config::{BootMode, Format};
use crate::manifest::Manifest;
use crate::run::{self, RunOptions};

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// A built disk: out/minimal.raw, .qcow2, .vmdk, .vdi, .ova or .box.
    pub(crate) artifact: PathBuf,
    /// Run in the background: wait until the guest answers on its SSH
    /// port, print how to log in, and leave it running.
    #[arg(long, short)]
    pub(crate) detach: bool,
    /// Public key for the image's default user (default: ~/.ssh/id_ed25519.pub,
    /// id_ecdsa.pub or id_rsa.pub).
    #[arg(long, value_name = "FILE.pub")]
    pub(crate) ssh_key: Option<PathBuf>,
    /// Port on 127.0.0.1 forwarded to the guest's SSH port (default: a free one).
    #[arg(long, value_name = "PORT")]
    pub(crate) ssh_port: Option<u16>,
    /// Firmware (default: UEFI when the image boots with it, else BIOS).
    #[arg(long, value_enum)]
    pub(crate) firmware: Option<super::test::Firmware>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 4096, value_name = "MIB")]
    pub(crate) memory: u32,
    /// Guest CPUs (default: every core of this machine).
    #[arg(long)]
    pub(crate) cpus: Option<u32>,
    /// GiB of disk the guest gets beyond the image's own size (cloud-init
    /// grows the root filesystem into it).
    #[arg(long, default_value_t = 8, value_name = "GIB")]
    pub(crate) grow: u64,
    /// Folder for the guest's overlay disk, seed drive and console log
    /// (default: <artifact>.run next to the artifact). The artifact itself
    /// is never written.
    #[arg(long, value_name = "DIR")]
    pub(crate) state: Option<PathBuf>,
    /// Seconds a detached guest may take to answer on its SSH port (and
    /// its workbench, when the image has one).
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub(crate) ssh_timeout: u64,
    /// Port on 127.0.0.1 forwarded to the image's workbench (default: a
    /// free one).
    #[arg(long, value_name = "PORT")]
    pub(crate) workbench_port: Option<u16>,
    /// Turn on the workbench's public mode, as user data would on a cloud:
    /// HTTPS on every interface of the guest, with the same token; its
    /// port 443 is forwarded from a free port on 127.0.0.1.
    #[arg(long)]
    pub(crate) public: bool,
}

pub(crate) fn run(g: &GlobalArgs, a: RunArgs) -> anyhow::Result<ExitCode> {
    if !a.artifact.is_file() {
        bail!("{} does not exist or is not a file", a.artifact.display());
    }
    let manifest = Manifest::for_artifact(&a.artifact).ok();
    let file = a
        .artifact
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let format = Format::from_file_name(&file)
        .filter(|f| f.is_disk())
        .with_context(|| {
            format!(
                "{}: not a disk biovm can boot (.raw, .qcow2, .vmdk, .vdi, .ova, .box)",
                a.artifact.display()
            )
        })?;
    let modes = manifest
        .as_ref()
        .map(|m| m.boot_modes())
        .unwrap_or_else(|| vec![BootMode::Uefi, BootMode::Bios]);
    let firmware = match a.firmware {
        Some(super::test::Firmware::Uefi) => BootMode::Uefi,
        Some(super::test::Firmware::Bios) => BootMode::Bios,
        None if modes.contains(&BootMode::Uefi) => BootMode::Uefi,
        None => BootMode::Bios,
    };
    let workbench = manifest.as_ref().and_then(|m| m.workbench);
    if workbench.is_none() && (a.public || a.workbench_port.is_some()) {
        bail!(
            "{}: the image has no workbench (its manifest says so), so --public and --workbench-port do not apply",
            a.artifact.display()
        );
    }
    let key_file = match &a.ssh_key {
        Some(k) => k.clone(),
        None => crate::sshkey::default_public_key()?,
    };
    let public_key = crate::sshkey::read_public_key(&key_file)?;
    let user = manifest
        .as_ref()
        .and_then(|m| m.default_user.clone())
        .unwrap_or_else(|| "debian".into());
    let state = a.state.clone().unwrap_or_else(|| {
        let mut s = a.artifact.clone().into_os_string();
        s.push(".run");
        PathBuf::from(s)
    });
    let private = crate::sshkey::private_key_for(&key_file);
    let private = (private != key_file && private.is_file()).then_some(private);
    let identity = match &private {
        Some(p) => format!("-i {} ", p.display()),
        None => String::new(),
    };
    let o = RunOptions {
        artifact: a.artifact.clone(),
        format,
        firmware,
        public_key,
        ssh_port: a.ssh_port.unwrap_or(0),
        memory_mib: a.memory,
        cpus: a
            .cpus
            .unwrap_or_else(|| crate::smoke::default_jobs() as u32),
        grow_bytes: a.grow << 30,
        state_dir: state,
        detach: a.detach,
        ssh_timeout: Duration::from_secs(a.ssh_timeout),
        workbench: workbench.map(|w| run::WorkbenchForward {
            guest_port: w.port,
            host_port: a.workbench_port.unwrap_or(0),
            public: a.public,
        }),
        user: user.clone(),
        identity: private,
        data_disk: match manifest.as_ref().and_then(|m| m.data_disk.as_ref()) {
            Some(d) => Some(d.in_dir(a.artifact.parent().unwrap_or(Path::new(".")))?.raw),
            None => None,
        },
    };
    if !a.detach {
        let status = run::run_foreground(&o)?;
        return Ok(if status.success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let what = if o.workbench.is_some() {
        "boot until SSH and the workbench answer"
    } else {
        "boot until SSH answers"
    };
    let d = crate::progress::stage("run", what, || run::run_detached(&o))?;
    let login = format!(
        "ssh {identity}-p {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null {user}@127.0.0.1",
        d.ssh_port
    );
    if g.json {
        crate::progress::result(
            "run",
            serde_json::json!({
                "artifact": a.artifact,
                "firmware": firmware.as_str(),
                "accel": d.accel,
                "pid": d.pid,
                "tunnel_pid": d.tunnel_pid,
                "ssh_port": d.ssh_port,
                "user": user,
                "ssh": login,
                "console_log": d.console_log,
                "ssh_secs": d.ssh_secs,
                "workbench": d.workbench.as_ref().map(|w| serde_json::json!({
                    "url": w.url(),
                    "port": w.port,
                    "token": w.token,
                    "tls_sha256": w.tls_sha256,
                    "https_port": w.https_port,
                    "secs": d.workbench_secs,
                })),
            }),
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} is running ({}, {}, pid {}); its SSH server answered after {:.0} s.",
        a.artifact.display(),
        firmware.as_str(),
        d.accel,
        d.pid,
        d.ssh_secs
    );
    println!("log in:  {login}");
    if let Some(w) = &d.workbench {
        println!("workbench: {}", w.url());
        println!(
            "           (the token is this instance's own; JupyterLab, the desktop and the tool list are linked from there)"
        );
        if let Some(p) = w.https_port {
            println!(
                "public mode: https://127.0.0.1:{p}/?token={} (self-signed certificate, sha256 {})",
                w.token,
                w.tls_sha256.as_deref().unwrap_or("unknown")
            );
        }
    }
    println!("console: {}", d.console_log.display());
    match d.tunnel_pid {
        Some(t) => println!("stop:    kill {} {t}", d.pid),
        None => println!("stop:    kill {}", d.pid),
    }
    Ok(ExitCode::SUCCESS)
}
