//! Tests of the data stage: a mirror server on 127.0.0.1 that serves the
//! right bytes, other bytes, too few or too many, stalls, or cuts a
//! transfer once; and the unpacking of a source into a tree.

use super::*;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use crate::config::{DataSource, FunctionalTest};

/// A genome-like payload, compressible and not repetitive.
fn payload() -> Vec<u8> {
    let mut v = Vec::with_capacity(300_000);
    let mut x: u32 = 7;
    while v.len() < 300_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        v.push(b"ACGT"[(x >> 16) as usize % 4]);
    }
    v
}

fn sha(b: &[u8]) -> String {
    fsutil::hex(&Sha256::digest(b))
}

/// Every request the server got: (path, the first byte a Range asked for).
type Seen = Arc<Mutex<Vec<(String, u64)>>>;

/// A mirror on 127.0.0.1 with one behaviour per path:
/// `/good` the bytes (ranges honoured), `/tampered` as many other bytes,
/// `/long` a length that is not the bytes', `/truncated` half of them under
/// the full length every time, `/cut-once` half the first time and the
/// rest to a range request, `/stall` half and then nothing for a minute,
/// anything else 404.
struct Mirror {
    base: String,
    seen: Seen,
}

impl Mirror {
    fn start(body: Vec<u8>) -> Mirror {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let seen: Seen = Arc::default();
        let cuts: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
        let (s2, body) = (seen.clone(), Arc::new(body));
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { return };
                let (seen, body, cuts) = (s2.clone(), body.clone(), cuts.clone());
                std::thread::spawn(move || answer(s, &body, &seen, &cuts));
            }
        });
        Mirror { base, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }
}

fn answer(mut s: TcpStream, body: &[u8], seen: &Seen, cuts: &Mutex<BTreeMap<String, u32>>) {
    let mut r = std::io::BufReader::new(s.try_clone().unwrap());
    let mut first = String::new();
    r.read_line(&mut first).unwrap();
    let path = first.split(' ').nth(1).unwrap_or("/").to_string();
    let mut from = 0u64;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() <= 2 {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
            from = v.trim().trim_end_matches('-').parse().unwrap();
        }
    }
    seen.lock().unwrap().push((path.clone(), from));
    let n = body.len();
    let whole = |s: &mut TcpStream, bytes: &[u8], len: usize| {
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
        );
        let _ = s.write_all(bytes);
    };
    match path.as_str() {
        "/good" if from > 0 => rest(&mut s, body, from),
        "/good" => whole(&mut s, body, n),
        "/tampered" => {
            let mut other = body.to_vec();
            other[n / 2] ^= 1;
            whole(&mut s, &other, n);
        }
        "/long" => whole(&mut s, &[body, b"more"].concat(), n + 4),
        "/truncated" => whole(&mut s, &body[..n / 2], n),
        "/cut-once" => {
            let first_time = {
                let mut c = cuts.lock().unwrap();
                let k = c.entry(path.clone()).or_default();
                *k += 1;
                *k == 1
            };
            if first_time {
                whole(&mut s, &body[..n / 2], n);
            } else if from > 0 {
                rest(&mut s, body, from);
            } else {
                whole(&mut s, body, n);
            }
        }
        "/stall" => {
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-length: {n}\r\nconnection: close\r\n\r\n"
            );
            let _ = s.write_all(&body[..n / 2]);
            let _ = s.flush();
            std::thread::sleep(Duration::from_secs(60));
        }
        _ => {
            let _ = s.write_all(
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    }
}

/// A 206 answer with `body` from byte `from` on.
fn rest(s: &mut TcpStream, body: &[u8], from: u64) {
    let n = body.len();
    let _ = write!(
        s,
        "HTTP/1.1 206 Partial Content\r\ncontent-range: bytes {from}-{}/{n}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        n - 1,
        n - from as usize
    );
    let _ = s.write_all(&body[from as usize..]);
}

/// A URL where nothing listens.
fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    format!("http://{a}/genome.fa.gz")
}

fn dataset(urls: Vec<String>, body: &[u8], content: &[u8], unpack: Unpack) -> DataSet {
    DataSet {
        name: "tiny".into(),
        summary: "s".into(),
        organism: "o".into(),
        build: "tiny".into(),
        version: "1".into(),
        license: "public-domain".into(),
        redistributable: true,
        file: "tiny.fa".into(),
        sha256: sha(content),
        source: DataSource {
            from: DataOrigin::Urls(urls),
            sha256: sha(body),
            size: body.len() as u64,
            unpack,
        },
        indexes: vec![],
        tests: Vec::<FunctionalTest>::new(),
        source_file: PathBuf::from("data/tiny.toml"),
    }
}

fn fetch_from(d: &DataSet, cache: &Path) -> Result<PathBuf> {
    let DataOrigin::Urls(urls) = &d.source.from else {
        unreachable!()
    };
    fetch(d, urls, cache, &[], false)
}

