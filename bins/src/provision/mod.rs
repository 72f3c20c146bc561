//! Performing the core's provisioning plan (`mdproxy_core::provision`) on this node: observe
//! (namespaces, links and the checksum rule through `ip`, see `ip.rs`; OVS rows through a
//! transaction on the local database), plan, perform each action in order, and register the
//! agent on the chassis' `Chassis_Private` row. `mdproxy node --backend ovn` runs a round every
//! `--ovn-resync-interval` on a thread of its own (`node/ovn.rs`); the hidden `mdproxy provision` subcommand ([`main`]) does one
//! round from a one-shot Southbound read, for tests and operators.

mod ip;
mod ovsdb;
mod sb;

use std::ffi::OsString;
use std::process::ExitCode;

use mdproxy_core::ovsdb::transact::{self, OvsState};
use mdproxy_core::provision::{metadata_agent_id, plan, Action, Network, Observed};
use mdproxy_core::scope::Uuid;

pub use ovsdb::{Client, Tls};
pub use sb::Southbound;

/// The local OVS state (`transact::select_ovs`).
pub fn observe_ovs(ovs: &mut Client) -> Result<OvsState, String> {
    let reply = ovs.transact(transact::select_ovs())?;
    transact::parse_ovs(reply.as_ref()).map_err(|e| format!("reading the local OVS database: {e}"))
}

/// Everything the planner looks at.
pub fn observe(ovs: &mut Client) -> Result<Observed, String> {
    Ok(Observed {
        namespaces: ip::metadata_namespaces()?,
        root_links: ip::links(None)?
            .into_iter()
            .filter(|l| l.name.starts_with("tap"))
            .collect(),
        ovs: observe_ovs(ovs)?,
    })
}

/// Performs one action.
pub fn execute(action: &Action, ovs: &mut Client) -> Result<(), String> {
    let up = |ns: Option<&str>, link: &str| ip::ip(ns, &["link", "set", link, "up"]).map(|_| ());
    match action {
        Action::CreateNamespace { ns } => ip::ip(None, &["netns", "add", ns]).map(|_| ()),
        Action::DeleteNamespace { ns } => ip::ip(None, &["netns", "delete", ns]).map(|_| ()),
        Action::DeleteLink { ns, link } => {
            ip::ip(ns.as_deref(), &["link", "del", link]).map(|_| ())
        }
        Action::CreateVeth { outer, inner } => ip::ip(
            None,
            &["link", "add", outer, "type", "veth", "peer", "name", inner],
        )
        .map(|_| ()),
        Action::MoveLink { link, ns } => {
            ip::ip(None, &["link", "set", link, "netns", ns]).map(|_| ())
        }
        Action::SetMac { ns, link, mac } => ip::ip(
            Some(ns),
            &["link", "set", link, "address", &mac.to_string()],
        )
        .map(|_| ()),
        Action::AddAddress { ns, link, cidr } => {
            let c = cidr.to_string();
            let mut args = vec!["addr", "add", &c, "dev", link];
            if cidr.addr.is_ipv6() {
                // Bindable at once: no duplicate address detection on the metadata link.
                args.push("nodad");
            }
            ip::ip(Some(ns), &args).map(|_| ())
        }
        Action::DelAddress { ns, link, cidr } => {
            ip::ip(Some(ns), &["addr", "del", &cidr.to_string(), "dev", link]).map(|_| ())
        }
        Action::LinkUp { ns, link } => up(ns.as_deref(), link),
        Action::ChecksumFill { ns, ipv6 } => ip::add_checksum_rule(ns, *ipv6),
        Action::OvsAddPort {
            bridge,
            name,
            iface_id,
        } => {
            let reply = ovs.transact(transact::add_port(bridge, name, iface_id))?;
            transact::check_add_port(reply.as_ref(), bridge)
                .map(|_| ())
                .map_err(|e| format!("plugging {name} into {bridge}: {e}"))
        }
        Action::OvsDelPort { name, port } => {
            let reply = ovs.transact(transact::delete_port(*port))?;
            transact::check_delete_port(reply.as_ref())
                .map_err(|e| format!("unplugging {name}: {e}"))
        }
        Action::OvsSetIfaceId {
            name,
            iface,
            iface_id,
        } => {
            let reply = ovs.transact(transact::set_iface_id(*iface, iface_id))?;
            transact::check_set_iface_id(reply.as_ref())
                .map_err(|e| format!("retagging {name}: {e}"))
        }
    }
}

