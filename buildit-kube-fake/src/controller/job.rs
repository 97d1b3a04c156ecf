//! The job controller: runs a Job's pods from its template, counts their outcomes (with `backoffLimit`,
//! `podFailurePolicy`, `activeDeadlineSeconds`), writes the Job's status and conditions as the real controller
//! does, and deletes finished Jobs after `ttlSecondsAfterFinished`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::SignedDuration;

use super::deletion::{DeleteRequest, Propagation, delete};
use super::failure_policy::{Verdict, judge};
use super::job_pods::{create_pod, owned_pods};
use super::reconcile::reconcile_loop;
use crate::events::{EventType, Reporter, record_event};
use crate::shared::Shared;
use crate::store::{ObjectKey, Resource};

/// What the controller remembers of a Job's pods between reconciliations.
#[derive(Debug, Default)]
struct Tracking {
    seen: HashSet<String>,
    succeeded: HashSet<String>,
    failed: HashSet<String>,
    ignored: HashSet<String>,
    /// The message of the first `FailJob` rule a pod matched.
    fail_job: Option<String>,
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("Pending")
}

fn condition<'a>(job: &'a Job, kind: &str) -> Option<&'a JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|condition| condition.type_ == kind && condition.status == "True")
}

fn set_condition(status: &mut JobStatus, kind: &str, reason: &str, message: &str) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if conditions.iter().any(|condition| condition.type_ == kind) {
        return;
    }
    let now = Time(crate::store::meta::now());
    conditions.push(JobCondition {
        type_: kind.to_owned(),
        status: "True".to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now),
    });
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .iter()
        .flat_map(|status| status.conditions.iter().flatten())
        .any(|condition| condition.type_ == "Ready" && condition.status == "True")
}

/// Deletes a finished Job once its `ttlSecondsAfterFinished` has passed.
fn expire_finished(shared: &Shared, job: &Job, key: &ObjectKey) {
    let Some(ttl) = job
        .spec
        .as_ref()
        .and_then(|spec| spec.ttl_seconds_after_finished)
    else {
        return;
    };
    let finished = condition(job, "Complete")
        .or_else(|| condition(job, "Failed"))
        .and_then(|condition| condition.last_transition_time.as_ref());
    let Some(finished) = finished else {
        return;
    };
    let due = finished
        .0
        .checked_add(SignedDuration::from_secs(i64::from(ttl)));
    if due.is_ok_and(|due| due <= crate::store::meta::now())
        && job.metadata.deletion_timestamp.is_none()
    {
        let request = DeleteRequest {
            grace_seconds: None,
            propagation: Some(Propagation::Background),
        };
        delete(shared, key, request);
    }
}

