//! `--runtime` and `--version` against the real binary: it names the runtimes its Cargo
//! features compiled in, and refuses any other as a usage error (exit 2), in every role.

mod common;

use common::*;

const ROLES: [&str; 4] = ["ns-proxy", "agent", "server", "demo"];

/// Each runtime mdproxy has, and whether this build carries it.
const RUNTIMES: [(&str, bool); 2] = [
    ("mio", cfg!(feature = "mio")),
    ("smol", cfg!(feature = "smol")),
];

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn version_names_the_runtimes_compiled_in() {
    let (status, out, _) = run_binary(&["--version"]);
    assert!(status.success(), "{out}");
    let (_, runtimes) = out.split_once("runtimes: ").expect("a list of runtimes");
    for (name, built) in RUNTIMES {
        assert_eq!(runtimes.contains(name), built, "{name}: {out}");
    }
}

#[test]
fn unknown_runtime_exits_2_in_every_role() {
    for role in ROLES {
        for spelling in [&["--runtime", "bogus"][..], &["--runtime=bogus"]] {
            let argv = args(&[&[role][..], spelling].concat());
            assert_exit_2(&argv, "--runtime: unknown runtime \"bogus\"");
        }
    }
}

#[test]
fn help_offers_exactly_the_runtimes_compiled_in() {
    for role in ROLES {
        let (status, out, _) = run_binary(&[role, "--help"]);
        assert!(status.success(), "{out}");
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("--runtime NAME"))
            .unwrap_or_else(|| panic!("{role} --help has no --runtime line:\n{out}"));
        for (name, built) in RUNTIMES {
            assert_eq!(line.contains(name), built, "{role}: {line}");
        }
    }
}

/// Only a build without one of them has something to refuse.
#[cfg(not(all(feature = "mio", feature = "smol")))]
#[test]
fn runtime_not_compiled_in_exits_2() {
    for (name, _) in RUNTIMES.iter().filter(|(_, built)| !built) {
        for role in ROLES {
            let argv = args(&[role, "--runtime", name]);
            assert_exit_2(&argv, "not compiled into this build");
        }
    }
}
