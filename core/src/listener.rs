//! Listeners that carry a scope of their own (the node role): one process listens inside many
//! router, network and `ovnmeta-` namespaces, and what a connection is for comes from the
//! listener it arrived on, not from a header. A provisioner registers each with
//! [`Endpoint::add_listener`](crate::endpoint::Endpoint::add_listener) under an id of its
//! choosing, the runtime tags the sockets it binds for it with that id and reports each
//! connection through [`Endpoint::accept_on`](crate::endpoint::Endpoint::accept_on).
//!
//! One registration may stand for several sockets (`0.0.0.0:9697` and `[::]:9697` of one
//! router): its rate limiter and its connection count are shared by them, which is what
//! "per scope" means for the limits.

use crate::config::RateLimit;
use crate::metadata::ImdsV2;
use crate::scope::Scope;

/// Names one registration; chosen by whoever registers (ids are the caller's counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub u64);

/// What the connections of one registration are for, and their limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScopedListener {
    /// The router, network or OVN network whose instances connect here.
    pub scope: Scope,
    /// Per-client-IP request rate limit (Neutron's base/burst windows); `None` = off.
    pub rate_limit: Option<RateLimit>,
    /// Client connections open at once on this registration (the endpoint's own
    /// `max_conns` still caps them all together).
    pub max_conns: usize,
    /// The IMDSv2 mode of this listener's instances, above every other setting of the scope
    /// (static map, `--imdsv2-scope`, `--imdsv2`); `None`: those decide.
    pub imdsv2: Option<ImdsV2>,
}
