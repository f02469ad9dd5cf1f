//! The raw file formats, exactly as written in TOML. Unknown keys are
//! errors; keys are kebab-case. Values that later validation may reject are
//! `Spanned` so the error can point at them. `validate` turns these into the
//! types of `model.rs`.

use serde::Deserialize;
use toml::Spanned;

/// A recipe: `recipes/<category>/<name>.toml`, one analysis tool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRecipe {
    /// The tool's name; must equal the file name without `.toml`, and match
    /// `[a-z0-9][a-z0-9._+-]*`.
    pub name: Spanned<String>,
    /// One line saying what the tool does.
    pub summary: Spanned<String>,
    /// Must equal the name of the folder the recipe is in.
    pub category: Spanned<String>,
    /// The tool's web page, an http(s) URL.
    pub homepage: Spanned<String>,
    /// The tool's licence, preferably an SPDX expression such as `MIT`.
    pub license: Spanned<String>,
    /// How to install the tool; at least one source must be non-empty.
    pub install: Spanned<RawInstall>,
    /// How to check that the installed tool works.
    pub check: Spanned<RawCheck>,
    /// Functional tests on tiny data (`[[test]]`, repeatable).
    #[serde(default)]
    pub test: Vec<Spanned<RawTest>>,
}

/// `[install]`: the sources the tool comes from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawInstall {
    /// Debian packages: `name` or `name=version`.
    #[serde(default)]
    pub debian: Vec<Spanned<String>>,
    /// PyPI packages, pinned exactly: `name==version`.
    #[serde(default)]
    pub pypi: Vec<Spanned<String>>,
    /// Files fetched over HTTP(S) (`[[install.download]]`, repeatable).
    #[serde(default)]
    pub download: Vec<Spanned<RawDownload>>,
}

/// `[[install.download]]`: one file fetched and checked against its sha256.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawDownload {
    /// An http(s) URL.
    pub url: Spanned<String>,
    /// 64 lowercase hexadecimal digits.
    pub sha256: Spanned<String>,
    /// Absolute path in the image the file (or unpacked archive) goes to.
    pub dest: Spanned<String>,
    /// Unpack a tar or zip archive into `dest` (default false).
    #[serde(default)]
    pub unpack: bool,
}

/// `[check]`: a command and the output it must show.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawCheck {
    /// Run under `sh -c` in the booted image.
    pub command: Spanned<String>,
    /// A regular expression (Rust syntax, multi-line mode) the combined
    /// stdout and stderr must match.
    pub expect: Spanned<String>,
    /// The exit status the command must give (default 0).
    pub status: Option<Spanned<i64>>,
    /// Seconds before the check fails (default 60, 1 to 3600).
    pub timeout: Option<Spanned<i64>>,
}

/// `[[test]]`: a functional test on tiny data.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawTest {
    /// Unique within the recipe.
    pub name: Spanned<String>,
    /// A shell script, run in a folder holding the `data` files.
    pub script: Spanned<String>,
    /// A regular expression the script's combined output must match.
    pub expect: Spanned<String>,
    /// The exit status the script must give (default 0).
    pub status: Option<Spanned<i64>>,
    /// Files relative to the recipe's folder; each must exist.
    #[serde(default)]
    pub data: Vec<Spanned<String>>,
    /// Seconds before the test fails (default 300, 1 to 3600).
    pub timeout: Option<Spanned<i64>>,
}

/// An image: `images/<name>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawImage {
    /// Default: the file name without `.toml`.
    pub name: Option<Spanned<String>>,
    /// Free text.
    pub description: Option<String>,
    /// The distribution the image is built from.
    pub base: Spanned<RawBase>,
    /// Which recipes go in.
    pub recipes: Option<Spanned<RawSelection>>,
    /// System settings.
    #[serde(default)]
    pub system: RawSystem,
    /// Disk size and boot modes.
    pub disk: Spanned<RawDisk>,
    /// Artifacts to produce.
    pub output: Option<RawOutput>,
    /// Where `biovm publish` puts the image.
    pub targets: Option<RawTargets>,
}

/// `[base]`: the distribution.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawBase {
    /// Only `debian` for now.
    pub distribution: Spanned<String>,
    /// Default `bookworm`.
    pub suite: Option<Spanned<String>>,
    /// Only `amd64` for now (the default).
    pub architecture: Option<Spanned<String>>,
    /// A Debian mirror URL; default: the bootstrap tool's default mirror.
    pub mirror: Option<Spanned<String>>,
    /// The OpenPGP keyring the mirror's index is signed with, a file in
    /// the image file's folder; default: the Debian archive keyring.
    pub keyring: Option<Spanned<String>>,
    /// A point in time of a snapshot archive of Debian, instead of `mirror`.
    pub snapshot: Option<Spanned<RawSnapshot>>,
    /// `cloud` or `generic`; default: `generic` when a VirtualBox format
    /// is built, else `cloud`.
    pub kernel: Option<Spanned<String>>,
    /// Extra Debian packages: `name` or `name=version`.
    #[serde(default)]
    pub packages: Vec<Spanned<String>>,
}

/// `[base.snapshot]`: an archive that serves every past state of Debian
/// under `<url>/<YYYYMMDDTHHMMSSZ>/`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSnapshot {
    /// The archive's root for Debian (before the time).
    pub url: Spanned<String>,
    /// The point in time, RFC 3339 (`2026-12-01T00:00:00Z`).
    pub time: Spanned<String>,
    /// The archive's root for Debian's security updates, if it has them.
    pub security_url: Option<Spanned<String>>,
}

