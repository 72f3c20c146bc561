//! Neutron's oslo-style INI files (`metadata_agent.ini`, `neutron.conf`), for `mdproxy agent
//! --config-file FILE` (repeatable, later files override earlier ones, as oslo.config reads
//! them) and `--config-dir DIR` (its `*.conf` files, sorted). The options
//! neutron-metadata-agent reads become the agent's flags ([`agent_settings`]); every other
//! key is ignored, and named in the one startup line that lists them.
//!
//! The syntax is oslo.config's: `[section]`, `key = value` or `key: value`, whole-line `#` and
//! `;` comments, a value continued on the following lines that start with a space or a tab,
//! one pair of quotes around a value removed; `$name` and `${name}` in a value are replaced by
//! the value of the option `name` (of the same section or `[DEFAULT]`, or its default, e.g.
//! `$state_path`), `${section.name}` by another section's, `$$` by `$`.

use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::args::{Origin, Setting, Val};

/// A `--config-file` or `--config-dir`, in command-line order.
#[derive(Clone, Debug)]
pub enum Source {
    File(PathBuf),
    Dir(PathBuf),
}

/// One `key = value` of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub section: String,
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// Parses one file's text; an error is `(line, message)`.
pub fn parse(text: &str) -> Result<Vec<Entry>, (usize, String)> {
    let mut entries = Vec::new();
    let mut section: Option<String> = None;
    // The entry whose value may continue on the next lines.
    let mut open: Option<Entry> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end();
        if line.is_empty() {
            entries.extend(open.take());
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match &mut open {
                Some(entry) => {
                    entry.value.push('\n');
                    entry.value.push_str(line.trim_start());
                }
                None => return Err((n, "an indented line continues no `key = value`".into())),
            }
            continue;
        }
        entries.extend(open.take());
        if let Some(header) = line.strip_prefix('[') {
            let name = header
                .strip_suffix(']')
                .ok_or((n, "a section header without its closing `]`".to_owned()))?;
            if name.is_empty() {
                return Err((n, "a section header without a name".into()));
            }
            // oslo.config: group names are case-insensitive, but for DEFAULT.
            section = Some(match name {
                "DEFAULT" => name.to_owned(),
                _ => name.to_lowercase(),
            });
        } else if !line.starts_with(['#', ';']) {
            let split = line.find(['=', ':']).ok_or((
                n,
                "neither `key = value`, a `[section]` nor a `#` comment".to_owned(),
            ))?;
            let (key, value) = (line[..split].trim(), line[split + 1..].trim());
            if key.is_empty() {
                return Err((n, "a value without a key".into()));
            }
            let section = section
                .clone()
                .ok_or((n, "a setting before the first [section]".to_owned()))?;
            open = Some(Entry {
                section,
                key: key.replace('-', "_"),
                value: unquote(value).to_owned(),
                line: n,
            });
        }
    }
    entries.extend(open);
    Ok(entries)
}

/// oslo.config removes one pair of matching quotes around a value.
fn unquote(v: &str) -> &str {
    match v.as_bytes() {
        [q @ (b'"' | b'\''), .., last] if q == last => &v[1..v.len() - 1],
        _ => v,
    }
}

/// A value of the merged files, and where it was set.
struct Item {
    entry: Entry,
    file: Rc<str>,
    /// The file's place in reading order.
    file_no: usize,
}

/// The files merged: a later file's value of a key replaces an earlier one's.
struct Ini {
    items: Vec<Item>,
}

/// oslo.config's defaults of the options that other values refer to.
const DEFAULTS: &[(&str, &str)] = &[
    ("state_path", "/var/lib/neutron"),
    ("metadata_proxy_socket", "$state_path/metadata_proxy"),
];

impl Ini {
    fn read(sources: &[Source]) -> Result<Ini, String> {
        let mut files = Vec::new();
        for source in sources {
            match source {
                Source::File(path) => files.push(path.clone()),
                Source::Dir(dir) => {
                    let shown = dir.display();
                    let list = fs::read_dir(dir)
                        .map_err(|e| format!("--config-dir {shown}: cannot read it: {e}"))?;
                    let mut conf: Vec<PathBuf> = list
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
                        .collect();
                    conf.sort();
                    files.extend(conf);
                }
            }
        }
        let mut ini = Ini { items: Vec::new() };
        for (file_no, path) in files.iter().enumerate() {
            let text = read(path)?;
            let file: Rc<str> = path.display().to_string().into();
            let entries = parse(&text).map_err(|(line, msg)| format!("{file}:{line}: {msg}"))?;
            for entry in entries {
                let same = |i: &Item| i.entry.section == entry.section && i.entry.key == entry.key;
                ini.items.retain(|i| !same(i));
                ini.items.push(Item {
                    entry,
                    file: file.clone(),
                    file_no,
                });
            }
        }
        Ok(ini)
    }

