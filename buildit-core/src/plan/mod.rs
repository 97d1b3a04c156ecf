//! Planning: a validated pipeline becomes a sealed DAG of stage instances, the only thing an executor accepts.

mod build;
mod context;
mod groups;
mod render;
mod triggers;

pub use build::{Plan, PlanError, PlannedStage, SkipReason};
pub use context::{ChangedFiles, RunContext};
pub use groups::PlannedGroup;
pub use render::{PlanChangesJson, PlanFormat, PlanJson, PlanStageJson};
pub use triggers::TriggerVerdict;