/// One round: observe, plan for `desired`, perform. Returns the actions performed; stops at
/// the first that fails (the next round observes again and carries on from there).
pub fn reconcile(desired: &[Network], ovs: &mut Client) -> Result<Vec<Action>, String> {
    let actions = plan(desired, &observe(ovs)?);
    for a in &actions {
        log::info!("provision: {a:?}");
        execute(a, ovs).map_err(|e| format!("{e} (during {a:?})"))?;
    }
    Ok(actions)
}

/// What the Southbound says `chassis` needs (three narrow `select`s, see `sb.rs`).
pub fn read_southbound(sb: &mut Client, chassis: &str) -> Result<Southbound, String> {
    let reply = sb.transact(sb::select_chassis(chassis))?;
    let Some(me) = sb::parse_chassis(reply.as_ref())? else {
        return Ok(Southbound::unknown_chassis());
    };
    let reply = sb.transact(sb::select_bound(me))?;
    let bound = sb::parse_bound(reply.as_ref())?;
    let datapaths = bound.datapaths();
    if datapaths.is_empty() {
        return sb::parse_networks(me, bound, &[], Ok(&serde_json::json!([])));
    }
    let reply = sb.transact(sb::select_networks(&datapaths))?;
    sb::parse_networks(me, bound, &datapaths, reply.as_ref())
}

/// Waits (up to `timeout`, held by the Southbound) until the ports bound to chassis row `me`
/// differ from `rows` (a [`Southbound::bound_here`]); whether they did.
pub fn wait_for_change(
    sb: &mut Client,
    me: Uuid,
    rows: &[serde_json::Map<String, serde_json::Value>],
    timeout: std::time::Duration,
) -> Result<bool, String> {
    let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let reply = sb.transact(sb::wait_bound(me, rows, ms))?;
    sb::parse_wait(reply.as_ref())
}

/// Registers the agent on `chassis`' Chassis_Private row, `nb_cfg` reported alive.
pub fn register(sb: &mut Client, chassis: &str, nb_cfg: i64) -> Result<(), String> {
    let id = metadata_agent_id(chassis)
        .ok_or_else(|| format!("the chassis name {chassis:?} is not a UUID (Neutron needs one)"))?;
    let reply = sb.transact(transact::register_agent(chassis, id, nb_cfg))?;
    transact::check_chassis_mutate(reply.as_ref(), chassis).map_err(|e| e.to_string())
}

/// `mdproxy provision --ovs-db REMOTE --sb-db REMOTE [--chassis NAME]`: one round, from a
/// one-shot Southbound read; prints each action performed, one a line. Exit 0 on success,
/// 1 when the node refused, 2 on bad flags.
pub fn main(args: Vec<OsString>) -> ExitCode {
    match run(args) {
        Ok(actions) => {
            for a in actions {
                println!("{a:?}");
            }
            ExitCode::SUCCESS
        }
        Err((msg, code)) => {
            eprintln!("mdproxy provision: {msg}");
            ExitCode::from(code)
        }
    }
}

fn run(args: Vec<OsString>) -> Result<Vec<Action>, (String, u8)> {
    let (mut ovs_db, mut sb_db, mut chassis) = (None, None, None);
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let slot = match flag.to_str() {
            Some("--ovs-db") => &mut ovs_db,
            Some("--sb-db") => &mut sb_db,
            Some("--chassis") => &mut chassis,
            _ => return Err((format!("unknown argument {flag:?}"), 2)),
        };
        let value = it.next().and_then(|v| v.into_string().ok());
        *slot = Some(value.ok_or((format!("{flag:?} needs a value"), 2))?);
    }
    let ovs_db = ovs_db.ok_or(("--ovs-db is required".to_owned(), 2))?;
    let sb_db = sb_db.ok_or(("--sb-db is required".to_owned(), 2))?;
    let sys = |e: String| (e, 1);
    let mut ovs = Client::connect(&ovs_db, None).map_err(sys)?;
    let chassis = match chassis {
        Some(c) => c,
        None => observe_ovs(&mut ovs).map_err(sys)?.system_id.ok_or((
            "no external_ids:system-id in the local OVS database; give --chassis".to_owned(),
            1,
        ))?,
    };
    let mut sb = Client::connect(&sb_db, None).map_err(sys)?;
    let south = read_southbound(&mut sb, &chassis).map_err(sys)?;
    let desired = mdproxy_core::provision::desired(&south.ports);
    let actions = reconcile(&desired, &mut ovs).map_err(sys)?;
    register(&mut sb, &chassis, south.nb_cfg).map_err(sys)?;
    Ok(actions)
}