    fn get(&self, section: &str, key: &str) -> Option<&Item> {
        let found = |i: &&Item| i.entry.section == section && i.entry.key == key;
        self.items.iter().find(found)
    }

    /// `value` with `$name`, `${name}` and `${section.name}` replaced; `$$` is `$`. A name
    /// with no value is left as it is, as oslo.config leaves it.
    fn interpolate(&self, section: &str, value: &str, depth: usize) -> Result<String, String> {
        if depth > 8 {
            return Err(format!("{value:?}: its `$` references do not end"));
        }
        let mut out = String::new();
        let mut rest = value;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (name, len) = if let Some(braced) = after.strip_prefix('{') {
                match braced.find('}') {
                    Some(end) => (&braced[..end], end + 2),
                    None => ("", 0),
                }
            } else if let Some(escaped) = after.strip_prefix('$') {
                out.push('$');
                rest = escaped;
                continue;
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                match after.starts_with(|c: char| c.is_ascii_digit()) {
                    true => ("", 0),
                    false => (&after[..end], end),
                }
            };
            let (group, key) = match name.split_once('.') {
                Some((group, key)) => (group.to_lowercase(), key),
                None => (section.to_owned(), name),
            };
            let found = match name {
                "" => None,
                _ => self
                    .get(&group, key)
                    .or_else(|| self.get("DEFAULT", key))
                    .map(|i| i.entry.value.as_str())
                    .or_else(|| DEFAULTS.iter().find(|d| d.0 == key).map(|d| d.1)),
            };
            match found {
                Some(v) => out.push_str(&self.interpolate(&group, v, depth + 1)?),
                None => out.push_str(&rest[at..at + 1 + len]),
            }
            rest = &after[len..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("--config-file {}: {e}", path.display()))
}

/// The agent's flags from Neutron's INI files, and a note for each key they do not
/// use.
pub struct FromIni {
    pub settings: Vec<Setting>,
    pub notes: Vec<String>,
}

/// The agent's settings in the INI files of `sources`. `backend_chosen`: the TOML file or
/// the command line chooses the lookup backend, so the files' Keystone settings are not used.
pub fn agent_settings(sources: &[Source], backend_chosen: bool) -> Result<FromIni, String> {
    let ini = Ini::read(sources)?;
    let mut t = Translation {
        ini: &ini,
        used: Vec::new(),
        out: Vec::new(),
        notes: Vec::new(),
    };
    t.translate(backend_chosen)?;
    let Translation {
        used,
        mut out,
        mut notes,
        ..
    } = t;
    for (n, item) in ini.items.iter().enumerate() {
        if !used.contains(&n) {
            let e = &item.entry;
            notes.push(format!(
                "{}:{}: ignoring [{}] {}: not an option mdproxy agent takes",
                item.file, e.line, e.section, e.key
            ));
        }
    }
    out.sort_by_key(|(order, _)| *order);
    let settings = out.into_iter().map(|(_, s)| s).collect();
    Ok(FromIni { settings, notes })
}

/// Keystone's options: the flag, then the keys that set it, in `[keystone_authtoken]` or
/// (older agents) `[DEFAULT]`, preferred first.
const KEYSTONE: &[(&str, &[&str])] = &[
    ("auth-url", &["auth_url"]),
    ("username", &["username", "admin_user"]),
    ("password", &["password", "admin_password"]),
    ("project-name", &["project_name", "admin_tenant_name"]),
    ("user-domain-name", &["user_domain_name"]),
    ("project-domain-name", &["project_domain_name"]),
    ("region-name", &["region_name", "auth_region"]),
    ("interface", &["interface", "endpoint_type"]),
];

/// A key found: its value (interpolated) and where it was set.
struct Found {
    section: String,
    key: &'static str,
    value: String,
    file: Rc<str>,
    line: usize,
    order: (usize, usize),
}

impl Found {
    fn origin(&self) -> Origin {
        Origin::Ini {
            file: self.file.clone(),
            line: self.line,
        }
    }

