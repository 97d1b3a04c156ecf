//! The files a run changed since its base (`--base`, or the merge base with the default branch), from git.

use std::path::Path;
use std::process::Command;

use buildit_core::plan::ChangedFiles;

/// More changed files than this and they are treated as unknown (every `changes` condition then holds): a
/// list that long says little, and it travels in every request to a daemon.
pub(crate) const MAX_CHANGED_FILES: usize = 10_000;

/// More bytes of changed paths than this and they are treated as unknown too: they must fit in a request to a
/// daemon with room to spare.
pub(crate) const MAX_CHANGED_BYTES: usize = 1024 * 1024;

/// The branches tried, in order, as the default branch when `--base` is not given.
const DEFAULT_BRANCHES: [&str; 4] = ["origin/main", "origin/master", "main", "master"];

/// The files changed between the base and the run's commit (`sha`, when one was given), or the working tree
/// (tracked changes and untracked files not ignored) when none was. `Ok(None)`: not known (no repository, no
/// base found, too many files). An `Err` is a `--base` that cannot be used.
pub(crate) fn changed_files(
    dir: &Path,
    base: Option<&str>,
    sha: Option<&str>,
) -> Result<Option<ChangedFiles>, String> {
    if !crate::git::in_repository(dir) {
        return match base {
            Some(base) => Err(format!(
                "`--base {base}` needs a git repository, and {} is not in one",
                dir.display()
            )),
            None => Ok(None),
        };
    }
    // A commit named by the user is resolved first: its text never reaches git as an argument of its own.
    let target = match sha {
        Some(sha) => match commit_of(dir, sha) {
            Some(commit) => commit,
            None => return Ok(None),
        },
        None => match commit_of(dir, "HEAD") {
            Some(commit) => commit,
            None => return Ok(None),
        },
    };
    let target = target.as_str();
    let (label, base_commit) = match base {
        Some(base) => {
            let Some(commit) = commit_of(dir, base) else {
                return Err(format!(
                    "`--base {base}` is not a commit of the repository (fetch it, or name a branch, tag or sha)"
                ));
            };
            (base.to_owned(), commit)
        }
        None => match default_base(dir, target) {
            Some(found) => found,
            None => return Ok(None),
        },
    };
    // Paths from the repository's root whatever the directory (a workspace may be a folder of a repository),
    // and whatever the user's `diff.relative`.
    let mut diff = vec![
        "-c",
        "diff.relative=false",
        "diff",
        "--name-only",
        "-z",
        "--no-renames",
        "--no-ext-diff",
    ];
    diff.push(&base_commit);
    if sha.is_some() {
        diff.push(target);
    }
    let Some(mut paths) = git_paths(dir, &diff) else {
        return Ok(None);
    };
    if sha.is_none() {
        let untracked = [
            "ls-files",
            "--others",
            "--exclude-standard",
            "--full-name",
            "-z",
            "--",
            ":/",
        ];
        let Some(untracked) = git_paths(dir, &untracked) else {
            return Ok(None);
        };
        paths.extend(untracked);
        paths.sort();
        paths.dedup();
    }
    let bytes: usize = paths.iter().map(String::len).sum();
    if paths.len() > MAX_CHANGED_FILES || bytes > MAX_CHANGED_BYTES {
        return Ok(None);
    }
    Ok(Some(ChangedFiles::new(label, paths)))
}

/// The merge base of `target` with the first default branch that exists, labelled for messages; `None` on the
/// default branch itself (its merge base is the commit): how many commits a push brought is not known there,
/// and a stage is never skipped for changes nobody could see (CI passes the push's before as `--base`).
fn default_base(dir: &Path, target: &str) -> Option<(String, String)> {
    let remote_head = git_line(
        dir,
        &[
            "symbolic-ref",
            "--quiet",
            "--short",
            "refs/remotes/origin/HEAD",
        ],
    );
    let branch = remote_head
        .into_iter()
        .chain(DEFAULT_BRANCHES.iter().map(|name| (*name).to_owned()))
        .find(|name| commit_of(dir, name).is_some())?;
    let merge_base = git_line(dir, &["merge-base", &branch, target])?;
    if merge_base == target {
        return None;
    }
    Some((format!("{branch} ({})", short(&merge_base)), merge_base))
}

