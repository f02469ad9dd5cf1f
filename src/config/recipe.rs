//! Recipes: `<dir>/<category>/<name>.toml`, one analysis tool each, and the
//! catalogue of all of them.

use std::collections::BTreeMap;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::access::{HostAccess, Reading};
use super::diag::{from_toml_error, Diagnostic, Diagnostics};
use super::model::{Catalog, Check, Download, FunctionalTest, Install, Recipe};
use super::raw::{RawCheck, RawRecipe, RawTest};
use super::validate::{self, Ctx};

/// Default seconds for a `[check]`.
pub(crate) const DEFAULT_CHECK_TIMEOUT: u32 = 60;
/// Default seconds for a `[[test]]`.
pub(crate) const DEFAULT_TEST_TIMEOUT: u32 = 300;

/// A validated recipe and where its `name` is written (for later errors).
pub(crate) struct Loaded {
    pub(crate) recipe: Recipe,
    pub(crate) text: String,
    pub(crate) name_span: Range<usize>,
}

/// Read a text file, as a diagnostic on failure.
pub(crate) fn read_text(path: &Path) -> Result<String, Diagnostic> {
    fs::read_to_string(path).map_err(|e| {
        let msg = match e.kind() {
            std::io::ErrorKind::NotFound => "file not found".to_string(),
            std::io::ErrorKind::InvalidData => "file is not UTF-8 text".to_string(),
            _ => format!("cannot read file: {e}"),
        };
        Diagnostic::new(path, msg)
    })
}

/// Load and validate one recipe file. Its category is the name of the
/// folder it is in.
pub(crate) fn load_recipe(path: &Path, access: &HostAccess) -> Result<Recipe, Diagnostics> {
    let text = read_text(path)?;
    parse_recipe(path, &text, access).map(|l| l.recipe)
}

pub(crate) fn parse_recipe(
    path: &Path,
    text: &str,
    access: &HostAccess,
) -> Result<Loaded, Diagnostics> {
    let raw: RawRecipe = toml::from_str(text).map_err(|e| from_toml_error(path, text, &e))?;
    let mut cx = Ctx::new(path, text, access);

    let name = named_like_its_file(&mut cx, &raw.name, "recipe");

    let summary = cx.non_empty(&raw.summary, "`summary`");
    let license = cx.non_empty(&raw.license, "`license`");
    let homepage = raw.homepage.get_ref().clone();
    cx.check(&raw.homepage, |h| validate::http_url(h));

    let category = raw.category.get_ref().clone();
    let folder = path
        .parent()
        .and_then(Path::file_name)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if cx
        .check(&raw.category, |c| validate::category_name(c))
        .is_some()
        && category != folder
    {
        let d = cx
            .diag(
                raw.category.span(),
                format!(
                    "category `{category}` does not match the folder `{folder}` the recipe is in"
                ),
            )
            .with_help(format!(
                "move the file to a folder named `{category}`, or set category = \"{folder}\""
            ));
        cx.push(d);
    }

    let install = install(&mut cx, &raw);
    let check = check(&mut cx, raw.check.get_ref());
    let mut tests = Vec::new();
    let mut test_names: BTreeMap<String, ()> = BTreeMap::new();
    for t in &raw.test {
        let tname = t.get_ref().name.get_ref();
        if test_names.insert(tname.clone(), ()).is_some() {
            cx.error(
                t.get_ref().name.span(),
                format!("duplicate test name `{tname}`"),
            );
        }
        if let Some(t) = test(&mut cx, t.get_ref()) {
            tests.push(t);
        }
    }

    let recipe = Recipe {
        name,
        summary,
        category,
        homepage,
        license,
        install,
        check: check.unwrap_or_else(|| Check {
            command: String::new(),
            expect: regex::Regex::new("").expect("empty regex"),
            status: 0,
            timeout_secs: DEFAULT_CHECK_TIMEOUT,
        }),
        tests,
        source: path.to_path_buf(),
    };
    let name_span = raw.name.span();
    cx.finish().into_result(Loaded {
        recipe,
        text: text.to_string(),
        name_span,
    })
}

