//! Page sizes and page tokens: a token is where the previous page ended, opaque to clients (base64url of a kind
//! and a place), so that the next page starts right after it whatever changed in between.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use buildit_core::store::RunCursor;
use tonic::Status;

/// A page when the client asks for none.
const DEFAULT_PAGE: u32 = 50;
/// The largest page.
const MAX_PAGE: u32 = 500;

/// The page size a request asks for: 0 is the default, more than the most is the most.
pub(super) fn page_size(asked: u32) -> u32 {
    match asked {
        0 => DEFAULT_PAGE,
        size => size.min(MAX_PAGE),
    }
}

/// The token of a page of runs that ended at `last`.
pub(super) fn run_token(last: &RunCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("runs:{}:{}", last.at_ms, last.id))
}

/// Where a page of runs starts: after the place `token` names (`None` for an empty token, the first page).
pub(super) fn run_cursor(token: &str) -> Result<Option<RunCursor>, Status> {
    let Some(place) = decode(token, "runs")? else {
        return Ok(None);
    };
    let (at_ms, id) = place
        .split_once(':')
        .and_then(|(at_ms, id)| Some((at_ms.parse::<i64>().ok()?, id)))
        .filter(|(_, id)| !id.is_empty())
        .ok_or_else(bad_token)?;
    Ok(Some(RunCursor {
        at_ms,
        id: id.to_owned(),
    }))
}

/// The token of a page of pipelines that ended at `last`.
pub(super) fn pipeline_token(last: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("pipelines:{last}"))
}

/// Where a page of pipelines starts: after the name `token` names.
pub(super) fn pipeline_cursor(token: &str) -> Result<Option<String>, Status> {
    decode(token, "pipelines")
}

/// The place in a token of `kind` (a token of another list is refused, not misread).
fn decode(token: &str, kind: &str) -> Result<Option<String>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad_token())?;
    let text = String::from_utf8(bytes).map_err(|_| bad_token())?;
    text.strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .map(|place| Some(place.to_owned()))
        .ok_or_else(bad_token)
}

fn bad_token() -> Status {
    Status::invalid_argument(
        "invalid page_token: pass the `next_page_token` of the previous page of the same list",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_read_back_as_the_place_they_were_made_from() {
        let place = RunCursor {
            at_ms: 1_700_000_000_123,
            id: "18a:b-c".to_owned(),
        };
        let token = run_token(&place);
        assert!(!token.contains(':'), "{token}");
        assert_eq!(run_cursor(&token).ok().flatten(), Some(place));
        assert_eq!(run_cursor("").ok(), Some(None));
        let name = pipeline_token("build:all");
        assert_eq!(
            pipeline_cursor(&name).ok().flatten().as_deref(),
            Some("build:all")
        );
    }

    #[test]
    fn a_bad_or_foreign_token_is_invalid_argument() {
        let pipelines = pipeline_token("build");
        for bad in [
            "not base64!",
            "cnVuczo",
            &URL_SAFE_NO_PAD.encode("runs:x:id"),
            &URL_SAFE_NO_PAD.encode("runs:12:"),
            &pipelines,
        ] {
            let refused = run_cursor(bad).map(|_| ()).map_err(|status| status.code());
            assert_eq!(refused, Err(tonic::Code::InvalidArgument), "{bad}");
        }
        let refused = pipeline_cursor(&run_token(&RunCursor {
            at_ms: 1,
            id: "a".to_owned(),
        }));
        assert!(refused.is_err());
    }
}
