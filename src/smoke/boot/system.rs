//! The checks of the booted system itself, beside the tools' checks in
//! every VM boot (not in containers, where there is no boot to check), and
//! the host's own check of an EC2 boot's metadata reads.

use crate::manifest::Tool;
use crate::smoke::checks::system_check;
use crate::smoke::seed::{self, Cloud};

/// Checks of the booted system itself, run after the tools' checks in
/// every VM boot (not in containers): the boot finished with no failed
/// unit; cloud-init reached its final stage from `cloud`'s data source,
/// created the seed's user and installed its key (for the image's default
/// user too); and the root filesystem grew past `image_bytes` (the disk as
/// built) on the larger boot disk of `disk_bytes`, which on an `nvme`
/// controller waits for its requests as long as the host needs (see
/// `boot_cuts::KERNEL_ARGS`).
pub fn system_checks(image_bytes: u64, disk_bytes: u64, cloud: Cloud, nvme: bool) -> Vec<Tool> {
    let (nvme_line, nvme_expect) = if nvme {
        (
            "echo \"NVMe request timeout: $(cat /sys/module/nvme_core/parameters/io_timeout) s\"\n",
            format!(
                "(?s)^NVMe request timeout: {} s$.*",
                crate::boot_cuts::NVME_IO_TIMEOUT
            ),
        )
    } else {
        ("", String::new())
    };
    vec![
        // `running` means every unit started; otherwise the failed ones
        // are listed.
        system_check(
            "boot-finished",
            // Waiting costs nothing once the boot is done; on a loaded
            // host (two lanes of tests beside a build) a large image's
            // cloud-init stages alone took 400 s under emulation.
            "timeout 540 systemctl is-system-running --wait\nsystemctl --failed --no-legend --plain"
                .into(),
            "^running$",
            560,
        ),
        system_check(
            "cloud-init",
            "cloud-init status --long --wait".into(),
            &format!(r"(?s)^status: done$.*DataSource{}", cloud.datasource()),
            120,
        ),
        system_check(
            "cloud-user",
            format!(
                r#"set -e
key='{key}'
grep -qxF "$key" /home/{user}/.ssh/authorized_keys
echo "{user}: created, key installed"
d=$(sed -n 's/^# default user: //p' /etc/cloud/cloud.cfg.d/90-biovm.cfg)
if [ -n "$d" ]; then
    grep -qxF "$key" "$(getent passwd "$d" | cut -d: -f6)/.ssh/authorized_keys"
    echo "$d (default user): key installed"
fi
test -s /etc/ssh/ssh_host_ed25519_key.pub
echo "SSH host keys made at first boot"
"#,
                key = seed::SEED_KEY,
                user = seed::SEED_USER
            ),
            &format!("^{}: created, key installed$", seed::SEED_USER),
            30,
        ),
        system_check(
            "root-grown",
            format!(
                r#"{nvme_line}size=$(findmnt -bno SIZE /)
echo "root filesystem: $size bytes; disk as built: {image_bytes} bytes; boot disk: {disk_bytes} bytes"
if [ "$size" -gt {image_bytes} ]; then echo grown; else echo "not grown"; fi
"#
            ),
            &format!("{nvme_expect}^grown$"),
            30,
        ),
    ]
}

/// The host's check of an EC2 boot: every metadata read carried an IMDSv2
/// session token (judged from the metadata service's log).
pub fn imds_check() -> Tool {
    system_check(
        "imdsv2",
        "(judged on the host from the metadata service's log)".into(),
        "^IMDSv2: every read carried a session token$",
        0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smoke::checks::judge;

    fn root_grown(nvme: bool) -> Tool {
        system_checks(100, 200, Cloud::Ec2, nvme)
            .into_iter()
            .find(|t| t.name == "system/root-grown")
            .unwrap()
    }

    #[test]
    fn on_nvme_the_root_disk_must_wait_as_long_as_the_host_needs() {
        let grown =
            "root filesystem: 150 bytes; disk as built: 100 bytes; boot disk: 200 bytes\ngrown\n";
        let nvme = root_grown(true);
        assert!(nvme
            .check
            .command
            .contains("nvme_core/parameters/io_timeout"));
        let waits = format!("NVMe request timeout: 4294967295 s\n{grown}");
        assert!(judge(&nvme, 0, &waits).passed());
        // The kernel's default: a slow host fails the root disk.
        let default = format!("NVMe request timeout: 30 s\n{grown}");
        assert!(!judge(&nvme, 0, &default).passed());
        assert!(!judge(&nvme, 0, "NVMe request timeout: 4294967295 s\nnot grown\n").passed());
        // Other controllers: only the growth.
        let other = root_grown(false);
        assert!(!other.check.command.contains("nvme_core"));
        assert!(judge(&other, 0, grown).passed());
    }
}
