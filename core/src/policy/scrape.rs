//! The metrics listener: answers scrapers with the process's counters; not counted itself.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::{local_answer, Policy};
use crate::config::ConnLimits;
use crate::http::RequestHead;
use crate::metrics::{answer, Metrics};
use crate::proxy::decision::{Local, Route, Ticket};

/// Most scrapers connected to a metrics endpoint at once.
const MAX_CONNS: usize = 16;

#[derive(Debug)]
pub(super) struct Scrape {
    metrics: Arc<Metrics>,
}

impl Scrape {
    pub(super) fn new(metrics: Arc<Metrics>) -> Scrape {
        Scrape { metrics }
    }
}

impl Policy for Scrape {
    fn route(&mut self, _: Instant, _: Ticket, _: Option<IpAddr>, _: &RequestHead) -> Route {
        Route::Serve
    }

    fn answers_locally(&self) -> bool {
        true
    }

    fn serve(&mut self, now: Instant, _: Option<IpAddr>, head: &RequestHead, _: &[u8]) -> Local {
        local_answer(answer(&self.metrics, now, head), None)
    }

    fn conn_limits(&self, _: ConnLimits) -> ConnLimits {
        ConnLimits {
            max_conns: MAX_CONNS,
            max_conns_per_ip: MAX_CONNS,
        }
    }

    /// A scraper asks every few seconds: its requests would drown the others.
    fn quiet(&self) -> bool {
        true
    }
}
