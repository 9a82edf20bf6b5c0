//! Node liveness: one key per node, `(cluster, node, "alive")`, fed by probes, polls and peers
//! (DESIGN §5.4).
//!
//! - Probe and poll results are their own window: `node.down` comes at the K-th consecutive
//!   failure (`at` = the first failed attempt, `stable_at` = the K-th), `node.up` at the first
//!   success after it (or the `up_after`-th). W and the startup grace do not apply; the first
//!   verdict on a node is emitted as its initial state.
//! - Peers give evidence of down only: "more than half of the other reporters say
//!   disconnected" goes through the window (with the startup grace on a first emission);
//!   clearing it emits `node.up` only after an emitted `node.down`, and clearing a never-emitted
//!   down simply cancels it.

use super::window::{Observed, Sequence, StabilityWindow, StateValue};
use crate::model::{EventKind, Nanos, Timestamp, Via};
use serde::{Deserialize, Serialize};

/// The alive key's value. Equality is on `up` alone: a down confirmed by another means is the
/// same state, not a change.
#[derive(Clone, Copy, Debug, Eq, Serialize, Deserialize)]
pub struct Alive {
    pub up: bool,
    pub via: Via,
}

impl PartialEq for Alive {
    fn eq(&self, other: &Self) -> bool {
        self.up == other.up
    }
}

impl StateValue for Alive {
    fn is_negative(&self) -> bool {
        !self.up
    }

    fn kind(&self) -> EventKind {
        if self.up {
            EventKind::NodeUp
        } else {
            EventKind::NodeDown
        }
    }
}

/// A run of identical consecutive check results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRun {
    pub ok: bool,
    pub count: u32,
    /// Time of the run's first result.
    pub first: Timestamp,
}

/// One node's liveness state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeLiveness {
    pub window: StabilityWindow<Alive>,
    pub run: Option<CheckRun>,
    /// The latest probe/poll verdict: `Some(false)` while a probe or poll says the node is down.
    pub verdict: Option<bool>,
    /// Whether more than half of the other reporters see the node disconnected (raw records).
    pub peers_down: bool,
    /// Time of the newest check applied (staleness) and of the newest record about the node.
    pub last_check: Option<Timestamp>,
    pub last_record: Timestamp,
}

impl NodeLiveness {
    /// Whether a probe or poll currently says the node is down.
    pub fn verdict_down(&self) -> bool {
        self.verdict == Some(false)
    }

    /// Applies one check result. Returns what the window did and whether the verdict changed
    /// (which can change the node's liveness for derived cluster state).
    pub fn check(
        &mut self,
        ok: bool,
        via: Via,
        down_after: u32,
        up_after: u32,
        at: Timestamp,
        seq: &mut Sequence,
    ) -> (Observed, bool) {
        let run = match self.run {
            Some(r) if r.ok == ok => CheckRun { count: r.count.saturating_add(1), ..r },
            _ => CheckRun { ok, count: 1, first: at },
        };
        self.run = Some(run);
        let needed = if ok { up_after } else { down_after }.max(1);
        if run.count < needed || self.verdict == Some(ok) {
            return (Observed::Nothing, false);
        }
        self.verdict = Some(ok);
        let observed = self.window.schedule_verdict(Alive { up: ok, via }, run.first, at, seq);
        (observed, true)
    }

    /// Feeds a change of the peers' evidence through the window.
    pub fn peer_evidence(
        &mut self,
        down: bool,
        at: Timestamp,
        window: Nanos,
        startup_grace: Nanos,
        seq: &mut Sequence,
    ) -> Observed {
        self.peers_down = down;
        let value = Alive { up: !down, via: Via::Peers };
        if down {
            return self.window.observe(value, at, window, startup_grace, seq);
        }
        // Peers only ever say "down"; their silence says "up" only to undo their own down,
        // never against a probe that still fails.
        if self.verdict_down() {
            return Observed::Nothing;
        }
        match self.window.emitted() {
            None => self.window.cancel(),
            Some(_) => self.window.observe(value, at, window, startup_grace, seq),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: i64) -> Timestamp {
        Timestamp(n)
    }

    #[test]
    fn probe_down_needs_k_consecutive_failures_and_dates_from_the_first() {
        let mut seq = Sequence::default();
        let mut n = NodeLiveness::default();
        assert_eq!(n.check(false, Via::Probe, 2, 1, t(0), &mut seq), (Observed::Nothing, false));
        let (Observed::Scheduled(s), true) = n.check(false, Via::Probe, 2, 1, t(1_000), &mut seq)
        else {
            panic!()
        };
        assert_eq!((s.at, s.due), (t(0), t(1_000)));
        let f = n.window.fire(s.seq).unwrap();
        assert!(f.initial && !f.value.up);
        assert_eq!(n.check(false, Via::Probe, 2, 1, t(2_000), &mut seq).0, Observed::Nothing);
        let (Observed::Scheduled(s), true) = n.check(true, Via::Probe, 2, 1, t(3_000), &mut seq)
        else {
            panic!()
        };
        assert_eq!((s.at, s.due), (t(3_000), t(3_000)));
    }

    #[test]
    fn a_success_between_failures_restarts_the_count() {
        let mut seq = Sequence::default();
        let mut n = NodeLiveness::default();
        n.check(true, Via::Probe, 2, 1, t(0), &mut seq);
        n.check(false, Via::Probe, 2, 1, t(1), &mut seq);
        n.check(true, Via::Probe, 2, 1, t(2), &mut seq);
        assert!(!n.check(false, Via::Probe, 2, 1, t(3), &mut seq).1);
        assert!(n.check(false, Via::Probe, 2, 1, t(4), &mut seq).1);
    }

    #[test]
    fn clearing_a_never_emitted_peer_down_cancels_it() {
        let mut seq = Sequence::default();
        let mut n = NodeLiveness::default();
        assert!(matches!(
            n.peer_evidence(true, t(0), Nanos(2), Nanos(10), &mut seq),
            Observed::Scheduled(_)
        ));
        assert_eq!(
            n.peer_evidence(false, t(1), Nanos(2), Nanos(10), &mut seq),
            Observed::Reverted(EventKind::NodeDown)
        );
        assert!(n.window.pending().is_none());
    }
}
