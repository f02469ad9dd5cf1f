//! PyPI packages named by recipes. pip on the build host downloads every
//! recipe's pinned requirements with their whole dependency closure, as
//! wheels for the image's Python, into biovm's cache (pip's default index,
//! or the one `PIP_INDEX_URL` names). Every file's sha256 is recorded in the
//! lock and checked on later builds. The image gets one isolated
//! environment, /opt/biovm/venv, installed offline from those files with
//! hashes required; the system Python is left alone. Entry points are
//! linked into /usr/local/bin.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cmd::Cmd;
use crate::config::Recipe;
use crate::confined::Tree;
use crate::fsutil;

/// Where the environment lives in the image.
pub const VENV: &str = "/opt/biovm/venv";
/// The Python of Debian bookworm, which the wheels must fit.
const PYTHON_VERSION: &str = "3.11";

/// One downloaded distribution file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PypiFile {
    pub recipe: String,
    pub file: String,
    pub sha256: String,
    pub path: PathBuf,
}

/// A PyPI file whose content is not what the lock pinned.
#[derive(Debug, thiserror::Error)]
#[error("recipe {recipe}: PyPI file {file} has sha256 {actual}, but the lock says {expected}")]
pub struct PypiHashMismatch {
    pub recipe: String,
    pub file: String,
    pub expected: String,
    pub actual: String,
}

/// Every locked PyPI file of `recipes` from `pools`, when the pools have
/// them all (a build from the lock then needs neither PyPI nor pip's
/// resolver); `None` when one is missing or a recipe has none locked.
pub fn from_pools(
    recipes: &[Recipe],
    lock: &crate::lock::Lock,
    pools: &[crate::pool::Pool],
) -> Result<Option<Vec<PypiFile>>> {
    let mut files = Vec::new();
    for r in recipes.iter().filter(|r| !r.install.pypi.is_empty()) {
        let locked: Vec<_> = lock.pypi.iter().filter(|p| p.recipe == r.name).collect();
        if locked.is_empty() {
            return Ok(None);
        }
        for p in locked {
            let Some((_, path)) = crate::pool::find(pools, &p.sha256) else {
                return Ok(None);
            };
            files.push(PypiFile {
                recipe: r.name.clone(),
                file: p.file.clone(),
                sha256: p.sha256.clone(),
                path,
            });
        }
    }
    Ok(Some(files))
}

pub fn requirements(r: &Recipe) -> Vec<String> {
    r.install
        .pypi
        .iter()
        .map(|p| format!("{}=={}", p.name, p.version))
        .collect()
}

/// Download every recipe's requirements (with dependencies) into the cache.
/// `locked` maps file name → sha256 from the lock; a file that differs is
/// refused.
pub fn download(
    recipes: &[Recipe],
    cache: &Path,
    locked: Option<&BTreeMap<String, String>>,
) -> Result<Vec<PypiFile>> {
    let mut files = Vec::new();
    for r in recipes.iter().filter(|r| !r.install.pypi.is_empty()) {
        // A fresh folder per recipe and run holds exactly this closure
        // (pip's own HTTP cache keeps repeated downloads cheap).
        let dir = cache.join("pypi").join(&r.name);
        fsutil::remove_tree(&dir)?;
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let reqs = requirements(r);
        // With a lock, the dependencies are held at the locked versions too
        // (pip would otherwise take whatever is newest today).
        let constraints = dir.join("constraints.txt");
        let pins = locked.map(|l| locked_pins(l.keys())).unwrap_or_default();
        fs::write(&constraints, pins.join("\n") + "\n")
            .with_context(|| format!("cannot write {}", constraints.display()))?;
        Cmd::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--disable-pip-version-check",
                "--quiet",
            ])
            .args(["--only-binary=:all:", "--python-version", PYTHON_VERSION])
            .args([
                "--platform",
                "manylinux2014_x86_64",
                "--platform",
                "manylinux_2_28_x86_64",
            ])
            .args(["--implementation", "cp", "--constraint"])
            .arg(&constraints)
            .arg("--dest")
            .arg(&dir)
            .args(&reqs)
            .run()
            .with_context(|| {
                format!(
                    "recipe {}: downloading {} from PyPI failed{}",
                    r.name,
                    reqs.join(" "),
                    if locked.is_some() {
                        " (held at the lock's versions; if the recipe's pins changed, run `biovm lock --update`)"
                    } else {
                        ""
                    }
                )
            })?;
        fs::remove_file(&constraints)
            .with_context(|| format!("cannot remove {}", constraints.display()))?;
        let mut names: Vec<String> = fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let sha = fsutil::sha256_file(&path)?;
            if let Some(expected) = locked.and_then(|l| l.get(&name)) {
                if *expected != sha {
                    return Err(PypiHashMismatch {
                        recipe: r.name.clone(),
                        file: name,
                        expected: expected.clone(),
                        actual: sha,
                    }
                    .into());
                }
            } else if locked.is_some() {
                bail!(
                    "recipe {}: PyPI file {name} is not in the lock; run `biovm lock --update`",
                    r.name
                );
            }
            files.push(PypiFile {
                recipe: r.name.clone(),
                file: name,
                sha256: sha,
                path,
            });
        }
    }
    Ok(files)
}

