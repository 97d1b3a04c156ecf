//! Following a run on the daemon as a local `buildit run` shows it: its streamed events through the same printer,
//! across a broken stream (resumed after the last event) and a daemon that died (followed into the run that
//! starts it again), then the summary and `buildit run`'s exit code.

use std::time::Duration;

use buildit_core::events::{EventBatch, RunView};
use buildit_grpc::event_from_wire;
use buildit_grpc::proto::build_it_client::BuildItClient;
use buildit_grpc::proto::{self, watch_run_response::Item};
use tonic::transport::Channel;

use super::remote::{authorized, refused};
use crate::cli::RunOutput;
use crate::exit::Exit;
use crate::printer::print_events;
use crate::report::error_line;
use crate::reporter::{LineReporter, print_text, summary};

/// Times a follower reconnects after the stream broke (the daemon restarting, a network hiccup) before it gives up.
const RECONNECTS: u32 = 5;

/// How long an interrupted run's follower waits for the restarted daemon to start it again.
const RESTART_WAIT: Duration = Duration::from_secs(10);

/// Follows `run_id` to its end, and an interrupted run into its restart; prints the summary and says how
/// `buildit` exits.
pub(super) async fn follow(
    client: &mut BuildItClient<Channel>,
    token: &str,
    run_id: &str,
    format: RunOutput,
) -> Exit {
    let mut run_id = run_id.to_owned();
    loop {
        let (view, failure) = stream_run(client, token, &run_id, format).await;
        if view.ending.is_none() {
            match unfinished(client, token, &run_id).await {
                Unfinished::Restarted(next) => {
                    error_line(
                        &format!(
                            "the daemon stopped while run {run_id} ran; it starts again as run {next}"
                        ),
                        None,
                    );
                    run_id = next;
                    continue;
                }
                Unfinished::Ended(exit) => return exit,
                Unfinished::Unknown => {}
            }
        }
        if let Some(status) = failure {
            return refused(&status);
        }
        let text = summary(&view);
        match format {
            RunOutput::Text => print_text(&text),
            RunOutput::Json => eprint!("{text}"),
        }
        return match &view.ending {
            Some(ending) => Exit::of_run(ending.status, Some(ending)),
            None => {
                error_line("the run's events ended before it did", None);
                Exit::Infrastructure
            }
        };
    }
}

/// What the record of a run whose events ended without its end says.
enum Unfinished {
    /// Its daemon died while it ran, and it starts again as this run.
    Restarted(String),
    /// It never started, or was interrupted for good: reported, with this exit.
    Ended(Exit),
    /// Nothing more is known.
    Unknown,
}

/// Reads the run's record: a run that never started (cancelled while queued, or its workspace or executor could
/// not be set up) or that was interrupted has no ending event. An interrupted run is waited for a while: the
/// daemon that restarts it names its new run.
async fn unfinished(client: &mut BuildItClient<Channel>, token: &str, run_id: &str) -> Unfinished {
    let waited = tokio::time::Instant::now();
    loop {
        let got = client
            .get_run(authorized(
                proto::GetRunRequest {
                    run: run_id.to_owned(),
                },
                token,
            ))
            .await
            .map(tonic::Response::into_inner);
        let Ok(run) = got else {
            return Unfinished::Unknown;
        };
        match run.state.as_str() {
            "failed" | "cancelled" => {
                error_line(
                    &format!("the run {} before it started: {}", run.state, run.reason),
                    None,
                );
                return Unfinished::Ended(if run.state == "cancelled" {
                    Exit::Interrupted
                } else {
                    Exit::Infrastructure
                });
            }
            "interrupted" if !run.restarted_as.is_empty() => {
                return Unfinished::Restarted(run.restarted_as);
            }
            "interrupted" if waited.elapsed() < RESTART_WAIT => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            "interrupted" => {
                error_line(
                    &format!(
                        "the run was interrupted: {} (its daemon stopped and did not start it again)",
                        run.reason
                    ),
                    None,
                );
                return Unfinished::Ended(Exit::Infrastructure);
            }
            _ => return Unfinished::Unknown,
        }
    }
}

/// Streams the run's events into the same printer as a local run, resuming after the last event received when
/// the stream breaks; the run as its events tell it, and why the stream failed if it did.
async fn stream_run(
    client: &mut BuildItClient<Channel>,
    token: &str,
    run_id: &str,
    format: RunOutput,
) -> (RunView, Option<tonic::Status>) {
    let (events, received) = tokio::sync::mpsc::channel::<EventBatch>(64);
    let printer = tokio::spawn(print_events(
        received,
        LineReporter::new(false),
        format,
        std::io::stdout(),
    ));
    let mut after_seq = 0;
    let mut reconnects = 0;
    let mut failure = None;
    'stream: loop {
        let opened = client
            .watch_run(authorized(
                proto::WatchRunRequest {
                    run: run_id.to_owned(),
                    after_seq,
                },
                token,
            ))
            .await;
        let mut stream = match opened {
            Ok(stream) => stream.into_inner(),
            // The daemon restarting: try again, from the last event received.
            Err(status) if broken(&status) && reconnects < RECONNECTS => {
                reconnects += 1;
                tokio::time::sleep(Duration::from_millis(500 * u64::from(reconnects))).await;
                continue;
            }
            Err(status) => {
                failure = Some(status);
                break;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(message)) => {
                    let Some(Item::Events(batch)) = message.item else {
                        continue;
                    };
                    let batch: Vec<_> = batch
                        .events
                        .iter()
                        .filter_map(|event| event_from_wire(run_id, event))
                        .collect();
                    if let Some(last) = batch.last() {
                        after_seq = last.seq;
                    }
                    if events.send(std::sync::Arc::new(batch)).await.is_err() {
                        break 'stream;
                    }
                }
                Ok(None) => break 'stream,
                Err(status) if broken(&status) && reconnects < RECONNECTS => {
                    reconnects += 1;
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(reconnects))).await;
                    continue 'stream;
                }
                Err(status) => {
                    failure = Some(status);
                    break 'stream;
                }
            }
        }
    }
    drop(events);
    let view = printer.await.unwrap_or_else(|_| RunView::new());
    (view, failure)
}

/// Whether the stream broke on the way rather than being refused by the daemon: the daemon stopping says
/// `UNAVAILABLE`; a connection cut (a daemon killed) fails in the transport, which a status of the daemon's
/// never does.
fn broken(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable || std::error::Error::source(status).is_some()
}