fn short(commit: &str) -> &str {
    commit.get(..8).unwrap_or(commit)
}

/// The commit a name resolves to, if it does.
fn commit_of(dir: &Path, name: &str) -> Option<String> {
    // `--end-of-options` keeps a name starting with `-` from being read as an option.
    git_line(
        dir,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &format!("{name}^{{commit}}"),
        ],
    )
}

fn git(dir: &Path, args: &[&str]) -> Option<Vec<u8>> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "core.quotePath=false"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    output.status.success().then_some(output.stdout)
}

fn git_line(dir: &Path, args: &[&str]) -> Option<String> {
    let out = git(dir, args)?;
    let line = String::from_utf8_lossy(&out).trim().to_owned();
    (!line.is_empty()).then_some(line)
}

/// NUL-separated paths.
fn git_paths(dir: &Path, args: &[&str]) -> Option<Vec<String>> {
    let out = git(dir, args)?;
    Some(
        out.split(|byte| *byte == 0)
            .filter(|path| !path.is_empty())
            .map(|path| String::from_utf8_lossy(path).into_owned())
            .collect(),
    )
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    fn run(dir: &Path, args: &[&str]) {
        let status = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .env_remove("GIT_DIR")
            .status();
        assert!(status.is_ok_and(|s| s.success()), "git {args:?}");
    }

    fn write(dir: &Path, path: &str) {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap_or(dir)).unwrap();
        std::fs::write(file, path).unwrap();
    }

    #[test]
    fn changes_are_read_against_the_merge_base_a_named_base_and_the_parent_on_main() {
        if std::env::var_os("GIT_DIR").is_some() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        run(root, &["init", "-q", "-b", "main"]);
        write(root, "README.md");
        run(root, &["add", "."]);
        run(root, &["commit", "-q", "-m", "one"]);
        write(root, "docs/guide.md");
        run(root, &["add", "."]);
        run(root, &["commit", "-q", "-m", "two"]);
        // On main, without a base: not known.
        assert_eq!(changed_files(root, None, None).unwrap(), None);
        let last = changed_files(root, Some("HEAD~1"), None).unwrap().unwrap();
        assert_eq!(last.paths, vec!["docs/guide.md".to_owned()]);
        run(root, &["checkout", "-q", "-b", "feature"]);
        write(root, "src/lib.rs");
        run(root, &["add", "."]);
        run(root, &["commit", "-q", "-m", "three"]);
        write(root, "src/new.rs");
        // A feature branch: its commits since main, with the working tree's untracked file.
        let feature = changed_files(root, None, None).unwrap().unwrap();
        assert_eq!(
            feature.paths,
            vec!["src/lib.rs".to_owned(), "src/new.rs".to_owned()]
        );
        assert!(feature.base.starts_with("main ("), "{}", feature.base);
        // A commit given: that commit's tree, not the working tree.
        let committed = changed_files(root, Some("main~1"), Some("HEAD"))
            .unwrap()
            .unwrap();
        assert_eq!(
            committed.paths,
            vec!["docs/guide.md".to_owned(), "src/lib.rs".to_owned()]
        );
        let unknown = changed_files(root, Some("no-such-branch"), None).unwrap_err();
        assert!(
            unknown.contains("`--base no-such-branch` is not a commit"),
            "{unknown}"
        );
        let written = root.join("written-by-git");
        let option = format!("--output={}", written.display());
        let refused = changed_files(root, Some(&option), None).unwrap_err();
        assert!(refused.contains("is not a commit"), "{refused}");
        assert_eq!(
            changed_files(root, Some("main"), Some(&option)).unwrap(),
            None
        );
        assert!(!written.exists());
        // From a folder of the repository: paths from its root, untracked ones included.
        let nested = changed_files(&root.join("src"), None, None)
            .unwrap()
            .unwrap();
        assert_eq!(
            nested.paths,
            vec!["src/lib.rs".to_owned(), "src/new.rs".to_owned()]
        );
    }
}
