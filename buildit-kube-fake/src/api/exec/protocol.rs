//! The `v5.channel.k8s.io` and `v4.channel.k8s.io` WebSocket subprotocols of exec: binary frames whose first
//! byte names the channel, and the `Status` the error channel carries once the command has ended.

use axum::body::Bytes;
use axum::http::HeaderValue;
use serde_json::{Value, json};

/// The subprotocols the fake speaks, the one it prefers first.
pub(crate) const SUPPORTED: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// The negotiated subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    V4,
    V5,
}

impl Protocol {
    /// The protocol a `Sec-WebSocket-Protocol` value names, if the fake speaks it.
    pub(crate) fn from_header(value: &HeaderValue) -> Option<Protocol> {
        match value.as_bytes() {
            b"v5.channel.k8s.io" => Some(Protocol::V5),
            b"v4.channel.k8s.io" => Some(Protocol::V4),
            _ => None,
        }
    }

    /// Whether the client can close one stream (stdin) with a close frame and keep the connection (v5).
    fn closes_streams(self) -> bool {
        self == Protocol::V5
    }
}

/// The channel a frame is on: its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Channel {
    Stdin = 0,
    Stdout = 1,
    Stderr = 2,
    /// The `Status` of the ended command (server to client). Channel 4 carries terminal sizes, which mean
    /// nothing without a tty.
    Error = 3,
}

/// The first byte of a v5 frame that closes the channel named by its second byte.
const CLOSE: u8 = 255;

/// A frame for the client: the channel byte, then `data`.
pub(crate) fn frame(channel: Channel, data: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(data.len() + 1);
    frame.push(channel as u8);
    frame.extend_from_slice(data);
    Bytes::from(frame)
}

/// What a binary frame from the client says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClientFrame<'a> {
    /// Bytes for the command's stdin.
    Stdin(&'a [u8]),
    /// The client will send no more stdin (v5).
    CloseStdin,
    /// Anything else (resize messages, empty frames, other channels): ignored.
    Ignored,
}

/// Reads a binary frame from the client.
pub(crate) fn read_client_frame(frame: &[u8], protocol: Protocol) -> ClientFrame<'_> {
    match frame {
        [channel, data @ ..] if *channel == Channel::Stdin as u8 => ClientFrame::Stdin(data),
        [CLOSE, channel] if protocol.closes_streams() && *channel == Channel::Stdin as u8 => {
            ClientFrame::CloseStdin
        }
        _ => ClientFrame::Ignored,
    }
}

/// The status of a command that exited 0, as the kubelet writes it.
pub(crate) fn success_status() -> Value {
    json!({"metadata": {}, "status": "Success"})
}

/// The status of a command that exited with `code` (not 0), as the kubelet writes it: the code as the
/// message of an `ExitCode` cause.
pub(crate) fn exit_code_status(command: &[String], code: i64) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            command.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The status of a command that could not be run, or whose end could not be learnt.
pub(crate) fn internal_error_status(cause: &str) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {cause}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": cause}]},
        "code": 500,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_are_stdin_or_a_v5_close_of_stdin() {
        assert_eq!(
            read_client_frame(&[0, 1, 2], Protocol::V4),
            ClientFrame::Stdin(&[1, 2])
        );
        assert_eq!(
            read_client_frame(&[255, 0], Protocol::V5),
            ClientFrame::CloseStdin
        );
        assert_eq!(
            read_client_frame(&[255, 0], Protocol::V4),
            ClientFrame::Ignored
        );
        assert_eq!(
            read_client_frame(b"\x04{\"Width\":80}", Protocol::V5),
            ClientFrame::Ignored
        );
        assert_eq!(read_client_frame(&[], Protocol::V5), ClientFrame::Ignored);
    }

    #[test]
    fn a_non_zero_exit_names_the_command_and_the_code() {
        let status = exit_code_status(&["sh".to_owned(), "-c".to_owned(), "exit 3".to_owned()], 3);
        assert_eq!(
            status["message"],
            "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
        );
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        assert_eq!(frame(Channel::Error, b"{}")[0], 3);
    }
}
