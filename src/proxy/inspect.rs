//! Reading what an Odoo request reaches before it is decided about: the whole body,
//! bounded by `odoo.max_rpc_body` and received at a minimum pace, then handed to
//! pingora to be sent upstream exactly as received once the request is allowed.

use std::time::Instant;

use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::{BodyPace, MIN_BODY_BYTES_PER_SEC};
use crate::app::Rules;
use crate::policy::odoo::{self, Endpoint, Reached, RequestParts};
use crate::policy::rpc::RpcRefusal;
use crate::request_body::{read_body, BodyError};

/// What the request of `session` on `endpoint` (normalized `path`, `query`) reaches.
/// The body read is kept for the upstream (`Session::set_replayed_request_body`).
pub(crate) async fn read(
    session: &mut Session,
    rules: &Rules,
    endpoint: Endpoint,
    path: &str,
    query: Option<&str>,
) -> Result<Reached, RpcRefusal> {
    let req = session.req_header();
    let encoded = req
        .headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Err(RpcRefusal::Encoded);
    }
    let limit = rules.odoo.max_rpc_body;
    let declared = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(RpcRefusal::TooLarge(limit));
    }
    let expects_continue = req
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        // The client waits for a go-ahead before it sends the body the decision needs:
        // the gateway gives it, and the upstream (which gets the body whole) is not
        // asked again.
        let go_ahead = ResponseHeader::build(100, Some(0)).map_err(|_| RpcRefusal::Unreceived)?;
        session
            .downstream_session
            .write_response_header(Box::new(go_ahead))
            .await
            .map_err(|_| RpcRefusal::Unreceived)?;
        session
            .req_header_mut()
            .remove_header(&http::header::EXPECT);
    }
    // No pause longer than the head's deadline, and a minimum average rate after it:
    // a slow body must not hold the request (and its buffer) for long.
    session.set_read_timeout(Some(rules.body_gap));
    let mut pace = BodyPace {
        started: Instant::now(),
        grace: rules.body_gap,
        received: 0,
    };
    let deadline = rules.body_gap
        + std::time::Duration::from_secs((limit as u64).div_ceil(MIN_BODY_BYTES_PER_SEC));
    let body = match tokio::time::timeout(deadline, read_body(session, limit)).await {
        Ok(Ok(body)) => body,
        Ok(Err(BodyError::TooLarge)) => return Err(RpcRefusal::TooLarge(limit)),
        Ok(Err(BodyError::Read)) | Err(_) => return Err(RpcRefusal::Unreceived),
    };
    if !pace.on_time(body.len()) {
        return Err(RpcRefusal::Unreceived);
    }
    let req = session.req_header();
    let content_type = req
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let reached = odoo::reached(
        endpoint,
        RequestParts {
            path,
            query,
            content_type,
            body: &body,
        },
    )?;
    if !body.is_empty() {
        session.set_replayed_request_body(body);
    }
    Ok(reached)
}
