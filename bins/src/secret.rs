//! Secrets the roles read at startup (the shared secret, Keystone's password): from a file of
//! their own, or as Neutron's INI files hold them. Never logged.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::cli;

/// A secret given in a file (see [`read_secret`]) or, by Neutron's INI files, itself.
pub fn load_secret(secret: &cli::Secret, what: &str) -> Result<Vec<u8>, String> {
    match secret {
        cli::Secret::File(path) => read_secret(path, what),
        cli::Secret::Inline { value, .. } => Ok(value.clone().into_bytes()),
    }
}

/// A secret's file: its bytes without one trailing newline (`\n` or `\r\n`), and a warning
/// when every user may read it.
pub fn read_secret(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let mut secret = fs::read(path).map_err(|e| format!("cannot read {what} file {shown}: {e}"))?;
    if secret.ends_with(b"\n") {
        secret.pop();
        if secret.ends_with(b"\r") {
            secret.pop();
        }
    }
    let meta = fs::metadata(path);
    if meta.is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o004 != 0) {
        log::warn!("{what} file {shown} is readable by every user");
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_dir::Dir;

    #[test]
    fn secret_loses_one_trailing_newline_only() {
        let dir = Dir::new("secret");
        let read = |name: &str, contents: &str| {
            let path = dir.0.join(name);
            fs::write(&path, contents).unwrap();
            read_secret(&path, "secret").unwrap()
        };
        assert_eq!(read("s1", "s3cr3t\n"), b"s3cr3t");
        assert_eq!(read("s2", "s3cr3t\r\n"), b"s3cr3t");
        assert_eq!(read("s3", "s3cr3t\n\n"), b"s3cr3t\n");
        assert_eq!(read("s4", " s "), b" s ");
        assert_eq!(read_secret(Path::new("/dev/null"), "secret").unwrap(), b"");
        assert!(read_secret(Path::new("/nonexistent/secret"), "secret").is_err());
    }

    #[test]
    fn an_inline_secret_is_itself() {
        let inline = cli::Secret::Inline {
            value: "hunter2".into(),
            from: "a.ini:3".into(),
        };
        assert_eq!(load_secret(&inline, "secret").unwrap(), b"hunter2");
    }
}