/// `name==version` for each distribution among the locked wheel file
/// names (`{name}-{version}-{tags}.whl`); a name locked at two versions
/// (by two recipes) is left unconstrained.
fn locked_pins<'a>(files: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut versions: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let mut parts = f.split('-');
        if let (Some(name), Some(version), true) = (parts.next(), parts.next(), f.ends_with(".whl"))
        {
            versions
                .entry(name.to_ascii_lowercase())
                .or_default()
                .insert(version.to_string());
        }
    }
    versions
        .into_iter()
        .filter(|(_, v)| v.len() == 1)
        .map(|(n, v)| format!("{n}=={}", v.into_iter().next().unwrap_or_default()))
        .collect()
}

/// pip's arguments to install the requirements file in `wheels` offline.
fn pip_install_args(wheels: &str) -> Vec<String> {
    let req = format!("{wheels}/requirements.txt");
    [
        "install",
        "--disable-pip-version-check",
        "--no-index",
        "--no-cache-dir",
        "--find-links",
        wheels,
        "--requirement",
        &req,
    ]
    .map(String::from)
    .to_vec()
}

/// The environment a recipe's PyPI packages go into, from the image's root.
pub fn env_of(r: &Recipe) -> String {
    match &r.install.pypi_env {
        Some(name) => format!("/opt/biovm/{name}"),
        None => VENV.to_string(),
    }
}

/// Install `files` into the image's environments at `root`: the shared
/// one, and each environment a recipe asks for with `pypi-env`.
///
/// pip stamps what it unpacks with the time of the build, and the build
/// later lowers those times to `epoch`. Bytecode that recorded the first
/// time would then be stale and every import would compile its module
/// again (under software emulation that cost sourmash's first start over
/// 100 s). With SOURCE_DATE_EPOCH set, Python writes hash-checked bytecode
/// instead, which is still valid after the times change.
pub fn install(recipes: &[Recipe], files: &[PypiFile], root: &Path, epoch: u64) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let mut envs: BTreeMap<String, Vec<&Recipe>> = BTreeMap::new();
    for r in recipes.iter().filter(|r| !r.install.pypi.is_empty()) {
        envs.entry(env_of(r)).or_default().push(r);
    }
    // Written confined to the tree: a link planted at /tmp cannot send
    // the wheels (or anything else) to the host.
    let tree = Tree::open(root)?;
    // The shared environment first: its programs win a name on PATH.
    let mut order: Vec<&String> = envs.keys().filter(|e| *e == VENV).collect();
    order.extend(envs.keys().filter(|e| *e != VENV));
    for env in order {
        let members = &envs[env];
        let names: Vec<&str> = members.iter().map(|r| r.name.as_str()).collect();
        let mine: Vec<&PypiFile> = files
            .iter()
            .filter(|f| names.contains(&f.recipe.as_str()))
            .collect();
        install_env(&tree, root, env, members, &mine, epoch).with_context(|| {
            format!(
                "installing the PyPI packages of {} into {env} failed",
                names.join(", ")
            )
        })?;
        link_entry_points(&tree, env)?;
    }
    Ok(())
}

/// One environment: `python3 -m venv`, then pip offline from the wheels.
fn install_env(
    tree: &Tree,
    root: &Path,
    env: &str,
    recipes: &[&Recipe],
    files: &[&PypiFile],
    epoch: u64,
) -> Result<()> {
    let wheels = tree.subtree(Path::new(WHEELS))?;
    for f in files {
        wheels.copy_in(&f.path, Path::new(&f.file), 0o644)?;
    }
    let mut hashed = String::new();
    for r in recipes {
        for req in requirements(r) {
            hashed.push_str(&req);
            hashed.push('\n');
        }
    }
    wheels.write(Path::new("requirements.txt"), hashed.as_bytes(), 0o644)?;
    let in_root = |program: &str, args: Vec<String>| {
        Cmd::isolated("chroot")
            .arg(root)
            .arg(program)
            .args(args)
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .run()
    };
    in_root("python3", ["-m", "venv", env].map(String::from).to_vec())?;
    in_root(
        &format!("{env}/bin/pip"),
        pip_install_args(&format!("/{WHEELS}")),
    )?;
    drop(wheels);
    for (name, _) in tree.read_dir(Path::new(WHEELS))? {
        tree.remove_file(&Path::new(WHEELS).join(name))?;
    }
    tree.remove_dir(Path::new(WHEELS))
}

/// Where the wheels wait in the tree while pip installs them.
const WHEELS: &str = "tmp/biovm-wheels";

