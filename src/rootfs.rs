//! Stage 1: the root filesystem. mmdebstrap bootstraps Debian with the
//! kernel, systemd, the recipes' packages and the image's own, through a
//! package cache shared by every build; then biovm applies the system
//! settings directly to the tree (no shell scripts baked from strings).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cmd::Cmd;
use crate::config::Image;
use crate::confined::Tree;
use crate::disk::DiskIds;

/// Debian packages every image gets, whatever its recipes, beside its
/// kernel (`config::Kernel`): systemd, SSH, cloud-init with growpart, and
/// the basics a researcher expects on a server.
pub(crate) const BASE_PACKAGES: &[&str] = &[
    "ca-certificates",
    "cloud-guest-utils",
    "cloud-init",
    "dbus",
    "e2fsprogs",
    "initramfs-tools",
    "netbase",
    "openssh-server",
    "sudo",
    "systemd-resolved",
    "systemd-sysv",
    "tzdata",
    "udev",
];

/// The full sorted set of Debian packages an image asks for (recipes, the
/// image's own list, and `BASE_PACKAGES`), in apt's `name[=version]` form.
pub fn requested_packages(image: &Image) -> Vec<String> {
    let mut set: BTreeSet<String> = BASE_PACKAGES.iter().map(|s| s.to_string()).collect();
    set.insert(image.base.kernel.package().into());
    if needs_locales(&image.system.locale) {
        set.insert("locales".into());
    }
    if image.recipes.iter().any(|r| !r.install.pypi.is_empty()) {
        // The isolated environment PyPI packages go into.
        set.insert("python3-venv".into());
    }
    for p in &image.base.packages {
        set.insert(p.apt_spec());
    }
    for r in &image.recipes {
        for p in &r.install.debian {
            set.insert(p.apt_spec());
        }
    }
    if let Some(w) = &image.workbench {
        set.extend(crate::workbench::packages(w).into_iter().map(String::from));
    }
    // Data sets taken from a file of a Debian package.
    for d in &image.data {
        if let crate::config::DataOrigin::Debian { package, .. } = &d.source.from {
            set.insert(package.clone());
        }
    }
    set.into_iter().collect()
}

fn needs_locales(locale: &str) -> bool {
    !matches!(locale, "C" | "POSIX" | "C.UTF-8" | "C.utf8")
}

/// Where downloaded .deb files are kept between builds.
pub(crate) fn deb_cache(cache: &Path, image: &Image) -> PathBuf {
    cache
        .join("debs")
        .join(format!("{}-{}", image.base.suite, image.base.architecture))
}

