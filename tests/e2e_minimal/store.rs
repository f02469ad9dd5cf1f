//! A lock builds on any day: a signed mirror on 127.0.0.1 serves the
//! locked packages, then drops one (as a point release does); the build
//! still gives the same bytes from biovm's store or a vendor folder, with
//! no network at all from the latter, and fails clearly with neither.

use super::*;

/// A signed Debian archive (one suite, `main`, amd64) served over HTTP on
/// 127.0.0.1, made from a vendor folder's packages.
struct LocalMirror {
    dir: PathBuf,
    gnupg: PathBuf,
    server: std::process::Child,
    port: u16,
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
        self.publish_suite("bookworm", &packages);
        self.publish_suite("bookworm-updates", "");
    }

    fn publish_suite(&self, suite: &str, packages: &str) {
        let dists = self.dir.join("debian/dists").join(suite);
        let bin = dists.join("main/binary-amd64");
        fs::create_dir_all(&bin).unwrap();
        fs::write(bin.join("Packages"), packages).unwrap();
        let date = String::from_utf8(
            Command::new("date")
                .args(["-u", "-R"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let release = format!(
            "Origin: biovm test\nSuite: {suite}\nCodename: {suite}\nDate: {}\nArchitectures: amd64\nComponents: main\nSHA256:\n {} {} main/binary-amd64/Packages\n",
            date.trim(),
            biovm_sha(&bin.join("Packages")),
            packages.len()
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

/// Build `img` (its tarball only) with the cache `cache` into a fresh folder.
fn build_with(
    img: &Path,
    name: &str,
    cache: &Path,
    extra: &[&str],
    offline: bool,
) -> (Output, PathBuf) {
    let out = scratch(name);
    let mut args = vec!["--cache", cache.to_str().unwrap(), "--format", "tarball"];
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

#[test]
#[ignore = "needs root, network and minutes"]
fn a_lock_builds_after_the_mirror_drops_a_locked_version() {
    // The committed lock of the main job's image (whose build fills biovm's
    // store), as a lab would have it.
    let plain = project_image("e2e-store-plain");
    fs::copy(repo().join("images/minimal.lock"), lock_of(&plain)).unwrap();
    // Everything the lock names, in a folder that travels.
    let vendor = scratch("e2e-store-vendor");
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

    let mirror = LocalMirror::new("e2e-store-mirror", &vendor);
    // The image takes its packages from that mirror, checked with its key;
    // the lock is the committed one, made from the Debian mirror.
    let img = project_image("e2e-store");
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
    let lock = fs::read_to_string(lock_of(&img)).unwrap();
    let bwa_sha = lock
        .split("[[debian]]")
        .find(|b| b.contains("name = \"bwa\""))
        .and_then(|b| b.lines().find_map(|l| l.strip_prefix("sha256 = \"")))
        .map(|s| s.trim_end_matches('"').to_string())
        .unwrap();

    // 1. While the mirror has every locked version.
    let (o, before) = build_with(
        &img,
        "e2e-store-before",
        &scratch("e2e-store-cache-a"),
        &[],
        false,
    );
    assert!(o.status.success());
    let sums = fs::read_to_string(before.join("SHA256SUMS")).unwrap();

    // A snapshot archive of that state: an image names a point in time,
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
    // from the mirror, bwa from the store, and the bytes are the same.
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
    assert_eq!(fs::read_to_string(after.join("SHA256SUMS")).unwrap(), sums);

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
    for needle in ["bwa", "biovm lock --update", "in neither biovm's store"] {
        assert!(e.contains(needle), "missing {needle:?} in: {e}");
    }
    assert!(names_in(&failed).is_empty(), "{:?}", names_in(&failed));

    // 5. From the vendor folder with no network at all: the same bytes.
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
