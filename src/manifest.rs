//! `<image>.manifest.json`, written next to the artifacts by `biovm build`:
//! what was built, and every tool with the check `biovm test` runs for it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::{BootMode, Format, Image, Recipe};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub image: String,
    pub description: String,
    pub suite: String,
    pub architecture: String,
    pub boot: Vec<String>,
    /// The image's own user (cloud-init's default user: SSH keys a cloud
    /// or `biovm run` passes go to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_user: Option<String>,
    pub artifacts: Vec<Artifact>,
    pub tools: Vec<Tool>,
    /// The digest of the root filesystem tree every artifact was made from
    /// (see `smoke::tree`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_sha256: Option<String>,
    /// For each container format built, the digest of the tree its
    /// artifact holds: the tree of `tree_sha256` less what the format
    /// leaves out (the kernel, modules and firmware; a rootfs tarball
    /// keeps them: see `smoke::tree::digest_dir_and_containers`). An
    /// artifact unpacked to it holds the tree the native checks ran in,
    /// so its test runs the boot sample, not every check again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub container_trees: BTreeMap<Format, String>,
    /// The SHA-256 of the raw disk artifact whose root filesystem the
    /// build read back (mounted read-only, once written) and found to hold
    /// `tree_sha256`: a test of that disk, with those very bytes, need not
    /// read its tree again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_read_back_from: Option<String>,
    /// The SHA-256 of each artifact whose disk (for an OVA or a Vagrant
    /// box, the VMDK inside) the build compared, sector by sector as QEMU
    /// reads it, with the raw disk it was written from, and found equal: a
    /// test of that artifact, with those very bytes, takes the raw disk's
    /// tree for its own without reading or comparing it again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sectors_compared_with_raw: Vec<String>,
    /// The reference data sets in the image, with every file's digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<crate::data::BuiltData>,
    /// The browser workbench, when the image has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workbench: Option<crate::config::Workbench>,
    /// The data disk the data sets are on, when not in the root filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_disk: Option<DataDisk>,
    /// `[checks] every-boot`: every check in every boot, as `--full`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub every_check_in_every_boot: bool,
    /// `[checks] boot-sample`: the tools whose check each boot runs
    /// (empty: the first of each install source).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boot_sample: Vec<String>,
}

/// A data disk (see `data::disk`): its files and the digest of its tree.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DataDisk {
    /// The filesystem label the image's fstab mounts it by.
    pub label: String,
    /// The raw file, and the qcow2 file when the image builds qcow2.
    pub files: Vec<Artifact>,
    /// The digest of its tree (as `tree_sha256` of the root filesystem):
    /// the native run checks the tree it reads from the disk against it.
    pub tree_sha256: String,
}

