use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub(crate) struct VendorArgs {
    /// The image file (images/<name>.toml); its lock must exist.
    pub(crate) image: PathBuf,
    /// The vendor folder to write (replaced whole if it is one already).
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Cache folder shared by builds (default: $BIOVM_CACHE_DIR, else ~/.cache/biovm).
    #[arg(long, value_name = "DIR")]
    pub(crate) cache: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) host: super::HostPathArgs,
}

pub(crate) fn run(g: &GlobalArgs, a: VendorArgs) -> anyhow::Result<ExitCode> {
    let recipe_dir = crate::config::default_recipe_dir(Some(&a.image), g.recipes.as_deref());
    let image = crate::config::load_image_with(&a.image, &recipe_dir, &a.host.access()?)?;
    let cache = a.cache.unwrap_or_else(crate::fsutil::cache_dir);
    let info = crate::vendor::vendor(&image, &cache, &a.out)
        .with_context(|| format!("vendoring {} failed", a.image.display()))?;
    if g.json {
        let mut v = serde_json::to_value(&info)?;
        v["out"] = serde_json::json!(a.out);
        crate::progress::result("vendor", v);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}: {} Debian packages, {} PyPI files, {} downloads ({:.1} MiB) for {}; build with `biovm build {} --vendor {}`",
        a.out.display(),
        info.debian_packages,
        info.pypi_files,
        info.downloads,
        info.bytes as f64 / 1048576.0,
        image.name,
        a.image.display(),
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
