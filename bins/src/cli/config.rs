//! Configuration files: `mdproxy --config FILE <role>` reads one TOML file for every role,
//! `mdproxy agent --config-file metadata_agent.ini` Neutron's INI files (see `ini.rs`), and
//! `mdproxy check-config FILE` checks either kind.
//!
//! A file is not parsed into settings of its own: its keys become [`Setting`]s, as flags do,
//! and go through the role's flag parser with the command line's. The order of precedence,
//! lowest first: Neutron's INI files, the TOML file's top level and `[common]` table, its
//! table for the role, the command line. A setting given by a higher layer replaces every
//! lower layer's value of it (a `--listen` flag replaces the file's `listen` list).

use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::args::{stack, Args, Origin, Setting, Val};
use super::ini::{self, Source};
use super::{agent, demo, node, ns_proxy, server, Command, Common};

/// The roles a configuration file has a table for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    NsProxy,
    Agent,
    Node,
    Server,
    Demo,
}

/// Flags every role takes that set the same thing as another.
const COMMON_SAME: &[&[&str]] = &[&["daemonize", "nodaemonize"]];

impl Role {
    const ALL: [Role; 5] = [
        Role::NsProxy,
        Role::Agent,
        Role::Node,
        Role::Server,
        Role::Demo,
    ];

    /// The command, and the name of its table.
    pub fn name(self) -> &'static str {
        match self {
            Role::NsProxy => "ns-proxy",
            Role::Agent => "agent",
            Role::Node => "node",
            Role::Server => "server",
            Role::Demo => "demo",
        }
    }

    fn parse(self, p: &mut Args, legacy: bool) -> Result<Command, String> {
        match self {
            Role::NsProxy => ns_proxy::parse(p, legacy),
            Role::Agent => agent::parse(p),
            Role::Node => node::parse(p),
            Role::Server => server::parse(p),
            Role::Demo => demo::parse(p),
        }
    }

    /// The setting `flag` sets: itself, or the first of the flags that set the same thing.
    fn same(self, flag: &str) -> String {
        let own: &[&[&str]] = match self {
            Role::NsProxy => ns_proxy::SAME,
            Role::Agent | Role::Node => agent::SAME,
            Role::Server | Role::Demo => &[],
        };
        let group = own.iter().chain(COMMON_SAME).find(|g| g.contains(&flag));
        group.map_or(flag, |g| g[0]).to_owned()
    }
}

/// Parses a role's settings: from the command line `parser` (after the role's name) and, if
/// it names them, Neutron's INI files (`--config-file`, `--config-dir`), and from the TOML
/// file `config`.
pub fn run(
    role: Role,
    legacy: bool,
    config: Option<PathBuf>,
    parser: lexopt::Parser,
) -> Result<Command, String> {
    // First the command line alone, to know which flags it gives: only the role's parser
    // knows which flags take a value.
    let mut args = Args::cli(parser);
    let first = role.parse(&mut args, legacy);
    let done = args.done();
    let cli = args.into_settings();
    let sources: Vec<Source> = cli
        .iter()
        .filter_map(|s| match (s.name.as_str(), &s.value) {
            ("config-file", Val::Str(path)) => Some(Source::File(path.into())),
            ("config-dir", Val::Str(path)) => Some(Source::Dir(path.into())),
            _ => None,
        })
        .collect();
    if config.is_none() && sources.is_empty() {
        return first;
    }
    match first {
        Ok(Command::Help(text)) => return Ok(Command::Help(text)),
        // An error in one flag; one about how flags combine may be settled by the files.
        Err(e) if !done => return Err(e),
        _ => {}
    }
    let (common, own) = match config {
        Some(path) => {
            let file = ConfigFile::load(&path)?;
            let own = file.roles.into_iter().find(|t| t.role == role);
            (file.common, own.map(|t| t.settings).unwrap_or_default())
        }
        None => Default::default(),
    };
    let mut layers = Vec::new();
    let mut notes = Vec::new();
    if !sources.is_empty() {
        let higher = || common.iter().chain(&own).chain(&cli);
        let backend_chosen = higher().any(|s| matches!(s.name.as_str(), "backend" | "static-map"));
        let from_ini = ini::agent_settings(&sources, backend_chosen)?;
        notes = from_ini.notes;
        layers.push(from_ini.settings);
    }
    layers.extend([common, own, cli]);
    let mut args = Args::list(stack(layers, |flag| role.same(flag)));
    let mut command = role.parse(&mut args, legacy).map_err(|e| args.locate(e))?;
    if let Command::Agent(agent) = &mut command {
        agent.process.ignored.extend(notes);
    }
    Ok(command)
}

