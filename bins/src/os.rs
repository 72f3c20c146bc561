//! The process around a role: logging, daemonizing, the pid file, dropping privileges and the
//! life cycle of a listening socket's file.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::LevelFilter;
use mdproxy_core::metadata::Date;

use crate::log_batch::{Batched, Sink, SinkWriter};
use crate::Failure;

/// Logs to stderr or appends to `file`, at info (or debug); `RUST_LOG` overrides the level.
/// Lines are written as they come until [`batch_logs`]. A log file that cannot be opened is
/// the operator's to fix (exit 2).
pub fn init_logging(file: Option<&Path>, debug: bool) -> Result<(), Failure> {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(if debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    });
    if let Ok(filters) = std::env::var("RUST_LOG") {
        builder.parse_filters(&filters);
    }
    let out: Box<dyn Write + Send> = match file {
        Some(path) => Box::new(open_log(path).map_err(Failure::Config)?),
        None => Box::new(io::stderr()),
    };
    let sink = Sink::new(out);
    builder.target(env_logger::Target::Pipe(Box::new(SinkWriter(sink.clone()))));
    builder.format(|buf, record| {
        let (level, target) = (record.level(), record.target());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        writeln!(buf, "{} {level:<5} {target}: {}", utc(now), record.args())
    });
    let inner = builder.build();
    let max_level = inner.filter();
    log::set_boxed_logger(Box::new(Batched {
        inner,
        sink: sink.clone(),
    }))
    .map_err(|e| Failure::System(e.to_string()))?;
    log::set_max_level(max_level);
    // Set once, right after the logger that holds the same sink.
    let _ = LOG_SINK.set(sink);
    Ok(())
}

/// Opens `path` to append to, never through a symbolic link: the process is often root at
/// this point, and a link planted in a log directory another user can write to would make it
/// append to (or create) any file the link names.
fn open_log(path: &Path) -> Result<File, String> {
    let opened = OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    opened.map_err(|e| {
        let shown = path.display();
        match e.raw_os_error() {
            Some(libc::ELOOP) => {
                format!("--log-file {shown} is a symbolic link; not following it (name the file itself)")
            }
            _ => format!("cannot open log file {shown}: {e}"),
        }
    })
}

/// Creates `path` for writing with `mode` (less the umask), only as a new file and never
/// through a symbolic link (`O_CREAT|O_EXCL|O_NOFOLLOW`), so that whatever another user
/// planted at that name is never written to.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Attempts at a fresh temporary name before [`replace_file`] gives up: each name has 64
/// random bits, so a second attempt only happens when someone planted that very name.
const TEMP_ATTEMPTS: usize = 4;

/// Replaces `dir/name` with a file holding `bytes` (mode `mode`), atomically and durably:
/// `dir/.<name>.<random>.tmp` is created with [`create_new`], written, synced and renamed
/// over `dir/name`, then `dir` is synced. The temporary's name is unpredictable, so no link
/// can be planted there in advance, and retrying with another is safe; `rename` replaces a
/// link at `dir/name` itself rather than following it.
pub fn replace_file(dir: &Path, name: &OsStr, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let tmp = dir.join(temp_name(name)?);
        let mut f = match create_new(&tmp, mode) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        let written = f
            .write_all(bytes)
            .and_then(|()| f.sync_all())
            .and_then(|()| fs::rename(&tmp, dir.join(name)));
        if let Err(e) = written {
            // Only our own file: it was created new, and unlinking does not follow links.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // The rename is durable once the directory is.
        return File::open(dir).and_then(|d| d.sync_all());
    }
    Err(last.unwrap_or_else(|| io::Error::other("no temporary name was free")))
}

/// `.<name>.<16 random hex digits>.tmp`: a dot-file, so directory scans skip it.
fn temp_name(name: &OsStr) -> io::Result<OsString> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{:016x}.tmp", u64::from_ne_bytes(random)));
    Ok(tmp)
}

/// The sink of [`init_logging`]'s logger, for [`batch_logs`].
static LOG_SINK: OnceLock<Arc<Sink>> = OnceLock::new();

