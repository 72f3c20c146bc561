//! Answers a connection makes itself — the policy's local answer, error answers — and the
//! access log line every exchange ends with.

use std::time::Instant;

use super::super::decision::{Local, Output, Ticket};
use super::super::error_page::{default_message, write_error};
use super::super::exchange::{deadline_in, Exchange, Stage};
use super::{Conn, Phase};
use crate::http::{reason_phrase, write_simple_response, HttpError, Method};

impl Conn {
    /// Answers at once and closes: used when a connection is over a limit on arrival.
    pub(crate) fn refuse(&mut self, now: Instant, status: u16, message: &str) {
        log::warn!("{} refused: {message}", self.peer_text);
        write_error(status, message, None, false, true, &mut self.out);
        self.outputs
            .push_back(Output::Answered { status, took: None });
        self.phase = Phase::Closing {
            deadline: deadline_in(now, self.settings.timeouts.idle),
            linger: true,
        };
        self.progress(now);
    }

    /// The owner's answer to [`Output::Serve`].
    pub(crate) fn local(&mut self, now: Instant, ticket: Ticket, local: Local) {
        match &self.phase {
            Phase::Exchange(x)
                if x.ticket == ticket && matches!(x.stage, Stage::Serving { .. }) => {}
            _ => return,
        }
        let Some(mut x) = self.take_exchange() else {
            return;
        };
        let keep = x.client_keep_alive;
        self.send_local(now, &mut x, local, keep);
    }

    /// Writes a local answer to exchange `x`, which is over; the connection goes on only if
    /// `keep` (and it is not draining).
    pub(super) fn send_local(&mut self, now: Instant, x: &mut Exchange, local: Local, keep: bool) {
        let keep = keep && !self.draining;
        let mut fields: Vec<(&str, &[u8])> = (local.fields.iter())
            .map(|(n, v)| (*n, v.as_bytes()))
            .collect();
        if !keep {
            fields.push(("Connection", b"close"));
        }
        let head_only = x.head.method == Method::Head;
        let mut buf = Vec::with_capacity(256 + local.body.len());
        write_simple_response(
            local.status,
            reason_phrase(local.status),
            &fields,
            &local.body,
            head_only,
            &mut buf,
        );
        self.out.extend_from_slice(&buf);
        x.status = local.status;
        x.body_len = local.body.len() as u64;
        let who = (local.log_for).map(|client| format!("{client},{}", self.peer_text));
        self.finished(who.as_deref(), x, now, "");
        let asked_close = !x.client_keep_alive && x.req_body.is_done();
        self.after_exchange(now, keep, asked_close);
        self.progress(now);
    }

    /// A client error: answer with its status and close.
    pub(super) fn fail_client(&mut self, now: Instant, err: HttpError) {
        let status = err.status();
        log::info!("{} bad request ({status}): {err}", self.peer_text);
        self.outputs
            .push_back(Output::Answered { status, took: None });
        let msg = default_message(status);
        write_error(status, msg, None, false, true, &mut self.out);
        self.finish(now, true);
    }

    /// Queues a locally made error answer to the current exchange and moves on.
    pub(super) fn answer(
        &mut self,
        now: Instant,
        x: &mut Exchange,
        status: u16,
        msg: &str,
        why: &str,
        keep: bool,
    ) {
        let head_only = x.head.method == Method::Head;
        let headers = Some(&x.head.headers);
        x.body_len = write_error(status, msg, headers, head_only, !keep, &mut self.out);
        x.status = status;
        self.finished(None, x, now, why);
        self.after_exchange(now, keep, false);
    }

    /// An exchange is answered: the access log line (naming `log_as`, else the peer), and the
    /// request counted.
    pub(super) fn finished(&mut self, log_as: Option<&str>, x: &Exchange, now: Instant, why: &str) {
        let peer = log_as.unwrap_or(&self.peer_text);
        let took = now.saturating_duration_since(x.started);
        self.outputs.push_back(Output::Answered {
            status: x.status,
            took: Some(took),
        });
        let secs = took.as_secs_f64();
        let sep = if why.is_empty() { "" } else { " " };
        let level = if self.settings.quiet {
            log::Level::Debug
        } else {
            log::Level::Info
        };
        log::log!(
            level,
            "{peer} \"{}\" status: {} len: {} time: {secs:.7}{sep}{why}",
            x.line,
            x.status,
            x.body_len
        );
    }
}
