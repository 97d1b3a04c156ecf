//! No substituted value ever becomes shell syntax: hostile values in every quoting context, run through `sh`
//! and `bash` exactly as a stage runs them; the command sees the value byte for byte, or validation refused
//! the template, and nothing else ever happens.

use std::path::Path;
use std::process::{Command, Stdio};

use buildit_core::exec::{RunIdentity, stage_spec};
use buildit_core::{Plan, RunContext, parse_pipeline};
use proptest::prelude::*;

/// What a context prints for a value, or that validation refuses it.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The value itself.
    Value,
    /// The value with trailing newlines removed (command substitution removes them).
    Trimmed,
    /// The value and a newline (a here-document line, `printf '%s\n'`).
    Line,
    /// The value twice, three times.
    Times(usize),
    /// `a` + value + `b`.
    Wrapped,
    /// `a` + value + `b` and a newline.
    WrappedLine,
    /// This text, then the value.
    After(&'static str),
    /// Two `run` commands printing the value, and the echo of the second between them.
    TwoRuns,
    /// Validation refuses the template.
    Refused,
}

struct Context {
    /// A `run` command; `{v}` stands for the variable under test.
    command: &'static str,
    expect: Expect,
    /// Only bash reads it (`[[ ]]`, `$'...'`, here-strings).
    bash_only: bool,
}

const fn context(command: &'static str, expect: Expect) -> Context {
    Context {
        command,
        expect,
        bash_only: false,
    }
}

const fn bash(command: &'static str, expect: Expect) -> Context {
    Context {
        command,
        expect,
        bash_only: true,
    }
}

