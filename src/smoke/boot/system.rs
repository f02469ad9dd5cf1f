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
/// built) on the larger boot disk of `disk_bytes`.
pub fn system_checks(image_bytes: u64, disk_bytes: u64, cloud: Cloud) -> Vec<Tool> {
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
                r#"size=$(findmnt -bno SIZE /)
echo "root filesystem: $size bytes; disk as built: {image_bytes} bytes; boot disk: {disk_bytes} bytes"
if [ "$size" -gt {image_bytes} ]; then echo grown; else echo "not grown"; fi
"#
            ),
            "^grown$",
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
