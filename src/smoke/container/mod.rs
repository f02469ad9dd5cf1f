//! The smoke test for container artifacts (OCI image layout,
//! docker-archive, Apptainer SIF, rootfs tarball): their root filesystem is
//! unpacked (`unpack`) and the checks drive's `run.sh` runs inside it the
//! way a container runtime would run it (this module).
//!
//! [`test_container`] runs the checks as root (with podman's default
//! capabilities) in private mount, PID, network (loopback only), IPC and
//! UTS namespaces (`unshare`), chrooted into the tree, with a fresh
//! `/proc`, a read-only `/sys`, a minimal `/dev` (tmpfs with the usual
//! character devices, `/dev/pts`, `/dev/shm`), and tmpfs `/run` and
//! `/tmp`, as podman would give a container. This is a faithful test
//! harness, not a sandbox for hostile images: root keeps CAP_SYS_CHROOT
//! and the tree is entered with chroot, not pivot_root. The checks
//! run from `/run/biovm-checks` (as in a booted image: a tmpfs) and report
//! to a results file the host reads as it grows; the report is judged
//! exactly as a boot's. The whole namespace is killed when the timeout
//! passes, and the unpacked tree is removed afterwards.

mod mounted;
mod unpack;

use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::checks::{write_checks_drive, ResultsTail};
use super::report::BootReport;
use super::tree;
use crate::cmd::Cmd;
use crate::config::Format;
use crate::fsutil;
use crate::manifest::Tool;
use unpack::set_mode;
pub use unpack::{stream_digest, unpack_and_digest, unpack_rootfs};

/// The container's fresh mount points; each must be a real folder in the
/// image (or absent: it is then made).
const MOUNT_POINTS: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("tmp", 0o1777),
];

/// The capabilities root keeps inside the container: podman's default set
/// (containers.conf `default_capabilities`), so a check that needs more
/// (mounting, raw sockets, loading modules) fails here as it would under
/// podman. Hex: 0x800405fb.
const CAPABILITIES: &str = "-all,+chown,+dac_override,+fowner,+fsetid,+kill,+net_bind_service,\
+setfcap,+setgid,+setpcap,+setuid,+sys_chroot";

/// Run by the host's `sh` as PID 1 of the new namespaces: the mounts a
/// container runtime makes, then the checks, chrooted into the tree with a
/// container's capabilities and a clean environment: as root (a container
/// artifact), or as the image's default user in a login shell, so with the
/// PATH and profile a researcher who logs in gets (the native run).
/// Arguments: root, checks archive, results folder, host name,
/// capabilities, then for a user: uid:gid, its groups (comma-separated
/// ids), name, home and shell.
const SETUP: &str = r#"set -eu
root=$1 checks=$2 results=$3 name=$4 caps=$5 ids=${6:-} groups=${7:-} user=${8:-} home=${9:-} shell=${10:-}
if [ -n "${BIOVM_DISK:-}" ]; then
    # The build's own disk (see mounted.rs): read-only under an overlay.
    l=$BIOVM_LAYERS
    mkdir "$l/lower" "$l/upper" "$l/work"
    mount -o "ro,noload,nodev,loop,offset=$BIOVM_DISK_OFFSET" "$BIOVM_DISK" "$l/lower"
    mount -t overlay -o "lowerdir=$l/lower,upperdir=$l/upper,workdir=$l/work" overlay "$root"
    if [ -n "${BIOVM_DATA_DISK:-}" ]; then
        mount -o ro,noload,nodev,loop "$BIOVM_DATA_DISK" "$root/$BIOVM_DATA_AT"
    fi
    if [ -n "${BIOVM_LEFT_OUT:-}" ]; then
        # What a container artifact does not hold (mounted.rs: left_out_of),
        # removed from the overlay only: the disk stays as it is.
        (cd "$root" && xargs -0 -r rm -rf --) <"$BIOVM_LEFT_OUT"
    fi
    for mp in $BIOVM_MOUNT_POINTS; do
        [ -d "$root/${mp%:*}" ] || mkdir -m "${mp#*:}" "$root/${mp%:*}"
    done
fi
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$root/run"
mkdir -m 0700 "$root/run/biovm-checks" "$root/run/biovm-results"
tar -xf "$checks" -C "$root/run/biovm-checks"
if [ -n "$ids" ]; then
    chown -R "$ids" "$root/run/biovm-checks" "$results"
