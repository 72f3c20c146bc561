//! The watcher of `--watch-dir`: a thread that reads the directory every `--rescan-interval`,
//! and for each file `NAME.toml` that appeared, changed or went, binds its listeners in its
//! namespace and queues them for the loop, or queues their removal. A scan rather than
//! inotify: one readdir and one stat per file a second is nothing next to serving, a scan
//! cannot lose events (inotify's queue overflows, a recreated directory drops its watch), and
//! it needs no FFI of its own. A file is read again only when its size, inode or modification
//! time changed.
//!
//! A file written by `mdproxy node-register` names its process (`owner_pid`): once that process
//! is gone (Neutron killed it with SIGKILL, which it cannot catch), the file is stale, and it
//! is removed and its namespace no longer served.
//!
//! A file with an error is logged once, with its path, and ignored until it changes; a file
//! whose listeners cannot be bound (its namespace is not there yet, the port is taken) is
//! logged once and tried again at every scan, so a namespace made after its file is served as
//! soon as it exists.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, SystemTime};

use mdproxy_core::listener::{ListenerId, ScopedListener};
use mdproxy_core::scope::Scope;

use super::listeners::{AddError, Listeners, Stopped};
use crate::cli::{self, Unit};

/// What tells a changed file from an unchanged one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
}

#[derive(Debug)]
enum State {
    /// Its listeners are the loop's, under this id; `owner`: the registering process.
    Serving {
        id: ListenerId,
        owner: Option<(u32, Scope)>,
    },
    /// The file has an error (logged).
    Bad,
    /// Its listeners could not be bound (logged once); tried again at every scan.
    Unbound(Unit),
}

pub struct Watcher {
    dir: PathBuf,
    listeners: Listeners,
    max_conns_per_network: usize,
    files: BTreeMap<PathBuf, (Stamp, State)>,
    /// The directory could not be read at the last scan (logged once).
    unreadable: bool,
}

impl Watcher {
    pub fn new(dir: PathBuf, listeners: Listeners, max_conns_per_network: usize) -> Watcher {
        Watcher {
            dir,
            listeners,
            max_conns_per_network,
            files: BTreeMap::new(),
            unreadable: false,
        }
    }

    /// Scans now and then every `interval`, on a thread of its own, until the loop stops.
    pub fn spawn(mut self, interval: Duration) -> io::Result<()> {
        thread::Builder::new()
            .name("node-watch".to_owned())
            .spawn(move || {
                while self.scan().is_ok() {
                    thread::sleep(interval);
                }
                log::debug!("the node's loop has stopped: no more scans");
            })
            .map(drop)
    }

    fn scan(&mut self) -> Result<(), Stopped> {
        let Some(now) = self.read_dir() else {
            return Ok(());
        };
        let gone: Vec<PathBuf> = (self.files.keys())
            .filter(|p| !now.contains_key(*p))
            .cloned()
            .collect();
        for path in gone {
            if let Some((_, state)) = self.files.remove(&path) {
                log::info!("{}: removed", path.display());
                self.stop(state)?;
            }
        }
        for (path, stamp) in now {
            let state = match self.files.remove(&path) {
                Some((old, state)) if old == stamp => match state {
                    State::Unbound(unit) => self.serve(&path, unit, false)?,
                    State::Serving {
                        owner: Some((pid, scope)),
                        ..
                    } if !owner_alive(pid, &scope) => {
                        self.stop(state)?;
                        forget_stale(&path, pid);
                        continue;
                    }
                    state => state,
                },
                Some((_, state)) => {
                    log::info!("{}: changed", path.display());
                    self.stop(state)?;
                    self.load(&path)?
                }
                None => self.load(&path)?,
            };
            self.files.insert(path, (stamp, state));
        }
        Ok(())
    }

