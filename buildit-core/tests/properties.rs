//! Properties: any DAG plans in an order that respects every edge; no input panics the parser or makes it slow.

use std::time::{Duration, Instant};

use buildit_core::{Plan, RunContext, parse_pipeline};
use proptest::prelude::*;

/// A random DAG as "stage i needs these earlier stages", then written in a shuffled order.
fn dag() -> impl Strategy<Value = (Vec<Vec<usize>>, Vec<usize>)> {
    (1usize..60).prop_flat_map(|count| {
        let needs = (0..count)
            .map(|i| {
                proptest::collection::vec(0..i.max(1), 0..4.min(i + 1))
                    .prop_map(move |v| if i == 0 { vec![] } else { v })
            })
            .collect::<Vec<_>>();
        (
            needs,
            Just((0..count).collect::<Vec<usize>>()).prop_shuffle(),
        )
    })
}

fn pipeline_text(needs: &[Vec<usize>], written_order: &[usize]) -> String {
    let mut text = String::from("pipeline \"random\"\n");
    for &stage in written_order {
        text.push_str(&format!("stage \"s{stage}\" {{\n"));
        if !needs[stage].is_empty() {
            let names: Vec<String> = needs[stage].iter().map(|n| format!("\"s{n}\"")).collect();
            text.push_str(&format!("    needs {}\n", names.join(" ")));
        }
        text.push_str("    run \"true\"\n}\n");
    }
    text
}

/// Pieces of KDL and of the BuildIt language, glued at random: mostly invalid, sometimes nearly valid.
const VOCABULARY: &[&str] = &[
    "pipeline",
    "stage",
    "\"a\"",
    "\"b\"",
    "{",
    "}",
    "{",
    "}",
    "/-",
    "/-",
    ";",
    "\n",
    " ",
    "needs",
    "run",
    "\"x\"",
    "=",
    "#true",
    "#false",
    "#null",
    "matrix",
    "when",
    "branch=",
    "\"main\"",
    "image",
    "env",
    "cache",
    "artifacts",
    "\"{git.sha}\"",
    "\"{secrets.X}\"",
    "\"\"\"\n",
    "#\"",
    "\"#",
    "/*",
    "*/",
    "//",
    "r#\"",
    "(ty)",
    "1",
    "1.5",
    "timeout",
    "\"10m\"",
    "retry",
    "on",
    "\"push\"",
    "\\",
    "\"",
    "'",
    "é",
    "\u{feff}",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn plan_order_respects_every_edge((needs, written_order) in dag()) {
        let text = pipeline_text(&needs, &written_order);
        let pipeline = parse_pipeline(&text, "random.kdl").map_err(|e| TestCaseError::fail(format!("{e}: {:?}", e.diagnostics)))?;
        let plan = Plan::build(&pipeline, &RunContext::new()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let position: std::collections::HashMap<&str, usize> =
            plan.order().enumerate().map(|(i, stage)| (stage.name(), i)).collect();
        prop_assert_eq!(position.len(), needs.len());
        for (stage, stage_needs) in needs.iter().enumerate() {
            let stage_name = format!("s{stage}");
            let planned = plan.stages().iter().find(|s| s.name() == stage_name).ok_or_else(|| TestCaseError::fail("stage missing"))?;
            for need in stage_needs {
                let need_name = format!("s{need}");
                prop_assert!(position[need_name.as_str()] < position[stage_name.as_str()], "{} before {}", need_name, stage_name);
                let need_level = plan.stages().iter().find(|s| s.name() == need_name).map_or(0, |s| s.level());
                prop_assert!(need_level < planned.level());
            }
            if stage_needs.is_empty() {
                prop_assert_eq!(planned.level(), 0);
            }
        }
    }

    #[test]
    fn random_strings_never_panic(text in "\\PC{0,400}") {
        let _ = parse_pipeline(&text, "random.kdl");
        let _ = buildit_core::parse_system(&text, "random-system.kdl");
    }

    #[test]
    fn random_kdl_never_panics_and_stays_fast(pieces in proptest::collection::vec(0..VOCABULARY.len(), 0..300)) {
        let text: String = pieces.iter().map(|&i| VOCABULARY[i]).collect::<Vec<_>>().join(" ");
        let started = Instant::now();
        let result = parse_pipeline(&text, "random.kdl");
        prop_assert!(started.elapsed() < Duration::from_secs(2), "took {:?} on {:?}", started.elapsed(), text);
        if let Err(error) = result {
            prop_assert!(error.diagnostics.iter().any(|d| d.is_error()));
        }
    }
}

/// Renders every diagnostic of `text` as the CLI does, and the whole error as an embedder would: never a panic.
fn render_all(text: &str) {
    use miette::{GraphicalReportHandler, GraphicalTheme};
    let Err(error) = parse_pipeline(text, "random.kdl") else {
        return;
    };
    let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor());
    for diagnostic in &error.diagnostics {
        let mut out = String::new();
        let _ = handler.render_report(&mut out, &diagnostic.with_source(&error.input));
    }
    let mut out = String::new();
    let _ = handler.render_report(&mut out, &error);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever bytes a file holds, the bounded reader returns them exactly, or says why not (never a panic).
    #[test]
    fn the_file_reader_returns_exactly_the_text_or_why_not(bytes in proptest::collection::vec(any::<u8>(), 0..2000), repeat in 0usize..700) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let path = dir.path().join("buildit.kdl");
        let bytes = bytes.repeat(repeat.max(1));
        std::fs::write(&path, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        match buildit_core::config::read_config_file(&path) {
            Ok(text) => prop_assert_eq!(text.as_bytes(), bytes.as_slice()),
            Err(buildit_core::config::ReadFileError::TooLarge { .. }) => {
                prop_assert!(bytes.len() > buildit_core::config::MAX_FILE_BYTES)
            }
            Err(buildit_core::config::ReadFileError::NotUtf8 { offset, valid, .. }) => {
                let error = std::str::from_utf8(&bytes).err();
                prop_assert_eq!(error.map(|e| e.valid_up_to()), Some(offset));
                prop_assert_eq!(valid.as_bytes(), &bytes[..offset]);
            }
            Err(other) => prop_assert!(false, "{other}"),
        }
    }

    /// Diagnostics render without panicking, also on lines far longer than `miette` can underline.
    #[test]
    fn diagnostics_render_on_any_line_length(pieces in proptest::collection::vec(0..VOCABULARY.len(), 1..40), filler in 0usize..80_000) {
        let text: String = pieces.iter().map(|&i| VOCABULARY[i]).collect::<Vec<_>>().join(" ");
        render_all(&format!("{}{text}", " ".repeat(filler)));
        render_all(&format!("{text}{}", "x".repeat(filler)));
    }
}

