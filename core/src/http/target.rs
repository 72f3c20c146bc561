//! The one request-target normaliser (RFC 9112 §3.2, RFC 3986 §6.2.2). Every rule that looks at
//! a path — the ns-proxy's token rule, the server's router, what a hop forwards — sees the
//! target only after this, so no two of them can read two paths out of one request.
//!
//! Why normalise at all rather than compare raw bytes: the servers behind us do. eventlet and
//! wsgiref percent-decode `PATH_INFO`, and Nova resolves it like `posixpath.normpath`, so
//! `/latest/api/./token`, `/x/../latest/api/%74oken` and `http://169.254.169.254/latest/api/token`
//! are all the token endpoint there. We resolve them the same way here, forward the result, and
//! refuse (400) what has no single meaning:
//!
//! | input                                       | result                                  |
//! |---------------------------------------------|-----------------------------------------|
//! | absolute form `http://host/p`, `https://…`   | origin form `/p` (`/` when empty)       |
//! | `%XX` of an unreserved character (`%2e`, `%74`) | the character, then dot segments apply |
//! | other `%XX` (`%20`, `%c3`)                  | kept, hex in upper case                 |
//! | `%2f`, `%5c`, `%00`…`%1f`, `%7f`, `%` not followed by two hex digits | 400 |
//! | `\`, a fragment `#`, asterisk or authority form, no leading `/` | 400            |
//! | empty and `.` segments, `..`                | removed; `..` drops the segment before it, never above the root |
//! | a trailing `/` (or a last `.`/`..` segment)  | kept as one `/`                         |
//! | the query (after the first `?`)             | kept byte for byte                      |
//!
//! The result is a fixed point: normalising it again gives it back, so every hop that
//! normalises (ns-proxy, agent, server) sees what the first one saw.

use super::HttpError;

/// RFC 3986 §2.3: characters whose percent-encoding means the same as the character.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The target with scheme and authority removed when it is in absolute form.
fn origin_part(target: &[u8]) -> &[u8] {
    for scheme in [&b"http://"[..], b"https://"] {
        if target.len() >= scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let rest = &target[scheme.len()..];
            let end = rest
                .iter()
                .position(|&b| b == b'/' || b == b'?')
                .unwrap_or(rest.len());
            return &rest[end..];
        }
    }
    target
}

/// One path segment with its unreserved escapes decoded and the others upper-cased.
fn decode_segment(seg: &[u8], out: &mut Vec<u8>) -> Result<(), HttpError> {
    let mut i = 0;
    while i < seg.len() {
        let b = seg[i];
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            seg.get(i + 1).copied().and_then(hex_value),
            seg.get(i + 2).copied().and_then(hex_value),
        ) else {
            return Err(HttpError::Malformed("bad percent-escape in the target"));
        };
        let c = hi << 4 | lo;
        if c == b'/' || c == b'\\' || c < 0x20 || c == 0x7f {
            return Err(HttpError::Malformed(
                "encoded slash, backslash or control in the target",
            ));
        }
        if is_unreserved(c) {
            out.push(c);
        } else {
            out.push(b'%');
            out.extend_from_slice(&[seg[i + 1], seg[i + 2]].map(|h| h.to_ascii_uppercase()));
        }
        i += 3;
    }
    Ok(())
}

/// The normalised origin-form target (see the module table), or a 400 error.
pub fn normalize_target(target: &[u8]) -> Result<Vec<u8>, HttpError> {
    if target.contains(&b'#') {
        return Err(HttpError::Malformed("fragment in the target"));
    }
    if target.contains(&b'\\') {
        return Err(HttpError::Malformed("backslash in the target"));
    }
    let origin = origin_part(target);
    let (path, query) = match origin.iter().position(|&b| b == b'?') {
        Some(q) => (&origin[..q], Some(&origin[q..])),
        None => (origin, None),
    };
    // An absolute-form target with an empty path means `/` (RFC 9112 §3.2.2).
    if !path.is_empty() && path[0] != b'/' || path.is_empty() && origin.len() == target.len() {
        return Err(HttpError::Malformed(
            "target is not in origin or absolute form",
        ));
    }
    let mut segs: Vec<Vec<u8>> = Vec::new();
    let mut trailing = false;
    for raw in path.split(|&b| b == b'/').skip(1) {
        let mut seg = Vec::with_capacity(raw.len());
        decode_segment(raw, &mut seg)?;
        trailing = matches!(&seg[..], b"" | b"." | b"..");
        match &seg[..] {
            b"" | b"." => {}
            b".." => {
                segs.pop();
            }
            _ => segs.push(seg),
        }
    }
    let mut out = Vec::with_capacity(target.len() + 1);
    for seg in &segs {
        out.push(b'/');
        out.extend_from_slice(seg);
    }
    if segs.is_empty() || trailing {
        out.push(b'/');
    }
    if let Some(q) = query {
        out.extend_from_slice(q);
    }
    Ok(out)
}

