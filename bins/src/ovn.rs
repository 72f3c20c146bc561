//! The agent's ovn backend: the Southbound remotes parsed, OVN's SSL files read, the chassis
//! named (by `--chassis`, or the local Open_vSwitch database's `system-id`), and jitter seeded.

use mdproxy_core::lookup::OvnConfig;
use mdproxy_core::ovn::ChassisFilter;
use mdproxy_core::ovsdb::remote::{parse_remotes, Remote};

use crate::{cli, system_id, tls, Failure};

/// The backend's settings and its startup description.
pub fn config(args: &cli::OvnArgs) -> Result<(OvnConfig, String), Failure> {
    let remotes = parse_remotes(&args.sb_connection)
        .map_err(|e| Failure::Config(format!("--ovn-sb-connection: {e}")))?;
    let tls = match &args.ssl {
        Some(ssl) => Some(tls::ovn_client(ssl).map_err(Failure::Config)?),
        None => None,
    };
    let chassis = match args.chassis.as_deref() {
        Some("*") => ChassisFilter::Any,
        Some(name) => ChassisFilter::Named(name.into()),
        // Not a configuration error: the local database may just not be up yet (exit 1, and
        // systemd's Restart= tries again).
        None => ChassisFilter::Named(
            system_id::read(&args.ovs_db)
                .map_err(Failure::System)?
                .into(),
        ),
    };
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed)
        .map_err(|e| Failure::System(format!("the system's random source does not work: {e}")))?;
    let described = format!(
        "ovn backend at {} for {}, probe interval {:?}{}",
        list(&remotes),
        match &chassis {
            ChassisFilter::Any => "every chassis".to_owned(),
            ChassisFilter::Named(name) => format!("chassis {name}"),
        },
        args.probe_interval,
        match &args.ssl {
            Some(ssl) => format!(
                ", SSL: CA {}, certificate {}",
                ssl.ca_cert.display(),
                ssl.certificate.display()
            ),
            None => String::new(),
        }
    );
    let cfg = OvnConfig {
        remotes,
        chassis,
        probe_interval: args.probe_interval,
        tls,
        seed: u64::from_le_bytes(seed),
    };
    Ok((cfg, described))
}

fn list(remotes: &[Remote]) -> String {
    let all: Vec<String> = remotes.iter().map(ToString::to_string).collect();
    all.join(",")
}
