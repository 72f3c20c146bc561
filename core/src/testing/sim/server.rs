//! Scripted servers: a recording HTTP server whose answer to each request a script picks (the
//! metadata server an agent talks to, Neutron, Keystone, an agent behind an ns-proxy), a
//! listener that refuses every connection and one that accepts and never answers.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use super::message::{Message, MessageReader};
use super::peer::{ConnId, Peer, PeerInput, PeerIo};
use crate::http::Method;
use crate::socket::ConnectError;
use crate::testing::{feed_head, Head, HeadKind};

/// What the server does with one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Sends these bytes (a whole response, or garbage), and closes afterwards when they are a
    /// response that says so (`Connection: close`, HTTP/1.0, a body delimited by the close).
    Respond(Vec<u8>),
    /// The same, this long after the request arrived.
    Later(Duration, Vec<u8>),
    /// Never answers (what else comes on that connection is read and left unanswered).
    Silence,
    /// Closes the connection without an answer.
    Close,
}

/// Picks the answer to a request; `n` counts the requests before it (on every connection).
pub type Script = Box<dyn FnMut(usize, &Message) -> Answer>;

/// A recording HTTP/1.1 server.
pub struct HttpServer {
    script: Script,
    readers: BTreeMap<ConnId, MessageReader>,
    /// Connections busy with a request whose answer is not out yet (held back or never).
    busy: BTreeSet<ConnId>,
    /// Answers held back: when, on which connection, what.
    later: VecDeque<(Instant, ConnId, Vec<u8>, Method)>,
    /// Every request, in order of arrival.
    pub requests: Vec<Message>,
    /// Connections accepted so far.
    pub accepted: usize,
}

impl fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServer")
            .field("requests", &self.requests.len())
            .field("accepted", &self.accepted)
            .finish_non_exhaustive()
    }
}

impl HttpServer {
    /// A server answering as `script` says.
    pub fn new(script: impl FnMut(usize, &Message) -> Answer + 'static) -> Self {
        HttpServer {
            script: Box::new(script),
            readers: BTreeMap::new(),
            busy: BTreeSet::new(),
            later: VecDeque::new(),
            requests: Vec::new(),
            accepted: 0,
        }
    }

    /// A server answering every request with `response`.
    pub fn answering(response: &[u8]) -> Self {
        let response = response.to_vec();
        HttpServer::new(move |_, _| Answer::Respond(response.clone()))
    }

    /// A server that accepts, reads the first request of each connection and never answers.
    pub fn silent() -> Self {
        HttpServer::new(|_, _| Answer::Silence)
    }

    /// Answers as `script` says from now on.
    pub fn set_script(&mut self, script: impl FnMut(usize, &Message) -> Answer + 'static) {
        self.script = Box::new(script);
    }

    /// The newest request; fails the test when there is none.
    pub fn last(&self) -> &Message {
        self.requests
            .last()
            .unwrap_or_else(|| panic!("no request yet ({} connections)", self.accepted))
    }

    /// Sends `resp` (the answer to a `method` request) on `conn`, closing after it when it
    /// says the connection ends.
    fn respond(&mut self, conn: ConnId, resp: &[u8], method: Method, io: &mut PeerIo) {
        io.write(conn, resp);
        // Bytes that are no response (garbage a test sends on purpose) keep it open.
        let keep_alive = match feed_head(HeadKind::Response(method), &[resp], &Default::default()) {
            Ok(Some((Head::Response(r), _))) => r.keep_alive,
            _ => true,
        };
        if !keep_alive {
            io.shutdown(conn);
            io.close(conn);
            self.readers.remove(&conn);
        }
    }

    /// Answers the requests complete on `conn`, one after another, until one is held back.
    fn serve(&mut self, now: Instant, conn: ConnId, eof: bool, io: &mut PeerIo) {
        while !self.busy.contains(&conn) {
            let Some(reader) = self.readers.get_mut(&conn) else {
                return;
            };
            let Some(req) = reader.next(HeadKind::Request, eof, conn, "the server") else {
                return;
            };
            let method = req.method().unwrap_or(Method::Get);
            let answer = (self.script)(self.requests.len(), &req);
            self.requests.push(req);
            match answer {
                Answer::Respond(resp) => self.respond(conn, &resp, method, io),
                Answer::Later(after, resp) => {
                    self.busy.insert(conn);
                    self.later.push_back((now + after, conn, resp, method));
                }
                Answer::Silence => {
                    self.busy.insert(conn);
                }
                Answer::Close => {
                    io.close(conn);
                    self.readers.remove(&conn);
                }
            }
        }
    }
}

impl Peer for HttpServer {
    fn handle(&mut self, now: Instant, conn: ConnId, input: PeerInput<'_>, io: &mut PeerIo) {
        match input {
            PeerInput::Accepted => {
                self.accepted += 1;
                self.readers.insert(conn, MessageReader::default());
            }
            PeerInput::Read(bytes) => {
                if let Some(reader) = self.readers.get_mut(&conn) {
                    reader.push(bytes);
                }
                self.serve(now, conn, false, io);
            }
            PeerInput::Eof => {
                if !self.busy.contains(&conn) {
                    self.serve(now, conn, true, io);
                }
                if self.readers.remove(&conn).is_some() {
                    io.close(conn);
                }
            }
            PeerInput::Connected | PeerInput::ConnectFailed(_) => {}
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.later.iter().map(|(at, ..)| *at).min()
    }

    fn handle_timeout(&mut self, now: Instant, io: &mut PeerIo) {
        let (due, rest): (VecDeque<_>, VecDeque<_>) =
            self.later.drain(..).partition(|(at, ..)| *at <= now);
        self.later = rest;
        for (_, conn, resp, method) in due {
            self.busy.remove(&conn);
            if self.readers.contains_key(&conn) {
                self.respond(conn, &resp, method, io);
                self.serve(now, conn, false, io);
            }
        }
    }
}

/// A listener that refuses every connection (a socket path with no agent behind it, a
/// metadata server that is down).
#[derive(Debug)]
pub struct Refusing(pub ConnectError);

impl Peer for Refusing {
    fn accept(&mut self, _now: Instant) -> Result<(), ConnectError> {
        Err(self.0)
    }

    fn handle(&mut self, _: Instant, conn: ConnId, input: PeerInput<'_>, _: &mut PeerIo) {
        panic!("a refusing listener heard {input:?} on {conn:?}");
    }
}

/// A listener that accepts every connection, reads every byte and never sends one (a server
/// that hangs in the TLS handshake); what it got stays on the link.
#[derive(Debug)]
pub struct Mute;

impl Peer for Mute {
    fn handle(&mut self, _: Instant, _: ConnId, _: PeerInput<'_>, _: &mut PeerIo) {}
}
