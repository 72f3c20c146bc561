//! HTTP/1.1 message framing (RFC 9112), incremental and strict.
//!
//! This is the bottom layer: it borrows input (`&[u8]` in, "consumed n" out) and never does I/O.
//! `head` turns a complete head into a [`RequestHead`] or [`ResponseHead`] and judges the framing
//! (the part httparse leaves to us); `body` walks a body without copying it; `encode` writes heads
//! back out after a [`Rewrite`].

mod body;
mod encode;
mod error;
mod head;
mod headers;
mod target;

pub use body::{Body, BodyDecoder};
pub use encode::{
    reason_phrase, write_request_head, write_response_head, write_simple_response, Rewrite,
};
pub use error::HttpError;
pub use head::HeadScanner;
pub use headers::Headers;
pub use target::{normalize_target, path_segments};

use bytes::Bytes;

/// Size limits for one direction of a connection. Each exceeded limit maps to a status
/// ([`HttpError::status`]): head bytes and header count → 431, body → 413, chunk line → 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest head (request/status line + headers + the blank line), in bytes.
    pub max_head: usize,
    /// Most header fields in one head.
    pub max_headers: usize,
    /// Largest body (decoded payload bytes, not counting chunk framing).
    pub max_body: u64,
    /// Longest chunk-size line (size + extensions + CRLF), and longest trailer section.
    pub max_chunk_line: usize,
}

impl Default for Limits {
    /// DESIGN.md's request defaults: 16 KiB head, 100 headers, 64 KiB body.
    fn default() -> Self {
        Limits {
            max_head: 16 * 1024,
            max_headers: 100,
            max_body: 64 * 1024,
            max_chunk_line: 1024,
        }
    }
}

/// The request methods we tell apart; anything else keeps its spelling in the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD` (its response never has a body)
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `CONNECT` (authority-form target)
    Connect,
    /// `OPTIONS`
    Options,
    /// Any other token (`DELETE`, `PATCH`, extension methods).
    Other,
}

/// Protocol version of a message. HTTP/0.9 and 2 are rejected by the parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: persistent only with `Connection: keep-alive`.
    Http10,
    /// HTTP/1.1: persistent unless `Connection: close`.
    Http11,
}

impl Version {
    /// The version as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// How the body of a message is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all.
    Empty,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// A parsed request head. The raw bytes are kept once; everything else points into them.
#[derive(Clone, Debug)]
pub struct RequestHead {
    /// The method's kind.
    pub method: Method,
    /// The method as sent (always an RFC 9110 token).
    pub method_str: Bytes,
    /// The request target as sent (origin-form for normal requests).
    pub target: Bytes,
    /// The protocol version.
    pub version: Version,
    /// All header fields, in order, with their original casing.
    pub headers: Headers,
    /// How the body is framed.
    pub body: BodyKind,
    /// Whether the client asked to keep the connection open after this exchange.
    pub keep_alive: bool,
}

/// A parsed response head.
#[derive(Clone, Debug)]
pub struct ResponseHead {
    /// The status code (100..=999).
    pub status: u16,
    /// The reason phrase as sent (may be empty).
    pub reason: Bytes,
    /// The protocol version.
    pub version: Version,
    /// All header fields, in order, with their original casing.
    pub headers: Headers,
    /// How the body is framed, given the request method and the status.
    pub body: BodyKind,
    /// Whether the server allows the connection to be reused after this response.
    pub keep_alive: bool,
}
