//! Images: making sure a stage's or service's image is on the engine, as the pull policy says, and showing a
//! pull's progress.

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt as _;

use super::engine::{DockerExecutor, backend, is_not_found};
use crate::exec::executor::{ExecError, NoteSender};
use crate::system::PullPolicy;

/// Turns the engine's pull messages into log lines: every change of a layer's state, and its byte counts at
/// most every [`PULL_PROGRESS_EVERY`] while it downloads or extracts.
#[derive(Debug, Default)]
struct PullProgress {
    /// Per layer: its last state, and when its byte counts were last shown.
    layers: HashMap<String, (String, tokio::time::Instant)>,
}

/// How often a layer's byte counts are shown while it moves.
const PULL_PROGRESS_EVERY: Duration = Duration::from_secs(2);

impl PullProgress {
    fn line(
        &mut self,
        info: &bollard::models::CreateImageInfo,
        now: tokio::time::Instant,
    ) -> Option<String> {
        let status = info.status.as_deref()?.trim();
        let Some(layer) = info.id.as_deref().filter(|id| !id.is_empty()) else {
            // Whole-image messages: the digest, "Downloaded newer image", "Image is up to date".
            return Some(status.to_owned());
        };
        let counts = info
            .progress_detail
            .as_ref()
            .and_then(|detail| Some((detail.current?, detail.total?)))
            .filter(|(_, total)| *total > 0);
        let (last_status, last_shown) = self
            .layers
            .entry(layer.to_owned())
            .or_insert_with(|| (String::new(), now - PULL_PROGRESS_EVERY));
        let changed = last_status != status;
        if !changed && (counts.is_none() || now.duration_since(*last_shown) < PULL_PROGRESS_EVERY) {
            return None;
        }
        *last_status = status.to_owned();
        *last_shown = now;
        Some(match counts {
            Some((current, total)) => format!(
                "{layer}: {status} {} of {}",
                megabytes(current),
                megabytes(total)
            ),
            None => format!("{layer}: {status}"),
        })
    }
}

fn megabytes(bytes: i64) -> String {
    let tenths = bytes.max(0) / 100_000;
    format!("{}.{} MB", tenths / 10, tenths % 10)
}

/// Whether an image reference names a tag (`alpine:3.20`) or a digest (`alpine@sha256:...`); a registry port
/// (`registry:5000/app`) is not a tag.
fn has_tag_or_digest(image: &str) -> bool {
    image.contains('@')
        || image
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'))
}

impl DockerExecutor {
    /// Makes sure `image` is on the engine, as the pull policy says; a pull reports its progress to `notes`.
    pub(super) async fn ensure_image(
        &self,
        image: &str,
        notes: Option<&NoteSender>,
    ) -> Result<(), ExecError> {
        let known = self.options.pull != PullPolicy::Always
            && self
                .present
                .lock()
                .is_ok_and(|present| present.contains(image));
        if known {
            return Ok(());
        }
        self.pull_if_needed(image, notes).await?;
        if let Ok(mut present) = self.present.lock() {
            present.insert(image.to_owned());
        }
        Ok(())
    }

    async fn pull_if_needed(
        &self,
        image: &str,
        notes: Option<&NoteSender>,
    ) -> Result<(), ExecError> {
        let present = match self.docker.inspect_image(image).await {
            Ok(_) => true,
            Err(error) if is_not_found(&error) => false,
            Err(error) => return Err(backend(&format!("cannot inspect image `{image}`"), error)),
        };
        let pull = match self.options.pull {
            PullPolicy::Always => true,
            PullPolicy::IfNotPresent => !present,
            PullPolicy::Never if present => false,
            PullPolicy::Never => {
                return Err(ExecError::ImagePull(format!(
                    "image `{image}` is not on the Docker host, and the pull policy is `never`"
                )));
            }
        };
        if !pull {
            return Ok(());
        }
        // Without a tag or digest the engine pulls every tag of the repository; `docker pull` means `latest`.
        let mut options = CreateImageOptionsBuilder::new().from_image(image);
        if !has_tag_or_digest(image) {
            options = options.tag("latest");
        }
        let options = options.build();
        let note = |text: String| async move {
            if let Some(notes) = notes {
                notes.send(text).await;
            }
        };
        note(format!("buildit: pulling image `{image}`")).await;
        let started = tokio::time::Instant::now();
        let mut progress = self.docker.create_image(Some(options), None, None);
        let mut layers = PullProgress::default();
        while let Some(step) = progress.next().await {
            match step {
                Ok(info) => {
                    if let Some(line) = layers.line(&info, tokio::time::Instant::now()) {
                        note(format!("buildit: {line}")).await;
                    }
                }
                Err(error) => {
                    return Err(ExecError::ImagePull(format!(
                        "cannot pull image `{image}`: {error}"
                    )));
                }
            }
        }
        note(format!(
            "buildit: pulled image `{image}` in {:.1} s",
            started.elapsed().as_secs_f64()
        ))
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{PullProgress, has_tag_or_digest};

    #[test]
    fn pull_progress_shows_state_changes_and_throttles_byte_counts() {
        let info =
            |id: &str, status: &str, current: Option<i64>| bollard::models::CreateImageInfo {
                id: Some(id.to_owned()),
                status: Some(status.to_owned()),
                progress_detail: current.map(|current| bollard::models::ProgressDetail {
                    current: Some(current),
                    total: Some(3_000_000),
                }),
                ..bollard::models::CreateImageInfo::default()
            };
        let mut progress = PullProgress::default();
        let start = tokio::time::Instant::now();
        let at = |millis: u64| start + Duration::from_millis(millis);
        let lines: Vec<Option<String>> = vec![
            progress.line(&info("abc", "Pulling fs layer", None), at(0)),
            progress.line(&info("abc", "Downloading", Some(1_000_000)), at(10)),
            progress.line(&info("abc", "Downloading", Some(1_500_000)), at(500)),
            progress.line(&info("abc", "Downloading", Some(2_500_000)), at(2_100)),
            progress.line(&info("def", "Downloading", Some(100)), at(2_200)),
            progress.line(&info("abc", "Pull complete", None), at(2_300)),
            progress.line(&info("", "Digest: sha256:00", None), at(2_400)),
        ];
        assert_eq!(
            lines,
            [
                Some("abc: Pulling fs layer".to_owned()),
                Some("abc: Downloading 1.0 MB of 3.0 MB".to_owned()),
                None,
                Some("abc: Downloading 2.5 MB of 3.0 MB".to_owned()),
                Some("def: Downloading 0.0 MB of 3.0 MB".to_owned()),
                Some("abc: Pull complete".to_owned()),
                Some("Digest: sha256:00".to_owned()),
            ]
        );
    }

    #[test]
    fn references_without_a_tag_are_told_apart() {
        for tagged in [
            "alpine:3.20",
            "registry:5000/app:1",
            "ghcr.io/o/app@sha256:abc",
            "buildit-test/busybox:latest",
        ] {
            assert!(has_tag_or_digest(tagged), "{tagged}");
        }
        for bare in ["alpine", "registry:5000/app", "ghcr.io/o/app"] {
            assert!(!has_tag_or_digest(bare), "{bare}");
        }
    }
}