impl DataDisk {
    /// Its files in `dir` (the folder of the manifest), as a test uses
    /// them; an error names a listed file that is missing.
    pub fn in_dir(&self, dir: &Path) -> anyhow::Result<crate::smoke::DataDiskFiles> {
        let mut raw = None;
        let mut qcow2 = None;
        for a in &self.files {
            let p = dir.join(&a.file);
            if !p.is_file() {
                anyhow::bail!("the data disk {} is missing", p.display());
            }
            match a.format {
                Format::Raw => raw = Some((p, a.sha256.clone())),
                Format::Qcow2 => qcow2 = Some(p),
                _ => {}
            }
        }
        let (raw, raw_sha256) =
            raw.ok_or_else(|| anyhow::anyhow!("the manifest lists no raw data disk"))?;
        Ok(crate::smoke::DataDiskFiles {
            raw,
            qcow2,
            raw_sha256,
            tree_sha256: self.tree_sha256.clone(),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Artifact {
    pub format: Format,
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tool {
    pub name: String,
    pub category: String,
    pub check: ToolCheck,
    /// Where the recipe installs the tool from (a version check's; none for
    /// functional tests and the system's checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<InstallSource>,
}

/// Where a tool comes from; the VM boots check one tool of each source the
/// image has (see `smoke::boot::boot_sample`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum InstallSource {
    Debian,
    Pypi,
    Download,
}

impl InstallSource {
    /// Where `recipe` installs its tool from: a download when it has one,
    /// else PyPI when it has PyPI packages, else Debian.
    pub(crate) fn of(recipe: &crate::config::Recipe) -> InstallSource {
        if !recipe.install.downloads.is_empty() {
            InstallSource::Download
        } else if !recipe.install.pypi.is_empty() {
            InstallSource::Pypi
        } else {
            InstallSource::Debian
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            InstallSource::Debian => "Debian",
            InstallSource::Pypi => "PyPI",
            InstallSource::Download => "a download",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolCheck {
    pub command: String,
    pub expect: String,
    pub status: i32,
    pub timeout: u32,
    /// Files the test needs, carried in the manifest itself so an artifact
    /// can be tested anywhere later; delivered to the guest on the test
    /// drive, never baked into the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<DataFile>,
}

/// One test data file: its base name and its bytes (base64 in JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DataFile {
    pub name: String,
    #[serde(with = "base64_bytes")]
    pub bytes: Vec<u8>,
}

impl DataFile {
    /// Read `path` (a recipe's test data file).
    pub fn read(path: &Path) -> Result<DataFile> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let name = path
            .file_name()
            .with_context(|| format!("{}: not a file name", path.display()))?
            .to_string_lossy()
            .into_owned();
        Ok(DataFile { name, bytes })
    }
}

mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

impl Tool {
    /// The recipe's version check (named after the recipe) and each of its
    /// functional tests (named `recipe/test`), with the tests' data read in.
    pub fn all_from_recipe(r: &Recipe) -> Result<Vec<Tool>> {
        let mut v = vec![Tool::from_recipe(r)];
        let dir = r.source.parent().unwrap_or(Path::new("."));
        for t in &r.tests {
            v.push(
                Tool::from_test(&r.name, &r.category, dir, t)
                    .with_context(|| format!("recipe {}, test {}", r.name, t.name))?,
            );
        }
        Ok(v)
    }

    /// The functional test `t` of `owner` (a recipe, or `data/<set>`),
    /// named `owner/test`, with its data files (named relative to `dir`)
    /// read in.
    pub(crate) fn from_test(
        owner: &str,
        category: &str,
        dir: &Path,
        t: &crate::config::FunctionalTest,
    ) -> Result<Tool> {
        let data = t
            .data
            .iter()
            .map(|d| DataFile::read(&dir.join(d)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tool {
            name: format!("{owner}/{}", t.name),
            category: category.to_string(),
            check: ToolCheck {
                command: t.script.clone(),
                expect: t.expect.as_str().trim_start_matches("(?m)").to_string(),
                status: t.status,
                timeout: t.timeout_secs,
                data,
            },
            source: None,
        })
    }

    /// Every check of `recipes`, in order.
    pub fn all_from_recipes(recipes: &[Recipe]) -> Result<Vec<Tool>> {
        let mut v = Vec::new();
        for r in recipes {
            v.extend(Tool::all_from_recipe(r)?);
        }
        Ok(v)
    }

    pub fn from_recipe(r: &Recipe) -> Tool {
        Tool {
            name: r.name.clone(),
            category: r.category.clone(),
            check: ToolCheck {
                command: r.check.command.clone(),
                // The catalogue compiles patterns in multi-line mode; keep
                // the pattern as the recipe wrote it.
                expect: r
                    .check
                    .expect
                    .as_str()
                    .trim_start_matches("(?m)")
                    .to_string(),
                status: r.check.status,
                timeout: r.check.timeout_secs,
                data: Vec::new(),
            },
            source: Some(InstallSource::of(r)),
        }
    }
}

impl Manifest {
    pub fn new(image: &Image, artifacts: Vec<Artifact>) -> Result<Manifest> {
        Ok(Manifest {
            image: image.name.clone(),
            description: image.description.clone(),
            suite: image.base.suite.clone(),
            architecture: image.base.architecture.clone(),
            boot: image
                .disk
                .boot
                .iter()
                .map(|b| b.as_str().to_string())
                .collect(),
            default_user: image.system.user.as_ref().map(|u| u.name.clone()),
            artifacts,
            tools: Tool::all_from_recipes(&image.recipes)?,
            tree_sha256: None,
            container_trees: BTreeMap::new(),
            tree_read_back_from: None,
            sectors_compared_with_raw: Vec::new(),
            data: Vec::new(),
            workbench: image.workbench,
            data_disk: None,
            every_check_in_every_boot: image.checks.every_boot,
            boot_sample: image.checks.boot_sample.clone(),
        })
    }

    pub fn path_for(out_dir: &Path, image_name: &str) -> PathBuf {
        out_dir.join(format!("{image_name}.manifest.json"))
    }

    pub fn write(&self, out_dir: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)? + "\n";
        crate::fsutil::write_atomic(&Self::path_for(out_dir, &self.image), json.as_bytes())
    }

    pub fn read(path: &Path) -> Result<Manifest> {
        let s = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&s)
            .with_context(|| format!("{} is not a biovm manifest", path.display()))
    }

    /// Its entry for the artifact file `artifact` (by file name) of `format`.
    pub fn entry(&self, artifact: &Path, format: Format) -> Option<&Artifact> {
        let name = artifact.file_name()?.to_string_lossy();
        self.artifacts
            .iter()
            .find(|a| a.format == format && a.file == name)
    }

    /// The manifest of the image an artifact belongs to: the
    /// `*.manifest.json` in its folder that lists it (an OCI layout folder
    /// is listed by its `index.json`).
    pub fn for_artifact(artifact: &Path) -> Result<Manifest> {
        let dir = artifact
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let file = artifact
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rd = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read folder {}", dir.display()))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".manifest.json") {
                let m = Manifest::read(&e.path())?;
                let listed = |a: &Artifact| {
                    a.file == file || a.file.strip_prefix(&file) == Some("/index.json")
                };
                if m.artifacts.iter().any(listed) {
                    return Ok(m);
                }
            }
        }
        anyhow::bail!(
            "no biovm manifest in {} lists {file}; pass the image file with --image",
            dir.display()
        )
    }

    pub fn boot_modes(&self) -> Vec<BootMode> {
        self.boot
            .iter()
            .filter_map(|b| crate::names::Named::named(b))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image's `[checks]` reach the manifest, which `biovm test` and
    /// `biovm release` read (an artifact is tested without its image file).
    #[test]
    fn the_image_checks_settings_travel_in_the_manifest() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("x.toml");
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let image = |checks: &str| {
            std::fs::write(
                &img,
                format!(
                    "name = \"x\"\n[base]\ndistribution = \"debian\"\n\
                     [recipes]\ninclude = [\"samtools\", \"pyrodigal\"]\n\
                     [disk]\nsize = \"2GiB\"\n{checks}"
                ),
            )
            .unwrap();
            crate::config::load_image(&img, &repo.join("recipes")).unwrap()
        };
        let m = Manifest::new(
            &image("[checks]\nevery-boot = true\nboot-sample = [\"samtools\", \"pyrodigal\"]\n"),
            vec![],
        )
        .unwrap();
        assert!(m.every_check_in_every_boot);
        assert_eq!(m.boot_sample, ["samtools", "pyrodigal"]);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["every_check_in_every_boot"], true);
        assert_eq!(
            json["boot_sample"],
            serde_json::json!(["samtools", "pyrodigal"])
        );
        // Without the section: neither field, and the defaults.
        let m = Manifest::new(&image(""), vec![]).unwrap();
        let json = serde_json::to_value(&m).unwrap();
        assert!(
            json.get("every_check_in_every_boot").is_none() && json.get("boot_sample").is_none()
        );
        assert!(!m.every_check_in_every_boot && m.boot_sample.is_empty());
    }

    #[test]
    fn an_artifact_finds_its_manifest_and_an_oci_folder_too() {
        let d = tempfile::tempdir().unwrap();
        let m = Manifest {
            image: "bio".into(),
            description: String::new(),
            suite: "bookworm".into(),
            architecture: "amd64".into(),
            boot: vec![],
            default_user: Some("bio".into()),
            artifacts: ["bio.raw", "bio.oci/index.json"]
                .iter()
                .map(|f| Artifact {
                    format: Format::Raw,
                    file: f.to_string(),
                    size: 0,
                    sha256: String::new(),
                })
                .collect(),
            tools: vec![],
            tree_sha256: None,
            container_trees: BTreeMap::new(),
            tree_read_back_from: None,
            sectors_compared_with_raw: Vec::new(),
            data: Vec::new(),
            workbench: None,
            data_disk: None,
            every_check_in_every_boot: false,
            boot_sample: Vec::new(),
        };
        m.write(d.path()).unwrap();
        for a in ["bio.raw", "bio.oci"] {
            assert_eq!(Manifest::for_artifact(&d.path().join(a)).unwrap(), m, "{a}");
        }
        let err = Manifest::for_artifact(&d.path().join("bio.sif")).unwrap_err();
        assert!(err.to_string().contains("lists bio.sif"), "{err}");
    }
}