/// Every quoting context we can name.
const CONTEXTS: &[Context] = &[
    context("printf '%s' {v}", Expect::Value),
    context("printf '%s' \"{v}\"", Expect::Value),
    context("printf '%s' '{v}'", Expect::Value),
    context("printf '%s' \"a{v}b\"", Expect::Wrapped),
    context("printf '%s' 'a{v}b'", Expect::Wrapped),
    context("printf '%s' a{v}b", Expect::Wrapped),
    context("printf '%s' '{v}'\"{v}\"{v}", Expect::Times(3)),
    context("printf '%s' {v}{v}", Expect::Times(2)),
    context("x={v}; printf '%s' \"$x\"", Expect::Value),
    context("export X={v}; printf '%s' \"$X\"", Expect::Value),
    context("f() { printf '%s' \"$1\"; }; f {v}", Expect::Value),
    context("(printf '%s' {v})", Expect::Value),
    context("{ printf '%s' {v}; }", Expect::Value),
    context("printf '%s\\n' {v} | cat", Expect::Line),
    context("printf '%s' {v} # {v} isn't run", Expect::Value),
    // Command substitution, at any depth, quoted or not around it.
    context("printf '%s' \"$(printf '%s' {v})\"", Expect::Trimmed),
    context("printf '%s' \"$(printf '%s' \"{v}\")\"", Expect::Trimmed),
    context("printf '%s' \"$(printf '%s' '{v}')\"", Expect::Trimmed),
    context("x=$(printf '%s' {v}); printf '%s' \"$x\"", Expect::Trimmed),
    context(
        "printf '%s' \"$(printf '%s' \"$(printf '%s' {v})\")\"",
        Expect::Trimmed,
    ),
    context(
        "printf '%s' \"$(printf '%s' \"$(printf '%s' \"a{v}b\")\")\"",
        Expect::Wrapped,
    ),
    context(
        "printf '%s' \"$(case x in x) printf '%s' {v};; esac)\"",
        Expect::Trimmed,
    ),
    context(
        "printf '%s' \"$(case x in (x) printf '%s' \"{v}\";; esac)\"",
        Expect::Trimmed,
    ),
    // Backquotes: plain ones work; nested in double quotes or in other backquotes they are refused.
    context("x=`printf '%s' {v}`; printf '%s' \"$x\"", Expect::Refused),
    context(
        "x=`printf '%s' \"{v}\"`; printf '%s' \"$x\"",
        Expect::Refused,
    ),
    context("printf '%s' \"`printf '%s' {v}`\"", Expect::Refused),
    context(
        "x=`printf '%s' \\`printf '%s' {v}\\``; printf '%s' \"$x\"",
        Expect::Refused,
    ),
    // Here-documents.
    context("cat <<EOF\n{v}\nEOF", Expect::Line),
    context("cat <<EOF\na{v}b\nEOF", Expect::WrappedLine),
    context("cat <<-EOF\n\t{v}\n\tEOF", Expect::Line),
    context(
        "cat <<EOF; printf '%s' {v}\nbody 'x' \"y\" \\$\nEOF",
        Expect::After("body 'x' \"y\" $\n"),
    ),
    context("cat <<'EOF'\n{v}\nEOF", Expect::Refused),
    context("cat <<\"EOF\"\n{v}\nEOF", Expect::Refused),
    context("cat <<\\EOF\n{v}\nEOF", Expect::Refused),
    context("cat <<{v}\nEOF\n{v}", Expect::Refused),
    // Parameter expansions and arithmetic.
    context("printf '%s' \"${x:-{v}}\"", Expect::Refused),
    context("printf '%s' ${x:-{v}}", Expect::Refused),
    context("printf '%s' $(( {v} + 1 ))", Expect::Refused),
    context("printf '%s' \"$(( {v} ))\"", Expect::Refused),
    context("(( {v} )); printf x", Expect::Refused),
    context("let x={v}", Expect::Refused),
    // `case` words and patterns.
    context("case {v} in *) printf '%s' {v};; esac", Expect::Value),
    context(
        "case {v} in {v}) printf '%s' {v};; *) printf mismatch;; esac",
        Expect::Value,
    ),
    context(
        "case {v} in\n  ({v}) printf '%s' \"{v}\";;\nesac",
        Expect::Value,
    ),
    context("if [ {v} = {v} ]; then printf '%s' {v}; fi", Expect::Value),
    // Code that runs its arguments.
    context("eval \"printf '%s' {v}\"", Expect::Refused),
    context("eval printf x {v}", Expect::Refused),
    context("sh -c \"printf '%s' {v}\"", Expect::Refused),
    context("bash -o pipefail -c 'printf %s {v}'", Expect::Refused),
    context("sh -c 'printf \"%s\" \"$1\"' sh {v}", Expect::Value),
    context("trap \"printf '%s' {v}\" EXIT", Expect::Refused),
    // Several `run` commands: the echo of each is printed from the script, with the values.
    context("printf '%s' {v}\u{0}printf '%s' {v}", Expect::TwoRuns),
    context(
        "cat > notes.txt <<EOF\u{0}Branch: {v}\u{0}EOF",
        Expect::Refused,
    ),
    context("echo \"unclosed\u{0}printf '%s' {v}", Expect::Refused),
    // Scripts read by shells from standard input.
    context("sh <<EOF\necho {v}\nEOF", Expect::Refused),
    context(
        "ssh localhost <<EOF\ngit checkout {v}\nEOF",
        Expect::Refused,
    ),
    context("sh -c 'cat' <<EOF\n{v}\nEOF", Expect::Line),
    bash("bash <<< \"echo {v}\"", Expect::Refused),
    // Shells given a script in every way they take one.
    context(
        "bash --noprofile --norc -eo pipefail -c 'echo {v}'",
        Expect::Refused,
    ),
    context("flock /tmp/l -c 'echo {v}'", Expect::Refused),
    context("su nobody -c 'echo {v}'", Expect::Refused),
    context("bash -c -- 'echo {v}'", Expect::Refused),
    context("sh -c -e 'echo {v}'", Expect::Refused),
    context("bash $OPTS -c \"echo {v}\"", Expect::Refused),
    context("eval \"$(echo {v})\"", Expect::Refused),
    context("sh -c \"echo $(echo {v})\"", Expect::Refused),
    // Arithmetic however it is spelt.
    bash("for ((i=0; i<{v}; i++)); do echo $i; done", Expect::Refused),
    bash("if(( {v} > 1 )); then echo big; fi", Expect::Refused),
    bash("if true; then(( {v} > 1 )); fi", Expect::Refused),
    bash("time -p (( {v} > 1 ))", Expect::Refused),
    bash("builtin let \"x = {v}\"", Expect::Refused),
    bash("[[ $(echo {v}) -eq 1 ]]", Expect::Refused),
    bash("[[ \"]]\" != {v} && {v} -eq 1 ]]", Expect::Refused),
    bash("echo $\\\n(( {v} + 1 ))", Expect::Refused),
    bash("(\\\n( {v} > 1 ))", Expect::Refused),
    bash("echo $[ a[0] + {v} ]", Expect::Refused),
    bash("declare -A m; echo $(( m[\"))\"] + {v} ))", Expect::Refused),
    // Names and indexes bash evaluates.
    bash("[[ -v {v} ]]", Expect::Refused),
    context("[ -v {v} ]", Expect::Refused),
    bash("arr[{v}]=1", Expect::Refused),
    bash("a=([{v}]=1)", Expect::Refused),
    bash("declare -i n={v}", Expect::Refused),
    bash("f() { local -i n={v}; }", Expect::Refused),
    bash("printf -v {v} %s x", Expect::Refused),
    context("read {v} < /dev/null", Expect::Refused),
    context("f() { local x={v}; printf '%s' \"$x\"; }; f", Expect::Value),
    // Places where a backslash or a here-document delimiter would change what follows.
    context("echo \\{v}\"; {v} #", Expect::Refused),
    bash("echo $'\\{v}'\"'; {v} #", Expect::Refused),
    context("echo \"\\{v}\"", Expect::Refused),
    context("x=`echo \\\\\"; {v} #\"`", Expect::Refused),
    context("cat <<E$F\nE$F\n{v}\nE", Expect::Refused),
    // A second review's findings.
    context(
        "true\u{0}sh <<EOF\necho hi\nEOF\\\u{0}echo {v}",
        Expect::Refused,
    ),
    context("sh <<EOF\necho hi\nEO\\\nF\necho {v}\nEOF", Expect::Refused),
    context("echo $(cat <<EOF)\neval {v}\nEOF", Expect::Refused),
    bash("declare -i n; n={v}", Expect::Refused),
    bash("declare -i N\u{0}N={v}", Expect::Refused),
    bash("n=0; n+={v}; declare -i m; m+={v}", Expect::Refused),
    bash("time -p [[ {v} -eq 1 ]]", Expect::Refused),
    bash("coproc [[ {v} -eq 1 ]]", Expect::Refused),
    bash("function f [[ {v} -eq 1 ]]\nf", Expect::Refused),
    bash("builtin declare -i n={v}", Expect::Refused),
    bash("f() { command local -i n={v}; }; f", Expect::Refused),
    bash("X=1 declare -i n={v}", Expect::Refused),
    bash("builtin test -v {v}", Expect::Refused),
    bash("a[$(printf %s {v})]=1", Expect::Refused),
    bash("[ -v \"$(printf %s {v})\" ]", Expect::Refused),
    bash("printf -v \"$(printf %s {v})\" %s x", Expect::Refused),
    bash("$SHELL -c \"echo {v}\"", Expect::Refused),
    bash("\"$BASH\" -c \"echo {v}\"", Expect::Refused),
    context("script -qc \"echo {v}\" /dev/null", Expect::Refused),
    bash("PS4={v}; set -x; true", Expect::Refused),
    // bash only.
    bash("[[ {v} == {v} ]] && printf '%s' {v}", Expect::Value),
    bash(
        "[[ \"{v}\" == x || -n {v} ]] && printf '%s' {v}",
        Expect::Value,
    ),
    bash("[[ {v} -eq 1 ]]", Expect::Refused),
    bash("[[ 1 -eq {v} ]]", Expect::Refused),
    bash("printf '%s' $'a{v}b'", Expect::Wrapped),
    bash("cat <<< {v}", Expect::Line),
    bash("a=({v}); printf '%s' \"${a[0]}\"", Expect::Value),
];

