//! The data stage of a build: each reference data set the image selects
//! (see `config::data`) gets its bytes (a file of a Debian package the
//! image installs, or a download tried mirror by mirror, kept in the cache
//! by sha256), checked against the size and sha256 its recipe gives,
//! unpacked into `/data/genomes/<build>` and checked again, then the
//! indexes its recipe names are built there by the image's own tools,
//! offline. Every file's digest is recorded (the lock pins them, and the
//! image's data checks verify them in the booted image).

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cmd::Cmd;
use crate::config::{DataOrigin, DataSet, Image, Unpack};
use crate::confined::Tree;
use crate::fsutil;
use crate::manifest::{Tool, ToolCheck};
use crate::pool::Pool;

/// One file of a data set as built: its path from the image's root, size
/// and sha256.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DataFileDigest {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// A data set as it went into an image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BuiltData {
    pub name: String,
    pub summary: String,
    pub organism: String,
    pub build: String,
    pub version: String,
    pub license: String,
    pub redistributable: bool,
    /// Where the bytes came from: the first URL, or
    /// `debian:<package>:<path>`.
    pub source: String,
    /// The size and sha256 of those bytes (before unpacking).
    pub source_size: u64,
    pub source_sha256: String,
    /// The content first, then every index output, in recipe order.
    pub files: Vec<DataFileDigest>,
}

impl BuiltData {
    /// Its folder in the image (`/data/genomes/<build>`), from its content's path.
    pub fn folder(&self) -> String {
        self.files
            .first()
            .and_then(|f| f.path.rsplit_once('/'))
            .map(|(dir, _)| dir.to_string())
            .unwrap_or_default()
    }
}

/// A download that was not the bytes its recipe names: too long, too
/// short, or another digest.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("data set {name}: {url} has sha256 {actual}, not the expected {expected}")]
    Hash {
        name: String,
        url: String,
        expected: String,
        actual: String,
    },
    #[error("data set {name}: {url} serves {actual} bytes, not the expected size of {expected}")]
    Size {
        name: String,
        url: String,
        expected: u64,
        actual: u64,
    },
}

