//! Where a test boot's time goes, stage by stage, on one clock: seconds
//! since QEMU started.
//!
//! The host sees the firmware and the boot loader on the console (when
//! GRUB takes over, when it hands over to the kernel); the guest reports
//! the rest after its checks, cheaply (one `systemctl show`, one line of
//! `dmesg`, cloud-init's own event log, no Python): the monotonic times at
//! which the kernel ran /init, systemd started and the boot finished, and
//! when each cloud-init stage started and ended. The guest's monotonic
//! clock starts with the kernel, and the host knows both the guest's
//! uptime and its own clock at the `start` line, so every guest time maps
//! onto the host's. Every VM report carries the result (`boot_stages`), and
//! `boot_analysis` gets cloud-init's slowest modules (`cloud-init-blame`).

use std::collections::BTreeMap;

use serde::Serialize;

/// What the guest reports about its boot after its checks (shell lines run
/// by the checks script, whose `info KEY COMMAND` sends the command's
/// output): the `stages` timestamps, cloud-init's start and finish events
/// (one `DATE TIME start|finish EVENT` line each), and systemd's own
/// summary and slowest units. No `systemd-analyze critical-chain`: the
/// stages show the critical path, and each `systemd-analyze` walking every
/// unit over D-Bus cost a loaded TCG guest several seconds after its checks.
pub const GUEST_INFO: &str = r#"info stages 'echo "uptime $(cut -d" " -f1 /proc/uptime)"
dmesg 2>/dev/null | sed -n "s/^\[ *\([0-9.]*\)\] Run \/.*init as init process.*/run-init \1/p" | head -n 1
systemctl show -p UserspaceTimestampMonotonic -p GeneratorsFinishTimestampMonotonic -p UnitsLoadFinishTimestampMonotonic -p FinishTimestampMonotonic
echo
systemctl show -p Id -p InactiveExitTimestampMonotonic -p ActiveEnterTimestampMonotonic cloud-init-local.service cloud-init.service cloud-config.service cloud-final.service'
info cloud-init-events 'sed -nE "s/^([0-9-]+ [0-9:,]+) - handlers\.py\[DEBUG\]: (start|finish): ([^:]+): .*/\1 \2 \3/p" /var/log/cloud-init.log'
info time 'systemd-analyze time --no-pager'
info blame 'systemd-analyze blame --no-pager | head -n 25'
"#;

/// One stage of a boot: its name, when it started and how long it took
/// (seconds since QEMU started).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Stage {
    pub name: String,
    pub start: f64,
    pub secs: f64,
}

/// What the host saw on the console, in seconds since QEMU started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConsoleMarks {
    /// The boot loader took over from the firmware: GRUB's first output
    /// under SeaBIOS (which prints nothing on the serial port), OVMF's
    /// "starting Boot" line under UEFI.
    pub loader: Option<f64>,
    /// GRUB ran the menu entry ("Booting `...'").
    pub handover: Option<f64>,
}

/// Console text that shows the firmware has handed over to the boot
/// loader: OVMF's line for the boot option it starts, GRUB's greeting
/// (EFI), and the screen clear GRUB's serial terminal sends first (BIOS).
pub const LOADER_MARKS: &[&str] = &["BdsDxe: starting ", "Welcome to GRUB!", "\x1b[H\x1b[J"];

/// The guest's timestamps from its `stages` report, in seconds of its
/// monotonic clock (0 = the kernel started).
#[derive(Debug, Default, PartialEq)]
struct GuestTimes {
    /// When the report was made (the checks are over).
    uptime: Option<f64>,
    /// The kernel ran the initramfs's /init.
    run_init: Option<f64>,
    /// systemd started from the root filesystem.
    userspace: Option<f64>,
    /// systemd's generators (cloud-init's runs ds-identify) were done, then
    /// its units were loaded.
    generators: Option<f64>,
    units_loaded: Option<f64>,
    /// The boot finished (every start job done).
    finish: Option<f64>,
    /// Per unit: when it started activating and when it was active.
    units: BTreeMap<String, (Option<f64>, Option<f64>)>,
}

