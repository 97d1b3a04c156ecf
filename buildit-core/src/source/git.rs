//! Checks out one commit of a git repository into a fresh directory: git called with arguments (never a
//! shell), without prompts, hooks, or any configuration but ours, so nothing in the repository runs.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::error::SourceError;
use super::ids::CommitId;

/// Environment variables of git's that are kept: how to reach a server over ssh is the operator's choice.
/// Every other `GIT_*` variable is removed, as one could point git at another repository (`GIT_DIR`) or add
/// configuration (`GIT_CONFIG_PARAMETERS`).
pub(crate) const KEPT_GIT_VARIABLES: [&str; 3] = ["GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSH_VARIANT"];

/// Configuration given on every command line. It overrides the repository's own (which a fetch from a local
/// path reads), and it reaches the `git upload-pack` that serves a local repository.
pub(crate) const CONFIG: [&str; 9] = [
    // No hooks: not ours (there are none), not the repository's.
    "core.hooksPath=/dev/null",
    // No file system monitor: it is a program git would start.
    "core.fsmonitor=false",
    "protocol.ext.allow=never",
    "submodule.recurse=false",
    "fetch.recurseSubmodules=false",
    // No background `git gc` or maintenance left running in the directory.
    "gc.auto=0",
    "maintenance.auto=false",
    "advice.detachedHead=false",
    "init.defaultBranch=buildit",
];

/// The environment every git command gets, beside [`CONFIG`]. No configuration from the machine or the user: a
/// global `core.hooksPath`, a filter driver (`filter.lfs.smudge`) a `.gitattributes` in the repository could name,
/// a credential helper; no prompt; only transports that fetch.
pub(crate) const ENVIRONMENT: [(&str, &str); 7] = [
    ("GIT_CONFIG_NOSYSTEM", "1"),
    ("GIT_CONFIG_GLOBAL", "/dev/null"),
    ("GIT_TERMINAL_PROMPT", "0"),
    ("GIT_ASKPASS", ""),
    ("SSH_ASKPASS", ""),
    ("GIT_ALLOW_PROTOCOL", "file:git:http:https:ssh"),
    ("LC_ALL", "C"),
];

/// Checks out `commit` of `repository` into the empty directory `into`, as a detached HEAD, and checks that
/// HEAD is exactly that commit.
pub(crate) async fn checkout(
    repository: &str,
    commit: &CommitId,
    into: &Path,
) -> Result<(), SourceError> {
    // Absolute: git runs in the directory, and `GIT_DIR` would otherwise be taken relative to it.
    let dir = std::path::absolute(into).map_err(super::error::io(into))?;
    let git = Git { repository, dir };
    check_repository(repository).map_err(|problem| SourceError::InvalidRepository {
        repository: git.hide(repository),
        problem: problem.to_owned(),
    })?;
    // An empty template: no sample hooks, nothing copied from the machine's git installation.
    git.run("init", &["init", "--quiet", "--template="], false)
        .await?;
    let sha = commit.as_str();
    // One commit at depth 1 when the server serves commits by id (protocol v2 does, as do local paths);
    // otherwise every branch and tag, and the commit is looked for among them.
    let shallow = git
        .run(
            "fetch",
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-recurse-submodules",
                "--depth=1",
                "--",
                repository,
                sha,
            ],
            true,
        )
        .await;
    if shallow.is_err() {
        git.run(
            "fetch",
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-recurse-submodules",
                "--",
                repository,
                "+refs/heads/*:refs/remotes/source/heads/*",
                "+refs/tags/*:refs/remotes/source/tags/*",
            ],
            true,
        )
        .await?;
    }
    let object = format!("{sha}^{{commit}}");
    let found = git
        .run(
            "rev-parse",
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                &object,
            ],
            true,
        )
        .await;
    if found.is_err() {
        return Err(SourceError::UnknownCommit {
            repository: git.hide(repository),
            commit: commit.clone(),
        });
    }
    git.run(
        "checkout",
        &["checkout", "--quiet", "--force", "--detach", sha, "--"],
        true,
    )
    .await?;
    let head = git
        .run("rev-parse", &["rev-parse", "--verify", "HEAD"], true)
        .await?;
    let detached = git
        .run("symbolic-ref", &["symbolic-ref", "--quiet", "HEAD"], true)
        .await
        .is_err();
    if head.trim() != sha || !detached {
        return Err(SourceError::WrongCheckout {
            expected: commit.clone(),
            found: if detached {
                head.trim().to_owned()
            } else {
                "a branch".to_owned()
            },
        });
    }
    Ok(())
}

