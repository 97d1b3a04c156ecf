//! The real `kubectl` against the fake: discovery, server-side tables, label selectors, exec.

use std::process::Stdio;

use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use kube::api::DeleteParams;

use crate::support::{
    Harness, create_job, eventually, job, job_condition, job_pod_name, pod_running,
};

/// Whether `kubectl` is missing, said once per test that then skips.
async fn kubectl_missing() -> bool {
    let missing = Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .await
        .is_err();
    if missing {
        println!("skipped: kubectl is not on PATH");
    }
    missing
}

async fn kubectl(harness: &Harness, arguments: &[&str]) -> String {
    let output = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&harness.kubeconfig)
        .args(arguments)
        .output()
        .await
        .expect("run kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "kubectl {arguments:?} failed: {text}"
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_lists_what_exists_and_nothing_once_it_is_deleted() {
    if kubectl_missing().await {
        return;
    }
    let harness = Harness::start().await;
    let selector = ["get", "jobs,pods,secrets,pvc", "-l", "buildit.run"];
    assert!(
        kubectl(&harness, &selector)
            .await
            .contains("No resources found in default namespace.")
    );
    create_job(&harness, &job("listed", "echo hi")).await;
    job_condition(&harness, "listed", "Complete", 30).await;
    let listing = kubectl(&harness, &selector).await;
    assert!(
        listing.contains("job.batch/listed") && listing.contains("Complete"),
        "{listing}"
    );
    assert!(
        listing.contains("pod/listed-") && listing.contains("Completed"),
        "{listing}"
    );
    let logs = kubectl(&harness, &["logs", "job/listed"]).await;
    assert_eq!(logs, "hi\n");
    harness
        .jobs()
        .delete("listed", &DeleteParams::background())
        .await
        .expect("delete");
    eventually(15, "nothing listed", || async {
        kubectl(&harness, &selector)
            .await
            .contains("No resources found")
            .then_some(())
    })
    .await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_passes_stdin_through_and_exits_with_the_commands_code() {
    if kubectl_missing().await {
        return;
    }
    let harness = Harness::start().await;
    create_job(&harness, &job("holder", "sleep 3600")).await;
    let pod = job_pod_name(&harness, "holder").await;
    pod_running(&harness, &pod).await;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&harness.kubeconfig)
        .args([
            "exec",
            "-i",
            &pod,
            "--",
            "sh",
            "-c",
            "cat; echo err >&2; exit 4",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"hello\n").await.expect("write");
    drop(stdin);
    let output = child.wait_with_output().await.expect("kubectl ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello\n");
    assert_eq!(stderr, "err\ncommand terminated with exit code 4\n");
    harness.stop().await;
}
