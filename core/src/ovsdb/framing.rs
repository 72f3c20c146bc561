//! Cutting an OVSDB byte stream into JSON texts. RFC 7047 §4 sends JSON-RPC messages back to
//! back with no length or delimiter, so the only way to find where one ends is to follow the
//! JSON itself: a scanner tracks nesting depth, strings and escapes, and hands a complete
//! object to `serde_json`.
//!
//! The scanner keeps only the message in progress, and refuses one longer than its maximum:
//! a server (or anything pretending to be one) that never closes its object costs at most
//! that much memory, then the connection. Whitespace between messages is skipped; anything
//! else there (OVSDB only ever sends objects) is garbage and ends the stream.

use std::fmt;

use serde_json::Value;

/// Why the stream cannot be read any further. Every error is final: the connection is done.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A message grew past the maximum before it ended.
    TooLarge {
        /// The maximum, in bytes.
        max: usize,
    },
    /// A byte between messages that cannot start one (only `{` can).
    Garbage(u8),
    /// The scanner found the end of an object, but it is not JSON (serde_json's message).
    Json(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { max } => write!(f, "message longer than {max} bytes"),
            FrameError::Garbage(b) => {
                write!(f, "byte {:?} between messages", char::from(*b))
            }
            FrameError::Json(why) => write!(f, "malformed JSON: {why}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Where the scanner is inside the current message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lex {
    /// Outside any string.
    Structure,
    /// Inside a string.
    String,
    /// Just after a backslash inside a string.
    Escape,
}

/// Incremental splitter of one connection's stream.
#[derive(Debug)]
pub struct Framer {
    max: usize,
    /// The message in progress (empty between messages).
    buf: Vec<u8>,
    depth: usize,
    lex: Lex,
    failed: Option<FrameError>,
}

impl Framer {
    /// A scanner refusing messages longer than `max` bytes.
    pub fn new(max: usize) -> Framer {
        Framer {
            max,
            buf: Vec::new(),
            depth: 0,
            lex: Lex::Structure,
            failed: None,
        }
    }

    /// Bytes of an unfinished message held (never more than the maximum).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes bytes from the front of `input` until one message is complete and returns it;
    /// `Ok(None)` once `input` is used up without completing one (what was taken is kept for
    /// the next call). Call again with the rest of `input` until it is empty. After an error
    /// every call returns it again.
    pub fn next_message(&mut self, input: &mut &[u8]) -> Result<Option<Value>, FrameError> {
        match self.next_text(input, |text| serde_json::from_slice(text))? {
            Some(Ok(v)) => Ok(Some(v)),
            Some(Err(e)) => Err(self.fail(FrameError::Json(e.to_string()))),
            None => Ok(None),
        }
    }

    /// As [`Framer::next_message`], but hands the complete message's text to `read` instead
    /// of a `Value`, so that a large message can be parsed straight into what it carries.
    /// The text is balanced but not checked to be JSON: that is `read`'s job.
    pub fn next_text<R>(
        &mut self,
        input: &mut &[u8],
        read: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.scan(input) {
            Ok(Some(())) => {
                let out = read(&self.buf);
                self.buf.clear();
                if self.buf.capacity() > Self::KEEP {
                    // A snapshot's capacity (megabytes) would stay allocated for as long as
                    // the connection, for messages that are mostly under a kilobyte.
                    self.buf = Vec::new();
                }
                Ok(Some(out))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// The buffer capacity kept between messages.
    const KEEP: usize = 64 << 10;

    fn fail(&mut self, e: FrameError) -> FrameError {
        self.buf = Vec::new();
        self.failed = Some(e.clone());
        e
    }

    /// Moves bytes of `input` into `buf` up to the end of a message (`Some`) or of `input`.
    fn scan(&mut self, input: &mut &[u8]) -> Result<Option<()>, FrameError> {
        let mut taken = 0;
        let mut done = false;
        for &b in input.iter() {
            taken += 1;
            if self.depth == 0 {
                match b {
                    b' ' | b'\t' | b'\n' | b'\r' => continue,
                    b'{' => {}
                    _ => return Err(FrameError::Garbage(b)),
                }
            }
            self.buf.push(b);
            if self.buf.len() > self.max {
                return Err(FrameError::TooLarge { max: self.max });
            }
            self.lex = match (self.lex, b) {
                (Lex::Structure, b'"') => Lex::String,
                (Lex::Structure, b'{' | b'[') => {
                    self.depth += 1;
                    Lex::Structure
                }
                (Lex::Structure, b'}' | b']') => {
                    // Mismatched brackets still balance the count; serde_json judges them.
                    self.depth -= 1;
                    if self.depth == 0 {
                        done = true;
                    }
                    Lex::Structure
                }
                (Lex::String, b'\\') => Lex::Escape,
                (Lex::String, b'"') => Lex::Structure,
                (Lex::Escape, _) => Lex::String,
                (lex, _) => lex,
            };
            if done {
                break;
            }
        }
        *input = &input[taken..];
        Ok(done.then_some(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::for_each_split;
    use serde_json::json;

    /// Every message of `pieces` fed in order, then the error that ended it, if any.
    fn run(max: usize, pieces: &[&[u8]]) -> (Vec<Value>, Option<FrameError>) {
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
            assert!(rest.is_empty());
        }
        (out, None)
    }

    #[test]
    fn back_to_back_messages_at_every_split() {
        let stream = br#"{"id":null,"method":"update3","params":["m","x",{"T":{}}]}
 {"id":1,"result":["a}\"]{",{"k":[1,2,{"n":"\\"}]}],"error":null}{"id":"echo","method":"echo","params":[]}  "#;
        let (msgs, err) = for_each_split(stream, |p| run(1024, p));
        assert_eq!(err, None);
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[1]["result"][0], json!("a}\"]{"));
        assert_eq!(msgs[1]["result"][1]["k"][2]["n"], json!("\\"));
        assert_eq!(msgs[2]["method"], json!("echo"));
    }

    #[test]
    fn garbage_between_messages() {
        for (stream, byte) in [
            (&b"{}x{}"[..], b'x'),
            (b"[1]", b'['),
            (b"\"s\"", b'"'),
            (b"}", b'}'),
            (b"\0", 0),
        ] {
            let (_, err) = for_each_split(stream, |p| run(64, p));
            assert_eq!(err, Some(FrameError::Garbage(byte)), "{stream:?}");
        }
    }

    #[test]
    fn balanced_but_not_json() {
        let (msgs, err) = for_each_split(b"{\"a\":1}{\"a\" 1]", |p| run(64, p));
        assert_eq!(msgs, vec![json!({"a": 1})]);
        assert!(matches!(err, Some(FrameError::Json(_))), "{err:?}");
    }

    #[test]
    fn oversize_message() {
        let ok = br#"{"k":"0123456789"}"#;
        assert_eq!(run(ok.len(), &[ok]).0.len(), 1);
        let (msgs, err) = for_each_split(ok, |p| run(ok.len() - 1, p));
        assert!(msgs.is_empty());
        assert_eq!(err, Some(FrameError::TooLarge { max: ok.len() - 1 }));
        // A message that never ends stops at the limit, however much keeps coming.
        let mut f = Framer::new(100);
        let mut rest = &b"{"[..];
        assert_eq!(f.next_message(&mut rest), Ok(None));
        let mut errors = Vec::new();
        for _ in 0..4 {
            let mut rest = &[b'['; 64][..];
            if let Err(e) = f.next_message(&mut rest) {
                errors.push(e);
            }
            assert!(f.buffered() <= 100);
        }
        assert_eq!(errors.len(), 3);
        assert!(errors
            .iter()
            .all(|e| *e == FrameError::TooLarge { max: 100 }));
    }

    #[test]
    fn a_large_message_does_not_keep_its_capacity() {
        let big = format!(r#"{{"k":"{}"}}"#, "x".repeat(1 << 20));
        let mut f = Framer::new(2 << 20);
        let mut rest = big.as_bytes();
        let len = f.next_text(&mut rest, |t| t.len()).unwrap();
        assert_eq!(len, Some(big.len()));
        assert!(f.buf.capacity() <= Framer::KEEP, "{}", f.buf.capacity());
        let mut small = &b"{}"[..];
        assert_eq!(f.next_message(&mut small), Ok(Some(json!({}))));
        assert!(f.buf.capacity() > 0, "a small message's buffer is reused");
    }

    #[test]
    fn errors_are_final() {
        let mut f = Framer::new(64);
        assert!(f.next_message(&mut &b"x"[..]).is_err());
        assert_eq!(
            f.next_message(&mut &b"{}"[..]),
            Err(FrameError::Garbage(b'x'))
        );
    }
}
