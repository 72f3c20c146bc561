//! `mdproxy server`: reads the secret and the instance directory, binds the listeners and runs
//! the metadata server on one event loop. The loop's hooks keep the instances current (a
//! rescan every `--rescan-interval`) and hand posted passwords to the writer of the state
//! directory (`passwords.rs`); the instance files are only read.
//!
//! SIGHUP reads the whole configuration again — the command line as it was given, the TOML
//! file it names, the secret and token key files, every instance file — and hands the loop
//! what applies in place ([`ServerReload`]): the secret (the previous one still verifies for
//! `--secret-grace`), the token keys, the instances, the IMDSv2 mode, the limits and timeouts
//! (from the next connection) and the log level. A file with an error — an instance file too,
//! which a rescan would log and skip — refuses the reload (with its `FILE:LINE` where the
//! parser gives one) and the running configuration stays; a changed setting that takes a
//! restart is logged as such and kept. One loop, so one read per SIGHUP.
//!
//! One loop, not several workers: posted passwords live in the memory of the loop's endpoint
//! (IMDSv2 tokens are stateless: any process with the key checks them).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;

use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mdproxy_core::config::{EndpointConfig, Reload, Role, ServerReload};
use mdproxy_core::metadata::{
    parse_instance, Date, Entropy, Format, ImdsV2, InstanceData, InstanceError, ServerConfig,
    StoreRequest, Tokens,
};
use mdproxy_core::sign::Signer;
use mdproxy_core::tls::EndpointTls;

use crate::entropy::OsEntropy;
use crate::listen::bind_tcp;
use crate::passwords::{StateDir, Writer};
use crate::runtime::{Listener, Loop, Options};
use crate::secret::read_secret;
use crate::serve::{self, Serve, Work};
use crate::{cli, os, reload, tls, token_key, Failure};

/// The server, its secret, instances and state directory read.
pub struct Server {
    args: cli::Server,
    endpoint: EndpointConfig,
    options: Options,
}

impl Serve for Server {
    type Args = cli::Server;
    type Bound = Vec<Listener>;
    const NAME: &'static str = "server";

