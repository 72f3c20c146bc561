//! A received message's text read into what the session acts on. The messages that carry
//! rows (an `update2`/`update3` notification while monitoring, the reply to our monitor
//! request) are read straight from the text into [`TableUpdates`], the map keys not kept
//! dropped ([`MapKeys`]): a `Value` of a 10 000-port snapshot is five times its 6.5 MiB of
//! text, and it was the agent's peak memory. Everything else (a few hundred bytes: echoes,
//! the `_Server` row, acknowledgements) goes through a `Value` and [`Message::from_json`],
//! which checks it in full.
//!
//! A first pass reads only the envelope (`id`, `method`, `error`; the rest skipped without
//! allocating) to tell which is which.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::{MonitorKind, Pending};
use crate::ovsdb::rpc::Message;
use crate::ovsdb::update::{MapKeys, TableUpdates, UpdatesSeed};

/// What a message is, read.
pub(super) enum Incoming {
    /// Anything but rows.
    Message(Message),
    /// The notification the running monitor sends.
    Updates(UpdateParams),
    /// The answer to our monitor request `id`.
    MonitorReply { id: u64, reply: MonitorReply },
}

/// An update notification's params: `update3`'s `[monitor, txn, updates]` or `update2`'s
/// `[monitor, updates]`.
pub(super) struct UpdateParams {
    /// The monitor they are for.
    pub(super) monitor: Value,
    pub(super) txn: Option<Box<str>>,
    pub(super) updates: TableUpdates,
}

/// A monitor reply: `monitor_cond_since`'s `[found, last-txn-id, updates]`, or
/// `monitor_cond`'s updates alone.
pub(super) struct MonitorReply {
    pub(super) found: bool,
    pub(super) txn: Option<Box<str>>,
    pub(super) updates: TableUpdates,
}

/// How to read the params of a `kind` monitor's notification, or its reply.
#[derive(Clone, Copy)]
struct Shape<'a> {
    kind: MonitorKind,
    keys: &'a MapKeys,
}

/// A notification's params.
struct ParamsSeed<'a>(Shape<'a>);

impl<'de> DeserializeSeed<'de> for ParamsSeed<'_> {
    type Value = UpdateParams;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<UpdateParams, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ParamsSeed<'_> {
    type Value = UpdateParams;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[monitor, (txn,) updates]")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UpdateParams, A::Error> {
        let short = || de::Error::custom("too few params");
        let monitor = seq.next_element()?.ok_or_else(short)?;
        let txn = match self.0.kind {
            MonitorKind::Since => Some(seq.next_element()?.ok_or_else(short)?),
            MonitorKind::Cond => None,
        };
        let updates = seq
            .next_element_seed(UpdatesSeed(self.0.keys))?
            .ok_or_else(short)?;
        end(seq)?;
        Ok(UpdateParams {
            monitor,
            txn,
            updates,
        })
    }
}

/// A monitor request's `result`.
struct ReplySeed<'a>(Shape<'a>);

impl<'de> DeserializeSeed<'de> for ReplySeed<'_> {
    type Value = MonitorReply;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<MonitorReply, D::Error> {
        match self.0.kind {
            MonitorKind::Since => d.deserialize_seq(self),
            MonitorKind::Cond => Ok(MonitorReply {
                found: false,
                txn: None,
                updates: UpdatesSeed(self.0.keys).deserialize(d)?,
            }),
        }
    }
}

impl<'de> Visitor<'de> for ReplySeed<'_> {
    type Value = MonitorReply;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[found, last-txn-id, updates]")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MonitorReply, A::Error> {
        let short = || de::Error::custom("too few elements");
        let found = seq.next_element()?.ok_or_else(short)?;
        let txn = Some(seq.next_element()?.ok_or_else(short)?);
        let updates = seq
            .next_element_seed(UpdatesSeed(self.0.keys))?
            .ok_or_else(short)?;
        end(seq)?;
        Ok(MonitorReply {
            found,
            txn,
            updates,
        })
    }
}

/// Refuses elements past the expected ones.
fn end<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    match seq.next_element::<IgnoredAny>()? {
        None => Ok(()),
        Some(_) => Err(de::Error::custom("too many elements")),
    }
}

/// Member `name` of an object read with `seed`, the other members skipped.
struct Member<S> {
    name: &'static str,
    seed: S,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Member<S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for Member<S> {
    type Value = S::Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an object with {:?}", self.name)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<S::Value, A::Error> {
        let mut seed = Some(self.seed);
        let mut out = None;
        while let Some(key) = map.next_key::<Box<str>>()? {
            match (&*key == self.name, seed.take()) {
                (true, Some(s)) => out = Some(map.next_value_seed(s)?),
                (_, s) => {
                    seed = s;
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        out.ok_or_else(|| de::Error::missing_field(self.name))
    }
}

/// The members that say what a message is.
#[derive(Deserialize)]
struct Envelope {
    id: Option<Value>,
    method: Option<Box<str>>,
    error: Option<Value>,
}

impl UpdateParams {
    /// The params of the `kind` monitor's notification, from a `Value` (a notification that
    /// took the general path).
    pub(super) fn from_value(
        kind: MonitorKind,
        keys: &MapKeys,
        v: &Value,
    ) -> Result<UpdateParams, String> {
        ParamsSeed(Shape { kind, keys })
            .deserialize(v)
            .map_err(|e| e.to_string())
    }
}

impl MonitorReply {
    /// The reply of a `kind` request, from its `result` already parsed into a `Value` (a
    /// reply that took the general path).
    pub(super) fn from_value(
        kind: MonitorKind,
        keys: &MapKeys,
        v: &Value,
    ) -> Result<MonitorReply, String> {
        ReplySeed(Shape { kind, keys })
            .deserialize(v)
            .map_err(|e| format!("malformed monitor reply: {e}"))
    }
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
    keys: &MapKeys,
) -> Result<Incoming, String> {
    if let Ok(env) = serde_json::from_slice::<Envelope>(text) {
        let null = |v: &Option<Value>| v.as_ref().is_none_or(Value::is_null);
        let mut de = serde_json::Deserializer::from_slice(text);
        match (&env.method, monitoring) {
            (Some(method), Some(kind)) if **method == *update_method(kind) && null(&env.id) => {
                let seed = Member {
                    name: "params",
                    seed: ParamsSeed(Shape { kind, keys }),
                };
                return seed
                    .deserialize(&mut de)
                    .map(Incoming::Updates)
                    .map_err(|e| format!("malformed {method} notification: {e}"));
            }
            (None, _) if null(&env.error) => {
                let id = env.id.as_ref().and_then(Value::as_u64);
                if let Some((id, &Pending::Monitor(kind, _))) =
                    id.and_then(|id| Some((id, pending.get(&id)?)))
                {
                    let seed = Member {
                        name: "result",
                        seed: ReplySeed(Shape { kind, keys }),
                    };
                    return seed
                        .deserialize(&mut de)
                        .map(|reply| Incoming::MonitorReply { id, reply })
                        .map_err(|e| format!("malformed monitor reply: {e}"));
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
