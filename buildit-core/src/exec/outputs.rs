//! Stage outputs: the file a stage writes `NAME=value` lines to (`$BUILDIT_OUTPUT`), reading it, and the values
//! of a run's instances where the stages that need them find them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// The directory, relative to the workspace, of the files stages write their outputs to.
pub const OUTPUTS_DIR: &str = ".buildit/outputs";
/// The most an output file may hold.
pub const MAX_OUTPUT_FILE_BYTES: usize = 1024 * 1024;
/// The longest value an output may have: each goes into the environment of the stages that need it, where one
/// variable may hold at most 128 KiB (Linux).
pub const MAX_OUTPUT_VALUE_BYTES: usize = 64 * 1024;
/// The most a stage's outputs may hold together.
pub const MAX_OUTPUTS_BYTES: usize = 256 * 1024;

/// The outputs of a run's instances, by instance name: written by each instance's last successful attempt, read
/// by the stages that need it.
#[derive(Debug, Clone, Default)]
pub struct RunOutputs(Arc<Mutex<HashMap<String, BTreeMap<String, String>>>>);

impl RunOutputs {
    /// Records what `instance` wrote.
    pub fn set(&self, instance: &str, outputs: BTreeMap<String, String>) {
        if let Ok(mut all) = self.0.lock() {
            all.insert(instance.to_owned(), outputs);
        }
    }

    /// The output `name` of `instance`, if it wrote one.
    pub fn get(&self, instance: &str, name: &str) -> Option<String> {
        self.0.lock().ok()?.get(instance)?.get(name).cloned()
    }
}

/// `text` as one safe file name: at most 64 characters of `A-Za-z0-9._-`, anything else as `_`.
fn safe_name(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The directory of run `run`'s output files, relative to the workspace ([`output_file`] puts them there).
pub fn run_outputs_dir(run: &str) -> String {
    format!("{OUTPUTS_DIR}/{}", safe_name(run))
}

/// The output file of attempt `attempt` of `instance` in run `run`, relative to the workspace: a name of its own
/// (an instance's name has spaces and `=`), so that runs sharing a workspace, attempts and instances never share
/// one.
pub fn output_file(run: &str, instance: &str, attempt: u32) -> String {
    let hash: String = <sha2::Sha256 as sha2::Digest>::digest(instance.as_bytes())
        .iter()
        .take(4)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!(
        "{}/{}-{hash}-{attempt}",
        run_outputs_dir(run),
        safe_name(instance)
    )
}

/// Reads an output file: `NAME=value` lines, and `NAME<<DELIMITER` followed by the value's lines and a line that
/// is `DELIMITER` alone (for values of several lines, as GitHub's `$GITHUB_OUTPUT`). Empty lines are skipped; a
/// name given twice keeps its last value. Anything else is an error naming its line, never quoting it (the file
/// may hold a secret, and a piece of one is not masked).
pub fn parse_outputs(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut outputs = BTreeMap::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let heredoc = line.split_once("<<");
        let assignment = line.split_once('=');
        let is_heredoc = match (heredoc, assignment) {
            (Some((before, _)), Some((name, _))) => before.len() < name.len(),
            (Some(_), None) => true,
            _ => false,
        };
        if is_heredoc {
            let Some((name, delimiter)) = heredoc else {
                continue;
            };
            check_name(name, number)?;
            if delimiter.is_empty() {
                return Err(format!("line {number}: `<<` needs a delimiter after it"));
            }
            let mut value: Vec<&str> = Vec::new();
            let mut closed = false;
            for (_, line) in lines.by_ref() {
                if line == delimiter {
                    closed = true;
                    break;
                }
                value.push(line);
            }
            if !closed {
                return Err(format!(
                    "line {number}: the value that starts there is never closed by a line that is its delimiter"
                ));
            }
            insert(&mut outputs, name, value.join("\n"), number)?;
            continue;
        }
        let Some((name, value)) = assignment else {
            return Err(format!(
                "line {number}: expected `NAME=value` or `NAME<<DELIMITER`"
            ));
        };
        check_name(name, number)?;
        insert(&mut outputs, name, value.to_owned(), number)?;
    }
    let total: usize = outputs
        .iter()
        .map(|(name, value)| name.len() + value.len())
        .sum();
    if total > MAX_OUTPUTS_BYTES {
        return Err(format!(
            "the outputs hold {total} bytes together; at most {MAX_OUTPUTS_BYTES} are passed on"
        ));
    }
    Ok(outputs)
}

