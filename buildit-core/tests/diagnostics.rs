//! Every diagnostic code, produced by a hand-written case, at the right line and column, rendered for people.

use buildit_core::diagnostic::{ConfigDiagnostic, DiagnosticCode, DiagnosticRecord};
use buildit_core::{ConfigSource, parse_pipeline, parse_system};
use miette::{GraphicalReportHandler, GraphicalTheme};

/// A case: a name for its snapshot, the text, and the code/line/column of one diagnostic it must produce.
struct Case {
    name: &'static str,
    text: &'static str,
    code: DiagnosticCode,
    line: usize,
    column: usize,
}

const CASES: &[Case] = &[
    Case {
        name: "concurrency_without_number_or_group",
        text: "pipeline \"p\"\nconcurrency\nstage \"a\" { run \"x\"; }\n",
        code: DiagnosticCode::InvalidValue,
        line: 2,
        column: 1,
    },
    Case {
        name: "concurrency_group_too_long",
        text: concat!(
            "pipeline \"p\"\nstage \"a\" {\n    run \"x\"\n    concurrency group=\"",
            "deploy-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-",
            "0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-",
            "0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-0123456789-{branch}\"\n}\n"
        ),
        code: DiagnosticCode::Limit,
        line: 4,
        column: 23,
    },
    Case {
        name: "service_on_host",
        text: "pipeline \"p\"\nstage \"a\" {\n    run \"x\"\n    service \"db\" { image \"postgres:16\" }\n}\n",
        code: DiagnosticCode::InvalidValue,
        line: 4,
        column: 13,
    },
    Case {
        name: "service_on_explicit_host",
        text: "pipeline \"p\"\ndefaults { image \"alpine\" }\nstage \"a\" {\n    executor \"local\"\n    run \"x\"\n    service \"db\" { image \"postgres:16\" }\n}\n",
        code: DiagnosticCode::InvalidValue,
        line: 6,
        column: 13,
    },
    Case {
        name: "service_without_image",
        text: "pipeline \"p\"\nstage \"a\" {\n    image \"alpine\"\n    run \"x\"\n    service \"db\" { ready \"true\" }\n}\n",
        code: DiagnosticCode::InvalidValue,
        line: 5,
        column: 13,
    },
    Case {
        name: "service_duplicate",
        text: "pipeline \"p\"\nstage \"a\" {\n    image \"alpine\"\n    run \"x\"\n    service \"db\" { image \"postgres\" }\n    service \"db\" { image \"redis\" }\n}\n",
        code: DiagnosticCode::DuplicateNode,
        line: 6,
        column: 5,
    },
    Case {
        name: "service_unknown_child",
        text: "pipeline \"p\"\nstage \"a\" {\n    image \"alpine\"\n    run \"x\"\n    service \"db\" { image \"postgres\"; readdy \"true\" }\n}\n",
        code: DiagnosticCode::UnknownNode,
        line: 5,
        column: 38,
    },
    Case {
        name: "syntax",
        text: "pipeline \"p\"\nstage \"a\" {\n    run \"x\n}\n",
        code: DiagnosticCode::Syntax,
        line: 3,
        column: 9,
    },
    Case {
        name: "syntax_nested_slashdash",
        text: "pipeline \"p\"\nstage \"a\" /-{ x /-{ y /-{ z } } } { run \"x\" }\n",
        code: DiagnosticCode::Syntax,
        line: 2,
        column: 25,
    },
    Case {
        name: "missing_pipeline",
        text: "stage \"a\" { run \"x\" }\n",
        code: DiagnosticCode::MissingPipeline,
        line: 1,
        column: 1,
    },
    Case {
        name: "unknown_node",
        text: "pipeline \"p\"\nstage \"a\" {\n    imgae \"rust\"\n    run \"x\"\n}\n",
        code: DiagnosticCode::UnknownNode,
        line: 3,
        column: 5,
    },
    Case {
        name: "unknown_node_top_level",
        text: "pipeline \"p\"\nstages \"a\" { run \"x\" }\n",
        code: DiagnosticCode::UnknownNode,
        line: 2,
        column: 1,
    },
    Case {
        name: "unknown_property",
        text: "pipeline \"p\" descripton=\"x\"\nstage \"a\" { run \"x\" }\n",
        code: DiagnosticCode::UnknownProperty,
        line: 1,
        column: 14,
    },
    Case {
        name: "invalid_value_duration",
        text: "pipeline \"p\"\nstage \"a\" {\n    run \"x\"\n    timeout \"10x\"\n}\n",
        code: DiagnosticCode::InvalidValue,
        line: 4,
        column: 13,
    },
    Case {
        name: "invalid_value_cron",
        text: "pipeline \"p\"\non \"schedule\" cron=\"0 25 * * *\"\nstage \"a\" { run \"x\" }\n",
        code: DiagnosticCode::InvalidValue,
        line: 2,
        column: 23,
    },
    Case {
        name: "invalid_value_name",
        text: "pipeline \"p\"\nstage \"my stage\" { run \"x\" }\n",
        code: DiagnosticCode::InvalidValue,
        line: 2,
        column: 7,
    },
    Case {
        name: "invalid_value_retry",
        text: "pipeline \"p\"\nstage \"a\" {\n    run \"x\"\n    retry 11\n}\n",
        code: DiagnosticCode::InvalidValue,
        line: 4,
        column: 11,
    },
    Case {
        name: "invalid_value_glob",
        text: "pipeline \"p\"\nstage \"a\" {\n    run \"x\"\n    when branch=\"release/[0-9\"\n}\n",
        code: DiagnosticCode::InvalidValue,
        line: 4,
        column: 17,
    },
    Case {
        name: "duplicate_node",
        text: "pipeline \"p\"\nstage \"a\" {\n    run \"x\"\n    image \"a\"\n    image \"b\"\n}\n",
        code: DiagnosticCode::DuplicateNode,
        line: 5,
        column: 5,
    },
    Case {
        name: "duplicate_stage",
        text: "pipeline \"p\"\nstage \"a\" { run \"x\" }\nstage \"a\" { run \"y\" }\n",
        code: DiagnosticCode::DuplicateStage,
        line: 3,
        column: 7,
    },
    Case {
        name: "unknown_needs",
        text: "pipeline \"p\"\nstage \"build\" { run \"x\" }\nstage \"test\" {\n    needs \"biuld\"\n    run \"y\"\n}\n",
        code: DiagnosticCode::UnknownNeeds,
        line: 4,
        column: 11,
    },
    Case {
        name: "self_needs",
        text: "pipeline \"p\"\nstage \"a\" {\n    needs \"a\"\n    run \"x\"\n}\n",
        code: DiagnosticCode::SelfNeeds,
        line: 3,
        column: 11,
    },
    Case {
        name: "cycle",
        text: "pipeline \"p\"\nstage \"a\" { needs \"c\"; run \"x\" }\nstage \"b\" { needs \"a\"; run \"x\" }\nstage \"c\" { needs \"b\"; run \"x\" }\n",
        code: DiagnosticCode::Cycle,
        line: 2,
        column: 7,
    },
    Case {
        name: "empty_stage",
        text: "pipeline \"p\"\nstage \"a\" {\n    image \"alpine\"\n}\n",
        code: DiagnosticCode::EmptyStage,
        line: 2,
        column: 7,
    },
    Case {
        name: "unknown_variable",
        text: "pipeline \"p\"\nstage \"a\" {\n    run \"git checkout {git.brnch}\"\n}\n",
        code: DiagnosticCode::UnknownVariable,
        line: 3,
        column: 23,
    },
    Case {
        name: "unknown_variable_matrix",
        text: "pipeline \"p\"\nstage \"a\" {\n    matrix { rust \"1.80\" }\n    image \"rust:{matrix.rsut}\"\n    run \"x\"\n}\n",
        code: DiagnosticCode::UnknownVariable,
        line: 4,
        column: 17,
    },
    Case {
        name: "unknown_cache",
        text: "pipeline \"p\"\ncache \"cargo\" { path \"target\"; key \"k\" }\nstage \"a\" {\n    run \"x\"\n    cache \"carg\"\n}\n",
        code: DiagnosticCode::UnknownCache,
        line: 5,
        column: 11,
    },
    Case {
        name: "secret_interpolation",
        text: "pipeline \"p\"\nstage \"a\" {\n    run \"curl -H {secrets.TOKEN}\"\n}\n",
        code: DiagnosticCode::SecretInterpolation,
        line: 3,
        column: 18,
    },
    Case {
        name: "unsafe_variable",
        text: "pipeline \"p\"\nstage \"a\" {\n    run \"echo $(( {branch} + 1 ))\"\n}\n",
        code: DiagnosticCode::UnsafeVariable,
        line: 3,
        column: 19,
    },
    Case {
        name: "unsafe_variable_in_parameter_expansion",
        text: "pipeline \"p\"\nstage \"a\" {\n    run \"echo ${TARGET:-{git.tag}}\"\n}\n",
        code: DiagnosticCode::UnsafeVariable,
        line: 3,
        column: 25,
    },
    Case {
        name: "workdir_escape",
        text: "pipeline \"p\"\nstage \"a\" {\n    run \"x\"\n    workdir \"src/../../etc\"\n}\n",
        code: DiagnosticCode::WorkdirEscape,
        line: 4,
        column: 13,
    },
    Case {
        name: "workdir_escape_matrix",
        text: "pipeline \"p\"\nstage \"a\" {\n    matrix { d \"ok\" \"a/../..\" }\n    workdir \"{matrix.d}\"\n    run \"x\"\n}\n",
        code: DiagnosticCode::WorkdirEscape,
        line: 4,
        column: 13,
    },
    Case {
        name: "invalid_value_hash",
        text: "pipeline \"p\"\ncache \"c\" { path \"t\"; key \"k-{hash:[}\" }\nstage \"a\" { run \"x\"; cache \"c\" }\n",
        code: DiagnosticCode::InvalidValue,
        line: 2,
        column: 30,
    },
    Case {
        name: "limit_matrix",
        text: "pipeline \"p\"\nstage \"a\" {\n    run \"x\"\n    matrix {\n        a \"1\" \"2\" \"3\" \"4\" \"5\" \"6\" \"7\" \"8\" \"9\" \"10\" \"11\" \"12\" \"13\" \"14\" \"15\" \"16\" \"17\"\n        b \"1\" \"2\" \"3\" \"4\" \"5\" \"6\" \"7\" \"8\" \"9\" \"10\" \"11\" \"12\" \"13\" \"14\" \"15\" \"16\"\n    }\n}\n",
        code: DiagnosticCode::Limit,
        line: 4,
        column: 5,
    },
    Case {
        name: "repeated_property",
        text: "pipeline \"p\"\nstage \"a\" { run \"x\" }\nstage \"b\" { run \"x\" }\nstage \"c\" needs=\"a\" needs=\"b\" { run \"y\" }\n",
        code: DiagnosticCode::RepeatedProperty,
        line: 4,
        column: 21,
    },
    Case {
        name: "empty_path",
        text: "pipeline \"p\"\nstage \"release\" {\n    run \"make\"\n    artifacts \"{git.tag}\"\n}\n",
        code: DiagnosticCode::EmptyPath,
        line: 4,
        column: 15,
    },
    Case {
        name: "whole_workspace_artifact",
        text: "pipeline \"p\"\nstage \"a\" {\n    run \"make\"\n    artifacts \"./\"\n}\n",
        code: DiagnosticCode::InvalidValue,
        line: 4,
        column: 15,
    },
    Case {
        name: "overlapping_paths",
        text: "pipeline \"p\"\ncache \"c\" { path \"target\"; key \"k\" }\nstage \"a\" { cache \"c\"; run \"x\" }\nstage \"b\" { run \"x\"; artifacts \"target/app\" }\n",
        code: DiagnosticCode::OverlappingPaths,
        line: 3,
        column: 19,
    },
    Case {
        name: "overlapping_matrix_instances",
        text: "pipeline \"p\"\ncache \"c\" { path \"target\"; key \"k-{matrix.os}\" }\nstage \"t\" {\n    matrix { os \"a\" \"b\" }\n    cache \"c\"\n    run \"x\"\n}\n",
        code: DiagnosticCode::OverlappingPaths,
        line: 5,
        column: 11,
    },
    Case {
        name: "unknown_template",
        text: "pipeline \"p\"\ntemplate \"rust\" { run \"x\"; }\nstage \"a\" template=\"rusty\"\n",
        code: DiagnosticCode::UnknownTemplate,
        line: 3,
        column: 20,
    },
    Case {
        name: "include_without_files",
        text: "pipeline \"p\"\ninclude \"ci/common.kdl\"\nstage \"a\" { run \"x\"; }\n",
        code: DiagnosticCode::Include,
        line: 2,
        column: 9,
    },
    Case {
        name: "unused_template",
        text: "pipeline \"p\"\ntemplate \"rust\" { run \"x\"; }\nstage \"a\" { run \"x\"; }\n",
        code: DiagnosticCode::UnusedTemplate,
        line: 2,
        column: 1,
    },
];

