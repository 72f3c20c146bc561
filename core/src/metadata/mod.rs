//! The `server` role: a Nova-compatible metadata API (reference §C), plus IMDSv2 tokens.
//!
//! [`MetadataService::respond`] turns one request into one response, as a pure function of the
//! request, the configured instances, `now` and the [`Entropy`] the runtime supplies. The order
//! of decisions follows Nova's `MetadataRequestHandler.__call__`:
//!
//! 1. method: GET, HEAD and POST everywhere; PUT only for `/latest/api/token` (IMDSv2); any
//!    method reaches the `password` handler, which answers Nova's 400 itself; else 405;
//! 2. `/` → the EC2 version list, no identity needed;
//! 3. identity: Nova's proxy headers checked in Nova's order (400 / 403 / 404), or in
//!    `direct` mode the peer address among the instances' `fixed_ips` (404);
//! 4. IMDSv2 token, for the EC2 tree only (401);
//! 5. the path: EC2 tree, OpenStack tree, token, password; anything else 404.
//!
//! Side effects leave as values: a password POST returns [`StoreRequest`] for the runtime to
//! persist (in a state directory of its own, never in the instance files: a rewrite would not
//! keep their bytes), and takes effect in memory at once.

mod date;
mod ec2;
mod identity;
mod instance;
mod openstack;
mod password;
pub(crate) mod path;
pub mod token;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::http::{Headers, Method};
use crate::sign::{Signer, Verifier};

pub use date::Date;
pub use instance::{parse_instance, Format, InstanceData, InstanceError, JsonObject, Key};
pub use password::MAX_PASSWORD_SIZE;
pub use token::{TokenClock, TokenKeyError, TokenKeys, Tokens, MAX_TTL_SECONDS};

use path::{OsFile, Route, EC2_VERSIONS};

/// Header carrying an IMDSv2 token on a metadata request.
pub const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// Header carrying the requested (and, in the answer, granted) token lifetime in seconds.
pub const TOKEN_TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";

/// Bytes in a `random_seed` before base64 (Nova: `os.urandom(512)`).
pub const RANDOM_SEED_BYTES: usize = 512;

/// Content type of the EC2 tree, listings and user data.
pub const TEXT_PLAIN: &str = "text/plain";
/// Content type of the OpenStack JSON files.
pub const APPLICATION_JSON: &str = "application/json";
/// Content type of a successful `password` answer: Nova's handler returns a bare string, so
/// webob's default applies.
pub const TEXT_HTML_UTF8: &str = "text/html; charset=UTF-8";

/// Randomness for `random_seed` and tokens; the runtime implements it with getrandom.
pub trait Entropy: Send + Sync {
    /// Fills `buf` with unpredictable bytes.
    fn fill(&self, buf: &mut [u8]);
}

/// `--imdsv2`: whether and how IMDSv2 session tokens are used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImdsV2 {
    /// No tokens: `PUT /latest/api/token` is a missing path (404), as in Nova, which tells
    /// botocore to fall back to IMDSv1; token headers are ignored.
    Off,
    /// Tokens are issued; EC2 requests may go without one, but a token sent must be valid.
    #[default]
    Optional,
    /// EC2 requests must carry a valid token (401 otherwise).
    Required,
}

