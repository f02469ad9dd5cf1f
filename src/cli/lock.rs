use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub struct LockArgs {
    /// The image file (images/<name>.toml); the lock is written next to it.
    pub image: PathBuf,
    /// Resolve again from the mirror even if the lock still matches the recipes.
    #[arg(long)]
    pub update: bool,
    /// Debian mirror to resolve from (default: the image's, else mmdebstrap's default).
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,
    /// Cache folder shared by builds (default: $BIOVM_CACHE_DIR, else ~/.cache/biovm).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    #[command(flatten)]
    pub host: super::HostPathArgs,
}

pub fn run(g: &GlobalArgs, a: LockArgs) -> anyhow::Result<ExitCode> {
    let recipe_dir = crate::config::default_recipe_dir(Some(&a.image), g.recipes.as_deref());
    let mut image = crate::config::load_image_with(&a.image, &recipe_dir, &a.host.access()?)?;
    if let Some(m) = a.mirror {
        image.base.mirror = Some(m);
    }
    let cache = a.cache.unwrap_or_else(crate::fsutil::cache_dir);
    let (path, lock, written) = crate::build::lock(&image, &cache, a.update)
        .with_context(|| format!("locking {} failed", a.image.display()))?;
    if g.json {
        crate::progress::result(
            "lock",
            serde_json::json!({
                "lock": path,
                "written": written,
                "debian_packages": lock.debian.len(),
                "downloads": lock.download.len(),
                "pypi_files": lock.pypi.len(),
                "source_date_epoch": lock.source_date_epoch,
            }),
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} {}: {} Debian packages, {} downloads, SOURCE_DATE_EPOCH {}",
        path.display(),
        if written { "written" } else { "is up to date" },
        lock.debian.len(),
        lock.download.len(),
        lock.source_date_epoch
    );
    Ok(ExitCode::SUCCESS)
}
