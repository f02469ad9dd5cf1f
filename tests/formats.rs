//! Every distribution format checked by an independent tool, and every
//! writer checked for byte-identical output across runs.
//!
//! Host tools (Debian 12 packages): qemu-img (qemu-utils), mksquashfs and
//! unsquashfs (squashfs-tools), skopeo, umoci, podman, siftool, mkfs.ext4
//! (e2fsprogs), python3; and the Common OVF Tool (`cot`, PyPI) from the
//! checkers' virtual environment `.ci/setup` makes. A missing tool fails the
//! test with its name; no test passes without running its check.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use biovm::cmd::{Cmd, CmdError};
use biovm::formats::{self, FormatContext};

const SDE: u64 = 1_700_000_000;

fn ctx() -> FormatContext<'static> {
    let mut c = FormatContext::new("biotest", "1.2.3", "test-seed", SDE);
    c.description = "biovm format test image";
    c.cpus = 3;
    c.memory_mib = 3072;
    c.user = Some("biouser");
    c.source_url = "https://example.org/biovm";
    c.licenses = "MIT";
    c
}

fn run(c: &mut Cmd) -> String {
    let line = c.display();
    match c.output() {
        Ok(o) => o,
        Err(e @ CmdError::Missing { .. }) => panic!("required host tool missing: {e}"),
        Err(e) => panic!("`{line}` failed: {e}"),
    }
}

/// A 64 MiB raw disk: an ext4 filesystem (made from a small tree with
/// `mkfs.ext4 -d`) at 1 MiB, plus non-zero bytes scattered over the rest,
/// including the first and last sectors; the rest is a hole.
fn make_raw(dir: &Path) -> PathBuf {
    let tree = dir.join("ext4-tree");
    fs::create_dir_all(tree.join("data")).unwrap();
    for i in 0..20u32 {
        let body: Vec<u8> = (0..50_000u32)
            .map(|j| (i * 7 + j * 13 % 251) as u8)
            .collect();
        fs::write(tree.join(format!("data/f{i}")), body).unwrap();
    }
    let fsimg = dir.join("root.ext4");
    run(Cmd::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&fsimg)
        .arg("16M")
        .env("E2FSPROGS_FAKE_TIME", SDE.to_string()));
    let raw = dir.join("disk.raw");
    let f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&raw)
        .unwrap();
    f.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&fs::read(&fsimg).unwrap(), 1 << 20).unwrap();
    for (k, off) in [
        0u64,
        511,
        20 << 20,
        (33 << 20) + 4097,
        (50 << 20) + 65_535,
        (64 << 20) - 1,
    ]
    .iter()
    .enumerate()
    {
        f.write_all_at(&[0xA0 + k as u8; 1], *off).unwrap();
    }
    raw
}