/// How the server identifies instances and shapes answers.
#[derive(Clone)]
pub struct ServerConfig {
    /// Checks `X-Instance-ID-Signature`. `None` only with `direct`; in proxy mode without a
    /// signer every request is refused (403).
    pub signer: Option<Signer>,
    /// Identify instances by the peer address among their `fixed_ips` instead of by the
    /// proxy's headers (Nova without `service_metadata_proxy`).
    pub direct: bool,
    /// IMDSv2 mode.
    pub imdsv2: ImdsV2,
    /// Nova's `[api] dhcp_domain` (default `novalocal`): the served hostname is
    /// `hostname + "." + dhcp_domain`, or the bare hostname when this is empty.
    pub dhcp_domain: String,
    /// Today's UTC date: OpenStack versions dated later are not listed.
    /// Update it with [`MetadataService::set_today`].
    pub today: Date,
    /// Randomness source.
    pub entropy: Arc<dyn Entropy>,
    /// IMDSv2 token keys (`--token-key-file`, else a random key of this process).
    pub tokens: Tokens,
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("signer", &self.signer)
            .field("direct", &self.direct)
            .field("imdsv2", &self.imdsv2)
            .field("dhcp_domain", &self.dhcp_domain)
            .field("today", &self.today)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

/// One request as the server sees it.
#[derive(Clone, Copy, Debug)]
pub struct MetaRequest<'a> {
    /// The method.
    pub method: Method,
    /// The request target: path and optional `?query` (ignored).
    pub target: &'a [u8],
    /// The request's header fields.
    pub headers: &'a Headers,
    /// The request body (read in full; only the password POST looks at it).
    pub body: &'a [u8],
    /// The client's address (the agent's, in proxy mode).
    pub peer: Option<IpAddr>,
}

/// The answer. For HEAD the caller sends the head only; the body here is GET's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaResponse {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
    /// Extra header fields (`Allow`, the token TTL).
    pub headers: Vec<(&'static str, String)>,
    /// A side effect the caller must persist.
    pub store: Option<StoreRequest>,
}

/// "Save this password of this instance" (after a successful password POST), so that it is
/// served, and still set, after a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreRequest {
    /// The instance.
    pub instance_uuid: String,
    /// The password to store.
    pub password: String,
}

impl MetaResponse {
    fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Self {
        MetaResponse {
            status,
            content_type,
            body,
            headers: Vec::new(),
            store: None,
        }
    }

    fn text(body: Vec<u8>) -> Self {
        MetaResponse::new(200, TEXT_PLAIN, body)
    }

    fn json(body: Vec<u8>) -> Self {
        MetaResponse::new(200, APPLICATION_JSON, body)
    }

    /// An error with a short text/plain explanation.
    fn error(status: u16, message: &str) -> Self {
        MetaResponse::new(status, TEXT_PLAIN, message.as_bytes().to_vec())
    }

    fn not_found() -> Self {
        // webob's HTTPNotFound explanation.
        MetaResponse::error(404, "The resource could not be found.")
    }

    fn method_not_allowed(allow: &str) -> Self {
        let mut r = MetaResponse::error(405, "The method is not allowed for this resource.");
        r.headers.push(("Allow", allow.to_owned()));
        r
    }
}

/// An instance ready to serve: the data, plus what every request would otherwise recompute.
#[derive(Debug)]
struct Prepared {
    data: InstanceData,
    user_data: Option<Vec<u8>>,
    /// With the DHCP domain.
    hostname: String,
    name: String,
    availability_zone: String,
    ec2: ec2::Node,
}