/// A role's table in a TOML file.
struct RoleTable {
    role: Role,
    /// The line of its header.
    line: usize,
    settings: Vec<Setting>,
}

/// A TOML configuration file, as settings.
struct ConfigFile {
    /// The top level's and `[common]`'s, which every role takes.
    common: Vec<Setting>,
    roles: Vec<RoleTable>,
}

impl ConfigFile {
    fn load(path: &Path) -> Result<ConfigFile, String> {
        let shown = path.display();
        let text = fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
        ConfigFile::parse(&shown.to_string(), &text)
    }

    /// Reads `text`; errors read `FILE:LINE: message` (`file` is `FILE`).
    fn parse(file: &str, text: &str) -> Result<ConfigFile, String> {
        let file: Rc<str> = file.into();
        let line = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let root = DeTable::parse(text).map_err(|e| {
            let at = line(e.span().map_or(0, |s| s.start));
            format!("{file}:{at}: {}", e.message())
        })?;
        let mut keys: Vec<_> = root.get_ref().iter().collect();
        keys.sort_by_key(|(key, _)| key.span().start);
        let mut common = Table::new(&file, "the top level", &line);
        let mut common_table = Table::new(&file, "[common]", &line);
        let mut roles: Vec<RoleTable> = Vec::new();
        for (key, value) in keys {
            let name: &str = key.get_ref();
            let at = line(key.span().start);
            let DeValue::Table(table) = value.get_ref() else {
                common.key(key, value)?;
                continue;
            };
            let canonical = name.replace('_', "-");
            if canonical == "common" {
                common_table.keys(table)?;
                continue;
            }
            let Some(role) = Role::ALL.into_iter().find(|r| r.name() == canonical) else {
                let names: Vec<String> = Role::ALL.iter().map(|r| r.name().into()).collect();
                return Err(format!(
                    "{file}:{at}: unknown table [{name}] (the tables are [common], [{}])",
                    names.join("], [")
                ));
            };
            if let Some(earlier) = roles.iter().find(|t| t.role == role) {
                return Err(format!(
                    "{file}:{at}: [{name}] is the table of line {} again",
                    earlier.line
                ));
            }
            let label = format!("[{name}]");
            let mut own = Table::new(&file, &label, &line);
            own.keys(table)?;
            roles.push(RoleTable {
                role,
                line: at,
                settings: own.settings,
            });
        }
        // One setting, one place: the top level and [common] are the same layer.
        for (key, (at, _)) in &common_table.seen {
            if let Some((earlier, _)) = common.seen.iter().find(|(k, _)| k == key).map(|s| &s.1) {
                return Err(format!(
                    "{file}:{at}: `{key}` is set at the top level too (line {earlier})"
                ));
            }
        }
        common.settings.extend(common_table.settings);
        check_common(&common.settings)?;
        Ok(ConfigFile {
            common: common.settings,
            roles,
        })
    }
}

/// The settings of one table, as they are read.
struct Table<'a> {
    file: Rc<str>,
    label: Rc<str>,
    line: &'a dyn Fn(usize) -> usize,
    settings: Vec<Setting>,
    /// The canonical names of the keys seen, with their line and their spelling.
    seen: Vec<(String, (usize, String))>,
}