/// The special files the daemon's worst users could name: refused at once, never read.
#[test]
fn the_file_reader_refuses_special_files_at_once() {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("{error}"),
    };
    let fifo = dir.path().join("fifo.kdl");
    match std::process::Command::new("mkfifo").arg(&fifo).status() {
        Ok(status) if status.success() => {}
        other => panic!("mkfifo: {other:?}"),
    }
    for path in [
        std::path::Path::new("/dev/zero"),
        std::path::Path::new("/dev/urandom"),
        std::path::Path::new("/dev/null"),
        fifo.as_path(),
        dir.path(),
    ] {
        let started = Instant::now();
        let result = buildit_core::config::read_config_file(path);
        assert!(
            matches!(
                result,
                Err(buildit_core::config::ReadFileError::NotRegular { .. })
            ),
            "{}: {result:?}",
            path.display()
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}

/// A megabyte of one token, the shape that made the parser's error recovery recurse once per token: refused
/// within 2 s (optimised build), with diagnostics that render.
#[test]
fn a_megabyte_of_one_token_stays_under_the_time_bound() {
    let bound = if cfg!(debug_assertions) {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(2)
    };
    for token in [
        "= ", "=", "\\ ", "( ", "(", ") ", "} ", "# ", "#", "stage ", "a= ", "\" ", "/- a ", "; ",
        "{ ", "a\n", "=\n", "##",
    ] {
        let text = token.repeat(buildit_core::config::MAX_FILE_BYTES / token.len());
        let started = Instant::now();
        let result = parse_pipeline(&text, "big.kdl");
        let elapsed = started.elapsed();
        assert!(elapsed < bound, "{token:?} took {elapsed:?}");
        assert!(result.is_err(), "{token:?}");
        if token.len() == 2 {
            render_all(&text);
        }
    }
}

/// The bound the daemon relies on: no input under 64 KiB takes longer than 2 s (in an optimised build; debug
/// builds of the parser are several times slower, so they get a looser bound).
#[test]
fn large_adversarial_inputs_stay_under_the_time_bound() {
    let bound = if cfg!(debug_assertions) {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(2)
    };
    let shapes = [
        "a /-{\n",
        "a /-{ b {\n",
        "a /- {\n",
        "stage \"x\" /-{ run \"y\" }\n",
        "a {\n",
        "x \"\n",
        "/* ",
        "a { b /-{ c } }\n",
        "/- ",
        "= ",
        "a==",
        "=a ",
        "\\\n",
        "a 1 2 3 =\n",
        "#\"\"\" ",
        "#\" ",
    ];
    for shape in shapes {
        let text = shape.repeat(64 * 1024 / shape.len());
        let started = Instant::now();
        let _ = parse_pipeline(&text, "big.kdl");
        let elapsed = started.elapsed();
        assert!(
            elapsed < bound,
            "{shape:?} x {} took {elapsed:?}",
            64 * 1024 / shape.len()
        );
    }
}

/// Inputs that are valid KDL but make validation itself do work per problem: it must stay linear.
#[test]
fn many_problems_stay_under_the_time_bound() {
    let bound = if cfg!(debug_assertions) {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(2)
    };
    let mut inputs = Vec::new();
    // Thousands of unknown variables in one string.
    inputs.push(format!(
        "pipeline \"p\"\nstage \"a\" {{ run \"{}\" }}\n",
        "{a}".repeat(20_000)
    ));
    // A cache key with many matrix axes used by many stages without them.
    let axes: String = (0..300).map(|i| format!("{{matrix.a{i}}}")).collect();
    let mut text = format!("pipeline \"p\"\ncache \"c\" {{ path \"x\"; key \"{axes}\" }}\n");
    for i in 0..300 {
        text.push_str(&format!("stage \"s{i}\" {{ cache \"c\"; run \"x\" }}\n"));
    }
    inputs.push(text);
    // Many unknown needs among many stages ("did you mean" compares names).
    let mut text = String::from("pipeline \"p\"\n");
    for i in 0..1000 {
        text.push_str(&format!(
            "stage \"s{i}\" {{ needs \"t{i}\" \"u{i}\"; run \"x\" }}\n"
        ));
    }
    inputs.push(text);
    // The guard bypasses found in review: a v1-style `r"` and a `"""` without a newline before nested blocks.
    inputs.push(format!(
        "x /**/r\"\\\"\n{}{}",
        "a /-{\n".repeat(14),
        "}\n".repeat(14)
    ));
    inputs.push(format!("x \"\"\" \"\n{}", "a /-{\n".repeat(18)));
    for text in inputs {
        assert!(text.len() < 64 * 1024 * 4);
        let started = Instant::now();
        let result = parse_pipeline(&text, "many.kdl");
        let elapsed = started.elapsed();
        assert!(
            elapsed < bound,
            "took {elapsed:?} on {}...",
            &text[..80.min(text.len())]
        );
        let diagnostics = result.err().map(|e| e.diagnostics.len()).unwrap_or(0);
        assert!(
            (1..=buildit_core::diagnostic::MAX_DIAGNOSTICS + 1).contains(&diagnostics),
            "{diagnostics}"
        );
    }
}

/// Every node read costs about a kilobyte, so a megabyte of one-letter lines took 360 MB: the reader refuses the
/// first node over the limit before building it (or any after it), and reads no stage past the stage limit.
#[test]
fn a_megabyte_of_nodes_is_refused_at_the_node_limit() {
    use buildit_core::diagnostic::DiagnosticCode;
    let max = buildit_core::config::MAX_FILE_BYTES;
    let one_letter = "a\n".repeat(max / 2 - 1);
    let diagnostics = parse_pipeline(&one_letter, "big.kdl")
        .err()
        .map(|error| error.diagnostics)
        .unwrap_or_default();
    let first = diagnostics.first();
    assert_eq!(first.map(|d| d.code), Some(DiagnosticCode::Limit));
    // The first node over the 40,000-node limit is on line 40,001.
    assert_eq!(
        first.and_then(|d| d.primary_span()).map(|s| s.offset()),
        Some(40_000 * 2)
    );
    assert!(first.is_some_and(|d| d.help.is_some()));

    let stages: String = (0..20_000).map(|i| format!("stage \"s{i}\"\n")).collect();
    let text = format!("pipeline \"p\"\n{stages}");
    let diagnostics = parse_pipeline(&text, "big.kdl")
        .err()
        .map(|error| error.diagnostics)
        .unwrap_or_default();
    let limit = diagnostics
        .iter()
        .find(|d| d.code == DiagnosticCode::Limit)
        .and_then(|d| d.primary_span())
        .map(|s| s.offset());
    assert_eq!(limit, text.find("stage \"s10000\""));

    // A generated 10,000-stage pipeline, a command and a dependency each, is still read.
    let mut valid = String::from("pipeline \"p\"\n");
    for i in 0..10_000 {
        valid.push_str(&format!("stage \"s{i}\" {{\n    run \"true\"\n"));
        if i >= 50 {
            valid.push_str(&format!("    needs \"s{}\"\n", i - 50));
        }
        valid.push_str("}\n");
    }
    let result = parse_pipeline(&valid, "big.kdl");
    assert!(
        result.is_ok(),
        "{:?}",
        result.err().map(|e| e.diagnostics.len())
    );
}
