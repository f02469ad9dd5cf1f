//! The lock: it pins every package and refuses what does not match.

use super::*;

#[test]
#[ignore = "needs root, network and minutes"]
fn the_lock_pins_every_package_and_refuses_what_does_not_match() {
    let _t = common::timed();
    let img = repo().join("images/minimal.toml");
    let lock = fs::read_to_string(lock_of(&img)).unwrap();
    // Every package of the closure with version and sha256: the kernel and libc too.
    for name in ["linux-image-amd64", "libc6", "samtools", "bwa", "systemd"] {
        assert!(
            lock.contains(&format!("name = \"{name}\"")),
            "{name} is locked"
        );
    }
    assert!(lock.contains("source-date-epoch = "));
    let bwa_block = lock
        .split("[[debian]]")
        .find(|b| b.contains("name = \"bwa\""))
        .unwrap();
    let sha = bwa_block.lines().find(|l| l.starts_with("sha256")).unwrap();
    assert_eq!(sha.len(), "sha256 = \"\"".len() + 64, "{sha}");

    // 1. The image asks for something the lock does not have: stopped at once.
    let proj = project_image("e2e-lock-mismatch");
    fs::copy(lock_of(&img), lock_of(&proj)).unwrap();
    let text = fs::read_to_string(&proj).unwrap().replace(
        "packages = [\"less\", \"nano\"]",
        "packages = [\"less\", \"nano\", \"tree\"]",
    );
    fs::write(&proj, text).unwrap();
    build_fails_writing_nothing(
        &proj,
        &[
            "no longer matches the image: now also asks for tree",
            "biovm lock --update",
        ],
    );

    // 2. A locked version the mirror does not have: stopped before anything is written.
    let proj = project_image("e2e-lock-gone");
    let bwa_version = bwa_block
        .lines()
        .find(|l| l.starts_with("version"))
        .unwrap();
    fs::write(
        lock_of(&proj),
        lock.replace(bwa_version, "version = \"0.0.1-1\""),
    )
    .unwrap();
    build_fails_writing_nothing(&proj, &["bwa", "0.0.1-1", "biovm lock --update"]);

    // 3. A tampered hash in the lock: the archive's signed index disagrees,
    // which the build reads before its bootstrap.
    let proj = project_image("e2e-lock-tampered");
    let zeros = "0".repeat(64);
    fs::write(
        lock_of(&proj),
        lock.replace(sha, &format!("sha256 = \"{zeros}\"")),
    )
    .unwrap();
    build_fails_writing_nothing(
        &proj,
        &[
            "package bwa ",
            &zeros,
            "refusing to build",
            "found before the bootstrap",
        ],
    );
}

/// Build `img` into a fresh folder: it must fail with an error containing
/// every one of `needles` and leave the folder empty.
fn build_fails_writing_nothing(img: &Path, needles: &[&str]) {
    // The project folder is <scratch>/<project>/images/minimal.toml.
    let project = img
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .unwrap();
    let out = scratch(&format!("{}-out", project.to_string_lossy()));
    let o = build_into(img, &out);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    for n in needles {
        assert!(e.contains(n), "missing {n:?} in: {e}");
    }
    assert!(names_in(&out).is_empty(), "{:?}", names_in(&out));
}

/// `lock --check` downloads only the mirror's signed indices (no
/// bootstrap): a locked version the mirror does not serve is named with
/// where it is still kept, and the status says whether a build would fail.
#[test]
#[ignore = "needs root, network and minutes"]
fn lock_check_names_a_gone_version_and_where_it_is_kept() {
    let _t = common::timed();
    let img = project_image("e2e-lock-check");
    let committed = fs::read_to_string(repo().join("images/minimal.lock")).unwrap();
    let bwa_block = committed
        .split("[[debian]]")
        .find(|b| b.contains("name = \"bwa\""))
        .unwrap();
    let line = |key: &str| bwa_block.lines().find(|l| l.starts_with(key)).unwrap();
    let gone_version = committed.replace(line("version"), "version = \"0.0.1-1\"");

    // 1. Not in an (empty) store: a build would fail.
    fs::write(lock_of(&img), &gone_version).unwrap();
    let cache = scratch("e2e-lock-check-cache");
    let o = check(&img, &cache, &[]);
    assert_eq!(o.status.code(), Some(1));
    let out = common::text(&o.stdout);
    let bwa = out.lines().find(|l| l.contains("bwa 0.0.1-1")).unwrap();
    assert!(bwa.contains("not in biovm's store"), "{bwa}");
    assert!(out.contains("a build from this lock would fail"), "{out}");
    assert!(out.contains("biovm lock --update"), "{out}");

    // 2. Its file in the package cache (taken into the store) and in a
    // vendor folder: kept in both, so it does not fail a build.
    let content = b"biovm e2e: a package only this test has";
    let deb = cache.join("debs/bookworm-amd64/bwa_0.0.1-1_amd64.deb");
    fs::create_dir_all(deb.parent().unwrap()).unwrap();
    fs::write(&deb, content).unwrap();
    let sha = biovm_sha(&deb);
    let vendor = scratch("e2e-lock-check-vendor");
    fs::create_dir_all(vendor.join("sha256")).unwrap();
    fs::write(vendor.join("sha256").join(&sha), content).unwrap();
    fs::write(
        lock_of(&img),
        gone_version.replace(line("sha256"), &format!("sha256 = \"{sha}\"")),
    )
    .unwrap();
    let o = check(
        &img,
        &cache,
        &["--json", "--vendor", vendor.to_str().unwrap()],
    );
    let result: serde_json::Value = common::text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event"] == "result")
        .unwrap();
    let r = &result["result"];
    let gone = r["gone"].as_array().unwrap();
    let bwa = gone.iter().find(|g| g["name"] == "bwa").unwrap();
    assert_eq!(bwa["version"], "0.0.1-1");
    assert_eq!(bwa["in_store"], true, "{bwa}");
    assert_eq!(bwa["in_vendor"], true, "{bwa}");
    assert!(r["superseded"].is_array(), "{r}");
    // Whatever else Debian dropped today: the status follows the result.
    let buildable = gone
        .iter()
        .all(|g| g["in_store"] == true || g["in_vendor"] == true);
    assert_eq!(r["buildable"], buildable);
    assert_eq!(o.status.success(), buildable);
}

/// `biovm lock --check IMG --cache CACHE EXTRA...` with the repository's recipes.
pub(crate) fn check(img: &Path, cache: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "--recipes",
        "recipes",
        "lock",
        "--check",
        img.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    biovm(&args)
}
