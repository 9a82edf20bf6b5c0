//! The per-key stability window (DESIGN §5.2).
//!
//! Each key holds the value it last emitted and at most one pending candidate. On an
//! observation of `v` at record time `at`:
//! 1. `v` equals the pending value: nothing happens (the window is not restarted);
//! 2. `v` equals the emitted value: the pending value, if any, is dropped and counted as a
//!    revert;
//! 3. otherwise `v` becomes the pending value, due at `at + w`.
//!
//! `w` is the kind's window, or `max(W, startup_grace)` when the key was never emitted and `v`
//! is negative: nothing is "lost" that was not first seen.
//!
//! The window does not own a timer. It hands back a [`Scheduled`] deadline and a sequence
//! number; the engine keeps deadlines in one heap and, when one comes due, calls
//! [`StabilityWindow::fire`] with that number. A superseded deadline simply no longer matches
//! (lazy invalidation), so nothing is ever searched or removed from the heap.

use crate::model::{EventKind, Nanos, Timestamp};
use serde::{Deserialize, Serialize};

/// A value a key can take.
pub trait StateValue: Clone + PartialEq {
    /// Leaderless, disconnected, offline, down, read-only: the states that need the startup
    /// grace before a key's first emission.
    fn is_negative(&self) -> bool;

    /// The kind of event emitting this value produces (also the label a revert is counted
    /// under).
    fn kind(&self) -> EventKind;
}

/// A candidate value waiting out its window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending<V> {
    pub value: V,
    /// Record time of its first observation.
    pub at: Timestamp,
    /// When it becomes stable: `at + w`.
    pub due: Timestamp,
    /// Identifies this candidate among the heap's deadlines.
    pub seq: u64,
}

/// One key's window state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StabilityWindow<V> {
    emitted: Option<V>,
    /// Boxed: a key spends most of its life with nothing pending, and with a million keys
    /// the inline size of every key counts (twice, at a hash table's load factor).
    pending: Option<Box<Pending<V>>>,
    /// Reverts since the last emission.
    reverts: u32,
}

impl<V> Default for StabilityWindow<V> {
    fn default() -> Self {
        StabilityWindow { emitted: None, pending: None, reverts: 0 }
    }
}

/// What an observation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Rule 1, or rule 2 with nothing pending.
    Nothing,
    /// Rule 2: the pending value was dropped; its kind is given for counting.
    Reverted(EventKind),
    /// Rule 3: a new deadline to put on the timer heap.
    Scheduled(Scheduled),
}

/// A deadline for the engine's heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    pub due: Timestamp,
    pub at: Timestamp,
    pub seq: u64,
}

/// A value that became stable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired<V> {
    pub value: V,
    /// The value emitted before this one.
    pub previous: Option<V>,
    pub at: Timestamp,
    pub stable_at: Timestamp,
    /// The first event ever emitted for this key.
    pub initial: bool,
    /// Reverts since the previous emission.
    pub suppressed: u32,
}

/// The source of sequence numbers: candidates created earlier sort first among equal
/// deadlines (§5.2's last tie-break).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Sequence(u64);

impl Sequence {
    pub fn issue(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }

    pub fn current(&self) -> u64 {
        self.0
    }

    pub fn resume_from(n: u64) -> Sequence {
        Sequence(n)
    }
}

impl<V: StateValue> StabilityWindow<V> {
    pub fn emitted(&self) -> Option<&V> {
        self.emitted.as_ref()
    }

    pub fn pending(&self) -> Option<&Pending<V>> {
        self.pending.as_deref()
    }

    pub fn reverts(&self) -> u32 {
        self.reverts
    }

    /// Applies rules 1–3 for an observation of `v` at `at`.
    pub fn observe(
        &mut self,
        v: V,
        at: Timestamp,
        window: Nanos,
        startup_grace: Nanos,
        seq: &mut Sequence,
    ) -> Observed {
        if self.pending.as_ref().is_some_and(|p| p.value == v) {
            return Observed::Nothing;
        }
        if self.emitted.as_ref() == Some(&v) {
            return self.cancel();
        }
        let w = if self.emitted.is_none() && v.is_negative() {
            window.max(startup_grace)
        } else {
            window
        };
        self.schedule(v, at, at.saturating_add(w), seq)
    }

    /// Observes "whatever was last emitted": the derived-state rule for a cluster in
    /// transition. With nothing emitted yet it still cancels the candidate.
    pub fn observe_emitted(&mut self) -> Observed {
        self.cancel()
    }

    /// Drops the pending value, counting a revert.
    pub fn cancel(&mut self) -> Observed {
        match self.pending.take() {
            Some(p) => {
                self.reverts = self.reverts.saturating_add(1);
                Observed::Reverted(p.value.kind())
            }
            None => Observed::Nothing,
        }
    }

    /// Makes `v` pending with an explicit deadline, for values whose timing is not the
    /// window's (probe verdicts: `at` = first failed attempt, due = the K-th). If `v` is
    /// already emitted, a different pending value is dropped instead (not a revert: the
    /// verdict confirmed what was emitted).
    pub fn schedule_verdict(
        &mut self,
        v: V,
        at: Timestamp,
        due: Timestamp,
        seq: &mut Sequence,
    ) -> Observed {
        if self.emitted.as_ref() == Some(&v) {
            self.pending = None;
            return Observed::Nothing;
        }
        self.schedule(v, at, due, seq)
    }

    fn schedule(&mut self, v: V, at: Timestamp, due: Timestamp, seq: &mut Sequence) -> Observed {
        let seq = seq.issue();
        self.pending = Some(Box::new(Pending { value: v, at, due, seq }));
        Observed::Scheduled(Scheduled { due, at, seq })
    }

