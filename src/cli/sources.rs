use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub(crate) struct SourcesArgs {
    /// The image file (images/<name>.toml); its lock must exist.
    pub(crate) image: PathBuf,
    /// The folder to write: DIR/sources/debian/, DIR/sources/pypi/ and
    /// DIR/<name>.sources.json (what `biovm release --sources` adds to a
    /// release).
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Cache folder shared by builds (default: $BIOVM_CACHE_DIR, else ~/.cache/biovm).
    #[arg(long, value_name = "DIR")]
    pub(crate) cache: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) host: super::HostPathArgs,
}

pub(crate) fn run(g: &GlobalArgs, a: SourcesArgs) -> anyhow::Result<ExitCode> {
    let recipe_dir = crate::config::default_recipe_dir(Some(&a.image), g.recipes.as_deref());
    let image = crate::config::load_image_with(&a.image, &recipe_dir, &a.host.access()?)?;
    let cache = a.cache.unwrap_or_else(crate::fsutil::cache_dir);
    let (lock_path, lock) = crate::lock::Lock::of_image(&image)?;
    let sources = crate::progress::stage("sources", "collect", || {
        crate::sources::collect(&image, &lock, &cache)
    })
    .with_context(|| format!("collecting the sources of {} failed", lock_path.display()))?;
    crate::sources::place(&sources, &cache, &a.out)?;
    let listing = a.out.join(format!("{}.sources.json", image.name));
    crate::fsutil::write_atomic(
        &listing,
        (serde_json::to_string_pretty(&sources)? + "\n").as_bytes(),
    )?;
    let files = sources.files();
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    if g.json {
        crate::progress::result(
            "sources",
            serde_json::json!({
                "listing": listing,
                "debian": sources.debian.len(),
                "pypi": sources.pypi.len(),
                "files": files.len(),
                "bytes": bytes,
            }),
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}: {} Debian source packages and {} PyPI source distributions ({} files, {:.1} MiB) behind {}",
        listing.display(),
        sources.debian.len(),
        sources.pypi.len(),
        files.len(),
        bytes as f64 / 1048576.0,
        lock_path.display()
    );
    Ok(ExitCode::SUCCESS)
}
