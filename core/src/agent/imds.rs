//! IMDSv2 at the agent, in front of any metadata server (Nova knows no tokens): the agent,
//! which knows the instance, answers `PUT /latest/api/token` itself and checks
//! `X-aws-ec2-metadata-token` on every other request, then forwards without it.
//!
//! Decisions are made once the instance is resolved (a token is bound to the instance id, not
//! the client IP: an IP reused by another instance inherits nothing). What of the request they
//! need is taken from its head at routing time (`Ask`), because a Neutron lookup answers
//! later, when the head is no longer at hand.
//!
//! | mode     | token PUT               | other method on the token path | other request: no token | valid | invalid, expired, another instance's, sent twice |
//! |----------|-------------------------|--------------------------------|-------------------------|-------|-----|
//! | off      | forwarded (Nova: 404)   | forwarded                      | forwarded, header kept  | —     | —   |
//! | optional | 200 token (TTL 400)     | 405 `Allow: PUT`               | forwarded, counted      | forwarded without the header | 401 |
//! | required | 200 token (TTL 400)     | 405 `Allow: PUT`               | 401                     | forwarded without the header | 401 |
//!
//! `off` leaves tokens to the metadata server behind (`mdproxy server --imdsv2`), as before.
//! `required` covers every path — the EC2 tree and the OpenStack tree (user data, keys,
//! password, vendor data) alike. cloud-init's OpenStack datasource sends no token, so
//! `required` suits images that use the Ec2 datasource or tokens.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::{Method, RequestHead};
use crate::metadata::path::is_token_target;
use crate::metadata::token::{self, Presented, TOKEN_REFUSED, TTL_REFUSED};
use crate::metadata::{Entropy, ImdsV2, Tokens, TEXT_PLAIN, TOKEN_TTL_HEADER};
use crate::proxy::decision::{Local, Route};
use crate::proxy::rewrite::HopRules;
use crate::scope::{Scope, Uuid};

/// The agent's header table when it handles tokens: [`crate::proxy::rewrite::AGENT`] without
/// the two token fields, which are the agent's business and never reach the metadata server.
pub(crate) const AGENT_TOKENLESS: HopRules = HopRules {
    remove: &[],
    drop_underscored: true,
    keep_only: Some(TOKENLESS_FORWARDS),
};

/// [`crate::proxy::rewrite::AGENT_FORWARDS`] minus the IMDSv2 fields (checked in a test).
const TOKENLESS_FORWARDS: &[&str] = &["Host", "Accept", "Content-Type", "User-Agent"];

/// `--imdsv2`, `--imdsv2-scope` and the token keys of an agent.
#[derive(Clone)]
pub struct AgentImds {
    /// The mode of a scope no override names.
    pub mode: ImdsV2,
    /// Per router / network overrides (`--imdsv2-scope`, the TOML file). A static map's own
    /// overrides come first (they are reloaded with it).
    pub scopes: BTreeMap<Uuid, ImdsV2>,
    /// Issues and checks tokens; `None` only when no scope can use them (every mode off).
    pub issuer: Option<Issuer>,
    /// The IP TTL / IPv6 hop limit of an instance's connection once it asked for a token,
    /// where this process holds that connection (`mdproxy node`). Behind a namespace proxy
    /// the agent never does: the ns-proxy's own setting applies there.
    pub hop_limit: u8,
}

/// AWS's default hop limit for the answer to a token request: one hop, the instance itself.
pub const DEFAULT_HOP_LIMIT: u8 = 1;

/// The token keys and the randomness that makes every token differ.
#[derive(Clone)]
pub struct Issuer {
    /// The keys (a key file's, shared by every worker, or one random key of this process).
    pub tokens: Tokens,
    /// The nonce source.
    pub entropy: Arc<dyn Entropy>,
}

impl fmt::Debug for AgentImds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentImds")
            .field("mode", &self.mode)
            .field("scopes", &self.scopes)
            .field("tokens", &self.issuer.as_ref().map(|i| &i.tokens))
            .finish()
    }
}

