//! `biovm plan IMAGE`: what an image will install and produce, without
//! building anything.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};

use super::list::{emit, sources};
use super::GlobalArgs;
use crate::config::{self, Image};

#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    /// The image file (images/<name>.toml).
    #[arg(value_name = "IMAGE")]
    pub(crate) image: PathBuf,
    /// Output folder the artifacts would be written to.
    #[arg(long, default_value = "out", value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Also ask the mirror whether every Debian package and its
    /// dependencies can be installed together (an apt simulation; nothing
    /// is downloaded beyond the package indices).
    #[arg(long)]
    pub(crate) resolve: bool,
    #[command(flatten)]
    pub(crate) host: super::HostPathArgs,
}

pub(crate) fn run(g: &GlobalArgs, a: PlanArgs) -> anyhow::Result<ExitCode> {
    let dir = config::default_recipe_dir(Some(&a.image), g.recipes.as_deref());
    let image = config::load_image_with(&a.image, &dir, &a.host.access()?)?;
    if a.resolve {
        let packages = crate::rootfs::requested_packages(&image);
        crate::rootfs::simulate(&image, &packages)
            .with_context(|| format!("the packages of {} do not resolve", a.image.display()))?;
        eprintln!(
            "resolved: {} Debian packages install together",
            packages.len()
        );
    }
    if g.json {
        emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&plan_json(&image, &a.out))?
        ))?;
    } else {
        emit(&plan_text(&image, &a.out))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn artifacts(image: &Image, out: &Path) -> Vec<String> {
    image
        .formats
        .iter()
        .map(|f| {
            out.join(format!("{}.{}", image.name, f.extension()))
                .display()
                .to_string()
        })
        .collect()
}

fn pypi(image: &Image) -> Vec<String> {
    let mut v: Vec<String> = image
        .recipes
        .iter()
        .flat_map(|r| r.install.pypi.iter())
        .map(|p| format!("{}=={}", p.name, p.version))
        .collect();
    v.sort();
    v.dedup();
    v
}

fn boot_modes(image: &Image) -> Vec<&'static str> {
    image.disk.boot.iter().map(|b| b.as_str()).collect()
}

/// The plan as text: the image and its base, its recipes, packages and
/// system, its disk, and the artifacts a build writes in `out`.
fn plan_text(image: &Image, out: &Path) -> String {
    let mut s = String::new();
    kv(
        &mut s,
        "image",
        &format!("{} ({})", image.name, image.source.display()),
    );
    if !image.description.is_empty() {
        kv(&mut s, "description", &image.description);
    }
    let b = &image.base;
    kv(
        &mut s,
        "base",
        &format!("{} {} {}", b.distribution, b.suite, b.architecture),
    );
    let mirror = match &b.snapshot {
        Some(snap) => format!("snapshot {} at {}", snap.url, snap.time),
        None => b
            .mirror
            .as_deref()
            .unwrap_or("mmdebstrap default")
            .to_string(),
    };
    kv(&mut s, "mirror", &mirror);
    kv(
        &mut s,
        "kernel",
        &format!("{} ({})", b.kernel.as_str(), b.kernel.package()),
    );

    recipes_text(&mut s, image);
    packages_text(&mut s, image);
    workbench_text(&mut s, image);
    data_text(&mut s, image);
    system_text(&mut s, image);
    s.push_str("disk:\n");
    kv(
        &mut s,
        "  size",
        &config::format_size(image.disk.size_bytes),
    );
    kv(&mut s, "  boot", &boot_modes(image).join(", "));
    s.push_str("artifacts:\n");
    for a in artifacts(image, out) {
        s.push_str(&format!("  {a}\n"));
    }
    s
}

/// Where a data set's bytes come from, in words.
fn data_origin(d: &crate::config::DataSet) -> String {
    match &d.source.from {
        crate::config::DataOrigin::Debian { package, path } => {
            format!("Debian package {package}: {path}")
        }
        crate::config::DataOrigin::Urls(urls) => urls.join(" , then "),
    }
}

/// The data sets, their download size and where they go, before anything
/// is downloaded.
fn data_text(s: &mut String, image: &Image) {
    if image.data.is_empty() {
        return;
    }
    let total: u64 = image.data.iter().map(|d| d.source.size).sum();
    s.push_str(&format!(
        "data ({}, {} to fetch, {}):\n",
        image.data.len(),
        human_bytes(total),
        if image.data_disk {
            format!(
                "onto a data disk of its own ({}.data.raw, label {}), mounted read-only at /{}",
                image.name,
                crate::config::DATA_DISK_LABEL,
                crate::config::DATA_ROOT
            )
        } else {
            "into the root filesystem".to_string()
        }
    ));
    for d in &image.data {
        s.push_str(&format!(
            "  {}  {} {}  {}  -> /{}{}\n    from {}\n",
            d.name,
            d.organism,
            d.version,
            human_bytes(d.source.size),
            d.folder().display(),
            if d.indexes.is_empty() {
                String::new()
            } else {
                let names: Vec<&str> = d.indexes.iter().map(|i| i.name.as_str()).collect();
                format!(" with indexes {}", names.join(", "))
            },
            data_origin(d)
        ));
    }
}

/// The workbench, when the image has one.
fn workbench_text(s: &mut String, image: &Image) {
    if let Some(w) = image.workbench {
        s.push_str(&format!(
            "workbench:    JupyterLab{} and the tool list, behind a proxy on the guest's 127.0.0.1:{} \
             (token made at first boot; public HTTPS mode by user data)\n",
            if w.desktop { ", an Xfce desktop (noVNC)" } else { "" },
            w.port
        ));
    }
}