impl Prepared {
    fn new(data: InstanceData, dhcp_domain: &str) -> Prepared {
        let user_data = match (&data.user_data, &data.user_data_b64) {
            (Some(text), _) => Some(text.clone().into_bytes()),
            (None, Some(b64)) => match instance::decode_b64(b64) {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    log::warn!("instance {}: user_data_b64 ignored: {e}", data.uuid);
                    None
                }
            },
            (None, None) => None,
        };
        let host = data
            .hostname
            .clone()
            .or_else(|| data.name.clone())
            .unwrap_or_else(|| data.uuid.clone());
        let hostname = if dhcp_domain.is_empty() {
            host
        } else {
            format!("{host}.{dhcp_domain}")
        };
        let name = data
            .name
            .clone()
            .or_else(|| data.hostname.clone())
            .unwrap_or_else(|| data.uuid.clone());
        let availability_zone = data
            .availability_zone
            .clone()
            .unwrap_or_else(|| "nova".to_owned());
        let instance_id = data
            .ec2_id
            .clone()
            .unwrap_or_else(|| default_ec2_id(&data.uuid));
        let block_device_mapping = match &data.block_device_mapping {
            Some(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            // Nova's `_dummy_mapping`, for an instance without a root device name.
            None => [
                ("ami", "sda1"),
                ("ephemeral0", "sda2"),
                ("root", "/dev/sda1"),
                ("swap", "sda3"),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        };
        let ec2 = ec2::build(&ec2::Ec2Source {
            ami_id: data.ami_id.as_deref().unwrap_or("ami-00000000"),
            launch_index: data.launch_index,
            instance_id: &instance_id,
            hostname: &hostname,
            fixed_ips: &data.fixed_ips,
            floating_ips: &data.floating_ips,
            reservation_id: data.reservation_id.as_deref().unwrap_or("r-00000000"),
            security_groups: &data.security_groups,
            keys: &data.keys,
            instance_type: data.instance_type.as_deref().unwrap_or_default(),
            block_device_mapping,
            kernel_id: data.kernel_id.as_deref(),
            ramdisk_id: data.ramdisk_id.as_deref(),
            availability_zone: &availability_zone,
            user_data: user_data.as_deref(),
        });
        Prepared {
            data,
            user_data,
            hostname,
            name,
            availability_zone,
            ec2,
        }
    }
}

/// `i-` and the first 8 hex digits of the uuid (zero-padded if it has fewer).
fn default_ec2_id(uuid: &str) -> String {
    let hex: String = uuid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(8)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    format!("i-{hex:0>8}")
}

/// Who asked: the instance, and the address Nova would call `self.address`.
struct Who {
    uuid: String,
    address: Option<String>,
}

/// The metadata service: instances by uuid and by fixed IP, and the IMDSv2 token key.
pub struct MetadataService {
    cfg: ServerConfig,
    /// Checks signatures with `cfg.signer`, and the previous secret after a rotation.
    verifier: Option<Verifier>,
    today: String,
    instances: BTreeMap<String, Prepared>,
    /// Fixed IP → instance; `None` when two instances claim the IP (then it identifies nobody).
    by_ip: BTreeMap<IpAddr, Option<String>>,
}

impl fmt::Debug for MetadataService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetadataService")
            .field("cfg", &self.cfg)
            .field("instances", &self.instances.len())
            .finish_non_exhaustive()
    }
}

impl MetadataService {
    /// A service with no instances.
    pub fn new(cfg: ServerConfig) -> Self {
        MetadataService {
            today: cfg.today.to_string(),
            verifier: cfg.signer.clone().map(Verifier::new),
            cfg,
            instances: BTreeMap::new(),
            by_ip: BTreeMap::new(),
        }
    }

    /// Replaces the set of instances. A uuid given twice keeps the last copy. Tokens are
    /// stateless: a removed instance's tokens identify nobody, as the instance is gone.
    pub fn set_instances(&mut self, instances: Vec<InstanceData>) {
        let mut map = BTreeMap::new();
        for data in instances {
            if let Err(e) = instance::validate(&data) {
                log::warn!("instance {:?} skipped: {e}", data.uuid);
                continue;
            }
            let uuid = data.uuid.clone();
            if map
                .insert(uuid.clone(), Prepared::new(data, &self.cfg.dhcp_domain))
                .is_some()
            {
                log::warn!("instance {uuid} is configured twice; the last copy is used");
            }
        }
        let mut by_ip: BTreeMap<IpAddr, Option<String>> = BTreeMap::new();
        for (uuid, p) in &map {
            for ip in &p.data.fixed_ips {
                let ip = ip.to_canonical();
                match by_ip.get(&ip) {
                    Some(Some(other)) if other != uuid => {
                        log::warn!(
                            "fixed IP {ip} is claimed by {other} and {uuid}; it identifies neither"
                        );
                        by_ip.insert(ip, None);
                    }
                    Some(_) => {}
                    None => {
                        by_ip.insert(ip, Some(uuid.clone()));
                    }
                }
            }
        }
        self.instances = map;
        self.by_ip = by_ip;
    }