fi
mount --bind "$results" "$root/run/biovm-results"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
mount -t tmpfs -o mode=0755,nosuid,size=65536k tmpfs "$root/dev"
mknod -m 0666 "$root/dev/null" c 1 3
mknod -m 0666 "$root/dev/zero" c 1 5
mknod -m 0666 "$root/dev/full" c 1 7
mknod -m 0666 "$root/dev/random" c 1 8
mknod -m 0666 "$root/dev/urandom" c 1 9
mknod -m 0666 "$root/dev/tty" c 5 0
mkdir "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
hostname "$name"
ip link set lo up
if [ -n "$ids" ]; then
    exec setpriv --bounding-set="$caps" \
        env -i PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 HOME="$home" USER="$user" \
        LOGNAME="$user" SHELL="$shell" BIOVM_CONTAINER=1 \
        BIOVM_RESULTS=/run/biovm-results/results.log \
        "$(command -v chroot)" --userspec="$ids" --groups="$groups" "$root" \
        /bin/sh -lc 'cd /run/biovm-checks && exec sh ./run.sh'
fi
exec setpriv --bounding-set="$caps" \
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
    HOME=/root BIOVM_CONTAINER=1 BIOVM_RESULTS=/run/biovm-results/results.log \
    chroot "$root" /bin/sh -c 'cd /run/biovm-checks && exec sh ./run.sh'
"#;

/// `root/rel`, each of whose components is a real folder of the tree at
/// `root` (not a link, which could point out of it).
fn real_folder_in(root: &Path, rel: &str) -> Result<std::path::PathBuf> {
    let mut p = root.to_path_buf();
    for c in rel.split('/') {
        p.push(c);
        if !fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            bail!(
                "{} in the image is not a folder; the data disk cannot be put at /{rel}",
                p.strip_prefix(root).unwrap_or(&p).display()
            );
        }
    }
    Ok(p)
}

/// Make sure every mount point is a real folder of the tree.
fn prepare_mount_points(root: &Path) -> Result<()> {
    for (mp, mode) in MOUNT_POINTS {
        let p = root.join(mp);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!(
                "/{mp} in the image is not a folder; the container's /{mp} cannot be mounted there"
            ),
            Err(_) => {
                fs::create_dir(&p).with_context(|| format!("cannot create {}", p.display()))?;
                set_mode(&p, *mode)?;
            }
        }
    }
    Ok(())
}

/// The image's host name (its /etc/hostname), or "biovm".
fn hostname_of(root: &Path) -> String {
    let text = fs::symlink_metadata(root.join("etc/hostname"))
        .ok()
        .filter(|m| m.is_file())
        .and_then(|_| fs::read_to_string(root.join("etc/hostname")).ok());
    valid_hostname(text)
}

/// The host name in the text of an /etc/hostname, or "biovm".
fn valid_hostname(text: Option<String>) -> String {
    let name = text.map(|s| s.trim().to_string()).unwrap_or_default();
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if valid {
        name
    } else {
        "biovm".into()
    }
}

/// A user of the image's tree, from its /etc/passwd and /etc/group.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Every group id (primary first).
    pub groups: Vec<u32>,
    pub home: String,
    pub shell: String,
}

/// Read `rel` of the tree at `root` without following a link out of it.
fn read_in_tree(root: &Path, rel: &str) -> Result<String> {
    let mut f = crate::confined::open_beneath(root, Path::new(rel))
        .with_context(|| format!("cannot read /{rel} of the image"))?;
    let mut s = String::new();
    f.read_to_string(&mut s)
        .with_context(|| format!("cannot read /{rel} of the image"))?;
    Ok(s)
}

/// `name`'s account in the tree at `root`.
pub fn tree_user(root: &Path, name: &str) -> Result<TreeUser> {
    account(&|rel| read_in_tree(root, rel), name)
}

