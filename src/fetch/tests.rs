//! Tests of the downloads: local HTTP servers, redirects, retries, hashes.

use super::*;
use std::io::BufRead;
use std::net::TcpListener;

/// A tiny HTTP server on 127.0.0.1 serving `body` at every path; it
/// answers the first `fail_first` requests with 503.
fn serve(body: Vec<u8>, fail_first: usize) -> (String, std::thread::JoinHandle<usize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/tool.tar.gz", l.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        let mut served = 0;
        for (i, s) in l.incoming().enumerate() {
            let mut s = s.unwrap();
            let mut r = std::io::BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            if i < fail_first {
                s.write_all(b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .unwrap();
                continue;
            }
            write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            )
            .unwrap();
            s.write_all(&body).unwrap();
            served += 1;
            break;
        }
        served
    });
    (url, h)
}

fn dl(url: &str, sha: &str) -> Download {
    Download {
        url: url.into(),
        sha256: sha.into(),
        dest: "/opt/tool/bin/tool".into(),
        unpack: false,
    }
}

#[test]
fn downloads_verifies_caches_and_installs() {
    let body = b"#!/bin/sh\necho tool 1.0\n".to_vec();
    let sha = fsutil::hex(&Sha256::digest(&body));
    let (url, server) = serve(body.clone(), 1);
    let cache = tempfile::tempdir().unwrap();
    let d = dl(&url, &sha);
    let p = fetch("tool", &d, cache.path(), &[], false).unwrap();
    assert_eq!(fs::read(&p).unwrap(), body);
    assert_eq!(server.join().unwrap(), 1, "one 503, then one good answer");
    // Cached: no server needed the second time.
    assert_eq!(fetch("tool", &d, cache.path(), &[], false).unwrap(), p);
    let root = tempfile::tempdir().unwrap();
    install(&p, &d, root.path()).unwrap();
    assert_eq!(
        fs::read(root.path().join("opt/tool/bin/tool")).unwrap(),
        body
    );
}

#[test]
fn a_wrong_hash_is_refused_and_nothing_is_kept() {
    let (url, server) = serve(b"tampered".to_vec(), 0);
    let cache = tempfile::tempdir().unwrap();
    let want = "0".repeat(64);
    let e = fetch("tool", &dl(&url, &want), cache.path(), &[], false).unwrap_err();
    server.join().unwrap();
    let m = e.downcast_ref::<HashMismatch>().expect("typed error");
    assert_eq!(m.what, "recipe tool");
    assert_eq!(m.actual, fsutil::hex(&Sha256::digest(b"tampered")));
    let msg = e.to_string();
    assert!(
        msg.contains(&want) && msg.contains(&m.actual) && msg.starts_with("recipe tool: "),
        "{msg}"
    );
    assert_eq!(
        fs::read_dir(cache.path().join("downloads"))
            .unwrap()
            .count(),
        0,
        "nothing kept"
    );
}

#[test]
fn a_cached_file_changed_later_is_refused() {
    let body = b"good".to_vec();
    let sha = fsutil::hex(&Sha256::digest(&body));
    let (url, server) = serve(body, 0);
    let cache = tempfile::tempdir().unwrap();
    let p = fetch("tool", &dl(&url, &sha), cache.path(), &[], false).unwrap();
    server.join().unwrap();
    fs::write(&p, b"evil").unwrap();
    let e = fetch("tool", &dl(&url, &sha), cache.path(), &[], false).unwrap_err();
    assert!(e.downcast_ref::<HashMismatch>().is_some(), "{e:#}");
}

/// One tar member, its name written as is (the tar crate would refuse
/// the bad names these tests need).
enum Member<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
}

fn tar_of(members: &[Member]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        let mut h = tar::Header::new_ustar();
        let (name, kind, link, body): (&str, _, Option<&str>, &[u8]) = match m {
            Member::File(n, body) => (n, tar::EntryType::Regular, None, body),
            Member::Dir(n) => (n, tar::EntryType::Directory, None, b""),
            Member::Symlink(n, t) => (n, tar::EntryType::Symlink, Some(t), b""),
            Member::HardLink(n, t) => (n, tar::EntryType::Link, Some(t), b""),
        };
        let raw = &mut h.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(t) = link {
            h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(0o4775);
        h.set_size(body.len() as u64);
        h.set_cksum();
        b.append(&h, body).unwrap();
    }
    b.into_inner().unwrap()
}