/// The `name` of a file `cx` reads, which must be a valid name and the
/// file's own name without `.toml`; `what` says what the file holds.
pub(crate) fn named_like_its_file(
    cx: &mut Ctx<'_>,
    raw: &toml::Spanned<String>,
    what: &str,
) -> String {
    let name = raw.get_ref().clone();
    let stem = cx
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if cx.check(raw, |n| validate::recipe_name(n)).is_some() && name != stem {
        let d = cx
            .diag(
                raw.span(),
                format!("{what} name `{name}` does not match its file name `{stem}.toml`"),
            )
            .with_help(format!(
                "rename the file to `{name}.toml`, or set name = \"{stem}\""
            ));
        cx.push(d);
    }
    name
}

fn install(cx: &mut Ctx<'_>, raw: &RawRecipe) -> Install {
    let ri = raw.install.get_ref();
    let mut out = Install::default();
    for p in &ri.debian {
        if let Some(p) = cx.check(p, |s| validate::deb_package(s)) {
            out.debian.push(p);
        }
    }
    for p in &ri.pypi {
        if let Some(p) = cx.check(p, |s| validate::pypi_package(s)) {
            out.pypi.push(p);
        }
    }
    if let Some(e) = &ri.pypi_env {
        out.pypi_env = cx.check(e, |s| validate::pypi_env(s));
        if ri.pypi.is_empty() {
            cx.error(e.span(), "`pypi-env` without `pypi` packages");
        }
    }
    for d in &ri.download {
        let d = d.get_ref();
        let ok = [
            cx.check(&d.url, |u| validate::http_url(u)).is_some(),
            cx.check(&d.sha256, |s| validate::sha256(s)).is_some(),
            cx.check(&d.dest, |p| validate::image_path(p, "`dest`"))
                .is_some(),
        ];
        if ok.iter().all(|x| *x) {
            out.downloads.push(Download {
                url: d.url.get_ref().clone(),
                sha256: d.sha256.get_ref().clone(),
                dest: d.dest.get_ref().clone(),
                unpack: d.unpack,
            });
        }
    }
    if ri.debian.is_empty() && ri.pypi.is_empty() && ri.download.is_empty() {
        let d = cx
            .diag(raw.install.span(), "the recipe has no install source")
            .with_help("list packages in `debian` or `pypi`, or add an `[[install.download]]`");
        cx.push(d);
    }
    out
}

fn check(cx: &mut Ctx<'_>, c: &RawCheck) -> Option<Check> {
    let command = cx.non_empty(&c.command, "the check `command`");
    let expect = cx.check(&c.expect, |e| validate::expect_regex(e));
    let status = match &c.status {
        Some(s) => cx.check(s, validate::exit_status),
        None => Some(0),
    };
    let timeout = match &c.timeout {
        Some(t) => cx.check(t, validate::timeout),
        None => Some(DEFAULT_CHECK_TIMEOUT),
    };
    Some(Check {
        command,
        expect: expect?,
        status: status?,
        timeout_secs: timeout?,
    })
}

pub(crate) fn test(cx: &mut Ctx<'_>, t: &RawTest) -> Option<FunctionalTest> {
    let name = cx.non_empty(&t.name, "the test `name`");
    let script = cx.non_empty(&t.script, "the test `script`");
    let expect = cx.check(&t.expect, |e| validate::expect_regex(e));
    let status = match &t.status {
        Some(s) => cx.check(s, validate::exit_status),
        None => Some(0),
    };
    let timeout = match &t.timeout {
        Some(s) => cx.check(s, validate::timeout),
        None => Some(DEFAULT_TEST_TIMEOUT),
    };
    let folder = cx.path.parent().unwrap_or(Path::new("")).to_path_buf();
    let home = format!("the recipe's folder `{}`", folder.display());
    let reading = Reading {
        what: "test data",
        home: &home,
    };
    let access = cx.access;
    let mut data = Vec::new();
    for d in &t.data {
        if cx
            .check(d, |rel| access.resolve(&folder, rel, reading))
            .is_some()
        {
            data.push(PathBuf::from(d.get_ref()));
        }
    }
    Some(FunctionalTest {
        name,
        script,
        expect: expect?,
        status: status?,
        data,
        timeout_secs: timeout?,
    })
}

