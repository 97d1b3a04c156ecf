//! The remote CLI against a real `buildit daemon` on loopback: a run triggered and followed shows what the same
//! run shows locally, with the same exit codes; an invalid pipeline and a wrong token are refused.

#![expect(
    clippy::expect_used,
    reason = "a test fails loudly when its daemon or files cannot be set up"
)]

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

fn buildit(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_buildit"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("BUILDIT_SYSTEM")
        .env_remove("BUILDIT_DATABASE_URL")
        .env_remove("BUILDIT_SERVER")
        .env_remove("BUILDIT_TOKEN")
        .env("HOME", dir)
        .env("NO_COLOR", "1");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("buildit runs")
}

/// A daemon on a free loopback port, stopped (SIGTERM) when dropped.
struct Daemon {
    child: Child,
    address: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn daemon(data: &Path) -> Daemon {
    let mut child = Command::new(env!("CARGO_BIN_EXE_buildit"))
        .args(["daemon", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env_remove("BUILDIT_SYSTEM")
        .env_remove("BUILDIT_DATABASE_URL")
        .current_dir(data.parent().expect("a parent"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("the daemon starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let address = lines
        .next()
        .and_then(Result::ok)
        .and_then(|line| {
            line.strip_prefix("buildit daemon listening on ")
                .map(str::to_owned)
        })
        .expect("the daemon says where it listens");
    // Its later lines go nowhere; reading them keeps the pipe from filling.
    std::thread::spawn(move || for _ in lines {});
    Daemon { child, address }
}

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
    let daemon = daemon(&data);
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
}
