//! Locally generated answers: short `text/plain`, or JSON when the client's `Accept` asks for it.

use bytes::BytesMut;

use crate::http::{reason_phrase, write_simple_response, Headers};
use crate::metrics::UpstreamError;

/// What every role answers when its upstream cannot be reached (Neutron's agent text, kept
/// verbatim because operators grep for it).
pub const UPSTREAM_UNAVAILABLE: &str =
    "The remote metadata server is temporarily unavailable. Please try again later.";

/// What the agent answers when its lookup backend (Neutron, Keystone) fails.
pub const LOOKUP_UNAVAILABLE: &str =
    "The metadata agent could not look up the instance. Please try again later.";

/// What a client is answered when its upstream failed before any of the answer went out
/// (DESIGN.md's error table): unreachable → 503, too slow → 504, broken → 502.
pub(crate) fn upstream_failure(kind: UpstreamError) -> (u16, &'static str) {
    let status = match kind {
        UpstreamError::Refused | UpstreamError::Unreachable | UpstreamError::Tls => 503,
        UpstreamError::Timeout => 504,
        UpstreamError::Malformed | UpstreamError::Reset => 502,
    };
    (status, default_message(status))
}

/// The message for a status when the caller has nothing more specific to say.
pub fn default_message(status: u16) -> &'static str {
    match status {
        400 => "Bad request.",
        404 => "Not found.",
        405 => "Method not allowed.",
        408 => "Request timed out before the request head was complete.",
        413 => "Request body too large.",
        429 => "Too many requests.",
        431 => "Request header fields too large.",
        502 => "The remote metadata server sent an invalid response.",
        503 => UPSTREAM_UNAVAILABLE,
        504 => "The remote metadata server did not answer in time.",
        _ => "Error.",
    }
}

/// Whether `Accept` prefers JSON: it names `application/json` and no `text/` type before it.
fn wants_json(headers: Option<&Headers>) -> bool {
    let Some(accept) = headers.and_then(|h| h.get("accept")) else {
        return false;
    };
    let accept = String::from_utf8_lossy(accept).to_ascii_lowercase();
    match (accept.find("application/json"), accept.find("text/")) {
        (Some(j), Some(t)) => j < t,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Appends a complete error response to `out` and returns its body length. `close` adds
/// `Connection: close`.
pub fn write_error(
    status: u16,
    message: &str,
    request: Option<&Headers>,
    head_only: bool,
    close: bool,
    out: &mut BytesMut,
) -> u64 {
    let reason = reason_phrase(status);
    let (ctype, body): (&[u8], Vec<u8>) = if wants_json(request) {
        let body = serde_json::json!({
            "message": message,
            "code": format!("{status} {reason}"),
            "title": reason,
        });
        (b"application/json", body.to_string().into_bytes())
    } else {
        (
            b"text/plain; charset=UTF-8",
            format!("{message}\n").into_bytes(),
        )
    };
    let mut fields: Vec<(&str, &[u8])> = vec![("Content-Type", ctype)];
    if close {
        fields.push(("Connection", b"close"));
    }
    let mut buf = Vec::with_capacity(256 + body.len());
    write_simple_response(status, reason, &fields, &body, head_only, &mut buf);
    out.extend_from_slice(&buf);
    body.len() as u64
}
