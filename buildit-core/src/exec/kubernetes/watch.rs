//! Watching an attempt to its end through its pod: the exit of its container, or why it will not run (an
//! image that cannot be pulled, a pod no node takes, an eviction, a pod deleted by someone else), each said
//! as soon as the pod's status says it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio::time::Instant;

use super::executor::{KubernetesExecutor, is_not_found};
use super::logs::PodProgress;
use super::names::JOB_LABEL;
use super::status::{PodVerdict, pod_verdict};
use crate::exec::attempt::{ExitReport, WaitFailure};
use crate::exec::executor::ExitStatus;

/// How often the attempt's clocks (image pull grace, unschedulable limit, a Job with no pod) are looked at.
const TICK: Duration = Duration::from_millis(500);
/// How long a Job may have no pod before the executor asks the Job why.
const NO_POD_CHECK: Duration = Duration::from_secs(5);
/// How long the watch may keep failing before the attempt is given up.
const WATCH_FAILING_LIMIT: Duration = Duration::from_secs(60);
/// Errors further apart than this are not in a row (the watcher's backoff waits up to about half a minute).
const WATCH_ERROR_GAP: Duration = Duration::from_secs(45);

/// Watches the pod of Job `job` until the attempt ends, and says how through `exit`; `progress` tells the log
/// reader where the pod is.
pub async fn watch_attempt(
    executor: KubernetesExecutor,
    job: String,
    stopping: Arc<AtomicBool>,
    exit: watch::Sender<ExitReport>,
    progress: watch::Sender<PodProgress>,
) {
    let config = watcher::Config::default().labels(&format!("{JOB_LABEL}={job}"));
    let mut events = watcher::watcher(executor.pods(), config)
        .default_backoff()
        .boxed();
    let mut clock = Clock::default();
    let started = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    // The pods a re-list (after `410 Gone`) shows: one deleted meanwhile gets no `Delete` event.
    let mut relisted: Option<HashSet<String>> = None;
    let ended = loop {
        tokio::select! {
            event = events.next() => {
                if matches!(event, Some(Ok(_))) {
                    clock.failing = None;
                }
                match event {
                    Some(Ok(Event::Apply(pod) | Event::InitApply(pod))) => {
                        clock.seen_pod = true;
                        if let (Some(relisted), Some(name)) = (&mut relisted, &pod.metadata.name) {
                            relisted.insert(name.clone());
                        }
                        let verdict = match pod_verdict(&pod) {
                            PodVerdict::ServiceNotReady { container, message } => {
                                let tail = container_log_tail(&executor, &pod, &container).await;
                                PodVerdict::ServiceNotReady { container, message: format!("{message}{tail}") }
                            }
                            verdict => verdict,
                        };
                        progress.send_modify(|state| {
                            state.pod.clone_from(&pod.metadata.name);
                            state.started |= matches!(verdict, PodVerdict::Running | PodVerdict::Exited(_));
                        });
                        // Being deleted, and not by BuildIt: whatever its container says, the attempt did not
                        // end on its own (a trapped SIGTERM exits 0).
                        if pod.metadata.deletion_timestamp.is_some() && !stopping.load(Ordering::SeqCst) {
                            break deleted(&executor, &job, Some(&pod), &stopping).await;
                        }
                        if let Some(ended) = clock.judge(verdict, &executor.options) {
                            break ended;
                        }
                    }
                    Some(Ok(Event::Delete(pod))) => {
                        break deleted(&executor, &job, Some(&pod), &stopping).await;
                    }
                    Some(Ok(Event::Init)) => relisted = Some(HashSet::new()),
                    Some(Ok(Event::InitDone)) => {
                        let known = progress.borrow().pod.clone();
                        if let (Some(known), Some(relisted)) = (known, relisted.take())
                            && !relisted.contains(&known)
                        {
                            break deleted(&executor, &job, None, &stopping).await;
                        }
                    }
                    Some(Err(error)) => {
                        // Errors in a row (the watcher retries with a backoff of up to half a minute) for
                        // longer than the limit end the attempt; an error long after the last one starts anew.
                        let now = Instant::now();
                        let (since, _) = match clock.failing {
                            Some((since, last)) if now.duration_since(last) < WATCH_ERROR_GAP => (since, last),
                            _ => (now, now),
                        };
                        clock.failing = Some((since, now));
                        if now.duration_since(since) > WATCH_FAILING_LIMIT {
                            break Err(WaitFailure::Failed(format!("cannot watch the attempt's pod: {error}")));
                        }
                    }
                    None => break Err(WaitFailure::Failed("the watch of the attempt's pod ended".to_owned())),
                }
            },
            _ = tick.tick() => {
                if let Some(ended) = clock.overdue(&executor.options) {
                    break ended;
                }
                if stopping.load(Ordering::SeqCst) && !clock.seen_pod {
                    break Ok(cancelled());
                }
                // A Job without a pod for long: the Job may be gone or failed.
                if !clock.seen_pod
                    && started.elapsed() > NO_POD_CHECK
                    && clock.job_checked.is_none_or(|at| at.elapsed() > NO_POD_CHECK)
                {
                    clock.job_checked = Some(Instant::now());
                    if let Some(failure) = job_failure(&executor, &job).await {
                        break Err(failure);
                    }
                    // The cluster may refuse to create its pod (admission, a quota): the Job only says so in
                    // its events, and would wait for ever.
                    if let Some(refused) = pod_refused(&executor, &job).await {
                        break Err(WaitFailure::Config(refused));
                    }
                }
            }
        }
    };
    progress.send_modify(|state| state.ended = true);
    let _ = exit.send(Some(ended));
}

