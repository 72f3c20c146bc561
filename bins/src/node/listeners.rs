//! The one small API through which anything that decides what a node serves — the watcher of
//! `--watch-dir`, the OVN provisioner — adds and removes listeners while the node runs: bind
//! these addresses inside this namespace for this scope, or stop. Binding happens on the
//! caller's thread (through `netns`), so the event loop never waits for a namespace; the bound
//! sockets reach the loop through its command queue.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mdproxy_core::listener::{ListenerId, ScopedListener};
use mdproxy_shell::{Command, ListenerControl};

use crate::netns;

/// Why [`Listeners::add`] did not add.
#[derive(Debug)]
pub enum AddError {
    /// A namespace or address could not be used (the message says which).
    Bind(String),
    /// The node's loop has stopped.
    Stopped,
}

/// The node's loop has stopped: nothing can be added or removed any more.
#[derive(Debug)]
pub struct Stopped;

/// A handle on the listeners of a running node.
pub struct Listeners {
    control: ListenerControl,
    /// Shared by every handle of one loop (the watcher's, the provisioner's), so their ids
    /// never collide.
    last_id: Arc<AtomicU64>,
}

impl Listeners {
    pub fn new(control: ListenerControl) -> Listeners {
        Listeners {
            control,
            last_id: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Another handle on the same loop, for another thread.
    pub fn try_clone(&self) -> io::Result<Listeners> {
        Ok(Listeners {
            control: self.control.try_clone()?,
            last_id: Arc::clone(&self.last_id),
        })
    }

    /// Serves `scope` on each of `listen` (`ADDR:PORT`, an interface name looked up inside the
    /// namespace) in network namespace `namespace` (`/run/netns/NAME`; `None`: the node's
    /// own). Returns the id to remove it by and the bound addresses.
    pub fn add(
        &self,
        namespace: Option<&str>,
        listen: &[String],
        scope: ScopedListener,
    ) -> Result<(ListenerId, Vec<String>), AddError> {
        let sockets = netns::bind_in(namespace, listen).map_err(AddError::Bind)?;
        let bound = sockets.iter().map(ToString::to_string).collect();
        let id = ListenerId(self.last_id.fetch_add(1, Ordering::Relaxed) + 1);
        let add = Command::Add { id, scope, sockets };
        self.control.send(add).map_err(|_| AddError::Stopped)?;
        Ok((id, bound))
    }

    /// Stops serving `id`: its sockets close, its connections finish their exchange.
    pub fn remove(&self, id: ListenerId) -> Result<(), Stopped> {
        self.control.send(Command::Remove(id)).map_err(|_| Stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdproxy_core::scope::{Scope, Uuid};
    use mdproxy_shell::command_queue;

    /// The watcher's and the provisioner's handles share one id space: the loop can tell
    /// their listeners apart.
    #[test]
    fn handles_of_one_loop_never_reuse_an_id() {
        let (control, commands) = command_queue().unwrap();
        let watcher = Listeners::new(control);
        let provisioner = watcher.try_clone().unwrap();
        let scope = || ScopedListener {
            scope: Scope::OvnNetwork(Uuid(1)),
            rate_limit: None,
            max_conns: 1,
            imdsv2: None,
        };
        let here = ["127.0.0.1:0".to_owned()];
        let (a, _) = watcher.add(None, &here, scope()).unwrap();
        let (b, _) = provisioner.add(None, &here, scope()).unwrap();
        let (c, _) = watcher.add(None, &here, scope()).unwrap();
        assert!(a != b && b != c && a != c, "{a:?} {b:?} {c:?}");
        provisioner.remove(b).unwrap();
        let ids: Vec<ListenerId> = commands
            .take()
            .into_iter()
            .map(|cmd| match cmd {
                Command::Add { id, .. } => id,
                Command::Remove(id) => id,
            })
            .collect();
        assert_eq!(ids, [a, b, c, b]);
        drop(commands);
        assert!(matches!(
            watcher.add(None, &here, scope()),
            Err(AddError::Stopped)
        ));
    }
}
