//! The files of `mdproxy node --watch-dir`, one per router or network served (format in
//! `mdproxy node --help`): parsed here, and written back by `node-register`. An interface
//! name in a `listen` address is only checked here; it is looked up inside the namespace, when
//! binding.

use std::net::SocketAddr;

use mdproxy_core::config::RateLimit;
use mdproxy_core::metadata::ImdsV2;
use mdproxy_core::scope::Scope;

use super::range::CONNS;

/// One file of `--watch-dir`: what to serve, where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    pub scope: Scope,
    /// `None`: the node's own namespace.
    pub namespace: Option<String>,
    /// As written: an interface name is looked up inside the namespace, when binding.
    pub listen: Vec<String>,
    pub rate_limit: Option<RateLimit>,
    /// `None`: `--max-conns-per-network`.
    pub max_conns: Option<usize>,
    /// The listener's IMDSv2 mode; `None`: the static map's, `--imdsv2-scope`'s, `--imdsv2`.
    pub imdsv2: Option<ImdsV2>,
    /// The process that holds the registration (`mdproxy node-register`): once it is gone,
    /// the file is stale (the registering process was killed before it could remove it).
    pub owner_pid: Option<u32>,
}

const UNIT_KEYS: [&str; 9] = [
    "owner_pid",
    "router_id",
    "network_id",
    "ovn_network_id",
    "namespace",
    "listen",
    "rate_limit",
    "max_conns",
    "imdsv2",
];

/// Parses one file of `--watch-dir` (see `mdproxy node --help`). The error names the key at fault.
pub fn parse_unit(text: &str) -> Result<Unit, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
    if let Some(key) = table.keys().find(|k| !UNIT_KEYS.contains(&k.as_str())) {
        return Err(format!(
            "unknown key `{key}` (keys: {})",
            UNIT_KEYS.join(", ")
        ));
    }
    let string = |key: &str| -> Result<Option<&str>, String> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("`{key}` must be a string")),
        }
    };
    let scopes = [
        ("router_id", Scope::Router as fn(_) -> Scope),
        ("network_id", Scope::Network),
        ("ovn_network_id", Scope::OvnNetwork),
    ];
    let mut scope = None;
    for (key, make) in scopes {
        let Some(v) = string(key)? else { continue };
        if scope.is_some() {
            return Err("give one of `router_id`, `network_id`, `ovn_network_id`".to_owned());
        }
        scope = Some(make(super::uuid(&format!("`{key}`"), v)?));
    }
    let scope = scope.ok_or("one of `router_id`, `network_id`, `ovn_network_id` is required")?;
    let namespace = string("namespace")?.map(namespace_name).transpose()?;
    let listen = match table.get("listen") {
        None => vec!["0.0.0.0:9697".to_owned()],
        Some(toml::Value::Array(items)) if !items.is_empty() => {
            let each = |v: &toml::Value| match v {
                toml::Value::String(s) => listen_syntax(s).map(|()| s.clone()),
                _ => Err("`listen` must be a list of \"ADDR:PORT\" strings".to_owned()),
            };
            items.iter().map(each).collect::<Result<_, _>>()?
        }
        Some(_) => return Err("`listen` must be a non-empty list of \"ADDR:PORT\"".to_owned()),
    };
    let rate_limit = string("rate_limit")?
        .map(|v| super::ns_proxy::rate_limit_arg("`rate_limit`", v))
        .transpose()?;
    let max_conns = match table.get("max_conns") {
        None => None,
        Some(toml::Value::Integer(n)) => Some(CONNS.parse("`max_conns`", &n.to_string())?),
        Some(_) => return Err("`max_conns` must be an integer".to_owned()),
    };
    let imdsv2 = string("imdsv2")?
        .map(|v| super::agent::imdsv2_mode("`imdsv2`", v))
        .transpose()?;
    let owner_pid = match table.get("owner_pid") {
        None => None,
        Some(toml::Value::Integer(n)) if (1..=i64::from(i32::MAX)).contains(n) => {
            u32::try_from(*n).ok()
        }
        Some(_) => return Err("`owner_pid` must be a process id".to_owned()),
    };
    Ok(Unit {
        scope,
        namespace,
        listen,
        rate_limit,
        max_conns,
        imdsv2,
        owner_pid,
    })
}

impl Unit {
    /// The file that [`parse_unit`] reads back as this unit.
    pub fn to_toml(&self) -> String {
        let (key, id) = match self.scope {
            Scope::Router(id) => ("router_id", id),
            Scope::Network(id) => ("network_id", id),
            Scope::OvnNetwork(id) => ("ovn_network_id", id),
        };
        let mut text = format!("{key} = \"{id}\"\n");
        if let Some(ns) = &self.namespace {
            text += &format!("namespace = \"{ns}\"\n");
        }
        let listen: Vec<String> = self.listen.iter().map(|l| format!("\"{l}\"")).collect();
        text += &format!("listen = [{}]\n", listen.join(", "));
        if let Some(r) = self.rate_limit {
            let (bw, uw) = (r.base_window.as_secs(), r.burst_window.as_secs());
            text += &format!(
                "rate_limit = \"{}/{bw},{}/{uw}\"\n",
                r.base_limit, r.burst_limit
            );
        }
        if let Some(n) = self.max_conns {
            text += &format!("max_conns = {n}\n");
        }
        if let Some(mode) = self.imdsv2 {
            text += &format!("imdsv2 = \"{}\"\n", mode_name(mode));
        }
        if let Some(pid) = self.owner_pid {
            text += &format!("owner_pid = {pid}\n");
        }
        text
    }
}

