//! Watches: kube-rs's `watcher` over Pods (list, then watch; re-list after a forced expiry), and the raw
//! stream's `410 Gone`.

use std::time::Duration;

use axum::http::Request;
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::mpsc;

use crate::support::{Harness, create_job, job};

async fn expire(harness: &Harness) {
    let request = Request::post("/fake/watch/expire")
        .body(Vec::new())
        .expect("a request");
    harness
        .client
        .request_text(request)
        .await
        .expect("expire the watches");
}

/// What the watcher said, in short: `apply:NAME:PHASE`, `delete:NAME`, `init`, `init-apply:NAME`,
/// `init-done`, `error:CODE`.
fn describe(event: Result<watcher::Event<Pod>, watcher::Error>) -> String {
    let name = |pod: &Pod| pod.metadata.name.clone().unwrap_or_default();
    match event {
        Ok(watcher::Event::Apply(pod)) => {
            let phase = pod
                .status
                .as_ref()
                .and_then(|status| status.phase.clone())
                .unwrap_or_default();
            format!("apply:{}:{phase}", name(&pod))
        }
        Ok(watcher::Event::Delete(pod)) => format!("delete:{}", name(&pod)),
        Ok(watcher::Event::Init) => "init".to_owned(),
        Ok(watcher::Event::InitApply(pod)) => format!("init-apply:{}", name(&pod)),
        Ok(watcher::Event::InitDone) => "init-done".to_owned(),
        Err(watcher::Error::WatchError(status)) => format!("error:{}", status.code),
        Err(other) => format!("error:{other}"),
    }
}

/// Reads events until one starts with `prefix` (and contains `contains`); the events read.
async fn until(
    events: &mut mpsc::UnboundedReceiver<String>,
    prefix: &str,
    contains: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .unwrap_or_else(|_| panic!("no `{prefix}` event within 20 s; saw {seen:?}"))
            .expect("the watcher ended");
        let found = event.starts_with(prefix) && event.contains(contains);
        seen.push(event);
        if found {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_watcher_sees_pods_added_modified_deleted_and_relists_after_an_expiry() {
    let harness = Harness::start().await;
    let config = watcher::Config::default().labels("buildit.run");
    let mut stream = Box::pin(watcher(harness.pods(), config));
    let (sender, mut events) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            if sender.send(describe(event)).is_err() {
                return;
            }
        }
    });
    until(&mut events, "init-done", "").await;
    create_job(&harness, &job("watched", "sleep 1")).await;
    let seen = until(&mut events, "apply:watched-", ":Succeeded").await;
    assert!(
        seen.iter().any(|event| event.ends_with(":Running")),
        "{seen:?}"
    );
    assert!(
        seen.first()
            .is_some_and(|event| event.starts_with("apply:watched-")),
        "{seen:?}"
    );
    expire(&harness).await;
    let seen = until(&mut events, "init-done", "").await;
    assert_eq!(
        seen.first().map(String::as_str),
        Some("error:410"),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|event| event.starts_with("init-apply:watched-")),
        "re-listed: {seen:?}"
    );
    harness
        .jobs()
        .delete("watched", &DeleteParams::background())
        .await
        .expect("delete");
    until(&mut events, "delete:watched-", "").await;
    reader.abort();
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_watch_ends_with_410_after_an_expiry_and_old_versions_are_gone() {
    let harness = Harness::start().await;
    let secrets = harness.secrets();
    // Version 0 means "any version" to a watch: start from a real one.
    let first: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "first"},
    }))
    .expect("a secret");
    secrets
        .create(&PostParams::default(), &first)
        .await
        .expect("create");
    let listed = secrets.list(&Default::default()).await.expect("list");
    let version = listed.metadata.resource_version.expect("a version");
    let mut stream = secrets
        .watch(&WatchParams::default(), &version)
        .await
        .expect("watch")
        .boxed();
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "watched"},
    }))
    .expect("a secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create");
    let added = stream.next().await.expect("an event").expect("no error");
    assert!(
        matches!(added, WatchEvent::Added(secret) if secret.metadata.name.as_deref() == Some("watched"))
    );
    expire(&harness).await;
    let gone = stream.next().await.expect("an event").expect("no error");
    assert!(
        matches!(gone, WatchEvent::Error(ref status) if status.code == 410),
        "{gone:?}"
    );
    assert!(
        stream.next().await.is_none(),
        "the stream ends after the error"
    );
    // From the old version: 410 at once; from a fresh list: a working watch.
    let mut stale = secrets
        .watch(&WatchParams::default(), &version)
        .await
        .expect("watch")
        .boxed();
    let refused = stale.next().await.expect("an event").expect("no error");
    assert!(
        matches!(refused, WatchEvent::Error(ref status) if status.code == 410),
        "{refused:?}"
    );
    let fresh = secrets
        .list(&Default::default())
        .await
        .expect("list")
        .metadata
        .resource_version;
    let mut live = secrets
        .watch(&WatchParams::default(), &fresh.expect("a version"))
        .await
        .expect("watch")
        .boxed();
    secrets
        .delete("watched", &DeleteParams::default())
        .await
        .expect("delete");
    let deleted = live.next().await.expect("an event").expect("no error");
    assert!(matches!(deleted, WatchEvent::Deleted(_)), "{deleted:?}");
    harness.stop().await;
}
