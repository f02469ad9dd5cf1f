//! Tests of the root filesystem's steps: the snapshot of the package cache,
//! the local repository and its archive, and the files and hooks written
//! into the tree (cloud-init's configuration, the initramfs hook).

use super::*;

#[test]
fn a_build_reads_a_snapshot_of_the_deb_cache_and_adds_whole_files() {
    let d = tempfile::tempdir().unwrap();
    let debs = d.path().join("debs/bookworm-amd64");
    fs::create_dir_all(&debs).unwrap();
    fs::write(debs.join("a.deb"), b"a").unwrap();
    let s = DebSnapshot::take(&debs).unwrap();
    assert_eq!(fs::read(s.input.join("a.deb")).unwrap(), b"a");
    // Another build adds to the cache meanwhile: the snapshot does not change.
    fs::write(debs.join("c.deb"), b"c").unwrap();
    assert!(!s.input.join("c.deb").exists());
    // What this build used comes back; the cache keeps its own copies.
    fs::write(s.output.join("a.deb"), b"changed").unwrap();
    fs::write(s.output.join("b.deb"), b"b").unwrap();
    fs::write(s.output.join("lock"), b"").unwrap();
    s.publish(&debs).unwrap();
    let (input, output) = (s.input.clone(), s.output.clone());
    drop(s);
    assert!(!input.exists() && !output.exists());
    let mut names: Vec<String> = fs::read_dir(&debs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a.deb", "b.deb", "c.deb"]);
    assert_eq!(fs::read(debs.join("a.deb")).unwrap(), b"a");
}

/// A killed build's snapshot folders go at the next build; a running
/// build's (this process's) stay.
#[test]
fn snapshots_of_killed_builds_are_removed_and_running_ones_kept() {
    let d = tempfile::tempdir().unwrap();
    let debs = d.path().join("bookworm-amd64");
    fs::create_dir_all(&debs).unwrap();
    // PIDs never exceed 2^22 on Linux: this one cannot be running.
    let dead = d.path().join(".4294967295.bookworm-amd64-0.in");
    let live = d
        .path()
        .join(format!(".{}.bookworm-amd64-7.out", std::process::id()));
    for f in [&dead, &live] {
        fs::create_dir(f).unwrap();
        fs::write(f.join("a.deb"), b"a").unwrap();
    }
    let s = DebSnapshot::take(&debs).unwrap();
    assert!(!dead.exists(), "the killed build's snapshot is left");
    assert!(
        live.join("a.deb").exists(),
        "a running build's snapshot is gone"
    );
    assert!(debs.exists() && s.input.exists());
}

/// Other builds link and unlink the shared cache files while this one
/// copies its snapshot in (each changes the files' ctime): the copy
/// still succeeds and is whole, copied or linked.
#[test]
fn the_snapshot_copies_in_while_other_builds_link_its_files() {
    for link in [false, true] {
        snapshot_goes_in_under_churn(link);
    }
}

fn snapshot_goes_in_under_churn(link: bool) {
    use std::os::unix::fs::MetadataExt;
    let d = tempfile::tempdir().unwrap();
    let snap = d.path().join("snap");
    let root = d.path().join("root");
    fs::create_dir_all(&snap).unwrap();
    fs::create_dir_all(root.join("var/cache/apt/archives")).unwrap();
    let body: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    for i in 0..8 {
        fs::write(snap.join(format!("p{i}.deb")), &body).unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (snap, stop) = (snap.clone(), stop.clone());
        let other = d.path().join("other");
        fs::create_dir_all(&other).unwrap();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for i in 0..8 {
                    let l = other.join(format!("p{i}.deb"));
                    let _ = fs::hard_link(snap.join(format!("p{i}.deb")), &l);
                    let _ = fs::remove_file(&l);
                }
                n += 1;
            }
            n
        })
    };
    let hook = copy_in_hook(&snap.to_string_lossy(), link);
    let ok = run_hook(&hook, &root);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(churn.join().unwrap() > 0, "the other build never ran");
    assert!(ok, "{hook} failed");
    for i in 0..8 {
        let p = root.join(format!("var/cache/apt/archives/p{i}.deb"));
        assert!(
            fs::read(&p).unwrap() == body,
            "p{i}.deb differs from the cache"
        );
        let cached = fs::metadata(snap.join(format!("p{i}.deb"))).unwrap().ino();
        assert_eq!(fs::metadata(&p).unwrap().ino() == cached, link, "{hook}");
    }
}

/// Run a hook as mmdebstrap does: `sh -c HOOK exec ROOT`.
fn run_hook(hook: &str, root: &Path) -> bool {
    std::process::Command::new("sh")
        .args(["-c", hook, "exec"])
        .arg(root)
        .status()
        .unwrap()
        .success()
}

