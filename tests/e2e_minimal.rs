//! End to end: build images/minimal.toml for real (mmdebstrap from the
//! Debian archive, root) and boot it in QEMU under UEFI and BIOS.
//!
//! These tests need root, the host packages `.ci/setup` installs, the
//! network to the package archive and minutes, so they are `#[ignore]`d;
//! `cargo test --release -- --include-ignored` (what `.ci/run` does) runs them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_biovm");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn biovm(args: &[&str]) -> Output {
    biovm_env(args, &[])
}

/// `biovm ARGS` with extra environment variables.
fn biovm_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(repo())
        .stdin(Stdio::null())
        .output()
        .expect("run biovm");
    eprintln!(
        "$ biovm {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Boots share two cores; one at a time keeps their timings meaningful.
static BOOTS: Mutex<()> = Mutex::new(());

/// Lock, then build, the minimal image once for every test in this file.
/// The image file is copied to a scratch project so its lock is written there.
fn minimal() -> &'static Path {
    static OUT: OnceLock<PathBuf> = OnceLock::new();
    OUT.get_or_init(|| {
        let img = project_image("e2e-project");
        let o = biovm(&["--recipes", "recipes", "lock", img.to_str().unwrap()]);
        assert!(o.status.success(), "lock failed");
        assert!(String::from_utf8_lossy(&o.stdout).contains("minimal.lock written"));
        let out = scratch("e2e-minimal");
        let o = build_into(&img, &out);
        assert!(o.status.success(), "build failed");
        out
    })
}

/// A copy of images/minimal.toml in a scratch folder `name`/images/.
fn project_image(name: &str) -> PathBuf {
    let p = scratch(name).join("images");
    fs::create_dir_all(&p).unwrap();
    let img = p.join("minimal.toml");
    fs::copy(repo().join("images/minimal.toml"), &img).unwrap();
    img
}

fn lock_of(img: &Path) -> PathBuf {
    img.with_extension("lock")
}

