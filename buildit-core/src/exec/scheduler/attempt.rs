//! One attempt of a stage: its files restored, its commands started, watched to their end or stopped (timeout,
//! cancellation), its output turned into masked log lines, and its files collected.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::super::cache::ResolvedCache;
use super::super::executor::{Executor, ExitStatus, LogStream, NoteSender, StageSpec};
use super::super::lines::LineSplitter;
use super::super::mask::SecretMasker;
use super::outcome::Attempt;
use super::stage::StageTask;
use crate::events::{EventBus, FailureKind, LogStreamKind, RunEventKind, StageOutcome};

impl<E: Executor> StageTask<E> {
    /// Runs what comes before an attempt's commands (`work`) against the attempt's deadline and the run's stop,
    /// writing the executor's notes (image pulls) to the log as they come.
    async fn while_starting<T>(
        &self,
        attempt: u32,
        work: impl Future<Output = T>,
        deadline: &mut (impl Future<Output = ()> + Unpin),
        noted: &mut Option<tokio::sync::mpsc::Receiver<String>>,
        timeout: Option<Duration>,
    ) -> Result<T, Attempt> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return Ok(done),
                Some(note) = next_note(noted) => self.note(attempt, note).await,
                () = &mut *deadline => return Err(Attempt {
                    outcome: StageOutcome::TimedOut,
                    exit_code: None,
                    reason: timeout.map(|t| {
                        format!("timed out after {} while starting", crate::config::format_duration(t))
                    }),
                    failure: Some(FailureKind::Timeout),
                }),
                () = self.stop.cancelled() => return Err(Attempt {
                    outcome: StageOutcome::Cancelled,
                    exit_code: None,
                    reason: Some("cancelled while starting".to_owned()),
                    failure: Some(FailureKind::Cancelled),
                }),
            }
        }
    }

    /// One attempt: caches (first attempt only, into `caches` for saving) and the needs' artifacts restored, the
    /// commands run, and on success the artifacts collected and new caches saved.
    pub(super) async fn attempt(
        &self,
        attempt: u32,
        spec: StageSpec,
        caches: &mut Vec<ResolvedCache>,
    ) -> Attempt {
        let stage = &self.plan.stages()[self.position];
        let failed = |reason: String| Attempt::failed(FailureKind::Infrastructure, reason);
        let timeout = spec.timeout;
        let mut spec = spec;
        // A container executor may pull images first: what it reports goes to the log as it happens.
        let mut noted = spec.image.is_some().then(|| {
            let (notes, noted) = NoteSender::channel();
            spec.notes = Some(notes);
            noted
        });
        // A workspace the host cannot see (a container executor's volume): artifacts and caches move through
        // the executor, which a copy of the spec points at.
        let remote = (!self.executor.workspace_on_host(&spec)).then(|| spec.clone());
        let remote = remote.as_ref();
        // Starting can take long (restoring caches and artifacts into a container's workspace, pulling images,
        // starting services and waiting for them): it counts against the timeout and gives way to
        // cancellation. What a container executor created before it was interrupted carries the run's label
        // for the run's sweep.
        let starting = Instant::now();
        // Reports older than this were left by an earlier attempt or run (the workspace persists).
        let attempt_began = std::time::SystemTime::now();
        let deadline = sleep_or_forever(timeout);
        tokio::pin!(deadline);
        let prepare = async {
            // Caches are restored once, as part of the first attempt (its log says what was restored).
            if attempt == 1 {
                *caches = self.restore_caches(remote).await?;
            }
            self.restore_artifacts(remote).await
        };
        match self
            .while_starting(attempt, prepare, &mut deadline, &mut noted, timeout)
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return failed(reason),
            Err(ended) => return ended,
        }
        let spawned = match self
            .while_starting(
                attempt,
                self.executor.spawn(spec),
                &mut deadline,
                &mut noted,
                timeout,
            )
            .await
        {
            Ok(spawned) => spawned,
            Err(ended) => return ended,
        };
        if let Some(noted) = &mut noted {
            while let Ok(note) = noted.try_recv() {
                self.note(attempt, note).await;
            }
        }
        // Nobody reads notes any more: a later one (a transfer after the commands) is dropped, never waited on.
        drop(noted);
        let handle = match spawned {
            Ok(handle) => handle,
            Err(error) => return Attempt::failed(error.failure_kind(), error.to_string()),
        };
        let remaining = timeout.map(|t| t.saturating_sub(starting.elapsed()));
        // Without its output an attempt still runs to its end; the log says why it is missing.
        let logs = match self.executor.logs(&handle).await {
            Ok(logs) => Some(logs),
            Err(error) => {
                self.bus
                    .emit(RunEventKind::LogLine {
                        stage: stage.name().to_owned(),
                        attempt,
                        stream: LogStreamKind::Stderr,
                        text: format!("buildit: cannot read the output of this attempt: {error}"),
                    })
                    .await;
                None
            }
        };
        let progress = Arc::new(AtomicU64::new(0));
        let pump = logs.map(|logs| {
            tokio::spawn(pump_lines(
                logs,
                self.bus.clone(),
                stage.name().to_owned(),
                attempt,
                Arc::clone(&self.masker),
                Arc::clone(&progress),
            ))
        });
        enum Ended {
            Exited(Result<ExitStatus, (FailureKind, String)>),
            TimedOut,
            Cancelled,
        }
        let ended = tokio::select! {
            status = self.executor.wait(&handle) => {
                Ended::Exited(status.map_err(|e| (e.failure_kind(), e.to_string())))
            }
            () = sleep_or_forever(remaining) => Ended::TimedOut,
            () = self.stop.cancelled() => Ended::Cancelled,
        };
        if matches!(ended, Ended::TimedOut | Ended::Cancelled) {
            let grace = if self.options.kill.is_cancelled() {
                Duration::ZERO
            } else {
                self.options.grace
            };
            let stopped = tokio::select! {
                result = self.executor.cancel(&handle, grace) => result,
                () = self.options.kill.cancelled() => self.executor.cancel(&handle, Duration::ZERO).await,
            };
            if let Err(error) = stopped {
                return failed(format!("cannot stop the stage: {error}"));
            }
        }
        if let Some(mut pump) = pump {
            // Output is complete once every pipe has closed. A slow subscriber only slows this down (every line
            // still arrives before the stage is reported finished); but a process that left the stage's
            // process group (`setsid`) may hold a pipe open forever, so reading stops once no output has moved
            // for the drain period.
            loop {
                let before = progress.load(Ordering::Relaxed);
                if tokio::time::timeout(self.options.log_drain, &mut pump)
                    .await
                    .is_ok()
                {
                    break;
                }
                if progress.load(Ordering::Relaxed) == before {
                    pump.abort();
                    self.note(
                        attempt,
                        "buildit: stopped reading this stage's output: a process that left its process group still holds it open".to_owned(),
                    )
                    .await;
                    break;
                }
            }
        }
        // Reports are read after every attempt that ran to an end or out of time, failed or not: a failing
        // test stage is when they matter. They never change the attempt's outcome.
        if matches!(ended, Ended::Exited(Ok(_)) | Ended::TimedOut) {
            self.read_reports(attempt, remote, attempt_began).await;
        }
        match ended {
            Ended::Exited(Ok(status)) if status.success() => {
                // Outputs are read first (a bad file fails the stage) and passed on only once the attempt has
                // succeeded as a whole: a stage whose artifacts fail hands nothing on.
                let collected = match self.read_outputs(attempt, remote).await {
                    Ok(outputs) => self.collect_artifacts(remote).await.map(|()| outputs),
                    Err(failed) => Err(failed),
                };
                match collected {
                    Ok(outputs) => {
                        self.publish_outputs(attempt, outputs).await;
                        if !caches.is_empty() {
                            // Before the stage is reported finished, so that its cache notes belong to its log.
                            self.save_caches(caches.clone(), attempt, remote).await;
                        }
                        Attempt {
                            outcome: StageOutcome::Succeeded,
                            exit_code: Some(0),
                            reason: None,
                            failure: None,
                        }
                    }
                    Err((failure, reason)) => Attempt {
                        outcome: StageOutcome::Failed,
                        exit_code: Some(0),
                        reason: Some(reason),
                        failure: Some(failure),
                    },
                }
            }
            Ended::Exited(Ok(status)) => Attempt {
                outcome: StageOutcome::Failed,
                exit_code: status.code,
                reason: Some(match (status.code, status.signal, status.oom_killed) {
                    (_, _, true) => "killed: out of memory".to_owned(),
                    (Some(code), _, _) => format!("exited with code {code}"),
                    (None, Some(signal), _) => format!("killed by signal {signal}"),
                    (None, None, _) => "ended without an exit code".to_owned(),
                }),
                failure: Some(if status.oom_killed {
                    FailureKind::OutOfMemory
                } else {
                    FailureKind::ExitCode
                }),
            },
            Ended::Exited(Err((failure, error))) => Attempt::failed(failure, error),
            Ended::TimedOut => Attempt {
                outcome: StageOutcome::TimedOut,
                exit_code: None,
                reason: timeout
                    .map(|t| format!("timed out after {}", crate::config::format_duration(t))),
                failure: Some(FailureKind::Timeout),
            },
            Ended::Cancelled => Attempt {
                outcome: StageOutcome::Cancelled,
                exit_code: None,
                reason: Some("cancelled".to_owned()),
                failure: Some(FailureKind::Cancelled),
            },
        }
    }
}

