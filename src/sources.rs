//! The sources behind a release (`biovm release --sources`): the Debian
//! source packages the image's locked binaries were built from, and the
//! PyPI source distributions of its locked wheels, as the GPL-family
//! licences of most of the catalogue ask of whoever distributes the
//! binaries.
//!
//! Debian: each locked .deb names its source package and version in its
//! control stanza (`Source: gcc-12 (12.2.0-14)`, or nothing when the
//! source has the binary's name and version), read from biovm's store or
//! from the mirror's index. The mirror's source indices (the `deb-src`
//! twin of every `deb` line of the image's sources, downloaded and
//! signature-checked by apt as a bootstrap's indices are) list each file
//! of a source version with its sha256. Each file is downloaded from the
//! archive whose index listed it, checked against that sha256 and kept in
//! the store; what the index said is kept too (`sources/debian/` in the
//! cache), so the sources of a lock can still be collected after the
//! mirror dropped the version, as its binaries can still be built.
//!
//! PyPI: for each locked wheel, the source distribution of the same
//! project and version on pip's package index (its JSON simple API, PEP
//! 691: file name, URL and sha256), checked and kept the same way. Nothing
//! in a source distribution is run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::cmd::Cmd;
use crate::config::Image;
use crate::formats::spdx::{pypi_name_version, pypi_normalize};
use crate::fsutil::{self, Scratch};
use crate::lock::{Lock, LockedDeb};
use crate::pool::Pool;

mod sbom;
pub(crate) use sbom::with_sources;

/// The release folder's subfolder the source files go to.
pub(crate) const DIR: &str = "sources";

/// Parallel downloads of source files.
const DOWNLOADS: usize = 4;

/// One file of a source package or a source distribution.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceFile {
    /// Its path in the release folder: `sources/debian/<name>` or
    /// `sources/pypi/<name>`.
    pub file: String,
    /// The sha256 of its content, as its index gave it.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A Debian source package the image's binaries were built from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DebianSource {
    /// The source package's name.
    pub package: String,
    /// Its version (with the epoch, as the source index writes it).
    pub version: String,
    /// The image's binary packages built from it (`name version arch`),
    /// and those whose `Built-Using` names it (`name version arch
    /// (Built-Using)`).
    pub binaries: Vec<String>,
    /// The .dsc and the archives it names.
    pub files: Vec<SourceFile>,
}

/// The source distribution of a locked PyPI project version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PypiSdist {
    /// The project's normalized name (PEP 503).
    pub name: String,
    /// The project version.
    pub version: String,
    /// The image's wheels of this project version.
    pub wheels: Vec<String>,
    /// The source distribution file.
    pub file: SourceFile,
}

/// Everything an image's lock was built from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Sources {
    /// The Debian source packages, by name and version.
    pub debian: Vec<DebianSource>,
    /// The PyPI source distributions, by project and version.
    pub pypi: Vec<PypiSdist>,
}

impl Sources {
    /// Every file, each once.
    pub(crate) fn files(&self) -> Vec<&SourceFile> {
        let mut seen = BTreeSet::new();
        self.debian
            .iter()
            .flat_map(|d| d.files.iter())
            .chain(self.pypi.iter().map(|p| &p.file))
            .filter(|f| seen.insert(f.file.as_str()))
            .collect()
    }
}

/// Collect the sources of `lock` (the lock of `image`) into biovm's store
/// in `cache`: whatever the store lacks is downloaded and checked. Fails
/// naming every binary whose source cannot be had.
pub(crate) fn collect(image: &Image, lock: &Lock, cache: &Path) -> Result<Sources> {
    let store = Pool::in_cache(cache);
    let debian = if lock.debian.is_empty() {
        Vec::new()
    } else {
        debian_sources(image, lock, cache, &store)?
    };
    let pypi = pypi_sdists(lock, cache, &store, None)?;
    Ok(Sources { debian, pypi })
}

/// Put every file of `sources` from biovm's store in `cache` into `out`
/// (at its `file` path: `out/sources/...`), hard-linked where possible.
pub(crate) fn place(sources: &Sources, cache: &Path, out: &Path) -> Result<()> {
    let store = Pool::in_cache(cache);
    for f in sources.files() {
        let dest = out.join(&f.file);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let kept = store
            .get(&f.sha256)
            .with_context(|| format!("{} ({}) is no longer in biovm's store", f.file, f.sha256))?;
        fsutil::place(&kept, &dest)?;
    }
    Ok(())
}

