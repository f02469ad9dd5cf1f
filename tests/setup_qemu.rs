//! `.ci/setup-qemu` on a machine whose QEMU packages are skewed the way a
//! fresh machine of ours came: a newer (backports) `qemu-utils` installed,
//! which Breaks the `qemu-system-common` that the archive's
//! `qemu-system-x86` needs. In a Debian 12 root made with mmdebstrap, a
//! stand-in for that `qemu-utils` (same name, version, source and Breaks)
//! is installed first; naming the packages to apt then fails as it did on
//! the machine, and setup-qemu ends with one consistent, working QEMU.
//!
//! Needs root, mmdebstrap and the network to the package archive (about a
//! minute), so it is `#[ignore]`d like the other end-to-end tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::repo;

mod common;

/// The version of the backports build that was preinstalled.
const NEWER: &str = "1:10.0.2+ds-2+deb13u1~bpo12+1";

/// A package named `qemu-utils` at [`NEWER`], built from the `qemu`
/// source, with the real one's Breaks, and a `qemu-img` that says so.
fn newer_qemu_utils(dir: &Path) -> PathBuf {
    let tree = dir.join("pkg");
    fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    fs::create_dir_all(tree.join("usr/bin")).unwrap();
    fs::write(
        tree.join("DEBIAN/control"),
        format!(
            "Package: qemu-utils\nVersion: {NEWER}\nArchitecture: amd64\n\
             Maintainer: biovm tests <tests@biovm.invalid>\nSource: qemu\n\
             Breaks: qemu-system-common (<< 1:8.0)\n\
             Description: stand-in for a backports qemu-utils\n"
        ),
    )
    .unwrap();
    let img = tree.join("usr/bin/qemu-img");
    fs::write(
        &img,
        "#!/bin/sh\necho 'qemu-img version 10.0.2 (stand-in)'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&img, fs::Permissions::from_mode(0o755)).unwrap();
    let deb = dir.join("qemu-utils-newer.deb");
    let o = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-b"])
        .arg(&tree)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    deb
}

#[test]
#[ignore = "needs root, mmdebstrap, the network to the package archive and a minute"]
fn setup_qemu_resolves_a_newer_preinstalled_qemu_utils() {
    let _t = common::timed();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("setup-qemu-skew");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let deb = newer_qemu_utils(&dir);
    let root = dir.join("root");
    let script = repo().join(".ci/setup-qemu");
    // Each step's output and exit status land in the root's /tmp.
    let step = |name: &str, cmd: &str| {
        format!("chroot \"$1\" sh -c '{cmd} >/tmp/{name}.log 2>&1; echo $? >/tmp/{name}.rc'")
    };
    let o = Command::new("mmdebstrap")
        .args(["--variant=apt", "--include=mawk,ca-certificates", "--skip=cleanup/tmp"])
        .arg(format!(
            "--customize-hook=copy-in {} {} /tmp",
            deb.display(),
            script.display()
        ))
        .arg(format!(
            "--customize-hook={}",
            step("newer", "dpkg -i /tmp/qemu-utils-newer.deb")
        ))
        .arg(format!(
            "--customize-hook={}",
            step(
                "naive",
                "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends qemu-system-x86 qemu-utils"
            )
        ))
        .arg(format!("--customize-hook={}", step("setup", "/tmp/setup-qemu")))
        .arg(format!(
            "--customize-hook={}",
            step("again", "/tmp/setup-qemu")
        ))
        .arg(format!(
            "--customize-hook={}",
            step(
                "versions",
                "dpkg-query -W -f=\"\\${Package} \\${Version}\\n\" qemu-utils qemu-system-x86 qemu-system-common"
            )
        ))
        .args(["bookworm"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "mmdebstrap: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let read = |f: &str| fs::read_to_string(root.join("tmp").join(f)).unwrap_or_default();
    let result = |name: &str| {
        (
            read(&format!("{name}.rc")).trim().to_string(),
            read(&format!("{name}.log")),
        )
    };

    let (rc, log) = result("newer");
    assert_eq!(rc, "0", "the newer qemu-utils installs: {log}");
    // The skew as seen on the machine: apt alone cannot install QEMU.
    let (rc, log) = result("naive");
    assert_ne!(rc, "0", "{log}");
    assert!(log.contains("held broken packages"), "{log}");
    // setup-qemu resolves it, says what it installed, and checks the result.
    let (rc, log) = result("setup");
    assert_eq!(rc, "0", "{log}");
    assert!(log.contains("setup-qemu: installing "), "{log}");
    assert!(
        log.contains("setup-qemu: QEMU emulator version 7.2"),
        "{log}"
    );
    let (_, versions) = result("versions");
    let v: Vec<(&str, &str)> = versions.lines().filter_map(|l| l.split_once(' ')).collect();
    assert_eq!(v.len(), 3, "{versions}");
    let system = v.iter().find(|(p, _)| *p == "qemu-system-x86").unwrap().1;
    let utils = v.iter().find(|(p, _)| *p == "qemu-utils").unwrap().1;
    assert_eq!(system, utils, "one QEMU: {versions}");
    assert_ne!(utils, NEWER, "{versions}");
    // A second run has nothing to do.
    let (rc, log) = result("again");
    assert_eq!(rc, "0", "{log}");
    assert!(!log.contains("installing"), "{log}");
    let _ = fs::remove_dir_all(&dir);
}
