//! Tests of the container runner: every format unpacks to the tree it was
//! made from, broken artifacts and layers that reach out are refused, and
//! checks run (and are stopped) inside the tree as a container's would.

use super::unpack::{blob_path, read_blob, ImageManifest};
use super::*;
use crate::formats::{self, FormatContext};
use crate::manifest::ToolCheck;
use crate::smoke::report::{self, Runner};
use crate::smoke::report::{CheckOutcome, CheckResult};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::PathBuf;

/// Host programs run.sh and the test checks need.
const PROGRAMS: &[&str] = &[
    "sh", "base64", "cat", "cp", "cut", "date", "head", "mkdir", "mktemp", "sleep", "stty",
    "timeout", "wc", "xargs", "flock", "nproc",
];

/// A tiny root filesystem: the host's programs above with their
/// libraries (as `ldd` lists them), in a merged-/usr layout.
fn tiny_root(at: &Path) {
    for d in [
        "usr/bin",
        "usr/lib",
        "usr/lib64",
        "etc",
        "root",
        "tmp",
        "dev",
        "proc",
    ] {
        fs::create_dir_all(at.join(d)).unwrap();
    }
    for l in ["bin", "lib", "lib64"] {
        symlink(format!("usr/{l}"), at.join(l)).unwrap();
    }
    fs::write(at.join("etc/hostname"), "tiny-test\n").unwrap();
    let mut libs = std::collections::BTreeSet::new();
    for p in PROGRAMS {
        let host = which::which(p).unwrap();
        fs::copy(&host, at.join("usr/bin").join(p)).unwrap();
        let ldd = Cmd::new("ldd").arg(&host).output().unwrap();
        for w in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
            libs.insert(w.to_string());
        }
    }
    for l in libs {
        let dest = at.join(l.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(&l, &dest).unwrap();
    }
}

/// Every container artifact of one tree, written by biovm's own writers.
struct Artifacts {
    _dir: tempfile::TempDir,
    root: PathBuf,
    files: Vec<(Format, PathBuf)>,
}

fn artifacts() -> Artifacts {
    artifacts_with(|_| {})
}

/// Every container artifact of a tiny tree to which `more` added.
fn artifacts_with(more: impl FnOnce(&Path)) -> Artifacts {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    tiny_root(&root);
    more(&root);
    let ctx = FormatContext::new("tiny", "1.0", "seed", 1_700_000_000);
    let out = |n: &str| dir.path().join(n);
    formats::write_oci_layout(&root, &out("tiny.oci"), &ctx).unwrap();
    formats::write_docker_archive(&root, &out("tiny.docker.tar"), &ctx).unwrap();
    formats::write_sif(&root, &out("tiny.sif"), &ctx).unwrap();
    formats::write_rootfs_tarball(&root, &out("tiny.rootfs.tar.gz"), &ctx).unwrap();
    Artifacts {
        files: vec![
            (Format::Oci, out("tiny.oci")),
            (Format::DockerArchive, out("tiny.docker.tar")),
            (Format::Sif, out("tiny.sif")),
            (Format::Tarball, out("tiny.rootfs.tar.gz")),
        ],
        root,
        _dir: dir,
    }
}

