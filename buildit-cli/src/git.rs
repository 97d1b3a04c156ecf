//! Defaults for branch and sha from the git repository around the workspace, when there is one.

use std::path::Path;
use std::process::Command;

/// `git rev-parse` of `what` in `dir`, or `None` outside a repository or without git.
fn rev_parse(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .arg("rev-parse")
        .args(args)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (!text.is_empty() && text != "HEAD").then_some(text)
}

/// The current branch (none on a detached HEAD).
pub(crate) fn current_branch(dir: &Path) -> Option<String> {
    rev_parse(dir, &["--abbrev-ref", "HEAD"])
}

/// The HEAD commit.
pub(crate) fn head_sha(dir: &Path) -> Option<String> {
    rev_parse(dir, &["HEAD"])
}
