//! Why a message was refused, and the status a server answers with.

use std::fmt;

/// A framing error. Every variant maps to the status a server sends before closing
/// ([`HttpError::status`]); an upstream's error becomes 502 one layer up, not here.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// The message breaks a syntax or framing rule; the text names the rule (for logs and tests).
    Malformed(&'static str),
    /// The head does not fit in `Limits::max_head`.
    HeadTooLarge,
    /// The head has more than `Limits::max_headers` fields.
    TooManyHeaders,
    /// The body is (or declares itself) larger than `Limits::max_body`.
    BodyTooLarge,
    /// The peer closed before the message was complete.
    UnexpectedEof,
    /// The client did not send its head (or a body we read whole) within the head timeout.
    TimedOut,
}

impl HttpError {
    /// The status code a server answers this error with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Malformed(_) | HttpError::UnexpectedEof => 400,
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => 431,
            HttpError::BodyTooLarge => 413,
            HttpError::TimedOut => 408,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Malformed(rule) => write!(f, "malformed message: {rule}"),
            HttpError::HeadTooLarge => f.write_str("message head too large"),
            HttpError::TooManyHeaders => f.write_str("too many header fields"),
            HttpError::BodyTooLarge => f.write_str("message body too large"),
            HttpError::UnexpectedEof => {
                f.write_str("connection closed before the message was complete")
            }
            HttpError::TimedOut => f.write_str("timed out"),
        }
    }
}

impl std::error::Error for HttpError {}

#[cfg(test)]
mod tests {
    use super::HttpError;

    #[test]
    fn statuses() {
        const CASES: &[(HttpError, u16)] = &[
            (HttpError::Malformed("x"), 400),
            (HttpError::UnexpectedEof, 400),
            (HttpError::HeadTooLarge, 431),
            (HttpError::TooManyHeaders, 431),
            (HttpError::BodyTooLarge, 413),
            (HttpError::TimedOut, 408),
        ];
        for (e, status) in CASES {
            assert_eq!(e.status(), *status, "{e}");
        }
    }
}