/// Every path of a tree with its type, mode, owner and content (or
/// link target), for comparing trees.
fn listing(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let what = if m.file_type().is_symlink() {
                format!("link {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                walk(root, &p, out);
                "dir".into()
            } else {
                format!("file {}", fsutil::sha256_file(&p).unwrap())
            };
            out.insert(
                rel,
                format!("{what} {:o} {}:{}", m.mode(), m.uid(), m.gid()),
            );
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn every_format_unpacks_to_the_tree_it_was_made_from() {
    let a = artifacts();
    let want = listing(&a.root);
    assert!(want.contains_key("usr/bin/sh") && want["lib"].starts_with("link usr/lib"));
    let d = tempfile::tempdir().unwrap();
    for (f, file) in &a.files {
        let dest = d.path().join(f.as_str());
        unpack_rootfs(file, *f, &dest).unwrap();
        assert_eq!(listing(&dest), want, "{}", f.as_str());
    }
    // Into a folder that is not empty: refused, naming it.
    let err = unpack_rootfs(&a.files[0].1, Format::Oci, &d.path().join("oci")).unwrap_err();
    assert!(format!("{err:#}").contains("is not empty"), "{err:#}");
}

/// What a disk's tree holds that containers leave out or cannot carry
/// (a kernel, modules, firmware, a socket), and what they carry with
/// care (a setuid program, a device node, a hard link).
fn disk_only_and_delicate_files(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for (p, body) in [
        ("boot/vmlinuz-6.1.0", "kernel"),
        ("usr/lib/modules/6.1.0/kernel/virtio_blk.ko", "module"),
        ("usr/lib/firmware/blob.bin", "firmware"),
        ("usr/bin/helper", "#!/bin/sh\n"),
    ] {
        let p = root.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, body).unwrap();
    }
    symlink("boot/vmlinuz-6.1.0", root.join("vmlinuz")).unwrap();
    fs::set_permissions(
        root.join("usr/bin/helper"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::hard_link(root.join("usr/bin/helper"), root.join("usr/bin/helper2")).unwrap();
    Cmd::new("mknod")
        .args(["-m", "0666"])
        .arg(root.join("dev/null"))
        .args(["c", "1", "3"])
        .run()
        .unwrap();
    std::os::unix::net::UnixListener::bind(root.join("tmp/agent.sock")).unwrap();
}

#[test]
fn every_container_format_holds_the_build_s_container_tree_and_a_changed_byte_shows() {
    let a = artifacts_with(disk_only_and_delicate_files);
    let formats: Vec<Format> = a.files.iter().map(|(f, _)| *f).collect();
    let (whole, trees) = crate::smoke::tree::digest_dir_and_containers(&a.root, &formats).unwrap();
    assert_eq!(trees.len(), 4);
    // The images containers run leave the kernel, modules and firmware
    // out; a rootfs tarball keeps them, but not the socket.
    let images = &trees[&Format::Oci];
    assert!(
        [Format::DockerArchive, Format::Sif]
            .iter()
            .all(|f| &trees[f] == images),
        "{trees:?}"
    );
    let tarball = &trees[&Format::Tarball];
    assert!(images != tarball && &whole != tarball && &whole != images);
    let d = tempfile::tempdir().unwrap();
    let tools = vec![tool("greet", "echo hello", "^hello$")];
    let same_tree = |r: &BootReport| {
        r.results
            .iter()
            .find(|c| c.tool == "system/same-tree")
            .cloned()
            .unwrap_or_else(|| panic!("no system/same-tree in {:?}", r.results))
    };
    for (f, file) in &a.files {
        let (label, want) = (f.as_str(), &trees[f]);
        let dest = d.path().join(label);
        unpack_rootfs(file, *f, &dest).unwrap();
        assert_eq!(
            dest.join("boot/vmlinuz-6.1.0").exists(),
            *f == Format::Tarball,
            "{label}"
        );
        assert_eq!(
            &crate::smoke::tree::container_digest(&dest, *f).unwrap(),
            want,
            "{label}: unpacked, it is the build's tree less what its format leaves out"
        );
        // Read from its layers with nothing written (but the SIF's, a
        // squashfs): the same.
        assert_eq!(
            stream_digest(file, *f).unwrap().as_ref(),
            (*f != Format::Sif).then_some(want),
            "{label}: its layers as they stream past"
        );
        // Digested from each entry as the unpack wrote it (but the SIF's,
        // which unsquashfs unpacks): the same.
        let again = d.path().join(format!("{label}.again"));
        let (digest, recorded) = unpack_and_digest(file, *f, &again).unwrap();
        assert_eq!((&digest, recorded), (want, *f != Format::Sif), "{label}");
        let native = Native {
            expected_tree: Some(want),
            ..Native::default()
        };
        let run = d.path().join(format!("{label}.run"));
        let r = test_container(file, *f, &tools, &run, Duration::from_secs(120), native).unwrap();
        assert!(r.passed(), "{label}: {:?}", r.results);
        let t = same_tree(&r);
        assert_eq!(
            t.output,
            format!("same tree as built, as this format holds it: {want}"),
            "{label}"
        );
    }
    // One byte changed in one file of the container's tree: caught.
    let changed = artifacts_with(|root| {
        disk_only_and_delicate_files(root);
        fs::write(root.join("etc/hostname"), "tiny-tesT\n").unwrap();
    });
    let (f, file) = &changed.files[0];
    let want = &trees[f];
    let native = Native {
        expected_tree: Some(want),
        ..Native::default()
    };
    assert_ne!(stream_digest(file, *f).unwrap().as_ref(), Some(want));
    let run = d.path().join("changed.run");
    let r = test_container(file, *f, &tools, &run, Duration::from_secs(120), native).unwrap();
    assert!(!r.passed());
    let t = same_tree(&r);
    assert!(!t.outcome.passed());
    assert!(
        t.output.starts_with("container root filesystem ")
            && t.output.ends_with(&format!(", but the build made {want}")),
        "{}",
        t.output
    );
}

#[test]
fn broken_artifacts_are_refused_naming_them() {
    let a = artifacts();
    let d = tempfile::tempdir().unwrap();
    // A layer blob replaced by another valid layer: its digest differs.
    let oci = d.path().join("t.oci");
    copy_dir(&a.files[0].1, &oci);
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(oci.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: ImageManifest = serde_json::from_slice(&read_blob(&oci, m).unwrap()).unwrap();
    let (blob, _) = blob_path(&oci, &manifest.layers[0].digest).unwrap();
    let other = d.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("f"), "x").unwrap();
    let (gz, _) = formats::layer::write_layer_gz(&other, &[], 0, Vec::new()).unwrap();
    fs::write(&blob, gz).unwrap();
    let err = unpack_rootfs(&oci, Format::Oci, &d.path().join("u1")).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("cannot unpack the oci artifact") && msg.contains("t.oci"),
        "{msg}"
    );
    assert!(
        msg.contains("layer 1 of 1") && msg.contains("its blob has sha256"),
        "{msg}"
    );

    // Not a SIF at all, and a SIF without a system partition.
    let fake = d.path().join("fake.sif");
    fs::write(&fake, vec![0u8; 4096]).unwrap();
    let err = unpack_rootfs(&fake, Format::Sif, &d.path().join("u2")).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("fake.sif") && msg.contains("no SIF_MAGIC"),
        "{msg}"
    );
    let mut sif = fs::read(&a.files[2].1).unwrap();
    let third = 4096 + 2 * crate::formats::sif::DESCR_LEN;
    sif[third + 4] = 0; // the partition's descriptor: unused
    fs::write(&fake, sif).unwrap();
    let err = unpack_rootfs(&fake, Format::Sif, &d.path().join("u3")).unwrap_err();
    assert!(
        format!("{err:#}").contains("holds no primary system partition"),
        "{err:#}"
    );

    // A docker-archive whose manifest names a missing layer.
    let t = d.path().join("t.docker.tar");
    let mut b = tar::Builder::new(File::create(&t).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(
        "manifest.json",
        br#"[{"Config":"c.json","RepoTags":[],"Layers":["x/layer.tar"]}]"#,
    );
    add(
        "c.json",
        br#"{"rootfs":{"type":"layers","diff_ids":["sha256:00"]}}"#,
    );
    b.finish().unwrap();
    drop(b);
    let err = unpack_rootfs(&t, Format::DockerArchive, &d.path().join("u4")).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("t.docker.tar") && msg.contains("no member x/layer.tar"),
        "{msg}"
    );

    let err = unpack_rootfs(&t, Format::Qcow2, &d.path().join("u5")).unwrap_err();
    assert!(err.to_string().contains("not a container format"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A tar layer from (path, content) pairs: a trailing `/` makes a
/// folder, `-> target` a symbolic link.
fn layer(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1);
        h.set_uid(0);
        h.set_gid(0);
        if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, path, io::empty()).unwrap();
        } else if let Some(target) = content.strip_prefix("-> ") {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            b.append_link(&mut h, path, target).unwrap();
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(content.len() as u64);
            b.append_data(&mut h, path, content.as_bytes()).unwrap();
        }
    }
    b.into_inner().unwrap()
}

