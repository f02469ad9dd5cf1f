//! Every host tool biovm needs, in one place, with the Debian package that
//! provides it. `biovm doctor` prints the list; stages call `require`.

use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Build,
    Test,
    /// Running the checks inside a container artifact.
    ContainerTest,
}

/// What biovm needs on the build host.
pub struct HostTool {
    /// A program on PATH, or an absolute path to a file.
    pub name: &'static str,
    /// Which command needs it.
    pub needed_by: Need,
    pub package: &'static str,
    pub used_for: &'static str,
}

pub const HOST_TOOLS: &[HostTool] = &[
    HostTool {
        needed_by: Need::Build,
        name: "mmdebstrap",
        package: "mmdebstrap",
        used_for: "bootstrapping the root filesystem",
    },
    HostTool {
        needed_by: Need::Build,
        name: "zstd",
        package: "zstd",
        used_for: "keeping bootstrapped trees for later builds of the same lock",
    },
    HostTool {
        needed_by: Need::Build,
        name: "chroot",
        package: "coreutils",
        used_for: "configuring the root filesystem",
    },
    HostTool {
        needed_by: Need::Build,
        name: "mkfs.ext4",
        package: "e2fsprogs",
        used_for: "writing the root filesystem",
    },
    HostTool {
        needed_by: Need::Build,
        name: "dumpe2fs",
        package: "e2fsprogs",
        used_for: "listing the root filesystem's inodes",
    },
    HostTool {
        needed_by: Need::Build,
        name: "debugfs",
        package: "e2fsprogs",
        used_for: "fixing the root filesystem's inode times",
    },
    HostTool {
        needed_by: Need::Build,
        name: "mkfs.fat",
        package: "dosfstools",
        used_for: "writing the EFI system partition",
    },
    HostTool {
        needed_by: Need::Build,
        name: "mcopy",
        package: "mtools",
        used_for: "filling the EFI system partition",
    },
    HostTool {
        needed_by: Need::Build,
        name: "mlabel",
        package: "mtools",
        used_for: "stamping the EFI system partition's label",
    },
    HostTool {
        needed_by: Need::Build,
        name: "mmd",
        package: "mtools",
        used_for: "filling the EFI system partition",
    },
    HostTool {
        needed_by: Need::Build,
        name: "grub-mkimage",
        package: "grub-common",
        used_for: "building the boot loaders",
    },
    HostTool {
        needed_by: Need::Build,
        name: "/usr/lib/grub/x86_64-efi/linux.mod",
        package: "grub-efi-amd64-bin",
        used_for: "UEFI boot",
    },
    HostTool {
        needed_by: Need::Build,
        name: "/usr/lib/grub/i386-pc/boot.img",
        package: "grub-pc-bin",
        used_for: "BIOS boot",
    },
    HostTool {
        needed_by: Need::Test,
        name: "qemu-system-x86_64",
        package: "qemu-system-x86",
        used_for: "boot tests",
    },
    HostTool {
        needed_by: Need::Build,
        name: "qemu-img",
        package: "qemu-utils",
        used_for: "the qcow2 format",
    },
    HostTool {
        needed_by: Need::Build,
        name: "mksquashfs",
        package: "squashfs-tools",
        used_for: "the SIF format",
    },
    HostTool {
        needed_by: Need::Test,
        name: "qemu-img",
        package: "qemu-utils",
        used_for: "boot tests (a larger overlay disk over the artifact)",
    },
    HostTool {
        needed_by: Need::Test,
        name: "mkfs.fat",
        package: "dosfstools",
        used_for: "boot tests (the cloud-init NoCloud seed drive)",
    },
    HostTool {
        needed_by: Need::Test,
        name: "mcopy",
        package: "mtools",
        used_for: "boot tests (filling the NoCloud seed drive)",
    },
    HostTool {
        needed_by: Need::Test,
        name: "/usr/share/OVMF/OVMF_CODE_4M.fd",
        package: "ovmf",
        used_for: "UEFI boot tests",
    },
    HostTool {
        needed_by: Need::ContainerTest,
        name: "unshare",
        package: "util-linux",
        used_for: "container tests (private namespaces)",
    },
    HostTool {
        needed_by: Need::ContainerTest,
        name: "setpriv",
        package: "util-linux",
        used_for: "container tests (a container's capabilities)",
    },
    HostTool {
        needed_by: Need::ContainerTest,
        name: "mount",
        package: "mount",
        used_for: "container tests (/proc, /dev, /run, /tmp)",
    },
    HostTool {
        needed_by: Need::ContainerTest,
        name: "ip",
        package: "iproute2",
        used_for: "container tests (loopback network)",
    },
    HostTool {
        needed_by: Need::ContainerTest,
        name: "hostname",
        package: "hostname",
        used_for: "container tests (host name)",
    },
    HostTool {
        needed_by: Need::ContainerTest,
        name: "unsquashfs",
        package: "squashfs-tools",
        used_for: "container tests of SIF images",
    },
];

impl HostTool {
    pub fn present(&self) -> bool {
        if self.name.starts_with('/') {
            Path::new(self.name).exists()
        } else {
            which::which(self.name).is_ok()
        }
    }
}

/// The tools `need` requires that are missing.
pub fn missing(need: Need) -> Vec<&'static HostTool> {
    HOST_TOOLS
        .iter()
        .filter(|t| t.needed_by == need && !t.present())
        .collect()
}

/// Fail early, naming the packages to install, when a tool `need` requires is missing.
pub fn require(need: Need) -> anyhow::Result<()> {
    let m = missing(need);
    if m.is_empty() {
        return Ok(());
    }
    let mut pkgs: Vec<&str> = m.iter().map(|t| t.package).collect();
    pkgs.sort();
    pkgs.dedup();
    anyhow::bail!(
        "missing host tools: {}; install them with: apt-get install {}",
        m.iter().map(|t| t.name).collect::<Vec<_>>().join(", "),
        pkgs.join(" ")
    )
}
