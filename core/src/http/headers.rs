//! Header fields of one parsed head, kept as spans into the head's single copy.

use bytes::Bytes;

/// Raw head kept as one `Bytes`; fields are (name, value) spans into it, so a parsed head costs
/// one copy and one small `Vec`, and the original casing and order survive for re-encoding.
///
/// Spans are `(name_start, name_end, value_start, value_end)`; values exclude the OWS around
/// them (RFC 9112 §5.1). Names are RFC 9110 tokens (the parser checked), so they are ASCII.
#[derive(Clone, Debug, Default)]
pub struct Headers {
    raw: Bytes,
    spans: Vec<(u32, u32, u32, u32)>,
}

impl Headers {
    /// Spans must lie inside `raw` and names must be ASCII; only the head parser builds these.
    pub(crate) fn from_parts(raw: Bytes, spans: Vec<(u32, u32, u32, u32)>) -> Headers {
        Headers { raw, spans }
    }

    /// Number of field lines (every copy counts).
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the head had no fields at all.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Raw (name, value) pairs.
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.spans.iter().map(move |&(ns, ne, vs, ve)| {
            let name = self.raw.get(ns as usize..ne as usize).unwrap_or_default();
            let value = self.raw.get(vs as usize..ve as usize).unwrap_or_default();
            (name, value)
        })
    }

    /// All fields in order: the name as sent (original case) and the value with OWS trimmed.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.fields()
            .map(|(n, v)| (std::str::from_utf8(n).unwrap_or_default(), v))
    }

    /// The first copy of `name` (ASCII case-insensitive). Callers that must refuse duplicates
    /// check [`Headers::count`] too.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let name = name.as_bytes();
        self.fields()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every copy of `name`, in order. The values borrow only `self`, not `name`.
    pub fn get_all<'s, 'n>(
        &'s self,
        name: &'n str,
    ) -> impl Iterator<Item = &'s [u8]> + use<'s, 'n> {
        self.fields()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// How many copies of `name` there are.
    pub fn count(&self, name: &str) -> usize {
        self.get_all(name).count()
    }

    /// Whether `token` is an element of the comma-separated list formed by all copies of `name`
    /// (RFC 9110 §5.3 lets a list be split over several lines), both compared case-insensitively.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .any(|elem| trim_ows(elem).eq_ignore_ascii_case(token.as_bytes()))
    }
}

/// Two heads' fields are equal when they list the same (name, value) pairs in the same order:
/// OWS and the rest of the head don't matter. Handy for round-trip tests.
impl PartialEq for Headers {
    fn eq(&self, other: &Headers) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

/// Strips optional whitespace (SP / HTAB, RFC 9110 §5.6.3) from both ends.
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(raw: &'static [u8]) -> Headers {
        // "A: 1\r\nb:2\r\n" style: spans built by hand the way the parser does.
        let mut spans = Vec::new();
        let mut pos = 0;
        for line in raw.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(colon) = line.iter().position(|&b| b == b':') {
                let v = trim_ows(&line[colon + 1..]);
                let vs = pos
                    + colon
                    + 1
                    + (line[colon + 1..].len() - line[colon + 1..].trim_ascii_start().len());
                spans.push((
                    pos as u32,
                    (pos + colon) as u32,
                    vs as u32,
                    (vs + v.len()) as u32,
                ));
            }
            pos += line.len() + 2;
        }
        Headers::from_parts(Bytes::from_static(raw), spans)
    }

    #[test]
    fn lookup_is_case_insensitive_and_keeps_order() {
        let h =
            headers(b"Host: a\r\nX-Thing:  1 \r\nx-thing: 2\r\nConnection: keep-alive, Close\r\n");
        assert_eq!(h.len(), 4);
        assert!(!h.is_empty());
        assert_eq!(h.get("HOST"), Some(&b"a"[..]));
        assert_eq!(h.get("x-THING"), Some(&b"1"[..]));
        assert_eq!(
            h.get_all("X-Thing").collect::<Vec<_>>(),
            vec![&b"1"[..], &b"2"[..]]
        );
        assert_eq!(h.count("x-thing"), 2);
        assert_eq!(h.count("absent"), 0);
        assert!(h.has_token("connection", "close"));
        assert!(h.has_token("connection", "KEEP-ALIVE"));
        assert!(!h.has_token("connection", "upgrade"));
        let names: Vec<&str> = h.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["Host", "X-Thing", "x-thing", "Connection"]);
        assert!(Headers::default().is_empty());
    }

    #[test]
    fn values_outlive_the_name_used_to_find_them() {
        fn first<'h>(h: &'h Headers, name: &str) -> Option<&'h [u8]> {
            h.get_all(name).next()
        }
        let h = headers(b"X-A: 1\r\n");
        let v = first(&h, &String::from("x-a"));
        assert_eq!(v, Some(&b"1"[..]));
    }

    #[test]
    fn has_token_spans_copies_and_ignores_substrings() {
        let h = headers(b"Connection: keep-alive\r\nConnection: close\r\n");
        assert!(h.has_token("Connection", "close"));
        let h = headers(b"Connection: closed, xclose\r\n");
        assert!(!h.has_token("Connection", "close"));
    }

    #[test]
    fn trims_ows_only() {
        assert_eq!(trim_ows(b" \t a b\t "), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_ows(b"\r"), b"\r");
    }
}