/// The payload, a mirror serving it, an empty cache, and a data set of
/// the payload fetched from the mirror's `paths` in order.
fn mirrored(paths: &[&str]) -> (Vec<u8>, Mirror, tempfile::TempDir, DataSet) {
    let body = payload();
    let m = Mirror::start(body.clone());
    let urls = paths.iter().map(|p| m.url(p)).collect();
    let d = dataset(urls, &body, &body, Unpack::None);
    (body, m, tempfile::tempdir().unwrap(), d)
}

/// Nothing of the data set is in the cache under its final name.
fn nothing_kept(cache: &Path, d: &DataSet) {
    assert!(!cache.join("downloads").join(&d.source.sha256).exists());
}

#[test]
fn a_dead_first_mirror_and_a_missing_file_fall_back_to_the_next() {
    let body = payload();
    let m = Mirror::start(body.clone());
    let cache = tempfile::tempdir().unwrap();
    let d = dataset(
        vec![dead_url(), m.url("gone"), m.url("good")],
        &body,
        &body,
        Unpack::None,
    );
    let p = fetch_from(&d, cache.path()).unwrap();
    assert_eq!(fs::read(&p).unwrap(), body);
    assert_eq!(p, cache.path().join("downloads").join(&d.source.sha256));
    // The cache answers the next time: the mirror is not asked again.
    let asked = m.seen.lock().unwrap().len();
    fetch_from(&d, cache.path()).unwrap();
    assert_eq!(m.seen.lock().unwrap().len(), asked);
}

#[test]
fn tampered_bytes_are_refused_naming_the_data_set_url_and_both_hashes() {
    let body = payload();
    let m = Mirror::start(body.clone());
    let cache = tempfile::tempdir().unwrap();
    // A second, good mirror is not tried: different bytes are not an outage.
    let d = dataset(
        vec![m.url("tampered"), m.url("good")],
        &body,
        &body,
        Unpack::None,
    );
    let e = fetch_from(&d, cache.path()).unwrap_err();
    let msg = format!("{e:#}");
    let mut other = body.clone();
    other[body.len() / 2] ^= 1;
    assert!(e.downcast_ref::<Refused>().is_some(), "{msg}");
    for part in [
        "data set tiny",
        &m.url("tampered"),
        &d.source.sha256,
        &sha(&other),
    ] {
        assert!(msg.contains(part), "{part} not in: {msg}");
    }
    nothing_kept(cache.path(), &d);
    let partial = cache
        .path()
        .join(format!("downloads/{}.partial", d.source.sha256));
    assert!(
        !partial.exists(),
        "the wrong bytes are not kept to resume from"
    );
}

#[test]
fn a_truncated_download_is_refused_naming_the_size() {
    let (body, _m, cache, d) = mirrored(&["truncated"]);
    let msg = format!("{:#}", fetch_from(&d, cache.path()).unwrap_err());
    assert!(msg.contains("data set tiny"), "{msg}");
    assert!(
        msg.contains(&format!("{} of {} bytes", body.len() / 2, body.len())),
        "{msg}"
    );
    nothing_kept(cache.path(), &d);
}

#[test]
fn a_length_other_than_the_size_is_refused() {
    let (body, _m, cache, d) = mirrored(&["long"]);
    let msg = format!("{:#}", fetch_from(&d, cache.path()).unwrap_err());
    assert!(
        msg.contains(&format!(
            "serves {} bytes, not the expected size of {}",
            body.len() + 4,
            body.len()
        )),
        "{msg}"
    );
    nothing_kept(cache.path(), &d);
}

#[test]
fn a_cut_transfer_resumes_where_it_stopped() {
    let (body, m, cache, d) = mirrored(&["cut-once"]);
    let p = fetch_from(&d, cache.path()).unwrap();
    assert_eq!(fs::read(p).unwrap(), body);
    let seen = m.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            ("/cut-once".to_string(), 0),
            ("/cut-once".to_string(), body.len() as u64 / 2)
        ],
        "the second request asks for the rest only"
    );
}