fn parse_guest(text: &str) -> GuestTimes {
    let mut g = GuestTimes::default();
    let usec = |v: &str| v.trim().parse::<u64>().ok().filter(|u| *u > 0);
    for block in text.split("\n\n") {
        let mut id = None;
        let (mut exit, mut enter) = (None, None);
        for l in block.lines() {
            let l = l.trim();
            if let Some(v) = l.strip_prefix("uptime ") {
                g.uptime = v.trim().parse().ok();
            } else if let Some(v) = l.strip_prefix("run-init ") {
                g.run_init = v.trim().parse().ok();
            } else if let Some((k, v)) = l.split_once('=') {
                let s = usec(v).map(|u| u as f64 / 1e6);
                match k {
                    "UserspaceTimestampMonotonic" => g.userspace = s,
                    "GeneratorsFinishTimestampMonotonic" => g.generators = s,
                    "UnitsLoadFinishTimestampMonotonic" => g.units_loaded = s,
                    "FinishTimestampMonotonic" => g.finish = s,
                    "Id" => id = Some(v.trim().to_string()),
                    "InactiveExitTimestampMonotonic" => exit = s,
                    "ActiveEnterTimestampMonotonic" => enter = s,
                    _ => {}
                }
            }
        }
        if let Some(id) = id {
            g.units.insert(id, (exit, enter));
        }
    }
    g
}