/// From now on info lines are written in batches (see `log_batch`). Call once serving, after
/// daemonizing; lines logged so far have been written already.
pub fn batch_logs() {
    if let Some(sink) = LOG_SINK.get() {
        if let Err(e) = sink.start_batching() {
            log::warn!("cannot start the log flusher, writing every line at once: {e}");
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of `t` since the epoch.
fn utc(t: Duration) -> String {
    let (year, month, day) = utc_date(t);
    let secs = t.as_secs() % 86_400;
    let (h, m, s, ms) = (secs / 3600, secs / 60 % 60, secs % 60, t.subsec_millis());
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

/// Today's UTC date, from the system clock.
pub fn utc_today() -> Date {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (y, m, d) = utc_date(now);
    Date::new(u16::try_from(y).unwrap_or(u16::MAX), m as u8, d as u8)
}

/// The UTC date of `t` since the epoch, without a date crate (days-to-civil, H. Hinnant's
/// algorithm).
fn utc_date(t: Duration) -> (i64, i64, i64) {
    let z = (t.as_secs() / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Forks into the background: the parent exits 0, the child becomes a session leader with
/// stdin/stdout/stderr on /dev/null. Call before any thread exists.
pub fn daemonize() -> io::Result<()> {
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    // SAFETY: single-threaded here; the parent leaves with `_exit` so nothing of it runs twice.
    match unsafe { libc::fork() } {
        -1 => return Err(io::Error::last_os_error()),
        0 => {}
        _ => unsafe { libc::_exit(0) },
    }
    // SAFETY: plain syscalls on descriptors we own.
    unsafe {
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        for fd in 0..3 {
            if libc::dup2(null.as_raw_fd(), fd) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// A pid file that disappears when dropped.
pub struct PidFile(PathBuf);

impl PidFile {
    /// Writes the pid through [`replace_file`], so readers never see it half done and a link
    /// planted in the pid file's directory is never followed (the process is still root).
    pub fn write(path: &Path) -> io::Result<PidFile> {
        let Some(name) = path.file_name() else {
            return Err(io::Error::new(ErrorKind::InvalidInput, "not a file name"));
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let pid = format!("{}\n", std::process::id());
        replace_file(dir, name, pid.as_bytes(), 0o644)?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    /// Removes the file only while it still names this process: a successor (`--upgrade`)
    /// or a second start may have written its own pid there.
    fn drop(&mut self) {
        let ours = format!("{}\n", std::process::id());
        if std::fs::read_to_string(&self.0).ok().as_deref() != Some(ours.as_str()) {
            return;
        }
        // After dropping privileges this may fail; the next start overwrites it anyway.
        if let Err(e) = std::fs::remove_file(&self.0) {
            log::debug!("cannot remove pid file {}: {e}", self.0.display());
        }
    }
}

/// Makes `path` free for a new Unix socket: nothing there is fine; a socket nobody listens
/// on (its agent died) is removed; a socket someone answers on, or anything that is not a
/// socket, is an error and is left alone.
pub fn claim_socket_path(path: &Path) -> Result<(), String> {
    let shown = path.display();
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot inspect {shown}: {e}")),
        Ok(m) if !m.file_type().is_socket() => Err(format!(
            "{shown} exists and is not a socket; not removing it"
        )),
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => Err(format!("another agent is listening on {shown}")),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                fs::remove_file(path)
                    .map_err(|e| format!("cannot remove stale socket {shown}: {e}"))?;
                log::info!("removed stale socket {shown} (nobody was listening on it)");
                Ok(())
            }
            Err(e) => Err(format!("cannot tell whether {shown} is in use: {e}")),
        },
    }
}

/// The file of a Unix socket we bound, removed when dropped, unless by then it is another
/// file (a later agent replaced it after we stopped listening).
pub struct SocketFile {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl SocketFile {
    /// Remembers which file `path` is now (call right after binding).
    pub fn new(path: &Path) -> SocketFile {
        let id = fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()));
        SocketFile {
            path: path.to_path_buf(),
            id,
        }
    }
}

impl SocketFile {
    /// A socket file someone else created and removes (systemd, for a `.socket` unit): left
    /// in place when dropped.
    pub fn not_ours(path: &Path) -> SocketFile {
        SocketFile {
            path: path.to_path_buf(),
            id: None,
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let now = fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        // A successor (`--upgrade`) serves on it now.
        if now.is_none() || now != self.id || crate::handover::handed_over() {
            return;
        }
        if let Err(e) = fs::remove_file(&self.path) {
            // E.g. no write permission on the directory after dropping privileges.
            log::warn!("cannot remove socket {}: {e}", self.path.display());
        }
    }
}

/// The ids to switch to, resolved while /etc is still readable.
#[derive(Debug, Default)]
pub struct Identity {
    uid: Option<libc::uid_t>,
    gid: Option<libc::gid_t>,
}

/// Resolves `--user`/`--group` (names or numeric ids). Without `group`, a named or known
/// user's primary group is used; a numeric user with no passwd entry has none, and would
/// keep group 0 (root's), so it needs `group`.
pub fn resolve_identity(user: Option<&str>, group: Option<&str>) -> Result<Identity, String> {
    let mut id = Identity::default();
    if let Some(user) = user {
        let c = CString::new(user).map_err(|_| format!("bad user name {user:?}"))?;
        // SAFETY: getpwnam/getpwuid return NULL or a pointer valid until the next call; we
        // copy the fields out at once and run single-threaded.
        let pw = match user.parse::<libc::uid_t>() {
            Ok(uid) => unsafe { libc::getpwuid(uid) },
            Err(_) => unsafe { libc::getpwnam(c.as_ptr()) },
        };
        match (unsafe { pw.as_ref() }, user.parse::<libc::uid_t>()) {
            (Some(pw), _) => (id.uid, id.gid) = (Some(pw.pw_uid), Some(pw.pw_gid)),
            (None, Ok(uid)) if group.is_some() => id.uid = Some(uid),
            (None, Ok(uid)) => {
                return Err(format!(
                    "--user {uid} has no passwd entry, hence no primary group: give --group \
                     too (else the process would keep group 0)"
                ))
            }
            (None, Err(_)) => return Err(format!("unknown user {user:?}")),
        }
    }
    if let Some(group) = group {
        id.gid = Some(match group.parse::<libc::gid_t>() {
            Ok(gid) => gid,
            Err(_) => {
                let c = CString::new(group).map_err(|_| format!("bad group name {group:?}"))?;
                // SAFETY: as above.
                let gr = unsafe { libc::getgrnam(c.as_ptr()).as_ref() };
                gr.ok_or_else(|| format!("unknown group {group:?}"))?.gr_gid
            }
        });
    }
    Ok(id)
}

/// Switches to `id`: clears the supplementary groups (when root: root's own, such as 0, must
/// not survive the switch), then group, then user.
pub fn drop_privileges(id: &Identity) -> io::Result<()> {
    let check = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: plain syscalls with valid arguments.
    unsafe {
        if id.uid.is_none() && id.gid.is_none() {
            return Ok(());
        }
        if libc::geteuid() == 0 {
            check(libc::setgroups(0, std::ptr::null()))?;
        }
        if let Some(gid) = id.gid {
            check(libc::setgid(gid))?;
        }
        if let Some(uid) = id.uid {
            check(libc::setuid(uid))?;
        }
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard limit. Each connection a role holds may also
/// hold an upstream connection, so the usual soft limit of 1024 runs out at a few hundred
/// concurrent clients while the hard limit (often 524288) would not. Failure only logs: the
/// role still runs within the old limit.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && {
            let old = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            old == lim.rlim_max || libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0
        }
    };
    if raised {
        log::debug!("open-file limit: {}", lim.rlim_cur);
    } else {
        log::warn!(
            "cannot raise the open-file limit: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The index of network interface `name` in this network namespace (`if_nametoindex(3)`).
pub fn interface_index(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::time::Duration;

    use crate::test_dir::Dir;

    #[test]
    fn create_new_refuses_links_and_existing_files() {
        let dir = Dir::new("create");
        let victim = dir.0.join("victim");
        fs::write(&victim, "v").unwrap();
        symlink(&victim, dir.0.join("link")).unwrap();
        symlink(dir.0.join("absent"), dir.0.join("dangling")).unwrap();
        for name in ["victim", "link", "dangling"] {
            let e = super::create_new(&dir.0.join(name), 0o600).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{name}: {e}");
        }
        assert_eq!(fs::read_to_string(&victim).unwrap(), "v");
        assert!(!dir.0.join("absent").exists());
        let fresh = dir.0.join("fresh");
        drop(super::create_new(&fresh, 0o600).unwrap());
        let mode = fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o600, 0, "{mode:o}");
    }

    #[test]
    fn replace_file_replaces_a_link_instead_of_following_it() {
        let dir = Dir::new("replace");
        let victim = dir.0.join("victim");
        fs::write(&victim, "v").unwrap();
        symlink(&victim, dir.0.join("f")).unwrap();
        super::replace_file(&dir.0, "f".as_ref(), b"new", 0o600).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "v");
        let meta = fs::symlink_metadata(dir.0.join("f")).unwrap();
        assert!(meta.is_file());
        assert_eq!(fs::read(dir.0.join("f")).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(&dir.0).unwrap().flatten().collect();
        assert_eq!(names.len(), 2, "a temporary was left: {names:?}");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(Duration::ZERO), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::utc(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            super::utc(Duration::from_millis(1_700_000_000_123)),
            "2023-11-14T22:13:20.123Z"
        );
    }
}
