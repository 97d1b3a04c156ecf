//! Planning: matrix expansion, order, levels, `when`, manual stages, selection, and the rendered formats.

use buildit_core::config::EventKind;
use buildit_core::plan::{PlanFormat, SkipReason};
use buildit_core::{Pipeline, Plan, PlanError, RunContext, parse_pipeline};

fn pipeline(text: &str) -> Pipeline {
    match parse_pipeline(text, "buildit.kdl") {
        Ok(pipeline) => pipeline,
        Err(error) => panic!("{error}: {:#?}", error.diagnostics),
    }
}

fn plan(text: &str, context: &RunContext) -> Plan {
    match Plan::build(&pipeline(text), context) {
        Ok(plan) => plan,
        Err(error) => panic!("{error}"),
    }
}

const HELLO: &str = include_str!("../../examples/hello.kdl");

fn names(plan: &Plan) -> Vec<&str> {
    plan.order().map(|stage| stage.name()).collect()
}

fn skip_of<'p>(plan: &'p Plan, name: &str) -> Option<&'p SkipReason> {
    plan.stages()
        .iter()
        .find(|stage| stage.name() == name)
        .and_then(|stage| stage.skip_reason())
}

#[test]
fn matrix_instances_and_all_instance_needs() {
    let plan = plan(
        HELLO,
        &RunContext::new()
            .with_branch("main")
            .with_event(EventKind::Push),
    );
    assert_eq!(
        names(&plan),
        [
            "prepare",
            "test (shard=1)",
            "test (shard=2)",
            "test (shard=3)",
            "package",
            "release",
            "cleanup"
        ]
    );
    let package = plan.stages().iter().find(|s| s.name() == "package");
    let needs: Vec<&str> = package.map_or(vec![], |p| {
        p.needs().iter().map(|&n| plan.stages()[n].name()).collect()
    });
    assert_eq!(
        needs,
        ["test (shard=1)", "test (shard=2)", "test (shard=3)"]
    );
    assert_eq!(plan.level_count(), 4);
    assert!(plan.stages().iter().all(|stage| !stage.is_skipped()));
}

#[test]
fn matrix_axes_vary_the_last_fastest_and_fill_images() {
    let plan = plan(
        "pipeline \"p\"\nstage \"build\" { image \"rust:{matrix.rust}\"; matrix { rust \"1.80\" \"1.82\"; os \"linux\" \"mac\" }; run \"cargo build\" }\n",
        &RunContext::new(),
    );
    assert_eq!(
        names(&plan),
        [
            "build (rust=1.80, os=linux)",
            "build (rust=1.80, os=mac)",
            "build (rust=1.82, os=linux)",
            "build (rust=1.82, os=mac)"
        ]
    );
    let images: Vec<Option<&str>> = plan.order().map(|s| s.image()).collect();
    assert_eq!(
        images,
        [
            Some("rust:1.80"),
            Some("rust:1.80"),
            Some("rust:1.82"),
            Some("rust:1.82")
        ]
    );
    assert!(
        plan.order()
            .all(|s| s.executor() == buildit_core::config::ExecutorKind::Docker)
    );
}

#[test]
fn when_conditions_skip_with_reasons_and_skips_propagate() {
    let text = "pipeline \"p\"\nstage \"build\" { run \"x\" }\nstage \"deploy\" { needs \"build\"; when branch=\"main\" event=\"push\"; when tag=\"v*\"; run \"x\" }\nstage \"smoke\" { needs \"deploy\"; run \"x\" }\nstage \"notify\" { needs \"deploy\"; when status=\"always\"; run \"x\" }\n";
    let feature = plan(
        text,
        &RunContext::new()
            .with_branch("feature/x")
            .with_event(EventKind::Push),
    );
    assert!(matches!(
        skip_of(&feature, "deploy"),
        Some(SkipReason::Condition { .. })
    ));
    assert_eq!(
        skip_of(&feature, "smoke"),
        Some(&SkipReason::DependencySkipped {
            need: "deploy".into()
        })
    );
    assert_eq!(
        skip_of(&feature, "notify"),
        None,
        "status=always runs whatever happened before"
    );
    let main = plan(
        text,
        &RunContext::new()
            .with_branch("main")
            .with_event(EventKind::Push),
    );
    assert_eq!(skip_of(&main, "deploy"), None);
    let pull_request = plan(
        text,
        &RunContext::new()
            .with_branch("main")
            .with_event(EventKind::PullRequest),
    );
    assert!(skip_of(&pull_request, "deploy").is_some());
    let tag = plan(
        text,
        &RunContext::new()
            .with_tag("v1.2.0")
            .with_event(EventKind::Tag),
    );
    assert_eq!(
        skip_of(&tag, "deploy"),
        None,
        "several `when` nodes OR together"
    );
}

