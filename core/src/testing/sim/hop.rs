//! The shape of a test of one role: an [`HttpClient`] in front of one endpoint, a scripted
//! [`HttpServer`] behind it.

use super::{Answer, End, HttpClient, HttpServer, Message, NodeId, World};
use crate::config::EndpointConfig;
use crate::socket::Target;

/// A client (at 127.0.0.1) → an endpoint listening on `listen` → a server on `upstream`.
pub struct Hop {
    /// The world they live in.
    pub w: World,
    /// The client.
    pub client: NodeId,
    /// The endpoint under test.
    pub ep: NodeId,
    /// The scripted server.
    pub server: NodeId,
}

impl Hop {
    /// The endpoint of `cfg` on `listen`, its upstream on `upstream` answering as `script`.
    pub fn new(
        cfg: EndpointConfig,
        listen: Target,
        upstream: Target,
        script: impl FnMut(usize, &Message) -> Answer + 'static,
    ) -> Hop {
        let mut w = World::new();
        let ep = w.endpoint_on(listen.clone(), cfg);
        let server = w.peer_on(upstream, HttpServer::new(script));
        let client = w.add_client("127.0.0.1", listen);
        Hop {
            w,
            client,
            ep,
            server,
        }
    }

    /// The client, to give it work.
    pub fn client(&mut self) -> &mut HttpClient {
        self.w.client_mut(self.client)
    }

    /// The scripted server.
    pub fn server(&self) -> &HttpServer {
        self.w.server(self.server)
    }

    /// Sends `req` from the client and runs until its answer is back.
    pub fn exchange(&mut self, req: impl Into<Vec<u8>>) -> Message {
        self.w.exchange(self.client, req)
    }

    /// The endpoint's side of the `i`-th connection it accepted.
    pub fn accepted(&self, i: usize) -> End {
        let links = self.w.links_to(self.ep);
        links[i]
            .to
            .unwrap_or_else(|| panic!("connection {i} not accepted"))
    }
}
