//! The real `kubectl` against the fake: discovery, server-side tables, label selectors.

use tokio::process::Command;

use kube::api::DeleteParams;

use crate::support::{Harness, create_job, eventually, job, job_condition};

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
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .await
        .is_err()
    {
        println!("skipped: kubectl is not on PATH");
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
