//! Reading a request the gateway answers itself (activation, admin API): its media
//! type, and its body, refusing more than a limit before it is buffered.

use bytes::{Bytes, BytesMut};
use pingora::protocols::http::ServerSession;

/// The request's media type (`Content-Type` without parameters, lowercased).
pub(crate) fn media_type(req: &pingora::http::RequestHeader) -> Option<String> {
    let value = req.headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Longer than the limit (declared or sent).
    TooLarge,
    /// The client sent a malformed body or went away.
    Read,
}

/// Reads the whole request body, refusing more than `limit` bytes (a larger
/// `Content-Length` is refused before anything is read).
pub(crate) async fn read_body(
    session: &mut ServerSession,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let mut body = BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(BodyError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(_) => return Err(BodyError::Read),
        }
    }
}
