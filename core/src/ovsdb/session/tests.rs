//! The session against a fake server scripted here, through the endpoint's API.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;
use crate::ovsdb::framing::Framer;
use crate::ovsdb::monitor::TableMonitor;
use crate::ovsdb::update::RowOp;
use crate::socket::{ConnectError, Target};
use crate::testing::epoch;

const PROBE: Duration = Duration::from_secs(5);
const MIN: Duration = Duration::from_millis(200);
const MAX: Duration = Duration::from_secs(3);
const ROW: &str = "6f9c1b1e-3c4a-4b8e-9d2a-1f2e3d4c5b6a";

fn config(remotes: &[&str]) -> SessionConfig {
    let mut cfg = SessionConfig::new(
        remotes.iter().map(|r| r.parse().unwrap()).collect(),
        "OVN_Southbound",
        vec![TableMonitor {
            table: "Chassis".into(),
            columns: vec!["name".into()],
            conditions: None,
        }],
    );
    cfg.probe_interval = PROBE;
    cfg.backoff_min = MIN;
    cfg.backoff_max = MAX;
    cfg.seed = 42;
    cfg.max_message = 4096;
    cfg
}

fn standalone() -> Value {
    json!([{"rows": [{"name": "OVN_Southbound", "model": "standalone", "connected": true,
        "leader": true, "index": ["set", []]}]}])
}

fn chassis(name: &str) -> Value {
    json!({"Chassis": {ROW: {"initial": {"name": name}}}})
}

struct Fake {
    s: Session,
    now: Instant,
}

impl Fake {
    fn new(cfg: SessionConfig) -> Fake {
        let now = epoch();
        Fake {
            s: Session::new(cfg, now),
            now,
        }
    }

    fn actions(&mut self) -> Vec<ClientAction> {
        std::iter::from_fn(|| self.s.poll_action()).collect()
    }

    fn events(&mut self) -> Vec<SessionEvent> {
        std::iter::from_fn(|| self.s.poll_event()).collect()
    }

    /// Expects exactly one `Connect` among the queued actions; reports it connected.
    fn connect(&mut self) -> (ReqId, Target) {
        let connects: Vec<_> = self
            .actions()
            .into_iter()
            .filter_map(|a| match a {
                ClientAction::Connect(r, t) => Some((r, t)),
                ClientAction::Close(_) => None,
            })
            .collect();
        assert_eq!(connects.len(), 1, "{connects:?}");
        let (req, target) = connects[0].clone();
        assert!(!self.s.wants_read(req));
        self.s.handle(self.now, req, Input::Connected);
        assert!(self.s.wants_read(req));
        (req, target)
    }

    /// Every message the session wrote on `req` since the last call.
    fn sent(&mut self, req: ReqId) -> Vec<Value> {
        let bytes = self.s.pending_write(req).to_vec();
        self.s.consume_write(req, bytes.len());
        assert!(self.s.pending_write(req).is_empty());
        let mut framer = Framer::new(1 << 20);
        let mut rest = &bytes[..];
        let mut out = Vec::new();
        while let Some(v) = framer.next_message(&mut rest).unwrap() {
            out.push(v);
        }
        out
    }

    /// The one request written since the last call, which must be `method`.
    fn request(&mut self, req: ReqId, method: &str) -> Value {
        let sent = self.sent(req);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0]["method"], json!(method), "{sent:?}");
        sent[0].clone()
    }

    fn recv(&mut self, req: ReqId, v: Value) {
        let bytes = serde_json::to_vec(&v).unwrap();
        self.s.handle(self.now, req, Input::Read(&bytes));
    }

    fn reply(&mut self, req: ReqId, to: &Value, result: Value) {
        self.recv(
            req,
            json!({"id": to["id"], "result": result, "error": null}),
        );
    }

    /// Connects, passes the `_Server` check and answers the monitor request with `reply`;
    /// returns the connection and the monitor request.
    fn establish(&mut self, reply: Value) -> (ReqId, Value) {
        let (req, _) = self.connect();
        let check = self.request(req, "transact");
        assert_eq!(check["params"][0], json!("_Server"));
        assert_eq!(
            check["params"][1]["where"],
            json!([["name", "==", "OVN_Southbound"]])
        );
        self.reply(req, &check, standalone());
        let monitor = self.request(req, "monitor_cond_since");
        self.reply(req, &monitor, reply);
        (req, monitor)
    }

    fn advance_to_timeout(&mut self) {
        self.now = self.s.poll_timeout().expect("a deadline");
        self.s.handle_timeout(self.now);
    }
}

