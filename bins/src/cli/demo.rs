//! `mdproxy demo`: the three roles on loopback with a sample instance.

use std::net::SocketAddr;
use std::time::Duration;

use super::args::Args;
use super::ns_proxy::addr;
use super::{common_help, next_flag, value, Command, Common, EndpointArgs, Process};

pub const HELP: &str = concat!(
    "\
mdproxy demo: the three roles in one process, on loopback

Runs `mdproxy server` (on 127.0.0.1, a free port) with a sample instance, `mdproxy agent` (on
a Unix socket, with a static map that puts 127.0.0.1 and ::1 on a demo router, as that
instance) and `mdproxy ns-proxy` for the router, with a random shared secret, all in a
temporary directory. Then prints the curl commands to try: the ns-proxy answers as
169.254.169.254 answers an instance. SIGTERM/SIGINT (Ctrl-C) stops all three and removes the
temporary directory.

Usage: mdproxy demo [OPTIONS]

Options:
      --listen ADDR:PORT         Where the ns-proxy listens [default: 127.0.0.1:9697]; only
                                 clients on 127.0.0.1 or ::1 are the demo instance

",
    common_help!("the next role", "The next role"),
);

/// Everything `demo` was told.
#[derive(Debug)]
pub struct Demo {
    /// The ns-proxy's address.
    pub listen: SocketAddr,
    /// The limits and timeouts of all three roles; the connection limits are each role's
    /// default.
    pub endpoint: EndpointArgs,
    pub drain_timeout: Duration,
    pub process: Process,
}

pub(super) fn parse(p: &mut Args) -> Result<Command, String> {
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 9697));
    let mut common = Common::default();
    while let Some((name, flag)) = next_flag(p)? {
        if common.parse(&name, &flag, p)? {
            continue;
        }
        match name.as_str() {
            "help" => return Ok(Command::Help(HELP)),
            "listen" => listen = addr(&flag, &value(p, &flag)?)?,
            _ => return Err(p.unknown(&flag)),
        }
    }
    let common = common.finish();
    Ok(Command::Demo(Box::new(Demo {
        listen,
        endpoint: common.endpoint,
        drain_timeout: common.drain_timeout,
        process: common.process,
    })))
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;
    use crate::runtime::Runtime;

    fn demo(args: &[&str]) -> Result<Demo, String> {
        let argv = ["mdproxy", "demo"].iter().chain(args).map(OsString::from);
        match super::super::parse(argv)? {
            Command::Demo(cfg) => Ok(*cfg),
            other => Err(format!("{other:?}")),
        }
    }

    fn listen(args: &[&str]) -> Result<SocketAddr, String> {
        demo(args).map(|cfg| cfg.listen)
    }

    #[test]
    fn flags() {
        assert_eq!(listen(&[]), Ok("127.0.0.1:9697".parse().unwrap()));
        let moved = listen(&["--listen", "[::1]:8080", "--debug"]);
        assert_eq!(moved, Ok("[::1]:8080".parse().unwrap()));
        assert_eq!(demo(&[]).unwrap().process.runtime, Runtime::default());
        for &rt in Runtime::BUILT {
            let cfg = demo(&["--runtime", rt.name()]).unwrap();
            assert_eq!(cfg.process.runtime, rt);
        }
        for bad in [&["--listen", "9697"][..], &["--runtime", "tokio"], &["--x"]] {
            assert!(listen(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
