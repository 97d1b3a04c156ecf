//! The daemon for real: a server on loopback with a SQLite store, a real client, real runs of host stages.

#![expect(
    clippy::expect_used,
    reason = "a test fails loudly when its daemon or client cannot be set up"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use buildit_core::events::{RunEvent, RunEventKind, RunOutcome, RunView};
use buildit_core::store::{SqliteStore, Store, hash_token, new_token};
use buildit_core::system::SystemConfig;
use buildit_grpc::proto;
use buildit_grpc::proto::build_it_client::BuildItClient;
use buildit_grpc::{Daemon, DaemonConfig, diagnostics_of};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

mod support;

use support::{archive, authorized, daemon_on, token_in, trigger, upload, watch};

/// A daemon serving on a free loopback port, its tokens, and what stops it.
struct Running {
    address: String,
    token: String,
    other_tenant: String,
    stop: CancellationToken,
    served: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn daemon() -> Running {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(&dir.path().join("buildit.db"))
        .await
        .expect("store");
    let token = new_token();
    store
        .create_token("acme", "test", &hash_token(&token))
        .await
        .expect("token");
    let other_tenant = new_token();
    store
        .create_token("other", "test", &hash_token(&other_tenant))
        .await
        .expect("token");
    store.close().await;
    let (address, stop, served) = daemon_on(dir.path(), 2).await;
    Running {
        address,
        token,
        other_tenant,
        stop,
        served,
        _dir: dir,
    }
}

async fn client(running: &Running) -> BuildItClient<Channel> {
    BuildItClient::connect(running.address.clone())
        .await
        .expect("connect")
}

const PIPELINE: &str = r#"
pipeline "remote"
stage "build" { run "echo building {branch}"; run "printf 'not utf-8: \\377\\n'" }
stage "test" { needs "build"; run "for i in 1 2 3; do echo line $i; done" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triggered_run_streams_every_event_and_can_be_resumed() {
    let running = daemon().await;
    let mut client = client(&running).await;
    let triggered = client
        .trigger_run(authorized(trigger(PIPELINE), &running.token))
        .await
        .expect("trigger")
        .into_inner();
    let run = triggered.run.expect("a run");
    assert!(!triggered.existing);
    assert_eq!(run.pipeline, "remote");
    let events = watch(&mut client, &running.token, &run.id, 0).await;
    let seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gapless from 1"
    );
    let view = RunView::from_events(&events);
    let ending = view.ending.as_ref().expect("run-finished came last");
    assert_eq!(ending.status, RunOutcome::Succeeded);
    let lines: Vec<&str> = events
        .iter()
        .filter_map(|event| match &event.kind {
            RunEventKind::LogLine { text, .. } if !text.starts_with("$ ") => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        lines,
        [
            "building main",
            "not utf-8: \u{fffd}",
            "line 1",
            "line 2",
            "line 3"
        ]
    );
    // The record says the same.
    let got = client
        .get_run(authorized(
            proto::GetRunRequest {
                run: run.id.clone(),
            },
            &running.token,
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!((got.state.as_str(), got.number), ("succeeded", 1));
    // Resumed from any point, the rest follows with no gap and no duplicate.
    for after in [
        1,
        seqs.len() as u64 / 2,
        seqs.len() as u64 - 1,
        seqs.len() as u64,
    ] {
        let rest = watch(&mut client, &running.token, &run.id, after).await;
        let mut joined: Vec<RunEvent> = events[..after as usize].to_vec();
        joined.extend(rest);
        assert!(joined == events, "resumed after {after}");
    }
    running.stop.cancel();
    running.served.await.expect("the daemon stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_tenants_guard_every_call() {
    let running = daemon().await;
    let mut client = client(&running).await;
    let missing = client
        .get_run(proto::GetRunRequest {
            run: "x".to_owned(),
        })
        .await
        .expect_err("no token");
    assert_eq!(missing.code(), Code::Unauthenticated);
    let wrong = client
        .trigger_run(authorized(trigger(PIPELINE), "bit_not-a-token"))
        .await
        .expect_err("a wrong token");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let run = client
        .trigger_run(authorized(trigger(PIPELINE), &running.token))
        .await
        .expect("trigger")
        .into_inner()
        .run
        .expect("a run");
    watch(&mut client, &running.token, &run.id, 0).await;
    // Another tenant's token does not find the run: not forbidden, not found.
    let other = &running.other_tenant;
    let get = client
        .get_run(authorized(
            proto::GetRunRequest {
                run: run.id.clone(),
            },
            other,
        ))
        .await
        .expect_err("another tenant");
    assert_eq!(get.code(), Code::NotFound);
    let cancel = client
        .cancel_run(authorized(
            proto::CancelRunRequest {
                run: run.id.clone(),
            },
            other,
        ))
        .await
        .expect_err("another tenant");
    assert_eq!(cancel.code(), Code::NotFound);
    let watched = client
        .watch_run(authorized(
            proto::WatchRunRequest {
                run: run.id.clone(),
                after_seq: 0,
            },
            other,
        ))
        .await
        .expect_err("another tenant");
    assert_eq!(watched.code(), Code::NotFound);
    let listed = client
        .list_runs(authorized(proto::ListRunsRequest::default(), other))
        .await
        .expect("list")
        .into_inner();
    assert!(listed.runs.is_empty(), "{listed:?}");
    running.stop.cancel();
    running.served.await.expect("the daemon stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_pipeline_is_refused_with_every_diagnostic() {
    let running = daemon().await;
    let mut client = client(&running).await;
    let refused = client
        .trigger_run(authorized(
            trigger("pipeline \"p\"\nstage \"a\" { run \"true\"; needs \"biuld\" }\nstage \"build\" { rnu \"x\" }\n"),
            &running.token,
        ))
        .await
        .expect_err("an invalid pipeline");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let diagnostics: Vec<(String, u32, u32)> = diagnostics_of(&refused)
        .into_iter()
        .map(|diagnostic| (diagnostic.code, diagnostic.line, diagnostic.column))
        .collect();
    assert!(diagnostics.len() >= 2, "{diagnostics:?}");
    assert!(
        diagnostics
            .iter()
            .any(|(code, line, _)| code == "buildit::config::unknown_node" && *line == 3),
        "{diagnostics:?}"
    );
    assert!(
        diagnostics.iter().any(|(_, line, _)| *line == 2),
        "{diagnostics:?}"
    );
    running.stop.cancel();
    running.served.await.expect("the daemon stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_gives_the_same_run_and_a_cancel_stops_it() {
    let running = daemon().await;
    let mut client = client(&running).await;
    let request = || proto::TriggerRunRequest {
        idempotency_key: "push-42".to_owned(),
        ..trigger("pipeline \"slow\"\nstage \"wait\" { run \"echo waiting\"; run \"sleep 30\" }\n")
    };
    let first = client
        .trigger_run(authorized(request(), &running.token))
        .await
        .expect("trigger")
        .into_inner();
    let second = client
        .trigger_run(authorized(request(), &running.token))
        .await
        .expect("trigger again")
        .into_inner();
    let run = first.run.expect("a run");
    assert_eq!(second.run.map(|run| run.id), Some(run.id.clone()));
    assert!(second.existing && !first.existing);
    // Cancelled once it runs: it ends within a second or two, recorded as cancelled.
    let started = Instant::now();
    let watcher = {
        let mut client = client.clone();
        let token = running.token.clone();
        let id = run.id.clone();
        tokio::spawn(async move { watch(&mut client, &token, &id, 0).await })
    };
    loop {
        let got = client
            .get_run(authorized(
                proto::GetRunRequest {
                    run: run.id.clone(),
                },
                &running.token,
            ))
            .await
            .expect("get")
            .into_inner();
        if got.state == "running" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancelled_at = Instant::now();
    client
        .cancel_run(authorized(
            proto::CancelRunRequest {
                run: run.id.clone(),
            },
            &running.token,
        ))
        .await
        .expect("cancel");
    let events = watcher.await.expect("watcher");
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(15),
        "the cancel took {:?}",
        cancelled_at.elapsed()
    );
    let view = RunView::from_events(&events);
    assert_eq!(
        view.ending.map(|ending| ending.status),
        Some(RunOutcome::Cancelled)
    );
    running.stop.cancel();
    running.served.await.expect("the daemon stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_serves_and_a_stop_ends_open_streams_with_where_to_resume() {
    let running = daemon().await;
    let channel = Channel::from_shared(running.address.clone())
        .expect("address")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "buildit.v1.BuildIt".to_owned(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let mut client = client(&running).await;
    let run = client
        .trigger_run(authorized(
            trigger("pipeline \"slow\"\nstage \"wait\" { run \"sleep 30\" }\n"),
            &running.token,
        ))
        .await
        .expect("trigger")
        .into_inner()
        .run
        .expect("a run");
    let mut stream = client
        .watch_run(authorized(
            proto::WatchRunRequest {
                run: run.id.clone(),
                after_seq: 0,
            },
            &running.token,
        ))
        .await
        .expect("watch")
        .into_inner();
    // Wait for the run to be under way.
    let first = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("events come");
    assert!(matches!(first, Ok(Some(_))), "{first:?}");
    let stopped_at = Instant::now();
    running.stop.cancel();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the stream ends")
        {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    let status = ended.expect_err("the stream ends with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("resume with after_seq"),
        "{status:?}"
    );
    // While the run drains, the daemon still answers: health says it is not serving, triggers are refused.
    let draining = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "buildit.v1.BuildIt".to_owned(),
        })
        .await
        .expect("health while draining")
        .into_inner();
    assert_eq!(
        draining.status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
    let refused = client
        .trigger_run(authorized(trigger(PIPELINE), &running.token))
        .await
        .expect_err("a trigger while draining");
    assert_eq!(refused.code(), Code::Unavailable);
    running.served.await.expect("the daemon stops");
    // The drain window is 2 s: the daemon is gone within it and a second.
    assert!(
        stopped_at.elapsed() < Duration::from_secs(3) + Duration::from_secs(1),
        "{:?}",
        stopped_at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_workspace_is_where_the_run_works() {
    let running = daemon().await;
    let mut client = client(&running).await;
    let tar = archive("hello from the upload\n", 300 * 1024);
    let uploaded = upload(&mut client, &running.token, tar.clone())
        .await
        .expect("upload");
    assert_eq!(uploaded.sha256.len(), 64);
    assert_eq!(uploaded.size, tar.len() as u64);
    // The same archive again: the same digest.
    let again = upload(&mut client, &running.token, tar)
        .await
        .expect("upload again");
    assert_eq!(again.sha256, uploaded.sha256);
    let run = client
        .trigger_run(authorized(
            proto::TriggerRunRequest {
                source_sha256: uploaded.sha256.clone(),
                ..trigger("pipeline \"sourced\"\nstage \"read\" { run \"cat greeting.txt\"; run \"test -s filler.bin\" }\n")
            },
            &running.token,
        ))
        .await
        .expect("trigger")
        .into_inner()
        .run
        .expect("a run");
    let events = watch(&mut client, &running.token, &run.id, 0).await;
    let view = RunView::from_events(&events);
    assert_eq!(
        view.ending.map(|ending| ending.status),
        Some(RunOutcome::Succeeded)
    );
    assert!(events.iter().any(|event| matches!(&event.kind,
        RunEventKind::LogLine { text, .. } if text == "hello from the upload")));
    // Another tenant cannot run it: its uploads are its own.
    let other = client
        .trigger_run(authorized(
            proto::TriggerRunRequest {
                source_sha256: uploaded.sha256,
                ..trigger("pipeline \"sourced\"\nstage \"read\" { run \"cat greeting.txt\" }\n")
            },
            &running.other_tenant,
        ))
        .await
        .expect_err("another tenant's upload");
    assert_eq!(other.code(), Code::NotFound);
    running.stop.cancel();
    running.served.await.expect("the daemon stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_over_the_limit_is_refused() {
    let running = daemon().await;
    let mut client = client(&running).await;
    // The test daemon's limit is the default, 100 MiB: 101 MiB of one file is over it.
    let refused = upload(&mut client, &running.token, archive("x", 101 * 1024 * 1024))
        .await
        .expect_err("too large");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    running.stop.cancel();
    running.served.await.expect("the daemon stops");
}

/// Every log line `StreamLogs` sends for `request`, and how many messages carried them.
async fn logs(
    client: &mut BuildItClient<Channel>,
    token: &str,
    request: proto::StreamLogsRequest,
) -> (Vec<String>, usize) {
    let mut stream = client
        .stream_logs(authorized(request, token))
        .await
        .expect("logs")
        .into_inner();
    let mut lines = Vec::new();
    let mut messages = 0;
    while let Some(message) = tokio::time::timeout(Duration::from_secs(60), stream.message())
        .await
        .expect("the stream went silent")
        .expect("the stream failed")
    {
        messages += 1;
        lines.extend(
            message
                .lines
                .iter()
                .map(|line| String::from_utf8_lossy(&line.text).into_owned()),
        );
    }
    (lines, messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_of_one_stage_come_in_batches_live_and_from_the_store() {
    let running = daemon().await;
    let mut client = client(&running).await;
    let run = client
        .trigger_run(authorized(
            trigger("pipeline \"loud\"\nstage \"print\" { run \"seq 1 20000\" }\nstage \"other\" { run \"echo elsewhere\" }\n"),
            &running.token,
        ))
        .await
        .expect("trigger")
        .into_inner()
        .run
        .expect("a run");
    let request = |follow: bool| proto::StreamLogsRequest {
        run: run.id.clone(),
        stage: "print".to_owned(),
        follow,
        ..proto::StreamLogsRequest::default()
    };
    let expected: Vec<String> = std::iter::once("$ seq 1 20000".to_owned())
        .chain((1..=20_000).map(|n| n.to_string()))
        .collect();
    let (followed, messages) = logs(&mut client, &running.token, request(true)).await;
    assert!(followed == expected, "{} lines followed", followed.len());
    assert!(messages < 200, "{messages} messages for 20,000 lines");
    // After the end, without following: the same lines, from the store.
    let (stored, _) = logs(&mut client, &running.token, request(false)).await;
    assert!(stored == expected, "{} lines stored", stored.len());
    running.stop.cancel();
    running.served.await.expect("the daemon stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_the_daemon_speaks_tls_only() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("buildit.db"))
            .await
            .expect("store"),
    );
    let token = new_token();
    store
        .create_token("acme", "test", &hash_token(&token))
        .await
        .expect("token");
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("a certificate");
    let cert_pem = certified.cert.pem();
    let daemon = Daemon::bind(DaemonConfig {
        listen: "127.0.0.1:0".to_owned(),
        data_dir: dir.path().to_path_buf(),
        workers: 1,
        drain: Duration::from_secs(2),
        store,
        system: SystemConfig::defaults(dir.path()),
        tls: Some(buildit_grpc::TlsFiles {
            cert_pem: cert_pem.clone().into_bytes(),
            key_pem: certified.signing_key.serialize_pem().into_bytes(),
        }),
        restart_interrupted: true,
        serving: None,
        source_links: None,
    })
    .await
    .expect("bind");
    let port = daemon.local_addr().expect("address").port();
    let stop = CancellationToken::new();
    let served = {
        let stop = stop.clone();
        tokio::spawn(async move { daemon.serve(stop).await.expect("serve") })
    };
    // A client that trusts the certificate gets through.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .expect("address")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("a TLS connection");
    let mut client = BuildItClient::new(channel);
    let listed = client
        .list_runs(authorized(proto::ListRunsRequest::default(), &token))
        .await
        .expect("a call over TLS");
    assert!(listed.into_inner().runs.is_empty());
    // Plaintext is not spoken.
    let plain = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("address")
        .connect()
        .await;
    let refused = match plain {
        Err(_) => true,
        Ok(channel) => BuildItClient::new(channel)
            .list_runs(authorized(proto::ListRunsRequest::default(), &token))
            .await
            .is_err(),
    };
    assert!(refused, "a plaintext call went through");
    stop.cancel();
    served.await.expect("the daemon stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_run_and_its_key_outlive_the_daemon_that_queued_it() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let token = token_in(dir.path(), "acme").await;
    let request = || proto::TriggerRunRequest {
        idempotency_key: "push-7".to_owned(),
        ..trigger(PIPELINE)
    };
    // A daemon without workers queues the run and stops.
    let (address, stop, served) = daemon_on(dir.path(), 0).await;
    let mut client = BuildItClient::connect(address).await.expect("connect");
    let queued = client
        .trigger_run(authorized(request(), &token))
        .await
        .expect("trigger")
        .into_inner()
        .run
        .expect("a run");
    assert_eq!(queued.state, "queued");
    let listed = client
        .list_runs(authorized(proto::ListRunsRequest::default(), &token))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        listed.runs.first().map(|run| run.id.clone()),
        Some(queued.id.clone())
    );
    stop.cancel();
    served.await.expect("the first daemon stops");
    // The next daemon knows the run and the key, and runs it.
    let (address, stop, served) = daemon_on(dir.path(), 1).await;
    let mut client = BuildItClient::connect(address).await.expect("connect");
    let again = client
        .trigger_run(authorized(request(), &token))
        .await
        .expect("trigger again")
        .into_inner();
    assert!(again.existing);
    assert_eq!(again.run.map(|run| run.id), Some(queued.id.clone()));
    let events = watch(&mut client, &token, &queued.id, 0).await;
    let view = RunView::from_events(&events);
    assert_eq!(
        view.ending.map(|ending| ending.status),
        Some(RunOutcome::Succeeded)
    );
    stop.cancel();
    served.await.expect("the second daemon stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_cannot_start_says_why() {
    let running = daemon().await;
    let mut client = client(&running).await;
    // An archive the daemon stores (uploads are only size-checked) but refuses to unpack: a link out.
    let dir = tempfile::tempdir().expect("temporary directory");
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("escape")).expect("symlink");
    let output = std::process::Command::new("tar")
        .args(["-cf", "-", "-C"])
        .arg(dir.path())
        .arg("escape")
        .output()
        .expect("tar runs");
    let uploaded = upload(&mut client, &running.token, output.stdout)
        .await
        .expect("upload");
    let run = client
        .trigger_run(authorized(
            proto::TriggerRunRequest {
                source_sha256: uploaded.sha256,
                ..trigger(PIPELINE)
            },
            &running.token,
        ))
        .await
        .expect("trigger")
        .into_inner()
        .run
        .expect("a run");
    let started = Instant::now();
    let failed = loop {
        let got = client
            .get_run(authorized(
                proto::GetRunRequest {
                    run: run.id.clone(),
                },
                &running.token,
            ))
            .await
            .expect("get")
            .into_inner();
        if got.state == "failed" {
            break got;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still {}",
            got.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(failed.reason.contains("escape"), "{failed:?}");
    running.stop.cancel();
    running.served.await.expect("the daemon stops");
}
