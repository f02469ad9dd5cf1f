use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub(crate) struct LockArgs {
    /// The image file (images/<name>.toml); the lock is written next to it.
    pub(crate) image: PathBuf,
    /// Resolve again from the mirror even if the lock still matches the recipes.
    #[arg(long, conflicts_with = "check")]
    pub(crate) update: bool,
    /// Write nothing: say which locked versions the mirror no longer serves
    /// (and whether biovm's store or --vendor DIR still has them) and which
    /// the security suite has superseded. Exit 1 when a build would fail.
    #[arg(long)]
    pub(crate) check: bool,
    /// With --check: a vendor folder (`biovm vendor`) a build would also take packages from.
    #[arg(long, value_name = "DIR", requires = "check")]
    pub(crate) vendor: Option<PathBuf>,
    /// Debian mirror to resolve from (default: the image's, else mmdebstrap's default).
    #[arg(long, value_name = "URL")]
    pub(crate) mirror: Option<String>,
    /// Cache folder shared by builds (default: $BIOVM_CACHE_DIR, else ~/.cache/biovm).
    #[arg(long, value_name = "DIR")]
    pub(crate) cache: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) host: super::HostPathArgs,
}

pub(crate) fn run(g: &GlobalArgs, a: LockArgs) -> anyhow::Result<ExitCode> {
    let recipe_dir = crate::config::default_recipe_dir(Some(&a.image), g.recipes.as_deref());
    let mut image = crate::config::load_image_with(&a.image, &recipe_dir, &a.host.access()?)?;
    if let Some(m) = a.mirror {
        image.base.mirror = Some(m);
    }
    let cache = a.cache.unwrap_or_else(crate::fsutil::cache_dir);
    if a.check {
        let report = crate::lock::check::check(&image, &cache, a.vendor.as_deref())
            .with_context(|| format!("checking the lock of {} failed", a.image.display()))?;
        return print_check(g, &a.image, &report);
    }
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

/// Print what `lock --check` found; exit 1 when a build would fail.
fn print_check(
    g: &GlobalArgs,
    image: &Path,
    r: &crate::lock::check::Report,
) -> anyhow::Result<ExitCode> {
    let code = if r.buildable {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    if g.json {
        crate::progress::result("lock", serde_json::to_value(r)?);
        return Ok(code);
    }
    let vendor = r
        .vendor
        .as_ref()
        .map(|v| format!(" or the vendor folder {}", v.display()))
        .unwrap_or_default();
    println!(
        "{}: {} Debian packages checked against {} signed package indices of the mirror",
        r.lock.display(),
        r.debian_packages,
        r.indices.len()
    );
    if r.gone.is_empty() {
        println!("the mirror serves every locked version");
    } else {
        println!(
            "{} locked version(s) the mirror no longer serves:",
            r.gone.len()
        );
        for d in &r.gone {
            let mut wheres = Vec::new();
            if d.in_store {
                wheres.push("in biovm's store".to_string());
            }
            if d.in_vendor {
                wheres.push("in the vendor folder".to_string());
            }
            let kept = if wheres.is_empty() {
                format!("not in biovm's store{vendor}")
            } else {
                wheres.join(", ")
            };
            let other = d
                .mirror_sha256
                .as_ref()
                .map(|s| format!(" (the mirror serves it with sha256 {s})"))
                .unwrap_or_default();
            println!(
                "  {} {} ({}) sha256 {}{other}: {kept}",
                d.deb.name, d.deb.version, d.deb.architecture, d.deb.sha256
            );
        }
    }
    if !r.security_index {
        println!("the mirror's sources have no security suite: superseded packages not checked");
    } else if r.superseded.is_empty() {
        println!("no locked package has a newer version in the security suite");
    } else {
        println!(
            "{} locked package(s) with a newer version in the security suite:",
            r.superseded.len()
        );
        for s in &r.superseded {
            println!("  {} {} -> {}", s.name, s.locked, s.security);
        }
    }
    let update = format!("biovm lock --update {}", image.display());
    if !r.buildable {
        let lost = r.gone.iter().filter(|d| !d.kept()).count();
        println!(
            "a build from this lock would fail: {lost} locked package(s) are neither on the mirror nor in biovm's store{vendor}; run `{update}`"
        );
    } else if !r.superseded.is_empty() {
        println!(
            "a build from this lock works, without the security updates; `{update}` takes them"
        );
    } else {
        println!("a build from this lock works");
    }
    Ok(code)
}
