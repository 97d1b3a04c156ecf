//! Following the stage container's log from its first line to its last: a stream cut short is resumed from the
//! last line's timestamp, and the lines seen already are not repeated.

use std::time::Duration;

use futures_util::AsyncBufReadExt as _;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::LogParams;
use tokio::sync::{mpsc, watch};

use super::manifest::STAGE_CONTAINER;
use crate::events::LogStreamKind;
use crate::exec::executor::OutputChunk;

/// How often a stream that cannot be read is tried again before the log says lines may be missing.
const RECONNECTS: u32 = 10;
/// How long to wait between two tries.
const RECONNECT_DELAY: Duration = Duration::from_millis(200);

/// Where the attempt's pod is, as its watcher last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodProgress {
    /// The pod's name, once the Job has one.
    pub pod: Option<String>,
    /// Whether the stage's container has started (running or ended): its log can be read.
    pub started: bool,
    /// Whether the attempt has ended (for whatever reason): a log not started by then never will.
    pub ended: bool,
}

/// Which lines of a log have been passed on, so that a resumed stream repeats none. The API resumes from a
/// whole second (`sinceTime`) and gives every line stamped at or after it, in the log's order (which is not
/// always the order of the stamps): the lines passed on since that second are the first ones it repeats.
#[derive(Debug, Default)]
pub struct LogCursor {
    /// The latest stamp passed on.
    latest: Option<Timestamp>,
    /// The stamps passed on at or after the start of `latest`'s second.
    recent: Vec<Timestamp>,
    /// Lines still to be skipped at the start of the stream being read.
    repeats: usize,
}

impl LogCursor {
    /// A new stream starts: from where (`None`: the log's start); it repeats the lines of that second that
    /// were passed on already.
    pub fn resume(&mut self) -> Option<Timestamp> {
        let since = second_of(self.latest?);
        self.recent.retain(|at| *at >= since);
        self.repeats = self.recent.len();
        Some(since)
    }

    /// Whether the next line of the stream, stamped `at`, is new; counted when it is.
    pub fn admit(&mut self, at: Timestamp) -> bool {
        if self.repeats > 0 {
            self.repeats -= 1;
            return false;
        }
        if self.latest.is_none_or(|latest| at > latest) {
            self.latest = Some(at);
            let since = second_of(at);
            self.recent.retain(|seen| *seen >= since);
        }
        if self.latest.is_some_and(|latest| at >= second_of(latest)) {
            self.recent.push(at);
        }
        true
    }
}

/// The start of `at`'s second: what the API resumes from (it takes whole seconds).
fn second_of(at: Timestamp) -> Timestamp {
    Timestamp::from_second(at.as_second()).unwrap_or(at)
}

/// Splits `LINE` as the API gives it with `timestamps=true` (`2026-12-07T13:05:40.123456789Z text\n`) into its
/// time and its text (with the newline); `None` for a line without a readable timestamp.
pub fn split_timestamp(line: &[u8]) -> Option<(Timestamp, &[u8])> {
    let space = line.iter().position(|b| *b == b' ')?;
    let stamp = std::str::from_utf8(&line[..space]).ok()?;
    let at: Timestamp = stamp.parse().ok()?;
    Some((at, &line[space + 1..]))
}

/// Sends the stage container's log to `output` until the attempt has ended and its container's log is read,
/// or the attempt ended before its container started. Lines go out as read (stdout: the API merges the two
/// streams).
pub async fn follow(
    pods: Api<Pod>,
    mut progress: watch::Receiver<PodProgress>,
    output: mpsc::Sender<OutputChunk>,
) {
    let Ok(state) = progress
        .wait_for(|state| state.started || state.ended)
        .await
        .map(|state| state.clone())
    else {
        return;
    };
    let Some(pod) = state.pod.filter(|_| state.started) else {
        return;
    };
    let mut cursor = LogCursor::default();
    let mut failures = 0;
    loop {
        let params = LogParams {
            container: Some(STAGE_CONTAINER.to_owned()),
            follow: true,
            timestamps: true,
            since_time: cursor.resume(),
            ..LogParams::default()
        };
        let read = match pods.log_stream(&pod, &params).await {
            Ok(stream) => read_lines(stream, &mut cursor, &output).await,
            Err(error) => Err(error.to_string()),
        };
        let why = match read {
            Ok(Progress::ReaderGone) => return,
            // A stream ends when the container has ended and its log is read, but also when something
            // between (a proxy, a log rotation) closes it: the end counts once the attempt has ended.
            Ok(Progress::Ended) if progress.borrow().ended => return,
            Ok(Progress::Ended | Progress::Cut) => {
                failures = 0;
                None
            }
            Err(why) => {
                failures += 1;
                Some(why)
            }
        };
        if let Some(why) = why {
            let gone = pods.get_opt(&pod).await.ok().flatten().is_none();
            if gone || failures >= RECONNECTS {
                let why = if gone {
                    "the pod was deleted".to_owned()
                } else {
                    why
                };
                let _ = output
                    .send(OutputChunk {
                        stream: LogStreamKind::Stderr,
                        bytes: format!(
                            "buildit: the log of pod {pod} could not be read to its end ({why}): lines may be missing\n"
                        )
                        .into_bytes(),
                    })
                    .await;
                return;
            }
        }
        // Until the attempt's end is known, an ended stream is tried again (it gives what came since).
        let _ = tokio::time::timeout(RECONNECT_DELAY, progress.changed()).await;
    }
}