    /// How many instances are being served.
    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    /// The data of one instance, as currently served (including a freshly posted password).
    pub fn instance(&self, uuid: &str) -> Option<&InstanceData> {
        self.instances.get(uuid).map(|p| &p.data)
    }

    /// Applies a reload (SIGHUP) at `now`: a new shared secret opens a window of `grace` in
    /// which the previous one still verifies ([`Verifier::rotate`]); the IMDSv2 mode and token
    /// keys apply from the next request. The instances are given apart
    /// ([`set_instances`](Self::set_instances)).
    pub fn set_identity(
        &mut self,
        now: Instant,
        signer: Option<Signer>,
        grace: Duration,
        imdsv2: ImdsV2,
        tokens: Tokens,
    ) {
        self.verifier = match (self.verifier.take(), signer.clone()) {
            (Some(mut v), Some(next)) => {
                v.rotate(now, next, grace);
                Some(v)
            }
            (_, next) => next.map(Verifier::new),
        };
        self.cfg.signer = signer;
        self.cfg.imdsv2 = imdsv2;
        self.cfg.tokens = tokens;
    }

    /// Moves "today" (UTC), which decides the OpenStack versions listed.
    pub fn set_today(&mut self, today: Date) {
        self.cfg.today = today;
        self.today = today.to_string();
    }

    /// Answers one request. `now` is only used for token lifetimes.
    pub fn respond(&mut self, now: Instant, req: &MetaRequest<'_>) -> MetaResponse {
        let imds = self.cfg.imdsv2 != ImdsV2::Off;
        // The connection normalised the target already (a no-op then); a caller that did not
        // gets the same rule, and the same 400 for a target with no single meaning.
        let normalized = match crate::http::normalize_target(req.target) {
            Ok(n) => n,
            Err(e) => return MetaResponse::error(400, &e.to_string()),
        };
        let route = path::route(&normalized);
        let simple = matches!(req.method, Method::Get | Method::Head | Method::Post);
        match &route {
            // IMDSv2 on: the token is made by PUT; off: the path is just missing (Nova: 404),
            // whatever the method, which is what botocore needs to fall back to IMDSv1.
            Route::Token if req.method == Method::Put || (!imds && simple) => {}
            Route::Token if imds => return MetaResponse::method_not_allowed("PUT"),
            // Nova's password handler answers other methods with its own 400.
            Route::OsFile(_, OsFile::Password) => {}
            _ if simple => {}
            _ => return MetaResponse::method_not_allowed("GET, HEAD, POST"),
        }
        if route == Route::Root {
            return MetaResponse::text(ec2_versions());
        }

        let who = match identity::identify(
            now,
            &self.cfg,
            self.verifier.as_ref(),
            &self.instances,
            &self.by_ip,
            req,
        ) {
            Ok(who) => who,
            Err(resp) => return resp,
        };

        if imds && route.is_ec2() && route != Route::Token {
            if let Some(resp) = self.check_token(now, req, &who.uuid) {
                return resp;
            }
        }

        match route {
            Route::Root | Route::Ec2Versions => MetaResponse::text(ec2_versions()),
            Route::Ec2 { version, rest } => match self.instances.get(&who.uuid) {
                Some(p) => match p.ec2.lookup(version, &rest, who.address.as_deref()) {
                    Ok(body) => MetaResponse::text(body),
                    Err(()) => MetaResponse::not_found(),
                },
                None => MetaResponse::not_found(),
            },
            Route::OsVersions => MetaResponse::text(openstack::versions(&self.today)),
            Route::OsListing(v) => match self.instances.get(&who.uuid) {
                Some(p) => MetaResponse::text(openstack::listing(v, p.user_data.is_some())),
                None => MetaResponse::not_found(),
            },
            Route::OsFile(_, OsFile::Password) => match self.instances.get_mut(&who.uuid) {
                Some(p) => password::handle(&mut p.data, req),
                None => MetaResponse::not_found(),
            },
            Route::OsFile(v, file) => match self.instances.get(&who.uuid) {
                Some(p) => self.openstack_file(p, v, file),
                None => MetaResponse::not_found(),
            },
            Route::Token if imds => self.put_token(now, req, &who.uuid),
            Route::Token | Route::NotFound { .. } => MetaResponse::not_found(),
        }
    }

