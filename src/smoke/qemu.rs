//! QEMU: the disk formats it reads, the controller and accelerator of a
//! boot, and the command line of one boot ([`Vm`]). Whether KVM works is
//! [`super::kvm`]'s to say; which disk an artifact boots from is
//! [`super::boot_disk`]'s.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cmd::Cmd;
use crate::config::{BootMode, Format};

pub const QEMU: &str = "qemu-system-x86_64";
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// The CPU model under software emulation of a boot that runs the
/// system's checks and a sample of tools (BIOVM_TCG_CPU overrides this
/// and [`TCG_CPU_TOOLS`]): the
/// x86-64-v2 level (what NumPy's wheels and the like require), no more.
/// QEMU's `max` also offers AVX2 and more, which the guest's libraries
/// then pick and TCG emulates slowly: a minimal image's boot took 78-86 s
/// under `max` and 66-70 s with this model on an idle 2-core machine
/// (cloud-init's stages most of the difference).
pub const TCG_CPU: &str = "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16";

/// The CPU model under software emulation of a guest that runs the tools
/// themselves (every check in every boot; `biovm run`, where a researcher
/// works): QEMU's `max`, every feature TCG emulates, AVX2 included, which
/// every x86 cloud machine has. Tools that real machines run must not fail
/// for want of it: Debian's `diamond` executes AVX instructions
/// unconditionally (SIGILL under [`TCG_CPU`]), and R's OpenBLAS picks, on a
/// CPU without AVX2, kernels that crash under TCG (`solve()` of a 3×3
/// matrix: SIGSEGV under [`TCG_CPU`] and under QEMU's Nehalem and
/// SandyBridge models; it passes under `max`). `qemu64` with the v3 level's
/// flags added ran those under `qemu-x86_64`, but its kernel hung at start.
pub const TCG_CPU_TOOLS: &str = "max";

/// What a guest runs, which sets its CPU model under software emulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestWork {
    /// The system's checks and a sample of tools: [`TCG_CPU`].
    Boot,
    /// Any tool: [`TCG_CPU_TOOLS`].
    Tools,
}
/// The SMBIOS system UUID (and serial) of a test boot of an EC2 disk: EC2
/// machines' start with "ec2", which is how cloud-init recognizes them.
const EC2_UUID: &str = "ec2e1f5a-1f0c-4d7b-9a55-0123456789ab";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// A disk image format as QEMU and `qemu-img` read it (`format=`, `-f`,
/// `-F`): the format of the file a boot reads, which for an OVA or a
/// Vagrant box is the VMDK inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskFormat {
    Raw,
    Qcow2,
    Vmdk,
    Vdi,
}

impl DiskFormat {
    /// QEMU's name of the format.
    pub fn name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vmdk => "vmdk",
            DiskFormat::Vdi => "vdi",
        }
    }

    /// The format of the disk a `format` artifact boots from: its own, or
    /// for an OVA or a Vagrant box that of the VMDK inside it. None for a
    /// container or tree artifact, which holds no disk.
    pub fn of_artifact(format: Format) -> Option<DiskFormat> {
        match format {
            Format::Raw => Some(DiskFormat::Raw),
            Format::Qcow2 => Some(DiskFormat::Qcow2),
            Format::Vmdk | Format::Ova | Format::Vagrant => Some(DiskFormat::Vmdk),
            Format::Vdi => Some(DiskFormat::Vdi),
            Format::Oci | Format::DockerArchive | Format::Sif | Format::Tarball => None,
        }
    }
}

impl std::fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How QEMU runs the guest's processors: KVM (hardware virtualisation) or
/// TCG (software emulation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// The accelerator's name, as QEMU's `-machine accel=` and the reports
    /// write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The controller the image's disk sits on, as its destination has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bus {
    /// KVM clouds (OpenStack, Eucalyptus on KVM) and plain QEMU.
    Virtio,
    /// EC2 Nitro instances expose EBS volumes as NVMe.
    Nvme,
    /// VirtualBox's default SATA controller.
    Ahci,
}

