//! The tar archive of a workspace that `buildit pipelines trigger` uploads: the files git would commit (tracked,
//! or untracked and not ignored) when the workspace is a git checkout, else every file but `.git` and
//! `.buildit`; minus what `.builditignore` names.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use buildit_core::config::Glob;

/// The file of patterns left out of uploads, at the workspace's root.
const IGNORE_FILE: &str = ".builditignore";

/// Writes the archive of `workspace` to a temporary file; returns it (rewound) and how many files it holds.
pub(crate) fn build(workspace: &Path) -> Result<(std::fs::File, usize), String> {
    let ignored = ignore_patterns(workspace)?;
    let files: Vec<PathBuf> = listed_files(workspace)?
        .into_iter()
        // BuildIt's own state (the store, caches, a daemon's data directory) is never sent, ignored by git or
        // not.
        .filter(|path| !path.starts_with(".buildit") && !path.starts_with(".git"))
        .filter(|path| !is_ignored(&ignored, path))
        .collect();
    let file =
        tempfile::tempfile().map_err(|error| format!("cannot create the archive: {error}"))?;
    let mut builder = tar::Builder::new(file);
    // Links are archived as links: the daemon refuses one that leads outside the workspace.
    builder.follow_symlinks(false);
    for path in &files {
        builder
            .append_path_with_name(workspace.join(path), path)
            .map_err(|error| format!("cannot archive `{}`: {error}", path.display()))?;
    }
    let mut file = builder
        .into_inner()
        .map_err(|error| format!("cannot finish the archive: {error}"))?;
    file.flush()
        .map_err(|error| format!("cannot write the archive: {error}"))?;
    use std::io::Seek as _;
    file.rewind()
        .map_err(|error| format!("cannot read the archive back: {error}"))?;
    Ok((file, files.len()))
}

/// The workspace's files, relative: git's view of a checkout, else a walk.
fn listed_files(workspace: &Path) -> Result<Vec<PathBuf>, String> {
    let listed = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(workspace)
        .output();
    if let Ok(output) = listed
        && output.status.success()
    {
        return Ok(output
            .stdout
            .split(|byte| *byte == 0)
            .filter(|name| !name.is_empty())
            .map(|name| PathBuf::from(String::from_utf8_lossy(name).into_owned()))
            // A tracked file deleted from the working tree is not there to send.
            .filter(|path| workspace.join(path).symlink_metadata().is_ok())
            .collect());
    }
    let mut files = Vec::new();
    walk(workspace, Path::new(""), &mut files)?;
    Ok(files)
}

fn walk(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(root.join(dir))
        .map_err(|error| format!("cannot read `{}`: {error}", root.join(dir).display()))?;
    for entry in entries {
        let entry = entry.map_err(|error| format!("cannot read `{}`: {error}", dir.display()))?;
        let relative = dir.join(entry.file_name());
        if dir.as_os_str().is_empty()
            && (entry.file_name() == ".git" || entry.file_name() == ".buildit")
        {
            continue;
        }
        let kind = entry
            .file_type()
            .map_err(|error| format!("cannot read `{}`: {error}", relative.display()))?;
        if kind.is_dir() {
            walk(root, &relative, files)?;
        } else if kind.is_file() || kind.is_symlink() {
            // FIFOs, sockets and devices are not workspace files: the daemon would refuse the archive.
            files.push(relative);
        }
    }
    Ok(())
}

/// The patterns of `.builditignore`: one glob a line (`#` comments, blank lines skipped). A pattern matches a
/// path, anything under it, and, without a `/`, a name at any depth.
fn ignore_patterns(workspace: &Path) -> Result<Vec<Glob>, String> {
    let text = match std::fs::read_to_string(workspace.join(IGNORE_FILE)) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(format!("cannot read `{IGNORE_FILE}`: {error}")),
    };
    let mut patterns = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim().trim_end_matches('/');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let anywhere = !line.contains('/');
        let line = line.trim_start_matches('/');
        let mut forms = vec![line.to_owned(), format!("{line}/**")];
        if anywhere {
            forms.extend([format!("**/{line}"), format!("**/{line}/**")]);
        }
        for form in forms {
            patterns.push(
                Glob::new(&form).map_err(|problem| {
                    format!("{IGNORE_FILE}:{}: `{line}`: {problem}", number + 1)
                })?,
            );
        }
    }
    Ok(patterns)
}

fn is_ignored(patterns: &[Glob], path: &Path) -> bool {
    let text = path.to_string_lossy();
    patterns.iter().any(|pattern| pattern.is_match(&text))
}

#[cfg(test)]
#[expect(clippy::expect_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    fn names(file: std::fs::File) -> Vec<String> {
        let mut archive = tar::Archive::new(file);
        let mut names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|entry| {
                entry
                    .expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_plain_directory_is_archived_without_its_state_and_ignored_files() {
        let dir = tempfile::tempdir().expect("directory");
        let root = dir.path();
        for (path, text) in [
            ("buildit.kdl", "pipeline \"p\""),
            ("src/main.rs", "fn main() {}"),
            ("target/debug/app", "binary"),
            (
                "src/target/kept.txt",
                "kept: `/target` names the root's only",
            ),
            ("logs/a.log", "log"),
            ("deep/x.log", "log"),
            (".buildit/buildit.db", "state"),
            (".git/config", "git"),
            (IGNORE_FILE, "# build output\n/target\n*.log\n"),
        ] {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
            std::fs::write(path, text).expect("file");
        }
        // Not a git checkout (`.git/config` alone is no repository): every file is walked.
        let (file, count) = build(root).expect("archive");
        let names = names(file);
        assert_eq!(count, names.len());
        assert_eq!(
            names,
            [
                IGNORE_FILE,
                "buildit.kdl",
                "src/main.rs",
                "src/target/kept.txt"
            ]
        );
    }
}
