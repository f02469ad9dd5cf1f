//! The raw file formats, exactly as written in TOML. Unknown keys are
//! errors; keys are kebab-case. Values that later validation may reject are
//! `Spanned` so the error can point at them. `validate` turns these into the
//! types of `model.rs`.

use serde::Deserialize;
use toml::Spanned;

/// A recipe: `recipes/<category>/<name>.toml`, one analysis tool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawRecipe {
    /// The tool's name; must equal the file name without `.toml`, and match
    /// `[a-z0-9][a-z0-9._+-]*`.
    pub(crate) name: Spanned<String>,
    /// One line saying what the tool does.
    pub(crate) summary: Spanned<String>,
    /// Must equal the name of the folder the recipe is in.
    pub(crate) category: Spanned<String>,
    /// The tool's web page, an http(s) URL.
    pub(crate) homepage: Spanned<String>,
    /// The tool's licence, preferably an SPDX expression such as `MIT`.
    pub(crate) license: Spanned<String>,
    /// How to install the tool; at least one source must be non-empty.
    pub(crate) install: Spanned<RawInstall>,
    /// How to check that the installed tool works.
    pub(crate) check: Spanned<RawCheck>,
    /// Functional tests on tiny data (`[[test]]`, repeatable).
    #[serde(default)]
    pub(crate) test: Vec<Spanned<RawTest>>,
}

/// `[install]`: the sources the tool comes from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawInstall {
    /// Debian packages: `name` or `name=version`.
    #[serde(default)]
    pub(crate) debian: Vec<Spanned<String>>,
    /// PyPI packages, pinned exactly: `name==version`.
    #[serde(default)]
    pub(crate) pypi: Vec<Spanned<String>>,
    /// An environment of the recipe's own for its PyPI packages,
    /// `/opt/biovm/<pypi-env>`, instead of the shared `/opt/biovm/venv`
    /// (for a tool whose dependencies must not meet the others').
    pub(crate) pypi_env: Option<Spanned<String>>,
    /// Files fetched over HTTP(S) (`[[install.download]]`, repeatable).
    #[serde(default)]
    pub(crate) download: Vec<Spanned<RawDownload>>,
}

/// `[[install.download]]`: one file fetched and checked against its sha256.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawDownload {
    /// An http(s) URL.
    pub(crate) url: Spanned<String>,
    /// 64 lowercase hexadecimal digits.
    pub(crate) sha256: Spanned<String>,
    /// Absolute path in the image the file (or unpacked archive) goes to.
    pub(crate) dest: Spanned<String>,
    /// Unpack a tar or zip archive into `dest` (default false).
    #[serde(default)]
    pub(crate) unpack: bool,
}

/// `[check]`: a command and the output it must show.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawCheck {
    /// Run under `sh -c` in the booted image.
    pub(crate) command: Spanned<String>,
    /// A regular expression (Rust syntax, multi-line mode) the combined
    /// stdout and stderr must match.
    pub(crate) expect: Spanned<String>,
    /// The exit status the command must give (default 0).
    pub(crate) status: Option<Spanned<i64>>,
    /// Seconds before the check fails (default 60, 1 to 3600).
    pub(crate) timeout: Option<Spanned<i64>>,
}

/// `[[test]]`: a functional test on tiny data.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawTest {
    /// Unique within the recipe.
    pub(crate) name: Spanned<String>,
    /// A shell script, run in a folder holding the `data` files.
    pub(crate) script: Spanned<String>,
    /// A regular expression the script's combined output must match.
    pub(crate) expect: Spanned<String>,
    /// The exit status the script must give (default 0).
    pub(crate) status: Option<Spanned<i64>>,
    /// Files relative to the recipe's folder; each must exist.
    #[serde(default)]
    pub(crate) data: Vec<Spanned<String>>,
    /// Seconds before the test fails (default 300, 1 to 3600).
    pub(crate) timeout: Option<Spanned<i64>>,
}

