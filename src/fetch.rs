//! Downloads named by recipes: fetched over HTTP(S) into a cache keyed by
//! their sha256, checked against the recipe's sha256 every time they are
//! used (a file changed in the cache is refused like a bad download), then
//! copied or unpacked into the image.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::cmd::Cmd;
use crate::config::{Download, Recipe};
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

/// Put a fetched file into the tree at `root`: copied to `dest` (mode 0755),
/// or, with `unpack`, a tar archive unpacked into the folder `dest`.
pub fn install(file: &Path, d: &Download, root: &Path) -> Result<()> {
    let dest = root.join(d.dest.trim_start_matches('/'));
    if d.unpack {
        fs::create_dir_all(&dest)?;
        let u = d.url.to_ascii_lowercase();
        let known = [
            ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst",
        ];
        if !known.iter().any(|s| u.ends_with(s)) {
            bail!(
                "{}: cannot unpack this kind of archive (known: {})",
                d.url,
                known.join(" ")
            );
        }
        Cmd::new("tar")
            .args(["--no-same-owner", "--no-same-permissions", "-xf"])
            .arg(file)
            .arg("-C")
            .arg(&dest)
            .run()
            .with_context(|| format!("unpacking {} into {} failed", d.url, d.dest))?;
    } else {
        if let Some(p) = dest.parent() {
            fs::create_dir_all(p)?;
        }
        fs::copy(file, &dest).with_context(|| format!("cannot copy {} to {}", d.url, d.dest))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))?;
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