/// An OCI layout with these layers (the first gzip-compressed, the
/// others plain tar).
fn oci_with_layers(dir: &Path, layers: &[Vec<u8>]) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let hex = fsutil::hex(&Sha256::digest(bytes));
        fs::write(blobs.join(&hex), bytes).unwrap();
        format!("sha256:{hex}")
    };
    let mut descs = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let (bytes, mt) = if i == 0 {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            io::Write::write_all(&mut gz, l).unwrap();
            (
                gz.finish().unwrap(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        } else {
            (l.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        descs
            .push(serde_json::json!({"mediaType": mt, "digest": put(&bytes), "size": bytes.len()}));
    }
    let config = put(b"{}");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": descs,
    });
    let m = serde_json::to_vec(&manifest).unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(&m), "size": m.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
        ],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

#[test]
fn layers_apply_in_order_with_whiteouts_and_opaque_folders() {
    let d = tempfile::tempdir().unwrap();
    let outside = d.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("precious"), "untouched").unwrap();
    let outside_link = format!("-> {}", outside.join("precious").display());
    let lower = layer(&[
        ("a/", ""),
        ("a/keep", "k"),
        ("a/gone", "g"),
        ("b/", ""),
        ("b/old", "o"),
        ("b/sub/", ""),
        ("b/sub/old2", "o"),
        ("c/", ""),
        ("c/x", "x"),
        ("etc/", ""),
        ("etc/f", "f"),
        ("link", &outside_link),
    ]);
    let lower_again = lower.clone();
    let upper = layer(&[
        ("a/.wh.gone", ""),
        // Written before the opaque marker, in the same layer: kept.
        ("b/new", "n"),
        ("b/.wh..wh..opq", ""),
        ("c", "now a file"),
        // Replaces the symbolic link, never writes through it.
        ("link", "inside"),
        (".wh.etc", ""),
    ]);
    let oci = d.path().join("two.oci");
    oci_with_layers(&oci, &[lower, upper]);
    let dest = d.path().join("root");
    unpack_rootfs(&oci, Format::Oci, &dest).unwrap();
    let l = listing(&dest);
    let names: Vec<&str> = l.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, vec!["a", "a/keep", "b", "b/new", "c", "link"]);
    assert_eq!(fs::read_to_string(dest.join("c")).unwrap(), "now a file");
    assert_eq!(fs::read_to_string(dest.join("link")).unwrap(), "inside");
    assert_eq!(
        fs::read_to_string(outside.join("precious")).unwrap(),
        "untouched"
    );
    // Its digest as unpacked is the tree's, though whiteouts removed what
    // the first layer wrote (the records are lost, the tree is read);
    // the first layer alone is digested from its records, the same.
    let again = d.path().join("again");
    let (digest, recorded) = unpack_and_digest(&oci, Format::Oci, &again).unwrap();
    assert!(!recorded);
    let walked = crate::smoke::tree::container_digest(&again, Format::Oci).unwrap();
    assert_eq!(digest, walked);
    let one = d.path().join("one.oci");
    oci_with_layers(&one, &[lower_again]);
    let (dest, walked_dest) = (d.path().join("one"), d.path().join("one-walked"));
    let (recorded, from_records) = unpack_and_digest(&one, Format::Oci, &dest).unwrap();
    assert!(from_records);
    unpack_rootfs(&one, Format::Oci, &walked_dest).unwrap();
    assert_eq!(
        recorded,
        crate::smoke::tree::container_digest(&walked_dest, Format::Oci).unwrap()
    );
    assert_ne!(recorded, digest);
    // An entry written through an earlier entry's link (inside the tree)
    // lands elsewhere than its name: the tree is read, not the records.
    let linked = d.path().join("linked.oci");
    oci_with_layers(
        &linked,
        &[layer(&[("real/", ""), ("d", "-> real"), ("d/f", "x")])],
    );
    let dest = d.path().join("linked");
    let (digest, recorded) = unpack_and_digest(&linked, Format::Oci, &dest).unwrap();
    assert!(!recorded);
    assert_eq!(fs::read_to_string(dest.join("real/f")).unwrap(), "x");
    assert_eq!(
        digest,
        crate::smoke::tree::container_digest(&dest, Format::Oci).unwrap()
    );
}

#[test]
fn layers_cannot_reach_out_of_the_root_through_a_link() {
    let d = tempfile::tempdir().unwrap();
    let outside = d.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("victim"), "untouched").unwrap();
    let to_outside = format!("-> {}", outside.display());
    for (case, upper) in [
        ("whiteout", layer(&[("evil/.wh.victim", "")])),
        ("file", layer(&[("evil/victim", "overwritten")])),
        // An opaque marker below a link empties nothing (the link is
        // not a folder of the image).
        ("opaque", layer(&[("evil/.wh..wh..opq", "")])),
    ] {
        let oci = d.path().join(format!("{case}.oci"));
        oci_with_layers(&oci, &[layer(&[("evil", &to_outside)]), upper]);
        let r = unpack_rootfs(&oci, Format::Oci, &d.path().join(case));
        if case == "opaque" {
            r.unwrap();
        } else {
            let msg = format!("{:#}", r.unwrap_err());
            assert!(msg.contains(&format!("{case}.oci")), "{case}: {msg}");
            assert!(
                msg.contains("leads out of the root") || msg.contains("outside of destination"),
                "{case}: {msg}"
            );
        }
        assert_eq!(
            fs::read_to_string(outside.join("victim")).unwrap(),
            "untouched",
            "{case}"
        );
    }
}

