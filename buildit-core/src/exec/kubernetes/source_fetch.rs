//! Bringing a run's source into its workspace claim from within the cluster, built without calling anything: the
//! init container of the holder pod that checks the git commit out or downloads the uploaded archive, and the
//! Secret that hands it the URL (which may carry credentials or a one-time token).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, Secret, SecretKeySelector, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::options::KubernetesOptions;
use super::workspace_manifest::workspace_mount;
use crate::source::{COMMIT_VARIABLE, FetchableSource, REPOSITORY_VARIABLE, checkout_script};

/// The holder pod's init container that brings the source in.
pub const SOURCE_CONTAINER: &str = "source";
/// The key of the source Secret that holds the URL.
const URL_KEY: &str = "url";
/// Where an archive is downloaded to before it is checked and unpacked: outside the workspace, so that no
/// name in the archive can clash with it.
const DOWNLOAD_DIR: &str = "/buildit-source";
/// The volume of [`DOWNLOAD_DIR`].
const DOWNLOAD_VOLUME: &str = "source-download";
/// The variable the archive script reads the expected sha256 from.
const DIGEST_VARIABLE: &str = "BUILDIT_SOURCE_SHA256";
/// Exit code of the archive script when the download is not the archive that was uploaded.
pub const DIGEST_MISMATCH_EXIT: i32 = 3;
/// Exit code of the archive script when the image lacks one of the programs it needs.
pub const MISSING_TOOLS_EXIT: i32 = 5;
/// The programs the archive script needs.
const ARCHIVE_TOOLS: &str = "wget sha256sum tar chmod";

/// How a run's source is fetched into its workspace by the holder pod.
#[derive(Clone)]
pub struct SourceFetch {
    /// The init container.
    pub container: Container,
    /// The volumes it needs beside the workspace.
    pub volumes: Vec<Volume>,
    /// The Secret holding the URL, created before the holder pod.
    pub secret: Secret,
    /// What is fetched, for messages: `git https://host/r.git at 1a2b…` (with no password in it).
    pub what: String,
    /// Text that must not reach a message: the URL's password, or the link and its token.
    hidden: Vec<String>,
    /// Whether it downloads an archive (rather than checking a commit out).
    archive: bool,
}

/// Shows what is fetched, never the URL (the Secret's data, and what is hidden, hold it).
impl std::fmt::Debug for SourceFetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceFetch")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl SourceFetch {
    /// Whether the fetch exiting with `code` means its image lacks a program it needs (the operator's
    /// configuration, not the source).
    pub fn lacks_tools(&self, code: Option<i32>) -> bool {
        self.archive && code == Some(MISSING_TOOLS_EXIT)
    }

    /// `text` with every secret part of the URL replaced by `***`.
    pub fn hide(&self, text: &str) -> String {
        self.hidden
            .iter()
            .filter(|secret| !secret.is_empty())
            .fold(text.to_owned(), |text, secret| {
                text.replace(secret.as_str(), "***")
            })
    }
}

