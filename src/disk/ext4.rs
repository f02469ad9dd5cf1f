//! Making the ext4 root filesystem independent of when it was built.
//!
//! `mkfs.ext4 -d` (e2fsprogs 1.47) walks the tree in sorted order, so inode
//! numbers, block allocation and directory layout follow the tree alone, and
//! `E2FSPROGS_FAKE_TIME` fixes the superblock times and every inode's
//! creation time. What it cannot fix is what it copies from the staging
//! tree's `stat`: each inode's change time (set by the kernel whenever the
//! tree was written, so never settable from user space) and its access time
//! (whenever something last read the file). mtimes are already clamped to
//! SOURCE_DATE_EPOCH before mkfs. [`normalize_times`] then sets ctime, atime
//! and crtime of every inode in use to SOURCE_DATE_EPOCH with `debugfs -w`
//! (which rewrites each inode's checksum too), with debugfs' own clock set to
//! SOURCE_DATE_EPOCH so whatever it stamps is fixed as well.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::cmd::Cmd;

/// The folder to run e2fsprogs in and the device name for the filesystem
/// at `offset` in `disk`: e2fsprogs reads options after a '?' in the
/// device name, so the file is named relative to its own folder
/// (temporary names hold no '?').
fn device_at(disk: &Path, offset: u64) -> Result<(&Path, String)> {
    let dir = disk
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = disk
        .file_name()
        .context("disk image has no file name")?
        .to_string_lossy();
    if name.contains('?') {
        bail!("{}: a disk file name cannot contain '?'", disk.display());
    }
    Ok((dir, format!("{name}?offset={offset}")))
}

