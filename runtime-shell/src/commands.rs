//! Listeners added and removed while a loop runs (the node role: a provisioner, or a watched
//! directory, says which namespaces to serve). The shell owns the queue; a loop polls the wake
//! socket of its [`Commands`] beside its others and, when it is readable, takes what is queued
//! with [`Commands::take`] and carries it out. Nothing else of the loop stops or waits: the
//! sockets of a command were bound by the sender (in whatever namespace), so the loop only
//! registers or drops them.
//!
//! Why a channel and a socket: the channel carries the values (sockets, settings), and one
//! byte on a socket pair wakes the loop's poller, which waits on sockets only. The sender
//! queues before it writes, and the loop reads the bytes before it empties the channel, so no
//! command is left behind by a wake-up; a full socket drops the byte, which is fine: unread
//! bytes mean a wake-up is pending anyway.

use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender};

use mdproxy_core::listener::{ListenerId, ScopedListener};

use crate::Listener;

/// What a loop is asked to do with its listeners.
pub enum Command {
    /// Register `scope` under `id` with the endpoint, then accept on `sockets` (each tagged
    /// with `id` by the loop). An `id` already registered gets the new settings and more
    /// sockets.
    Add {
        /// The registration's id (the sender's counter).
        id: ListenerId,
        /// Its scope and limits.
        scope: ScopedListener,
        /// Bound, listening sockets.
        sockets: Vec<Listener>,
    },
    /// Close every socket of `id` and forget it; its connections finish (see
    /// [`Endpoint::remove_listener`](mdproxy_core::endpoint::Endpoint::remove_listener)).
    Remove(ListenerId),
}

/// The sender's end: cheap to clone, usable from any thread.
pub struct ListenerControl {
    tx: Sender<Command>,
    wake: UnixStream,
}

/// The loop's end, handed to it in [`RunOptions::commands`](crate::RunOptions::commands).
pub struct Commands {
    rx: Receiver<Command>,
    wake: UnixStream,
}

/// A queue of listener commands for one loop.
pub fn command_queue() -> io::Result<(ListenerControl, Commands)> {
    let (tx, rx) = mpsc::channel();
    let (theirs, ours) = UnixStream::pair()?;
    theirs.set_nonblocking(true)?;
    ours.set_nonblocking(true)?;
    let control = ListenerControl { tx, wake: theirs };
    Ok((control, Commands { rx, wake: ours }))
}

impl ListenerControl {
    /// Queues `cmd` and wakes the loop. Fails once the loop has stopped.
    pub fn send(&self, cmd: Command) -> io::Result<()> {
        self.tx
            .send(cmd)
            .map_err(|_| io::Error::new(ErrorKind::NotConnected, "the loop has stopped"))?;
        match (&self.wake).write(&[1]) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Another handle on the same queue.
    pub fn try_clone(&self) -> io::Result<ListenerControl> {
        Ok(ListenerControl {
            tx: self.tx.clone(),
            wake: self.wake.try_clone()?,
        })
    }
}

impl Commands {
    /// The socket that turns readable when commands are queued (non-blocking), for the loop's
    /// poller.
    pub fn wake_socket(&self) -> &UnixStream {
        &self.wake
    }

    /// Every queued command, oldest first, after reading the wake-up bytes.
    pub fn take(&self) -> Vec<Command> {
        let mut buf = [0u8; 64];
        loop {
            match (&self.wake).read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.rx.try_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Listener;
    use mdproxy_core::scope::{Scope, Uuid};
    use std::net::SocketAddr;

    #[test]
    fn a_command_wakes_the_loop_and_arrives_in_order() {
        let (control, commands) = command_queue().unwrap();
        assert!(commands.take().is_empty());
        let l = Listener::bind_tcp(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let scope = ScopedListener {
            scope: Scope::Router(Uuid(7)),
            rate_limit: None,
            max_conns: 1,
            imdsv2: None,
        };
        let id = ListenerId(3);
        let add = Command::Add {
            id,
            scope,
            sockets: vec![l],
        };
        control.send(add).unwrap();
        control
            .try_clone()
            .unwrap()
            .send(Command::Remove(id))
            .unwrap();
        let mut fds = [libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(commands.wake_socket()),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd; a zero timeout: the bytes were written above.
        assert_eq!(unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) }, 1, "woken");
        let got = commands.take();
        assert!(
            matches!(got.as_slice(), [Command::Add { id: a, .. }, Command::Remove(b)] if *a == id && *b == id)
        );
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) },
            0,
            "bytes read"
        );
        drop(commands);
        assert!(
            control.send(Command::Remove(id)).is_err(),
            "the loop is gone"
        );
    }
}