impl Bus {
    pub fn as_str(self) -> &'static str {
        match self {
            Bus::Virtio => "virtio",
            Bus::Nvme => "nvme",
            Bus::Ahci => "ahci",
        }
    }

    /// The destination a disk format is made for: raw disks go to EC2,
    /// qcow2 to KVM clouds, VMDK/VDI/OVA/Vagrant boxes to VirtualBox.
    pub fn for_format(f: crate::config::Format) -> Bus {
        if f.for_virtualbox() {
            Bus::Ahci
        } else if f == crate::config::Format::Raw {
            Bus::Nvme
        } else {
            Bus::Virtio
        }
    }

    /// QEMU's network card on `net0` for the destination: VirtualBox's
    /// default Intel PRO/1000, virtio elsewhere (QEMU has no ENA).
    fn nic(self) -> &'static str {
        match self {
            Bus::Ahci => "e1000,netdev=net0",
            Bus::Virtio | Bus::Nvme => "virtio-net-pci,netdev=net0",
        }
    }

    /// QEMU's `-device` for the boot disk on drive `os` (q35 has its AHCI
    /// controller built in, buses ide.0 to ide.5).
    fn device(self) -> &'static str {
        match self {
            Bus::Virtio => "virtio-blk-pci,drive=os,bootindex=0",
            Bus::Nvme => "nvme,drive=os,serial=biovm-os,bootindex=0",
            Bus::Ahci => "ide-hd,drive=os,bus=ide.0,bootindex=0",
        }
    }

    /// QEMU's `-device` for a second disk, the data disk, on drive `data`.
    fn data_device(self) -> &'static str {
        match self {
            Bus::Virtio => "virtio-blk-pci,drive=data,serial=biovm-data",
            Bus::Nvme => "nvme,drive=data,serial=biovm-data",
            Bus::Ahci => "ide-hd,drive=data,bus=ide.1",
        }
    }
}

/// One test boot's virtual machine.
pub struct Vm<'a> {
    pub disk: &'a Path,
    pub disk_format: DiskFormat,
    pub bus: Bus,
    /// Names the console and result logs: `<label>.serial.log`.
    pub label: &'a str,
    /// The test drive (serial `biovm-checks`) the smoke agent runs, if any.
    pub checks_drive: Option<&'a Path>,
    /// A NoCloud seed drive (label CIDATA) for cloud-init, if any.
    pub seed_drive: Option<&'a Path>,
    /// The image's data disk, if it has one: a second disk on the boot
    /// disk's controller, as its destination attaches a second volume.
    pub data_drive: Option<(&'a Path, DiskFormat)>,
    /// A network card on QEMU user networking with `restrict=on` (the
    /// guest reaches nothing), forwarding this port on 127.0.0.1 to the
    /// guest's SSH port; `None`: no network device at all.
    pub ssh_forward: Option<u16>,
    /// More ports forwarded beside SSH: (port on 127.0.0.1, guest port).
    pub also_forward: &'a [(u16, u16)],
    /// An EC2 machine: firmware that says "Amazon EC2", and a network card
    /// that reaches only the metadata service at 169.254.169.254, served by
    /// `biovm imds-serve --state DIR` from this folder.
    pub imds: Option<&'a Path>,
    /// The console on this terminal (`biovm run`) instead of a log file.
    pub console_on_terminal: bool,
    pub firmware: BootMode,
    pub accel: Accel,
    pub work: GuestWork,
    pub cpus: u32,
    pub memory_mib: u32,
    /// Folder for the console log and result log.
    pub run_dir: &'a Path,
    /// Folder for the boot's own scratch files (its firmware variables).
    pub scratch: &'a Path,
}

pub struct VmFiles {
    pub console_log: PathBuf,
    pub results_log: PathBuf,
}