/// Keeps `value` as output `name`, if it can travel in an environment variable.
fn insert(
    outputs: &mut BTreeMap<String, String>,
    name: &str,
    value: String,
    number: usize,
) -> Result<(), String> {
    if value.len() > MAX_OUTPUT_VALUE_BYTES {
        return Err(format!(
            "line {number}: the value holds {} bytes; at most {MAX_OUTPUT_VALUE_BYTES} (it goes into an environment \
             variable: pass large data as an artifact)",
            value.len()
        ));
    }
    if value.contains('\0') {
        return Err(format!(
            "line {number}: the value holds a NUL byte, which no environment variable can"
        ));
    }
    outputs.insert(name.to_owned(), value);
    Ok(())
}

fn check_name(name: &str, number: usize) -> Result<(), String> {
    if crate::config::is_env_name(name) {
        Ok(())
    } else {
        Err(format!(
            "line {number}: not an output name before `=` or `<<` (letters, digits and `_`, not starting with a \
             digit)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_heredocs_are_read_and_mistakes_name_their_line() {
        let text = "version=1.2.3\n\nnotes<<EOF\nfirst line\nsecond = line\nEOF\nempty=\nurl=https://x/?a=b\nversion=1.2.4\n";
        let Ok(outputs) = parse_outputs(text) else {
            panic!("refused");
        };
        assert_eq!(outputs["version"], "1.2.4");
        assert_eq!(outputs["notes"], "first line\nsecond = line");
        assert_eq!(outputs["empty"], "");
        assert_eq!(outputs["url"], "https://x/?a=b");
        assert_eq!(
            parse_outputs("ok=1\njust text\n"),
            Err("line 2: expected `NAME=value` or `NAME<<DELIMITER`".to_owned())
        );
        assert!(
            parse_outputs("notes<<EOF\nnever closed\n").is_err_and(|e| e.contains("never closed"))
        );
        // What the file holds is never quoted: it may be a secret.
        assert!(parse_outputs("s3cret-token-value\n").is_err_and(|e| !e.contains("s3cret")));
        assert!(
            parse_outputs("1bad=x\n")
                .is_err_and(|e| e.starts_with("line 1: not an output name") && !e.contains("1bad"))
        );
        assert!(parse_outputs("a b=x\n").is_err());
        let big = format!("big={}\n", "x".repeat(MAX_OUTPUT_VALUE_BYTES + 1));
        assert!(parse_outputs(&big).is_err_and(|e| e.contains("pass large data as an artifact")));
        assert!(parse_outputs("nul=a\0b\n").is_err_and(|e| e.contains("NUL")));
        let many: String = (0..5)
            .map(|i| format!("v{i}={}\n", "x".repeat(60_000)))
            .collect();
        assert!(parse_outputs(&many).is_err_and(|e| e.contains("together")));
    }

    #[test]
    fn each_instance_and_attempt_has_a_file_of_its_own() {
        let a = output_file("run-1", "build (os=linux)", 1);
        let b = output_file("run-1", "build (os=macos)", 1);
        let c = output_file("run-1", "build (os=linux)", 2);
        let d = output_file("run-2", "build (os=linux)", 1);
        assert!(
            a.starts_with(".buildit/outputs/run-1/build__os_linux_-"),
            "{a}"
        );
        assert!(!a.contains(' ') && !a.contains('='), "{a}");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        // Deleting a run removes its directory: every file of the run is in it, and none of another run.
        assert!(
            a.starts_with(&format!("{}/", run_outputs_dir("run-1"))),
            "{a}"
        );
        assert!(
            !d.starts_with(&format!("{}/", run_outputs_dir("run-1"))),
            "{d}"
        );
    }
}
