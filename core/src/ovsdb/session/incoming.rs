//! A received message's text read into what the session acts on. The messages that carry
//! rows (an `update2`/`update3` notification while monitoring, the reply to our monitor
//! request) are read straight from the text into [`TableUpdates`]: a `Value` of a 10 000-port
//! snapshot is several times its 6 MB of text, and it was the agent's peak memory. Everything
//! else (a few hundred bytes: echoes, the `_Server` row, acknowledgements) goes through a
//! `Value` and [`Message::from_json`], which checks it in full.
//!
//! A first pass reads only the envelope (`id`, `method`, `error`; the rest skipped without
//! allocating) to tell which is which.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{MonitorKind, Pending};
use crate::ovsdb::rpc::Message;
use crate::ovsdb::update::{TableUpdates, Updates};

/// What a message is, read.
pub(super) enum Incoming {
    /// Anything but rows.
    Message(Message),
    /// The notification the monitor sends (`update3`: with its transaction id).
    Updates {
        /// The monitor it is for.
        monitor: Value,
        txn: Option<Box<str>>,
        updates: TableUpdates,
    },
    /// The answer to our monitor request `id`.
    MonitorReply { id: u64, reply: MonitorReply },
}

/// A monitor reply: `monitor_cond_since`'s `[found, last-txn-id, updates]`, or
/// `monitor_cond`'s updates alone.
pub(super) struct MonitorReply {
    pub(super) found: bool,
    pub(super) txn: Option<Box<str>>,
    pub(super) updates: TableUpdates,
}

impl MonitorReply {
    /// The reply of a `kind` request, from its `result` already parsed into a `Value` (the
    /// rare reply that took the general path).
    pub(super) fn from_value(kind: MonitorKind, v: &Value) -> Result<MonitorReply, String> {
        let reply = match kind {
            MonitorKind::Since => <(bool, Box<str>, Updates)>::deserialize(v).map(Into::into),
            MonitorKind::Cond => Updates::deserialize(v).map(Into::into),
        };
        reply.map_err(|e| format!("malformed monitor reply: {e}"))
    }
}

impl From<(bool, Box<str>, Updates)> for MonitorReply {
    fn from((found, txn, Updates(updates)): (bool, Box<str>, Updates)) -> MonitorReply {
        MonitorReply {
            found,
            txn: Some(txn),
            updates,
        }
    }
}

impl From<Updates> for MonitorReply {
    fn from(Updates(updates): Updates) -> MonitorReply {
        MonitorReply {
            found: false,
            txn: None,
            updates,
        }
    }
}

/// The members that say what a message is.
#[derive(Deserialize)]
struct Envelope {
    id: Option<Value>,
    method: Option<Box<str>>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Params<T> {
    params: T,
}

#[derive(Deserialize)]
struct Reply<T> {
    result: T,
}

/// An update notification's params: `update3`'s `[monitor, txn, updates]` or `update2`'s
/// `[monitor, updates]`.
pub(super) type UpdateParams = (Value, Option<Box<str>>, TableUpdates);

/// The params of the update notification `kind` expects, from a `Value` (the general path).
pub(super) fn update_params(kind: MonitorKind, v: &Value) -> Result<UpdateParams, String> {
    match kind {
        MonitorKind::Since => <(Value, Box<str>, Updates)>::deserialize(v).map(since),
        MonitorKind::Cond => <(Value, Updates)>::deserialize(v).map(cond),
    }
    .map_err(|e| e.to_string())
}

fn since((m, txn, Updates(u)): (Value, Box<str>, Updates)) -> UpdateParams {
    (m, Some(txn), u)
}

fn cond((m, Updates(u)): (Value, Updates)) -> UpdateParams {
    (m, None, u)
}

/// The notification method the monitor of `kind` sends.
pub(super) fn update_method(kind: MonitorKind) -> &'static str {
    match kind {
        MonitorKind::Since => "update3",
        MonitorKind::Cond => "update2",
    }
}

/// Reads `text`. `monitoring` is the kind of the running monitor, if one runs (its
/// notifications are read straight into rows); `pending` our requests awaiting an answer.
pub(super) fn read(
    text: &[u8],
    monitoring: Option<MonitorKind>,
    pending: &BTreeMap<u64, Pending>,
) -> Result<Incoming, String> {
    if let Ok(env) = serde_json::from_slice::<Envelope>(text) {
        let null = |v: &Option<Value>| v.as_ref().is_none_or(Value::is_null);
        match (&env.method, monitoring) {
            (Some(method), Some(kind)) if **method == *update_method(kind) && null(&env.id) => {
                let (monitor, txn, updates) = match kind {
                    MonitorKind::Since => serde_json::from_slice::<Params<_>>(text)
                        .map(|p: Params<(Value, Box<str>, Updates)>| since(p.params)),
                    MonitorKind::Cond => serde_json::from_slice::<Params<_>>(text)
                        .map(|p: Params<(Value, Updates)>| cond(p.params)),
                }
                .map_err(|e| format!("malformed {method} notification: {e}"))?;
                return Ok(Incoming::Updates {
                    monitor,
                    txn,
                    updates,
                });
            }
            (None, _) if null(&env.error) => {
                let id = env.id.as_ref().and_then(Value::as_u64);
                if let Some((id, &Pending::Monitor(kind, _))) =
                    id.and_then(|id| Some((id, pending.get(&id)?)))
                {
                    let reply = match kind {
                        MonitorKind::Since => {
                            serde_json::from_slice::<Reply<(bool, Box<str>, Updates)>>(text)
                                .map(|r| r.result.into())
                        }
                        MonitorKind::Cond => {
                            serde_json::from_slice::<Reply<Updates>>(text).map(|r| r.result.into())
                        }
                    }
                    .map_err(|e| format!("malformed monitor reply: {e}"))?;
                    return Ok(Incoming::MonitorReply { id, reply });
                }
            }
            _ => {}
        }
    }
    let v: Value = serde_json::from_slice(text).map_err(|e| format!("malformed JSON: {e}"))?;
    Message::from_json(v)
        .map(Incoming::Message)
        .map_err(|e| e.to_string())
}
