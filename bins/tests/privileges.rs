//! The process around a role, as root sees it (security issue 14): dropping to ids that have
//! no passwd or group entry, and files written while still root (pid file, log file) in a
//! directory where another user may have planted a symbolic link. The tests that switch ids
//! need root, as in CI; elsewhere they say so and pass without checking.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use common::*;

runtime_tests! {
    numeric_user_without_passwd_entry_needs_a_group,
    dropping_privileges_clears_the_supplementary_groups,
    pid_file_is_not_written_through_a_planted_link,
    log_file_that_is_a_link_is_refused,
}

const VICTIM: &str = "root's file, not to be overwritten\n";

/// A uid and a gid with no passwd and no group entry: the case where the user's primary group
/// cannot be looked up.
fn unknown_ids() -> (u32, u32) {
    // SAFETY: getpwuid/getgrgid return NULL or a pointer to static data, only tested for NULL.
    let free = |id: u32| unsafe { libc::getpwuid(id).is_null() && libc::getgrgid(id).is_null() };
    let uid = (42_420..43_000).find(|&id| free(id)).expect("a free uid");
    let gid = (uid + 1..43_001).find(|&id| free(id)).expect("a free gid");
    (uid, gid)
}

fn is_root() -> bool {
    // SAFETY: no arguments, no failure.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("not root: ids cannot be switched here; not checked");
    }
    root
}

/// ns-proxy's command line with `extra`, on a free port (the upstream is never asked).
fn ns_proxy_args(rt: Runtime, dir: &TempDir, extra: &[String]) -> Vec<String> {
    let mut args = vec![
        "ns-proxy".to_owned(),
        format!("--listen=127.0.0.1:{}", free_port()),
        format!("--router-id={ROUTER}"),
        format!("--upstream-socket={}", dir.join("agent.sock").display()),
        format!("--runtime={}", rt.name()),
    ];
    args.extend_from_slice(extra);
    args
}

/// The `Name:` line of `/proc/<pid>/status`, without the name.
fn status_line(pid: u32, name: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find_map(|l| l.strip_prefix(name));
    line.unwrap_or_default().trim().to_owned()
}

fn numeric_user_without_passwd_entry_needs_a_group(rt: Runtime) {
    let dir = TempDir::new();
    let (uid, _) = unknown_ids();
    let args = ns_proxy_args(rt, &dir, &[format!("--user={uid}")]);
    assert_exit_2(&args, "--group");
    assert_exit_2(&args, &format!("--user {uid} has no passwd entry"));
}

fn dropping_privileges_clears_the_supplementary_groups(rt: Runtime) {
    if !is_root() {
        return;
    }
    let dir = TempDir::new();
    let (uid, gid) = unknown_ids();
    let proxy = Proxy::start(
        rt,
        &dir.join("agent.sock"),
        &["--user", &uid.to_string(), "--group", &gid.to_string()],
    );
    let want_uid = format!("{uid}\t{uid}\t{uid}\t{uid}");
    let dropped = eventually(|| status_line(proxy.pid(), "Uid:") == want_uid);
    assert!(dropped, "Uid: {}", status_line(proxy.pid(), "Uid:"));
    assert_eq!(
        status_line(proxy.pid(), "Gid:"),
        format!("{gid}\t{gid}\t{gid}\t{gid}")
    );
    assert_eq!(
        status_line(proxy.pid(), "Groups:"),
        "",
        "no supplementary group may survive the switch"
    );
}

/// Whether `path` is itself a symbolic link.
fn is_link(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn pid_file_is_not_written_through_a_planted_link(rt: Runtime) {
    let dir = TempDir::new();
    let (victim, other_victim) = (dir.join("victim"), dir.join("other-victim"));
    fs::write(&victim, VICTIM).unwrap();
    fs::write(&other_victim, VICTIM).unwrap();
    let pid_file = dir.join("ns.pid");
    // Where the temporary used to go, and the pid file itself.
    symlink(&victim, dir.join("ns.pid.tmp")).unwrap();
    symlink(&other_victim, &pid_file).unwrap();
    let proxy = Proxy::start(
        rt,
        &dir.join("agent.sock"),
        &[&format!("--pid-file={}", pid_file.display())],
    );
    let pid = format!("{}\n", proxy.pid());
    let written = eventually(|| !is_link(&pid_file) && fs::read_to_string(&pid_file).is_ok());
    assert!(written, "no pid file: {}", proxy.log());
    assert_eq!(fs::read_to_string(&pid_file).unwrap(), pid);
    assert_eq!(fs::read_to_string(&victim).unwrap(), VICTIM);
    assert_eq!(fs::read_to_string(&other_victim).unwrap(), VICTIM);
    let left: Vec<String> = fs::read_dir(dir.join(""))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") && n != "ns.pid.tmp")
        .collect();
    assert!(left.is_empty(), "temporaries left behind: {left:?}");
}

fn log_file_that_is_a_link_is_refused(rt: Runtime) {
    let dir = TempDir::new();
    let victim = dir.join("victim");
    fs::write(&victim, VICTIM).unwrap();
    let log = dir.join("ns.log");
    symlink(&victim, &log).unwrap();
    let args = ns_proxy_args(rt, &dir, &[format!("--log-file={}", log.display())]);
    assert_exit_2(&args, "is a symbolic link");
    assert_eq!(fs::read_to_string(&victim).unwrap(), VICTIM);
    // A dangling link is not followed either (it would create the file it names).
    let absent = dir.join("absent");
    let dangling = dir.join("dangling.log");
    symlink(&absent, &dangling).unwrap();
    let args = ns_proxy_args(rt, &dir, &[format!("--log-file={}", dangling.display())]);
    assert_exit_2(&args, "is a symbolic link");
    assert!(!absent.exists(), "the link was followed");
}