/// The next note of a starting attempt; `None` at once when nobody sends any.
async fn next_note(noted: &mut Option<tokio::sync::mpsc::Receiver<String>>) -> Option<String> {
    match noted {
        Some(noted) => noted.recv().await,
        None => None,
    }
}

pub(super) async fn sleep_or_forever(timeout: Option<Duration>) {
    match timeout {
        Some(timeout) => tokio::time::sleep(timeout).await,
        None => std::future::pending().await,
    }
}

/// Turns raw output into masked log-line events, flushing partial last lines when the output ends.
async fn pump_lines(
    mut logs: LogStream,
    bus: EventBus,
    stage: String,
    attempt: u32,
    masker: Arc<SecretMasker>,
    progress: Arc<AtomicU64>,
) {
    // The splitters mask, before lines are cut, so that no secret straddles a cut.
    let mut stdout = LineSplitter::with_masker(Arc::clone(&masker));
    let mut stderr = LineSplitter::with_masker(Arc::clone(&masker));
    while let Some(chunk) = logs.next().await {
        progress.fetch_add(1, Ordering::Relaxed);
        let splitter = match chunk.stream {
            LogStreamKind::Stdout => &mut stdout,
            LogStreamKind::Stderr => &mut stderr,
        };
        let lines = splitter.push(&chunk.bytes);
        bus.emit_lines(&stage, attempt, chunk.stream, lines).await;
    }
    for (stream, splitter) in [
        (LogStreamKind::Stdout, &mut stdout),
        (LogStreamKind::Stderr, &mut stderr),
    ] {
        if let Some(line) = splitter.finish() {
            bus.emit_lines(&stage, attempt, stream, vec![line]).await;
        }
    }
}
