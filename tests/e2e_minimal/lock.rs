//! The lock: it pins every package and refuses what does not match.

use super::*;

#[test]
#[ignore = "needs root, network and minutes"]
fn the_lock_pins_every_package_and_refuses_what_does_not_match() {
    let out = minimal();
    let img = out
        .parent()
        .unwrap()
        .join("e2e-project/images/minimal.toml");
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

    // 3. A tampered hash in the lock: the archive's signed index disagrees.
    let proj = project_image("e2e-lock-tampered");
    let zeros = "0".repeat(64);
    fs::write(
        lock_of(&proj),
        lock.replace(sha, &format!("sha256 = \"{zeros}\"")),
    )
    .unwrap();
    build_fails_writing_nothing(&proj, &["package bwa ", &zeros, "refusing to build"]);
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
