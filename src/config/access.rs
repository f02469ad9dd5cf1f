//! Which host files an input file may read. biovm runs as root and copies
//! what recipes and images name into images that get published, so a
//! `[[system.files]] source` must resolve (after every symlink) inside the
//! image file's folder, and a functional test's `data` inside the recipe's
//! own folder. A lab that needs a file from elsewhere says so on the
//! command line (`--allow-host-path DIR`), never in the file itself.

use std::path::{Path, PathBuf};

use super::diag::{Diagnostic, Diagnostics};
use super::validate::Invalid;

/// The command-line flag that allows another folder.
pub(crate) const ALLOW_FLAG: &str = "--allow-host-path";

/// Folders input files may read from beyond their own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HostAccess {
    /// Canonical paths.
    allowed: Vec<PathBuf>,
}

/// What a relative path in an input file names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reading<'a> {
    /// "source" or "test data".
    pub(crate) what: &'a str,
    /// "the image file's folder" or "the recipe's folder".
    pub(crate) home: &'a str,
}

impl HostAccess {
    /// Reads only inside each file's own folder.
    pub(crate) fn strict() -> HostAccess {
        HostAccess::default()
    }

    /// Also allow reads below each of `dirs` (which must exist).
    pub(crate) fn allowing(dirs: &[PathBuf]) -> Result<HostAccess, Diagnostics> {
        let mut allowed = Vec::new();
        let mut diags = Diagnostics::new();
        for d in dirs {
            match d.canonicalize() {
                Ok(c) if c.is_dir() => allowed.push(c),
                Ok(_) => diags.push(Diagnostic::new(d, format!("{ALLOW_FLAG}: not a folder"))),
                Err(e) => diags.push(Diagnostic::new(
                    d,
                    format!("{ALLOW_FLAG}: cannot resolve the folder: {e}"),
                )),
            }
        }
        diags.into_result(HostAccess { allowed })
    }

    /// Resolve the relative path `rel`, written in a file whose folder is
    /// `home`, to the existing regular file it names (every symlink
    /// followed). It must be inside `home` or an allowed folder.
    pub(crate) fn resolve(
        &self,
        home: &Path,
        rel: &str,
        r: Reading<'_>,
    ) -> Result<PathBuf, Invalid> {
        let p = Path::new(rel);
        if rel.is_empty() || p.is_absolute() {
            return Err(
                Invalid::new(format!("{} path `{rel}` must be relative", r.what))
                    .help(format!("{} paths are relative to {}", r.what, r.home)),
            );
        }
        let joined = home.join(p);
        let shown = super::normalize_path(&joined);
        let home_shown = super::normalize_path(home);
        let outside = |real: &Path| {
            Invalid::new(format!(
                "{} `{rel}` resolves to {}, outside {}",
                r.what,
                real.display(),
                r.home
            ))
            .help(format!(
                "biovm reads only files inside {}; to allow another folder, pass `{ALLOW_FLAG} DIR` on the command line",
                r.home
            ))
        };
        // Climbing out with `..` is refused before anything is looked up.
        let inside = if home_shown == Path::new(".") {
            !shown.starts_with("..")
        } else {
            shown.starts_with(&home_shown)
        };
        if !inside {
            let abs = match std::env::current_dir() {
                Ok(cwd) => super::normalize_path(&cwd.join(&joined)),
                Err(_) => shown.clone(),
            };
            if !self.allowed.iter().any(|d| abs.starts_with(d)) {
                return Err(Invalid::new(format!(
                    "{} `{rel}` climbs out of {} with `..`",
                    r.what, r.home
                ))
                .help(format!(
                    "biovm reads only files inside {}; to allow another folder, pass `{ALLOW_FLAG} DIR` on the command line",
                    r.home
                )));
            }
        }
        let real = match joined.canonicalize() {
            Ok(real) => real,
            Err(e) => {
                let message = match e.raw_os_error() {
                    Some(libc::ELOOP) => {
                        format!("{} `{}` is a symlink loop", r.what, shown.display())
                    }
                    _ => format!("{} file `{}` not found", r.what, shown.display()),
                };
                return Err(Invalid::new(message)
                    .help(format!("{} paths are relative to {}", r.what, r.home)));
            }
        };
        let home_real = home
            .canonicalize()
            .unwrap_or_else(|_| super::normalize_path(home));
        if !real.starts_with(&home_real) && !self.allowed.iter().any(|a| real.starts_with(a)) {
            return Err(outside(&real));
        }
        if !real.is_file() {
            return Err(Invalid::new(format!(
                "{} `{}` is not a regular file",
                r.what,
                shown.display()
            ))
            .help(format!("name a file inside {}", r.home)));
        }
        Ok(real)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const R: Reading<'static> = Reading {
        what: "source",
        home: "the image file's folder",
    };

    #[test]
    fn files_resolve_inside_their_folder_after_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("images");
        let other = d.path().join("other");
        fs::create_dir_all(home.join("files")).unwrap();
        fs::create_dir_all(&other).unwrap();
        fs::write(home.join("files/motd"), "hi").unwrap();
        fs::write(other.join("secret"), "host").unwrap();
        std::os::unix::fs::symlink(other.join("secret"), home.join("files/link")).unwrap();
        std::os::unix::fs::symlink("loop", home.join("loop")).unwrap();
        let strict = HostAccess::strict();
        let ok = strict.resolve(&home, "files/motd", R).unwrap();
        assert_eq!(ok, home.join("files/motd").canonicalize().unwrap());
        // Inside after `..` is fine.
        assert!(strict.resolve(&home, "files/../files/motd", R).is_ok());
        for (rel, want) in [
            (
                "../other/secret",
                "climbs out of the image file's folder with `..`",
            ),
            ("files/link", "resolves to"),
            ("/etc/passwd", "must be relative"),
            ("", "must be relative"),
            ("loop", "is a symlink loop"),
            ("files", "is not a regular file"),
            ("nope", "not found"),
        ] {
            let e = strict.resolve(&home, rel, R).unwrap_err();
            assert!(e.message.contains(want), "{rel}: {}", e.message);
        }
        // The command line can allow the other folder.
        let open = HostAccess::allowing(std::slice::from_ref(&other)).unwrap();
        assert!(open.resolve(&home, "files/link", R).is_ok());
        assert!(open.resolve(&home, "../other/secret", R).is_ok());
        assert!(HostAccess::allowing(&[d.path().join("missing")]).is_err());
    }
}