/// Unpack `members` (as a .tar.xz when `xz`) into /opt/tool of a new
/// tree that has `etc/planted -> <outside>`; the tree, the outside
/// folder (which must stay empty) and the result.
fn unpack_into_tree(
    members: &[Member],
    xz: bool,
) -> (tempfile::TempDir, PathBuf, PathBuf, Result<()>) {
    let d = tempfile::tempdir().unwrap();
    let (root, outside) = (d.path().join("root"), d.path().join("outside"));
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("etc/planted")).unwrap();
    let mut archive = d.path().join("a.tar");
    fs::write(&archive, tar_of(members)).unwrap();
    if xz {
        Cmd::new("xz").arg(&archive).run().unwrap();
        archive = d.path().join("a.tar.xz");
    }
    let dl = Download {
        url: format!(
            "https://example.org/{}",
            archive.file_name().unwrap().to_string_lossy()
        ),
        sha256: "0".repeat(64),
        dest: "/opt/tool".into(),
        unpack: true,
    };
    let r = install(&archive, &dl, &root);
    (d, root, outside, r)
}

#[test]
fn archives_unpack_files_folders_and_links_inside_their_folder() {
    for xz in [false, true] {
        let (_d, root, outside, r) = unpack_into_tree(
            &[
                Member::Dir("./"),
                Member::Dir("tool-1.0/bin/"),
                Member::File("tool-1.0/bin/tool", b"#!/bin/sh\n"),
                Member::Symlink("tool-1.0/latest", "bin/tool"),
                Member::Symlink("tool-1.0/bin/up", "../bin"),
                Member::HardLink("tool-1.0/bin/tool2", "tool-1.0/bin/tool"),
            ],
            xz,
        );
        r.unwrap();
        let t = root.join("opt/tool/tool-1.0");
        assert_eq!(fs::read(t.join("bin/tool")).unwrap(), b"#!/bin/sh\n");
        assert_eq!(fs::read(t.join("bin/tool2")).unwrap(), b"#!/bin/sh\n");
        assert_eq!(
            fs::read_link(t.join("latest")).unwrap(),
            Path::new("bin/tool")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(t.join("bin/tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "no set-id bit, no group write");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }
}

#[test]
fn archives_that_reach_out_are_refused_and_write_nothing_outside() {
    let cases: Vec<(Vec<Member>, &str)> = vec![
        (
            vec![Member::File("/etc/evil", b"x")],
            "member /etc/evil has an absolute name",
        ),
        (
            vec![Member::File("a/../../../evil", b"x")],
            "member a/../../../evil climbs out with `..`",
        ),
        (
            vec![
                Member::Symlink("link", "/etc"),
                Member::File("link/evil", b"x"),
            ],
            "member link is a link to /etc, outside the folder",
        ),
        (
            vec![
                Member::Symlink("a/link", "../../etc"),
                Member::File("a/link/evil", b"x"),
            ],
            "member a/link is a link to ../../etc, outside the folder",
        ),
        (
            vec![Member::HardLink("h", "../../../etc/shadow")],
            "member h is a hard link out of the archive",
        ),
    ];
    for (members, want) in cases {
        let (_d, root, outside, r) = unpack_into_tree(&members, false);
        let e = format!("{:#}", r.unwrap_err());
        assert!(
            e.starts_with("unpacking https://example.org/a.tar into /opt/tool failed"),
            "{e}"
        );
        assert!(e.contains(want), "{want}: {e}");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "{want}");
        assert!(!root.join("etc/evil").exists() && !root.join("evil").exists());
    }
    // A download's `dest` through a link planted in the tree stays in the tree.
    let d = tempfile::tempdir().unwrap();
    let (root, outside) = (d.path().join("root"), d.path().join("outside"));
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(outside.join("marker"), root.join("usr/bin/tool")).unwrap();
    let file = d.path().join("tool");
    fs::write(&file, b"tool").unwrap();
    let mut dl = dl("https://example.org/tool", &"0".repeat(64));
    dl.dest = "/usr/bin/tool".into();
    install(&file, &dl, &root).unwrap();
    assert_eq!(fs::read(root.join("usr/bin/tool")).unwrap(), b"tool");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn unknown_archives_are_refused() {
    let d = Download {
        url: "http://x/a.rar".into(),
        sha256: "0".repeat(64),
        dest: "/opt/a".into(),
        unpack: true,
    };
    let root = tempfile::tempdir().unwrap();
    let e = install(Path::new("/dev/null"), &d, root.path()).unwrap_err();
    assert!(e.to_string().contains("cannot unpack"), "{e}");
}