/// An image: `images/<name>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawImage {
    /// Default: the file name without `.toml`.
    pub(crate) name: Option<Spanned<String>>,
    /// Free text.
    pub(crate) description: Option<String>,
    /// The distribution the image is built from.
    pub(crate) base: Spanned<RawBase>,
    /// Which recipes go in.
    pub(crate) recipes: Option<Spanned<RawSelection>>,
    /// System settings.
    #[serde(default)]
    pub(crate) system: RawSystem,
    /// Disk size and boot modes.
    pub(crate) disk: Spanned<RawDisk>,
    /// Artifacts to produce.
    pub(crate) output: Option<RawOutput>,
    /// Where `biovm publish` puts the image.
    pub(crate) targets: Option<RawTargets>,
    /// Reference data sets that go in (`data/<name>.toml`).
    pub(crate) data: Option<Spanned<RawDataSelection>>,
    /// The browser workbench: JupyterLab, a desktop, the landing page.
    pub(crate) workbench: Option<Spanned<RawWorkbench>>,
    /// Where `biovm test` runs the tools' checks.
    pub(crate) checks: Option<Spanned<RawChecks>>,
}

/// `[checks]`: every check runs once natively in the disk's tree; each VM
/// boot runs the system's checks and a sample of the tools'.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawChecks {
    /// Every check in every boot as well (`--full`), for runners where
    /// KVM makes boots cheap (default false).
    pub(crate) every_boot: Option<bool>,
    /// The recipes whose version check each boot runs; at least one per
    /// install source the image has (default: the first of each source).
    pub(crate) boot_sample: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[workbench]`: JupyterLab and (by default) an Xfce desktop in the
/// browser, behind one token-checking proxy on the guest's loopback.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawWorkbench {
    /// The Xfce desktop through noVNC (default true).
    pub(crate) desktop: Option<bool>,
    /// The proxy's port on the guest's 127.0.0.1 (default 8080).
    pub(crate) port: Option<Spanned<i64>>,
}

/// `[data]`: which reference data sets the image carries.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawDataSelection {
    /// Data set names, from the data folder (`<recipes>/../data`) and `paths`.
    #[serde(default)]
    pub(crate) include: Vec<Spanned<String>>,
    /// Where they go: `root` (the default; `/data/genomes/<build>` in the
    /// root filesystem) or `disk` (a data disk of its own, mounted there).
    pub(crate) location: Option<Spanned<String>>,
    /// More folders of data recipes, relative to the image file's folder.
    #[serde(default)]
    pub(crate) paths: Vec<Spanned<String>>,
}

/// A reference data set: `data/<name>.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawDataSet {
    /// Must equal the file name without `.toml`.
    pub(crate) name: Spanned<String>,
    pub(crate) summary: Spanned<String>,
    /// The organism, e.g. `Escherichia coli`.
    pub(crate) organism: Spanned<String>,
    /// The assembly or build, which names the folder: `/data/genomes/<build>`.
    pub(crate) build: Spanned<String>,
    /// The version of the data (an accession with its version, a release).
    pub(crate) version: Spanned<String>,
    /// Its licence or terms of use.
    pub(crate) license: Spanned<String>,
    /// Whether images carrying it may be published.
    pub(crate) redistributable: bool,
    /// The file the unpacked content is written to, in the data set's folder.
    pub(crate) file: Spanned<String>,
    /// The sha256 of the unpacked content.
    pub(crate) sha256: Spanned<String>,
    pub(crate) source: Spanned<RawDataSource>,
    /// Indexes built from the content during the image build (`[[index]]`).
    #[serde(default)]
    pub(crate) index: Vec<Spanned<RawIndex>>,
    /// Checks of the data in the built image (`[[test]]`, as in recipes).
    #[serde(default)]
    pub(crate) test: Vec<Spanned<RawTest>>,
}

