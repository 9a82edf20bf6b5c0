//! The generic format, for any control plane that can write JSON:
//! `{"ts": RFC 3339, "cluster": str, "reporter": str, "signal": str, ...}`.
//!
//! | signal        | fields                                                    |
//! |---------------|-----------------------------------------------------------|
//! | `leader`      | `leader`: id, or null for "no leader"                     |
//! | `self_leader` | `is_leader`: bool                                         |
//! | `peer`        | `peer`: id, `connected`: bool                             |
//! | `members`     | `members`: [id], `index`: raft index                      |
//! | `read_only`   | `read_only`: bool                                         |
//! | `node`        | `node`: id, `online`: bool — a liveness verdict (`via: poll`) |
//! |               | optional `via`, `down_after`, `up_after`: one probe attempt  |
//! | `entity`      | `entity_type`, `entity_id`, `slot`, `op`: created/deleted |
//!
//! A `slot` is an object `{"service", "router", "host"}` (host optional), or a string that
//! names the slot on its own (it becomes the `service` of spin events).
//!
//! An edge (DESIGN §10) forwards what its probes and pollers find as generic lines
//! ([`line`]); a probe's attempt keeps its `via` and thresholds, so the core counts
//! consecutive failures exactly as a local probe would.

use std::borrow::Cow;

use super::{raw_array, raw_object, raw_opt_str, Decoded, Ignored, RawObject, Reason};
use crate::model::{EntityOp, Observation, Signal, Slot, Via};