/// Every .deb of the tree's archive comes out (linked when asked), and
/// hard links are used only where source and target share a filesystem.
#[test]
fn the_archive_comes_out_whole_and_links_only_on_one_filesystem() {
    use std::os::unix::fs::MetadataExt;
    let d = tempfile::tempdir().unwrap();
    let archives = d.path().join("root/var/cache/apt/archives");
    fs::create_dir_all(archives.join("partial")).unwrap();
    fs::write(archives.join("a_1_amd64.deb"), b"a").unwrap();
    fs::write(archives.join("b_2_amd64.deb"), b"b").unwrap();
    for link in [false, true] {
        let out = d.path().join(format!("out-{link}"));
        fs::create_dir(&out).unwrap();
        let hook = copy_out_hook(&out.to_string_lossy(), link);
        assert!(run_hook(&hook, &d.path().join("root")), "{hook} failed");
        for n in ["a_1_amd64.deb", "b_2_amd64.deb"] {
            let (i, o) = (archives.join(n), out.join(n));
            assert_eq!(fs::read(&o).unwrap(), fs::read(&i).unwrap());
            let same = fs::metadata(&o).unwrap().ino() == fs::metadata(&i).unwrap().ino();
            assert_eq!(same, link, "{hook}");
        }
    }
    // A folder that does not exist yet counts by the folder above it.
    assert!(same_filesystem(&archives, &d.path().join("new/root")));
    assert!(!same_filesystem(&archives, Path::new("/proc/self")));
}

/// The cloud-init settings of the project's images are valid YAML
/// (read by Python's YAML parser, as cloud-init reads them) and carry
/// the image's user and locale.
#[test]
fn the_local_repository_is_named_by_its_absolute_path() {
    // `biovm build --out out` names the repository relative to where
    // biovm runs; apt reads it from wherever mmdebstrap runs.
    let hooks = sources_hooks(Sources::Local(Path::new("src")), "/tmp/saved").unwrap();
    let abs = fs::canonicalize("src").unwrap();
    assert!(
        hooks[0].contains(&format!("'deb [trusted=yes] copy:{} ./' >", abs.display())),
        "{hooks:?}"
    );
    assert_eq!(
        hooks[1],
        "--customize-hook=cat /tmp/saved > \"$1\"/etc/apt/sources.list"
    );
    let both = sources_hooks(Sources::MirrorAndLocal(Path::new("src")), "/tmp/saved").unwrap();
    assert!(
        both[0].contains("' >> \"$1\"/etc/apt/sources.list"),
        "{both:?}"
    );
    assert!(sources_hooks(Sources::Mirror, "/tmp/saved")
        .unwrap()
        .is_empty());
    assert!(sources_hooks(Sources::Local(Path::new("no/such/folder")), "/x").is_err());
}

#[test]
fn cloud_cfg_is_yaml_with_the_images_user() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let image = crate::config::load_image(&repo.join("images/minimal.toml"), &repo.join("recipes"))
        .unwrap();
    let v = yaml_as_json(&cloud_cfg(&image));
    assert_eq!(
        v["datasource_list"],
        serde_json::json!(["NoCloud", "Ec2", "None"])
    );
    assert_eq!(v["system_info"]["default_user"]["name"], "biovm");
    assert_eq!(
        v["system_info"]["default_user"]["groups"],
        serde_json::json!(["sudo"])
    );
    assert_eq!(v["locale"], "C.UTF-8");
    assert_eq!(v["growpart"]["devices"], serde_json::json!(["/"]));
    assert_eq!(v["network"]["config"], "disabled");
    assert_eq!(v["apt"]["preserve_sources_list"], true);
    assert_eq!(v["grub_dpkg"]["enabled"], false);
    // The smoke test reads the default user from this comment.
    assert!(cloud_cfg(&image).contains("\n# default user: biovm\n"));
}

/// Run the initramfs hook against a fake DESTDIR holding udev's init-top
/// script, with `manual_add_modules` recording its arguments.
#[test]
fn initramfs_hook_adds_drivers_and_narrows_coldplug() {
    let d = tempfile::tempdir().unwrap();
    let dest = d.path();
    let udev = "#!/bin/sh -e\nSYSTEMD_LOG_LEVEL=$log_level /lib/systemd/systemd-udevd --daemon --resolve-names=never\n\nudevadm trigger --type=subsystems --action=add\nudevadm trigger --type=devices --action=add\nudevadm settle || true\n";
    write_file(dest, "scripts/init-top/udev", udev.as_bytes(), 0o755).unwrap();
    let hook = initramfs_hook().replace(
        ". /usr/share/initramfs-tools/hook-functions",
        "manual_add_modules() { echo \"$1\" >> \"$DESTDIR/modules\"; }",
    );
    assert_ne!(hook, initramfs_hook(), "the hook sources hook-functions");
    write_file(dest, "hook", hook.as_bytes(), 0o755).unwrap();
    Cmd::new("sh")
        .arg(dest.join("hook"))
        .env("DESTDIR", dest)
        .run()
        .unwrap();
    let mods = fs::read_to_string(dest.join("modules")).unwrap();
    assert_eq!(mods.lines().collect::<Vec<_>>(), INITRAMFS_DRIVERS);
    let script = fs::read_to_string(dest.join("scripts/init-top/udev")).unwrap();
    assert!(
        script.contains("udevadm trigger --type=devices --action=add --subsystem-match=pci --subsystem-match=virtio"),
        "{script}"
    );
    assert!(script.contains("--subsystem-match=block\nudevadm settle"));
    // The subsystem trigger is left alone.
    assert!(script.contains("udevadm trigger --type=subsystems --action=add\n"));
    // `prereqs` prints nothing and changes nothing.
    let out = Cmd::new("sh")
        .arg(dest.join("hook"))
        .arg("prereqs")
        .output()
        .unwrap();
    assert!(out.is_empty(), "{out}");
}
