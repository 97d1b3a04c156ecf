//! Planning: a validated pipeline becomes a sealed DAG of stage instances, the only thing an executor accepts.

mod build;
mod context;
mod render;

pub use build::{Plan, PlanError, PlannedStage, SkipReason};
pub use context::RunContext;
pub use render::{PlanFormat, PlanJson, PlanStageJson};
