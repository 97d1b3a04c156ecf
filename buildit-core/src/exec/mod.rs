//! Execution: the `Executor` trait, the host executor, log lines and secret masking, and the scheduler.

mod any;
mod artifacts;
mod attempt;
mod cache;
#[cfg(feature = "docker")]
mod docker;
mod exclusion;
mod executor;
mod fake;
mod groups;
mod guard;
mod host;
#[cfg(feature = "kubernetes")]
mod kubernetes;
mod lines;
mod local;
mod mask;
mod options;
mod outputs;
#[cfg(any(feature = "docker", feature = "kubernetes"))]
mod per_run;
mod reports;
mod scheduler;
mod spec;
mod sweep;
#[cfg(any(feature = "docker", feature = "kubernetes"))]
mod tree;

pub use any::{AnyExecutor, AnyHandle};
pub use artifacts::{ArtifactError, ArtifactStore};
pub use cache::{CacheError, CacheHit, CacheStore, ResolvedCache, hash_files};
#[cfg(feature = "docker")]
pub use docker::{
    DockerExecutor, DockerHandle, DockerOptions, LEASE_LABEL, OWNER_LABEL, RUN_LABEL, WORKER_LABEL,
};
pub use executor::{
    DEFAULT_READY_TIMEOUT, ExecError, Executor, ExitStatus, LogStream, NoteSender, OutputChunk,
    ReadyCheck, ServiceSpec, StageSpec, StageStatus,
};
pub use fake::{NoopExecutor, NoopHandle};
pub use groups::ConcurrencyGroups;
pub use guard::GUARD_VARIABLE;
#[cfg(feature = "kubernetes")]
pub use kubernetes::{
    ApiUse, JOB_LABEL, KUBERNETES_API_USES, KubernetesExecutor, KubernetesHandle, KubernetesOptions,
};
pub use lines::{CUT_MARKER, LineSplitter, MAX_LINE_BYTES};
pub use local::{LocalExecutor, LocalHandle, adopt_orphans};
pub use mask::{MASK, MIN_MASKED_LEN, SecretMasker, unmaskable};
pub use options::RunOptions;
pub use outputs::{
    MAX_OUTPUT_FILE_BYTES, OUTPUTS_DIR, RunOutputs, output_file, parse_outputs, run_outputs_dir,
};
pub use reports::{
    CollectedReports, MAX_FAILED_NAMES, MAX_REPORT_FILE_BYTES, MAX_REPORT_FILES, MAX_REPORTS_BYTES,
    MAX_TEST_NAME_CHARS, collect_reports, count_report,
};
pub use scheduler::{Reuse, RunReport, StageReport, execute};
pub use spec::{DEFAULT_GRACE, RunIdentity, SpecError, retries, stage_spec};
pub use sweep::{SweepReport, SweepScope};
