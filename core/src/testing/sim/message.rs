//! HTTP messages as the scripted peers see them: bytes from one connection are collected, and
//! each complete message is cut off with the core's own parser (`testing::feed_message`).
//! What the peers read was written by an endpoint, so a message that does not parse is the
//! endpoint's fault: the peer fails the test saying what it got.

use super::peer::ConnId;
use crate::http::{BodyKind, Limits, Method};
use crate::testing::{feed_message, BodyEnd, Head, HeadKind};

/// Generous limits: the peers check framing, the endpoints enforce their own limits.
const PEER_LIMITS: Limits = Limits {
    max_head: 1 << 20,
    max_headers: 1000,
    max_body: 64 << 20,
    max_chunk_line: 1 << 10,
};

/// One request or response a peer read.
#[derive(Clone, Debug)]
pub struct Message {
    /// The connection it came on.
    pub conn: ConnId,
    /// The parsed head.
    pub head: Head,
    /// The decoded body (chunk framing removed).
    pub body: Vec<u8>,
    /// Head and body as sent, lossily as text (for `contains` and error messages).
    pub raw: String,
}

impl Message {
    /// The status of a response (0 for a request).
    pub fn status(&self) -> u16 {
        match &self.head {
            Head::Response(r) => r.status,
            Head::Request(_) => 0,
        }
    }

    /// Every value of the field `name` (any case), in order, as on the wire (framing fields
    /// too, which the parsed head keeps only as markers).
    pub fn headers(&self, name: &str) -> Vec<String> {
        let head = self.raw.split("\r\n\r\n").next().unwrap_or_default();
        (head.split("\r\n").skip(1))
            .filter_map(|line| line.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }

    /// The one value of `name`; fails the test when there is none or several.
    pub fn header(&self, name: &str) -> String {
        match self.headers(name).as_slice() {
            [one] => one.clone(),
            all => panic!("{} values of {name}: {}", all.len(), self.raw),
        }
    }

    /// Fails the test unless this is a response with `status` and the body `body`.
    pub fn assert_is(&self, status: u16, body: &str) {
        assert_eq!(
            (self.status(), self.text().as_str()),
            (status, body),
            "{}",
            self.raw
        );
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The method of a request (`None` for a response).
    pub fn method(&self) -> Option<Method> {
        match &self.head {
            Head::Request(r) => Some(r.method),
            Head::Response(_) => None,
        }
    }
}

/// The bytes of one connection not yet cut into messages.
#[derive(Debug, Default)]
pub(super) struct MessageReader {
    buf: Vec<u8>,
    /// Bytes the next message needs at least (its head and `Content-Length` body), once its
    /// head was seen: a large body is not parsed again on every piece.
    need: usize,
}

impl MessageReader {
    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The next complete message, if the bytes hold one; `eof` says no more bytes come (which
    /// ends a body delimited by the close). `who` names the reader in a failure.
    pub(super) fn next(
        &mut self,
        kind: HeadKind,
        eof: bool,
        conn: ConnId,
        who: &str,
    ) -> Option<Message> {
        if self.buf.is_empty() || (self.buf.len() < self.need && !eof) {
            return None;
        }
        let out = feed_message(kind, &[&self.buf], &PEER_LIMITS, eof);
        let text = || String::from_utf8_lossy(&self.buf).into_owned();
        let (head, n) = match out.head {
            Ok(Some(h)) => h,
            Ok(None) if eof => panic!("{who} read a message cut short by EOF: {}", text()),
            Ok(None) => return None,
            Err(e) => panic!("{who} read a malformed head ({e:?}): {}", text()),
        };
        let body = out
            .body
            .unwrap_or_else(|| panic!("{who}: a head without a body outcome"));
        match body.end {
            BodyEnd::Done => {}
            BodyEnd::NeedMore if !eof => {
                if let BodyKind::Length(len) = head.body() {
                    self.need = n.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
                }
                return None;
            }
            BodyEnd::NeedMore => panic!("{who} read a body cut short by EOF: {}", text()),
            BodyEnd::Err(e) => panic!("{who} read a malformed body ({e:?}): {}", text()),
        }
        let used = if head.body() == BodyKind::UntilClose {
            self.buf.len()
        } else {
            n + body.consumed
        };
        let raw: Vec<u8> = self.buf.drain(..used).collect();
        self.need = 0;
        Some(Message {
            conn,
            head,
            body: body.data,
            raw: String::from_utf8_lossy(&raw).into_owned(),
        })
    }
}
