//! Embedding BuildIt: parse a pipeline, report its problems with `miette`, plan it for a branch, print the order.
//!
//! Run it with `cargo run -p buildit-examples --example embed [FILE] [BRANCH]`.

use buildit_core::config::EventKind;
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
    Ok(())
}
