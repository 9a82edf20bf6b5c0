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

/// How long a revocation waits for the job being appended: as long as a transaction may
/// take (its commit, then an abort, each within 60 s), so that the next owner does not
/// restore while it is still open.
const REVOKE_WAIT: Duration = Duration::from_secs(150);

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
    /// Where the consumer group's metadata is read, fresh for each transaction (exactly
    /// once): it carries the generation the group fences a former member's offsets with.
    #[cfg(feature = "kafka")]
    group: Mutex<Option<GroupMetadata>>,
}

/// Reads the group's metadata now, from the consumer (none once it is gone).
#[cfg(feature = "kafka")]
pub type GroupMetadata =
    Box<dyn Fn() -> Option<rdkafka::consumer::ConsumerGroupMetadata> + Send + Sync>;

impl Ownership {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A rewind queued for `partition` before it was assigned anew is void: the new
    /// assignment reads from the committed offset anyway.
    pub fn assign(&self, partition: i32, assignment: u64) {
        let mut state = self.lock();
        state.owned.insert(partition, assignment);
        state.rewound.retain(|(p, _)| *p != partition);
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
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut rewound = Vec::new();
        for (p, n) in &mut state.owned {
            state.assignments += 1;
            *n = state.assignments;
            rewound.push((*p, *n));
        }
        state.rewound.extend(rewound.iter().copied());
        drop(guard);
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
    pub fn set_group(&self, group: GroupMetadata) {
        *self.group.lock().unwrap_or_else(|p| p.into_inner()) = Some(group);
    }

    /// The group's metadata as the consumer has it now.
    #[cfg(feature = "kafka")]
    pub fn group(&self) -> Option<rdkafka::consumer::ConsumerGroupMetadata> {
        self.group.lock().unwrap_or_else(|p| p.into_inner()).as_ref().and_then(|g| g())
    }

    /// Takes `partition` away, once the job being appended (if any) is in the changelog.
    /// Blocking, briefly: it runs inside the rebalance, which must not end before.
    pub fn revoke(&self, partition: i32) {
        let mut state = self.lock();
        state.owned.remove(&partition);
        state.rewound.retain(|(p, _)| *p != partition);
        if state.busy {
            let wait = || self.idle.wait_timeout_while(state, REVOKE_WAIT, |s| s.busy);
            // The rebalance runs inside the consumer's poll, on an async worker: hand that
            // worker's other tasks to the rest meanwhile (a current-thread runtime cannot).
            let multi = tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
            let waited = match multi {
                true => tokio::task::block_in_place(wait),
                false => wait(),
            };
            if waited.is_ok_and(|(_, timeout)| timeout.timed_out()) {
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

    /// Regression: a rewind queued before a rebalance took a partition away and gave it back
    /// put the partition under its old number again, and every later job for it was left out.
    #[tokio::test]
    async fn a_rewind_queued_before_a_rebalance_is_void_after_it() {
        let o = Ownership::default();
        let first = o.next_assignment();
        o.assign(3, first);
        o.assign(4, o.next_assignment());
        let rewound = o.rewind();
        assert_eq!(rewound.len(), 2);
        o.revoke(3);
        let again = o.next_assignment();
        o.assign(3, again);
        let taken = o.rewound().await;
        assert_eq!(taken.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [4], "3 is assigned anew");
        assert!(o.owns(3, again));
    }
}
