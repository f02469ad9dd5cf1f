//! Images: `images/<name>.toml`, with the recipe selection resolved against
//! the catalogue.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::names::Named;

use super::access::{HostAccess, Reading};
use super::diag::{from_toml_error, quoted_list, Diagnostic, Diagnostics};
use super::model::{
    Base, BootMode, Catalog, Checks, DataSet, DebPackage, Disk, ExtraFile, Format, Image, Kernel,
    Recipe, Snapshot, System, User, Workbench, WORKBENCH_RECIPE,
};
use super::paths::normalize_path;
use super::raw::{
    RawBase, RawChecks, RawDataSelection, RawFile, RawImage, RawSelection, RawSnapshot, RawSystem,
    RawWorkbench,
};
use super::recipe::{load_all, read_text};
use super::validate::{self, Ctx, Invalid};

pub(crate) const DEFAULT_SUITE: &str = "bookworm";
pub(crate) const DEFAULT_ARCHITECTURE: &str = "amd64";
pub(crate) const DEFAULT_HOSTNAME: &str = "biovm";
pub(crate) const DEFAULT_LOCALE: &str = "C.UTF-8";
pub(crate) const DEFAULT_TIMEZONE: &str = "UTC";
pub(crate) const DEFAULT_USER: &str = "biovm";
pub(crate) const DEFAULT_SHELL: &str = "/bin/bash";
pub(crate) const DEFAULT_FILE_MODE: u32 = 0o644;

/// The recipe folder to use: the `--recipes` flag if given; else, for an
/// image at `X/images/foo.toml`, `X/recipes` if it exists; else `./recipes`.
pub(crate) fn default_recipe_dir(image: Option<&Path>, flag: Option<&Path>) -> PathBuf {
    if let Some(f) = flag {
        return f.to_path_buf();
    }
    if let Some(img) = image {
        let dir = match img.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let named_images = dir
            .canonicalize()
            .ok()
            .and_then(|c| c.file_name().map(|n| n == "images"))
            .unwrap_or(false);
        if named_images {
            let candidate = normalize_path(&dir.join("..").join("recipes"));
            if candidate.is_dir() {
                return candidate;
            }
        }
    }
    PathBuf::from("recipes")
}

/// Load an image, its catalogue (`recipe_dir` plus the image's own
/// `recipes.paths`), and resolve its recipe selection.
pub fn load_image(path: &Path, recipe_dir: &Path) -> Result<Image, Diagnostics> {
    load_image_and_catalog(path, recipe_dir, &HostAccess::strict()).map(|(image, _)| image)
}

/// [`load_image`], reading `source` files and test data from the folders
/// `access` allows too.
pub(crate) fn load_image_with(
    path: &Path,
    recipe_dir: &Path,
    access: &HostAccess,
) -> Result<Image, Diagnostics> {
    load_image_and_catalog(path, recipe_dir, access).map(|(image, _)| image)
}