/// `name`'s account in the image whose files `read` gives (by path
/// relative to its root).
fn account(read: &dyn Fn(&str) -> Result<String>, name: &str) -> Result<TreeUser> {
    let passwd = read("etc/passwd")?;
    let line = passwd
        .lines()
        .find(|l| l.split(':').next() == Some(name))
        .with_context(|| format!("the image's default user {name} is not in its /etc/passwd"))?;
    let f: Vec<&str> = line.split(':').collect();
    let num = |i: usize, what: &str| -> Result<u32> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("/etc/passwd of the image: bad {what} for {name}: {line:?}"))
    };
    let (uid, gid) = (num(2, "uid")?, num(3, "gid")?);
    let mut groups = vec![gid];
    let group = read("etc/group")?;
    for l in group.lines() {
        let g: Vec<&str> = l.split(':').collect();
        if let (Some(id), Some(members)) = (g.get(2).and_then(|v| v.parse::<u32>().ok()), g.get(3))
        {
            if members.split(',').any(|m| m == name) && !groups.contains(&id) {
                groups.push(id);
            }
        }
    }
    Ok(TreeUser {
        name: name.to_string(),
        uid,
        gid,
        groups,
        home: f.get(5).copied().unwrap_or("/").to_string(),
        shell: f.get(6).copied().unwrap_or("/bin/sh").to_string(),
    })
}

/// What a native run of the checks (in the tree read out of a disk) knows
/// beside the checks; a container artifact's run knows only the tree.
#[derive(Debug, Default, Clone, Copy)]
pub struct Native<'a> {
    /// The tree digest the build recorded, which the tree must have (for
    /// a container artifact, the digest of the tree its format holds).
    pub expected_tree: Option<&'a str>,
    /// The image's default user, who runs the checks.
    pub user: Option<&'a str>,
    /// The image's data disk, read into the tree where it is mounted.
    pub data_disk: Option<&'a super::DataDiskFiles>,
    /// Where the run's scratch folder goes once the results are in: its
    /// removal goes on while the caller does (the caller waits for it
    /// before it ends); none: removed before returning.
    pub removals: Option<&'a crate::fsutil::Removals>,
    /// For a container artifact with `expected_tree`: a disk artifact (and
    /// its format) of the same build, whose tree the same test runs every
    /// check in natively. When the container artifact's layers, read as
    /// they stream past ([`stream_digest`]), show that it holds that tree
    /// less what its format leaves out, its checks run in the disk's tree
    /// (mounted read-only under an overlay that removes what the format
    /// leaves out) instead of in an unpacked copy: the same files, not
    /// written out again (BioLinux's OCI layout: 10 GB, 160-173 s to
    /// unpack beside two boots). Otherwise it is unpacked as ever.
    pub tree_disk: Option<(&'a Path, Format)>,
}