fn tool(name: &str, command: &str, expect: &str) -> Tool {
    Tool {
        name: name.into(),
        category: "test".into(),
        check: ToolCheck {
            command: command.into(),
            expect: expect.into(),
            status: 0,
            timeout: 30,
            data: vec![],
        },
        source: None,
    }
}

/// The native run: the checks run as the image's default user, in a
/// login shell (so with /etc/profile's PATH and environment), with its
/// groups, and can still write their results.
#[test]
fn checks_run_as_the_default_user_with_its_login_environment() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    tiny_root(&tree);
    fs::create_dir_all(tree.join("home/bio")).unwrap();
    fs::write(
        tree.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nbio:x:1234:1235::/home/bio:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        tree.join("etc/group"),
        "root:x:0:\nsudo:x:27:bio\nbio:x:1235:\nstaff:x:50:other,bio\nusers:x:100:other\n",
    )
    .unwrap();
    fs::write(
        tree.join("etc/profile"),
        "PATH=/usr/local/bin:/usr/bin:/bin:/opt/bio/bin\nexport PATH\nexport BIO_PROFILE=read\n",
    )
    .unwrap();
    let file = d.path().join("tiny.rootfs.tar.gz");
    let ctx = FormatContext::new("tiny", "1", "seed", 0);
    formats::write_rootfs_tarball(&tree, &file, &ctx).unwrap();
    let tools = vec![tool(
        "who",
        "cat /proc/self/status; echo $USER $LOGNAME $PATH $BIO_PROFILE",
        "(?s)Uid:\\t1234\\t1234\\t1234\\t1234\\nGid:\\t1235\\t1235\\t1235\\t1235\\n.*\
         Groups:\\t27 50 1235 *\\n.*bio bio /usr/local/bin:/usr/bin:/bin:/opt/bio/bin read$",
    )];
    let u = tree_user(&tree, "bio").unwrap();
    assert_eq!(
        (u.uid, u.gid, &u.groups[..]),
        (1234, 1235, &[1235, 27, 50][..])
    );
    assert_eq!(
        (u.home.as_str(), u.shell.as_str()),
        ("/home/bio", "/bin/sh")
    );
    let run = d.path().join("run");
    let r = test_container(
        &file,
        Format::Tarball,
        &tools,
        &run,
        Duration::from_secs(60),
        Native {
            user: Some("bio"),
            ..Native::default()
        },
    )
    .unwrap();
    assert!(r.passed(), "{}", report::table(std::slice::from_ref(&r)));
    assert_eq!(r.user.as_deref(), Some("bio"));
    // A user the image does not have is named.
    let e = test_container(
        &file,
        Format::Tarball,
        &tools,
        &run,
        Duration::from_secs(60),
        Native {
            user: Some("nobody-here"),
            ..Native::default()
        },
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("default user nobody-here is not in its /etc/passwd"),
        "{e:#}"
    );
}

#[test]
fn checks_pass_and_fail_inside_every_container_format() {
    let a = artifacts();
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("reads.txt");
    fs::write(&data, "read1 planted\n").unwrap();
    let mut functional = tool("reader/count", "cat reads.txt; wc -l < reads.txt", "^1$");
    functional.check.data = vec![crate::manifest::DataFile::read(&data).unwrap()];
    let tools = vec![
        tool("greet", "echo hello; echo to-stderr >&2", "^hello$"),
        tool("wrong", "echo version 1.0", r"^version 9\."),
        functional,
        // Private namespaces: only loopback, a fresh PID space, the
        // image's host name, a writable /tmp and /dev/null.
        // podman's default capabilities, nothing more.
        tool(
            "capabilities",
            "cat /proc/self/status",
            r"^CapEff:\s+00000000800405fb$",
        ),
        tool(
            "isolated",
            "wc -l < /proc/net/dev; cut -d' ' -f1 /proc/self/stat; cat /proc/sys/kernel/hostname; \
             echo t > /tmp/t && cat /tmp/t; echo x > /dev/null && echo null-ok",
            r"\A3\n([1-9]|[1-9][0-9])\ntiny-test\nt\nnull-ok\z",
        ),
    ];
    for (f, file) in &a.files {
        let run = d.path().join("run");
        let r = test_container(
            file,
            *f,
            &tools,
            &run,
            Duration::from_secs(120),
            Native::default(),
        )
        .unwrap();
        let label = f.as_str();
        assert_eq!((r.firmware, r.format), (Runner::Container, *f));
        assert!(r.error.is_none(), "{label}: {:?}", r.error);
        let by_name: BTreeMap<&str, &CheckResult> =
            r.results.iter().map(|c| (c.tool.as_str(), c)).collect();
        assert_eq!(by_name.len(), 5, "{label}: {:?}", r.results);
        for ok in ["greet", "reader/count", "isolated", "capabilities"] {
            assert!(
                by_name[ok].outcome.passed(),
                "{label} {ok}: {:?} {:?}",
                by_name[ok].outcome,
                by_name[ok].output
            );
        }
        assert_eq!(by_name["greet"].output, "hello\nto-stderr");
        assert!(matches!(
            by_name["wrong"].outcome,
            CheckOutcome::NoMatch { .. }
        ));
        let failures = super::super::report::failures(std::slice::from_ref(&r));
        assert_eq!(
            failures,
            vec![format!(
                "wrong in {} under container: FAILED: output does not match /^version 9\\./",
                file.file_name().unwrap().to_string_lossy()
            )]
        );
        // The table's columns line up, whatever the format's name.
        let table = super::super::report::table(std::slice::from_ref(&r));
        let lines: Vec<&str> = table.lines().collect();
        let col = lines[0].find("TOOL").unwrap();
        let row = lines.iter().find(|l| l.contains("greet")).unwrap();
        assert_eq!(row.find("greet"), Some(col), "{table}");
        // Only the results are left behind.
        let left: Vec<String> = fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec![format!("{label}.results.log")], "{label}");
        fs::remove_dir_all(&run).unwrap();
    }
}

