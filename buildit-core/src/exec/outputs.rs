//! Stage outputs: the file a stage writes `NAME=value` lines to (`$BUILDIT_OUTPUT`), reading it, and the values
//! of a run's instances where the stages that need them find them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// The directory, relative to the workspace, of the files stages write their outputs to.
pub const OUTPUTS_DIR: &str = ".buildit/outputs";
/// The most an output file may hold.
pub const MAX_OUTPUT_FILE_BYTES: usize = 1024 * 1024;

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

/// The output file of attempt `attempt` of `instance`, relative to the workspace: a name of its own (an instance's
/// name has spaces and `=`), so that attempts and instances never share one.
pub fn output_file(instance: &str, attempt: u32) -> String {
    let safe: String = instance
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let hash: String = <sha2::Sha256 as sha2::Digest>::digest(instance.as_bytes())
        .iter()
        .take(4)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!(
        "{OUTPUTS_DIR}/{}-{hash}-{attempt}",
        safe.chars().take(64).collect::<String>()
    )
}

/// Reads an output file: `NAME=value` lines, and `NAME<<DELIMITER` followed by the value's lines and a line that
/// is `DELIMITER` alone (for values of several lines, as GitHub's `$GITHUB_OUTPUT`). Empty lines are skipped; a
/// name given twice keeps its last value. Anything else is an error naming its line.
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
                return Err(format!(
                    "line {number}: `{name}<<` needs a delimiter after `<<`"
                ));
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
                    "line {number}: the value of `{name}` is never closed by a line `{delimiter}`"
                ));
            }
            outputs.insert(name.to_owned(), value.join("\n"));
            continue;
        }
        let Some((name, value)) = assignment else {
            return Err(format!(
                "line {number}: expected `NAME=value` or `NAME<<DELIMITER`, found `{}`",
                shorten(line)
            ));
        };
        check_name(name, number)?;
        outputs.insert(name.to_owned(), value.to_owned());
    }
    Ok(outputs)
}

fn check_name(name: &str, number: usize) -> Result<(), String> {
    if crate::config::is_env_name(name) {
        Ok(())
    } else {
        Err(format!(
            "line {number}: `{}` is not an output name (letters, digits and `_`, not starting with a digit)",
            shorten(name)
        ))
    }
}

/// At most 60 characters of `text`, for a message.
fn shorten(text: &str) -> String {
    if text.chars().count() <= 60 {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(60).collect::<String>())
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
            Err("line 2: expected `NAME=value` or `NAME<<DELIMITER`, found `just text`".to_owned())
        );
        assert!(
            parse_outputs("notes<<EOF\nnever closed\n").is_err_and(|e| e.contains("never closed"))
        );
        assert!(parse_outputs("1bad=x\n").is_err_and(|e| e.starts_with("line 1: `1bad`")));
        assert!(parse_outputs("a b=x\n").is_err());
    }

    #[test]
    fn each_instance_and_attempt_has_a_file_of_its_own() {
        let a = output_file("build (os=linux)", 1);
        let b = output_file("build (os=macos)", 1);
        let c = output_file("build (os=linux)", 2);
        assert!(a.starts_with(".buildit/outputs/build__os_linux_-"), "{a}");
        assert!(!a.contains(' ') && !a.contains('='), "{a}");
        assert_ne!(a, b);
        assert_ne!(a, c);
    }
}