impl AgentImds {
    /// No tokens anywhere: the agent relays everything, token fields included.
    pub fn off() -> AgentImds {
        AgentImds {
            mode: ImdsV2::Off,
            scopes: BTreeMap::new(),
            issuer: None,
            hop_limit: DEFAULT_HOP_LIMIT,
        }
    }

    /// Whether any scope may use tokens (then an [`Issuer`] is needed).
    pub fn uses_tokens(&self) -> bool {
        self.mode != ImdsV2::Off || self.scopes.values().any(|m| *m != ImdsV2::Off)
    }

    /// The mode of `scope`: the static map's override, the configured one, the default.
    pub(crate) fn mode(&self, scope: &Scope, from_map: Option<ImdsV2>) -> ImdsV2 {
        if self.issuer.is_none() {
            return ImdsV2::Off;
        }
        from_map
            .or_else(|| self.scopes.get(&scope.id()).copied())
            .unwrap_or(self.mode)
    }
}

/// `off`, `optional` or `required`.
pub fn parse_mode(s: &str) -> Option<ImdsV2> {
    match s {
        "off" => Some(ImdsV2::Off),
        "optional" => Some(ImdsV2::Optional),
        "required" => Some(ImdsV2::Required),
        _ => None,
    }
}

/// What a request asks of the agent's token rules, taken from its head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ask {
    /// Tokens are off in its scope: relay as before.
    Relay,
    /// `PUT /latest/api/token` with this TTL (`None`: outside 1..21600, 400).
    Issue(Option<u64>),
    /// Another method on the token path (405).
    WrongMethod,
    /// Any other request: the token it presents, checked once the instance is known.
    Check {
        /// No token is a 401 too.
        required: bool,
        /// What it presented.
        token: Token,
    },
}

/// A presented token, owned (a lookup may outlive the head's borrow).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    Missing,
    One(Vec<u8>),
    Several,
}

impl Ask {
    /// The rules for `head` in a scope of `mode`.
    pub(crate) fn of(mode: ImdsV2, head: &RequestHead) -> Ask {
        if mode == ImdsV2::Off {
            return Ask::Relay;
        }
        if is_token_target(&head.target) {
            return match head.method {
                Method::Put => Ask::Issue(token::requested_ttl(&head.headers)),
                _ => Ask::WrongMethod,
            };
        }
        let token = match token::presented(&head.headers) {
            Presented::Missing => Token::Missing,
            Presented::One(t) => Token::One(t.to_vec()),
            Presented::Several => Token::Several,
        };
        Ask::Check {
            required: mode == ImdsV2::Required,
            token,
        }
    }
}

/// What the token rules make of a request from `instance`.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Forward it with these rules; `tokenless`: it carried no token (counted, for the
    /// operator who wants to switch the scope to `required`).
    Forward {
        rules: &'static HopRules,
        tokenless: bool,
    },
    /// Answer with this instead.
    Answer(Route),
}

