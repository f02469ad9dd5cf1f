//! What an image does not do at boot: work a cloud or VirtualBox VM never
//! needs, cut from every boot (under software emulation each second of
//! guest CPU is several of the host's). Measured stage by stage with
//! `smoke::stages` (see `tests/bench-boot-stages.sh`).
//!
//! Nothing here touches what the system checks prove: the boot still
//! finishes with no failed unit, cloud-init still runs all four stages
//! from the data source of the destination (the list stays NoCloud, Ec2,
//! None: one root filesystem serves every format, so it must find a seed
//! drive as well as the EC2 metadata service), still creates the user,
//! installs the keys, grows the root and makes the host keys; the
//! initramfs keeps every driver of `rootfs::INITRAMFS_DRIVERS`.

use std::path::Path;

use anyhow::Result;

use crate::confined::Tree;

/// Added to the kernel's command line (`rootfs::grub_cfg`). `no_timer_check`:
/// the kernel skips its check that the IO-APIC timer interrupt arrives
/// within a few ticks at start; a hypervisor's virtual timer works, but a
/// busy host (every software-emulated boot on a shared machine, a loaded
/// cloud host) can miss the check's window, and the kernel then panics
/// ("IO-APIC + timer doesn't work!"), as a BIOS test boot of the minimal
/// image did at load 8 on 2 cores. Cloud images of other distributions
/// boot with it for the same reason. `nvme_core.io_timeout=4294967295`:
/// an NVMe request (EC2's EBS volumes; the test boots' EC2 disk) may take
/// as long as the host needs, as AWS advises for Linux on EBS: at the
/// default 30 s, a slow host made the driver give up on the root disk,
/// reset the controller and leave the root filesystem read-only (a
/// detached `biovm run` of BioLinux on a machine still writing out the
/// last CI run's files, once in eight runs).
pub const KERNEL_ARGS: &str = "no_timer_check nvme_core.io_timeout=4294967295";

/// The NVMe request timeout [`KERNEL_ARGS`] sets, in seconds, as the
/// guest's `/sys/module/nvme_core/parameters/io_timeout` shows it.
pub const NVME_IO_TIMEOUT: &str = "4294967295";

/// Kernel modules udev would load at every boot for devices a cloud VM
/// either lacks or never uses; each load is a modprobe process and a
/// module link under emulation, at the moment cloud-init's first stage
/// starts Python. `blacklist` only stops loading by alias (udev's
/// coldplug, the kernel's own requests): `modprobe NAME` still loads one.
const UNUSED_MODULES: &[(&str, &str)] = &[
    ("pcspkr", "the PC speaker: nobody hears a cloud VM beep"),
    (
        "iTCO_wdt",
        "the ICH chipset watchdog of QEMU's q35: nothing in the image arms it",
    ),
    ("iTCO_vendor_support", "only used by iTCO_wdt"),
    (
        "i2c_i801",
        "the chipset's SMBus: no sensors or EEPROMs in a VM",
    ),
    ("lpc_ich", "the chipset's LPC bridge functions (GPIO, watchdog)"),
    (
        "cfg80211",
        "Wi-Fi configuration, requested when systemd-networkd asks for nl80211: VMs have wired NICs",
    ),
];