#[test]
fn snapshot_then_updates() {
    let mut f = Fake::new(config(&["unix:/sb.sock"]));
    let (req, monitor) = f.establish(json!([false, "t1", chassis("ch1")]));
    assert_eq!(
        monitor["params"],
        json!(["OVN_Southbound", "mdproxy",
            {"Chassis": [{"columns": ["name"]}]}, NO_TXN])
    );
    let ev = f.events();
    assert_eq!(
        ev[0],
        SessionEvent::Connected {
            remote: "unix:/sb.sock".into(),
            resumed: false
        }
    );
    let SessionEvent::Snapshot(snap) = &ev[1] else {
        panic!("{ev:?}")
    };
    assert_eq!(
        snap[0].rows[0].op,
        RowOp::Initial(vec![(
            "name".into(),
            Datum::Set(vec![Atom::String("ch1".into())])
        )])
    );
    f.recv(
        req,
        json!({"id": null, "method": "update3",
            "params": ["mdproxy", "t2", {"Chassis": {ROW: {"delete": null}}}]}),
    );
    // Another monitor's update is not ours.
    f.recv(
        req,
        json!({"id": null, "method": "update3",
            "params": ["other", "t3", {"Chassis": {ROW: {"delete": null}}}]}),
    );
    let ev = f.events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert!(matches!(&ev[0], SessionEvent::Update(u) if u[0].rows[0].op == RowOp::Delete));
    let st = f.s.status();
    assert_eq!(st.state, SessionState::Monitoring);
    assert_eq!(st.remote.as_deref(), Some("unix:/sb.sock"));
    assert_eq!(
        (st.connects, st.resumes, st.resyncs, st.messages),
        (1, 0, 0, 4)
    );
    assert_eq!(st.last_update, Some(f.now));
}

#[test]
fn server_echo_answered_and_own_echo_on_silence() {
    let mut f = Fake::new(config(&["unix:/sb.sock"]));
    let (req, _) = f.establish(json!([false, "t1", {}]));
    f.recv(
        req,
        json!({"id": "echo", "method": "echo", "params": ["x", 1]}),
    );
    assert_eq!(
        f.sent(req),
        vec![json!({"id": "echo", "result": ["x", 1], "error": null})]
    );
    assert_eq!(f.s.status().echoes_answered, 1);

    let start = f.now;
    assert_eq!(f.s.poll_timeout(), Some(start + PROBE));
    f.s.handle_timeout(start + PROBE - Duration::from_millis(1));
    assert!(f.sent(req).is_empty(), "no probe before the interval");
    f.advance_to_timeout();
    let echo = f.request(req, "echo");
    assert_eq!(f.s.poll_timeout(), Some(start + 2 * PROBE));
    f.s.handle_timeout(f.now);
    assert!(f.sent(req).is_empty(), "one probe per silence");
    // The answer (any byte) ends the silence.
    f.reply(req, &echo, json!([]));
    assert_eq!(f.s.poll_timeout(), Some(f.now + PROBE));
    assert!(f.actions().is_empty());
}

#[test]
fn stall_drops_and_moves_to_the_next_remote() {
    let mut f = Fake::new(config(&["unix:/a.sock", "tcp:127.0.0.1:6642"]));
    let (req, _) = f.establish(json!([false, "t1", {}]));
    f.events();
    f.advance_to_timeout();
    f.request(req, "echo");
    f.advance_to_timeout();
    assert_eq!(f.actions(), vec![ClientAction::Close(req)]);
    let ev = f.events();
    assert!(
        matches!(&ev[..], [SessionEvent::Disconnected { remote, why }]
            if remote == "unix:/a.sock" && why.contains("nothing heard")),
        "{ev:?}"
    );
    assert_eq!(f.s.status().state, SessionState::Backoff);
    assert_eq!(f.s.status().disconnects, 1);
    // Inputs for the closed socket are ignored.
    f.s.handle(f.now, req, Input::Read(b"garbage"));
    assert_eq!(f.s.pending_write(req), b"");
    let lost = f.now;
    f.advance_to_timeout();
    let wait = f.now - lost;
    assert!(wait >= MIN && wait <= MIN.mul_f64(1.25), "{wait:?}");
    let (req2, target) = f.connect();
    assert_ne!(req2, req);
    assert_eq!(target, Target::Tcp("127.0.0.1:6642".parse().unwrap()));
    // Resuming from the transaction seen (a standalone server will say found=false).
    f.request(req2, "transact");
}

