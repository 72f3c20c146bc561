//! Where a role's settings come from. Every role parses its settings in one loop over
//! [`Args`], whatever their source: the command line (through lexopt), or a list of
//! [`Setting`]s made from a TOML file's tables, Neutron's INI files and the command line, in
//! that order of precedence. So a setting from a file is checked by the very code that checks
//! the flag, and an error found in a file names its line ([`Args::locate`]).

use std::rc::Rc;

use lexopt::Arg::{Long, Short};

use super::unexpected;

/// A setting's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Val {
    /// A bare flag on the command line (`--debug`): a switch, or a flag missing its value.
    Bare,
    Str(String),
    /// A TOML boolean or an INI one (`True`, `no`, ...).
    Bool(bool),
}

/// Where a setting was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Cli,
    /// A key of a TOML file; `table` is how messages name its table (`[agent]`).
    Toml {
        file: Rc<str>,
        line: usize,
        table: Rc<str>,
    },
    /// Settings of Neutron's oslo INI files (line 0: a default, not in the file).
    Ini {
        file: Rc<str>,
        line: usize,
    },
}

impl Origin {
    /// `FILE:LINE` (or `FILE` for line 0), `None` for the command line.
    pub fn place(&self) -> Option<String> {
        match self {
            Origin::Cli => None,
            Origin::Toml { file, line, .. } | Origin::Ini { file, line } => Some(match line {
                0 => file.to_string(),
                n => format!("{file}:{n}"),
            }),
        }
    }
}

/// One setting: a flag with its value. No `Debug`: the value may be a secret (an INI file's).
#[derive(Clone)]
pub struct Setting {
    /// The flag's canonical name: `pid-file` for `--pid_file` or a `pid_file` key.
    pub name: String,
    /// How messages quote it: `--pid-file`, `` `pid_file` ``, or the INI keys it came from.
    pub spelled: String,
    pub value: Val,
    pub origin: Origin,
}

impl Setting {
    pub fn new(name: &str, spelled: String, value: Val, origin: Origin) -> Setting {
        Setting {
            name: name.replace('_', "-"),
            spelled,
            value,
            origin,
        }
    }
}

/// The settings a role's parser reads, one at a time: [`next_flag`](super::next_flag), then
/// [`value`](super::value) or [`switch`](super::switch) for its value.
pub struct Args {
    /// Pass one, the command line alone (its settings are recorded in `settings` as they are
    /// read); `None`: `settings` is the whole list.
    cli: Option<lexopt::Parser>,
    settings: Vec<Setting>,
    /// The index of the setting being parsed, plus one (0: none yet).
    pos: usize,
    /// Whether the current setting's value was taken.
    consumed: bool,
    /// Whether the last setting was read.
    done: bool,
}

impl Args {
    /// The command line after the role's name.
    pub fn cli(parser: lexopt::Parser) -> Args {
        Args {
            cli: Some(parser),
            settings: Vec::new(),
            pos: 0,
            consumed: true,
            done: false,
        }
    }

    /// A list of settings (from files, and the command line as [`Args::into_settings`] read
    /// it), the lowest precedence first.
    pub fn list(settings: Vec<Setting>) -> Args {
        Args {
            cli: None,
            settings,
            pos: 0,
            consumed: true,
            done: false,
        }
    }

    /// What was read: for the command line, each flag with its value, as spelled.
    pub fn into_settings(self) -> Vec<Setting> {
        self.settings
    }

    /// Whether every setting was read (an error then is about how they combine, not one).
    pub fn done(&self) -> bool {
        self.done
    }

    fn current(&self) -> Option<&Setting> {
        self.pos.checked_sub(1).and_then(|i| self.settings.get(i))
    }

    /// Where the setting being parsed came from.
    pub fn origin(&self) -> &Origin {
        self.current().map_or(&Origin::Cli, |s| &s.origin)
    }

    /// `msg` about the setting being parsed, prefixed with its `FILE:LINE` if it came from a
    /// file.
    pub fn locate(&self, msg: String) -> String {
        match (self.done, self.origin().place()) {
            (false, Some(place)) => format!("{place}: {msg}"),
            _ => msg,
        }
    }

    /// Whether a setting came from Neutron's INI files.
    pub fn has_ini(&self) -> bool {
        let ini = |s: &Setting| matches!(s.origin, Origin::Ini { .. });
        self.cli.is_none() && self.settings.iter().any(ini)
    }

    /// Whether the setting being parsed came from Neutron's INI files, which hold secrets
    /// themselves (TOML files and the command line name files holding them).
    pub fn inline_secret(&self) -> bool {
        matches!(self.origin(), Origin::Ini { .. })
    }

