//! The metadata agent's decisions: which instance a proxied request comes from.

pub mod imds;
pub(crate) mod request;
pub mod static_map;

pub use imds::{AgentImds, Issuer};
pub use request::Rejection;
pub use static_map::{MapError, MapProblem, StaticMap};
