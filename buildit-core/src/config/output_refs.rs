//! Checking `{needs.STAGE.outputs.NAME}`: used in `run` or a stage's `env` only, of a stage this one needs
//! (directly), that declares the output, and that has one instance to take it from (no matrix, or instances
//! paired by `matrix="same"`).

use super::model::{Pipeline, Spanned, Stage};
use super::reader::Reader;
use super::template::{Template, Variable, output_env_name};
use crate::diagnostic::{ConfigDiagnostic, DiagnosticCode};
use crate::suggest::did_you_mean;

/// Reports every output reference that cannot be given a value.
pub(crate) fn check_output_refs(reader: &mut Reader<'_>, pipeline: &Pipeline) {
    check_env_names(reader, pipeline);
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
            .chain(stage.reports.iter().map(|report| &report.junit))
            .chain(stage.services.iter().map(|service| &service.image))
            .chain(
                stage
                    .services
                    .iter()
                    .flat_map(|service| service.env.iter().map(|var| &var.value)),
            );
        report_elsewhere(reader, elsewhere);
    }
    // Pipeline-wide places have no stage whose needs could give the value.
    let pipeline_wide = pipeline
        .env
        .iter()
        .map(|var| &var.value)
        .chain(&pipeline.defaults.image)
        .chain(pipeline.caches.iter().flat_map(|cache| {
            std::iter::once(&cache.key)
                .chain(&cache.paths)
                .chain(&cache.restore_keys)
        }));
    report_elsewhere(reader, pipeline_wide);
}

/// Reports an output reference in any of `templates`: places where it has no value.
fn report_elsewhere<'t>(
    reader: &mut Reader<'_>,
    templates: impl Iterator<Item = &'t Spanned<Template>>,
) {
    for template in templates {
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

/// Outputs reach the stages that need them as `BUILDIT_NEEDS_<STAGE>_OUTPUTS_<NAME>`: two outputs one stage may
/// see must not map to the same name (`c` and `C` of one stage; stages `a-b` and `a_b`), or one would hide the
/// other while the log showed both.
fn check_env_names(reader: &mut Reader<'_>, pipeline: &Pipeline) {
    for stage in &pipeline.stages {
        let mut seen: Vec<(String, &Spanned<String>)> = Vec::new();
        for output in &stage.outputs {
            let variable = output_env_name(&stage.name.value, &output.value);
            if let Some((_, first)) = seen.iter().find(|(name, _)| *name == variable) {
                reader.push(
                    ConfigDiagnostic::error(
                        DiagnosticCode::InvalidValue,
                        format!(
                            "outputs `{}` and `{}` would share the environment variable `{variable}`",
                            first.value, output.value
                        ),
                        output.span,
                        "same variable",
                    )
                    .with_label(first.span, "first output")
                    .with_help("name the outputs so that they differ in more than case"),
                );
            } else {
                seen.push((variable, output));
            }
        }
    }
    // Only stages with outputs can clash, looked up by name: a pipeline of thousands of stages, each needing
    // dozens, is checked in time linear in its needs.
    let with_outputs: std::collections::HashMap<&str, &super::model::Stage> = pipeline
        .stages
        .iter()
        .filter(|stage| !stage.outputs.is_empty())
        .map(|stage| (stage.name.value.as_str(), stage))
        .collect();
    if with_outputs.is_empty() {
        return;
    }
    for stage in &pipeline.stages {
        let mut seen: Vec<(String, &str)> = Vec::new();
        let mut producers: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for need in &stage.needs {
            let Some(producer) = with_outputs.get(need.value.as_str()).copied() else {
                continue;
            };
            if !producers.insert(&need.value) {
                continue;
            }
            for output in &producer.outputs {
                let variable = output_env_name(&producer.name.value, &output.value);
                match seen.iter().find(|(name, _)| *name == variable) {
                    Some((_, other)) if *other != producer.name.value => {
                        reader.push(
                            ConfigDiagnostic::error(
                                DiagnosticCode::InvalidValue,
                                format!(
                                    "stage `{}` needs `{other}` and `{}`, whose outputs would share the environment \
                                     variable `{variable}`",
                                    stage.name.value, producer.name.value
                                ),
                                need.span,
                                "same variable",
                            )
                            .with_help("rename one of the stages or outputs so that they differ in more than case and punctuation"),
                        );
                        break;
                    }
                    Some(_) => {}
                    None => seen.push((variable, &producer.name.value)),
                }
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
