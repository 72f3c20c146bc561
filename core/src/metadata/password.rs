//! The OpenStack `password` file: Nova's `nova/api/metadata/password.py`.
//!
//! The guest (cloudbase-init, or cloud-init's `set_passwords`) POSTs its encrypted password
//! once; anyone on the instance may GET it back. Nova stores it in four 255-character chunks,
//! hence the limit.

use super::{InstanceData, MetaRequest, MetaResponse, StoreRequest, TEXT_HTML_UTF8};
use crate::http::Method;

/// Largest password body Nova accepts: 4 chunks of 255.
pub const MAX_PASSWORD_SIZE: usize = 4 * 255;

/// Answers a request for the password of `data` (already identified).
pub(super) fn handle(data: &mut InstanceData, req: &MetaRequest<'_>) -> MetaResponse {
    let ok = |body: Vec<u8>| MetaResponse::new(200, TEXT_HTML_UTF8, body);
    match req.method {
        Method::Get => ok(data.password.clone().unwrap_or_default().into_bytes()),
        Method::Post => {
            // Nova's order: conflict first, then size.
            if data.password.as_deref().is_some_and(|p| !p.is_empty()) {
                // webob's HTTPConflict explanation.
                return MetaResponse::error(
                    409,
                    "There was a conflict when trying to complete your request.",
                );
            }
            if req.body.len() > MAX_PASSWORD_SIZE {
                return MetaResponse::error(400, "Request is too large.");
            }
            let Ok(password) = std::str::from_utf8(req.body) else {
                // Nova would fail decoding it (a 500); say what is wrong instead.
                return MetaResponse::error(400, "The password must be UTF-8 text.");
            };
            let mut resp = ok(Vec::new());
            // An empty POST leaves the password unset, as in Nova (it stores '').
            if !password.is_empty() {
                data.password = Some(password.to_owned());
                resp.store = Some(StoreRequest {
                    instance_uuid: data.uuid.clone(),
                    password: password.to_owned(),
                });
            }
            resp
        }
        // Including HEAD: Nova compares `req.method` with 'GET' and 'POST' only.
        _ => MetaResponse::error(400, "GET and POST only are supported."),
    }
}