/// Why a repository is not given to git; `None` when it may be.
pub(crate) fn check_repository(repository: &str) -> Result<(), &'static str> {
    if repository.trim().is_empty() {
        return Err("it is empty");
    }
    // Given after `--` git would not take it as an option, but `ssh` might take a host that starts with `-`.
    if repository.starts_with('-') {
        return Err("it starts with `-`");
    }
    if repository.chars().any(char::is_control) {
        return Err("it contains control characters");
    }
    // `ext::` runs a command; `fd::` reads a file descriptor of ours. `GIT_ALLOW_PROTOCOL` refuses them too.
    let lower = repository.to_ascii_lowercase();
    if lower.starts_with("ext::") || lower.starts_with("fd::") {
        return Err("the `ext::` and `fd::` transports are not allowed");
    }
    // git runs in the checkout's directory: a relative path would be read from there, not from where the
    // caller meant. URLs (`https://`, `file://`) and `host:path` are not paths.
    let url = repository.contains("://");
    let host_path = repository
        .split_once(':')
        .is_some_and(|(host, _)| !host.is_empty() && !host.contains('/'));
    if !url && !host_path && !std::path::Path::new(repository).is_absolute() {
        return Err("a local repository must be an absolute path");
    }
    Ok(())
}

/// Runs git in one directory for one repository.
struct Git<'a> {
    repository: &'a str,
    dir: PathBuf,
}

impl Git<'_> {
    /// Runs git with `args`; returns its standard output, or its message as an error. `in_repository` points
    /// git at the directory's own `.git` explicitly, so it never looks for a repository above it.
    async fn run(
        &self,
        step: &'static str,
        args: &[&str],
        in_repository: bool,
    ) -> Result<String, SourceError> {
        let mut command = tokio::process::Command::new("git");
        for (key, _) in std::env::vars_os() {
            let is_git = key.as_encoded_bytes().starts_with(b"GIT_");
            if is_git
                && !KEPT_GIT_VARIABLES
                    .iter()
                    .any(|kept| key == OsStr::new(kept))
            {
                command.env_remove(&key);
            }
        }
        command
            .envs(ENVIRONMENT)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A prepare that is dropped (the run was cancelled) does not leave git running.
            .kill_on_drop(true);
        if in_repository {
            command
                .env("GIT_DIR", self.dir.join(".git"))
                .env("GIT_WORK_TREE", &self.dir);
        }
        for setting in CONFIG {
            command.arg("-c").arg(setting);
        }
        command.args(args);
        let output = command
            .output()
            .await
            .map_err(|source| SourceError::GitUnavailable { source })?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = last_lines(stderr.trim());
        Err(SourceError::Git {
            step,
            repository: self.hide(self.repository),
            message: if message.is_empty() {
                format!("git exited with {}", output.status)
            } else {
                self.hide(&message)
            },
        })
    }

    /// `text` with the repository URL's password (or token) replaced by `***`.
    fn hide(&self, text: &str) -> String {
        match password(self.repository) {
            Some(secret) => text.replace(secret, "***"),
            None => text.to_owned(),
        }
    }
}

/// The password of a URL like `https://user:password@host/repo`, or the token of `https://token@host/repo`
/// (a user name alone, as in `ssh://git@host/repo`, is no secret).
pub(crate) fn password(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let secret = match userinfo.split_once(':') {
        Some((_, password)) => password,
        None if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http") => {
            userinfo
        }
        None => return None,
    };
    (!secret.is_empty()).then_some(secret)
}

/// The last few lines of a message, at most about 1,000 characters: enough to say why, never a whole log.
fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    let joined = lines.into_iter().rev().collect::<Vec<_>>().join("; ");
    if joined.len() <= 1000 {
        return joined;
    }
    let start = joined.len() - 1000;
    let start = (start..joined.len())
        .find(|i| joined.is_char_boundary(*i))
        .unwrap_or(joined.len());
    format!("…{}", &joined[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_hidden() {
        assert_eq!(password("https://user:s3cret@host/r.git"), Some("s3cret"));
        assert_eq!(password("https://ghp_token@host/r.git"), Some("ghp_token"));
        assert_eq!(password("https://host/r.git"), None);
        assert_eq!(password("ssh://git@host/r.git"), None);
        assert_eq!(password("/srv/repo@2"), None);
        let git = Git {
            repository: "https://user:s3cret@host/r.git",
            dir: PathBuf::new(),
        };
        assert_eq!(
            git.hide("fatal: unable to access 'https://user:s3cret@host/r.git/'"),
            "fatal: unable to access 'https://user:***@host/r.git/'"
        );
    }

    #[test]
    fn repositories_that_are_options_or_commands_are_refused() {
        for bad in [
            "",
            " ",
            "-uhelp",
            "--upload-pack=touch x",
            "ext::sh -c touch% x",
            "a\nb",
            "../r",
            "r",
        ] {
            assert!(check_repository(bad).is_err(), "{bad:?}");
        }
        for good in [
            "/srv/repo",
            "https://host/r.git",
            "file:///srv/repo",
            "git@host:r.git",
            "host:r.git",
        ] {
            assert!(check_repository(good).is_ok(), "{good:?}");
        }
    }
}