/// Index every folder of the filesystem at `offset` in `disk` (`e2fsck
/// -fD`: hashed b-tree directories). `mkfs.ext4 -d` writes every folder as
/// a plain list, so finding one name in /usr/lib/x86_64-linux-gnu or
/// /usr/share/doc (thousands of entries) reads the whole list: in the
/// guest's kernel, and in biovm's own reader of the disk (`smoke::tree`),
/// where such lookups were half the time spent copying BioLinux's tree out
/// of its disk. The hash seed is fixed at mkfs time and e2fsck's clock is
/// set to SOURCE_DATE_EPOCH (`E2FSCK_TIME`), so the result is reproducible. Run before
/// [`normalize_times`] (the rewritten folders get new times).
pub(crate) fn index_directories(disk: &Path, offset: u64, epoch: u64) -> Result<()> {
    let (dir, device) = device_at(disk, offset)?;
    let out = std::process::Command::new("e2fsck")
        .current_dir(dir)
        // e2fsck's own clock (last check, last write) and the library's.
        .env("E2FSCK_TIME", epoch.to_string())
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .args(["-f", "-y", "-D"])
        .arg(&device)
        .stdin(std::process::Stdio::null())
        .output()
        .context("cannot run e2fsck (e2fsprogs)")?;
    // 0: nothing to change; 1: changed (the folders were indexed).
    match out.status.code() {
        Some(0 | 1) => Ok(()),
        _ => bail!(
            "indexing the folders of the root filesystem in {} failed (`e2fsck -f -y -D {device}`, {}):\n{}{}",
            disk.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The inodes a filesystem uses, from `dumpe2fs` output: inode 2 (the root
/// folder) and every allocated inode from `First inode` on. The reserved
/// inodes below it (journal, resize inode, ...) are written by mkfs with its
/// fake time and left alone.
pub(crate) fn used_inodes(dumpe2fs: &str) -> Result<Vec<u32>> {
    let field = |name: &str| -> Result<u32> {
        dumpe2fs
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .with_context(|| format!("dumpe2fs output has no {name:?}"))
    };
    let count = field("Inode count:")?;
    let per_group = field("Inodes per group:")?;
    let first = field("First inode:")?;
    let groups: Vec<&str> = dumpe2fs
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("Free inodes:"))
        // The header's total has no leading space; group lines are indented.
        .skip(1)
        .collect();
    if per_group == 0 || groups.len() as u64 != u64::from(count).div_ceil(u64::from(per_group)) {
        bail!(
            "dumpe2fs lists {} groups' free inodes for {count} inodes, {per_group} per group",
            groups.len()
        );
    }
    let mut used = vec![2u32];
    for (g, list) in groups.iter().enumerate() {
        let start = g as u32 * per_group + 1;
        let end = (start + per_group - 1).min(count);
        let mut free = vec![false; (end - start + 1) as usize];
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let (a, b): (u32, u32) = match (a.parse(), b.parse()) {
                (Ok(a), Ok(b)) if a <= b && a >= start && b <= end => (a, b),
                _ => bail!("dumpe2fs: cannot read free inodes {part:?} of group {g}"),
            };
            for i in a..=b {
                free[(i - start) as usize] = true;
            }
        }
        used.extend((start..=end).filter(|i| *i >= first && !free[(i - start) as usize]));
    }
    Ok(used)
}

/// The debugfs script setting every time of `inodes` to `epoch`.
pub(crate) fn script(inodes: &[u32], epoch: u64) -> String {
    let mut s = format!("set_current_time @{epoch}\n");
    for i in inodes {
        for field in ["ctime", "atime", "crtime"] {
            let _ = writeln!(s, "sif <{i}> {field} @{epoch}");
        }
    }
    s
}

/// Set ctime, atime and crtime of every inode in use of the ext4 filesystem
/// at byte `offset` of `disk` to `epoch`. `work` holds the script.
pub(crate) fn normalize_times(disk: &Path, offset: u64, epoch: u64, work: &Path) -> Result<()> {
    let (dir, device) = device_at(disk, offset)?;
    let listing = Cmd::new("dumpe2fs")
        .current_dir(dir)
        .arg(&device)
        .output()
        .with_context(|| format!("reading the root filesystem of {}", disk.display()))?;
    let inodes = used_inodes(&listing)
        .with_context(|| format!("reading the root filesystem of {}", disk.display()))?;
    let script_path = work
        .canonicalize()
        .with_context(|| format!("cannot find {}", work.display()))?
        .join("ext4-times.debugfs");
    std::fs::write(&script_path, script(&inodes, epoch))
        .with_context(|| format!("cannot write {}", script_path.display()))?;
    // debugfs exits 0 even when a command fails; its stderr carries only
    // its banner when every command succeeded.
    let mut run = Cmd::new("debugfs")
        .current_dir(dir)
        .arg("-w")
        .arg("-f")
        .arg(&script_path)
        .arg(&device)
        .spawn()?;
    run.finish()?;
    let errors: Vec<String> = run
        .stderr_tail()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .map(str::to_string)
        .collect();
    if !errors.is_empty() {
        bail!(
            "setting the inode times of the root filesystem in {} failed (`{}`):\n    {}",
            disk.display(),
            run.command(),
            errors.join("\n    ")
        );
    }
    log::debug!("set the times of {} inodes to {epoch}", inodes.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "Filesystem volume name:   biovm-root\n\
Inode count:              48\n\
Free inodes:              30\n\
Inodes per group:         16\n\
First inode:              11\n\
\n\
Group 0: (Blocks 0-32767) csum 0x2723 [ITABLE_ZEROED]\n\
  Free inodes: 14-15\n\
Group 1: (Blocks 32768-65535)\n\
  Free inodes: 17, 19-32\n\
Group 2: (Blocks 65536-98303) [INODE_UNINIT]\n\
  Free inodes: 33-48\n";

    #[test]
    fn used_inodes_skip_free_and_reserved_ones() {
        assert_eq!(
            used_inodes(DUMP).unwrap(),
            vec![2, 11, 12, 13, 16, 18],
            "root, lost+found, then the allocated ones"
        );
    }

    #[test]
    fn a_truncated_listing_is_refused() {
        let cut = DUMP.rsplit_once("Group 2").unwrap().0;
        let e = used_inodes(cut).unwrap_err().to_string();
        assert!(e.contains("2 groups"), "{e}");
        let bad = DUMP.replace("19-32", "19-99");
        assert!(used_inodes(&bad).is_err());
    }

    #[test]
    fn script_sets_the_clock_and_three_times_per_inode() {
        let s = script(&[2, 11], 1_700_000_000);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "set_current_time @1700000000");
        assert_eq!(lines.len(), 1 + 6);
        assert!(lines.contains(&"sif <11> crtime @1700000000"));
    }

    /// A real filesystem built twice from a tree whose ctimes and atimes
    /// differ gives the same bytes once normalised.
    #[test]
    fn two_filesystems_from_one_tree_are_identical() {
        if which::which("mkfs.ext4").is_err() || which::which("debugfs").is_err() {
            panic!("e2fsprogs (mkfs.ext4, debugfs, dumpe2fs) is required");
        }
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        std::fs::create_dir_all(tree.join("etc/sub")).unwrap();
        std::fs::write(tree.join("etc/a"), b"a").unwrap();
        std::fs::write(tree.join("etc/sub/b"), b"b").unwrap();
        // A folder of more than one block's entries: indexed.
        std::fs::create_dir_all(tree.join("big")).unwrap();
        for i in 0..300 {
            std::fs::write(tree.join(format!("big/file-with-a-long-name-{i:04}")), b"").unwrap();
        }
        let epoch = 1_600_000_000u64;
        let make = |name: &str| {
            // Touch the tree so ctimes (and atimes) move between the two.
            std::fs::write(tree.join("etc/a"), b"a").unwrap();
            let _ = std::fs::read(tree.join("etc/sub/b")).unwrap();
            crate::fsutil::clamp_mtimes(&tree, epoch).unwrap();
            let img = d.path().join(name);
            let f = std::fs::File::create(&img).unwrap();
            f.set_len(8 << 20).unwrap();
            Cmd::new("mkfs.ext4")
                .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
                .args(["-q", "-F", "-U", "a8a4e4c5-6a2c-4a4e-8f59-0f1e2d3c4b5a"])
                .args([
                    "-E",
                    "offset=1048576,hash_seed=a8a4e4c5-6a2c-4a4e-8f59-0f1e2d3c4b5a",
                ])
                .arg("-d")
                .arg(&tree)
                .arg(&img)
                .arg("7M")
                .run()
                .unwrap();
            index_directories(&img, 1 << 20, epoch).unwrap();
            normalize_times(&img, 1 << 20, epoch, d.path()).unwrap();
            std::fs::read(&img).unwrap()
        };
        let a = make("a.img");
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let b = make("b.img");
        assert!(a == b, "the two filesystems differ");
        let stat = Cmd::new("debugfs")
            .current_dir(d.path())
            .args(["-R", "stat /etc/sub/b", "a.img?offset=1048576"])
            .output()
            .unwrap();
        for f in ["ctime", " atime", " mtime", "crtime"] {
            let line = stat.lines().find(|l| l.contains(&format!("{f}:"))).unwrap();
            assert!(line.contains("0x5f5e1000"), "{line}");
        }
        let big = Cmd::new("debugfs")
            .current_dir(d.path())
            .args(["-R", "stat /big", "a.img?offset=1048576"])
            .output()
            .unwrap();
        let flags = big.split("Flags: 0x").nth(1).unwrap();
        let flags = u32::from_str_radix(flags.split_whitespace().next().unwrap(), 16).unwrap();
        assert_ne!(flags & 0x1000, 0, "/big is indexed: {big}");
        Cmd::new("e2fsck")
            .current_dir(d.path())
            .args(["-fn", "a.img?offset=1048576"])
            .run()
            .unwrap();
    }
}
