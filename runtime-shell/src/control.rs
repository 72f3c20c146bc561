//! What a loop does besides moving bytes, the same in every runtime: the tick hook, signals,
//! the drain and its deadline, and the endpoint's events for the hooks. A loop owns one
//! [`Control`] beside its [`Endpoint`] and calls it at the points its docs name.

use std::time::Instant;

use mdproxy_core::endpoint::Endpoint;
use mdproxy_core::socket::Event;

use crate::RunOptions;

/// A loop's hooks, its tick schedule and its drain.
pub struct Control {
    opts: RunOptions,
    /// Set by the first stop signal: when the loop returns even with busy connections.
    drain_deadline: Option<Instant>,
    /// When [`RunOptions::tick`] is due; `None` without one, or once draining.
    next_tick: Option<Instant>,
}

/// What caught signals ask of the loop.
#[derive(Debug, PartialEq, Eq)]
pub enum Signalled {
    /// Settle the endpoint's actions (a reload may have queued some).
    Settle,
    /// Stop accepting (close every listener), then settle: the drain has begun, and the
    /// endpoint closes idle connections.
    Drain,
    /// A second stop signal: return at once.
    Exit,
}

impl Control {
    /// The tick hook, if any, is due at once.
    pub fn new(now: Instant, opts: RunOptions) -> Control {
        Control {
            next_tick: opts.tick.is_some().then_some(now),
            opts,
            drain_deadline: None,
        }
    }

    /// The earliest moment the loop must call [`Control::on_time`]: the endpoint's next
    /// deadline, the next tick or the drain's deadline.
    pub fn deadline(&self, ep: &Endpoint) -> Option<Instant> {
        [ep.poll_timeout(), self.drain_deadline, self.next_tick]
            .into_iter()
            .flatten()
            .min()
    }

    /// Expires the endpoint's due timers and runs the tick hook if it is due (scheduling the
    /// next). True when the endpoint may have queued actions: settle them.
    pub fn on_time(&mut self, now: Instant, ep: &mut Endpoint) -> bool {
        let mut changed = false;
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
            changed = true;
        }
        let (Some(due), Some((every, hook))) = (self.next_tick, self.opts.tick.as_mut()) else {
            return changed;
        };
        if due <= now {
            self.next_tick = Some(now + *every);
            if let Some(reload) = hook() {
                ep.reload(now, reload);
                changed = true;
            }
        }
        changed
    }

    /// Handles the bytes read off the signal socket, one signal number each: SIGHUP runs
    /// [`RunOptions::on_hangup`]; the first SIGTERM/SIGINT begins the drain, a second one
    /// asks the loop to return.
    pub fn on_signals(&mut self, now: Instant, sigs: &[u8], ep: &mut Endpoint) -> Signalled {
        let mut asked = Signalled::Settle;
        for &sig in sigs {
            if libc::c_int::from(sig) == libc::SIGHUP {
                log::debug!("SIGHUP received");
                if let Some(reload) = (self.opts.on_hangup)() {
                    ep.reload(now, reload);
                }
            } else if self.drain_deadline.is_some() {
                log::warn!("second stop signal: exiting without waiting");
                return Signalled::Exit;
            } else {
                log::info!("stop signal received: draining connections");
                (self.opts.on_stop)();
                self.drain_deadline = Some(now + self.opts.drain_timeout);
                self.next_tick = None;
                ep.begin_drain(now);
                asked = Signalled::Drain;
            }
        }
        asked
    }

    /// Hands the endpoint's events to their hooks; call after carrying out its actions.
    pub fn on_events(&mut self, ep: &mut Endpoint) {
        while let Some(Event::Store(req)) = ep.poll_event() {
            (self.opts.on_store)(req);
        }
    }

    /// Whether a drain has begun.
    pub fn draining(&self) -> bool {
        self.drain_deadline.is_some()
    }

    /// Whether the loop should return: draining, and every connection has finished or the
    /// drain timeout has passed (which this logs).
    pub fn finished(&self, now: Instant, ep: &Endpoint) -> bool {
        match self.drain_deadline {
            Some(_) if ep.is_drained() => true,
            Some(t) if t <= now => {
                log::warn!("drain timeout passed with connections still open");
                true
            }
            _ => false,
        }
    }
}