/// The recipe files of one recipe folder, sorted: `<dir>/<category>/*.toml`.
/// Nothing that looks like a recipe is passed over in silence: stray
/// `.toml` files directly in `dir`, and entries that cannot be read (a
/// symlink loop, a dangling link, a folder or device named `x.toml`) are
/// reported.
pub(crate) fn recipe_files(dir: &Path, diags: &mut Diagnostics) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let entries = match sorted_entries(dir) {
        Ok(e) => e,
        Err(msg) => {
            diags.push(Diagnostic::new(dir, msg));
            return files;
        }
    };
    let is_toml = |p: &Path| p.extension().is_some_and(|e| e == "toml");
    for entry in entries {
        let name = entry.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.as_deref().is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        let meta =
            match fs::metadata(&entry) {
                Ok(m) => m,
                // Any top-level entry may be a category folder.
                Err(e) => {
                    diags.push(Diagnostic::new(&entry, unreadable(&e)).with_help(
                        "a category is a folder of recipes; rename or remove this entry",
                    ));
                    continue;
                }
            };
        if meta.is_dir() {
            let inner = match sorted_entries(&entry) {
                Ok(inner) => inner,
                Err(msg) => {
                    diags.push(Diagnostic::new(&entry, msg));
                    continue;
                }
            };
            for p in inner.into_iter().filter(|p| is_toml(p)) {
                match recipe_file_kind(&p) {
                    Ok(()) => files.push(p),
                    Err(msg) => diags.push(
                        Diagnostic::new(&p, msg)
                            .with_help("a recipe is a regular file; rename or remove this entry"),
                    ),
                }
            }
        } else if name.as_deref() == Some(super::coverage::EXCLUSIONS) {
            // The catalogue's exclusions (see `coverage`), not a recipe.
        } else if is_toml(&entry) {
            diags.push(
                Diagnostic::new(&entry, "recipe file is not in a category folder").with_help(
                    format!("recipes go in `{}/<category>/<name>.toml`", dir.display()),
                ),
            );
        }
    }
    files
}

/// Why an entry cannot be read, in words.
pub(crate) fn unreadable(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ELOOP) => "symlink loop".to_string(),
        Some(libc::ENOENT) => "symlink to a file that does not exist".to_string(),
        _ => format!("cannot read: {e}"),
    }
}

/// Ok when `p` (links followed) is a regular file; else what it is.
pub(crate) fn recipe_file_kind(p: &Path) -> Result<(), String> {
    let t = fs::metadata(p).map_err(|e| unreadable(&e))?.file_type();
    if t.is_file() {
        Ok(())
    } else if t.is_dir() {
        Err("is a folder, not a TOML file".to_string())
    } else {
        Err("is not a regular file".to_string())
    }
}

/// The entries of a folder, sorted by name, as paths joined onto `dir`.
pub(crate) fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let rd = fs::read_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "folder not found".to_string(),
        _ if dir.is_file() => "not a folder".to_string(),
        _ => format!("cannot read folder: {e}"),
    })?;
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| format!("cannot read folder: {e}"))?;
        names.push(entry.file_name());
    }
    names.sort();
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// Load every recipe under the folders, reporting duplicates by name.
/// Returns the valid recipes and every problem found.
pub(crate) fn load_all(dirs: &[PathBuf], access: &HostAccess) -> (Vec<Loaded>, Diagnostics) {
    let mut diags = Diagnostics::new();
    let mut loaded: Vec<Loaded> = Vec::new();
    for dir in dirs {
        for file in recipe_files(dir, &mut diags) {
            match read_text(&file) {
                Ok(text) => match parse_recipe(&file, &text, access) {
                    Ok(l) => loaded.push(l),
                    Err(d) => diags.extend(d),
                },
                Err(d) => diags.push(d),
            }
        }
    }
    let mut first: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut unique = Vec::new();
    for l in loaded {
        if let Some(prev) = first.get(&l.recipe.name) {
            diags.push(
                Diagnostic::at(
                    &l.recipe.source,
                    &l.text,
                    l.name_span.clone(),
                    format!("duplicate recipe name `{}`", l.recipe.name),
                )
                .with_help(format!(
                    "`{}` is first defined in {}",
                    l.recipe.name,
                    prev.display()
                )),
            );
        } else {
            first.insert(l.recipe.name.clone(), l.recipe.source.clone());
            unique.push(l);
        }
    }
    (unique, diags)
}

/// Load every `<dir>/<category>/<name>.toml` under the folders.
pub(crate) fn load_catalog(dirs: &[PathBuf], access: &HostAccess) -> Result<Catalog, Diagnostics> {
    let (loaded, diags) = load_all(dirs, access);
    let catalog = Catalog {
        recipes: loaded
            .into_iter()
            .map(|l| (l.recipe.name.clone(), l.recipe))
            .collect(),
    };
    diags.into_result(catalog)
}
