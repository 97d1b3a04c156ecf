//! The scheduler alone: layered DAGs of 1,000 and 10,000 stages on the in-process fake executor, so that only
//! readiness tracking, task hand-off and events are measured, on a many-thread and on a one-thread runtime; and
//! the whole `Runner` (the run recorded in the in-memory store) on the one-thread runtime.

use std::sync::Arc;

use buildit_benches::{Shape, pipeline_text};
use buildit_core::events::EventBus;
use buildit_core::exec::{NoopExecutor, RunIdentity, RunOptions, execute};
use buildit_core::runner::Runner;
use buildit_core::store::{MemoryStore, Store};
use buildit_core::{Plan, RunContext, parse_pipeline};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tokio_util::sync::CancellationToken;

fn schedule(c: &mut Criterion) {
    // The daemon's runtime (many threads) and `buildit run`'s (one thread: no cross-thread wake-ups).
    let runtimes = [
        (
            "schedule/layered",
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build(),
        ),
        (
            "schedule/layered-one-thread",
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
        ),
    ];
    for (name, runtime) in runtimes {
        let Ok(runtime) = runtime else {
            continue;
        };
        schedule_on(c, name, &runtime);
        if name.ends_with("one-thread") {
            runner_on(c, &runtime);
        }
    }
}

/// A whole run as `buildit run` wires it: recorded, its events to a lossless subscriber, on the fake executor.
fn runner_on(c: &mut Criterion, runtime: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group("runner/layered-one-thread");
    group.sample_size(10);
    for count in [1_000usize, 10_000] {
        let text = pipeline_text(Shape::Layered { width: 100 }, count, "true");
        let Ok(pipeline) = parse_pipeline(&text, "bench.kdl") else {
            continue;
        };
        let Ok(plan) = Plan::build(&pipeline, &RunContext::new()) else {
            continue;
        };
        group.bench_with_input(BenchmarkId::from_parameter(count), &plan, |b, plan| {
            b.iter(|| {
                runtime.block_on(async {
                    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
                    let options = RunOptions {
                        concurrency: Some(2),
                        ..RunOptions::default()
                    };
                    let mut runner = Runner::new("bench", plan.clone(), NoopExecutor::new(), store)
                        .workspace(std::env::temp_dir())
                        .options(options);
                    let mut events = runner.subscribe(1024);
                    let drain = tokio::spawn(async move { while events.recv().await.is_some() {} });
                    let Ok(handle) = runner.start().await else {
                        return None;
                    };
                    let mut executed = handle.wait().await.ok()?;
                    executed.recorded().await.ok()?;
                    let _ = drain.await;
                    Some(executed.report.status)
                })
            })
        });
    }
    group.finish();
}

fn schedule_on(c: &mut Criterion, name: &str, runtime: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    for count in [1_000usize, 10_000] {
        let text = pipeline_text(Shape::Layered { width: 100 }, count, "true");
        let Ok(pipeline) = parse_pipeline(&text, "bench.kdl") else {
            continue;
        };
        let Ok(plan) = Plan::build(&pipeline, &RunContext::new()) else {
            continue;
        };
        let executor = Arc::new(NoopExecutor::new());
        let run = RunIdentity::new("bench", 1, std::env::temp_dir());
        let options = RunOptions {
            concurrency: Some(2),
            ..RunOptions::default()
        };
        group.bench_with_input(BenchmarkId::from_parameter(count), &plan, |b, plan| {
            b.iter(|| {
                runtime.block_on(async {
                    let bus = EventBus::new("bench");
                    let cancel = CancellationToken::new();
                    execute(plan, Arc::clone(&executor), &run, &options, &bus, &cancel)
                        .await
                        .status
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, schedule);
criterion_main!(benches);
