//! OVSDB (RFC 7047 and the OVS extensions `monitor_cond`, `monitor_cond_since`, `update2` and
//! `update3`), sans-IO: the values of the database ([`datum`]), what a monitor asks for
//! ([`monitor`]) and the changes it reports ([`update`]); the byte stream cut into messages
//! ([`framing`], [`rpc`]); where servers are ([`remote`]); and the client [`session`] that
//! keeps a monitor alive across reconnects and cluster members. The OVN Southbound replica
//! (`crate::ovn`) consumes the session's events.

pub mod datum;
pub mod framing;
pub mod monitor;
pub mod remote;
pub mod rpc;
pub mod session;
pub mod transact;
pub mod update;

pub use datum::{Atom, Datum, DatumError};
pub use framing::{FrameError, Framer};
pub use monitor::{Condition, TableMonitor};
pub use remote::{parse_remotes, Remote, RemoteError};
pub use session::{
    Session, SessionConfig, SessionConfigError, SessionEvent, SessionState, SessionStatus,
};
pub use update::{
    parse_table_updates2, Columns, MapKeys, RowOp, RowUpdate, TableUpdate, TableUpdates,
    UpdateError, UpdatesSeed,
};
