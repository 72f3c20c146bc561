//! The metadata server: checks the agent's signature and answers from its instances.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Instant;

use super::{ignored, local_answer, Policy};
use crate::config::Reload;
use crate::http::RequestHead;
use crate::metadata::{Date, InstanceData, MetaRequest, MetadataService, ServerConfig};
use crate::proxy::decision::{Local, Route, Ticket};
use crate::socket::Event;

#[derive(Debug)]
pub(super) struct Server {
    service: MetadataService,
    events: VecDeque<Event>,
}

impl Server {
    pub(super) fn new(c: &ServerConfig) -> Server {
        Server {
            service: MetadataService::new(c.clone()),
            events: VecDeque::new(),
        }
    }
}

impl Server {
    fn set_instances(&mut self, instances: Vec<InstanceData>, today: Date) {
        self.service.set_instances(instances);
        self.service.set_today(today);
        log::info!("serving {} instances", self.service.instance_count());
    }
}

impl Policy for Server {
    fn route(&mut self, _: Instant, _: Ticket, _: Option<IpAddr>, _: &RequestHead) -> Route {
        Route::Serve
    }

    fn answers_locally(&self) -> bool {
        true
    }

    fn serve(
        &mut self,
        now: Instant,
        peer: Option<IpAddr>,
        head: &RequestHead,
        body: &[u8],
    ) -> Local {
        let req = MetaRequest {
            method: head.method,
            target: &head.target,
            headers: &head.headers,
            body,
            peer,
        };
        let mut resp = self.service.respond(now, &req);
        if let Some(store) = resp.store.take() {
            self.events.push_back(Event::Store(store));
        }
        // Nova's access log names the instance's address (X-Forwarded-For) and the peer.
        let log_for = (head.headers.get("X-Forwarded-For"))
            .map(|xff| String::from_utf8_lossy(xff).into_owned());
        local_answer(resp, log_for)
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn reload_at(&mut self, now: Instant, reload: Reload) {
        match reload {
            Reload::Instances(instances, today) => self.set_instances(instances, today),
            Reload::Server(r) => {
                let r = *r;
                (self.service).set_identity(now, r.signer, r.secret_grace, r.imdsv2, r.tokens);
                self.set_instances(r.instances, r.today);
            }
            other => ignored(&other),
        }
    }
}
