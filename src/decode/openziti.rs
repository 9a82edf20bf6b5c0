//! OpenZiti controller events, every version seen in the field.
//!
//! - Namespaces: `cluster` (v1.3+) / `fabric.cluster`; `router` / `fabric.routers`;
//!   `terminator` / `fabric.terminators`; `entityChange` (v2.0+ terminators, two-phase).
//! - The type key is `eventType` or `event_type` in any namespace: cluster events used
//!   `event_type` before v0.28 and `eventType` since.
//! - `event_src_id` names the reporter from v1.3 on; older records take the source's reporter.
//! - Other namespaces (connect, sdk, link, alert, …) are passed over, not errors.

use std::borrow::Cow;

use super::{
    raw_array, raw_object, raw_opt_str, show, Context, Decoded, Ignored, RawObject, Reason,
};
use crate::model::{EntityOp, Observation, Signal, Slot};

pub(crate) fn decode<'a>(obj: &RawObject<'a>, ctx: &'a Context) -> Result<Decoded<'a>, Reason> {
    let namespace = obj.req_str("namespace")?;
    let family = match namespace.as_ref() {
        "cluster" | "fabric.cluster" => Family::Cluster,
        "router" | "fabric.routers" => Family::Router,
        "terminator" | "fabric.terminators" => Family::Terminator,
        "entityChange" => Family::EntityChange,
        _ => return Ok(Decoded::Ignored(Ignored::Namespace)),
    };
    let event_type = event_type(obj)?;
    let signal = match family {
        Family::Cluster => cluster_signal(obj, &event_type)?,
        Family::Router => router_signal(obj, &event_type)?,
        Family::Terminator => terminator_signal(obj, &event_type)?,
        Family::EntityChange => entity_change_signal(obj, &event_type)?,
    };
    let signal = match signal {
        Ok(signal) => signal,
        Err(ignored) => return Ok(Decoded::Ignored(ignored)),
    };
    let at = obj.req_time("timestamp")?;
    let reporter = match obj.opt_str("event_src_id")? {
        Some(r) if !r.is_empty() => r,
        _ => Cow::Borrowed(ctx.reporter.as_str()),
    };
    Ok(Decoded::Observation(Observation {
        cluster: Cow::Borrowed(ctx.cluster.as_str()),
        reporter,
        at,
        signal,
    }))
}

enum Family {
    Cluster,
    Router,
    Terminator,
    EntityChange,
}

/// The signal a record carries, or why it is passed over.
type Outcome<'a> = Result<Signal<'a>, Ignored>;

fn event_type<'a>(obj: &RawObject<'a>) -> Result<Cow<'a, str>, Reason> {
    if let Some(t) = obj.opt_str("eventType")? {
        return Ok(t);
    }
    obj.opt_str("event_type")?.ok_or(Reason::Missing("eventType"))
}

fn cluster_signal<'a>(obj: &RawObject<'a>, event_type: &str) -> Result<Outcome<'a>, Reason> {
    let signal = match event_type {
        "peer.connected" => Signal::Peer { peer: first_peer(obj)?, connected: true },
        "peer.disconnected" | "peer.not_member" => {
            Signal::Peer { peer: first_peer(obj)?, connected: false }
        }
        "members.changed" => {
            let index = obj.req_u64("index")?;
            let members = peer_ids(obj)?;
            Signal::Members { index, members }
        }
        "leadership.gained" => Signal::SelfLeader { is_leader: true },
        "leadership.lost" => Signal::SelfLeader { is_leader: false },
        "state.has_leader" => Signal::View { leader: Some(obj.req_id("leaderId")?) },
        "state.is_leaderless" => Signal::View { leader: None },
        "state.ro" => Signal::ReadOnly { read_only: true },
        "state.rw" => Signal::ReadOnly { read_only: false },
        _ => return Ok(Err(Ignored::EventType)),
    };
    Ok(Ok(signal))
}

fn router_signal<'a>(obj: &RawObject<'a>, event_type: &str) -> Result<Outcome<'a>, Reason> {
    let online = match event_type {
        "router-online" => true,
        "router-offline" => false,
        _ => return Ok(Err(Ignored::EventType)),
    };
    Ok(Ok(Signal::Router { router: obj.req_id("router_id")?, online }))
}