/// `[source]`: a Debian package and a path in it, or URLs tried in order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawDataSource {
    /// A Debian package that ships the data.
    pub(crate) debian: Option<Spanned<String>>,
    /// The absolute path of the file inside that package.
    pub(crate) path: Option<Spanned<String>>,
    /// http(s) URLs of the same bytes, tried in order.
    #[serde(default)]
    pub(crate) urls: Vec<Spanned<String>>,
    /// The sha256 of the bytes the URLs serve (or of the file in the package).
    pub(crate) sha256: Spanned<String>,
    /// Their size in bytes.
    pub(crate) size: Spanned<i64>,
    /// `none` (default) or `gzip`.
    pub(crate) unpack: Option<Spanned<String>>,
}

/// `[[index]]`: files a tool builds from the content, offline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawIndex {
    pub(crate) name: Spanned<String>,
    /// The recipe (in the image) whose tool builds it.
    pub(crate) recipe: Spanned<String>,
    /// Run under `sh -c` in the data set's folder inside the image.
    pub(crate) command: Spanned<String>,
    /// The files it makes, relative to the data set's folder.
    pub(crate) outputs: Vec<Spanned<String>>,
}

/// `[base]`: the distribution.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawBase {
    /// Only `debian` for now.
    pub(crate) distribution: Spanned<String>,
    /// Default `bookworm`.
    pub(crate) suite: Option<Spanned<String>>,
    /// Only `amd64` for now (the default).
    pub(crate) architecture: Option<Spanned<String>>,
    /// A Debian mirror URL; default: the bootstrap tool's default mirror.
    pub(crate) mirror: Option<Spanned<String>>,
    /// The OpenPGP keyring the mirror's index is signed with, a file in
    /// the image file's folder; default: the Debian archive keyring.
    pub(crate) keyring: Option<Spanned<String>>,
    /// A point in time of a snapshot archive of Debian, instead of `mirror`.
    pub(crate) snapshot: Option<Spanned<RawSnapshot>>,
    /// `cloud` or `generic`; default: `generic` when a VirtualBox format
    /// is built, else `cloud`.
    pub(crate) kernel: Option<Spanned<String>>,
    /// Extra Debian packages: `name` or `name=version`.
    #[serde(default)]
    pub(crate) packages: Vec<Spanned<String>>,
}

/// `[base.snapshot]`: an archive that serves every past state of Debian
/// under `<url>/<YYYYMMDDTHHMMSSZ>/`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawSnapshot {
    /// The archive's root for Debian (before the time).
    pub(crate) url: Spanned<String>,
    /// The point in time, RFC 3339 (`2026-12-01T00:00:00Z`).
    pub(crate) time: Spanned<String>,
    /// The archive's root for Debian's security updates, if it has them.
    pub(crate) security_url: Option<Spanned<String>>,
}

/// `[recipes]`: the selection. `all`, `include` and `categories` add
/// recipes; `exclude` then removes some.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawSelection {
    /// Every recipe in the catalogue.
    #[serde(default)]
    pub(crate) all: bool,
    /// Recipe names.
    #[serde(default)]
    pub(crate) include: Vec<Spanned<String>>,
    /// Every recipe in these categories.
    #[serde(default)]
    pub(crate) categories: Vec<Spanned<String>>,
    /// Recipe names removed from the selection.
    #[serde(default)]
    pub(crate) exclude: Vec<Spanned<String>>,
    /// Categories whose recipes are removed from the selection.
    #[serde(default)]
    pub(crate) exclude_categories: Vec<Spanned<String>>,
    /// Extra recipe folders (laid out `<category>/<name>.toml`), relative
    /// to the image file's folder.
    #[serde(default)]
    pub(crate) paths: Vec<Spanned<String>>,
}

/// `[system]`: settings of the installed system.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawSystem {
    /// An RFC 1123 label; default `biovm`.
    pub(crate) hostname: Option<Spanned<String>>,
    /// Default `C.UTF-8`.
    pub(crate) locale: Option<Spanned<String>>,
    /// `UTC` or `Area/City`; default `UTC`.
    pub(crate) timezone: Option<Spanned<String>>,
    /// A login user (`[system.user]`).
    pub(crate) user: Option<Spanned<RawUser>>,
    /// Extra files (`[[system.files]]`, repeatable).
    #[serde(default)]
    pub(crate) files: Vec<Spanned<RawFile>>,
}