fn reconcile_job(shared: &Shared, job: &Job, tracking: &mut Tracking) {
    let (Some(namespace), Some(name), Some(uid)) = (
        &job.metadata.namespace,
        &job.metadata.name,
        &job.metadata.uid,
    ) else {
        return;
    };
    let key = ObjectKey::new(Resource::Jobs, namespace, name);
    if condition(job, "Complete").is_some() || condition(job, "Failed").is_some() {
        expire_finished(shared, job, &key);
        return;
    }
    let Some(spec) = job.spec.as_ref() else {
        return;
    };
    let pods = owned_pods(shared, namespace, uid);
    let mut present = HashSet::new();
    for pod in &pods {
        let Some(pod_uid) = pod.metadata.uid.clone() else {
            continue;
        };
        present.insert(pod_uid.clone());
        tracking.seen.insert(pod_uid.clone());
        let counted = tracking.succeeded.contains(&pod_uid)
            || tracking.failed.contains(&pod_uid)
            || tracking.ignored.contains(&pod_uid);
        match phase(pod) {
            "Succeeded" if !counted => {
                tracking.succeeded.insert(pod_uid);
            }
            "Failed" if !counted => match judge(spec.pod_failure_policy.as_ref(), pod) {
                Verdict::FailJob(message) => {
                    tracking.fail_job.get_or_insert(message);
                    tracking.failed.insert(pod_uid);
                }
                Verdict::Ignore => {
                    tracking.ignored.insert(pod_uid);
                }
                Verdict::Count => {
                    tracking.failed.insert(pod_uid);
                }
            },
            _ => {}
        }
    }
    // A pod deleted before it finished counts as failed, as with the real controller's tracking finalizer.
    let vanished: Vec<String> = tracking
        .seen
        .iter()
        .filter(|pod_uid| {
            !present.contains(*pod_uid)
                && !tracking.succeeded.contains(*pod_uid)
                && !tracking.failed.contains(*pod_uid)
                && !tracking.ignored.contains(*pod_uid)
        })
        .cloned()
        .collect();
    tracking.failed.extend(vanished);

    let running: Vec<&Pod> = pods
        .iter()
        .filter(|pod| !matches!(phase(pod), "Succeeded" | "Failed"))
        .collect();
    let active: Vec<&Pod> = running
        .iter()
        .copied()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .collect();
    let terminating = running.len() - active.len();
    let now = crate::store::meta::now();
    let start = job
        .status
        .as_ref()
        .and_then(|status| status.start_time.as_ref())
        .map_or(now, |time| time.0);
    let existing_target = condition(job, "FailureTarget").map(|target| {
        (
            target.reason.clone().unwrap_or_default(),
            target.message.clone().unwrap_or_default(),
        )
    });
    let deadline_passed = spec.active_deadline_seconds.is_some_and(|seconds| {
        start
            .checked_add(SignedDuration::from_secs(seconds))
            .is_ok_and(|deadline| deadline <= now)
    });
    let backoff_limit = usize::try_from(spec.backoff_limit.unwrap_or(6)).unwrap_or(0);
    let failure: Option<(String, String)> = existing_target.or_else(|| {
        if let Some(message) = &tracking.fail_job {
            Some(("PodFailurePolicy".to_owned(), message.clone()))
        } else if tracking.failed.len() > backoff_limit {
            Some((
                "BackoffLimitExceeded".to_owned(),
                "Job has reached the specified backoff limit".to_owned(),
            ))
        } else if deadline_passed {
            Some((
                "DeadlineExceeded".to_owned(),
                "Job was active longer than specified deadline".to_owned(),
            ))
        } else {
            None
        }
    });
    let completions = usize::try_from(spec.completions.unwrap_or(1)).unwrap_or(1);
    let parallelism = usize::try_from(spec.parallelism.unwrap_or(1)).unwrap_or(1);
    let succeeded = tracking.succeeded.len();
    let success = failure.is_none() && succeeded >= completions;

    if failure.is_some() || success {
        for pod in &active {
            if let (Some(pod_namespace), Some(pod_name)) =
                (&pod.metadata.namespace, &pod.metadata.name)
            {
                let pod_key = ObjectKey::new(Resource::Pods, pod_namespace, pod_name);
                delete(shared, &pod_key, DeleteRequest::default());
            }
        }
    } else if job.metadata.deletion_timestamp.is_none() {
        let wanted = parallelism.min(completions.saturating_sub(succeeded));
        for _ in running.len()..wanted {
            create_pod(shared, job);
        }
    }
    let gone = running.is_empty() || (active.is_empty() && terminating == 0);
    let ready = active.iter().filter(|pod| is_ready(pod)).count();
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let before = serde_json::to_value(job).unwrap_or_default();
    let updated = shared.store.update_as::<Job>(&key, |job| {
        let status = job.status.get_or_insert_with(JobStatus::default);
        status.start_time.get_or_insert(Time(start));
        status.active = Some(count(if failure.is_some() || success {
            0
        } else {
            active.len()
        }));
        status.succeeded = Some(count(succeeded));
        status.failed = Some(count(tracking.failed.len()));
        status.ready = Some(count(ready));
        status.terminating = Some(count(terminating));
        if let Some((reason, message)) = &failure {
            set_condition(status, "FailureTarget", reason, message);
            if gone {
                set_condition(status, "Failed", reason, message);
            }
        } else if success {
            let message = "Reached expected number of succeeded pods";
            set_condition(status, "SuccessCriteriaMet", "CompletionsReached", message);
            if gone {
                set_condition(status, "Complete", "CompletionsReached", message);
                status.completion_time.get_or_insert(Time(now));
            }
        }
    });
    let finished_now = updated.as_ref().is_some_and(|job| {
        condition(job, "Complete").is_some() || condition(job, "Failed").is_some()
    });
    if finished_now {
        let (event_type, reason, message) = match &failure {
            Some((reason, message)) => (EventType::Warning, reason.as_str(), message.as_str()),
            None => (EventType::Normal, "Completed", "Job completed"),
        };
        record_event(
            shared,
            &before,
            event_type,
            Reporter::JobController,
            reason,
            message,
            None,
        );
    }
}

fn reconcile_all(shared: &Shared, tracking: &mut HashMap<String, Tracking>) {
    let jobs = shared.store.list_as::<Job>(Resource::Jobs, None);
    let live: HashSet<String> = jobs
        .iter()
        .filter_map(|job| job.metadata.uid.clone())
        .collect();
    tracking.retain(|uid, _| live.contains(uid));
    for job in &jobs {
        let Some(uid) = job.metadata.uid.clone() else {
            continue;
        };
        reconcile_job(shared, job, tracking.entry(uid).or_default());
    }
}

/// Runs Jobs until the fake stops.
pub(crate) async fn run_job_controller(shared: Arc<Shared>) {
    let mut tracking = HashMap::new();
    reconcile_loop(shared, Duration::from_millis(200), move |shared| {
        reconcile_all(shared, &mut tracking);
    })
    .await;
}
