//! The shell script that checks a commit out as [`super::git`] does (the same configuration, environment and
//! steps), for a container that has `git` and `sh` but not BuildIt: a pod that brings a run's source in.

use super::git::{CONFIG, ENVIRONMENT, KEPT_GIT_VARIABLES};
use crate::config::quote_for_shell;

/// The variable the script reads the repository from (its URL may carry credentials: it is given as a secret).
pub const REPOSITORY_VARIABLE: &str = "BUILDIT_SOURCE_URL";
/// The variable the script reads the commit from.
pub const COMMIT_VARIABLE: &str = "BUILDIT_SOURCE_COMMIT";
/// The exit code of the script when the commit is not in the repository.
pub const UNKNOWN_COMMIT_EXIT: i32 = 3;

/// The exit code of the script when the checkout is not the commit.
pub const WRONG_CHECKOUT_EXIT: i32 = 4;

/// A POSIX shell script that checks out the commit in `$BUILDIT_SOURCE_COMMIT` of the repository in
/// `$BUILDIT_SOURCE_URL` into the current directory, as a detached HEAD, and checks that HEAD is that commit.
/// Like a checkout on the host, it first removes every `GIT_*` variable of its environment but the ssh ones (an
/// image's `GIT_DIR` or `GIT_CONFIG_PARAMETERS` would change what git does), then sets BuildIt's. Needs git 2.32
/// or later (`GIT_CONFIG_GLOBAL`).
pub fn checkout_script() -> String {
    let settings: String = CONFIG
        .iter()
        .map(|setting| format!(" -c {}", quote_for_shell(setting)))
        .collect();
    let kept = KEPT_GIT_VARIABLES.join("|");
    let exports: String = ENVIRONMENT
        .iter()
        .map(|(name, value)| format!("{name}={}\nexport {name}\n", quote_for_shell(value)))
        .collect();
    format!(
        r#"set -eu
for variable in $(env | sed -n 's/^\(GIT_[A-Za-z0-9_]*\)=.*/\1/p'); do
    case "$variable" in {kept}) ;; *) unset "$variable" ;; esac
done
{exports}g() {{ git{settings} "$@"; }}
g init --quiet --template=
GIT_DIR="$PWD/.git" GIT_WORK_TREE="$PWD"
export GIT_DIR GIT_WORK_TREE
if ! g fetch --quiet --no-tags --no-recurse-submodules --depth=1 -- "{url}" "{commit}"; then
    echo "the server does not serve a commit alone: fetching its branches and tags" >&2
    g fetch --quiet --no-tags --no-recurse-submodules -- "{url}" '+refs/heads/*:refs/remotes/source/heads/*' '+refs/tags/*:refs/remotes/source/tags/*'
fi
if ! g rev-parse --verify --quiet --end-of-options "{commit}^{{commit}}" >/dev/null; then
    echo "commit {commit} is not in the repository" >&2
    exit {UNKNOWN_COMMIT_EXIT}
fi
g checkout --quiet --force --detach "{commit}" --
head=$(g rev-parse --verify HEAD)
if [ "$head" != "{commit}" ] || g symbolic-ref --quiet HEAD >/dev/null; then
    echo "the checkout is not commit {commit} (HEAD is $head)" >&2
    exit {WRONG_CHECKOUT_EXIT}
fi
"#,
        url = format!("${REPOSITORY_VARIABLE}"),
        commit = format!("${COMMIT_VARIABLE}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script run by `sh` against a real repository: it checks the commit out, and refuses one that is not
    /// there with its exit code.
    #[test]
    fn the_script_checks_out_the_commit_and_refuses_an_unknown_one() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("no temporary directory");
        };
        let repo = dir.path().join("repo");
        let git = |args: &[&str], cwd: &std::path::Path| {
            std::process::Command::new("git")
                .args([
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@t",
                    "-c",
                    "init.defaultBranch=main",
                ])
                .args(args)
                .current_dir(cwd)
                .output()
                .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
                .unwrap_or_default()
        };
        std::fs::create_dir_all(&repo).unwrap_or_default();
        git(&["init", "--quiet"], &repo);
        std::fs::write(repo.join("a.txt"), "first\n").unwrap_or_default();
        git(&["add", "."], &repo);
        git(&["commit", "--quiet", "-m", "one"], &repo);
        let first = git(&["rev-parse", "HEAD"], &repo);
        std::fs::write(repo.join("a.txt"), "second\n").unwrap_or_default();
        git(&["commit", "--quiet", "-am", "two"], &repo);
        assert_eq!(first.len(), 40, "{first:?}");
        let run = |commit: &str, into: &std::path::Path| {
            std::fs::create_dir_all(into).unwrap_or_default();
            std::process::Command::new("sh")
                .arg("-c")
                .arg(checkout_script())
                .env("GIT_DIR", "/nowhere")
                .env(REPOSITORY_VARIABLE, format!("file://{}", repo.display()))
                .env(COMMIT_VARIABLE, commit)
                .current_dir(into)
                .output()
        };
        let into = dir.path().join("checkout");
        let Ok(done) = run(&first, &into) else {
            panic!("sh did not run");
        };
        assert!(done.status.success(), "{done:?}");
        assert_eq!(
            std::fs::read_to_string(into.join("a.txt")).unwrap_or_default(),
            "first\n"
        );
        let Ok(unknown) = run(&"0".repeat(40), &dir.path().join("unknown")) else {
            panic!("sh did not run");
        };
        assert_eq!(
            unknown.status.code(),
            Some(UNKNOWN_COMMIT_EXIT),
            "{unknown:?}"
        );
        assert!(
            String::from_utf8_lossy(&unknown.stderr).contains("is not in the repository"),
            "{unknown:?}"
        );
    }
}
