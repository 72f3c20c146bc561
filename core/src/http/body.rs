//! Bodies: walk a `Content-Length`, chunked (RFC 9112 §7.1) or close-delimited body without
//! copying it. The decoder only reports where payload and framing are; a proxy forwards the
//! consumed bytes verbatim, so what it sends is exactly what it validated.

use super::{BodyKind, HttpError, Limits};

/// Where a body decoder is. The chunked states are spelled out (rather than hidden in a nested
/// type) so a `Debug` print says exactly where a stream stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyDecoder {
    /// `Content-Length`: `left` payload bytes still to come.
    Length {
        /// Bytes still to come.
        left: u64,
    },
    /// Chunked, expecting a chunk-size line.
    ChunkSize {
        /// Payload bytes so far (against `max_body`).
        decoded: u64,
    },
    /// Chunked, inside a chunk's data.
    ChunkData {
        /// Bytes of this chunk still to come.
        left: u64,
        /// Payload bytes so far.
        decoded: u64,
    },
    /// Chunked, expecting the CRLF that ends a chunk's data.
    ChunkDataEnd {
        /// Payload bytes so far.
        decoded: u64,
    },
    /// Chunked, after the last chunk: trailer field lines until a blank line.
    Trailers {
        /// Bytes of trailer section so far (against `max_chunk_line`).
        seen: usize,
    },
    /// Until the peer closes (responses only).
    UntilClose {
        /// Payload bytes so far.
        decoded: u64,
    },
    /// The body is complete; bytes after it belong to the next message.
    Done,
}

/// One step of a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    /// Payload bytes, borrowed from the input.
    Data(&'a [u8]),
    /// The body ended (for chunked bodies: after the trailer section's blank line).
    Done,
}

/// Why a line could not be delimited.
enum LineErr {
    TooLong,
    BareCr,
    BareLf,
}

/// Finds the CRLF ending the line at the front of `buf`: `Some(len)` including the CRLF.
/// A line of more than `budget` bytes (CRLF included) is an error as soon as its byte `budget`
/// is seen; decisions look only at bytes in order, so every split of an input agrees.
fn line_end(buf: &[u8], budget: usize) -> Result<Option<usize>, LineErr> {
    for (i, &b) in buf.iter().enumerate() {
        if i >= budget {
            return Err(LineErr::TooLong);
        }
        match b {
            b'\r' => {
                return match buf.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') if i + 1 >= budget => Err(LineErr::TooLong),
                    Some(b'\n') => Ok(Some(i + 2)),
                    Some(_) => Err(LineErr::BareCr),
                }
            }
            b'\n' => return Err(LineErr::BareLf),
            _ => {}
        }
    }
    Ok(None)
}

/// `chunk-size [ chunk-ext ]` (RFC 9112 §7.1.1), CRLF already removed. Extensions are accepted
/// leniently (any visible text after `;`) because we never interpret them; the line length
/// bound is what keeps them harmless.
fn chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if line.is_empty() {
        return Err(HttpError::Malformed("empty chunk size"));
    }
    if digits == 0 {
        return Err(HttpError::Malformed("chunk size not hex"));
    }
    if digits > 16 {
        return Err(HttpError::Malformed("chunk size over 16 hex digits"));
    }
    let size = line[..digits].iter().fold(0u64, |n, &d| {
        // ≤ 16 hex digits always fit in u64; is_ascii_hexdigit was checked above.
        (n << 4) | u64::from(char::from(d).to_digit(16).unwrap_or(0))
    });
    let ext = line[digits..].trim_ascii_start();
    match ext.first() {
        None if digits == line.len() => {}
        Some(b';') => {
            if !ext.iter().all(|&b| b == b'\t' || b >= b' ' && b != 0x7f) {
                return Err(HttpError::Malformed("invalid byte in chunk extension"));
            }
        }
        _ => return Err(HttpError::Malformed("junk after chunk size")),
    }
    Ok(size)
}