    /// Emits the pending value if `seq` still names it.
    pub fn fire(&mut self, seq: u64) -> Option<Fired<V>> {
        if self.pending.as_ref().map(|p| p.seq) != Some(seq) {
            return None;
        }
        let p = *self.pending.take()?;
        let previous = self.emitted.replace(p.value.clone());
        let suppressed = std::mem::take(&mut self.reverts);
        Some(Fired {
            value: p.value,
            initial: previous.is_none(),
            previous,
            at: p.at,
            stable_at: p.due,
            suppressed,
        })
    }

    /// Rebuilds a window from persisted parts.
    pub fn restore(emitted: Option<V>, pending: Option<Pending<V>>, reverts: u32) -> Self {
        StabilityWindow { emitted, pending: pending.map(Box::new), reverts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Up(bool);

    impl StateValue for Up {
        fn is_negative(&self) -> bool {
            !self.0
        }
        fn kind(&self) -> EventKind {
            if self.0 {
                EventKind::RouterOnline
            } else {
                EventKind::RouterOffline
            }
        }
    }

    const W: Nanos = Nanos(2_000);
    const GRACE: Nanos = Nanos(10_000);

    fn t(n: i64) -> Timestamp {
        Timestamp(n)
    }

    #[test]
    fn rule_1_same_as_pending_does_not_restart_the_window() {
        let mut seq = Sequence::default();
        let mut w = StabilityWindow::default();
        let Observed::Scheduled(s) = w.observe(Up(true), t(0), W, GRACE, &mut seq) else {
            panic!()
        };
        assert_eq!(w.observe(Up(true), t(1_500), W, GRACE, &mut seq), Observed::Nothing);
        assert_eq!(s.due, t(2_000));
        let f = w.fire(s.seq).unwrap();
        assert_eq!((f.at, f.stable_at, f.initial), (t(0), t(2_000), true));
    }

    #[test]
    fn rule_2_back_to_emitted_drops_pending_and_counts_a_revert() {
        let mut seq = Sequence::default();
        let mut w = StabilityWindow::default();
        let Observed::Scheduled(s) = w.observe(Up(true), t(0), W, GRACE, &mut seq) else {
            panic!()
        };
        w.fire(s.seq).unwrap();
        let Observed::Scheduled(s2) = w.observe(Up(false), t(5_000), W, GRACE, &mut seq) else {
            panic!()
        };
        assert_eq!(
            w.observe(Up(true), t(5_100), W, GRACE, &mut seq),
            Observed::Reverted(EventKind::RouterOffline)
        );
        assert!(w.fire(s2.seq).is_none(), "a cancelled candidate must not fire");
        assert_eq!(
            w.observe(Up(true), t(5_200), W, GRACE, &mut seq),
            Observed::Nothing,
            "no pending, no revert"
        );
        let Observed::Scheduled(s3) = w.observe(Up(false), t(6_000), W, GRACE, &mut seq) else {
            panic!()
        };
        assert_eq!(s3.due, t(8_000), "an emitted key gets W, not the grace");
        let f = w.fire(s3.seq).unwrap();
        assert_eq!((f.suppressed, f.initial, f.previous), (1, false, Some(Up(true))));
        assert_eq!(w.reverts(), 0);
    }

    #[test]
    fn rule_3_replacing_a_pending_value_is_not_a_revert() {
        #[derive(Clone, Debug, PartialEq)]
        struct Leader(u8);
        impl StateValue for Leader {
            fn is_negative(&self) -> bool {
                false
            }
            fn kind(&self) -> EventKind {
                EventKind::LeaderElected
            }
        }
        let mut seq = Sequence::default();
        let mut w = StabilityWindow::default();
        let Observed::Scheduled(a) = w.observe(Leader(1), t(0), W, GRACE, &mut seq) else {
            panic!()
        };
        let Observed::Scheduled(b) = w.observe(Leader(2), t(1_000), W, GRACE, &mut seq) else {
            panic!()
        };
        assert!(w.fire(a.seq).is_none());
        let f = w.fire(b.seq).unwrap();
        assert_eq!((f.value, f.at, f.stable_at, f.suppressed), (Leader(2), t(1_000), t(3_000), 0));
    }

    #[test]
    fn startup_grace_applies_to_a_negative_first_value_only() {
        let mut seq = Sequence::default();
        let mut w = StabilityWindow::<Up>::default();
        let Observed::Scheduled(s) = w.observe(Up(false), t(0), W, GRACE, &mut seq) else {
            panic!()
        };
        assert_eq!(s.due, t(10_000));
        let mut w = StabilityWindow::<Up>::default();
        let Observed::Scheduled(s) = w.observe(Up(false), t(0), Nanos(20_000), GRACE, &mut seq)
        else {
            panic!()
        };
        assert_eq!(s.due, t(20_000), "max(W, grace)");
        let mut w = StabilityWindow::<Up>::default();
        let Observed::Scheduled(s) = w.observe(Up(true), t(0), W, GRACE, &mut seq) else {
            panic!()
        };
        assert_eq!(s.due, t(2_000));
    }

    #[test]
    fn zero_window_is_due_at_once() {
        let mut seq = Sequence::default();
        let mut w = StabilityWindow::<Up>::default();
        let Observed::Scheduled(s) = w.observe(Up(true), t(7), Nanos::ZERO, Nanos::ZERO, &mut seq)
        else {
            panic!()
        };
        assert_eq!(s.due, t(7));
    }
}
