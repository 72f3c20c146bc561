//! `mdproxy server`: reads the secret and the instance directory, binds the listeners and runs
//! the metadata server on one event loop. The loop's hooks keep the instances current (a
//! rescan every `--rescan-interval`, a full re-read on SIGHUP) and write posted passwords back
//! into the instance files.
//!
//! One loop, not several workers: IMDSv2 tokens and posted passwords live in the memory of
//! the loop's endpoint, and a token issued by one worker would be unknown to another.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mdproxy_core::endpoint::{EndpointConfig, Reload, Role};
use mdproxy_core::http::Limits;
use mdproxy_core::metadata::{
    parse_instance, set_password, Entropy, Format, ImdsV2, InstanceData, ServerConfig, StoreRequest,
};
use mdproxy_core::sign::Signer;
use mdproxy_core::tls::EndpointTls;

use crate::agent::read_secret;
use crate::runtime::{Listener, Options, Runtime};
use crate::{cli, metrics, os, start, tls, Failure};

pub fn serve(cfg: cli::Server) -> Result<(), Failure> {
    let (endpoint, options) = prepare(&cfg)?;
    let rt = cfg.process.runtime;
    let (listeners, exporter, _pid_file) = start(&cfg.process, || bind_tcp(rt, &cfg.listen))?;
    let addrs: Vec<String> = listeners.iter().map(ToString::to_string).collect();
    let identity = match cfg.direct {
        true => "by client address (--direct)",
        false => "by signed X-Instance-ID",
    };
    let imdsv2 = match cfg.imdsv2 {
        ImdsV2::Off => "off",
        ImdsV2::Optional => "optional",
        ImdsV2::Required => "required",
    };
    let https = match &cfg.tls {
        None => String::new(),
        Some(t) if t.client_ca.is_some() => {
            format!(
                " (HTTPS, {}, client certificates required)",
                t.cert.display()
            )
        }
        Some(t) => format!(" (HTTPS, {})", t.cert.display()),
    };
    log::info!(
        "server listening on {}{https}, instances in {} (rescanned every {:?}), identity \
         {identity}, IMDSv2 {imdsv2} ({rt} runtime)",
        addrs.join(", "),
        cfg.instances.display(),
        cfg.rescan_interval,
    );
    metrics::run(rt, endpoint, listeners, options, exporter)
        .map_err(|e| Failure::System(format!("event loop failed: {e}")))?;
    log::info!("server stopped");
    Ok(())
}

/// The server's endpoint and the hooks of its loop: reads the secret and the instance
/// directory (an unreadable one is a configuration error; bad files are only logged).
pub(crate) fn prepare(cfg: &cli::Server) -> Result<(EndpointConfig, Options), Failure> {
    let signer = match (&cfg.shared_secret_file, cfg.direct) {
        (_, true) => None,
        (Some(path), false) => {
            let secret = read_secret(path, "shared secret").map_err(Failure::Config)?;
            Some(Signer::new(&secret))
        }
        (None, false) => {
            let msg = "--shared-secret-file is required unless --direct";
            return Err(Failure::Config(msg.to_owned()));
        }
    };
    let accept = match &cfg.tls {
        Some(args) => Some(tls::server(args).map_err(Failure::Config)?),
        None => None,
    };
    let entropy = OsEntropy::new().map_err(Failure::System)?;
    let instances = InstanceDir::open(&cfg.instances).map_err(Failure::Config)?;
    let today = os::utc_today();
    let endpoint = EndpointConfig {
        role: Role::Server(ServerConfig {
            signer,
            direct: cfg.direct,
            imdsv2: cfg.imdsv2,
            dhcp_domain: cfg.dhcp_domain.clone(),
            today,
            entropy,
        }),
        limits: Limits::default(),
        timeouts: cfg.timeouts,
        tls: EndpointTls {
            accept,
            upstream: None,
        },
        metrics: None,
    };
    Ok((
        endpoint,
        instances.options(cfg.rescan_interval, cfg.drain_timeout),
    ))
}

