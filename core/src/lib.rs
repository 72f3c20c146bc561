//! Sans-IO core of mdproxy: every protocol decision of the namespace proxy, the metadata agent
//! and the metadata server, as deterministic state machines.
//!
//! # The contract
//!
//! Nothing in this crate touches the operating system: no sockets, files, threads, environment,
//! clock or randomness. Time enters as a `now: Instant` argument, bytes as slices, randomness
//! through a trait the runtime implements; side effects leave as values ("connect there",
//! "close this") that a runtime carries out and reports back. The same inputs always give the
//! same outputs, which is what lets one suite of tests, fuzz targets and two runtimes share it.
//! TLS (feature `tls`, [`tls`]) keeps to this but for one thing: the handshake's random bytes
//! come from the cryptographic provider (ring, from the operating system).
//!
//! # Driving it (the single-mutation invariant, after str0m)
//!
//! After **any** `handle*` call, drain every `poll_*` method until it returns `None`, write what
//! `pending_write` offers, and only then ask `poll_timeout` and block. Skipping a drain can lose
//! an action or a wake-up.
//!
//! # The shape inside
//!
//! The words every part shares live in modules that need no other part: [`socket`] (ids,
//! inputs, actions, events), [`config`], [`scope`]. A runtime drives one
//! [`endpoint::Endpoint`], which routes socket events: each client connection
//! (`proxy::conn`) does HTTP for any role and asks for each decision as an output
//! (`proxy::decision`); the endpoint answers socket questions itself (pool, owners, admission,
//! timers) and the others from its role's policy (`policy`), whose answers go back to the
//! connection as calls. Nothing below the endpoint calls up into it.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod agent;
pub mod cache;
pub mod config;
pub mod endpoint;
pub(crate) mod explain;
pub mod health;
pub mod http;
pub mod listener;
pub mod lookup;
pub mod metadata;
pub mod metrics;
pub mod ovn;
pub mod ovsdb;
pub(crate) mod policy;
pub mod provision;
pub mod proxy;
pub mod scope;
pub mod sign;
pub mod socket;
pub mod tls;
pub mod upstream;

#[cfg(any(test, fuzzing, feature = "testing"))]
pub mod testing;
