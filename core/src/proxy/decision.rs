//! What a connection asks its owner and what it is told: the whole of what passes between the
//! role-agnostic [`super::conn::Conn`] and the endpoint with its role's policy. A connection
//! never calls out; it queues an [`Output`] and stops until the answer comes back as a call
//! (str0m's `poll_output`, quinn-proto's `ConnectionEvent`): so it can be driven, and tested,
//! without an endpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::http::ResponseHead;
use crate::metrics::UpstreamError;
use crate::socket::SockId;
use crate::upstream::{CacheKey, Stored};

use super::rewrite::HopRules;

/// Which request of which connection an answer is for. A connection runs one exchange at a
/// time; the sequence number tells a late answer for an exchange that has ended (timed out)
/// from the answer for the current one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Ticket {
    /// The connection (its client socket).
    pub(crate) conn: SockId,
    /// The exchange on it, counted from 1.
    pub(crate) seq: u64,
}

/// What to do with a request head (the policy's answer to [`Output::Route`]).
#[derive(Debug)]
pub(crate) enum Route {
    /// Send it upstream, rewritten by this hop's rules.
    Forward(Forward),
    /// Read the whole body, then ask for a [`Local`] answer ([`Output::Serve`]).
    Serve,
    /// Answer locally with an error; `why`, when not empty, is logged and ends the access line.
    Refuse {
        /// The status.
        status: u16,
        /// The body's message.
        message: String,
        /// Why, for the log.
        why: String,
    },
    /// Answer locally with this, without reading the request body (the agent's IMDSv2
    /// token, made once the instance is known); a body left unread closes the connection.
    Answer(Local),
    /// The policy needs time (a backend lookup): it answers later for the same [`Ticket`].
    Pending,
    /// Answer with this kept answer (the response cache's fresh entry), as old as it is.
    Reply(Arc<Stored>),
}

impl Route {
    /// A refusal with nothing to log beyond the access line.
    pub(crate) fn refuse(status: u16, message: impl Into<String>) -> Route {
        Route::Refuse {
            status,
            message: message.into(),
            why: String::new(),
        }
    }
}

/// How a request goes upstream.
#[derive(Debug)]
pub(crate) struct Forward {
    /// What this hop deletes from the client's head.
    pub(crate) rules: &'static HopRules,
    /// What it sets (after deleting).
    pub(crate) fields: Vec<(&'static str, Vec<u8>)>,
    /// Ask the policy about the upstream's final status before it goes to the client
    /// ([`Output::Check`]).
    pub(crate) check: bool,
    /// The policy may route the request again after that check (its decision may be stale:
    /// a cached lookup).
    pub(crate) reroutable: bool,
    /// Keep a 200 answer under this key ([`Output::Captured`]).
    pub(crate) capture: Option<CacheKey>,
    /// The answer to give instead of an error if every server fails (a stale entry, usable
    /// until the instant given).
    pub(crate) stale: Option<(Arc<Stored>, Instant)>,
}

impl Forward {
    /// A plain forward: nothing kept, no stale answer.
    pub(crate) fn new(
        rules: &'static HopRules,
        fields: Vec<(&'static str, Vec<u8>)>,
        check: bool,
        reroutable: bool,
    ) -> Forward {
        Forward {
            rules,
            fields,
            check,
            reroutable,
            capture: None,
            stale: None,
        }
    }
}

/// A 200 answer to a GET, complete, for the response cache.
#[derive(Debug)]
pub(crate) struct Captured {
    /// Where the route asked it to be kept.
    pub(crate) key: CacheKey,
    /// The metadata server's head.
    pub(crate) head: ResponseHead,
    /// Its body (payload only), bounded by [`crate::upstream::MAX_ENTRY_BYTES`].
    pub(crate) body: Vec<u8>,
}

/// Two captures are the same when they are for the same key with the same status and body.
impl PartialEq for Captured {
    fn eq(&self, o: &Captured) -> bool {
        self.key == o.key && self.head.status == o.head.status && self.body == o.body
    }
}

impl Eq for Captured {}

impl Captured {
    /// The body, for the cache.
    pub(crate) fn take_body(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.body))
    }
}

/// A locally made answer (of a role that answers requests itself).
#[derive(Debug, Default)]
pub(crate) struct Local {
    /// The status.
    pub(crate) status: u16,
    /// Its fields (the connection adds framing: length and `Connection`).
    pub(crate) fields: Vec<(&'static str, String)>,
    /// The body (not sent for HEAD).
    pub(crate) body: Vec<u8>,
    /// The client the peer speaks for, which the access log names before the peer
    /// (`CLIENT,PEER`, as Nova's does).
    pub(crate) log_for: Option<String>,
}

/// Something for the owner of a connection to do or note. Drain after every call.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Output {
    /// A request head is ready ([`super::conn::Conn::request`]): answer with
    /// [`super::conn::Conn::route`].
    Route(Ticket),
    /// A request to answer locally is whole: answer with [`super::conn::Conn::local`].
    Serve(Ticket),
    /// The exchange needs an upstream connection: answer with
    /// [`super::conn::Conn::upstream`]. `fresh`: not one from the pool (a replay).
    Upstream {
        /// Must be a new connection.
        fresh: bool,
    },
    /// The upstream answered `status` (a final status, nothing sent to the client yet) and the
    /// route asked to hear of it: answer with [`super::conn::Conn::checked`].
    Check {
        /// The exchange.
        ticket: Ticket,
        /// The upstream's status.
        status: u16,
        /// The request can be sent again (the route allows it, idempotent, kept whole, not
        /// routed again before).
        can_reroute: bool,
    },
    /// The exchange is done with this upstream: pool it when `clean`, else close it.
    Release {
        /// The upstream socket.
        sock: SockId,
        /// It ended at a message boundary we framed and may carry another request.
        clean: bool,
    },
    /// Stop writing on the socket once its bytes are out.
    Shutdown(SockId),
    /// Close the socket.
    Close(SockId),
    /// An exchange ended with this status (`took` is `None` for a connection refused on
    /// arrival).
    Answered {
        /// The status sent.
        status: u16,
        /// How long the exchange took.
        took: Option<Duration>,
    },
    /// The upstream failed this way.
    UpstreamFailed(UpstreamError),
    /// An attempt on server `server` ended (only with more than one server to choose from):
    /// answered after `took`, or failed for the reason given.
    Attempt {
        /// The server's index.
        server: usize,
        /// From the attempt's start to its end.
        took: Duration,
        /// Why it failed, if it did.
        failure: Option<String>,
    },
    /// A request was answered 504 at its deadline.
    DeadlineMissed,
    /// A stale answer went out instead of an error.
    Stale,
    /// A 200 answer to keep, for the route's key.
    Captured(Box<Captured>),
}
