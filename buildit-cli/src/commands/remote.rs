//! Talking to the daemon: connecting, the bearer token, and what a refused call means for the exit code.

use std::time::Duration;

use buildit_grpc::diagnostics_of;
use buildit_grpc::proto::build_it_client::BuildItClient;
use tonic::transport::Channel;

use crate::exit::Exit;
use crate::report::error_line;

/// A client of the daemon at `server` (`http://HOST:PORT` or `HOST:PORT`).
pub(crate) async fn connect(server: &str) -> Result<BuildItClient<Channel>, Exit> {
    let url = if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    };
    let mut endpoint = match Channel::from_shared(url.clone()) {
        Ok(endpoint) => endpoint,
        Err(error) => {
            error_line(&format!("`{url}` is not a server address: {error}"), None);
            return Err(Exit::Usage);
        }
    };
    if url.starts_with("https://") {
        // Public certificate authorities, and the one `BUILDIT_CA_CERT` names (a daemon's own certificate).
        let mut tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
        if let Some(path) = std::env::var_os("BUILDIT_CA_CERT").filter(|path| !path.is_empty()) {
            match std::fs::read(&path) {
                Ok(pem) => tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
                Err(error) => {
                    error_line(
                        &format!(
                            "cannot read `BUILDIT_CA_CERT` (`{}`): {error}",
                            path.to_string_lossy()
                        ),
                        None,
                    );
                    return Err(Exit::Usage);
                }
            }
        }
        endpoint = match endpoint.tls_config(tls) {
            Ok(endpoint) => endpoint,
            Err(error) => {
                error_line(&format!("cannot set up TLS for `{url}`: {error}"), None);
                return Err(Exit::Usage);
            }
        };
    }
    match endpoint
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
    {
        Ok(channel) => Ok(BuildItClient::new(channel)),
        Err(error) => {
            error_line(
                &format!("cannot reach the daemon at `{url}`: {error}"),
                Some("start it with `buildit daemon`, or check `--server` / `BUILDIT_SERVER`"),
            );
            Err(Exit::Infrastructure)
        }
    }
}

/// `message` with the caller's bearer token.
pub(crate) fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Reports a refused call; the exit code it means. An invalid pipeline prints every diagnostic the daemon found,
/// with its code and position, as `buildit validate` does.
pub(crate) fn refused(status: &tonic::Status) -> Exit {
    match status.code() {
        tonic::Code::InvalidArgument => {
            let diagnostics = diagnostics_of(status);
            for diagnostic in &diagnostics {
                eprintln!(
                    "{}[{}]: {}\n  --> {}:{}:{}",
                    diagnostic.severity,
                    diagnostic.code,
                    diagnostic.message,
                    diagnostic.file,
                    diagnostic.line,
                    diagnostic.column
                );
                if !diagnostic.help.is_empty() {
                    eprintln!("  help: {}", diagnostic.help);
                }
            }
            error_line(status.message(), None);
            if diagnostics.is_empty() {
                Exit::Usage
            } else {
                Exit::InvalidConfig
            }
        }
        tonic::Code::Unauthenticated => {
            error_line(
                status.message(),
                Some(
                    "give a token with `--token` or `BUILDIT_TOKEN` (`buildit tokens create` makes one)",
                ),
            );
            Exit::Usage
        }
        tonic::Code::NotFound => {
            error_line(&format!("not found: {}", status.message()), None);
            Exit::Usage
        }
        _ => {
            error_line(&format!("the daemon: {}", status.message()), None);
            Exit::Infrastructure
        }
    }
}