/// Like [`load_image`], also returning the whole catalogue the selection
/// was made from.
pub(crate) fn load_image_and_catalog(
    path: &Path,
    recipe_dir: &Path,
    access: &HostAccess,
) -> Result<(Image, Catalog), Diagnostics> {
    let text = read_text(path)?;
    let raw: RawImage = toml::from_str(&text).map_err(|e| from_toml_error(path, &text, &e))?;
    let mut cx = Ctx::new(path, &text, access);
    let image_dir = path.parent().unwrap_or(Path::new("")).to_path_buf();

    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match &raw.name {
        Some(n) => {
            cx.check(n, |s| validate::image_name(s));
            n.get_ref().clone()
        }
        None => {
            if let Err(e) = validate::image_name(&stem) {
                let mut d = Diagnostic::new(path, e.message);
                d.help = Some("set `name` in the file, or rename it".to_string());
                cx.push(d);
            }
            stem
        }
    };

    let base = base(&mut cx, raw.base.get_ref(), &image_dir);
    let system = system(&mut cx, &raw.system, &image_dir);
    let disk = disk(&mut cx, &raw);
    let formats = formats(&mut cx, &raw);
    let mut base = base;
    base.kernel = kernel(&mut cx, raw.base.get_ref(), &formats);
    let targets = super::targets::targets(
        &mut cx,
        raw.targets.as_ref(),
        disk.as_ref().map(|d| d.boot.as_slice()).unwrap_or(&[]),
        disk.as_ref().map(|d| d.size_bytes),
        &image_dir,
    );

    // The catalogue: the recipe folder plus the image's extra folders.
    let default_sel = RawSelection::default();
    let sel = raw
        .recipes
        .as_ref()
        .map(|s| s.get_ref())
        .unwrap_or(&default_sel);
    let mut dirs = vec![recipe_dir.to_path_buf()];
    for p in &sel.paths {
        let dir = normalize_path(&image_dir.join(p.get_ref()));
        if p.get_ref().is_empty() {
            cx.error(p.span(), "recipe folder path must not be empty");
        } else if !dir.is_dir() {
            let d = cx
                .diag(
                    p.span(),
                    format!("recipe folder `{}` not found", dir.display()),
                )
                .with_help("paths are relative to the image file's folder");
            cx.push(d);
        } else if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    let (loaded, catalog_diags) = load_all(&dirs, access);
    let catalog = Catalog {
        recipes: loaded
            .into_iter()
            .map(|l| (l.recipe.name.clone(), l.recipe))
            .collect(),
    };
    let mut recipes = Vec::new();
    if catalog_diags.is_empty() {
        recipes = select_recipes(&mut cx, &raw, sel, &catalog);
    }
    let workbench = raw
        .workbench
        .as_ref()
        .filter(|_| catalog_diags.is_empty())
        .and_then(|w| workbench(&mut cx, w, &catalog, &mut recipes));
    pin_recipe_packages(&mut recipes, &base.packages);
    let (data, data_diags) = match &raw.data {
        Some(sel) => select_data(&mut cx, sel, recipe_dir, &image_dir, access, &recipes),
        None => (Vec::new(), Diagnostics::new()),
    };
    let disk_location = raw
        .data
        .as_ref()
        .and_then(|d| d.get_ref().location.as_ref())
        .filter(|l| l.get_ref() == "disk");
    let data_disk = !data.is_empty() && disk_location.is_some();
    // The data on a data disk is checked natively in a disk's tree and in
    // the boots; an image of containers alone would check it nowhere.
    if let Some(l) = disk_location.filter(|_| !formats.iter().any(|f| f.is_disk())) {
        let d = cx
            .diag(
                l.span(),
                "a data disk goes with a disk image, but [output] formats has none",
            )
            .with_help("add a disk format such as \"qcow2\" or \"raw\", or use location = \"root\" (container images then carry the data)");
        cx.push(d);
    }

    let checks = match &raw.checks {
        Some(c) if catalog_diags.is_empty() => checks(&mut cx, c, &recipes),
        _ => Checks::default(),
    };
    let image = Image {
        name,
        description: raw.description.clone().unwrap_or_default(),
        source: path.to_path_buf(),
        base,
        recipes,
        system,
        disk: disk.unwrap_or(Disk {
            size_bytes: 0,
            boot: Vec::new(),
        }),
        formats,
        targets,
        data,
        data_disk,
        workbench,
        checks,
    };
    let mut diags = catalog_diags;
    diags.extend(data_diags);
    diags.extend(cx.finish());
    diags.into_result((image, catalog))
}

/// `[workbench]`: its settings, and the JupyterLab recipe added to the
/// selection when the image does not name it.
fn workbench(
    cx: &mut Ctx<'_>,
    raw: &Spanned<RawWorkbench>,
    catalog: &Catalog,
    recipes: &mut Vec<Recipe>,
) -> Option<Workbench> {
    let w = raw.get_ref();
    let port = match &w.port {
        Some(p) => cx.check(p, |&n| match u16::try_from(n) {
            Ok(n) if n >= 1024 => Ok(n),
            _ => Err(Invalid::new(format!("port {n} is out of range"))
                .help("use a port from 1024 to 65535, one no system service of the guest uses")),
        }),
        None => Some(8080),
    };
    if !recipes.iter().any(|r| r.name == WORKBENCH_RECIPE) {
        match catalog.recipes.get(WORKBENCH_RECIPE) {
            Some(r) => {
                let at = recipes.partition_point(|x| x.name < r.name);
                recipes.insert(at, r.clone());
            }
            None => {
                let d = cx
                    .diag(
                        raw.span(),
                        format!("the workbench needs the recipe `{WORKBENCH_RECIPE}`, which the catalogue does not have"),
                    )
                    .with_help("keep recipes/workbench/jupyterlab.toml in the catalogue");
                cx.push(d);
                return None;
            }
        }
    }
    Some(Workbench {
        desktop: w.desktop.unwrap_or(true),
        port: port?,
    })
}

/// `[checks]`: the boot sample must name recipes of the image, and take
/// at least one tool of each install source the image has (each way a
/// tool gets into the image is then proven in every booted system).
fn checks(cx: &mut Ctx<'_>, raw: &Spanned<RawChecks>, recipes: &[Recipe]) -> Checks {
    use crate::manifest::InstallSource;
    let c = raw.get_ref();
    let mut sample = Vec::new();
    let mut covered = BTreeSet::new();
    let named = c.boot_sample.as_ref().map_or(&[][..], |l| &l.get_ref()[..]);
    for name in named {
        match recipes.iter().find(|r| &r.name == name.get_ref()) {
            Some(r) if sample.contains(&r.name) => {
                let d = cx.diag(name.span(), format!("`{}` is named twice", r.name));
                cx.push(d);
            }
            Some(r) => {
                covered.insert(InstallSource::of(r));
                sample.push(r.name.clone());
            }
            None => {
                let d = cx
                    .diag(
                        name.span(),
                        format!("`{}` is not a recipe of this image", name.get_ref()),
                    )
                    .with_help("name recipes the image's [recipes] selection has");
                cx.push(d);
            }
        }
    }
    if let Some(list) = &c.boot_sample {
        for r in recipes {
            let source = InstallSource::of(r);
            if covered.insert(source) {
                let d = cx
                    .diag(
                        list.span(),
                        format!(
                            "boot-sample has no tool installed from {}, which the image has (`{}`, for one)",
                            source.as_str(),
                            r.name
                        ),
                    )
                    .with_help("add one recipe of each install source the image has, or leave boot-sample out");
                cx.push(d);
            }
        }
    }
    Checks {
        every_boot: c.every_boot.unwrap_or(false),
        boot_sample: sample,
    }
}

/// A `[base] packages` entry with a version (`name=version`) pins that
/// package wherever a selected recipe asks for it, so a lab can hold one
/// tool at a version without editing the catalogue.
fn pin_recipe_packages(recipes: &mut [Recipe], base: &[DebPackage]) {
    for pin in base.iter().filter(|p| p.version.is_some()) {
        for r in recipes.iter_mut() {
            for p in r.install.debian.iter_mut().filter(|p| p.name == pin.name) {
                p.version = pin.version.clone();
            }
        }
    }
}

/// Report every entry of `list` that repeats an earlier one.
fn listed_twice(cx: &mut Ctx<'_>, list: &[Spanned<String>], field: &str) {
    let mut seen = BTreeSet::new();
    for item in list {
        if !seen.insert(item.get_ref().as_str()) {
            let d = cx
                .diag(
                    item.span(),
                    format!("`{}` is listed twice in `{field}`", item.get_ref()),
                )
                .with_help("remove the second one");
            cx.push(d);
        }
    }
}

fn deb_packages(cx: &mut Ctx<'_>, list: &[Spanned<String>]) -> Vec<DebPackage> {
    listed_twice(cx, list, "packages");
    list.iter()
        .filter_map(|p| cx.check(p, |s| validate::deb_package(s)))
        .collect()
}

fn base(cx: &mut Ctx<'_>, b: &RawBase, image_dir: &Path) -> Base {
    let distribution = b.distribution.get_ref().clone();
    if distribution != "debian" {
        let d = cx
            .diag(
                b.distribution.span(),
                format!("unsupported distribution `{distribution}`"),
            )
            .with_help("only \"debian\" is supported for now");
        cx.push(d);
    }
    let suite = match &b.suite {
        Some(s) => {
            cx.check(s, |x| validate::suite(x));
            s.get_ref().clone()
        }
        None => DEFAULT_SUITE.to_string(),
    };
    let architecture = match &b.architecture {
        Some(a) => {
            if a.get_ref() != DEFAULT_ARCHITECTURE {
                let d = cx
                    .diag(
                        a.span(),
                        format!("unsupported architecture `{}`", a.get_ref()),
                    )
                    .with_help("only \"amd64\" is supported for now");
                cx.push(d);
            }
            a.get_ref().clone()
        }
        None => DEFAULT_ARCHITECTURE.to_string(),
    };
    let mirror = b.mirror.as_ref().map(|m| {
        cx.check(m, |s| validate::mirror_url(s));
        m.get_ref().clone()
    });
    let keyring = b
        .keyring
        .as_ref()
        .and_then(|k| read_beside(cx, k, image_dir, "keyring"));
    let snapshot = b.snapshot.as_ref().and_then(|s| snapshot(cx, s, b));
    Base {
        distribution,
        suite,
        architecture,
        mirror,
        keyring,
        snapshot,
        packages: deb_packages(cx, &b.packages),
        // Settled by `kernel` once the formats are known.
        kernel: Kernel::Cloud,
    }
}

/// `[base.snapshot]`: URLs of a snapshot archive and an RFC 3339 time,
/// kept in UTC to the second.
fn snapshot(cx: &mut Ctx<'_>, s: &Spanned<RawSnapshot>, b: &RawBase) -> Option<Snapshot> {
    if let Some(m) = &b.mirror {
        let d = cx
            .diag(m.span(), "`mirror` and `[base.snapshot]` are both given")
            .with_help("a snapshot names its own archive: remove one of them");
        cx.push(d);
    }
    let r = s.get_ref();
    let url = cx.check(&r.url, |u| validate::mirror_url(u).map(|()| u.clone()));
    let security_url = match &r.security_url {
        Some(u) => Some(cx.check(u, |u| validate::mirror_url(u).map(|()| u.clone()))?),
        None => None,
    };
    let time = cx.check(&r.time, |t| {
        t.parse::<jiff::Timestamp>()
            .map(|ts| ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .map_err(|e| {
                Invalid::new(format!("`{t}` is not an RFC 3339 time: {e}"))
                    .help("write it as \"2026-12-01T00:00:00Z\"")
            })
    });
    Some(Snapshot {
        url: url?,
        time: time?,
        security_url,
    })
}

/// `base.kernel`: as written, or `generic` when a VirtualBox format is
/// built (the cloud kernel has no AHCI driver), else `cloud`.
fn kernel(cx: &mut Ctx<'_>, b: &RawBase, formats: &[Format]) -> Kernel {
    let virtualbox: Vec<&str> = formats
        .iter()
        .filter(|f| f.for_virtualbox())
        .map(|f| f.as_str())
        .collect();
    let Some(k) = &b.kernel else {
        return if virtualbox.is_empty() {
            Kernel::Cloud
        } else {
            Kernel::Generic
        };
    };
    let names = Kernel::names();
    match Kernel::named(k.get_ref()) {
        Some(Kernel::Cloud) if !virtualbox.is_empty() => {
            let d = cx
                .diag(
                    k.span(),
                    format!(
                        "kernel `cloud` cannot boot the VirtualBox formats {}",
                        quoted_list(&virtualbox)
                    ),
                )
                .with_help(
                    "the cloud kernel has no AHCI (SATA) driver; use kernel = \"generic\" or drop those formats",
                );
            cx.push(d);
            Kernel::Cloud
        }
        Some(x) => x,
        None => {
            let d = cx
                .diag(k.span(), format!("unknown kernel `{}`", k.get_ref()))
                .with_suggestion(k.get_ref(), names.iter().copied());
            let d = if d.help.is_none() {
                d.with_help(format!("supported: {}", quoted_list(&names)))
            } else {
                d
            };
            cx.push(d);
            Kernel::Cloud
        }
    }
}

fn string_or(
    cx: &mut Ctx<'_>,
    value: &Option<Spanned<String>>,
    default: &str,
    check: impl FnOnce(&str) -> Result<(), Invalid>,
) -> String {
    match value {
        Some(s) => {
            cx.check(s, |x| check(x));
            s.get_ref().clone()
        }
        None => default.to_string(),
    }
}

/// A value checked against a list on the build host: as [`string_or`],
/// and when the list is missing, a warning saying the value went unchecked.
fn host_list_value(
    cx: &mut Ctx<'_>,
    value: &Option<Spanned<String>>,
    default: &str,
    field: &str,
    check: impl FnOnce(&str) -> Result<Option<String>, Invalid>,
) -> String {
    let Some(s) = value else {
        return default.to_string();
    };
    if let Some(Some(note)) = cx.check(s, |x| check(x)) {
        log::warn!("{} ({field}): {note}", cx.path.display());
    }
    s.get_ref().clone()
}

fn system(cx: &mut Ctx<'_>, s: &RawSystem, image_dir: &Path) -> System {
    let hostname = string_or(cx, &s.hostname, DEFAULT_HOSTNAME, validate::hostname);
    let locale = host_list_value(cx, &s.locale, DEFAULT_LOCALE, "system.locale", |x| {
        validate::locale(x, Path::new(validate::SUPPORTED_LOCALES))
    });
    let timezone = host_list_value(cx, &s.timezone, DEFAULT_TIMEZONE, "system.timezone", |x| {
        validate::timezone(x, Path::new(validate::ZONEINFO))
    });
    let user = s.user.as_ref().map(|u| {
        let u = u.get_ref();
        let name = string_or(cx, &u.name, DEFAULT_USER, validate::user_name);
        let shell = string_or(cx, &u.shell, DEFAULT_SHELL, |p| {
            validate::absolute_path(p, "shell").map_err(|mut e| {
                e.help = Some("write the shell's full path, e.g. \"/bin/bash\"".to_string());
                e
            })
        });
        for k in &u.ssh_authorized_keys {
            cx.check(k, |s| validate::ssh_key(s));
        }
        User {
            name,
            shell,
            sudo: u.sudo.unwrap_or(true),
            ssh_authorized_keys: u
                .ssh_authorized_keys
                .iter()
                .map(|k| k.get_ref().trim().to_string())
                .collect(),
        }
    });
    let mut files = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for f in &s.files {
        if !seen.insert(f.get_ref().path.get_ref().clone()) {
            let p = &f.get_ref().path;
            cx.error(p.span(), format!("file `{}` is listed twice", p.get_ref()));
        }
        if let Some(f) = extra_file(cx, f, image_dir) {
            files.push(f);
        }
    }
    System {
        hostname,
        locale,
        timezone,
        user,
        files,
    }
}

/// The bytes of the file `rel` names (`what`: "source", "keyring"), which
/// must resolve inside the image file's folder (or a folder the command
/// line allows).
fn read_beside(
    cx: &mut Ctx<'_>,
    rel: &Spanned<String>,
    image_dir: &Path,
    what: &str,
) -> Option<Vec<u8>> {
    let home = format!(
        "the image file's folder `{}`",
        normalize_path(image_dir).display()
    );
    let reading = Reading { what, home: &home };
    let access = cx.access;
    cx.check(rel, |r| access.resolve(image_dir, r, reading))
        .and_then(|real| match fs::read(&real) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                let d = cx.diag(
                    rel.span(),
                    format!("cannot read {what} `{}`: {e}", real.display()),
                );
                cx.push(d);
                None
            }
        })
}

