//! What the command line's daemon tests share: `buildit` with a clean environment, a real `buildit daemon`
//! process on loopback, and tokens made with `buildit tokens create`.

#![allow(dead_code, reason = "each test file uses a part of it")]

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

/// `buildit` in `dir`, with none of the variables it reads from the environment and `HOME` set to `dir`.
pub fn buildit_command(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_buildit"));
    command
        .current_dir(dir)
        .env_remove("BUILDIT_SYSTEM")
        .env_remove("BUILDIT_DATABASE_URL")
        .env_remove("BUILDIT_SERVER")
        .env_remove("BUILDIT_TOKEN")
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", dir)
        .env("NO_COLOR", "1");
    command
}

/// Runs `buildit args` in `dir` with `env` set, and collects its output.
pub fn buildit(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = buildit_command(dir);
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("buildit runs")
}

/// A `buildit daemon` process: stopped with SIGTERM when dropped (unless it was killed).
pub struct Daemon {
    pub child: Child,
    /// `HOST:PORT`, as it printed it.
    pub address: String,
    /// What it logged after its first line.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `buildit daemon --listen LISTEN --data-dir DATA` with `extra` arguments, in `data`'s parent, and
    /// waits until it listens.
    pub fn start(data: &Path, listen: &str, extra: &[&str]) -> Self {
        let mut child = buildit_command(data.parent().expect("a parent"))
            .args(["daemon", "--listen", listen, "--data-dir"])
            .arg(data)
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .expect("the daemon starts");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = std::io::BufReader::new(stderr).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let address = first
            .strip_prefix("buildit daemon listening on ")
            .unwrap_or_else(|| panic!("the daemon did not start: {first}"))
            .trim()
            .to_owned();
        // The rest of its log is kept, and read so that it never blocks on a full pipe.
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(mut kept) = kept.lock() {
                    kept.push(line);
                }
            }
        });
        Self {
            child,
            address,
            log,
        }
    }

    /// On a free loopback port.
    pub fn on_free_port(data: &Path, extra: &[&str]) -> Self {
        Self::start(data, "127.0.0.1:0", extra)
    }

    /// Its URL for a gRPC client.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
        }
        let _ = self.child.wait();
    }
}

/// A new token of `tenant` (labelled `label`) in the SQLite store of the daemon data directory `data`.
pub fn create_token(dir: &Path, data: &Path, tenant: &str, label: &str) -> String {
    let created = buildit(
        dir,
        &[
            "tokens",
            "create",
            "--tenant",
            tenant,
            "--name",
            label,
            "--database-url",
            &format!("sqlite:{}", data.join("buildit.db").display()),
        ],
        &[],
    );
    assert!(created.status.success(), "{created:?}");
    String::from_utf8_lossy(&created.stdout).trim().to_owned()
}

/// The diagnostics of `pipeline` as `validate --format json` gives them: severity, code, line, column, message,
/// help.
pub fn diagnostics(pipeline: &str) -> Vec<(String, String, u64, u64, String, String)> {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    std::fs::write(dir.path().join("buildit.kdl"), pipeline)
        .unwrap_or_else(|error| panic!("{error}"));
    let output = buildit(dir.path(), &["validate", "--format", "json"], &[]);
    let records: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&output.stdout)));
    records
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|record| {
            let field = |key: &str| record[key].as_str().unwrap_or_default().to_owned();
            (
                field("severity"),
                field("code"),
                record["line"].as_u64().unwrap_or_default(),
                record["column"].as_u64().unwrap_or_default(),
                field("message"),
                field("help"),
            )
        })
        .collect()
}

/// `git ARGS` in `dir`, as a user with an identity, outside any repository around the test.
pub fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=BuildIt",
            "-c",
            "user.email=buildit@example.com",
        ])
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .status()
        .unwrap_or_else(|error| panic!("git: {error}"));
    assert!(status.success(), "git {args:?}");
}

/// Writes `content` to `path` under `dir`, making its directories.
pub fn write_file(dir: &Path, path: &str, content: &str) {
    let file = dir.join(path);
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).unwrap_or_else(|error| panic!("{error}"));
    }
    std::fs::write(file, content).unwrap_or_else(|error| panic!("{error}"));
}

/// Output bytes as text (lossily: a test that fails should still show what it got).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The JSON lines of `text`, every one of which must be JSON.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect()
}