/// What a source index said about one source package version: enough to
/// fetch and check its files without the index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Record {
    /// The archive (a `deb-src` line's URI) whose index listed it.
    archive: String,
    /// Its folder in the archive (`pool/main/g/gcc-12`).
    directory: String,
    /// (file name, sha256, size).
    files: Vec<(String, String, u64)>,
}

/// A field of a control stanza, its continuation lines joined.
fn field(stanza: &str, name: &str) -> Option<String> {
    let mut lines = stanza.lines();
    let first = lines.find_map(|l| {
        l.strip_prefix(name)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })?;
    let mut v = first.to_string();
    for l in lines.take_while(|l| l.starts_with([' ', '\t'])) {
        v.push(' ');
        v.push_str(l.trim());
    }
    Some(v)
}

/// The source (name, version) a binary package names in its control
/// stanza (`Source: name` or `Source: name (version)`).
fn source_of(stanza: &str, name: &str, version: &str) -> (String, String) {
    match field(stanza, "Source").filter(|f| !f.is_empty()) {
        None => (name.to_string(), version.to_string()),
        Some(f) => match f.split_once(" (") {
            Some((n, v)) => (n.trim().to_string(), v.trim_end_matches(')').to_string()),
            None => (f, version.to_string()),
        },
    }
}

/// The sources a binary package was also built from (`Built-Using: linux
/// (= 6.1.192-3), simde (= 0.7.4~rc2-2)`): what it carries of them
/// (statically linked code, a signed kernel) is theirs too.
fn built_using(stanza: &str) -> Vec<(String, String)> {
    let Some(f) = field(stanza, "Built-Using") else {
        return Vec::new();
    };
    f.split(',')
        .filter_map(|e| {
            let (n, v) = e.trim().split_once(" (=")?;
            Some((
                n.trim().to_string(),
                v.trim().trim_end_matches(')').trim().to_string(),
            ))
        })
        .collect()
}

/// The `deb-src` lines of a sources.list: (URI, suite), options skipped.
fn deb_src_archives(list: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in list.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("deb-src") {
            continue;
        }
        let mut rest: Vec<&str> = words.collect();
        if rest.first().is_some_and(|w| w.starts_with('[')) {
            let end = rest.iter().position(|w| w.ends_with(']')).unwrap_or(0);
            rest.drain(..=end);
        }
        if let [uri, suite, ..] = rest[..] {
            out.push((uri.trim_end_matches('/').to_string(), suite.to_string()));
        }
    }
    out
}

/// The start of the names apt gives the lists it downloads from `uri` for
/// `suite` (`host_path_dists_suite_`).
fn apt_list_prefix(uri: &str, suite: &str) -> String {
    let bare = uri.split_once("://").map(|(_, r)| r).unwrap_or(uri);
    format!(
        "{}_dists_{}_",
        bare.trim_end_matches('/').replace('/', "_"),
        suite.replace('/', "_")
    )
}

/// The stanzas of a Sources index for the wanted (name, version)s, as
/// records of the archive `archive`.
fn records_in(
    text: &str,
    archive: &str,
    wanted: &BTreeSet<(String, String)>,
    out: &mut HashMap<(String, String), Record>,
) {
    for para in text.split("\n\n") {
        let (mut pkg, mut ver, mut dir) = ("", "", "");
        let mut files = Vec::new();
        let mut in_sums = false;
        for line in para.lines() {
            if let Some(rest) = line.strip_prefix(' ') {
                if in_sums {
                    let w: Vec<&str> = rest.split_whitespace().collect();
                    if let [sha, size, name] = w[..] {
                        files.push((name.to_string(), sha.to_string(), size.parse().unwrap_or(0)));
                    }
                }
                continue;
            }
            in_sums = false;
            match line.split_once(':') {
                Some(("Package", v)) => pkg = v.trim(),
                Some(("Version", v)) => ver = v.trim(),
                Some(("Directory", v)) => dir = v.trim(),
                Some(("Checksums-Sha256", _)) => in_sums = true,
                _ => {}
            }
        }
        let key = (pkg.to_string(), ver.to_string());
        if !files.is_empty() && wanted.contains(&key) && !out.contains_key(&key) {
            out.insert(
                key,
                Record {
                    archive: archive.to_string(),
                    directory: dir.to_string(),
                    files,
                },
            );
        }
    }
}

