use super::*;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, UNIX_EPOCH};

const STATUS: &str =
    "Package: hello\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.10-3\n\n";

fn hello() -> LockedDeb {
    LockedDeb {
        name: "hello".into(),
        version: "2.10-3".into(),
        architecture: "amd64".into(),
        sha256: "ab".repeat(32),
    }
}

fn key(n: u32) -> Key {
    let text = format!("test key {n}\n");
    Key {
        sha256: fsutil::hex(&Sha256::digest(text.as_bytes())),
        text,
    }
}

fn cache_in(dir: &Path, budget: u64) -> BootstrapCache {
    BootstrapCache {
        dir: dir.join("bootstraps"),
        budget,
    }
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// The extended attribute the tests set (a user one: any file system
/// with xattrs takes it).
fn xattr() -> CString {
    CString::new("user.biovm").unwrap()
}

fn set_xattr(p: &Path, value: &[u8]) {
    // SAFETY: valid C strings, and a buffer of the length given.
    let r = unsafe {
        libc::lsetxattr(
            c(p).as_ptr(),
            xattr().as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
}

fn get_xattr(p: &Path) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings, and a buffer of the length given.
    let n = unsafe {
        libc::lgetxattr(
            c(p).as_ptr(),
            xattr().as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// A tree with what a bootstrap leaves that a careless copy loses: ids,
/// set-id and sticky bits, a hard link, an absolute symbolic link, a hole,
/// a FIFO, nanosecond mtimes and extended attributes (file capabilities
/// live in one).
fn odd_tree(root: &Path) {
    fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    fs::write(root.join("var/lib/dpkg/status"), STATUS).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    let tool = root.join("usr/bin/tool");
    fs::write(&tool, b"#!/bin/sh\necho tool\n").unwrap();
    std::os::unix::fs::chown(&tool, Some(1234), Some(5678)).unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o4755)).unwrap();
    fs::hard_link(&tool, root.join("usr/bin/tool-again")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("usr/bin/host-link")).unwrap();
    set_xattr(&tool, b"biovm");
    let sparse = root.join("var/log-lastlog");
    let f = fs::File::create(&sparse).unwrap();
    f.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"end", (64 << 20) - 3).unwrap();
    drop(f);
    let tmp = root.join("tmp");
    fs::create_dir(&tmp).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(
        unsafe { libc::mkfifo(c(&root.join("run-fifo")).as_ptr(), 0o600) },
        0
    );
    let when = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
    fs::File::options()
        .append(true)
        .open(&tool)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

/// Every path under `root` with what a file system says of it.
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let meta = fs::symlink_metadata(&d).unwrap();
        let rel = d.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let mut what = format!(
            "mode {:o} ids {}:{} mtime {}.{:09} links {}",
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.nlink()
        );
        let t = meta.file_type();
        if t.is_symlink() {
            what += &format!(" -> {}", fs::read_link(&d).unwrap().display());
        } else if t.is_file() {
            let body = fs::read(&d).unwrap();
            what += &format!(" sha256 {}", fsutil::hex(&Sha256::digest(&body)));
            what += &format!(" holes {}", meta.blocks() * 512 < meta.len());
            if let Some(v) = get_xattr(&d) {
                what += &format!(" xattr {}", String::from_utf8_lossy(&v));
            }
        } else if t.is_dir() {
            for e in fs::read_dir(&d).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        m.insert(rel, what);
    }
    m
}

/// A cache in a new folder holding `odd_tree` (at `root` there) under
/// `key(1)`, said to install `debian`.
fn kept(debian: &[LockedDeb]) -> (tempfile::TempDir, BootstrapCache, Key) {
    let d = tempfile::tempdir().unwrap();
    odd_tree(&d.path().join("root"));
    let cache = cache_in(d.path(), 1 << 30);
    let k = key(1);
    cache.keep(&k, "test", &d.path().join("root"), debian);
    (d, cache, k)
}

#[test]
fn a_kept_tree_comes_back_exactly() {
    let (d, cache, k) = kept(&[hello()]);
    let root = d.path().join("root");
    assert!(cache.meta(&k.sha256).is_file() && cache.archive(&k.sha256).is_file());
    let again = d.path().join("again");
    let hit = cache.take(&k, &again).unwrap().expect("a hit");
    assert_eq!(hit.debian, [hello()]);
    assert_eq!(hit.key, k.sha256);
    let (want, got) = (describe(&root), describe(&again));
    assert!(want["usr/bin/tool"].contains("xattr biovm"), "{want:?}");
    assert!(want["var/log-lastlog"].contains("holes true"), "{want:?}");
    assert!(want["usr/bin/tool"].contains("mtime 1700000000.123456789"));
    for (path, w) in &want {
        assert_eq!(got.get(path), Some(w), "{path}");
    }
    assert_eq!(want.len(), got.len());
    // The host's /etc/passwd was archived as a link, never read.
    assert_eq!(
        fs::read_link(again.join("usr/bin/host-link")).unwrap(),
        Path::new("/etc/passwd")
    );
    // No key, no tree.
    let other = d.path().join("other");
    assert!(cache.take(&key(2), &other).unwrap().is_none());
    assert!(!other.exists());
}

#[test]
fn a_damaged_archive_is_dropped_and_the_build_bootstraps() {
    let (d, cache, k) = kept(&[hello()]);
    let archive = cache.archive(&k.sha256);
    let mut bytes = fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&archive, bytes).unwrap();
    let again = d.path().join("again");
    assert!(cache.take(&k, &again).unwrap().is_none());
    assert!(!again.exists(), "the half-unpacked tree is removed");
    assert!(
        !archive.exists() && !cache.meta(&k.sha256).exists(),
        "the entry is dropped"
    );
}

#[test]
fn an_entry_whose_tree_lacks_its_packages_is_not_used() {
    let mut other = hello();
    other.version = "2.10-4".into();
    let (d, cache, k) = kept(&[other]);
    let again = d.path().join("again");
    assert!(cache.take(&k, &again).unwrap().is_none());
    assert!(!again.exists());
}

#[test]
fn the_least_recently_used_entries_go_beyond_the_budget() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    fs::write(root.join("var/lib/dpkg/status"), STATUS).unwrap();
    // Incompressible, so each archive is about 1 MiB.
    let noise: Vec<u8> = (0..1u32 << 15)
        .flat_map(|i| Sha256::digest(i.to_le_bytes()))
        .collect();
    fs::write(root.join("noise"), noise).unwrap();
    let roomy = cache_in(d.path(), 1 << 30);
    for n in 1..=3 {
        roomy.keep(&key(n), "test", &root, &[hello()]);
        // Used in the order 1, 2, 3 (one second apart).
        let f = fs::File::options()
            .append(true)
            .open(roomy.meta(&key(n).sha256))
            .unwrap();
        f.set_modified(UNIX_EPOCH + Duration::from_secs(1_000_000 + u64::from(n)))
            .unwrap();
    }
    // Entry 1 is used again: now the most recent of the three.
    assert!(roomy.take(&key(1), &d.path().join("t1")).unwrap().is_some());
    // Room for two entries of about 1 MiB: a new one and the most
    // recently used other (1); 2 and 3 go.
    let tight = cache_in(d.path(), (5 << 20) / 2);
    tight.keep(&key(4), "test", &root, &[hello()]);
    let present = |n: u32| tight.meta(&key(n).sha256).exists();
    assert_eq!(
        (1..=4).map(present).collect::<Vec<_>>(),
        [true, false, false, true]
    );
    assert!(!tight.archive(&key(2).sha256).exists());
}

