use super::*;

#[test]
fn a_binary_names_its_source_with_or_without_a_version() {
    let plain = "Package: samtools\nVersion: 1.16.1-1\n";
    assert_eq!(
        source_of(plain, "samtools", "1.16.1-1"),
        ("samtools".into(), "1.16.1-1".into())
    );
    let named = "Package: libhts3\nSource: htslib\nVersion: 1.16+ds-3\n";
    assert_eq!(
        source_of(named, "libhts3", "1.16+ds-3"),
        ("htslib".into(), "1.16+ds-3".into())
    );
    // A binNMU or a binary versioned apart from its source.
    let versioned = "Package: libgcc-s1\nSource: gcc-12 (12.2.0-14)\nVersion: 12.2.0-14+b1\n";
    assert_eq!(
        source_of(versioned, "libgcc-s1", "12.2.0-14+b1"),
        ("gcc-12".into(), "12.2.0-14".into())
    );
}

#[test]
fn built_using_names_the_other_sources_a_binary_carries() {
    let stanza = "Package: seqkit\nBuilt-Using: golang-1.19 (= 1.19.8-2), golang-go.crypto (= 1:0.4.0-1),\n golang-yaml.v2 (= 2.4.0-4)\nVersion: 2.3.1+ds-2\n";
    assert_eq!(
        built_using(stanza),
        vec![
            ("golang-1.19".to_string(), "1.19.8-2".to_string()),
            ("golang-go.crypto".to_string(), "1:0.4.0-1".to_string()),
            ("golang-yaml.v2".to_string(), "2.4.0-4".to_string()),
        ]
    );
    assert!(built_using("Package: bwa\nVersion: 1\n").is_empty());
}

#[test]
fn deb_src_lines_give_their_archive_and_suite() {
    let list = "deb http://a.example/debian bookworm main\n\
                deb-src http://a.example/debian bookworm main\n\
                # deb-src http://commented.example/ x main\n\
                deb-src [check-valid-until=no] http://snap.example/archive/debian/20261201T000000Z/ bookworm-updates main\n\
                deb-src [ trusted=yes ] http://b.example/x y main\n";
    assert_eq!(
        deb_src_archives(list),
        vec![
            (
                "http://a.example/debian".to_string(),
                "bookworm".to_string()
            ),
            (
                "http://snap.example/archive/debian/20261201T000000Z".to_string(),
                "bookworm-updates".to_string()
            ),
            ("http://b.example/x".to_string(), "y".to_string()),
        ]
    );
}

#[test]
fn apt_list_names_map_back_to_their_archive() {
    assert_eq!(
        apt_list_prefix("http://a.example/debian-security", "bookworm-security"),
        "a.example_debian-security_dists_bookworm-security_"
    );
    assert_eq!(
        apt_list_prefix("http://127.0.0.1:8000/", "bookworm"),
        "127.0.0.1:8000_dists_bookworm_"
    );
}

const SOURCES: &str = "\
Package: htslib
Binary: libhts3, libhts-dev, tabix
Version: 1.16+ds-3
Directory: pool/main/h/htslib
Files:
 0123 1000 htslib_1.16+ds-3.dsc
Checksums-Sha256:
 aaaa 2086 htslib_1.16+ds-3.dsc
 bbbb 3000000 htslib_1.16+ds.orig.tar.xz
 cccc 12000 htslib_1.16+ds-3.debian.tar.xz
Section: science

Package: htslib
Version: 1.10-1
Directory: pool/main/h/htslib
Checksums-Sha256:
 dddd 1 htslib_1.10-1.dsc

Package: other
Version: 1
Directory: pool/main/o/other
Checksums-Sha256:
 eeee 1 other_1.dsc
";

