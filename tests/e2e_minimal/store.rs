//! A lock builds on any day: a signed mirror on 127.0.0.1 serves the
//! locked packages, then drops one (as a point release does); the build
//! still gives the same bytes from biovm's store or a vendor folder, with
//! no network at all from the latter, and fails clearly with neither.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// A signed Debian archive (one suite, `main`, amd64) served over HTTP on
/// 127.0.0.1, made from a vendor folder's packages.
struct LocalMirror {
    dir: PathBuf,
    gnupg: PathBuf,
    server: std::process::Child,
    port: u16,
    /// The `bookworm` suite's source index (empty until
    /// [`LocalMirror::add_sources`]).
    sources: std::cell::RefCell<String>,
}

impl LocalMirror {
    fn new(name: &str, vendor: &Path) -> LocalMirror {
        let dir = scratch(name);
        let gnupg = dir.join("gnupg");
        fs::create_dir_all(&gnupg).unwrap();
        run(Command::new("gpg")
            .arg("--homedir")
            .arg(&gnupg)
            .args(["--batch", "--passphrase", "", "--quick-gen-key"])
            .args(["biovm test archive", "ed25519", "sign", "never"]));
        let pool = dir.join("debian/pool");
        fs::create_dir_all(&pool).unwrap();
        let vendored = fs::read_to_string(vendor.join("debian/Packages")).unwrap();
        let mut stanzas = Vec::new();
        for s in vendored.split("\n\n").filter(|s| !s.trim().is_empty()) {
            let file = s
                .lines()
                .find_map(|l| l.strip_prefix("Filename: ./"))
                .unwrap();
            fs::copy(vendor.join("debian").join(file), pool.join(file)).unwrap();
            stanzas.push(s.replace("Filename: ./", "Filename: pool/"));
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let server = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let m = LocalMirror {
            dir,
            gnupg,
            server,
            port,
            sources: Default::default(),
        };
        m.publish(&stanzas);
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the mirror did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        m
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/debian", self.port)
    }

    /// Write the index of `stanzas` and sign it, as an archive does (with
    /// an empty `bookworm-updates` beside it).
    fn publish(&self, stanzas: &[String]) {
        let packages = stanzas.join("\n\n") + "\n";
        let sources = self.sources.borrow().clone();
        self.publish_suite("bookworm", &packages, &sources);
        self.publish_suite("bookworm-updates", "", "");
    }

    /// The packages stanzas of the suite as served now.
    fn stanzas(&self) -> Vec<String> {
        fs::read_to_string(
            self.dir
                .join("debian/dists/bookworm/main/binary-amd64/Packages"),
        )
        .unwrap()
        .split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim_end().to_string())
        .collect()
    }

    /// Give every binary package's source (`Source:`, else its own name and
    /// version) a source package in the archive: a .dsc and a tarball made
    /// here (biovm reads neither; it checks them against the signed
    /// index), listed in `main/source/Sources`; and so does every source
    /// a `Built-Using` field names. Returns the sources of each binary
    /// name: its own first, then those of its `Built-Using`.
    fn add_sources(&self) -> BTreeMap<String, Vec<(String, String)>> {
        let mut of_binary = BTreeMap::new();
        let mut sources: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for s in self.stanzas() {
            let field = |k: &str| {
                s.lines()
                    .find_map(|l| l.strip_prefix(&format!("{k}: ")))
                    .map(str::to_string)
            };
            let (name, version) = (field("Package").unwrap(), field("Version").unwrap());
            let src = match field("Source") {
                None => (name.clone(), version.clone()),
                Some(f) => match f.split_once(" (") {
                    Some((n, v)) => (n.to_string(), v.trim_end_matches(')').to_string()),
                    None => (f, version.clone()),
                },
            };
            let mut all = vec![src];
            for e in field("Built-Using").iter().flat_map(|f| f.split(',')) {
                let (n, v) = e.trim().split_once(" (= ").unwrap();
                all.push((n.to_string(), v.trim_end_matches(')').to_string()));
            }
            for src in &all {
                sources.entry(src.clone()).or_default().push(name.clone());
            }
            of_binary.insert(name, all);
        }
        let mut index = Vec::new();
        for ((name, version), binaries) in &sources {
            let dir = format!("pool/source/{name}");
            let pool = self.dir.join("debian").join(&dir);
            fs::create_dir_all(&pool).unwrap();
            let bare = version.split_once(':').map_or(version.as_str(), |(_, v)| v);
            let tarball = format!("{name}_{bare}.tar.xz");
            let tree = scratch(&format!("e2e-sources-tree-{name}"));
            fs::write(tree.join("README"), format!("source of {name} {version}\n")).unwrap();
            run(Command::new("tar")
                .arg("-cJf")
                .arg(pool.join(&tarball))
                .arg("-C")
                .arg(&tree)
                .arg("README"));
            let dsc = format!("{name}_{bare}.dsc");
            fs::write(
                pool.join(&dsc),
                format!(
                    "Format: 3.0 (native)\nSource: {name}\nBinary: {}\nVersion: {version}\n",
                    binaries.join(", ")
                ),
            )
            .unwrap();
            let mut sums = String::new();
            for f in [&dsc, &tarball] {
                let p = pool.join(f);
                sums += &format!(
                    " {} {} {f}\n",
                    biovm_sha(&p),
                    fs::metadata(&p).unwrap().len()
                );
            }
            index.push(format!(
                "Package: {name}\nBinary: {}\nVersion: {version}\nDirectory: {dir}\nChecksums-Sha256:\n{}",
                binaries.join(", "),
                sums.trim_end()
            ));
        }
        *self.sources.borrow_mut() = index.join("\n\n") + "\n";
        self.publish(&self.stanzas());
        of_binary
    }

