use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, ValueEnum};

use super::GlobalArgs;
use crate::config::BootMode;
use crate::manifest::{Manifest, Tool};
use crate::smoke::{self, report, TestOptions};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Firmware {
    Uefi,
    Bios,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// A built disk (e.g. out/minimal.raw).
    pub artifact: PathBuf,
    /// Take the checks from this image file (and its recipes) instead of the
    /// manifest written next to the artifact at build time.
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<PathBuf>,
    /// Firmware to boot with (repeatable; default: the image's boot modes).
    #[arg(long, value_enum)]
    pub firmware: Vec<Firmware>,
    /// Guests booted at once (default: one per core).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Seconds to wait for the guest to reach its checks.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub boot_timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048, value_name = "MIB")]
    pub memory: u32,
    /// Print the JSON report instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &GlobalArgs, a: TestArgs) -> anyhow::Result<ExitCode> {
    if !a.artifact.is_file() {
        bail!("{} does not exist or is not a file", a.artifact.display());
    }
    let (tools, boot): (Vec<Tool>, Vec<BootMode>) = match &a.image {
        Some(img) => {
            let dir = crate::config::default_recipe_dir(Some(img), g.recipes.as_deref());
            let image = crate::config::load_image(img, &dir)?;
            (
                image
                    .recipes
                    .iter()
                    .flat_map(Tool::all_from_recipe)
                    .collect(),
                image.disk.boot.clone(),
            )
        }
        None => {
            let m = Manifest::for_artifact(&a.artifact)?;
            let b = m.boot_modes();
            (m.tools, b)
        }
    };
    let modes: Vec<BootMode> = if a.firmware.is_empty() {
        boot
    } else {
        a.firmware
            .iter()
            .map(|f| match f {
                Firmware::Uefi => BootMode::Uefi,
                Firmware::Bios => BootMode::Bios,
            })
            .collect()
    };
    crate::doctor::require(crate::doctor::Need::Test)?;
    let opts = TestOptions {
        boot_timeout: Duration::from_secs(a.boot_timeout),
        jobs: a.jobs.unwrap_or_else(smoke::default_jobs),
        memory_mib: a.memory,
    };
    let dir = smoke::report_dir_for(&a.artifact);
    // QEMU reads these formats directly (through its snapshot overlay).
    let format = match a.artifact.extension().and_then(|e| e.to_str()) {
        Some("qcow2") => "qcow2",
        Some("vmdk") => "vmdk",
        Some("vdi") => "vdi",
        Some("raw") | Some("img") => "raw",
        _ => bail!(
            "{}: biovm test boots .raw, .qcow2, .vmdk and .vdi disks",
            a.artifact.display()
        ),
    };
    let reports = smoke::test_disk(&a.artifact, format, &tools, &modes, &dir, &opts)?;
    let json = serde_json::to_string_pretty(&reports)? + "\n";
    crate::fsutil::write_atomic(&dir.join("report.json"), json.as_bytes())?;
    if a.json {
        print!("{json}");
    } else {
        print!("{}", report::table(&a.artifact, &reports));
    }
    let failures = report::failures(&reports);
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{} failed:", a.artifact.display());
        for f in failures {
            eprintln!("  {f}");
        }
        Ok(ExitCode::FAILURE)
    }
}