    /// The next setting's canonical name (`-h` is `help`, underscores become dashes) and how
    /// to quote it in messages; `None` after the last.
    pub fn next_flag(&mut self) -> Result<Option<(String, String)>, String> {
        self.check_consumed()?;
        let Some(parser) = &mut self.cli else {
            if self.pos >= self.settings.len() {
                self.done = true;
                return Ok(None);
            }
            self.pos += 1;
            self.consumed = false;
            let s = &self.settings[self.pos - 1];
            let from_toml = matches!(s.origin, Origin::Toml { .. });
            // Not settings: a file cannot ask for help or name more files.
            if from_toml && ["help", "config-file", "config-dir"].contains(&s.name.as_str()) {
                return Err(self.unknown(""));
            }
            return Ok(Some((s.name.clone(), s.spelled.clone())));
        };
        let Some(arg) = parser.next().map_err(|e| e.to_string())? else {
            self.done = true;
            return Ok(None);
        };
        let name = match &arg {
            Short('h') => "help".to_owned(),
            Long(name) => name.replace('_', "-"),
            _ => return Err(unexpected(&arg)),
        };
        let flag = format!("--{name}");
        self.settings
            .push(Setting::new(&name, flag.clone(), Val::Bare, Origin::Cli));
        self.pos = self.settings.len();
        Ok(Some((name, flag)))
    }

    /// A value given to a setting that takes none (a switch given a string) is an error;
    /// `true` is what the bare flag means.
    fn check_consumed(&self) -> Result<(), String> {
        match self.current().map(|s| &s.value) {
            Some(Val::Str(v)) if !self.consumed => Err(format!(
                "{}: takes no value (it is a switch: true or false), not {v:?}",
                self.current().map_or("", |s| &s.spelled)
            )),
            Some(Val::Bool(false)) if !self.consumed => Err(format!(
                "{}: false is not possible here: leave it out",
                self.current().map_or("", |s| &s.spelled)
            )),
            _ => Ok(()),
        }
    }

    /// The value of the setting `flag` being parsed, as UTF-8.
    pub fn value(&mut self, flag: &str) -> Result<String, String> {
        self.consumed = true;
        if let Some(parser) = &mut self.cli {
            let v = parser.value().map_err(|e| e.to_string())?;
            let v = v
                .into_string()
                .map_err(|v| format!("{flag}: {v:?} is not valid UTF-8"))?;
            if let Some(s) = self.settings.last_mut() {
                s.value = Val::Str(v.clone());
            }
            return Ok(v);
        }
        match self.current().map(|s| &s.value) {
            Some(Val::Str(v)) => Ok(v.clone()),
            Some(Val::Bool(b)) => Err(format!(
                "{flag}: takes a value (a string or a number), not {b}"
            )),
            _ => Err(format!("missing argument for option '{flag}'")),
        }
    }

    /// The value given with `=` on the command line, or in a file, if any.
    pub fn optional_value(&mut self) -> Option<String> {
        self.consumed = true;
        if let Some(parser) = &mut self.cli {
            let v = parser
                .optional_value()
                .map(|v| v.to_string_lossy().into_owned());
            if let (Some(s), Some(v)) = (self.settings.last_mut(), &v) {
                s.value = Val::Str(v.clone());
            }
            return v;
        }
        match self.current().map(|s| &s.value) {
            Some(Val::Str(v)) => Some(v.clone()),
            Some(Val::Bool(b)) => Some(b.to_string()),
            _ => None,
        }
    }

    /// A switch: on when given bare on the command line; a file says true or false.
    pub fn switch(&mut self, flag: &str) -> Result<bool, String> {
        self.consumed = true;
        match self.current().map(|s| &s.value) {
            Some(Val::Bool(b)) => Ok(*b),
            Some(Val::Str(v)) if self.cli.is_none() => {
                Err(format!("{flag}: {v:?} is not true or false"))
            }
            _ => Ok(true),
        }
    }

    /// The error for a flag or key the role does not take.
    pub fn unknown(&self, flag: &str) -> String {
        match (self.current(), self.cli.is_some()) {
            (Some(s), false) => match &s.origin {
                Origin::Toml { table, .. } => format!("unknown key {} in {table}", s.spelled),
                Origin::Ini { .. } => format!("{} is not a setting of this role", s.spelled),
                Origin::Cli => format!("unknown option {} (try --help)", s.spelled),
            },
            _ => format!("unknown option {flag} (try --help)"),
        }
    }
}

