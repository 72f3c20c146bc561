//! Fuzz bodies for the OVSDB client: the stream framer and the session fed a server's bytes.

use std::time::Duration;

use serde_json::Value;

use super::super::{epoch, split_at_points};
use crate::lookup::ClientAction;
use crate::ovsdb::framing::{FrameError, Framer};
use crate::ovsdb::{Session, SessionConfig, TableMonitor};
use crate::socket::Input;

/// Every message of `pieces`, then the error that ended the stream; the framer never holds
/// more than `max` bytes.
fn frame(max: usize, pieces: &[&[u8]]) -> (Vec<Value>, Option<FrameError>) {
    let mut f = Framer::new(max);
    let mut out = Vec::new();
    for piece in pieces {
        let mut rest = *piece;
        loop {
            match f.next_message(&mut rest) {
                Ok(Some(v)) => out.push(v),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
            assert!(f.buffered() <= max);
        }
        assert!(f.buffered() <= max);
    }
    (out, None)
}

/// Byte 0: the maximum message (×8 bytes), bytes 1–4: two little-endian u16 cut points, the
/// rest: the stream. Cut anywhere, byte by byte or whole, it yields the same messages and the
/// same error.
pub fn ovsdb_framing(data: &[u8]) {
    let Some((&[max, a0, a1, b0, b1], stream)) = data.split_first_chunk::<5>() else {
        return;
    };
    let max = usize::from(max) * 8 + 1;
    let whole = frame(max, &[stream]);
    let cuts = [
        usize::from(u16::from_le_bytes([a0, a1])),
        usize::from(u16::from_le_bytes([b0, b1])),
    ];
    assert_eq!(frame(max, &split_at_points(stream, &cuts)), whole);
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(frame(max, &bytes), whole);
}

/// A well-behaved server's first two answers: the `_Server` row and a monitor reply (our
/// request ids are counters from 0).
const HANDSHAKE: &[u8] = br#"{"id":0,"result":[{"rows":[{"name":"OVN_Southbound","model":"standalone","connected":true,"leader":true,"index":["set",[]]}]}],"error":null}{"id":1,"result":[false,"00000000-0000-0000-0000-000000000001",{}],"error":null}"#;

/// Byte 0: bit 0 prepends a good handshake (so the rest reaches the monitoring state), bits
/// 1–7 the piece size; the rest: what the server sends, in pieces, with time moving between
/// them. Never panics; the unfinished message and the unsent bytes each stay within
/// `max_message`; after `handle_timeout(now)` the next deadline is later; every connection
/// opened is closed before another one opens.
pub fn ovsdb_session(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut cfg = SessionConfig::new(
        vec!["unix:/sb.sock".parse().unwrap_or_else(|_| unreachable!())],
        "OVN_Southbound",
        vec![TableMonitor {
            table: "Chassis".into(),
            columns: vec!["name".into()],
            conditions: None,
        }],
    );
    cfg.max_message = 4096;
    cfg.probe_interval = Duration::from_secs(1);
    let max = cfg.max_message;
    let mut now = epoch();
    let mut s = Session::new(cfg, now);
    let mut open = None;
    let mut stream = Vec::new();
    if mode & 1 == 1 {
        stream.extend_from_slice(HANDSHAKE);
    }
    stream.extend_from_slice(rest);
    let size = usize::from(mode >> 1) + 1;
    let mut pieces = stream.chunks(size);
    for step in 0..10_000 {
        while let Some(a) = s.poll_action() {
            match a {
                ClientAction::Connect(req, _) => {
                    assert!(open.is_none(), "a second connection while one is open");
                    open = Some(req);
                    s.handle(now, req, Input::Connected);
                }
                ClientAction::Close(req) => {
                    assert_eq!(open, Some(req));
                    open = None;
                }
            }
        }
        while s.poll_event().is_some() {}
        let (unfinished, unsent) = s.buffered();
        assert!(unfinished <= max && unsent <= max);
        if let Some(req) = open {
            let n = s.pending_write(req).len();
            s.consume_write(req, n);
            if let Some(piece) = pieces.next() {
                s.handle(now, req, Input::Read(piece));
                if step % 7 == 3 {
                    now += Duration::from_millis(1500);
                    s.handle_timeout(now);
                }
                continue;
            }
        }
        // Nothing more to read: let time run out a few times, then stop.
        let Some(t) = s.poll_timeout() else { return };
        if step > 9_990 || pieces.len() == 0 && step % 50 == 49 {
            return;
        }
        now = now.max(t);
        s.handle_timeout(now);
        assert!(s.poll_timeout().is_none_or(|t| t > now));
    }
}