/// The word [`parse_unit`] reads back as `mode`.
fn mode_name(mode: ImdsV2) -> &'static str {
    match mode {
        ImdsV2::Off => "off",
        ImdsV2::Optional => "optional",
        ImdsV2::Required => "required",
    }
}

/// A name under /run/netns: one path component, as `ip netns` makes them.
pub(super) fn namespace_name(name: &str) -> Result<String, String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if name.is_empty() || name.len() > 255 || name.starts_with('.') || !name.chars().all(ok) {
        return Err(format!(
            "`namespace`: {name:?} is not a namespace name (letters, digits, - _ .)"
        ));
    }
    Ok(name.to_owned())
}

/// Checks `ADDR:PORT` without resolving an interface name (that happens inside the namespace).
pub(super) fn listen_syntax(v: &str) -> Result<(), String> {
    if v.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let stand_in = v.split_once('%').and_then(|(ip, rest)| {
        let (_, port) = rest.split_once("]:")?;
        format!("{ip}]:{port}").parse::<SocketAddr>().ok()
    });
    match stand_in {
        Some(_) => Ok(()),
        None => Err(format!(
            "`listen`: {v:?} is not ADDR:PORT (e.g. 0.0.0.0:9697 or [fe80::a9fe:a9fe%tap0]:80)"
        )),
    }
}

/// The address of a `listen` entry, an interface name looked up in the calling thread's
/// namespace.
pub fn listen_addr(v: &str) -> Result<SocketAddr, String> {
    super::ns_proxy::addr("`listen`", v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: &str = "5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6";

    #[test]
    fn unit_files() {
        let u = parse_unit(&format!(
            "router_id = \"{R}\"\nnamespace = \"qrouter-{R}\"\n"
        ))
        .unwrap();
        assert_eq!(
            u.scope,
            Scope::Router(mdproxy_core::scope::Uuid::parse(R.as_bytes()).unwrap())
        );
        assert_eq!(u.namespace, Some(format!("qrouter-{R}")));
        assert_eq!(u.listen, ["0.0.0.0:9697"]);
        assert_eq!((u.rate_limit, u.max_conns, u.owner_pid), (None, None, None));
        assert_eq!(u.imdsv2, None);
        let u = parse_unit(&format!(
            "ovn_network_id = \"{R}\"\nlisten = [\"169.254.169.254:80\", \"[fe80::a9fe:a9fe%tap0]:80\"]\n\
             rate_limit = \"10/10,20/1\"\nmax_conns = 7\nimdsv2 = \"required\"\nowner_pid = 42\n"
        ))
        .unwrap();
        assert_eq!(parse_unit(&u.to_toml()), Ok(u.clone()), "{}", u.to_toml());
        assert_eq!(u.owner_pid, Some(42));
        assert_eq!(u.imdsv2, Some(ImdsV2::Required));
        assert!(matches!(u.scope, Scope::OvnNetwork(_)));
        assert_eq!(u.listen.len(), 2);
        assert_eq!(
            u.rate_limit.map(|r| (r.base_limit, r.burst_limit)),
            Some((10, 20))
        );
        assert_eq!(u.max_conns, Some(7));
        for (text, why) in [
            (String::new(), "is required"),
            (
                format!("router_id = \"{R}\"\nnetwork_id = \"{R}\""),
                "give one of",
            ),
            ("router_id = \"nope\"".to_owned(), "not a UUID"),
            (
                format!("router_id = \"{R}\"\nnamespace = \"../etc\""),
                "not a namespace name",
            ),
            (
                format!("router_id = \"{R}\"\nnamespace = \"a/b\""),
                "not a namespace name",
            ),
            (format!("router_id = \"{R}\"\nlisten = []"), "non-empty"),
            (
                format!("router_id = \"{R}\"\nlisten = [\"9697\"]"),
                "not ADDR:PORT",
            ),
            (
                format!("router_id = \"{R}\"\nmax_conns = 0"),
                "out of range",
            ),
            (
                format!("router_id = \"{R}\"\nrate_limit = \"x\""),
                "BASE/SECONDS",
            ),
            (
                format!("router_id = \"{R}\"\nrouterid = \"{R}\""),
                "unknown key `routerid`",
            ),
            ("router_id = ".to_owned(), "TOML"),
            (format!("router_id = \"{R}\"\nowner_pid = 0"), "process id"),
        ] {
            let e = parse_unit(&text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }
}