impl Vm<'_> {
    /// The QEMU command line. The disk is opened with `snapshot=on`: the
    /// guest's writes go to a temporary overlay, never into `disk` (itself
    /// an overlay of the artifact in a test boot).
    /// No network device exists. The first serial port is the console, the
    /// second carries the test results.
    pub fn command(&self) -> Result<(Cmd, VmFiles)> {
        let files = VmFiles {
            console_log: self.run_dir.join(format!("{}.serial.log", self.label)),
            results_log: self.run_dir.join(format!("{}.results.log", self.label)),
        };
        let mut c = Cmd::new(QEMU);
        let tcg_cpu = std::env::var("BIOVM_TCG_CPU").unwrap_or_else(|_| {
            match self.work {
                GuestWork::Boot => TCG_CPU,
                GuestWork::Tools => TCG_CPU_TOOLS,
            }
            .into()
        });
        let cpu = match self.accel {
            Accel::Kvm => "host",
            Accel::Tcg => tcg_cpu.as_str(),
        };
        c.args([
            "-machine",
            &format!("q35,accel={}", self.accel),
            "-cpu",
            cpu,
        ])
        .args([
            "-smp",
            &self.cpus.to_string(),
            "-m",
            &self.memory_mib.to_string(),
        ])
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-monitor",
            "none",
        ])
        .arg("-serial")
        .arg(if self.console_on_terminal {
            "mon:stdio".to_string()
        } else {
            format!("file:{}", files.console_log.display())
        })
        .arg("-serial")
        .arg(format!("file:{}", files.results_log.display()))
        .arg("-drive")
        .arg(format!(
            "if=none,id=os,file={},format={},snapshot=on",
            self.disk.display(),
            self.disk_format
        ))
        .args(["-device", self.bus.device()]);
        if let Some((data, format)) = self.data_drive {
            // Like the boot disk, never written (the guest mounts it
            // read-only anyway).
            c.arg("-drive")
                .arg(format!(
                    "if=none,id=data,file={},format={format},snapshot=on",
                    data.display()
                ))
                .args(["-device", self.bus.data_device()]);
        }
        if let Some(checks) = self.checks_drive {
            c.arg("-drive")
                .arg(format!(
                    "if=none,id=checks,file={},format=raw,readonly=on",
                    checks.display()
                ))
                .args(["-device", "virtio-blk-pci,drive=checks,serial=biovm-checks"]);
        }
        if let Some(dir) = self.imds {
            let exe = std::env::current_exe().context("cannot find the biovm program")?;
            // QEMU runs the command for each connection the guest opens;
            // a comma in an option value is written twice.
            let serve = format!("{} imds-serve --state {}", exe.display(), dir.display())
                .replace(',', ",,");
            c.arg("-netdev")
                .arg(format!(
                    "user,id=net0,restrict=on,net=169.254.0.0/16,host=169.254.0.2,\
                     dhcpstart=169.254.0.15,guestfwd=tcp:{}:80-cmd:{serve}",
                    super::imds::ADDRESS
                ))
                .args(["-device", self.bus.nic()])
                .arg("-smbios")
                .arg(format!(
                    "type=1,manufacturer=Amazon EC2,product=t3.medium,serial={EC2_UUID},uuid={EC2_UUID}"
                ));
        } else if let Some(port) = self.ssh_forward {
            let more: String = self
                .also_forward
                .iter()
                .map(|(host, guest)| format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"))
                .collect();
            c.arg("-netdev")
                .arg(format!(
                    "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22{more}"
                ))
                .args(["-device", self.bus.nic()]);
        }
        if let Some(seed) = self.seed_drive {
            c.arg("-drive")
                .arg(format!(
                    "if=none,id=seed,file={},format=raw,readonly=on",
                    seed.display()
                ))
                .args(["-device", "virtio-blk-pci,drive=seed"]);
        }
        c
            // Entropy from the host, as clouds provide: no boot stalls on getrandom().
            .args(["-object", "rng-random,id=rng,filename=/dev/urandom"])
            .args(["-device", "virtio-rng-pci,rng=rng"]);
        if self.firmware == BootMode::Uefi {
            let vars = self.scratch.join(format!("{}.vars.fd", self.label));
            fs::copy(OVMF_VARS, &vars)
                .with_context(|| format!("cannot copy {OVMF_VARS} (package ovmf)"))?;
            c.arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
                ))
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars.display()
                ));
        }
        Ok((c, files))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_has_no_network_and_a_snapshot_disk() {
        let d = tempfile::tempdir().unwrap();
        let vm = Vm {
            disk: Path::new("/x/minimal.raw"),
            disk_format: DiskFormat::Raw,
            bus: Bus::Nvme,
            label: "raw-bios",
            checks_drive: Some(Path::new("/x/checks.tar")),
            seed_drive: None,
            imds: None,
            ssh_forward: None,
            also_forward: &[],
            data_drive: Some((Path::new("/x/minimal.data.raw"), DiskFormat::Raw)),
            console_on_terminal: false,
            firmware: BootMode::Bios,
            accel: Accel::Tcg,
            work: GuestWork::Boot,
            cpus: 1,
            memory_mib: 1024,
            run_dir: d.path(),
            scratch: d.path(),
        };
        let (c, _) = vm.command().unwrap();
        let line = c.display();
        assert!(
            line.contains("file=/x/minimal.raw,format=raw,snapshot=on"),
            "{line}"
        );
        assert!(line.contains("-nodefaults"), "{line}");
        assert!(!line.contains("-nic") && !line.contains("netdev"), "{line}");
        assert!(line.contains("serial=biovm-checks"), "{line}");
        assert!(!line.contains("pflash"), "BIOS boots use SeaBIOS: {line}");
        assert!(line.contains("-device nvme,drive=os,"), "{line}");
        assert!(
            line.contains("file=/x/minimal.data.raw,format=raw,snapshot=on")
                && line.contains("-device nvme,drive=data,serial=biovm-data"),
            "the data disk is a second NVMe disk, never written: {line}"
        );
        assert!(
            line.contains(&format!(
                "file:{}",
                d.path().join("raw-bios.serial.log").display()
            )),
            "{line}"
        );
        // Under TCG: the x86-64-v2 model for a boot's sample, `max` (AVX2)
        // where the guest runs any tool. BIOVM_TCG_CPU is not set
        // by any test.
        assert!(line.contains(&format!("-cpu {TCG_CPU} ")), "{line}");
        let tools = Vm {
            work: GuestWork::Tools,
            ..vm
        };
        let line = tools.command().unwrap().0.display();
        assert!(line.contains(&format!("-cpu {TCG_CPU_TOOLS} ")), "{line}");
    }
}
