//! What a grouped kafka source owns, as the source and the changelog appender share it.
//!
//! The source changes it inside the rebalance itself, before the group can give a partition
//! to another member; the appender checks it before it produces a job. A revocation waits for
//! a job being produced to be in the changelog: otherwise the partition's next owner could
//! restore from half a commit (a cluster's entry without the engine entry that counts it).
//! Nothing made under an earlier assignment is appended once a partition has moved, even if
//! it came back.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long a revocation waits for the job being appended.
const REVOKE_WAIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct State {
    /// Each owned partition, with the number of its assignment.
    owned: BTreeMap<i32, u64>,
    /// The last assignment number given.
    assignments: u64,
    /// A job is being appended.
    busy: bool,
    /// Partitions rewound to their last committed state, with their new assignment numbers,
    /// that the source has not taken yet.
    rewound: Vec<(i32, u64)>,
}

#[derive(Default)]
pub struct Ownership {
    state: Mutex<State>,
    idle: Condvar,
    rewinds: tokio::sync::Notify,
    /// The consumer group's metadata as of the last rebalance: what a transaction sends its
    /// offsets with (exactly once), so that the group fences a former member's.
    #[cfg(feature = "kafka")]
    group: Mutex<Option<std::sync::Arc<rdkafka::consumer::ConsumerGroupMetadata>>>,
}

impl Ownership {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn assign(&self, partition: i32, assignment: u64) {
        self.lock().owned.insert(partition, assignment);
    }

    /// A new assignment number, never given before.
    pub fn next_assignment(&self) -> u64 {
        let mut state = self.lock();
        state.assignments += 1;
        state.assignments
    }

    /// Every owned partition goes back to its last committed state (a transaction failed):
    /// each gets a new assignment number, so that nothing made under the old one is
    /// appended, and the source is told to read it again from its committed offset.
    pub fn rewind(&self) -> Vec<(i32, u64)> {
        let mut state = self.lock();
        let partitions: Vec<i32> = state.owned.keys().copied().collect();
        let mut rewound = Vec::new();
        for p in partitions {
            state.assignments += 1;
            let n = state.assignments;
            state.owned.insert(p, n);
            rewound.push((p, n));
        }
        state.rewound.extend(rewound.iter().copied());
        drop(state);
        self.rewinds.notify_one();
        rewound
    }

    /// Waits for a rewind, then gives the partitions rewound since the last call.
    pub async fn rewound(&self) -> Vec<(i32, u64)> {
        loop {
            let taken = std::mem::take(&mut self.lock().rewound);
            if !taken.is_empty() {
                return taken;
            }
            self.rewinds.notified().await;
        }
    }

    #[cfg(feature = "kafka")]
    pub fn set_group(&self, group: Option<rdkafka::consumer::ConsumerGroupMetadata>) {
        *self.group.lock().unwrap_or_else(|p| p.into_inner()) = group.map(std::sync::Arc::new);
    }

    #[cfg(feature = "kafka")]
    pub fn group(&self) -> Option<std::sync::Arc<rdkafka::consumer::ConsumerGroupMetadata>> {
        self.group.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes `partition` away, once the job being appended (if any) is in the changelog.
    /// Blocking, briefly: it runs inside the rebalance, which must not end before.
    pub fn revoke(&self, partition: i32) {
        let mut state = self.lock();
        state.owned.remove(&partition);
        if state.busy {
            let wait = self.idle.wait_timeout_while(state, REVOKE_WAIT, |s| s.busy);
            if wait.is_ok_and(|(_, timeout)| timeout.timed_out()) {
                tracing::warn!(partition, "the changelog append under way did not end within {REVOKE_WAIT:?}; the partition's next owner may restore part of it");
            }
        }
    }

    /// Whether `partition` is owned under `assignment`.
    pub fn owns(&self, partition: i32, assignment: u64) -> bool {
        self.lock().owned.get(&partition) == Some(&assignment)
    }

    /// Begins a job: `pick` chooses what is still owned, and a revocation waits from here
    /// until [`Ownership::end`].
    pub fn begin<T>(&self, pick: impl FnOnce(&dyn Fn(i32, u64) -> bool) -> T) -> T {
        let mut state = self.lock();
        state.busy = true;
        let owned = &state.owned;
        pick(&|p, n| owned.get(&p) == Some(&n))
    }

    pub fn end(&self) {
        self.lock().busy = false;
        self.idle.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A revocation returns only once the job being appended is done: the group gives the
    /// partition to its next owner only after the revocation returns.
    #[test]
    fn a_revocation_waits_for_the_append_under_way() {
        let o = Arc::new(Ownership::default());
        o.assign(3, 1);
        assert!(o.begin(|owns| owns(3, 1)));
        let (o2, done) = (o.clone(), Arc::new(std::sync::atomic::AtomicBool::new(false)));
        let d2 = done.clone();
        let revoking = std::thread::spawn(move || {
            o2.revoke(3);
            d2.load(std::sync::atomic::Ordering::SeqCst)
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(!revoking.is_finished(), "waiting for the append");
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        o.end();
        assert!(revoking.join().expect("revoked"), "returned after the append ended");
        assert!(!o.owns(3, 1));
        assert!(!o.begin(|owns| owns(3, 1)), "nothing of it appended after");
        o.end();
    }
}