/// A small Debian-like tree with every file type the layer writer handles
/// and paths the container formats must leave out.
fn make_rootfs(dir: &Path) -> PathBuf {
    let r = dir.join("rootfs");
    for d in [
        "etc",
        "usr/bin",
        "usr/lib/modules/6.1.0/kernel",
        "usr/lib/firmware",
        "boot/grub",
        "dev",
        "tmp",
    ] {
        fs::create_dir_all(r.join(d)).unwrap();
    }
    fs::write(r.join("etc/os-release"), "ID=debian\nVERSION_ID=\"12\"\n").unwrap();
    fs::write(r.join("usr/bin/hello"), "#!/bin/sh\necho hello\n").unwrap();
    fs::hard_link(r.join("usr/bin/hello"), r.join("usr/bin/hello-again")).unwrap();
    std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
    fs::write(r.join("boot/vmlinuz-6.1.0"), b"kernel").unwrap();
    fs::write(r.join("usr/lib/modules/6.1.0/kernel/x.ko"), b"module").unwrap();
    fs::write(r.join("usr/lib/firmware/blob.bin"), b"fw").unwrap();
    std::os::unix::fs::symlink("boot/vmlinuz-6.1.0", r.join("vmlinuz")).unwrap();
    fs::write(r.join("etc/owned"), b"x").unwrap();
    std::os::unix::fs::chown(r.join("etc/owned"), Some(1000), Some(1000)).unwrap();
    let null = std::ffi::CString::new(r.join("dev/null").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mknod with a valid path; the tests run as root (see DESIGN.md).
    let rc = unsafe { libc::mknod(null.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(
        rc,
        0,
        "mknod needs root: {}",
        std::io::Error::last_os_error()
    );
    r
}

/// A program from the checkers' virtual environment (`.ci/setup` makes it
/// at $BIOVM_CHECK_VENV, default /var/cache/biovm-ci/venv-check).
pub fn checker(name: &str) -> PathBuf {
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

fn qemu_img_check_and_compare(fmt: &str, file: &Path, raw: &Path) {
    run(Cmd::new("qemu-img").args(["check", "-f", fmt]).arg(file));
    let out = run(Cmd::new("qemu-img")
        .args(["compare", "-f", fmt, "-F", "raw"])
        .arg(file)
        .arg(raw));
    assert!(out.contains("Images are identical"), "{fmt}: {out}");
    let info = run(Cmd::new("qemu-img")
        .args(["info", "--output=json", "-f", fmt])
        .arg(file));
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["virtual-size"], 64 << 20, "{fmt}: {info}");
}

/// Extract one member of a (possibly gzip-compressed) tar.
fn tar_member(archive: &Path, name: &str, gz: bool) -> Vec<u8> {
    let f = fs::File::open(archive).unwrap();
    let r: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut ar = tar::Archive::new(r);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some(name) {
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            return v;
        }
    }
    panic!("{name} not in {}", archive.display());
}

#[test]
fn disk_formats_pass_qemu_img_check_and_compare() {
    let d = tempfile::tempdir().unwrap();
    let raw = make_raw(d.path());
    let c = ctx();
    let vmdk = d.path().join("out/biotest.vmdk");
    formats::write_vmdk(&raw, &vmdk, &c).unwrap();
    qemu_img_check_and_compare("vmdk", &vmdk, &raw);
    let info = run(Cmd::new("qemu-img").args(["info", "-f", "vmdk"]).arg(&vmdk));
    assert!(info.contains("streamOptimized"), "{info}");

    let vdi = d.path().join("out/biotest.vdi");
    formats::write_vdi(&raw, &vdi, &c).unwrap();
    qemu_img_check_and_compare("vdi", &vdi, &raw);

    let qcow2 = d.path().join("out/biotest.qcow2");
    formats::write_qcow2(&raw, &qcow2, &c).unwrap();
    qemu_img_check_and_compare("qcow2", &qcow2, &raw);

    // Sparse stays sparse: far less than the 64 MiB disk is allocated.
    for f in [&vmdk, &vdi, &qcow2] {
        let used = fs::metadata(f).unwrap().blocks() * 512;
        assert!(used < 24 << 20, "{} uses {used} bytes", f.display());
    }

    // The disks inside the OVA and the Vagrant box are the same VMDK.
    let ova = d.path().join("out/biotest.ova");
    formats::write_ova(&raw, &ova, &c).unwrap();
    let inner = d.path().join("from-ova.vmdk");
    fs::write(&inner, tar_member(&ova, "biotest-disk001.vmdk", false)).unwrap();
    qemu_img_check_and_compare("vmdk", &inner, &raw);

    let vbox = d.path().join("out/biotest.box");
    formats::write_vagrant_box(&raw, &vbox, &c).unwrap();
    let inner = d.path().join("from-box.vmdk");
    fs::write(&inner, tar_member(&vbox, "box-disk001.vmdk", true)).unwrap();
    qemu_img_check_and_compare("vmdk", &inner, &raw);
}

/// The OVA read by two independent parsers: the Common OVF Tool (which
/// opens the OVA, parses the OVF 1.0 envelope, checks every file reference,
/// size and the manifest's SHA-1 digests, and reports the virtual hardware)
/// and Python's xml.etree (the exact elements VirtualBox reads); the
/// manifest is also checked against the members' digests here.
#[test]
fn ova_descriptor_parses_and_manifest_matches() {
    let d = tempfile::tempdir().unwrap();
    let raw = make_raw(d.path());
    let c = ctx();
    let ova = d.path().join("biotest.ova");
    formats::write_ova(&raw, &ova, &c).unwrap();

    let names: Vec<String> = tar::Archive::new(fs::File::open(&ova).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["biotest.ovf", "biotest-disk001.vmdk", "biotest.mf"]);

    let ovf = tar_member(&ova, "biotest.ovf", false);
    let vmdk = tar_member(&ova, "biotest-disk001.vmdk", false);
    let mf = String::from_utf8(tar_member(&ova, "biotest.mf", false)).unwrap();
    let sha1 = |b: &[u8]| biovm::fsutil::hex(&<sha1::Sha1 as sha1::Digest>::digest(b));
    assert_eq!(
        mf,
        format!(
            "SHA1(biotest.ovf)= {}\nSHA1(biotest-disk001.vmdk)= {}\n",
            sha1(&ovf),
            sha1(&vmdk)
        )
    );

    let report = cot_info(&ova);
    for want in [
        "Product:  biotest",
        "Version:  1.2.3",
        "Annotation: biovm format test image",
        "System types:             virtualbox-2.2",
        "Ethernet device types:    virtio",
        "NAT  \"Logical network used by this appliance.\"",
        "Ethernet adapter on 'NAT' : NAT",
    ] {
        assert!(report.contains(want), "cot info lacks {want:?}:\n{report}");
    }
    let disk_row = report
        .lines()
        .find(|l| l.trim_start().starts_with("biotest-disk001.vmdk"))
        .unwrap_or_else(|| panic!("no disk row:\n{report}"));
    assert!(
        disk_row.contains("64 MiB") && disk_row.contains("harddisk @ SATA 0:0"),
        "{disk_row}"
    );
    let profile = report
        .lines()
        .find(|l| l.trim_start().starts_with("None (default)"))
        .unwrap_or_else(|| panic!("no configuration row:\n{report}"));
    let cols: Vec<&str> = profile.split_whitespace().collect();
    assert_eq!(
        &cols[2..],
        ["3", "3", "GiB", "1", "0", "1", "/", "64", "MiB"],
        "3 CPUs, 3 GiB, one NIC, one 64 MiB disk: {profile}"
    );

    // A tampered disk is caught by cot through the manifest, so the check
    // above is a real one.
    let bad = d.path().join("tampered.ova");
    let mut bytes = fs::read(&ova).unwrap();
    let at = tar::Archive::new(&bytes[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_str() == Some("biotest-disk001.vmdk"))
        .map(|e| e.raw_file_position() + e.size() / 2)
        .unwrap() as usize;
    bytes[at] ^= 0xff;
    fs::write(&bad, &bytes).unwrap();
    let out = cot_output(&bad);
    assert!(
        out.contains("checksum for file 'biotest-disk001.vmdk'"),
        "cot did not notice a changed disk:\n{out}"
    );

    let ovf_path = d.path().join("biotest.ovf");
    fs::write(&ovf_path, &ovf).unwrap();
    let script = r#"
import sys, xml.etree.ElementTree as ET
O = "{http://schemas.dmtf.org/ovf/envelope/1}"
R = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData}"
V = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData}"
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == O + "Envelope", root.tag
assert root.get(O + "version") == "1.0"
f = root.find(O + "References/" + O + "File")
print("file", f.get(O + "href"), f.get(O + "size"))
disk = root.find(O + "DiskSection/" + O + "Disk")
print("disk", disk.get(O + "capacity"), disk.get(O + "fileRef"), disk.get(O + "format"))
print("network", root.find(O + "NetworkSection/" + O + "Network").get(O + "name"))
vs = root.find(O + "VirtualSystem")
print("os", vs.find(O + "OperatingSystemSection").get(O + "id"))
hw = vs.find(O + "VirtualHardwareSection")
print("type", hw.find(O + "System/" + V + "VirtualSystemType").text)
for item in hw.findall(O + "Item"):
    d = {c.tag.replace(R, ""): c.text for c in item}
    print("item", d["ResourceType"], d.get("VirtualQuantity", "-"), d.get("ResourceSubType", "-"),
          d.get("Parent", "-"), d.get("HostResource", "-"), d["InstanceID"])
"#;
    let out = run(Cmd::new("python3").args(["-c", script]).arg(&ovf_path));
    let lines: Vec<&str> = out.lines().collect();
    let fmt = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";
    assert_eq!(
        lines,
        [
            format!("file biotest-disk001.vmdk {}", vmdk.len()).as_str(),
            format!("disk {} file1 {fmt}", 64 << 20).as_str(),
            "network NAT",
            "os 96",
            "type virtualbox-2.2",
            "item 3 3 - - - 1",
            "item 4 3072 - - - 2",
            "item 20 - AHCI - - 3",
            "item 17 - - 3 /disk/vmdisk1 4",
            "item 10 - virtio - - 5",
        ],
        "{out}"
    );
}

/// `cot info` of an OVA with its log lines (stderr) included.
fn cot_output(ova: &Path) -> String {
    let cot = checker("cot");
    run(Cmd::new("sh").args([
        "-c",
        &format!("'{}' info '{}' 2>&1", cot.display(), ova.display()),
    ]))
}

/// `cot info` of an OVA that must give no warning or error.
pub fn cot_info(ova: &Path) -> String {
    let out = cot_output(ova);
    for l in out.lines() {
        assert!(
            !l.contains("ERROR") && !l.contains("WARNING"),
            "cot complains about {}: {l}\n{out}",
            ova.display()
        );
    }
    out
}

#[test]
fn oci_layout_passes_skopeo_and_umoci() {
    let d = tempfile::tempdir().unwrap();
    let rootfs = make_rootfs(d.path());
    let c = ctx();
    let layout = d.path().join("biotest.oci");
    formats::write_oci_layout(&rootfs, &layout, &c).unwrap();

    let out = run(Cmd::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:1.2.3", layout.display())));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Architecture"], "amd64", "{out}");
    assert_eq!(v["Os"], "linux", "{out}");
    assert_eq!(v["Created"], "2023-11-14T22:13:20Z", "{out}");
    let labels = &v["Labels"];
    for (k, want) in [
        ("title", "biotest"),
        ("description", "biovm format test image"),
        ("version", "1.2.3"),
        ("created", "2023-11-14T22:13:20Z"),
        ("source", "https://example.org/biovm"),
        ("licenses", "MIT"),
    ] {
        assert_eq!(
            labels[format!("org.opencontainers.image.{k}")],
            want,
            "{out}"
        );
    }

    let bundle = d.path().join("bundle");
    run(Cmd::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:1.2.3", layout.display()))
        .arg(&bundle));
    let r = bundle.join("rootfs");
    assert_eq!(
        fs::read_to_string(r.join("etc/os-release")).unwrap(),
        "ID=debian\nVERSION_ID=\"12\"\n"
    );
    let a = fs::metadata(r.join("usr/bin/hello")).unwrap();
    let b = fs::metadata(r.join("usr/bin/hello-again")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard link kept");
    assert_eq!(fs::read_link(r.join("bin")).unwrap(), Path::new("usr/bin"));
    let owned = fs::metadata(r.join("etc/owned")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (1000, 1000));
    let null = fs::symlink_metadata(r.join("dev/null")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &null.file_type()
    ));
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert!(r.join("boot").is_dir(), "mount point kept");
    assert_eq!(
        fs::read_dir(r.join("boot")).unwrap().count(),
        0,
        "kernel left out"
    );
    assert!(!r.join("vmlinuz").exists() && fs::symlink_metadata(r.join("vmlinuz")).is_err());
    assert!(!r.join("usr/lib/firmware").exists());
    assert_eq!(fs::read_dir(r.join("usr/lib/modules")).unwrap().count(), 0);
    assert!(fs::metadata(r.join("etc/os-release")).unwrap().mtime() as u64 <= SDE);
}