fn extra_file(cx: &mut Ctx<'_>, f: &Spanned<RawFile>, image_dir: &Path) -> Option<ExtraFile> {
    let span = f.span();
    let f = f.get_ref();
    let path = cx.check(&f.path, |p| {
        validate::image_path(p, "file path")?;
        if p.ends_with('/') {
            return Err(Invalid {
                message: format!("file path `{p}` names a folder"),
                help: Some("give the path of a file, without a trailing `/`".to_string()),
            });
        }
        Ok(p.clone())
    });
    let mode = match &f.mode {
        Some(m) => cx.check(m, |s| validate::file_mode(s)),
        None => Some(DEFAULT_FILE_MODE),
    };
    let content = match (&f.content, &f.source) {
        (Some(c), None) => Some(c.get_ref().clone().into_bytes()),
        (None, Some(src)) => read_beside(cx, src, image_dir, "source"),
        (Some(_), Some(src)) => {
            let d = cx
                .diag(src.span(), "a file has both `content` and `source`")
                .with_help("give exactly one of them");
            cx.push(d);
            None
        }
        (None, None) => {
            let d = cx
                .diag(span, "a file has neither `content` nor `source`")
                .with_help("give the text in `content`, or a file to copy in `source`");
            cx.push(d);
            None
        }
    };
    Some(ExtraFile {
        path: path?,
        content: content?,
        mode: mode?,
    })
}