/// How an attempt whose pod is deleted (`pod`: as last seen, if it was) ended: stopped by BuildIt, evicted,
/// stopped at its Job's deadline, or taken away by someone else.
async fn deleted(
    executor: &KubernetesExecutor,
    job: &str,
    pod: Option<&k8s_openapi::api::core::v1::Pod>,
    stopping: &AtomicBool,
) -> Result<ExitStatus, WaitFailure> {
    if stopping.load(Ordering::SeqCst) {
        return Ok(cancelled());
    }
    if let Some(PodVerdict::Evicted(message)) = pod.map(pod_verdict) {
        return Err(WaitFailure::Evicted(message));
    }
    let name = pod
        .and_then(|pod| pod.metadata.name.clone())
        .unwrap_or_else(|| format!("of Job {job}"));
    Err(match job_failure(executor, job).await {
        Some(
            failure @ (WaitFailure::TimedOut(_) | WaitFailure::Evicted(_) | WaitFailure::Lost(_)),
        ) => failure,
        _ => WaitFailure::Lost(format!("pod {name} was deleted by someone else")),
    })
}

/// An attempt stopped by BuildIt.
fn cancelled() -> ExitStatus {
    ExitStatus {
        code: None,
        signal: Some(15),
        oom_killed: false,
    }
}

/// What the attempt's Job says of its end when its pod went away: its deadline, or its own deletion.
async fn job_failure(executor: &KubernetesExecutor, job: &str) -> Option<WaitFailure> {
    match executor.jobs().get(job).await {
        Err(error) if is_not_found(&error) => Some(WaitFailure::Lost(format!(
            "Job {job} was deleted by someone else"
        ))),
        Err(_) => None,
        Ok(found) => {
            let failed = found
                .status
                .and_then(|status| status.conditions)
                .into_iter()
                .flatten()
                .find(|condition| {
                    matches!(condition.type_.as_str(), "Failed" | "FailureTarget")
                        && condition.status == "True"
                })?;
            let message = failed.message.unwrap_or_default();
            Some(match failed.reason.as_deref() {
                Some("DeadlineExceeded") => WaitFailure::TimedOut(format!(
                    "the cluster stopped the Job at its deadline: {message}"
                )),
                Some("PodFailurePolicy") => WaitFailure::Evicted(format!("evicted: {message}")),
                reason => WaitFailure::Failed(format!(
                    "Job {job} failed: {}{message}",
                    reason
                        .map(|reason| format!("{reason}: "))
                        .unwrap_or_default()
                )),
            })
        }
    }
}

/// How many of a failed container's last log lines its failure shows (as Docker's does for a service).
const LOG_TAIL_LINES: i64 = 20;
/// The most of those lines read, in bytes (one huge line is cut).
const LOG_TAIL_BYTES: i64 = 16 * 1024;
/// How long reading them may take.
const LOG_TAIL_WAIT: Duration = Duration::from_secs(5);

