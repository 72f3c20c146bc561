//! Namespaces, links, addresses and the checksum rule, through iproute2's `ip` (and
//! `iptables` inside the namespace), as `neutron-ovn-metadata-agent` does through privsep.
//!
//! Why `ip` rather than rtnetlink over a socket of our own: it is on every node that runs
//! Neutron (the anchor itself needs it), `ip -j` gives a stable JSON view to observe, and it
//! costs the binary nothing — rtnetlink would mean message building and parsing for links,
//! addresses, veth peers and namespace moves, plus `setns(2)` plumbing, for a path that runs
//! a few times per network lifetime (one process per action is a few milliseconds). The
//! checksum rule needs `iptables` either way (there is no netlink API for x_tables rules
//! short of reimplementing iptables-restore).

use std::process::{Command, Stdio};

use mdproxy_core::provision::{Cidr, Link, Mac, ObservedNamespace, NS_PREFIX};
use serde_json::Value;

/// The rule the anchor adds to mangle POSTROUTING on netdev bridges (LP#1904871).
const CHECKSUM_RULE: &[&str] = &[
    "-p",
    "tcp",
    "-m",
    "tcp",
    "-j",
    "CHECKSUM",
    "--checksum-fill",
];

/// `tool` from PATH, or from the sbin directories a service's PATH may lack.
fn tool(name: &str) -> String {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = format!("{dir}/{name}");
        if std::path::Path::new(&p).is_file() {
            return p;
        }
    }
    name.to_owned()
}

/// Runs `prog args`; its stdout, or what it said on failure.
pub fn run(prog: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(tool(prog))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{prog} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip [-n NS] ARGS…`.
pub fn ip(ns: Option<&str>, args: &[&str]) -> Result<String, String> {
    let mut all = Vec::with_capacity(args.len() + 2);
    if let Some(ns) = ns {
        all.extend(["-n", ns]);
    }
    all.extend_from_slice(args);
    run("ip", &all)
}

/// The names of every network namespace (`ip -j netns list`; empty output when there is none).
pub fn namespaces() -> Result<Vec<String>, String> {
    let out = ip(None, &["-j", "netns", "list"])?;
    if out.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(&out).map_err(|e| format!("ip -j netns list: {e}"))?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.get("name")?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// The links of namespace `ns` (`None`: the root one) with their addresses.
pub fn links(ns: Option<&str>) -> Result<Vec<Link>, String> {
    let out = ip(ns, &["-j", "addr", "show"])?;
    let v: Value = serde_json::from_str(&out).map_err(|e| format!("ip -j addr show: {e}"))?;
    let mut links = Vec::new();
    for l in v.as_array().map(Vec::as_slice).unwrap_or_default() {
        let Some(name) = l.get("ifname").and_then(Value::as_str) else {
            continue;
        };
        let flags = l.get("flags").and_then(Value::as_array);
        let up = flags.is_some_and(|f| f.iter().any(|x| x == "UP"));
        let addrs = l
            .get("addr_info")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|i| {
                        let local = i.get("local")?.as_str()?;
                        let len = i.get("prefixlen")?.as_u64()?;
                        format!("{local}/{len}").parse::<Cidr>().ok()
                    })
                    .collect()
            })
            .unwrap_or_default();
        links.push(Link {
            name: name.to_owned(),
            ifindex: l
                .get("ifindex")
                .and_then(Value::as_u64)
                .and_then(|i| u32::try_from(i).ok())
                .unwrap_or(0),
            mac: l
                .get("address")
                .and_then(Value::as_str)
                .and_then(|m| m.parse::<Mac>().ok()),
            up,
            addrs,
        });
    }
    Ok(links)
}

/// `ip netns exec NS iptables|ip6tables -w -t mangle OP POSTROUTING <the rule>`.
fn checksum_rule(ns: &str, ipv6: bool, op: &'static str) -> Vec<String> {
    let table = if ipv6 { "ip6tables" } else { "iptables" };
    let mut args = vec![
        "netns",
        "exec",
        ns,
        table,
        "-w",
        "-t",
        "mangle",
        op,
        "POSTROUTING",
    ];
    args.extend_from_slice(CHECKSUM_RULE);
    args.into_iter().map(str::to_owned).collect()
}

/// Whether the checksum rule is in `ns`' mangle POSTROUTING (ip6tables' with `ipv6`).
pub fn has_checksum_rule(ns: &str, ipv6: bool) -> Result<bool, String> {
    // `-C` exits 1 when the rule is absent: not a failure of ours.
    let status = Command::new(tool("ip"))
        .args(checksum_rule(ns, ipv6, "-C"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run ip netns exec iptables: {e}"))?;
    Ok(status.success())
}

/// Appends the checksum rule in `ns` (to ip6tables with `ipv6`).
pub fn add_checksum_rule(ns: &str, ipv6: bool) -> Result<(), String> {
    let args = checksum_rule(ns, ipv6, "-A");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("ip", &args).map(|_| ())
}

/// Every `ovnmeta-` namespace with its links and whether it has the checksum rule.
pub fn metadata_namespaces() -> Result<Vec<ObservedNamespace>, String> {
    let mut out = Vec::new();
    for name in namespaces()?
        .into_iter()
        .filter(|n| n.starts_with(NS_PREFIX))
    {
        out.push(ObservedNamespace {
            links: links(Some(&name))?,
            checksum_fill: has_checksum_rule(&name, false)?,
            checksum_fill_v6: has_checksum_rule(&name, true)?,
            name,
        });
    }
    Ok(out)
}