/// Check a non-empty list of distinct words, each one of `allowed`.
/// Every member of a closed set with its name, for [`word_list`].
fn named_members<T: Named>() -> Vec<(&'static str, T)> {
    T::MEMBERS.iter().map(|m| (m.name(), *m)).collect()
}

fn word_list<T: Copy>(
    cx: &mut Ctx<'_>,
    list: &Spanned<Vec<Spanned<String>>>,
    (field, what): (&str, &str),
    allowed: &[(&str, T)],
) -> Vec<T> {
    let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
    if list.get_ref().is_empty() {
        let d = cx
            .diag(list.span(), format!("`{field}` must not be empty"))
            .with_help(format!("give one or more of {}", quoted_list(&names)));
        cx.push(d);
    }
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for item in list.get_ref() {
        let word = item.get_ref();
        match allowed.iter().find(|(n, _)| n == word) {
            Some((_, value)) => {
                if !seen.insert(word.clone()) {
                    cx.error(
                        item.span(),
                        format!("`{word}` is listed twice in `{field}`"),
                    );
                } else {
                    out.push(*value);
                }
            }
            None => {
                let d = cx
                    .diag(item.span(), format!("unknown {what} `{word}`"))
                    .with_suggestion(word, names.iter().copied());
                let d = if d.help.is_none() {
                    d.with_help(format!("supported: {}", quoted_list(&names)))
                } else {
                    d
                };
                cx.push(d);
            }
        }
    }
    out
}