/// RFC 9110 §5.6.2 tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A trailer line is a field line (RFC 9112 §7.1.2 → §5): `token ":" OWS field-value OWS`.
fn trailer_line(line: &[u8]) -> Result<(), HttpError> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(HttpError::Malformed("obs-fold in trailer section"));
    }
    let name_len = line.iter().take_while(|&&b| is_tchar(b)).count();
    if name_len == 0 || line.get(name_len) != Some(&b':') {
        return Err(HttpError::Malformed("invalid trailer field name"));
    }
    if !line[name_len + 1..]
        .iter()
        .all(|&b| b == b'\t' || b >= b' ' && b != 0x7f)
    {
        return Err(HttpError::Malformed("invalid character in trailer value"));
    }
    Ok(())
}

impl BodyDecoder {
    /// A decoder for a body framed as `kind`; `Empty` and `Length(0)` start out done.
    pub fn new(kind: BodyKind) -> Self {
        match kind {
            BodyKind::Empty | BodyKind::Length(0) => BodyDecoder::Done,
            BodyKind::Length(left) => BodyDecoder::Length { left },
            BodyKind::Chunked => BodyDecoder::ChunkSize { decoded: 0 },
            BodyKind::UntilClose => BodyDecoder::UntilClose { decoded: 0 },
        }
    }

    /// Takes the next piece of the body from the front of `buf`.
    ///
    /// Returns `(consumed, piece)`: drop `buf[..consumed]` (framing included, so a proxy can
    /// forward exactly those bytes) and call again until the piece is `Some(Body::Done)` or the
    /// result is `(0, None)` (need more input). `(n > 0, None)` means framing was consumed and
    /// more input is needed. Data slices borrow `buf`; nothing is allocated.
    /// Unconsumed bytes must be passed in again next time (a CR without its LF yet, a partial
    /// chunk-size line, and so on).
    pub fn decode<'a>(
        &mut self,
        buf: &'a [u8],
        l: &Limits,
    ) -> Result<(usize, Option<Body<'a>>), HttpError> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match *self {
                BodyDecoder::Done => return Ok((pos, Some(Body::Done))),
                BodyDecoder::Length { left } => {
                    // The head parser checked this already; a caller with other limits is
                    // stopped here before any byte goes out.
                    if left > l.max_body {
                        return Err(HttpError::BodyTooLarge);
                    }
                    if rest.is_empty() {
                        return Ok((pos, None));
                    }
                    let n = take(left, rest.len());
                    *self = if n as u64 == left {
                        BodyDecoder::Done
                    } else {
                        BodyDecoder::Length {
                            left: left - n as u64,
                        }
                    };
                    return Ok((pos + n, Some(Body::Data(&rest[..n]))));
                }
                BodyDecoder::UntilClose { decoded } => {
                    if rest.is_empty() {
                        return Ok((pos, None));
                    }
                    // Hand out exactly up to the limit, then fail: the same bytes go out for
                    // every split of the input.
                    let room = l.max_body.saturating_sub(decoded);
                    if room == 0 {
                        return Err(HttpError::BodyTooLarge);
                    }
                    let n = take(room, rest.len());
                    *self = BodyDecoder::UntilClose {
                        decoded: decoded + n as u64,
                    };
                    return Ok((pos + n, Some(Body::Data(&rest[..n]))));
                }
                BodyDecoder::ChunkSize { decoded } => {
                    let n = match line_end(rest, l.max_chunk_line) {
                        Ok(Some(n)) => n,
                        Ok(None) => return Ok((pos, None)),
                        Err(LineErr::TooLong) => {
                            return Err(HttpError::Malformed("chunk-size line too long"))
                        }
                        Err(LineErr::BareCr) => {
                            return Err(HttpError::Malformed("bare CR in chunk-size line"))
                        }
                        Err(LineErr::BareLf) => {
                            return Err(HttpError::Malformed("bare LF in chunk-size line"))
                        }
                    };
                    let size = chunk_size(&rest[..n - 2])?;
                    pos += n;
                    *self = if size == 0 {
                        BodyDecoder::Trailers { seen: 0 }
                    } else if size > l.max_body.saturating_sub(decoded) {
                        // Refused when announced, before its data is forwarded.
                        return Err(HttpError::BodyTooLarge);
                    } else {
                        BodyDecoder::ChunkData {
                            left: size,
                            decoded,
                        }
                    };
                }
                BodyDecoder::ChunkData { left, decoded } => {
                    if rest.is_empty() {
                        return Ok((pos, None));
                    }
                    let n = take(left, rest.len());
                    let decoded = decoded + n as u64;
                    *self = if n as u64 == left {
                        BodyDecoder::ChunkDataEnd { decoded }
                    } else {
                        BodyDecoder::ChunkData {
                            left: left - n as u64,
                            decoded,
                        }
                    };
                    return Ok((pos + n, Some(Body::Data(&rest[..n]))));
                }
                BodyDecoder::ChunkDataEnd { decoded } => match rest {
                    [] | [b'\r'] => return Ok((pos, None)),
                    [b'\r', b'\n', ..] => {
                        pos += 2;
                        *self = BodyDecoder::ChunkSize { decoded };
                    }
                    _ => return Err(HttpError::Malformed("chunk data not followed by CRLF")),
                },
                BodyDecoder::Trailers { seen } => {
                    let budget = l.max_chunk_line.saturating_sub(seen);
                    let n = match line_end(rest, budget) {
                        Ok(Some(n)) => n,
                        Ok(None) => return Ok((pos, None)),
                        Err(LineErr::TooLong) => {
                            return Err(HttpError::Malformed("trailer section too long"))
                        }
                        Err(LineErr::BareCr) => {
                            return Err(HttpError::Malformed("bare CR in trailer section"))
                        }
                        Err(LineErr::BareLf) => {
                            return Err(HttpError::Malformed("bare LF in trailer section"))
                        }
                    };
                    if n > 2 {
                        trailer_line(&rest[..n - 2])?;
                    }
                    pos += n;
                    *self = if n == 2 {
                        BodyDecoder::Done
                    } else {
                        BodyDecoder::Trailers { seen: seen + n }
                    };
                }
            }
        }
    }

    /// The peer closed. Ends a close-delimited body; anything else cut short is an error.
    pub fn eof(&mut self) -> Result<(), HttpError> {
        match self {
            BodyDecoder::UntilClose { .. } | BodyDecoder::Done => {
                *self = BodyDecoder::Done;
                Ok(())
            }
            _ => Err(HttpError::UnexpectedEof),
        }
    }

    /// Whether the body is complete.
    pub fn is_done(&self) -> bool {
        *self == BodyDecoder::Done
    }
}