/// `[system.user]`: the login user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawUser {
    /// Default `biovm`.
    pub(crate) name: Option<Spanned<String>>,
    /// An absolute path; default `/bin/bash`.
    pub(crate) shell: Option<Spanned<String>>,
    /// Passwordless sudo (default true).
    pub(crate) sudo: Option<bool>,
    /// OpenSSH public keys, one line each.
    #[serde(default)]
    pub(crate) ssh_authorized_keys: Vec<Spanned<String>>,
}

/// `[[system.files]]`: one file written into the image.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawFile {
    /// Absolute path in the image.
    pub(crate) path: Spanned<String>,
    /// The file's text (give this or `source`).
    pub(crate) content: Option<Spanned<String>>,
    /// A file relative to the image file's folder (give this or `content`).
    pub(crate) source: Option<Spanned<String>>,
    /// Octal permissions as a string, e.g. `"0644"` (the default).
    pub(crate) mode: Option<Spanned<String>>,
}

/// `[disk]`: the disk image.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawDisk {
    /// E.g. `"3GiB"`: binary units only, a whole number of MiB, at least 1GiB.
    pub(crate) size: Spanned<String>,
    /// `uefi` and/or `bios`; default both.
    pub(crate) boot: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[output]`: which artifacts to produce.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawOutput {
    /// Only `raw` for now (the default).
    pub(crate) formats: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[targets]`: clouds the image is published to.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawTargets {
    pub(crate) ec2: Option<Spanned<RawEc2Target>>,
    pub(crate) eucalyptus: Option<Spanned<RawEucalyptusTarget>>,
}

/// `[targets.ec2]`: an AMI registered from an EBS snapshot.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawEc2Target {
    /// Default: `AWS_REGION`, `AWS_DEFAULT_REGION` or the profile's region.
    pub(crate) region: Option<Spanned<String>>,
    /// The EC2 API URL (default `https://ec2.<region>.amazonaws.com`).
    pub(crate) ec2_endpoint: Option<Spanned<String>>,
    /// The EBS direct API URL (default `https://ebs.<region>.amazonaws.com`).
    pub(crate) ebs_endpoint: Option<Spanned<String>>,
    /// Root volume type: `gp3` (default), `gp2`, `io1`, `io2` or `standard`.
    pub(crate) volume_type: Option<Spanned<String>>,
    /// Root volume size, at least the disk's (default: the disk's, in whole GiB).
    pub(crate) volume_size: Option<Spanned<String>>,
    /// `uefi`, `legacy-bios` or `uefi-preferred` (default: from `[disk] boot`).
    pub(crate) boot_mode: Option<Spanned<String>>,
    /// ENA networking (default true).
    pub(crate) ena: Option<bool>,
    /// Instances must use IMDSv2 (default true).
    pub(crate) imds_v2: Option<bool>,
    /// `biovm launch`'s instance type (default `t3.medium`).
    pub(crate) instance_type: Option<Spanned<String>>,
}

/// `[targets.eucalyptus]`: an instance-store image from an AMI bundle in S3.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawEucalyptusTarget {
    /// Any region name the cloud uses (default `eucalyptus`).
    pub(crate) region: Option<Spanned<String>>,
    /// The cloud's EC2 API URL.
    pub(crate) ec2_endpoint: Spanned<String>,
    /// The cloud's S3 API URL (path-style addressing).
    pub(crate) s3_endpoint: Spanned<String>,
    /// The bucket the bundle goes to; it must exist.
    pub(crate) bucket: Spanned<String>,
    /// The cloud's certificate (PEM), relative to the image file's folder.
    pub(crate) cloud_cert: Spanned<String>,
    /// Your certificate (PEM); default `EC2_CERT`.
    pub(crate) user_cert: Option<Spanned<String>>,
    /// Your private key (PEM); default `EC2_PRIVATE_KEY`.
    pub(crate) user_key: Option<Spanned<String>>,
    /// Your 12-digit account number; default `EC2_USER_ID`.
    pub(crate) account_id: Option<Spanned<String>>,
}
