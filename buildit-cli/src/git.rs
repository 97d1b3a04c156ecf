//! Defaults for branch and sha from the git repository around the workspace, when there is one.

use std::path::Path;
use std::process::Command;

/// What the repository's HEAD is.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    /// The current branch (none on a detached HEAD).
    pub(crate) branch: Option<String>,
    /// The HEAD commit.
    pub(crate) sha: Option<String>,
}

/// HEAD's commit and branch from one `git rev-parse` (it runs before every run, so one process, not two);
/// empty outside a repository, in one without commits, or without git.
pub(crate) fn head(dir: &Path) -> Head {
    // Outside any repository there is nothing to ask: no `git` process (a few milliseconds a run).
    if !in_repository(dir) {
        return Head::default();
    }
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD", "--abbrev-ref", "HEAD"])
        .output();
    let Ok(output) = output else {
        return Head::default();
    };
    if !output.status.success() {
        return Head::default();
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
    let sha = lines.next().map(str::to_owned);
    let branch = lines
        .next()
        .filter(|branch| *branch != "HEAD")
        .map(str::to_owned);
    Head { branch, sha }
}

/// Whether `dir` or a directory above it holds `.git`, or `GIT_DIR` names a repository elsewhere.
pub(crate) fn in_repository(dir: &Path) -> bool {
    if std::env::var_os("GIT_DIR").is_some() {
        return true;
    }
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    absolute
        .ancestors()
        .any(|ancestor| ancestor.join(".git").symlink_metadata().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_are_found_from_any_directory_inside_them() {
        let Ok(dir) = tempfile::tempdir() else {
            return;
        };
        let deep = dir.path().join("a/b");
        let _ = std::fs::create_dir_all(&deep);
        if std::env::var_os("GIT_DIR").is_none() && !in_repository(dir.path()) {
            assert_eq!(head(&deep), Head::default());
        }
        let _ = std::fs::create_dir_all(dir.path().join(".git"));
        assert!(in_repository(&deep));
    }
}
