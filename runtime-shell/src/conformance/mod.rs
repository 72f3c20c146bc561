//! The integration suite every runtime must pass, written once: [`conformance_tests!`] expands
//! to one `#[test]` per function here, each given the runtime's [`Serve`]. The protocol is
//! tested in the core and the binary in `bins/tests`; these test the loop: listeners of both
//! kinds, keep-alive relaying, hooks and signals, timeouts, refused upstreams, back-pressure,
//! many connections, the drain, workers, running out of descriptors, and fairness.
//!
//! Every test ends its loop with SIGTERM to this very process, and signal handlers are
//! process-wide, so the tests take turns (`SERIAL`), and each signals only once its loop has
//! answered a request (so its handlers are installed).

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mdproxy_core::config::Timeouts;
use mdproxy_core::listener::{ListenerId, ScopedListener};
use mdproxy_core::proxy::FRESH_GRACE;
use mdproxy_core::scope::{Scope, Uuid};
use mdproxy_core::socket::Target;

use crate::{command_queue, run_workers, Command, Listener, RunOptions, Serve};
use harness::*;

mod descriptors;
mod harness;
mod hops;

/// Expands to the whole suite, one `#[test]` each, for the runtime whose [`Serve`] is
/// `$serve` (e.g. `mdproxy_shell::conformance_tests!(mdproxy_mio::serve);`).
#[macro_export]
macro_rules! conformance_tests {
    ($serve:path) => {
        $crate::conformance_tests!(@each $serve;
            relays_keep_alive_over_tcp_and_unix_runs_hooks_then_stops_on_sigterm,
            slow_head_times_out_with_an_answer_and_a_half_close,
            refused_upstreams_are_reported_as_refused,
            streams_10_mib_without_buffering_for_a_client_that_does_not_read,
            serves_1000_concurrent_connections,
            drain_closes_idle_connections_stops_accepting_and_waits_for_busy_ones,
            workers_share_listeners_and_all_stop_on_sigterm,
            an_endless_upload_does_not_starve_another_connection,
            listeners_come_and_go_while_another_keeps_serving,
            a_token_request_sets_the_hop_limit_of_its_connection,
        );
        /// Fills the process's descriptor table and takes over its logger: in a process of
        /// its own, so that the other tests (threads of this one) keep their descriptors.
        #[test]
        fn queued_connections_are_served_once_descriptors_free_up() {
            $crate::conformance::isolated(
                "queued_connections_are_served_once_descriptors_free_up",
                || $crate::conformance::queued_connections_are_served_once_descriptors_free_up($serve),
            );
        }
    };
    (@each $serve:path; $($name:ident,)*) => {
        $(
            #[test]
            fn $name() {
                $crate::conformance::$name($serve);
            }
        )*
    };
}

/// Relays on keep-alive over TCP (through a half-close) and over Unix, calls the SIGHUP and
/// tick hooks, and stops on SIGTERM.
pub fn relays_keep_alive_over_tcp_and_unix_runs_hooks_then_stops_on_sigterm(serve: Serve) {
    let dir = temp_dir("relay");
    let up = dir.join("up.sock");
    upstream(&up, b"hello");
    let (hups, ticks) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stops = Arc::new(AtomicUsize::new(0));
    let (h, t, s) = (hups.clone(), ticks.clone(), stops.clone());
    let opts = RunOptions {
        on_hangup: Box::new(move || {
            h.fetch_add(1, Ordering::Relaxed);
            None
        }),
        on_stop: Box::new(move || {
            s.fetch_add(1, Ordering::Relaxed);
        }),
        tick: Some((
            Duration::from_millis(20),
            Box::new(move || {
                t.fetch_add(1, Ordering::Relaxed);
                None
            }),
        )),
        ..RunOptions::default()
    };
    let proxy = Proxy::start(serve, dir, Target::Unix(up), Timeouts::default(), opts);

    let mut client = proxy.client();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    for _ in 0..3 {
        client.write_all(REQUEST).unwrap();
        assert_hello(&mut reader);
    }
    // Half-close: the answer still comes, then the end of the stream.
    client.write_all(REQUEST).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_hello(&mut reader);
    assert_eq!(reader.read(&mut [0; 16]).unwrap(), 0);

    // A Unix-socket client has no address for this role; whatever the role answers, the
    // loop must carry it back.
    let mut unix_client = UnixStream::connect(&proxy.unix).unwrap();
    unix_client.set_read_timeout(Some(WAIT)).unwrap();
    unix_client.write_all(REQUEST).unwrap();
    let (head, _) = read_response(&mut BufReader::new(unix_client));
    assert!(head.starts_with("HTTP/1.1 "), "{head}");

    signal(libc::SIGHUP);
    wait_for("on_hangup and 3 ticks", || {
        hups.load(Ordering::Relaxed) > 0 && ticks.load(Ordering::Relaxed) >= 3
    });
    assert_eq!(
        stops.load(Ordering::Relaxed),
        0,
        "on_stop before any stop signal"
    );
    proxy.stop();
    assert_eq!(stops.load(Ordering::Relaxed), 1, "on_stop once for SIGTERM");
}

