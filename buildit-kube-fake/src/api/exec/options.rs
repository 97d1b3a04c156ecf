//! The query of an exec request (`PodExecOptions`): the command as repeated `command=` parameters, the
//! container and the streams, read from the raw query since a map of parameters keeps one value per key.

use percent_encoding::percent_decode_str;

use crate::api::status::ApiError;
use crate::kubelet::AttachedStreams;

/// What the client asked to run, where, and with which streams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ExecOptions {
    pub command: Vec<String>,
    /// `None`: the API server picks the only container.
    pub container: Option<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// `application/x-www-form-urlencoded` text: `+` is a space, `%XX` a byte (invalid UTF-8 replaced).
fn decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

/// Every `key=value` pair of a query, in order, repeated keys kept.
fn query_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// A boolean parameter as the API server converts it: `0` and `false` are false, any other value true.
fn flag(value: &str) -> bool {
    !(value == "0" || value.eq_ignore_ascii_case("false"))
}

impl ExecOptions {
    /// Reads and checks the query (without the `?`).
    pub(crate) fn from_query(raw: &str) -> Result<ExecOptions, ApiError> {
        let mut options = ExecOptions::default();
        for (key, value) in query_pairs(raw) {
            match key.as_str() {
                "command" => options.command.push(value),
                "container" => options.container = Some(value).filter(|name| !name.is_empty()),
                "stdin" => options.stdin = flag(&value),
                "stdout" => options.stdout = flag(&value),
                "stderr" => options.stderr = flag(&value),
                "tty" => options.tty = flag(&value),
                _ => {}
            }
        }
        if options.command.is_empty() {
            return Err(ApiError::bad_request(
                "you must specify at least one command for the container",
            ));
        }
        if !(options.stdin || options.stdout || options.stderr) {
            return Err(ApiError::bad_request(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        // Docker's exec would need a terminal of its own and resize messages; nothing in BuildIt asks for one.
        if options.tty {
            return Err(ApiError::bad_request(
                "tty is not supported by buildit-kube-fake: exec with tty=false",
            ));
        }
        Ok(options)
    }

    /// The streams to attach to the command.
    pub(crate) fn streams(&self) -> AttachedStreams {
        AttachedStreams {
            stdin: self.stdin,
            stdout: self.stdout,
            stderr: self.stderr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &str) -> ExecOptions {
        ExecOptions::from_query(raw).unwrap_or_else(|error| panic!("{raw}: {error:?}"))
    }

    #[test]
    fn repeated_commands_are_kept_in_order_and_decoded() {
        let options = parsed(
            "&stdin=true&stdout=true&container=holder&command=sh&command=-c&command=echo+a%26b%3D1%20%25",
        );
        assert_eq!(options.command, ["sh", "-c", "echo a&b=1 %"]);
        assert_eq!(options.container.as_deref(), Some("holder"));
        assert!(options.stdin && options.stdout && !options.stderr && !options.tty);
    }

    #[test]
    fn flags_are_false_only_when_zero_or_false() {
        let options = parsed("command=ls&stdout=1&stderr=False&stdin=0");
        assert_eq!(
            (options.stdin, options.stdout, options.stderr),
            (false, true, false)
        );
        assert!(parsed("command=ls&stdout").stdout, "a bare key is true");
        assert_eq!(parsed("command=ls&stdout=true&container=").container, None);
    }

    #[test]
    fn a_request_without_command_or_streams_or_with_a_tty_is_refused() {
        assert!(ExecOptions::from_query("stdout=true").is_err());
        assert!(ExecOptions::from_query("command=ls").is_err());
        assert!(ExecOptions::from_query("command=ls&stdout=true&tty=true").is_err());
    }
}