#[test]
fn manual_stages_run_only_when_named_and_selection_takes_needs() {
    let text = "pipeline \"p\"\nstage \"lint\" { run \"x\" }\nstage \"build\" { run \"x\" }\nstage \"test\" { needs \"build\"; run \"x\" }\nstage \"deploy\" { needs \"test\"; manual; run \"x\" }\n";
    let default = plan(text, &RunContext::new());
    assert_eq!(skip_of(&default, "deploy"), Some(&SkipReason::Manual));
    let selected = plan(text, &RunContext::new().with_selected("deploy"));
    assert_eq!(skip_of(&selected, "deploy"), None);
    assert_eq!(skip_of(&selected, "build"), None);
    assert_eq!(skip_of(&selected, "lint"), Some(&SkipReason::NotSelected));
    let unknown = Plan::build(&pipeline(text), &RunContext::new().with_selected("deplyo"));
    assert!(
        matches!(unknown, Err(PlanError::UnknownStage { help: Some(ref help), .. }) if help.contains("deploy"))
    );
}

#[test]
fn order_respects_every_edge_in_a_diamond() {
    let text = "pipeline \"p\"\nstage \"d\" { needs \"b\" \"c\"; run \"x\" }\nstage \"c\" { needs \"a\"; run \"x\" }\nstage \"b\" { needs \"a\"; run \"x\" }\nstage \"a\" { run \"x\" }\n";
    let plan = plan(text, &RunContext::new());
    assert_eq!(names(&plan), ["a", "c", "b", "d"]);
    let levels: Vec<usize> = plan.order().map(|s| s.level()).collect();
    assert_eq!(levels, [0, 1, 1, 2]);
}

#[test]
fn rendered_formats() {
    let plan = plan(
        HELLO,
        &RunContext::new()
            .with_branch("feature/x")
            .with_event(EventKind::Push),
    );
    insta::assert_snapshot!("hello_text", plan.render(PlanFormat::Text));
    insta::assert_snapshot!("hello_dot", plan.render(PlanFormat::Dot));
    insta::assert_snapshot!("hello_mermaid", plan.render(PlanFormat::Mermaid));
    let json: serde_json::Value = match serde_json::from_str(&plan.render(PlanFormat::Json)) {
        Ok(json) => json,
        Err(error) => panic!("plan JSON does not parse: {error}"),
    };
    assert_eq!(json["pipeline"], "hello");
    assert_eq!(json["order"][1], "test (shard=1)");
    let release = &json["stages"][5];
    assert_eq!(release["name"], "release");
    assert_eq!(release["skipped"], true);
    assert_eq!(
        release["skip_reason"],
        "branch `feature/x` does not match `main`"
    );
    assert_eq!(json["stages"][1]["matrix"]["shard"], "1");
    assert_eq!(json["stages"][0]["matrix"], serde_json::Value::Null);
    assert_eq!(json["stages"][0]["executor"], "local");
    assert_eq!(json["stages"][4]["level"], 2);
}

#[test]
fn a_manual_stage_needed_by_a_requested_stage_runs() {
    let text = "pipeline \"p\"\nstage \"approve\" { manual; run \"x\" }\nstage \"deploy\" { needs \"approve\"; manual; run \"x\" }\nstage \"other\" { manual; run \"x\" }\n";
    let selected = plan(text, &RunContext::new().with_selected("deploy"));
    assert_eq!(skip_of(&selected, "approve"), None);
    assert_eq!(skip_of(&selected, "deploy"), None);
    assert_eq!(skip_of(&selected, "other"), Some(&SkipReason::Manual));
}

#[test]
fn a_plan_from_an_owned_pipeline_is_the_plan_built_from_a_borrowed_one_and_clones_share_it() {
    let text = r#"
pipeline "p"
stage "build" { matrix { os "linux" "mac" }; run "make" }
stage "test" { needs "build"; run "make test" }
stage "deploy" { needs "test"; when branch="release"; run "ship" }
"#;
    let context = RunContext::new().with_branch("main");
    let borrowed = plan(text, &context);
    let owned = match Plan::from_pipeline(pipeline(text), &context) {
        Ok(plan) => plan,
        Err(error) => panic!("{error}"),
    };
    assert_eq!(names(&borrowed), names(&owned));
    assert_eq!(
        borrowed.render(PlanFormat::Json),
        owned.render(PlanFormat::Json)
    );
    // A clone is the same plan, not a copy of it.
    let clone = owned.clone();
    assert!(std::ptr::eq(clone.pipeline(), owned.pipeline()));
    assert!(std::ptr::eq(clone.stages(), owned.stages()));
}