fn disk(cx: &mut Ctx<'_>, raw: &RawImage) -> Option<Disk> {
    let d = raw.disk.get_ref();
    let size = cx.check(&d.size, |s| validate::size(s));
    let boot = match &d.boot {
        Some(list) => word_list(
            cx,
            list,
            ("boot", "boot mode"),
            &named_members::<BootMode>(),
        ),
        None => vec![BootMode::Uefi, BootMode::Bios],
    };
    Some(Disk {
        size_bytes: size?,
        boot,
    })
}

fn formats(cx: &mut Ctx<'_>, raw: &RawImage) -> Vec<Format> {
    match raw.output.as_ref().and_then(|o| o.formats.as_ref()) {
        Some(list) => word_list(cx, list, ("formats", "format"), &named_members::<Format>()),
        None => vec![Format::Raw],
    }
}

/// Resolve `[recipes]` against the catalogue: the selected recipes sorted by name.
fn select_recipes(
    cx: &mut Ctx<'_>,
    raw: &RawImage,
    sel: &RawSelection,
    catalog: &Catalog,
) -> Vec<Recipe> {
    let names: Vec<&str> = catalog.recipes.keys().map(String::as_str).collect();
    let categories = catalog.categories();
    let mut by_category: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in catalog.recipes.values() {
        by_category.entry(&r.category).or_default().push(&r.name);
    }
    for (field, list) in [
        ("include", &sel.include),
        ("categories", &sel.categories),
        ("exclude", &sel.exclude),
        ("exclude-categories", &sel.exclude_categories),
    ] {
        listed_twice(cx, list, field);
    }
    let errors_before = cx.diags.len();
    let mut selected: BTreeSet<&str> = BTreeSet::new();
    if sel.all {
        selected.extend(names.iter().copied());
    }
    for item in &sel.include {
        match catalog.recipes.get_key_value(item.get_ref()) {
            Some((k, _)) => {
                selected.insert(k.as_str());
            }
            None => unknown_recipe(cx, item, &names),
        }
    }
    for item in &sel.categories {
        match by_category.get(item.get_ref().as_str()) {
            Some(members) => selected.extend(members.iter().copied()),
            None => unknown_category(cx, item, &categories),
        }
    }
    // A repeated exclusion is reported above, not again as "not selected".
    exclude_categories(cx, sel, &by_category, &categories, &mut selected);
    exclude_recipes(cx, sel, catalog, &names, &mut selected);
    if selected.is_empty() && cx.diags.len() == errors_before {
        let span = raw.recipes.as_ref().map_or(0..0, |r| r.span());
        let d = cx.diag(span, "the image selects no recipes").with_help(
            "under [recipes], set `include = [...]`, `categories = [...]` or `all = true`",
        );
        cx.push(d);
    }
    selected
        .into_iter()
        .map(|n| catalog.recipes[n].clone())
        .collect()
}

