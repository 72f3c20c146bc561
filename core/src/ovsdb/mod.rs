//! OVSDB (RFC 7047 and the OVS extensions `monitor_cond`, `monitor_cond_since`, `update2` and
//! `update3`), sans-IO: the values of the database ([`datum`]) and the changes a monitor
//! reports ([`update`]). The session that speaks the protocol over a byte stream builds on
//! these; the OVN Southbound replica (`crate::ovn`) consumes them.

pub mod datum;
pub mod monitor;
pub mod update;

pub use datum::{Atom, Datum, DatumError};
pub use monitor::{Condition, TableMonitor};
pub use update::{
    parse_table_updates2, Columns, RowOp, RowUpdate, TableUpdate, TableUpdates, UpdateError,
};
