//! The `buildit` binary end to end: outputs, JSON shapes and the exit-code table.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `buildit` in `dir`, with a clean environment for the variables it reads.
fn buildit_command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_buildit"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("BUILDIT_SYSTEM")
        .env("HOME", dir)
        .env("NO_COLOR", "1");
    command
}

/// Runs `buildit` in `dir` and collects its output.
fn buildit(dir: &Path, args: &[&str]) -> Output {
    let result = buildit_command(dir, args).output();
    match result {
        Ok(output) => output,
        Err(error) => panic!("cannot run buildit: {error}"),
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn temp_dir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("cannot create a temporary directory: {error}"),
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    if let Err(error) = std::fs::write(dir.join(name), text) {
        panic!("cannot write {name}: {error}");
    }
}

fn json(text: &str) -> serde_json::Value {
    match serde_json::from_str(text) {
        Ok(value) => value,
        Err(error) => panic!("not JSON ({error}): {text}"),
    }
}

#[test]
fn every_example_pipeline_validates() {
    let examples = repo_root().join("examples");
    let mut count = 0;
    for entry in std::fs::read_dir(&examples).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "kdl") {
            let output = buildit(&examples, &["validate", &path.display().to_string()]);
            assert_eq!(
                output.status.code(),
                Some(0),
                "{}: {}",
                path.display(),
                stderr(&output)
            );
            count += 1;
        }
    }
    assert!(count >= 1, "no example pipelines found");
}

