//! The local chassis name, as `neutron-ovn-metadata-agent` finds it: `external_ids:system-id`
//! of the local Open_vSwitch database's one `Open_vSwitch` row, read once at startup over the
//! core's OVSDB session (the same client the Southbound monitor uses), with blocking sockets:
//! the agent cannot start without it, so there is nothing else to do meanwhile.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use mdproxy_core::lookup::ClientAction;
use mdproxy_core::ovsdb::remote::parse_remotes;
use mdproxy_core::ovsdb::session::{Session, SessionConfig, SessionEvent};
use mdproxy_core::ovsdb::{RowOp, TableMonitor};
use mdproxy_core::socket::{ConnectError, Input, Target};

/// How long the local database may take to answer.
const DEADLINE: Duration = Duration::from_secs(10);

/// A connected socket of either kind.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn connect(target: &Target) -> io::Result<Stream> {
        let stream = match target {
            Target::Tcp(addr) => Stream::Tcp(TcpStream::connect_timeout(addr, DEADLINE)?),
            Target::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
        };
        // Short reads, so the session's timers (and the deadline) are looked at.
        let tick = Some(Duration::from_millis(100));
        match &stream {
            Stream::Tcp(s) => s.set_read_timeout(tick)?,
            Stream::Unix(s) => s.set_read_timeout(tick)?,
        }
        Ok(stream)
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
}

/// `external_ids:system-id` of the Open_vSwitch database at `remote` (`unix:PATH` or
/// `tcp:IP:PORT`).
pub fn read(remote: &str) -> Result<String, String> {
    let remotes = parse_remotes(remote).map_err(|e| format!("--ovs-db: {e}"))?;
    let start = Instant::now();
    let mut session = Session::new(
        SessionConfig {
            remotes,
            db: "Open_vSwitch".into(),
            monitors: vec![TableMonitor {
                table: "Open_vSwitch".into(),
                columns: vec!["external_ids".into()],
                conditions: None,
            }],
            probe_interval: DEADLINE,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            seed: 0,
            max_message: 1 << 20,
            tls: None,
        },
        start,
    );
    let mut socket: Option<(mdproxy_core::lookup::ReqId, Stream)> = None;
    let mut last_error = String::from("no answer");
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        if now.duration_since(start) > DEADLINE {
            return Err(format!(
                "the local Open_vSwitch database at {remote} did not answer within {DEADLINE:?} \
                 ({last_error}); give --chassis NAME"
            ));
        }
        while let Some(action) = session.poll_action() {
            match action {
                ClientAction::Connect(req, target) => match Stream::connect(&target) {
                    Ok(stream) => {
                        socket = Some((req, stream));
                        session.handle(now, req, Input::Connected);
                    }
                    Err(e) => {
                        last_error = format!("connecting: {e}");
                        let why = match e.kind() {
                            ErrorKind::ConnectionRefused | ErrorKind::NotFound => {
                                ConnectError::Refused
                            }
                            _ => ConnectError::Other,
                        };
                        session.handle(now, req, Input::ConnectFailed(why));
                    }
                },
                ClientAction::Close(req) => {
                    if socket.as_ref().is_some_and(|(r, _)| *r == req) {
                        socket = None;
                    }
                }
            }
        }
        while let Some(event) = session.poll_event() {
            match event {
                SessionEvent::Snapshot(updates) | SessionEvent::Update(updates) => {
                    if let Some(id) = system_id(&updates) {
                        return id;
                    }
                }
                SessionEvent::Disconnected { why, .. } => last_error = why,
                SessionEvent::Connected { .. } => {}
            }
        }
        let Some((req, stream)) = socket.as_mut() else {
            // Between connection attempts: wait for the session's next one.
            match session.poll_timeout() {
                Some(t) if t <= now => session.handle_timeout(now),
                Some(t) => std::thread::sleep((t - now).min(DEADLINE)),
                None => {
                    return Err(format!(
                        "{remote}: the OVSDB session gave up ({last_error})"
                    ))
                }
            }
            continue;
        };
        let req = *req;
        let pending = session.pending_write(req);
        if !pending.is_empty() {
            match stream.write(pending) {
                Ok(n) => session.consume_write(req, n),
                Err(_) => session.handle(now, req, Input::Error),
            }
            continue;
        }
        match stream.read(&mut buf) {
            Ok(0) => session.handle(now, req, Input::Eof),
            Ok(n) => session.handle(now, req, Input::Read(&buf[..n])),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if session.poll_timeout().is_some_and(|t| t <= now) {
                    session.handle_timeout(now);
                }
            }
            Err(_) => session.handle(now, req, Input::Error),
        }
    }
}

/// The system-id in a monitor's rows: `Some(Ok)` when found, `Some(Err)` when the row has
/// none (the chassis is not configured), `None` when the updates do not say.
fn system_id(updates: &mdproxy_core::ovsdb::TableUpdates) -> Option<Result<String, String>> {
    let table = updates.iter().find(|t| &*t.table == "Open_vSwitch")?;
    let row = table.rows.first()?;
    let columns = match &row.op {
        RowOp::Initial(c) | RowOp::Insert(c) => c,
        RowOp::Modify(_) | RowOp::Delete => return None,
    };
    let ids = columns.iter().find(|(name, _)| &**name == "external_ids");
    match ids
        .and_then(|(_, d)| d.get("system-id"))
        .and_then(|a| a.as_str())
    {
        Some(id) if !id.is_empty() => Some(Ok(id.to_owned())),
        _ => Some(Err(
            "the local Open_vSwitch database has no external_ids:system-id (is \
             ovn-controller configured on this node?); give --chassis NAME"
                .to_owned(),
        )),
    }
}