/// The source (name, version) of every locked Debian package, with the
/// binaries of each; fails naming the binaries whose control stanza
/// neither the store nor the mirror's index has.
fn binaries_by_source(
    locked: &[LockedDeb],
    store: &Pool,
    packages: &[crate::lock::Index],
) -> Result<BTreeMap<(String, String), Vec<String>>> {
    let wanted: BTreeSet<(&str, &str, &str)> = locked
        .iter()
        .map(|d| (d.name.as_str(), d.version.as_str(), d.architecture.as_str()))
        .collect();
    // The mirror's stanzas of locked versions it still serves.
    let mut served: HashMap<(String, String, String), String> = HashMap::new();
    for i in packages {
        for para in i.text.split("\n\n") {
            let Some(s) = crate::lock::stanzas(para).into_iter().next() else {
                continue;
            };
            if let (Some(p), Some(v), Some(a)) =
                (s.get("Package"), s.get("Version"), s.get("Architecture"))
            {
                if wanted.contains(&(p, v, a)) {
                    served.insert(
                        (p.to_string(), v.to_string(), a.to_string()),
                        para.to_string(),
                    );
                }
            }
        }
    }
    let mut by_source: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for d in locked {
        let key = (d.name.clone(), d.version.clone(), d.architecture.clone());
        let Some(stanza) = store
            .control_text(&d.sha256)
            .or_else(|| served.remove(&key))
        else {
            unknown.push(format!("{} {} {}", d.name, d.version, d.architecture));
            continue;
        };
        let binary = format!("{} {} {}", d.name, d.version, d.architecture);
        for src in built_using(&stanza) {
            by_source
                .entry(src)
                .or_default()
                .push(format!("{binary} (Built-Using)"));
        }
        by_source
            .entry(source_of(&stanza, &d.name, &d.version))
            .or_default()
            .push(binary);
    }
    if !unknown.is_empty() {
        bail!(
            "cannot tell the source package of {} locked package(s): neither biovm's store nor the mirror has them (build the image from its lock once, or use a vendor folder): {}",
            unknown.len(),
            unknown.join(", ")
        );
    }
    Ok(by_source)
}

/// `s` when it is one plain file name: what an index or a lock says (a
/// source's name, version or file, which an image's own mirror controls)
/// must not lead out of the folder it is joined to.
fn plain<'a>(s: &'a str, what: &str) -> Result<&'a str> {
    if s.is_empty() || s == "." || s == ".." || s.contains(['/', '\0']) {
        bail!("{what} `{s}` is not a plain file name; refusing it");
    }
    Ok(s)
}

fn record_path(cache: &Path, name: &str, version: &str) -> Result<std::path::PathBuf> {
    let file = format!("{name}_{}.json", version.replace(':', "%3a"));
    Ok(cache
        .join("sources/debian")
        .join(plain(&file, "source package")?))
}

/// The Debian source packages of the lock's binaries, every file in the store.
fn debian_sources(
    image: &Image,
    lock: &Lock,
    cache: &Path,
    store: &Pool,
) -> Result<Vec<DebianSource>> {
    let work_parent = cache.join("work");
    fs::create_dir_all(&work_parent)
        .with_context(|| format!("cannot create {}", work_parent.display()))?;
    let work = Scratch::new_in(&work_parent, &format!("sources-{}.work", image.name))?;
    let root = work.join("root");
    let lists = crate::rootfs::fetch_indices(image, &root, true)?;
    let list_file = root.join("etc/apt/sources.list");
    let archives = deb_src_archives(
        &fs::read_to_string(&list_file)
            .with_context(|| format!("cannot read {}", list_file.display()))?,
    );
    let packages = crate::lock::list_indices(&lists)?;
    let by_source = binaries_by_source(&lock.debian, store, &packages)?;
    let wanted: BTreeSet<(String, String)> = by_source.keys().cloned().collect();
    let mut records = HashMap::new();
    for i in crate::lock::list_indices_of(&lists, "_Sources")? {
        let archive = archives
            .iter()
            .find(|(u, s)| i.file.starts_with(&apt_list_prefix(u, s)))
            .map(|(u, _)| u.clone())
            .unwrap_or_default();
        records_in(&i.text, &archive, &wanted, &mut records);
    }
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for ((name, version), binaries) in by_source {
        let path = record_path(cache, &name, &version)?;
        let record = match records.remove(&(name.clone(), version.clone())) {
            Some(r) => {
                fs::create_dir_all(path.parent().expect("a folder"))?;
                fsutil::write_atomic(&path, serde_json::to_string_pretty(&r)?.as_bytes())?;
                r
            }
            None => match fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<Record>(&t).ok())
            {
                Some(r) => r,
                None => {
                    missing.push(format!("{name} {version} (of {})", binaries.join(", ")));
                    continue;
                }
            },
        };
        out.push((name, version, binaries, record));
    }
    if !missing.is_empty() {
        bail!(
            "the mirror's source indices lack {} source version(s) the lock's packages were built from, and biovm's store has not kept them (a snapshot mirror, [base.snapshot], serves every version ever published):\n  {}",
            missing.len(),
            missing.join("\n  ")
        );
    }
    download_debian(&out, &archives, store, work.path())?;
    out.into_iter()
        .map(|(package, version, binaries, r)| {
            let files = r
                .files
                .iter()
                .map(|(f, sha, _)| source_file(store, "debian", f, sha))
                .collect::<Result<_>>()?;
            Ok(DebianSource {
                package,
                version,
                binaries,
                files,
            })
        })
        .collect()
}

