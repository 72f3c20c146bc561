//! The IMDSv2 token key file (`--token-key-file`, server and agent): one key per line, the
//! first signs, a second one only verifies (a rotation). Read once at startup, checked like
//! the other secret files (never logged; a warning when every user may read it), plus what a
//! key needs: a regular file, small, one or two keys of 16 to 1024 bytes.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use mdproxy_core::metadata::token::{MAX_KEYS, MAX_KEY_BYTES};
use mdproxy_core::metadata::{Entropy, TokenClock, TokenKeys, Tokens};

/// Largest key file read: two keys of the longest size and their line ends.
const MAX_FILE_BYTES: u64 = (MAX_KEYS * (MAX_KEY_BYTES + 2)) as u64;

/// The keys of `path`.
pub fn read_token_keys(path: &Path) -> Result<TokenKeys, String> {
    let shown = path.display();
    let what = format!("token key file {shown}");
    let file = fs::File::open(path).map_err(|e| format!("cannot read {what}: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {what}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{what} is not a regular file"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{what} has {} bytes; a key file has at most {MAX_FILE_BYTES} (one or two keys, one per line)",
            meta.len()
        ));
    }
    let mut contents = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut contents)
        .map_err(|e| format!("cannot read {what}: {e}"))?;
    if meta.permissions().mode() & 0o004 != 0 {
        log::warn!("{what} is readable by every user");
    }
    TokenKeys::parse(&contents).map_err(|e| format!("{what}: {e}"))
}

/// The token issuer of a role: the key file's keys, else one random key of this process
/// (`None` path), with expiries in Unix time from now on.
pub fn tokens(path: Option<&Path>, entropy: &dyn Entropy) -> Result<Tokens, String> {
    let keys = match path {
        Some(path) => read_token_keys(path)?,
        None => TokenKeys::random(entropy),
    };
    // The system clock before 1970 is a broken clock; expiries then count from 1970.
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Ok(Tokens::new(keys, TokenClock::new(Instant::now(), unix)))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_dir::Dir;

    #[test]
    fn key_file_rules() {
        let dir = Dir::new("token-key");
        let write = |name: &str, contents: &[u8], mode: u32| {
            let path = dir.0.join(name);
            fs::write(&path, contents).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        let one = write("one", b"0123456789abcdef0123\n", 0o600);
        assert_eq!(read_token_keys(&one).unwrap().len(), 1);
        let two = write(
            "two",
            b"0123456789abcdef0123\nfedcba9876543210fedc\n",
            0o644,
        );
        assert_eq!(read_token_keys(&two).unwrap().len(), 2);
        let short = write("short", b"tooshort\n", 0o600);
        let e = read_token_keys(&short).unwrap_err();
        assert!(e.contains("line 1") && e.contains("fewer than 16"), "{e}");
        let empty = write("empty", b"", 0o600);
        assert!(read_token_keys(&empty).unwrap_err().contains("no key"));
        let big = write("big", &vec![b'k'; MAX_FILE_BYTES as usize + 1], 0o600);
        assert!(read_token_keys(&big).unwrap_err().contains("at most"));
        let e = read_token_keys(&dir.0).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let e = read_token_keys(&dir.0.join("missing")).unwrap_err();
        assert!(e.contains("cannot read token key file"), "{e}");
        assert!(!e.contains("0123456789abcdef"));
    }
}
