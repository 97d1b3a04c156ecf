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
        .env_remove("BUILDIT_DATABASE_URL")
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
    // Every executor an example may use (the Kubernetes one needs the system configuration to name it).
    let dir = temp_dir();
    write(
        dir.path(),
        "buildit-system.kdl",
        "executor \"local\"\nexecutor \"docker\"\nexecutor \"kubernetes\"\n",
    );
    let system = dir.path().join("buildit-system.kdl").display().to_string();
    let mut count = 0;
    for entry in std::fs::read_dir(&examples).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "kdl") {
            let output = buildit(
                &examples,
                &["validate", &path.display().to_string(), "--system", &system],
            );
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
    // The store was closed cleanly: its write-ahead log is folded into the database file, not left for the
    // next process to read through; and so after reading the history.
    let store = dir.path().join(".buildit");
    assert!(store.join("buildit.db").is_file());
    assert!(
        !store.join("buildit.db-wal").exists(),
        "write-ahead log left behind"
    );
    let listed = buildit(dir.path(), &["runs", "list"]);
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    assert!(
        !store.join("buildit.db-wal").exists(),
        "write-ahead log left behind"
    );
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
    // Docker that does not answer is an infrastructure error, before anything runs.
    let docker = match buildit_command(dir.path(), &["run"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
    {
        Ok(output) => output,
        Err(error) => panic!("{error}"),
    };
    assert_eq!(docker.status.code(), Some(4), "{}", stderr(&docker));
    assert!(
        stderr(&docker).contains("cannot reach Docker at `unix:///nonexistent/docker.sock`"),
        "{}",
        stderr(&docker)
    );
    assert!(
        !dir.path().join(".buildit/buildit.db").exists() || {
            let runs = buildit(dir.path(), &["runs", "list", "--format", "json"]);
            json(&stdout(&runs))
                .as_array()
                .is_some_and(|runs| runs.len() == 1)
        },
        "the refused run is not recorded"
    );
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

#[test]
fn secrets_too_short_to_mask_fail_their_stage_loudly_and_are_recorded() {
    let dir = temp_dir();
    write(
        dir.path(),
        "buildit.kdl",
        "pipeline \"p\"\nstage \"deploy\" {\n    secrets \"PIN\"\n    run \"echo pin=$PIN\"\n}\nstage \"lint\" { run \"echo linted\" }\n",
    );
    let output = buildit_command(dir.path(), &["run", "--plain"])
        .env("BUILDIT_SECRET_PIN", "x7")
        .output();
    let output = match output {
        Ok(output) => output,
        Err(error) => panic!("{error}"),
    };
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}{}", stderr(&output));
    let reason = "secret `PIN` is 2 bytes long; values shorter than 4 bytes cannot be masked in logs; BuildIt does not hand it to the stage";
    assert!(
        text.lines().any(|line| line.contains("deploy")
            && line.contains("failed")
            && line.contains(reason)),
        "{text}"
    );
    assert!(!text.contains("pin="), "the stage never ran: {text}");
    assert!(text.contains("linted"), "other stages run: {text}");
    let shown = buildit_ok(dir.path(), &["runs", "show", "1"], 0);
    assert!(shown.contains(reason), "the refusal is recorded: {shown}");
}

/// Runs `buildit` and checks its exit code.
fn buildit_ok(dir: &Path, args: &[&str], code: i32) -> String {
    let output = buildit(dir, args);
    assert_eq!(
        output.status.code(),
        Some(code),
        "buildit {args:?}: {}{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// Starts `buildit run --plain` in `dir`, with its output readable line by line as it comes.
fn spawn_plain_run(
    dir: &Path,
) -> (
    std::process::Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    use std::io::BufRead as _;
    let mut child = match buildit_command(dir, &["run", "--plain"])
        .stdout(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => panic!("spawn: {error}"),
    };
    let Some(out) = child.stdout.take() else {
        panic!("no stdout")
    };
    (child, std::io::BufReader::new(out).lines())
}

const HISTORY_PIPELINE: &str = r#"
pipeline "history"
stage "build" {
    run "echo compiling"
    run "echo 'warning: unused' >&2"
    run "printf 'no newline at the end'"
}
stage "flaky" {
    needs "build"
    retry 1
    run "if [ ! -f .tried ]; then touch .tried; echo first try; exit 3; fi"
    run "echo second try"
}
stage "lint" { run "exit 5" }
stage "deploy" { needs "lint"; run "echo never" }
"#;

#[test]
fn runs_list_show_and_logs_tell_exactly_what_happened() {
    let dir = temp_dir();
    write(dir.path(), "buildit.kdl", HISTORY_PIPELINE);
    buildit_ok(dir.path(), &["run", "--plain", "-j1"], 1);
    assert!(dir.path().join(".buildit/buildit.db").is_file());
    buildit_ok(dir.path(), &["run", "--plain", "--stage", "build"], 0);

    let runs = json(&buildit_ok(
        dir.path(),
        &["runs", "list", "--format", "json"],
        0,
    ));
    let listed: Vec<(u64, String, String)> = runs
        .as_array()
        .map(|runs| {
            runs.iter()
                .map(|run| {
                    (
                        run["number"].as_u64().unwrap_or(0),
                        run["pipeline"].as_str().unwrap_or("").to_owned(),
                        run["state"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        listed,
        [
            (2, "history".to_owned(), "succeeded".to_owned()),
            (1, "history".to_owned(), "failed".to_owned())
        ]
    );
    let text = buildit_ok(dir.path(), &["runs", "list", "--limit", "1"], 0);
    assert!(text.starts_with("RUN "), "{text}");
    assert_eq!(text.lines().count(), 2, "{text}");

    let shown = json(&buildit_ok(
        dir.path(),
        &["runs", "show", "history#1", "--format", "json"],
        0,
    ));
    assert_eq!(shown["state"], "failed");
    let attempts: Vec<(String, u64, String, Option<i64>)> = shown["attempts"]
        .as_array()
        .map(|attempts| {
            attempts
                .iter()
                .map(|a| {
                    (
                        a["stage"].as_str().unwrap_or("").to_owned(),
                        a["attempt"].as_u64().unwrap_or(99),
                        a["state"].as_str().unwrap_or("").to_owned(),
                        a["exit_code"].as_i64(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    for expected in [
        ("build", 1, "succeeded", Some(0)),
        ("flaky", 1, "failed", Some(3)),
        ("flaky", 2, "succeeded", Some(0)),
        ("lint", 1, "failed", Some(5)),
        ("deploy", 0, "skipped", None),
    ] {
        let expected = (
            expected.0.to_owned(),
            expected.1,
            expected.2.to_owned(),
            expected.3,
        );
        assert!(
            attempts.contains(&expected),
            "{expected:?} not in {attempts:?}"
        );
    }
    assert_eq!(attempts.len(), 5, "{attempts:?}");
    let text = buildit_ok(dir.path(), &["runs", "show", "1"], 0);
    assert!(text.starts_with("run history#1 ("), "{text}");
    assert!(
        text.contains("dependency"),
        "the skip reason is shown: {text}"
    );

    // Exact lines, in order, per stage and attempt.
    // stdout and stderr are separate pipes: each keeps its order, their interleaving is the reads'.
    let build = buildit_ok(dir.path(), &["runs", "logs", "1", "--stage", "build"], 0);
    let stdout_lines: Vec<&str> = build.lines().filter(|l| *l != "warning: unused").collect();
    assert_eq!(
        stdout_lines,
        [
            "$ echo compiling",
            "compiling",
            "$ echo 'warning: unused' >&2",
            "$ printf 'no newline at the end'",
            "no newline at the end"
        ],
        "{build}"
    );
    assert_eq!(build.lines().count(), 6, "{build}");
    let second = buildit_ok(
        dir.path(),
        &["runs", "logs", "1", "--stage", "flaky", "--attempt", "2"],
        0,
    );
    assert!(second.ends_with("second try\n"), "{second}");
    assert!(!second.lines().any(|l| l == "first try"), "{second}");
    let all = buildit_ok(dir.path(), &["runs", "logs", "1"], 0);
    assert!(all.contains("build | compiling\n"), "{all}");
    assert!(all.contains("flaky#2 | second try\n"), "{all}");
    let lines: Vec<serde_json::Value> = buildit_ok(
        dir.path(),
        &["runs", "logs", "1", "--stage", "build", "--format", "json"],
        0,
    )
    .lines()
    .map(json)
    .collect();
    let stderr_lines: Vec<&str> = lines
        .iter()
        .filter(|l| l["stream"] == "stderr")
        .filter_map(|l| l["text"].as_str())
        .collect();
    assert_eq!(stderr_lines, ["warning: unused"]);
    let numbers: Vec<u64> = lines.iter().filter_map(|l| l["line"].as_u64()).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6]);

    // Mistakes are usage errors with a way out.
    let missing = buildit(dir.path(), &["runs", "show", "7"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("no run `7`"),
        "{}",
        stderr(&missing)
    );
    let elsewhere = temp_dir();
    let none = buildit(elsewhere.path(), &["runs", "list"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(
        stderr(&none).contains("no run history"),
        "{}",
        stderr(&none)
    );
    assert!(!elsewhere.path().join(".buildit").exists());
    // Another store, by URL.
    let db = dir.path().join(".buildit/buildit.db").display().to_string();
    let by_url = buildit_ok(
        elsewhere.path(),
        &["runs", "list", "--database-url", &format!("sqlite:{db}")],
        0,
    );
    assert!(by_url.contains("history"), "{by_url}");
}

#[test]
fn a_killed_run_shows_as_interrupted() {
    let dir = temp_dir();
    write(
        dir.path(),
        "buildit.kdl",
        "pipeline \"long\"\nstage \"wait\" { run \"echo group $$\"; run \"sleep 30\" }\n",
    );
    let (mut child, lines) = spawn_plain_run(dir.path());
    let mut group = None;
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(pid) = line.split("| group ").nth(1) {
            group = pid.trim().parse::<i32>().ok();
            break;
        }
    }
    let Some(group) = group else {
        panic!("the stage never started")
    };
    // The store trails the live output by a moment (the recorder batches): wait until the attempt is recorded.
    let mut recorded = false;
    for _ in 0..100 {
        let shown = buildit(dir.path(), &["runs", "show", "1", "--format", "json"]);
        if shown.status.success() && json(&stdout(&shown))["attempts"][0]["state"] == "running" {
            recorded = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(recorded, "the running attempt never reached the store");
    // kill -9: no chance to record anything more. The stage's own process group is cleaned up by hand.
    let _ = child.kill();
    let _ = child.wait();
    let _ = Command::new("kill")
        .args(["-9", "--", &format!("-{group}")])
        .status();

    let shown = json(&buildit_ok(
        dir.path(),
        &["runs", "show", "1", "--format", "json"],
        0,
    ));
    assert_eq!(shown["state"], "interrupted", "{shown}");
    assert!(
        shown["reason"].as_str().is_some_and(|r| r.contains("gone")),
        "{shown}"
    );
    assert_eq!(shown["attempts"][0]["state"], "interrupted", "{shown}");
    // What was recorded before the kill is still there, and the database takes new runs.
    let logs = buildit_ok(dir.path(), &["runs", "logs", "1", "--stage", "wait"], 0);
    assert!(logs.contains("group "), "{logs}");
    write(
        dir.path(),
        "buildit.kdl",
        "pipeline \"long\"\nstage \"wait\" { run \"true\" }\n",
    );
    buildit_ok(dir.path(), &["run", "--plain"], 0);
    let runs = json(&buildit_ok(
        dir.path(),
        &["runs", "list", "--format", "json"],
        0,
    ));
    assert_eq!(runs[0]["number"], 2);
    assert_eq!(runs[0]["state"], "succeeded");
    assert_eq!(runs[1]["state"], "interrupted");
}

/// Whether process `pid` runs (exists and is not a zombie), and when it started (to tell a reused id).
fn running_since(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (field 3), ..., start time (field 22).
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

#[test]
fn a_killed_runner_takes_its_stages_and_their_background_processes_with_it() {
    let dir = temp_dir();
    // The shell, a background process, a daemon in a session of its own (out of the group's reach), and one
    // with a cleaned environment (in the group): each writes its id, then all wait far longer than the test.
    write(
        dir.path(),
        "buildit.kdl",
        r#"pipeline "orphans"
stage "wait" {
    run "echo $$ >> pids"
    run "sh -c 'echo $$ >> pids; exec sleep 300' &"
    run "(setsid sh -c 'echo $$ >> pids; exec sleep 300' >/dev/null 2>&1 &)"
    run "env -i /bin/sh -c 'echo $$ >> pids; exec sleep 300' &"
    run "i=0; while [ \"$(wc -l < pids)\" -lt 4 ] && [ $i -lt 1000 ]; do i=$((i + 1)); sleep 0.01; done"
    run "echo all started"
    run "sleep 300"
}
"#,
    );
    let (mut child, lines) = spawn_plain_run(dir.path());
    // Read on a thread of its own: a stage that never gets there must not hang the test.
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let started = lines
            .map_while(Result::ok)
            .any(|line| line.contains("| all started"));
        let _ = sender.send(started);
    });
    let started = receiver
        .recv_timeout(std::time::Duration::from_secs(30))
        .unwrap_or(false);
    let pids: Vec<i32> = std::fs::read_to_string(dir.path().join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect();
    let before: Vec<(i32, Option<u64>)> =
        pids.iter().map(|pid| (*pid, running_since(*pid))).collect();
    let _ = child.kill();
    let _ = child.wait();
    assert!(started, "the stage never started its processes");
    assert_eq!(pids.len(), 4, "{pids:?}");
    assert!(
        before.iter().all(|(_, since)| since.is_some()),
        "{before:?}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut left: Vec<i32>;
    loop {
        left = before
            .iter()
            .filter(|(pid, since)| running_since(*pid) == *since)
            .map(|(pid, _)| *pid)
            .collect();
        if left.is_empty() || std::time::Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for pid in &left {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    assert!(
        left.is_empty(),
        "still running after the runner was killed: {left:?}"
    );
}

/// A fresh database on the test PostgreSQL server (`BUILDIT_TEST_DATABASE_URL`), or `None` outside CI.
fn postgres_database(name: &str) -> Option<String> {
    let Ok(server) = std::env::var("BUILDIT_TEST_DATABASE_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "BUILDIT_TEST_DATABASE_URL is not set: CI must start PostgreSQL for these tests"
        );
        eprintln!("skipped: set BUILDIT_TEST_DATABASE_URL to run the PostgreSQL end-to-end test");
        return None;
    };
    let database = format!("{name}_{}", std::process::id());
    let created = Command::new("psql")
        .args([server.as_str(), "-v", "ON_ERROR_STOP=1", "-qc"])
        .arg(format!("CREATE DATABASE {database}"))
        .status();
    assert!(
        matches!(created, Ok(status) if status.success()),
        "psql: {created:?}"
    );
    server
        .rsplit_once('/')
        .map(|(base, _)| format!("{base}/{database}"))
}

fn psql(url: &str, query: &str) -> String {
    match Command::new("psql").args([url, "-AtXc", query]).output() {
        Ok(output) if output.status.success() => stdout(&output),
        Ok(output) => panic!("psql {query}: {}", stderr(&output)),
        Err(error) => panic!("psql: {error}"),
    }
}

#[test]
fn runs_are_recorded_in_postgresql_when_the_system_configuration_says_so() {
    let Some(url) = postgres_database("buildit_cli") else {
        return;
    };
    let dir = temp_dir();
    write(dir.path(), "buildit.kdl", HISTORY_PIPELINE);
    // The password-free URL comes from the environment, as a real configuration would take its secret part.
    write(
        dir.path(),
        "buildit-system.kdl",
        "store \"postgres\" url=\"{env.HISTORY_DATABASE_URL}\"\n",
    );
    let output = buildit_command(dir.path(), &["run", "--plain", "-j1"])
        .env("HISTORY_DATABASE_URL", &url)
        .output();
    let output = match output {
        Ok(output) => output,
        Err(error) => panic!("{error}"),
    };
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        !dir.path().join(".buildit/buildit.db").exists(),
        "nothing went to SQLite"
    );
    // The tables hold exactly what happened.
    assert_eq!(
        psql(&url, "SELECT pipeline, number, status FROM pipeline_runs"),
        "history|1|failed\n"
    );
    assert_eq!(
        psql(
            &url,
            "SELECT stage || ':' || attempt || ':' || status || ':' || coalesce(exit_code::text, '-') \
             FROM stage_results ORDER BY stage, attempt"
        ),
        "build:1:succeeded:0\ndeploy:0:skipped:-\nflaky:1:failed:3\nflaky:2:succeeded:0\nlint:1:failed:5\n"
    );
    assert_eq!(
        psql(
            &url,
            "SELECT sum(line_count) FROM logs WHERE stage = 'build'"
        ),
        "6\n"
    );
    assert_eq!(
        psql(&url, "SELECT count(*) FROM tenants WHERE id = 'default'"),
        "1\n"
    );
    // And the CLI reads them back through the same configuration.
    let logs = buildit_command(dir.path(), &["runs", "logs", "1", "--stage", "flaky"])
        .env("HISTORY_DATABASE_URL", &url)
        .output();
    let logs = match logs {
        Ok(logs) => stdout(&logs),
        Err(error) => panic!("{error}"),
    };
    assert!(
        logs.contains("first try\n") && logs.ends_with("second try\n"),
        "{logs}"
    );
}

/// Whether a Docker Engine answers (in CI it must), with the test image built.
/// Held by every test that runs container stages: each `buildit run` sweeps what dead runners left, so a test that
/// kills a run and counts what `buildit gc` removes must not have another test's run sweep it first.
static DOCKER_RUNS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Whether Docker answers (the test image built); while the guard lives, no other test runs container stages.
fn docker_ready() -> Option<std::sync::MutexGuard<'static, ()>> {
    let guard = DOCKER_RUNS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let answers = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !answers {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide a Docker Engine"
        );
        eprintln!("skipped: no Docker Engine");
        return None;
    }
    let built = Command::new("bash")
        .arg(repo_root().join("scripts/build-test-image.sh"))
        .status();
    assert!(matches!(built, Ok(status) if status.success()), "{built:?}");
    Some(guard)
}

/// The ids `docker <listing>` prints for objects carrying `label` (`listing`: `ps -a`, `volume ls`, ...).
fn labelled(listing: &[&str], label: &str) -> Vec<String> {
    let filter = format!("label={label}");
    match Command::new("docker")
        .args(listing)
        .args(["-q", "--filter", &filter])
        .output()
    {
        Ok(output) if output.status.success() => {
            stdout(&output).lines().map(str::to_owned).collect()
        }
        Ok(output) => panic!("docker {}: {}", listing.join(" "), stderr(&output)),
        Err(error) => panic!("docker {}: {error}", listing.join(" ")),
    }
}

fn run_volumes(label: &str) -> Vec<String> {
    labelled(&["volume", "ls"], label)
}

fn run_containers(label: &str) -> Vec<String> {
    labelled(&["ps", "-a"], label)
}

/// Starts a `buildit run` of a container stage that waits, kills it with SIGKILL once the stage runs, and
/// returns the run's label (its container is left behind).
fn kill_a_container_run(dir: &Path, number: u64) -> String {
    write(
        dir,
        "buildit.kdl",
        "pipeline \"boxed\"\nstage \"wait\" { image \"buildit-test/busybox:latest\"; run \"echo inside\"; run \"sleep 60\" }\n",
    );
    let (mut child, mut lines) = spawn_plain_run(dir);
    assert!(
        lines.any(|line| line.is_ok_and(|l| l.ends_with("| inside"))),
        "the container stage never started"
    );
    let shown = json(&buildit_ok(
        dir,
        &["runs", "show", &number.to_string(), "--format", "json"],
        0,
    ));
    let label = format!("buildit.run={}", shown["id"].as_str().unwrap_or_default());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        run_containers(&label).len(),
        2,
        "the killed run's stage container and workspace holder are still there"
    );
    assert_eq!(
        run_volumes(&label).len(),
        1,
        "the killed run's workspace volume"
    );
    label
}

#[test]
fn a_run_that_failed_only_through_the_infrastructure_exits_4() {
    let Some(_docker) = docker_ready() else {
        return;
    };
    let dir = temp_dir();
    // An image nobody can pull (a registry that refuses connections), and a host stage that goes on.
    write(
        dir.path(),
        "buildit.kdl",
        "pipeline \"pulls\"\nstage \"boxed\" { image \"127.0.0.1:9/buildit-absent:1\"; run \"true\" }\nstage \"host\" { run \"true\" }\n",
    );
    let text = buildit_ok(dir.path(), &["run", "--plain"], 4);
    assert!(text.contains("boxed | ✗ failed"), "{text}");
    assert!(text.contains("running it again may succeed"), "{text}");
    let events = buildit_ok(dir.path(), &["run", "--format", "json"], 4);
    let failure = events
        .lines()
        .map(json)
        .find(|event| event["type"] == "stage-finished" && event["stage"] == "boxed");
    assert_eq!(
        failure.as_ref().map(|event| event["failure"].clone()),
        Some(serde_json::json!("image-pull")),
        "{events}"
    );
    // The same run with a stage of its own failing is the stage's failure: exit 1.
    write(
        dir.path(),
        "buildit.kdl",
        "pipeline \"pulls\"\nstage \"boxed\" { image \"127.0.0.1:9/buildit-absent:1\"; run \"true\" }\nstage \"host\" { run \"exit 3\" }\n",
    );
    let text = buildit_ok(dir.path(), &["run", "--plain"], 1);
    assert!(!text.contains("running it again may succeed"), "{text}");
}

#[test]
fn containers_of_a_killed_run_are_swept_by_the_next_run_and_by_gc() {
    let Some(_docker) = docker_ready() else {
        return;
    };
    let dir = temp_dir();
    let first = kill_a_container_run(dir.path(), 1);
    write(
        dir.path(),
        "buildit.kdl",
        "pipeline \"boxed\"\nstage \"quick\" { image \"buildit-test/busybox:latest\"; run \"true\" }\n",
    );
    buildit_ok(dir.path(), &["run", "--plain"], 0);
    assert!(
        run_containers(&first).is_empty(),
        "the next run left the container"
    );
    assert!(
        run_volumes(&first).is_empty(),
        "the next run left the volume"
    );
    let second = kill_a_container_run(dir.path(), 3);
    let text = buildit_ok(dir.path(), &["gc"], 0);
    assert!(text.starts_with("removed "), "{text}");
    assert!(run_containers(&second).is_empty(), "gc left the container");
    assert!(run_volumes(&second).is_empty(), "gc left the volume");
    // At least its volume (another test's killed run, gone at the same moment, may be swept with it).
    let volumes = text
        .split(" volume")
        .next()
        .and_then(|before| before.rsplit(' ').next())
        .and_then(|count| count.parse::<u32>().ok());
    assert!(volumes.is_some_and(|count| count >= 1), "{text}");
    // The killed runs show as interrupted.
    let runs = json(&buildit_ok(
        dir.path(),
        &["runs", "list", "--format", "json"],
        0,
    ));
    let states: Vec<&str> = runs
        .as_array()
        .map(|runs| runs.iter().filter_map(|r| r["state"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(states, ["interrupted", "succeeded", "interrupted"]);
}

#[test]
fn the_docker_example_runs() {
    let Some(_docker) = docker_ready() else {
        return;
    };
    let dir = temp_dir();
    let example = repo_root()
        .join("examples/docker.kdl")
        .display()
        .to_string();
    let text = buildit_ok(dir.path(), &["run", &example, "--plain"], 0);
    assert!(
        text.contains("package        | hello from a container (Linux, stage build)"),
        "{text}"
    );
    assert!(text.contains("test (shard=2) | shard 2 passed"), "{text}");
    assert!(dir.path().join("out/greeting.tar").is_file());
    // The container stages worked in the run's volume: only artifacts reached the host workspace.
    let mut files: Vec<String> = std::fs::read_dir(dir.path().join("out"))
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    assert_eq!(files, ["greeting.tar", "greeting.txt"]);
}

#[test]
fn ctrl_c_on_a_container_run_leaves_no_container_network_or_volume() {
    let Some(_docker) = docker_ready() else {
        return;
    };
    let dir = temp_dir();
    write(
        dir.path(),
        "buildit.kdl",
        "pipeline \"boxed\"\nstage \"wait\" {\n    image \"buildit-test/busybox:latest\"\n    service \"side\" { image \"buildit-test/busybox:latest\"; command \"sleep\" \"60\" }\n    run \"echo inside\"\n    run \"sleep 60\"\n}\n",
    );
    let (mut child, mut lines) = spawn_plain_run(dir.path());
    assert!(
        lines.any(|line| line.is_ok_and(|l| l.ends_with("| inside"))),
        "the container stage never started"
    );
    let shown = json(&buildit_ok(
        dir.path(),
        &["runs", "show", "1", "--format", "json"],
        0,
    ));
    let label = format!("buildit.run={}", shown["id"].as_str().unwrap_or_default());
    assert_eq!(run_volumes(&label).len(), 1, "the run's workspace volume");
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert!(interrupted.is_ok_and(|status| status.success()));
    let status = child.wait();
    assert_eq!(status.ok().and_then(|s| s.code()), Some(130));
    assert!(run_containers(&label).is_empty(), "containers left");
    assert!(run_volumes(&label).is_empty(), "volumes left");
    let networks = labelled(&["network", "ls"], &label);
    assert!(networks.is_empty(), "networks left: {networks:?}");
}

/// A valid one-stage pipeline, and the same with a misspelt node.
const ONE_STAGE: &str = "pipeline \"p\"\nstage \"a\" { run \"true\" }\n";
const ONE_STAGE_MISSPELT: &str = "pipeline \"p\"\nstage \"a\" { runn \"true\" }\n";

/// `buildit run` in `dir`, which must stop on its configuration (exit 3); its stderr.
fn refused_run(dir: &Path) -> String {
    let output = buildit(dir, &["run", "--plain"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    stderr(&output)
}

#[test]
fn a_broken_system_configuration_is_reported_once_and_nothing_is_opened() {
    let dir = temp_dir();
    write(dir.path(), "buildit.kdl", ONE_STAGE);
    write(
        dir.path(),
        "buildit-system.kdl",
        "store \"sqlite\"\nfrobnicate 1\n",
    );
    let errors = refused_run(dir.path());
    // Read twice (once early, quietly, to find the store), reported once.
    assert_eq!(
        errors.matches("unknown node `frobnicate`").count(),
        1,
        "{errors}"
    );
    assert!(!dir.path().join(".buildit").exists());
}

#[test]
fn a_broken_pipeline_leaves_no_store_behind() {
    let dir = temp_dir();
    write(dir.path(), "buildit.kdl", ONE_STAGE_MISSPELT);
    refused_run(dir.path());
    assert!(!dir.path().join(".buildit").exists());
    // Once the pipeline is fixed, the store is created and the run recorded; a broken one then still reports
    // its errors (the existing store is opened meanwhile) and records nothing.
    write(dir.path(), "buildit.kdl", ONE_STAGE);
    buildit_ok(dir.path(), &["run", "--plain"], 0);
    write(dir.path(), "buildit.kdl", ONE_STAGE_MISSPELT);
    refused_run(dir.path());
    let runs = json(&stdout(&buildit(
        dir.path(),
        &["runs", "list", "--format", "json"],
    )));
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
}

/// Runs `buildit` in `dir`, killing it if it has not answered within `limit` (a read that blocks, a parse that
/// takes minutes): the test then fails instead of hanging.
fn buildit_within(
    dir: &Path,
    args: &[&str],
    limit: std::time::Duration,
) -> (Output, std::time::Duration) {
    let started = std::time::Instant::now();
    let child = buildit_command(dir, args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => panic!("cannot start buildit: {error}"),
    };
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`buildit {}` did not answer within {limit:?}",
                    args.join(" ")
                );
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(10)),
            Err(error) => panic!("{error}"),
        }
    }
    let elapsed = started.elapsed();
    match child.wait_with_output() {
        Ok(output) => (output, elapsed),
        Err(error) => panic!("{error}"),
    }
}

/// The bound the tests allow for an answer: the goal is well under a second; this leaves room for a busy machine
/// and an unoptimised build.
const ANSWER_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

#[test]
fn special_files_are_refused_at_once() {
    let dir = temp_dir();
    let fifo = dir.path().join("pipe.kdl");
    match Command::new("mkfifo").arg(&fifo).status() {
        Ok(status) if status.success() => {}
        other => panic!("mkfifo: {other:?}"),
    }
    let fifo = fifo.display().to_string();
    for (file, kind) in [
        ("/dev/zero", "a character device"),
        ("/dev/urandom", "a character device"),
        (fifo.as_str(), "a FIFO"),
    ] {
        for command in ["validate", "plan", "run"] {
            let (output, elapsed) = buildit_within(dir.path(), &[command, file], ANSWER_LIMIT);
            let text = stderr(&output);
            assert_eq!(output.status.code(), Some(3), "{command} {file}: {text}");
            assert!(
                text.contains(&format!(
                    "pipeline file `{file}` is {kind}, not a regular file"
                )),
                "{command} {file}: {text}"
            );
            assert!(elapsed < ANSWER_LIMIT, "{command} {file}: {elapsed:?}");
        }
    }
    let (output, _) = buildit_within(
        dir.path(),
        &["validate", "--system", "/dev/zero", "/dev/null"],
        ANSWER_LIMIT,
    );
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).contains("system configuration `/dev/zero` is a character device"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_growing_file_is_refused_at_the_size_limit() {
    let dir = temp_dir();
    let path = dir.path().join("buildit.kdl");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            use std::io::Write as _;
            let Ok(mut file) = std::fs::File::create(&path) else {
                return;
            };
            let chunk = "// a comment line that keeps coming\n".repeat(1024);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if file.write_all(chunk.as_bytes()).is_err() {
                    return;
                }
            }
        })
    };
    // Past the limit already, and still growing while buildit reads it.
    while std::fs::metadata(&path).map_or(0, |m| m.len()) < 2 << 20 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (output, elapsed) = buildit_within(dir.path(), &["validate"], ANSWER_LIMIT);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = writer.join();
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("pipeline file `buildit.kdl` is larger than 1 MiB"),
        "{}",
        stderr(&output)
    );
    assert!(elapsed < ANSWER_LIMIT);
}

#[test]
fn a_megabyte_of_one_token_is_refused_quickly() {
    let dir = temp_dir();
    for token in [
        "= ", "\\ ", "( ", "} ", "# ", "stage ", "a= ", "\" ", "/* */ ", "; ",
    ] {
        let text = token.repeat((1 << 20) / token.len());
        write(dir.path(), "buildit.kdl", &text);
        let (output, elapsed) = buildit_within(dir.path(), &["validate"], ANSWER_LIMIT);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(3), "{token:?}: {text}");
        assert!(!text.contains("panicked"), "{token:?}: {text}");
        assert!(text.contains("buildit::config::"), "{token:?}: {text}");
        assert!(elapsed < ANSWER_LIMIT, "{token:?}: {elapsed:?}");
    }
}

#[test]
fn a_very_long_stage_name_is_refused_by_validate() {
    let dir = temp_dir();
    let name = "s".repeat(70_000);
    write(
        dir.path(),
        "buildit.kdl",
        &format!("pipeline \"p\"\nstage \"{name}\" {{\n    run \"true\"\n}}\n"),
    );
    for command in ["validate", "run"] {
        let (output, _) = buildit_within(dir.path(), &[command], ANSWER_LIMIT);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(3), "{command}: {text:.2000}");
        assert!(
            text.contains("stage name is 70000 bytes long; at most 128 bytes are allowed"),
            "{command}: {text:.2000}"
        );
        assert!(!text.contains("panicked"), "{command}: {text:.2000}");
    }
}

#[test]
fn the_runs_show_hint_works_from_any_directory_and_the_data_dir_ignores_itself() {
    let root = temp_dir();
    let workspace = root.path().join("my workspace");
    if let Err(error) = std::fs::create_dir(&workspace) {
        panic!("{error}");
    }
    write(
        &workspace,
        "buildit.kdl",
        "pipeline \"p\"\nstage \"a\" {\n    run \"true\"\n}\n",
    );
    let output = buildit(&workspace, &["run", "--plain"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    let Some(hint) = text
        .lines()
        .find_map(|line| line.strip_prefix("recorded as p#1 (`"))
        .and_then(|rest| rest.strip_suffix("`)"))
    else {
        panic!("no hint in {text}");
    };
    assert!(hint.starts_with("buildit runs show "), "{hint}");
    // Pasted into a shell elsewhere (the workspace path has a space in it), it shows the run.
    let elsewhere = temp_dir();
    let shown = Command::new("sh")
        .arg("-c")
        .arg(format!("PATH=\"$BUILDIT_DIR:$PATH\"; {hint}"))
        .env(
            "BUILDIT_DIR",
            Path::new(env!("CARGO_BIN_EXE_buildit"))
                .parent()
                .unwrap_or(Path::new("/")),
        )
        .current_dir(elsewhere.path())
        .env("HOME", elsewhere.path())
        .env_remove("BUILDIT_SYSTEM")
        .env_remove("BUILDIT_DATABASE_URL")
        .output();
    let shown = match shown {
        Ok(output) => output,
        Err(error) => panic!("{error}"),
    };
    assert_eq!(shown.status.code(), Some(0), "{hint}: {}", stderr(&shown));
    assert!(stdout(&shown).contains("succeeded"), "{}", stdout(&shown));
    match std::fs::read_to_string(workspace.join(".buildit/.gitignore")) {
        Ok(ignore) => assert!(ignore.lines().any(|line| line == "*"), "{ignore}"),
        Err(error) => panic!("no .buildit/.gitignore: {error}"),
    }
}

#[test]
fn gc_prunes_old_and_oversized_caches_and_artifacts() {
    let dir = temp_dir();
    let data = dir.path().join(".buildit");
    let day = std::time::Duration::from_secs(86_400);
    let now = std::time::SystemTime::now();
    let file = |path: PathBuf, bytes: usize, age: std::time::Duration| {
        if let Some(parent) = path.parent()
            && let Err(error) = std::fs::create_dir_all(parent)
        {
            panic!("{error}");
        }
        write(dir.path(), &path.display().to_string(), &"x".repeat(bytes));
        let set = std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(now - age));
        if let Err(error) = set {
            panic!("{error}");
        }
    };
    file(data.join("cache/old.tar"), 100, day * 40);
    file(data.join("cache/older-big.tar"), 1000, day * 3);
    file(data.join("cache/newer-big.tar"), 1000, day);
    file(
        data.join("artifacts/18eed40ee02b4296-0001/build/out.txt"),
        10,
        day * 40,
    );
    file(
        data.join("artifacts/18eed40ee02b4297-0002/build/out.txt"),
        10,
        std::time::Duration::ZERO,
    );
    // What else the artifact directory holds is not BuildIt's to prune, however old.
    file(data.join("artifacts/notes.txt"), 10, day * 40);
    file(data.join("artifacts/photos/2020.jpg"), 10, day * 40);
    file(data.join("cache/readme"), 10, day * 40);
    // No Docker Engine here: this gc must not sweep the leftovers that the Docker tests running beside it
    // count on sweeping themselves.
    let output = buildit_command(
        dir.path(),
        &["gc", "--max-age", "30d", "--max-size", "1500"],
    )
    .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    .output();
    let output = match output {
        Ok(output) => output,
        Err(error) => panic!("cannot run buildit: {error}"),
    };
    // The Docker sweep comes after the files: without Docker it fails (4), with the files already pruned.
    assert!(
        matches!(output.status.code(), Some(0 | 4)),
        "{}",
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("removed 2 cache entries (1100 bytes)"),
        "{}",
        stdout(&output)
    );
    assert!(!data.join("cache/old.tar").exists());
    assert!(!data.join("cache/older-big.tar").exists());
    assert!(data.join("cache/newer-big.tar").exists());
    assert!(!data.join("artifacts/18eed40ee02b4296-0001").exists());
    assert!(
        data.join("artifacts/18eed40ee02b4297-0002/build/out.txt")
            .exists()
    );
    assert!(data.join("artifacts/notes.txt").exists());
    assert!(data.join("artifacts/photos/2020.jpg").exists());
    assert!(data.join("cache/readme").exists());
    let bad = buildit(dir.path(), &["gc", "--max-size", "lots"]);
    assert_eq!(bad.status.code(), Some(2));
}

/// Runs HISTORY_PIPELINE with `--format json` (with `env` added to every command), then checks that
/// `runs events` prints exactly the lines the run printed, with a gapless `seq` from 1 to `run-finished`, and
/// that `--after` continues from any point.
fn stored_events_are_the_run_s_stream(env: &[(&str, &str)]) {
    let dir = temp_dir();
    write(dir.path(), "buildit.kdl", HISTORY_PIPELINE);
    let run_with = |args: &[&str]| {
        let mut command = buildit_command(dir.path(), args);
        for (name, value) in env {
            command.env(name, value);
        }
        match command.output() {
            Ok(output) => output,
            Err(error) => panic!("{error}"),
        }
    };
    let live = run_with(&["run", "--format", "json", "-j1"]);
    assert_eq!(live.status.code(), Some(1), "{}", stderr(&live));
    let stored = run_with(&["runs", "events", "1"]);
    assert_eq!(stored.status.code(), Some(0), "{}", stderr(&stored));
    let stored = stdout(&stored);
    assert_eq!(stored, stdout(&live), "stored events differ from the run's");
    let events: Vec<serde_json::Value> = stored.lines().map(json).collect();
    let seqs: Vec<u64> = events
        .iter()
        .map(|event| event["seq"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<u64>>());
    assert_eq!(
        events.first().map(|e| &e["type"]),
        Some(&"run-started".into())
    );
    assert_eq!(
        events.last().map(|e| &e["type"]),
        Some(&"run-finished".into())
    );
    assert!(
        events.iter().any(|event| event["type"] == "log-line"),
        "{stored}"
    );
    let after = run_with(&["runs", "events", "history#1", "--after", "7"]);
    let expected: String = stored
        .lines()
        .skip(7)
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(stdout(&after), expected);
    let missing = run_with(&["runs", "events", "9"]);
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    // A store named by the environment is the only one written.
    assert_eq!(
        dir.path().join(".buildit/buildit.db").exists(),
        env.is_empty()
    );
}

#[test]
fn runs_events_print_the_stored_stream_with_a_gapless_seq() {
    stored_events_are_the_run_s_stream(&[]);
}

#[test]
fn runs_events_print_the_stored_stream_from_postgresql() {
    let Some(url) = postgres_database("buildit_events") else {
        return;
    };
    stored_events_are_the_run_s_stream(&[("BUILDIT_DATABASE_URL", url.as_str())]);
}

/// The tenant the store gives the token `token` (through the library, as the daemon asks it).
fn tenant_of(path: &Path, token: &str) -> Option<String> {
    use buildit_core::store::{SqliteStore, Store as _, hash_token};
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => panic!("{error}"),
    };
    runtime.block_on(async {
        let store = match SqliteStore::open(path).await {
            Ok(store) => store,
            Err(error) => panic!("{error}"),
        };
        let tenant = match store.tenant_of_token(&hash_token(token)).await {
            Ok(tenant) => tenant,
            Err(error) => panic!("{error}"),
        };
        store.close().await;
        tenant
    })
}

#[test]
fn tokens_are_shown_once_listed_without_secrets_and_revoked() {
    let dir = temp_dir();
    let database = dir.path().join(".buildit/buildit.db");
    // Nothing to list or revoke yet, and no database is made for asking.
    for args in [&["tokens", "list"][..], &["tokens", "revoke", "1"]] {
        let output = buildit(dir.path(), args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("no store at"),
            "{}",
            stderr(&output)
        );
    }
    // Invalid tenant names are usage errors, before any store is made.
    for tenant in ["", "Acme", "a/b", "tenant with spaces", &"x".repeat(65)] {
        let output = buildit(dir.path(), &["tokens", "create", "--tenant", tenant]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{tenant}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("invalid tenant name"),
            "{}",
            stderr(&output)
        );
        assert!(stdout(&output).is_empty());
    }
    assert!(!database.exists());

    let created = buildit(
        dir.path(),
        &[
            "tokens",
            "create",
            "--tenant",
            "acme",
            "--name",
            "deploy bot",
        ],
    );
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    let token = stdout(&created).trim_end().to_owned();
    assert_eq!(stdout(&created), format!("{token}\n"));
    assert!(token.starts_with("bit_") && token.len() == 47, "{token}");
    assert!(
        stderr(&created).contains("not shown again"),
        "{}",
        stderr(&created)
    );
    assert!(!stderr(&created).contains(&token));
    let other = buildit(dir.path(), &["tokens", "create", "--tenant", "globex"]);
    assert_eq!(other.status.code(), Some(0), "{}", stderr(&other));
    let other_token = stdout(&other).trim_end().to_owned();
    assert_ne!(token, other_token);
    assert_eq!(tenant_of(&database, &token).as_deref(), Some("acme"));
    assert_eq!(
        tenant_of(&database, &other_token).as_deref(),
        Some("globex")
    );

    let hash = buildit_core::store::hash_token(&token);
    let listed = buildit_ok(dir.path(), &["tokens", "list"], 0);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 3, "{listed}");
    assert!(lines[0].starts_with("ID  TENANT  NAME"), "{listed}");
    assert!(lines[1].starts_with("1   acme    deploy bot"), "{listed}");
    assert!(lines[2].starts_with("2   globex  -"), "{listed}");
    let listed_json = buildit_ok(dir.path(), &["tokens", "list", "--format", "json"], 0);
    for text in [&listed, &listed_json] {
        assert!(
            !text.contains(&token) && !text.contains(&other_token),
            "{text}"
        );
        assert!(!text.contains(&hash), "{text}");
    }
    let tokens = json(&listed_json);
    assert_eq!(tokens.as_array().map(Vec::len), Some(2), "{listed_json}");
    assert_eq!(tokens[0]["tenant"], "acme");
    assert_eq!(tokens[0]["name"], "deploy bot");
    assert!(tokens[0]["last_used_at_ms"].is_i64(), "{listed_json}");
    assert!(tokens[0]["revoked_at_ms"].is_null());
    let only_globex = json(&buildit_ok(
        dir.path(),
        &["tokens", "list", "--tenant", "globex", "--format", "json"],
        0,
    ));
    assert_eq!(only_globex.as_array().map(Vec::len), Some(1));
    assert_eq!(only_globex[0]["tenant"], "globex");

    let revoked = buildit_ok(dir.path(), &["tokens", "revoke", "1"], 0);
    assert!(
        revoked.contains("revoked token 1 of tenant `acme`"),
        "{revoked}"
    );
    assert_eq!(tenant_of(&database, &token), None);
    assert_eq!(
        tenant_of(&database, &other_token).as_deref(),
        Some("globex")
    );
    let after = json(&buildit_ok(
        dir.path(),
        &["tokens", "list", "--format", "json"],
        0,
    ));
    assert!(after[0]["revoked_at_ms"].is_i64(), "{after}");
    assert!(after[1]["revoked_at_ms"].is_null(), "{after}");
    let unknown = buildit(dir.path(), &["tokens", "revoke", "42"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown).contains("no token 42"),
        "{}",
        stderr(&unknown)
    );

    // The database files hold the hash, never the token.
    let mut stored = Vec::new();
    for suffix in ["", "-wal"] {
        let mut file = database.as_os_str().to_owned();
        file.push(suffix);
        stored.extend(std::fs::read(&file).unwrap_or_default());
    }
    let stored = String::from_utf8_lossy(&stored);
    assert!(stored.contains(&hash));
    assert!(!stored.contains(&token[4..]) && !stored.contains(&other_token[4..]));
}

#[test]
fn tokens_are_kept_in_postgresql_as_hashes() {
    let Some(url) = postgres_database("buildit_tokens") else {
        return;
    };
    let dir = temp_dir();
    let created = buildit(
        dir.path(),
        &[
            "tokens",
            "create",
            "--tenant",
            "acme",
            "--database-url",
            &url,
        ],
    );
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    let token = stdout(&created).trim_end().to_owned();
    assert_eq!(
        psql(
            &url,
            "SELECT tenant_id || ':' || token_sha256 FROM api_tokens"
        ),
        format!("acme:{}\n", buildit_core::store::hash_token(&token))
    );
    assert_eq!(
        psql(&url, "SELECT count(*) FROM tenants WHERE id = 'acme'"),
        "1\n"
    );
    let listed = buildit_ok(dir.path(), &["tokens", "list", "--database-url", &url], 0);
    assert!(
        listed.contains("acme") && !listed.contains(&token),
        "{listed}"
    );
    buildit_ok(
        dir.path(),
        &["tokens", "revoke", "1", "--database-url", &url],
        0,
    );
    assert_eq!(
        psql(
            &url,
            "SELECT count(*) FROM api_tokens WHERE revoked_at_ms IS NOT NULL"
        ),
        "1\n"
    );
    assert!(
        !dir.path().join(".buildit").exists(),
        "nothing went to SQLite"
    );
}