/// Unpack the container artifact `artifact` (of `format`) into a temporary
/// folder under `run_dir`, run every check of `tools` inside it as a
/// container (see the module documentation) and judge the results as a
/// boot's are. A disk artifact is read instead: the disk the build wrote
/// is mounted read-only in the container's namespace (see `mounted`) and
/// digested on the host meanwhile (unless its build read it back from
/// those very bytes: see `tree::disk_digest`); any other disk's root
/// filesystem is copied out of it (no mount) and digested on the way. With
/// `native.expected_tree` (the build's tree digest) the report gets a
/// `system/same-tree` result saying whether the tree the checks ran in is
/// the one the build made, so these native checks stand for the disk's
/// boots. `timeout` bounds the run of the checks (not the unpacking);
/// when it passes, every process of the container is killed and the report
/// says so. The report's `firmware` and `accel` are "container" ("native"
/// for a disk), its `format` the format's name; `boot_secs` counts from
/// the start of the unpacking to the first result line; with `native.user`
/// (the image's default user) the checks run as that user of the tree, in
/// a login shell; with `native.data_disk` its tree is mounted (or read)
/// at the tree's data mount point and checked against the build's digest; the results the
/// container wrote are kept in `run_dir/<label>.results.log` (the report's
/// `serial_log`). Needs root.
pub fn test_container(
    artifact: &Path,
    format: Format,
    tools: &[Tool],
    run_dir: &Path,
    timeout: Duration,
    native: Native<'_>,
) -> Result<BootReport> {
    let Native {
        expected_tree,
        user,
        data_disk,
        removals,
        tree_disk,
    } = native;
    let native = format.is_disk();
    let label = if native {
        format!("{}-native", format.as_str())
    } else {
        format.as_str().to_string()
    };
    crate::doctor::require(crate::doctor::Need::ContainerTest)?;
    fs::create_dir_all(run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    let log_path = run_dir.join(format!("{label}.results.log"));
    let _ = fs::remove_file(&log_path);
    let t0 = Instant::now();
    let work = fsutil::Scratch::new_in(run_dir, &format!("{label}.container"))?;
    let root = work.join("root");
    let data_raw = data_disk.filter(|_| native).map(|d| d.raw.clone());
    // The container artifact's tree, known from its layers as they
    // streamed past, when its checks run in the disk's tree.
    let mut streamed = None;
    let disk = match (native, tree_disk, expected_tree) {
        (true, ..) if mounted::data_disk_as_built(data_disk)? => {
            mounted::BuiltDisk::of(artifact, format, work.path())?
        }
        (false, Some(disk), Some(want)) => {
            let t = in_disk_tree(artifact, format, disk, want, work.path())?;
            t.map(|(d, digest)| {
                streamed = Some(digest);
                d
            })
        }
        _ => None,
    };
    let left_out = work.join("left-out");
    let (digests, run_as, host) = match &disk {
        // A container artifact shown to hold the disk's tree: its checks
        // run as root in that tree, without what the format leaves out.
        Some(d) if streamed.is_some() => {
            d.check_mount_points(false)
                .with_context(|| format!("cannot run {} as a container", artifact.display()))?;
            make_overlay_folders(&root, &work.join("layers"))?;
            let list: Vec<u8> = d
                .left_out_of(format)?
                .into_iter()
                .flat_map(|p| p.into_iter().chain([0]))
                .collect();
            fs::write(&left_out, list)
                .with_context(|| format!("cannot write {}", left_out.display()))?;
            let host = valid_hostname(d.read("etc/hostname").ok());
            (Digests::Read(streamed.take(), None), None, host)
        }
        // The build's own disk: mounted in the container; its digests
        // are read on the host while the checks run.
        Some(d) => {
            d.check_mount_points(data_raw.is_some())
                .with_context(|| format!("cannot run {} as a container", artifact.display()))?;
            make_overlay_folders(&root, &work.join("layers"))?;
            let run_as = user.map(|u| account(&|rel| d.read(rel), u)).transpose()?;
            let host = valid_hostname(d.read("etc/hostname").ok());
            let (a, raw, data) = (artifact.to_path_buf(), d.raw.clone(), data_raw.clone());
            let (offset, mnt) = (d.offset(), work.join("digest"));
            let digests = std::thread::spawn(move || -> Result<(String, Option<String>)> {
                let t = tree::built_disk_digest(&a, format, &raw, offset, &mnt.join("root"))?;
                let d = data
                    .map(|p| tree::mounted_digest(&p, 0, &mnt.join("data")))
                    .transpose()?;
                Ok((t, d))
            });
            (Digests::Reading(digests), run_as, host)
        }
        None => {
            let tree = unpack_tree(artifact, format, work.path(), &root, expected_tree)?;
            // The data disk's tree goes where the image mounts it: a real
            // folder of the tree, never through a link the image holds.
            let data_tree = data_raw
                .as_deref()
                .map(|raw| {
                    let at = real_folder_in(&root, crate::config::DATA_ROOT)?;
                    tree::data_disk_digest(raw, Some(&at))
                })
                .transpose()?;
            log::info!(
                "{}: unpacked in {:.1} s",
                artifact.display(),
                t0.elapsed().as_secs_f64()
            );
            prepare_mount_points(&root)
                .with_context(|| format!("cannot run {} as a container", artifact.display()))?;
            let run_as = user.map(|u| tree_user(&root, u)).transpose()?;
            let digests = Digests::Read(tree, data_tree);
            (digests, run_as, hostname_of(&root))
        }
    };
    let checks = work.join("checks.tar");
    write_checks_drive(tools, &checks)?;
    let results_dir = work.join("results");
    fs::create_dir(&results_dir)
        .with_context(|| format!("cannot create {}", results_dir.display()))?;
    let results = results_dir.join("results.log");

    let mut report = BootReport::in_namespaces(artifact, format, log_path.clone());
    report.prepare_secs = t0.elapsed().as_secs_f64();
    report.user = run_as.as_ref().map(|u| u.name.clone());
    report.disk_mounted = disk.is_some();
    let mut cmd = container_command(&root, &checks, &results_dir, run_as.as_ref(), &host);
    if let Some(d) = &disk {
        d.mount_in(&mut cmd, &work.join("layers"), data_raw.as_deref());
        if !native {
            cmd.env("BIOVM_LEFT_OUT", &left_out);
            report.tree_of = tree_disk
                .and_then(|(p, _)| p.file_name())
                .map(|n| n.to_string_lossy().into_owned());
        }
    }
    let run_t0 = Instant::now();
    let mut child = cmd.spawn()?;
    let done = watch_container(
        &mut child,
        &results,
        tools,
        &mut report,
        t0,
        run_t0,
        timeout,
    );
    stop_container(&mut child, &label, done, &mut report);
    report.total_secs = t0.elapsed().as_secs_f64();
    report.mark_not_run(tools);
    let (tree, data_tree) = digests.finish(artifact)?;
    if let (Some(got), Some(want)) = (&tree, expected_tree) {
        report.results.push(match native {
            true => tree::same_tree_result(artifact, want, got),
            false => tree::same_container_tree_result(want, got),
        });
    }
    if let (Some(got), Some(d)) = (&data_tree, data_disk) {
        report
            .results
            .push(tree::same_data_tree_result(&d.tree_sha256, got));
    }
    keep_results(&results, &log_path)?;
    match removals {
        Some(r) => r.remove(work),
        None => {
            let t_rm = Instant::now();
            drop(work);
            log::info!(
                "{}: the run's scratch folder (the unpacked tree or the overlay's writes) \
                 removed in {:.1} s",
                artifact.display(),
                t_rm.elapsed().as_secs_f64()
            );
        }
    }
    Ok(report)
}

/// The digests of the tree the checks ran in and of the data disk's tree:
/// read while they were copied out, or being read from the mounted disks
/// beside the checks.
enum Digests {
    Read(Option<String>, Option<String>),
    Reading(std::thread::JoinHandle<Result<(String, Option<String>)>>),
}

impl Digests {
    /// Both digests, once read (of `artifact`'s disk).
    fn finish(self, artifact: &Path) -> Result<(Option<String>, Option<String>)> {
        match self {
            Digests::Read(t, d) => Ok((t, d)),
            Digests::Reading(h) => {
                let (t, d) = h.join().map_err(|_| {
                    anyhow::anyhow!("reading {}'s root filesystem failed", artifact.display())
                })??;
                Ok((Some(t), d))
            }
        }
    }
}

/// The folders a mounted disk's overlay needs: the mount point `root` and
/// `layers` (for its lower, upper and work folders).
fn make_overlay_folders(root: &Path, layers: &Path) -> Result<()> {
    for p in [root, layers] {
        fs::create_dir(p).with_context(|| format!("cannot create {}", p.display()))?;
    }
    Ok(())
}

/// The disk `tree_disk` (artifact and format) to run the checks of the
/// container artifact `artifact` (of `format`) in, with the digest of the
/// tree the artifact holds, when that digest (read from its layers as they
/// stream past: nothing written) is `want` (the build's, of the tree the
/// native checks ran in, less what the format leaves out) and the disk has
/// its build's bytes. None otherwise: the artifact is then unpacked, and
/// its own tree digested and checked.
fn in_disk_tree(
    artifact: &Path,
    format: Format,
    (disk, disk_format): (&Path, Format),
    want: &str,
    work: &Path,
) -> Result<Option<(mounted::BuiltDisk, String)>> {
    // The disk first: when it cannot be mounted, the layers' reading
    // would be thrown away, and the unpack read them again.
    let Some(d) = mounted::BuiltDisk::of(disk, disk_format, work)? else {
        return Ok(None);
    };
    let t0 = Instant::now();
    let Some(got) = stream_digest(artifact, format)? else {
        log::info!(
            "{}: its layers alone do not say what it unpacks to: it is unpacked",
            artifact.display()
        );
        return Ok(None);
    };
    if got != want {
        log::warn!(
            "{}: its layers hold the tree {got}, not the build's {want}: it is unpacked, \
             its checks run in its own tree",
            artifact.display()
        );
        return Ok(None);
    }
    log::info!(
        "{}: its layers, read in {:.1} s with nothing written, hold the tree of {} \
         (less what the format leaves out): its checks run in that tree",
        artifact.display(),
        t0.elapsed().as_secs_f64(),
        disk.display()
    );
    Ok(Some((d, got)))
}

/// The root tree of `artifact` at `root` (in the scratch folder `work`): a
/// container artifact unpacked, or a disk's root filesystem copied out and
/// digested on the way (the digest is returned).
fn unpack_tree(
    artifact: &Path,
    format: Format,
    work: &Path,
    root: &Path,
    expected: Option<&str>,
) -> Result<Option<String>> {
    if format.is_disk() {
        fs::create_dir(root).with_context(|| format!("cannot create {}", root.display()))?;
        return Ok(Some(tree::disk_digest(artifact, format, work, Some(root))?));
    }
    if expected.is_none() {
        unpack_rootfs(artifact, format, root)?;
        return Ok(None);
    }
    // Digested as unpacked, before the checks run in it (as root, they
    // could write to it).
    let t0 = Instant::now();
    let (d, recorded) = unpack_and_digest(artifact, format, root)?;
    log::info!(
        "{}: unpacked and digested in {:.1} s ({})",
        artifact.display(),
        t0.elapsed().as_secs_f64(),
        match recorded {
            true => "each file as it was written",
            false => "the tree read again",
        }
    );
    Ok(Some(d))
}

/// The command that runs the checks archive `checks` in the tree at `root`
/// as a container ([`SETUP`] in new namespaces), writing to `results_dir`:
/// as root, or as `run_as`.
fn container_command(
    root: &Path,
    checks: &Path,
    results_dir: &Path,
    run_as: Option<&TreeUser>,
    host: &str,
) -> Cmd {
    let mut cmd = Cmd::new("unshare");
    // --kill-child: when unshare dies (or is killed at the timeout), the
    // namespace's PID 1 gets SIGKILL, and with it every process inside.
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--fork",
        "--kill-child",
        "--net",
        "--ipc",
        "--uts",
        "--",
        "sh",
        "-c",
        SETUP,
        "biovm-container",
    ])
    .arg(root)
    .arg(checks)
    .arg(results_dir)
    .arg(host)
    .arg(CAPABILITIES);
    if let Some(u) = run_as {
        let groups: Vec<String> = u.groups.iter().map(|g| g.to_string()).collect();
        cmd.arg(format!("{}:{}", u.uid, u.gid))
            .arg(groups.join(","))
            .args([&u.name, &u.home, &u.shell]);
    }
    cmd
}