#[test]
fn connect_timeout_and_backoff_growth() {
    let mut f = Fake::new(config(&["unix:/a.sock"]));
    let mut waits = Vec::new();
    for i in 0..8 {
        let req = match f.actions().as_slice() {
            [ClientAction::Connect(req, _)] => *req,
            other => panic!("{other:?}"),
        };
        let start = f.now;
        if i % 2 == 0 {
            f.s.handle(f.now, req, Input::ConnectFailed(ConnectError::Refused));
        } else {
            // No answer at all: the attempt is given up after twice the probe interval.
            f.advance_to_timeout();
            assert_eq!(f.now - start, 2 * PROBE);
        }
        assert_eq!(f.actions(), vec![ClientAction::Close(req)]);
        assert!(
            f.events().is_empty(),
            "no Disconnected for a failed attempt"
        );
        let lost = f.now;
        f.advance_to_timeout();
        waits.push(f.now - lost);
    }
    let mut base = MIN;
    for w in &waits {
        assert!(*w >= MIN && *w <= MAX, "{waits:?}");
        assert!(
            *w >= base.mul_f64(0.75) && *w <= base.mul_f64(1.25),
            "{waits:?}"
        );
        base = (base * 2).min(MAX);
    }
    assert!(waits[7] > waits[0] * 4, "{waits:?}");
    assert_eq!(f.s.status().connects, 0);
}

#[test]
fn backoff_resets_after_a_monitor() {
    let mut f = Fake::new(config(&["unix:/a.sock"]));
    for _ in 0..4 {
        let Some(ClientAction::Connect(req, _)) = f.s.poll_action() else {
            panic!()
        };
        f.s.handle(f.now, req, Input::Error);
        f.actions();
        f.advance_to_timeout();
    }
    let (req, _) = f.establish(json!([false, "t1", {}]));
    f.s.handle(f.now, req, Input::Eof);
    let lost = f.now;
    f.actions();
    f.advance_to_timeout();
    assert!(f.now - lost <= MIN.mul_f64(1.25));
}

#[test]
fn garbage_ends_the_connection() {
    for garbage in [
        &b"not json"[..],
        b"{\"id\":1}",
        b"[1,2]",
        b"{\"a\":}",
        b"{\"id\":null,\"method\":\"update3\",\"params\":[\"mdproxy\",\"t\",{\"Chassis\":{\"nope\":{}}}]}",
        b"{\"id\":null,\"method\":\"update3\",\"params\":[1]}",
    ] {
        let mut f = Fake::new(config(&["unix:/a.sock"]));
        let (req, _) = f.establish(json!([false, "t1", {}]));
        f.events();
        f.s.handle(f.now, req, Input::Read(garbage));
        assert_eq!(f.actions(), vec![ClientAction::Close(req)], "{garbage:?}");
        assert!(
            matches!(&f.events()[..], [SessionEvent::Disconnected { .. }]),
            "{garbage:?}"
        );
        f.advance_to_timeout();
        f.connect();
    }
}

#[test]
fn oversize_message_ends_the_connection() {
    let mut f = Fake::new(config(&["unix:/a.sock"]));
    let (req, _) = f.establish(json!([false, "t1", {}]));
    let big = json!({"id": null, "method": "update3",
        "params": ["mdproxy", "t2", {"Chassis": {ROW: {"modify": {"name": "x".repeat(5000)}}}}]});
    let bytes = serde_json::to_vec(&big).unwrap();
    for piece in bytes.chunks(1000) {
        f.s.handle(f.now, req, Input::Read(piece));
        assert!(f.s.buffered().0 <= 4096);
    }
    assert!(f.actions().contains(&ClientAction::Close(req)));
}

