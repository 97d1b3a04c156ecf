//! `buildit plan`: the stages a run would execute, in order, in text, JSON, DOT or Mermaid.

use buildit_core::config::EventKind;
use buildit_core::plan::PlanFormat;
use buildit_core::{Plan, RunContext};

use super::load::{check_against_system, load_pipeline, load_system_config};
use crate::cli::{ContextArgs, EventArg, PlanArgs, PlanOutput};
use crate::exit::Exit;
use crate::report::error_line;
use crate::reporter::print_text;

pub(crate) fn run(args: &PlanArgs) -> Exit {
    let workspace = std::env::current_dir().unwrap_or_default();
    let pipeline = match load_pipeline(&args.file, None) {
        Ok(pipeline) => pipeline,
        Err(exit) => return exit,
    };
    let system = match load_system_config(args.system.as_deref(), &workspace, None) {
        Ok(system) => system,
        Err(exit) => return exit,
    };
    if !check_against_system(&pipeline, &system, None) {
        return Exit::InvalidConfig;
    }
    let mut context = match run_context(&args.context, &workspace) {
        Ok(context) => context,
        Err(exit) => return exit,
    };
    context.default_image_executor = system.default_executor;
    let plan = match Plan::build(&pipeline, &context) {
        Ok(plan) => plan,
        Err(error) => {
            let help = match &error {
                buildit_core::PlanError::UnknownStage { help, .. } => help.clone(),
                _ => None,
            };
            error_line(&error.to_string(), help.as_deref());
            return Exit::Usage;
        }
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

/// The run context from flags, with branch and sha read from git when not given.
pub(crate) fn run_context(
    args: &ContextArgs,
    workspace: &std::path::Path,
) -> Result<RunContext, Exit> {
    let mut context = RunContext::new();
    context.tag = args.tag.clone();
    context.branch = args.branch.clone().or_else(|| {
        // A tag build has no branch unless one is given.
        if args.tag.is_some() {
            None
        } else {
            crate::git::current_branch(workspace)
        }
    });
    context.sha = args.sha.clone().or_else(|| crate::git::head_sha(workspace));
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
    Ok(context)
}