/// `min(left, avail)` as a `usize` (`left` may exceed the address space).
fn take(left: u64, avail: usize) -> usize {
    usize::try_from(left).map_or(avail, |left| left.min(avail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{feed_body, for_each_split, BodyEnd, BodyOutcome};

    const L: Limits = Limits {
        max_head: 200,
        max_headers: 4,
        max_body: 20,
        max_chunk_line: 24,
    };

    #[derive(Debug)]
    enum Expect {
        /// Finished with this payload, consuming this many bytes.
        Done(&'static [u8], usize),
        /// Refused, after handing out this payload.
        Err(&'static [u8], HttpError),
        /// Waiting for more, after handing out this payload.
        NeedMore(&'static [u8]),
    }
    use Expect::*;

    const fn bad(rule: &'static str) -> Expect {
        Err(b"", HttpError::Malformed(rule))
    }

    /// Chunked bodies (RFC 9112 §7.1), one row per rule.
    #[rustfmt::skip]
    const CHUNKED: &[(&str, &[u8], Expect)] = &[
        ("one chunk", b"5\r\nhello\r\n0\r\n\r\n", Done(b"hello", 15)),
        ("several chunks", b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n", Done(b"hello world", 31)),
        ("hex digits in either case", b"a\r\n0123456789\r\nB\r\n0123456789a\r\n0\r\n\r\n", Err(b"0123456789", HttpError::BodyTooLarge)),
        ("leading zeros", b"0005\r\nhello\r\n000\r\n\r\n", Done(b"hello", 20)),
        ("extension is ignored", b"5;name=value\r\nhello\r\n0;last\r\n\r\n", Done(b"hello", 31)),
        ("quoted-string extension", b"5;a=\"b c\"\r\nhello\r\n0\r\n\r\n", Done(b"hello", 23)),
        ("whitespace before ;", b"5 \t;x\r\nhello\r\n0\r\n\r\n", Done(b"hello", 19)),
        ("trailer fields", b"1\r\nx\r\n0\r\nX-Sum: 1\r\nY:\r\n\r\n", Done(b"x", 25)),
        ("bytes after the body are left alone", b"1\r\nx\r\n0\r\n\r\nGET / HTTP/1.1", Done(b"x", 11)),
        ("missing final CRLF: need more", b"5\r\nhello\r\n0\r\n", NeedMore(b"hello")),
        ("truncated data: need more", b"5\r\nhel", NeedMore(b"hel")),
        ("empty chunk size", b"\r\nhello\r\n", bad("empty chunk size")),
        ("non-hex chunk size", b"g\r\n", bad("chunk size not hex")),
        ("negative chunk size", b"-1\r\n", bad("chunk size not hex")),
        ("0x prefix", b"0x5\r\nhello\r\n", bad("junk after chunk size")),
        ("junk after chunk size", b"5g\r\nhello\r\n", bad("junk after chunk size")),
        ("whitespace after size without extension", b"5 \r\nhello\r\n", bad("junk after chunk size")),
        ("more than 16 hex digits", b"00000000000000005\r\nhello\r\n", bad("chunk size over 16 hex digits")),
        ("16 hex digits above max_body is 413", b"FFFFFFFFFFFFFFFF\r\n", Err(b"", HttpError::BodyTooLarge)),
        ("chunks adding up above max_body are 413", b"a\r\n0123456789\r\na\r\n0123456789\r\n1\r\n", Err(b"01234567890123456789", HttpError::BodyTooLarge)),
        ("control character in an extension", b"5;\x01\r\nhello\r\n", bad("invalid byte in chunk extension")),
        ("chunk-size line longer than max_chunk_line", b"5;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", bad("chunk-size line too long")),
        ("chunk-size line exactly max_chunk_line", b"5;aaaaaaaaaaaaaaaaaaaa\r\nhello\r\n0\r\n\r\n", Done(b"hello", 36)),
        ("bare LF after chunk size", b"5\nhello\r\n", bad("bare LF in chunk-size line")),
        ("bare CR after chunk size", b"5\rhello\r\n", bad("bare CR in chunk-size line")),
        ("bare LF after chunk data", b"5\r\nhello\n0\r\n\r\n", Err( b"hello", HttpError::Malformed("chunk data not followed by CRLF"), )),
        ("bare CR after chunk data", b"5\r\nhello\rX", Err( b"hello", HttpError::Malformed("chunk data not followed by CRLF"), )),
        ("chunk data longer than its size", b"3\r\nhello\r\n", Err( b"hel", HttpError::Malformed("chunk data not followed by CRLF"), )),
        ("obs-fold in the trailer section", b"0\r\nX: a\r\n b\r\n\r\n", bad("obs-fold in trailer section")),
        ("trailer line without a colon", b"0\r\nfoo\r\n\r\n", bad("invalid trailer field name")),
        ("whitespace before a trailer colon", b"0\r\nX : a\r\n\r\n", bad("invalid trailer field name")),
        ("NUL in a trailer value", b"0\r\nX: a\0\r\n\r\n", bad("invalid character in trailer value")),
        ("bare LF in the trailer section", b"0\r\nX: a\n\r\n", bad("bare LF in trailer section")),
        ("trailer section longer than max_chunk_line", b"0\r\nX: aaaaaaaa\r\nY: bbbbbbbbbb\r\n\r\n", bad("trailer section too long")),
    ];

    fn outcome(expect: &Expect) -> BodyOutcome {
        let (data, consumed, end) = match *expect {
            Done(d, n) => (d, n, BodyEnd::Done),
            Err(d, e) => (d, 0, BodyEnd::Err(e)),
            NeedMore(d) => (d, 0, BodyEnd::NeedMore),
        };
        BodyOutcome {
            data: data.to_vec(),
            consumed,
            end,
        }
    }

    #[test]
    fn chunked_table() {
        for (name, input, expect) in CHUNKED {
            let got = for_each_split(input, |pieces| {
                feed_body(BodyKind::Chunked, pieces, &L, false)
            });
            let want = outcome(expect);
            assert_eq!((&got.data, got.end), (&want.data, want.end), "{name}");
            if let Done(_, n) = expect {
                assert_eq!(got.consumed, *n, "{name}: consumed");
            }
        }
    }

    #[test]
    fn length_and_close_delimited() {
        #[rustfmt::skip]
        const CASES: &[(&str, BodyKind, &[u8], bool, Expect)] = &[
            ("Content-Length stops at its length", BodyKind::Length(5), b"helloGET", false, Done(b"hello", 5)),
            ("Content-Length cut short, then EOF", BodyKind::Length(5), b"hel", true, Err(b"hel", HttpError::UnexpectedEof)),
            ("Content-Length above max_body is refused before any data", BodyKind::Length(21), b"hello", false, Err(b"", HttpError::BodyTooLarge)),
            ("empty body is done at once", BodyKind::Empty, b"GET", false, Done(b"", 0)),
            ("Content-Length 0 is done at once", BodyKind::Length(0), b"GET", false, Done(b"", 0)),
            ("close-delimited ends at EOF", BodyKind::UntilClose, b"hello", true, Done(b"hello", 5)),
            ("close-delimited waits without EOF", BodyKind::UntilClose, b"hello", false, NeedMore(b"hello")),
            ("close-delimited hands out max_body, then 413", BodyKind::UntilClose, b"0123456789012345678901", true, Err(b"01234567890123456789", HttpError::BodyTooLarge)),
            ("chunked cut short, then EOF", BodyKind::Chunked, b"5\r\nhel", true, Err(b"hel", HttpError::UnexpectedEof)),
        ];
        for (name, kind, input, eof, expect) in CASES {
            let got = for_each_split(input, |pieces| feed_body(*kind, pieces, &L, *eof));
            let want = outcome(expect);
            assert_eq!((&got.data, got.end), (&want.data, want.end), "{name}");
            if let Done(_, n) = expect {
                assert_eq!(got.consumed, *n, "{name}: consumed");
            }
        }
    }

    #[test]
    fn consumed_counts_framing_for_verbatim_forwarding() {
        let mut dec = BodyDecoder::new(BodyKind::Chunked);
        let buf = b"5;x\r\nhello\r\n0\r\nT: 1\r\n\r\nnext";
        let (n, piece) = dec.decode(buf, &L).unwrap();
        assert_eq!((n, piece), (10, Some(Body::Data(b"hello"))));
        let (m, piece) = dec.decode(&buf[n..], &L).unwrap();
        assert_eq!((m, piece), (buf.len() - 4 - n, Some(Body::Done)));
        assert!(dec.is_done());
        assert_eq!(dec.decode(b"more", &L).unwrap(), (0, Some(Body::Done)));
        assert_eq!(dec.eof(), Ok(()));
    }

    #[test]
    fn framing_only_progress_is_reported() {
        // The size line is complete but no data yet: consumed > 0 without a piece.
        let mut dec = BodyDecoder::new(BodyKind::Chunked);
        assert_eq!(dec.decode(b"5\r\n", &L).unwrap(), (3, None));
        assert_eq!(
            dec,
            BodyDecoder::ChunkData {
                left: 5,
                decoded: 0
            }
        );
        assert_eq!(dec.decode(b"", &L).unwrap(), (0, None));
        assert_eq!(dec.eof(), Result::Err(HttpError::UnexpectedEof));
    }
}