#[test]
fn a_source_index_gives_the_files_of_the_wanted_versions_only() {
    let wanted: BTreeSet<(String, String)> = [("htslib".to_string(), "1.16+ds-3".to_string())]
        .into_iter()
        .collect();
    let mut out = HashMap::new();
    records_in(SOURCES, "http://a.example/debian", &wanted, &mut out);
    assert_eq!(out.len(), 1);
    let r = &out[&("htslib".to_string(), "1.16+ds-3".to_string())];
    assert_eq!(r.archive, "http://a.example/debian");
    assert_eq!(r.directory, "pool/main/h/htslib");
    assert_eq!(
        r.files,
        vec![
            ("htslib_1.16+ds-3.dsc".to_string(), "aaaa".to_string(), 2086),
            (
                "htslib_1.16+ds.orig.tar.xz".to_string(),
                "bbbb".to_string(),
                3_000_000
            ),
            (
                "htslib_1.16+ds-3.debian.tar.xz".to_string(),
                "cccc".to_string(),
                12000
            ),
        ],
        "the md5 Files field is not taken"
    );
    // A later index listing it again does not replace the first.
    records_in(SOURCES, "http://b.example/debian", &wanted, &mut out);
    assert_eq!(
        out[&("htslib".to_string(), "1.16+ds-3".to_string())].archive,
        "http://a.example/debian"
    );
}

#[test]
fn the_sdist_of_the_locked_version_is_picked_from_a_pep691_page() {
    let page = serde_json::json!({
        "meta": {"api-version": "1.0"},
        "name": "pysam",
        "files": [
            {"filename": "pysam-0.22.0-cp311-cp311-manylinux_2_28_x86_64.whl",
             "url": "https://files.example/p/pysam-0.22.0-cp311.whl", "hashes": {"sha256": "11"}},
            {"filename": "pysam-0.21.0.tar.gz", "url": "../../f/pysam-0.21.0.tar.gz", "hashes": {"sha256": "22"}},
            {"filename": "pysam-0.22.0.zip", "url": "../../f/pysam-0.22.0.zip", "hashes": {"sha256": "33"}},
            {"filename": "pysam-0.22.0.tar.gz", "url": "../../f/pysam-0.22.0.tar.gz", "hashes": {"sha256": "44"}},
        ]
    });
    let r = pick_sdist(
        &page,
        "https://index.example/simple/pysam/",
        "pysam",
        "0.22.0",
    )
    .unwrap();
    assert_eq!(r.file, "pysam-0.22.0.tar.gz");
    assert_eq!(r.url, "https://index.example/f/pysam-0.22.0.tar.gz");
    assert_eq!(r.sha256, "44");
    assert!(pick_sdist(
        &page,
        "https://index.example/simple/pysam/",
        "pysam",
        "0.23"
    )
    .is_none());
    // Names compare normalized (PEP 503).
    let page = serde_json::json!({"files": [
        {"filename": "PyYAML-6.0.1.tar.gz", "url": "https://f.example/PyYAML-6.0.1.tar.gz", "hashes": {"sha256": "55"}}
    ]});
    assert_eq!(
        pick_sdist(&page, "https://i.example/simple/pyyaml/", "pyyaml", "6.0.1")
            .unwrap()
            .sha256,
        "55"
    );
}

#[test]
fn a_file_shared_by_two_sources_is_listed_once() {
    let f = |n: &str| SourceFile {
        file: format!("sources/debian/{n}"),
        sha256: n.repeat(2),
        size: 1,
    };
    let s = Sources {
        debian: vec![
            DebianSource {
                package: "a".into(),
                version: "1".into(),
                binaries: vec![],
                files: vec![f("a.dsc"), f("shared.orig.tar.xz")],
            },
            DebianSource {
                package: "b".into(),
                version: "1".into(),
                binaries: vec![],
                files: vec![f("b.dsc"), f("shared.orig.tar.xz")],
            },
        ],
        pypi: vec![],
    };
    let names: Vec<&str> = s.files().iter().map(|f| f.file.as_str()).collect();
    assert_eq!(
        names,
        [
            "sources/debian/a.dsc",
            "sources/debian/shared.orig.tar.xz",
            "sources/debian/b.dsc"
        ]
    );
}