/// Where a bootstrap takes its packages from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sources<'a> {
    /// The image's mirror (or mmdebstrap's default).
    Mirror,
    /// The mirror, and beside it a local repository of locked packages
    /// ([`crate::pool::apt_repo`]) that has the versions the mirror dropped.
    MirrorAndLocal(&'a Path),
    /// Only the local repository: every locked package is in it, and the
    /// bootstrap needs no network.
    Local(&'a Path),
}

/// mmdebstrap's mirror arguments: the sources of the image's snapshot, or
/// its mirror, or none (mmdebstrap's default).
pub(crate) fn mirror_args(image: &Image) -> Vec<String> {
    match &image.base.snapshot {
        Some(s) => s.sources(&image.base.suite),
        None => image.base.mirror.iter().cloned().collect(),
    }
}

/// `--keyring=FILE` when the image names the keyring its mirror signs
/// with (written into `stage`, armoured or not as apt tells them apart by
/// name); nothing for the Debian archive keyring.
pub(crate) fn keyring_arg(image: &Image, stage: &Path) -> Result<Option<String>> {
    let Some(k) = &image.base.keyring else {
        return Ok(None);
    };
    let name = if k.starts_with(b"-----BEGIN") {
        "archive-keyring.asc"
    } else {
        "archive-keyring.gpg"
    };
    let p = stage.join(name);
    fs::write(&p, k).with_context(|| format!("cannot write {}", p.display()))?;
    Ok(Some(format!("--keyring={}", p.display())))
}

/// The hooks that point apt at `sources` for the bootstrap and give the
/// tree back the sources.list mmdebstrap wrote for the mirror, so a build
/// from the pool and one from the mirror ship the same file. `saved` is a
/// host path outside the tree.
fn sources_hooks(sources: Sources, saved: &str) -> Result<Vec<String>> {
    let list = "\"$1\"/etc/apt/sources.list";
    let line = |repo: &Path| -> Result<String> {
        // apt runs outside the tree, wherever mmdebstrap was started: the
        // repository by its absolute path, in one word of the hook.
        let abs =
            fs::canonicalize(repo).with_context(|| format!("cannot resolve {}", repo.display()))?;
        let s = abs.to_string_lossy();
        if s.chars().any(|c| c.is_whitespace() || c == '\'') {
            bail!("the folder {s} contains whitespace or a quote, which mmdebstrap's hooks cannot take; build into another --out folder");
        }
        Ok(format!("deb [trusted=yes] copy:{s} ./"))
    };
    let setup = match sources {
        Sources::Mirror => return Ok(Vec::new()),
        Sources::MirrorAndLocal(repo) => {
            format!("cp {list} {saved} && echo '{}' >> {list}", line(repo)?)
        }
        Sources::Local(repo) => format!("cp {list} {saved} && echo '{}' > {list}", line(repo)?),
    };
    Ok(vec![
        format!("--setup-hook={setup}"),
        format!("--customize-hook=cat {saved} > {list}"),
    ])
}

/// Bootstrap `image` into the (new, empty) folder `root`, installing
/// `packages` (apt `name[=version]` specs) from `sources`. apt's package
/// lists stay in the tree for `lock::read_indices`, which removes them.
pub(crate) fn bootstrap(
    image: &Image,
    packages: &[String],
    sources: Sources,
    cache: &Path,
    epoch: u64,
    root: &Path,
) -> Result<()> {
    let debs = deb_cache(cache, image);
    fs::create_dir_all(&debs)
        .with_context(|| format!("cannot create package cache {}", debs.display()))?;
    if debs.to_string_lossy().chars().any(char::is_whitespace) {
        bail!(
            "the cache folder {} contains whitespace, which mmdebstrap's hooks cannot take; set BIOVM_CACHE_DIR",
            debs.display()
        );
    }
    // Other builds may share the cache: this one reads a snapshot of it
    // (hard links, instant) and adds its downloads back by renaming whole
    // files, so neither ever sees a folder or a file change under it.
    let private = DebSnapshot::take(&debs)?;
    let debs_s = private.input.to_string_lossy().into_owned();
    let new_s = private.output.to_string_lossy().into_owned();
    // initramfs-tools' settings go in before any package is installed, so
    // the kernel's first (and only) initramfs is already the small one.
    let stage = tempfile::tempdir().context("cannot create a staging folder")?;
    let initramfs = stage.path().join("initramfs-tools");
    fs::create_dir(&initramfs).with_context(|| format!("cannot create {}", initramfs.display()))?;
    write_file(&initramfs, "conf.d/biovm", INITRAMFS_CONF.as_bytes(), 0o644)?;
    write_file(
        &initramfs,
        "hooks/biovm-drivers",
        initramfs_hook().as_bytes(),
        0o755,
    )?;
    for d in ["", "conf.d", "hooks"] {
        fs::set_permissions(initramfs.join(d), fs::Permissions::from_mode(0o755))?;
    }
    let initramfs_s = initramfs.to_string_lossy();
    if initramfs_s.chars().any(char::is_whitespace) {
        bail!("the temporary folder {initramfs_s} contains whitespace, which mmdebstrap's hooks cannot take; set TMPDIR");
    }
    // On one filesystem the .deb files go in and out as hard links: the
    // minimal image needs a few hundred of the cache's two thousand files,
    // and copying them all in and out again cost most of its bootstrap.
    let link = same_filesystem(&private.input, root);
    // Isolated: the /proc, /sys and /dev mounts mmdebstrap makes in the
    // tree vanish with it, even when biovm is killed mid-bootstrap.
    let mut c = Cmd::isolated("mmdebstrap");
    // mmdebstrap (and dpkg, initramfs-tools, useradd) take their timestamps from it.
    c.env("SOURCE_DATE_EPOCH", epoch.to_string());
    // Python byte-code compiled at install time (py3compile) does not
    // depend on the hash seed then.
    c.env("PYTHONHASHSEED", "0");
    c.arg("--variant=apt")
        .arg(format!("--architectures={}", image.base.architecture))
        .arg("--components=main")
        .arg(format!("--include={}", packages.join(",")))
        // Keep every downloaded .deb (essential ones too) for the cache, and
        // the signed indices for the lock.
        .args([
            "--skip=download/empty",
            "--skip=essential/unlink",
            "--skip=cleanup/apt/lists",
        ])
        .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/")
        .arg(format!("--setup-hook={}", copy_in_hook(&debs_s, link)))
        .arg("--setup-hook=mkdir -p \"$1\"/etc/initramfs-tools")
        .arg(format!(
            "--setup-hook=sync-in {initramfs_s} /etc/initramfs-tools"
        ))
        .args(sources_hooks(
            sources,
            &stage.path().join("sources.list").to_string_lossy(),
        )?)
        .arg(format!("--customize-hook={}", copy_out_hook(&new_s, link)))
        .args(keyring_arg(image, stage.path())?)
        .arg(&image.base.suite)
        .arg(root);
    c.args(mirror_args(image));
    c.run()
        .context("bootstrapping the root filesystem failed")?;
    private.publish(&debs)
}

/// The setup hook that puts the build's cache snapshot into the new tree's
/// apt archive, and the customize hook that hands every .deb the archive
/// then holds (the snapshot's and the new downloads) to `new`: hard links
/// when `link`, copies otherwise. cp, not mmdebstrap's `sync-in`: that
/// hook's tar fails ("file changed as we read it") when another build links
/// or unlinks one of the shared cache files meanwhile, which changes its
/// ctime. apt and dpkg only read the files, and apt replaces a bad one by
/// renaming a new download over its name, so a linked cache file is never
/// written through.
fn copy_in_hook(snapshot: &str, link: bool) -> String {
    copy_hook(snapshot, "\"$1\"/var/cache/apt/archives", link)
}

fn copy_out_hook(new: &str, link: bool) -> String {
    copy_hook("\"$1\"/var/cache/apt/archives", new, link)
}

/// `cp` of a folder's contents into another, as links or as copies.
fn copy_hook(from: &str, to: &str, link: bool) -> String {
    let flags = if link { "-al" } else { "-a" };
    format!("cp {flags} {from}/. {to}/")
}

/// Whether `a` and the folder that will hold `b` (which may not exist yet)
/// are on one filesystem, so hard links between them work.
fn same_filesystem(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| {
        p.ancestors()
            .find_map(|q| fs::metadata(q).ok())
            .map(|m| m.dev())
    };
    matches!((dev(a), dev(b)), (Some(x), Some(y)) if x == y)
}

/// A build's private view of the shared .deb cache: `input` holds hard
/// links to what the cache had, `output` receives what the build used.
struct DebSnapshot {
    input: PathBuf,
    output: PathBuf,
}

impl DebSnapshot {
    fn take(debs: &Path) -> Result<DebSnapshot> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let parent = debs.parent().unwrap_or(Path::new("."));
        remove_orphan_snapshots(parent);
        let base = format!(".{}.{}-{n}", std::process::id(), debs_name(debs));
        let s = DebSnapshot {
            input: parent.join(format!("{base}.in")),
            output: parent.join(format!("{base}.out")),
        };
        for d in [&s.input, &s.output] {
            crate::fsutil::remove_tree(d)?;
            fs::create_dir(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        for e in fs::read_dir(debs).with_context(|| format!("cannot read {}", debs.display()))? {
            let e = e?;
            let name = e.file_name();
            if name.to_string_lossy().ends_with(".deb") && e.file_type()?.is_file() {
                let to = s.input.join(&name);
                if fs::hard_link(e.path(), &to).is_err() {
                    fs::copy(e.path(), &to).with_context(|| {
                        format!("cannot copy {} from the package cache", e.path().display())
                    })?;
                }
            }
        }
        Ok(s)
    }

    /// Move the build's new .deb files into the cache, each whole.
    fn publish(&self, debs: &Path) -> Result<()> {
        for e in fs::read_dir(&self.output)? {
            let e = e?;
            let name = e.file_name();
            if !name.to_string_lossy().ends_with(".deb") || debs.join(&name).exists() {
                continue;
            }
            fs::rename(e.path(), debs.join(&name)).with_context(|| {
                format!("cannot add {} to {}", e.path().display(), debs.display())
            })?;
        }
        Ok(())
    }
}

/// Remove the snapshot folders (`.PID.NAME-N.in` and `.out`) of builds
/// that were killed before they could (their PID is gone), and keep those
/// of builds still running beside this one.
fn remove_orphan_snapshots(parent: &Path) {
    let Ok(rd) = fs::read_dir(parent) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix('.') else {
            continue;
        };
        if !(name.ends_with(".in") || name.ends_with(".out")) {
            continue;
        }
        let Some(Ok(pid)) = rest.split('.').next().map(str::parse::<u32>) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        log::info!(
            "removing a killed build's cache snapshot {}",
            e.path().display()
        );
        if let Err(err) = crate::fsutil::remove_tree(&e.path()) {
            log::warn!("{err:#}");
        }
    }
}

fn debs_name(debs: &Path) -> String {
    debs.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Drop for DebSnapshot {
    fn drop(&mut self) {
        for d in [&self.input, &self.output] {
            if let Err(e) = crate::fsutil::remove_tree(d) {
                log::warn!("cannot remove {}: {e:#}", d.display());
            }
        }
    }
}

/// Ask apt, against the image's mirror, whether `packages` install together
/// (`mmdebstrap --simulate`: indices only, no package downloads).
pub(crate) fn simulate(image: &Image, packages: &[String]) -> Result<()> {
    let stage = tempfile::tempdir().context("cannot create a staging folder")?;
    let mut c = Cmd::new("mmdebstrap");
    c.args(["--simulate", "--variant=apt", "--components=main"])
        .arg(format!("--architectures={}", image.base.architecture))
        .arg(format!("--include={}", packages.join(",")))
        .args(keyring_arg(image, stage.path())?)
        .arg(&image.base.suite)
        .arg("/dev/null");
    c.args(mirror_args(image));
    c.run()?;
    Ok(())
}

/// Download the mirror's signed package indices for `image` into the new
/// folder `root`, and nothing else: the `apt-get update` of a bootstrap
/// (same suite, architecture, components and mirror, apt checking each
/// index's signature against the archive keyring), no package downloaded
/// or installed. With `with_sources`, every `deb` line gets its `deb-src`
/// twin, so the source indices (`*_source_Sources`) come too. Returns the
/// folder apt left the lists in; `root/etc/apt/sources.list` keeps the
/// lines they came from.
pub(crate) fn fetch_indices(image: &Image, root: &Path, with_sources: bool) -> Result<PathBuf> {
    // Isolated like a bootstrap: whatever mmdebstrap mounts in the tree
    // vanishes with it.
    let stage = tempfile::tempdir().context("cannot create a staging folder")?;
    let mut c = Cmd::isolated("mmdebstrap");
    c.args([
        "--variant=custom",
        "--components=main",
        "--skip=cleanup/apt/lists",
    ])
    .arg(format!("--architectures={}", image.base.architecture))
    .args(keyring_arg(image, stage.path())?);
    if with_sources {
        c.arg(r#"--setup-hook=sed -i '/^deb /{p; s/^deb /deb-src /}' "$1"/etc/apt/sources.list"#);
    }
    c.arg(&image.base.suite).arg(root);
    c.args(mirror_args(image));
    c.run().with_context(|| {
        format!(
            "downloading the package indices of {} {} from {} failed",
            image.base.suite,
            image.base.architecture,
            image
                .base
                .mirror
                .as_deref()
                .unwrap_or("mmdebstrap's default mirror")
        )
    })?;
    Ok(root.join("var/lib/apt/lists"))
}

/// A file the image gets from biovm itself.
struct Owned<'a> {
    path: &'a str,
    mode: u32,
    content: String,
}

/// The in-image smoke-test agent. `biovm test` attaches a read-only virtio
/// drive whose serial is `biovm-checks`; the agent finds it through sysfs
/// (no udev needed, so it starts while the rest of the boot goes on),
/// unpacks the tar archive on it into /run and runs its `run.sh`. An image
/// in normal use has no such drive and the agent exits at once.
const SMOKE_AGENT: &str = r#"#!/bin/sh
# biovm smoke-test agent: runs the checks on the drive with serial
# "biovm-checks" that `biovm test` attaches; without one it does nothing.
set -eu
find_drive() {
    for s in /sys/block/*/serial; do
        if [ "$(cat "$s" 2>/dev/null)" = biovm-checks ]; then
            d=${s%/serial}
            echo "/dev/${d##*/}"
            return 0
        fi
    done
    return 1
}
dev=$(find_drive) || { modprobe -q virtio_blk 2>/dev/null || true; dev=$(find_drive); } || exit 0
dir=$(mktemp -d /run/biovm-smoke.XXXXXX)
tar -xf "$dev" -C "$dir"
cd "$dir"
DEVICE="$dev" exec sh ./run.sh
"#;

const SMOKE_UNIT: &str = r#"[Unit]
Description=biovm smoke tests (only when biovm test attaches its checks drive)
Documentation=man:biovm(1)
# As early as the boot allows: the checks read the tools' files (the root
# filesystem is mounted, if read-only, before systemd starts) and work in
# /run, so they need neither udev nor a writable root. The agent waits for
# the rest of the boot itself before it reports on it.
DefaultDependencies=no
Conflicts=shutdown.target
Before=shutdown.target

[Service]
# simple, not oneshot: the boot completes while the checks run.
Type=simple
ExecStart=/usr/libexec/biovm/smoke-agent

[Install]
WantedBy=sysinit.target
"#;

/// initramfs-tools settings: only the drivers the image's destinations need
/// (a small initramfs loads and unpacks much faster, which matters most
/// under software emulation), compressed with zstd.
const INITRAMFS_CONF: &str =
    "# biovm: only the drivers listed by hooks/biovm-drivers\nMODULES=list\nCOMPRESS=zstd\n";

/// Disk and network drivers for KVM clouds (virtio), EC2 (NVMe, ENA,
/// Xen), VirtualBox (AHCI, PIIX) and the root filesystem. Modules built
/// into the kernel are skipped by `manual_add_modules`.
pub(crate) const INITRAMFS_DRIVERS: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "nvme",
    "ahci",
    "ata_piix",
    "sd_mod",
    "xen_blkfront",
    "ena",
    "ext4",
    "crc32c_generic",
];