    /// Reads the secret, the instance directory and the state directory (an unreadable one
    /// is a configuration error; bad files are only logged).
    fn load(args: cli::Server) -> Result<Server, Failure> {
        let signer = match (&args.shared_secret_file, args.direct) {
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
        let accept = match &args.tls {
            Some(tls) => Some(tls::server(tls).map_err(Failure::Config)?),
            None => None,
        };
        let entropy: Arc<dyn Entropy> = OsEntropy::new().map_err(Failure::System)?;
        let tokens = token_key::tokens(args.token_key_file.as_deref(), entropy.as_ref())
            .map_err(Failure::Config)?;
        let (state, passwords) = StateDir::load(&args.state_dir).map_err(Failure::Config)?;
        let instances = InstanceDir::open(&args.instances, passwords).map_err(Failure::Config)?;
        let role = Role::Server(ServerConfig {
            signer,
            direct: args.direct,
            imdsv2: args.imdsv2,
            dhcp_domain: args.dhcp_domain.clone(),
            today: os::utc_today(),
            entropy: entropy.clone(),
            tokens: tokens.clone(),
        });
        let tls = EndpointTls {
            accept,
            upstream: None,
        };
        let running = Running {
            argv: cli::started_with(),
            restart_only: restart_only(&args),
            debug: args.process.debug,
            random_tokens: args.token_key_file.is_none().then_some(tokens),
            entropy: entropy.clone(),
        };
        let endpoint = serve::endpoint(role, &args.endpoint, tls);
        let options = instances.options(
            Writer::new(state),
            running,
            args.rescan_interval,
            args.drain_timeout,
        );
        Ok(Server {
            args,
            endpoint,
            options,
        })
    }

    fn bind(&self) -> Result<Vec<Listener>, Failure> {
        bind_tcp(&self.args.listen)
    }

    fn describe(&self, listeners: &Vec<Listener>) -> String {
        let a = &self.args;
        let addrs: Vec<String> = listeners.iter().map(ToString::to_string).collect();
        let identity = match a.direct {
            true => "by client address (--direct)",
            false => "by signed X-Instance-ID",
        };
        let imdsv2 = match a.imdsv2 {
            ImdsV2::Off => "off",
            ImdsV2::Optional => "optional",
            ImdsV2::Required => "required",
        };
        let https = match &a.tls {
            None => String::new(),
            Some(t) if t.client_ca.is_some() => {
                format!(
                    " (HTTPS, {}, client certificates required)",
                    t.cert.display()
                )
            }
            Some(t) => format!(" (HTTPS, {})", t.cert.display()),
        };
        format!(
            "server listening on {}{https}, instances in {} (rescanned every {:?}), passwords \
             in {}, identity {identity}, IMDSv2 {imdsv2}",
            addrs.join(", "),
            a.instances.display(),
            a.rescan_interval,
            a.state_dir.display(),
        )
    }

    fn work(self, listeners: Vec<Listener>) -> Result<Work, Failure> {
        Ok(Work::one(self.endpoint, listeners, self.options))
    }
}

impl Server {
    /// The endpoint and its hooks, for a loop of the demo's.
    pub(crate) fn into_loop(self, listeners: Vec<Listener>) -> Loop {
        Loop {
            cfg: self.endpoint,
            listeners,
            options: self.options,
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
    /// What is served: `None` when the file has an error and no earlier version of it was good.
    data: Option<InstanceData>,
    /// The file's error, if it has one (logged once per change).
    error: Option<String>,
    /// Modified within [`RACY`] of when it was read: its stamp cannot be trusted yet.
    racy: bool,
}

impl InstanceFile {
    /// `path` as read anew (`read`); `old` is what it held before. Logs what changed
    /// (everything if `log_all`), and says whether anything did.
    fn new(
        path: &Path,
        meta: &Metadata,
        read: Result<InstanceData, FileError>,
        old: Option<InstanceFile>,
        log_all: bool,
    ) -> (Self, bool) {
        let racy = meta
            .modified()
            .map_or(true, |t| t.elapsed().map_or(true, |age| age < RACY));
        let (old_data, old_error) = old.map_or((None, None), |f| (f.data, f.error));
        let shown = path.display();
        let (data, error) = match read {
            Ok(data) => (Some(data), None),
            Err(e) => (old_data.clone(), Some(e.to_string())),
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
            data,
            error,
            racy,
        };
        (file, changed)
    }
}

/// One instance file of the directory, as listed (not read yet).
struct Listed {
    name: OsString,
    path: PathBuf,
    format: Format,
    meta: Metadata,
}

/// The instance files of `--instances DIR` as last read, for one loop: its tick rescans the
/// directory, SIGHUP re-reads every file; with the passwords instances posted, which are
/// served with them.
pub(crate) struct InstanceDir {
    dir: PathBuf,
    /// By file name.
    files: BTreeMap<OsString, InstanceFile>,
    today: Date,
    /// Bumped whenever what should be served changed.
    generation: u64,
    /// The generation the loop's endpoint has.
    delivered: u64,
    /// Passwords instances posted (loaded from the state directory, or accepted since), by
    /// instance: a file's own `password` wins over them.
    passwords: BTreeMap<String, String>,
    /// The last failure to read the directory, so that it is logged once.
    dir_error: Option<String>,
}

impl InstanceDir {
    /// Reads every instance file of `dir`, which must be readable, to serve them with
    /// `passwords`.
    pub(crate) fn open(
        dir: &Path,
        passwords: BTreeMap<String, String>,
    ) -> Result<InstanceDir, String> {
        let mut d = InstanceDir {
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
            today: os::utc_today(),
            generation: 1,
            delivered: 0,
            passwords,
            dir_error: None,
        };
        d.scan(true)
            .map_err(|e| format!("--instances {}: {e}", dir.display()))?;
        Ok(d)
    }

    /// The loop's hooks around this directory; the tick's first call (at the loop's start)
    /// hands the endpoint its instances. A posted password is remembered here (the endpoint
    /// serves it already) and handed to `writer`, so the loop never waits for the disk.
    pub(crate) fn options(
        self,
        mut writer: Writer,
        running: Running,
        rescan: Duration,
        drain_timeout: Duration,
    ) -> Options {
        let shared = Arc::new(Mutex::new(self));
        let (tick, hangup, store) = (shared.clone(), shared.clone(), shared);
        Options {
            drain_timeout,
            on_hangup: Box::new(move || {
                let mut d = hangup.lock().unwrap_or_else(PoisonError::into_inner);
                match running.read() {
                    Ok(Some(mut r)) => match d.read_all() {
                        Ok(()) => {
                            (r.instances, r.today) = d.instances();
                            log::info!(
                                "SIGHUP: configuration read again: shared secret, token keys, \
                                 instances, IMDSv2, limits and timeouts applied"
                            );
                            Some(Reload::Server(Box::new(r)))
                        }
                        Err(e) => {
                            log::error!("SIGHUP: {e}; the running configuration stays");
                            None
                        }
                    },
                    // Not the server's own command line (the demo's): its instances only.
                    Ok(None) => {
                        log::info!("SIGHUP: re-reading the instance files");
                        d.rescan(true);
                        d.reload()
                    }
                    Err(e) => {
                        log::error!("SIGHUP: {e}; the running configuration stays");
                        None
                    }
                }
            }),
            on_store: Box::new(move |req| {
                store
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remember(&req);
                writer.send(req);
            }),
            tick: Some((
                rescan,
                Box::new(move || {
                    let mut d = tick.lock().unwrap_or_else(PoisonError::into_inner);
                    d.rescan(false);
                    d.reload()
                }),
            )),
            ..Options::default()
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
        let (instances, today) = self.instances();
        Some(Reload::Instances(instances, today))
    }

    /// Everything to serve now, and today's date, as delivered to the endpoint.
    fn instances(&mut self) -> (Vec<InstanceData>, Date) {
        self.delivered = self.generation;
        let mut instances: Vec<InstanceData> =
            self.files.values().filter_map(|f| f.data.clone()).collect();
        for data in &mut instances {
            if data.password.as_deref().is_none_or(str::is_empty) {
                data.password = self.passwords.get(&data.uuid).cloned();
            }
        }
        (instances, self.today)
    }

    /// [`scan`](Self::scan) from a hook: a directory that cannot be read is logged (once, until
    /// it can be read again) and the instances read before keep serving.
    fn rescan(&mut self, force: bool) {
        match self.scan(force) {
            Ok(()) => self.dir_error = None,
            Err(msg) => self.dir_failed(msg),
        }
    }

    /// The directory could not be read (`msg`): logged once, until it can be read again.
    fn dir_failed(&mut self, msg: String) {
        if self.dir_error.as_ref() != Some(&msg) {
            log::error!(
                "{}: {msg}; serving the instances read before",
                self.dir.display()
            );
            self.dir_error = Some(msg);
        }
    }

    /// Reads the files that changed (all of them if `force`) and forgets the removed ones.
    /// Errors are the directory's own; a bad file is logged and skipped.
    fn scan(&mut self, force: bool) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        let mut changed = force;
        for f in self.list()? {
            seen.insert(f.name.clone());
            let known = self.files.get(&f.name);
            if !force && known.is_some_and(|k| k.stamp == Stamp::of(&f.meta) && !k.racy) {
                continue;
            }
            let read = read_instance(&f.path, f.format);
            let old = self.files.remove(&f.name);
            let (file, file_changed) = InstanceFile::new(&f.path, &f.meta, read, old, force);
            self.files.insert(f.name, file);
            changed |= file_changed;
        }
        changed |= self.forget_all_but(&seen);
        if changed {
            self.generation += 1;
        }
        Ok(())
    }

    /// SIGHUP's read: every file read again, all or nothing. The first file with an error
    /// (`FILE:LINE: message`) refuses it and what was read before stays. A directory that
    /// cannot be read is logged and keeps the instances served so far, as at a rescan.
    fn read_all(&mut self) -> Result<(), String> {
        let listed = match self.list() {
            Ok(listed) => listed,
            Err(msg) => {
                self.dir_failed(msg);
                return Ok(());
            }
        };
        self.dir_error = None;
        let mut read = Vec::with_capacity(listed.len());
        for f in listed {
            let data = read_instance(&f.path, f.format).map_err(|e| e.located(&f.path))?;
            read.push((f, data));
        }
        let mut seen = BTreeSet::new();
        for (f, data) in read {
            seen.insert(f.name.clone());
            let old = self.files.remove(&f.name);
            let (file, _) = InstanceFile::new(&f.path, &f.meta, Ok(data), old, true);
            self.files.insert(f.name, file);
        }
        self.forget_all_but(&seen);
        self.generation += 1;
        Ok(())
    }

    /// The instance files the directory holds now.
    fn list(&self) -> Result<Vec<Listed>, String> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| format!("cannot read the instance directory: {e}"))?;
        let mut listed = Vec::new();
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
            if meta.is_file() {
                listed.push(Listed {
                    name,
                    path,
                    format,
                    meta,
                });
            }
        }
        Ok(listed)
    }