/// The path of a normalised target, split into its segments (never empty, `.` or `..`).
pub fn path_segments(normalized: &[u8]) -> impl Iterator<Item = &[u8]> {
    let end = normalized
        .iter()
        .position(|&b| b == b'?')
        .unwrap_or(normalized.len());
    normalized[..end]
        .split(|&b| b == b'/')
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(t: &str) -> Result<String, HttpError> {
        normalize_target(t.as_bytes()).map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    #[test]
    fn table() {
        const CASES: &[(&str, Option<&str>)] = &[
            ("/", Some("/")),
            ("/latest/meta-data/", Some("/latest/meta-data/")),
            ("/latest/meta-data", Some("/latest/meta-data")),
            ("/latest//meta-data", Some("/latest/meta-data")),
            ("//latest/./meta-data//", Some("/latest/meta-data/")),
            ("/latest/meta-data/../user-data", Some("/latest/user-data")),
            ("/../../latest", Some("/latest")),
            ("/a/../../..", Some("/")),
            ("/latest/.", Some("/latest/")),
            ("/latest/api/./token", Some("/latest/api/token")),
            ("/x/../latest/api/token", Some("/latest/api/token")),
            ("/latest/api/%74oken", Some("/latest/api/token")),
            ("/latest/api/%2e/token", Some("/latest/api/token")),
            ("/latest/%2E%2e/latest/api/token", Some("/latest/api/token")),
            ("/latest/%c3%a9", Some("/latest/%C3%A9")),
            ("/a%20b", Some("/a%20b")),
            ("/...", Some("/...")),
            ("/latest?x=1", Some("/latest?x=1")),
            ("/?a=/../b", Some("/?a=/../b")),
            ("/a/..?q", Some("/?q")),
            (
                "http://169.254.169.254/latest/api/token",
                Some("/latest/api/token"),
            ),
            ("HTTP://169.254.169.254", Some("/")),
            ("https://[fd00:ec2::254]/x/../y?z", Some("/y?z")),
            ("http://h?q", Some("/?q")),
            ("/latest/api/token#x", None),
            ("/latest/api%2ftoken", None),
            ("/latest/api%2Ftoken", None),
            ("/latest/api%5ctoken", None),
            ("/latest\\api", None),
            ("/a%00", None),
            ("/a%0a", None),
            ("/a%", None),
            ("/a%4", None),
            ("/a%zz", None),
            ("*", None),
            ("169.254.169.254:80", None),
            ("latest", None),
            ("", None),
            ("?x", None),
        ];
        for (input, want) in CASES {
            let got = norm(input);
            match want {
                Some(w) => assert_eq!(got.as_deref(), Ok(*w), "{input:?}"),
                None => assert!(
                    got.as_ref().is_err_and(|e| e.status() == 400),
                    "{input:?} → {got:?}"
                ),
            }
        }
    }

    #[test]
    fn segments_of_normalised_targets() {
        let segs: Vec<&[u8]> = path_segments(b"/latest/api/token?x=/y").collect();
        assert_eq!(segs, [&b"latest"[..], b"api", b"token"]);
        assert_eq!(path_segments(b"/").count(), 0);
        assert_eq!(path_segments(b"/?a/b").count(), 0);
    }

    /// Targets built from the pieces that tell normalisers apart.
    fn target() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let piece = prop::sample::select(vec![
            "latest",
            "api",
            "token",
            "meta-data",
            "openstack",
            "ec2",
            ".",
            "..",
            "",
            "%2e",
            "%2E%2e",
            "%74oken",
            "%61pi",
            "%2f",
            "%5c",
            "%00",
            "%",
            "%c3%a9",
            "x",
            "?",
            "#",
            "\\",
            "a_b",
            ";",
            "http://169.254.169.254",
            "HTTPS://h:80",
        ]);
        prop::collection::vec(piece, 0..8).prop_map(|parts| {
            let mut t = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 || !p.starts_with("http") {
                    t.push(b'/');
                }
                t.extend_from_slice(p.as_bytes());
            }
            t
        })
    }

    proptest::proptest! {
        /// For any target, every rule sees the same route: the normalised form is a fixed
        /// point, the ns-proxy's token rule agrees with the server's router, and every other
        /// spelling routes and is answered alike (the `metadata_path` fuzz body checks all).
        #[test]
        fn every_rule_sees_the_same_route(t in target()) {
            crate::testing::fuzz::metadata_path(&t);
        }
    }
}