/// The buses the initramfs coldplugs to find the root disk.
const INITRAMFS_COLDPLUG: &[&str] = &["pci", "virtio", "xen", "vmbus", "scsi", "nvme", "block"];

fn initramfs_hook() -> String {
    format!(
        "#!/bin/sh\n# biovm: the drivers every destination of the image needs.\n\
set -e\n\
case \"${{1:-}}\" in prereqs) exit 0 ;; esac\n\
. /usr/share/initramfs-tools/hook-functions\n\
for m in {}; do\n    manual_add_modules \"$m\"\ndone\n\
# Coldplug in the initramfs only the buses that lead to the root disk (the\n\
# root filesystem's udev coldplugs everything else later): a few dozen\n\
# events instead of hundreds, seconds saved under software emulation.\n\
s=\"$DESTDIR/scripts/init-top/udev\"\n\
if [ -f \"$s\" ]; then\n\
    sed -i 's/^udevadm trigger --type=devices --action=add$/& {}/' \"$s\"\n\
fi\n",
        INITRAMFS_DRIVERS.join(" "),
        INITRAMFS_COLDPLUG
            .iter()
            .map(|s| format!("--subsystem-match={s}"))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

const SSH_KEYGEN_UNIT: &str = r#"[Unit]
Description=Generate SSH host keys on first boot (biovm images ship none)
# cloud-init makes them where it runs; this covers boots without it.
After=cloud-init.service
Before=ssh.service
ConditionFileNotEmpty=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key
ExecStart=/usr/bin/ssh-keygen -q -t ecdsa -N "" -f /etc/ssh/ssh_host_ecdsa_key

[Install]
WantedBy=ssh.service
"#;

/// cloud-init's settings (`/etc/cloud/cloud.cfg.d/90-biovm.cfg`): the data
/// sources biovm images meet (a NoCloud seed drive locally, the EC2
/// metadata service on EC2 and Eucalyptus, where cloud-init asks for an
/// IMDSv2 session token first), the root partition and filesystem grown to
/// the disk at first boot, the image's own user as the default user (the
/// one cloud SSH keys go to), and the image's settings left as built: its
/// network setup (systemd-networkd), its mirror, its locale, its host keys
/// if the first-boot unit made them already.
pub(crate) fn cloud_cfg(image: &Image) -> String {
    let mut s = format!(
        "# Written by biovm for the image {name}.\n\
# default user: {user}\n\
datasource_list: [NoCloud, Ec2, None]\n\
datasource:\n  Ec2:\n    # No long wait where there is no metadata service.\n    max_wait: 30\n    timeout: 5\n\
network:\n  config: disabled\n\
growpart:\n  mode: auto\n  devices: ['/']\n\
resize_rootfs: true\n\
# GRUB is put on the disk by biovm and is not a package of the image:\n\
# there is no grub-pc install device for debconf to record.\n\
grub_dpkg:\n  enabled: false\n\
apt:\n  preserve_sources_list: true\n\
locale: {locale}\n\
disable_root: true\n\
ssh_deletekeys: false\n\
ssh_genkeytypes: [ed25519, ecdsa]\n",
        name = image.name,
        user = image
            .system
            .user
            .as_ref()
            .map(|u| u.name.as_str())
            .unwrap_or("debian"),
        locale = image.system.locale,
    );
    if let Some(u) = &image.system.user {
        s.push_str(&format!(
            "system_info:\n  default_user:\n    name: {}\n    lock_passwd: true\n    shell: {}\n",
            u.name, u.shell
        ));
        if u.sudo {
            s.push_str("    groups: [sudo]\n    sudo: [\"ALL=(ALL) NOPASSWD:ALL\"]\n");
        }
    }
    s
}

const SSHD_CONFIG: &str = "# biovm: key-based login only; host keys made at first boot\n\
PasswordAuthentication no\n\
KbdInteractiveAuthentication no\n\
PermitRootLogin prohibit-password\n\
HostKey /etc/ssh/ssh_host_ed25519_key\n\
HostKey /etc/ssh/ssh_host_ecdsa_key\n";

const NETWORK: &str =
    "# biovm: DHCP on every wired interface\n[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n";

/// The GRUB menu (both firmware paths read it): the kernel through Debian's
/// /vmlinuz and /initrd.img symlinks, so kernel upgrades inside the image
/// keep booting, root found by filesystem UUID, console on the first serial
/// port as clouds expect.
pub(crate) fn grub_cfg(ids: &DiskIds, image: &Image) -> String {
    format!(
        "# Written by biovm for the image {name}.\n\
serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1\n\
terminal_input serial console\n\
terminal_output serial console\n\
set timeout=0\n\
set default=0\n\
menuentry 'Debian GNU/Linux ({name})' {{\n\
\tsearch --no-floppy --fs-uuid --set=root {uuid}\n\
\tlinux /vmlinuz root=UUID={uuid} ro {args} console=tty0 console=ttyS0,115200n8\n\
\tinitrd /initrd.img\n\
}}\n",
        name = image.name,
        uuid = ids.root_fs_uuid,
        args = crate::boot_cuts::KERNEL_ARGS
    )
}

/// Apply the image's system settings to the bootstrapped tree at `root`,
/// step by step.
pub(crate) fn configure(image: &Image, ids: &DiskIds, epoch: u64, root: &Path) -> Result<()> {
    // Every write below resolves inside the tree (see `confined`): a link
    // planted in it cannot send a write, a removal or a read to the host.
    let tree = Tree::open(root)?;
    write_system_files(&tree, image, ids)?;
    link_time_zone_and_resolver(&tree, image)?;
    remove_machine_secrets(&tree)?;
    let chroot = InTree { root, epoch };
    enable_units(&chroot, &tree)?;
    if needs_locales(&image.system.locale) {
        chroot.run(&["locale-gen"])?;
    }
    if let Some(u) = &image.system.user {
        add_user(&chroot, &tree, u)?;
    }
    check_no_passwords(&tree)?;
    // Logs of the build are not part of the image.
    tree.truncate_files_below(Path::new("var/log"))
}

/// The files biovm owns in every image (host name, fstab, GRUB's config,
/// the smoke agent, cloud-init's settings...), then the boot cuts, then the
/// image's own `[[system.files]]`.
fn write_system_files(tree: &Tree, image: &Image, ids: &DiskIds) -> Result<()> {
    let sys = &image.system;
    let mut files = vec![
        Owned {
            path: "etc/hostname",
            mode: 0o644,
            content: format!("{}\n", sys.hostname),
        },
        Owned {
            path: "etc/hosts",
            mode: 0o644,
            content: format!(
                "127.0.0.1\tlocalhost\n127.0.1.1\t{}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
                sys.hostname
            ),
        },
        Owned {
            path: "etc/timezone",
            mode: 0o644,
            content: format!("{}\n", sys.timezone),
        },
        Owned {
            path: "etc/default/locale",
            mode: 0o644,
            content: format!("LANG={}\n", sys.locale),
        },
        Owned {
            path: "etc/fstab",
            mode: 0o644,
            content: format!(
                "# <file system> <mount point> <type> <options> <dump> <pass>\nUUID={} / ext4 defaults,errors=remount-ro 0 1\n{}",
                ids.root_fs_uuid,
                if image.data_disk {
                    crate::data::disk::fstab_line()
                } else {
                    String::new()
                }
            ),
        },
        // Empty: systemd generates a machine ID on first boot.
        Owned {
            path: "etc/machine-id",
            mode: 0o444,
            content: String::new(),
        },
        Owned {
            path: "boot/grub/grub.cfg",
            mode: 0o644,
            content: grub_cfg(ids, image),
        },
        Owned {
            path: "etc/ssh/sshd_config.d/biovm.conf",
            mode: 0o644,
            content: SSHD_CONFIG.into(),
        },
        Owned {
            path: "etc/systemd/network/80-biovm-dhcp.network",
            mode: 0o644,
            content: NETWORK.into(),
        },
        Owned {
            path: "usr/libexec/biovm/smoke-agent",
            mode: 0o755,
            content: SMOKE_AGENT.into(),
        },
        Owned {
            path: "usr/lib/systemd/system/biovm-smoke.service",
            mode: 0o644,
            content: SMOKE_UNIT.into(),
        },
        Owned {
            path: "etc/systemd/system/biovm-ssh-hostkeys.service",
            mode: 0o644,
            content: SSH_KEYGEN_UNIT.into(),
        },
        Owned {
            path: "etc/cloud/cloud.cfg.d/90-biovm.cfg",
            mode: 0o644,
            content: cloud_cfg(image),
        },
    ];
    if let Some(u) = &sys.user {
        if u.sudo {
            files.push(Owned {
                path: "etc/sudoers.d/90-biovm-user",
                mode: 0o440,
                content: format!("{} ALL=(ALL) NOPASSWD:ALL\n", u.name),
            });
        }
    }
    if needs_locales(&sys.locale) {
        let line = supported_locale(tree, &sys.locale)
            .with_context(|| format!("system.locale in {}", image.source.display()))?;
        files.push(Owned {
            path: "etc/locale.gen",
            mode: 0o644,
            content: format!("{line}\n"),
        });
    }
    for f in &files {
        tree.write(Path::new(f.path), f.content.as_bytes(), f.mode)?;
    }
    crate::boot_cuts::apply(tree)?;
    for f in &sys.files {
        tree.write(Path::new(&f.path), &f.content, f.mode)
            .with_context(|| format!("[[system.files]] of {}", image.source.display()))?;
    }
    // After the image's own files: a unit of theirs leaves cloud-init's
    // units alone.
    crate::boot_cuts::apply_last(tree)
}

/// /etc/localtime to the image's time zone (which its tzdata must have),
/// and DNS through systemd-resolved, never the build host's resolver.
fn link_time_zone_and_resolver(tree: &Tree, image: &Image) -> Result<()> {
    let tz = &image.system.timezone;
    let zone = Path::new("usr/share/zoneinfo").join(tz);
    if !tree.is_file(&zone) {
        bail!(
            "time zone {:?} (system.timezone in {}) is not in the image's tzdata",
            tz,
            image.source.display()
        );
    }
    tree.symlink(
        &Path::new("/usr/share/zoneinfo").join(tz),
        Path::new("etc/localtime"),
    )?;
    tree.symlink(
        Path::new("../run/systemd/resolve/stub-resolv.conf"),
        Path::new("etc/resolv.conf"),
    )
}

/// No SSH host keys, no D-Bus machine ID and no random seed baked in: each
/// machine makes its own at first boot.
fn remove_machine_secrets(tree: &Tree) -> Result<()> {
    for (name, _) in tree.read_dir(Path::new("etc/ssh"))? {
        if name.to_string_lossy().starts_with("ssh_host_") {
            tree.remove_file(&Path::new("etc/ssh").join(name))?;
        }
    }
    tree.remove_file(Path::new("var/lib/dbus/machine-id"))?;
    tree.remove_file(Path::new("var/lib/systemd/random-seed"))?;
    Ok(())
}

/// Commands run inside the tree at `root`, isolated (nothing a package
/// script starts outlives the step), with the build's SOURCE_DATE_EPOCH.
struct InTree<'a> {
    root: &'a Path,
    epoch: u64,
}

impl InTree<'_> {
    fn run(&self, args: &[&str]) -> Result<()> {
        Cmd::isolated("chroot")
            .env("SOURCE_DATE_EPOCH", self.epoch.to_string())
            .env("PYTHONHASHSEED", "0")
            .arg(self.root)
            .args(args)
            .run()?;
        Ok(())
    }
}

