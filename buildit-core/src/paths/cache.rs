//! Where a cache path lives on disk, and where an archive entry recorded for it is restored to: `w/` for the
//! workspace, `h/` for the home directory, `a/` for absolute paths.

use std::path::{Component, Path, PathBuf};

/// Where a cached path lives, and the archive prefix that records it: `w` workspace, `h` home, `a` absolute.
/// `None` for a path that goes up with `..`, names its base as a whole, or is in a home directory not known.
pub(crate) fn cache_location(
    path: &str,
    workspace: &Path,
    home: Option<&Path>,
) -> Option<(&'static str, PathBuf)> {
    if Path::new(path)
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return None;
    }
    // A path that names its base as a whole (``, `.`, `~/`, `/`) is never cached: restoring it could overwrite
    // anything there, saving it would archive `.env` files and credentials.
    let names_something = |rest: &str| {
        Path::new(rest)
            .components()
            .any(|c| matches!(c, Component::Normal(_)))
    };
    if let Some(rest) = path.strip_prefix("~/") {
        return home
            .filter(|_| names_something(rest))
            .map(|home| ("h", home.join(rest)));
    }
    if path.starts_with('/') {
        return names_something(path).then(|| ("a", PathBuf::from(path)));
    }
    names_something(path).then(|| ("w", workspace.join(path)))
}

/// The name a cached path is recorded under in the archive: its prefix, then the path without `~/` or `/`.
pub(crate) fn archive_name(prefix: &str, path: &str) -> PathBuf {
    Path::new(prefix).join(path.trim_start_matches("~/").trim_start_matches('/'))
}

/// The place an archive entry is restored to; `None` for entries that would escape their base.
pub(crate) fn archive_entry_target(
    stored: &Path,
    workspace: &Path,
    home: Option<&Path>,
) -> Option<PathBuf> {
    let mut components = stored.components();
    let base = match components.next()? {
        Component::Normal(prefix) if prefix == "w" => workspace.to_path_buf(),
        Component::Normal(prefix) if prefix == "h" => home?.to_path_buf(),
        Component::Normal(prefix) if prefix == "a" => PathBuf::from("/"),
        _ => return None,
    };
    let rest = components.as_path();
    if rest
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return None;
    }
    Some(base.join(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_name_a_whole_base_are_never_cached() {
        for path in ["", ".", "./", "/", "//", "~/", "~/.", "/./"] {
            assert_eq!(
                cache_location(path, Path::new("/ws"), Some(Path::new("/home/u"))),
                None,
                "`{path}`"
            );
        }
    }

    #[test]
    fn entries_cannot_escape_their_base() {
        assert_eq!(
            archive_entry_target(Path::new("w/../etc/passwd"), Path::new("/ws"), None),
            None
        );
        assert_eq!(
            archive_entry_target(Path::new("x/file"), Path::new("/ws"), None),
            None
        );
        assert_eq!(
            archive_entry_target(Path::new("w/a/b"), Path::new("/ws"), None),
            Some(PathBuf::from("/ws/a/b"))
        );
        assert_eq!(cache_location("../x", Path::new("/ws"), None), None);
        assert_eq!(archive_name("h", "~/.cargo"), PathBuf::from("h/.cargo"));
        assert_eq!(archive_name("a", "/var/x"), PathBuf::from("a/var/x"));
    }
}