/// A listener added through the command queue serves at once; removing it closes its socket
/// and its idle connection, while a keep-alive connection of another listener goes on.
pub fn listeners_come_and_go_while_another_keeps_serving(serve: Serve) {
    let dir = temp_dir("dynamic");
    let up = dir.join("up.sock");
    upstream(&up, b"hello");
    let (control, commands) = command_queue().unwrap();
    let opts = RunOptions {
        commands: Some(commands),
        ..RunOptions::default()
    };
    let proxy = Proxy::start(serve, dir, Target::Unix(up), Timeouts::default(), opts);
    let mut kept = proxy.client();
    let mut kept_reader = BufReader::new(kept.try_clone().unwrap());
    kept.write_all(REQUEST).unwrap();
    assert_hello(&mut kept_reader);

    let scope = ScopedListener {
        scope: Scope::Router(Uuid(1)),
        rate_limit: None,
        max_conns: 8,
        imdsv2: None,
    };
    let added = Listener::bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = added.local_addr().unwrap();
    let id = ListenerId(1);
    let add = Command::Add {
        id,
        scope,
        sockets: vec![added],
    };
    control.send(add).unwrap();
    // Bound before it was sent: the kernel queues the connection until the loop accepts it.
    let mut on_added = TcpStream::connect(addr).unwrap();
    on_added.set_read_timeout(Some(WAIT)).unwrap();
    on_added.write_all(REQUEST).unwrap();
    assert_hello(&mut BufReader::new(&on_added));

    control.send(Command::Remove(id)).unwrap();
    assert_eq!(
        on_added.read(&mut [0; 16]).unwrap_or(0),
        0,
        "idle connection closed"
    );
    wait_for("the removed listener to close", || {
        TcpStream::connect(addr).is_err()
    });
    for _ in 0..2 {
        kept.write_all(REQUEST).unwrap();
        assert_hello(&mut kept_reader);
    }
    proxy.stop();
    assert!(
        control.send(Command::Remove(id)).is_err(),
        "the loop has stopped"
    );
}

