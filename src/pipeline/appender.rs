//! The changelog appender (DESIGN §10): how a commit's partition entries reach the changelog
//! topic, at least once.
//!
//! A commit's entries go to the changelog only once every sink holds the commit's events,
//! and the commit's records are acknowledged (so their input offsets committed) only once the
//! changelog holds its entries. The changelog thus never runs ahead of the sinks: a new owner
//! that restores it emits again whatever the sinks may not hold. And the group's offsets never
//! run ahead of the changelog: a new owner never skips a record whose effect it lacks.
//!
//! Each partition has an epoch, moved on at every assignment and revocation. A job made in an
//! earlier epoch leaves that partition out: its commit came before the partition changed
//! hands, and appending it now would put stale entries after the new owner's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{mpsc, Notify};

use super::commit::{shard_positions, Store};
use super::input::OnCommit;
use crate::state::changelog::{Changelog, INPUT_KEY};
use crate::state::{Commit, Entry, Position};

/// One partition's share of a commit.
pub struct ShardJob {
    pub partition: i32,
    /// The partition's epoch when the commit was made.
    pub epoch: u64,
    pub entries: Vec<Entry>,
    /// The input partition's next offset the entries reflect.
    pub input: u64,
}

/// A commit's partition entries, and its records' acknowledgements.
pub struct Job {
    pub shards: Vec<ShardJob>,
    pub batches: Vec<OnCommit>,
}

#[derive(Clone)]
pub struct Appender {
    tx: mpsc::UnboundedSender<Job>,
    epochs: Arc<Mutex<BTreeMap<i32, u64>>>,
    /// Jobs sent and not yet done, and a wake-up when they are all done.
    pending: Arc<AtomicUsize>,
    idle: Arc<Notify>,
    /// Why appending stopped, if it did: the engine task stops on it.
    failed: Arc<OnceLock<String>>,
}

impl Appender {
    /// Starts appending to `changelog` for grouped kafka source `source`, and keeping the
    /// store a cache of what was appended.
    pub fn start(source: String, changelog: Arc<dyn Changelog>, store: Store) -> Appender {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let appender = Appender {
            tx,
            epochs: Arc::default(),
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
        let current: Vec<ShardJob> = {
            let epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
            job.shards.into_iter().filter(|s| epochs.get(&s.partition) == Some(&s.epoch)).collect()
        };
        if !current.is_empty() {
            let records = current
                .iter()
                .map(|s| {
                    let mut entries = s.entries.clone();
                    entries.push((INPUT_KEY.to_vec(), Some(s.input.to_be_bytes().to_vec())));
                    (s.partition, entries)
                })
                .collect();
            let next = changelog.append(records).await.map_err(|e| e.to_string())?;
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
        for f in job.batches {
            f();
        }
        Ok(())
    }

    /// The partition changed hands: jobs made before are left out for it.
    pub fn next_epoch(&self, partition: i32) -> u64 {
        let mut epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        let epoch = epochs.entry(partition).or_default();
        *epoch += 1;
        *epoch
    }

    pub fn epoch(&self, partition: i32) -> u64 {
        let epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        epochs.get(&partition).copied().unwrap_or_default()
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
