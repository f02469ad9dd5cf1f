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

/// cloud-init's four boot stages: each unit, and the arguments Debian's
/// unit gives `/usr/bin/cloud-init`.
const CLOUD_INIT_STAGES: &[(&str, &str)] = &[
    ("cloud-init-local.service", "init --local"),
    ("cloud-init.service", "init"),
    ("cloud-config.service", "modules --mode=config"),
    ("cloud-final.service", "modules --mode=final"),
];

/// The function `/usr/bin/cloud-init` runs: its `console_scripts` entry
/// point, as cloud-init's own metadata (`entry_points.txt`) declares it.
const CLOUD_INIT_ENTRY: &str = "cloud-init = cloudinit.cmd.main:main";

/// What a stage's unit runs instead of `/usr/bin/cloud-init ARGS`: the
/// same function with the same arguments (and the same program name in
/// its messages), called directly. `/usr/bin/cloud-init` is setuptools'
/// entry script: before it calls that function it looks its entry point
/// up with `importlib.metadata`, which imports the metadata machinery
/// (email parsing, zip files, CSV) and reads the installed distributions
/// (BioLinux's dist-packages: 929 entries). Natively, in the processor
/// time `cloud-init --version` takes (`tests/bench-cloud-init-start.sh`,
/// median of 30): BioLinux's tree 208 ms by the script, 196 ms direct;
/// the minimal image's 270 and 249 ms: 5-8% of the start every stage pays
/// before its own work, and under software emulation each of those
/// milliseconds is tens.
fn cloud_init_direct(args: &str) -> String {
    format!(
        "/usr/bin/python3 -c \"import sys; sys.argv[0] = '/usr/bin/cloud-init'; \
         sys.path[0] = '/usr/bin'; from cloudinit.cmd.main import main; sys.exit(main())\" {args}"
    )
}