#[test]
fn error_reply_to_the_monitor() {
    let mut f = Fake::new(config(&["unix:/a.sock"]));
    let (req, _) = f.connect();
    let check = f.request(req, "transact");
    f.reply(req, &check, standalone());
    let monitor = f.request(req, "monitor_cond_since");
    // A malformed reply ends the connection.
    f.reply(req, &monitor, json!([true]));
    assert_eq!(f.actions(), vec![ClientAction::Close(req)]);
    assert!(
        matches!(&f.events()[..], [SessionEvent::Disconnected { why, .. }] if why.contains("malformed"))
    );

    // After the fallback, an error to monitor_cond ends it too.
    f.advance_to_timeout();
    let (req, _) = f.connect();
    let check = f.request(req, "transact");
    f.reply(req, &check, standalone());
    let monitor = f.request(req, "monitor_cond_since");
    f.recv(req, json!({"id": monitor["id"], "error": "unknown method"}));
    let monitor = f.request(req, "monitor_cond");
    f.recv(
        req,
        json!({"id": monitor["id"], "error": "unknown database", "details": "x"}),
    );
    assert_eq!(f.actions(), vec![ClientAction::Close(req)]);
    let ev = f.events();
    assert!(
        matches!(&ev[..], [SessionEvent::Disconnected { why, .. }] if why.contains("unknown database (x)")),
        "{ev:?}"
    );
}

#[test]
fn monitor_cond_fallback() {
    let mut f = Fake::new(config(&["unix:/a.sock"]));
    let (req, _) = f.connect();
    let check = f.request(req, "transact");
    f.reply(req, &check, standalone());
    let since = f.request(req, "monitor_cond_since");
    f.recv(req, json!({"id": since["id"], "error": "unknown method"}));
    let cond = f.request(req, "monitor_cond");
    assert_eq!(
        cond["params"],
        json!(["OVN_Southbound", "mdproxy", {"Chassis": [{"columns": ["name"]}]}])
    );
    f.reply(req, &cond, chassis("ch1"));
    let ev = f.events();
    assert!(
        matches!(&ev[1], SessionEvent::Snapshot(s) if s.len() == 1),
        "{ev:?}"
    );
    // update2 now, and update3 is not expected.
    f.recv(
        req,
        json!({"id": null, "method": "update2",
        "params": ["mdproxy", {"Chassis": {ROW: {"delete": null}}}]}),
    );
    assert!(matches!(&f.events()[..], [SessionEvent::Update(_)]));
    // A reconnect asks monitor_cond straight away, and its reply is a snapshot again.
    f.s.handle(f.now, req, Input::Eof);
    f.events();
    f.advance_to_timeout();
    let (req, _) = f.connect();
    let check = f.request(req, "transact");
    f.reply(req, &check, standalone());
    let cond = f.request(req, "monitor_cond");
    f.reply(req, &cond, json!({}));
    let ev = f.events();
    assert!(matches!(&ev[1], SessionEvent::Snapshot(_)), "{ev:?}");
    assert_eq!(f.s.status().resyncs, 1);
}

#[test]
fn reconnect_resumes_from_the_last_transaction() {
    let mut f = Fake::new(config(&["unix:/a.sock", "unix:/b.sock"]));
    let (req, _) = f.establish(json!([false, "t1", chassis("ch1")]));
    f.recv(
        req,
        json!({"id": null, "method": "update3", "params": ["mdproxy", "t2", {}]}),
    );
    f.s.handle(f.now, req, Input::Error);
    f.events();
    f.advance_to_timeout();
    let (req, _) = f.connect();
    let check = f.request(req, "transact");
    f.reply(req, &check, standalone());
    let monitor = f.request(req, "monitor_cond_since");
    assert_eq!(monitor["params"][3], json!("t2"));
    f.reply(req, &monitor, json!([true, "t2", {}]));
    let ev = f.events();
    assert_eq!(
        ev,
        vec![
            SessionEvent::Connected {
                remote: "unix:/b.sock".into(),
                resumed: true
            },
            SessionEvent::Update(vec![])
        ]
    );
    let st = f.s.status();
    assert_eq!(
        (st.connects, st.resumes, st.resyncs, st.disconnects),
        (2, 1, 0, 1)
    );
}

