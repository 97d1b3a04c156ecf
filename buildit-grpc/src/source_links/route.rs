//! The one route of the source links' server: `GET /sources/{token}` streams the archive a live link gives, and
//! uses the link up; everything else is 404 (or 405 for another method on that route).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::io::ReaderStream;

use super::registry::{Refusal, SourceLinks};

/// The address a request came from: what logs name the downloader by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// How much of the file is read and sent at once: fewer, larger writes than the default 4 KiB, while a
/// download still holds little memory.
const CHUNK: usize = 64 * 1024;

/// The answer to an unknown, used or expired link, and to any other path: the same for all, so that an answer
/// tells nothing of which it was.
const NO_SUCH_LINK: &str = "no such source link (unknown, used or expired)\n";

/// The routes; each request carries its connection's [`Peer`] as an extension.
pub(crate) fn router(links: Arc<SourceLinks>) -> Router {
    Router::new()
        // A HEAD would otherwise be answered by the GET handler (axum's default) and use the link up.
        .route("/sources/{token}", get(download).head(method_not_allowed))
        .fallback(not_found)
        .with_state(links)
}

/// Uses up the token's link and streams its archive: from the open file, chunk by chunk, never whole in
/// memory.
async fn download(
    State(links): State<Arc<SourceLinks>>,
    Extension(Peer(peer)): Extension<Peer>,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    // A token that does not decode (bad percent-encoding) is no token of ours either.
    let Ok(Path(token)) = token else {
        tracing::warn!(%peer, why = "not a token", "source link refused");
        return not_found().await;
    };
    let granted = match links.take(&token) {
        Ok(granted) => granted,
        Err(refusal) => {
            let why = match refusal {
                Refusal::Unknown => "unknown or used",
                Refusal::Expired => "expired",
            };
            tracing::warn!(%peer, why, "source link refused");
            return not_found().await;
        }
    };
    let archive = granted.digest;
    let opened = async {
        let file = tokio::fs::File::open(&granted.archive).await?;
        let metadata = file.metadata().await?;
        if metadata.is_file() {
            Ok((file, metadata.len()))
        } else {
            Err(std::io::Error::other("not a file"))
        }
    }
    .await;
    let (file, length) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            tracing::warn!(%peer, %archive, %error, "source link refused: its archive cannot be read");
            return not_found().await;
        }
    };
    tracing::info!(%peer, %archive, bytes = length, "source link served");
    (
        [
            (header::CONTENT_TYPE, "application/x-tar".to_owned()),
            (header::CONTENT_LENGTH, length.to_string()),
        ],
        Body::from_stream(ReaderStream::with_capacity(file, CHUNK)),
    )
        .into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, NO_SUCH_LINK).into_response()
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "GET")],
        "only GET\n",
    )
        .into_response()
}