/// The last lines a container wrote (a service's instance before its restart, when the cluster keeps it), as
/// the end of a failure message; empty when there are none.
pub(super) async fn container_log_tail(
    executor: &KubernetesExecutor,
    pod: &k8s_openapi::api::core::v1::Pod,
    container: &str,
) -> String {
    let Some(name) = pod.metadata.name.as_deref() else {
        return String::new();
    };
    let params = |previous: bool| kube::api::LogParams {
        container: Some(container.to_owned()),
        tail_lines: Some(LOG_TAIL_LINES),
        limit_bytes: Some(LOG_TAIL_BYTES),
        previous,
        ..kube::api::LogParams::default()
    };
    let pods = executor.pods();
    let read = async {
        match pods.logs(name, &params(true)).await {
            Ok(text) if !text.trim().is_empty() => text,
            _ => pods.logs(name, &params(false)).await.unwrap_or_default(),
        }
    };
    // The attempt's end waits for these lines: never long.
    let text = tokio::time::timeout(LOG_TAIL_WAIT, read)
        .await
        .unwrap_or_default();
    let text = text.trim_end();
    if text.is_empty() {
        String::new()
    } else {
        format!("; its last lines:\n{text}")
    }
}

/// Why the cluster refuses to create the pod of Job `job`, when its events say so (`FailedCreate`).
async fn pod_refused(executor: &KubernetesExecutor, job: &str) -> Option<String> {
    let events: kube::Api<k8s_openapi::api::core::v1::Event> =
        kube::Api::namespaced(executor.client.clone(), &executor.namespace);
    let selector = format!("involvedObject.kind=Job,involvedObject.name={job}");
    let listed = events
        .list(&kube::api::ListParams::default().fields(&selector))
        .await
        .ok()?;
    listed
        .items
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some("FailedCreate"))
        .filter_map(|event| event.message)
        .next_back()
        .map(|message| format!("the cluster refuses to create the stage's pod: {message}"))
}

/// The attempt's clocks: since when its image has failed to pull, since when no node takes it.
#[derive(Debug, Default)]
pub(super) struct Clock {
    seen_pod: bool,
    pull_failing: Option<(Instant, String)>,
    unschedulable: Option<(Instant, String)>,
    /// Since when the watch has failed, and when it last did.
    failing: Option<(Instant, Instant)>,
    /// When the Job was last asked why it has no pod.
    job_checked: Option<Instant>,
}

impl Clock {
    /// The attempt's end, when `verdict` is one.
    pub(super) fn judge(
        &mut self,
        verdict: PodVerdict,
        options: &super::options::KubernetesOptions,
    ) -> Option<Result<ExitStatus, WaitFailure>> {
        match verdict {
            PodVerdict::Exited(status) => return Some(Ok(status)),
            PodVerdict::Evicted(message) => return Some(Err(WaitFailure::Evicted(message))),
            PodVerdict::ImageInvalid(message) => return Some(Err(WaitFailure::ImagePull(message))),
            PodVerdict::ConfigError(message) => return Some(Err(WaitFailure::Config(message))),
            PodVerdict::Failed(message) | PodVerdict::ServiceNotReady { message, .. } => {
                return Some(Err(WaitFailure::Failed(message)));
            }
            PodVerdict::ImagePullFailing(message) => {
                let since = self
                    .pull_failing
                    .as_ref()
                    .map_or_else(Instant::now, |(since, _)| *since);
                self.pull_failing = Some((since, message));
            }
            PodVerdict::Unschedulable(message) => {
                let since = self
                    .unschedulable
                    .as_ref()
                    .map_or_else(Instant::now, |(since, _)| *since);
                self.unschedulable = Some((since, message));
            }
            PodVerdict::Pending | PodVerdict::Running => {
                self.pull_failing = None;
                self.unschedulable = None;
            }
        }
        self.overdue(options)
    }

    /// A failure that has lasted longer than it may.
    fn overdue(
        &self,
        options: &super::options::KubernetesOptions,
    ) -> Option<Result<ExitStatus, WaitFailure>> {
        if let Some((since, message)) = &self.pull_failing
            && since.elapsed() >= options.image_pull_grace
        {
            return Some(Err(WaitFailure::ImagePull(format!(
                "the image cannot be pulled ({message})"
            ))));
        }
        if let Some((since, message)) = &self.unschedulable
            && since.elapsed() >= options.unschedulable_limit
        {
            return Some(Err(WaitFailure::Failed(format!(
                "no node can run the stage after {}s: {message}",
                options.unschedulable_limit.as_secs()
            ))));
        }
        None
    }
}
