//! BuildIt's library: the pipeline language, validation with precise diagnostics, and planning.
//!
//! ```
//! let source = r#"
//! pipeline "hello"
//! stage "build" { run "make" }
//! stage "test" { needs "build"; run "make test" }
//! "#;
//! let pipeline = buildit_core::parse_pipeline(source, "buildit.kdl")?;
//! let plan = buildit_core::Plan::build(&pipeline, &buildit_core::RunContext::default())?;
//! let order: Vec<&str> = plan.order().map(|stage| stage.name()).collect();
//! assert_eq!(order, ["build", "test"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod blobs;
pub mod config;
pub mod diagnostic;
pub mod events;
pub mod exec;
pub mod owner;
mod paths;
pub mod plan;
pub mod runner;
pub mod source;
pub mod store;
mod suggest;
pub mod system;

pub use config::{Pipeline, parse_pipeline};
pub use diagnostic::{
    ConfigDiagnostic, ConfigError, ConfigSource, DiagnosticCode, DiagnosticRecord,
    DiagnosticSeverity, SourceFile,
};
pub use plan::{Plan, PlanError, PlannedStage, RunContext};
pub use system::{SystemConfig, parse_system};