#[test]
fn plan_json_has_the_documented_shape() {
    let output = buildit(
        &repo_root(),
        &[
            "plan",
            "examples/hello.kdl",
            "--format",
            "json",
            "--branch",
            "feature/x",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let plan = json(&stdout(&output));
    assert_eq!(plan["pipeline"], "hello");
    let order: Vec<&str> = plan["order"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(order.len(), 7);
    for stage in plan["stages"].as_array().into_iter().flatten() {
        for key in [
            "name",
            "needs",
            "level",
            "skipped",
            "skip_reason",
            "matrix",
            "image",
            "executor",
        ] {
            assert!(stage.get(key).is_some(), "stage lacks `{key}`: {stage}");
        }
        let position = order.iter().position(|name| *name == stage["name"]);
        for need in stage["needs"].as_array().into_iter().flatten() {
            let need_position = order.iter().position(|name| *name == need);
            assert!(
                need_position < position,
                "{need} must come before {}",
                stage["name"]
            );
        }
    }
    let release = plan["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == "release");
    assert_eq!(
        release.map(|r| r["skipped"].clone()),
        Some(serde_json::Value::Bool(true))
    );
}

#[test]
fn plan_text_dot_and_mermaid() {
    let root = repo_root();
    let text = buildit(
        &root,
        &[
            "plan",
            "examples/hello.kdl",
            "--branch",
            "main",
            "--event",
            "push",
        ],
    );
    assert!(
        stdout(&text).starts_with("pipeline `hello`: 7 stages, 4 levels\n"),
        "{}",
        stdout(&text)
    );
    let dot = buildit(&root, &["plan", "examples/hello.kdl", "--format", "dot"]);
    assert!(stdout(&dot).starts_with("digraph \"hello\" {"));
    assert!(stdout(&dot).contains("s0 -> s1;"));
    let mermaid = buildit(
        &root,
        &["plan", "examples/hello.kdl", "--format", "mermaid"],
    );
    assert!(stdout(&mermaid).starts_with("flowchart LR\n"));
}

#[test]
fn invalid_configuration_exits_3_with_json_diagnostics() {
    let dir = temp_dir();
    write(
        dir.path(),
        "buildit.kdl",
        "pipeline \"p\"\nstage \"a\" {\n    imgae \"x\"\n    run \"y\"\n}\n",
    );
    let output = buildit(dir.path(), &["validate", "--format", "json"]);
    assert_eq!(output.status.code(), Some(3));
    let diagnostics = json(&stdout(&output));
    let first = &diagnostics[0];
    assert_eq!(first["code"], "buildit::config::unknown_node");
    assert_eq!(first["severity"], "error");
    assert_eq!(
        (first["line"].as_u64(), first["column"].as_u64()),
        (Some(3), Some(5))
    );
    assert_eq!(first["help"], "did you mean `image`?");
    assert!(
        first["message"]
            .as_str()
            .is_some_and(|m| m.contains("imgae"))
    );

    let text = buildit(dir.path(), &["validate"]);
    assert_eq!(text.status.code(), Some(3));
    let rendered = stderr(&text);
    assert!(
        rendered.contains("buildit::config::unknown_node"),
        "{rendered}"
    );
    assert!(rendered.contains("buildit.kdl:3:5"), "{rendered}");
    assert!(
        !rendered.contains('\u{1b}'),
        "NO_COLOR output must have no escape codes"
    );
    let plan = buildit(dir.path(), &["plan"]);
    assert_eq!(plan.status.code(), Some(3));
}

#[test]
fn warnings_exit_0() {
    let dir = temp_dir();
    write(
        dir.path(),
        "buildit.kdl",
        "pipeline \"p\"\nstage \"a\" { run \"x\" }\nstage \"b\" { run \"x\" }\nstage \"c\" needs=\"a\" needs=\"b\" { run \"x\" }\n",
    );
    let output = buildit(dir.path(), &["validate", "--format", "json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(json(&stdout(&output))[0]["severity"], "warning");
}

#[test]
fn missing_files_exit_3_with_a_clear_message() {
    let dir = temp_dir();
    let output = buildit(dir.path(), &["validate"]);
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).contains("pipeline file `buildit.kdl` not found"),
        "{}",
        stderr(&output)
    );
    let system = buildit(
        &repo_root(),
        &["validate", "examples/hello.kdl", "--system", "nope.kdl"],
    );
    assert_eq!(system.status.code(), Some(3));
    assert!(
        stderr(&system).contains("system configuration `nope.kdl` not found"),
        "{}",
        stderr(&system)
    );
}

#[test]
fn usage_errors_exit_2() {
    let root = repo_root();
    assert_eq!(buildit(&root, &["frobnicate"]).status.code(), Some(2));
    assert_eq!(
        buildit(&root, &["plan", "examples/hello.kdl", "--format", "yaml"])
            .status
            .code(),
        Some(2)
    );
    let unknown_stage = buildit(&root, &["plan", "examples/hello.kdl", "--stage", "pakage"]);
    assert_eq!(unknown_stage.status.code(), Some(2));
    assert!(
        stderr(&unknown_stage).contains("did you mean `package`?"),
        "{}",
        stderr(&unknown_stage)
    );
    assert_eq!(
        buildit(&root, &["plan", "examples/hello.kdl", "--env", "novalue"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(buildit(&root, &["--help"]).status.code(), Some(0));
}

#[test]
fn system_configuration_is_found_and_checked_against_the_pipeline() {
    let dir = temp_dir();
    write(
        dir.path(),
        "buildit.kdl",
        "pipeline \"p\"\nstage \"a\" {\n    image \"alpine\"\n    run \"x\"\n}\n",
    );
    // Found in the workspace without `--system`: only kubernetes is enabled, so the docker stage is refused.
    write(
        dir.path(),
        "buildit-system.kdl",
        "executor \"kubernetes\" { namespace \"ci\" }\n",
    );
    let output = buildit(dir.path(), &["validate", "--format", "json"]);
    assert_eq!(output.status.code(), Some(3), "{}", stdout(&output));
    let diagnostics = json(&stdout(&output));
    assert!(
        diagnostics[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("runs on `docker`")),
        "{diagnostics}"
    );
    assert_eq!(
        (
            diagnostics[0]["line"].as_u64(),
            diagnostics[0]["column"].as_u64()
        ),
        (Some(3), Some(11))
    );
    // With kubernetes as the default executor for image stages, the same pipeline is valid and plans there.
    write(
        dir.path(),
        "buildit-system.kdl",
        "executor \"local\"\nexecutor \"kubernetes\"\ndefault-executor \"kubernetes\"\n",
    );
    let valid = buildit(dir.path(), &["validate"]);
    assert_eq!(valid.status.code(), Some(0), "{}", stderr(&valid));
    let plan = json(&stdout(&buildit(dir.path(), &["plan", "--format", "json"])));
    assert_eq!(plan["stages"][0]["executor"], "kubernetes");
    // An invalid system file is reported with its own name.
    write(dir.path(), "buildit-system.kdl", "store \"sqlit\"\n");
    let invalid = buildit(dir.path(), &["validate", "--format", "json"]);
    assert_eq!(invalid.status.code(), Some(3));
    assert_eq!(json(&stdout(&invalid))[0]["help"], "did you mean `sqlite`?");
}

#[test]
fn hostile_branch_names_reach_the_shell_as_text() {
    let dir = temp_dir();
    write(
        dir.path(),
        "buildit.kdl",
        "pipeline \"p\"\nstage \"a\" {\n    run \"echo \\\"building {branch}\\\"\"\n    run \"echo 'in single {branch}'\"\n    run \"echo bare {branch}\"\n}\n",
    );
    let branch = "x$(touch${IFS}pwned)`touch${IFS}pwned2`'\\\";rm";
    let output = buildit(dir.path(), &["run", "--plain", "--branch", branch]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        !dir.path().join("pwned").exists() && !dir.path().join("pwned2").exists(),
        "the branch name was executed"
    );
    let text = stdout(&output);
    assert!(text.contains(&format!("a | building {branch}")), "{text}");
    assert!(text.contains(&format!("a | in single {branch}")), "{text}");
    assert!(text.contains(&format!("a | bare {branch}")), "{text}");
}

#[test]
fn branch_values_are_never_shell_syntax() {
    // `{branch}` is only substituted at run time, but the plan already evaluates `when` against hostile names.
    let dir = temp_dir();
    write(
        dir.path(),
        "buildit.kdl",
        "pipeline \"p\"\nstage \"a\" { when branch=\"main\"; run \"echo {branch}\" }\n",
    );
    let output = buildit(
        dir.path(),
        &["plan", "--format", "json", "--branch", "x;rm -rf ~"],
    );
    assert_eq!(output.status.code(), Some(0));
    let plan = json(&stdout(&output));
    assert_eq!(
        plan["stages"][0]["skip_reason"],
        "branch `x;rm -rf ~` does not match `main`"
    );
}

#[test]
fn run_executes_the_example_and_summarises_it() {
    let dir = temp_dir();
    let example = repo_root().join("examples/hello.kdl").display().to_string();
    let output = buildit(
        dir.path(),
        &["run", &example, "--branch", "main", "--plain"],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    let text = stdout(&output);
    assert!(text.contains("test (shard=2) | running shard 2"), "{text}");
    assert!(text.contains("release        | releasing main"), "{text}");
    assert!(text.contains("run succeeded in"), "{text}");
    assert!(text.contains("critical path: prepare -> "), "{text}");
    assert!(!text.contains('\u{1b}'), "plain output has no escape codes");
    assert!(dir.path().join("out/hello.tar").is_file());
}

#[test]
fn run_exit_codes_and_json_events() {
    let dir = temp_dir();
    write(
        dir.path(),
        "buildit.kdl",
        "pipeline \"p\"\nstage \"a\" { run \"echo hi\" }\nstage \"b\" { needs \"a\"; run \"exit 4\" }\n",
    );
    let output = buildit(dir.path(), &["run", "--format", "json"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "a failed run exits 1: {}",
        stderr(&output)
    );
    let events: Vec<serde_json::Value> = stdout(&output).lines().map(json).collect();
    assert_eq!(
        events.first().map(|e| e["type"].clone()),
        Some("run-started".into())
    );
    assert_eq!(
        events.last().map(|e| e["status"].clone()),
        Some("failed".into())
    );
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "log-line" && e["text"] == "hi" && e["stream"] == "stdout")
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "stage-finished" && e["stage"] == "b" && e["exit_code"] == 4)
    );
    write(
        dir.path(),
        "buildit.kdl",
        "pipeline \"p\"\nstage \"a\" { image \"alpine\"; run \"true\" }\n",
    );
    let docker = buildit(dir.path(), &["run"]);
    assert_eq!(docker.status.code(), Some(4), "{}", stderr(&docker));
}

#[test]
fn ctrl_c_stops_the_run_gracefully_with_exit_130() {
    let dir = temp_dir();
    write(
        dir.path(),
        "buildit.kdl",
        "pipeline \"p\"\nstage \"long\" { run \"echo $$ > shell.pid; trap 'echo stopped > stopped.txt; exit 143' TERM; sleep 30 & wait\" }\n",
    );
    let child = buildit_command(dir.path(), &["run", "--plain"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => panic!("cannot start buildit: {error}"),
    };
    let pid_file = dir.path().join("shell.pid");
    for _ in 0..100 {
        if pid_file.is_file() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert!(interrupted.is_ok_and(|status| status.success()));
    let started = std::time::Instant::now();
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "buildit did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("stopped.txt")).unwrap_or_default(),
        "stopped\n"
    );
}

#[test]
fn run_on_a_terminal_shows_a_progress_display() {
    // `script` gives the command a pseudo-terminal, as a user's shell would.
    let dir = temp_dir();
    write(
        dir.path(),
        "buildit.kdl",
        "pipeline \"p\"\nstage \"a\" { run \"echo from-a\" }\nstage \"b\" { needs \"a\"; run \"echo from-b\" }\n",
    );
    let command = format!("{} run", env!("CARGO_BIN_EXE_buildit"));
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(dir.path())
        .env_remove("NO_COLOR")
        .env("HOME", dir.path())
        .output();
    let output = match output {
        Ok(output) => output,
        Err(error) => panic!("`script` (util-linux) is needed for this test: {error}"),
    };
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let text = stdout(&output);
    assert!(text.contains("from-a") && text.contains("from-b"), "{text}");
    assert!(
        text.contains("2/2"),
        "the bar counts finished stages: {text}"
    );
    assert!(text.contains('\u{1b}'), "a terminal gets colors");
    assert!(text.contains("critical path: a -> b"), "{text}");
}

#[test]
fn a_closed_output_pipe_is_not_a_crash() {
    use std::io::Read as _;
    let dir = temp_dir();
    let stages: String = (0..2000)
        .map(|i| format!("stage \"s{i}\" {{ run \"true\" }}\n"))
        .collect();
    write(
        dir.path(),
        "buildit.kdl",
        &format!("pipeline \"p\"\n{stages}"),
    );
    let child = buildit_command(dir.path(), &["plan", "--format", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => panic!("cannot start buildit: {error}"),
    };
    let mut first = [0u8; 16];
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_exact(&mut first);
        // Dropping our end closes the pipe while buildit is still writing.
    }
    let output = match child.wait_with_output() {
        Ok(output) => output,
        Err(error) => panic!("{error}"),
    };
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn unreadable_files_are_json_records_too() {
    let dir = temp_dir();
    let missing = buildit(dir.path(), &["validate", "--format", "json"]);
    assert_eq!(missing.status.code(), Some(3));
    let records = json(&stdout(&missing));
    assert_eq!(records[0]["code"], "buildit::config::unreadable");
    assert_eq!(records[0]["file"], "buildit.kdl");
    if let Err(error) = std::fs::write(
        dir.path().join("buildit.kdl"),
        b"pipeline \"p\"\nstage \"\xff\"\n",
    ) {
        panic!("{error}");
    }
    let invalid = buildit(dir.path(), &["validate", "--format", "json"]);
    assert_eq!(invalid.status.code(), Some(3));
    let records = json(&stdout(&invalid));
    assert_eq!(
        (records[0]["line"].as_u64(), records[0]["column"].as_u64()),
        (Some(2), Some(8))
    );
}

#[test]
fn secret_store_variables_never_reach_stages_unmasked() {
    let dir = temp_dir();
    write(
        dir.path(),
        "buildit.kdl",
        "pipeline \"p\"\nstage \"a\" {\n    secrets \"TOKEN\"\n    run \"env | grep -c BUILDIT_SECRET_ || true\"\n    run \"echo env=[{env.BUILDIT_SECRET_OTHER}] token=$TOKEN\"\n}\n",
    );
    let output = buildit_command(dir.path(), &["run", "--plain"])
        .env("BUILDIT_SECRET_TOKEN", "tok-3n-value")
        .env("BUILDIT_SECRET_OTHER", "other-secret-value")
        .output();
    let output = match output {
        Ok(output) => output,
        Err(error) => panic!("{error}"),
    };
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", stderr(&output));
    assert!(
        text.contains("a | 0"),
        "no BUILDIT_SECRET_* variable is inherited: {text}"
    );
    assert!(text.contains("a | env=[] token=***"), "{text}");
    assert!(
        !text.contains("other-secret-value") && !text.contains("tok-3n-value"),
        "{text}"
    );
}
