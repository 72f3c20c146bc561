//! What each of a connection's deadlines means when it passes: a head or a body not sent in
//! time (408), an upstream too slow to connect or answer (an error answer, or the client cut
//! off mid-response), a closing connection that lingered long enough.

use std::time::Instant;

use super::super::exchange::Sink;
use super::{Conn, Phase};
use crate::http::HttpError;
use crate::metrics::UpstreamError;

impl Conn {
    pub(crate) fn on_timeout(&mut self, now: Instant) {
        match &self.phase {
            Phase::Head { started, deadline } if now >= *deadline => {
                // Draining, a connection that sent nothing is let go, not told it was slow.
                if *started && !(self.draining && self.inbuf.is_empty()) {
                    self.fail_client(now, HttpError::TimedOut);
                } else {
                    self.abort("");
                }
            }
            Phase::Exchange(x) if now >= x.deadline => {
                let gathering = !x.sink.is_stream() && !x.req_body.is_done();
                if matches!(x.sink, Sink::Serve(_)) || gathering {
                    self.fail_client(now, HttpError::TimedOut);
                } else if x.resp_started {
                    self.upstream_cut(UpstreamError::Timeout, "upstream stalled mid-response");
                } else if x.request_deadline.is_some_and(|d| now >= d) {
                    self.deadline_missed(now);
                } else {
                    let why = if x.up().is_some_and(|u| u.connected) {
                        "upstream did not answer in time"
                    } else {
                        "upstream connect timed out"
                    };
                    self.upstream_failed(now, UpstreamError::Timeout, why);
                }
            }
            Phase::Closing { deadline, .. } | Phase::Lingering { deadline } if now >= *deadline => {
                self.abort("");
            }
            _ => {}
        }
    }
}
