//! Registered pipelines and run listings against a real daemon on loopback: a pipeline is validated when it is
//! registered, kept per tenant under its own name, replaced by a new text and run by name; runs are listed a
//! page at a time, queued ones included, with filters, and a page token never skips nor repeats a run, even
//! across runs starting between two pages.

#![expect(
    clippy::expect_used,
    reason = "a test fails loudly when its daemon or client cannot be set up"
)]

mod support;

use std::collections::HashSet;

use buildit_core::events::{RunEventKind, RunOutcome, RunView};
use buildit_core::store::{SqliteStore, Store, hash_token, new_token, sha256_hex};
use buildit_grpc::diagnostics_of;
use buildit_grpc::proto;
use buildit_grpc::proto::build_it_client::BuildItClient;
use support::{authorized, daemon_on, trigger, watch};
use tonic::Code;
use tonic::transport::Channel;

const BUILD: &str = r#"pipeline "build"
stage "compile" { run "echo compiling {branch}" }
stage "test" { needs "compile"; run "echo testing v1" }
"#;

const BUILD_V2: &str = r#"pipeline "build"
stage "compile" { run "echo compiling {branch}" }
stage "test" { needs "compile"; run "echo testing v2" }
stage "package" { needs "test"; run "true" }
"#;

/// A store in a temporary directory with a token for `acme` (labelled `ci bot`) and one for `globex`.
struct Setup {
    dir: tempfile::TempDir,
    acme: String,
    globex: String,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(&dir.path().join("buildit.db"))
        .await
        .expect("store");
    let acme = new_token();
    store
        .create_token("acme", "ci bot", &hash_token(&acme))
        .await
        .expect("token");
    let globex = new_token();
    store
        .create_token("globex", "", &hash_token(&globex))
        .await
        .expect("token");
    store.close().await;
    Setup { dir, acme, globex }
}

fn register(text: &str, file_name: &str) -> proto::RegisterPipelineRequest {
    proto::RegisterPipelineRequest {
        name: String::new(),
        pipeline: text.to_owned(),
        file_name: file_name.to_owned(),
    }
}

fn by_name(name: &str) -> proto::TriggerRunRequest {
    proto::TriggerRunRequest {
        registered: name.to_owned(),
        branch: "main".to_owned(),
        ..proto::TriggerRunRequest::default()
    }
}