/// `[recipes]`: the selection. `all`, `include` and `categories` add
/// recipes; `exclude` then removes some.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSelection {
    /// Every recipe in the catalogue.
    #[serde(default)]
    pub all: bool,
    /// Recipe names.
    #[serde(default)]
    pub include: Vec<Spanned<String>>,
    /// Every recipe in these categories.
    #[serde(default)]
    pub categories: Vec<Spanned<String>>,
    /// Recipe names removed from the selection.
    #[serde(default)]
    pub exclude: Vec<Spanned<String>>,
    /// Categories whose recipes are removed from the selection.
    #[serde(default)]
    pub exclude_categories: Vec<Spanned<String>>,
    /// Extra recipe folders (laid out `<category>/<name>.toml`), relative
    /// to the image file's folder.
    #[serde(default)]
    pub paths: Vec<Spanned<String>>,
}

/// `[system]`: settings of the installed system.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSystem {
    /// An RFC 1123 label; default `biovm`.
    pub hostname: Option<Spanned<String>>,
    /// Default `C.UTF-8`.
    pub locale: Option<Spanned<String>>,
    /// `UTC` or `Area/City`; default `UTC`.
    pub timezone: Option<Spanned<String>>,
    /// A login user (`[system.user]`).
    pub user: Option<Spanned<RawUser>>,
    /// Extra files (`[[system.files]]`, repeatable).
    #[serde(default)]
    pub files: Vec<Spanned<RawFile>>,
}

/// `[system.user]`: the login user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawUser {
    /// Default `biovm`.
    pub name: Option<Spanned<String>>,
    /// An absolute path; default `/bin/bash`.
    pub shell: Option<Spanned<String>>,
    /// Passwordless sudo (default true).
    pub sudo: Option<bool>,
    /// OpenSSH public keys, one line each.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<Spanned<String>>,
}

/// `[[system.files]]`: one file written into the image.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawFile {
    /// Absolute path in the image.
    pub path: Spanned<String>,
    /// The file's text (give this or `source`).
    pub content: Option<Spanned<String>>,
    /// A file relative to the image file's folder (give this or `content`).
    pub source: Option<Spanned<String>>,
    /// Octal permissions as a string, e.g. `"0644"` (the default).
    pub mode: Option<Spanned<String>>,
}

/// `[disk]`: the disk image.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawDisk {
    /// E.g. `"3GiB"`: binary units only, a whole number of MiB, at least 1GiB.
    pub size: Spanned<String>,
    /// `uefi` and/or `bios`; default both.
    pub boot: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[output]`: which artifacts to produce.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawOutput {
    /// Only `raw` for now (the default).
    pub formats: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[targets]`: clouds the image is published to.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawTargets {
    pub ec2: Option<Spanned<RawEc2Target>>,
    pub eucalyptus: Option<Spanned<RawEucalyptusTarget>>,
}

/// `[targets.ec2]`: an AMI registered from an EBS snapshot.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawEc2Target {
    /// Default: `AWS_REGION`, `AWS_DEFAULT_REGION` or the profile's region.
    pub region: Option<Spanned<String>>,
    /// The EC2 API URL (default `https://ec2.<region>.amazonaws.com`).
    pub ec2_endpoint: Option<Spanned<String>>,
    /// The EBS direct API URL (default `https://ebs.<region>.amazonaws.com`).
    pub ebs_endpoint: Option<Spanned<String>>,
    /// Root volume type: `gp3` (default), `gp2`, `io1`, `io2` or `standard`.
    pub volume_type: Option<Spanned<String>>,
    /// Root volume size, at least the disk's (default: the disk's, in whole GiB).
    pub volume_size: Option<Spanned<String>>,
    /// `uefi`, `legacy-bios` or `uefi-preferred` (default: from `[disk] boot`).
    pub boot_mode: Option<Spanned<String>>,
    /// ENA networking (default true).
    pub ena: Option<bool>,
    /// Instances must use IMDSv2 (default true).
    pub imds_v2: Option<bool>,
    /// `biovm launch`'s instance type (default `t3.medium`).
    pub instance_type: Option<Spanned<String>>,
}

/// `[targets.eucalyptus]`: an instance-store image from an AMI bundle in S3.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawEucalyptusTarget {
    /// Any region name the cloud uses (default `eucalyptus`).
    pub region: Option<Spanned<String>>,
    /// The cloud's EC2 API URL.
    pub ec2_endpoint: Spanned<String>,
    /// The cloud's S3 API URL (path-style addressing).
    pub s3_endpoint: Spanned<String>,
    /// The bucket the bundle goes to; it must exist.
    pub bucket: Spanned<String>,
    /// The cloud's certificate (PEM), relative to the image file's folder.
    pub cloud_cert: Spanned<String>,
    /// Your certificate (PEM); default `EC2_CERT`.
    pub user_cert: Option<Spanned<String>>,
    /// Your private key (PEM); default `EC2_PRIVATE_KEY`.
    pub user_key: Option<Spanned<String>>,
    /// Your 12-digit account number; default `EC2_USER_ID`.
    pub account_id: Option<Spanned<String>>,
}