    fn openstack_file(&self, p: &Prepared, v: path::OsVersion, file: OsFile) -> MetaResponse {
        match file {
            OsFile::MetaData => {
                let seed = (v >= path::OsVersion::GRIZZLY).then(|| {
                    let mut raw = [0u8; RANDOM_SEED_BYTES];
                    self.cfg.entropy.fill(&mut raw);
                    STANDARD.encode(raw)
                });
                let src = openstack::MetaSource {
                    data: &p.data,
                    hostname: &p.hostname,
                    name: &p.name,
                    availability_zone: &p.availability_zone,
                };
                MetaResponse::json(openstack::meta_data(&src, v, seed))
            }
            OsFile::UserData => match &p.user_data {
                Some(ud) => MetaResponse::text(ud.clone()),
                None => MetaResponse::not_found(),
            },
            OsFile::VendorData => MetaResponse::json(openstack::vendor_data(&p.data)),
            OsFile::NetworkData => MetaResponse::json(openstack::network_data(&p.data)),
            OsFile::VendorData2 => MetaResponse::json(openstack::vendor_data2(&p.data)),
            // Routed before this is called.
            OsFile::Password => MetaResponse::not_found(),
        }
    }

    /// `PUT /latest/api/token`: a token for the identified instance, for the requested TTL.
    fn put_token(&mut self, now: Instant, req: &MetaRequest<'_>, uuid: &str) -> MetaResponse {
        let Some(ttl) = token::requested_ttl(req.headers) else {
            return MetaResponse::error(400, token::TTL_REFUSED);
        };
        let token = self.cfg.tokens.issue(
            now,
            Duration::from_secs(ttl),
            uuid,
            self.cfg.entropy.as_ref(),
        );
        let mut resp = MetaResponse::text(token.into_bytes());
        resp.headers.push((TOKEN_TTL_HEADER, ttl.to_string()));
        resp
    }

    /// IMDSv2 rules for an EC2-tree request; `Some` is the 401 to send.
    fn check_token(&self, now: Instant, req: &MetaRequest<'_>, uuid: &str) -> Option<MetaResponse> {
        let verdict = match token::presented(req.headers) {
            token::Presented::Missing if self.cfg.imdsv2 == ImdsV2::Required => Err("missing"),
            token::Presented::Missing => Ok(()),
            token::Presented::One(tok) => {
                (self.cfg.tokens.check(now, tok, uuid)).map_err(token::Rejected::as_str)
            }
            token::Presented::Several => Err("sent twice"),
        };
        match verdict {
            Ok(()) => None,
            Err(why) => {
                log::debug!("instance {uuid}: IMDSv2 token {why}");
                Some(MetaResponse::error(401, token::TOKEN_REFUSED))
            }
        }
    }
}

/// The EC2 version list (also `/`): `1.0` … `2009-04-04`, `latest`.
fn ec2_versions() -> Vec<u8> {
    let mut lines = EC2_VERSIONS.to_vec();
    lines.push("latest");
    lines.join("\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ids() {
        assert_eq!(default_ec2_id("6F9C1B1E-3c4a"), "i-6f9c1b1e");
        assert_eq!(default_ec2_id("xyz-ab"), "i-000000ab");
    }
}