#[test]
fn the_key_changes_with_every_input_of_the_bootstrap() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let image = crate::config::load_image(&repo.join("images/minimal.toml"), &repo.join("recipes"))
        .unwrap();
    let pkgs = vec!["hello=2.10-3".to_string(), "sudo=1.9.13p3-1+deb12u1".into()];
    let debs = vec![hello()];
    let base = Key::of(&image, &pkgs, &debs, 1_700_000_000).unwrap();
    assert_eq!(
        base.sha256,
        Key::of(&image, &pkgs, &debs, 1_700_000_000).unwrap().sha256
    );
    for t in HOST_TOOLS {
        assert!(base.text.contains(&format!("{t}: {t}=")), "{}", base.text);
    }
    let mut keys = vec![base.sha256.clone()];
    keys.push(Key::of(&image, &pkgs, &debs, 1_700_000_001).unwrap().sha256);
    keys.push(
        Key::of(&image, &pkgs[..1], &debs, 1_700_000_000)
            .unwrap()
            .sha256,
    );
    // One locked hash changed (a tampered lock): another key, so the
    // bootstrap's own check refuses it before anything is unpacked.
    let mut tampered = hello();
    tampered.sha256 = "00".repeat(32);
    keys.push(
        Key::of(&image, &pkgs, &[tampered], 1_700_000_000)
            .unwrap()
            .sha256,
    );
    let mut other = image.clone();
    other.base.mirror = Some("http://127.0.0.1:9/debian".into());
    keys.push(Key::of(&other, &pkgs, &debs, 1_700_000_000).unwrap().sha256);
    let mut other = image.clone();
    other.base.keyring = Some(b"a keyring".to_vec());
    keys.push(Key::of(&other, &pkgs, &debs, 1_700_000_000).unwrap().sha256);
    let mut other = image.clone();
    other.base.suite = "trixie".into();
    keys.push(Key::of(&other, &pkgs, &debs, 1_700_000_000).unwrap().sha256);
    let distinct: std::collections::BTreeSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len(), "{keys:?}");
}

#[test]
fn a_budget_of_zero_turns_the_cache_off_and_a_bad_one_is_named() {
    // (One test: the variable is the process's.)
    let d = tempfile::tempdir().unwrap();
    std::env::set_var("BIOVM_BOOTSTRAP_CACHE_GIB", "0");
    assert!(BootstrapCache::new(d.path()).unwrap().is_none());
    std::env::set_var("BIOVM_BOOTSTRAP_CACHE_GIB", "lots");
    let e = BootstrapCache::new(d.path()).err().unwrap();
    assert!(
        format!("{e:#}").contains("BIOVM_BOOTSTRAP_CACHE_GIB=lots"),
        "{e:#}"
    );
    std::env::set_var("BIOVM_BOOTSTRAP_CACHE_GIB", "3");
    assert_eq!(
        BootstrapCache::new(d.path()).unwrap().unwrap().budget,
        3 << 30
    );
    std::env::remove_var("BIOVM_BOOTSTRAP_CACHE_GIB");
}