/// Binds a TCP listener on each of `addrs`.
pub(crate) fn bind_tcp(rt: Runtime, addrs: &[SocketAddr]) -> Result<Vec<Listener>, Failure> {
    let bind = |addr: &SocketAddr| {
        Listener::bind_tcp(rt, *addr)
            .map_err(|e| Failure::System(format!("cannot listen on {addr}: {e}")))
    };
    addrs.iter().map(bind).collect()
}

/// Randomness from the operating system (`getrandom(2)`).
pub(crate) struct OsEntropy;

impl OsEntropy {
    /// Checks once that the system's random source works, so a broken one stops the start
    /// rather than a request.
    pub(crate) fn new() -> Result<Arc<OsEntropy>, String> {
        getrandom::fill(&mut [0u8; 16])
            .map_err(|e| format!("the system's random source does not work: {e}"))?;
        Ok(Arc::new(OsEntropy))
    }
}

impl Entropy for OsEntropy {
    fn fill(&self, buf: &mut [u8]) {
        // It worked at startup; failing now means the system is broken, and tokens must not
        // be predictable.
        if let Err(e) = getrandom::fill(buf) {
            panic!("the system's random source failed: {e}");
        }
    }
}

/// What tells whether a file changed since it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &Metadata) -> Stamp {
        Stamp {
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// A file modified this recently may change again without changing its stamp (timestamps
/// are coarse: a jiffy here, seconds on some file systems), so it is read again at each scan
/// until it is older.
const RACY: Duration = Duration::from_secs(2);

/// One instance file as last read.
struct InstanceFile {
    stamp: Stamp,
    format: Format,
    /// What is served: `None` when the file has an error and no earlier version of it was good.
    data: Option<InstanceData>,
    /// The file's error, if it has one (logged once per change).
    error: Option<String>,
    /// Modified within [`RACY`] of when it was read: its stamp cannot be trusted yet.
    racy: bool,
}

impl InstanceFile {
    /// Reads `path` anew; `old` is what it held before. Logs what changed (everything if
    /// `log_all`), and says whether anything did.
    fn read(
        path: &Path,
        format: Format,
        meta: &Metadata,
        old: Option<InstanceFile>,
        log_all: bool,
    ) -> (Self, bool) {
        let racy = meta
            .modified()
            .map_or(true, |t| t.elapsed().map_or(true, |age| age < RACY));
        let (old_data, old_error) = old.map_or((None, None), |f| (f.data, f.error));
        let shown = path.display();
        let (data, error) = match read_instance(path, format) {
            Ok(data) => (Some(data), None),
            Err(e) => (old_data.clone(), Some(e)),
        };
        let changed = data != old_data || error != old_error;
        match (&data, &error) {
            _ if !changed && !log_all => {}
            (Some(d), None) => log::info!("{shown}: instance {}", d.uuid),
            // Perhaps a save in progress: the last good version keeps serving.
            (Some(_), Some(e)) => {
                log::error!("{shown}: {e}; still serving the version read before")
            }
            (None, Some(e)) => log::error!("{shown}: {e}; skipped"),
            (None, None) => {}
        }
        let file = InstanceFile {
            stamp: Stamp::of(meta),
            format,
            data,
            error,
            racy,
        };
        (file, changed)
    }
}

/// The instance files of `--instances DIR` as last read, for one loop: its tick rescans the
/// directory, SIGHUP re-reads every file, and a posted password is written into its file.
pub(crate) struct InstanceDir {
    dir: PathBuf,
    /// By file name.
    files: BTreeMap<OsString, InstanceFile>,
    today: (u16, u8, u8),
    /// Bumped whenever what should be served changed.
    generation: u64,
    /// The generation the loop's endpoint has.
    delivered: u64,
    /// Passwords the server accepted but could not write, by instance: kept over rescans.
    unsaved: BTreeMap<String, String>,
    /// The last failure to read the directory, so that it is logged once.
    dir_error: Option<String>,
}

impl InstanceDir {
    /// Reads every instance file of `dir`; the directory must be readable.
    pub(crate) fn open(dir: &Path) -> Result<InstanceDir, String> {
        let mut d = InstanceDir {
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
            today: os::utc_today(),
            generation: 1,
            delivered: 0,
            unsaved: BTreeMap::new(),
            dir_error: None,
        };
        d.scan(true)
            .map_err(|e| format!("--instances {}: {e}", dir.display()))?;
        Ok(d)
    }

    /// The loop's hooks around this directory; the tick's first call (at the loop's start)
    /// hands the endpoint its instances.
    pub(crate) fn options(self, rescan: Duration, drain_timeout: Duration) -> Options {
        let shared = Arc::new(Mutex::new(self));
        let (tick, hangup, store) = (shared.clone(), shared.clone(), shared);
        Options {
            drain_timeout,
            on_hangup: Box::new(move || {
                let mut d = hangup.lock().unwrap_or_else(PoisonError::into_inner);
                log::info!("SIGHUP: re-reading the instance files");
                // A directory that became unreadable keeps the instances served so far.
                d.rescan(true);
                d.reload()
            }),
            on_store: Box::new(move |req| {
                store
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .store(req)
            }),
            tick: Some((
                rescan,
                Box::new(move || {
                    let mut d = tick.lock().unwrap_or_else(PoisonError::into_inner);
                    d.rescan(false);
                    d.reload()
                }),
            )),
        }
    }

    /// What the endpoint should be given, if it does not have it yet.
    fn reload(&mut self) -> Option<Reload> {
        let today = os::utc_today();
        if today != self.today {
            // A new day can list another OpenStack version.
            self.today = today;
            self.generation += 1;
        }
        if self.delivered == self.generation {
            return None;
        }
        self.delivered = self.generation;
        let mut instances: Vec<InstanceData> =
            self.files.values().filter_map(|f| f.data.clone()).collect();
        for data in &mut instances {
            if data.password.is_none() {
                data.password = self.unsaved.get(&data.uuid).cloned();
            }
        }
        Some(Reload::Instances(instances, self.today))
    }

    /// [`scan`](Self::scan) from a hook: a directory that cannot be read is logged (once, until
    /// it can be read again) and the instances read before keep serving.
    fn rescan(&mut self, force: bool) {
        match self.scan(force) {
            Ok(()) => self.dir_error = None,
            Err(msg) if self.dir_error.as_ref() != Some(&msg) => {
                log::error!(
                    "{}: {msg}; serving the instances read before",
                    self.dir.display()
                );
                self.dir_error = Some(msg);
            }
            Err(_) => {}
        }
    }

    /// Reads the files that changed (all of them if `force`) and forgets the removed ones.
    /// Errors are the directory's own; a bad file is logged and skipped.
    fn scan(&mut self, force: bool) -> Result<(), String> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| format!("cannot read the instance directory: {e}"))?;
        let mut seen = BTreeSet::new();
        let mut changed = force;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let format = match name.to_str() {
                Some(n) if !n.starts_with('.') => Format::from_file_name(n),
                _ => None,
            };
            let path = entry.path();
            // Follows symbolic links: a link to an instance file is one.
            let (Some(format), Ok(meta)) = (format, fs::metadata(&path)) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            seen.insert(name.clone());
            let known = self.files.get(&name);
            if !force && known.is_some_and(|f| f.stamp == Stamp::of(&meta) && !f.racy) {
                continue;
            }
            let old = self.files.remove(&name);
            let (file, file_changed) = InstanceFile::read(&path, format, &meta, old, force);
            self.files.insert(name, file);
            changed |= file_changed;
        }
        let dir = &self.dir;
        self.files.retain(|name, _| {
            let keep = seen.contains(name);
            if !keep {
                log::info!("{}: removed", dir.join(name).display());
                changed = true;
            }
            keep
        });
        if changed {
            self.generation += 1;
            self.retry_unsaved();
        }
        Ok(())
    }

    /// Tries again to write the passwords that could not be written, now that files changed.
    /// A file that meanwhile got a password of its own wins.
    fn retry_unsaved(&mut self) {
        for (uuid, password) in std::mem::take(&mut self.unsaved) {
            let held = self.files.values().filter_map(|f| f.data.as_ref());
            match held
                .filter(|d| d.uuid == uuid)
                .map(|d| d.password.is_some())
                .next_back()
            {
                Some(false) => self.store(StoreRequest {
                    instance_uuid: uuid,
                    password,
                }),
                Some(true) => log::warn!(
                    "instance {uuid}: its file now has a password; the one it posted is dropped"
                ),
                None => {
                    self.unsaved.insert(uuid, password);
                }
            }
        }
    }

    /// Writes a password the server accepted into its instance's file; on failure it stays
    /// served from memory (and is re-applied over rescans).
    fn store(&mut self, req: StoreRequest) {
        let uuid = req.instance_uuid;
        let holder = self
            .files
            .iter_mut()
            // The copy served when two files hold the instance: the last (the core's rule).
            .rfind(|(_, f)| f.data.as_ref().is_some_and(|d| d.uuid == uuid));
        let Some((name, file)) = holder else {
            log::error!(
                "cannot save the password of instance {uuid}: no file holds it any more; it is \
                 served from memory only"
            );
            self.unsaved.insert(uuid, req.password);
            return;
        };
        let path = self.dir.join(name);
        match write_password(&path, file.format, &uuid, &req.password) {
            Ok(stamp) => {
                // Already served: the file's change needs no reload (and when the next scans
                // read it again, they find what they have).
                (file.stamp, file.racy) = (stamp, true);
                if let Some(data) = file.data.as_mut() {
                    data.password = Some(req.password);
                }
                self.unsaved.remove(&uuid);
                log::info!(
                    "saved the password of instance {uuid} in {}",
                    path.display()
                );
            }
            Err(e) => {
                log::error!(
                    "cannot save the password of instance {uuid} in {}: {e}; it is served \
                     from memory only",
                    path.display()
                );
                self.unsaved.insert(uuid, req.password);
            }
        }
    }
}

