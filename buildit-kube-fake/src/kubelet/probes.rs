//! Exec probes (`startupProbe`, `readinessProbe`) run inside a container through Docker exec, with the
//! probe's delay, period, timeout and failure threshold.

use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;

use super::docker;
use super::runtime::PodRuntime;
use super::status::ContainerList;
use crate::events::EventType;

fn seconds(value: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(
        value
            .and_then(|value| u64::try_from(value).ok())
            .unwrap_or(default),
    )
}

/// Runs the probe until it succeeds (`true`) or fails `failureThreshold` times in a row (`false`). A probe
/// that is not an exec probe succeeds (the fake has no network probes).
pub(crate) async fn probe_until_settled(
    runtime: &PodRuntime,
    list: ContainerList,
    name: &str,
    id: &str,
    probe: &Probe,
    kind: &str,
) -> bool {
    let Some(command) = probe.exec.as_ref().and_then(|exec| exec.command.clone()) else {
        return true;
    };
    let period = seconds(probe.period_seconds, 10);
    let timeout = seconds(probe.timeout_seconds, 1);
    let threshold = probe.failure_threshold.unwrap_or(3).max(1);
    tokio::time::sleep(seconds(probe.initial_delay_seconds, 0)).await;
    let mut failures = 0;
    loop {
        let outcome =
            tokio::time::timeout(timeout, docker::exec(&runtime.shared.docker, id, &command)).await;
        match outcome {
            Ok(Some(0)) => return true,
            Ok(code) => {
                let message = match code {
                    Some(code) => format!("{kind} probe failed: command exited with {code}"),
                    None => format!("{kind} probe failed: the command could not be run"),
                };
                runtime.event(
                    EventType::Warning,
                    "Unhealthy",
                    &message,
                    Some((list, name)),
                );
            }
            Err(_) => {
                let message = format!(
                    "{kind} probe errored and resulted in unknown state: command timed out"
                );
                runtime.event(
                    EventType::Warning,
                    "Unhealthy",
                    &message,
                    Some((list, name)),
                );
            }
        }
        failures += 1;
        if failures >= threshold {
            return false;
        }
        tokio::time::sleep(period).await;
    }
}