/// The drop-in for each cloud-init stage's unit (path in the tree, text)
/// that runs [`cloud_init_direct`], when the tree's cloud-init is the one
/// it stands for: `/usr/bin/cloud-init` setuptools' entry script of the
/// `cloud-init` distribution, whose metadata declares [`CLOUD_INIT_ENTRY`],
/// and each unit running `/usr/bin/cloud-init` with the arguments of
/// [`CLOUD_INIT_STAGES`]. None otherwise (another cloud-init, or none):
/// the units are left as they are.
fn cloud_init_drop_ins(root: &Tree) -> Option<Vec<(String, String)>> {
    let text = |rel: &str| {
        root.read(Path::new(rel))
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let script = text("usr/bin/cloud-init")?;
    let entry_script = script.starts_with("#!/usr/bin/python3\n")
        && script.contains("# EASY-INSTALL-ENTRY-SCRIPT: 'cloud-init==")
        && script.contains("'console_scripts', 'cloud-init')");
    let packages = Path::new("usr/lib/python3/dist-packages");
    let declared = root.read_dir(packages).ok()?.into_iter().any(|(name, _)| {
        let name = name.to_string_lossy();
        (name.starts_with("cloud_init-") && name.ends_with(".egg-info")
            || name.starts_with("cloud_init-") && name.ends_with(".dist-info"))
            && text(&format!("{}/{name}/entry_points.txt", packages.display()))
                .is_some_and(|t| t.lines().any(|l| l.trim() == CLOUD_INIT_ENTRY))
    });
    if !entry_script || !declared {
        return None;
    }
    let mut out = Vec::new();
    for (unit, args) in CLOUD_INIT_STAGES {
        // Another unit file or drop-in (the image's files, a package's)
        // may set what the unit runs: the units are left alone.
        let elsewhere = [
            format!("etc/systemd/system/{unit}"),
            format!("etc/systemd/system/{unit}.d"),
            format!("lib/systemd/system/{unit}.d"),
            format!("usr/local/lib/systemd/system/{unit}"),
        ];
        if elsewhere
            .iter()
            .any(|p| root.open_file(Path::new(p)).is_ok())
        {
            return None;
        }
        let unit_text = text(&format!("lib/systemd/system/{unit}"))?;
        let runs = unit_text
            .lines()
            .filter(|l| l.starts_with("ExecStart="))
            .collect::<Vec<_>>();
        if runs != [format!("ExecStart=/usr/bin/cloud-init {args}")] {
            return None;
        }
        out.push((
            format!("etc/systemd/system/{unit}.d/biovm-direct.conf"),
            format!(
                "# Written by biovm: cloud-init's main function, called directly rather\n\
# than through setuptools' entry script, which looks the function up in\n\
# the metadata of every installed Python distribution first, at every\n\
# stage of every boot. The same function, the same arguments. See biovm's\n\
# src/boot_cuts.rs.\n\
[Service]\nExecStart=\nExecStart={}\n",
                cloud_init_direct(args)
            ),
        ));
    }
    Some(out)
}

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

/// Write the cloud-init stages' drop-ins ([`cloud_init_drop_ins`]) into
/// the image tree at `root`, last, once every file of the image is in it.
pub fn apply_last(root: &Tree) -> Result<()> {
    match cloud_init_drop_ins(root) {
        Some(drop_ins) => {
            for (rel, text) in drop_ins {
                let rel = Path::new(&rel);
                root.create_dir_all(rel.parent().unwrap_or(Path::new("")))?;
                root.write(rel, text.as_bytes(), 0o644)?;
            }
        }
        None => log::info!(
            "the image's cloud-init is not the entry script and units biovm knows: \
             its units run it as they are"
        ),
    }
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

    /// A tree with Debian's cloud-init: its entry script, its metadata and
    /// the four units (their `ExecStart` lines as Debian 12 ships them).
    fn tree_with_cloud_init(unit_args: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let put = |rel: &str, text: &str| {
            let p = d.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        put(
            "usr/bin/cloud-init",
            "#!/usr/bin/python3\n# EASY-INSTALL-ENTRY-SCRIPT: 'cloud-init==22.4.2','console_scripts','cloud-init'\n\
             import re\nimport sys\n\
             if __name__ == '__main__':\n    sys.exit(load_entry_point('cloud-init==22.4.2', 'console_scripts', 'cloud-init')())\n",
        );
        put(
            "usr/lib/python3/dist-packages/cloud_init-22.4.2.egg-info/entry_points.txt",
            "[console_scripts]\ncloud-id = cloudinit.cmd.cloud_id:main\ncloud-init = cloudinit.cmd.main:main\n",
        );
        for ((unit, _), args) in CLOUD_INIT_STAGES.iter().zip(unit_args) {
            put(
                &format!("usr/lib/systemd/system/{unit}"),
                &format!("[Unit]\nDescription=x\n\n[Service]\nType=oneshot\nExecStart=/usr/bin/cloud-init {args}\nRemainAfterExit=yes\n"),
            );
        }
        std::os::unix::fs::symlink("usr/lib", d.path().join("lib")).unwrap();
        d
    }

    /// Each stage's unit calls cloud-init's main directly, with its own
    /// arguments, when the tree's cloud-init is the one that stands for;
    /// a unit that runs anything else leaves every unit as it is.
    #[test]
    fn cloud_init_stages_call_its_main_directly_only_where_it_is_the_known_one() {
        let args: Vec<&str> = CLOUD_INIT_STAGES.iter().map(|(_, a)| *a).collect();
        let d = tree_with_cloud_init(&args);
        apply_last(&Tree::open(d.path()).unwrap()).unwrap();
        for (unit, args) in CLOUD_INIT_STAGES {
            let p = d
                .path()
                .join(format!("etc/systemd/system/{unit}.d/biovm-direct.conf"));
            let text = std::fs::read_to_string(&p).unwrap();
            let runs: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("ExecStart="))
                .collect();
            assert_eq!(runs.len(), 2, "{text}");
            assert_eq!(runs[0], "ExecStart=", "the unit's own command is reset");
            assert!(
                runs[1].starts_with("ExecStart=/usr/bin/python3 -c \"import sys; ")
                    && runs[1].contains("from cloudinit.cmd.main import main; sys.exit(main())\" ")
                    && runs[1].ends_with(&format!("\" {args}")),
                "{}",
                runs[1]
            );
        }
        // The command runs cloud-init's main with the unit's arguments and
        // its program name, as the entry script does: shown with a stand-in
        // package whose main prints what it got.
        let fake = tempfile::tempdir().unwrap();
        let pkg = fake.path().join("cloudinit/cmd");
        std::fs::create_dir_all(&pkg).unwrap();
        for f in ["cloudinit/__init__.py", "cloudinit/cmd/__init__.py"] {
            std::fs::write(fake.path().join(f), "").unwrap();
        }
        std::fs::write(
            pkg.join("main.py"),
            "import sys\ndef main(sysv_args=None):\n    print(' '.join(sys.argv), sys.path[0])\n    return 3\n",
        )
        .unwrap();
        let line = cloud_init_direct("modules --mode=final");
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(line.replacen("/usr/bin/python3", "python3", 1))
            .env("PYTHONPATH", fake.path())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(3), "its exit status is main's");
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "/usr/bin/cloud-init modules --mode=final /usr/bin\n"
        );

        // A drop-in of the image's own for one unit: no unit is changed.
        let d = tree_with_cloud_init(&args);
        let own = d.path().join("etc/systemd/system/cloud-final.service.d");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(own.join("10-lab.conf"), "[Service]\nTimeoutSec=0\n").unwrap();
        apply_last(&Tree::open(d.path()).unwrap()).unwrap();
        for (unit, _) in CLOUD_INIT_STAGES {
            let p = format!("etc/systemd/system/{unit}.d/biovm-direct.conf");
            assert!(!d.path().join(p).exists(), "{unit}");
        }

        // A unit that runs something else: no unit is changed.
        let mut other = args.clone();
        other[2] = "modules --mode=config --file /etc/x";
        let d = tree_with_cloud_init(&other);
        apply_last(&Tree::open(d.path()).unwrap()).unwrap();
        assert!(
            !d.path().join("etc/systemd/system").exists()
                || std::fs::read_dir(d.path().join("etc/systemd/system"))
                    .unwrap()
                    .count()
                    == 0
        );
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
