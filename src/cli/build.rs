use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::GlobalArgs;
use crate::build::{build_or_reuse, BuildOptions};
use crate::config::Format;

#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// The image file (images/<name>.toml).
    pub(crate) image: PathBuf,
    /// Output folder for the artifacts.
    #[arg(long, default_value = "out", value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Debian mirror to bootstrap from (default: the image's, else mmdebstrap's default).
    #[arg(long, value_name = "URL")]
    pub(crate) mirror: Option<String>,
    /// Cache folder shared by builds (default: $BIOVM_CACHE_DIR, else ~/.cache/biovm).
    #[arg(long, value_name = "DIR")]
    pub(crate) cache: Option<PathBuf>,
    /// Build from a vendor folder written by `biovm vendor`, with no
    /// network: every package, wheel and download the lock names comes
    /// from it (or biovm's own store).
    #[arg(long, value_name = "DIR")]
    pub(crate) vendor: Option<PathBuf>,
    /// Build a second time, from a fresh bootstrap, in a temporary folder
    /// inside --out (removed afterwards), and compare every output byte
    /// for byte with the first build (made as usual: reused, from a kept
    /// bootstrap, or afresh with --rebuild); a difference fails, naming
    /// the file and the first differing offset.
    #[arg(long)]
    pub(crate) verify_reproducible: bool,
    /// Build afresh even when --out holds a complete build from the same
    /// inputs (lock, image file, recipes and their data, formats, biovm
    /// itself), which is otherwise reused. Builds without a lock are never
    /// reused.
    #[arg(long)]
    pub(crate) rebuild: bool,
    /// Build only this one of the image's `[output] formats` (repeatable;
    /// default: all of them), e.g. `--format raw` for a quick boot test.
    #[arg(long = "format", value_name = "FMT", value_parser = parse_format)]
    pub(crate) formats: Vec<Format>,
    #[command(flatten)]
    pub(crate) host: super::HostPathArgs,
}

fn parse_format(s: &str) -> Result<Format, crate::names::UnknownName> {
    s.parse()
}

/// Keep only the `wanted` formats of the image; each must be one it lists.
fn restrict_formats(
    image: &mut crate::config::Image,
    wanted: &[Format],
    file: &std::path::Path,
) -> anyhow::Result<()> {
    if wanted.is_empty() {
        return Ok(());
    }
    for f in wanted {
        if !image.formats.contains(f) {
            let listed: Vec<&str> = image.formats.iter().map(|f| f.as_str()).collect();
            anyhow::bail!(
                "--format {}: {} does not list it in [output] formats ({})",
                f.as_str(),
                file.display(),
                listed.join(", ")
            );
        }
    }
    image.formats.retain(|f| wanted.contains(f));
    Ok(())
}

pub(crate) fn run(g: &GlobalArgs, a: BuildArgs) -> anyhow::Result<ExitCode> {
    let recipe_dir = crate::config::default_recipe_dir(Some(&a.image), g.recipes.as_deref());
    let mut image = crate::config::load_image_with(&a.image, &recipe_dir, &a.host.access()?)?;
    restrict_formats(&mut image, &a.formats, &a.image)?;
    let opts = BuildOptions {
        out_dir: a.out.clone(),
        cache_dir: a.cache.clone().unwrap_or_else(crate::fsutil::cache_dir),
        mirror: a.mirror.clone(),
        source_date_epoch: None,
        vendor: a.vendor.clone(),
        // --verify-reproducible's second build bootstraps afresh
        // (`build::verify_reproducible`); the first is made as usual, so a
        // complete build already in --out costs no second bootstrap.
        fresh_bootstrap: a.rebuild,
    };
    let rebuild = opts.fresh_bootstrap;
    let report = build_or_reuse(&image, &opts, rebuild)
        .with_context(|| format!("building {} failed", a.image.display()))?;
    if g.json {
        let mut result = serde_json::to_value(&report)?;
        if a.verify_reproducible {
            let bytes = verify(&image, &opts, &report, &a)?;
            result["reproducible_bytes"] = serde_json::json!(bytes);
        }
        crate::progress::result("build", result);
        return Ok(ExitCode::SUCCESS);
    }
    if report.reused {
        println!(
            "{} holds a complete build from the same inputs (lock, image file, recipes, formats, \
             biovm; sha256 {}), every artifact unchanged: reused (--rebuild builds afresh)",
            a.out.display(),
            report.inputs_sha256.as_deref().unwrap_or_default()
        );
    } else {
        for s in &report.stages {
            println!("{:<10} {:>7.1} s", s.stage, s.seconds);
        }
        if let Some(key) = &report.bootstrap_from_cache {
            println!(
                "bootstrap: the tree of an earlier bootstrap of the same locked packages, mirror, \
                 keyring, epoch and bootstrap code, from biovm's cache (key {key}; --rebuild \
                 bootstraps afresh)"
            );
        }
    }
    let manifest =
        crate::manifest::Manifest::read(&crate::manifest::Manifest::path_for(&a.out, &image.name))?;
    let data_disk = manifest.data_disk.iter().flat_map(|d| &d.files);
    for (art, what) in report
        .artifacts
        .iter()
        .map(|x| (x, ""))
        .chain(data_disk.map(|x| (x, "data disk, ")))
    {
        let path = a.out.join(&art.file);
        let used = crate::fsutil::allocated_bytes(&path).unwrap_or(0);
        println!(
            "{} ({what}{}, {} MiB, {} MiB allocated) sha256 {}",
            path.display(),
            art.format,
            art.size >> 20,
            used >> 20,
            art.sha256
        );
    }
    println!(
        "{} (SPDX 2.3 SBOM), {} and {}",
        crate::formats::spdx::sbom_path(&a.out, &image.name).display(),
        a.out.join("SHA256SUMS").display(),
        crate::manifest::Manifest::path_for(&a.out, &image.name).display()
    );
    if a.verify_reproducible {
        let bytes = verify(&image, &opts, &report, &a)?;
        println!(
            "reproducible: a second build, from a fresh bootstrap, gave the same {} bytes in every artifact, SHA256SUMS, the SBOM and the manifest",
            bytes
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(
    image: &crate::config::Image,
    opts: &BuildOptions,
    report: &crate::build::BuildReport,
    a: &BuildArgs,
) -> anyhow::Result<u64> {
    crate::build::verify_reproducible(image, opts, report).with_context(|| {
        format!(
            "verifying that {} is reproducible failed",
            a.image.display()
        )
    })
}
