//! Stage 1: the root filesystem. mmdebstrap bootstraps Debian with the
//! kernel, systemd, the recipes' packages and the image's own, through a
//! package cache shared by every build; then biovm applies the system
//! settings directly to the tree (no shell scripts baked from strings).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cmd::Cmd;
use crate::config::Image;
use crate::disk::DiskIds;

/// Debian packages every image gets, whatever its recipes: a kernel that
/// boots on KVM, Xen/EC2 and VirtualBox, systemd, SSH and the basics a
/// researcher expects on a server.
pub const BASE_PACKAGES: &[&str] = &[
    "ca-certificates",
    "dbus",
    "e2fsprogs",
    "initramfs-tools",
    "linux-image-cloud-amd64",
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
    set.into_iter().collect()
}

fn needs_locales(locale: &str) -> bool {
    !matches!(locale, "C" | "POSIX" | "C.UTF-8" | "C.utf8")
}

/// Where downloaded .deb files are kept between builds.
pub fn deb_cache(cache: &Path, image: &Image) -> PathBuf {
    cache
        .join("debs")
        .join(format!("{}-{}", image.base.suite, image.base.architecture))
}

/// Bootstrap `image` into the (new, empty) folder `root`, installing
/// `packages` (apt `name[=version]` specs). apt's package lists stay in the
/// tree for `lock::read_indices`, which removes them.
pub fn bootstrap(
    image: &Image,
    packages: &[String],
    cache: &Path,
    epoch: u64,
    root: &Path,
) -> Result<()> {
    let debs = deb_cache(cache, image);
    fs::create_dir_all(&debs)
        .with_context(|| format!("cannot create package cache {}", debs.display()))?;
    let debs_s = debs.to_string_lossy();
    if debs_s.chars().any(char::is_whitespace) {
        bail!("the cache folder {debs_s} contains whitespace, which mmdebstrap's hooks cannot take; set BIOVM_CACHE_DIR");
    }
    let mut c = Cmd::new("mmdebstrap");
    // mmdebstrap (and dpkg, initramfs-tools, useradd) take their timestamps from it.
    c.env("SOURCE_DATE_EPOCH", epoch.to_string());
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
        .arg(format!(
            "--setup-hook=sync-in {debs_s} /var/cache/apt/archives/"
        ))
        .arg(format!(
            "--customize-hook=sync-out /var/cache/apt/archives {debs_s}"
        ))
        .arg(&image.base.suite)
        .arg(root);
    if let Some(m) = &image.base.mirror {
        c.arg(m);
    }
    c.run()
        .context("bootstrapping the root filesystem failed")?;
    Ok(())
}

/// Ask apt, against the image's mirror, whether `packages` install together
/// (`mmdebstrap --simulate`: indices only, no package downloads).
pub fn simulate(image: &Image, packages: &[String]) -> Result<()> {
    let mut c = Cmd::new("mmdebstrap");
    c.args(["--simulate", "--variant=apt", "--components=main"])
        .arg(format!("--architectures={}", image.base.architecture))
        .arg(format!("--include={}", packages.join(",")))
        .arg(&image.base.suite)
        .arg("/dev/null");
    if let Some(m) = &image.base.mirror {
        c.arg(m);
    }
    c.run()?;
    Ok(())
}

/// A file the image gets from biovm itself.
struct Owned<'a> {
    path: &'a str,
    mode: u32,
    content: String,
}

/// The in-image smoke-test agent. It runs only when a drive whose serial is
/// `biovm-checks` is attached (as `biovm test` does): it unpacks the tar
/// archive on that drive into /run and runs its `run.sh`. An image in normal
/// use never has such a drive, so the agent never starts.
const SMOKE_AGENT: &str = r#"#!/bin/sh
# biovm smoke-test agent: started by udev only for a drive with serial
# "biovm-checks", which `biovm test` attaches. Unpacks it and runs run.sh.
set -eu
dir=$(mktemp -d /run/biovm-smoke.XXXXXX)
tar -xf "$1" -C "$dir"
cd "$dir"
DEVICE="$1" exec sh ./run.sh
"#;

const SMOKE_UDEV_RULE: &str = r#"# biovm: start the smoke-test agent when biovm's test drive is attached.
ACTION=="add", SUBSYSTEM=="block", ENV{DEVTYPE}=="disk", ENV{ID_SERIAL}=="*biovm-checks", TAG+="systemd", ENV{SYSTEMD_WANTS}+="biovm-smoke@%k.service"
"#;

const SMOKE_UNIT: &str = r#"[Unit]
Description=biovm smoke tests from /dev/%i
Documentation=man:biovm(1)
# Start as soon as filesystems are mounted and set up, not after every
# service of sysinit.target: the checks only need the tools' files.
DefaultDependencies=no
After=local-fs.target systemd-tmpfiles-setup.service
Conflicts=shutdown.target
Before=shutdown.target

[Service]
# simple, not oneshot: the boot completes while the checks run, so they
# can report on the finished boot.
Type=simple
ExecStart=/usr/libexec/biovm/smoke-agent /dev/%i
"#;

const SSH_KEYGEN_UNIT: &str = r#"[Unit]
Description=Generate SSH host keys on first boot (biovm images ship none)
Before=ssh.service
ConditionFileNotEmpty=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key
ExecStart=/usr/bin/ssh-keygen -q -t ecdsa -N "" -f /etc/ssh/ssh_host_ecdsa_key