#[test]
fn a_stalled_mirror_is_passed_over_for_the_next() {
    std::env::set_var("BIOVM_STALL_SECS", "1");
    let (body, m, cache, d) = mirrored(&["stall", "good"]);
    let t = std::time::Instant::now();
    let p = fetch_from(&d, cache.path()).unwrap();
    assert_eq!(fs::read(p).unwrap(), body);
    let asked: Vec<String> = m.seen.lock().unwrap().iter().map(|s| s.0.clone()).collect();
    assert_eq!(asked.first().map(String::as_str), Some("/stall"));
    assert_eq!(asked.last().map(String::as_str), Some("/good"));
    assert!(
        t.elapsed() < Duration::from_secs(50),
        "it did not wait out the stall"
    );
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// The payload, gzipped into a source file beside an empty image root.
fn gzipped_source() -> (Vec<u8>, Vec<u8>, tempfile::TempDir, PathBuf, PathBuf) {
    let content = payload();
    let gz = gzip(&content);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.gz");
    fs::write(&src, &gz).unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    (content, gz, dir, src, root)
}

#[test]
fn a_source_unpacks_into_its_folder_with_the_digests_recorded() {
    let (content, gz, _dir, src, root) = gzipped_source();
    let d = dataset(vec!["http://x/a.gz".into()], &gz, &content, Unpack::Gzip);
    let tree = Tree::open(&root).unwrap();
    let b = install_one(&d, Some(&src), &tree, &root).unwrap();
    let fa = root.join("data/genomes/tiny/tiny.fa");
    assert_eq!(fs::read(&fa).unwrap(), content);
    assert_eq!(
        b.files,
        [DataFileDigest {
            path: "/data/genomes/tiny/tiny.fa".into(),
            size: content.len() as u64,
            sha256: sha(&content),
        }]
    );
    assert_eq!(
        fs::read_to_string(root.join("data/genomes/tiny/SHA256SUMS")).unwrap(),
        format!("{}  tiny.fa\n", sha(&content))
    );
}

#[test]
fn content_with_another_digest_is_refused_and_not_left_in_the_image() {
    let (content, gz, _dir, src, root) = gzipped_source();
    let mut d = dataset(vec!["http://x/a.gz".into()], &gz, &content, Unpack::Gzip);
    d.sha256 = "ab".repeat(32);
    let tree = Tree::open(&root).unwrap();
    let msg = format!(
        "{:#}",
        install_one(&d, Some(&src), &tree, &root).unwrap_err()
    );
    assert!(
        msg.contains(&sha(&content)) && msg.contains(&"ab".repeat(32)),
        "{msg}"
    );
    assert!(!root.join("data/genomes/tiny/tiny.fa").exists());
}

#[test]
fn built_files_must_match_the_lock() {
    let f = |sha: &str| DataFileDigest {
        path: "/data/genomes/tiny/tiny.fa.bwt".into(),
        size: 3,
        sha256: sha.into(),
    };
    let built = |sha: &str| BuiltData {
        name: "tiny".into(),
        summary: "s".into(),
        organism: "o".into(),
        build: "tiny".into(),
        version: "1".into(),
        license: "l".into(),
        redistributable: true,
        source: "u".into(),
        source_size: 1,
        source_sha256: "cd".repeat(32),
        files: vec![f(sha)],
    };
    same_as_locked(&built(&"ab".repeat(32)), &built(&"ab".repeat(32))).unwrap();
    let msg = format!(
        "{:#}",
        same_as_locked(&built(&"ab".repeat(32)), &built(&"ef".repeat(32))).unwrap_err()
    );
    assert!(
        msg.contains("tiny.fa.bwt")
            && msg.contains(&"ab".repeat(32))
            && msg.contains(&"ef".repeat(32)),
        "{msg}"
    );
}

/// A root filesystem with just enough to run `sh -c` with `programs`:
/// each program and the libraries `ldd` names, copied from the host.
fn mini_root(root: &Path, programs: &[&str]) {
    let mut files: Vec<PathBuf> = Vec::new();
    for p in programs {
        let path = which::which(p).unwrap();
        let out = std::process::Command::new("ldd")
            .arg(&path)
            .output()
            .unwrap();
        for word in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if word.starts_with('/') {
                files.push(PathBuf::from(word));
            }
        }
        files.push(path);
    }
    for f in files {
        let dest = root.join(f.strip_prefix("/").unwrap());
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(fs::canonicalize(&f).unwrap(), &dest).unwrap();
    }
    // `sh` is where the index runs it.
    let sh = which::which("sh").unwrap();
    if sh != Path::new("/bin/sh") {
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::copy(fs::canonicalize(&sh).unwrap(), root.join("bin/sh")).unwrap();
    }
    fs::create_dir_all(root.join("data/genomes/tiny")).unwrap();
}

fn is_root() -> bool {
    // SAFETY: no arguments, no side effects.
    unsafe { libc::geteuid() == 0 }
}

/// An index's command runs as nobody: it writes its folder, never the
/// rest of the image (where, as root in a chroot, it could also climb out);
/// what it made is root's and read-only for others afterwards.
#[test]
fn an_index_runs_as_nobody_inside_its_folder_only() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    mini_root(&root, &["sh", "touch"]);
    let tree = Tree::open(&root).unwrap();
    let folder = Path::new("data/genomes/tiny");
    build_index(&tree, &root, folder, "touch tiny.idx").unwrap();
    let meta = fs::symlink_metadata(root.join("data/genomes/tiny/tiny.idx")).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
    let folder_meta = fs::metadata(root.join(folder)).unwrap();
    assert_eq!(folder_meta.uid(), 0, "the folder is root's again");

    let e = build_index(&tree, &root, folder, "touch /owned-by-the-index").unwrap_err();
    assert!(format!("{e:#}").contains("Permission denied"), "{e:#}");
    assert!(!root.join("owned-by-the-index").exists());
}

#[test]
fn an_index_that_leaves_a_link_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    mini_root(&root, &["sh", "ln"]);
    let tree = Tree::open(&root).unwrap();
    let folder = Path::new("data/genomes/tiny");
    let e = build_index(&tree, &root, folder, "ln -s /etc/shadow tiny.idx").unwrap_err();
    assert!(
        format!("{e:#}").contains("/data/genomes/tiny/tiny.idx, which is not a regular file"),
        "{e:#}"
    );
}
