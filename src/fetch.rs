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
use crate::pool::Pool;

const ATTEMPTS: u32 = 3;

/// A download whose content is not what was pinned (by a recipe, or by
/// the signed index a source file is listed in).
#[derive(Debug, thiserror::Error)]
#[error("{what}: {url} has sha256 {actual}, not the expected {expected}")]
pub struct HashMismatch {
    /// What the file is for, e.g. `recipe bwa`.
    pub what: String,
    pub url: String,
    pub expected: String,
    pub actual: String,
}

pub(crate) fn client() -> Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(20))
        .timeout(Duration::from_secs(600))
        .user_agent(concat!("biovm/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// The cached, verified file for `d`: from one of `pools` when one has it,
/// else from the cache, else downloaded (unless `offline`).
pub fn fetch(
    recipe: &str,
    d: &Download,
    cache: &Path,
    pools: &[Pool],
    offline: bool,
) -> Result<PathBuf> {
    if let Some((_, p)) = crate::pool::find(pools, &d.sha256) {
        return Ok(p);
    }
    let dir = cache.join("downloads");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(&d.sha256);
    if path.exists() {
        let actual = fsutil::sha256_file(&path)?;
        if actual != d.sha256 {
            return Err(HashMismatch {
                what: format!("recipe {recipe}"),
                url: format!("{} (cached as {})", d.url, path.display()),
                expected: d.sha256.clone(),
                actual,
            }
            .into());
        }
        return Ok(path);
    }
    if offline {
        bail!(
            "recipe {recipe}: {} (sha256 {}) is not in the vendor folder; run `biovm vendor` again",
            d.url,
            d.sha256
        );
    }
    download_verified(&format!("recipe {recipe}"), &d.url, &d.sha256, &path)?;
    Ok(path)
}

/// Download `url` into `path`, retrying transient failures, keeping it
/// only when its content has `sha256` (the name appears when the file is
/// whole and right); `what` names it in messages, e.g. `recipe bwa`.
pub(crate) fn download_verified(what: &str, url: &str, sha256: &str, path: &Path) -> Result<()> {
    let client = client()?;
    let mut last = None;
    for attempt in 1..=ATTEMPTS {
        match download_once(&client, what, url, sha256, path) {
            Ok(()) => return Ok(()),
            Err(e) if e.downcast_ref::<HashMismatch>().is_some() => return Err(e),
            Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                log::warn!("{what}: {e:#}; retrying");
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
    what: &str,
    url: &str,
    sha256: &str,
    path: &Path,
) -> Result<()> {
    log::info!("{what}: downloading {url}");
    let mut resp = client
        .get(url)
        .send()
        .and_then(|r| r.error_for_status())
        .map_err(|e| anyhow::Error::new(e).context(format!("{what}: cannot download {url}")))?;
    let (tmp, mut f) = AtomicFile::create(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = resp
            .read(&mut buf)
            .with_context(|| format!("{what}: reading {url} failed"))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        f.write_all(&buf[..n])?;
    }
    drop(f);
    let actual = fsutil::hex(&h.finalize());
    if actual != sha256 {
        // `tmp` is dropped uncommitted: nothing is kept.
        return Err(HashMismatch {
            what: what.into(),
            url: url.into(),
            expected: sha256.into(),
            actual,
        }
        .into());
    }
    tmp.commit()
}

/// Fetch every download of `recipes` (before anything is written to the image).
pub fn fetch_all(
    recipes: &[Recipe],
    cache: &Path,
    pools: &[Pool],
    offline: bool,
) -> Result<Vec<(PathBuf, Download)>> {
    let mut v = Vec::new();
    for r in recipes {
        for d in &r.install.downloads {
            v.push((fetch(&r.name, d, cache, pools, offline)?, d.clone()));
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
mod tests;