[Install]
WantedBy=ssh.service
"#;

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
pub fn grub_cfg(ids: &DiskIds, image: &Image) -> String {
    format!(
        "# Written by biovm for the image {name}.\n\
serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1\n\
terminal_input serial console\n\
terminal_output serial console\n\
set timeout=0\n\
set default=0\n\
menuentry 'Debian GNU/Linux ({name})' {{\n\
\tsearch --no-floppy --fs-uuid --set=root {uuid}\n\
\tlinux /vmlinuz root=UUID={uuid} ro console=tty0 console=ttyS0,115200n8\n\
\tinitrd /initrd.img\n\
}}\n",
        name = image.name,
        uuid = ids.root_fs_uuid
    )
}

/// Apply the image's system settings to the bootstrapped tree at `root`.
pub fn configure(image: &Image, ids: &DiskIds, epoch: u64, root: &Path) -> Result<()> {
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
                "# <file system> <mount point> <type> <options> <dump> <pass>\nUUID={} / ext4 defaults,errors=remount-ro 0 1\n",
                ids.root_fs_uuid
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
            path: "usr/lib/udev/rules.d/99-biovm-smoke.rules",
            mode: 0o644,
            content: SMOKE_UDEV_RULE.into(),
        },
        Owned {
            path: "usr/lib/systemd/system/biovm-smoke@.service",
            mode: 0o644,
            content: SMOKE_UNIT.into(),
        },
        Owned {
            path: "etc/systemd/system/biovm-ssh-hostkeys.service",
            mode: 0o644,
            content: SSH_KEYGEN_UNIT.into(),
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
        let charset = sys.locale.split('.').nth(1).unwrap_or("UTF-8");
        files.push(Owned {
            path: "etc/locale.gen",
            mode: 0o644,
            content: format!("{} {}\n", sys.locale, charset),
        });
    }
    for f in &files {
        write_file(root, f.path, f.content.as_bytes(), f.mode)?;
    }
    for f in &sys.files {
        write_file(root, f.path.trim_start_matches('/'), &f.content, f.mode)?;
    }

    // Time zone.
    let zone = root.join("usr/share/zoneinfo").join(&sys.timezone);
    if !zone.exists() {
        bail!(
            "time zone {:?} (system.timezone in {}) is not in the image's tzdata",
            sys.timezone,
            image.source.display()
        );
    }
    replace_symlink(
        &format!("/usr/share/zoneinfo/{}", sys.timezone),
        &root.join("etc/localtime"),
    )?;
    // DNS through systemd-resolved, never the build host's resolver.
    replace_symlink(
        "../run/systemd/resolve/stub-resolv.conf",
        &root.join("etc/resolv.conf"),
    )?;

    // No SSH host keys and no D-Bus machine ID baked in.
    for e in fs::read_dir(root.join("etc/ssh")).context("reading etc/ssh of the image")? {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with("ssh_host_") {
            fs::remove_file(e.path())?;
        }
    }
    let _ = fs::remove_file(root.join("var/lib/dbus/machine-id"));
    let _ = fs::remove_file(root.join("var/lib/systemd/random-seed"));

    let chroot = |args: &[&str]| -> Result<()> {
        Cmd::new("chroot")
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .arg(root)
            .args(args)
            .run()?;
        Ok(())
    };
    chroot(&[
        "systemctl",
        "enable",
        "systemd-networkd.service",
        "systemd-resolved.service",
        "biovm-ssh-hostkeys.service",
    ])?;
    // No network device must not mean a failed unit or a two-minute wait.
    chroot(&[
        "systemctl",
        "disable",
        "systemd-networkd-wait-online.service",
    ])?;
    if needs_locales(&sys.locale) {
        chroot(&["locale-gen"])?;
    }
    if let Some(u) = &sys.user {
        let mut args = vec!["useradd", "--create-home", "--shell", &u.shell];
        if u.sudo {
            args.extend(["--groups", "sudo"]);
        }
        args.push(&u.name);
        chroot(&args)?;
        if !u.ssh_authorized_keys.is_empty() {
            let dir = format!("home/{}/.ssh", u.name);
            let keys = u.ssh_authorized_keys.join("\n") + "\n";
            write_file(
                root,
                &format!("{dir}/authorized_keys"),
                keys.as_bytes(),
                0o600,
            )?;
            chroot(&[
                "chown",
                "-R",
                &format!("{0}:{0}", u.name),
                &format!("/{dir}"),
            ])?;
            fs::set_permissions(root.join(&dir), fs::Permissions::from_mode(0o700))?;
        }
    }
    check_no_passwords(root)?;
    // Logs of the build are not part of the image.
    truncate_logs(&root.join("var/log"))?;
    Ok(())
}

fn write_file(root: &Path, rel: &str, content: &[u8], mode: u32) -> Result<()> {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent)?;
    }
    // Replace rather than write through: the target may be a symlink.
    let _ = fs::remove_file(&p);
    fs::write(&p, content).with_context(|| format!("cannot write /{rel} in the image"))?;
    fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn replace_symlink(target: &str, link: &Path) -> Result<()> {
    let _ = fs::remove_file(link);
    symlink(target, link).with_context(|| format!("cannot create symlink {}", link.display()))
}

/// Every account must be locked or key-only: no password hash may ship.
fn check_no_passwords(root: &Path) -> Result<()> {
    let shadow = fs::read_to_string(root.join("etc/shadow")).context("reading /etc/shadow")?;
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

fn truncate_logs(dir: &Path) -> Result<()> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Ok(());
    };
    for e in rd {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            truncate_logs(&e.path())?;
        } else if t.is_file() {
            fs::File::create(e.path())?;
        }
    }
    Ok(())
}
