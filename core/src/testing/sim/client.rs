//! An instance's HTTP client: one connection at a time to one target, requests sent as the
//! test queues them (one at a time, or all at once when pipelining), every response collected.

use std::collections::VecDeque;
use std::time::Instant;

use super::message::{Message, MessageReader};
use super::peer::{ConnId, Peer, PeerInput, PeerIo};
use crate::http::Method;
use crate::socket::Target;
use crate::testing::HeadKind;

/// A client that connects to `target` as soon as the world runs (an accepted connection, before
/// any request), and again whenever it has a request to send and its connection is gone.
#[derive(Debug)]
pub struct HttpClient {
    target: Target,
    queue: VecDeque<Vec<u8>>,
    /// Methods of the requests written and not answered yet, oldest first.
    outstanding: VecDeque<Method>,
    conn: Option<ConnId>,
    connected: bool,
    /// Connect as soon as the world runs, with nothing to send yet.
    eager: bool,
    reader: MessageReader,
    /// Write every queued request at once rather than after the previous answer.
    pub pipeline: bool,
    /// Whether the client reads its socket (false: its answers pile up at the other side).
    pub reading: bool,
    /// Keep the connection open after the other side's EOF (until [`HttpClient::close`]).
    pub hold_open: bool,
    close_asked: bool,
    /// Shut the write side down once every queued request is written (one exchange: a request
    /// queued after that would be written on a shut connection); the answers are still read.
    pub half_close: bool,
    shut: bool,
    /// Every response, in order.
    pub responses: Vec<Message>,
    /// Connections opened so far.
    pub connections: usize,
    /// Connections the other side ended (EOF), in order.
    pub ended: Vec<ConnId>,
}

impl HttpClient {
    /// A client of whoever listens on `target`.
    pub fn new(target: Target) -> Self {
        HttpClient {
            target,
            queue: VecDeque::new(),
            outstanding: VecDeque::new(),
            conn: None,
            connected: false,
            eager: true,
            reader: MessageReader::default(),
            pipeline: false,
            reading: true,
            hold_open: false,
            close_asked: false,
            half_close: false,
            shut: false,
            responses: Vec::new(),
            connections: 0,
            ended: Vec::new(),
        }
    }

    /// Queues `bytes` (a request, or anything else) to send.
    pub fn send(&mut self, bytes: impl Into<Vec<u8>>) {
        self.queue.push_back(bytes.into());
    }

    /// Queues `GET path` as cloud-init asks it (keep-alive).
    pub fn get(&mut self, path: &str) {
        self.send(format!(
            "GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"
        ));
    }

    /// Closes the connection at the next step.
    pub fn close(&mut self) {
        self.close_asked = true;
    }

    /// The newest response; fails the test when there is none.
    pub fn last(&self) -> &Message {
        self.responses
            .last()
            .unwrap_or_else(|| panic!("no response yet (connections: {})", self.connections))
    }

    fn drop_conn(&mut self) {
        self.conn = None;
        self.connected = false;
        self.shut = false;
        self.outstanding.clear();
        self.reader = MessageReader::default();
    }

    fn write_queued(&mut self, conn: ConnId, io: &mut PeerIo) {
        while self.pipeline || self.outstanding.is_empty() {
            let Some(req) = self.queue.pop_front() else {
                break;
            };
            self.outstanding.push_back(method_of(&req));
            io.write(conn, &req);
        }
        if self.half_close && !self.shut && self.queue.is_empty() && !self.outstanding.is_empty() {
            self.shut = true;
            io.shutdown(conn);
        }
    }

    fn read_responses(&mut self, conn: ConnId, eof: bool) {
        loop {
            let method = self.outstanding.front().copied().unwrap_or(Method::Get);
            let kind = HeadKind::Response(method);
            let Some(resp) = self.reader.next(kind, eof, conn, "the client") else {
                return;
            };
            self.outstanding.pop_front();
            self.responses.push(resp);
        }
    }
}

/// The method a request starts with (`GET` for anything unrecognised: its response framing).
fn method_of(req: &[u8]) -> Method {
    if req.starts_with(b"HEAD ") {
        Method::Head
    } else {
        Method::Get
    }
}

impl Peer for HttpClient {
    fn handle(&mut self, _now: Instant, conn: ConnId, input: PeerInput<'_>, io: &mut PeerIo) {
        if self.conn != Some(conn) {
            return;
        }
        match input {
            PeerInput::Connected => {
                self.connected = true;
                self.write_queued(conn, io);
            }
            PeerInput::ConnectFailed(_) => self.drop_conn(),
            PeerInput::Read(bytes) => {
                self.reader.push(bytes);
                self.read_responses(conn, false);
                self.write_queued(conn, io);
            }
            PeerInput::Eof => {
                if !self.reader.is_empty() {
                    self.read_responses(conn, true);
                }
                self.ended.push(conn);
                if !self.hold_open {
                    io.close(conn);
                    self.drop_conn();
                }
            }
            PeerInput::Accepted => {}
        }
    }

    fn poll(&mut self, _now: Instant, io: &mut PeerIo) {
        if self.close_asked {
            self.close_asked = false;
            if let Some(conn) = self.conn {
                io.close(conn);
                self.drop_conn();
            }
        }
        match self.conn {
            None if self.eager || !self.queue.is_empty() => {
                self.eager = false;
                self.connections += 1;
                self.conn = Some(io.connect(self.target.clone()));
            }
            Some(conn) if self.connected && !self.ended.contains(&conn) => {
                self.write_queued(conn, io)
            }
            _ => {}
        }
    }

    fn wants_read(&self, _conn: ConnId) -> bool {
        self.reading
    }
}