/// Link an environment's programs (not Python itself, pip or activate
/// scripts) into /usr/local/bin so checks and users find them on PATH; a
/// name already there is left as it is.
fn link_entry_points(tree: &Tree, env: &str) -> Result<()> {
    let bin = Path::new(env).join("bin");
    let dest = Path::new("usr/local/bin");
    tree.create_dir_all(dest)?;
    for (name, _) in tree.read_dir(&bin)? {
        let name = name.to_string_lossy().into_owned();
        let skip = name.starts_with("python")
            || name.starts_with("pip")
            || name.starts_with("activate")
            || name.starts_with("Activate");
        if skip || tree.is_file(&dest.join(&name)) {
            continue;
        }
        tree.symlink(&bin.join(&name), &dest.join(&name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(dir: &Path) -> Recipe {
        let p = dir.join("recipes/utilities/humanize.toml");
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(
            &p,
            "name = \"humanize\"\nsummary = \"s\"\ncategory = \"utilities\"\n\
             homepage = \"https://example.org\"\nlicense = \"MIT\"\n\
             [install]\npypi = [\"humanize==4.9.0\"]\n\
             [check]\ncommand = \"true\"\nexpect = \"x\"\n",
        )
        .unwrap();
        crate::config::load_recipe(&p).unwrap()
    }

    #[test]
    fn locked_wheels_become_constraints() {
        let files = [
            "numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
            "bx_python-0.15.1-cp311-cp311-manylinux2014_x86_64.whl",
            "Pillow-13.0.0-cp311-cp311-manylinux_2_28_x86_64.whl",
            "six-1.0-py3-none-any.whl",
            "six-1.1-py3-none-any.whl",
        ]
        .map(String::from);
        assert_eq!(
            locked_pins(files.iter()),
            ["bx_python==0.15.1", "numpy==2.4.6", "pillow==13.0.0"]
        );
    }

    /// The environment's bytecode stays valid once the build clamps the
    /// times of what pip unpacked; without SOURCE_DATE_EPOCH it would not
    /// (which shows the check can fail).
    #[test]
    #[ignore = "needs the network to PyPI"]
    fn the_environments_bytecode_survives_the_clamped_times() {
        let d = tempfile::tempdir().unwrap();
        let r = recipe(d.path());
        let files = download(std::slice::from_ref(&r), &d.path().join("cache"), None).unwrap();
        let wheels = d.path().join("wheels");
        fs::create_dir_all(&wheels).unwrap();
        for f in &files {
            fs::copy(&f.path, wheels.join(&f.file)).unwrap();
        }
        fs::write(wheels.join("requirements.txt"), "humanize==4.9.0\n").unwrap();
        let epoch = 1_700_000_000;
        for (with_epoch, stale_expected) in [(true, false), (false, true)] {
            let venv = d.path().join(format!("venv-{with_epoch}"));
            let mut make = Cmd::new("python3");
            make.arg("-m").arg("venv").arg(&venv);
            let mut pip = Cmd::new(venv.join("bin/pip"));
            pip.args(pip_install_args(wheels.to_str().unwrap()));
            for c in [&mut make, &mut pip] {
                if with_epoch {
                    c.env("SOURCE_DATE_EPOCH", epoch.to_string());
                } else {
                    c.env_remove("SOURCE_DATE_EPOCH");
                }
            }
            make.run().unwrap();
            pip.run().unwrap();
            fsutil::clamp_mtimes(&venv, epoch).unwrap();
            let stale = fsutil::stale_bytecode(&venv).unwrap();
            // The venv's own pip (from ensurepip) and the installed package.
            for part in ["/pip/", "/humanize/"] {
                let hit = stale.iter().any(|p| p.to_string_lossy().contains(part));
                assert_eq!(hit, stale_expected, "{part}: {stale:?}");
            }
            assert_eq!(stale.is_empty(), !stale_expected, "{stale:?}");
        }
    }

    #[test]
    #[ignore = "needs the network to PyPI"]
    fn downloads_wheels_and_refuses_a_changed_hash() {
        let d = tempfile::tempdir().unwrap();
        let r = recipe(d.path());
        let cache = d.path().join("cache");
        let files = download(std::slice::from_ref(&r), &cache, None).unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(files[0].file, "humanize-4.9.0-py3-none-any.whl");
        assert_eq!(files[0].recipe, "humanize");
        // The same file, locked: accepted.
        let ok: BTreeMap<String, String> = files
            .iter()
            .map(|f| (f.file.clone(), f.sha256.clone()))
            .collect();
        assert_eq!(
            download(std::slice::from_ref(&r), &cache, Some(&ok)).unwrap(),
            files
        );
        // A lock that pins another hash: refused, naming recipe and both hashes.
        let bad: BTreeMap<String, String> = files
            .iter()
            .map(|f| (f.file.clone(), "0".repeat(64)))
            .collect();
        let e = download(std::slice::from_ref(&r), &cache, Some(&bad)).unwrap_err();
        let m = e.downcast_ref::<PypiHashMismatch>().expect("typed");
        assert_eq!(
            (m.recipe.as_str(), m.expected.as_str()),
            ("humanize", "0".repeat(64).as_str())
        );
        assert_eq!(m.actual, files[0].sha256);
    }
}
