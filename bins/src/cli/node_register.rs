//! `mdproxy node-register`: the flags of the process that holds one registration with a node
//! (what the haproxy shim execs in node mode).

use std::path::PathBuf;

use mdproxy_core::scope::Scope;

use super::range::CONNS;
use super::unit::{listen_syntax, namespace_name, Unit};
use super::Command;

pub const REGISTER_HELP: &str = "\
mdproxy node-register: hold one router's or network's registration with `mdproxy node`

Writes DIR/UUID.toml (the format of `mdproxy node --help`, with owner_pid = this process), and
removes it on SIGTERM or SIGINT, which makes the node stop serving that namespace; the node
also stops when this process is gone (killed before it could remove the file). What the
haproxy shim (dist/neutron/mdproxy-haproxy) execs under MDPROXY_NODE_DIR, in place of a proxy
per router: Neutron's process monitor finds the pid file and the UUID in /proc/PID/cmdline, as
with haproxy, while one node serves every namespace.

Usage: mdproxy node-register --dir DIR (--router-id|--network-id|--ovn-network-id) UUID
                             [--namespace NAME] [--listen ADDR:PORT]... [OPTIONS]

      --dir DIR                  The node's --watch-dir
      --router-id UUID           The router served (or --network-id, --ovn-network-id)
      --namespace NAME           Its namespace under /run/netns [default: the node's own]
      --listen ADDR:PORT         Where the node listens in it; repeatable
                                 [default: 0.0.0.0:9697]
      --rate-limit B/BW,U/UW     Per client IP, as `mdproxy ns-proxy --rate-limit`
      --max-conns N              Connections open at once in this namespace
                                 [default: the node's --max-conns-per-network; 1 to 1000000]
      --imdsv2 MODE              off, optional or required, for this namespace alone
                                 [default: the node's IMDSv2 settings]
      --pid-file PATH            Write this process's id here; removed on exit
      --daemonize                Fork into the background first (haproxy's `daemon`)
  -h, --help                     Print this help
";

/// Everything `node-register` was told.
#[derive(Debug)]
pub struct Register {
    pub dir: PathBuf,
    /// Without its owner (set once the process is the one that stays).
    pub unit: Unit,
    pub pid_file: Option<PathBuf>,
    pub daemonize: bool,
}

/// `node-register`'s flags (no configuration file: it is what a script execs).
pub(super) fn parse_register(mut p: lexopt::Parser) -> Result<Command, String> {
    use lexopt::Arg::{Long, Short};
    let (mut dir, mut scope, mut namespace, mut listen) = (None, None, None, Vec::new());
    let (mut rate_limit, mut max_conns, mut pid_file, mut daemonize) = (None, None, None, false);
    let mut imdsv2 = None;
    let text = |p: &mut lexopt::Parser, flag: &str| -> Result<String, String> {
        let v = p.value().map_err(|e| format!("--{flag}: {e}"))?;
        v.into_string().map_err(|_| format!("--{flag}: not UTF-8"))
    };
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        let name = match arg {
            Short('h') | Long("help") => return Ok(Command::Help(REGISTER_HELP)),
            Long(name) => name.to_owned(),
            other => return Err(super::unexpected(&other)),
        };
        let flag = format!("--{name}");
        match name.as_str() {
            "dir" => dir = Some(PathBuf::from(text(&mut p, &name)?)),
            "router-id" | "network-id" | "ovn-network-id" if scope.is_some() => {
                return Err(format!(
                    "{flag}: give one of --router-id, --network-id, --ovn-network-id"
                ))
            }
            "router-id" => scope = Some(Scope::Router(super::uuid(&flag, &text(&mut p, &name)?)?)),
            "network-id" => {
                scope = Some(Scope::Network(super::uuid(&flag, &text(&mut p, &name)?)?))
            }
            "ovn-network-id" => {
                scope = Some(Scope::OvnNetwork(super::uuid(
                    &flag,
                    &text(&mut p, &name)?,
                )?))
            }
            "namespace" => namespace = Some(namespace_name(&text(&mut p, &name)?)?),
            "listen" => {
                let v = text(&mut p, &name)?;
                listen_syntax(&v)?;
                listen.push(v);
            }
            "rate-limit" => {
                let v = text(&mut p, &name)?;
                rate_limit = Some(super::ns_proxy::rate_limit_arg(&flag, &v)?);
            }
            "max-conns" => max_conns = Some(CONNS.parse(&flag, &text(&mut p, &name)?)?),
            "imdsv2" => imdsv2 = Some(super::agent::imdsv2_mode(&flag, &text(&mut p, &name)?)?),
            "pid-file" => pid_file = Some(PathBuf::from(text(&mut p, &name)?)),
            "daemonize" => daemonize = true,
            _ => return Err(format!("unknown option {flag} (try --help)")),
        }
    }
    if listen.is_empty() {
        listen.push("0.0.0.0:9697".to_owned());
    }
    Ok(Command::NodeRegister(Box::new(Register {
        dir: dir.ok_or("--dir is required (the node's --watch-dir)")?,
        unit: Unit {
            scope: scope.ok_or("one of --router-id, --network-id, --ovn-network-id is required")?,
            namespace,
            listen,
            rate_limit,
            max_conns,
            imdsv2,
            owner_pid: None,
        },
        pid_file,
        daemonize,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse, parse_unit};
    use std::ffi::OsString;

    const R: &str = "5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6";

    #[test]
    fn register_flags() {
        let argv = |args: &[&str]| {
            let all = ["mdproxy", "node-register"].iter().chain(args);
            parse(all.map(OsString::from).collect::<Vec<_>>())
        };
        let Ok(Command::NodeRegister(r)) = argv(&[
            "--dir=/d",
            "--router-id",
            R,
            "--namespace",
            &format!("qrouter-{R}"),
            "--listen=[::]:9697",
            "--listen=0.0.0.0:9697",
            "--rate-limit=10/10,10/10",
            "--max-conns=100",
            "--imdsv2=required",
            "--pid-file=/p",
            "--daemonize",
        ]) else {
            panic!()
        };
        assert_eq!(r.dir, PathBuf::from("/d"));
        assert_eq!(r.unit.listen, ["[::]:9697", "0.0.0.0:9697"]);
        assert_eq!((r.unit.max_conns, r.daemonize), (Some(100), true));
        assert_eq!(
            r.unit.imdsv2,
            Some(mdproxy_core::metadata::ImdsV2::Required)
        );
        assert_eq!(parse_unit(&r.unit.to_toml()), Ok(r.unit.clone()));
        let Ok(Command::NodeRegister(r)) = argv(&["--dir=/d", "--network-id", R]) else {
            panic!()
        };
        assert_eq!(r.unit.listen, ["0.0.0.0:9697"]);
        for (bad, why) in [
            (&["--router-id", R][..], "--dir is required"),
            (&["--dir=/d"][..], "is required"),
            (
                &["--dir=/d", "--router-id", R, "--network-id", R][..],
                "give one of",
            ),
            (
                &["--dir=/d", "--router-id", R, "--namespace=a/b"][..],
                "not a namespace",
            ),
            (
                &["--dir=/d", "--router-id", R, "--bogus"][..],
                "unknown option --bogus",
            ),
        ] {
            let e = argv(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(matches!(argv(&["-h"]), Ok(Command::Help(REGISTER_HELP))));
    }
}
