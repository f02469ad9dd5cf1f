use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use super::GlobalArgs;
use crate::config::{BootMode, Format};
use crate::manifest::{Manifest, Tool};
use crate::smoke::{self, report, TestOptions};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Firmware {
    Uefi,
    Bios,
}

#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    /// An image file (images/minimal.toml: test every artifact its build
    /// wrote to --out) or one built artifact (out/minimal.qcow2).
    pub(crate) target: PathBuf,
    /// Take the checks from this image file (and its recipes) instead of the
    /// manifest written next to the artifacts at build time.
    #[arg(long, value_name = "IMAGE")]
    pub(crate) image: Option<PathBuf>,
    /// Where the build wrote the artifacts (when TARGET is an image file).
    #[arg(long, default_value = "out", value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Firmware to boot with (repeatable; default: the image's boot modes).
    #[arg(long, value_enum)]
    pub(crate) firmware: Vec<Firmware>,
    /// Boot every artifact's disk, even one that gives the guest exactly
    /// what another artifact's disk booted on the same controller and
    /// firmware gives it (the VMDK inside the OVA and the Vagrant box is
    /// the `vmdk` artifact's, byte for byte; the VDI holds the same
    /// sectors): by default such a cell reports that boot's results and
    /// names it.
    #[arg(long)]
    pub(crate) boot_identical_disks: bool,
    #[command(flatten)]
    pub(crate) matrix: MatrixArgs,
}

/// How the matrix runs: the flags `biovm test` and `biovm release` share.
#[derive(Debug, Args)]
pub(crate) struct MatrixArgs {
    /// Guests booted at once (default: one per core).
    #[arg(long)]
    pub(crate) jobs: Option<usize>,
    /// Seconds to wait for a guest to reach its checks; a guest that does
    /// not is killed and reported.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub(crate) boot_timeout: u64,
    /// Guest memory in MiB per processor (a guest runs as many checks at
    /// once as it has processors).
    #[arg(long, default_value_t = 2048, value_name = "MIB")]
    pub(crate) memory: u32,
    /// Run every check in every boot too (for runners where KVM works).
    /// Without it, every check runs once natively in the root filesystem
    /// read out of a disk (proven to be the build's tree), and each boot
    /// runs the system's checks and one tool per install source. The rule
    /// used is in the report (and a release's release.json).
    #[arg(long)]
    pub(crate) full: bool,
    /// Run every cell again, even one whose passing result is stored: by
    /// default a cell whose artifact bytes, checks and runner are those of
    /// an earlier passing run takes that run's results and says so.
    #[arg(long)]
    pub(crate) rerun: bool,
}

impl MatrixArgs {
    /// The test options these flags give (the tree digest comes from the
    /// build's manifest, not from flags).
    pub(crate) fn options(&self) -> anyhow::Result<TestOptions> {
        let jobs = self.jobs.unwrap_or_else(smoke::default_jobs);
        if jobs == 0 {
            bail!("--jobs must be at least 1");
        }
        Ok(TestOptions {
            boot_timeout: Duration::from_secs(self.boot_timeout),
            jobs,
            memory_mib: self.memory,
            boot_identical_disks: false,
            full: self.full,
            boot_sample: Vec::new(),
            tree_sha256: None,
            container_trees: Default::default(),
            default_user: None,
            rerun: self.rerun,
            workbench: None,
            data_disk: None,
            stop_on_native_failure: false,
        })
    }
}

/// What to test: artifacts (path and format), the checks, the firmware.
struct Plan {
    artifacts: Vec<(PathBuf, Format)>,
    /// The build's tree digest, from the manifest.
    tree_sha256: Option<String>,
    /// The tree each container format holds, from the manifest.
    container_trees: std::collections::BTreeMap<Format, String>,
    tools: Vec<Tool>,
    boot: Vec<BootMode>,
    /// The image's default user, who runs the native checks.
    default_user: Option<String>,
    /// The image's workbench, which every boot checks.
    workbench: Option<crate::config::Workbench>,
    /// The image's data disk, which every boot attaches.
    data_disk: Option<smoke::DataDiskFiles>,
    /// The image's `[checks]`: every check in every boot, the boot sample.
    every_boot: bool,
    boot_sample: Vec<String>,
    /// Where the reports go.
    report_dir: PathBuf,
}

/// What an image file says about testing its builds.
struct ImageChecks {
    name: String,
    tools: Vec<Tool>,
    boot: Vec<BootMode>,
    default_user: Option<String>,
}

/// The checks of the reference data a build recorded in its manifest.
fn data_checks(m: &Manifest) -> Vec<Tool> {
    m.tools
        .iter()
        .filter(|t| t.category == crate::data::CATEGORY)
        .cloned()
        .collect()
}

fn tools_of_image(g: &GlobalArgs, img: &Path) -> anyhow::Result<ImageChecks> {
    let dir = crate::config::default_recipe_dir(Some(img), g.recipes.as_deref());
    let image = crate::config::load_image(img, &dir)?;
    Ok(ImageChecks {
        tools: Tool::all_from_recipes(&image.recipes)?,
        boot: image.disk.boot.clone(),
        default_user: image.system.user.as_ref().map(|u| u.name.clone()),
        name: image.name,
    })
}

