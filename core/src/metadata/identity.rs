//! Which instance is asking: Nova's `_handle_instance_id_request` (proxy mode) or
//! `_handle_remote_ip_request` (`direct` mode). Reference §C2 steps 2–5.

use std::collections::BTreeMap;
use std::net::IpAddr;

use std::time::Instant;

use super::{MetaRequest, MetaResponse, Prepared, ServerConfig, Who};
use crate::sign::Verifier;

const INSTANCE_ID: &str = "X-Instance-ID";
const SIGNATURE: &str = "X-Instance-ID-Signature";
const TENANT_ID: &str = "X-Tenant-ID";
const FORWARDED_FOR: &str = "X-Forwarded-For";

/// Nova's 403 text.
pub(crate) const BAD_SIGNATURE: &str = "Invalid proxy request signature.";

/// Identifies the instance behind `req`, or gives the error response.
pub(super) fn identify(
    now: Instant,
    cfg: &ServerConfig,
    verifier: Option<&Verifier>,
    instances: &BTreeMap<String, Prepared>,
    by_ip: &BTreeMap<IpAddr, Option<String>>,
    req: &MetaRequest<'_>,
) -> Result<Who, MetaResponse> {
    if cfg.direct {
        return by_peer(by_ip, req);
    }
    let h = req.headers;
    // Nova's checks, in Nova's order. (Behind a WSGI server Nova sees duplicates joined with
    // ","; we see them apart and give the message Nova meant.)
    let message = if h.get(INSTANCE_ID).is_none() {
        Some("X-Instance-ID header is missing from request.")
    } else if h.get(SIGNATURE).is_none() {
        Some("X-Instance-ID-Signature header is missing from request.")
    } else if h.get(TENANT_ID).is_none() {
        Some("X-Tenant-ID header is missing from request.")
    } else if h.count(INSTANCE_ID) > 1 {
        Some("Multiple X-Instance-ID headers found within request.")
    } else if h.count(TENANT_ID) > 1 {
        Some("Multiple X-Tenant-ID headers found within request.")
    } else {
        None
    };
    if let Some(message) = message {
        return Err(MetaResponse::error(400, message));
    }
    let (Some(id), Some(sig), Some(tenant)) =
        (h.get(INSTANCE_ID), h.get(SIGNATURE), h.get(TENANT_ID))
    else {
        return Err(MetaResponse::error(
            400,
            "X-Instance-ID header is missing from request.",
        ));
    };
    let address = h
        .get(FORWARDED_FOR)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned);
    let peer = address.as_deref().unwrap_or("-");

    // Two signatures would reach Nova joined with "," and never match: refuse like a mismatch.
    let id_text = std::str::from_utf8(id).ok();
    let verified = match (verifier, id_text) {
        (Some(v), Some(id)) => h.count(SIGNATURE) == 1 && v.verify(now, id, sig),
        _ => false,
    };
    let (true, Some(id)) = (verified, id_text) else {
        // Never log the expected signature: it is derived from the secret (nova LP#2150094).
        log::warn!(
            "{peer}: X-Instance-ID-Signature {:?} does not match the expected signature for id {:?}",
            String::from_utf8_lossy(sig),
            String::from_utf8_lossy(id)
        );
        return Err(MetaResponse::error(403, BAD_SIGNATURE));
    };
    let Some(instance) = instances.get(id) else {
        log::info!("{peer}: instance {id} not found");
        return Err(MetaResponse::not_found());
    };
    if instance.data.project_id.as_bytes() != tenant {
        // LP#1235450: a port's device_id pointed at another project's instance.
        log::warn!(
            "{peer}: X-Tenant-ID {:?} does not match the project of instance {id}",
            String::from_utf8_lossy(tenant)
        );
        return Err(MetaResponse::not_found());
    }
    Ok(Who {
        uuid: id.to_owned(),
        address,
    })
}

fn by_peer(
    by_ip: &BTreeMap<IpAddr, Option<String>>,
    req: &MetaRequest<'_>,
) -> Result<Who, MetaResponse> {
    let Some(peer) = req.peer.map(|ip| ip.to_canonical()) else {
        return Err(MetaResponse::not_found());
    };
    match by_ip.get(&peer) {
        Some(Some(uuid)) => Ok(Who {
            uuid: uuid.clone(),
            address: Some(peer.to_string()),
        }),
        _ => {
            log::info!("{peer}: no instance has this fixed IP");
            Err(MetaResponse::not_found())
        }
    }
}
