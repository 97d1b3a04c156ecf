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
