//! Downloads named by recipes: fetched over HTTP(S) into a cache keyed by
//! their sha256, checked against the recipe's sha256 every time they are
//! used (a file changed in the cache is refused like a bad download), then
//! copied or unpacked into the image.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::cmd::Cmd;
use crate::config::{Download, Recipe};
use crate::confined::Tree;
use crate::fsutil::{self, AtomicFile};

const ATTEMPTS: u32 = 3;

/// A download whose content is not what the recipe pinned.
#[derive(Debug, thiserror::Error)]
#[error("recipe {recipe}: {url} has sha256 {actual}, but the recipe expects {expected}")]
pub struct HashMismatch {
    pub recipe: String,
    pub url: String,
    pub expected: String,
    pub actual: String,
}

fn client() -> Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(20))
        .timeout(Duration::from_secs(600))
        .user_agent(concat!("biovm/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// The cached, verified file for `d`, downloading it if needed.
pub fn fetch(recipe: &str, d: &Download, cache: &Path) -> Result<PathBuf> {
    let dir = cache.join("downloads");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(&d.sha256);
    if path.exists() {
        let actual = fsutil::sha256_file(&path)?;
        if actual != d.sha256 {
            return Err(HashMismatch {
                recipe: recipe.into(),
                url: format!("{} (cached as {})", d.url, path.display()),
                expected: d.sha256.clone(),
                actual,
            }
            .into());
        }
        return Ok(path);
    }
    let client = client()?;
    let mut last = None;
    for attempt in 1..=ATTEMPTS {
        match download_once(&client, recipe, d, &path) {
            Ok(()) => return Ok(path),
            Err(e) if e.downcast_ref::<HashMismatch>().is_some() => return Err(e),
            Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                log::warn!("recipe {recipe}: {e:#}; retrying");
                std::thread::sleep(Duration::from_secs(u64::from(attempt)));
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("at least one attempt"))
}

fn retryable(e: &anyhow::Error) -> bool {
    match e.downcast_ref::<reqwest::Error>() {
        Some(r) => {
            r.is_timeout() || r.is_connect() || r.status().is_some_and(|s| s.is_server_error())
        }
        None => false,
    }
}

fn download_once(
    client: &reqwest::blocking::Client,
    recipe: &str,
    d: &Download,
    path: &Path,
) -> Result<()> {
    log::info!("recipe {recipe}: downloading {}", d.url);
    let mut resp = client
        .get(&d.url)
        .send()
        .and_then(|r| r.error_for_status())
        .map_err(|e| {
            anyhow::Error::new(e).context(format!("recipe {recipe}: cannot download {}", d.url))
        })?;
    let (tmp, mut f) = AtomicFile::create(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = resp
            .read(&mut buf)
            .with_context(|| format!("recipe {recipe}: reading {} failed", d.url))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        f.write_all(&buf[..n])?;
    }
    drop(f);
    let actual = fsutil::hex(&h.finalize());
    if actual != d.sha256 {
        // `tmp` is dropped uncommitted: nothing is kept.
        return Err(HashMismatch {
            recipe: recipe.into(),
            url: d.url.clone(),
            expected: d.sha256.clone(),
            actual,
        }
        .into());
    }
    tmp.commit()
}

/// Fetch every download of `recipes` (before anything is written to the image).
pub fn fetch_all(recipes: &[Recipe], cache: &Path) -> Result<Vec<(PathBuf, Download)>> {
    let mut v = Vec::new();
    for r in recipes {
        for d in &r.install.downloads {
            v.push((fetch(&r.name, d, cache)?, d.clone()));
        }
    }
    Ok(v)
}

/// How a download's archive is compressed, from the end of its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

/// The archive names biovm unpacks, and how each is compressed.
const ARCHIVES: &[(&str, Compression)] = &[
    (".tar", Compression::None),
    (".tar.gz", Compression::Gzip),
    (".tgz", Compression::Gzip),
    (".tar.bz2", Compression::Bzip2),
    (".tbz2", Compression::Bzip2),
    (".tar.xz", Compression::Xz),
    (".txz", Compression::Xz),
    (".tar.zst", Compression::Zstd),
];

/// Put a fetched file into the tree at `root`: copied to `dest` (mode 0755),
/// or, with `unpack`, a tar archive unpacked into the folder `dest`. Every
/// write is confined to the tree (see `confined`), and an archive's members
/// to `dest`: absolute names, `..` and links leading out of `dest` are
/// refused, and nothing is written through a link.
pub fn install(file: &Path, d: &Download, root: &Path) -> Result<()> {
    let tree = Tree::open(root)?;
    let dest = Path::new(&d.dest);
    if !d.unpack {
        return tree
            .copy_in(file, dest, 0o755)
            .with_context(|| format!("cannot copy {} to {}", d.url, d.dest));
    }
    let u = d.url.to_ascii_lowercase();
    let Some((_, compression)) = ARCHIVES.iter().find(|(s, _)| u.ends_with(s)) else {
        let known: Vec<&str> = ARCHIVES.iter().map(|(s, _)| *s).collect();
        bail!(
            "{}: cannot unpack this kind of archive (known: {})",
            d.url,
            known.join(" ")
        );
    };
    let into = tree.subtree(dest)?;
    let unpacked = decompressed(file, *compression).and_then(|r| unpack(r, &into));
    unpacked.with_context(|| format!("unpacking {} into {} failed", d.url, d.dest))
}

/// The tar stream inside `file`. Compressions other than gzip go through
/// their own program into an unnamed temporary file beside `file` (gone
/// with the process, however it ends).
fn decompressed(file: &Path, c: Compression) -> Result<Box<dyn Read>> {
    let f = fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let program = match c {
        Compression::None => return Ok(Box::new(f)),
        Compression::Gzip => return Ok(Box::new(flate2::read::GzDecoder::new(f))),
        Compression::Bzip2 => "bzip2",
        Compression::Xz => "xz",
        Compression::Zstd => "zstd",
    };
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut out = tempfile::tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    Cmd::new(program)
        .args(["-d", "-c"])
        .arg(file)
        .run_to_file(out.try_clone()?)?;
    out.seek(SeekFrom::Start(0))?;
    Ok(Box::new(out))
}

/// A member's name as a path inside the destination: `./` and a trailing
/// `/` dropped; absolute names and `..` refused.
fn member_path(name: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                bail!("member {} has an absolute name", name.display())
            }
            Component::ParentDir => bail!("member {} climbs out with `..`", name.display()),
        }
    }
    Ok(out)
}

