//! The passwords instances posted to `mdproxy server`, kept in its own state directory
//! (`--state-dir`): one file `DIR/<instance id, %-encoded>.password` per instance, holding the
//! password's bytes and nothing else. The operator's instance files are only ever read: a
//! rewrite could not keep their bytes (JSON key order, numbers beyond an `f64`).
//!
//! Files are written by [`Writer`]'s thread, never the event loop's, through
//! [`os::replace_file`] (a new temporary, `O_NOFOLLOW|O_CREAT|O_EXCL`, mode 0600, fsync,
//! rename, directory fsync), and read at the start, before privileges are dropped, without
//! following a link or opening anything but a regular file, so a link planted there can
//! neither be written through nor make the server serve another file's bytes.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, ErrorKind, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use mdproxy_core::metadata::{StoreRequest, MAX_PASSWORD_SIZE};

use crate::os;

/// What a state file's name ends with.
const SUFFIX: &str = ".password";

/// Longest encoded instance id in a file name: with [`SUFFIX`] and what
/// [`os::replace_file`] adds for its temporary (23 bytes), the name stays under `NAME_MAX`
/// (255).
const MAX_ENCODED_ID: usize = 200;

/// The server's state directory.
#[derive(Debug)]
pub(crate) struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The passwords saved in `dir`, by instance id. A directory that does not exist yet holds
    /// none (the first password creates it); one that cannot be read is an error, since
    /// serving without the passwords it holds would let an instance set its password twice.
    /// A file that is not a saved password is logged and skipped.
    pub(crate) fn load(dir: &Path) -> Result<(StateDir, BTreeMap<String, String>), String> {
        let mut passwords = BTreeMap::new();
        let state = StateDir {
            dir: dir.to_path_buf(),
        };
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                log::info!(
                    "state directory {} does not exist yet: no password saved",
                    dir.display()
                );
                return Ok((state, passwords));
            }
            Err(e) => return Err(format!("--state-dir {}: {e}", dir.display())),
        };
        for entry in entries {
            let entry = entry.map_err(|e| format!("--state-dir {}: {e}", dir.display()))?;
            let name = entry.file_name();
            // Dot-files are temporaries (of a write that did not finish) or not ours.
            let Some(name) = name.to_str().filter(|n| !n.starts_with('.')) else {
                continue;
            };
            let path = entry.path();
            let Some(uuid) = name.strip_suffix(SUFFIX).and_then(decode_id) else {
                log::warn!("{}: not a saved password; ignored", path.display());
                continue;
            };
            match read_password(&path) {
                Ok(password) => {
                    passwords.insert(uuid, password);
                }
                Err(e) => log::warn!("{}: {e}; ignored", path.display()),
            }
        }
        log::info!(
            "state directory {}: {} saved password(s)",
            dir.display(),
            passwords.len()
        );
        Ok((state, passwords))
    }

    /// Saves `password` as instance `uuid`'s, durably; returns the file's path. Blocking:
    /// called by [`Writer`]'s thread.
    fn save(&self, uuid: &str, password: &str) -> Result<PathBuf, String> {
        let Some(name) = file_name(uuid) else {
            return Err(format!(
                "its id is longer than {MAX_ENCODED_ID} bytes encoded, too long for a file name"
            ));
        };
        let path = self.dir.join(&name);
        let shown = self.dir.display();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| format!("cannot create {shown}: {e}"))?;
        os::replace_file(&self.dir, name.as_ref(), password.as_bytes(), 0o600)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }
}

/// Reads one saved password: a regular file (not through a link: `O_NOFOLLOW`; not a FIFO
/// that would block: `O_NONBLOCK`) of at most [`MAX_PASSWORD_SIZE`] bytes of UTF-8.
fn read_password(path: &Path) -> Result<String, String> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => "a symbolic link, not followed".to_owned(),
            _ => format!("cannot open: {e}"),
        })?;
    let meta = f.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    let mut bytes = Vec::new();
    // One byte more than allowed tells a file that is too large.
    let limit = MAX_PASSWORD_SIZE as u64 + 1;
    (&mut f)
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() > MAX_PASSWORD_SIZE {
        return Err(format!("larger than {MAX_PASSWORD_SIZE} bytes"));
    }
    match String::from_utf8(bytes) {
        Ok(p) if !p.is_empty() => Ok(p),
        Ok(_) => Err("empty".to_owned()),
        Err(_) => Err("not UTF-8".to_owned()),
    }
}

