//! `buildit validate`: report every problem in the pipeline and system configuration at once.

use buildit_core::DiagnosticRecord;

use super::load::{check_against_system, load_pipeline, load_system_config};
use crate::cli::{DiagnosticFormat, ValidateArgs};
use crate::exit::Exit;
use crate::reporter::print_line;

pub(crate) fn run(args: &ValidateArgs) -> Exit {
    let workspace = std::env::current_dir().unwrap_or_default();
    let json = args.format == DiagnosticFormat::Json;
    let mut records: Vec<DiagnosticRecord> = Vec::new();
    let pipeline = load_pipeline(&args.file, json.then_some(&mut records));
    let system = load_system_config(
        args.system.as_deref(),
        &workspace,
        json.then_some(&mut records),
    );
    let exit = match (&pipeline, &system) {
        (Ok(pipeline), Ok(system))
            if check_against_system(pipeline, system, json.then_some(&mut records)) =>
        {
            Exit::Success
        }
        _ => Exit::InvalidConfig,
    };
    if json {
        // A missing file has no diagnostics to list; its message is already on stderr.
        match serde_json::to_string_pretty(&records) {
            Ok(text) => print_line(&text),
            Err(error) => eprintln!("error: cannot write JSON: {error}"),
        }
        return exit;
    }
    if let (Ok(pipeline), Exit::Success) = (&pipeline, exit) {
        let instances: usize = pipeline
            .stages
            .iter()
            .map(|stage| stage.matrix.as_ref().map_or(1, |m| m.instance_count()))
            .sum();
        let warnings = pipeline.warnings.len();
        let mut line = format!(
            "{} is valid: pipeline `{}`, {} stage{}",
            args.file.display(),
            pipeline.name.value,
            pipeline.stages.len(),
            if pipeline.stages.len() == 1 { "" } else { "s" },
        );
        if instances != pipeline.stages.len() {
            line.push_str(&format!(" ({instances} after matrix expansion)"));
        }
        if warnings > 0 {
            line.push_str(&format!(
                ", {warnings} warning{}",
                if warnings == 1 { "" } else { "s" }
            ));
        }
        print_line(&line);
    }
    if let Some(file) = system.as_ref().ok().and_then(|system| system.file.as_ref()) {
        print_line(&format!("{} is valid", file.display()));
    }
    exit
}
