//! `biovm check`: validate recipes and images, reporting every problem.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::GlobalArgs;
use crate::config::{self, coverage, Diagnostic, Diagnostics};

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Files or folders to check: a recipe file, a recipe folder
    /// (<category>/<name>.toml inside), an image file, a folder of image files,
    /// or a project folder holding `recipes/` and `images/`.
    /// Default: the recipe folder and every images/*.toml of the current folder.
    #[arg(value_name = "PATH")]
    pub(crate) paths: Vec<PathBuf>,
    #[command(flatten)]
    pub(crate) host: super::HostPathArgs,
}

/// What one path on the command line is.
enum Target {
    RecipeFile(PathBuf),
    RecipeDir(PathBuf),
    ImageFile(PathBuf),
}

pub(crate) fn run(g: &GlobalArgs, a: CheckArgs) -> anyhow::Result<ExitCode> {
    let access = a.host.access()?;
    let mut diags = Diagnostics::new();
    let mut targets = Vec::new();
    if a.paths.is_empty() {
        let dir = config::default_recipe_dir(None, g.recipes.as_deref());
        targets.push(Target::RecipeDir(dir));
        if Path::new("images").is_dir() {
            targets.extend(image_files(Path::new("images"), &mut diags));
        }
    } else {
        for p in &a.paths {
            classify(p, &mut targets, &mut diags);
        }
    }

    let mut recipes: BTreeSet<PathBuf> = BTreeSet::new();
    let mut images = 0usize;
    let mut data_sets = 0usize;
    for t in targets {
        match t {
            Target::RecipeFile(p) => match config::load_recipe_with(&p, &access) {
                Ok(r) => {
                    recipes.insert(canonical(r.source));
                }
                Err(d) => diags.extend(d),
            },
            Target::RecipeDir(p) => {
                match config::load_catalog_with(std::slice::from_ref(&p), &access) {
                    Ok(c) => {
                        if let Err(d) =
                            coverage::read_exclusions(&coverage::exclusions_path(&p), &c)
                        {
                            diags.extend(d);
                        }
                        recipes.extend(c.recipes.into_values().map(|r| canonical(r.source)));
                    }
                    Err(d) => diags.extend(d),
                }
                // The reference data recipes beside the recipe folder.
                let data_dir = config::default_data_dir(&p);
                if data_dir.is_dir() {
                    let (sets, d) = config::load_data_dirs(&[data_dir], &access);
                    diags.extend(d);
                    data_sets += sets.len();
                }
            }
            Target::ImageFile(p) => {
                let dir = config::default_recipe_dir(Some(&p), g.recipes.as_deref());
                match config::load_image_and_catalog(&p, &dir, &access) {
                    Ok((_, c)) => {
                        images += 1;
                        recipes.extend(c.recipes.into_values().map(|r| canonical(r.source)));
                    }
                    Err(d) => diags.extend(d),
                }
            }
        }
    }
    if !diags.is_empty() {
        diags.dedup();
        return Err(anyhow::Error::new(diags));
    }
    if g.json {
        crate::progress::result(
            "check",
            serde_json::json!({"recipes": recipes.len(), "data_sets": data_sets, "images": images}),
        );
        return Ok(ExitCode::SUCCESS);
    }
    let data = if data_sets > 0 {
        format!(
            ", {data_sets} {}",
            plural(data_sets, "data set", "data sets")
        )
    } else {
        String::new()
    };
    super::list::emit(&format!(
        "ok: {} {}{data}, {} {}\n",
        recipes.len(),
        plural(recipes.len(), "recipe", "recipes"),
        images,
        plural(images, "image", "images")
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// A recipe's file, named the same way however the folder was reached
/// (`recipes/x.toml` and `./recipes/x.toml` are one recipe).
fn canonical(p: PathBuf) -> PathBuf {
    p.canonicalize().unwrap_or(p)
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

fn has_toml(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "toml"))
    })
}

fn named(p: &Path, name: &str) -> bool {
    p.file_name().is_some_and(|n| n == name)
        || p.canonicalize()
            .ok()
            .and_then(|c| c.file_name().map(|n| n == name))
            .unwrap_or(false)
}

/// The `*.toml` files of an images folder, sorted.
fn image_files(dir: &Path, diags: &mut Diagnostics) -> Vec<Target> {
    toml_files(dir, diags)
        .into_iter()
        .map(Target::ImageFile)
        .collect()
}

/// The `*.toml` files directly in a folder, sorted.
fn toml_files(dir: &Path, diags: &mut Diagnostics) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| dir.join(e.file_name()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            diags.push(Diagnostic::new(dir, format!("cannot read folder: {e}")));
            Vec::new()
        }
    };
    files.sort();
    // Nothing named *.toml is passed over in silence.
    files.retain(|p| match config::toml_entry_problem(p) {
        None => true,
        Some(msg) => {
            diags.push(Diagnostic::new(p, msg).with_help("rename or remove this entry"));
            false
        }
    });
    files
}

/// Whether a file is an image (rather than a recipe): it is in a folder
/// named `images`, or its top-level keys are an image's.
fn is_image_file(p: &Path) -> bool {
    if p.parent().is_some_and(|d| named(d, "images")) {
        return true;
    }
    let Ok(text) = std::fs::read_to_string(p) else {
        return false;
    };
    match text.parse::<toml::Table>() {
        Ok(t) => (t.contains_key("base") || t.contains_key("disk")) && !t.contains_key("install"),
        Err(_) => false,
    }
}

fn classify(p: &Path, targets: &mut Vec<Target>, diags: &mut Diagnostics) {
    if p.is_file() {
        if p.file_name().is_some_and(|n| n == coverage::EXCLUSIONS) {
            // The catalogue's exclusions: checked with the folder's recipes.
            let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
            targets.push(Target::RecipeDir(
                dir.unwrap_or(Path::new(".")).to_path_buf(),
            ));
        } else if is_image_file(p) {
            targets.push(Target::ImageFile(p.to_path_buf()));
        } else {
            targets.push(Target::RecipeFile(p.to_path_buf()));
        }
    } else if p.is_dir() {
        let recipes = p.join("recipes");
        let images = p.join("images");
        if recipes.is_dir() || images.is_dir() {
            // A project folder.
            if recipes.is_dir() {
                targets.push(Target::RecipeDir(recipes));
            }
            if images.is_dir() {
                targets.extend(image_files(&images, diags));
            }
        } else if named(p, "recipes") || p.join(coverage::EXCLUSIONS).is_file() {
            targets.push(Target::RecipeDir(p.to_path_buf()));
        } else if named(p, "images") {
            targets.extend(image_files(p, diags));
        } else if has_toml(p) {
            // A category folder, or a folder of images named otherwise.
            for f in toml_files(p, diags) {
                classify(&f, targets, diags);
            }
        } else {
            targets.push(Target::RecipeDir(p.to_path_buf()));
        }
    } else {
        diags.push(Diagnostic::new(p, "no such file or folder"));
    }
}