/// The units the image runs (network, resolver, host keys, the smoke
/// agent), and those it must not wait for.
fn enable_units(chroot: &InTree, tree: &Tree) -> Result<()> {
    chroot.run(&[
        "systemctl",
        "enable",
        "systemd-networkd.service",
        "systemd-resolved.service",
        "biovm-ssh-hostkeys.service",
        "biovm-smoke.service",
    ])?;
    // No network device must not mean a failed unit or a two-minute wait.
    chroot.run(&[
        "systemctl",
        "disable",
        "systemd-networkd-wait-online.service",
    ])?;
    // e2scrub_reap removes stale e2scrub snapshots of LVM volumes, which
    // biovm disks do not have; at first boot it cost a TCG guest seconds of
    // CPU while cloud-init waited for it. (The weekly e2scrub_all timer
    // stays.)
    if tree.is_file(Path::new("lib/systemd/system/e2scrub_reap.service")) {
        chroot.run(&["systemctl", "disable", "e2scrub_reap.service"])?;
    }
    Ok(())
}

/// The image's own user (`[system.user]`), with its SSH keys.
fn add_user(chroot: &InTree, tree: &Tree, u: &crate::config::User) -> Result<()> {
    let mut args = vec!["useradd", "--create-home", "--shell", &u.shell];
    if u.sudo {
        args.extend(["--groups", "sudo"]);
    }
    args.push(&u.name);
    chroot.run(&args)?;
    if !u.ssh_authorized_keys.is_empty() {
        let dir = format!("home/{}/.ssh", u.name);
        let keys = u.ssh_authorized_keys.join("\n") + "\n";
        tree.write(
            &Path::new(&dir).join("authorized_keys"),
            keys.as_bytes(),
            0o600,
        )?;
        chroot.run(&[
            "chown",
            "-R",
            &format!("{0}:{0}", u.name),
            &format!("/{dir}"),
        ])?;
        tree.set_mode(Path::new(&dir), 0o700)?;
    }
    Ok(())
}

