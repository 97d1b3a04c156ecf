//! Watchers against run time: runs the same pipeline on a daemon alone and with WATCHERS `WatchRun` streams
//! attached (each on its own connection, reading every event to `run-finished`), alternately, ROUNDS times
//! each, and prints the median duration of the run as its record gives it (`duration_ms`) and the ratio.
//! Fails if a watcher misses an event or gets one twice.
//!
//! Usage: watch-many ADDRESS TOKEN PIPELINE_FILE [WATCHERS] [ROUNDS]     (default: 100 5)

use std::process::ExitCode;
use std::time::{Duration, Instant};

use buildit_benches::daemon_client::{authorized, connect, trigger, wait_for_end};
use buildit_grpc::proto::build_it_client::BuildItClient;
use buildit_grpc::proto::{self, watch_run_response::Item};
use tonic::transport::Channel;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (address, token, pipeline_file) = match args.as_slice() {
        [address, token, pipeline_file, ..] => (address, token, pipeline_file),
        _ => {
            eprintln!("usage: watch-many ADDRESS TOKEN PIPELINE_FILE [WATCHERS] [ROUNDS]");
            return ExitCode::from(2);
        }
    };
    let watchers = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(100);
    let rounds = args.get(4).and_then(|n| n.parse().ok()).unwrap_or(5);
    match run(address, token, pipeline_file, watchers, rounds).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    address: &str,
    token: &str,
    pipeline_file: &str,
    watchers: usize,
    rounds: usize,
) -> Result<(), String> {
    let pipeline = std::fs::read_to_string(pipeline_file)
        .map_err(|error| format!("cannot read `{pipeline_file}`: {error}"))?;
    let mut control = connect(address).await?;
    // The watchers' connections are made once: a round measures the streams, not connecting.
    let mut clients = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        clients.push(connect(address).await?);
    }
    let mut alone = Vec::new();
    let mut watched = Vec::new();
    for round in 1..=rounds {
        let run = trigger(&mut control, token, &pipeline).await?;
        let record = wait_for_end(&mut control, token, &run).await?;
        alone.push(record.duration_ms);

        let run = trigger(&mut control, token, &pipeline).await?;
        let mut streams = tokio::task::JoinSet::new();
        for client in &clients {
            streams.spawn(watch(client.clone(), token.to_owned(), run.clone()));
        }
        let record = wait_for_end(&mut control, token, &run).await?;
        let ended = Instant::now();
        let mut counts = Vec::with_capacity(watchers);
        while let Some(joined) = streams.join_next().await {
            counts.push(joined.map_err(|error| format!("watcher: {error}"))??);
        }
        let drained = ended.elapsed();
        if counts.iter().any(|count| *count != counts[0]) {
            return Err(format!(
                "the watchers got different numbers of events: {counts:?}"
            ));
        }
        watched.push(record.duration_ms);
        println!(
            "round {round}: alone {} ms, with {watchers} watchers {} ms; each watcher got {} events, the last \
             one {} ms after the run's end",
            alone[round - 1],
            record.duration_ms,
            counts.first().copied().unwrap_or(0),
            drained.as_millis()
        );
        // The next round starts on a quiet daemon.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let median = |values: &mut Vec<u64>| {
        values.sort_unstable();
        values[values.len() / 2]
    };
    let (alone, watched) = (median(&mut alone), median(&mut watched));
    println!(
        "alone median {alone} ms; with {watchers} watchers median {watched} ms over {rounds} rounds"
    );
    println!(
        "ratio watched/alone (medians): {:.2}",
        watched as f64 / alone.max(1) as f64
    );
    Ok(())
}

/// Reads one watch stream to its end; how many events it got (consecutive from 1, ending with `run-finished`).
async fn watch(
    mut client: BuildItClient<Channel>,
    token: String,
    run: String,
) -> Result<u64, String> {
    let mut stream = client
        .watch_run(authorized(
            proto::WatchRunRequest { run, after_seq: 0 },
            &token,
        ))
        .await
        .map_err(|status| format!("watch: {}", status.message()))?
        .into_inner();
    let mut seq = 0;
    let mut finished = false;
    while let Some(message) = stream
        .message()
        .await
        .map_err(|status| format!("watch: {}", status.message()))?
    {
        if let Some(Item::Events(batch)) = message.item {
            for event in batch.events {
                if event.seq != seq + 1 {
                    return Err(format!("watch: event {} after {seq}", event.seq));
                }
                seq = event.seq;
                if let Some(proto::event::Kind::Json(json)) = &event.kind {
                    finished = json.contains("\"type\":\"run-finished\"");
                }
            }
        }
    }
    if !finished {
        return Err(format!(
            "watch: ended after event {seq} without run-finished"
        ));
    }
    Ok(seq)
}