fn plan(g: &GlobalArgs, a: &TestArgs) -> anyhow::Result<Plan> {
    let is_image = a.target.extension().is_some_and(|e| e == "toml");
    if is_image {
        let ImageChecks {
            name, tools, boot, ..
        } = tools_of_image(g, &a.target)?;
        let mpath = Manifest::path_for(&a.out, &name);
        let m = Manifest::read(&mpath).with_context(|| {
            format!(
                "no build of {} in {} (run `biovm build {} --out {}` first)",
                a.target.display(),
                a.out.display(),
                a.target.display(),
                a.out.display()
            )
        })?;
        let mut artifacts = Vec::new();
        for art in &m.artifacts {
            let f = art.format;
            let mut p = a.out.join(&art.file);
            if !p.is_file() {
                bail!(
                    "{} lists {} but it is missing",
                    mpath.display(),
                    p.display()
                );
            }
            // An OCI layout is listed by its index.json; it is the folder.
            if f == Format::Oci && p.ends_with("index.json") {
                p.pop();
            }
            artifacts.push((p, f));
        }
        // The data checks carry the digests the build recorded.
        let mut tools = tools;
        tools.extend(data_checks(&m));
        return Ok(Plan {
            tree_sha256: m.tree_sha256.clone(),
            container_trees: m.container_trees.clone(),
            default_user: m.default_user.clone(),
            workbench: m.workbench,
            data_disk: m.data_disk.as_ref().map(|d| d.in_dir(&a.out)).transpose()?,
            every_boot: m.every_check_in_every_boot,
            boot_sample: m.boot_sample.clone(),
            artifacts,
            tools,
            boot,
            report_dir: a.out.join(format!("{name}.test")),
        });
    }
    if !a.target.exists() {
        bail!("{} does not exist", a.target.display());
    }
    let file = a
        .target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let manifest = Manifest::for_artifact(&a.target);
    let (tools, boot, default_user) = match (&a.image, &manifest) {
        (Some(img), m) => {
            let mut c = tools_of_image(g, img)?;
            c.tools.extend(m.iter().flat_map(data_checks));
            (c.tools, c.boot, c.default_user)
        }
        (None, Ok(m)) => (m.tools.clone(), m.boot_modes(), m.default_user.clone()),
        (None, Err(e)) => bail!("{e:#}"),
    };
    let (every_boot, boot_sample) = manifest
        .as_ref()
        .map(|m| (m.every_check_in_every_boot, m.boot_sample.clone()))
        .unwrap_or_default();
    let tree_sha256 = manifest.as_ref().ok().and_then(|m| m.tree_sha256.clone());
    let container_trees = manifest
        .as_ref()
        .map(|m| m.container_trees.clone())
        .unwrap_or_default();
    let workbench = manifest.as_ref().ok().and_then(|m| m.workbench);
    let data_disk = match manifest.as_ref().ok().and_then(|m| m.data_disk.as_ref()) {
        Some(d) => Some(d.in_dir(a.target.parent().unwrap_or(Path::new(".")))?),
        None => None,
    };
    let from_manifest = manifest.ok().and_then(|m| {
        m.artifacts
            .iter()
            .find(|x| x.file == file)
            .map(|x| x.format)
    });
    let format = match from_manifest {
        Some(f) => f,
        None => Format::from_file_name(&file).with_context(|| {
            format!(
                "{}: not an artifact biovm can test (.raw, .qcow2, .vmdk, .vdi, .ova, .box, \
                     .oci, .docker.tar, .sif, .rootfs.tar.gz)",
                a.target.display()
            )
        })?,
    };
    Ok(Plan {
        artifacts: vec![(a.target.clone(), format)],
        tree_sha256,
        container_trees,
        tools,
        boot,
        default_user,
        workbench,
        data_disk,
        every_boot,
        boot_sample,
        report_dir: smoke::report_dir_for(&a.target),
    })
}

pub(crate) fn run(g: &GlobalArgs, a: TestArgs) -> anyhow::Result<ExitCode> {
    let p = plan(g, &a)?;
    let modes: Vec<BootMode> = if a.firmware.is_empty() {
        p.boot.clone()
    } else {
        a.firmware
            .iter()
            .map(|f| match f {
                Firmware::Uefi => BootMode::Uefi,
                Firmware::Bios => BootMode::Bios,
            })
            .collect()
    };
    let base = a.matrix.options()?;
    let opts = TestOptions {
        full: base.full || p.every_boot,
        boot_sample: p.boot_sample.clone(),
        boot_identical_disks: a.boot_identical_disks,
        tree_sha256: p.tree_sha256.clone(),
        container_trees: p.container_trees.clone(),
        default_user: p.default_user.clone(),
        workbench: p.workbench,
        data_disk: p.data_disk.clone(),
        ..base
    };
    let reports = smoke::test_artifacts(&p.artifacts, &p.tools, &modes, &p.report_dir, &opts)?;
    if g.json {
        crate::progress::result("test", serde_json::to_value(&reports)?);
    } else {
        print!("{}", report::table(&reports));
        println!(
            "reports: {} (JSON), {} (JUnit)",
            p.report_dir.join("report.json").display(),
            p.report_dir.join("junit.xml").display()
        );
    }
    let failures = report::failures(&reports);
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "{} of {} boots failed:",
            reports.iter().filter(|r| !r.passed()).count(),
            reports.len()
        );
        for f in failures {
            eprintln!("  {f}");
        }
        Ok(ExitCode::FAILURE)
    }
}
