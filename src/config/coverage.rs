//! How the catalogue covers a reference list of tools (Cloud BioLinux's
//! tools with their Debian package, Debian Med's cloud task), for
//! maintainers: each reference entry is covered by a recipe, excluded
//! with a reason (`recipes/exclusions.toml`), without a Debian package in
//! the reference, or missing.
//!
//! The exclusions file:
//!
//! ```toml
//! [[exclude]]
//! package = "vienna-rna"          # the Debian package a reference names
//! reason = "not-in-main"          # library | not-in-main | superseded | broken | no-program
//! note = "in non-free: images install from main only"
//! # superseded-by = "muscle"      # with reason = "superseded": the recipe that replaces it
//! # bug = "https://bugs.debian.org/1"   # with reason = "broken"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::access::HostAccess;
use super::diag::{from_toml_error, Diagnostic, Diagnostics};
use super::model::Catalog;
use super::validate::{self, Ctx, Invalid};

/// The file name of the exclusions, at the top of a recipe folder.
pub(crate) const EXCLUSIONS: &str = "exclusions.toml";

/// Why a reference package has no recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Reason {
    /// A library for programmers (R, Perl, Python, Java) with no program
    /// and no check a researcher would run.
    Library,
    /// Not in Debian 12's `main` component, the only one images install from.
    NotInMain,
    /// Another recipe does its work (`superseded-by` names it).
    Superseded,
    /// Broken in Debian 12 (`bug` names the report).
    Broken,
    /// Ships data, documentation or helpers, no program of its own.
    NoProgram,
}

impl Reason {
    const ALL: [(&'static str, Reason); 5] = [
        ("library", Reason::Library),
        ("not-in-main", Reason::NotInMain),
        ("superseded", Reason::Superseded),
        ("broken", Reason::Broken),
        ("no-program", Reason::NoProgram),
    ];

    /// The reason as the exclusions file writes it.
    pub(crate) fn as_str(self) -> &'static str {
        Reason::ALL
            .iter()
            .find(|(_, r)| *r == self)
            .map(|(s, _)| *s)
            .unwrap_or("?")
    }
}

/// One excluded package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exclusion {
    pub(crate) package: String,
    pub(crate) reason: Reason,
    pub(crate) note: String,
    pub(crate) superseded_by: Option<String>,
    pub(crate) bug: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    exclude: Vec<RawExclusion>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawExclusion {
    package: Spanned<String>,
    reason: Spanned<String>,
    note: Spanned<String>,
    superseded_by: Option<Spanned<String>>,
    bug: Option<Spanned<String>>,
}

/// Read and validate the exclusions at `path` against `catalog`: each
/// package named once, a known reason, a note, `superseded-by` naming a
/// recipe (required with `superseded`), `bug` a URL (required with
/// `broken`), and no package that a recipe installs. A missing file is no
/// exclusions.
pub(crate) fn read_exclusions(
    path: &Path,
    catalog: &Catalog,
) -> Result<Vec<Exclusion>, Diagnostics> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Diagnostic::new(path, format!("cannot read: {e}")).into());
        }
    };
    let raw: RawFile = toml::from_str(&text).map_err(|e| from_toml_error(path, &text, &e))?;
    let access = HostAccess::strict();
    let mut cx = Ctx::new(path, &text, &access);
    let installed: BTreeMap<&str, &str> = catalog
        .recipes
        .values()
        .flat_map(|r| {
            r.install
                .debian
                .iter()
                .map(|p| (p.name.as_str(), r.name.as_str()))
        })
        .collect();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for e in &raw.exclude {
        let package = e.package.get_ref().clone();
        let valid = cx.check(&e.package, |p| validate::deb_package(p)).is_some();
        if valid && !seen.insert(package.clone()) {
            cx.error(e.package.span(), format!("`{package}` is excluded twice"));
        }
        if let Some(recipe) = installed.get(package.as_str()) {
            cx.error(
                e.package.span(),
                format!("`{package}` is excluded, yet recipe `{recipe}` installs it"),
            );
        }
        let reason = cx.check(&e.reason, |r| {
            Reason::ALL
                .iter()
                .find(|(s, _)| s == r)
                .map(|(_, r)| *r)
                .ok_or_else(|| {
                    Invalid::new(format!("unknown reason `{r}`")).help(format!(
                        "one of {}",
                        super::quoted_list(&Reason::ALL.map(|(s, _)| s))
                    ))
                })
        });
        let note = cx.non_empty(&e.note, "`note`");
        if let Some(s) = &e.superseded_by {
            if !catalog.recipes.contains_key(s.get_ref()) {
                let d = cx
                    .diag(s.span(), format!("no recipe `{}`", s.get_ref()))
                    .with_suggestion(s.get_ref(), catalog.recipes.keys().map(String::as_str));
                cx.push(d);
            }
        }
        if let Some(b) = &e.bug {
            cx.check(b, |u| validate::http_url(u));
        }
        let (true, Some(reason)) = (valid, reason) else {
            continue;
        };
        match reason {
            Reason::Superseded if e.superseded_by.is_none() => cx.error(
                e.reason.span(),
                "`superseded` needs `superseded-by`: the recipe that does its work",
            ),
            Reason::Broken if e.bug.is_none() => cx.error(
                e.reason.span(),
                "`broken` needs `bug`: the report that says how it is broken",
            ),
            _ => {}
        }
        out.push(Exclusion {
            package,
            reason,
            note,
            superseded_by: e.superseded_by.as_ref().map(|s| s.get_ref().clone()),
            bug: e.bug.as_ref().map(|s| s.get_ref().clone()),
        });
    }
    cx.finish().into_result(out)
}