/// Reads and parses one instance file; errors name the line where the parser knows it.
fn read_instance(path: &Path, format: Format) -> Result<InstanceData, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    parse_instance(&text, format).map_err(|e| e.to_string())
}

/// Rewrites `path` to carry `password`, atomically: `DIR/.<name>.tmp` is written, synced and
/// renamed over the file, then the directory is synced. Returns the file's new stamp.
fn write_password(
    path: &Path,
    format: Format,
    uuid: &str,
    password: &str,
) -> Result<Stamp, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    let holds = parse_instance(&text, format).map_err(|e| format!("it changed: {e}"))?;
    if holds.uuid != uuid {
        return Err(format!("it now holds instance {}", holds.uuid));
    }
    let text = set_password(&text, format, password).map_err(|e| e.to_string())?;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err("not a file in a directory".to_owned());
    };
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let written = (|| -> io::Result<()> {
        let mode = fs::metadata(path)?.permissions();
        let mut f = File::create(&tmp)?;
        f.set_permissions(mode)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(format!("cannot replace it through {}: {e}", tmp.display()));
    }
    // The rename is durable once the directory is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", dir.display()))?;
    let meta = fs::metadata(path).map_err(|e| format!("cannot stat it: {e}"))?;
    Ok(Stamp::of(&meta))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!("mdp-srv-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn instance(uuid: &str) -> String {
        format!("uuid = \"{uuid}\"\nproject_id = \"p\"\n")
    }

    fn uuids(reload: Option<Reload>) -> Vec<(String, Option<String>)> {
        match reload {
            Some(Reload::Instances(list, _)) => {
                list.into_iter().map(|d| (d.uuid, d.password)).collect()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scans_deliver_changes_once() {
        let dir = Dir::new("scan");
        fs::write(dir.0.join("a.toml"), instance("a")).unwrap();
        fs::write(dir.0.join("b.json"), r#"{"uuid": "b", "project_id": "p"}"#).unwrap();
        fs::write(dir.0.join("bad.toml"), "uuid = \"c\"\nnope = 1\n").unwrap();
        fs::write(dir.0.join(".hidden.toml"), instance("h")).unwrap();
        fs::write(dir.0.join("notes.txt"), "x").unwrap();
        let mut d = InstanceDir::open(&dir.0).unwrap();
        assert_eq!(uuids(d.reload()), [("a".into(), None), ("b".into(), None)]);
        d.scan(false).unwrap();
        assert!(d.reload().is_none());
        fs::write(dir.0.join("bad.toml"), instance("c")).unwrap();
        fs::remove_file(dir.0.join("b.json")).unwrap();
        d.scan(false).unwrap();
        assert_eq!(uuids(d.reload()), [("a".into(), None), ("c".into(), None)]);
        // A good file gone bad keeps its last good version.
        fs::write(dir.0.join("bad.toml"), "uuid = ").unwrap();
        d.scan(false).unwrap();
        assert_eq!(uuids(d.reload()), [("a".into(), None), ("c".into(), None)]);
        d.scan(true).unwrap();
        assert!(d.reload().is_some(), "a forced scan always reloads");
    }

    #[test]
    fn missing_directory_is_an_error() {
        let e = InstanceDir::open(Path::new("/nonexistent/instances"))
            .err()
            .unwrap();
        assert!(e.contains("/nonexistent/instances"), "{e}");
    }

    #[test]
    fn stored_password_is_written_atomically() {
        let dir = Dir::new("store");
        let path = dir.0.join("a.toml");
        fs::write(&path, instance("a")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let mut d = InstanceDir::open(&dir.0).unwrap();
        d.reload();
        d.store(StoreRequest {
            instance_uuid: "a".into(),
            password: "pw\"1".into(),
        });
        let text = fs::read_to_string(&path).unwrap();
        let data = parse_instance(&text, Format::Toml).unwrap();
        assert_eq!(data.password.as_deref(), Some("pw\"1"));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert!(!dir.0.join(".a.toml.tmp").exists());
        d.scan(false).unwrap();
        assert!(d.reload().is_none(), "our own write needs no reload");
    }

    #[test]
    fn unsaved_password_survives_rescans() {
        let dir = Dir::new("unsaved");
        fs::write(dir.0.join("a.toml"), instance("a")).unwrap();
        let mut d = InstanceDir::open(&dir.0).unwrap();
        d.reload();
        // The file now holds another instance: the password cannot go there.
        fs::write(dir.0.join("a.toml"), instance("z")).unwrap();
        d.store(StoreRequest {
            instance_uuid: "a".into(),
            password: "pw".into(),
        });
        assert!(!fs::read_to_string(dir.0.join("a.toml"))
            .unwrap()
            .contains("pw"));
        d.scan(false).unwrap();
        assert_eq!(uuids(d.reload()), [("z".into(), None)]);
        // Back: the password is written now.
        fs::write(dir.0.join("a.toml"), instance("a")).unwrap();
        d.scan(false).unwrap();
        assert_eq!(uuids(d.reload()), [("a".into(), Some("pw".into()))]);
        let text = fs::read_to_string(dir.0.join("a.toml")).unwrap();
        assert!(text.starts_with("password = \"pw\""), "{text}");
        assert!(d.unsaved.is_empty());
    }
}
