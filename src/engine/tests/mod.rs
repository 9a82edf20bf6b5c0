//! Engine tests on a virtual clock, driving the engine through its public calls.
//!
//! - `rules`: one test per rule of DESIGN §5, named after the rule
//! - `limits`: the caps on what input creates, spent clusters let go
//! - `readings`: one test per precise reading of DESIGN §5.4a, named after the reading
//! - `snapshot`: snapshots written by earlier releases still restore
//! - `entries`: entries and their changes restore an engine that goes on unchanged

mod entries;
mod limits;
mod readings;
mod rules;
mod snapshot;

use std::borrow::Cow;

use super::*;
use crate::model::{EntityOp, Signal, Slot, Via};

const SEC: i64 = 1_000_000_000;
/// 2025-01-10T18:00:00Z: any fixed origin works; this one reads well in failures.
const T0: i64 = 1_736_532_000 * SEC;

fn t(secs: f64) -> Timestamp {
    Timestamp(T0 + (secs * SEC as f64).round() as i64)
}

fn ns(n: i64) -> Nanos {
    Nanos(n)
}

struct H {
    engine: Engine,
    /// Everything emitted so far, in order.
    log: Vec<ClusterEvent>,
}

impl H {
    fn new() -> H {
        H { engine: Engine::new(EngineConfig::default()), log: Vec::new() }
    }

    fn with(params: Params) -> H {
        H {
            engine: Engine::new(EngineConfig { defaults: params, ..Default::default() }),
            log: Vec::new(),
        }
    }

    /// Observes at the record's own time (replay), returning what came out.
    fn at(&mut self, at: Timestamp, reporter: &str, signal: Signal<'static>) -> Vec<ClusterEvent> {
        let obs = Observation {
            cluster: Cow::Borrowed("c"),
            reporter: Cow::Owned(reporter.into()),
            at,
            signal,
        };
        let mut out = Vec::new();
        self.engine.observe(&obs, at, &mut out);
        self.log.extend(out.iter().cloned());
        out
    }

    fn outcome(&mut self, at: Timestamp, reporter: &str, signal: Signal<'static>) -> Outcome {
        let obs = Observation {
            cluster: Cow::Borrowed("c"),
            reporter: Cow::Owned(reporter.into()),
            at,
            signal,
        };
        let mut out = Vec::new();
        let outcome = self.engine.observe(&obs, at, &mut out);
        self.log.extend(out);
        outcome
    }

    fn tick(&mut self, now: Timestamp) -> Vec<ClusterEvent> {
        let mut out = Vec::new();
        self.engine.tick(now, &mut out);
        self.log.extend(out.iter().cloned());
        out
    }

    fn finish(&mut self) -> Vec<ClusterEvent> {
        let mut out = Vec::new();
        self.engine.finish(&mut out);
        self.log.extend(out.iter().cloned());
        out
    }

    /// Finishes the input and returns every event emitted from the start.
    fn all(&mut self) -> Vec<ClusterEvent> {
        self.finish();
        self.log.clone()
    }
}

fn view(leader: Option<&str>) -> Signal<'static> {
    Signal::View { leader: leader.map(|l| Cow::Owned(l.to_string())) }
}

fn has_leader(l: &str) -> Signal<'static> {
    view(Some(l))
}

fn leaderless() -> Signal<'static> {
    view(None)
}

fn gained() -> Signal<'static> {
    Signal::SelfLeader { is_leader: true }
}

fn lost() -> Signal<'static> {
    Signal::SelfLeader { is_leader: false }
}

fn peer(p: &str, connected: bool) -> Signal<'static> {
    Signal::Peer { peer: Cow::Owned(p.into()), connected }
}

fn router(r: &str, online: bool) -> Signal<'static> {
    Signal::Router { router: Cow::Owned(r.into()), online }
}

fn members(index: u64, ids: &[&str]) -> Signal<'static> {
    Signal::Members { index, members: ids.iter().map(|m| Cow::Owned(m.to_string())).collect() }
}

fn probe(node: &str, ok: bool) -> Signal<'static> {
    Signal::NodeCheck {
        node: Cow::Owned(node.into()),
        ok,
        via: Via::Probe,
        down_after: 2,
        up_after: 1,
    }
}

fn entity(op: EntityOp) -> Signal<'static> {
    Signal::Entity {
        op,
        slot: Slot { service: "svc".into(), router: "rtr".into(), host: "h".into() },
    }
}

fn kinds(events: &[ClusterEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

fn only(events: &[ClusterEvent], kind: EventKind) -> Vec<ClusterEvent> {
    events.iter().filter(|e| e.kind == kind).cloned().collect()
}