/// `biovm build IMG --out OUT` with the repository's recipes.
fn build_into(img: &Path, out: &Path) -> Output {
    biovm(&[
        "--recipes",
        "recipes",
        "build",
        img.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "needs root, network and minutes"]
fn builds_a_gpt_hybrid_disk_with_nothing_left_over() {
    let out = minimal();
    // (minimal.test/ holds the reports of the boot tests running alongside.)
    let names: Vec<String> = names_in(out)
        .into_iter()
        .filter(|n| n != "minimal.test")
        .collect();
    assert_eq!(
        names,
        vec![
            "SHA256SUMS",
            "minimal.box",
            "minimal.build.json",
            "minimal.docker.tar",
            "minimal.manifest.json",
            "minimal.oci",
            "minimal.ova",
            "minimal.qcow2",
            "minimal.raw",
            "minimal.rootfs.tar.gz",
            "minimal.sif",
            "minimal.spdx.json",
            "minimal.vdi",
            "minimal.vmdk",
        ],
        "only final artifacts remain"
    );
    let disk = out.join("minimal.raw");
    assert_eq!(
        fs::metadata(&disk).unwrap().len(),
        3 << 30,
        "disk.size = 3GiB"
    );

    // An independent reader of the partition table.
    let o = Command::new("sfdisk")
        .arg("--json")
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "sfdisk rejects the table: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let t: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let t = &t["partitiontable"];
    assert_eq!(t["label"], "gpt");
    let parts = t["partitions"].as_array().unwrap();
    let types: Vec<&str> = parts.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        vec![
            "21686148-6449-6E6F-744E-656564454649",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
        ]
    );
    // sfdisk reads both headers; `--verify` reports problems with them.
    let v = Command::new("sfdisk")
        .arg("--verify")
        .arg(&disk)
        .output()
        .unwrap();
    let vtext =
        String::from_utf8_lossy(&v.stdout).to_string() + &String::from_utf8_lossy(&v.stderr);
    assert!(
        v.status.success() && vtext.contains("No errors detected"),
        "sfdisk --verify: {vtext}"
    );

    // The filesystems: clean for their own checkers, every root inode time
    // SOURCE_DATE_EPOCH, the ESP's volume ID from the lock's seed.
    let img = out
        .parent()
        .unwrap()
        .join("e2e-project/images/minimal.toml");
    let lock = biovm::lock::Lock::read(&lock_of(&img)).unwrap();
    let root_at = parts[2]["start"].as_u64().unwrap() * 512;
    let root = format!("minimal.raw?offset={root_at}");
    let fsck = Command::new("e2fsck")
        .args(["-fn", &root])
        .current_dir(out)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let stat = Command::new("debugfs")
        .args(["-R", "stat /etc/hostname", &root])
        .current_dir(out)
        .output()
        .unwrap();
    let stat = String::from_utf8_lossy(&stat.stdout);
    let sde = format!("0x{:08x}:00000000", lock.source_date_epoch);
    for t in ["ctime", "atime", "crtime"] {
        let line = stat
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{t}:")))
            .unwrap_or_else(|| panic!("no {t} in {stat}"));
        assert!(line.contains(&sde), "{t} is not SOURCE_DATE_EPOCH: {line}");
    }
    let esp_at = parts[1]["start"].as_u64().unwrap() * 512;
    let esp_len = parts[1]["size"].as_u64().unwrap() * 512;
    let esp = scratch("e2e-esp").join("esp.img");
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::open(&disk).unwrap();
        let mut buf = vec![0u8; esp_len as usize];
        f.read_exact_at(&mut buf, esp_at).unwrap();
        fs::write(&esp, &buf).unwrap();
        let want = biovm::disk::DiskIds::from_seed(&lock.seed).esp_volume_id;
        let id = u32::from_le_bytes(buf[0x43..0x47].try_into().unwrap());
        assert_eq!(format!("{id:08x}"), want, "FAT32 volume ID from the seed");
    }
    let fat = Command::new("fsck.fat")
        .arg("-n")
        .arg(&esp)
        .output()
        .unwrap();
    let _ = fs::remove_file(&esp);
    assert!(
        fat.status.success(),
        "fsck.fat: {}",
        String::from_utf8_lossy(&fat.stdout)
    );

    // The build report names every stage and the manifest every tool.
    let b: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("minimal.build.json")).unwrap()).unwrap();
    let stages: Vec<&str> = b["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        vec![
            "downloads",
            "bootstrap",
            "configure",
            "clamp-times",
            "disk",
            "formats"
        ]
    );
    let m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("minimal.manifest.json")).unwrap())
            .unwrap();
    let tools: Vec<&str> = m["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    // Version checks are named after the tool, functional tests `tool/test`.
    let checks: Vec<&str> = tools.iter().copied().filter(|t| !t.contains('/')).collect();
    assert!(
        tools.iter().filter(|t| t.contains('/')).count() >= 5,
        "every minimal tool has a functional test: {tools:?}"
    );
    assert_eq!(
        checks,
        vec!["bcftools", "bwa", "fastp", "minimap2", "samtools"]
    );
    assert_eq!(m["artifacts"][0]["sha256"].as_str().unwrap().len(), 64);
}

/// The VM artifacts of the minimal image and the controller each boots on.
const VM_CELLS: &[(&str, &str)] = &[
    ("minimal.raw", "nvme"),
    ("minimal.qcow2", "virtio"),
    ("minimal.vmdk", "ahci"),
    ("minimal.vdi", "ahci"),
    ("minimal.ova", "ahci"),
    ("minimal.box", "ahci"),
];

/// The container artifacts, whose checks run in their unpacked trees.
const CONTAINERS: &[&str] = &[
    "minimal.oci",
    "minimal.docker.tar",
    "minimal.sif",
    "minimal.rootfs.tar.gz",
];