/// Applies `ask` for `instance` at `now`.
pub(crate) fn judge(imds: &AgentImds, now: Instant, ask: &Ask, instance: &str) -> Verdict {
    let relay = Verdict::Forward {
        rules: &crate::proxy::rewrite::AGENT,
        tokenless: false,
    };
    let Some(issuer) = &imds.issuer else {
        return relay;
    };
    match ask {
        Ask::Relay => relay,
        Ask::Issue(None) => Verdict::Answer(Route::refuse(400, TTL_REFUSED)),
        Ask::Issue(Some(ttl)) => {
            let ttl_d = Duration::from_secs(*ttl);
            let tok = (issuer.tokens).issue(now, ttl_d, instance, issuer.entropy.as_ref());
            Verdict::Answer(Route::Answer(Local {
                status: 200,
                fields: vec![
                    ("Content-Type", TEXT_PLAIN.to_owned()),
                    (TOKEN_TTL_HEADER, ttl.to_string()),
                ],
                body: tok.into_bytes(),
                log_for: None,
            }))
        }
        Ask::WrongMethod => Verdict::Answer(Route::Answer(Local {
            status: 405,
            fields: vec![
                ("Content-Type", TEXT_PLAIN.to_owned()),
                ("Allow", "PUT".to_owned()),
            ],
            body: b"The method is not allowed for this resource.".to_vec(),
            log_for: None,
        })),
        Ask::Check { required, token } => {
            let why = match token {
                // Expected of IMDSv1 clients (cloud-init's OpenStack datasource): the access
                // line says enough.
                Token::Missing if *required => "",
                Token::Missing => {
                    return Verdict::Forward {
                        rules: &AGENT_TOKENLESS,
                        tokenless: true,
                    }
                }
                Token::One(t) => match issuer.tokens.check(now, t, instance) {
                    Ok(()) => {
                        return Verdict::Forward {
                            rules: &AGENT_TOKENLESS,
                            tokenless: false,
                        }
                    }
                    Err(r) => r.as_str(),
                },
                Token::Several => "sent twice",
            };
            Verdict::Answer(Route::Refuse {
                status: 401,
                message: TOKEN_REFUSED.to_owned(),
                why: match why {
                    "" => String::new(),
                    why => format!("instance {instance}: IMDSv2 token {why}"),
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{HeadScanner, Limits};
    use crate::metadata::{TokenClock, TokenKeys};
    use crate::proxy::rewrite::AGENT_FORWARDS;
    use crate::testing::epoch;

    struct Fives;
    impl Entropy for Fives {
        fn fill(&self, buf: &mut [u8]) {
            buf.fill(5);
        }
    }

    fn head(raw: &str) -> RequestHead {
        let raw = format!("{raw}\r\n\r\n");
        let (mut head, _) = HeadScanner::new()
            .parse_request(raw.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap();
        head.target = crate::http::normalize_target(&head.target).unwrap().into();
        head
    }

    /// Every test's clocks share one anchor, so that time moves alike for all of them.
    fn anchor() -> Instant {
        static ANCHOR: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *ANCHOR.get_or_init(epoch)
    }

    fn imds(mode: ImdsV2) -> AgentImds {
        let keys = TokenKeys::parse(b"0123456789abcdef0123456789abcdef").unwrap();
        AgentImds {
            mode,
            scopes: BTreeMap::new(),
            issuer: Some(Issuer {
                tokens: Tokens::new(
                    keys,
                    TokenClock::new(anchor(), Duration::from_secs(1 << 30)),
                ),
                entropy: Arc::new(Fives),
            }),
            hop_limit: DEFAULT_HOP_LIMIT,
        }
    }

    fn status(v: &Verdict) -> u16 {
        match v {
            Verdict::Forward { .. } => 0,
            Verdict::Answer(Route::Answer(l)) => l.status,
            Verdict::Answer(Route::Refuse { status, .. }) => *status,
            Verdict::Answer(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_table() {
        let now = anchor();
        let on = imds(ImdsV2::Optional);
        let put =
            head("PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60");
        let Verdict::Answer(Route::Answer(issued)) =
            judge(&on, now, &Ask::of(ImdsV2::Optional, &put), "i-1")
        else {
            panic!("a token PUT is answered")
        };
        assert_eq!(issued.status, 200);
        assert!(issued.fields.contains(&(TOKEN_TTL_HEADER, "60".to_owned())));
        let tok = String::from_utf8(issued.body).unwrap();
        for (mode, raw, want) in [
            (ImdsV2::Optional, "PUT /latest/api/token HTTP/1.1", 400),
            (
                ImdsV2::Optional,
                "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 21601",
                400,
            ),
            (ImdsV2::Optional, "GET /latest/api/token HTTP/1.1", 405),
            (ImdsV2::Required, "POST /latest//api/./token HTTP/1.1", 405),
            (ImdsV2::Optional, "GET /latest/meta-data/ HTTP/1.1", 0),
            (ImdsV2::Required, "GET /latest/meta-data/ HTTP/1.1", 401),
            (
                ImdsV2::Required,
                "GET /openstack/latest/user_data HTTP/1.1",
                401,
            ),
            (ImdsV2::Required, "GET / HTTP/1.1", 401),
            (
                ImdsV2::Optional,
                "GET /latest/meta-data/ HTTP/1.1\r\nX-aws-ec2-metadata-token: forged",
                401,
            ),
        ] {
            let v = judge(&imds(mode), now, &Ask::of(mode, &head(raw)), "i-1");
            assert_eq!(status(&v), want, "{mode:?} {raw}");
        }
        let with = |t: &str| {
            head(&format!(
                "GET /openstack/latest/meta_data.json HTTP/1.1\r\nX-aws-ec2-metadata-token: {t}"
            ))
        };
        let req = imds(ImdsV2::Required);
        let ask = Ask::of(ImdsV2::Required, &with(&tok));
        let Verdict::Forward { rules, tokenless } = judge(&req, now, &ask, "i-1") else {
            panic!("a valid token passes")
        };
        assert!(!tokenless && !rules.keeps("X-aws-ec2-metadata-token"));
        assert_eq!(
            status(&judge(&req, now, &ask, "i-2")),
            401,
            "another instance's"
        );
        let later = now + Duration::from_secs(60);
        assert_eq!(status(&judge(&req, later, &ask, "i-1")), 401, "expired");
        let twice = head(&format!(
            "GET / HTTP/1.1\r\nX-aws-ec2-metadata-token: {tok}\r\nx-aws-ec2-metadata-token: {tok}"
        ));
        assert_eq!(
            status(&judge(&req, now, &Ask::of(ImdsV2::Required, &twice), "i-1")),
            401
        );
        let bare = Ask::of(ImdsV2::Optional, &head("GET / HTTP/1.1"));
        let Verdict::Forward { tokenless, .. } = judge(&on, now, &bare, "i-1") else {
            panic!()
        };
        assert!(tokenless, "counted as served without a token");
        // Off: everything relayed with the agent's usual table, token fields included.
        assert_eq!(Ask::of(ImdsV2::Off, &put), Ask::Relay);
        let Verdict::Forward { rules, .. } = judge(&on, now, &Ask::Relay, "i-1") else {
            panic!()
        };
        assert!(rules.keeps("X-aws-ec2-metadata-token"));
    }

    #[test]
    fn modes_per_scope() {
        let u = |s: &str| Uuid::parse(s.as_bytes()).unwrap();
        let (r1, r2) = (
            u("5b3d8a7e-1f2c-4d6e-9a0b-c1d2e3f4a5b6"),
            u("9c2b1a4e-0000-4000-8000-000000000001"),
        );
        let mut imds = imds(ImdsV2::Optional);
        imds.scopes.insert(r1, ImdsV2::Required);
        assert_eq!(imds.mode(&Scope::Router(r1), None), ImdsV2::Required);
        assert_eq!(imds.mode(&Scope::Network(r2), None), ImdsV2::Optional);
        assert_eq!(
            imds.mode(&Scope::Router(r1), Some(ImdsV2::Off)),
            ImdsV2::Off,
            "the map first"
        );
        imds.issuer = None;
        assert_eq!(
            imds.mode(&Scope::Router(r1), None),
            ImdsV2::Off,
            "no keys, no tokens"
        );
        assert!(
            AgentImds {
                mode: ImdsV2::Off,
                ..imds.clone()
            }
            .uses_tokens(),
            "a scope's override"
        );
        assert!(!AgentImds::off().uses_tokens());
        assert_eq!(parse_mode("required"), Some(ImdsV2::Required));
        assert_eq!(parse_mode("Required"), None);
    }

    #[test]
    fn the_tokenless_table_is_the_agents_minus_the_token_fields() {
        let mut want: Vec<&str> = AGENT_FORWARDS.to_vec();
        want.retain(|n| {
            !n.to_ascii_lowercase()
                .starts_with("x-aws-ec2-metadata-token")
        });
        assert_eq!(TOKENLESS_FORWARDS, want.as_slice());
    }
}