/// The image's own line for `locale` in the list of locales its glibc
/// supports (`/usr/share/i18n/SUPPORTED`, from the `locales` package), e.g.
/// `de_DE ISO-8859-1`: `locale-gen` builds what /etc/locale.gen lists.
fn supported_locale(tree: &Tree, locale: &str) -> Result<String> {
    const SUPPORTED: &str = "usr/share/i18n/SUPPORTED";
    let text = String::from_utf8_lossy(&tree.read(Path::new(SUPPORTED))?).into_owned();
    match text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(locale))
    {
        Some(l) => Ok(l.trim().to_string()),
        None => bail!("the locale {locale:?} is not in the image's /{SUPPORTED}"),
    }
}

/// Write `rel` under the folder `root` (confined to it, replacing a link).
fn write_file(root: &Path, rel: &str, content: &[u8], mode: u32) -> Result<()> {
    Tree::open(root)?.write(Path::new(rel), content, mode)
}

/// Every account must be locked or key-only: no password hash may ship.
fn check_no_passwords(tree: &Tree) -> Result<()> {
    let shadow = String::from_utf8_lossy(&tree.read(Path::new("etc/shadow"))?).into_owned();
    for line in shadow.lines() {
        let mut f = line.split(':');
        let (user, hash) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
        if !(hash.is_empty() || hash.starts_with('*') || hash.starts_with('!')) {
            bail!("the image would ship a password for {user:?}; biovm images allow key-based login only");
        }
        if hash.is_empty() {
            bail!("the image would ship an empty password for {user:?}");
        }
    }
    Ok(())
}

/// A YAML text (cloud-init's configuration) as JSON, read by PyYAML: the
/// parser cloud-init itself uses. For the tests.
#[cfg(test)]
pub(crate) fn yaml_as_json(yaml: &str) -> serde_json::Value {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("cloud.cfg");
    fs::write(&cfg, yaml).unwrap();
    let json = Cmd::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    serde_json::from_str(&json).unwrap()
}

pub(crate) mod cache;

#[cfg(test)]
mod tests;
