//! Load and validate recipes and images.
//!
//! Files are parsed into the raw structs of `raw.rs` (unknown keys are
//! errors) and validated into the typed model of `model.rs`. Every problem
//! becomes a [`Diagnostic`] pointing at file, line and column, with the
//! offending text and a "did you mean" where it helps; loading goes on past
//! the first problem so one run reports them all.

use std::path::PathBuf;

mod access;
pub(crate) mod coverage;
mod data;
mod diag;
mod image;
pub(crate) mod model;
mod paths;
pub(crate) mod raw;
mod recipe;
mod targets;
mod validate;

pub(crate) use access::HostAccess;
pub(crate) use data::{default_data_dir, load_data_dirs};
pub use diag::Diagnostics;
pub(crate) use diag::{quoted_list, Diagnostic};
pub use image::load_image;
pub(crate) use image::{default_recipe_dir, load_image_and_catalog, load_image_with};
pub use model::*;
pub(crate) use paths::normalize_path;
pub(crate) use targets::{check_account_id, check_bucket, check_instance_type};

/// Load every recipe file `<dir>/<category>/<name>.toml` under the folders
/// into one catalogue. Reports every problem in every file, and duplicate
/// names across files.
pub(crate) fn load_catalog(dirs: &[PathBuf]) -> Result<Catalog, Diagnostics> {
    recipe::load_catalog(dirs, &HostAccess::strict())
}

/// [`load_catalog`], reading test data from the folders `access` allows too.
pub(crate) fn load_catalog_with(
    dirs: &[PathBuf],
    access: &HostAccess,
) -> Result<Catalog, Diagnostics> {
    recipe::load_catalog(dirs, access)
}

/// Load and validate one recipe file (test data inside its own folder).
#[cfg(test)]
pub(crate) fn load_recipe(path: &std::path::Path) -> Result<Recipe, Diagnostics> {
    recipe::load_recipe(path, &HostAccess::strict())
}

/// [`load_recipe`], reading test data from the folders `access` allows too.
pub(crate) fn load_recipe_with(
    path: &std::path::Path,
    access: &HostAccess,
) -> Result<Recipe, Diagnostics> {
    recipe::load_recipe(path, access)
}

/// Why the `.toml` entry `p` cannot be loaded as a file (a symlink loop, a
/// dangling link, a folder, a device), or `None` for a regular file.
pub(crate) fn toml_entry_problem(p: &std::path::Path) -> Option<String> {
    recipe::recipe_file_kind(p).err()
}

/// `1073741824` → `"1GiB"`; sizes that are not whole GiB print in MiB.
pub(crate) fn format_size(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    if bytes % GIB == 0 {
        format!("{}GiB", bytes / GIB)
    } else if bytes % MIB == 0 {
        format!("{}MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::validate::parse_size;
    use super::*;

    #[test]
    fn sizes_round_trip() {
        assert_eq!(format_size(parse_size("3GiB").unwrap()), "3GiB");
        assert_eq!(format_size(parse_size("1536M").unwrap()), "1536MiB");
    }
}
