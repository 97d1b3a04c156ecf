//! What the daemon benchmarks' clients share: connecting to a `buildit daemon`, the bearer token, triggering a
//! run and waiting for its end.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use buildit_grpc::proto;
use buildit_grpc::proto::build_it_client::BuildItClient;
use tonic::transport::Channel;

/// A client of the daemon at `address` (`HOST:PORT`), on a connection of its own.
pub async fn connect(address: &str) -> Result<BuildItClient<Channel>, String> {
    let channel = Channel::from_shared(format!("http://{address}"))
        .map_err(|error| format!("`{address}`: {error}"))?
        .connect()
        .await
        .map_err(|error| format!("cannot reach the daemon at `{address}`: {error}"))?;
    Ok(BuildItClient::new(channel))
}

/// `message` with the bearer token.
pub fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Queues a run of `pipeline` (KDL text); its id.
pub async fn trigger(
    client: &mut BuildItClient<Channel>,
    token: &str,
    pipeline: &str,
) -> Result<String, String> {
    let response = client
        .trigger_run(authorized(
            proto::TriggerRunRequest {
                pipeline: pipeline.to_owned(),
                ..proto::TriggerRunRequest::default()
            },
            token,
        ))
        .await
        .map_err(|status| format!("trigger: {}", status.message()))?;
    response
        .into_inner()
        .run
        .map(|run| run.id)
        .ok_or_else(|| "trigger: no run in the answer".to_owned())
}

/// Polls the run every 10 ms until it has ended; its record.
pub async fn wait_for_end(
    client: &mut BuildItClient<Channel>,
    token: &str,
    run: &str,
) -> Result<proto::Run, String> {
    loop {
        let record = client
            .get_run(authorized(
                proto::GetRunRequest {
                    run: run.to_owned(),
                },
                token,
            ))
            .await
            .map_err(|status| format!("get run: {}", status.message()))?
            .into_inner();
        if !matches!(record.state.as_str(), "queued" | "started" | "running") {
            return Ok(record);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Nanoseconds since the Unix epoch (the clock a stage's `time.time_ns()` reads).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
        })
}

/// The value at `fraction` (0.5: the median) of sorted `values`; 0 for none.
pub fn percentile(sorted: &[u64], fraction: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let last = sorted.len() - 1;
    let index = ((last as f64) * fraction).round() as usize;
    sorted[index.min(last)]
}