#[test]
fn an_image_without_a_shell_fails_saying_why() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    let file = d.path().join("empty.rootfs.tar.gz");
    let ctx = FormatContext::new("empty", "1", "seed", 0);
    formats::write_rootfs_tarball(&tree, &file, &ctx).unwrap();
    let tools = vec![tool("greet", "echo hello", "^hello$")];
    let run = d.path().join("run");
    let r = test_container(
        &file,
        Format::Tarball,
        &tools,
        &run,
        Duration::from_secs(60),
        Native::default(),
    )
    .unwrap();
    let err = r.error.clone().unwrap_or_default();
    assert!(
        err.starts_with("the container ended (exit status 127) before the checks finished")
            && err.contains("/bin/sh"),
        "{err}"
    );
    assert_eq!(r.results[0].outcome, CheckOutcome::NotRun);
    assert_eq!(fs::read_dir(&run).unwrap().count(), 0, "nothing left");
}

#[test]
fn a_hung_check_is_stopped_at_the_timeout_with_its_whole_container() {
    let a = artifacts();
    let d = tempfile::tempdir().unwrap();
    let marker = format!("hang-{}", std::process::id());
    let tools = vec![
        tool("first", "echo ok", "^ok$"),
        tool(&marker, "sleep 1000 & sleep 1000", "never"),
        tool("after", "echo ok", "^ok$"),
    ];
    let (f, file) = &a.files[3];
    let t = Instant::now();
    let r = test_container(
        file,
        *f,
        &tools,
        d.path(),
        Duration::from_secs(3),
        Native::default(),
    )
    .unwrap();
    assert!(t.elapsed() < Duration::from_secs(60));
    let err = r.error.clone().unwrap_or_default();
    assert!(err.contains("did not finish within 3 s"), "{err}");
    let outcomes: BTreeMap<&str, &CheckOutcome> = r
        .results
        .iter()
        .map(|c| (c.tool.as_str(), &c.outcome))
        .collect();
    // With two or more cores the checks run two at once, so the one
    // after the hung check ran beside it; with one, it never ran.
    let after = if crate::smoke::default_jobs() > 1 {
        CheckOutcome::Passed
    } else {
        CheckOutcome::NotRun
    };
    assert_eq!(
        outcomes,
        BTreeMap::from([
            ("first", &CheckOutcome::Passed),
            (marker.as_str(), &CheckOutcome::NotRun),
            ("after", &after),
        ])
    );
    assert!(!r.passed());
    // No process of the container survives (the check's script path
    // carries the marker).
    std::thread::sleep(Duration::from_millis(500));
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = fs::read(e.path().join("cmdline")) {
            assert!(
                !String::from_utf8_lossy(&cmd).contains(&marker),
                "process {} survived",
                e.file_name().to_string_lossy()
            );
        }
    }
    let left: Vec<String> = fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["tarball.results.log".to_string()]);
}

/// A container artifact whose layers show it holds the tree of the disk
/// the native checks run in (less what its format leaves out) runs its
/// checks in that disk's tree, mounted, with what it leaves out (and
/// `lost+found`) gone, and the disk untouched; a SIF (not a stream) and an
/// artifact one byte apart from the build's tree are unpacked as ever, and
/// the changed one is caught.
#[test]
fn a_container_holding_the_disk_s_tree_runs_in_it_and_a_changed_one_is_unpacked() {
    let a = artifacts_with(disk_only_and_delicate_files);
    let formats: Vec<Format> = a.files.iter().map(|(f, _)| *f).collect();
    let (whole, trees) = crate::smoke::tree::digest_dir_and_containers(&a.root, &formats).unwrap();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    fs::create_dir(&out).unwrap();
    let raw = out.join("tiny.raw");
    crate::disk::raw_disk_of(&a.root, &raw);
    let built_sha = crate::fsutil::sha256_file(&raw).unwrap();
    tiny_manifest(&out, &built_sha, &whole);
    // What the container holds, and nothing it leaves out: the tarball
    // keeps the kernel, modules and firmware; none has lost+found.
    let tools = |f: Format| {
        let (test, gone) = match f {
            Format::Tarball => ("-e", "kept"),
            _ => ("! -e", "gone"),
        };
        vec![tool(
            "tree",
            &format!(
                "cat /etc/hostname; test ! -e /lost+found && test -d /boot \
                 && test {test} /boot/vmlinuz-6.1.0 && test {test} /usr/lib/modules/6.1.0 \
                 && test {test} /usr/lib/firmware && test {test} /vmlinuz && echo {gone}; \
                 test -u /usr/bin/helper && echo setuid"
            ),
            &format!("^tiny-test\n{gone}\nsetuid$"),
        )]
    };
    let run_in = |f: Format, file: &Path, want: &str, run: &Path| {
        let native = Native {
            expected_tree: Some(want),
            tree_disk: Some((&raw, Format::Raw)),
            ..Native::default()
        };
        test_container(file, f, &tools(f), run, Duration::from_secs(120), native).unwrap()
    };
    let run = |f: Format, file: &Path, want: &str| {
        run_in(f, file, want, &d.path().join(format!("{}.run", f.as_str())))
    };
    let same_tree = |r: &BootReport| {
        r.results
            .iter()
            .find(|c| c.tool == "system/same-tree")
            .map(|c| (c.outcome.passed(), c.output.clone()))
    };
    for (f, file) in &a.files {
        let (label, want) = (f.as_str(), &trees[f]);
        let r = run(*f, file, want);
        assert!(
            r.passed(),
            "{label}: {}",
            report::table(std::slice::from_ref(&r))
        );
        let in_disk = *f != Format::Sif;
        assert_eq!(r.tree_of.is_some(), in_disk, "{label}");
        assert_eq!(r.disk_mounted, in_disk, "{label}");
        if in_disk {
            assert_eq!(r.tree_of.as_deref(), Some("tiny.raw"));
            assert!(report::table(std::slice::from_ref(&r)).contains("run in tiny.raw's tree"));
        }
        assert_eq!(
            same_tree(&r),
            Some((
                true,
                format!("same tree as built, as this format holds it: {want}")
            )),
            "{label}"
        );
    }
    // A report folder named relative to the working directory (`--out
    // out`), as README command 1 names it.
    let here = tempfile::Builder::new()
        .prefix(".biovm-test-")
        .tempdir_in(".")
        .unwrap();
    let rel_run = Path::new(here.path().file_name().unwrap()).join("run");
    let (f, file) = &a.files[0];
    let r = run_in(*f, file, &trees[f], &rel_run);
    assert!(
        r.passed() && r.tree_of.is_some(),
        "{}",
        report::table(std::slice::from_ref(&r))
    );
    assert_eq!(
        crate::fsutil::sha256_file(&raw).unwrap(),
        built_sha,
        "the disk was not written"
    );
    assert!(loops_of(&raw).is_empty(), "no loop device is left");

    // One byte changed: its layers do not hold the disk's tree; it is
    // unpacked, its checks run in its own tree, and its tree is caught.
    let changed = artifacts_with(|root| {
        disk_only_and_delicate_files(root);
        fs::write(root.join("etc/hostname"), "tiny-tesT\n").unwrap();
    });
    let (f, file) = &changed.files[0];
    let r = run(*f, file, &trees[f]);
    assert_eq!((r.tree_of.as_deref(), r.disk_mounted), (None, false));
    assert!(!r.passed());
    let (passed, output) = same_tree(&r).unwrap();
    assert!(!passed && output.contains("but the build made"), "{output}");
}

