//! What a run knows about its trigger (branch, tag, sha, event, env), used to evaluate `when` and variables.

use std::collections::BTreeMap;

use crate::config::{EventKind, ExecutorKind};

/// The facts a plan is evaluated against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunContext {
    /// The branch being built.
    pub branch: Option<String>,
    /// The tag being built.
    pub tag: Option<String>,
    /// The commit.
    pub sha: Option<String>,
    /// What started the run.
    pub event: Option<EventKind>,
    /// Extra environment (`--env K=V`), available as `{env.K}`.
    pub env: BTreeMap<String, String>,
    /// Stages requested by name (`--stage`): they, and what they need, run; manual stages only run when named.
    pub selected: Vec<String>,
    /// Executor for stages that have an image and name none (the system's `default-executor`); docker if unset.
    pub default_image_executor: Option<ExecutorKind>,
    /// The files changed since the run's base, for `when changes=` and `on ... paths=`; `None` when they are not
    /// known (then those conditions hold: a stage is never skipped for changes nobody could see).
    pub changes: Option<ChangedFiles>,
    /// Whether the pipeline's `on` triggers decide if the run happens (the event was given, not assumed): when
    /// none matches, every stage is skipped as not triggered.
    pub match_triggers: bool,
}

/// The paths (relative to the repository's root, `/`-separated) changed between a base and the run's commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangedFiles {
    /// What they changed since, for messages (`origin/main`, a short sha).
    pub base: String,
    /// The changed paths.
    pub paths: Vec<String>,
}

impl ChangedFiles {
    /// The changes since `base`.
    pub fn new(base: impl Into<String>, paths: Vec<String>) -> Self {
        Self {
            base: base.into(),
            paths,
        }
    }

    /// Whether any changed path matches any of `globs`.
    pub fn any_match(&self, globs: &[crate::config::Spanned<crate::config::Glob>]) -> bool {
        self.paths
            .iter()
            .any(|path| globs.iter().any(|glob| glob.value.is_match(path)))
    }
}

impl RunContext {
    /// An empty context: no branch, tag, sha or event.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the branch.
    pub fn with_branch(mut self, branch: impl Into<String>) -> Self {
        self.branch = Some(branch.into());
        self
    }

    /// Sets the tag.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }

    /// Sets the commit sha.
    pub fn with_sha(mut self, sha: impl Into<String>) -> Self {
        self.sha = Some(sha.into());
        self
    }

    /// Sets the event.
    pub fn with_event(mut self, event: EventKind) -> Self {
        self.event = Some(event);
        self
    }

    /// Adds an environment variable.
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// Requests a stage by name (base name, or an expanded matrix instance name).
    pub fn with_selected(mut self, stage: impl Into<String>) -> Self {
        self.selected.push(stage.into());
        self
    }

    /// Sets the executor for image stages that name none.
    pub fn with_default_image_executor(mut self, executor: ExecutorKind) -> Self {
        self.default_image_executor = Some(executor);
        self
    }

    /// Sets the files changed since the run's base.
    pub fn with_changes(mut self, changes: ChangedFiles) -> Self {
        self.changes = Some(changes);
        self
    }

    /// Lets the pipeline's `on` triggers decide whether the run happens.
    pub fn matching_triggers(mut self) -> Self {
        self.match_triggers = true;
        self
    }

    /// `refs/tags/X` for a tag, else `refs/heads/X` for a branch.
    pub fn git_ref(&self) -> Option<String> {
        match (&self.tag, &self.branch) {
            (Some(tag), _) => Some(format!("refs/tags/{tag}")),
            (None, Some(branch)) => Some(format!("refs/heads/{branch}")),
            (None, None) => None,
        }
    }
}
