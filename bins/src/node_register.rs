//! `mdproxy node-register`: the process that stands for one router's or network's metadata
//! proxy where a node serves them all. It writes the node's file for it, then only waits: for
//! SIGTERM (Neutron stopping the proxy), on which it removes the file. Neutron's process
//! monitor sees what it sees of haproxy: the pid file, and a `/proc/PID/cmdline` naming the
//! UUID. The file carries this process's id (`owner_pid`), so a node stops serving a
//! registration whose process was killed (SIGKILL, after Neutron's SIGTERM timeout) and could
//! not remove it.
//!
//! It waits in `sigwait(2)` with the signals blocked: no handler, no thread, no event loop, so
//! its memory is the binary's pages it touched and little else.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::process::ExitCode;

use crate::{cli, os, Failure};

pub fn main(r: cli::Register) -> ExitCode {
    if let Err(failure) = os::init_logging(None, false) {
        let (msg, code) = failure.message_and_code();
        eprintln!("mdproxy: {msg}");
        return ExitCode::from(code);
    }
    match run(r) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let (msg, code) = failure.message_and_code();
            log::error!("{msg}");
            ExitCode::from(code)
        }
    }
}

fn run(mut r: cli::Register) -> Result<(), Failure> {
    if !fs::metadata(&r.dir).is_ok_and(|m| m.is_dir()) {
        let msg = format!("--dir {} is not a directory", r.dir.display());
        return Err(Failure::Config(msg));
    }
    // Blocked before the fork, so that no signal can end the process between writing the
    // file and waiting (the mask is inherited).
    let signals = block_signals().map_err(|e| Failure::System(format!("sigprocmask: {e}")))?;
    if r.daemonize {
        os::daemonize().map_err(|e| Failure::System(format!("cannot daemonize: {e}")))?;
    }
    let _pid_file = match &r.pid_file {
        Some(path) => Some(os::PidFile::write(path).map_err(|e| {
            Failure::System(format!("cannot write pid file {}: {e}", path.display()))
        })?),
        None => None,
    };
    r.unit.owner_pid = Some(std::process::id());
    let text = r.unit.to_toml();
    let name = format!("{}.toml", r.unit.scope.id());
    let path = r.dir.join(&name);
    os::replace_file(&r.dir, OsStr::new(&name), text.as_bytes(), 0o644)
        .map_err(|e| Failure::System(format!("cannot write {}: {e}", path.display())))?;
    log::info!("registered {}", path.display());
    wait_for_stop(&signals);
    // Another registration of the same UUID may have replaced the file since: leave it.
    if fs::read_to_string(&path).is_ok_and(|now| now == text) {
        if let Err(e) = fs::remove_file(&path) {
            log::warn!("cannot remove {}: {e}", path.display());
        }
    }
    Ok(())
}

/// Blocks SIGTERM, SIGINT and SIGHUP for `sigwait`.
fn block_signals() -> io::Result<libc::sigset_t> {
    // SAFETY: `set` is initialised by sigemptyset before use; plain syscalls on it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        match libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) {
            0 => Ok(set),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// Returns on SIGTERM or SIGINT; SIGHUP (a terminal's hangup, a reload) is ignored.
fn wait_for_stop(set: &libc::sigset_t) {
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is a valid signal set, `sig` a valid out-pointer.
        let e = unsafe { libc::sigwait(set, &mut sig) };
        if e == 0 && (sig == libc::SIGTERM || sig == libc::SIGINT) {
            return;
        }
    }
}
