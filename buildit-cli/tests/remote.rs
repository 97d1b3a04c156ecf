//! The remote CLI against a real `buildit daemon` on loopback: a run triggered and followed shows what the same
//! run shows locally, with the same exit codes; an invalid pipeline and a wrong token are refused.

#![expect(
    clippy::expect_used,
    reason = "a test fails loudly when its daemon or files cannot be set up"
)]

mod support;

use support::{Daemon, buildit};

/// Lines of a run's output without durations (`in 0.1s`, `0.1s` columns), which differ from run to run.
fn shape(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|line| !line.starts_with("recorded as "))
        .map(|line| {
            line.split_whitespace()
                .filter(|word| {
                    !(word.ends_with('s') && word[..word.len() - 1].parse::<f64>().is_ok())
                })
                .collect::<Vec<_>>()
                .join(" ")
                .replace(" in ", " ")
        })
        .filter(|line| !line.is_empty())
        .collect()
}

const PIPELINE: &str = r#"pipeline "remote"
stage "build" { run "echo hello from {branch}" }
stage "test" { needs "build"; run "echo testing"; run "exit 3" }
stage "after" { needs "test"; run "true" }
"#;

#[test]
fn a_followed_remote_run_shows_what_a_local_run_shows() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("daemon");
    let daemon = Daemon::on_free_port(&data, &["--log-format", "json"]);
    let created = buildit(
        dir.path(),
        &[
            "tokens",
            "create",
            "--tenant",
            "acme",
            "--database-url",
            &format!("sqlite:{}", data.join("buildit.db").display()),
        ],
        &[],
    );
    assert!(created.status.success(), "{created:?}");
    let token = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("work directory");
    std::fs::write(work.join("buildit.kdl"), PIPELINE).expect("pipeline");
    let remote_env = [
        ("BUILDIT_SERVER", daemon.address.as_str()),
        ("BUILDIT_TOKEN", token.as_str()),
    ];
    let remote = buildit(
        &work,
        &["pipelines", "trigger", "--follow", "--branch", "main"],
        &remote_env,
    );
    let local = buildit(&work, &["run", "--plain", "--branch", "main"], &[]);
    let remote_text = String::from_utf8_lossy(&remote.stdout).into_owned();
    let local_text = String::from_utf8_lossy(&local.stdout).into_owned();
    assert_eq!(remote.status.code(), Some(1), "{remote_text}");
    assert_eq!(local.status.code(), Some(1), "{local_text}");
    assert!(
        remote_text.contains("build | hello from main"),
        "{remote_text}"
    );
    assert_eq!(shape(&remote_text), shape(&local_text));

    // The daemon's runs, from the same commands that read a local store.
    let listed = buildit(&work, &["runs", "list", "--format", "json"], &remote_env);
    assert!(listed.status.success(), "{listed:?}");
    let runs: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("runs as JSON");
    let run_id = runs[0]["id"].as_str().expect("a run id").to_owned();
    assert_eq!(runs[0]["state"], "failed", "{runs}");
    let shown = buildit(&work, &["runs", "show", &run_id], &remote_env);
    let shown_text = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown_text.contains("critical path: build -> test"),
        "{shown_text}"
    );
    let logs = buildit(
        &work,
        &["runs", "logs", &run_id, "--stage", "build"],
        &remote_env,
    );
    assert_eq!(
        String::from_utf8_lossy(&logs.stdout),
        "$ echo hello from main\nhello from main\n"
    );
    let events = buildit(&work, &["runs", "events", &run_id], &remote_env);
    let seqs: Vec<u64> = String::from_utf8_lossy(&events.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).expect("an event")["seq"]
                .as_u64()
                .expect("a seq")
        })
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    // Cancelling a run that has ended changes nothing.
    let cancelled = buildit(&work, &["runs", "cancel", &run_id], &remote_env);
    assert!(
        String::from_utf8_lossy(&cancelled.stdout).contains("): failed"),
        "{cancelled:?}"
    );
    // Another tenant's token does not see the run: "not found", for every command.
    let other = buildit(
        dir.path(),
        &[
            "tokens",
            "create",
            "--tenant",
            "other",
            "--database-url",
            &format!("sqlite:{}", data.join("buildit.db").display()),
        ],
        &[],
    );
    assert!(other.status.success(), "{other:?}");
    let other_token = String::from_utf8_lossy(&other.stdout).trim().to_owned();
    let other_env = [
        ("BUILDIT_SERVER", daemon.address.as_str()),
        ("BUILDIT_TOKEN", other_token.as_str()),
    ];
    for command in [
        ["runs", "show", &run_id].as_slice(),
        &["runs", "logs", &run_id],
        &["runs", "events", &run_id],
        &["runs", "cancel", &run_id],
    ] {
        let refused = buildit(&work, command, &other_env);
        let said = String::from_utf8_lossy(&refused.stderr).into_owned();
        assert_eq!(refused.status.code(), Some(2), "{command:?}: {said}");
        assert!(said.contains("not found: no run"), "{command:?}: {said}");
    }
    let listed = buildit(&work, &["runs", "list", "--format", "json"], &other_env);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "[]");

    // Locally, cancelling needs a daemon.
    let local_cancel = buildit(&work, &["runs", "cancel", &run_id], &[]);
    assert_eq!(local_cancel.status.code(), Some(2));

    // An invalid pipeline: the daemon's diagnostics, with codes and positions, and exit 3.
    std::fs::write(
        work.join("bad.kdl"),
        "pipeline \"p\"\nstage \"a\" { rnu \"x\" }\n",
    )
    .expect("pipeline");
    let invalid = buildit(&work, &["pipelines", "trigger", "bad.kdl"], &remote_env);
    let said = String::from_utf8_lossy(&invalid.stderr).into_owned();
    assert_eq!(invalid.status.code(), Some(3), "{said}");
    assert!(said.contains("[buildit::config::unknown_node]"), "{said}");
    assert!(said.contains("bad.kdl:2:13"), "{said}");

    // A wrong token: refused, exit 2.
    let wrong = buildit(
        &work,
        &["pipelines", "trigger"],
        &[
            ("BUILDIT_SERVER", daemon.address.as_str()),
            ("BUILDIT_TOKEN", "bit_wrong"),
        ],
    );
    assert_eq!(wrong.status.code(), Some(2), "{wrong:?}");
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("unknown or revoked token"));

    // `buildit login` keeps the daemon and the token, checked, in a file only its owner reads; the remote commands
    // use it when no flag nor the environment says otherwise.
    let wrong_login = buildit(
        &work,
        &["login", "--server", &daemon.address, "--token", "bit_wrong"],
        &[],
    );
    assert_eq!(wrong_login.status.code(), Some(2), "{wrong_login:?}");
    let login_file = work.join(".config/buildit/login.json");
    assert!(!login_file.exists(), "a refused token is not kept");
    let login = buildit(
        &work,
        &["login", "--server", &daemon.address, "--token", &token],
        &[],
    );
    assert!(login.status.success(), "{login:?}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&login_file)
        .expect("login file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let queued = buildit(&work, &["pipelines", "trigger", "--no-upload"], &[]);
    assert!(queued.status.success(), "{queued:?}");
    assert!(String::from_utf8_lossy(&queued.stdout).starts_with("queued run "));
    std::fs::set_permissions(&login_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let exposed = buildit(&work, &["pipelines", "trigger", "--no-upload"], &[]);
    assert_eq!(exposed.status.code(), Some(2), "{exposed:?}");
    assert!(String::from_utf8_lossy(&exposed.stderr).contains("others can read it"));
    assert!(buildit(&work, &["logout"], &[]).status.success());
    assert!(!login_file.exists());

    // The daemon logged every call as JSON, with a request id and the tenant, and never a token.
    let log = daemon.log.lock().expect("log").clone();
    let calls: Vec<serde_json::Value> = log
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|record: &serde_json::Value| record["fields"]["message"] == "call")
        .collect();
    assert!(
        calls
            .iter()
            .any(|call| call["fields"]["tenant"] == "acme" && call["fields"]["request_id"].is_u64()),
        "{log:?}"
    );
    assert!(
        log.iter().any(|line| line.contains("call refused")),
        "{log:?}"
    );
    assert!(
        !log.iter()
            .any(|line| line.contains(&token) || line.contains("bit_wrong")),
        "{log:?}"
    );
}