/// Triggers `request` and watches the run to its end: the run and its events.
async fn run_to_end(
    client: &mut BuildItClient<Channel>,
    token: &str,
    request: proto::TriggerRunRequest,
) -> (proto::Run, RunView, Vec<String>) {
    let run = client
        .trigger_run(authorized(request, token))
        .await
        .expect("trigger")
        .into_inner()
        .run
        .expect("a run");
    let events = watch(client, token, &run.id, 0).await;
    let lines = events
        .iter()
        .filter_map(|event| match &event.kind {
            RunEventKind::LogLine { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect();
    (run, RunView::from_events(&events), lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_is_validated_when_registered_and_runs_by_name_until_replaced() {
    let setup = setup().await;
    let (address, stop, served) = daemon_on(setup.dir.path(), 1).await;
    let mut client = BuildItClient::connect(address).await.expect("connect");
    let token = setup.acme.as_str();

    // An invalid pipeline is refused as a trigger refuses it: every diagnostic in the details.
    let refused = client
        .register_pipeline(authorized(
            register(
                "pipeline \"broken\"\nstage \"a\" { run \"true\"; needs \"biuld\" }\nstage \"b\" { rnu \"x\" }\n",
                "broken.kdl",
            ),
            token,
        ))
        .await
        .expect_err("an invalid pipeline");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let diagnostics = diagnostics_of(&refused);
    assert!(diagnostics.len() >= 2, "{diagnostics:?}");
    assert!(
        diagnostics
            .iter()
            .all(|diagnostic| diagnostic.file == "broken.kdl" && diagnostic.line > 0),
        "{diagnostics:?}"
    );
    let codes: Vec<&str> = diagnostics.iter().map(|d| d.code.as_str()).collect();
    assert!(codes.iter().any(|code| code.contains("needs")), "{codes:?}");
    // Nothing was kept.
    let missing = client
        .get_pipeline(authorized(
            proto::GetPipelineRequest {
                name: "broken".to_owned(),
            },
            token,
        ))
        .await
        .expect_err("never registered");
    assert_eq!(missing.code(), Code::NotFound);

    // A valid one is kept under the name its text declares.
    let registered = client
        .register_pipeline(authorized(register(BUILD, "ci/build.kdl"), token))
        .await
        .expect("register")
        .into_inner();
    assert!(registered.changed);
    let pipeline = registered.pipeline.expect("the pipeline");
    assert_eq!(pipeline.name, "build");
    assert_eq!(pipeline.file_name, "ci/build.kdl");
    assert_eq!(pipeline.source, BUILD);
    assert_eq!(pipeline.sha256, sha256_hex(BUILD.as_bytes()));
    assert_eq!(pipeline.stages, ["compile", "test"]);
    assert_eq!(pipeline.stage_count, 2);
    assert_eq!(pipeline.registered_by, "ci bot");
    assert!(pipeline.registered_at_ms > 0);
    assert_eq!(pipeline.registered_at_ms, pipeline.updated_at_ms);
    // The same text again changes nothing.
    let again = client
        .register_pipeline(authorized(register(BUILD, "ci/build.kdl"), token))
        .await
        .expect("register again")
        .into_inner();
    assert!(!again.changed);
    assert_eq!(again.pipeline.as_ref(), Some(&pipeline));
    // A name the text does not declare is refused.
    let mismatch = client
        .register_pipeline(authorized(
            proto::RegisterPipelineRequest {
                name: "deploy".to_owned(),
                ..register(BUILD, "")
            },
            token,
        ))
        .await
        .expect_err("another name");
    assert_eq!(mismatch.code(), Code::InvalidArgument);
    let got = client
        .get_pipeline(authorized(
            proto::GetPipelineRequest {
                name: "build".to_owned(),
            },
            token,
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got, pipeline);

    // Listed by name, a page at a time, without their text.
    client
        .register_pipeline(authorized(
            register("pipeline \"alpha\"\nstage \"one\" { run \"true\" }\n", ""),
            token,
        ))
        .await
        .expect("register alpha");
    let mut names = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_pipelines(authorized(
                proto::ListPipelinesRequest {
                    page_size: 1,
                    page_token: page_token.clone(),
                },
                token,
            ))
            .await
            .expect("list")
            .into_inner();
        pages += 1;
        assert!(page.pipelines.iter().all(|p| p.source.is_empty()));
        names.extend(page.pipelines.iter().map(|p| p.name.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(names, ["alpha", "build"]);
    assert_eq!(pages, 2);
    let one_page = client
        .list_pipelines(authorized(proto::ListPipelinesRequest::default(), token))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(one_page.pipelines.len(), 2);
    assert_eq!(one_page.pipelines[1].stages, ["compile", "test"]);
    assert!(one_page.next_page_token.is_empty());
    let bad = client
        .list_pipelines(authorized(
            proto::ListPipelinesRequest {
                page_size: 1,
                page_token: "not a token".to_owned(),
            },
            token,
        ))
        .await
        .expect_err("a bad token");
    assert_eq!(bad.code(), Code::InvalidArgument);

    // Triggered by name: its stored text runs, with the trigger's context.
    let (run, view, lines) = run_to_end(&mut client, token, by_name("build")).await;
    assert_eq!(run.pipeline, "build");
    assert_eq!(run.branch, "main");
    assert_eq!(
        view.ending.map(|ending| ending.status),
        Some(RunOutcome::Succeeded)
    );
    assert!(
        lines.iter().any(|line| line == "compiling main"),
        "{lines:?}"
    );
    assert!(lines.iter().any(|line| line == "testing v1"), "{lines:?}");

    // Registering the name again replaces its text: the next run runs the new one.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let replaced = client
        .register_pipeline(authorized(register(BUILD_V2, "ci/build.kdl"), token))
        .await
        .expect("replace")
        .into_inner();
    assert!(replaced.changed);
    let replaced = replaced.pipeline.expect("the pipeline");
    assert_eq!(replaced.stages, ["compile", "test", "package"]);
    assert_eq!(replaced.sha256, sha256_hex(BUILD_V2.as_bytes()));
    assert_eq!(replaced.registered_at_ms, pipeline.registered_at_ms);
    assert!(replaced.updated_at_ms > pipeline.updated_at_ms);
    let (second, view, lines) = run_to_end(&mut client, token, by_name("build")).await;
    assert_eq!(
        view.ending.map(|ending| ending.status),
        Some(RunOutcome::Succeeded)
    );
    assert!(lines.iter().any(|line| line == "testing v2"), "{lines:?}");
    assert!(!lines.iter().any(|line| line == "testing v1"), "{lines:?}");
    let second = client
        .get_run(authorized(proto::GetRunRequest { run: second.id }, token))
        .await
        .expect("get run")
        .into_inner();
    assert_eq!((second.number, second.stage_count), (2, 3));

    // One of `pipeline` and `registered`, never both nor neither; an unknown name is not found.
    let both = client
        .trigger_run(authorized(
            proto::TriggerRunRequest {
                pipeline: BUILD.to_owned(),
                ..by_name("build")
            },
            token,
        ))
        .await
        .expect_err("both");
    assert_eq!(both.code(), Code::InvalidArgument);
    let neither = client
        .trigger_run(authorized(proto::TriggerRunRequest::default(), token))
        .await
        .expect_err("neither");
    assert_eq!(neither.code(), Code::InvalidArgument);
    let unknown = client
        .trigger_run(authorized(by_name("nope"), token))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);

    // Every new call needs a token.
    let anonymous = client
        .list_pipelines(tonic::Request::new(proto::ListPipelinesRequest::default()))
        .await
        .expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let anonymous = client
        .register_pipeline(tonic::Request::new(register(BUILD, "")))
        .await
        .expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    stop.cancel();
    served.await.expect("the daemon stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_pipeline_is_not_found_not_listed_and_not_run() {
    let setup = setup().await;
    let (address, stop, served) = daemon_on(setup.dir.path(), 1).await;
    let mut client = BuildItClient::connect(address).await.expect("connect");
    client
        .register_pipeline(authorized(register(BUILD, ""), &setup.acme))
        .await
        .expect("register");
    let get = |name: &str| {
        authorized(
            proto::GetPipelineRequest {
                name: name.to_owned(),
            },
            &setup.globex,
        )
    };
    let hidden = client
        .get_pipeline(get("build"))
        .await
        .expect_err("another tenant's");
    assert_eq!(hidden.code(), Code::NotFound);
    let listed = client
        .list_pipelines(authorized(
            proto::ListPipelinesRequest::default(),
            &setup.globex,
        ))
        .await
        .expect("list")
        .into_inner();
    assert!(listed.pipelines.is_empty(), "{listed:?}");
    let triggered = client
        .trigger_run(authorized(by_name("build"), &setup.globex))
        .await
        .expect_err("another tenant's");
    assert_eq!(triggered.code(), Code::NotFound);
    let runs = client
        .list_runs(authorized(proto::ListRunsRequest::default(), &setup.globex))
        .await
        .expect("list runs")
        .into_inner();
    assert!(runs.runs.is_empty(), "{runs:?}");

    // The same name in another tenant is another pipeline.
    let theirs = client
        .register_pipeline(authorized(register(BUILD_V2, ""), &setup.globex))
        .await
        .expect("register theirs")
        .into_inner();
    assert!(theirs.changed);
    assert_eq!(
        theirs.pipeline.map(|p| p.registered_by),
        Some(String::new())
    );
    let ours = client
        .get_pipeline(authorized(
            proto::GetPipelineRequest {
                name: "build".to_owned(),
            },
            &setup.acme,
        ))
        .await
        .expect("ours")
        .into_inner();
    assert_eq!(ours.source, BUILD);

    stop.cancel();
    served.await.expect("the daemon stops");
}

const QUICK: &str = "pipeline \"quick\"\nstage \"a\" { run \"true\" }\n";
const FAILING: &str = "pipeline \"quick\"\nstage \"a\" { run \"exit 1\" }\n";

fn on_branch(text: &str, branch: &str) -> proto::TriggerRunRequest {
    proto::TriggerRunRequest {
        branch: branch.to_owned(),
        ..trigger(text)
    }
}

/// Every page of `request`'s runs, `page_size` at a time: the ids of each page.
async fn pages(
    client: &mut BuildItClient<Channel>,
    token: &str,
    request: proto::ListRunsRequest,
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_runs(authorized(
                proto::ListRunsRequest {
                    page_token: page_token.clone(),
                    ..request.clone()
                },
                token,
            ))
            .await
            .expect("list runs")
            .into_inner();
        pages.push(page.runs.iter().map(|run| run.id.clone()).collect());
        if page.next_page_token.is_empty() {
            return pages;
        }
        assert!(pages.len() < 20, "the pages never end: {pages:?}");
        page_token = page.next_page_token;
    }
}

/// The ids and states of the runs `request` lists on one page.
async fn listed(
    client: &mut BuildItClient<Channel>,
    token: &str,
    request: proto::ListRunsRequest,
) -> Vec<(String, String)> {
    client
        .list_runs(authorized(request, token))
        .await
        .expect("list runs")
        .into_inner()
        .runs
        .into_iter()
        .map(|run| (run.id, run.state))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_are_listed_in_pages_queued_ones_included_with_filters_and_no_skip_or_repeat() {
    let setup = setup().await;
    let token = setup.acme.as_str();
    // Four runs run to their end: two succeed on main, one fails on dev, one succeeds on dev.
    let (address, stop, served) = daemon_on(setup.dir.path(), 1).await;
    let mut client = BuildItClient::connect(address).await.expect("connect");
    let mut ended = Vec::new();
    for (text, branch) in [
        (QUICK, "main"),
        (FAILING, "dev"),
        (QUICK, "main"),
        (QUICK, "dev"),
    ] {
        let (run, _, _) = run_to_end(&mut client, token, on_branch(text, branch)).await;
        ended.push(run.id);
    }
    stop.cancel();
    served.await.expect("the daemon stops");

    // Three more through a daemon without workers: they stay queued; one is cancelled before it starts.
    let (address, front_stop, front_served) = daemon_on(setup.dir.path(), 0).await;
    let mut client = BuildItClient::connect(address).await.expect("connect");
    let mut queued = Vec::new();
    for branch in ["main", "dev", "main"] {
        let run = client
            .trigger_run(authorized(on_branch(QUICK, branch), token))
            .await
            .expect("trigger")
            .into_inner()
            .run
            .expect("a run");
        assert_eq!(run.state, "queued");
        queued.push(run.id);
    }
    client
        .cancel_run(authorized(
            proto::CancelRunRequest {
                run: queued[1].clone(),
            },
            token,
        ))
        .await
        .expect("cancel");
    // Newest first.
    let newest_first: Vec<String> = ended.iter().chain(&queued).rev().cloned().collect();

    // Seven runs, three a page: 3 + 3 + 1, each run once, in order, the queued ones first.
    let three = proto::ListRunsRequest {
        page_size: 3,
        ..proto::ListRunsRequest::default()
    };
    let paged = pages(&mut client, token, three.clone()).await;
    assert_eq!(
        paged.iter().map(Vec::len).collect::<Vec<_>>(),
        [3, 3, 1],
        "{paged:?}"
    );
    assert_eq!(paged.concat(), newest_first);
    let states: Vec<String> = listed(&mut client, token, three.clone())
        .await
        .into_iter()
        .map(|(_, state)| state)
        .collect();
    assert_eq!(states, ["queued", "cancelled", "queued"]);
    // Exactly a page's worth: no empty page after it.
    let seven = pages(
        &mut client,
        token,
        proto::ListRunsRequest {
            page_size: 7,
            ..proto::ListRunsRequest::default()
        },
    )
    .await;
    assert_eq!(seven.concat(), newest_first);
    assert_eq!(seven.len(), 1, "{seven:?}");

    // Filters, alone and together, on queued and recorded runs alike.
    let with = |state: &str, branch: &str| proto::ListRunsRequest {
        state: state.to_owned(),
        branch: branch.to_owned(),
        ..proto::ListRunsRequest::default()
    };
    let ids = |runs: Vec<(String, String)>| -> Vec<String> {
        runs.into_iter().map(|(id, _)| id).collect()
    };
    assert_eq!(
        ids(listed(&mut client, token, with("queued", "")).await),
        [queued[2].clone(), queued[0].clone()]
    );
    assert_eq!(
        ids(listed(&mut client, token, with("cancelled", "")).await),
        [queued[1].clone()]
    );
    assert_eq!(
        ids(listed(&mut client, token, with("failed", "")).await),
        [ended[1].clone()]
    );
    assert_eq!(
        ids(listed(&mut client, token, with("succeeded", "")).await),
        [ended[3].clone(), ended[2].clone(), ended[0].clone()]
    );
    assert_eq!(
        ids(listed(&mut client, token, with("", "dev")).await),
        [queued[1].clone(), ended[3].clone(), ended[1].clone()]
    );
    assert_eq!(
        ids(listed(&mut client, token, with("succeeded", "main")).await),
        [ended[2].clone(), ended[0].clone()]
    );
    assert!(
        listed(&mut client, token, with("running", ""))
            .await
            .is_empty()
    );
    let filtered_pages = pages(
        &mut client,
        token,
        proto::ListRunsRequest {
            page_size: 1,
            ..with("", "main")
        },
    )
    .await;
    assert_eq!(
        filtered_pages.concat(),
        [
            queued[2].clone(),
            queued[0].clone(),
            ended[2].clone(),
            ended[0].clone()
        ]
    );

    // Bad tokens and states are refused.
    for bad in [
        proto::ListRunsRequest {
            page_token: "garbage!".to_owned(),
            ..three.clone()
        },
        proto::ListRunsRequest {
            page_token: "cnVuczoxMjM".to_owned(),
            ..three.clone()
        },
        with("sleeping", ""),
    ] {
        let refused = client
            .list_runs(authorized(bad.clone(), token))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "{bad:?}");
    }

    // A page token stays good while the queued runs start and end in between: they keep their places.
    let first = client
        .list_runs(authorized(
            proto::ListRunsRequest {
                page_size: 2,
                ..proto::ListRunsRequest::default()
            },
            token,
        ))
        .await
        .expect("first page")
        .into_inner();
    let mut seen: Vec<String> = first.runs.iter().map(|run| run.id.clone()).collect();
    assert_eq!(seen, [queued[2].clone(), queued[1].clone()]);
    let (worker, worker_stop, worker_served) = daemon_on(setup.dir.path(), 1).await;
    let mut worker_client = BuildItClient::connect(worker).await.expect("connect");
    for run in [&queued[0], &queued[2]] {
        let events = watch(&mut worker_client, token, run, 0).await;
        assert_eq!(
            RunView::from_events(&events)
                .ending
                .map(|ending| ending.status),
            Some(RunOutcome::Succeeded)
        );
    }
    let mut page_token = first.next_page_token;
    while !page_token.is_empty() {
        let page = client
            .list_runs(authorized(
                proto::ListRunsRequest {
                    page_size: 2,
                    page_token: page_token.clone(),
                    ..proto::ListRunsRequest::default()
                },
                token,
            ))
            .await
            .expect("next page")
            .into_inner();
        seen.extend(page.runs.iter().map(|run| run.id.clone()));
        page_token = page.next_page_token;
    }
    assert_eq!(seen, newest_first);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 7);
    // Recorded now, in the places they had while queued.
    let now = listed(&mut client, token, proto::ListRunsRequest::default()).await;
    assert_eq!(ids(now.clone()), newest_first);
    assert_eq!(now[0].1, "succeeded");
    assert_eq!(now[2].1, "succeeded");

    worker_stop.cancel();
    front_stop.cancel();
    worker_served.await.expect("the worker daemon stops");
    front_served.await.expect("the front daemon stops");
}