pub(crate) fn decode<'a>(obj: &RawObject<'a>) -> Result<Decoded<'a>, Reason> {
    let signal_name = obj.req_str("signal")?;
    let signal = match signal_name.as_ref() {
        "leader" => {
            // `leader` must be present: null is a statement ("no leader"), absence is not.
            let raw = obj.get("leader").ok_or(Reason::Missing("leader"))?;
            let leader = raw_opt_str(raw, "leader")?;
            if leader.as_deref() == Some("") {
                return Err(Reason::Invalid {
                    field: "leader",
                    why: "empty; use null for no leader".into(),
                });
            }
            Signal::View { leader }
        }
        "self_leader" => Signal::SelfLeader { is_leader: obj.req_bool("is_leader")? },
        "peer" => Signal::Peer { peer: obj.req_id("peer")?, connected: obj.req_bool("connected")? },
        "members" => {
            let index = obj.req_u64("index")?;
            let raw = obj.get("members").ok_or(Reason::Missing("members"))?;
            let members = raw_array(raw, "members")?
                .into_iter()
                .map(|m| match raw_opt_str(m, "members") {
                    Ok(Some(id)) if !id.is_empty() => Ok(id),
                    _ => Err(Reason::Mistyped { field: "members", expected: "an array of ids" }),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Signal::Members { index, members }
        }
        "read_only" => Signal::ReadOnly { read_only: obj.req_bool("read_only")? },
        "node" => Signal::NodeCheck {
            node: obj.req_id("node")?,
            ok: obj.req_bool("online")?,
            via: match obj.opt_str("via")?.as_deref() {
                None | Some("poll") => Via::Poll,
                Some("probe") => Via::Probe,
                Some("peers") => Via::Peers,
                Some(other) => {
                    return Err(Reason::Invalid {
                        field: "via",
                        why: format!(
                            "{:?} is none of \"poll\", \"probe\", \"peers\"",
                            crate::model::clip(other)
                        ),
                    })
                }
            },
            // Without thresholds a generic record is a verdict the emitter already reached,
            // not one attempt.
            down_after: threshold(obj, "down_after")?,
            up_after: threshold(obj, "up_after")?,
        },
        "entity" => {
            obj.req_id("entity_type")?;
            obj.req_id("entity_id")?;
            let op = match obj.req_str("op")?.as_ref() {
                "created" => EntityOp::Created,
                "deleted" => EntityOp::Deleted,
                other => {
                    return Err(Reason::Invalid {
                        field: "op",
                        why: format!(
                            "{:?} is neither \"created\" nor \"deleted\"",
                            crate::model::clip(other)
                        ),
                    })
                }
            };
            Signal::Entity { op, slot: slot(obj)? }
        }
        _ => return Ok(Decoded::Ignored(Ignored::EventType)),
    };
    Ok(Decoded::Observation(Observation {
        cluster: obj.req_id("cluster")?,
        reporter: obj.req_id("reporter")?,
        at: obj.req_time("ts")?,
        signal,
    }))
}

fn threshold(obj: &RawObject<'_>, name: &'static str) -> Result<u32, Reason> {
    if !obj.has(name) {
        return Ok(1);
    }
    match u32::try_from(obj.req_u64(name)?) {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(Reason::Invalid { field: name, why: "not between 1 and 2^32 - 1".into() }),
    }
}

/// The generic line that says what `obs` says, for the signals a probe or a poller finds
/// (`None` for the OpenZiti-only ones: routers and two-phase entity changes, which an edge
/// forwards as the lines it read).
pub fn line(obs: &Observation<'_>) -> Option<String> {
    use serde_json::{json, Value};
    let mut v = json!({
        "ts": obs.at.rfc3339().as_str(),
        "cluster": &*obs.cluster,
        "reporter": &*obs.reporter,
    });
    let fields = match &obs.signal {
        Signal::View { leader } => json!({"signal": "leader", "leader": leader.as_deref()}),
        Signal::SelfLeader { is_leader } => {
            json!({"signal": "self_leader", "is_leader": is_leader})
        }
        Signal::Peer { peer, connected } => {
            json!({"signal": "peer", "peer": &**peer, "connected": connected})
        }
        Signal::Members { index, members } => {
            let members: Vec<&str> = members.iter().map(|m| &**m).collect();
            json!({"signal": "members", "index": index, "members": members})
        }
        Signal::ReadOnly { read_only } => json!({"signal": "read_only", "read_only": read_only}),
        Signal::NodeCheck { node, ok, via, down_after, up_after } => json!({
            "signal": "node", "node": &**node, "online": ok, "via": via.as_str(),
            "down_after": down_after, "up_after": up_after,
        }),
        Signal::Entity { op, slot } => json!({
            "signal": "entity",
            "entity_type": "terminators",
            "entity_id": format!("{}/{}/{}", slot.service, slot.router, slot.host),
            "op": match op { EntityOp::Created => "created", EntityOp::Deleted => "deleted" },
            "slot": match (slot.router.is_empty(), slot.host.is_empty()) {
                // A slot named on its own (see above).
                (true, true) => json!(&*slot.service),
                _ => json!({"service": &*slot.service, "router": &*slot.router, "host": &*slot.host}),
            },
        }),
        Signal::Router { .. } | Signal::StagedEntity { .. } | Signal::Commit { .. } => return None,
    };
    if let (Value::Object(v), Value::Object(f)) = (&mut v, fields) {
        v.extend(f);
    }
    Some(v.to_string())
}

fn slot<'a>(obj: &RawObject<'a>) -> Result<Slot<'a>, Reason> {
    let raw = obj.get("slot").ok_or(Reason::Missing("slot"))?;
    if let Ok(Some(name)) = raw_opt_str(raw, "slot") {
        if name.is_empty() {
            return Err(Reason::Invalid { field: "slot", why: "empty".into() });
        }
        return Ok(Slot { service: name, router: Cow::Borrowed(""), host: Cow::Borrowed("") });
    }
    let bad = |r: Reason| Reason::Invalid { field: "slot", why: r.to_string() };
    let s = raw_object(raw, "slot")
        .map_err(|_| Reason::Mistyped { field: "slot", expected: "an object or a string" })?;
    Ok(Slot {
        service: s.req_id("service").map_err(bad)?,
        router: s.req_id("router").map_err(bad)?,
        host: s.opt_str("host").map_err(bad)?.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{decode_line, Context, Decoded, Reason};
    use crate::model::{EntityOp, Signal, Via};

    fn ok(line: &str) -> crate::model::Observation<'static> {
        let ctx = Context::new("ignored", "ignored");
        match decode_line(line.as_bytes(), 1, &ctx) {
            Ok(Decoded::Observation(o)) => o.into_owned(),
            other => panic!("{line}: {other:?}"),
        }
    }

    fn reason(line: &str) -> Reason {
        let ctx = Context::new("x", "x");
        decode_line(line.as_bytes(), 1, &ctx).expect_err(line).reason
    }

    const HEAD: &str = r#""ts":"2025-03-01T10:00:00.5Z","cluster":"etcd-a","reporter":"n1""#;

    fn line(rest: &str) -> String {
        format!("{{{HEAD},{rest}}}")
    }

    /// An edge's probe and poller findings travel as generic lines: each reads back as the
    /// observation it was, a probe attempt with its thresholds included.
    #[test]
    fn a_probe_or_poller_finding_reads_back_from_its_generic_line() {
        use crate::model::{Observation, Slot, Timestamp};
        use std::borrow::Cow;
        let at = Timestamp::parse("2025-03-01T10:00:00.123456789Z").unwrap();
        let signals = [
            Signal::View { leader: Some("n2".into()) },
            Signal::View { leader: None },
            Signal::SelfLeader { is_leader: true },
            Signal::Peer { peer: "n3".into(), connected: false },
            Signal::Members { index: 7, members: vec!["n1".into(), "n2".into()] },
            Signal::ReadOnly { read_only: true },
            Signal::NodeCheck {
                node: "n1".into(),
                ok: false,
                via: Via::Probe,
                down_after: 2,
                up_after: 3,
            },
            Signal::NodeCheck {
                node: "n1".into(),
                ok: true,
                via: Via::Poll,
                down_after: 1,
                up_after: 1,
            },
            Signal::Entity {
                op: EntityOp::Created,
                slot: Slot { service: "s".into(), router: "r".into(), host: Cow::Borrowed("") },
            },
        ];
        for signal in signals {
            let obs = Observation { cluster: "c \"1\"".into(), reporter: "n1".into(), at, signal };
            let line = super::line(&obs).expect("a generic line");
            assert_eq!(ok(&line), obs, "{line}");
        }
        let router = Observation {
            cluster: "c".into(),
            reporter: "n1".into(),
            at,
            signal: Signal::Router { router: "r".into(), online: true },
        };
        assert_eq!(super::line(&router), None, "an OpenZiti-only signal has no generic line");
    }

    #[test]
    fn node_thresholds_out_of_range_are_errors() {
        let bad = line(r#""signal":"node","node":"n1","online":false,"down_after":0"#);
        assert!(matches!(reason(&bad), Reason::Invalid { field: "down_after", .. }));
        let bad = line(r#""signal":"node","node":"n1","online":false,"via":"radio""#);
        assert!(matches!(reason(&bad), Reason::Invalid { field: "via", .. }));
    }

    #[test]
    fn every_signal_decodes() {
        let o = ok(&line(r#""signal":"leader","leader":"n2""#));
        assert_eq!((&*o.cluster, &*o.reporter), ("etcd-a", "n1"));
        assert_eq!(o.signal, Signal::View { leader: Some("n2".into()) });
        assert_eq!(
            ok(&line(r#""signal":"leader","leader":null"#)).signal,
            Signal::View { leader: None }
        );
        assert_eq!(
            ok(&line(r#""signal":"self_leader","is_leader":true"#)).signal,
            Signal::SelfLeader { is_leader: true }
        );
        assert_eq!(
            ok(&line(r#""signal":"peer","peer":"n3","connected":false"#)).signal,
            Signal::Peer { peer: "n3".into(), connected: false }
        );
        assert_eq!(
            ok(&line(r#""signal":"members","members":["n1","n2"],"index":4"#)).signal,
            Signal::Members { index: 4, members: vec!["n1".into(), "n2".into()] }
        );
        assert_eq!(
            ok(&line(r#""signal":"read_only","read_only":true"#)).signal,
            Signal::ReadOnly { read_only: true }
        );
        assert_eq!(
            ok(&line(r#""signal":"node","node":"n3","online":false"#)).signal,
            Signal::NodeCheck {
                node: "n3".into(),
                ok: false,
                via: Via::Poll,
                down_after: 1,
                up_after: 1
            }
        );
        match ok(&line(
            r#""signal":"entity","entity_type":"terminators","entity_id":"t9","op":"deleted","slot":{"service":"s","router":"r"}"#,
        ))
        .signal
        {
            Signal::Entity { op: EntityOp::Deleted, slot } => {
                assert_eq!((&*slot.service, &*slot.router, &*slot.host), ("s", "r", ""))
            }
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn generic_errors_name_the_field() {
        assert_eq!(reason(&line(r#""signal":"leader""#)), Reason::Missing("leader"));
        assert_eq!(
            reason(&line(r#""signal":"peer","peer":"n3","connected":"yes""#)),
            Reason::Mistyped { field: "connected", expected: "a boolean" }
        );
        assert!(matches!(
            reason(&line(
                r#""signal":"entity","entity_type":"t","entity_id":"1","op":"moved","slot":"s""#
            )),
            Reason::Invalid { field: "op", .. }
        ));
        assert_eq!(
            reason(r#"{"signal":"read_only","read_only":true,"cluster":"c","reporter":"r"}"#),
            Reason::Missing("ts")
        );
        assert_eq!(
            reason(
                r#"{"signal":"read_only","read_only":true,"ts":"2025-03-01T10:00:00Z","reporter":"r"}"#
            ),
            Reason::Missing("cluster")
        );
    }

    #[test]
    fn raft_index_is_a_non_negative_integer_anything_else_is_a_decode_error() {
        let members =
            |index: &str| line(&format!(r#""signal":"members","members":["a"],"index":{index}"#));
        assert!(matches!(ok(&members("3")).signal, Signal::Members { index: 3, .. }));
        for bad in ["-1", "1.5", "1e3", "\"3\"", "null"] {
            assert!(
                matches!(reason(&members(bad)), Reason::Mistyped { field: "index", .. }),
                "index {bad} was accepted"
            );
        }
    }
}