/// Take `[recipes] exclude-categories` out of `selected`; an excluded
/// category none of whose recipes was selected is an error.
fn exclude_categories<'c>(
    cx: &mut Ctx<'_>,
    sel: &RawSelection,
    by_category: &BTreeMap<&str, Vec<&'c str>>,
    categories: &[String],
    selected: &mut BTreeSet<&'c str>,
) {
    let mut excluded: BTreeSet<&str> = BTreeSet::new();
    for item in &sel.exclude_categories {
        if !excluded.insert(item.get_ref()) {
            continue;
        }
        match by_category.get(item.get_ref().as_str()) {
            Some(members) => {
                let before = selected.len();
                for m in members {
                    selected.remove(m);
                }
                if selected.len() == before {
                    let d = cx
                        .diag(
                            item.span(),
                            format!(
                                "category `{}` is excluded but none of its recipes was selected",
                                item.get_ref()
                            ),
                        )
                        .with_help("remove it from `exclude-categories`, or check the spelling");
                    cx.push(d);
                }
            }
            None => unknown_category(cx, item, categories),
        }
    }
}

/// Take `[recipes] exclude` out of `selected`; an excluded recipe that was
/// not selected is an error.
fn exclude_recipes(
    cx: &mut Ctx<'_>,
    sel: &RawSelection,
    catalog: &Catalog,
    names: &[&str],
    selected: &mut BTreeSet<&str>,
) {
    let mut excluded: BTreeSet<&str> = BTreeSet::new();
    for item in &sel.exclude {
        let name = item.get_ref().as_str();
        if !excluded.insert(name) {
            continue;
        }
        if !catalog.recipes.contains_key(name) {
            unknown_recipe(cx, item, names);
        } else if !selected.remove(name) {
            let d = cx
                .diag(
                    item.span(),
                    format!("`{name}` is excluded but was not selected"),
                )
                .with_help("remove it from `exclude`, or check the spelling");
            cx.push(d);
        }
    }
}

