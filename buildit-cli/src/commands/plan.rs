//! `buildit plan`: the stages a run would execute, in order, in text, JSON, DOT or Mermaid.

use buildit_core::config::EventKind;
use buildit_core::plan::PlanFormat;
use buildit_core::{Plan, RunContext, SystemConfig};

use super::load::{check_against_system, load_pipeline, load_system_config, report_load_error};
use crate::cli::{ContextArgs, EventArg, PlanArgs, PlanOutput};
use crate::exit::Exit;
use crate::report::error_line;
use crate::reporter::print_text;

pub(crate) fn run(args: &PlanArgs) -> Exit {
    let workspace = std::env::current_dir().unwrap_or_default();
    let (plan, _) = match load_plan(
        &args.file,
        args.system.as_deref(),
        &args.context,
        &workspace,
    ) {
        Ok(loaded) => loaded,
        Err(exit) => return exit,
    };
    let format = match args.format {
        PlanOutput::Text => PlanFormat::Text,
        PlanOutput::Json => PlanFormat::Json,
        PlanOutput::Dot => PlanFormat::Dot,
        PlanOutput::Mermaid => PlanFormat::Mermaid,
    };
    print_text(&plan.render(format));
    Exit::Success
}

/// Reads the pipeline and the system configuration, checks one against the other, and plans the run that
/// the context flags describe. Every problem is reported before this returns its exit code.
pub(crate) fn load_plan(
    file: &std::path::Path,
    system: Option<&std::path::Path>,
    context: &ContextArgs,
    workspace: &std::path::Path,
) -> Result<(Plan, SystemConfig), Exit> {
    let pipeline = load_pipeline(file, None)?;
    let system = load_system_config(system, workspace, None)?;
    if !check_against_system(&pipeline, &system, None) {
        return Err(Exit::InvalidConfig);
    }
    let context = run_context(context, workspace, pipeline.uses_changes())?;
    match buildit_core::runner::plan_for(pipeline, &system, context) {
        Ok(plan) if plan.trigger_wants_branch() => {
            error_line(
                "`--event` is matched against `on` triggers that filter branches, and the run has no branch (a detached HEAD)",
                Some("give the branch being built: `--branch main`"),
            );
            Err(Exit::Usage)
        }
        Ok(plan) => Ok((plan, system)),
        Err(error) => Err(report_load_error(error, None)),
    }
}

/// The run context from flags, with branch and sha read from git when not given, and the changed files when
/// `changes` are wanted (or a base was named).
pub(crate) fn run_context(
    args: &ContextArgs,
    workspace: &std::path::Path,
    wants_changes: bool,
) -> Result<RunContext, Exit> {
    let mut context = RunContext::new();
    context.tag = args.tag.clone();
    let head = if args.sha.is_none() || (args.branch.is_none() && args.tag.is_none()) {
        crate::git::head(workspace)
    } else {
        crate::git::Head::default()
    };
    // A tag build has no branch unless one is given.
    context.branch = args.branch.clone().or_else(|| {
        if args.tag.is_some() {
            None
        } else {
            head.branch.clone()
        }
    });
    context.sha = args.sha.clone().or(head.sha);
    context.event = Some(match args.event {
        Some(EventArg::Push) => EventKind::Push,
        Some(EventArg::PullRequest) => EventKind::PullRequest,
        Some(EventArg::Tag) => EventKind::Tag,
        Some(EventArg::Schedule) => EventKind::Schedule,
        Some(EventArg::Manual) => EventKind::Manual,
        None if args.tag.is_some() => EventKind::Tag,
        None => EventKind::Push,
    });
    for pair in &args.env {
        let Some((name, value)) = pair.split_once('=').filter(|(name, _)| !name.is_empty()) else {
            error_line(
                &format!("`--env {pair}` is not of the form K=V"),
                Some("write `--env NAME=value`"),
            );
            return Err(Exit::Usage);
        };
        context.env.insert(name.to_owned(), value.to_owned());
    }
    context.selected = args.stages.clone();
    context.match_triggers = args.event.is_some();
    if wants_changes || args.base.is_some() {
        // The commit the run is of, when one was named; else the working tree as it is.
        match crate::git_changes::changed_files(
            workspace,
            args.base.as_deref(),
            args.sha.as_deref(),
        ) {
            Ok(changes) => context.changes = changes,
            Err(problem) => {
                error_line(&problem, None);
                return Err(Exit::Usage);
            }
        }
    }
    Ok(context)
}
