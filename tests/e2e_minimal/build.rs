//! The build: every artifact and what is left beside it, a failed and an
//! interrupted build, two builds from one lock, the SBOM and the OVA.

use super::*;

#[test]
#[ignore = "needs root, network and minutes"]
fn builds_a_gpt_hybrid_disk_with_nothing_left_over() {
    let _t = common::timed();
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
    let img = repo().join("images/minimal.toml");
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
            "formats",
            "read-back"
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
    // The build read the raw disk's tree back: a test of these very bytes
    // need not read it again.
    assert_eq!(m["artifacts"][0]["format"], "raw");
    assert_eq!(m["tree_read_back_from"], m["artifacts"][0]["sha256"]);
}

#[test]
#[ignore = "needs root and mmdebstrap"]
fn a_failed_build_leaves_no_artifact() {
    let _t = common::timed();
    // Nothing listens on port 9: the build fails at its first download,
    // the mirror's signed indices it reads before the bootstrap (the store
    // lacks packages). With an empty cache, so that biovm's store (which
    // would build the lock without any mirror) has nothing.
    let out = scratch("e2e-failed-build");
    let cache = scratch("e2e-failed-build-cache");
    let o = biovm(&[
        "build",
        "images/minimal.toml",
        "--out",
        out.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
        "--mirror",
        "http://127.0.0.1:9/debian",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    // What failed, and the command (run in private namespaces:
    // `unshare ... mmdebstrap`).
    assert!(
        stderr.contains("downloading the package indices of bookworm amd64 from http://127.0.0.1:9/debian failed")
            && stderr.contains(" mmdebstrap --variant="),
        "the error names what failed and the command: {stderr}"
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
    let _t = common::timed();
    use std::os::unix::process::CommandExt;
    let out = scratch("e2e-interrupted-build");
    // Its own process group, so Ctrl-C can be simulated for biovm and its children.
    // --rebuild: bootstrapped by mmdebstrap, not unpacked from biovm's
    // cache of bootstraps.
    let mut child = Command::new(BIN)
        .args([
            "build",
            "images/minimal.toml",
            "--out",
            out.to_str().unwrap(),
            "--rebuild",
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
    // The next build in the same folder clears the leftovers first (and
    // fails: an empty cache, so no store, and a mirror that is not there).
    let cache = scratch("e2e-interrupted-build-cache");
    let o = biovm(&[
        "build",
        "images/minimal.toml",
        "--out",
        out.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
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

/// Two builds from one lock, at different times and in different folders
/// (the shared one and this test's), and every output compared here byte
/// for byte, naming the file and first differing offset. The second is
/// `--rebuild` in a copy of the first's complete build, which it would
/// otherwise reuse (`e2e_reuse` shows that rule): it builds afresh,
/// bootstrap included. biovm's own `--verify-reproducible` (a second
/// build inside the output folder) is tested on the docker-archive in
/// `e2e_reuse`, where it costs one bootstrap rather than every format again.
#[test]
#[ignore = "needs root, network and minutes"]
fn two_builds_from_one_lock_give_identical_artifacts() {
    let _t = common::timed();
    let first = minimal();
    let img = repo().join("images/minimal.toml");
    // Another folder, another wall-clock time, and a bootstrap of its own
    // (--rebuild: mmdebstrap runs, whether or not the first build's tree
    // came from biovm's cache of bootstraps; when it did, the two builds
    // also show that a cached tree gives the very artifacts a fresh one does).
    std::thread::sleep(Duration::from_secs(2));
    let second = scratch("e2e-minimal-again");
    // Its outputs, not the reports other tests write beside them.
    let outputs: Vec<PathBuf> = names_in(first)
        .iter()
        .filter(|n| !n.starts_with('.') && !n.ends_with(".test"))
        .map(|n| first.join(n))
        .collect();
    let copied = Command::new("cp")
        .args(["-a", "--reflink=auto", "--sparse=always"])
        .args(&outputs)
        .arg(&second)
        .status()
        .unwrap();
    assert!(copied.success(), "copying the first build");
    let o = biovm(&[
        "--recipes",
        "recipes",
        "build",
        img.to_str().unwrap(),
        "--out",
        second.to_str().unwrap(),
        "--rebuild",
    ]);
    assert!(o.status.success(), "the second build failed");
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(!said.contains("from biovm's cache"), "{said}");
    assert!(!said.contains("holds a complete build"), "{said}");

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
    let _t = common::timed();
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
    let img = repo().join("images/minimal.toml");
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
    let _t = common::timed();
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