fn terminator_signal<'a>(obj: &RawObject<'a>, event_type: &str) -> Result<Outcome<'a>, Reason> {
    let op = match event_type {
        "created" => EntityOp::Created,
        "deleted" => EntityOp::Deleted,
        "updated" | "router-online" | "router-offline" => {
            return Ok(Err(Ignored::TerminatorDetail))
        }
        _ => return Ok(Err(Ignored::EventType)),
    };
    let slot = Slot {
        service: obj.req_id("service_id")?,
        router: obj.req_id("router_id")?,
        host: obj.opt_str("host_id")?.unwrap_or_default(),
    };
    Ok(Ok(Signal::Entity { op, slot }))
}

/// v2.0+ terminators arrive as entity changes: the terminator's fields are in `finalState` on
/// created and `initialState` on deleted, and a `committed` event with the same `eventId`
/// follows; only then does the change count.
fn entity_change_signal<'a>(obj: &RawObject<'a>, event_type: &str) -> Result<Outcome<'a>, Reason> {
    let (op, state_field) = match event_type {
        "committed" => return Ok(Ok(Signal::Commit { event_id: obj.req_id("eventId")? })),
        "created" => (EntityOp::Created, "finalState"),
        "deleted" => (EntityOp::Deleted, "initialState"),
        _ => return Ok(Err(Ignored::EventType)),
    };
    match obj.opt_str("entityType")? {
        Some(t) if t == "terminators" => {}
        Some(_) => return Ok(Err(Ignored::EntityType)),
        None => return Err(Reason::Missing("entityType")),
    }
    let event_id = obj.req_id("eventId")?;
    let raw = obj.get(state_field).ok_or(Reason::Missing(state_field))?;
    let state = raw_object(raw, state_field)?;
    let slot = Slot {
        service: state.req_id("service").map_err(|r| nested(r, state_field))?,
        router: state.req_id("router").map_err(|r| nested(r, state_field))?,
        host: state.opt_str("hostId").map_err(|r| nested(r, state_field))?.unwrap_or_default(),
    };
    Ok(Ok(Signal::StagedEntity { event_id, op, slot }))
}

/// Qualifies an error about a nested field with its parent, for the operator's sake.
fn nested(reason: Reason, parent: &'static str) -> Reason {
    Reason::Invalid { field: parent, why: reason.to_string() }
}

fn first_peer<'a>(obj: &RawObject<'a>) -> Result<Cow<'a, str>, Reason> {
    let raw = obj.get("peers").ok_or(Reason::Missing("peers"))?;
    let peers = raw_array(raw, "peers")?;
    let first = peers.first().ok_or_else(|| Reason::Invalid {
        field: "peers",
        why: "empty; a peer event names its peer in peers[0].id".into(),
    })?;
    peer_id(first)
}

fn peer_ids<'a>(obj: &RawObject<'a>) -> Result<Vec<Cow<'a, str>>, Reason> {
    let raw = obj.get("peers").ok_or(Reason::Missing("peers"))?;
    raw_array(raw, "peers")?.into_iter().map(peer_id).collect()
}

/// A peer as far as herald cares: its id (the rest — addresses, versions, API lists — is
/// skipped unread).
#[derive(serde::Deserialize)]
struct Peer<'a> {
    #[serde(borrow)]
    id: Option<&'a serde_json::value::RawValue>,
}