/// How reading one stream ended.
enum Progress {
    /// At its end: the container's log is complete.
    Ended,
    /// Cut short (the connection failed): resume from the cursor.
    Cut,
    /// Nobody reads the output any more.
    ReaderGone,
}

async fn read_lines(
    stream: impl futures_util::AsyncBufRead + Unpin,
    cursor: &mut LogCursor,
    output: &mpsc::Sender<OutputChunk>,
) -> Result<Progress, String> {
    let mut stream = stream;
    let mut line = Vec::new();
    let mut read_any = false;
    loop {
        line.clear();
        match stream.read_until(b'\n', &mut line).await {
            Ok(0) => return Ok(Progress::Ended),
            Ok(_) => {
                read_any = true;
                let (at, text) = match split_timestamp(&line) {
                    Some(split) => split,
                    // Not a stamped line (an API that ignores `timestamps`): passed on as it is.
                    None => (Timestamp::UNIX_EPOCH, line.as_slice()),
                };
                if (at == Timestamp::UNIX_EPOCH || cursor.admit(at))
                    && output
                        .send(OutputChunk {
                            stream: LogStreamKind::Stdout,
                            bytes: text.to_vec(),
                        })
                        .await
                        .is_err()
                {
                    return Ok(Progress::ReaderGone);
                }
            }
            Err(error) if read_any => {
                let _ = error;
                return Ok(Progress::Cut);
            }
            Err(error) => return Err(error.to_string()),
        }
    }
}

#[cfg(test)]
#[expect(
    clippy::expect_used,
    reason = "a test fails loudly on what it cannot build"
)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a timestamp")
    }

    #[test]
    fn stamped_lines_are_split() {
        let (stamp, text) =
            split_timestamp(b"2026-12-07T13:05:40.123456789Z hello world\n").expect("split");
        assert_eq!(stamp, at("2026-12-07T13:05:40.123456789Z"));
        assert_eq!(text, b"hello world\n");
        assert!(split_timestamp(b"no stamp here\n").is_none());
    }

    #[test]
    fn a_resumed_stream_repeats_nothing_and_loses_nothing() {
        let mut cursor = LogCursor::default();
        assert_eq!(cursor.resume(), None);
        // Stamps out of order within a second (stdout and stderr are stamped before they are written).
        assert!(cursor.admit(at("2026-12-07T13:05:39.9Z")));
        assert!(cursor.admit(at("2026-12-07T13:05:40.6Z")));
        assert!(cursor.admit(at("2026-12-07T13:05:40.2Z")));
        assert!(cursor.admit(at("2026-12-07T13:05:40.6Z")));
        // Cut; resumed from the start of the second (the API takes whole seconds), which repeats the three
        // lines of that second already passed on, in the log's order, then goes on.
        assert_eq!(cursor.resume(), Some(at("2026-12-07T13:05:40Z")));
        assert!(!cursor.admit(at("2026-12-07T13:05:40.6Z")));
        assert!(!cursor.admit(at("2026-12-07T13:05:40.2Z")));
        assert!(!cursor.admit(at("2026-12-07T13:05:40.6Z")));
        assert!(cursor.admit(at("2026-12-07T13:05:40.7Z")));
        assert!(cursor.admit(at("2026-12-07T13:05:41.1Z")));
        // Cut again, in a new second: only its one line is repeated.
        assert_eq!(cursor.resume(), Some(at("2026-12-07T13:05:41Z")));
        assert!(!cursor.admit(at("2026-12-07T13:05:41.1Z")));
        assert!(cursor.admit(at("2026-12-07T13:05:41.1Z")));
    }
}