/// Refuse a symlink member `at` whose `target` leads out of the
/// destination: an absolute target, or one whose `..` climb above it.
fn check_link_target(at: &Path, target: &Path) -> Result<()> {
    let outside = || {
        anyhow::anyhow!(
            "member {} is a link to {}, outside the folder the archive is unpacked into",
            at.display(),
            target.display()
        )
    };
    if target.is_absolute() {
        return Err(outside());
    }
    // Depth below the destination of the folder holding the link.
    let mut depth = at.components().count().saturating_sub(1) as i64;
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => depth -= 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(outside()),
        }
        if depth < 0 {
            return Err(outside());
        }
    }
    Ok(())
}

/// Unpack the tar stream `r` into `into`, member by member, with biovm's
/// own writes (never an external tar): files owned by root with the
/// archive's permission bits less group/other write (as root's umask
/// would make them), no set-id bits.
fn unpack(r: Box<dyn Read>, into: &Tree) -> Result<()> {
    use tar::EntryType;
    let mut archive = tar::Archive::new(r);
    for entry in archive.entries().context("cannot read the archive")? {
        let mut e = entry.context("cannot read the archive")?;
        let name = e
            .path()
            .context("a member has an unreadable name")?
            .into_owned();
        let rel = member_path(&name)?;
        let kind = e.header().entry_type();
        let mode = e.header().mode().unwrap_or(0o644) & 0o755;
        match kind {
            EntryType::Directory => into.create_dir_all(&rel)?,
            EntryType::Regular | EntryType::Continuous => {
                if rel.as_os_str().is_empty() {
                    bail!("member {} is a file without a name", name.display());
                }
                into.write_from(&rel, &mut e, mode)?;
            }
            EntryType::Symlink => {
                let target = e
                    .link_name()?
                    .with_context(|| format!("member {} is a link to nothing", name.display()))?
                    .into_owned();
                check_link_target(&rel, &target)?;
                into.symlink(&target, &rel)?;
            }
            EntryType::Link => {
                let target = e
                    .link_name()?
                    .with_context(|| format!("member {} is a link to nothing", name.display()))?
                    .into_owned();
                let existing = member_path(&target).with_context(|| {
                    format!("member {} is a hard link out of the archive", name.display())
                })?;
                into.hard_link(&existing, &rel)?;
            }
            // Metadata for the members that follow, not members.
            EntryType::XGlobalHeader | EntryType::XHeader => {}
            other => bail!(
                "member {} is a {other:?} entry, which biovm does not unpack (only files, folders and links)",
                name.display()
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
                    s.write_all(
                        b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
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
        let p = fetch("tool", &d, cache.path()).unwrap();
        assert_eq!(fs::read(&p).unwrap(), body);
        assert_eq!(server.join().unwrap(), 1, "one 503, then one good answer");
        // Cached: no server needed the second time.
        assert_eq!(fetch("tool", &d, cache.path()).unwrap(), p);
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
        let e = fetch("tool", &dl(&url, &want), cache.path()).unwrap_err();
        server.join().unwrap();
        let m = e.downcast_ref::<HashMismatch>().expect("typed error");
        assert_eq!(m.recipe, "tool");
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
        let p = fetch("tool", &dl(&url, &sha), cache.path()).unwrap();
        server.join().unwrap();
        fs::write(&p, b"evil").unwrap();
        let e = fetch("tool", &dl(&url, &sha), cache.path()).unwrap_err();
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
}