    fn place(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }

    /// oslo.config's booleans.
    fn bool(&self) -> Result<bool, String> {
        match self.value.to_lowercase().as_str() {
            "1" | "t" | "true" | "on" | "y" | "yes" => Ok(true),
            "0" | "f" | "false" | "off" | "n" | "no" => Ok(false),
            _ => Err(format!(
                "{}: {}: {:?} is not a boolean (true or false)",
                self.place(),
                self.key,
                self.value
            )),
        }
    }
}

struct Translation<'a> {
    ini: &'a Ini,
    /// The indexes of the items used.
    used: Vec<usize>,
    /// The settings made, with the place of the key they came from, to keep file order.
    out: Vec<((usize, usize), Setting)>,
    notes: Vec<String>,
}

impl Translation<'_> {
    /// The first of `keys` set in `section`, marked as used. An empty value is no value: the
    /// default of Neutron's string options is empty.
    fn find(&mut self, section: &str, keys: &[&'static str]) -> Result<Option<Found>, String> {
        for &key in keys {
            let Some(n) = self
                .ini
                .items
                .iter()
                .position(|i| i.entry.section == section && i.entry.key == key)
            else {
                continue;
            };
            self.used.push(n);
            let item = &self.ini.items[n];
            let value = self
                .ini
                .interpolate(section, &item.entry.value, 0)
                .map_err(|e| format!("{}:{}: {key}: {e}", item.file, item.entry.line))?;
            if value.is_empty() {
                continue;
            }
            return Ok(Some(Found {
                section: section.to_owned(),
                key,
                value,
                file: item.file.clone(),
                line: item.entry.line,
                order: (item.file_no, item.entry.line),
            }));
        }
        Ok(None)
    }

    fn default(&mut self, key: &'static str) -> Result<Option<Found>, String> {
        self.find("DEFAULT", &[key])
    }

    fn emit(&mut self, flag: &str, found: &Found, value: Val) {
        let setting = Setting::new(flag, found.key.to_owned(), value, found.origin());
        self.out.push((found.order, setting));
    }

    fn emit_str(&mut self, flag: &str, found: &Found) {
        self.emit(flag, found, Val::Str(found.value.clone()));
    }

    fn note(&mut self, found: &Found, why: &str) {
        let line = format!(
            "{}: ignoring [{}] {}: {why}",
            found.place(),
            found.section,
            found.key
        );
        self.notes.push(line);
    }

    fn translate(&mut self, backend_chosen: bool) -> Result<(), String> {
        self.metadata_server()?;
        let secret = self.find("DEFAULT", &["metadata_proxy_shared_secret"])?;
        match secret {
            Some(found) => self.emit_str("shared-secret", &found),
            None => self.empty_secret(),
        }
        if let Some(found) = self.default("metadata_workers")? {
            // 0: requests handled in the agent's main thread (OVN's default): one worker.
            match found.value.trim() {
                "0" => self.emit("workers", &found, Val::Str("1".into())),
                _ => self.emit_str("workers", &found),
            }
        }
        if let Some(found) = self.default("metadata_backlog")? {
            self.emit_str("backlog", &found);
        }
        let socket = self.default("metadata_proxy_socket")?;
        let state_path = self.default("state_path")?;
        if let Some(found) = socket.as_ref().or(state_path.as_ref()) {
            let path = match &socket {
                Some(socket) => socket.value.clone(),
                None => self
                    .ini
                    .interpolate("DEFAULT", "$state_path/metadata_proxy", 0)?,
            };
            self.emit("listen-socket", found, Val::Str(path));
        }
        if let Some(found) = self.default("metadata_proxy_socket_mode")? {
            match found.value.as_str() {
                "deduce" => self.note(
                    &found,
                    "the socket keeps the mode the umask gives (as Neutron 2025.1 and later do)",
                ),
                _ => self.emit_str("socket-mode", &found),
            }
        }
        if let Some(found) = self.default("debug")? {
            let on = found.bool()?;
            self.emit("debug", &found, Val::Bool(on));
        }
        for (key, flag) in [("log_dir", "log-dir"), ("log_file", "log-file")] {
            if let Some(found) = self.default(key)? {
                self.emit_str(flag, &found);
            }
        }
        match self.ovn(backend_chosen)? {
            true => self.keystone_unused(),
            false => self.keystone(backend_chosen),
        }
    }

    /// `[ovn]` and `[ovs]` of `neutron_ovn_metadata_agent.ini`: with an `ovn_sb_connection`,
    /// the ovn backend. `Ok(true)` when it is chosen.
    fn ovn(&mut self, backend_chosen: bool) -> Result<bool, String> {
        let Some(remotes) = self.find("ovn", &["ovn_sb_connection"])? else {
            return Ok(false);
        };
        if backend_chosen {
            self.note(
                &remotes,
                "the lookup backend is chosen on the command line or in the TOML file",
            );
            return Ok(false);
        }
        self.emit("backend", &remotes, Val::Str("ovn".into()));
        self.emit_str("ovn-sb-connection", &remotes);
        let ssl = remotes
            .value
            .split(',')
            .any(|r| r.trim().starts_with("ssl:"));
        for (key, flag) in [
            ("ovn_sb_private_key", "ovn-sb-private-key"),
            ("ovn_sb_certificate", "ovn-sb-certificate"),
            ("ovn_sb_ca_cert", "ovn-sb-ca-cert"),
        ] {
            if let Some(found) = self.find("ovn", &[key])? {
                match ssl {
                    true => self.emit_str(flag, &found),
                    false => self.note(&found, "ovn_sb_connection has no ssl: remote"),
                }
            }
        }
        if let Some(found) = self.find("ovn", &["ovsdb_probe_interval"])? {
            // Milliseconds there; 0 (never probe) is not offered: a dead server must be noticed.
            match found.value.trim().parse::<u64>() {
                Ok(0) => self.note(&found, "probing cannot be turned off: the default applies"),
                Ok(ms) => {
                    let secs = format!("{}.{:03}", ms / 1000, ms % 1000);
                    self.emit("ovn-probe-interval", &found, Val::Str(secs));
                }
                Err(_) => {
                    return Err(format!(
                        "{}: ovsdb_probe_interval: {:?} is not a number of milliseconds",
                        found.place(),
                        found.value
                    ))
                }
            }
        }
        if let Some(found) = self.find("ovs", &["ovsdb_connection"])? {
            self.emit_str("ovs-db", &found);
        }
        Ok(true)
    }

    /// With the ovn backend, Keystone's settings (in a shared neutron.conf) are not used.
    fn keystone_unused(&mut self) -> Result<(), String> {
        let section = match self.ini.get("keystone_authtoken", "auth_url") {
            Some(_) => "keystone_authtoken",
            None => "DEFAULT",
        };
        if let Some(found) = self.find(section, &["auth_url"])? {
            self.note(&found, "the ovn backend ([ovn] ovn_sb_connection) is used");
        }
        Ok(())
    }

    /// Neutron's default shared secret is empty; the agent's flags ask for it explicitly.
    fn empty_secret(&mut self) {
        let Some(first) = self.ini.items.first() else {
            return;
        };
        let found = Found {
            section: "DEFAULT".into(),
            key: "metadata_proxy_shared_secret",
            value: String::new(),
            file: first.file.clone(),
            line: 0,
            order: (0, 0),
        };
        self.emit_str("shared-secret", &found);
        self.notes.push(format!(
            "{}: metadata_proxy_shared_secret is not set: signing with the empty secret, \
             Neutron's default",
            first.file
        ));
    }

    /// `nova_metadata_*`, `auth_ca_cert` and `nova_client_*`: the metadata server and TLS to
    /// it. Neutron uses the TLS options only for https, so only then are they flags here.
    fn metadata_server(&mut self) -> Result<(), String> {
        let host = self.find("DEFAULT", &["nova_metadata_host", "nova_metadata_ip"])?;
        let port = self.default("nova_metadata_port")?;
        let protocol = self.default("nova_metadata_protocol")?;
        let given: Vec<&Found> = [&host, &port, &protocol].into_iter().flatten().collect();
        let https = protocol.as_ref().is_some_and(|p| p.value == "https");
        if let Some(&first) = given.first() {
            let hosts = host.as_ref().map_or("127.0.0.1", |h| &h.value);
            // A comma list (mdproxy's extension: Neutron takes one host) gives one metadata
            // server per host, on the same port and protocol.
            for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                let host = match host.contains(':') && !host.starts_with('[') {
                    true => format!("[{host}]"),
                    false => host.to_owned(),
                };
                let url = format!(
                    "{}://{host}:{}",
                    protocol.as_ref().map_or("http", |p| &p.value),
                    port.as_ref().map_or("8775", |p| &p.value)
                );
                let keys: Vec<&str> = given.iter().map(|f| f.key).collect();
                let found = Found {
                    section: "DEFAULT".into(),
                    key: "",
                    value: url,
                    file: first.file.clone(),
                    line: first.line,
                    order: first.order,
                };
                let setting = Setting::new(
                    "metadata-url",
                    keys.join(", "),
                    Val::Str(found.value.clone()),
                    found.origin(),
                );
                self.out.push((found.order, setting));
            }
        }
        let insecure = match self.default("nova_metadata_insecure")? {
            Some(found) => Some((found.bool()?, found)),
            None => None,
        };
        let ca = self.default("auth_ca_cert")?;
        let cert = self.default("nova_client_cert")?;
        let key = self.default("nova_client_priv_key")?;
        if !https {
            let unused = [insecure.as_ref().map(|i| &i.1), cert.as_ref(), key.as_ref()];
            for found in unused.into_iter().flatten() {
                self.note(found, "nova_metadata_protocol is not https");
            }
            return Ok(());
        }
        match &insecure {
            Some((true, found)) => self.emit("metadata-insecure", found, Val::Bool(true)),
            _ => {
                if let Some(ca) = &ca {
                    self.emit_str("metadata-ca-file", ca);
                }
            }
        }
        // Neutron presents a client certificate only when both are set.
        if let (Some(cert), Some(key)) = (&cert, &key) {
            self.emit_str("metadata-client-cert", cert);
            self.emit_str("metadata-client-key", key);
        }
        Ok(())
    }

    /// Keystone credentials, in `[keystone_authtoken]` (as in neutron.conf) or, for older
    /// agents, `[DEFAULT]`: with an `auth_url`, the neutron backend.
    fn keystone(&mut self, backend_chosen: bool) -> Result<(), String> {
        let section = match self.ini.get("keystone_authtoken", "auth_url") {
            Some(_) => "keystone_authtoken",
            None => "DEFAULT",
        };
        let Some(auth_url) = self.find(section, &["auth_url"])? else {
            return Ok(());
        };
        if backend_chosen {
            self.note(
                &auth_url,
                "the lookup backend is chosen on the command line or in the TOML file",
            );
            return Ok(());
        }
        self.emit("backend", &auth_url, Val::Str("neutron".into()));
        for (flag, keys) in KEYSTONE {
            let Some(found) = self.find(section, keys)? else {
                continue;
            };
            let value = match *flag {
                // endpoint_type's publicURL, internalURL, adminURL
                "interface" => found.value.trim_end_matches("URL").to_lowercase(),
                _ => found.value.clone(),
            };
            self.emit(flag, &found, Val::Str(value));
        }
        let insecure = self.find(section, &["insecure", "auth_insecure"])?;
        let insecure = match insecure {
            Some(found) => Some((found.bool()?, found)),
            None => None,
        };
        if auth_url.value.to_lowercase().starts_with("https:") {
            match &insecure {
                Some((true, found)) => self.emit("neutron-insecure", found, Val::Bool(true)),
                _ => {
                    if let Some(ca) = self.find(section, &["cafile", "auth_ca_cert"])? {
                        self.emit_str("neutron-ca-file", &ca);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::test_file as write;

    fn entries(text: &str) -> Vec<String> {
        parse(text)
            .unwrap()
            .into_iter()
            .map(|e| {
                format!(
                    "{}:{} [{}] {}={:?}",
                    e.line, e.line, e.section, e.key, e.value
                )
            })
            .map(|s| s.split_once(' ').unwrap().1.to_owned())
            .collect()
    }

    #[test]
    fn syntax() {
        let text = "# comment\n; also\n[DEFAULT]\na = 1\nb:2\n c=d \n\nquoted = \"x y\"\n\
                    single = 'z'\nhalf = \"w\nempty =\nkey-dash = v\n[Keystone_AuthToken]\n\
                    multi = one\n  two\n\ttwo and a half\n# ends it\nafter = x = y\n";
        assert_eq!(
            entries(text),
            [
                "[DEFAULT] a=\"1\"",
                "[DEFAULT] b=\"2\\nc=d\"",
                "[DEFAULT] quoted=\"x y\"",
                "[DEFAULT] single=\"z\"",
                "[DEFAULT] half=\"\\\"w\"",
                "[DEFAULT] empty=\"\"",
                "[DEFAULT] key_dash=\"v\"",
                "[keystone_authtoken] multi=\"one\\ntwo\\ntwo and a half\"",
                "[keystone_authtoken] after=\"x = y\"",
            ]
        );
        // ` c=d` continues `b`: an indented line belongs to the value above it.
        let text = "[DEFAULT]\nb:2\n c=d \n";
        assert_eq!(entries(text), ["[DEFAULT] b=\"2\\nc=d\""]);
        let lines: Vec<usize> = parse("\n[s]\n\na=1\nb=2\n  more\nc=3\n")
            .unwrap()
            .iter()
            .map(|e| e.line)
            .collect();
        assert_eq!(lines, [4, 5, 7]);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        for (text, line, want) in [
            ("a = 1\n", 1, "before the first [section]"),
            ("[DEFAULT]\n\n[oops\n", 3, "closing"),
            ("[]\n", 1, "without a name"),
            ("[s]\njust words\n", 2, "neither"),
            ("[s]\n= 1\n", 2, "without a key"),
            ("  indented\n", 1, "continues no"),
            ("[s]\na = 1\n\n  late\n", 4, "continues no"),
        ] {
            let (n, msg) = parse(text).unwrap_err();
            assert_eq!(n, line, "{text:?}: {msg}");
            assert!(msg.contains(want), "{text:?}: {msg}");
        }
    }

    fn ini(text: &str) -> Ini {
        let items = parse(text)
            .unwrap()
            .into_iter()
            .map(|entry| Item {
                entry,
                file: "f.ini".into(),
                file_no: 0,
            })
            .collect();
        Ini { items }
    }

    #[test]
    fn interpolation() {
        let i = ini("[DEFAULT]\nstate_path = /srv/n\nloop = $loop\n[x]\nown = o\n");
        for (value, want) in [
            ("$state_path/mp", "/srv/n/mp"),
            ("${state_path}mp", "/srv/nmp"),
            ("$$state_path", "$state_path"),
            ("$own-${x.own}", "o-o"),
            ("$nothing ${unclosed $9 $", "$nothing ${unclosed $9 $"),
        ] {
            assert_eq!(i.interpolate("x", value, 0).as_deref(), Ok(want), "{value}");
        }
        let defaults = ini("[DEFAULT]\n");
        let socket = defaults.interpolate("DEFAULT", "$metadata_proxy_socket", 0);
        assert_eq!(socket.as_deref(), Ok("/var/lib/neutron/metadata_proxy"));
        assert!(i.interpolate("DEFAULT", "$loop", 0).is_err());
    }

    /// The flags the files make: `name=value @line`.
    fn made(
        files: &[(&str, &str)],
        backend_chosen: bool,
    ) -> Result<(Vec<String>, Vec<String>), String> {
        let sources: Vec<Source> = files
            .iter()
            .map(|(name, text)| Source::File(write(name, text)))
            .collect();
        let from = agent_settings(&sources, backend_chosen)?;
        let flags = from
            .settings
            .iter()
            .map(|s| {
                let line = match &s.origin {
                    Origin::Ini { line, .. } => *line,
                    _ => unreachable!(),
                };
                let v = match &s.value {
                    Val::Str(v) => v.clone(),
                    other => format!("{other:?}"),
                };
                format!("{}={v} @{line}", s.name)
            })
            .collect();
        Ok((flags, from.notes))
    }

    #[test]
    fn neutron_options_become_flags() {
        let text = "[DEFAULT]\nstate_path = /srv/neutron\nnova_metadata_ip = fd00::1\n\
                    nova_metadata_port = 8080\nmetadata_proxy_shared_secret = s3cr3t\n\
                    metadata_workers = 0\nmetadata_backlog = 128\n\
                    metadata_proxy_socket_mode = group\ndebug = True\n\
                    nova_client_cert = /c.pem\nunknown_thing = 1\n[cache]\nenabled = true\n";
        let (flags, notes) = made(&[("a.ini", text)], false).unwrap();
        assert_eq!(
            flags,
            [
                "listen-socket=/srv/neutron/metadata_proxy @2",
                "metadata-url=http://[fd00::1]:8080 @3",
                "shared-secret=s3cr3t @5",
                "workers=1 @6",
                "backlog=128 @7",
                "socket-mode=group @8",
                "debug=Bool(true) @9",
            ]
        );
        let notes = notes.join("\n");
        for key in ["nova_client_cert", "unknown_thing", "[cache] enabled"] {
            assert!(notes.contains(key), "{key}: {notes}");
        }
        assert!(!notes.contains("s3cr3t"), "{notes}");
    }

    /// A comma list of hosts is one metadata server each, on the same port and protocol.
    #[test]
    fn nova_metadata_host_may_list_several_servers() {
        let text = "[DEFAULT]\nnova_metadata_host = 192.0.2.5, nova-2.example,fd00::7\n\
                    nova_metadata_port = 8080\nmetadata_proxy_shared_secret = s\n";
        let (flags, _) = made(&[("m.ini", text)], false).unwrap();
        assert_eq!(
            flags[..3],
            [
                "metadata-url=http://192.0.2.5:8080 @2",
                "metadata-url=http://nova-2.example:8080 @2",
                "metadata-url=http://[fd00::7]:8080 @2",
            ]
        );
    }

    /// `neutron_ovn_metadata_agent.ini` as a deployment writes it: the ovn backend.
    #[test]
    fn ovn_agent_ini_means_the_ovn_backend() {
        let text = "[DEFAULT]\nnova_metadata_host = 192.0.2.5\nmetadata_proxy_shared_secret = s\n\
                    metadata_workers = 2\n[agent]\nroot_helper = sudo\n[ovs]\n\
                    ovsdb_connection = tcp:127.0.0.1:6640\n[ovn]\n\
                    ovn_sb_connection = ssl:192.0.2.1:6642,ssl:192.0.2.2:6642\n\
                    ovn_sb_private_key = /k.pem\novn_sb_certificate = /c.pem\n\
                    ovn_sb_ca_cert = /ca.pem\novsdb_probe_interval = 1500\n\
                    ovsdb_connection_timeout = 180\n";
        let (flags, notes) = made(&[("ovn.ini", text)], false).unwrap();
        assert_eq!(
            flags,
            [
                "metadata-url=http://192.0.2.5:8775 @2",
                "shared-secret=s @3",
                "workers=2 @4",
                "ovs-db=tcp:127.0.0.1:6640 @8",
                "backend=ovn @10",
                "ovn-sb-connection=ssl:192.0.2.1:6642,ssl:192.0.2.2:6642 @10",
                "ovn-sb-private-key=/k.pem @11",
                "ovn-sb-certificate=/c.pem @12",
                "ovn-sb-ca-cert=/ca.pem @13",
                "ovn-probe-interval=1.500 @14",
            ]
        );
        let notes = notes.join("\n");
        for key in ["root_helper", "ovsdb_connection_timeout"] {
            assert!(notes.contains(key), "{key}: {notes}");
        }
        // Chosen on the command line: the files' ovn settings are left out, and said so.
        let (flags, notes) = made(&[("ovn.ini", text)], true).unwrap();
        assert!(!flags.iter().any(|f| f.starts_with("backend")), "{flags:?}");
        assert!(notes.join("\n").contains("ovn_sb_connection"), "{notes:?}");
        let bad = "[ovn]\novn_sb_connection = tcp:1.2.3.4:6642\novsdb_probe_interval = soon\n";
        let err = made(&[("bad.ini", bad)], false).unwrap_err();
        assert!(err.contains("bad.ini:3"), "{err}");
    }

    #[test]
    fn later_files_override_and_https_brings_tls() {
        let first =
            "[DEFAULT]\nnova_metadata_host = nova.example\nmetadata_proxy_shared_secret = a\n\
                     metadata_proxy_socket = $state_path/mp\nmetadata_proxy_socket_mode = deduce\n";
        let second = "[DEFAULT]\nnova_metadata_protocol = https\nauth_ca_cert = /ca.pem\n\
                      nova_client_cert = /c.pem\nnova_client_priv_key = /k.pem\n\
                      metadata_proxy_shared_secret = b\n";
        let (flags, notes) = made(&[("1.ini", first), ("2.ini", second)], false).unwrap();
        for want in [
            "metadata-url=https://nova.example:8775 @2",
            "listen-socket=/var/lib/neutron/mp @4",
            "shared-secret=b @6",
            "metadata-ca-file=/ca.pem @3",
            "metadata-client-cert=/c.pem @4",
            "metadata-client-key=/k.pem @5",
        ] {
            assert!(flags.contains(&want.to_owned()), "{want}: {flags:?}");
        }
        assert_eq!(flags.len(), 6, "{flags:?}");
        assert!(
            notes
                .iter()
                .any(|n| n.contains("metadata_proxy_socket_mode")),
            "{notes:?}"
        );
    }

    #[test]
    fn keystone_means_the_neutron_backend() {
        let text = "[DEFAULT]\nauth_url = http://old:5000/v2.0\nadmin_user = old\n\
                    [keystone_authtoken]\nauth_url = https://ks:5000\nusername = neutron\n\
                    password = pw\nproject_name = service\nuser_domain_name = Default\n\
                    region_name = RegionTwo\ninterface = internal\ncafile = /ca.pem\n";
        let (flags, notes) = made(&[("k.ini", text)], false).unwrap();
        assert_eq!(
            flags[1..],
            [
                "backend=neutron @5",
                "auth-url=https://ks:5000 @5",
                "username=neutron @6",
                "password=pw @7",
                "project-name=service @8",
                "user-domain-name=Default @9",
                "region-name=RegionTwo @10",
                "interface=internal @11",
                "neutron-ca-file=/ca.pem @12",
            ]
        );
        assert!(flags[0].starts_with("shared-secret= @0"), "{flags:?}");
        assert!(
            notes.iter().any(|n| n.contains("[DEFAULT] admin_user")),
            "{notes:?}"
        );
        // The old [DEFAULT] spellings.
        let text = "[DEFAULT]\nauth_url = http://ks:5000/v3\nadmin_user = u\nadmin_password = p\n\
                    admin_tenant_name = t\nauth_region = R\nendpoint_type = adminURL\n";
        let (flags, _) = made(&[("old.ini", text)], false).unwrap();
        assert!(
            flags.contains(&"interface=admin @7".to_owned()),
            "{flags:?}"
        );
        assert!(flags.contains(&"project-name=t @5".to_owned()), "{flags:?}");
        // A backend chosen elsewhere wins.
        let (flags, notes) = made(&[("old2.ini", text)], true).unwrap();
        assert_eq!(flags.len(), 1, "{flags:?}");
        assert!(notes.iter().any(|n| n.contains("auth_url")), "{notes:?}");
    }

    #[test]
    fn config_dir_reads_its_conf_files_in_order() {
        let dir = write("x", "").parent().unwrap().join("conf.d");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("b.conf"), "[DEFAULT]\nmetadata_backlog = 2\n").unwrap();
        fs::write(
            dir.join("a.conf"),
            "[DEFAULT]\nmetadata_backlog = 1\nmetadata_workers = 3\n",
        )
        .unwrap();
        fs::write(dir.join("c.ini"), "not even INI").unwrap();
        let first = write("first.ini", "[DEFAULT]\nmetadata_workers = 9\n");
        let sources = [Source::File(first), Source::Dir(dir)];
        let from = agent_settings(&sources, false).unwrap();
        let got: Vec<String> = from
            .settings
            .iter()
            .filter_map(|s| match &s.value {
                Val::Str(v) => Some(format!("{}={v}", s.name)),
                _ => None,
            })
            .collect();
        assert_eq!(got, ["shared-secret=", "workers=3", "backlog=2"]);
        let missing = [Source::Dir("/nonexistent/conf.d".into())];
        let e = agent_settings(&missing, false).err().unwrap();
        assert!(e.starts_with("--config-dir /nonexistent/conf.d: "), "{e}");
    }

    #[test]
    fn bad_values_name_the_line() {
        let e = made(&[("b.ini", "[DEFAULT]\n\ndebug = maybe\n")], false).unwrap_err();
        assert!(
            e.ends_with("b.ini:3: debug: \"maybe\" is not a boolean (true or false)"),
            "{e}"
        );
        let e = made(&[("c.ini", "[DEFAULT]\nx = $x\n[s]\ny = $x\n")], false);
        assert!(e.is_ok(), "unused keys are not interpolated");
        let e = made(&[("d.ini", "[DEFAULT]\nstate_path = $state_path\n")], false).unwrap_err();
        assert!(e.contains("d.ini:2: state_path"), "{e}");
        let sources = [Source::File("/nonexistent/metadata_agent.ini".into())];
        let e = agent_settings(&sources, false).err().unwrap();
        assert!(
            e.starts_with("--config-file /nonexistent/metadata_agent.ini: "),
            "{e}"
        );
    }
}