/// How the holder pod (whose metadata is `metadata`) fetches `source` into `workspace`; `None` when the cluster
/// cannot fetch it, and BuildIt copies it in itself: a git commit without `git-image`, or of a repository a pod
/// cannot reach with what it has (a path of this machine, ssh, which needs keys only this machine has); an
/// archive without `helper-image` (the image that has the programs the download needs) or that its store gives
/// no link to.
pub fn source_fetch(
    source: &FetchableSource,
    metadata: &ObjectMeta,
    workspace: &str,
    options: &KubernetesOptions,
) -> Option<SourceFetch> {
    let (image, url, script, env, what, hidden) = match source {
        FetchableSource::Git { repository, commit } => {
            let image = options.git_image.clone()?;
            if !reachable_from_a_pod(repository) {
                return None;
            }
            let env = vec![plain(COMMIT_VARIABLE, commit.as_str())];
            let hidden = crate::source::url_password(repository)
                .map(str::to_owned)
                .into_iter()
                .collect::<Vec<_>>();
            let shown = hidden
                .iter()
                .fold(repository.clone(), |url, secret| url.replace(secret, "***"));
            (
                image,
                repository.clone(),
                checkout_script(),
                env,
                format!("git {shown} at {commit}"),
                hidden,
            )
        }
        FetchableSource::Archive { digest, .. } => {
            let image = options.helper_image.clone()?;
            let url = source.archive_link()?;
            // The whole link first, then its last part (the token of a `.../sources/TOKEN` link) wherever it
            // shows up alone.
            let token = url.rsplit('/').next().unwrap_or_default().to_owned();
            (
                image,
                url.clone(),
                archive_script(),
                vec![plain(DIGEST_VARIABLE, digest.as_str())],
                format!("the uploaded archive {digest}"),
                vec![url, token],
            )
        }
    };
    let archive = matches!(source, FetchableSource::Archive { .. });
    let mut env = env;
    let name = metadata.name.clone().unwrap_or_default();
    env.push(EnvVar {
        name: REPOSITORY_VARIABLE.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: name.clone(),
                key: URL_KEY.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    });
    let secret = Secret {
        metadata: metadata.clone(),
        immutable: Some(true),
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            URL_KEY.to_owned(),
            ByteString(url.into_bytes()),
        )])),
        ..Secret::default()
    };
    let container = Container {
        name: SOURCE_CONTAINER.to_owned(),
        image: Some(image),
        command: Some(vec!["sh".to_owned(), "-c".to_owned(), script]),
        working_dir: Some(workspace.to_owned()),
        env: Some(env),
        volume_mounts: Some(vec![
            workspace_mount(workspace),
            VolumeMount {
                name: DOWNLOAD_VOLUME.to_owned(),
                mount_path: DOWNLOAD_DIR.to_owned(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    let volumes = vec![Volume {
        name: DOWNLOAD_VOLUME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    Some(SourceFetch {
        container,
        volumes,
        secret,
        what,
        hidden,
        archive,
    })
}

/// The script that downloads the archive at `$BUILDIT_SOURCE_URL`, checks it is the one uploaded (its sha256:
/// the daemon checked that archive before the run started) and unpacks it into the current directory as BuildIt's
/// own unpacking does: owners not restored, setuid, setgid and sticky bits dropped (the container may run as
/// root; an uploaded setuid-root program must not become one). It needs `wget`, `sha256sum`, `tar` and `chmod`
/// (busybox has them).
fn archive_script() -> String {
    format!(
        r#"set -eu
for tool in {ARCHIVE_TOOLS}; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "the image has no \`$tool\`: fetching an uploaded source needs {ARCHIVE_TOOLS}" >&2
        exit {MISSING_TOOLS_EXIT}
    fi
done
archive={DOWNLOAD_DIR}/source.tar
wget -q -O "$archive" "${REPOSITORY_VARIABLE}"
if ! echo "${DIGEST_VARIABLE}  $archive" | sha256sum -c >/dev/null 2>&1; then
    echo "the downloaded archive is not the one uploaded (its sha256 differs)" >&2
    exit {DIGEST_MISMATCH_EXIT}
fi
tar xof "$archive"
rm -f "$archive"
chmod -R ug-s,o-t .
"#
    )
}

/// Whether a pod can reach `repository` with nothing but the URL: `https://` (with any credentials in the URL),
/// `http://` or `git://`. A path or `file://` names this machine's disk; ssh needs keys and known hosts that only
/// this machine has.
fn reachable_from_a_pod(repository: &str) -> bool {
    let lower = repository.to_ascii_lowercase();
    ["https://", "http://", "git://"]
        .iter()
        .any(|scheme| lower.starts_with(scheme))
        && crate::source::check_git_repository(repository).is_ok()
}

fn plain(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{ArchiveDigest, CommitId};

    fn metadata() -> ObjectMeta {
        ObjectMeta {
            name: Some("buildit-ws-1".to_owned()),
            ..ObjectMeta::default()
        }
    }

    fn git(repository: &str) -> FetchableSource {
        let commit = CommitId::parse(&"ab".repeat(20)).unwrap_or_else(|error| panic!("{error}"));
        FetchableSource::Git {
            repository: repository.to_owned(),
            commit,
        }
    }

    #[test]
    fn a_git_source_is_checked_out_by_the_git_image_and_its_url_stays_in_the_secret() {
        let options = KubernetesOptions {
            git_image: Some("git:2".to_owned()),
            ..KubernetesOptions::default()
        };
        let source = git("https://user:s3cret@host/r.git");
        let Some(fetch) = source_fetch(&source, &metadata(), "/ws", &options) else {
            panic!("no fetch");
        };
        let container = serde_json::to_string(&fetch.container).unwrap_or_default();
        assert!(!container.contains("s3cret"), "{container}");
        assert!(container.contains("\"image\":\"git:2\""), "{container}");
        assert!(
            container.contains("core.hooksPath=/dev/null"),
            "{container}"
        );
        assert!(container.contains("\"workingDir\":\"/ws\""), "{container}");
        assert!(container.contains("secretKeyRef"), "{container}");
        let secret = serde_json::to_value(&fetch.secret).unwrap_or_default();
        assert_eq!(secret["metadata"]["name"], "buildit-ws-1");
        assert!(secret["data"]["url"].is_string(), "{secret}");
        assert_eq!(
            fetch.what,
            format!("git https://user:***@host/r.git at {}", "ab".repeat(20))
        );
        assert_eq!(
            fetch.hide("fatal: cannot reach https://user:s3cret@host/r.git"),
            "fatal: cannot reach https://user:***@host/r.git"
        );
    }

    #[test]
    fn what_a_pod_cannot_fetch_is_left_to_the_copy() {
        let with_git = KubernetesOptions {
            git_image: Some("git:2".to_owned()),
            ..KubernetesOptions::default()
        };
        for repository in [
            "/srv/repo",
            "file:///srv/repo",
            "-uhelp",
            "ssh://git@host/r.git",
            "git@host:r.git",
        ] {
            assert!(
                source_fetch(&git(repository), &metadata(), "/ws", &with_git).is_none(),
                "{repository}"
            );
        }
        assert!(source_fetch(&git("git://host/r.git"), &metadata(), "/ws", &with_git).is_some());
        let without = KubernetesOptions::default();
        assert!(source_fetch(&git("https://host/r.git"), &metadata(), "/ws", &without).is_none());
        let digest =
            ArchiveDigest::parse(&"cd".repeat(32)).unwrap_or_else(|error| panic!("{error}"));
        let store =
            crate::source::SourceStore::new("/nowhere", crate::source::SourceLimits::default());
        let archive = FetchableSource::Archive { digest, store };
        // No link to give (no store that issues them), and no `helper-image`.
        assert!(source_fetch(&archive, &metadata(), "/ws", &with_git).is_none());
    }

    /// The archive script under the host's `sh`, with a `PATH` that lacks `wget`: it stops before anything,
    /// with the exit code that says the image is the problem, and names the program.
    #[test]
    fn the_archive_script_says_which_program_its_image_lacks() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("no temporary directory");
        };
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap_or_default();
        for tool in ["sha256sum", "tar", "chmod"] {
            let found = std::process::Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
                .unwrap_or_default();
            assert!(!found.is_empty(), "no {tool} here");
            std::os::unix::fs::symlink(found, bin.join(tool)).unwrap_or_default();
        }
        let output = std::process::Command::new("/bin/sh")
            .args(["-c", &archive_script()])
            .env("PATH", &bin)
            .env(REPOSITORY_VARIABLE, "http://127.0.0.1:1/sources/x")
            .current_dir(dir.path())
            .output();
        let Ok(output) = output else {
            panic!("sh did not run");
        };
        assert_eq!(output.status.code(), Some(MISSING_TOOLS_EXIT), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("the image has no `wget`"), "{stderr}");
    }
}