fn source_file(store: &Pool, kind: &str, name: &str, sha: &str) -> Result<SourceFile> {
    let name = plain(name, "source file")?;
    let p = store.path(plain(sha, "sha256")?);
    Ok(SourceFile {
        file: format!("{DIR}/{kind}/{name}"),
        sha256: sha.to_string(),
        size: fs::metadata(&p)
            .with_context(|| format!("cannot read {}", p.display()))?
            .len(),
    })
}

/// One file to fetch into the store: what it is, the URLs to try in
/// order, its sha256.
struct Fetch {
    what: String,
    urls: Vec<String>,
    sha256: String,
}

/// Download every file of the records the store lacks, a few at a time.
fn download_debian(
    sources: &[(String, String, Vec<String>, Record)],
    archives: &[(String, String)],
    store: &Pool,
    scratch: &Path,
) -> Result<()> {
    let mut todo = Vec::new();
    let mut seen = BTreeSet::new();
    for (name, version, _, r) in sources {
        for (file, sha, _) in &r.files {
            if !seen.insert(sha.clone()) || store.has(sha) {
                continue;
            }
            // The archive whose index listed it first, then the others.
            let mut uris: Vec<&str> = Vec::new();
            for u in
                std::iter::once(r.archive.as_str()).chain(archives.iter().map(|(u, _)| u.as_str()))
            {
                if !u.is_empty() && !uris.contains(&u) {
                    uris.push(u);
                }
            }
            todo.push(Fetch {
                what: format!("source package {name} {version}"),
                urls: uris
                    .iter()
                    .map(|u| format!("{u}/{}/{file}", r.directory))
                    .collect(),
                sha256: sha.clone(),
            });
        }
    }
    fetch_into_store(todo, store, scratch)
}

/// Fetch `todo` into `store` with a few downloads at a time; fails with
/// every file that could not be had.
fn fetch_into_store(todo: Vec<Fetch>, store: &Pool, scratch: &Path) -> Result<()> {
    if todo.is_empty() {
        return Ok(());
    }
    log::info!("downloading {} source file(s)", todo.len());
    let queue = Mutex::new(todo.into_iter());
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..DOWNLOADS {
            s.spawn(|| loop {
                let Some(f) = queue.lock().expect("queue").next() else {
                    break;
                };
                if let Err(e) = fetch_one(&f, store, scratch) {
                    errors.lock().expect("errors").push(format!("{e:#}"));
                }
            });
        }
    });
    let errors = errors.into_inner().expect("errors");
    if !errors.is_empty() {
        bail!(
            "{} source file(s) could not be fetched:\n  {}",
            errors.len(),
            errors.join("\n  ")
        );
    }
    Ok(())
}

/// Try each URL of `f` in turn until one gives the right content, and keep it.
fn fetch_one(f: &Fetch, store: &Pool, scratch: &Path) -> Result<()> {
    let tmp = scratch.join(&f.sha256);
    let mut tried = Vec::new();
    for url in &f.urls {
        match crate::fetch::download_verified(&f.what, url, &f.sha256, &tmp) {
            Ok(()) => {
                store.keep(&tmp, &f.sha256)?;
                fs::remove_file(&tmp)
                    .with_context(|| format!("cannot remove {}", tmp.display()))?;
                return Ok(());
            }
            Err(e) => tried.push(format!("{e:#}")),
        }
    }
    if tried.is_empty() {
        bail!("{}: no archive to fetch it from", f.what);
    }
    bail!("{}", tried.join("; "))
}

/// What the package index said about a project version's source
/// distribution (kept in the cache, like a Debian source's record).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct SdistRecord {
    file: String,
    url: String,
    sha256: String,
}

/// The locked wheels by project (normalized name, version).
fn wheels_by_project(lock: &Lock) -> BTreeMap<(String, String), Vec<String>> {
    let mut by: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for p in &lock.pypi {
        if let Some((n, v)) = pypi_name_version(&p.file) {
            let wheels = by.entry((pypi_normalize(&n), v)).or_default();
            if !wheels.contains(&p.file) {
                wheels.push(p.file.clone());
            }
        }
    }
    by
}

