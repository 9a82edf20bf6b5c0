//! The changelog appender (DESIGN §10): how a commit's partition entries reach the changelog
//! topic, at least once.
//!
//! A commit's entries go to the changelog only once every sink holds the commit's events,
//! and the commit's records are acknowledged (so their input offsets committed) only once the
//! changelog holds its entries. The changelog thus never runs ahead of the sinks: a new owner
//! that restores it emits again whatever the sinks may not hold. And the group's offsets never
//! run ahead of the changelog: a new owner never skips a record whose effect it lacks.
//!
//! A job names the assignment its partitions' entries were made under; a partition the group
//! has taken away since (even if it gave it back) is left out: appending its entries now
//! would put stale entries after the new owner's. One exception remains: a job already being
//! produced when the group moves the partition can still land after the new owner began to
//! restore; only the exactly-once mode, whose transactions fence a former owner, closes it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, Notify};

use super::commit::{shard_positions, Store};
use super::input::{OnCommit, Owned};
use crate::state::changelog::{Changelog, INPUT_KEY};
use crate::state::{Commit, Entry, Position};

/// One partition's share of a commit.
pub struct ShardJob {
    pub partition: i32,
    /// The partition's assignment the entries were made under.
    pub assignment: u64,
    pub entries: Vec<Entry>,
    /// The input partition's next offset the entries reflect.
    pub input: u64,
    /// Exactly once: the partition's events, which its transaction produces to the kafka
    /// sinks' topics. Empty otherwise.
    pub events: Vec<(Arc<str>, super::EventRef)>,
}

/// How jobs reach Kafka.
#[derive(Clone)]
pub enum Mode {
    /// The changelog's own producer; the records' offsets are committed by the source.
    AtLeastOnce,
    /// One transaction per job (DESIGN §10).
    #[cfg(feature = "kafka")]
    ExactlyOnce(Arc<super::transaction::Transactor>),
}

/// A commit's partition entries, and its records' acknowledgements.
pub struct Job {
    pub shards: Vec<ShardJob>,
    pub batches: Vec<OnCommit>,
}

#[derive(Clone)]
pub struct Appender {
    tx: mpsc::UnboundedSender<Job>,
    owned: Owned,
    mode: Mode,
    /// Jobs sent and not yet done, and a wake-up when they are all done.
    pending: Arc<AtomicUsize>,
    idle: Arc<Notify>,
    /// Why appending stopped, if it did: the engine task stops on it.
    failed: Arc<OnceLock<String>>,
}

impl Appender {
    /// Starts appending to `changelog` for grouped kafka source `source`, and keeping the
    /// store a cache of what was appended.
    pub fn start(
        source: String,
        changelog: Arc<dyn Changelog>,
        store: Store,
        owned: Owned,
        mode: Mode,
    ) -> Appender {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let appender = Appender {
            tx,
            owned,
            mode,
            pending: Arc::default(),
            idle: Arc::default(),
            failed: Arc::default(),
        };
        let me = appender.clone();
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                if let Err(e) = me.append(&source, &*changelog, &store, job).await {
                    tracing::error!(error = %e, "appending to the changelog failed; the engine stops");
                    let _ = me.failed.set(e);
                    me.idle.notify_waiters();
                    return;
                }
                if me.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                    me.idle.notify_waiters();
                }
            }
        });
        appender
    }

    async fn append(
        &self,
        source: &str,
        changelog: &dyn Changelog,
        store: &Store,
        job: Job,
    ) -> Result<(), String> {
        #[cfg(feature = "kafka")]
        if let Mode::ExactlyOnce(txn) = &self.mode {
            txn.backoff().await;
        }
        let current: Vec<ShardJob> = self.owned.begin(|owns| {
            job.shards.into_iter().filter(|s| owns(s.partition, s.assignment)).collect()
        });
        let appended = self.append_owned(source, changelog, store, current).await;
        self.owned.end();
        if !appended? {
            // Aborted: its records are not acknowledged; the partitions are read again.
            return Ok(());
        }
        for f in job.batches {
            f();
        }
        Ok(())
    }

    /// Produces the entries (in a transaction, exactly once): whether Kafka holds them.
    async fn produce(
        &self,
        changelog: &dyn Changelog,
        current: &[ShardJob],
    ) -> Result<Option<Vec<(i32, u64)>>, String> {
        let records = |s: &ShardJob| {
            let mut entries = s.entries.clone();
            entries.push((INPUT_KEY.to_vec(), Some(s.input.to_be_bytes().to_vec())));
            entries
        };
        match &self.mode {
            Mode::AtLeastOnce => {
                let records = current.iter().map(|s| (s.partition, records(s))).collect();
                changelog.append(records).await.map(Some).map_err(|e| e.to_string())
            }
            #[cfg(feature = "kafka")]
            Mode::ExactlyOnce(txn) => {
                use super::transaction::{TxnError, TxnShard};
                let shards: Vec<TxnShard> = current
                    .iter()
                    .map(|s| TxnShard {
                        partition: s.partition,
                        entries: records(s),
                        input: s.input,
                        events: s.events.clone(),
                    })
                    .collect();
                match txn.commit(&shards).await {
                    Ok(next) => Ok(Some(next)),
                    Err(TxnError::Aborted(why)) => {
                        let rewound = self.owned.rewind();
                        let partitions: Vec<i32> = rewound.iter().map(|(p, _)| *p).collect();
                        tracing::warn!(reason = %why, ?partitions, "transaction aborted; every owned partition goes back to its last committed state");
                        Ok(None)
                    }
                    Err(e @ TxnError::Fatal(_)) => Err(e.to_string()),
                }
            }
        }
    }

    async fn append_owned(
        &self,
        source: &str,
        changelog: &dyn Changelog,
        store: &Store,
        current: Vec<ShardJob>,
    ) -> Result<bool, String> {
        if !current.is_empty() {
            let Some(next) = self.produce(changelog, &current).await? else {
                return Ok(false);
            };
            let at = |offset| Position { offset, ..Position::default() };
            let mut commit = Commit::default();
            for (p, offset) in next {
                commit.positions.push((shard_positions(source, p).0, at(offset)));
            }
            for s in current {
                commit.positions.push((shard_positions(source, s.partition).1, at(s.input)));
                commit.shards.push((s.partition, s.entries));
            }
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.commit_blocking(commit))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
        Ok(true)
    }

    /// Appends `job` once earlier ones are done.
    pub fn send(&self, job: Job) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(job).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Waits until every job sent is done (or appending failed).
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.pending.load(Ordering::Acquire) == 0 || self.failed.get().is_some() {
                return;
            }
            notified.await;
        }
    }

    pub fn failed(&self) -> Option<&str> {
        self.failed.get().map(String::as_str)
    }
}