/// The ns-proxy's answer to `PUT /latest/api/token` leaves with the configured hop limit
/// (the core's `SetHopLimit`, carried out by the runtime on the accepted socket), read back
/// with getsockopt; a plain request, and a token request refused for its X-Forwarded-For, do
/// not change it.
pub fn a_token_request_sets_the_hop_limit_of_its_connection(serve: Serve) {
    let dir = temp_dir("hops");
    let up = dir.join("up.sock");
    upstream(&up, b"hello");
    let proxy = Proxy::start(
        serve,
        dir,
        Target::Unix(up),
        Timeouts::default(),
        RunOptions::default(),
    );
    let put = b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\n\r\n";
    let hops = |client: &TcpStream| {
        let fd = hops::accepted_end(client).expect("the loop's end of the client connection");
        crate::hop_limit(std::os::fd::AsFd::as_fd(&fd)).unwrap()
    };

    let mut client = proxy.client();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    client.write_all(REQUEST).unwrap();
    assert_hello(&mut reader);
    let default = hops(&client);
    assert_ne!(
        default, TOKEN_HOP_LIMIT,
        "a plain request keeps the system's default"
    );
    client.write_all(put).unwrap();
    assert_hello(&mut reader);
    assert_eq!(hops(&client), TOKEN_HOP_LIMIT);
    // Kept for the rest of the connection (see `Action::SetHopLimit`).
    client.write_all(REQUEST).unwrap();
    assert_hello(&mut reader);
    assert_eq!(hops(&client), TOKEN_HOP_LIMIT);

    // Refused (it came through a proxy inside the instance): nothing to protect, no change.
    let mut other = proxy.client();
    let mut other_reader = BufReader::new(other.try_clone().unwrap());
    let forwarded = String::from_utf8_lossy(put)
        .replace("Host: x\r\n", "Host: x\r\nX-Forwarded-For: 10.0.0.9\r\n");
    other.write_all(forwarded.as_bytes()).unwrap();
    let (head, _) = read_response(&mut other_reader);
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(hops(&other), default);
    proxy.stop();
}

/// A head that never completes is answered 408 after the head timeout, then closed.
pub fn slow_head_times_out_with_an_answer_and_a_half_close(serve: Serve) {
    let dir = temp_dir("timeout");
    let up = dir.join("up.sock");
    upstream(&up, b"hello");
    let timeouts = Timeouts {
        head: Duration::from_millis(200),
        ..Timeouts::default()
    };
    let proxy = Proxy::start(
        serve,
        dir,
        Target::Unix(up),
        timeouts,
        RunOptions::default(),
    );
    let mut client = proxy.client();
    let started = Instant::now();
    client.write_all(b"GET / HTTP/1.1\r\nHost").unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    proxy.stop();
}

