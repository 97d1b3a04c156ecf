//! Paths relative to the workspace: whether one leaves it, its plain form, and whether writing one would go
//! through a symlink.

use std::path::{Component, Path, PathBuf};

/// Whether a path written relative to the workspace (`workdir`, an `artifacts` pattern) leaves it: absolute
/// (`/x`, `\x`, `C:/x`), in the home directory (`~`), or above the workspace through `..`. `a/../b` stays.
pub(crate) fn relative_path_escapes(path: &str) -> bool {
    if path.starts_with('/') || path.starts_with('\\') || path.starts_with('~') {
        return true;
    }
    // `C:/x` or `C:\x`: absolute on Windows.
    let bytes = path.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return true;
    }
    let mut depth: i64 = 0;
    for component in path.split(['/', '\\']) {
        match component {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

/// Whether a relative path is made only of `.` and separators: it names the directory it is relative to.
pub(crate) fn names_nothing(path: &str) -> bool {
    path.split(['/', '\\']).all(|c| c.is_empty() || c == ".")
}

/// `path` as a path inside the workspace made of plain names only (`./` parts dropped), or `None` when it is
/// absolute, starts with `~`, or goes up with `..`. The empty path is the workspace itself.
pub(crate) fn inside_workspace(path: &Path) -> Option<PathBuf> {
    if path.as_os_str().to_string_lossy().starts_with('~') {
        return None;
    }
    let mut inside = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => inside.push(name),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(inside)
}

/// The paths none of the others contains, in order: copying them copies everything.
pub(crate) fn outermost(mut paths: Vec<PathBuf>) -> Vec<PathBuf> {
    paths.sort();
    paths.dedup();
    let mut kept: Vec<PathBuf> = Vec::new();
    for path in paths {
        if !kept.iter().any(|outer| path.starts_with(outer)) {
            kept.push(path);
        }
    }
    kept
}

/// Whether a directory strictly between `root` and `target` is a symlink: writing `target` would go through it
/// (an earlier archive entry `dir -> /etc` must not redirect `dir/passwd`). `root` itself may be a symlink the
/// user made; what matters is that an archive cannot add one.
pub(crate) fn written_through_symlink(root: &Path, target: &Path) -> bool {
    let mut current = target.parent();
    while let Some(dir) = current {
        if !dir.starts_with(root) || dir == root {
            break;
        }
        if dir
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            return true;
        }
        current = dir.parent();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workdir_escapes() {
        for escaping in ["..", "../x", "a/../..", "/abs", "~/x"] {
            assert!(relative_path_escapes(escaping), "{escaping}");
        }
        for inside in ["a", "a/b/..", "./a", "a/../b"] {
            assert!(!relative_path_escapes(inside), "{inside}");
        }
    }

    #[test]
    fn workspace_paths_are_plain_names_and_nested_ones_go_with_their_parent() {
        assert_eq!(
            inside_workspace(Path::new("./a/./b")),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(inside_workspace(Path::new(".")), Some(PathBuf::new()));
        for outside in ["../x", "a/../../x", "/etc", "~/.cargo", "~"] {
            assert_eq!(inside_workspace(Path::new(outside)), None, "{outside}");
        }
        assert_eq!(
            outermost(vec![
                PathBuf::from("vendor/bundle/ruby"),
                PathBuf::from("vendor"),
                PathBuf::from("target"),
                PathBuf::from("vendorx"),
            ]),
            [
                PathBuf::from("target"),
                PathBuf::from("vendor"),
                PathBuf::from("vendorx")
            ]
        );
    }

    #[test]
    fn only_symlinks_below_the_root_count() {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(error) => panic!("{error}"),
        };
        let root = dir.path().join("root");
        let _ = std::fs::create_dir_all(root.join("real"));
        let _ = std::os::unix::fs::symlink(dir.path(), root.join("link"));
        assert!(written_through_symlink(&root, &root.join("link/x")));
        assert!(!written_through_symlink(&root, &root.join("real/x")));
        assert!(!written_through_symlink(&root, &root.join("x")));
        let linked_root = dir.path().join("linked-root");
        let _ = std::os::unix::fs::symlink(&root, &linked_root);
        assert!(
            !written_through_symlink(&linked_root, &linked_root.join("real/x")),
            "the root itself may be a symlink"
        );
    }
}