/// The boot's stages, in order, each from the end of the one before (a
/// stage whose mark is missing, or later than a later stage's, as after a
/// `systemctl daemon-reload` that loads the units again, is left out and
/// its time goes to the next one). `boot_secs` is when the guest's `start` line came (host),
/// `uptime_at_start` the guest's uptime in it, `total_secs` when the guest
/// was gone; `guest` the `stages` report. Nothing without the guest's
/// times (a container's checks, an older image).
pub fn breakdown(
    marks: ConsoleMarks,
    boot_secs: Option<f64>,
    uptime_at_start: Option<f64>,
    total_secs: f64,
    guest: Option<&str>,
) -> Vec<Stage> {
    let (Some(boot), Some(up), Some(guest)) = (boot_secs, uptime_at_start, guest) else {
        return Vec::new();
    };
    let g = parse_guest(guest);
    // Where the guest's clock starts on the host's.
    let k = boot - up;
    let at = |t: Option<f64>| t.map(|t| k + t);
    let unit = |name: &str| g.units.get(name).copied().unwrap_or((None, None));
    let (local_start, local_end) = unit("cloud-init-local.service");
    let (net_start, net_end) = unit("cloud-init.service");
    let (config_start, config_end) = unit("cloud-config.service");
    let (final_start, final_end) = unit("cloud-final.service");
    let marks_in_order: [(&'static str, Option<f64>); 17] = [
        ("firmware", marks.loader),
        ("grub", marks.handover),
        // GRUB reads the kernel and the initramfs through the firmware.
        ("kernel-load", Some(k)),
        ("kernel", at(g.run_init)),
        ("initramfs", at(g.userspace)),
        ("systemd-generators", at(g.generators)),
        ("systemd-load-units", at(g.units_loaded)),
        // Early units, udev's coldplug, local file systems.
        ("systemd-early", at(local_start)),
        ("cloud-init-local", at(local_end)),
        ("to-cloud-init-network", at(net_start)),
        ("cloud-init-network", at(net_end)),
        ("to-cloud-config", at(config_start)),
        ("cloud-config", at(config_end)),
        ("to-cloud-final", at(final_start)),
        ("cloud-final", at(final_end)),
        ("to-boot-finished", at(g.finish)),
        // The checks that waited for the boot, and the report above.
        ("checks-after-boot", at(g.uptime)),
    ];
    let mut stages = Vec::new();
    let mut from = 0.0_f64;
    for (i, (name, end)) in marks_in_order.iter().enumerate() {
        let later = marks_in_order[i + 1..].iter().filter_map(|(_, e)| *e);
        if let Some(end) = *end {
            if end >= from && later.clone().all(|l| l >= end) {
                stages.push(Stage {
                    name: name.to_string(),
                    start: round(from),
                    secs: round(end - from),
                });
                from = end;
            }
        }
    }
    if total_secs >= from && !stages.is_empty() {
        stages.push(Stage {
            name: "report-and-power-off".into(),
            start: round(from),
            secs: round(total_secs - from),
        });
    }
    stages
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// cloud-init's slowest events (stages, data source searches, modules),
/// longest first, from its `DATE TIME start|finish EVENT` lines, as
/// `cloud-init analyze blame` would list them, without Python in the guest.
pub fn cloud_init_blame(events: &str) -> String {
    let mut open: BTreeMap<&str, f64> = BTreeMap::new();
    let mut done: Vec<(f64, &str)> = Vec::new();
    for l in events.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let [_, time, kind, event] = f[..] else {
            continue;
        };
        let Some(t) = clock_secs(time) else { continue };
        match kind {
            "start" => {
                open.insert(event, t);
            }
            "finish" => {
                if let Some(s) = open.remove(event) {
                    // Past midnight the clock starts again.
                    let d = if t >= s { t - s } else { t + 86400.0 - s };
                    done.push((d, event));
                }
            }
            _ => {}
        }
    }
    done.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    done.iter()
        .map(|(d, e)| format!("{d:8.3}s {e}\n"))
        .collect()
}

/// `HH:MM:SS,mmm` in seconds since midnight.
fn clock_secs(s: &str) -> Option<f64> {
    let (hms, ms) = s.split_once(',').unwrap_or((s, "0"));
    let mut p = hms.split(':').map(|x| x.parse::<f64>().ok());
    let (h, m, sec) = (p.next()??, p.next()??, p.next()??);
    Some(h * 3600.0 + m * 60.0 + sec + ms.parse::<f64>().ok()? / 1000.0)
}

/// The stages in one line for the log: `firmware 3.1 s, grub 0.4 s, ...`.
pub fn summary(stages: &[Stage]) -> String {
    stages
        .iter()
        .map(|s| format!("{} {:.1} s", s.name, s.secs))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `stages` report as a bookworm guest gives it.
    const GUEST: &str = "uptime 92.50\nrun-init 2.742275\nUserspaceTimestampMonotonic=6416048\nGeneratorsFinishTimestampMonotonic=8000000\nUnitsLoadFinishTimestampMonotonic=9500000\nFinishTimestampMonotonic=78085000\n\n\
Id=cloud-init-local.service\nInactiveExitTimestampMonotonic=14000000\nActiveEnterTimestampMonotonic=43522000\n\n\
Id=cloud-init.service\nInactiveExitTimestampMonotonic=44000000\nActiveEnterTimestampMonotonic=65271000\n\n\
Id=cloud-config.service\nInactiveExitTimestampMonotonic=66000000\nActiveEnterTimestampMonotonic=73463000\n\n\
Id=cloud-final.service\nInactiveExitTimestampMonotonic=73500000\nActiveEnterTimestampMonotonic=78000000\n";

    #[test]
    fn the_guests_times_are_read() {
        let g = parse_guest(GUEST);
        assert_eq!(g.uptime, Some(92.5));
        assert_eq!(g.run_init, Some(2.742275));
        assert_eq!(g.userspace, Some(6.416048));
        assert_eq!((g.generators, g.units_loaded), (Some(8.0), Some(9.5)));
        assert_eq!(g.finish, Some(78.085));
        assert_eq!(g.units["cloud-init.service"], (Some(44.0), Some(65.271)));
        assert_eq!(g.units.len(), 4);
        // A unit that never ran has zero timestamps: no time.
        let g = parse_guest("Id=cloud-final.service\nInactiveExitTimestampMonotonic=0\n");
        assert_eq!(g.units["cloud-final.service"], (None, None));
    }

    #[test]
    fn stages_follow_each_other_on_the_hosts_clock() {
        let marks = ConsoleMarks {
            loader: Some(2.0),
            handover: Some(3.0),
        };
        // The start line came at 20.3 s with the guest up 12.24 s: the
        // kernel started at 8.06 s.
        let s = breakdown(marks, Some(20.3), Some(12.24), 101.5, Some(GUEST));
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "firmware",
                "grub",
                "kernel-load",
                "kernel",
                "initramfs",
                "systemd-generators",
                "systemd-load-units",
                "systemd-early",
                "cloud-init-local",
                "to-cloud-init-network",
                "cloud-init-network",
                "to-cloud-config",
                "cloud-config",
                "to-cloud-final",
                "cloud-final",
                "to-boot-finished",
                "checks-after-boot",
                "report-and-power-off"
            ]
        );
        let get = |n: &str| s.iter().find(|x| x.name == n).unwrap().secs;
        assert_eq!(get("firmware"), 2.0);
        assert_eq!(get("kernel-load"), 5.06);
        assert_eq!(get("kernel"), 2.74);
        assert_eq!(get("cloud-init-local"), 29.52);
        let total: f64 = s.iter().map(|x| x.secs).sum();
        assert!((total - 101.5).abs() < 0.1, "{total}");
        // Without the console marks their time goes to the next stage.
        let s = breakdown(
            ConsoleMarks::default(),
            Some(20.3),
            Some(12.24),
            101.5,
            Some(GUEST),
        );
        assert_eq!(s[0].name, "kernel-load");
        assert_eq!(s[0].secs, 8.06);
        // No guest report, no stages.
        assert!(breakdown(marks, Some(20.3), Some(12.24), 101.5, None).is_empty());
        assert!(breakdown(marks, None, None, 10.0, Some(GUEST)).is_empty());
        // Units loaded again after cloud-init's first stage began: that
        // mark is left out, the stages still follow each other.
        let reloaded = GUEST.replace("=9500000", "=50000000");
        let s = breakdown(marks, Some(20.3), Some(12.24), 101.5, Some(&reloaded));
        assert!(!s.iter().any(|x| x.name == "systemd-load-units"));
        assert_eq!(
            s.iter().find(|x| x.name == "systemd-early").unwrap().start,
            16.06
        );
        let total: f64 = s.iter().map(|x| x.secs).sum();
        assert!((total - 101.5).abs() < 0.1, "{total}");
    }

    #[test]
    fn cloud_init_blame_pairs_events_longest_first() {
        let ev = "2026-12-05 19:28:27,100 start init-local\n\
2026-12-05 19:28:27,200 start init-local/search-Ec2Local\n\
2026-12-05 19:28:37,900 finish init-local/search-Ec2Local\n\
2026-12-05 19:28:38,000 finish init-local\n\
2026-12-05 19:28:50,000 start init-network/config-growpart\n\
2026-12-05 19:28:50,250 finish init-network/config-growpart\n\
garbage line\n\
2026-12-05 23:59:59,500 start modules-final/config-final-message\n\
2026-12-06 00:00:00,500 finish modules-final/config-final-message\n";
        assert_eq!(
            cloud_init_blame(ev),
            "  10.900s init-local\n  10.700s init-local/search-Ec2Local\n   1.000s modules-final/config-final-message\n   0.250s init-network/config-growpart\n"
        );
    }

    /// The guest's info lines are valid shell (`sh -n`).
    #[test]
    fn the_guest_lines_parse_as_shell() {
        let script = format!("info() {{ :; }}\n{GUEST_INFO}");
        crate::cmd::Cmd::new("sh")
            .args(["-n", "-c", &script])
            .run()
            .unwrap();
    }
}