/// Bytes of an instance id that stand for themselves in a file name; every other byte is
/// `%XX`. So no id makes a path (`/`, `..`), a dot-file or a name two ids share.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// `<id, %-encoded>.password`, or `None` when that is too long for a file name.
fn file_name(uuid: &str) -> Option<String> {
    let mut name = String::with_capacity(uuid.len() + SUFFIX.len());
    for b in uuid.bytes() {
        if plain(b) {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    (name.len() <= MAX_ENCODED_ID).then(|| name + SUFFIX)
}

/// The id [`file_name`] encoded as `encoded` (without the suffix); `None` for any other
/// spelling, so each id has one file.
fn decode_id(encoded: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = tail.get(..2)?;
            let hex = std::str::from_utf8(hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    let uuid = String::from_utf8(bytes).ok()?;
    let canonical = file_name(&uuid)?;
    (canonical.strip_suffix(SUFFIX) == Some(encoded) && !uuid.is_empty()).then_some(uuid)
}

/// Hands passwords to a thread that saves them, so the event loop never waits for a disk.
/// The thread starts with the first password (after the process daemonized: a fork keeps no
/// thread). Dropping the writer (when the loop ends) waits until every password handed to it
/// is saved, so one accepted just before SIGTERM survives the restart.
pub(crate) struct Writer {
    state: Arc<StateDir>,
    queue: Option<Sender<StoreRequest>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub(crate) fn new(state: StateDir) -> Writer {
        Writer {
            state: Arc::new(state),
            queue: None,
            thread: None,
        }
    }

    /// Queues `req` for saving.
    pub(crate) fn send(&mut self, req: StoreRequest) {
        if self.queue.is_none() {
            match self.spawn() {
                Ok(()) => {}
                Err(e) => {
                    log::warn!("cannot start the password writer ({e}): saving on the loop");
                    save_logged(&self.state, &req);
                    return;
                }
            }
        }
        if let Some(queue) = &self.queue {
            if let Err(mpsc::SendError(req)) = queue.send(req) {
                // The thread is gone (it panicked): save here rather than lose it.
                save_logged(&self.state, &req);
            }
        }
    }

    fn spawn(&mut self) -> io::Result<()> {
        let (queue, rx) = mpsc::channel::<StoreRequest>();
        let state = self.state.clone();
        let thread = thread::Builder::new()
            .name("password-writer".to_owned())
            .spawn(move || rx.iter().for_each(|req| save_logged(&state, &req)))?;
        (self.queue, self.thread) = (Some(queue), Some(thread));
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has saved what is queued.
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the password writer panicked");
            }
        }
    }
}

/// Saves `req`, logging the outcome: a password that cannot be saved is still served (from
/// memory) until the server stops.
fn save_logged(state: &StateDir, req: &StoreRequest) {
    let uuid = &req.instance_uuid;
    match state.save(uuid, &req.password) {
        Ok(path) => log::info!(
            "saved the password of instance {uuid} in {}",
            path.display()
        ),
        Err(e) => log::error!(
            "cannot save the password of instance {uuid}: {e}; it is served from memory only, \
             until the server stops"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, PermissionsExt};

    use super::*;

    use crate::test_dir::Dir;

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn ids_become_one_safe_name_each() {
        for (id, name) in [
            (
                "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a",
                "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a.password",
            ),
            ("..", "%2E%2E.password"),
            (
                "a/../../etc/passwd",
                "a%2F%2E%2E%2F%2E%2E%2Fetc%2Fpasswd.password",
            ),
            (".hidden", "%2Ehidden.password"),
            ("50%", "50%25.password"),
            ("é", "%C3%A9.password"),
        ] {
            assert_eq!(file_name(id).as_deref(), Some(name), "{id}");
            let encoded = name.strip_suffix(SUFFIX).unwrap();
            assert_eq!(decode_id(encoded).as_deref(), Some(id), "{name}");
        }
        // Only the canonical spelling decodes: one file per id.
        for other in ["%2e%2e", "%41", "%", "%4", "%zz", "", "%FF"] {
            assert_eq!(decode_id(other), None, "{other}");
        }
        assert!(file_name(&"x".repeat(MAX_ENCODED_ID)).is_some());
        assert!(file_name(&"x".repeat(MAX_ENCODED_ID + 1)).is_none());
        assert!(file_name(&"/".repeat(MAX_ENCODED_ID / 3 + 1)).is_none());
    }

    #[test]
    fn saved_passwords_load_and_are_private() {
        let dir = Dir::new("save");
        let state_dir = dir.0.join("state");
        let (state, loaded) = StateDir::load(&state_dir).unwrap();
        assert!(loaded.is_empty());
        let path = state.save("a/b", "pw\"1").unwrap();
        assert_eq!(path, state_dir.join("a%2Fb.password"));
        assert_eq!(fs::read(&path).unwrap(), b"pw\"1");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = fs::metadata(&state_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        state.save("u", "pw2").unwrap();
        assert_eq!(names(&state_dir), ["a%2Fb.password", "u.password"]);
        let (_, loaded) = StateDir::load(&state_dir).unwrap();
        let want: BTreeMap<String, String> = [("a/b", "pw\"1"), ("u", "pw2")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(loaded, want);
    }

    #[test]
    fn loading_skips_links_and_what_is_not_a_password() {
        let dir = Dir::new("load");
        let secret = dir.0.join("secret");
        fs::write(&secret, "root's secret").unwrap();
        let state = dir.0.join("state");
        fs::create_dir(&state).unwrap();
        symlink(&secret, state.join("linked.password")).unwrap();
        fs::write(
            state.join("big.password"),
            "x".repeat(MAX_PASSWORD_SIZE + 1),
        )
        .unwrap();
        fs::write(state.join("max.password"), "x".repeat(MAX_PASSWORD_SIZE)).unwrap();
        fs::write(state.join("empty.password"), "").unwrap();
        fs::write(state.join("binary.password"), [0xff]).unwrap();
        fs::write(state.join("notes.txt"), "x").unwrap();
        fs::write(state.join("%2e.password"), "x").unwrap();
        fs::write(state.join(".u.password.0123456789abcdef.tmp"), "x").unwrap();
        fs::create_dir(state.join("dir.password")).unwrap();
        let (_, loaded) = StateDir::load(&state).unwrap();
        assert_eq!(loaded.keys().collect::<Vec<_>>(), ["max"]);
        assert!(StateDir::load(&secret).is_err(), "not a directory");
    }

    #[test]
    fn a_link_at_the_state_file_is_replaced_not_followed() {
        let dir = Dir::new("link");
        let victim = dir.0.join("victim");
        fs::write(&victim, "v").unwrap();
        let state = dir.0.join("state");
        fs::create_dir(&state).unwrap();
        symlink(&victim, state.join("u.password")).unwrap();
        let (state_dir, _) = StateDir::load(&state).unwrap();
        state_dir.save("u", "pw").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "v");
        let meta = fs::symlink_metadata(state.join("u.password")).unwrap();
        assert!(meta.is_file());
        assert_eq!(names(&state), ["u.password"]);
    }

    #[test]
    fn dropping_the_writer_waits_for_what_it_was_given() {
        let dir = Dir::new("writer");
        let state = dir.0.join("state");
        let (state_dir, _) = StateDir::load(&state).unwrap();
        let mut writer = Writer::new(state_dir);
        for i in 0..20 {
            writer.send(StoreRequest {
                instance_uuid: format!("u{i}"),
                password: format!("pw{i}"),
            });
        }
        drop(writer);
        let (_, loaded) = StateDir::load(&state).unwrap();
        assert_eq!(loaded.len(), 20);
        assert_eq!(loaded["u19"], "pw19");
    }
}