/// A path nobody bound (ENOENT), a socket file nobody listens on and a closed TCP port
/// (ECONNREFUSED) are all "refused": 503 at once.
pub fn refused_upstreams_are_reported_as_refused(serve: Serve) {
    let dir = temp_dir("refused");
    let stale = dir.join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for target in [
        Target::Unix(dir.join("missing.sock")),
        Target::Unix(stale),
        Target::Tcp(port),
    ] {
        let proxy = Proxy::start(
            serve,
            temp_dir("refused-run"),
            target.clone(),
            Timeouts::default(),
            RunOptions::default(),
        );
        let mut client = proxy.client();
        client.write_all(REQUEST).unwrap();
        let (head, _) = read_response(&mut BufReader::new(client));
        assert!(head.starts_with("HTTP/1.1 503"), "{target:?}: {head}");
        proxy.stop();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// While the client does not read, only socket buffers and the core's bounded buffers may
/// fill: the loop must stop reading the upstream; then all 10 MiB arrive intact.
pub fn streams_10_mib_without_buffering_for_a_client_that_does_not_read(serve: Serve) {
    let dir = temp_dir("big");
    let up = dir.join("up.sock");
    let body: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
    let written = upstream(&up, &body);
    let opts = RunOptions::default();
    let proxy = Proxy::start(serve, dir, Target::Unix(up), Timeouts::default(), opts);
    let mut client = proxy.client();
    client.write_all(REQUEST).unwrap();
    let stalled = wait_until_still(&written);
    assert!(
        stalled < BIG - (1 << 20),
        "upstream wrote {stalled} bytes to a stalled client"
    );
    let (head, body) = read_response(&mut BufReader::with_capacity(1 << 16, client));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body.len(), BIG);
    assert!(body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    proxy.stop();
}

/// 1 000 connections at once, each answered twice (keep-alive).
pub fn serves_1000_concurrent_connections(serve: Serve) {
    const N: usize = 1000;
    // Two descriptors here and up to two in the loop per connection.
    let limit = descriptors::raise_limit();
    assert!(limit >= 4 * N as u64 + 100, "too few descriptors: {limit}");

    let dir = temp_dir("many");
    let up = dir.join("up.sock");
    upstream(&up, b"hello");
    let opts = RunOptions::default();
    let proxy = Proxy::start(serve, dir, Target::Unix(up), Timeouts::default(), opts);
    let clients: Vec<TcpStream> = (0..N).map(|_| proxy.client()).collect();
    // Every connection is still alive for a second round.
    for _ in 0..2 {
        for c in &clients {
            (&*c).write_all(REQUEST).unwrap();
        }
        for c in &clients {
            assert_hello(&mut BufReader::new(c));
        }
    }
    drop(clients);
    proxy.stop();
}

/// SIGTERM closes idle connections and the listeners at once, then waits for the busy one
/// until the drain timeout.
pub fn drain_closes_idle_connections_stops_accepting_and_waits_for_busy_ones(serve: Serve) {
    let dir = temp_dir("drain");
    let up = dir.join("up.sock");
    // An upstream that takes requests and never answers.
    let silent = bind_upstream(&up);
    thread::spawn(move || {
        let held: Vec<UnixStream> = silent.incoming().flatten().collect();
        drop(held);
    });
    // Longer than the grace a fresh connection gets, so that its end is the grace's.
    let drain_timeout = FRESH_GRACE * 6;
    let opts = RunOptions {
        drain_timeout,
        ..RunOptions::default()
    };
    let proxy = Proxy::start(serve, dir, Target::Unix(up), Timeouts::default(), opts);
    let mut busy = proxy.client();
    busy.write_all(REQUEST).unwrap();
    let mut idle = proxy.client();
    let mut late = proxy.client();
    // A Unix client is answered at once in this role: the loop is up.
    let mut unix_client = UnixStream::connect(&proxy.unix).unwrap();
    unix_client.write_all(REQUEST).unwrap();
    read_response(&mut BufReader::new(unix_client));

    signal(libc::SIGTERM);
    let signalled = Instant::now();
    // Connected before the stop, its request sent after it: answered (here 400, at once,
    // without the silent upstream), then closed, not cut off unanswered.
    late.write_all(b"NOT HTTP\r\n\r\n").unwrap();
    let mut late = BufReader::new(late);
    let (head, _) = read_response(&mut late);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert_eq!(
        late.read(&mut [0; 16]).unwrap(),
        0,
        "kept open while draining"
    );
    // One that never sends is let go after the grace.
    let closed = idle.read(&mut [0; 16]).unwrap();
    assert_eq!(closed, 0, "idle connection not closed");
    // The listeners are closed before the idle connections.
    assert!(TcpStream::connect(proxy.addr).is_err(), "still accepting");
    assert!(!proxy.finished(), "returned with a busy connection");
    proxy.join();
    assert!(signalled.elapsed() >= drain_timeout);
    // The busy connection was closed when the loop returned.
    assert_eq!(busy.read(&mut [0; 16]).unwrap_or(0), 0);
}

/// Three workers share the listeners; SIGTERM stops them all.
pub fn workers_share_listeners_and_all_stop_on_sigterm(serve: Serve) {
    let dir = temp_dir("workers");
    let up = dir.join("up.sock");
    upstream(&up, b"hello");
    let proxy = Proxy::start_with(
        dir,
        Target::Unix(up),
        Timeouts::default(),
        move |cfg, ls| run_workers(serve, 3, cfg, ls, RunOptions::default),
    );
    let clients: Vec<TcpStream> = (0..8).map(|_| proxy.client()).collect();
    for _ in 0..2 {
        for c in &clients {
            (&*c).write_all(REQUEST).unwrap();
            assert_hello(&mut BufReader::new(c));
        }
    }
    proxy.stop();
}

/// The environment variable that tells a child test process which test it runs.
const CHILD: &str = "MDPROXY_CONFORMANCE_CHILD";

/// Runs `test` in a child process of the current test binary (which runs only the test
/// `name`, on one thread), for a test that changes process-wide state; the child's output is
/// shown if it fails.
pub fn isolated(name: &str, test: impl FnOnce()) {
    if std::env::var(CHILD).as_deref() == Ok(name) {
        return test();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(exe)
        .args([name, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, name)
        .output()
        .expect("the test binary runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} failed in its own process:\n{text}"
    );
    assert!(
        text.contains("1 passed"),
        "{name} did not run in its own process:\n{text}"
    );
}

/// Connections that arrive while the process has no descriptor left stay queued; once
/// descriptors free up, every one of them is served with no new connection arriving to wake
/// the loop (under edge-triggered readiness no event announces them again).
pub fn queued_connections_are_served_once_descriptors_free_up(serve: Serve) {
    const QUEUED: usize = 8;
    let dir = temp_dir("emfile");
    let up = dir.join("up.sock");
    upstream(&up, b"hello");
    let failures = descriptors::watch_accept_failures();
    let opts = RunOptions::default();
    let proxy = Proxy::start(serve, dir, Target::Unix(up), Timeouts::default(), opts);
    // Up, and with a pooled upstream connection: kept open throughout, so that no descriptor
    // of the loop's frees up before the ballast goes.
    let mut first = proxy.client();
    first.write_all(REQUEST).unwrap();
    let (head, _) = read_response(&mut BufReader::new(&first));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // The clients' sockets exist before the table is full; connecting needs no descriptor.
    let sockets: Vec<_> = (0..QUEUED).map(|_| descriptors::tcp_socket()).collect();
    let ballast = descriptors::Ballast::fill();
    let clients: Vec<TcpStream> = (sockets.into_iter())
        .map(|s| descriptors::connect(s, proxy.addr))
        .collect();
    for c in &clients {
        (&*c).write_all(REQUEST).unwrap();
    }
    let connected = Instant::now();
    // The loop has tried (and failed) to accept after the last connection arrived.
    wait_for(
        "the loop to retry accepting by itself after the last arrival",
        || failures.since(connected),
    );
    drop(ballast);
    for c in &clients {
        c.set_read_timeout(Some(WAIT)).unwrap();
        assert_hello(&mut BufReader::new(c));
    }
    drop((clients, first));
    proxy.stop();
}

/// A client that sends without pause (an upload the core refused with 413 and now reads and
/// discards until the client stops, or until its linger deadline) must leave the loop time
/// for another client's requests: the core never pushes back on those reads, so only the
/// loop's per-turn cap bounds them. (A loop without a cap fails this only when its reads keep
/// up with the sender's writes for long enough, which varies from run to run.)
pub fn an_endless_upload_does_not_starve_another_connection(serve: Serve) {
    let dir = temp_dir("fair");
    let up = dir.join("up.sock");
    upstream(&up, b"hello");
    let opts = RunOptions::default();
    let proxy = Proxy::start(serve, dir, Target::Unix(up), Timeouts::default(), opts);
    let sender = proxy.client();
    (&sender).write_all(UPLOAD).unwrap();
    let (head, _) = read_response(&mut BufReader::new(&sender));
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    let sent = Arc::new(AtomicUsize::new(0));
    let (w, count) = (sender.try_clone().unwrap(), sent.clone());
    let upload = thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 16];
        while let Ok(n @ 1..) = (&w).write(&chunk) {
            count.fetch_add(n, Ordering::Relaxed);
        }
    });
    wait_for("the upload to run", || {
        sent.load(Ordering::Relaxed) > 8 << 20
    });
    let mut other = proxy.client();
    let mut reader = BufReader::new(other.try_clone().unwrap());
    for _ in 0..20 {
        other.write_all(REQUEST).unwrap();
        assert_hello(&mut reader);
    }
    // Still being read: the core has not given up on the sender while the other waited.
    let answered = sent.load(Ordering::Relaxed);
    wait_for(
        "the upload to go on after the other client's answers",
        || sent.load(Ordering::Relaxed) > answered + (1 << 20),
    );
    let _ = sender.shutdown(Shutdown::Both);
    upload.join().unwrap();
    proxy.stop();
}