fn diagnostics_of(text: &str) -> (ConfigSource, Vec<ConfigDiagnostic>) {
    match parse_pipeline(text, "buildit.kdl") {
        Ok(pipeline) => (pipeline.source.clone(), pipeline.warnings.clone()),
        Err(error) => (error.input.clone(), error.diagnostics),
    }
}

fn render(diagnostic: &ConfigDiagnostic, source: &ConfigSource) -> String {
    let handler =
        GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()).with_width(100);
    let mut out = String::new();
    if let Err(error) = handler.render_report(&mut out, &diagnostic.with_source(source)) {
        panic!("rendering failed: {error}");
    }
    out
}

#[test]
fn every_case_reports_its_code_at_the_right_place() {
    for case in CASES {
        let (source, diagnostics) = diagnostics_of(case.text);
        let found = diagnostics.iter().find(|d| d.code == case.code);
        let Some(diagnostic) = found else {
            panic!(
                "{}: expected {}, got {:#?}",
                case.name, case.code, diagnostics
            );
        };
        let record = DiagnosticRecord::new(diagnostic, &source);
        assert!(
            record.help.is_some(),
            "{}: {} has no help line",
            case.name,
            diagnostic.message
        );
        assert_eq!(
            (record.line, record.column),
            (case.line, case.column),
            "{}: {} at the wrong place: {}",
            case.name,
            case.code,
            diagnostic.message
        );
    }
}