/// Follow the running container (its checks started at `run_t0`, the test
/// at `t0`): read the results file into `report` as it grows, until the
/// checks are done (true), the container ends, or `timeout` passes (which
/// the report's error says).
fn watch_container(
    child: &mut crate::cmd::Running,
    results: &Path,
    tools: &[Tool],
    report: &mut BootReport,
    t0: Instant,
    run_t0: Instant,
    timeout: Duration,
) -> bool {
    let mut tail = ResultsTail::new(results);
    let mut done = false;
    loop {
        let exited = child.try_wait();
        done |= tail.pump(report, tools, t0, false);
        if done || exited.is_some() {
            break;
        }
        if run_t0.elapsed() > timeout {
            report.error = Some(format!(
                "the checks did not finish within {} s; the container was stopped",
                timeout.as_secs()
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done
}

/// Stop the container: after its checks, give it a moment to end; when it
/// ended early and no error says why, the report's error says how.
fn stop_container(
    child: &mut crate::cmd::Running,
    label: &str,
    done: bool,
    report: &mut BootReport,
) {
    if done {
        // run.sh is the namespace's PID 1: its end ends the container.
        if child.wait_timeout(Duration::from_secs(10)).is_none() {
            log::warn!("{label} container did not end after its checks; stopping it");
        }
    } else if report.error.is_none() {
        let status = child
            .try_wait()
            .map(crate::cmd::describe_status)
            .unwrap_or_default();
        let tail = child.stderr_tail();
        report.error = Some(format!(
            "the container ended ({status}) before the checks finished: {}",
            tail.lines().last().unwrap_or("it wrote nothing on stderr")
        ));
    }
    child.kill();
}

/// Keep the results the container wrote at `log_path` (the report's
/// `serial_log`); a container that wrote none leaves none.
fn keep_results(results: &Path, log_path: &Path) -> Result<()> {
    match fs::rename(results, log_path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot move {} to {}",
                    results.display(),
                    log_path.display()
                )
            })
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