/// `podman load` of the docker-archive, then the loaded image inspected.
#[test]
fn docker_archive_loads_into_podman() {
    let d = tempfile::tempdir().unwrap();
    let rootfs = make_rootfs(d.path());
    let c = ctx();
    let archive = d.path().join("biotest.docker.tar");
    formats::write_docker_archive(&rootfs, &archive, &c).unwrap();

    // skopeo reads the archive format independently of podman's storage.
    let out = run(Cmd::new("skopeo")
        .arg("inspect")
        .arg(format!("docker-archive:{}", archive.display())));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["Labels"]["org.opencontainers.image.title"], "biotest",
        "{out}"
    );

    let out = run(Cmd::new("podman").arg("load").arg("-i").arg(&archive));
    assert!(out.contains("localhost/biotest:1.2.3"), "{out}");
    let inspect = run(Cmd::new("podman").args(["image", "inspect", "localhost/biotest:1.2.3"]));
    let _ = Cmd::new("podman")
        .args(["rmi", "-f", "localhost/biotest:1.2.3"])
        .run();
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v[0]["Architecture"], "amd64", "{inspect}");
    assert_eq!(
        v[0]["Labels"]["org.opencontainers.image.version"], "1.2.3",
        "{inspect}"
    );
}

#[test]
fn sif_passes_siftool_and_unsquashfs() {
    let d = tempfile::tempdir().unwrap();
    let rootfs = make_rootfs(d.path());
    let c = ctx();
    let sif = d.path().join("biotest.sif");
    formats::write_sif(&rootfs, &sif, &c).unwrap();

    let header = run(Cmd::new("siftool").arg("header").arg(&sif));
    assert!(header.contains("amd64"), "{header}");
    assert!(
        header.contains(&c.uuid("sif-image").to_string()),
        "{header}"
    );
    let list = run(Cmd::new("siftool").arg("list").arg(&sif));
    assert!(list.contains("Def.FILE"), "{list}");
    assert!(list.contains("JSON.Labels"), "{list}");
    assert!(list.contains("FS (Squashfs/*System/amd64)"), "{list}");
    let info = run(Cmd::new("siftool").args(["info", "3"]).arg(&sif));
    assert!(info.contains("Squashfs"), "{info}");

    let part = d.path().join("part.squashfs");
    // `siftool dump` writes the object to stdout; a shell puts it in a file.
    run(Cmd::new("sh").args([
        "-c",
        &format!("siftool dump 3 '{}' > '{}'", sif.display(), part.display()),
    ]));
    let listing = run(Cmd::new("unsquashfs").args(["-lln"]).arg(&part));
    assert!(
        listing.contains("squashfs-root/etc/os-release"),
        "{listing}"
    );
    assert!(listing.contains("1000/1000"), "owners kept: {listing}");
    assert!(
        !listing.contains("vmlinuz-6.1.0"),
        "kernel left out: {listing}"
    );
    assert!(!listing.contains("x.ko"), "modules left out: {listing}");
    let labels = run(Cmd::new("siftool").args(["dump", "2"]).arg(&sif));
    let l: BTreeMap<String, String> = serde_json::from_str(&labels).unwrap();
    assert_eq!(l["org.opencontainers.image.title"], "biotest");
}