#[test]
fn an_oversized_matrix_used_in_paths_is_refused_without_expanding_it() {
    // 4^14 instances, each of which would render `out/{matrix.a0}`: tens of GB if expanded.
    let axes: String = (0..14)
        .map(|i| format!("a{i} \"1\" \"2\" \"3\" \"4\"; "))
        .collect();
    let text = format!(
        "pipeline \"p\"\nstage \"s\" {{ matrix {{ {axes}}}; run \"x\"; artifacts \"out/{{matrix.a0}}\" }}\n"
    );
    let started = std::time::Instant::now();
    let (_, diagnostics) = diagnostics_of(&text);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        diagnostics.iter().any(|d| d.code == DiagnosticCode::Limit),
        "{diagnostics:?}"
    );
}

#[test]
fn every_code_has_a_case() {
    for code in DiagnosticCode::ALL {
        assert!(
            CASES.iter().any(|case| case.code == code),
            "no case produces {code}"
        );
    }
}

#[test]
fn rendered_diagnostics() {
    for case in CASES {
        let (source, diagnostics) = diagnostics_of(case.text);
        let rendered: String = diagnostics
            .iter()
            .map(|d| render(d, &source))
            .collect::<Vec<_>>()
            .join("\n");
        insta::assert_snapshot!(case.name, rendered);
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = "pipeline \"p\"\nstage \"a\" {\n    imgae \"x\"\n    run \"{git.shaa}\"\n    retry 99\n}\nstage \"b\" { needs \"zzz\"; run \"x\" }\nstage \"c\" {}\n";
    let (_, diagnostics) = diagnostics_of(text);
    let codes: Vec<DiagnosticCode> = diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(
        codes,
        [
            DiagnosticCode::UnknownNode,
            DiagnosticCode::UnknownVariable,
            DiagnosticCode::InvalidValue,
            DiagnosticCode::UnknownNeeds,
            DiagnosticCode::EmptyStage
        ]
    );
}

#[test]
fn cycle_names_the_loop_and_labels_each_stage() {
    let (_, diagnostics) = diagnostics_of(
        CASES
            .iter()
            .find(|c| c.name == "cycle")
            .map_or("", |c| c.text),
    );
    let cycle: Vec<&ConfigDiagnostic> = diagnostics
        .iter()
        .filter(|d| d.code == DiagnosticCode::Cycle)
        .collect();
    assert_eq!(cycle.len(), 1);
    assert_eq!(
        cycle[0].message,
        "stages need each other in a loop: a -> c -> b -> a"
    );
    assert_eq!(cycle[0].labels.len(), 3);
}

#[test]
fn warnings_keep_the_pipeline_valid() {
    let case = CASES.iter().find(|c| c.name == "repeated_property");
    let parsed = parse_pipeline(case.map_or("", |c| c.text), "buildit.kdl");
    let pipeline = match parsed {
        Ok(pipeline) => pipeline,
        Err(error) => panic!("a warning must not fail parsing: {error}"),
    };
    let needs: Vec<&str> = pipeline.stages[2]
        .needs
        .iter()
        .map(|n| n.value.as_str())
        .collect();
    assert_eq!(needs, ["a", "b"]);
    assert_eq!(pipeline.warnings.len(), 1);
}

#[test]
fn pathological_kdl_is_refused_quickly() {
    // kdl-rs issue 177: this line repeated 22 times takes the parser over a minute.
    let text = "a /-{\n".repeat(22);
    let started = std::time::Instant::now();
    let (_, diagnostics) = diagnostics_of(&text);
    assert!(started.elapsed() < std::time::Duration::from_millis(500));
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(diagnostics[0].code, DiagnosticCode::Syntax);
    assert!(diagnostics[0].message.contains("commented out with `/-`"));
}

#[test]
fn oversized_files_are_refused_before_parsing() {
    let text = format!(
        "pipeline \"p\"\n{}",
        "// padding padding padding padding\n".repeat(40_000)
    );
    let (_, diagnostics) = diagnostics_of(&text);
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(diagnostics[0].code, DiagnosticCode::Limit);
}

#[test]
fn too_many_stages_after_expansion() {
    let mut text = String::from("pipeline \"p\"\n");
    let values: Vec<String> = (0..200).map(|i| format!("\"{i}\"")).collect();
    for stage in 0..51 {
        text.push_str(&format!(
            "stage \"s{stage}\" {{ run \"x\"; matrix {{ n {} }} }}\n",
            values.join(" ")
        ));
    }
    let (_, diagnostics) = diagnostics_of(&text);
    let limit = diagnostics.iter().find(|d| d.code == DiagnosticCode::Limit);
    assert!(
        limit.is_some_and(|d| d.message.contains("10200 stages")),
        "{diagnostics:#?}"
    );
}

#[test]
fn system_configuration_errors_have_spans() {
    let text =
        "store \"sqlit\"\nexecutor \"docker\" { pul \"never\" }\ndefault-executor \"kubernetes\"\n";
    let error = match parse_system(text, "buildit-system.kdl") {
        Ok(_) => panic!("invalid system configuration accepted"),
        Err(error) => error,
    };
    let found: Vec<(&str, usize, usize, Option<String>)> = error
        .records()
        .into_iter()
        .map(|r| (r.code, r.line, r.column, r.help))
        .collect();
    assert_eq!(
        found,
        [
            (
                "buildit::config::invalid_value",
                1,
                7,
                Some("did you mean `sqlite`?".to_owned())
            ),
            (
                "buildit::config::unknown_node",
                2,
                21,
                Some("did you mean `pull`?".to_owned())
            ),
            (
                "buildit::config::invalid_value",
                3,
                18,
                Some("add `executor \"kubernetes\"`".to_owned())
            ),
        ]
    );
}

#[test]
fn kubernetes_workspace_settings_are_checked_with_spans() {
    let text = "executor \"kubernetes\" {\n    workspace-size \"ten gigs\"\n    workspace-access \"ReadWriteMony\"\n    git-imag \"alpine/git\"\n}\n";
    let error = match parse_system(text, "buildit-system.kdl") {
        Ok(_) => panic!("invalid workspace settings accepted"),
        Err(error) => error,
    };
    let found: Vec<(&str, usize, usize, String, Option<String>)> = error
        .records()
        .into_iter()
        .map(|r| (r.code, r.line, r.column, r.message, r.help))
        .collect();
    assert_eq!(
        found,
        [
            (
                "buildit::config::invalid_value",
                2,
                20,
                "invalid `workspace-size` `ten gigs`".to_owned(),
                Some("write a Kubernetes quantity: `10Gi`, `500Mi`".to_owned())
            ),
            (
                "buildit::config::invalid_value",
                3,
                22,
                "unknown workspace access mode `ReadWriteMony`".to_owned(),
                Some("did you mean `ReadWriteMany`?".to_owned())
            ),
            (
                "buildit::config::unknown_node",
                4,
                5,
                "unknown node `git-imag` in executor `kubernetes`".to_owned(),
                Some("did you mean `git-image`?".to_owned())
            ),
        ]
    );
    let good = "executor \"kubernetes\" {\n    workspace-size \"2.5Gi\"\n    workspace-access \"ReadWriteMany\"\n    helper-image \"busybox:1.36\"\n    git-image \"alpine/git:2.47\"\n}\n";
    let system =
        parse_system(good, "buildit-system.kdl").unwrap_or_else(|error| panic!("{error:?}"));
    match system.executor(buildit_core::config::ExecutorKind::Kubernetes) {
        Some(buildit_core::system::ExecutorConfig::Kubernetes {
            workspace_size,
            workspace_access,
            helper_image,
            git_image,
            ..
        }) => {
            assert_eq!(workspace_size.as_deref(), Some("2.5Gi"));
            assert_eq!(
                *workspace_access,
                buildit_core::system::WorkspaceAccess::ReadWriteMany
            );
            assert_eq!(helper_image.as_deref(), Some("busybox:1.36"));
            assert_eq!(git_image.as_deref(), Some("alpine/git:2.47"));
        }
        other => panic!("{other:?}"),
    }
}

/// The messages of `limit` diagnostics, for a pipeline that must be refused.
fn limit_messages(text: &str) -> Vec<String> {
    match parse_pipeline(text, "limits.kdl") {
        Ok(_) => panic!("accepted: {text:.200}"),
        Err(error) => error
            .diagnostics
            .iter()
            .filter(|d| d.code == DiagnosticCode::Limit)
            .map(|d| d.message.clone())
            .collect(),
    }
}

#[test]
fn matrix_sizes_are_reported_exactly_not_saturated() {
    let axes = |count: usize| -> String {
        (0..count)
            .map(|i| format!("        a{i} \"1\" \"2\" \"3\" \"4\"\n"))
            .collect()
    };
    let pipeline = |count: usize| {
        format!(
            "pipeline \"p\"\nstage \"b\" {{\n    run \"true\"\n    matrix {{\n{}    }}\n}}\n",
            axes(count)
        )
    };
    // 4^32 = 2^64: one more than `usize` holds.
    let messages = limit_messages(&pipeline(32));
    assert!(
        messages.contains(&"the matrix of stage `b` expands to 18446744073709551616 instances; at most 256 are allowed".to_owned()),
        "{messages:?}"
    );
    // 4^70 does not fit in `u128` either.
    let messages = limit_messages(&pipeline(70));
    assert!(
        messages
            .iter()
            .any(|m| m.contains(&format!("expands to more than {} instances", u128::MAX))),
        "{messages:?}"
    );
}

#[test]
fn names_and_values_have_length_limits() {
    let long = |n: usize| "x".repeat(n);
    let text = format!(
        "pipeline \"{}\"\nstage \"{}\" {{\n    run \"{}\"\n    env {{\n        {} \"v\"\n    }}\n    matrix {{\n        {} \"{}\"\n    }}\n}}\n",
        long(129),
        long(70_000),
        long(64 * 1024 + 1),
        long(129),
        long(129),
        long(1025),
    );
    let messages = limit_messages(&text);
    for expected in [
        "pipeline name is 129 bytes long; at most 128 bytes are allowed",
        "stage name is 70000 bytes long; at most 128 bytes are allowed",
        "environment variable name is 129 bytes long; at most 128 bytes are allowed",
        "matrix axis name is 129 bytes long; at most 128 bytes are allowed",
        "matrix value is 1025 bytes long; at most 1024 bytes are allowed",
    ] {
        assert!(
            messages.iter().any(|m| m == expected),
            "{expected}: {messages:?}"
        );
    }
    assert!(
        messages.iter().any(|m| m.starts_with("`run` command is ")
            && m.ends_with("at most 65536 bytes are allowed")),
        "{messages:?}"
    );
    // At the limits, all is well.
    let text = format!(
        "pipeline \"{}\"\nstage \"{}\" {{\n    run \"{}\"\n    matrix {{\n        {} \"{}\"\n    }}\n}}\n",
        long(128),
        long(128),
        long(60_000),
        long(128),
        long(1024),
    );
    if let Err(error) = parse_pipeline(&text, "limits.kdl") {
        panic!("{error}: {:?}", error.diagnostics);
    }
}

#[test]
fn source_limits_are_read_and_bad_sizes_point_at_the_value() {
    let config = match parse_system(
        "sources max-upload=\"5MiB\" max-entries=10\n",
        "buildit-system.kdl",
    ) {
        Ok(config) => config,
        Err(error) => panic!("{error}: {:#?}", error.diagnostics),
    };
    assert_eq!(config.sources.max_upload, 5 * 1024 * 1024);
    assert_eq!(config.sources.max_entries, 10);
    let defaults = match parse_system("", "buildit-system.kdl") {
        Ok(config) => config.sources,
        Err(error) => panic!("{error}"),
    };
    assert_eq!(defaults.max_upload, 100 * 1024 * 1024);

    let text = "sources max-upload=\"100MB\" max-entries=\"many\"\nsources\n";
    let error = match parse_system(text, "buildit-system.kdl") {
        Ok(_) => panic!("invalid limits accepted"),
        Err(error) => error,
    };
    let found: Vec<(&str, usize, usize, String)> = error
        .records()
        .into_iter()
        .map(|r| (r.code, r.line, r.column, r.message))
        .collect();
    assert_eq!(
        found,
        [
            (
                "buildit::config::invalid_value",
                1,
                20,
                "invalid upload size `100MB`".to_owned()
            ),
            (
                "buildit::config::invalid_value",
                1,
                40,
                "invalid entry count `many`".to_owned()
            ),
            (
                "buildit::config::duplicate_node",
                2,
                1,
                "`sources` is given more than once in the system configuration".to_owned()
            ),
        ]
    );
}
