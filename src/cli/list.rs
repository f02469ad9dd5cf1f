//! `biovm list`: the recipes in the catalogue, as a table or JSON, and
//! (`--against`) how they cover a reference list of tools.

use std::process::ExitCode;

use clap::Args;
use serde_json::{json, Value};

use super::GlobalArgs;
use crate::config::{self, coverage, Diagnostic, Recipe};

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only list the recipes of this category.
    #[arg(long, value_name = "CATEGORY")]
    pub(crate) category: Option<String>,
    /// Print the catalogue page (Markdown): tool, category, version, source, check.
    /// Versions come from the lock of the image given with --lock-image.
    #[arg(long, conflicts_with = "json")]
    pub(crate) markdown: bool,
    /// Image whose lock gives the versions for --markdown (default: images/biolinux.toml).
    #[arg(long, value_name = "IMAGE", default_value = "images/biolinux.toml")]
    pub(crate) lock_image: std::path::PathBuf,
    /// For maintainers: how the catalogue covers a reference list of tools
    /// (a table with `tool` and `debian_bookworm_package` columns, or one
    /// Debian package per line): each entry covered by a recipe, excluded
    /// with a reason, or missing. Repeat for several lists. Exit 1 when
    /// one is missing.
    #[arg(long, value_name = "FILE", conflicts_with = "markdown")]
    pub(crate) against: Vec<std::path::PathBuf>,
    /// The exclusions for --against (default: exclusions.toml in the recipe folder).
    #[arg(long, value_name = "FILE", requires = "against")]
    pub(crate) exclusions: Option<std::path::PathBuf>,
}

pub(crate) fn run(g: &GlobalArgs, a: ListArgs) -> anyhow::Result<ExitCode> {
    let dir = config::default_recipe_dir(None, g.recipes.as_deref());
    let catalog = config::load_catalog(std::slice::from_ref(&dir))?;
    if let Some(c) = &a.category {
        let categories = catalog.categories();
        if !categories.contains(c) {
            let d = Diagnostic::new(&dir, format!("unknown category `{c}`"))
                .with_suggestion(c, categories.iter().map(String::as_str));
            let d = if d.help.is_none() {
                d.with_help(format!(
                    "known categories: {}",
                    config::quoted_list(&categories)
                ))
            } else {
                d
            };
            return Err(anyhow::Error::new(config::Diagnostics::from(d)));
        }
    }
    if !a.against.is_empty() {
        let path = a
            .exclusions
            .clone()
            .unwrap_or_else(|| coverage::exclusions_path(&dir));
        let exclusions = coverage::read_exclusions(&path, &catalog)?;
        return against(g, &a.against, &catalog, &exclusions);
    }
    let recipes: Vec<&Recipe> = catalog
        .recipes
        .values()
        .filter(|r| a.category.as_ref().map_or(true, |c| &r.category == c))
        .collect();
    if a.markdown {
        emit(&markdown(&recipes, &a.lock_image)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if g.json {
        let list: Vec<Value> = recipes.iter().map(|r| recipe_json(r)).collect();
        emit(&format!("{}\n", serde_json::to_string_pretty(&list)?))?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 4]> = recipes
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.category.clone(),
                sources(r).join(","),
                r.summary.clone(),
            ]
        })
        .collect();
    let header = [
        "NAME".to_string(),
        "CATEGORY".to_string(),
        "SOURCE".to_string(),
        "SUMMARY".to_string(),
    ];
    let mut widths = [0usize; 3];
    for row in std::iter::once(&header).chain(rows.iter()) {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut table = String::new();
    for row in std::iter::once(&header).chain(rows.iter()) {
        table.push_str(&format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}\n",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        ));
    }
    emit(&table)?;
    Ok(ExitCode::SUCCESS)
}

/// Write to standard output; a closed pipe (`biovm list | head`) is not an error.
pub(super) fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// The kinds of install source a recipe uses: `debian`, `pypi`, `download`.
pub(super) fn sources(r: &Recipe) -> Vec<&'static str> {
    let mut s = Vec::new();
    if !r.install.debian.is_empty() {
        s.push("debian");
    }
    if !r.install.pypi.is_empty() {
        s.push("pypi");
    }
    if !r.install.downloads.is_empty() {
        s.push("download");
    }
    s
}

/// A pattern as written in the recipe (without the `(?m)` biovm adds).
pub(super) fn pattern(re: &regex::Regex) -> &str {
    re.as_str().strip_prefix("(?m)").unwrap_or(re.as_str())
}