/// One entry of a reference list: a tool and the Debian 12 package that
/// ships it (none where the reference says it has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) tool: String,
    pub(crate) package: Option<String>,
}

/// Read a reference list: a tab-separated table with a `tool` column and a
/// `debian_bookworm_package` column (empty or `-` for none), or a plain
/// list of Debian packages, one per line (`#` starts a comment).
pub(crate) fn read_reference(path: &Path) -> Result<Vec<Entry>, Diagnostics> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Diagnostics::from(Diagnostic::new(path, format!("cannot read: {e}"))))?;
    let mut lines = text.lines().enumerate();
    let first = text.lines().next().unwrap_or_default();
    if !first.contains('\t') {
        return Ok(lines
            .map(|(_, l)| l.split('#').next().unwrap_or_default().trim())
            .filter(|l| !l.is_empty())
            .map(|p| Entry {
                tool: p.to_string(),
                package: Some(p.to_string()),
            })
            .collect());
    }
    let header: Vec<&str> = first.split('\t').collect();
    let column = |name: &str| {
        header.iter().position(|h| *h == name).ok_or_else(|| {
            Diagnostics::from(
                Diagnostic::new(path, format!("line 1: no `{name}` column"))
                    .with_help("a table needs the columns `tool` and `debian_bookworm_package`"),
            )
        })
    };
    let (tool, package) = (column("tool")?, column("debian_bookworm_package")?);
    lines.next();
    let mut out = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split('\t').collect();
        let (Some(t), Some(p)) = (cells.get(tool), cells.get(package)) else {
            return Err(Diagnostic::new(
                path,
                format!("line {}: fewer than {} cells", i + 1, header.len()),
            )
            .into());
        };
        let p = p.trim();
        out.push(Entry {
            tool: t.trim().to_string(),
            package: (!p.is_empty() && p != "-").then(|| p.to_string()),
        });
    }
    Ok(out)
}

/// Where a reference entry stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    /// These recipes install its package (or are named like the tool).
    Covered(Vec<String>),
    /// Excluded, with the exclusion.
    Excluded(Exclusion),
    /// The reference names no Debian 12 package for it.
    NoDebianPackage,
    /// Neither covered nor excluded.
    Missing,
}

impl Status {
    /// One word: `covered`, `excluded`, `no-debian-package`, `missing`.
    pub(crate) fn word(&self) -> &'static str {
        match self {
            Status::Covered(_) => "covered",
            Status::Excluded(_) => "excluded",
            Status::NoDebianPackage => "no-debian-package",
            Status::Missing => "missing",
        }
    }
}

/// Each entry of `reference` with its status.
pub(crate) fn compare(
    reference: &[Entry],
    catalog: &Catalog,
    exclusions: &[Exclusion],
) -> Vec<(Entry, Status)> {
    let mut by_package: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for r in catalog.recipes.values() {
        for p in &r.install.debian {
            by_package
                .entry(p.name.as_str())
                .or_default()
                .push(r.name.clone());
        }
    }
    reference
        .iter()
        .map(|e| {
            let named = catalog
                .recipes
                .keys()
                .find(|n| n.eq_ignore_ascii_case(&e.tool))
                .cloned();
            let status = match &e.package {
                // A reference may list several packages (`a,b`): one is enough.
                Some(p) => {
                    let packages: Vec<&str> = p.split(',').map(str::trim).collect();
                    let mut by: Vec<String> = packages
                        .iter()
                        .filter_map(|p| by_package.get(p))
                        .flatten()
                        .cloned()
                        .chain(named)
                        .collect();
                    by.sort();
                    by.dedup();
                    if !by.is_empty() {
                        Status::Covered(by)
                    } else if let Some(x) = exclusions
                        .iter()
                        .find(|x| packages.contains(&x.package.as_str()))
                    {
                        Status::Excluded(x.clone())
                    } else {
                        Status::Missing
                    }
                }
                None => match named {
                    Some(n) => Status::Covered(vec![n]),
                    None => Status::NoDebianPackage,
                },
            };
            (e.clone(), status)
        })
        .collect()
}

/// The exclusions file of the recipe folder `dir`.
pub(crate) fn exclusions_path(dir: &Path) -> PathBuf {
    dir.join(EXCLUSIONS)
}

#[cfg(test)]
mod tests;