/// The source distribution of every locked PyPI project version, from the
/// package index at `index` (default: pip's).
fn pypi_sdists(
    lock: &Lock,
    cache: &Path,
    store: &Pool,
    index: Option<&str>,
) -> Result<Vec<PypiSdist>> {
    let projects = wheels_by_project(lock);
    if projects.is_empty() {
        return Ok(Vec::new());
    }
    let dir = cache.join("sources/pypi");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut index: Option<String> = index.map(str::to_string);
    let mut records = Vec::new();
    let mut todo = Vec::new();
    let mut missing = Vec::new();
    for ((name, version), wheels) in projects {
        let path = dir.join(plain(&format!("{name}-{version}.json"), "PyPI project")?);
        let kept = fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<SdistRecord>(&t).ok());
        let record = match kept {
            Some(r) => r,
            None => {
                if index.is_none() {
                    index = Some(pip_index_url()?);
                }
                match sdist_on_index(index.as_deref().unwrap_or_default(), &name, &version)? {
                    Some(r) => {
                        fsutil::write_atomic(&path, serde_json::to_string_pretty(&r)?.as_bytes())?;
                        r
                    }
                    None => {
                        missing.push(format!("{name} {version}"));
                        continue;
                    }
                }
            }
        };
        if !store.has(&record.sha256) {
            todo.push(Fetch {
                what: format!("PyPI source distribution {}", record.file),
                urls: vec![record.url.clone()],
                sha256: record.sha256.clone(),
            });
        }
        records.push((name, version, wheels, record));
    }
    if !missing.is_empty() {
        bail!(
            "the package index has no source distribution for {} locked project version(s): {}",
            missing.len(),
            missing.join(", ")
        );
    }
    let scratch = Scratch::new_in(&dir, "download")?;
    fetch_into_store(todo, store, scratch.path())?;
    records
        .into_iter()
        .map(|(name, version, wheels, r)| {
            Ok(PypiSdist {
                file: source_file(store, "pypi", &r.file, &r.sha256)?,
                name,
                version,
                wheels,
            })
        })
        .collect()
}

/// The package index pip uses: `PIP_INDEX_URL`, else pip's configured
/// `index-url`, else pip's default.
fn pip_index_url() -> Result<String> {
    const ASK_PIP: &str = "\
import os
from pip._internal.configuration import Configuration
from pip._internal.models.index import PyPI
c = Configuration(isolated=False)
c.load()
d = dict(c.items())
print(os.environ.get('PIP_INDEX_URL') or d.get('global.index-url') or d.get('download.index-url') or PyPI.simple_url)
";
    let out = Cmd::new("python3")
        .args(["-c", ASK_PIP])
        .output()
        .context("cannot ask pip which package index it uses")?;
    Ok(out.trim().trim_end_matches('/').to_string())
}

/// The source distribution of `name` `version` on the index at `index`
/// (its JSON simple API), if it has one.
fn sdist_on_index(index: &str, name: &str, version: &str) -> Result<Option<SdistRecord>> {
    let page = format!("{index}/{name}/");
    let text = crate::fetch::client()?
        .get(&page)
        .header("Accept", "application/vnd.pypi.simple.v1+json")
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.text())
        .with_context(|| format!("cannot read the package index page {page}"))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{page} is not a JSON simple API page (PEP 691)"))?;
    Ok(pick_sdist(&v, &page, name, version))
}

/// The sdist of `name` `version` among a PEP 691 page's files (a
/// `.tar.gz` before other archives), its URL made absolute.
fn pick_sdist(
    page: &serde_json::Value,
    page_url: &str,
    name: &str,
    version: &str,
) -> Option<SdistRecord> {
    let files = page.get("files")?.as_array()?;
    let mut found: Vec<SdistRecord> = files
        .iter()
        .filter_map(|f| {
            let file = f.get("filename")?.as_str()?;
            let (n, v) = pypi_name_version(file)?;
            if file.ends_with(".whl") || pypi_normalize(&n) != name || v != version {
                return None;
            }
            let url = f.get("url")?.as_str()?;
            let url = reqwest::Url::parse(page_url).ok()?.join(url).ok()?;
            Some(SdistRecord {
                file: file.to_string(),
                url: url.to_string(),
                sha256: f.get("hashes")?.get("sha256")?.as_str()?.to_string(),
            })
        })
        .collect();
    found.sort_by_key(|r| !r.file.ends_with(".tar.gz"));
    found.into_iter().next()
}

#[cfg(test)]
mod tests;
