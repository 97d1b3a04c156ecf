//! One exec stream once upgraded: the client's stdin frames into the command, the command's stdout and
//! stderr out as frames as they come (each send waits until the client takes it, so memory stays bounded),
//! then how it ended on the error channel, then the close.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use bollard::container::LogOutput;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use tokio_util::sync::CancellationToken;

use super::options::ExecOptions;
use super::protocol::{
    Channel, ClientFrame, Protocol, exit_code_status, frame, internal_error_status,
    read_client_frame, success_status,
};
use crate::kubelet::{CreatedExec, ExecEnd, ExecInput, ExecOutput, RunningExec};
use crate::shared::Shared;

/// What Docker writes on stdout, with exit code 126 or 127, when the command could not be started at all
/// (not found, not executable); the kubelet reports that as an internal error, not as the command's output.
const START_FAILURE: &[u8] = b"OCI runtime exec failed";

/// An exec ready to be served on an upgraded connection.
#[derive(Debug)]
pub(crate) struct ExecSession {
    pub shared: Arc<Shared>,
    pub protocol: Protocol,
    pub options: ExecOptions,
    pub exec: CreatedExec,
}

/// The sending half of the connection, while the client is there.
struct Client {
    sink: Option<SplitSink<WebSocket, Message>>,
}

impl Client {
    /// Sends a frame; a client that is gone is forgotten and the rest of the output dropped, so that the
    /// command can still run to its end.
    async fn send(&mut self, channel: Channel, data: &[u8]) {
        let Some(sink) = self.sink.as_mut() else {
            return;
        };
        if sink
            .send(Message::Binary(frame(channel, data)))
            .await
            .is_err()
        {
            self.sink = None;
        }
    }

    /// Sends the status on the error channel, then closes the connection.
    async fn finish(mut self, status: &Value) {
        self.send(Channel::Error, status.to_string().as_bytes())
            .await;
        if let Some(mut sink) = self.sink {
            // client-go reads its streams to their end only when the close is a normal closure (1000); a
            // client that went away in the meantime needs no close.
            let normal = CloseFrame {
                code: close_code::NORMAL,
                reason: "".into(),
            };
            let _ = sink.send(Message::Close(Some(normal))).await;
            let _ = sink.close().await;
        }
    }
}

/// Copies the client's stdin frames into the command until the client closes stdin or goes; either way the
/// command then sees the end of its input rather than waiting for ever.
async fn read_client(
    mut stream: SplitStream<WebSocket>,
    mut input: ExecInput,
    protocol: Protocol,
    stdin_attached: bool,
) {
    let mut stdin_open = stdin_attached;
    while let Some(Ok(message)) = stream.next().await {
        let data = match message {
            Message::Binary(data) => data,
            Message::Close(_) => break,
            _ => continue,
        };
        match read_client_frame(&data, protocol) {
            ClientFrame::Stdin(bytes) if stdin_open => {
                let written = async {
                    input.write_all(bytes).await?;
                    input.flush().await
                };
                // The command closed its stdin or ended: later input has nowhere to go.
                if written.await.is_err() {
                    stdin_open = false;
                }
            }
            ClientFrame::CloseStdin if stdin_open => {
                stdin_open = false;
                // Half-closes the engine's connection: the engine closes the command's stdin.
                let _ = input.shutdown().await;
            }
            _ => {}
        }
    }
    if stdin_open {
        let _ = input.shutdown().await;
    }
}

/// The lowest channel the client reads, on which the kubelet announces the stream with an empty frame.
fn announced_channel(options: &ExecOptions) -> Channel {
    if options.stdout {
        Channel::Stdout
    } else if options.stderr {
        Channel::Stderr
    } else {
        Channel::Error
    }
}

/// Where the output ended.
enum OutputEnd {
    /// The command ended; `held` is Docker's report that it could not start, if the output was only that.
    Complete { held: Option<Bytes> },
    /// The fake is stopping.
    Shutdown,
}

/// Sends the command's stdout and stderr to the client as they come, until the engine's stream ends.
async fn forward_output(
    output: &mut ExecOutput,
    client: &mut Client,
    shutdown: &CancellationToken,
) -> OutputEnd {
    let mut held: Option<Bytes> = None;
    let mut first = true;
    loop {
        let item = tokio::select! {
            item = output.next() => item,
            () = shutdown.cancelled() => return OutputEnd::Shutdown,
        };
        let (channel, message) = match item {
            Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                (Channel::Stdout, message)
            }
            Some(Ok(LogOutput::StdErr { message })) => (Channel::Stderr, message),
            Some(Ok(LogOutput::StdIn { .. })) => continue,
            // The engine's connection ended: so did the command.
            Some(Err(_)) | None => return OutputEnd::Complete { held },
        };
        // Held back until it is known whether it is Docker's report or the command's own output.
        if std::mem::take(&mut first)
            && channel == Channel::Stdout
            && message.starts_with(START_FAILURE)
        {
            held = Some(message);
            continue;
        }
        if let Some(held) = held.take() {
            client.send(Channel::Stdout, &held).await;
        }
        client.send(channel, &message).await;
    }
}

/// The status of the ended command: a start failure Docker reported, or its exit code (any held output
/// that turned out to be the command's own is sent first).
async fn ended_status(
    end: &ExecEnd,
    held: Option<Bytes>,
    client: &mut Client,
    command: &[String],
    exec_id: &str,
) -> Value {
    match (end.exit_code().await, held) {
        (Ok(126 | 127), Some(report)) => internal_error_status(&format!(
            "error executing command in container: failed to exec in container: failed to start exec              \"{exec_id}\": {}",
            String::from_utf8_lossy(&report).trim_end()
        )),
        (Ok(code), held) => {
            if let Some(held) = held {
                client.send(Channel::Stdout, &held).await;
            }
            if code == 0 {
                success_status()
            } else {
                exit_code_status(command, code)
            }
        }
        (Err(error), _) => internal_error_status(&error.to_string()),
    }
}

/// Serves the exec on the upgraded connection until the command ends (or the fake stops).
pub(crate) async fn serve(session: ExecSession, socket: WebSocket) {
    let ExecSession {
        shared,
        protocol,
        options,
        exec,
    } = session;
    let exec_id = exec.id().to_owned();
    let (sink, stream) = socket.split();
    let mut client = Client { sink: Some(sink) };
    let RunningExec {
        mut output,
        input,
        end,
    } = match exec.start().await {
        Ok(running) => running,
        Err(error) => {
            client
                .finish(&internal_error_status(&error.to_string()))
                .await;
            return;
        }
    };
    let stop_reading = CancellationToken::new();
    let reader = tokio::spawn({
        let stop_reading = stop_reading.clone();
        let reading = read_client(stream, input, protocol, options.stdin);
        async move {
            tokio::select! {
                () = reading => {}
                () = stop_reading.cancelled() => {}
            }
        }
    });
    client.send(announced_channel(&options), &[]).await;
    if let OutputEnd::Complete { held } =
        forward_output(&mut output, &mut client, &shared.shutdown).await
    {
        let status = ended_status(&end, held, &mut client, &options.command, &exec_id).await;
        client.finish(&status).await;
    }
    stop_reading.cancel();
    // The reader ends at once once cancelled; a reader that panicked has nothing left to clean.
    let _ = reader.await;
}