impl<'a> Table<'a> {
    fn new(file: &Rc<str>, label: &str, line: &'a dyn Fn(usize) -> usize) -> Table<'a> {
        Table {
            file: file.clone(),
            label: label.into(),
            line,
            settings: Vec::new(),
            seen: Vec::new(),
        }
    }

    fn keys(&mut self, table: &DeTable<'_>) -> Result<(), String> {
        let mut keys: Vec<_> = table.iter().collect();
        keys.sort_by_key(|(key, _)| key.span().start);
        keys.into_iter().try_for_each(|(k, v)| self.key(k, v))
    }

    fn key(
        &mut self,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        value: &Spanned<DeValue<'_>>,
    ) -> Result<(), String> {
        let written: &str = key.get_ref();
        let name = written.replace('_', "-");
        let at = (self.line)(key.span().start);
        if let Some((_, (earlier, spelled))) = self.seen.iter().find(|(n, _)| *n == name) {
            return Err(format!(
                "{}:{at}: `{written}` sets what `{spelled}` sets on line {earlier}",
                self.file
            ));
        }
        self.seen.push((name.clone(), (at, written.to_owned())));
        self.value(written, value, false)
    }

    /// One setting per value: a list gives one per element, as a repeated flag.
    fn value(
        &mut self,
        written: &str,
        value: &Spanned<DeValue<'_>>,
        in_list: bool,
    ) -> Result<(), String> {
        let line = (self.line)(value.span().start);
        let spelled = format!("`{written}`");
        let err = |msg: &str| format!("{}:{line}: {spelled}: {msg}", self.file);
        let v = match value.get_ref() {
            DeValue::String(s) => Val::Str(s.to_string()),
            DeValue::Integer(i) => Val::Str(match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => n.to_string(),
                Err(_) => i.to_string(),
            }),
            DeValue::Float(f) => Val::Str(f.as_str().to_owned()),
            DeValue::Boolean(b) => Val::Bool(*b),
            DeValue::Datetime(_) => return Err(err("a date is not a value here")),
            DeValue::Table(_) => return Err(err("a table is not a value here")),
            DeValue::Array(_) if in_list => return Err(err("a list in a list is not a value")),
            DeValue::Array(list) => {
                if list.is_empty() {
                    return Err(err("an empty list (leave the key out for the default)"));
                }
                return list.iter().try_for_each(|v| self.value(written, v, true));
            }
        };
        let origin = Origin::Toml {
            file: self.file.clone(),
            line,
            table: self.label.clone(),
        };
        self.settings
            .push(Setting::new(written, spelled, v, origin));
        Ok(())
    }
}

/// The top level and `[common]` take only the flags every role takes.
fn check_common(settings: &[Setting]) -> Result<(), String> {
    let mut args = Args::list(settings.to_vec());
    let mut common = Common::default();
    loop {
        let (name, flag) = match args.next_flag() {
            Ok(Some(next)) => next,
            Ok(None) => return Ok(()),
            Err(e) => return Err(args.locate(e)),
        };
        match common.parse(&name, &flag, &mut args) {
            Ok(true) => {}
            Ok(false) => {
                let e = format!(
                    "{}: every role's tables take it, not this one: put it in a role's table",
                    args.unknown(&flag)
                );
                return Err(args.locate(e));
            }
            Err(e) => return Err(args.locate(e)),
        }
    }
}

/// A UUID for a check of an `[ns-proxy]` table that leaves the scope to the command line.
const STAND_IN: &str = "00000000-0000-0000-0000-000000000000";

/// What `mdproxy check-config FILE` says about `path`: the report, or the first error
/// (`FILE:LINE: message`). A file named `*.ini` or `*.conf` is read as Neutron's INI for the
/// agent; any other as mdproxy's TOML.
pub fn check(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let ext = path.extension().and_then(|e| e.to_str());
    if matches!(ext, Some("ini" | "conf")) {
        return check_ini(path);
    }
    let file = ConfigFile::load(path)?;
    let mut report = format!("{shown}: OK\n");
    let count = |n: usize| format!("{n} setting{}", if n == 1 { "" } else { "s" });
    if !file.common.is_empty() {
        report += &format!(
            "  top level and [common]: {}, for every role\n",
            count(file.common.len())
        );
    }
    for table in &file.roles {
        let layers = vec![file.common.clone(), table.settings.clone()];
        let mut settings = stack(layers, |flag| table.role.same(flag));
        let mut note = String::new();
        let scoped = |s: &Setting| {
            matches!(
                s.name.as_str(),
                "router-id" | "network-id" | "ovn-network-id"
            )
        };
        if table.role == Role::NsProxy && !settings.iter().any(scoped) {
            let stand_in = Val::Str(STAND_IN.into());
            let flag = "--router-id".to_owned();
            settings.push(Setting::new("router-id", flag, stand_in, Origin::Cli));
            note = "; no router-id or network-id: each ns-proxy is given its own on the \
                    command line (`--router-id UUID`)"
                .into();
        }
        let mut args = Args::list(settings);
        if let Err(e) = table.role.parse(&mut args, false) {
            return Err(match args.done() {
                true => format!("{shown}:{}: [{}]: {e}", table.line, table.role.name()),
                false => args.locate(e),
            });
        }
        let n = table.settings.len();
        report += &format!("  [{}]: {}{note}\n", table.role.name(), count(n));
    }
    report += "Checked: the TOML syntax, every key and value (numbers, addresses, UUIDs, URLs,\n\
               choices) and how each role's settings combine, as `mdproxy --config FILE <role>`\n\
               reads them. Not checked: that the files named exist and can be read, that host\n\
               names resolve, that ports and sockets are free.\n";
    Ok(report)
}