/// A byte count for people: `1.4 MiB`.
fn human_bytes(n: u64) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// One line `key: value` of the plan, the values aligned.
fn kv(s: &mut String, k: &str, v: &str) {
    s.push_str(&format!("{:<14}{}\n", format!("{k}:"), v));
}

/// The plan's recipes: name, category and sources, in columns.
fn recipes_text(s: &mut String, image: &Image) {
    s.push_str(&format!("recipes ({}):\n", image.recipes.len()));
    let w = image
        .recipes
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(0);
    let wc = image
        .recipes
        .iter()
        .map(|r| r.category.len())
        .max()
        .unwrap_or(0);
    for r in &image.recipes {
        s.push_str(&format!(
            "  {:<w$}  {:<wc$}  {}\n",
            r.name,
            r.category,
            sources(r).join(",")
        ));
    }
}

/// The plan's Debian packages, PyPI packages and downloads.
fn packages_text(s: &mut String, image: &Image) {
    let debs = crate::rootfs::requested_packages(image);
    s.push_str(&format!("debian packages ({}):\n", debs.len()));
    for p in &debs {
        s.push_str(&format!("  {p}\n"));
    }
    let py = pypi(image);
    if !py.is_empty() {
        s.push_str(&format!("pypi packages ({}):\n", py.len()));
        for p in &py {
            s.push_str(&format!("  {p}\n"));
        }
    }
    let downloads: Vec<_> = image
        .recipes
        .iter()
        .flat_map(|r| r.install.downloads.iter())
        .collect();
    if !downloads.is_empty() {
        s.push_str(&format!("downloads ({}):\n", downloads.len()));
        for d in downloads {
            s.push_str(&format!("  {} -> {}\n", d.url, d.dest));
        }
    }
}

/// The plan's system settings: host name, locale, time zone, user, files.
fn system_text(s: &mut String, image: &Image) {
    s.push_str("system:\n");
    let sys = &image.system;
    kv(s, "  hostname", &sys.hostname);
    kv(s, "  locale", &sys.locale);
    kv(s, "  timezone", &sys.timezone);
    match &sys.user {
        Some(u) => kv(
            s,
            "  user",
            &format!(
                "{} (shell {}, {}, {} SSH key{})",
                u.name,
                u.shell,
                if u.sudo { "sudo" } else { "no sudo" },
                u.ssh_authorized_keys.len(),
                if u.ssh_authorized_keys.len() == 1 {
                    ""
                } else {
                    "s"
                }
            ),
        ),
        None => kv(s, "  user", "none"),
    }
    for f in &sys.files {
        kv(
            s,
            "  file",
            &format!("{} ({:04o}, {} bytes)", f.path, f.mode, f.content.len()),
        );
    }
}

fn plan_json(image: &Image, out: &Path) -> Value {
    let b = &image.base;
    let sys = &image.system;
    json!({
        "name": image.name,
        "description": image.description,
        "source": image.source.display().to_string(),
        "base": {
            "distribution": b.distribution,
            "suite": b.suite,
            "architecture": b.architecture,
            "mirror": b.mirror,
            "snapshot": b.snapshot.as_ref().map(|s| json!({
                "url": s.url,
                "time": s.time,
                "security_url": s.security_url,
            })),
            "kernel": b.kernel.as_str(),
            "packages": b.packages.iter().map(|p| p.apt_spec()).collect::<Vec<_>>(),
        },
        "recipes": image.recipes.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
        "debian_packages": crate::rootfs::requested_packages(image),
        "pypi_packages": pypi(image),
        "downloads": image.recipes.iter().flat_map(|r| r.install.downloads.iter()).map(|d| json!({
            "url": d.url, "sha256": d.sha256, "dest": d.dest, "unpack": d.unpack,
        })).collect::<Vec<_>>(),
        "workbench": image.workbench.map(|w| json!({"desktop": w.desktop, "port": w.port})),
        "data_location": if image.data.is_empty() { None } else if image.data_disk { Some("disk") } else { Some("root") },
        "data": image.data.iter().map(|d| json!({
            "name": d.name,
            "organism": d.organism,
            "build": d.build,
            "version": d.version,
            "license": d.license,
            "redistributable": d.redistributable,
            "size": d.source.size,
            "sha256": d.source.sha256,
            "from": data_origin(d),
            "location": format!("/{}", d.folder().display()),
            "indexes": d.indexes.iter().map(|i| i.name.clone()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "system": {
            "hostname": sys.hostname,
            "locale": sys.locale,
            "timezone": sys.timezone,
            "user": sys.user.as_ref().map(|u| json!({
                "name": u.name,
                "shell": u.shell,
                "sudo": u.sudo,
                "ssh_authorized_keys": u.ssh_authorized_keys,
            })),
            "files": sys.files.iter().map(|f| json!({
                "path": f.path,
                "mode": format!("{:04o}", f.mode),
                "bytes": f.content.len(),
            })).collect::<Vec<_>>(),
        },
        "disk": {
            "size": config::format_size(image.disk.size_bytes),
            "size_bytes": image.disk.size_bytes,
            "boot": boot_modes(image),
        },
        "formats": image.formats.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
        "artifacts": artifacts(image, out),
    })
}