/// Characters that mean something to a shell, and words that do.
const HOSTILE: &[&str] = &[
    "'",
    "\"",
    "$",
    "`",
    ";",
    "|",
    "&",
    "\n",
    "\\",
    "}",
    "{",
    ")",
    "(",
    " ",
    "\t",
    "*",
    "?",
    "[",
    "]",
    "#",
    "~",
    "!",
    "=",
    "<",
    ">",
    "-",
    "EOF",
    "$(touch pwned)",
    "`touch pwned`",
    ";touch pwned;",
    "a[$(touch pwned)]",
    "\ntouch pwned\n",
    "\nEOF\ntouch pwned\n",
    "${x:-$(touch pwned)}",
    "'\"'\"",
    "x",
    "main",
    "ä",
    "\u{1b}[31m",
    "--",
    "-e",
    "%s",
];

/// The variables under test: each gets its value from a different place (the branch, the tag, `--env`).
const VARIABLES: &[&str] = &["{branch}", "{git.tag}", "{env.HOSTILE}"];

/// A KDL string holding `text` exactly.
fn kdl_string(text: &str) -> String {
    let mut out = String::from("\"");
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// How one command fared.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    Refused,
    Printed(Vec<u8>),
}

/// Validates the command with `{v}` standing for `variable`, plans it with `value` as the branch, tag and
/// `{env.HOSTILE}`, and runs the stage's script with `shell` in `dir` exactly as a host stage runs it.
fn run(command: &str, variable: &str, value: &str, shell: &str, dir: &Path) -> Fate {
    let command = command.replace("{v}", variable);
    // `\0` separates the `run` commands of one stage.
    let runs: Vec<String> = command
        .split('\0')
        .map(|run| format!("    run {}\n", kdl_string(run)))
        .collect();
    let text = format!(
        "pipeline \"injection\"\nstage \"s\" {{\n{}}}\n",
        runs.concat()
    );
    let pipeline = match parse_pipeline(&text, "buildit.kdl") {
        Ok(pipeline) => pipeline,
        Err(error) => {
            let codes: Vec<&str> = error.diagnostics.iter().map(|d| d.code.as_str()).collect();
            assert!(
                codes
                    .iter()
                    .all(|code| *code == "buildit::config::unsafe_variable"),
                "{command:?}: unexpected diagnostics {codes:?}"
            );
            return Fate::Refused;
        }
    };
    let mut context = RunContext::new().with_branch(value).with_tag(value);
    context.env.insert("HOSTILE".into(), value.into());
    let plan = match Plan::build(&pipeline, &context) {
        Ok(plan) => plan,
        Err(error) => panic!("{command:?}: {error}"),
    };
    let Some(stage) = plan.stages().first() else {
        panic!("no stage planned");
    };
    let identity = RunIdentity::new("run-1", 1, dir);
    let spec = match stage_spec(&plan, stage, &identity, 1) {
        Ok(spec) => spec,
        Err(error) => panic!("{command:?}: {error:?}"),
    };
    let output = Command::new(shell)
        .arg("-c")
        .arg(spec.script())
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(&spec.env)
        .stdin(Stdio::null())
        .output();
    match output {
        Ok(output) => Fate::Printed(output.stdout),
        Err(error) => panic!("cannot run {shell}: {error}"),
    }
}