    /// Drop the source package `name` from the archive's index.
    fn drop_source(&self, name: &str) {
        let kept: Vec<String> = self
            .sources
            .borrow()
            .split("\n\n")
            .filter(|s| !s.trim().is_empty() && !s.starts_with(&format!("Package: {name}\n")))
            .map(|s| s.trim_end().to_string())
            .collect();
        *self.sources.borrow_mut() = kept.join("\n\n") + "\n";
        self.publish(&self.stanzas());
    }

    /// The file `name` of the source package `source` in the archive.
    fn source_file(&self, source: &str, name: &str) -> PathBuf {
        self.dir.join("debian/pool/source").join(source).join(name)
    }

    fn publish_suite(&self, suite: &str, packages: &str, sources: &str) {
        let dists = self.dir.join("debian/dists").join(suite);
        let bin = dists.join("main/binary-amd64");
        fs::create_dir_all(&bin).unwrap();
        fs::write(bin.join("Packages"), packages).unwrap();
        let src = dists.join("main/source");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("Sources"), sources).unwrap();
        let date = String::from_utf8(
            Command::new("date")
                .args(["-u", "-R"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let release = format!(
            "Origin: biovm test\nSuite: {suite}\nCodename: {suite}\nDate: {}\nArchitectures: amd64 source\nComponents: main\nSHA256:\n {} {} main/binary-amd64/Packages\n {} {} main/source/Sources\n",
            date.trim(),
            biovm_sha(&bin.join("Packages")),
            packages.len(),
            biovm_sha(&src.join("Sources")),
            sources.len()
        );
        fs::write(dists.join("Release"), release).unwrap();
        let _ = fs::remove_file(dists.join("InRelease"));
        run(Command::new("gpg")
            .arg("--homedir")
            .arg(&self.gnupg)
            .args(["--batch", "--clearsign", "--output"])
            .arg(dists.join("InRelease"))
            .arg(dists.join("Release")));
    }

    /// Serve the archive as it is now as a snapshot archive does:
    /// `<port>/archive/debian/<stamp>/`. Returns the archive's root URL.
    fn snapshot_at(&self, stamp: &str) -> String {
        let at = self.dir.join("archive/debian");
        fs::create_dir_all(&at).unwrap();
        std::os::unix::fs::symlink("../../debian", at.join(stamp)).unwrap();
        format!("http://127.0.0.1:{}/archive/debian", self.port)
    }

    /// Drop `name` from the archive: its file and its stanza.
    fn drop_package(&self, name: &str) {
        let bin = self.dir.join("debian/dists/bookworm/main/binary-amd64");
        let text = fs::read_to_string(bin.join("Packages")).unwrap();
        let mut kept = Vec::new();
        for s in text.split("\n\n").filter(|s| !s.trim().is_empty()) {
            if s.lines().any(|l| l == format!("Package: {name}")) {
                let file = s
                    .lines()
                    .find_map(|l| l.strip_prefix("Filename: "))
                    .unwrap();
                fs::remove_file(self.dir.join("debian").join(file)).unwrap();
            } else {
                kept.push(s.trim_end().to_string());
            }
        }
        self.publish(&kept);
    }

    fn export_key(&self, to: &Path) {
        let o = Command::new("gpg")
            .arg("--homedir")
            .arg(&self.gnupg)
            .arg("--export")
            .output()
            .unwrap();
        assert!(o.status.success() && !o.stdout.is_empty());
        fs::write(to, o.stdout).unwrap();
    }
}

impl Drop for LocalMirror {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        // gpg started an agent for the key's folder: it goes too.
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.gnupg)
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

fn run(c: &mut Command) {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{c:?}: {}", common::text(&o.stderr));
}

/// Build `img` (its docker-archive only: the cheapest format to write, an
/// uncompressed tar) with the cache `cache` into a fresh folder.
fn build_with(
    img: &Path,
    name: &str,
    cache: &Path,
    extra: &[&str],
    offline: bool,
) -> (Output, PathBuf) {
    let out = scratch(name);
    let mut args = vec![
        "--cache",
        cache.to_str().unwrap(),
        "--format",
        "docker-archive",
    ];
    args.extend_from_slice(extra);
    let args = build_args(img, &out, &args);
    let c = if offline {
        // A network namespace of its own: not even 127.0.0.1 answers.
        let mut c = Command::new("unshare");
        c.arg("-n").arg(common::BIN).current_dir(repo());
        c
    } else {
        common::biovm_command(&repo())
    };
    (common::run_logged(c, &args), out)
}

/// The committed lock of the main job's image (whose build fills biovm's
/// store) as a lab would have it, its packages vendored and served by a
/// signed mirror on 127.0.0.1, and a copy of the image that takes them
/// from there with its key. Returns the mirror, the vendor folder and the
/// image file (beside it its lock, a copy of the committed one).
fn mirrored_lock(name: &str) -> (LocalMirror, PathBuf, PathBuf) {
    let plain = project_image(&format!("{name}-plain"));
    fs::copy(repo().join("images/minimal.lock"), lock_of(&plain)).unwrap();
    // Everything the lock names, in a folder that travels.
    let vendor = scratch(&format!("{name}-vendor"));
    let o = biovm(&[
        "--recipes",
        "recipes",
        "vendor",
        plain.to_str().unwrap(),
        "--out",
        vendor.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert!(vendor.join("vendor.toml").is_file());
    let mirror = LocalMirror::new(&format!("{name}-mirror"), &vendor);
    // The image takes its packages from that mirror, checked with its key;
    // the lock is the committed one, made from the Debian mirror.
    let img = project_image(name);
    mirror.export_key(&img.with_file_name("archive.gpg"));
    let text = fs::read_to_string(&img).unwrap().replace(
        "[base]\n",
        &format!(
            "[base]\nmirror = \"{}\"\nkeyring = \"archive.gpg\"\n",
            mirror.url()
        ),
    );
    fs::write(&img, text).unwrap();
    fs::copy(lock_of(&plain), lock_of(&img)).unwrap();
    (mirror, vendor, img)
}

#[test]
#[ignore = "needs root, network and minutes"]
fn a_lock_builds_after_the_mirror_drops_a_locked_version() {
    let _t = common::timed();
    let (mirror, vendor, img) = mirrored_lock("e2e-store");
    let lock = fs::read_to_string(lock_of(&img)).unwrap();
    let bwa_sha = lock
        .split("[[debian]]")
        .find(|b| b.contains("name = \"bwa\""))
        .and_then(|b| b.lines().find_map(|l| l.strip_prefix("sha256 = \"")))
        .map(|s| s.trim_end_matches('"').to_string())
        .unwrap();

    // 1. While the mirror has every locked version: a snapshot archive of
    // that state. An image names a point in time,
    // `biovm lock` records it and `biovm build` fetches from it.
    let archive = mirror.snapshot_at("20261201T000000Z");
    let snap = project_image("e2e-store-snapshot");
    mirror.export_key(&snap.with_file_name("archive.gpg"));
    let text = fs::read_to_string(&snap).unwrap().replace(
        "[recipes]\n",
        &format!(
            "[base.snapshot]\nurl = \"{archive}\"\ntime = \"2026-12-01T00:00:00Z\"\n\n[recipes]\n"
        ),
    );
    fs::write(
        &snap,
        text.replace("[base]\n", "[base]\nkeyring = \"archive.gpg\"\n"),
    )
    .unwrap();
    let snap_cache = scratch("e2e-store-cache-snapshot");
    let o = biovm(&[
        "--recipes",
        "recipes",
        "lock",
        snap.to_str().unwrap(),
        "--cache",
        snap_cache.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let snap_lock = fs::read_to_string(lock_of(&snap)).unwrap();
    assert!(snap_lock.contains("snapshot = \"2026-12-01T00:00:00Z\""));
    let debs = |l: &str| -> Vec<String> {
        l.split("[[debian]]")
            .skip(1)
            .map(|b| b.trim().to_string())
            .collect()
    };
    assert_eq!(
        debs(&snap_lock),
        debs(&lock),
        "the snapshot holds exactly the committed lock's packages"
    );
    let (o, _) = build_with(
        &snap,
        "e2e-store-snapshot-out",
        &scratch("e2e-store-cache-snapshot-build"),
        &[],
        false,
    );
    assert!(o.status.success());
    assert!(common::text(&o.stderr)
        .contains("locked packages come from the mirror, 0 from biovm's store"));

    // 2. A point release replaces bwa: the mirror no longer has the locked version.
    mirror.drop_package("bwa");

    // 3. biovm's store has bwa (an earlier build kept it): the rest comes
    // from the mirror, bwa from the store (the bytes are step 5's, which
    // come from neither).
    let cache = scratch("e2e-store-cache-b");
    let kept = cache.join("pool/sha256");
    fs::create_dir_all(&kept).unwrap();
    fs::copy(vendor.join("sha256").join(&bwa_sha), kept.join(&bwa_sha)).unwrap();
    // `lock --check` sees it first, without building: bwa is gone from the
    // mirror but kept, so a build works (exit 0); with an empty store it
    // would fail (exit 1).
    let empty = scratch("e2e-store-cache-c");
    for (c, code, kept) in [(&cache, 0, true), (&empty, 1, false)] {
        let o = super::lock::check(&img, c, &[]);
        assert_eq!(o.status.code(), Some(code));
        let out = common::text(&o.stdout);
        assert!(
            out.contains("1 locked version(s) the mirror no longer serves"),
            "{out}"
        );
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("bwa "))
            .unwrap_or_default();
        assert!(line.contains(&bwa_sha), "{out}");
        assert_eq!(line.ends_with(": in biovm's store"), kept, "{out}");
        assert_eq!(line.contains("not in biovm's store"), !kept, "{out}");
    }
    let (o, after) = build_with(&img, "e2e-store-after", &cache, &[], false);
    assert!(o.status.success());
    assert!(common::text(&o.stderr).contains("1 from biovm's store"));
    let sums = fs::read_to_string(after.join("SHA256SUMS")).unwrap();

    // 4. Neither the mirror nor the store has it: today's clear error, nothing written.
    let (o, failed) = build_with(
        &img,
        "e2e-store-gone",
        &scratch("e2e-store-cache-c"),
        &[],
        false,
    );
    assert_eq!(o.status.code(), Some(1));
    let e = common::text(&o.stderr);
    for needle in [
        "bwa",
        "biovm lock --update",
        "in neither biovm's store",
        "found before the bootstrap",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in: {e}");
    }
    assert!(names_in(&failed).is_empty(), "{:?}", names_in(&failed));

    // 5. From the vendor folder with no network at all: the same bytes as
    // from the mirror and the store.
    let (o, offline) = build_with(
        &img,
        "e2e-store-offline",
        &scratch("e2e-store-cache-d"),
        &["--vendor", vendor.to_str().unwrap()],
        true,
    );
    assert!(o.status.success());
    assert_eq!(
        fs::read_to_string(offline.join("SHA256SUMS")).unwrap(),
        sums
    );
}

/// `biovm sources IMG --out OUT --cache CACHE`.
fn sources_of(img: &Path, out: &Path, cache: &Path) -> Output {
    biovm(&[
        "--recipes",
        "recipes",
        "sources",
        img.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
    ])
}

#[test]
#[ignore = "needs root, network and minutes"]
fn the_sources_of_a_lock_come_checked_from_the_archive_and_stay_in_the_store() {
    let _t = common::timed();
    let (mirror, _vendor, img) = mirrored_lock("e2e-sources");
    let of_binary = mirror.add_sources();

    // 1. Every locked binary's source, from the archive's signed source
    // index, each file checked against it.
    let cache = scratch("e2e-sources-cache-a");
    let out = scratch("e2e-sources-out");
    let o = sources_of(&img, &out, &cache);
    assert!(o.status.success());
    let listing_text = fs::read_to_string(out.join("minimal.sources.json")).unwrap();
    let listing: serde_json::Value = serde_json::from_str(&listing_text).unwrap();
    let lock = fs::read_to_string(lock_of(&img)).unwrap();
    let locked: BTreeSet<String> = lock
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .map(|n| n.trim_end_matches('"').to_string())
        .collect();
    let mut listed = BTreeSet::new();
    for src in listing["debian"].as_array().unwrap() {
        let (package, version) = (
            src["package"].as_str().unwrap(),
            src["version"].as_str().unwrap(),
        );
        for b in src["binaries"].as_array().unwrap() {
            let b = b.as_str().unwrap();
            let name = b.split(' ').next().unwrap().to_string();
            let src = (package.to_string(), version.to_string());
            if b.ends_with(" (Built-Using)") {
                assert!(of_binary[&name][1..].contains(&src), "{b}: {src:?}");
            } else {
                assert_eq!(of_binary[&name][0], src, "{b}");
            }
            listed.insert(name);
        }
        for f in src["files"].as_array().unwrap() {
            let file = f["file"].as_str().unwrap();
            assert!(file.starts_with("sources/debian/"), "{file}");
            assert_eq!(biovm_sha(&out.join(file)), f["sha256"].as_str().unwrap());
            let name = file.rsplit('/').next().unwrap();
            assert_eq!(
                fs::read(out.join(file)).unwrap(),
                fs::read(mirror.source_file(package, name)).unwrap()
            );
        }
    }
    assert_eq!(listed, locked, "every locked binary, under its source");
    // The signed kernel's source holds the signatures; the kernel's own
    // source comes through its Built-Using.
    assert!(listing["debian"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["package"] == "linux"));
    let (bwa_src, bwa_version) = of_binary["bwa"][0].clone();
    let tarball = format!("{bwa_src}_{bwa_version}.tar.xz");

    // 2. The archive serves a file whose bytes are not the ones its signed
    // index lists: refused, naming the source, the URL and both hashes;
    // nothing is written.
    let good = fs::read(mirror.source_file(&bwa_src, &tarball)).unwrap();
    fs::write(mirror.source_file(&bwa_src, &tarball), b"tampered").unwrap();
    let out2 = scratch("e2e-sources-out-tampered");
    let o = sources_of(&img, &out2, &scratch("e2e-sources-cache-b"));
    assert_eq!(o.status.code(), Some(1));
    let e = common::text(&o.stderr);
    let expected = biovm_sha_bytes(&good);
    let actual = biovm_sha_bytes(b"tampered");
    for needle in [
        format!("source package {bwa_src} {bwa_version}"),
        format!("/pool/source/{bwa_src}/{tarball}"),
        expected.clone(),
        actual,
    ] {
        assert!(e.contains(&needle), "missing {needle:?} in: {e}");
    }
    assert!(names_in(&out2).is_empty(), "{:?}", names_in(&out2));
    fs::write(mirror.source_file(&bwa_src, &tarball), &good).unwrap();

    // 3. The archive drops bwa's source version (as it does old ones):
    // biovm's store still has it and what the index said of it, so the
    // sources come out the same; without the store, a clear error.
    mirror.drop_source(&bwa_src);
    let out3 = scratch("e2e-sources-out-kept");
    let o = sources_of(&img, &out3, &cache);
    assert!(o.status.success());
    assert_eq!(
        fs::read_to_string(out3.join("minimal.sources.json")).unwrap(),
        listing_text
    );
    let gone = scratch("e2e-sources-out-gone");
    let o = sources_of(&img, &gone, &scratch("e2e-sources-cache-c"));
    assert_eq!(o.status.code(), Some(1));
    let e = common::text(&o.stderr);
    for needle in [
        format!("{bwa_src} {bwa_version} (of bwa "),
        "[base.snapshot]".to_string(),
    ] {
        assert!(e.contains(&needle), "missing {needle:?} in: {e}");
    }
    assert!(names_in(&gone).is_empty(), "{:?}", names_in(&gone));
    // `biovm release --sources` collects them before it builds: the
    // release stops at once, with the same error, and writes no release.
    let rel = scratch("e2e-sources-release");
    let t = Instant::now();
    let o = biovm(&[
        "--recipes",
        "recipes",
        "release",
        img.to_str().unwrap(),
        "--out",
        rel.to_str().unwrap(),
        "--cache",
        scratch("e2e-sources-cache-d").to_str().unwrap(),
        "--sources",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = common::text(&o.stderr);
    assert!(
        e.contains("collecting the sources of its lock failed")
            && e.contains(&format!("{bwa_src} {bwa_version} (of bwa ")),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(120), "it built first");
    assert!(!rel.join("release.json").exists());
}

fn biovm_sha_bytes(b: &[u8]) -> String {
    let f = scratch("e2e-sources-sha").join("f");
    fs::write(&f, b).unwrap();
    biovm_sha(&f)
}