/// Stacks layers of settings, the lowest precedence first: a setting a higher layer gives
/// drops the lower layers' settings of it, so that a repeatable flag (`listen`) given on the
/// command line replaces the file's list instead of adding to it. `same(name)` names the
/// setting a flag sets, for flags that are other spellings or alternatives of one setting
/// (`metadata-port` and `listen`, `router-id` and `network-id`).
pub fn stack(layers: Vec<Vec<Setting>>, same: impl Fn(&str) -> String) -> Vec<Setting> {
    let mut given: Vec<String> = Vec::new();
    let mut kept: Vec<Vec<Setting>> = Vec::new();
    for layer in layers.into_iter().rev() {
        let names: Vec<String> = layer.iter().map(|s| same(&s.name)).collect();
        kept.push(
            layer
                .into_iter()
                .filter(|s| !given.contains(&same(&s.name)))
                .collect(),
        );
        given.extend(names);
    }
    kept.into_iter().rev().flatten().collect()
}

/// Writes `text` to the file `name` in a directory of this test process; its path.
#[cfg(test)]
pub fn test_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mdp-cli-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, v: Val, line: usize) -> Setting {
        let origin = Origin::Toml {
            file: "f.toml".into(),
            line,
            table: "[t]".into(),
        };
        Setting::new(name, format!("`{name}`"), v, origin)
    }

    fn cli(name: &str, v: &str) -> Setting {
        Setting::new(name, format!("--{name}"), Val::Str(v.into()), Origin::Cli)
    }

    fn names(settings: &[Setting]) -> Vec<String> {
        settings
            .iter()
            .map(|s| match &s.value {
                Val::Str(v) => format!("{}={v}", s.name),
                other => format!("{}={other:?}", s.name),
            })
            .collect()
    }

    #[test]
    fn a_higher_layer_replaces_a_setting_and_its_other_spellings() {
        let same = |n: &str| match n {
            "metadata-port" => "listen".to_owned(),
            n => n.to_owned(),
        };
        let files = vec![
            file("listen", Val::Str("a".into()), 1),
            file("listen", Val::Str("b".into()), 2),
            file("debug", Val::Bool(true), 3),
        ];
        let stacked = stack(vec![files, vec![cli("metadata-port", "80")]], same);
        assert_eq!(names(&stacked), ["debug=Bool(true)", "metadata-port=80"]);
    }

    #[test]
    fn values_and_switches_from_a_list() {
        let mut args = Args::list(vec![
            file("listen", Val::Str("a".into()), 4),
            file("debug", Val::Bool(false), 5),
            file("debug", Val::Str("yes".into()), 6),
        ]);
        assert_eq!(args.next_flag().unwrap().unwrap().0, "listen");
        assert_eq!(args.value("`listen`").unwrap(), "a");
        assert_eq!(args.next_flag().unwrap().unwrap().1, "`debug`");
        assert_eq!(args.switch("`debug`"), Ok(false));
        args.next_flag().unwrap();
        let e = args.switch("`debug`").unwrap_err();
        assert_eq!(
            args.locate(e),
            "f.toml:6: `debug`: \"yes\" is not true or false"
        );
        assert!(args.next_flag().unwrap().is_none() && args.done());
        assert_eq!(args.locate("late".into()), "late");
    }

    #[test]
    fn unused_values_are_errors() {
        // A switch that never asked for its value (as `--verbose` does not) given a string.
        let mut args = Args::list(vec![
            file("verbose", Val::Str("x".into()), 2),
            file("listen", Val::Bool(true), 3),
        ]);
        args.next_flag().unwrap();
        let e = args.next_flag().unwrap_err();
        assert!(e.contains("takes no value"), "{e}");
        let mut args = Args::list(vec![file("listen", Val::Bool(true), 3)]);
        args.next_flag().unwrap();
        assert!(args
            .value("`listen`")
            .unwrap_err()
            .contains("takes a value"));
        let mut args = Args::list(vec![file("help", Val::Bool(true), 7)]);
        let e = args.next_flag().unwrap_err();
        assert_eq!(args.locate(e), "f.toml:7: unknown key `help` in [t]");
    }

    #[test]
    fn the_command_line_is_recorded() {
        let argv = ["x", "--pid_file=/p", "--debug", "--listen", "a"];
        let mut args = Args::cli(lexopt::Parser::from_iter(argv));
        while let Some((name, flag)) = args.next_flag().unwrap() {
            if name == "debug" {
                assert_eq!(args.switch(&flag), Ok(true));
            } else {
                args.value(&flag).unwrap();
            }
        }
        let got = names(&args.into_settings());
        assert_eq!(got, ["pid-file=/p", "debug=Bare", "listen=a"]);
    }
}
