//! Live latency through the daemon: triggers a run whose stage prints `tick N NANOS` lines (NANOS: when it
//! printed the line, on this machine's clock), follows it with `WatchRun` and with `StreamLogs` (`follow`) at
//! once, and prints, for each stream, how long after its printing each line arrived: p50, p99 and max. Fails if
//! a stream misses a line or gets one twice or out of order.
//!
//! Usage: follow-latency ADDRESS TOKEN PIPELINE_FILE

use std::process::ExitCode;

use buildit_benches::daemon_client::{authorized, connect, now_ns, percentile, trigger};
use buildit_grpc::proto::{self, watch_run_response::Item};

/// What one stream received: each tick's number and latency (ns), and how many messages carried them.
#[derive(Debug, Default)]
struct Received {
    ticks: Vec<(u64, u64)>,
    messages: usize,
}

impl Received {
    /// Takes a line if it is a tick, timed as received at `at_ns`.
    fn line(&mut self, text: &[u8], at_ns: u64) {
        let Ok(text) = std::str::from_utf8(text) else {
            return;
        };
        let mut words = text.split_whitespace();
        if words.next() != Some("tick") {
            return;
        }
        let (Some(Ok(number)), Some(Ok(printed))) = (
            words.next().map(str::parse::<u64>),
            words.next().map(str::parse::<u64>),
        ) else {
            return;
        };
        self.ticks.push((number, at_ns.saturating_sub(printed)));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, token, pipeline_file] = args.as_slice() else {
        eprintln!("usage: follow-latency ADDRESS TOKEN PIPELINE_FILE");
        return ExitCode::from(2);
    };
    match run(address, token, pipeline_file).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(address: &str, token: &str, pipeline_file: &str) -> Result<bool, String> {
    let pipeline = std::fs::read_to_string(pipeline_file)
        .map_err(|error| format!("cannot read `{pipeline_file}`: {error}"))?;
    let mut control = connect(address).await?;
    let mut watcher = connect(address).await?;
    let mut reader = connect(address).await?;
    let run = trigger(&mut control, token, &pipeline).await?;
    // Both open while the run is queued: they get every line live.
    let watch = {
        let (token, run) = (token.to_owned(), run.clone());
        tokio::spawn(async move {
            let mut stream = watcher
                .watch_run(authorized(
                    proto::WatchRunRequest { run, after_seq: 0 },
                    &token,
                ))
                .await
                .map_err(|status| format!("watch: {}", status.message()))?
                .into_inner();
            let mut received = Received::default();
            while let Some(message) = stream
                .message()
                .await
                .map_err(|status| format!("watch: {}", status.message()))?
            {
                let at_ns = now_ns();
                if let Some(Item::Events(batch)) = message.item {
                    received.messages += 1;
                    for event in batch.events {
                        if let Some(proto::event::Kind::LogLine(line)) = event.kind {
                            received.line(&line.text, at_ns);
                        }
                    }
                }
            }
            Ok::<_, String>(received)
        })
    };
    let logs = {
        let (token, run) = (token.to_owned(), run.clone());
        tokio::spawn(async move {
            let mut stream = reader
                .stream_logs(authorized(
                    proto::StreamLogsRequest {
                        run,
                        follow: true,
                        ..proto::StreamLogsRequest::default()
                    },
                    &token,
                ))
                .await
                .map_err(|status| format!("logs: {}", status.message()))?
                .into_inner();
            let mut received = Received::default();
            while let Some(message) = stream
                .message()
                .await
                .map_err(|status| format!("logs: {}", status.message()))?
            {
                let at_ns = now_ns();
                received.messages += 1;
                for line in message.lines {
                    received.line(&line.text, at_ns);
                }
            }
            Ok::<_, String>(received)
        })
    };
    let mut complete = true;
    for (name, task) in [("WatchRun", watch), ("StreamLogs", logs)] {
        let received = task.await.map_err(|error| format!("{name}: {error}"))??;
        complete &= report(name, &received);
    }
    Ok(complete)
}

/// Prints one stream's latencies; whether it got every tick once, in order.
fn report(name: &str, received: &Received) -> bool {
    let in_order = received
        .ticks
        .iter()
        .enumerate()
        .all(|(index, (number, _))| *number == index as u64 + 1);
    let mut latencies: Vec<u64> = received.ticks.iter().map(|(_, latency)| *latency).collect();
    latencies.sort_unstable();
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "{name:10} {} lines in {} messages: latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        received.messages,
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or(0)),
    );
    if !in_order || latencies.is_empty() {
        eprintln!("FAILED: {name} missed lines, or got them twice or out of order");
    }
    in_order && !latencies.is_empty()
}