/// Compare two folders file by file (names, kinds and bytes).
fn assert_same_tree(a: &Path, b: &Path) {
    let mut ea: Vec<_> = fs::read_dir(a)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut eb: Vec<_> = fs::read_dir(b)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    ea.sort();
    eb.sort();
    assert_eq!(ea, eb, "{} vs {}", a.display(), b.display());
    for n in ea {
        let (pa, pb) = (a.join(&n), b.join(&n));
        if pa.is_dir() {
            assert_same_tree(&pa, &pb);
        } else {
            assert!(
                fs::read(&pa).unwrap() == fs::read(&pb).unwrap(),
                "{} differs",
                pa.display()
            );
        }
    }
}

/// Every writer, run twice into different folders (the second after the
/// clock has moved on), gives identical bytes.
#[test]
fn every_format_is_byte_identical_across_runs() {
    let d = tempfile::tempdir().unwrap();
    let raw = make_raw(d.path());
    let rootfs = make_rootfs(d.path());
    let c = ctx();
    let write_all = |out: &Path| {
        formats::write_vmdk(&raw, &out.join("x.vmdk"), &c).unwrap();
        formats::write_vdi(&raw, &out.join("x.vdi"), &c).unwrap();
        formats::write_qcow2(&raw, &out.join("x.qcow2"), &c).unwrap();
        formats::write_ova(&raw, &out.join("x.ova"), &c).unwrap();
        formats::write_vagrant_box(&raw, &out.join("x.box"), &c).unwrap();
        formats::write_oci_layout(&rootfs, &out.join("x.oci"), &c).unwrap();
        formats::write_docker_archive(&rootfs, &out.join("x.docker.tar"), &c).unwrap();
        formats::write_rootfs_tarball(&rootfs, &out.join("x.rootfs.tar.gz"), &c).unwrap();
        formats::write_sif(&rootfs, &out.join("x.sif"), &c).unwrap();
    };
    let (a, b) = (d.path().join("run-a"), d.path().join("nested/run-b"));
    write_all(&a);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // Touch the tree so wall-clock mtimes move; clamping must hide that.
    fs::write(
        rootfs.join("etc/os-release"),
        "ID=debian\nVERSION_ID=\"12\"\n",
    )
    .unwrap();
    write_all(&b);
    let names: Vec<_> = fs::read_dir(&a)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 9, "no temporary files left: {names:?}");
    assert_same_tree(&a, &b);

    // A different seed changes the IDs (so the seed is really used).
    let mut other = ctx();
    other.seed = "another-seed";
    let o = d.path().join("run-other");
    formats::write_vdi(&raw, &o.join("x.vdi"), &other).unwrap();
    formats::write_vmdk(&raw, &o.join("x.vmdk"), &other).unwrap();
    formats::write_sif(&rootfs, &o.join("x.sif"), &other).unwrap();
    for f in ["x.vdi", "x.vmdk", "x.sif"] {
        assert!(
            fs::read(a.join(f)).unwrap() != fs::read(o.join(f)).unwrap(),
            "{f} ignores the seed"
        );
    }
}

