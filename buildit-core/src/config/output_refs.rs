//! Checking `{needs.STAGE.outputs.NAME}`: used in `run` or a stage's `env` only, of a stage this one needs
//! (directly), that declares the output, and that has one instance to take it from (no matrix, or instances
//! paired by `matrix="same"`).

use super::model::{Pipeline, Spanned, Stage};
use super::reader::Reader;
use super::template::{Template, Variable};
use crate::diagnostic::{ConfigDiagnostic, DiagnosticCode};
use crate::suggest::did_you_mean;

/// Reports every output reference that cannot be given a value.
pub(crate) fn check_output_refs(reader: &mut Reader<'_>, pipeline: &Pipeline) {
    for stage in &pipeline.stages {
        let usable = stage
            .run
            .iter()
            .chain(stage.env.iter().map(|var| &var.value));
        for template in usable {
            for (stage_name, name) in outputs_in(&template.value) {
                check_reference(reader, pipeline, stage, template, stage_name, name);
            }
        }
        let elsewhere = stage
            .image
            .iter()
            .chain(&stage.workdir)
            .chain(&stage.artifacts)
            .chain(stage.services.iter().map(|service| &service.image))
            .chain(
                stage
                    .services
                    .iter()
                    .flat_map(|service| service.env.iter().map(|var| &var.value)),
            );
        for template in elsewhere {
            if let Some((stage_name, name)) = outputs_in(&template.value).next() {
                reader.push(
                    ConfigDiagnostic::error(
                        DiagnosticCode::UnknownVariable,
                        format!("`{{needs.{stage_name}.outputs.{name}}}` is only available in `run` and the stage's `env`"),
                        template.span,
                        "not available here",
                    )
                    .with_help("pass it through the stage's `env` and use the variable in `run`"),
                );
            }
        }
    }
}

/// The output references of `template`: stage and name.
fn outputs_in(template: &Template) -> impl Iterator<Item = (&str, &str)> {
    template
        .variables()
        .filter_map(|(variable, _)| match variable {
            Variable::Output { stage, name } => Some((stage.as_str(), name.as_str())),
            _ => None,
        })
}

fn check_reference(
    reader: &mut Reader<'_>,
    pipeline: &Pipeline,
    stage: &Stage,
    template: &Spanned<Template>,
    producer: &str,
    name: &str,
) {
    let variable = format!("{{needs.{producer}.outputs.{name}}}");
    let mut refuse = |message: String, label: &str, help: String| {
        reader.push(
            ConfigDiagnostic::error(
                DiagnosticCode::UnknownVariable,
                message,
                template.span,
                label,
            )
            .with_help(help),
        );
    };
    if !stage.needs.iter().any(|need| need.value == producer) {
        let help = did_you_mean(producer, stage.needs.iter().map(|need| need.value.as_str()))
            .unwrap_or_else(|| {
                format!("add `needs \"{producer}\"` to stage `{}`", stage.name.value)
            });
        refuse(
            format!(
                "stage `{}` uses `{variable}`, but does not need `{producer}`",
                stage.name.value
            ),
            "not a need",
            help,
        );
        return;
    }
    // A need that is no stage is reported as such.
    let Some(needed) = pipeline.stages.iter().find(|s| s.name.value == producer) else {
        return;
    };
    if !needed.outputs.iter().any(|output| output.value == name) {
        let help = did_you_mean(
            name,
            needed.outputs.iter().map(|output| output.value.as_str()),
        )
        .unwrap_or_else(|| format!("declare it in stage `{producer}`: `outputs \"{name}\"`"));
        refuse(
            format!("stage `{producer}` declares no output `{name}`"),
            "undeclared output",
            help,
        );
        return;
    }
    let paired = stage.paired_needs.iter().any(|need| need.value == producer);
    if needed.matrix.is_some() && !paired {
        refuse(
            format!(
                "stage `{producer}` has a matrix: `{variable}` would have a value per instance"
            ),
            "which instance?",
            format!(
                "pair the instances with `needs \"{producer}\" matrix=\"same\"` (the stages' matrices alike), or \
                 write the output from a stage without a matrix"
            ),
        );
    }
}