fn peer_id<'a>(raw: &'a serde_json::value::RawValue) -> Result<Cow<'a, str>, Reason> {
    let bad = || Reason::Invalid {
        field: "peers",
        why: format!("element {} has no string `id`", show(raw)),
    };
    let peer: Peer<'a> = serde_json::from_str(raw.get()).map_err(|_| bad())?;
    match peer.id.map(|id| raw_opt_str(id, "peers[].id")) {
        Some(Ok(Some(id))) if !id.is_empty() => Ok(id),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{decode_line, Context, Decoded, Ignored, Reason};
    use crate::model::{EntityOp, Signal, Timestamp};

    fn ok(line: &str) -> crate::model::Observation<'static> {
        let ctx = Context::new("prod", "ctrl0");
        match decode_line(line.as_bytes(), 1, &ctx) {
            Ok(Decoded::Observation(o)) => o.into_owned(),
            other => panic!("{line}: {other:?}"),
        }
    }

    fn reason(line: &str) -> Reason {
        let ctx = Context::new("prod", "ctrl0");
        match decode_line(line.as_bytes(), 1, &ctx) {
            Err(e) => e.reason,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn old_cluster_events_use_event_type_and_the_configured_reporter() {
        let o = ok(
            r#"{"namespace":"fabric.cluster","event_type":"state.has_leader","timestamp":"2024-01-01T00:00:00Z","leaderId":"c1"}"#,
        );
        assert_eq!(o.reporter, "ctrl0");
        assert_eq!(o.cluster, "prod");
        assert_eq!(o.signal, Signal::View { leader: Some("c1".into()) });
    }

    #[test]
    fn read_only_and_leadership_types() {
        let base =
            r#""namespace":"cluster","event_src_id":"c2","timestamp":"2024-01-01T00:00:00Z""#;
        let s = |t: &str| ok(&format!("{{{base},\"eventType\":\"{t}\"}}")).signal;
        assert_eq!(s("state.ro"), Signal::ReadOnly { read_only: true });
        assert_eq!(s("state.rw"), Signal::ReadOnly { read_only: false });
        assert_eq!(s("leadership.gained"), Signal::SelfLeader { is_leader: true });
        assert_eq!(s("leadership.lost"), Signal::SelfLeader { is_leader: false });
        assert_eq!(s("state.is_leaderless"), Signal::View { leader: None });
    }

    #[test]
    fn not_member_counts_as_disconnected() {
        let o = ok(
            r#"{"namespace":"cluster","eventType":"peer.not_member","timestamp":"2024-01-01T00:00:00Z","peers":[{"id":"c3"}]}"#,
        );
        assert_eq!(o.signal, Signal::Peer { peer: "c3".into(), connected: false });
    }

    #[test]
    fn entity_change_terminators_are_staged_then_committed() {
        let created = ok(
            r#"{"namespace":"entityChange","eventId":"e1","eventType":"created","timestamp":"2024-01-01T00:00:00Z","entityType":"terminators","finalState":{"id":"t1","service":"s","router":"r","hostId":"h"}}"#,
        );
        match created.signal {
            Signal::StagedEntity { event_id, op, slot } => {
                assert_eq!(event_id, "e1");
                assert_eq!(op, EntityOp::Created);
                assert_eq!((&*slot.service, &*slot.router, &*slot.host), ("s", "r", "h"));
            }
            s => panic!("{s:?}"),
        }
        let deleted = ok(
            r#"{"namespace":"entityChange","eventId":"e2","eventType":"deleted","timestamp":"2024-01-01T00:00:00Z","entityType":"terminators","initialState":{"id":"t1","service":"s","router":"r"},"finalState":null}"#,
        );
        assert!(matches!(deleted.signal, Signal::StagedEntity { op: EntityOp::Deleted, .. }));
        let committed = ok(
            r#"{"namespace":"entityChange","eventId":"e1","eventType":"committed","timestamp":"2024-01-01T00:00:00Z"}"#,
        );
        assert_eq!(committed.signal, Signal::Commit { event_id: "e1".into() });
    }

    #[test]
    fn required_fields_missing_or_mistyped_are_errors() {
        assert_eq!(
            reason(
                r#"{"namespace":"cluster","eventType":"state.has_leader","timestamp":"2024-01-01T00:00:00Z"}"#
            ),
            Reason::Missing("leaderId")
        );
        assert_eq!(
            reason(
                r#"{"namespace":"cluster","eventType":"state.has_leader","timestamp":"2024-01-01T00:00:00Z","leaderId":7}"#
            ),
            Reason::Mistyped { field: "leaderId", expected: "a string" }
        );
        assert_eq!(
            reason(r#"{"namespace":"cluster","eventType":"state.rw"}"#),
            Reason::Missing("timestamp")
        );
        assert!(matches!(
            reason(
                r#"{"namespace":"cluster","eventType":"state.rw","timestamp":"2024-13-01T00:00:00Z"}"#
            ),
            Reason::Timestamp { field: "timestamp", .. }
        ));
        assert_eq!(
            reason(r#"{"namespace":"cluster","timestamp":"2024-01-01T00:00:00Z"}"#),
            Reason::Missing("eventType")
        );
        assert_eq!(
            reason(
                r#"{"namespace":"cluster","eventType":"members.changed","timestamp":"2024-01-01T00:00:00Z","peers":[]}"#
            ),
            Reason::Missing("index")
        );
        assert!(matches!(
            reason(
                r#"{"namespace":"cluster","eventType":"members.changed","timestamp":"2024-01-01T00:00:00Z","index":-1,"peers":[]}"#
            ),
            Reason::Mistyped { field: "index", .. }
        ));
        assert!(matches!(
            reason(
                r#"{"namespace":"cluster","eventType":"peer.connected","timestamp":"2024-01-01T00:00:00Z","peers":[]}"#
            ),
            Reason::Invalid { field: "peers", .. }
        ));
        assert!(matches!(
            reason(
                r#"{"namespace":"cluster","eventType":"peer.connected","timestamp":"2024-01-01T00:00:00Z","peers":[{"addr":"x"}]}"#
            ),
            Reason::Invalid { field: "peers", .. }
        ));
        assert_eq!(
            reason(
                r#"{"namespace":"router","event_type":"router-online","timestamp":"2024-01-01T00:00:00Z"}"#
            ),
            Reason::Missing("router_id")
        );
        assert_eq!(
            reason(
                r#"{"namespace":"terminator","event_type":"created","timestamp":"2024-01-01T00:00:00Z","router_id":"r"}"#
            ),
            Reason::Missing("service_id")
        );
        assert_eq!(
            reason(r#"{"namespace":7}"#),
            Reason::Mistyped { field: "namespace", expected: "a string" }
        );
    }

    #[test]
    fn unknown_types_and_namespaces_are_passed_over() {
        let ctx = Context::new("prod", "ctrl0");
        let ig = |l: &str| match decode_line(l.as_bytes(), 1, &ctx) {
            Ok(Decoded::Ignored(i)) => i,
            other => panic!("{l}: {other:?}"),
        };
        assert_eq!(ig(r#"{"namespace":"usage","version":2}"#), Ignored::Namespace);
        assert_eq!(
            ig(
                r#"{"namespace":"cluster","eventType":"state.something_new","timestamp":"2024-01-01T00:00:00Z"}"#
            ),
            Ignored::EventType
        );
        assert_eq!(
            ig(
                r#"{"namespace":"entityChange","eventType":"created","eventId":"x","entityType":"services","timestamp":"2024-01-01T00:00:00Z"}"#
            ),
            Ignored::EntityType
        );
    }

    #[test]
    fn timestamps_keep_their_nanoseconds() {
        let o = ok(
            r#"{"namespace":"cluster","eventType":"state.is_leaderless","timestamp":"2025-01-10T13:54:44.757971684-05:00"}"#,
        );
        assert_eq!(o.at, Timestamp::parse("2025-01-10T18:54:44.757971684Z").unwrap());
    }

    #[test]
    fn raft_index_is_a_non_negative_integer_anything_else_is_a_decode_error() {
        let members = |index: &str| {
            format!(
                r#"{{"namespace":"cluster","eventType":"members.changed","timestamp":"2024-01-01T00:00:00Z","index":{index},"peers":[{{"id":"a"}}]}}"#
            )
        };
        for good in ["0", "7", "18446744073709551615"] {
            let o = ok(&members(good));
            assert!(matches!(o.signal, Signal::Members { .. }), "{good}");
        }
        for bad in ["-1", "1.5", "1.0", "1e3", "\"7\"", "null", "true", "18446744073709551616"] {
            assert!(
                matches!(reason(&members(bad)), Reason::Mistyped { field: "index", .. }),
                "index {bad} was accepted"
            );
        }
    }

    #[test]
    fn peers_a_peer_event_concerns_peers_0_only_and_not_member_is_disconnected() {
        let peer = |event_type: &str| {
            ok(&format!(
                r#"{{"namespace":"cluster","eventType":"{event_type}","timestamp":"2024-01-01T00:00:00Z","peers":[{{"id":"p0"}},{{"id":"p1"}}]}}"#
            ))
            .signal
        };
        let signal = |connected| Signal::Peer { peer: "p0".into(), connected };
        assert_eq!(peer("peer.connected"), signal(true));
        assert_eq!(peer("peer.disconnected"), signal(false));
        assert_eq!(peer("peer.not_member"), signal(false));
    }
}
