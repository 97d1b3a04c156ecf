//! Job queue throughput: enqueue N jobs, then W workers claim and complete them as fast as they can. Prints the
//! claims+completions per second and fails if any job was claimed twice or not at all.
//!
//! Usage: queue-bench URL [JOBS] [WORKERS]      URL: `postgres://...` or `sqlite:PATH`

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use buildit_core::store::{NewJob, Store, StoreLocation, open_store};

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(url) = args.next() else {
        eprintln!("usage: queue-bench URL [JOBS] [WORKERS]");
        return ExitCode::from(2);
    };
    let jobs: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let workers: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(4);
    let store = match StoreLocation::from_url(&url) {
        Ok(location) => open_store(&location).await,
        Err(error) => Err(error),
    };
    let store: Arc<dyn Store> = match store {
        Ok(store) => store,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    // A queue of its own per run, so that earlier runs' leftovers never count.
    let queue = format!("bench-{}", std::process::id());
    let started = Instant::now();
    for index in 0..jobs {
        let job = NewJob {
            queue: queue.clone(),
            payload: index.to_string(),
            max_attempts: 1,
        };
        if let Err(error) = store.enqueue(&job).await {
            eprintln!("enqueue: {error}");
            return ExitCode::FAILURE;
        }
    }
    let enqueued = started.elapsed();

    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let store = store.clone();
        let queue = queue.clone();
        set.spawn(async move {
            let name = format!("worker-{worker}");
            let mut claimed = Vec::new();
            loop {
                match store.claim(&queue, &name, Duration::from_secs(300)).await {
                    Ok(Some(job)) => {
                        store.complete(&job.lease).await?;
                        claimed.push(job.id);
                    }
                    Ok(None) => return Ok::<_, buildit_core::store::StoreError>(claimed),
                    Err(error) => return Err(error),
                }
            }
        });
    }
    let mut seen = HashSet::new();
    let mut total = 0usize;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(claimed)) => {
                total += claimed.len();
                seen.extend(claimed);
            }
            Ok(Err(error)) => {
                eprintln!("worker: {error}");
                return ExitCode::FAILURE;
            }
            Err(error) => {
                eprintln!("worker task: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{} store: enqueued {jobs} jobs in {:.2} s ({:.0}/s)",
        store.backend(),
        enqueued.as_secs_f64(),
        jobs as f64 / enqueued.as_secs_f64()
    );
    println!(
        "{workers} workers: {total} claims+completions in {:.2} s = {:.0} per second",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    if total != jobs || seen.len() != jobs {
        eprintln!(
            "FAILED: {total} claims of {} distinct jobs, {jobs} enqueued",
            seen.len()
        );
        return ExitCode::FAILURE;
    }
    println!("double claims: 0; every job completed once");
    ExitCode::SUCCESS
}
