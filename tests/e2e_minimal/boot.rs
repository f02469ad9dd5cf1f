//! Boots and container runs: the whole matrix, broken disks (and one that
//! is not the built tree) and checks, and KVM that cannot run Linux.

use super::*;

/// The VM artifacts of the minimal image and the controller each boots on.
const VM_CELLS: &[(&str, &str)] = &[
    ("minimal.raw", "nvme"),
    ("minimal.qcow2", "virtio"),
    ("minimal.vmdk", "ahci"),
    ("minimal.vdi", "ahci"),
    ("minimal.ova", "ahci"),
    ("minimal.box", "ahci"),
];

/// The container artifacts: whose checks run in the raw disk's tree when
/// their layers show they hold it, else (the SIF) in their unpacked trees.
const CONTAINERS: &[&str] = &[
    "minimal.oci",
    "minimal.docker.tar",
    "minimal.sif",
    "minimal.rootfs.tar.gz",
];

#[test]
#[ignore = "needs root, network and minutes"]
fn the_whole_vm_matrix_boots_and_every_check_passes() {
    let _t = common::timed();
    let out = minimal();
    let before: Vec<(String, String)> = VM_CELLS
        .iter()
        .map(|(a, _)| (a.to_string(), biovm_sha(&out.join(a))))
        .collect();
    let _r = SHARED_REPORTS.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let o = biovm(&[
        "--recipes",
        "recipes",
        "test",
        "images/minimal.toml",
        "--out",
        out.to_str().unwrap(),
    ]);
    eprintln!("matrix: {:.0} s", t0.elapsed().as_secs_f64());
    assert!(o.status.success(), "biovm test failed");
    let stdout = String::from_utf8_lossy(&o.stdout);
    for (art, bus) in VM_CELLS {
        for fw in ["uefi", "bios"] {
            assert!(
                stdout.contains(&format!("{art} {fw}: PASSED (tcg, {bus},"))
                    || stdout.contains(&format!("{art} {fw}: PASSED (kvm, {bus},")),
                "{art} under {fw} did not pass on {bus}:\n{stdout}"
            );
            // Every check ran natively (below); a boot runs the system's
            // checks, the same-tree check and one tool per install source
            // (the minimal image's tools are all Debian's: the first one).
            let rows: Vec<&str> = stdout
                .lines()
                .filter(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 2 && f[0] == *art && f[1] == fw
                })
                .collect();
            let tools: Vec<&str> = rows
                .iter()
                .map(|l| l.split_whitespace().nth(2).unwrap())
                .collect();
            assert_eq!(
                tools,
                [
                    "bcftools",
                    "system/boot-finished",
                    "system/cloud-init",
                    "system/cloud-user",
                    "system/root-grown"
                ]
                .iter()
                .chain(if *art == "minimal.raw" {
                    &["system/imdsv2"][..]
                } else {
                    &[][..]
                })
                .chain(&["system/same-tree"])
                .copied()
                .collect::<Vec<_>>(),
                "{art} under {fw}:\n{stdout}"
            );
            assert!(rows.iter().all(|r| r.ends_with("passed")), "{rows:?}");
        }
    }
    // Every check, natively, in the root filesystem read out of the raw
    // disk, which is the tree the build made.
    assert!(
        stdout.contains("minimal.raw native: PASSED (native, namespaces,"),
        "{stdout}"
    );
    for tool in [
        "bcftools",
        "bwa",
        "fastp",
        "minimap2",
        "samtools",
        "bwa/index-and-map",
        "system/same-tree",
    ] {
        let row = stdout
            .lines()
            .find(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 2 && f[0] == "minimal.raw" && f[1] == "native" && f[2] == tool
            })
            .unwrap_or_else(|| panic!("no native row for {tool}:\n{stdout}"));
        assert!(row.ends_with("passed"), "{row}");
    }
    for art in CONTAINERS {
        assert!(
            stdout.contains(&format!("{art} container: PASSED (container, namespaces,")),
            "the checks in {art} did not pass:\n{stdout}"
        );
    }
    // JSON and JUnit reports, and every boot's console log, side by side.
    let rd = out.join("minimal.test");
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(rd.join("report.json")).unwrap()).unwrap();
    let n = 2 * VM_CELLS.len() + CONTAINERS.len() + 1;
    assert_eq!(report.as_array().unwrap().len(), n);
    for r in report.as_array().unwrap() {
        assert!(r["boot_secs"].as_f64().unwrap() > 0.0);
        let checks: Vec<&str> = r["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["tool"].as_str().unwrap())
            .collect();
        if r["firmware"] == "native" {
            assert!(checks.len() >= 7, "{r}");
            continue;
        }
        if r["firmware"] == "container" {
            // Every check passed natively in the tree this artifact holds
            // (less what its format leaves out): it runs the sample, and
            // shows it holds that tree.
            assert_eq!(checks, ["bcftools", "system/same-tree"], "{r}");
            let said = r["results"][1]["output"].as_str().unwrap();
            assert!(
                said.starts_with("same tree as built, as this format holds it: "),
                "{said}"
            );
            // Its layers, read as they stream past, showed that: it ran in
            // the raw disk's tree, not unpacked; the SIF (a squashfs) was.
            let in_disk = r["artifact"] != "minimal.sif";
            assert_eq!(
                r["tree_of"].as_str(),
                in_disk.then_some("minimal.raw"),
                "{r}"
            );
            continue;
        }
        let log = fs::read_to_string(r["serial_log"].as_str().unwrap()).unwrap_or_default();
        assert!(
            log.contains("Linux version"),
            "the serial log holds the guest's console: {r}"
        );
        // The raw disk's tree is the build's read-back of its bytes; every
        // other format's disk was compared with it sector by sector by the
        // build, which recorded its SHA-256: neither is read again.
        let same = r["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["tool"] == "system/same-tree")
            .unwrap_or_else(|| panic!("no same-tree check: {r}"));
        let said = same["output"].as_str().unwrap();
        let how = if r["artifact"] == "minimal.raw" {
            "(read back from this disk by its build; its SHA-256 is unchanged)"
        } else {
            "(every sector equal to minimal.raw's, compared by its build (qemu-img compare; \
             its SHA-256 is unchanged); that disk's tree read back from it by its build)"
        };
        assert!(said.ends_with(how), "{said}");
    }
    // The containers' unpacked trees are gone; their results logs stay.
    let left: Vec<String> = fs::read_dir(&rd)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".container"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    for art in CONTAINERS {
        let r = report
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["artifact"] == *art)
            .unwrap();
        let log = fs::read_to_string(r["serial_log"].as_str().unwrap()).unwrap();
        assert!(
            log.starts_with("BIOVM start ") && log.ends_with("BIOVM done\n"),
            "{art}"
        );
    }
    // The VMDK inside the OVA and the Vagrant box is the vmdk artifact,
    // byte for byte, and the VDI gives the guest every sector the VMDK
    // gives it (qemu-img compare), all on VirtualBox's controller: those
    // cells report the vmdk cells' boots, and say how they match; the raw
    // and qcow2 disks (other destinations) booted on their own.
    for r in report.as_array().unwrap() {
        let (art, fw) = (
            r["artifact"].as_str().unwrap(),
            r["firmware"].as_str().unwrap(),
        );
        let shared = match art {
            "minimal.ova" | "minimal.box" => Some("same disk as"),
            "minimal.vdi" => Some("same disk contents as"),
            _ => None,
        };
        assert_eq!(
            r["same_boot_as"].as_str().map(String::from),
            shared.map(|_| format!("minimal.vmdk {fw}")),
            "{r}"
        );
        assert_eq!(
            r["same_boot_by_contents"].as_bool().unwrap_or(false),
            art == "minimal.vdi",
            "{r}"
        );
        if let Some(how) = shared {
            // `minimal.ova bios: PASSED (tcg, ahci, 1 processor, same disk
            // as minimal.vmdk bios, ...`: the accelerator and processors
            // are the machine's.
            let line = stdout
                .lines()
                .find(|l| l.starts_with(&format!("{art} {fw}: PASSED (")))
                .unwrap_or_else(|| panic!("no summary line of {art} {fw}: {stdout}"));
            assert!(
                line.contains(", ahci, ") && line.contains(&format!(", {how} minimal.vmdk {fw}")),
                "{line}"
            );
        }
    }
    let junit = fs::read_to_string(rd.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testsuite ").count(), n);
    assert!(
        junit.contains("<property name=\"same-boot-as\" value=\"minimal.vmdk bios\"/>"),
        "{junit}"
    );
    assert!(junit.contains("name=\"minimal.box bios\""), "{junit}");
    assert!(!junit.contains("<failure"), "{junit}");
    // The artifacts are exactly as they shipped.
    for (a, sha) in before {
        assert_eq!(biovm_sha(&out.join(&a)), sha, "{a} changed");
    }
}

/// Breaking one firmware's bootloader fails exactly that firmware's cell;
/// breaking one format's disk fails exactly that format's cells; both fail
/// fast (the console shows it), not after the boot timeout. And a disk
/// whose root filesystem differs from the build's tree by one byte inside
/// one file is caught, both in the native run (which reads its tree from
/// that disk) and in the boot, by the same-tree check: a native pass
/// stands for a disk only when the disk holds that very tree. The raw
/// disk carries both changes (its UEFI bootloader gone, one byte of
/// /etc/motd changed): its BIOS boot comes up and fails that one check.
#[test]
#[ignore = "needs root, network and minutes"]
fn a_broken_bootloader_or_disk_fails_exactly_its_cells_and_a_changed_byte_is_caught() {
    let _t = common::timed();
    let out = minimal();
    let d = scratch("e2e-sabotage");
    // A build folder with two artifacts: the raw disk without its UEFI
    // bootloader and one byte off the built tree, and a qcow2 disk whose
    // root filesystem is gone.
    let raw = d.join("minimal.raw");
    fs::copy(out.join("minimal.raw"), &raw).unwrap();
    let o = Command::new("mdel")
        .arg("-i")
        .arg(format!("{}@@2M", raw.display()))
        .arg("::/EFI/BOOT/BOOTX64.EFI")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    change_a_byte_of_motd(&raw);
    let broken = d.join("broken.raw");
    fs::copy(out.join("minimal.raw"), &broken).unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new().write(true).open(&broken).unwrap();
        // The ext4 superblock (1 KiB into the root partition at 66 MiB).
        f.seek(SeekFrom::Start((66 << 20) + 1024)).unwrap();
        f.write_all(&[0u8; 1024]).unwrap();
    }
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(&broken)
        .arg(d.join("minimal.qcow2"))
        .status()
        .unwrap();
    assert!(st.success());
    fs::remove_file(&broken).unwrap();
    let mut m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("minimal.manifest.json")).unwrap())
            .unwrap();
    assert!(m["tree_sha256"].is_string(), "the build records its tree");
    m["artifacts"]
        .as_array_mut()
        .unwrap()
        .retain(|a| a["format"] == "raw" || a["format"] == "qcow2");
    fs::write(d.join("minimal.manifest.json"), m.to_string()).unwrap();

    let t0 = Instant::now();
    let o = biovm(&[
        "--recipes",
        "recipes",
        "test",
        "images/minimal.toml",
        "--out",
        d.to_str().unwrap(),
        "--boot-timeout",
        "300",
    ]);
    eprintln!("sabotaged matrix: {:.0} s", t0.elapsed().as_secs_f64());
    assert_eq!(o.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    for cell in [
        "minimal.raw uefi",
        "minimal.qcow2 uefi",
        "minimal.qcow2 bios",
    ] {
        assert!(
            stdout.contains(&format!("{cell}: FAILED")),
            "{cell}: {stdout}"
        );
        assert!(
            stderr.contains(&format!("{cell}: ")),
            "{cell} named at the end: {stderr}"
        );
    }
    // The one changed byte: caught natively and in the BIOS boot.
    for place in ["native", "bios"] {
        assert!(
            stderr.contains(&format!(
                "system/same-tree in minimal.raw under {place}: FAILED: output does not match"
            )),
            "{place}: {stderr}"
        );
    }
    assert!(stderr.contains("5 of 5 boots failed:"), "{stderr}");
    // A boot that shows its failure on the serial console fails at once,
    // not at the boot timeout: OVMF's shell, or GRUB's error (its BIOS core
    // image turns on the serial console before it looks for the root
    // filesystem). The raw disk's BIOS boot and its native run came up,
    // and only the same-tree check failed there: the tools still work,
    // the tree is not the built one.
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(d.join("minimal.test/report.json")).unwrap())
            .unwrap();
    for r in report.as_array().unwrap() {
        let cell = format!(
            "{} {}",
            r["artifact"].as_str().unwrap(),
            r["firmware"].as_str().unwrap()
        );
        let err = r["error"].as_str().unwrap_or("");
        match cell.as_str() {
            "minimal.raw bios" | "minimal.raw native" => {
                assert!(err.is_empty(), "{r}");
                let results = r["results"].as_array().unwrap();
                let failed: Vec<&str> = results
                    .iter()
                    .filter(|c| c["result"] != "passed")
                    .map(|c| c["tool"].as_str().unwrap())
                    .collect();
                assert_eq!(failed, ["system/same-tree"], "{cell}: {r}");
                assert!(results.len() >= 5, "{cell} ran its checks: {r}");
            }
            _ => assert!(err.contains("the guest failed to boot"), "{cell}: {err}"),
        }
        if r["firmware"] == "native" {
            // Not the build's disk: its tree was copied out, never mounted.
            assert_ne!(r["disk_mounted"], true, "{r}");
        }
    }
}