#[test]
#[ignore = "needs root, network and minutes"]
fn the_whole_vm_matrix_boots_and_every_check_passes() {
    let out = minimal();
    let before: Vec<(String, String)> = VM_CELLS
        .iter()
        .map(|(a, _)| (a.to_string(), biovm_sha(&out.join(a))))
        .collect();
    let _g = BOOTS.lock().unwrap_or_else(|e| e.into_inner());
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
        if r["firmware"] == "container" || r["firmware"] == "native" {
            assert!(r["results"].as_array().unwrap().len() >= 5, "{r}");
            continue;
        }
        let log = fs::read_to_string(r["serial_log"].as_str().unwrap()).unwrap_or_default();
        assert!(
            log.contains("Linux version"),
            "the serial log holds the guest's console: {r}"
        );
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
    // byte for byte, on the same controller: those cells report the vmdk
    // cells' boots, and say so; every other cell booted on its own.
    for r in report.as_array().unwrap() {
        let shared = match (
            r["artifact"].as_str().unwrap(),
            r["firmware"].as_str().unwrap(),
        ) {
            ("minimal.ova" | "minimal.box", fw) => Some(format!("minimal.vmdk {fw}")),
            _ => None,
        };
        assert_eq!(r["same_boot_as"].as_str().map(String::from), shared, "{r}");
        if shared.is_some() {
            let (art, fw) = (
                r["artifact"].as_str().unwrap(),
                r["firmware"].as_str().unwrap(),
            );
            assert!(
                ["tcg", "kvm"].iter().any(|accel| stdout.contains(&format!(
                    "{art} {fw}: PASSED ({accel}, ahci, same disk as minimal.vmdk {fw}, \
                     results of that boot,"
                ))),
                "{stdout}"
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
/// fast (the console shows it), not after the boot timeout.
#[test]
#[ignore = "needs root, network and minutes"]
fn a_broken_bootloader_or_disk_fails_exactly_its_cells() {
    let out = minimal();
    let d = scratch("e2e-sabotage");
    // A build folder with two artifacts: the raw disk without its UEFI
    // bootloader, and a qcow2 disk whose root filesystem is gone.
    let raw = d.join("minimal.raw");
    fs::copy(out.join("minimal.raw"), &raw).unwrap();
    let o = Command::new("mdel")
        .arg("-i")
        .arg(format!("{}@@2M", raw.display()))
        .arg("::/EFI/BOOT/BOOTX64.EFI")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
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
    m["artifacts"]
        .as_array_mut()
        .unwrap()
        .retain(|a| a["format"] == "raw" || a["format"] == "qcow2");
    fs::write(d.join("minimal.manifest.json"), m.to_string()).unwrap();

    let _g = BOOTS.lock().unwrap_or_else(|e| e.into_inner());
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
    assert!(stdout.contains("minimal.raw bios: PASSED"), "{stdout}");
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
    assert!(stderr.contains("3 of 5 boots failed:"), "{stderr}");
    // A boot that shows its failure on the serial console fails at once,
    // not at the boot timeout: OVMF's shell, or GRUB's error (its BIOS core
    // image turns on the serial console before it looks for the root
    // filesystem).
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
            "minimal.raw bios" | "minimal.raw native" => assert!(err.is_empty(), "{r}"),
            _ => assert!(err.contains("the guest failed to boot"), "{cell}: {err}"),
        }
    }
}

/// A disk whose root filesystem differs from the build's tree by one byte
/// inside one file is caught, both in the native run (which reads its tree
/// from that disk) and in the boot, by the same-tree check: a native pass
/// stands for a disk only when the disk holds that very tree.
#[test]
#[ignore = "needs root, network and minutes"]
fn a_disk_one_byte_off_the_built_tree_is_caught() {
    let out = minimal();
    let d = scratch("e2e-one-byte");
    let raw = d.join("minimal.raw");
    fs::copy(out.join("minimal.raw"), &raw).unwrap();
    // Where /etc/motd's first block lies: the root partition starts at
    // 66 MiB (sector 135168), blocks are 4 KiB.
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
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&raw)
            .unwrap();
        let at = part + block * 4096;
        let mut head = [0u8; 5];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"biovm", "/etc/motd is where debugfs says");
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(b"B").unwrap();
    }
    let mut m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("minimal.manifest.json")).unwrap())
            .unwrap();
    assert!(m["tree_sha256"].is_string(), "the build records its tree");
    m["artifacts"]
        .as_array_mut()
        .unwrap()
        .retain(|a| a["format"] == "raw");
    fs::write(d.join("minimal.manifest.json"), m.to_string()).unwrap();
    let _g = BOOTS.lock().unwrap_or_else(|e| e.into_inner());
    let o = biovm(&[
        "--recipes",
        "recipes",
        "test",
        "images/minimal.toml",
        "--out",
        d.to_str().unwrap(),
        "--firmware",
        "bios",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    for place in ["native", "bios"] {
        assert!(
            stderr.contains(&format!(
                "system/same-tree in minimal.raw under {place}: FAILED: output does not match"
            )),
            "{place}: {stderr}"
        );
    }
    // Nothing else failed: the tools still work, the tree is not the built one.
    assert_eq!(stderr.matches("FAILED").count(), 2, "{stderr}");
}

fn biovm_sha(p: &Path) -> String {
    let o = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
#[ignore = "needs root, network and minutes"]
fn a_wrong_check_pattern_fails_and_names_the_tool() {
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
    let _g = BOOTS.lock().unwrap_or_else(|e| e.into_inner());
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
    let out = minimal();
    let _g = BOOTS.lock().unwrap_or_else(|e| e.into_inner());
    let doctor = biovm(&["--json", "doctor"]);
    let verdict: serde_json::Value = String::from_utf8_lossy(&doctor.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &serde_json::Value| v["event"] == "result")
        .expect("doctor's result event");
    let accel = verdict["result"]["accel"].as_str().unwrap().to_string();
    let detail = verdict["result"]["accel_detail"].as_str().unwrap();
    let qcow2 = out.join("minimal.qcow2");
    let args = ["test", qcow2.to_str().unwrap(), "--firmware", "bios"];
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
    assert!(
        stdout.contains("minimal.qcow2 bios: retried under TCG: under KVM the guest printed nothing for 30 s after \"Booting `Debian GNU/Linux (minimal)'\""),
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

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
#[ignore = "needs root and mmdebstrap"]
fn a_failed_build_leaves_no_artifact() {
    // Nothing listens on port 9: the bootstrap fails at its first download.
    let out = scratch("e2e-failed-build");
    let o = biovm(&[
        "build",
        "images/minimal.toml",
        "--out",
        out.to_str().unwrap(),
        "--mirror",
        "http://127.0.0.1:9/debian",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    // The command (run in private namespaces: `unshare ... mmdebstrap`).
    assert!(
        stderr.contains(" mmdebstrap --variant=apt "),
        "the error names the command: {stderr}"
    );
    assert!(stderr.contains("127.0.0.1:9"), "and the mirror: {stderr}");
    assert!(
        names_in(&out).is_empty(),
        "nothing written: {:?}",
        names_in(&out)
    );
}

#[test]
#[ignore = "needs root, network and minutes"]
fn an_interrupted_build_leaves_no_file_with_a_final_name() {
    use std::os::unix::process::CommandExt;
    let out = scratch("e2e-interrupted-build");
    // Its own process group, so Ctrl-C can be simulated for biovm and its children.
    let mut child = Command::new(BIN)
        .args([
            "build",
            "images/minimal.toml",
            "--out",
            out.to_str().unwrap(),
        ])
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id().to_string();
    // Interrupt it in the middle of bootstrapping.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(200));
        assert!(child.try_wait().unwrap().is_none(), "the build ended early");
    }
    let group = format!("-{pgid}");
    assert!(Command::new("kill")
        .args(["-INT", "--", &group])
        .status()
        .unwrap()
        .success());
    child.wait().unwrap();
    // Wait for mmdebstrap and its children to wind down.
    let t = Instant::now();
    while Command::new("kill")
        .args(["-0", "--", &group])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the build's processes did not end"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for n in names_in(&out) {
        assert!(
            n.starts_with('.') && n.ends_with(".tmp"),
            "{n} carries a final name"
        );
    }
    // The next build in the same folder clears the leftovers first.
    let o = biovm(&[
        "build",
        "images/minimal.toml",
        "--out",
        out.to_str().unwrap(),
        "--mirror",
        "http://127.0.0.1:9/debian",
    ]);
    assert!(!o.status.success());
    assert!(
        names_in(&out).is_empty(),
        "leftovers removed: {:?}",
        names_in(&out)
    );
}

#[test]
#[ignore = "needs root, network and minutes"]
fn the_lock_pins_every_package_and_refuses_what_does_not_match() {
    let out = minimal();
    let img = out
        .parent()
        .unwrap()
        .join("e2e-project/images/minimal.toml");
    let lock = fs::read_to_string(lock_of(&img)).unwrap();
    // Every package of the closure with version and sha256: the kernel and libc too.
    for name in ["linux-image-amd64", "libc6", "samtools", "bwa", "systemd"] {
        assert!(
            lock.contains(&format!("name = \"{name}\"")),
            "{name} is locked"
        );
    }
    assert!(lock.contains("source-date-epoch = "));
    let bwa_block = lock
        .split("[[debian]]")
        .find(|b| b.contains("name = \"bwa\""))
        .unwrap();
    let sha = bwa_block.lines().find(|l| l.starts_with("sha256")).unwrap();
    assert_eq!(sha.len(), "sha256 = \"\"".len() + 64, "{sha}");

    // 1. The image asks for something the lock does not have: stopped at once.
    let proj = project_image("e2e-lock-mismatch");
    fs::copy(lock_of(&img), lock_of(&proj)).unwrap();
    let text = fs::read_to_string(&proj).unwrap().replace(
        "packages = [\"less\", \"nano\"]",
        "packages = [\"less\", \"nano\", \"tree\"]",
    );
    fs::write(&proj, text).unwrap();
    build_fails_writing_nothing(
        &proj,
        &[
            "no longer matches the image: now also asks for tree",
            "biovm lock --update",
        ],
    );

    // 2. A locked version the mirror does not have: stopped before anything is written.
    let proj = project_image("e2e-lock-gone");
    let bwa_version = bwa_block
        .lines()
        .find(|l| l.starts_with("version"))
        .unwrap();
    fs::write(
        lock_of(&proj),
        lock.replace(bwa_version, "version = \"0.0.1-1\""),
    )
    .unwrap();
    build_fails_writing_nothing(&proj, &["bwa", "0.0.1-1", "biovm lock --update"]);

    // 3. A tampered hash in the lock: the archive's signed index disagrees.
    let proj = project_image("e2e-lock-tampered");
    let zeros = "0".repeat(64);
    fs::write(
        lock_of(&proj),
        lock.replace(sha, &format!("sha256 = \"{zeros}\"")),
    )
    .unwrap();
    build_fails_writing_nothing(&proj, &["package bwa ", &zeros, "refusing to build"]);
}

/// Build `img` into a fresh folder: it must fail with an error containing
/// every one of `needles` and leave the folder empty.
fn build_fails_writing_nothing(img: &Path, needles: &[&str]) {
    // The project folder is <scratch>/<project>/images/minimal.toml.
    let project = img
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .unwrap();
    let out = scratch(&format!("{}-out", project.to_string_lossy()));
    let o = build_into(img, &out);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    for n in needles {
        assert!(e.contains(n), "missing {n:?} in: {e}");
    }
    assert!(names_in(&out).is_empty(), "{:?}", names_in(&out));
}

/// The second build runs with `--verify-reproducible`, so this one test
/// shows both: three builds from one lock (two by biovm's own check, in a
/// folder inside the second output folder), at different times and in
/// different folders, and every output of the first and second compared
/// here byte for byte, naming the file and first differing offset.
#[test]
#[ignore = "needs root, network and minutes"]
fn two_builds_from_one_lock_give_identical_artifacts() {
    let first = minimal();
    let img = first
        .parent()
        .unwrap()
        .join("e2e-project/images/minimal.toml");
    // Another folder, another wall-clock time.
    std::thread::sleep(Duration::from_secs(2));
    let second = scratch("e2e-minimal-again");
    let o = biovm(&[
        "--recipes",
        "recipes",
        "build",
        img.to_str().unwrap(),
        "--out",
        second.to_str().unwrap(),
        "--verify-reproducible",
    ]);
    assert!(
        o.status.success(),
        "second build or its verification failed"
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("reproducible: a second build gave the same"),
        "{stdout}"
    );
    assert!(
        !names_in(&second).iter().any(|n| n.starts_with('.')),
        "the verification build is removed: {:?}",
        names_in(&second)
    );

    let sums = fs::read_to_string(first.join("SHA256SUMS")).unwrap();
    assert_eq!(
        sums.lines().count(),
        11,
        "every format and the SBOM are summed:\n{sums}"
    );
    assert!(sums.ends_with("  minimal.spdx.json\n"), "{sums}");
    // sha256sum itself agrees with every line.
    let c = Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(first)
        .output()
        .unwrap();
    assert!(
        c.status.success(),
        "sha256sum --check: {}",
        String::from_utf8_lossy(&c.stdout)
    );

    // Every artifact (each file of the OCI layout), SHA256SUMS, the SBOM
    // and the manifest: the same bytes.
    let mut names: Vec<String> = sums
        .lines()
        .map(|l| l.split_once("  ").unwrap().1.to_string())
        .map(|f| f.trim_end_matches("/index.json").to_string())
        .collect();
    names.extend(["SHA256SUMS".into(), "minimal.manifest.json".into()]);
    let mut differences = Vec::new();
    for name in &names {
        compare_trees(
            &first.join(name),
            &second.join(name),
            name,
            &mut differences,
        );
    }
    assert!(
        differences.is_empty(),
        "not reproducible:\n{}",
        differences.join("\n")
    );
}

/// Compare `a` and `b` (files, or folders file by file) with `cmp`; each
/// difference is recorded with the artifact's name and the first differing
/// byte offset (0-based).
fn compare_trees(a: &Path, b: &Path, name: &str, out: &mut Vec<String>) {
    if a.is_dir() {
        let (na, nb) = (names_in(a), names_in(b));
        if na != nb {
            out.push(format!(
                "{name}: the builds hold different files: {na:?} vs {nb:?}"
            ));
            return;
        }
        for n in na {
            compare_trees(&a.join(&n), &b.join(&n), &format!("{name}/{n}"), out);
        }
        return;
    }
    let o = Command::new("cmp").arg(a).arg(b).output().unwrap();
    if o.status.success() {
        return;
    }
    // "A B differ: byte N, line M" (1-based), or "cmp: EOF on A after byte N".
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    let offset = text
        .split("byte ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok())
        .map(|n| if text.contains("EOF") { n } else { n - 1 });
    out.push(match offset {
        Some(off) => format!(
            "{name} differs at offset {off} (0x{off:x}): {}",
            text.trim()
        ),
        None => format!("{name}: {}", text.trim()),
    });
}

/// The SBOM: valid for the SPDX project's validator, and listing every
/// Debian package of the lock with its version, sha256 and purl.
#[test]
#[ignore = "needs root, network and minutes"]
fn the_sbom_lists_every_locked_package_and_is_valid_spdx() {
    let out = minimal();
    let sbom = out.join("minimal.spdx.json");
    let v = Command::new(checker("pyspdxtools"))
        .arg("-i")
        .arg(&sbom)
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "pyspdxtools refuses the SBOM: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    let doc: serde_json::Value = serde_json::from_str(&fs::read_to_string(&sbom).unwrap()).unwrap();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    let img = out
        .parent()
        .unwrap()
        .join("e2e-project/images/minimal.toml");
    let lock: biovm::lock::Lock = biovm::lock::Lock::read(&lock_of(&img)).unwrap();
    assert_eq!(
        doc["creationInfo"]["created"],
        biovm::formats::rfc3339(lock.source_date_epoch)
    );
    let packages = doc["packages"].as_array().unwrap();
    assert_eq!(
        packages.len(),
        1 + lock.debian.len(),
        "the image and every package"
    );
    for d in &lock.debian {
        let p = packages
            .iter()
            .find(|p| p["name"] == d.name.as_str())
            .unwrap_or_else(|| panic!("{} is not in the SBOM", d.name));
        assert_eq!(p["versionInfo"], d.version.as_str());
        assert_eq!(p["checksums"][0]["algorithm"], "SHA256");
        assert_eq!(p["checksums"][0]["checksumValue"], d.sha256.as_str());
        let purl = p["externalRefs"][0]["referenceLocator"].as_str().unwrap();
        assert!(
            purl.starts_with(&format!("pkg:deb/debian/{}@", d.name.replace('+', "%2B")))
                && purl.contains(&format!("arch={}", d.architecture)),
            "{purl}"
        );
    }
}

/// The real OVA read by the Common OVF Tool: the descriptor parses, every
/// reference and the manifest check out, and VirtualBox's hardware is there.
#[test]
#[ignore = "needs root, network and minutes"]
fn the_ova_passes_the_common_ovf_tool() {
    let out = minimal();
    let ova = out.join("minimal.ova");
    let cot = checker("cot");
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!("'{}' info '{}' 2>&1", cot.display(), ova.display()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "cot info failed: {text}");
    assert!(
        !text.contains("ERROR") && !text.contains("WARNING"),
        "cot complains: {text}"
    );
    for want in [
        "Product:  minimal",
        "minimal-disk001.vmdk",
        "3 GiB harddisk @ SATA 0:0",
        "System types:             virtualbox-2.2",
        "Ethernet device types:    virtio",
    ] {
        assert!(text.contains(want), "cot info lacks {want:?}:\n{text}");
    }
}

/// A program from the checkers' virtual environment (`.ci/setup` makes it
/// at $BIOVM_CHECK_VENV, default /var/cache/biovm-ci/venv-check).
fn checker(name: &str) -> PathBuf {
    let venv = std::env::var_os("BIOVM_CHECK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/biovm-ci/venv-check"));
    let p = venv.join("bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run .ci/setup (it installs the independent checkers)",
        p.display()
    );
    p
}

/// `biovm run --detach` boots the image with the user's key injected by
/// cloud-init, and its SSH server lets that key in on the forwarded port;
/// the guest reaches nothing beyond it (QEMU's `restrict=on`).
#[test]
#[ignore = "needs root, network and minutes"]
fn biovm_run_answers_on_its_ssh_port_with_the_injected_key() {
    let out = minimal();
    let d = scratch("e2e-run");
    let key = d.join("id_ed25519");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "e2e@biovm", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let _g = BOOTS.lock().unwrap_or_else(|e| e.into_inner());
    let raw = out.join("minimal.raw");
    let before = biovm_sha(&raw);
    let t0 = Instant::now();
    let o = biovm(&[
        "run",
        raw.to_str().unwrap(),
        "--detach",
        "--ssh-key",
        d.join("id_ed25519.pub").to_str().unwrap(),
        "--ssh-port",
        &port,
        "--state",
        d.join("state").to_str().unwrap(),
        "--memory",
        "1024",
        "--cpus",
        "1",
    ]);
    eprintln!(
        "biovm run: SSH up after {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "biovm run failed: {stdout}");
    let pid: i32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("stop:    kill "))
        .unwrap_or_else(|| panic!("no pid in {stdout}"))
        .trim()
        .parse()
        .unwrap();
    struct Stop(i32);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg(self.0.to_string()).status();
        }
    }
    let _stop = Stop(pid);
    assert!(
        stdout.contains(&format!("-p {port} ")) && stdout.contains("biovm@127.0.0.1"),
        "{stdout}"
    );
    let ssh = |cmd: &str| {
        Command::new("ssh")
            .arg("-i")
            .arg(&key)
            .args([
                "-p",
                &port,
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=30",
                "biovm@127.0.0.1",
                cmd,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = ssh("id -un; samtools --version | head -n 1; timeout 5 bash -c 'echo > /dev/tcp/10.0.2.2/22' && echo reached-host || echo isolated");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "ssh with the injected key failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "biovm", "{text}");
    assert!(lines[1].starts_with("samtools 1."), "{text}");
    assert_eq!(lines[2], "isolated", "restrict=on: {text}");
    // Another key is refused.
    let other = d.join("other");
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    let o = Command::new("ssh")
        .arg("-i")
        .arg(&other)
        .args([
            "-p",
            &port,
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "biovm@127.0.0.1",
            "true",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success(), "a key never injected was accepted");
    drop(_stop);
    assert_eq!(biovm_sha(&raw), before, "the artifact is untouched");
}