#[test]
fn conditions_changed_live_and_while_away() {
    let mut f = Fake::new(config(&["unix:/a.sock"]));
    let (req, _) = f.establish(json!([false, "t1", {}]));
    let ch1 = Condition::clause("name", "==", Datum::Set(vec![Atom::String("ch1".into())]));
    f.s.set_conditions(f.now, "Chassis", vec![ch1.clone()]);
    let change = f.request(req, "monitor_cond_change");
    assert_eq!(
        change["params"],
        json!(["mdproxy", "mdproxy", {"Chassis": [{"where": [["name", "==", "ch1"]]}]}])
    );
    f.s.set_conditions(f.now, "Nope", vec![]);
    assert!(f.sent(req).is_empty());
    f.reply(req, &change, json!({}));
    f.recv(
        req,
        json!({"id": null, "method": "update3", "params": ["mdproxy", "t2", {}]}),
    );
    // Acknowledged: a reconnect resumes.
    f.s.handle(f.now, req, Input::Eof);
    f.advance_to_timeout();
    let (req, _) = f.connect();
    let check = f.request(req, "transact");
    f.reply(req, &check, standalone());
    let monitor = f.request(req, "monitor_cond_since");
    assert_eq!(monitor["params"][3], json!("t2"));
    assert_eq!(
        monitor["params"][2],
        json!({"Chassis": [{"columns": ["name"], "where": [["name", "==", "ch1"]]}]})
    );
    f.reply(req, &monitor, json!([true, "t2", {}]));
    // Changed while away: the next monitor asks for a snapshot with the new conditions.
    f.s.handle(f.now, req, Input::Eof);
    f.s.set_conditions(f.now, "Chassis", vec![]);
    f.advance_to_timeout();
    let (req, _) = f.connect();
    let check = f.request(req, "transact");
    f.reply(req, &check, standalone());
    let monitor = f.request(req, "monitor_cond_since");
    assert_eq!(monitor["params"][3], json!(NO_TXN));
    assert_eq!(monitor["params"][2]["Chassis"][0]["where"], json!([false]));
    // Changed while the request was on its way: sent again once monitoring.
    f.s.set_conditions(f.now, "Chassis", vec![ch1]);
    assert!(f.sent(req).is_empty());
    f.reply(req, &monitor, json!([false, "t3", {}]));
    let change = f.request(req, "monitor_cond_change");
    assert_eq!(
        change["params"][2],
        json!({"Chassis": [{"where": [["name", "==", "ch1"]]}]})
    );
}

#[test]
fn server_check_moves_on() {
    let clustered = |connected: bool, index: i64| {
        json!([{"rows": [{"name": "OVN_Southbound", "model": "clustered",
            "connected": connected, "leader": false, "index": index}]}])
    };
    for (answer, why) in [
        (json!([{"rows": []}]), "does not serve"),
        (clustered(false, 5), "not connected"),
        (json!({"rows": 1}), "unexpected _Server"),
    ] {
        let mut f = Fake::new(config(&["unix:/a.sock", "unix:/b.sock"]));
        let (req, _) = f.connect();
        let check = f.request(req, "transact");
        f.reply(req, &check, answer);
        assert_eq!(f.actions(), vec![ClientAction::Close(req)]);
        let ev = f.events();
        assert!(
            matches!(&ev[..], [SessionEvent::Disconnected { why: w, .. }] if w.contains(why)),
            "{ev:?}"
        );
        f.advance_to_timeout();
        assert!(
            matches!(&f.actions()[..], [ClientAction::Connect(_, Target::Unix(p))] if p.to_str() == Some("/b.sock"))
        );
    }
    // A member behind one seen before is stale.
    let mut f = Fake::new(config(&["unix:/a.sock", "unix:/b.sock"]));
    let (req, _) = f.connect();
    let check = f.request(req, "transact");
    f.reply(req, &check, clustered(true, 10));
    let monitor = f.request(req, "monitor_cond_since");
    f.reply(req, &monitor, json!([false, "t1", {}]));
    f.s.handle(f.now, req, Input::Eof);
    f.events();
    f.advance_to_timeout();
    let (req, _) = f.connect();
    let check = f.request(req, "transact");
    f.reply(req, &check, clustered(true, 9));
    assert!(
        matches!(&f.events()[..], [SessionEvent::Disconnected { why, .. }] if why.contains("stale"))
    );
}