/// One recipe as a JSON object (used by `list --json` and `show --json`).
pub(super) fn recipe_json(r: &Recipe) -> Value {
    json!({
        "name": r.name,
        "category": r.category,
        "summary": r.summary,
        "homepage": r.homepage,
        "license": r.license,
        "source": r.source.display().to_string(),
        "install": {
            "debian": r.install.debian.iter().map(|p| p.apt_spec()).collect::<Vec<_>>(),
            "pypi": r.install.pypi.iter().map(|p| format!("{}=={}", p.name, p.version)).collect::<Vec<_>>(),
            "downloads": r.install.downloads.iter().map(|d| json!({
                "url": d.url,
                "sha256": d.sha256,
                "dest": d.dest,
                "unpack": d.unpack,
            })).collect::<Vec<_>>(),
        },
        "check": {
            "command": r.check.command,
            "expect": pattern(&r.check.expect),
            "status": r.check.status,
            "timeout": r.check.timeout_secs,
        },
        "tests": r.tests.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
    })
}

/// The catalogue page: one row per recipe, the version of its first Debian
/// package from the lock when there is one.
fn markdown(recipes: &[&Recipe], lock_image: &std::path::Path) -> anyhow::Result<String> {
    let lock_path = crate::lock::path_for(lock_image);
    let versions: std::collections::BTreeMap<String, String> = if lock_path.exists() {
        crate::lock::Lock::read(&lock_path)?
            .debian
            .into_iter()
            .map(|d| (d.name, d.version))
            .collect()
    } else {
        Default::default()
    };
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let mut out = String::from(
        "# The biovm catalogue\n\n| tool | category | version | source | check |\n|---|---|---|---|---|\n",
    );
    for r in recipes {
        let version = r.version_in(&versions).unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "| [{}]({}) | {} | {} | {} | `{}` |\n",
            r.name,
            r.homepage,
            r.category,
            cell(&version),
            sources(r).join(", "),
            cell(&r.check.command)
        ));
    }
    out.push_str(&format!(
        "\n{} tools. Versions are those of {} ({}).\n",
        recipes.len(),
        lock_path.display(),
        if versions.is_empty() {
            "no lock yet: run `biovm lock` to fill them in"
        } else {
            "locked"
        }
    ));
    Ok(out)
}

/// `list --against`: each reference entry and where it stands, a summary
/// per reference, exit 1 when an entry is missing.
fn against(
    g: &GlobalArgs,
    references: &[std::path::PathBuf],
    catalog: &config::Catalog,
    exclusions: &[coverage::Exclusion],
) -> anyhow::Result<ExitCode> {
    let mut missing = 0;
    let mut docs = Vec::new();
    let mut text = String::new();
    for path in references {
        let rows = coverage::compare(&coverage::read_reference(path)?, catalog, exclusions);
        let count = |w: &str| rows.iter().filter(|(_, s)| s.word() == w).count();
        missing += count("missing");
        let with_package = rows.iter().filter(|(e, _)| e.package.is_some()).count();
        text.push_str(&format!(
            "{}: {} entries, {with_package} with a Debian 12 package: {} covered, {} excluded, {} missing\n",
            path.display(),
            rows.len(),
            rows.iter()
                .filter(|(e, s)| e.package.is_some() && s.word() == "covered")
                .count(),
            count("excluded"),
            count("missing"),
        ));
        for (e, s) in &rows {
            let detail = match s {
                coverage::Status::Covered(by) => by.join(", "),
                coverage::Status::Excluded(x) => format!(
                    "{}: {}{}{}",
                    x.reason.as_str(),
                    x.note,
                    x.superseded_by
                        .as_ref()
                        .map(|r| format!(" (recipe {r})"))
                        .unwrap_or_default(),
                    x.bug
                        .as_ref()
                        .map(|b| format!(" ({b})"))
                        .unwrap_or_default()
                ),
                _ => String::new(),
            };
            if s.word() != "covered" || g.verbose > 0 {
                text.push_str(&format!(
                    "  {:<18} {:<32} {:<28} {detail}\n",
                    s.word(),
                    e.tool,
                    e.package.as_deref().unwrap_or("-"),
                ));
            }
        }
        docs.push(json!({
            "reference": path.display().to_string(),
            "entries": rows.iter().map(|(e, s)| {
                let mut v = json!({"tool": e.tool, "package": e.package, "status": s.word()});
                match s {
                    coverage::Status::Covered(by) => v["recipes"] = json!(by),
                    coverage::Status::Excluded(x) => {
                        v["reason"] = json!(x.reason.as_str());
                        v["note"] = json!(x.note);
                        v["superseded_by"] = json!(x.superseded_by);
                        v["bug"] = json!(x.bug);
                    }
                    _ => {}
                }
                v
            }).collect::<Vec<_>>(),
        }));
    }
    if g.json {
        emit(&format!("{}\n", serde_json::to_string_pretty(&docs)?))?;
    } else {
        emit(&text)?;
    }
    Ok(if missing > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
