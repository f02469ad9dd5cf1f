//! Paths as a person writes them: the lexical helper the image and target
//! validation (and the host-access rules) share, below both of them.

use std::path::{Component, Path, PathBuf};

/// Remove `.` and resolve `..` lexically, so paths print the way a person
/// would write them (`images/../lab` becomes `lab`).
pub(crate) fn normalize_path(p: &Path) -> PathBuf {
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) | Some(Component::Prefix(_)) => {}
                _ => out.push(c),
            },
            _ => out.push(c),
        }
    }
    if out.is_empty() {
        PathBuf::from(".")
    } else {
        out.iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        assert_eq!(
            normalize_path(Path::new("images/../lab")),
            PathBuf::from("lab")
        );
        assert_eq!(
            normalize_path(Path::new("./images/./x")),
            PathBuf::from("images/x")
        );
        assert_eq!(
            normalize_path(Path::new("../x/../y")),
            PathBuf::from("../y")
        );
        assert_eq!(normalize_path(Path::new("a/..")), PathBuf::from("."));
        assert_eq!(normalize_path(Path::new("/../a")), PathBuf::from("/a"));
    }
}
