//! A blocking OVSDB client for one-shot `transact` requests (reading the local state, plugging
//! a port, registering on Chassis_Private): connect, send, read until the answer with our id
//! comes back (answering the server's `echo` meanwhile), all within a deadline. The framing
//! and the message shapes are the core's; only the socket is here. `ssl:` remotes speak TLS
//! (rustls over the blocking socket) with the `--ovn-sb-*` files' configuration.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use mdproxy_core::ovsdb::framing::Framer;
use mdproxy_core::ovsdb::remote::{parse_remotes, Remote};
use mdproxy_core::ovsdb::rpc::{self, Message, RpcError};
use serde_json::Value;

/// How long one request may take.
const DEADLINE: Duration = Duration::from_secs(10);
/// The largest answer accepted (the local database of a node is small; a Southbound read of
/// every port is bounded by this too).
const MAX_MESSAGE: usize = 64 << 20;

/// TLS for `ssl:` remotes: the configuration of the `--ovn-sb-*` files.
#[cfg(feature = "tls")]
pub type Tls = std::sync::Arc<rustls::ClientConfig>;
/// A build without TLS has none to give.
#[cfg(not(feature = "tls"))]
pub type Tls = std::convert::Infallible;

/// A connection to one OVSDB server.
pub struct Client {
    stream: Box<dyn Stream>,
    framer: Framer,
    next_id: u64,
    remote: String,
}

// Send: the node's provisioning thread owns its clients.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

impl Client {
    /// Connects to the first of `remote`'s servers that answers (`unix:PATH`, `tcp:IP:PORT`,
    /// and `ssl:IP:PORT` with `tls`).
    pub fn connect(remote: &str, tls: Option<&Tls>) -> Result<Client, String> {
        let remotes = parse_remotes(remote).map_err(|e| e.to_string())?;
        let mut last = String::from("no remote");
        for r in remotes {
            let tick = Some(Duration::from_millis(200));
            let stream: Result<Box<dyn Stream>, std::io::Error> = match &r {
                Remote::Unix(path) => UnixStream::connect(path).and_then(|s| {
                    s.set_read_timeout(tick)?;
                    Ok(Box::new(s) as Box<dyn Stream>)
                }),
                Remote::Tcp(addr) => TcpStream::connect_timeout(addr, DEADLINE).and_then(|s| {
                    s.set_read_timeout(tick)?;
                    Ok(Box::new(s) as Box<dyn Stream>)
                }),
                // `_addr`: a build without TLS has no use for it.
                Remote::Ssl(_addr) => match tls {
                    #[cfg(feature = "tls")]
                    Some(config) => ssl(*_addr, config.clone(), tick),
                    #[cfg(not(feature = "tls"))]
                    Some(never) => match *never {},
                    None => {
                        last = format!("{r}: an ssl: remote needs --ovn-sb-private-key, --ovn-sb-certificate and --ovn-sb-ca-cert");
                        continue;
                    }
                },
            };
            match stream {
                Ok(stream) => {
                    return Ok(Client {
                        stream,
                        framer: Framer::new(MAX_MESSAGE),
                        next_id: 0,
                        remote: r.to_string(),
                    })
                }
                Err(e) => last = format!("{r}: {e}"),
            }
        }
        Err(format!("cannot connect to {remote}: {last}"))
    }

    /// Sends `transact` with `params` and returns the server's answer (`result`, or the
    /// JSON-RPC error) for the core's parsers; `Err` when the connection failed.
    pub fn transact(&mut self, params: Value) -> Result<Result<Value, RpcError>, String> {
        let id = self.next_id;
        self.next_id += 1;
        let start = Instant::now();
        self.stream
            .write_all(&rpc::request("transact", params, id))
            .map_err(|e| format!("{}: {e}", self.remote))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if start.elapsed() > DEADLINE {
                return Err(format!("{}: no answer within {DEADLINE:?}", self.remote));
            }
            let n = match self.stream.read(&mut buf) {
                Ok(0) => return Err(format!("{}: the server closed the connection", self.remote)),
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue
                }
                Err(e) => return Err(format!("{}: {e}", self.remote)),
            };
            let mut data = buf.get(..n).unwrap_or_default();
            while let Some(v) = self
                .framer
                .next_message(&mut data)
                .map_err(|e| e.to_string())?
            {
                match Message::from_json(v).map_err(|e| e.to_string())? {
                    Message::Request {
                        method,
                        params,
                        id: echo,
                    } if method == "echo" => self
                        .stream
                        .write_all(&rpc::response(params, echo))
                        .map_err(|e| format!("{}: {e}", self.remote))?,
                    Message::Response { id: got, result } if got.as_u64() == Some(id) => {
                        return Ok(result)
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A TLS session over TCP to `addr`, its handshake done within [`DEADLINE`] (so that a
/// request's write never meets a handshake read's timeout). OVN's servers are known by their
/// CA, not their names (the configuration's verifier ignores the name).
#[cfg(feature = "tls")]
fn ssl(
    addr: std::net::SocketAddr,
    config: Tls,
    tick: Option<Duration>,
) -> Result<Box<dyn Stream>, std::io::Error> {
    let mut tcp = TcpStream::connect_timeout(&addr, DEADLINE)?;
    tcp.set_read_timeout(tick)?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let mut tls = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let start = Instant::now();
    while tls.is_handshaking() {
        match tls.complete_io(&mut tcp) {
            Ok(_) => {}
            Err(e)
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
                    && start.elapsed() < DEADLINE => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Box::new(rustls::StreamOwned::new(tls, tcp)))
}