fn expected(expect: Expect, value: &str) -> Fate {
    let bytes = match expect {
        Expect::Refused => return Fate::Refused,
        Expect::Value => value.to_owned(),
        Expect::Trimmed => value.trim_end_matches('\n').to_owned(),
        Expect::Line => format!("{value}\n"),
        Expect::Times(n) => value.repeat(n),
        Expect::Wrapped => format!("a{value}b"),
        Expect::WrappedLine => format!("a{value}b\n"),
        Expect::After(text) => format!("{text}{value}"),
        Expect::TwoRuns => format!("{value}$ printf '%s' {value}\n{value}"),
    };
    Fate::Printed(bytes.into_bytes())
}

/// Every context, for `value` as `variable`, under both shells.
fn check_value(value: &str, variable: &str) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    for context in CONTEXTS {
        for shell in ["sh", "bash"] {
            if context.bash_only && shell != "bash" {
                continue;
            }
            {
                let expect = expected(context.expect, value);
                let fate = run(context.command, variable, value, shell, dir.path());
                prop_assert_eq!(
                    &fate,
                    &expect,
                    "{} with {} = {:?} under {}",
                    context.command,
                    variable,
                    value,
                    shell
                );
                let left: Vec<_> = std::fs::read_dir(dir.path())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?
                    .filter_map(Result::ok)
                    .map(|entry| entry.file_name())
                    .collect();
                prop_assert!(
                    left.is_empty(),
                    "{} with {:?} under {} left {:?}",
                    context.command,
                    value,
                    shell,
                    left
                );
            }
        }
    }
    Ok(())
}

#[test]
fn every_hostile_word_reaches_the_command_as_it_is() {
    for (index, value) in HOSTILE.iter().enumerate() {
        if let Err(error) = check_value(value, VARIABLES[index % VARIABLES.len()]) {
            panic!("{error}");
        }
    }
}

/// Values glued from the hostile pieces.
fn hostile_value() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(HOSTILE), 0..6)
        .prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn no_value_ever_becomes_shell_syntax(
        value in hostile_value(),
        variable in proptest::sample::select(VARIABLES),
    ) {
        check_value(&value, variable)?;
    }
}

#[test]
fn names_and_matrix_values_cannot_hold_shell_syntax() {
    for name in [
        "x;touch pwned",
        "a b",
        "x$(id)",
        "a'b",
        "a\"b",
        "a`b`",
        "a\nb",
    ] {
        let quoted = kdl_string(name);
        for text in [
            format!("pipeline {quoted}\nstage \"s\" {{ run \"true\" }}\n"),
            format!("pipeline \"p\"\nstage {quoted} {{ run \"true\" }}\n"),
            format!(
                "pipeline \"p\"\nstage \"s\" {{\n    matrix {{ os {quoted} }}\n    run \"true\"\n}}\n"
            ),
        ] {
            let refused = parse_pipeline(&text, "buildit.kdl").is_err();
            assert!(refused, "accepted: {text}");
        }
    }
}