/// Report `item` as a recipe the catalogue (`names`) does not have.
fn unknown_recipe(cx: &mut Ctx<'_>, item: &Spanned<String>, names: &[&str]) {
    let d = cx
        .diag(item.span(), format!("unknown recipe `{}`", item.get_ref()))
        .with_suggestion(item.get_ref(), names.iter().copied());
    let d = if d.help.is_none() {
        d.with_help("`biovm list` shows the recipes in the catalogue")
    } else {
        d
    };
    cx.push(d);
}

/// Report `item` as a category the catalogue (`categories`) does not have.
fn unknown_category(cx: &mut Ctx<'_>, item: &Spanned<String>, categories: &[String]) {
    let d = cx
        .diag(
            item.span(),
            format!("unknown category `{}`", item.get_ref()),
        )
        .with_suggestion(item.get_ref(), categories.iter().map(String::as_str));
    let d = if d.help.is_none() {
        d.with_help(format!("known categories: {}", quoted_list(categories)))
    } else {
        d
    };
    cx.push(d);
}

/// The data sets `[data]` names, from the data folder beside the recipe
/// folder and the section's own `paths`; each index must be built by a
/// recipe the image has, and no two data sets may share a folder.
fn select_data(
    cx: &mut Ctx<'_>,
    sel: &Spanned<RawDataSelection>,
    recipe_dir: &Path,
    image_dir: &Path,
    access: &HostAccess,
    recipes: &[Recipe],
) -> (Vec<DataSet>, Diagnostics) {
    let s = sel.get_ref();
    if let Some(l) = &s.location {
        if l.get_ref() != "root" && l.get_ref() != "disk" {
            let d = cx
                .diag(l.span(), format!("unknown data location `{}`", l.get_ref()))
                .with_help("use \"root\" (the data goes into the root filesystem under /data/genomes) or \"disk\" (onto a data disk of its own, mounted there)");
            cx.push(d);
        }
    }
    listed_twice(cx, &s.include, "include");
    let mut dirs = vec![super::data::default_data_dir(recipe_dir)];
    for p in &s.paths {
        let dir = normalize_path(&image_dir.join(p.get_ref()));
        if !dir.is_dir() {
            let d = cx
                .diag(
                    p.span(),
                    format!("data folder `{}` not found", dir.display()),
                )
                .with_help("paths are relative to the image file's folder");
            cx.push(d);
        } else if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    if s.include.is_empty() {
        return (Vec::new(), Diagnostics::new());
    }
    let (all, diags) = super::data::load_data_dirs(&dirs, access);
    let names: Vec<&str> = all.keys().map(String::as_str).collect();
    let mut out: Vec<DataSet> = Vec::new();
    let mut folders: BTreeMap<String, String> = BTreeMap::new();
    for item in &s.include {
        let Some(l) = all.get(item.get_ref()) else {
            // A file of that name that failed to load has its own errors.
            let file = format!("{}.toml", item.get_ref());
            if !dirs.iter().any(|d| d.join(&file).is_file()) {
                let d = cx
                    .diag(
                        item.span(),
                        format!("unknown data set `{}`", item.get_ref()),
                    )
                    .with_suggestion(item.get_ref(), names.iter().copied());
                cx.push(d);
            }
            continue;
        };
        let ds = &l.data;
        if out.iter().any(|o| o.name == ds.name) {
            continue;
        }
        for i in &ds.indexes {
            if !recipes.iter().any(|r| r.name == i.recipe) {
                let d = cx
                    .diag(
                        item.span(),
                        format!(
                            "data set `{}`: index `{}` is built by recipe `{}`, which the image does not include",
                            ds.name, i.name, i.recipe
                        ),
                    )
                    .with_help(format!("add \"{}\" to `[recipes] include`", i.recipe));
                cx.push(d);
            }
        }
        if let Some(other) = folders.insert(ds.build.clone(), ds.name.clone()) {
            cx.error(
                item.span(),
                format!(
                    "data sets `{other}` and `{}` both go to /{}",
                    ds.name,
                    ds.folder().display()
                ),
            );
        }
        out.push(ds.clone());
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    (out, diags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipe_dir_flag_wins() {
        assert_eq!(
            default_recipe_dir(Some(Path::new("images/x.toml")), Some(Path::new("my"))),
            PathBuf::from("my")
        );
        assert_eq!(default_recipe_dir(None, None), PathBuf::from("recipes"));
    }
}