/// Change the first byte of /etc/motd ("biovm...") inside a copy of the
/// minimal raw disk, in place: the root partition starts at 66 MiB
/// (sector 135168), blocks are 4 KiB.
fn change_a_byte_of_motd(raw: &Path) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let part = 135168u64 * 512;
    let o = Command::new("debugfs")
        .args(["-R", "bmap /etc/motd 0"])
        .arg(format!("{}?offset={part}", raw.display()))
        .output()
        .unwrap();
    let block: u64 = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("debugfs: {}", String::from_utf8_lossy(&o.stderr)));
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(raw)
        .unwrap();
    let at = part + block * 4096;
    let mut head = [0u8; 5];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"biovm", "/etc/motd is where debugfs says");
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(b"B").unwrap();
}

#[test]
#[ignore = "needs root, network and minutes"]
fn a_wrong_check_pattern_fails_and_names_the_tool() {
    let _t = common::timed();
    let out = minimal();
    // A copy of the catalogue where samtools expects a version it does not have.
    let recipes = scratch("e2e-broken-recipes");
    copy_tree(&repo().join("recipes"), &recipes);
    let f = recipes.join("bam-vcf-utilities/samtools.toml");
    let s = fs::read_to_string(&f)
        .unwrap()
        .replace(r"'^samtools 1\.\d+'", r"'^samtools 9\.\d+'");
    assert!(s.contains("samtools 9"), "the recipe changed");
    fs::write(&f, s).unwrap();
    let _r = SHARED_REPORTS.lock().unwrap_or_else(|e| e.into_inner());
    let disk = out.join("minimal.raw");
    let o = biovm(&[
        "--recipes",
        recipes.to_str().unwrap(),
        "test",
        disk.to_str().unwrap(),
        "--image",
        "images/minimal.toml",
        "--firmware",
        "bios",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    // Every check runs natively, in the disk's own tree: the report says
    // so; the boot runs its sample (not samtools) and passes.
    assert!(
        stderr.contains(
            "samtools in minimal.raw under native: FAILED: output does not match /^samtools 9\\.\\d+/"
        ),
        "{stderr}"
    );
    // Only samtools failed.
    assert_eq!(stderr.matches("FAILED").count(), 1, "{stderr}");
    assert!(stderr.contains("1 of 2 boots failed:"), "{stderr}");

    // The same inside a container artifact.
    let oci = out.join("minimal.oci");
    let o = biovm(&[
        "--recipes",
        recipes.to_str().unwrap(),
        "test",
        oci.to_str().unwrap(),
        "--image",
        "images/minimal.toml",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(
            "samtools in minimal.oci under container: FAILED: output does not match /^samtools 9\\.\\d+/"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.matches("FAILED").count(), 1, "{stderr}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("samtools 1."),
        "the failing output is shown: {stdout}"
    );
}

/// Where KVM can boot Linux (the probe's verdict), boots use it. Where
/// /dev/kvm exists but cannot (as on the machines this was written on),
/// a boot forced onto KVM stalls after GRUB hands over, is stopped after
/// 30 s of silence instead of the 300 s boot timeout, and passes when
/// retried under TCG, and the report says so.
#[test]
#[ignore = "needs root, network and minutes"]
fn kvm_is_used_only_where_linux_boots_under_it() {
    let _t = common::timed();
    let out = minimal();
    let _r = SHARED_REPORTS.lock().unwrap_or_else(|e| e.into_inner());
    let doctor = biovm(&["--json", "doctor"]);
    let verdict: serde_json::Value = String::from_utf8_lossy(&doctor.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &serde_json::Value| v["event"] == "result")
        .expect("doctor's result event");
    let accel = verdict["result"]["accel"].as_str().unwrap().to_string();
    let detail = verdict["result"]["accel_detail"].as_str().unwrap();
    let qcow2 = out.join("minimal.qcow2");
    // --rerun: what is tested is the boot under KVM and its retry, which a
    // result stored by an earlier run of this very test would stand in for.
    let args = [
        "test",
        qcow2.to_str().unwrap(),
        "--firmware",
        "bios",
        "--rerun",
    ];
    if accel == "kvm" {
        assert!(
            detail.starts_with("KVM works: the Linux kernel"),
            "{detail}"
        );
        let o = biovm(&args);
        assert!(o.status.success());
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            stdout.contains("minimal.qcow2 bios: PASSED (kvm, virtio,"),
            "{stdout}"
        );
        return;
    }
    if !Path::new("/dev/kvm").exists() {
        assert!(detail.starts_with("/dev/kvm cannot be opened"), "{detail}");
        eprintln!("no /dev/kvm here: no KVM boot to retry");
        return;
    }
    assert!(detail.starts_with("KVM cannot boot Linux here"), "{detail}");
    let t0 = Instant::now();
    let o = biovm_env(&args, &[("BIOVM_ACCEL", "kvm")]);
    let secs = t0.elapsed().as_secs();
    assert!(o.status.success(), "the retry under TCG must pass");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("minimal.qcow2 bios: PASSED (tcg, virtio,"),
        "{stdout}"
    );
    // Under a KVM that cannot run Linux the guest hangs after GRUB (most
    // of our machines), or QEMU itself aborts (an assertion on the guest's
    // MSRs, on others): either way the boot is retried under TCG.
    assert!(
        stdout.contains("minimal.qcow2 bios: retried under TCG: under KVM the guest printed nothing for 30 s after \"Booting `Debian GNU/Linux (minimal)'\"")
            || stdout.contains("minimal.qcow2 bios: retried under TCG: under KVM QEMU ended (killed by signal"),
        "{stdout}"
    );
    let stalled = out.join("minimal.test/qcow2-bios.kvm.stalled.serial.log");
    let console = fs::read_to_string(&stalled).unwrap();
    assert!(!console.contains("Linux version"), "{console}");
    assert!(
        secs < 300,
        "stopped early, not at the boot timeout: {secs} s"
    );
    let report = fs::read_to_string(out.join("minimal.test/report.json")).unwrap();
    assert!(
        report.contains("\"accel_note\": \"retried under TCG"),
        "{report}"
    );
}