/// A layer that, unpacked, writes through a link at a path the format
/// leaves out (so its digest would not show the link) is not taken from
/// its stream: the records are lost and the tree is unpacked and read.
#[test]
fn a_layer_writing_through_a_left_out_link_is_not_taken_from_its_stream() {
    let d = tempfile::tempdir().unwrap();
    let base: &[(&str, &str)] = &[
        ("etc/", ""),
        ("etc/a", "as built\n"),
        ("usr/", ""),
        ("usr/lib/", ""),
    ];
    let plain = d.path().join("plain.oci");
    oci_with_layers(&plain, &[layer(base)]);
    let unpacked = d.path().join("plain");
    unpack_rootfs(&plain, Format::Oci, &unpacked).unwrap();
    assert_eq!(
        stream_digest(&plain, Format::Oci).unwrap(),
        Some(tree::container_digest(&unpacked, Format::Oci).unwrap()),
        "a plain layer is digested from its stream"
    );
    let mut through = base.to_vec();
    through.push(("usr/lib/firmware", "-> ../../etc"));
    through.push(("usr/lib/firmware/a", "changed\n"));
    let sneaky = d.path().join("sneaky.oci");
    oci_with_layers(&sneaky, &[layer(&through)]);
    assert_eq!(stream_digest(&sneaky, Format::Oci).unwrap(), None);
    let unpacked = d.path().join("sneaky");
    unpack_rootfs(&sneaky, Format::Oci, &unpacked).unwrap();
    assert_eq!(
        fs::read_to_string(unpacked.join("etc/a")).unwrap(),
        "changed\n"
    );
    // Below a link that is not left out: lost too.
    let mut below = base.to_vec();
    below.push(("usr/share", "-> ../etc"));
    below.push(("usr/share/a", "changed\n"));
    let file = d.path().join("below.oci");
    oci_with_layers(&file, &[layer(&below)]);
    assert_eq!(stream_digest(&file, Format::Oci).unwrap(), None);
}

/// A tiny tree under `dir` with `files` (path, text) written into it, and
/// its raw disk `dir/out/tiny.raw`: the tree's digest, the output folder
/// and the disk.
fn tiny_built_disk(dir: &Path, files: &[(&str, &str)]) -> (String, PathBuf, PathBuf) {
    let tree = dir.join("tree");
    tiny_root(&tree);
    for (path, text) in files {
        fs::write(tree.join(path), text).unwrap();
    }
    let want = tree::digest_dir(&tree).unwrap();
    let out = dir.join("out");
    fs::create_dir(&out).unwrap();
    let raw = out.join("tiny.raw");
    crate::disk::raw_disk_of(&tree, &raw);
    (want, out, raw)
}