    /// The served files of the directory (`*.toml`, not hidden) and their stamps; `None` when
    /// it cannot be read (what is served stays served).
    fn read_dir(&mut self) -> Option<BTreeMap<PathBuf, Stamp>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                if !std::mem::replace(&mut self.unreadable, true) {
                    log::warn!(
                        "cannot read {}: {e}; serving what was there",
                        self.dir.display()
                    );
                }
                return None;
            }
        };
        if std::mem::take(&mut self.unreadable) {
            log::info!("{} is readable again", self.dir.display());
        }
        let mut files = BTreeMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".toml") {
                continue;
            }
            // Follows a symbolic link: an operator may link a file kept elsewhere.
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            if meta.is_file() {
                let stamp = Stamp {
                    modified: meta.modified().ok(),
                    len: meta.len(),
                    ino: meta.ino(),
                };
                files.insert(path, stamp);
            }
        }
        Some(files)
    }

    /// Reads and serves a new or changed file.
    fn load(&mut self, path: &Path) -> Result<State, Stopped> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                log::warn!("{}: cannot read it: {e}; ignored", path.display());
                return Ok(State::Bad);
            }
        };
        match cli::parse_unit(&text) {
            Ok(Unit {
                owner_pid: Some(pid),
                scope,
                ..
            }) if !owner_alive(pid, &scope) => {
                forget_stale(path, pid);
                Ok(State::Bad)
            }
            Ok(unit) => self.serve(path, unit, true),
            Err(e) => {
                log::warn!("{}: {e}; ignored until it changes", path.display());
                Ok(State::Bad)
            }
        }
    }

    /// Binds `unit`'s listeners and hands them to the loop; `first`: the first try for this
    /// version of the file (a failure is logged as a warning only then).
    fn serve(&mut self, path: &Path, unit: Unit, first: bool) -> Result<State, Stopped> {
        let scope = ScopedListener {
            scope: unit.scope,
            rate_limit: unit.rate_limit,
            max_conns: unit.max_conns.unwrap_or(self.max_conns_per_network),
            imdsv2: unit.imdsv2,
        };
        let namespace = unit.namespace.as_deref();
        let (id, addrs) = match self.listeners.add(namespace, &unit.listen, scope) {
            Ok(added) => added,
            Err(AddError::Stopped) => return Err(Stopped),
            Err(AddError::Bind(e)) if first => {
                log::warn!("{}: {e}; trying again at every scan", path.display());
                return Ok(State::Unbound(unit));
            }
            Err(AddError::Bind(e)) => {
                log::debug!("{}: {e}", path.display());
                return Ok(State::Unbound(unit));
            }
        };
        let ns = unit
            .namespace
            .as_deref()
            .unwrap_or("the node's own namespace");
        log::info!(
            "{}: serving {} in {ns} on {}",
            path.display(),
            describe(&unit.scope),
            addrs.join(", ")
        );
        let owner = unit.owner_pid.map(|pid| (pid, unit.scope));
        Ok(State::Serving { id, owner })
    }

    fn stop(&mut self, state: State) -> Result<(), Stopped> {
        match state {
            State::Serving { id, .. } => self.listeners.remove(id),
            State::Bad | State::Unbound(_) => Ok(()),
        }
    }
}

/// Whether the registering process `pid` still runs: its command line names the UUID of
/// `scope` (as Neutron's process monitor checks), so a reused pid does not count.
fn owner_alive(pid: u32, scope: &Scope) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let id = scope.id().to_string();
    cmdline.windows(id.len()).any(|w| w == id.as_bytes())
}

/// A registration whose process is gone (killed before it could remove its file): the file
/// is removed, as that process would have.
fn forget_stale(path: &Path, pid: u32) {
    log::warn!(
        "{}: its process {pid} is gone; removing the stale registration",
        path.display()
    );
    if let Err(e) = fs::remove_file(path) {
        log::warn!("cannot remove {}: {e}", path.display());
    }
}

/// `router R`, `network N`, `OVN network N`, for the log.
fn describe(scope: &Scope) -> String {
    match scope {
        Scope::Router(id) => format!("router {id}"),
        Scope::Network(id) => format!("network {id}"),
        Scope::OvnNetwork(id) => format!("OVN network {id}"),
    }
}