#[test]
fn ssl_without_tls_is_skipped() {
    let mut f = Fake::new(config(&["ssl:127.0.0.1:6642", "unix:/b.sock"]));
    assert!(f.actions().is_empty());
    assert_eq!(f.s.status().state, SessionState::Backoff);
    f.advance_to_timeout();
    let (req, target) = f.connect();
    assert_eq!(target, Target::Unix("/b.sock".into()));
    assert!(f.s.tls_target(req).is_none());
}

#[test]
fn a_server_that_reads_nothing_is_dropped() {
    let mut f = Fake::new(config(&["unix:/a.sock"]));
    let (req, _) = f.establish(json!([false, "t1", {}]));
    let echo =
        serde_json::to_vec(&json!({"id": "e", "method": "echo", "params": ["x".repeat(1000)]}))
            .unwrap();
    for _ in 0..5 {
        f.s.handle(f.now, req, Input::Read(&echo));
        assert!(f.s.buffered().1 <= 4096);
    }
    assert!(f.actions().contains(&ClientAction::Close(req)));
}

#[test]
fn transactions_ride_the_monitoring_connection() {
    let mut f = Fake::new(config(&["unix:/sb.sock"]));
    // Not monitoring yet: nothing is sent.
    assert_eq!(f.s.transact(f.now, json!(["OVN_Southbound"])), None);
    let (req, _) = f.establish(json!([false, "t1", {}]));
    f.events();
    let params = json!(["OVN_Southbound", {"op": "mutate", "table": "Chassis_Private",
        "where": [["name", "==", "ch1"]], "mutations": []}]);
    let id = f.s.transact(f.now, params.clone()).expect("monitoring");
    let sent = f.request(req, "transact");
    assert_eq!(
        (sent["params"].clone(), sent["id"].as_u64()),
        (params, Some(id))
    );
    assert_eq!(f.s.poll_transact_reply(), None);
    f.reply(req, &sent, json!([{"count": 1}]));
    assert_eq!(
        f.s.poll_transact_reply(),
        Some((id, Ok(json!([{"count": 1}]))))
    );
    // An error answer is handed over, and the monitor carries on.
    let id2 = f.s.transact(f.now, json!(["nope"])).expect("monitoring");
    let sent = f.request(req, "transact");
    f.recv(
        req,
        json!({"id": sent["id"], "error": "unknown database", "result": null}),
    );
    let Some((got, Err(e))) = f.s.poll_transact_reply() else {
        panic!("no error reply")
    };
    assert_eq!((got, e.to_string()), (id2, "unknown database".to_owned()));
    assert_eq!(f.s.status().state, SessionState::Monitoring);
    assert!(f.events().is_empty());
}

#[test]
fn map_keys_not_kept_are_dropped_from_replies_and_updates() {
    let mut f = Fake::new(config(&["unix:/sb.sock"]));
    f.s.keep_map_keys("Chassis", "external_ids", &["keep"]);
    let ids = json!(["map", [["keep", "1"], ["drop", "2"]]]);
    let kept = Datum::Map(vec![(
        Atom::String("keep".into()),
        Atom::String("1".into()),
    )]);
    let (req, _) = f.establish(json!([false, "t1",
        {"Chassis": {ROW: {"initial": {"name": "ch1", "external_ids": ids}}}}]));
    let ev = f.events();
    let SessionEvent::Snapshot(snap) = &ev[1] else {
        panic!("{ev:?}")
    };
    let RowOp::Initial(columns) = &snap[0].rows[0].op else {
        panic!("{snap:?}")
    };
    let column = |name: &str| columns.iter().find(|(n, _)| &**n == name).map(|(_, d)| d);
    assert_eq!(column("external_ids"), Some(&kept));
    let name = Datum::Set(vec![Atom::String("ch1".into())]);
    assert_eq!(column("name"), Some(&name), "other columns untouched");
    f.recv(
        req,
        json!({"id": null, "method": "update3",
            "params": ["mdproxy", "t2", {"Chassis": {ROW: {"modify": {"external_ids": ids}}}}]}),
    );
    let ev = f.events();
    let [SessionEvent::Update(u)] = &ev[..] else {
        panic!("{ev:?}")
    };
    assert_eq!(
        u[0].rows[0].op,
        RowOp::Modify(vec![("external_ids".into(), kept)])
    );
}