/// Seconds a download may go without a byte before the mirror counts as
/// stalled (`BIOVM_STALL_SECS` overrides).
fn stall_timeout() -> Duration {
    let secs = std::env::var("BIOVM_STALL_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// Tries per mirror; each one after the first resumes where the last stopped.
const ATTEMPTS: u32 = 3;

/// The verified file of every URL-sourced data set of `image` (None for a
/// data set from a Debian package), before anything is written to the image.
pub fn fetch_all(
    image: &Image,
    cache: &Path,
    pools: &[Pool],
    offline: bool,
) -> Result<Vec<Option<PathBuf>>> {
    image
        .data
        .iter()
        .map(|d| match &d.source.from {
            DataOrigin::Urls(urls) => fetch(d, urls, cache, pools, offline).map(Some),
            DataOrigin::Debian { .. } => Ok(None),
        })
        .collect()
}

/// The cached file holding the bytes of `d`'s source, downloaded from the
/// first of `urls` that serves them whole. A mirror that cannot be reached,
/// answers with an error or stalls is passed over for the next; a cut
/// transfer is resumed where it stopped; bytes with another digest, or
/// more or fewer bytes than the recipe's size, are refused and never kept.
pub fn fetch(
    d: &DataSet,
    urls: &[String],
    cache: &Path,
    pools: &[Pool],
    offline: bool,
) -> Result<PathBuf> {
    let src = &d.source;
    if let Some((_, p)) = crate::pool::find(pools, &src.sha256) {
        return Ok(p);
    }
    let dir = cache.join("downloads");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(&src.sha256);
    if path.exists() {
        let actual = fsutil::sha256_file(&path)?;
        if actual == src.sha256 {
            return Ok(path);
        }
        fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    if offline {
        bail!(
            "data set {}: {} (sha256 {}) is not in the vendor folder; run `biovm vendor` again",
            d.name,
            urls.join(" "),
            src.sha256
        );
    }
    let partial = dir.join(format!("{}.partial", src.sha256));
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(20))
        .timeout(stall_timeout())
        .user_agent(concat!("biovm/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let mut failures = Vec::new();
    for url in urls {
        for attempt in 1..=ATTEMPTS {
            match transfer(&client, d, url, &partial) {
                Ok(()) => {
                    let actual = fsutil::sha256_file(&partial)?;
                    if actual != src.sha256 {
                        let _ = fs::remove_file(&partial);
                        return Err(Refused::Hash {
                            name: d.name.clone(),
                            url: url.clone(),
                            expected: src.sha256.clone(),
                            actual,
                        }
                        .into());
                    }
                    fs::rename(&partial, &path).with_context(|| {
                        format!("cannot rename {} to {}", partial.display(), path.display())
                    })?;
                    return Ok(path);
                }
                Err(e) if e.downcast_ref::<Refused>().is_some() => {
                    // Another length: these bytes are not the data set's.
                    let _ = fs::remove_file(&partial);
                    log::warn!("{e:#}");
                    failures.push(format!("{e:#}"));
                    break;
                }
                Err(e) => {
                    log::warn!(
                        "data set {}: {url}: {e:#} (try {attempt} of {ATTEMPTS})",
                        d.name
                    );
                    if attempt == ATTEMPTS {
                        failures.push(format!("{url}: {e:#}"));
                    }
                }
            }
        }
    }
    let have = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    bail!(
        "data set {}: no mirror served its {} bytes (sha256 {}){}:\n  {}",
        d.name,
        src.size,
        src.sha256,
        if have > 0 {
            format!("; {have} bytes are kept to resume from")
        } else {
            String::new()
        },
        failures.join("\n  ")
    )
}

/// Bring `partial` to the source's full size from `url`, resuming from
/// what it holds when the server takes a range.
fn transfer(
    client: &reqwest::blocking::Client,
    d: &DataSet,
    url: &str,
    partial: &Path,
) -> Result<()> {
    let size = d.source.size;
    let mut have = fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
    if have > size {
        fs::remove_file(partial)?;
        have = 0;
    }
    if have == size {
        // Whole already (a run ended before its check): the caller checks it.
        return Ok(());
    }
    let mut req = client.get(url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    log::info!("data set {}: downloading {url} from byte {have}", d.name);
    let mut resp = req
        .send()
        .and_then(|r| r.error_for_status())
        .map_err(|e| anyhow::Error::new(e).context("cannot download"))?;
    let resumed = resp.status() == reqwest::StatusCode::PARTIAL_CONTENT;
    if !resumed {
        have = 0;
    }
    // The whole length the server says it has, when it says.
    let total = if resumed {
        resp.headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit('/').next())
            .and_then(|n| n.parse::<u64>().ok())
    } else {
        resp.content_length()
    };
    let refuse = |actual| Refused::Size {
        name: d.name.clone(),
        url: url.to_string(),
        expected: size,
        actual,
    };
    if let Some(t) = total.filter(|t| *t != size) {
        return Err(refuse(t).into());
    }
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(partial)
        .with_context(|| format!("cannot open {}", partial.display()))?;
    f.set_len(have)?;
    f.seek(SeekFrom::Start(have))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut got = have;
    loop {
        let n = match resp.read(&mut buf) {
            Ok(n) => n,
            Err(e) => bail!("the transfer broke off after {got} of {size} bytes: {e}"),
        };
        if n == 0 {
            break;
        }
        got += n as u64;
        if got > size {
            return Err(refuse(got).into());
        }
        f.write_all(&buf[..n])?;
    }
    f.sync_all()?;
    if got < size {
        bail!("the transfer ended after {got} of {size} bytes");
    }
    Ok(())
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Put every data set of `image` into the tree at `root` (its tools
/// already installed), with `fetched` from [`fetch_all`]. With `locked`
/// (the lock's record of each data set), every file must have the digest
/// the lock pins.
pub fn install(
    image: &Image,
    fetched: &[Option<PathBuf>],
    locked: Option<&[BuiltData]>,
    root: &Path,
) -> Result<Vec<BuiltData>> {
    let tree = Tree::open(root)?;
    let mut out = Vec::new();
    for (d, file) in image.data.iter().zip(fetched) {
        let built = install_one(d, file.as_deref(), &tree, root).with_context(|| {
            format!(
                "data set {}: building /{} failed",
                d.name,
                d.folder().display()
            )
        })?;
        if let Some(l) = locked.and_then(|l| l.iter().find(|l| l.name == d.name)) {
            same_as_locked(&built, l)?;
        }
        out.push(built);
    }
    Ok(out)
}

/// Every file of `built` has the size and digest `locked` gives it.
fn same_as_locked(built: &BuiltData, locked: &BuiltData) -> Result<()> {
    for f in &built.files {
        match locked.files.iter().find(|l| l.path == f.path) {
            Some(l) if l.sha256 == f.sha256 && l.size == f.size => {}
            Some(l) => bail!(
                "data set {}: {} was built with sha256 {} ({} bytes), but the lock pins sha256 {} ({} bytes); \
                 the tool that builds it changed, or does not build the same bytes twice",
                built.name,
                f.path,
                f.sha256,
                f.size,
                l.sha256,
                l.size
            ),
            None => bail!(
                "data set {}: {} is not in the lock; run `biovm lock --update`",
                built.name,
                f.path
            ),
        }
    }
    Ok(())
}

fn install_one(d: &DataSet, fetched: Option<&Path>, tree: &Tree, root: &Path) -> Result<BuiltData> {
    let folder = d.folder();
    tree.create_dir_all(&folder)?;
    let data = tree.subtree(&folder)?;
    // The source's bytes: checked against the recipe before unpacking.
    let (source, raw): (String, Box<dyn Read>) = match (&d.source.from, fetched) {
        (DataOrigin::Urls(urls), Some(p)) => (
            urls.first().cloned().unwrap_or_default(),
            Box::new(fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?),
        ),
        (DataOrigin::Debian { package, path }, _) => {
            let rel = Path::new(path.trim_start_matches('/'));
            let f = tree
                .open_file(rel)
                .with_context(|| format!("package {package} did not install {path}"))?;
            (format!("debian:{package}:{path}"), Box::new(f))
        }
        (DataOrigin::Urls(_), None) => bail!("its download was not fetched"),
    };
    let mut checked = Hashing {
        inner: raw,
        hash: Sha256::new(),
        bytes: 0,
    };
    let file = Path::new(&d.file);
    let (content_sha, content_bytes) = {
        let mut content = Hashing {
            inner: match d.source.unpack {
                Unpack::None => Box::new(&mut checked) as Box<dyn Read + '_>,
                Unpack::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut checked)),
            },
            hash: Sha256::new(),
            bytes: 0,
        };
        data.write_from(file, &mut content, 0o644)?;
        (fsutil::hex(&content.hash.finalize()), content.bytes)
    };
    // Whatever the unpacker left unread still belongs to the source.
    std::io::copy(&mut checked, &mut std::io::sink())?;
    let source_sha = fsutil::hex(&checked.hash.finalize());
    let wrong = if source_sha != d.source.sha256 {
        Some(format!(
            "{source} has sha256 {source_sha}, not the expected {}",
            d.source.sha256
        ))
    } else if checked.bytes != d.source.size {
        Some(format!(
            "{source} has {} bytes, not the expected size of {}",
            checked.bytes, d.source.size
        ))
    } else if content_sha != d.sha256 {
        Some(format!(
            "the unpacked {} has sha256 {content_sha}, not the expected {}",
            d.file, d.sha256
        ))
    } else {
        None
    };
    if let Some(w) = wrong {
        data.remove_file(file)?;
        bail!(w);
    }
    let show = |name: &str| format!("/{}/{name}", folder.display());
    let mut files = vec![DataFileDigest {
        path: show(&d.file),
        size: content_bytes,
        sha256: content_sha,
    }];
    for i in &d.indexes {
        build_index(tree, root, &folder, &i.command)
            .with_context(|| format!("index {} (`{}`) failed", i.name, i.command))?;
        for o in &i.outputs {
            let digest = digest_in(&data, Path::new(o))
                .with_context(|| format!("index {} did not make its output {o}", i.name))?;
            files.push(DataFileDigest {
                path: show(o),
                size: digest.0,
                sha256: digest.1,
            });
        }
    }
    // For people: `sha256sum -c SHA256SUMS` in the folder.
    let sums: String = files
        .iter()
        .map(|f| {
            let name = f.path.rsplit('/').next().unwrap_or_default();
            format!("{}  {name}\n", f.sha256)
        })
        .collect();
    data.write(Path::new("SHA256SUMS"), sums.as_bytes(), 0o644)?;
    Ok(BuiltData {
        name: d.name.clone(),
        summary: d.summary.clone(),
        organism: d.organism.clone(),
        build: d.build.clone(),
        version: d.version.clone(),
        license: d.license.clone(),
        redistributable: d.redistributable,
        source,
        source_size: d.source.size,
        source_sha256: d.source.sha256.clone(),
        files,
    })
}

/// The user and group an index's command runs as: `nobody`, who can
/// write only the data set's folder while it runs (as root, a command in
/// a chroot could climb out of it).
const INDEX_ID: u32 = 65534;

/// Run an index's command in the data set's folder inside the image, as
/// `nobody` and with no network (the build of an index is offline by
/// definition); then give every file there back to root, read-only for
/// others, and refuse anything that is not a regular file.
fn build_index(tree: &Tree, root: &Path, folder: &Path, command: &str) -> Result<()> {
    tree.set_owner(folder, INDEX_ID, INDEX_ID)?;
    let ran = Cmd::isolated("unshare")
        .args(["--net", "chroot"])
        .arg(format!("--userspec={INDEX_ID}:{INDEX_ID}"))
        .arg(root)
        .args(["/bin/sh", "-ec"])
        .arg(format!("cd /{} && {command}", folder.display()))
        .env("HOME", format!("/{}", folder.display()))
        .env("LC_ALL", "C")
        .run();
    tree.set_owner(folder, 0, 0)?;
    for (name, kind) in tree.read_dir(folder)? {
        let rel = folder.join(&name);
        if !kind.is_file() {
            bail!(
                "it left {}, which is not a regular file",
                Path::new("/").join(&rel).display()
            );
        }
        tree.set_owner(&rel, 0, 0)?;
        tree.set_mode(&rel, 0o644)?;
    }
    ran?;
    Ok(())
}

/// Size and sha256 of the regular, non-empty file `rel` of `tree`.
fn digest_in(tree: &Tree, rel: &Path) -> Result<(u64, String)> {
    let f = tree.open_file(rel)?;
    let meta = f.metadata()?;
    if !meta.is_file() || meta.len() == 0 {
        bail!("{} is missing, empty or not a file", rel.display());
    }
    let mut h = Hashing {
        inner: f,
        hash: Sha256::new(),
        bytes: 0,
    };
    std::io::copy(&mut h, &mut std::io::sink())?;
    Ok((h.bytes, fsutil::hex(&h.hash.finalize())))
}

/// The category of data checks in reports.
pub const CATEGORY: &str = "data";

/// The checks of the data in a built image: for each data set, one that
/// every file has the digest it was built with (`data/<name>`), then the
/// data set's own tests (`data/<name>/<test>`), such as mapping reads to
/// the genome with the index it ships.
pub fn checks(image: &Image, built: &[BuiltData]) -> Result<Vec<Tool>> {
    let mut v = Vec::new();
    for b in built {
        // On a data disk, a boot's checks may start before the disk is
        // mounted (the check agent starts early, the mount is `nofail`):
        // each check first waits up to 60 s for the data set's sums.
        let wait = if image.data_disk {
            format!(
                "i=0; while [ ! -e {}/SHA256SUMS ] && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done; ",
                b.folder()
            )
        } else {
            String::new()
        };
        let list: String = b
            .files
            .iter()
            .map(|f| format!("{}  {}\n", f.sha256, f.path))
            .collect();
        v.push(Tool {
            name: format!("{CATEGORY}/{}", b.name),
            category: CATEGORY.into(),
            check: ToolCheck {
                command: format!(
                    "{wait}sha256sum --check --strict --quiet <<'EOF' && echo \"{} files verified\"\n{list}EOF",
                    b.files.len()
                ),
                expect: format!("^{} files verified$", b.files.len()),
                status: 0,
                timeout: 600,
                data: vec![],
            },
            source: None,
        });
        let Some(d) = image.data.iter().find(|d| d.name == b.name) else {
            continue;
        };
        let dir = d.source_file.parent().unwrap_or(Path::new("."));
        let owner = format!("{CATEGORY}/{}", d.name);
        for t in &d.tests {
            let mut test = Tool::from_test(&owner, CATEGORY, dir, t)
                .with_context(|| format!("data set {}, test {}", d.name, t.name))?;
            test.check.command.insert_str(0, &wait);
            v.push(test);
        }
    }
    Ok(v)
}

pub mod disk;

#[cfg(test)]
mod tests;