/// Loop devices backed by `file`.
fn loops_of(file: &Path) -> Vec<String> {
    let file = fs::canonicalize(file).unwrap();
    fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter(|e| {
            fs::read_to_string(e.path().join("loop/backing_file"))
                .is_ok_and(|b| Path::new(b.trim()) == file)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The manifest of a `tiny` image in `out` whose raw disk `tiny.raw` has
/// the SHA-256 `sha` and the tree `tree_sha256`.
fn tiny_manifest(out: &Path, sha: &str, tree_sha256: &str) {
    tiny_manifest_read_back(out, sha, tree_sha256, None)
}

/// [`tiny_manifest`], saying the build read the tree back from the raw
/// disk with the SHA-256 `read_back`.
fn tiny_manifest_read_back(out: &Path, sha: &str, tree_sha256: &str, read_back: Option<&str>) {
    let m = crate::manifest::Manifest {
        image: "tiny".into(),
        description: String::new(),
        suite: "bookworm".into(),
        architecture: "amd64".into(),
        boot: vec!["bios".into()],
        default_user: None,
        artifacts: vec![crate::manifest::Artifact {
            format: Format::Raw,
            file: "tiny.raw".into(),
            size: 1 << 30,
            sha256: sha.into(),
        }],
        tools: Vec::new(),
        tree_sha256: Some(tree_sha256.into()),
        container_trees: BTreeMap::new(),
        tree_read_back_from: read_back.map(String::from),
        sectors_compared_with_raw: Vec::new(),
        data: Vec::new(),
        workbench: None,
        data_disk: None,
        every_check_in_every_boot: false,
        boot_sample: Vec::new(),
    };
    m.write(out).unwrap();
}

/// The native run of `tools` in the raw disk `raw`, reporting into
/// `dir/run`, against the tree digest `want`.
fn native_run(
    raw: &Path,
    tools: &[Tool],
    dir: &Path,
    want: &str,
    data_disk: Option<&crate::smoke::DataDiskFiles>,
) -> Result<BootReport> {
    test_container(
        raw,
        Format::Raw,
        tools,
        &dir.join("run"),
        Duration::from_secs(60),
        Native {
            expected_tree: Some(want),
            data_disk,
            ..Native::default()
        },
    )
}

#[test]
fn the_build_s_own_disk_is_mounted_and_any_other_is_copied_out() {
    let d = tempfile::tempdir().unwrap();
    let (want, out, raw) = tiny_built_disk(
        d.path(),
        &[("etc/hostname", "tiny-disk\n"), ("etc/motd", "built\n")],
    );
    let built_sha = crate::fsutil::sha256_file(&raw).unwrap();
    let manifest = |sha: &str| tiny_manifest(&out, sha, &want);
    let tools = vec![
        tool(
            "motd",
            "cat /etc/motd; cat /proc/sys/kernel/hostname",
            "^built\ntiny-disk$",
        ),
        // The overlay takes writes; the disk under it is never written.
        tool(
            "writes",
            "echo written > /etc/new && cat /etc/new",
            "^written$",
        ),
    ];
    let run = |sha: &str| {
        manifest(sha);
        native_run(&raw, &tools, d.path(), &want, None).unwrap()
    };

    // The disk its manifest lists with its very bytes: mounted.
    let r = run(&built_sha);
    assert!(r.disk_mounted, "the build's own disk is mounted");
    assert!(r.passed(), "{}", report::table(std::slice::from_ref(&r)));
    let same = r.results.iter().find(|c| c.tool == "system/same-tree");
    assert!(same.is_some_and(|c| c.outcome.passed()), "{:?}", r.results);
    assert_eq!(
        crate::fsutil::sha256_file(&raw).unwrap(),
        built_sha,
        "the disk was not written"
    );
    assert!(loops_of(&raw).is_empty(), "no loop device is left");
    assert!(report::table(std::slice::from_ref(&r)).contains("disk mounted read-only"));

    // A disk whose bytes its manifest does not list is never mounted: its
    // tree is copied out, and the checks pass there too.
    let r = run(&"0".repeat(64));
    assert!(!r.disk_mounted, "a disk not as built is copied out");
    assert!(r.passed(), "{}", report::table(std::slice::from_ref(&r)));
    assert!(r
        .results
        .iter()
        .any(|c| c.tool == "system/same-tree" && c.outcome.passed()));
}

#[test]
fn a_disk_its_build_read_back_is_not_read_again_and_one_changed_byte_is() {
    let d = tempfile::tempdir().unwrap();
    let text = "read back by the build: 0123456789abcdef\n";
    let (want, out, raw) = tiny_built_disk(d.path(), &[("etc/motd", text)]);
    let sha = crate::fsutil::sha256_file(&raw).unwrap();
    tiny_manifest_read_back(&out, &sha, &want, Some(&sha));
    let tools = vec![tool("motd", "cat /etc/motd", "^read back by the build")];

    // As built: the checks run in the disk, its tree is the build's read-back.
    let r = native_run(&raw, &tools, d.path(), &want, None).unwrap();
    assert!(r.disk_mounted);
    assert!(r.passed(), "{}", report::table(std::slice::from_ref(&r)));
    assert_eq!(
        tree::how_known(&raw),
        Some(tree::How::ReadBack),
        "the disk was read again"
    );
    let same = r
        .results
        .iter()
        .find(|c| c.tool == "system/same-tree")
        .unwrap();
    assert!(same.outcome.passed(), "{same:?}");
    assert!(
        same.output
            .starts_with(&format!("same tree as built: {want} (read back")),
        "{same:?}"
    );

    // The same manifest beside a copy with one byte of /etc/motd changed:
    // another SHA-256, so the tree is read (copied out) and is not the build's.
    let out2 = d.path().join("out2");
    fs::create_dir(&out2).unwrap();
    let mut bytes = fs::read(&raw).unwrap();
    let at = bytes
        .windows(text.len())
        .position(|w| w == text.as_bytes())
        .expect("the file's bytes in the disk");
    bytes[at + text.len() - 2] = b'0';
    let changed = out2.join("tiny.raw");
    fs::write(&changed, bytes).unwrap();
    tiny_manifest_read_back(&out2, &sha, &want, Some(&sha));
    let r = native_run(&changed, &tools, &out2, &want, None).unwrap();
    assert!(!r.disk_mounted, "a disk not as built is copied out");
    assert_eq!(tree::how_known(&changed), Some(tree::How::Read));
    let same = r
        .results
        .iter()
        .find(|c| c.tool == "system/same-tree")
        .unwrap();
    assert!(
        !same.outcome.passed(),
        "one changed byte is caught: {same:?}"
    );
    assert!(
        same.output.contains(&format!("but the build made {want}")),
        "{same:?}"
    );
}

/// An empty folder `scratch` in `dir` (made once).
fn scratch_of(dir: &Path) -> PathBuf {
    let s = dir.join("scratch");
    let _ = fs::create_dir(&s);
    s
}

/// `raw` converted by `qemu-img` to a `fmt` disk at `dest`.
fn converted(raw: &Path, fmt: &str, dest: &Path) {
    crate::cmd::Cmd::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", fmt])
        .arg(raw)
        .arg(dest)
        .run()
        .unwrap();
}

#[test]
fn another_format_of_the_read_back_disk_is_known_by_its_sectors_and_a_changed_one_is_read() {
    use crate::smoke::qemu::DiskFormat;
    let d = tempfile::tempdir().unwrap();
    let text = "one filesystem in two formats: 0123456789\n";
    let (want, out, raw) = tiny_built_disk(d.path(), &[("etc/motd", text)]);
    let sha = crate::fsutil::sha256_file(&raw).unwrap();
    tiny_manifest_read_back(&out, &sha, &want, Some(&sha));
    // The qcow2 the build would write, and a qcow2 of the same disk with
    // one byte of /etc/motd changed, both listed beside the raw disk.
    let qcow2 = out.join("tiny.qcow2");
    converted(&raw, "qcow2", &qcow2);
    let mut bytes = fs::read(&raw).unwrap();
    let at = bytes
        .windows(text.len())
        .position(|w| w == text.as_bytes())
        .expect("the file's bytes in the disk");
    bytes[at + 4] = b'N';
    let changed_raw = d.path().join("changed.raw");
    fs::write(&changed_raw, bytes).unwrap();
    let changed = out.join("changed.qcow2");
    converted(&changed_raw, "qcow2", &changed);
    // A copy of the qcow2 its build compared with the raw disk (its SHA-256
    // recorded as such); the changed one listed with that SHA-256 too, as
    // if its bytes had changed since.
    let built = out.join("built.qcow2");
    fs::copy(&qcow2, &built).unwrap();
    let good = crate::fsutil::sha256_file(&qcow2).unwrap();
    let manifest = crate::manifest::Manifest::path_for(&out, "tiny");
    let mut m = crate::manifest::Manifest::read(&manifest).unwrap();
    for f in ["tiny.qcow2", "built.qcow2", "changed.qcow2"] {
        m.artifacts.push(crate::manifest::Artifact {
            format: Format::Qcow2,
            file: f.into(),
            size: 1 << 30,
            sha256: good.clone(),
        });
    }
    m.sectors_compared_with_raw = vec![good.clone()];
    m.write(&out).unwrap();
    // Listed as compared by the build, with those very bytes: known
    // without a comparison.
    let scratch = scratch_of(d.path());
    let known = |disk: &Path| {
        tree::booted_disk_digest(disk, Format::Qcow2, (disk, DiskFormat::Qcow2), &scratch).unwrap()
    };
    // Known as the raw disk's tree, compared by the build or now, and said so.
    let same_as_raw = |disk: &Path, by_build: bool, compared: &str| {
        let got = known(disk);
        assert_eq!(got, want);
        assert_eq!(
            tree::how_known(disk),
            Some(tree::How::SameSectors {
                disk: raw.clone(),
                how: Box::new(tree::How::ReadBack),
                by_build,
            })
        );
        let r = tree::same_tree_result(disk, &want, &got);
        assert!(r.outcome.passed(), "{r:?}");
        let said = format!(
            "(every sector equal to tiny.raw's, {compared}; \
             that disk's tree read back from it by its build)"
        );
        assert!(r.output.ends_with(&said), "{r:?}");
    };
    same_as_raw(
        &built,
        true,
        "compared by its build (qemu-img compare; its SHA-256 is unchanged)",
    );
    // Not listed as compared: compared now, every sector the raw disk's.
    m.sectors_compared_with_raw.clear();
    m.write(&out).unwrap();
    same_as_raw(&qcow2, false, "by qemu-img compare");

    // One changed byte: not the bytes the build compared (another
    // SHA-256), nor the raw disk's sectors, so its tree is read, and it is
    // not the build's.
    m.sectors_compared_with_raw = vec![good];
    m.write(&out).unwrap();
    let got = known(&changed);
    assert_eq!(tree::how_known(&changed), Some(tree::How::Read));
    let r = tree::same_tree_result(&changed, &want, &got);
    assert!(!r.outcome.passed(), "one changed byte is caught: {r:?}");
    assert!(
        r.output.contains(&format!("but the build made {want}")),
        "{r:?}"
    );
    assert_eq!(
        fs::read_dir(&scratch).unwrap().count(),
        0,
        "the raw copy read is removed"
    );
}

#[test]
fn a_data_mount_point_that_is_a_link_is_refused_mounted_or_copied_out() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    tiny_root(&tree);
    // /data points out of the image: the data disk must go nowhere.
    let outside = d.path().join("outside");
    fs::create_dir_all(outside.join("genomes")).unwrap();
    symlink(&outside, tree.join("data")).unwrap();
    let want = tree::digest_dir(&tree).unwrap();
    let out = d.path().join("out");
    fs::create_dir(&out).unwrap();
    let raw = out.join("tiny.raw");
    crate::disk::raw_disk_of(&tree, &raw);
    let data_tree = d.path().join("data-tree");
    fs::create_dir(&data_tree).unwrap();
    fs::write(data_tree.join("ref.fa"), ">r\nACGT\n").unwrap();
    let data_raw = out.join("tiny.data.raw");
    Cmd::new("mkfs.ext4")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&data_tree)
        .arg(&data_raw)
        .arg("16M")
        .run()
        .unwrap();
    let data = crate::smoke::DataDiskFiles {
        raw: data_raw.clone(),
        qcow2: None,
        raw_sha256: crate::fsutil::sha256_file(&data_raw).unwrap(),
        tree_sha256: tree::digest_dir(&data_tree).unwrap(),
    };
    let tools = vec![tool("greet", "echo hello", "^hello$")];
    for sha in [crate::fsutil::sha256_file(&raw).unwrap(), "0".repeat(64)] {
        tiny_manifest(&out, &sha, &want);
        let e = native_run(&raw, &tools, d.path(), &want, Some(&data)).unwrap_err();
        assert!(
            format!("{e:#}").contains("data in the image is not a folder"),
            "{e:#}"
        );
        assert_eq!(
            fs::read_dir(outside.join("genomes")).unwrap().count(),
            0,
            "nothing was written through the link"
        );
        assert!(loops_of(&data_raw).is_empty());
    }
}