/// `check-config` for Neutron's INI files: the agent settings they make.
fn check_ini(path: &Path) -> Result<String, String> {
    let from_ini = ini::agent_settings(&[Source::File(path.to_owned())], false)?;
    let mut args = Args::list(from_ini.settings);
    let agent = Role::Agent
        .parse(&mut args, false)
        .map_err(|e| args.locate(e));
    let mut report = match agent {
        Ok(_) => format!("{}: OK as the agent's settings\n", path.display()),
        Err(e) if e.contains("--static-map") => format!(
            "{}: OK as the agent's settings, given --static-map FILE (it names no Keystone)\n",
            path.display()
        ),
        Err(e) => return Err(e),
    };
    for note in &from_ini.notes {
        report += &format!("  {note}\n");
    }
    report += "Checked: the INI syntax and the values of the options mdproxy agent takes, as\n\
               `mdproxy agent --config-file FILE` reads them. Not checked: that the files\n\
               named exist, that host names resolve.\n";
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::test_file as write;
    use crate::cli::{parse, Secret};
    use std::ffi::OsString;

    const ID: &str = "0d5e3c1c-6f4b-4b0e-9b8a-2a7d4f5c6e01";

    fn settings(text: &str) -> Result<Vec<String>, String> {
        let file = ConfigFile::parse("f.toml", text)?;
        let all = file
            .common
            .iter()
            .chain(file.roles.iter().flat_map(|t| &t.settings));
        Ok(all
            .map(|s| {
                let v = match &s.value {
                    Val::Str(v) => v.clone(),
                    other => format!("{other:?}"),
                };
                let line = match &s.origin {
                    Origin::Toml { line, table, .. } => format!("{table}:{line}"),
                    _ => unreachable!(),
                };
                format!("{line} {}={v}", s.name)
            })
            .collect())
    }

    #[test]
    fn keys_become_flags() {
        // (file, the settings it makes: table:line name=value)
        let cases: &[(&str, &[&str])] = &[
            ("debug = true", &["the top level:1 debug=Bool(true)"]),
            (
                "[common]\npid_file = \"/p\"\ntimeout-head = 0.5\n",
                &["[common]:2 pid-file=/p", "[common]:3 timeout-head=0.5"],
            ),
            (
                "[ns-proxy]\nlisten = [\"a:1\",\n  \"b:2\"]\nmax-conns = 0x10\n",
                &[
                    "[ns-proxy]:2 listen=a:1",
                    "[ns-proxy]:3 listen=b:2",
                    "[ns-proxy]:4 max-conns=16",
                ],
            ),
            (
                "[agent]\nworkers = 1_000\n[ns_proxy]\nrouter_id = 'x'\n",
                &["[agent]:2 workers=1000", "[ns_proxy]:4 router-id=x"],
            ),
            ("agent.backlog = 5\n", &["[agent]:1 backlog=5"]),
        ];
        for (text, want) in cases {
            let want: Vec<String> = want.iter().map(|w| w.to_string()).collect();
            assert_eq!(settings(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn file_errors_name_the_line() {
        let cases: &[(&str, &str)] = &[
            ("a = 1\nb =\n", "f.toml:2: string values must be quoted"),
            ("[nsproxy]\n", "f.toml:1: unknown table [nsproxy]"),
            (
                "\n[agent]\n[agent.x]\ny = 1\n",
                "f.toml:3: `x`: a table is not a value here",
            ),
            (
                "[server]\nlisten = []\n",
                "f.toml:2: `listen`: an empty list",
            ),
            (
                "[server]\nlisten = [[\"a\"]]\n",
                "f.toml:2: `listen`: a list in a list",
            ),
            ("[server]\nwhen = 1979-05-27\n", "f.toml:2: `when`: a date"),
            (
                "[agent]\npid_file = \"a\"\npid-file = \"b\"\n",
                "f.toml:3: `pid-file` sets what `pid_file` sets on line 2",
            ),
            (
                "debug = true\n[common]\ndebug = false\n",
                "f.toml:3: `debug` is set at the top level too (line 1)",
            ),
            (
                "[common]\nlisten = \"a:1\"\n",
                "f.toml:2: unknown key `listen` in [common]: every role's tables take it",
            ),
            (
                "drain-timeout = -1\n",
                "f.toml:1: `drain-timeout`: \"-1\" is out of range (accepted: 0 to 86400 seconds)",
            ),
            ("[agent]\nx = 1\n[ns_proxy]\n[ns-proxy]\n", "f.toml:"),
        ];
        for (text, want) in cases {
            let e = settings(text).unwrap_err();
            assert!(e.starts_with(want), "{text:?}: wanted {want:?}, got {e}");
        }
    }

    fn cmd(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(OsString::from))
    }

    /// A role configured from a file is the role configured by the same flags.
    #[test]
    fn a_file_configures_a_role_as_its_flags_do() {
        let file = write(
            "same.toml",
            &format!(
                "debug = true\n[common]\ntimeout-connect = 2\n\
                 [ns-proxy]\nrouter-id = \"{ID}\"\nlisten = [\"127.0.0.1:1\", \"[::1]:2\"]\n\
                 rate-limit = \"10/10,20/2\"\n\
                 [agent]\nshared-secret-file = \"/s\"\nstatic-map = \"/m\"\nworkers = 3\n\
                 socket-mode = \"all\"\n\
                 metadata-url = [\"http://192.0.2.1:8775\", \"http://192.0.2.2:8775\"]\n\
                 request-deadline = 3\nresponse-cache-ttl = 15\n\
                 [server]\ninstances = \"/i\"\ndirect = true\nimdsv2 = \"required\"\n\
                 [demo]\nlisten = \"127.0.0.1:5\"\n"
            ),
        );
        let config = file.to_str().unwrap();
        let common = ["--debug", "--timeout-connect=2"];
        let flags: [(&str, &[&str]); 4] = [
            (
                "ns-proxy",
                &[
                    "--router-id",
                    ID,
                    "--listen=127.0.0.1:1",
                    "--listen=[::1]:2",
                    "--rate-limit=10/10,20/2",
                ],
            ),
            (
                "agent",
                &[
                    "--shared-secret-file=/s",
                    "--static-map=/m",
                    "--workers=3",
                    "--socket-mode=all",
                    "--metadata-url=http://192.0.2.1:8775",
                    "--metadata-url=http://192.0.2.2:8775",
                    "--request-deadline=3",
                    "--response-cache-ttl=15",
                ],
            ),
            (
                "server",
                &["--instances=/i", "--direct", "--imdsv2=required"],
            ),
            ("demo", &["--listen=127.0.0.1:5"]),
        ];
        for (role, own) in flags {
            let from_file = cmd(&["mdproxy", "--config", config, role]);
            let argv: Vec<&str> = ["mdproxy", role]
                .iter()
                .chain(&common)
                .chain(own)
                .copied()
                .collect();
            let from_flags = cmd(&argv);
            assert_eq!(
                format!("{from_file:?}"),
                format!("{from_flags:?}"),
                "{role}"
            );
            assert!(from_file.is_ok(), "{from_file:?}");
        }
    }

    /// `mdproxy.example.toml` shows the defaults where it sets what every deployment shares
    /// (request limits, timeouts, connection limits): read for a role, it gives the endpoint
    /// settings the role has without it.
    #[test]
    fn the_example_file_shows_the_defaults() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../mdproxy.example.toml");
        let endpoint = |role: &str, own: &[&str]| {
            let mut argv = vec!["mdproxy", "--config", example, role];
            argv.extend(own);
            match cmd(&argv) {
                Ok(Command::NsProxy(c)) => (c.endpoint, c.drain_timeout),
                Ok(Command::Agent(c)) => (c.endpoint, c.drain_timeout),
                Ok(Command::Server(c)) => (c.endpoint, c.drain_timeout),
                other => panic!("{role}: {other:?}"),
            }
        };
        let defaults = crate::cli::EndpointArgs::default();
        let drain = Common::default().drain_timeout;
        let ns_proxy = crate::cli::EndpointArgs {
            conns: crate::cli::NS_PROXY_CONNS,
            ..defaults
        };
        assert_eq!(
            endpoint("ns-proxy", &["--router-id", ID]),
            (ns_proxy, drain)
        );
        assert_eq!(endpoint("agent", &[]), (defaults, drain));
        assert_eq!(endpoint("server", &[]), (defaults, drain));
    }

    #[test]
    fn flags_override_the_file() {
        let file = write(
            "override.toml",
            &format!(
                "daemonize = true\n[ns-proxy]\nrouter-id = \"{ID}\"\n\
                 listen = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\nmax-conns = 5\n"
            ),
        );
        let config = file.to_str().unwrap();
        let Ok(Command::NsProxy(cfg)) = cmd(&[
            "mdproxy",
            "--config",
            config,
            "ns-proxy",
            "--network_id",
            ID,
            "--metadata_port=80",
            "--max-conns=6",
            "--nodaemonize",
        ]) else {
            panic!("did not parse");
        };
        assert!(matches!(cfg.scope, mdproxy_core::scope::Scope::Network(_)));
        assert_eq!(cfg.listen, vec!["0.0.0.0:80".parse().unwrap()]);
        assert_eq!(cfg.endpoint.conns.max_conns, 6);
        assert!(!cfg.process.daemonize);
        // An error in a flag is the flag's; in the file, the file's line's.
        let e = cmd(&["mdproxy", "--config", config, "ns-proxy", "--max-conns=0"]);
        let range = "is out of range (accepted: 1 to 1000000)";
        assert_eq!(e.unwrap_err(), format!("--max-conns: \"0\" {range}"));
        let bad = write("bad.toml", "[ns-proxy]\n\nmax-conns = 0\n");
        let e = cmd(&["mdproxy", "--config", bad.to_str().unwrap(), "ns-proxy"]);
        assert_eq!(
            e.unwrap_err(),
            format!("{}:3: `max-conns`: \"0\" {range}", bad.display())
        );
        let e = cmd(&["mdproxy", "--config", "/nonexistent.toml", "agent"]).unwrap_err();
        assert!(e.starts_with("cannot read /nonexistent.toml"), "{e}");
        // Help needs no file.
        let help = cmd(&["mdproxy", "--config", "/nonexistent.toml", "agent", "-h"]);
        assert!(matches!(help, Ok(Command::Help(_))));
    }

    /// Every flag of the common set (as the roles' help lists them) is a key of `[common]`,
    /// whatever it is: the file takes them through the same parser.
    #[test]
    fn every_common_flag_is_a_common_key() {
        let help = super::super::ns_proxy::HELP;
        let start = help.find("Request limits (what").unwrap();
        let end = help.find("Every flag may also be spelled").unwrap();
        let flags: Vec<&str> = help[start..end]
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("--"))
            .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
            .filter(|w| !w.is_empty() && *w != "help" && !w.contains('='))
            .collect();
        assert!(flags.len() >= 10, "{flags:?}");
        for flag in flags {
            let mut known = false;
            for value in ["true", "\"1\"", "\"127.0.0.1:9180\"", "\"mio\"", "\"x\""] {
                let text = format!("[common]\n{flag} = {value}\n");
                match ConfigFile::parse("f.toml", &text) {
                    Ok(_) => known = true,
                    Err(e) => known |= !e.contains("unknown key"),
                }
            }
            assert!(known, "`{flag}` is not a [common] key");
        }
    }

    #[test]
    fn secrets_only_from_ini_files_and_never_shown() {
        let ini = write(
            "secrets.ini",
            "[DEFAULT]\nmetadata_proxy_shared_secret = hunter2\n[keystone_authtoken]\n\
             auth_url = http://ks:5000\nusername = u\npassword = hunter3\nproject_name = p\n",
        );
        let ini = ini.to_str().unwrap();
        let Ok(Command::Agent(agent)) = cmd(&["mdproxy", "agent", "--config-file", ini]) else {
            panic!("did not parse");
        };
        let shown = format!("{agent:?}");
        assert!(!shown.contains("hunter"), "{shown}");
        assert!(
            shown.contains(&format!("Inline(set in {ini}:2, not shown)")),
            "{shown}"
        );
        let Secret::Inline { value, .. } = &agent.shared_secret else {
            panic!("{shown}");
        };
        assert_eq!(value, "hunter2");
        // A flag naming a file replaces the INI's secrets.
        let argv = [
            "mdproxy",
            "agent",
            "--config-file",
            ini,
            "--shared-secret-file=/s",
        ];
        let Ok(Command::Agent(agent)) = cmd(&argv) else {
            panic!("did not parse");
        };
        assert_eq!(agent.shared_secret, Secret::File("/s".into()));
        // Neither the command line nor a TOML file holds a secret itself.
        let e = cmd(&["mdproxy", "agent", "--static-map=/m", "--shared-secret=x"]).unwrap_err();
        assert!(e.starts_with("unknown option --shared-secret"), "{e}");
        let toml = write(
            "secret.toml",
            "[agent]\nstatic-map = \"/m\"\npassword = \"x\"\n",
        );
        let e = cmd(&["mdproxy", "--config", toml.to_str().unwrap(), "agent"]).unwrap_err();
        assert!(e.ends_with(":3: unknown key `password` in [agent]"), "{e}");
    }

    #[test]
    fn check_config_takes_one_file() {
        let ok = cmd(&["mdproxy", "check-config", "f.toml"]);
        assert!(matches!(ok, Ok(Command::CheckConfig(p)) if p == Path::new("f.toml")));
        for bad in [
            &["mdproxy", "check-config"][..],
            &["mdproxy", "check-config", "a", "b"],
            &["mdproxy", "--config", "x", "check-config", "f"],
            &["mdproxy", "--config"],
            &["mdproxy", "--config", "x"],
        ] {
            assert!(cmd(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn check_config_reports_or_names_the_line() {
        let good = write(
            "good.toml",
            "[ns-proxy]\nupstream-socket = \"/run/mp\"\n[agent]\nshared-secret-file = \"/s\"\n\
             static-map = \"/nonexistent/m.toml\"\n",
        );
        let report = check(&good).unwrap();
        assert!(
            report.contains("[ns-proxy]: 1 setting; no router-id"),
            "{report}"
        );
        assert!(report.contains("[agent]: 2 settings\n"), "{report}");
        let cases: &[(&str, &str)] = &[
            (
                "[ns-proxy]\nlisen = \"0.0.0.0:1\"\n",
                ":2: unknown key `lisen` in [ns-proxy]",
            ),
            (
                "[ns-proxy]\nrouter-id = \"nope\"\n",
                ":2: `router-id`: \"nope\" is not a UUID",
            ),
            (
                "[agent]\nshared-secret-file = \"/s\"\nstatic-map = \"/m\"\n\n\
                 metadata-url = \"http://nova:99999\"\n",
                ":5: `metadata-url`: \"http://nova:99999\" is not",
            ),
            (
                "\n\n[agent]\nstatic-map = \"/m\"\n",
                ":3: [agent]: --shared-secret-file is required",
            ),
            (
                "[server]\ninstances = \"/i\"\ndirect = \"yes\"\n",
                ":3: `direct`: \"yes\" is not true",
            ),
        ];
        for (i, (text, want)) in cases.iter().enumerate() {
            let path = write(&format!("bad{i}.toml"), text);
            let e = check(&path).unwrap_err();
            let want = format!("{}{want}", path.display());
            assert!(e.starts_with(&want), "wanted {want:?}, got {e:?}");
        }
    }
}
