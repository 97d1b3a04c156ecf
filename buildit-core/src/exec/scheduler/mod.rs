//! The scheduler: in-degree readiness, a concurrency limit, retries, timeouts, skips, fail-fast and cancellation.
//! It never prints; everything it does is an event, and every stage lifecycle event comes from `lifecycle`.

mod attempt;
mod lifecycle;
mod outcome;
mod outputs;
mod report;
mod reports;
mod reuse;
mod run_loop;
mod stage;
mod transfer;

pub use report::{RunReport, StageReport};
pub use reuse::Reuse;
pub use run_loop::execute;