/// cloud-init's module lists (`/etc/cloud/cloud.cfg.d/91-biovm-modules.cfg`,
/// which replaces the lists of Debian's cloud.cfg): Debian's, without the
/// modules that can do nothing on this image, so that no stage imports and
/// runs them at every boot. Left out, with why:
/// - `migrator`: renames the semaphores of cloud-init releases older than
///   the one the image ships; an image has never run an older one.
/// - `snap`, `ubuntu-advantage`, `fan`, `landscape`, `byobu`: Ubuntu's
///   snapd, Ubuntu Pro, Ubuntu Fan networking, Landscape and byobu; Debian
///   ships none of them and cloud-init skips them on Debian anyway.
/// - `grub-dpkg`: turned off in `rootfs::cloud_cfg` (GRUB is not a package of
///   the image).
/// - `lxd`: needs the lxd snap.
/// - `reset_rmc`, `refresh_rmc_and_interface`: IBM PowerVM's RMC, not on
///   x86 clouds.
/// - `rightscale_userdata`: RightScale's user-data format, a service long
///   gone.
///
/// Every module a user's cloud-config can ask for on Debian stays:
/// bootcmd, write_files, growpart, resizefs, disk_setup, mounts, hostname,
/// /etc/hosts, CA certificates, rsyslog, users and groups, SSH (keys, host
/// keys, ssh-import-id), keyboard, locale, passwords, apt, NTP, time zone,
/// runcmd, packages, Puppet, Chef, MCollective, Salt, scripts, phone_home,
/// the final message and power_state.
pub const CLOUD_MODULES: &str =
    "# Written by biovm: Debian's lists without the modules that can do\n\
# nothing on this image (Ubuntu-only services, IBM PowerVM, RightScale,\n\
# old cloud-init migrations). See biovm's src/boot_cuts.rs.\n\
cloud_init_modules:\n\
\x20- seed_random\n\
\x20- bootcmd\n\
\x20- write-files\n\
\x20- growpart\n\
\x20- resizefs\n\
\x20- disk_setup\n\
\x20- mounts\n\
\x20- set_hostname\n\
\x20- update_hostname\n\
\x20- update_etc_hosts\n\
\x20- ca-certs\n\
\x20- rsyslog\n\
\x20- users-groups\n\
\x20- ssh\n\
cloud_config_modules:\n\
\x20- ssh-import-id\n\
\x20- keyboard\n\
\x20- locale\n\
\x20- set-passwords\n\
\x20- apt-pipelining\n\
\x20- apt-configure\n\
\x20- ntp\n\
\x20- timezone\n\
\x20- disable-ec2-metadata\n\
\x20- runcmd\n\
cloud_final_modules:\n\
\x20- package-update-upgrade-install\n\
\x20- write-files-deferred\n\
\x20- puppet\n\
\x20- chef\n\
\x20- mcollective\n\
\x20- salt-minion\n\
\x20- scripts-vendor\n\
\x20- scripts-per-once\n\
\x20- scripts-per-boot\n\
\x20- scripts-per-instance\n\
\x20- scripts-user\n\
\x20- ssh-authkey-fingerprints\n\
\x20- keys-to-console\n\
\x20- install-hotplug\n\
\x20- phone-home\n\
\x20- final-message\n\
\x20- power-state-change\n";

fn modprobe_conf() -> String {
    let mut s = String::from(
        "# Written by biovm: hardware a cloud VM lacks or never uses, not loaded at\n\
# boot (`modprobe NAME` still loads one). See biovm's src/boot_cuts.rs.\n",
    );
    for (m, why) in UNUSED_MODULES {
        s.push_str(&format!("# {why}\nblacklist {m}\n"));
    }
    s
}

/// Write the cuts into the image tree at `root`.
pub fn apply(root: &Tree) -> Result<()> {
    root.write(
        Path::new("etc/modprobe.d/biovm-cloud-vm.conf"),
        modprobe_conf().as_bytes(),
        0o644,
    )?;
    root.write(
        Path::new("etc/cloud/cloud.cfg.d/91-biovm-modules.cfg"),
        CLOUD_MODULES.as_bytes(),
        0o644,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module list entry is one of Debian's (none invented), the
    /// ones the system checks rely on stay, and the YAML reads as lists.
    #[test]
    fn cloud_module_lists_keep_what_the_checks_rely_on() {
        let v = crate::rootfs::yaml_as_json(CLOUD_MODULES);
        let list = |k: &str| -> Vec<String> {
            v[k].as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect()
        };
        let init = list("cloud_init_modules");
        // The user, its key, the grown root and the host keys.
        for m in ["growpart", "resizefs", "users-groups", "ssh"] {
            assert!(init.contains(&m.to_string()), "{m}");
        }
        let fin = list("cloud_final_modules");
        for m in ["scripts-user", "power-state-change", "final-message"] {
            assert!(fin.contains(&m.to_string()), "{m}");
        }
        assert!(list("cloud_config_modules").contains(&"runcmd".to_string()));
        let all: Vec<String> = [init, fin, list("cloud_config_modules")].concat();
        for gone in [
            "snap",
            "lxd",
            "landscape",
            "migrator",
            "rightscale_userdata",
        ] {
            assert!(!all.contains(&gone.to_string()), "{gone}");
        }
    }

    /// No driver the initramfs carries for a destination's disks or NICs is
    /// blacklisted.
    #[test]
    fn no_destination_driver_is_blacklisted() {
        let conf = modprobe_conf();
        for m in crate::rootfs::INITRAMFS_DRIVERS {
            assert!(!conf.contains(&format!("blacklist {m}\n")), "{m}");
        }
        assert_eq!(
            conf.lines().filter(|l| l.starts_with("blacklist ")).count(),
            UNUSED_MODULES.len()
        );
    }
}
