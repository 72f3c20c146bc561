//! Relaying requests between a client connection and an upstream, for the proxying roles.

pub(crate) mod conn;

pub use conn::FRESH_GRACE;
pub(crate) mod decision;
pub mod error_page;
pub(crate) mod exchange;
pub(crate) use exchange::RESPONSE_LIMITS;
pub(crate) mod ratelimit;
pub mod rewrite;
