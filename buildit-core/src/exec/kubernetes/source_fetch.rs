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
use crate::source::{
    COMMIT_VARIABLE, FetchableSource, REPOSITORY_VARIABLE, checkout_environment, checkout_script,
};

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

/// How a run's source is fetched into its workspace by the holder pod.
#[derive(Debug, Clone)]
pub struct SourceFetch {
    /// The init container.
    pub container: Container,
    /// The volumes it needs beside the workspace.
    pub volumes: Vec<Volume>,
    /// The Secret holding the URL, created before the holder pod.
    pub secret: Secret,
    /// What is fetched, for messages: `git https://host/r.git at 1a2b…` (with no password in it).
    pub what: String,
    /// Text that must not reach a message: the URL's password, or the link's token.
    hidden: Vec<String>,
}

impl SourceFetch {
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

/// How the holder pod (of `holder_image`, whose metadata is `metadata`) fetches `source` into `workspace`; `None`
/// when the cluster cannot fetch it (no `git-image`, a repository that is a path of this machine, an archive
/// its store gives no link to), and BuildIt copies it in itself.
pub fn source_fetch(
    source: &FetchableSource,
    metadata: &ObjectMeta,
    workspace: &str,
    holder_image: &str,
    options: &KubernetesOptions,
) -> Option<SourceFetch> {
    let (image, url, script, mut env, what, hidden) = match source {
        FetchableSource::Git { repository, commit } => {
            let image = options.git_image.clone()?;
            if !reachable_from_a_pod(repository) {
                return None;
            }
            let mut env: Vec<EnvVar> = checkout_environment()
                .map(|(name, value)| plain(name, value))
                .collect();
            env.push(plain(COMMIT_VARIABLE, commit.as_str()));
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
            let url = source.archive_link()?;
            let token = url.rsplit('/').next().unwrap_or_default().to_owned();
            (
                holder_image.to_owned(),
                url,
                archive_script(),
                vec![plain(DIGEST_VARIABLE, digest.as_str())],
                format!("the uploaded archive {digest}"),
                vec![token],
            )
        }
    };
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
    })
}

/// The script that downloads the archive at `$BUILDIT_SOURCE_URL`, checks it is the one uploaded (its sha256:
/// the daemon checked that archive before the run started) and unpacks it into the current directory. It needs
/// `wget`, `sha256sum` and `tar` (busybox has them).
fn archive_script() -> String {
    format!(
        r#"set -eu
archive={DOWNLOAD_DIR}/source.tar
wget -q -O "$archive" "${REPOSITORY_VARIABLE}"
if ! echo "${DIGEST_VARIABLE}  $archive" | sha256sum -c >/dev/null 2>&1; then
    echo "the downloaded archive is not the one uploaded (its sha256 differs)" >&2
    exit {DIGEST_MISMATCH_EXIT}
fi
tar xf "$archive"
rm -f "$archive"
"#
    )
}

/// Whether a pod can reach `repository` at all: a path, or a `file://` URL, names this machine's disk.
fn reachable_from_a_pod(repository: &str) -> bool {
    let lower = repository.to_ascii_lowercase();
    !(repository.starts_with('/') || lower.starts_with("file://"))
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
        let Some(fetch) = source_fetch(&source, &metadata(), "/ws", "busybox", &options) else {
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
        for repository in ["/srv/repo", "file:///srv/repo", "-uhelp"] {
            assert!(
                source_fetch(&git(repository), &metadata(), "/ws", "b", &with_git).is_none(),
                "{repository}"
            );
        }
        let without = KubernetesOptions::default();
        assert!(
            source_fetch(
                &git("https://host/r.git"),
                &metadata(),
                "/ws",
                "b",
                &without
            )
            .is_none()
        );
        let digest =
            ArchiveDigest::parse(&"cd".repeat(32)).unwrap_or_else(|error| panic!("{error}"));
        let store =
            crate::source::SourceStore::new("/nowhere", crate::source::SourceLimits::default());
        let archive = FetchableSource::Archive { digest, store };
        assert!(source_fetch(&archive, &metadata(), "/ws", "b", &with_git).is_none());
    }
}