    /// Forgets (and logs) the files not in `seen`; says whether there were any.
    fn forget_all_but(&mut self, seen: &BTreeSet<OsString>) -> bool {
        let (dir, mut removed) = (&self.dir, false);
        self.files.retain(|name, _| {
            let keep = seen.contains(name);
            if !keep {
                log::info!("{}: removed", dir.join(name).display());
                removed = true;
            }
            keep
        });
        removed
    }

    /// A password the endpoint accepted (and serves): served again after every reload.
    fn remember(&mut self, req: &StoreRequest) {
        let (uuid, password) = (&req.instance_uuid, &req.password);
        self.passwords.insert(uuid.clone(), password.clone());
    }
}

/// What a SIGHUP compares with or keeps from the running configuration.
pub(crate) struct Running {
    /// The command line read again.
    argv: Vec<OsString>,
    restart_only: Vec<(&'static str, String)>,
    debug: bool,
    /// Without a key file, this process's random token key: kept, so that a reload does not
    /// invalidate every token issued.
    random_tokens: Option<Tokens>,
    entropy: Arc<dyn Entropy>,
}

impl Running {
    /// Parses the command line again and reads the secret and token key files; the instances
    /// are left for the caller. `None` when the command line is not a server's.
    fn read(&self) -> Result<Option<ServerReload>, String> {
        let args = match cli::parse_args(self.argv.clone())? {
            cli::Command::Server(args) => *args,
            _ => return Ok(None),
        };
        let signer = match (&args.shared_secret_file, args.direct) {
            (Some(path), false) => Some(Signer::new(&read_secret(path, "shared secret")?)),
            _ => None,
        };
        let tokens = match (&args.token_key_file, &self.random_tokens) {
            (None, Some(kept)) => kept.clone(),
            (path, _) => token_key::tokens(path.as_deref(), self.entropy.as_ref())?,
        };
        reload::warn_restart_only(&self.restart_only, restart_only(&args));
        reload::apply_debug(self.debug, args.process.debug);
        Ok(Some(ServerReload {
            signer,
            secret_grace: args.secret_grace,
            imdsv2: args.imdsv2,
            tokens,
            instances: Vec::new(),
            today: os::utc_today(),
            limits: args.endpoint.limits,
            timeouts: args.endpoint.timeouts,
        }))
    }
}

/// The settings a running server cannot take in place, each with a text to compare.
fn restart_only(a: &cli::Server) -> Vec<(&'static str, String)> {
    vec![
        ("--listen", format!("{:?}", a.listen)),
        (
            "--tls-cert/--tls-key/--tls-client-ca",
            format!("{:?}", a.tls),
        ),
        ("--instances", format!("{:?}", a.instances)),
        ("--state-dir", format!("{:?}", a.state_dir)),
        ("--rescan-interval", format!("{:?}", a.rescan_interval)),
        ("--direct", a.direct.to_string()),
        ("--dhcp-domain", a.dhcp_domain.clone()),
        (
            "--max-conns/--max-conns-per-ip",
            format!("{:?}", a.endpoint.conns),
        ),
        ("--drain-timeout", format!("{:?}", a.drain_timeout)),
        reload::process_settings(&a.process),
    ]
}

/// Reads and parses one instance file.
fn read_instance(path: &Path, format: Format) -> Result<InstanceData, FileError> {
    let text = fs::read_to_string(path).map_err(FileError::Read)?;
    parse_instance(&text, format).map_err(FileError::Parse)
}

/// Why an instance file is not served. Displayed as a rescan logs it after the file's name
/// (``line 4, column 1: unknown field `hostnme`, …``).
#[derive(Debug)]
enum FileError {
    Read(std::io::Error),
    Parse(InstanceError),
}

impl FileError {
    /// With the file's place in front: `FILE:LINE: message` where the parser gives a line,
    /// as the configuration's own errors read.
    fn located(&self, path: &Path) -> String {
        let shown = path.display();
        match self {
            FileError::Parse(InstanceError::Syntax {
                line: Some(line),
                column,
                message,
            }) => match column {
                Some(column) => format!("{shown}:{line}: column {column}: {message}"),
                None => format!("{shown}:{line}: {message}"),
            },
            e => format!("{shown}: {e}"),
        }
    }
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::Read(e) => write!(f, "cannot read: {e}"),
            FileError::Parse(e) => e.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_dir::Dir;

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
        let mut d = InstanceDir::open(&dir.0, BTreeMap::new()).unwrap();
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
    fn a_hangup_reads_every_file_or_none() {
        let dir = Dir::new("hangup");
        let a = dir.0.join("a.toml");
        fs::write(&a, instance("a")).unwrap();
        let mut d = InstanceDir::open(&dir.0, BTreeMap::new()).unwrap();
        assert_eq!(uuids(d.reload()), [("a".into(), None)]);
        fs::write(dir.0.join("b.toml"), instance("b")).unwrap();
        fs::write(&a, "uuid = \"a\"\nnope = 1\n").unwrap();
        let e = d.read_all().unwrap_err();
        assert!(e.starts_with(&format!("{}:2: ", a.display())), "{e}");
        assert!(e.contains("nope"), "{e}");
        assert!(d.reload().is_none(), "b.toml taken from a refused read");
        fs::write(&a, instance("a2")).unwrap();
        d.read_all().unwrap();
        assert_eq!(uuids(d.reload()), [("a2".into(), None), ("b".into(), None)]);
        fs::write(dir.0.join("c.json"), "[]").unwrap();
        let e = d.read_all().unwrap_err();
        assert!(e.starts_with(&format!("{}: ", dir.0.join("c.json").display())));
    }

