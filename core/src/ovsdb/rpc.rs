//! JSON-RPC 1.0 as OVSDB uses it (RFC 7047 §4): a request is `{"method", "params", "id"}`, a
//! response `{"result", "error", "id"}` (ovsdb-server leaves `result` out of an error
//! response), a notification is a request whose `id` is `null` (`update`, `update2`,
//! `update3`). Both sides may send requests: the server sends `echo` to probe us.

use std::fmt;

use serde_json::{json, Value};

/// One message received.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// A request we must answer (the server's `echo`).
    Request {
        /// The method.
        method: String,
        /// Its parameters (an array).
        params: Value,
        /// The id to answer with.
        id: Value,
    },
    /// A notification: a request with a `null` id, never answered.
    Notification {
        /// The method (`update3`, …).
        method: String,
        /// Its parameters (an array).
        params: Value,
    },
    /// The answer to one of our requests.
    Response {
        /// The id of our request.
        id: Value,
        /// `result`, or the `error` (with its `details`, if any).
        result: Result<Value, RpcError>,
    },
}

/// A JSON-RPC error response: ovsdb-server's `error` is a short string (`unknown method`,
/// `unknown database`, …) with an optional `details`.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcError {
    /// The `error` member.
    pub error: Value,
    /// The `details` member, if it is a string.
    pub details: Option<String>,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            Value::String(s) => f.write_str(s)?,
            other => write!(f, "{other}")?,
        }
        match &self.details {
            Some(d) => write!(f, " ({d})"),
            None => Ok(()),
        }
    }
}

/// Why a JSON text is not a JSON-RPC message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotRpc(pub &'static str);

impl fmt::Display for NotRpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a JSON-RPC message: {}", self.0)
    }
}

impl std::error::Error for NotRpc {}

impl Message {
    /// Reads a message.
    pub fn from_json(v: Value) -> Result<Message, NotRpc> {
        let Value::Object(mut o) = v else {
            return Err(NotRpc("not an object"));
        };
        let id = o.remove("id").ok_or(NotRpc("no id"))?;
        if let Some(method) = o.remove("method") {
            let Value::String(method) = method else {
                return Err(NotRpc("method is not a string"));
            };
            let params = o.remove("params").ok_or(NotRpc("request without params"))?;
            if !params.is_array() {
                return Err(NotRpc("params is not an array"));
            }
            return Ok(match id {
                Value::Null => Message::Notification { method, params },
                id => Message::Request { method, params, id },
            });
        }
        if id.is_null() {
            return Err(NotRpc("response with a null id"));
        }
        let result = match o.remove("error") {
            None | Some(Value::Null) => Ok(o.remove("result").ok_or(NotRpc("no result"))?),
            Some(error) => Err(RpcError {
                error,
                details: o
                    .remove("details")
                    .and_then(|d| d.as_str().map(str::to_owned)),
            }),
        };
        Ok(Message::Response { id, result })
    }
}

/// The bytes of a request (`id` a number: ours are counters).
pub fn request(method: &str, params: Value, id: u64) -> Vec<u8> {
    encode(json!({"method": method, "params": params, "id": id}))
}

/// The bytes of a successful response to the request `id`.
pub fn response(result: Value, id: Value) -> Vec<u8> {
    encode(json!({"result": result, "error": null, "id": id}))
}

fn encode(v: Value) -> Vec<u8> {
    // Serialising a `Value` cannot fail (its map keys are strings).
    serde_json::to_vec(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let m = |v: Value| Message::from_json(v);
        assert_eq!(
            m(json!({"id": "echo", "method": "echo", "params": []})),
            Ok(Message::Request {
                method: "echo".into(),
                params: json!([]),
                id: json!("echo")
            })
        );
        assert_eq!(
            m(json!({"id": null, "method": "update3", "params": ["m", "x", {}]})),
            Ok(Message::Notification {
                method: "update3".into(),
                params: json!(["m", "x", {}])
            })
        );
        assert_eq!(
            m(json!({"id": 3, "result": {}, "error": null})),
            Ok(Message::Response {
                id: json!(3),
                result: Ok(json!({}))
            })
        );
        // ovsdb-server's answer to a method it does not know: no `result` at all.
        let Ok(Message::Response { result: Err(e), .. }) =
            m(json!({"id": 101, "error": "unknown method"}))
        else {
            panic!()
        };
        assert_eq!(e.to_string(), "unknown method");
        let Ok(Message::Response { result: Err(e), .. }) =
            m(json!({"id": 1, "error": "syntax error", "details": "bad where", "result": null}))
        else {
            panic!()
        };
        assert_eq!(e.to_string(), "syntax error (bad where)");
    }

    #[test]
    fn refused() {
        for v in [
            json!([]),
            json!({}),
            json!({"id": 1}),
            json!({"id": null, "result": 1}),
            json!({"id": 1, "method": 2, "params": []}),
            json!({"id": 1, "method": "echo"}),
            json!({"id": 1, "method": "echo", "params": {}}),
        ] {
            assert!(Message::from_json(v.clone()).is_err(), "{v}");
        }
    }

    #[test]
    fn encoded() {
        let r: Value = serde_json::from_slice(&response(json!(["x"]), json!("echo"))).unwrap();
        assert_eq!(r, json!({"result": ["x"], "error": null, "id": "echo"}));
        let q: Value = serde_json::from_slice(&request("echo", json!([]), 7)).unwrap();
        assert_eq!(q, json!({"method": "echo", "params": [], "id": 7}));
    }
}