/// The SBOM of a synthetic package set read and validated by the SPDX
/// project's own tools (pyspdxtools parses the JSON into its SPDX 2.3 model
/// and runs its validation), and an invalid one refused by the same check.
#[test]
fn sbom_passes_the_spdx_validator() {
    let d = tempfile::tempdir().unwrap();
    let debs = vec![
        biovm::lock::LockedDeb {
            name: "libstdc++6".into(),
            version: "12.2.0-14+deb12u1".into(),
            architecture: "amd64".into(),
            sha256: "1f".repeat(32),
        },
        biovm::lock::LockedDeb {
            name: "bsdutils".into(),
            version: "1:2.38.1-5+deb12u3".into(),
            architecture: "amd64".into(),
            sha256: "2e".repeat(32),
        },
    ];
    let input = formats::spdx::SbomInput {
        image: "biotest",
        description: "biovm format test image",
        suite: "bookworm",
        tool_version: "1.2.3",
        seed: "test-seed",
        source_date_epoch: SDE,
        debian: &debs,
        pypi: vec![("multiqc-1.14-py3-none-any.whl".into(), "3d".repeat(32))],
        downloads: vec![(
            "tool".into(),
            "https://example.org/tool-1.0.tar.gz".into(),
            "4c".repeat(32),
        )],
        data: &[],
    };
    let sbom = d.path().join("biotest.spdx.json");
    formats::spdx::write_sbom(&sbom, &input).unwrap();
    let out = spdx_validate(&sbom);
    eprintln!("{out}");

    // The same validator refuses a document it must refuse.
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&sbom).unwrap()).unwrap();
    v["packages"][1]["checksums"][0]["checksumValue"] = "xyz".into();
    let bad = d.path().join("bad.spdx.json");
    fs::write(&bad, serde_json::to_vec(&v).unwrap()).unwrap();
    let o = Cmd::new(checker("pyspdxtools"))
        .arg("-i")
        .arg(&bad)
        .output();
    assert!(o.is_err(), "an invalid checksum passed: {o:?}");
}

/// Validate an SPDX document with pyspdxtools; fails the test when it is not valid.
pub fn spdx_validate(doc: &Path) -> String {
    run(Cmd::new(checker("pyspdxtools")).arg("-i").arg(doc))
}
