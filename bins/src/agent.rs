//! `mdproxy agent`: reads the secret and the static map, resolves the metadata server, claims
//! and binds the Unix socket, and runs the agent on one or more workers. SIGHUP re-reads the
//! static map.

use std::fs::{self, Permissions};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use mdproxy_core::agent::StaticMap;
use mdproxy_core::endpoint::{AgentConfig, Backend, EndpointConfig, Reload, Role, Target};
use mdproxy_core::http::Limits;
use mdproxy_core::sign::Signer;
use mdproxy_mio::{Listener, RunOptions};

use crate::{cli, os, start, Failure};

pub fn serve(cfg: cli::Agent) -> Result<(), Failure> {
    let secret = read_secret(&cfg.shared_secret_file).map_err(Failure::Config)?;
    let map = load_map(&cfg.static_map).map_err(Failure::Config)?;
    let metadata = resolve(&cfg.metadata).map_err(Failure::Config)?;
    let path = &cfg.listen_socket;
    let ((listener, _socket_file), _pid_file) = start(&cfg.process, || {
        let system = |what: &str, e: std::io::Error| {
            Failure::System(format!("cannot {what} {}: {e}", path.display()))
        };
        os::claim_socket_path(path).map_err(Failure::System)?;
        let listener = Listener::bind_unix(path).map_err(|e| system("listen on", e))?;
        // From here on the file is ours: removed however we leave.
        let file = os::SocketFile::new(path);
        listener
            .set_backlog(cfg.backlog)
            .map_err(|e| system("set the backlog of", e))?;
        if let Some(mode) = cfg.socket_mode {
            fs::set_permissions(path, Permissions::from_mode(mode.bits()))
                .map_err(|e| system("set the mode of", e))?;
        }
        Ok((listener, file))
    })?;
    log::info!(
        "agent listening on {listener}, metadata server {} ({metadata}), static map {} with {} \
         ports, {} worker(s) (mio runtime)",
        cfg.metadata,
        cfg.static_map.display(),
        map.ports(),
        cfg.workers,
    );
    let endpoint = EndpointConfig {
        role: Role::Agent(AgentConfig {
            metadata: Target::Tcp(metadata),
            signer: Signer::new(&secret),
            backend: Backend::Static(map),
            cache_capacity: cfg.cache_size,
            cache_ttl: cfg.cache_ttl,
            negative_ttl: cfg.negative_ttl,
        }),
        limits: Limits::default(),
        timeouts: cfg.timeouts,
    };
    drop(secret);
    let reloader = MapReloader::new(cfg.static_map.clone());
    let options = || RunOptions {
        drain_timeout: cfg.drain_timeout,
        on_hangup: reloader.hook(),
    };
    mdproxy_mio::run_workers(cfg.workers, endpoint, vec![listener], options)
        .map_err(|e| Failure::System(format!("event loop failed: {e}")))?;
    log::info!("agent stopped");
    Ok(())
}

/// The shared secret: the file's bytes without one trailing newline (`\n` or `\r\n`). Never
/// logged.
fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let mut secret =
        fs::read(path).map_err(|e| format!("cannot read shared secret file {shown}: {e}"))?;
    if secret.ends_with(b"\n") {
        secret.pop();
        if secret.ends_with(b"\r") {
            secret.pop();
        }
    }
    let meta = fs::metadata(path);
    if meta.is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o004 != 0) {
        log::warn!("shared secret file {shown} is readable by every user");
    }
    Ok(secret)
}

/// Reads and parses a static map; errors read `FILE:LINE: message`.
fn load_map(path: &Path) -> Result<StaticMap, String> {
    let shown = path.display();
    let text =
        fs::read_to_string(path).map_err(|e| format!("cannot read static map {shown}: {e}"))?;
    StaticMap::parse(&text).map_err(|e| match e.line {
        0 => format!("{shown}: {}", e.message),
        line => format!("{shown}:{line}: {}", e.message),
    })
}

/// The metadata server's address, resolved once (the core never resolves names).
fn resolve(url: &cli::MetadataUrl) -> Result<SocketAddr, String> {
    let mut addrs = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("--metadata-url {url}: cannot resolve {}: {e}", url.host))?;
    addrs
        .next()
        .ok_or_else(|| format!("--metadata-url {url}: {} has no address", url.host))
}

/// Re-reads the static map on SIGHUP, for every worker. Each worker calls its own hook once
/// per SIGHUP; the first to get there reads the file and the others take its result, so one
/// SIGHUP means one read and one log line whatever the number of workers.
struct MapReloader {
    path: PathBuf,
    /// The number of the last SIGHUP read, and the map it gave (`None`: the file was bad).
    last: Arc<Mutex<(u64, Option<StaticMap>)>>,
}

impl MapReloader {
    fn new(path: PathBuf) -> MapReloader {
        MapReloader {
            path,
            last: Arc::new(Mutex::new((0, None))),
        }
    }

    fn hook(&self) -> Box<dyn FnMut() -> Option<Reload> + Send> {
        let (path, last) = (self.path.clone(), self.last.clone());
        let mut hangups = 0u64;
        Box::new(move || {
            hangups += 1;
            let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
            if last.0 < hangups {
                let map = match load_map(&path) {
                    Ok(map) => Some(map),
                    Err(e) => {
                        log::error!("SIGHUP: {e}; keeping the previous static map");
                        None
                    }
                };
                *last = (hangups, map);
            }
            last.1.clone().map(Reload::StaticMap)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, contents: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mdp-agent-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn secret_loses_one_trailing_newline_only() {
        assert_eq!(read_secret(&temp("s1", "s3cr3t\n")).unwrap(), b"s3cr3t");
        assert_eq!(read_secret(&temp("s2", "s3cr3t\r\n")).unwrap(), b"s3cr3t");
        assert_eq!(read_secret(&temp("s3", "s3cr3t\n\n")).unwrap(), b"s3cr3t\n");
        assert_eq!(read_secret(&temp("s4", " s ")).unwrap(), b" s ");
        assert_eq!(read_secret(Path::new("/dev/null")).unwrap(), b"");
        assert!(read_secret(Path::new("/nonexistent/secret")).is_err());
    }

    #[test]
    fn map_errors_name_file_and_line() {
        let path = temp("bad.toml", "[[router]]\nid = \"r\"\nbogus = 1\n");
        let e = load_map(&path).unwrap_err();
        assert!(e.starts_with(&format!("{}:3: ", path.display())), "{e}");
    }

    #[test]
    fn workers_share_one_read_per_hangup() {
        let path = temp("m.toml", "");
        let reloader = MapReloader::new(path.clone());
        let (mut a, mut b) = (reloader.hook(), reloader.hook());
        assert!(a().is_some());
        fs::write(&path, "[[router]]\nid = \"bad\"\n").unwrap();
        // b's first SIGHUP is the one `a` already read: it takes that map, not the new file.
        assert!(b().is_some());
        assert!(a().is_none() && b().is_none());
    }
}