    #[test]
    fn missing_directory_is_an_error() {
        let e = InstanceDir::open(Path::new("/nonexistent/instances"), BTreeMap::new())
            .err()
            .unwrap();
        assert!(e.contains("/nonexistent/instances"), "{e}");
    }

    #[test]
    fn posted_passwords_are_served_over_rescans_and_no_file_is_written() {
        let dir = Dir::new("passwords");
        let a = dir.0.join("a.toml");
        fs::write(&a, instance("a")).unwrap();
        let own = format!("{}password = \"own\"\n", instance("b"));
        fs::write(dir.0.join("b.toml"), &own).unwrap();
        let saved = [("c", "saved"), ("b", "posted")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut d = InstanceDir::open(&dir.0, saved).unwrap();
        assert_eq!(
            uuids(d.reload()),
            [("a".into(), None), ("b".into(), Some("own".into()))]
        );
        d.remember(&StoreRequest {
            instance_uuid: "a".into(),
            password: "pw".into(),
        });
        fs::write(dir.0.join("c.toml"), instance("c")).unwrap();
        d.scan(false).unwrap();
        assert_eq!(
            uuids(d.reload()),
            [
                ("a".into(), Some("pw".into())),
                ("b".into(), Some("own".into())),
                ("c".into(), Some("saved".into())),
            ]
        );
        assert_eq!(fs::read_to_string(&a).unwrap(), instance("a"));
        let mut names: Vec<_> = fs::read_dir(&dir.0)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["a.toml", "b.toml", "c.toml"]);
    }

    #[test]
    fn every_restart_only_setting_has_a_name_of_its_own_and_a_flag_changes_it() {
        let parse = |extra: &str| {
            let argv = ["mdproxy", "server", "--instances=/i", "--direct", extra];
            match cli::parse_args(argv.map(OsString::from).to_vec()) {
                Ok(cli::Command::Server(args)) => restart_only(&args),
                other => panic!("{other:?}"),
            }
        };
        let a = parse("--listen=127.0.0.1:1");
        let names: BTreeSet<&str> = a.iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), a.len(), "a name twice");
        let b = parse("--listen=127.0.0.1:2");
        let changed: Vec<&str> = (a.iter().zip(&b))
            .filter(|(x, y)| x.1 != y.1)
            .map(|(x, _)| x.0)
            .collect();
        assert_eq!(changed, ["--listen"]);
        assert!(
            parse("--secret-grace=5") == parse("--secret-grace=6"),
            "applies in place"
        );
    }
}