/// A PEP 691 index on 127.0.0.1 (python3's http.server over a folder)
/// with one project's page and its sdist.
struct Index {
    server: std::process::Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Index {
    fn new(sdist: &[u8], listed_sha: &str) -> Index {
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("simple/pysam");
        fs::create_dir_all(&page).unwrap();
        fs::create_dir_all(dir.path().join("files")).unwrap();
        fs::write(dir.path().join("files/pysam-0.22.0.tar.gz"), sdist).unwrap();
        let json = serde_json::json!({"meta": {"api-version": "1.0"}, "name": "pysam", "files": [
            {"filename": "pysam-0.22.0.tar.gz", "url": "../../files/pysam-0.22.0.tar.gz",
             "hashes": {"sha256": listed_sha}},
        ]});
        fs::write(page.join("index.html"), json.to_string()).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .arg("--directory")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let t = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed().as_secs() < 20, "the index did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Index {
            server,
            url: format!("http://127.0.0.1:{port}/simple"),
            dir,
        }
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

fn lock_with_wheel() -> Lock {
    Lock {
        image: "x".into(),
        suite: "bookworm".into(),
        architecture: "amd64".into(),
        source_date_epoch: 1,
        seed: "s".into(),
        snapshot: None,
        data: vec![],
        requested: vec![],
        debian: vec![],
        download: vec![],
        pypi: vec![crate::lock::LockedPypi {
            recipe: "pysam".into(),
            file: "pysam-0.22.0-cp311-cp311-manylinux_2_28_x86_64.whl".into(),
            sha256: "ab".repeat(32),
        }],
    }
}

#[test]
fn the_sdist_of_a_locked_wheel_is_checked_kept_and_found_again_offline() {
    let body = b"pysam sources".to_vec();
    let sha = fsutil::hex(&<sha2::Sha256 as sha2::Digest>::digest(&body));
    let cache = tempfile::tempdir().unwrap();
    let store = Pool::in_cache(cache.path());
    let lock = lock_with_wheel();
    let index = Index::new(&body, &sha);
    let got = pypi_sdists(&lock, cache.path(), &store, Some(&index.url)).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].name, "pysam");
    assert_eq!(got[0].version, "0.22.0");
    assert_eq!(got[0].wheels, [lock.pypi[0].file.clone()]);
    assert_eq!(got[0].file.file, "sources/pypi/pysam-0.22.0.tar.gz");
    assert_eq!(got[0].file.sha256, sha);
    assert_eq!(got[0].file.size, body.len() as u64);
    assert_eq!(fs::read(store.get(&sha).unwrap()).unwrap(), body);
    // The index gone: what it said and the file are kept.
    drop(index);
    let again = pypi_sdists(
        &lock,
        cache.path(),
        &store,
        Some("http://127.0.0.1:9/simple"),
    )
    .unwrap();
    assert_eq!(again, got);
}

#[test]
fn an_sdist_that_is_not_what_the_index_lists_is_refused() {
    let cache = tempfile::tempdir().unwrap();
    let store = Pool::in_cache(cache.path());
    let listed = "cd".repeat(32);
    let index = Index::new(b"tampered", &listed);
    let e = pypi_sdists(&lock_with_wheel(), cache.path(), &store, Some(&index.url)).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("PyPI source distribution pysam-0.22.0.tar.gz")
            && msg.contains(&listed)
            && msg.contains("/files/pysam-0.22.0.tar.gz"),
        "{msg}"
    );
    assert!(!store.has(&listed));
    let _ = index.dir.path();
}

#[test]
fn a_project_without_an_sdist_is_named() {
    let cache = tempfile::tempdir().unwrap();
    let store = Pool::in_cache(cache.path());
    let index = Index::new(b"x", &"ef".repeat(32));
    let mut lock = lock_with_wheel();
    lock.pypi[0].file = "pysam-0.23.0-cp311-cp311-manylinux_2_28_x86_64.whl".into();
    let e = pypi_sdists(&lock, cache.path(), &store, Some(&index.url)).unwrap_err();
    assert!(
        format!("{e:#}")
            .contains("no source distribution for 1 locked project version(s): pysam 0.23.0"),
        "{e:#}"
    );
}

#[test]
fn names_from_an_index_cannot_lead_out_of_their_folder() {
    for bad in ["", ".", "..", "../../etc/passwd", "a/b", "x\0y"] {
        assert!(plain(bad, "source file").is_err(), "{bad:?}");
    }
    assert_eq!(
        plain("htslib_1.16+ds.orig.tar.xz", "source file").unwrap(),
        "htslib_1.16+ds.orig.tar.xz"
    );
    let cache = tempfile::tempdir().unwrap();
    assert!(record_path(cache.path(), "../../x", "1").is_err());
    assert!(record_path(cache.path(), "x", "1/../../y").is_err());
    assert!(record_path(cache.path(), "gcc-12", "1:12.2.0-14").is_ok());
    let store = Pool::in_cache(cache.path());
    let e = source_file(&store, "debian", "../../../etc/shadow", &"a".repeat(64)).unwrap_err();
    assert!(e.to_string().contains("is not a plain file name"), "{e}");
}
