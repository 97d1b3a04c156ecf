//! Embedding BuildIt: parse a pipeline, report its problems with `miette`, plan it for a branch, print the order,
//! then run it on this machine through the same `Runner` as `buildit run`, printing its events as they come.
//!
//! Run it with `cargo run -p buildit-examples --example embed [FILE] [BRANCH]`.

use std::sync::Arc;

use buildit_core::config::EventKind;
use buildit_core::events::{RunEventKind, RunView};
use buildit_core::exec::AnyExecutor;
use buildit_core::runner::{Runner, new_run_id};
use buildit_core::store::{MemoryStore, Store};
use buildit_core::{Plan, RunContext, parse_pipeline};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/hello.kdl").to_owned());
    let branch = std::env::args().nth(2).unwrap_or_else(|| "main".to_owned());
    let source = std::fs::read_to_string(&path)?;

    let pipeline = match parse_pipeline(&source, &path) {
        Ok(pipeline) => pipeline,
        Err(error) => {
            // Every problem at once, each with a stable code, a line and a column.
            for record in error.records() {
                eprintln!(
                    "{}:{}:{}: {} [{}]",
                    record.file, record.line, record.column, record.message, record.code
                );
            }
            return Err(error.into());
        }
    };

    let context = RunContext::new()
        .with_branch(branch)
        .with_event(EventKind::Push);
    let plan = Plan::build(&pipeline, &context)?;
    println!(
        "pipeline `{}`: {} stages",
        pipeline.name.value,
        plan.stages().len()
    );
    for stage in plan.order() {
        match stage.skip_reason() {
            Some(reason) => println!(
                "  level {}  {}  (skipped: {reason})",
                stage.level(),
                stage.name()
            ),
            None => println!("  level {}  {}", stage.level(), stage.name()),
        }
    }

    // Running it: a workspace of its own, host stages, and the in-memory store (`open_store` gives SQLite or
    // PostgreSQL). Every event goes to the subscriber; the view folds them into what a display draws.
    let workspace = std::env::temp_dir().join(format!("buildit-embed-{}", std::process::id()));
    std::fs::create_dir_all(&workspace)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let view = runtime.block_on(async {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let mut runner =
            Runner::new(new_run_id(), plan, AnyExecutor::local(), store).workspace(&workspace);
        let mut events = runner.subscribe(256);
        let handle = runner.start().await?;
        let printer = tokio::spawn(async move {
            let mut view = RunView::new();
            while let Some(batch) = events.recv().await {
                for event in batch.iter() {
                    view.apply(event);
                    if let RunEventKind::LogLine { stage, text, .. } = &event.kind {
                        println!("[{stage}] {text}");
                    }
                }
            }
            view
        });
        let mut executed = handle.wait().await?;
        executed.recorded().await?;
        Ok::<_, Box<dyn std::error::Error>>(printer.await?)
    });
    let _ = std::fs::remove_dir_all(&workspace);
    let view = view?;
    for stage in &view.instances {
        let outcome = stage.outcome.map_or("-", |outcome| outcome.as_str());
        println!("  {:<12} {outcome}", stage.name);
    }
    if let Some(ending) = &view.ending {
        println!("run {:?} in {} ms", ending.status, ending.duration_ms);
    }
    Ok(())
}
