//! The engine task: applies what the sources hand it, keeps live engine time, commits, and
//! hands each commit's events to the sinks.
//!
//! **Group commit.** The task applies whatever records are ready, then persists one
//! consistent cut — the engine entries that changed, the source positions of the records
//! applied, and the outbox's new events and the ones every sink now holds — in one store
//! transaction, and only then hands the new events to the sinks. While a commit is written
//! (on a blocking thread) the task applies the next records and makes the next commits, up to
//! [`IN_FLIGHT`] waiting at once; they reach the disk in order, one at a time, and their
//! events go out in the same order. An event therefore never reaches a sink before the state
//! that produced it is on disk, and a position never advances past a record whose events could
//! still be lost.
//! A crash can cause a redelivery (same id), never a loss.
//!
//! **Live time** (DESIGN §5.1). Engine time is the latest record time, clamped to the wall
//! clock; while every source is caught up (nothing waiting to be read), it also follows the
//! wall clock, and the task sleeps exactly until the engine's next deadline. A backlog is
//! thus processed on its own record time, exactly as `herald replay` would.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::appender::{Appender, Job, Mode, ShardJob};
use super::commit::{shard_positions, Restored, Store};
use super::delivery::{Delivery, EventRef};
use super::driver::Watch;
use super::fanout::Fanout;
use super::input::{Input, Owned, PartitionChange};
use super::outbox::{Outbox, Sealed};
use super::shards::{Shard, Shards};
use super::PipelineError;
use crate::decode::{Context, DecodeError};
use crate::engine::{Engine, EngineConfig, Evicted};
use crate::model::{ClusterEvent, EventKind, Observation, Timestamp};
use crate::state::changelog::Changelog;
use crate::state::{Commit, Position};
use crate::support::clock::Clock;
use crate::support::lines::Line;
use crate::telemetry::events::{
    DecodeFailed, EventUnserializable, LimitReached, RecordRead, RedeliveryRecognised,
};
use crate::telemetry::metrics::{Metrics, RecordOutcome, SourceMetrics};
use crate::telemetry::tap::Tap;
use crate::telemetry::view::{SharedView, View};

/// How long a record's effect may wait before its commit when no event hurries it.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(200);
/// How long events may wait for their commit, so that the events of one burst share one
/// commit: live, deadlines fire one by one, and a commit per event cost a synced page of the
/// store's journal each (about 5 KiB written per changed key at 100 changes a second).
pub const EVENT_LINGER: Duration = Duration::from_millis(50);
/// How many recent broker messages each push source remembers as applied: well above any
/// prefetch, so every message a broker can redeliver after a crash is among them.
const RECENT_MESSAGES: usize = 4096;
/// Records applied per commit at most (give or take one input), so that a backlog still
/// commits regularly.
const BATCH: usize = 4096;
/// Commits being written at once at most. The engine goes on applying while earlier commits
/// reach the disk, so that a large commit (a startup burst of a million events) does not hold
/// up the records behind it; the bound keeps what waits for the disk, and its memory, bounded.
const IN_FLIGHT: usize = 4;

/// A source as the engine task knows it.
struct Source {
    name: String,
    context: Context,
    caught_up: bool,
    metrics: SourceMetrics,
    /// The position name of each partition read so far: built once, not per record.
    partitions: BTreeMap<i32, String>,
}

/// The engine task's state between commits.
pub struct EngineTask {
    shards: Shards,
    /// What a partition's engine is made with when its partition is assigned.
    config: EngineConfig,
    /// The grouped kafka source whose partitions' engines live in a changelog.
    changelog: Option<Grouped>,
    positions: BTreeMap<String, Position>,
    /// Sources whose position moved since the last commit.
    moved: BTreeSet<String>,
    outbox: Outbox,
    /// Outbox entries of the previous run the next commit replaces: the redelivered events
    /// are numbered afresh, as the sinks' watermarks start afresh.
    stale_outbox: Vec<u64>,
    /// Records applied since the last commit.
    dirty: bool,
    store: Store,
    metrics: Arc<Metrics>,
    view: SharedView,
    clock: Clock,
    sources: Vec<Source>,
    sinks: Fanout,
    /// The engine's suppressed counts already passed to the metrics.
    suppressed_seen: BTreeMap<(String, EventKind), u64>,
    /// Evicted keys not yet removed from the view.
    evicted: Vec<Evicted>,
    /// Reporters whose clock offset was already reported (once each).
    skew_warned: BTreeSet<(String, String)>,
    /// Events of the previous run not seen held by every sink, to deliver again.
    redeliver: Vec<Delivery>,
    /// The commits being written, oldest first, while the engine applies the next records.
    inflight: VecDeque<InFlight>,
    writes: Writes,
    /// Readers of the live events (`GET /events`), told of each new event as it goes out.
    tap: Option<Arc<Tap>>,
}

/// An event with its JSON line.
type EventLine = (Arc<str>, EventRef);

/// A grouped kafka source, its changelog, and what appends to it.
struct Grouped {
    source: String,
    changelog: Arc<dyn Changelog>,
    appender: Appender,
    /// Each partition's events go in its commit's transaction too.
    exactly_once: bool,
}

/// Events in one commit from which their lines are serialized on two threads: below it, a
/// thread costs more than it saves.
const PARALLEL_LINES: usize = 8192;

/// Each event's JSON line, or why it has none.
fn json_lines(events: &[ClusterEvent]) -> Vec<Result<Arc<str>, String>> {
    // One buffer for every line: a fresh String per event grew, and copied, several times.
    let mut buf = Vec::with_capacity(1024);
    let mut line = |e: &ClusterEvent| {
        buf.clear();
        serde_json::to_writer(&mut buf, e).map_err(|e| e.to_string())?;
        std::str::from_utf8(&buf).map(Arc::from).map_err(|e| e.to_string())
    };
    events.iter().map(&mut line).collect()
}

/// Store writes off the engine task, each begun once the one queued before it is on disk, and
/// none after one that failed: its changes would be missing beneath the later ones.
#[derive(Default)]
struct Writes {
    /// Says whether the write queued last reached the disk.
    last: Option<std::sync::mpsc::Receiver<bool>>,
}

impl Writes {
    fn queue(
        &mut self,
        write: impl FnOnce() -> Result<(), crate::state::StateError> + Send + 'static,
    ) -> tokio::task::JoinHandle<Result<(), PipelineError>> {
        let (done, next) = std::sync::mpsc::sync_channel(1);
        let before = self.last.replace(next);
        tokio::task::spawn_blocking(move || {
            // A write that panicked said nothing: that is a failure too.
            if before.is_some_and(|b| !b.recv().unwrap_or(false)) {
                return Err(PipelineError::Commit("an earlier commit was not written".into()));
            }
            let written = write();
            let _ = done.send(written.is_ok());
            Ok(written?)
        })
    }
}

/// A commit whose store write is under way: its events go to the sinks, and its batches are
/// acknowledged, once the write is on disk.
struct InFlight {
    write: tokio::task::JoinHandle<Result<(), PipelineError>>,
    fresh: Vec<Delivery>,
    sealed: Sealed,
}

impl EngineTask {
    /// The engine and positions the previous run persisted in `store` (or fresh ones), and
    /// the events it had not seen held everywhere, ready to be delivered again.
    pub fn restore(
        config: EngineConfig,
        store: Store,
        metrics: Arc<Metrics>,
        view: SharedView,
        clock: Clock,
    ) -> Result<EngineTask, PipelineError> {
        let Restored { engine, positions, outbox: stored } = store.load(config.clone())?;
        // `/state` and the gauges show after a restart what they showed before it, not an
        // empty view waiting for the next change (DESIGN §7.1).
        *view.lock().unwrap_or_else(|p| p.into_inner()) = View::restored(engine.stable_state());
        metrics.clusters.set(engine.clusters() as i64);
        metrics.keys.set(engine.keys() as i64);
        let mut outbox = Outbox::default();
        // The outbox holds lines herald wrote itself: one that does not parse back is a
        // corrupt state, reported, not delivered half-known.
        let mut again = Vec::new();
        let stale_outbox = stored.iter().map(|(first, _)| *first).collect();
        for line in stored.into_iter().flat_map(|(_, lines)| lines) {
            match serde_json::from_str::<ClusterEvent>(&line) {
                Ok(e) => again.push((Arc::from(line), EventRef::from(e))),
                Err(e) => {
                    tracing::error!(error = %e, "an undelivered event in the state store is corrupt; skipped")
                }
            }
        }
        if !again.is_empty() {
            tracing::info!(
                events = again.len(),
                "redelivering events not acknowledged before the restart"
            );
        }
        let redeliver = outbox.enqueue(again);
        Ok(EngineTask {
            shards: Shards::new(engine),
            config,
            changelog: None,
            positions,
            moved: BTreeSet::new(),
            outbox,
            stale_outbox,
            dirty: false,
            store,
            metrics,
            view,
            clock,
            sources: Vec::new(),
            sinks: Fanout::default(),
            suppressed_seen: BTreeMap::new(),
            evicted: Vec::new(),
            skew_warned: BTreeSet::new(),
            redeliver,
            inflight: VecDeque::new(),
            writes: Writes::default(),
            tap: None,
        })
    }

    /// Partitions of grouped kafka source `source` keep their engines in `changelog`.
    /// New events also go to `tap`'s readers.
    pub fn tap(&mut self, tap: Arc<Tap>) {
        self.tap = Some(tap);
    }

    pub fn set_changelog(&mut self, source: &str, changelog: Arc<dyn Changelog>, owned: Owned) {
        self.set_grouped(source, changelog, owned, Mode::AtLeastOnce);
    }

    /// As [`EngineTask::set_changelog`], each commit going to Kafka as `mode` says.
    pub fn set_grouped(
        &mut self,
        source: &str,
        changelog: Arc<dyn Changelog>,
        owned: Owned,
        mode: Mode,
    ) {
        let (name, store) = (source.to_string(), self.store.clone());
        let exactly_once = !matches!(mode, Mode::AtLeastOnce);
        let appender = Appender::start(name, changelog.clone(), store, owned, mode);
        self.changelog =
            Some(Grouped { source: source.to_string(), changelog, appender, exactly_once });
    }

    /// Whether the grouped kafka source's commits are transactions (DESIGN §10).
    fn exactly_once(&self) -> bool {
        self.changelog.as_ref().is_some_and(|g| g.exactly_once)
    }

    /// Where the previous run left source `name`.
    pub fn position(&self, name: &str) -> Option<Position> {
        self.positions.get(name).cloned()
    }

    /// Registers the next source (its index is the order of registration). A push source
    /// has nothing waiting to be read: it is `caught_up` from the start.
    pub fn add_source(&mut self, name: &str, context: Context, caught_up: bool) -> usize {
        self.sources.push(Source {
            name: name.to_string(),
            context,
            caught_up,
            metrics: self.metrics.source(name),
            partitions: BTreeMap::new(),
        });
        self.sources.len() - 1
    }

    /// Connects the sinks, and hands them the events of the previous run again.
    pub async fn connect(&mut self, sinks: Fanout) -> Result<(), PipelineError> {
        self.sinks = sinks;
        let again = std::mem::take(&mut self.redeliver);
        self.sinks.dispatch(again).await
    }

    pub fn sinks(&self) -> usize {
        self.sinks.len()
    }

    /// Runs until `shutdown` completes. Inputs closing (every source ended) does not end it:
    /// live time still closes pending windows.
    pub async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Input>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), PipelineError> {
        tokio::pin!(shutdown);
        let mut last_commit = Instant::now();
        let mut open = true;
        loop {
            let wake = self.wake_in(last_commit);
            let writing = !self.inflight.is_empty();
            let inflight = self.inflight.front_mut().map(|f| &mut f.write);
            let first = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                written = async {
                    match inflight {
                        Some(write) => write.await,
                        None => std::future::pending().await,
                    }
                }, if writing => {
                    // The write is on disk: its events go out now, not with the next commit.
                    if let Some(f) = self.inflight.pop_front() {
                        self.settled(f.fresh, f.sealed, written).await?;
                    }
                    continue;
                }
                msg = rx.recv(), if open => msg,
                _ = tokio::time::sleep(wake) => None,
            };
            // Every input counts at least 1 towards the batch, so that a commit always comes.
            let mut applied = 0;
            match first {
                Some(input) => {
                    applied += input.records().max(1);
                    self.accept(input).await?;
                }
                None if rx.is_closed() && rx.is_empty() => open = false,
                None => {}
            }
            while applied < BATCH {
                let Ok(input) = rx.try_recv() else { break };
                applied += input.records().max(1);
                self.accept(input).await?;
            }
            if rx.is_empty() {
                self.tick();
            }
            self.outbox.release(self.sinks.held());
            let due = (self.dirty || self.outbox.trimmable(self.sinks.held()))
                && last_commit.elapsed() >= COMMIT_INTERVAL;
            let events_due = self.shards.has_events() && last_commit.elapsed() >= EVENT_LINGER;
            if events_due || due {
                self.commit().await?;
                last_commit = Instant::now();
                self.tidy();
            }
        }
        Ok(())
    }

    /// Moves the live engines to the wall clock: what is due fires. The keys due to be
    /// evicted at the same time go once the events before them are committed, in a commit
    /// of their own: when a million keys expire at once (herald back after a long stop), the
    /// events due with them do not wait for a million removals to be written.
    fn tick(&mut self) {
        let whole = self.sources.iter().all(|s| s.caught_up);
        self.shards.fire(self.clock.now(), whole);
        self.tidy();
    }

    /// The second half of the last tick, unless events wait for their commit.
    fn tidy(&mut self) {
        if !self.shards.has_events() {
            self.shards.tidy();
        }
        self.evictions();
    }

    /// After the run: commits what is applied, delivers it, and closes the sinks' queues so
    /// that each sink drains and ends.
    pub async fn drain(&mut self) -> Result<(), PipelineError> {
        self.commit().await?;
        self.settle().await?;
        self.sinks.close();
        Ok(())
    }

    /// Once the sinks have ended: the last commit, so that what they acknowledged while
    /// draining is not delivered again.
    pub async fn finish(&mut self) -> Result<usize, PipelineError> {
        self.dirty = true;
        self.commit().await?;
        self.settle().await?;
        Ok(self.outbox.len())
    }

    /// Applies one input, first restoring the engine of a partition it is the first news of.
    async fn accept(&mut self, input: Input) -> Result<(), PipelineError> {
        let first = match &input {
            Input::Partition { source, partition, change: PartitionChange::Assigned(_) } => {
                Some((*source, *partition))
            }
            Input::Batch { source, offset: Some((partition, _)), .. } => {
                Some((*source, *partition))
            }
            _ => None,
        };
        let assigned =
            matches!(input, Input::Partition { change: PartitionChange::Assigned(_), .. });
        if let Some((source, partition)) = first {
            if assigned && self.changelog.is_some() {
                // Assigned anew, a partition's engine is what its changelog holds, not what
                // this instance applied before it lost it (that was never appended).
                // Its clusters leave the view now, before the restore puts them back.
                if let Some(mut old) = self.shards.remove(partition) {
                    // Its events not yet committed come from records the restored engine
                    // applies again. At least once they go out now as well; exactly once
                    // they would be in the partition's next transaction twice.
                    let events = std::mem::take(&mut old.driver.events);
                    if !self.exactly_once() {
                        self.shards.whole().driver.events.extend(events);
                    }
                    self.forget(old.driver.engine.cluster_names().map(str::to_string));
                    self.publish_view();
                }
            }
            if !self.shards.contains(Shard::Partition(partition)) {
                self.restore_shard(source, partition).await?;
            }
        }
        self.apply(input);
        Ok(())
    }

    /// Restores partition `partition`'s engine from the store, and its clusters into the
    /// view. The commit under way goes first: it may be the one that wrote the partition's
    /// engine when a rebalance took it away a moment ago.
    async fn restore_shard(&mut self, source: usize, partition: i32) -> Result<(), PipelineError> {
        self.settle().await?;
        let started = std::time::Instant::now();
        let engine = match &self.changelog {
            None => self.store.shard(self.config.clone(), partition)?,
            Some(grouped) => {
                // The job under way, which may write the store, goes first.
                grouped.appender.idle().await;
                let (store, config) = (self.store.clone(), self.config.clone());
                let (name, changelog) = (grouped.source.clone(), grouped.changelog.clone());
                let (engine, input) = tokio::task::spawn_blocking(move || {
                    store.shard_from_changelog(config, &*changelog, &name, partition)
                })
                .await
                .map_err(|e| PipelineError::Commit(e.to_string()))??;
                let (_, input_name) = shard_positions(&grouped.source, partition);
                self.positions.entry(input_name).or_default().offset = input;
                engine
            }
        };
        self.view.lock().unwrap_or_else(|p| p.into_inner()).restore(engine.stable_state());
        let (clusters, keys) = (engine.clusters(), engine.keys());
        self.shards.insert(partition, engine);
        self.metrics.clusters.set(self.shards.clusters() as i64);
        self.metrics.keys.set(self.shards.keys() as i64);
        let elapsed = started.elapsed();
        if let Some(src) = self.sources.get(source) {
            self.metrics
                .restore_seconds
                .with_label_values(&[&src.name])
                .observe(elapsed.as_secs_f64());
            let next =
                self.positions.get(&shard_positions(&src.name, partition).1).map(|p| p.offset);
            tracing::info!(source = %src.name, partition, clusters, keys, next_offset = next, seconds = elapsed.as_secs_f64(), "partition engine restored");
        }
        Ok(())
    }

    /// Clusters this instance no longer owns leave the view and their series with the next
    /// view update, as an evicted cluster does.
    fn forget(&mut self, clusters: impl IntoIterator<Item = String>) {
        let gone = clusters.into_iter().map(|cluster| Evicted {
            cluster,
            key: "cluster",
            subject: Vec::new(),
        });
        self.evicted.extend(gone);
    }

    fn apply(&mut self, input: Input) {
        // Once per input, not per line: a read's lines arrived together.
        let now = self.clock.now();
        match input {
            Input::Lines { source, lines, position, live } => {
                let Some(name) = self.sources.get(source).map(|s| s.name.clone()) else { return };
                for (number, bytes) in lines.iter() {
                    self.line(source, number, Line::Text(bytes), live, now);
                }
                self.positions.insert(name.clone(), position);
                self.moved.insert(name);
                self.dirty = true;
            }
            Input::Batch { source, lines, live, on_commit, key, redelivery, context, offset } => {
                if !self.already_applied(source, key, redelivery, offset) {
                    let shard = offset.map_or(Shard::Whole, |(p, _)| Shard::Partition(p));
                    self.message(source, shard, context.as_ref(), &lines, live, now);
                }
                self.outbox.after_commit(on_commit);
                self.dirty = true;
            }
            Input::TooLong { source, line, len, position } => {
                let Some(src) = self.sources.get(source) else { return };
                let name = src.name.clone();
                self.line(source, line, Line::TooLong(len), false, now);
                self.positions.insert(name.clone(), position);
                self.moved.insert(name);
                self.dirty = true;
            }
            Input::Observed { source, observations } => {
                let Some(src) = self.sources.get(source) else { return };
                let driver = &mut self.shards.whole().driver;
                for obs in observations {
                    let outcome = driver.observe(obs, Some(now));
                    RecordRead { outcome }.emit(&src.metrics);
                }
                self.dirty = true;
            }
            Input::CaughtUp { source, caught_up } => {
                if let Some(src) = self.sources.get_mut(source) {
                    src.caught_up = caught_up;
                }
            }
            Input::Partition { source: _, partition, change } => {
                let Some(shard) = self.shards.get_mut(Shard::Partition(partition)) else {
                    return;
                };
                match change {
                    PartitionChange::Assigned(n) => {
                        shard.assignment = n;
                        shard.revoked = false;
                        shard.caught_up = false;
                    }
                    PartitionChange::Revoked => {
                        // Its records are all applied (they came before this): the next
                        // commit writes its state, then lets it go.
                        shard.revoked = true;
                        shard.caught_up = false;
                        shard.touched = true;
                        self.dirty = true;
                    }
                    PartitionChange::CaughtUp(caught_up) => shard.caught_up = caught_up,
                }
            }
            Input::Ended { source, error } => {
                if let Some(src) = self.sources.get_mut(source) {
                    src.caught_up = true;
                    match error {
                        Some(e) => {
                            tracing::error!(source = %src.name, error = %e, "source stopped")
                        }
                        None => tracing::info!(source = %src.name, "source reached its end"),
                    }
                }
            }
        }
    }

    /// Decodes and observes one line, counting its outcome. `live`: the record arrived in
    /// real time, so it tells the reporter's clock offset; `now`: when it arrived.
    fn line(&mut self, source: usize, number: u64, line: Line<'_>, live: bool, now: Timestamp) {
        self.line_in(source, Shard::Whole, None, number, line, live, now)
    }

    /// Whether a pushed message's effect is already in the state (it is counted, not applied
    /// again); if not, it is recorded as applied, to commit with its effect. A partitioned
    /// log's message (Kafka) is known by its offset: the state keeps the next offset of each
    /// partition. A broker's redelivered message is known by the hash of its bytes among the
    /// most recent ones applied.
    fn already_applied(
        &mut self,
        source: usize,
        key: Option<u64>,
        redelivery: bool,
        offset: Option<(i32, u64)>,
    ) -> bool {
        let Some(src) = self.sources.get_mut(source) else { return true };
        if let Some((partition, at)) = offset {
            let source_name = &src.name;
            let name = src
                .partitions
                .entry(partition)
                .or_insert_with(|| shard_positions(source_name, partition).1);
            let position = match self.positions.get_mut(name.as_str()) {
                Some(p) => p,
                None => self.positions.entry(name.clone()).or_default(),
            };
            if at < position.offset {
                src.metrics.record(RecordOutcome::Ignored);
                return true;
            }
            position.offset = at + 1;
            if !self.moved.contains(name.as_str()) {
                self.moved.insert(name.clone());
            }
            return false;
        }
        let position = self.positions.entry(src.name.clone()).or_default();
        if redelivery && key.is_some_and(|k| position.applied.contains(&k)) {
            // Applied before a crash, its ack lost: acknowledge, do not apply twice.
            RedeliveryRecognised { source: &src.name }.emit(&src.metrics);
            return true;
        }
        if let Some(k) = key {
            position.applied.push(k);
            let excess = position.applied.len().saturating_sub(RECENT_MESSAGES);
            position.applied.drain(..excess);
            self.moved.insert(src.name.clone());
        }
        false
    }

    /// A pushed message's lines, numbered from 1.
    fn message(
        &mut self,
        source: usize,
        shard: Shard,
        context: Option<&Context>,
        lines: &[Vec<u8>],
        live: bool,
        now: Timestamp,
    ) {
        for (i, bytes) in lines.iter().enumerate() {
            self.line_in(source, shard, context, i as u64 + 1, Line::Text(bytes), live, now);
        }
    }

    /// [`Self::line`] into `shard`'s engine, with the cluster and reporter a message names
    /// itself, if it does.
    #[allow(clippy::too_many_arguments)]
    fn line_in(
        &mut self,
        source: usize,
        shard: Shard,
        context: Option<&Context>,
        number: u64,
        line: Line<'_>,
        live: bool,
        now: Timestamp,
    ) {
        let Some(src) = self.sources.get(source) else { return };
        let Some(shard) = self.shards.get_mut(shard) else { return };
        shard.touched = true;
        let context = context.unwrap_or(&src.context);
        let mut watch =
            Live { src, now, live, metrics: &self.metrics, skew_warned: &mut self.skew_warned };
        match shard.driver.line(context, number, line, Some(now), &mut watch) {
            // Counted with its log line, by the watch.
            None | Some(RecordOutcome::DecodeError) => {}
            Some(outcome) => RecordRead { outcome }.emit(&src.metrics),
        }
    }

    /// Keys the engine forgot after `key_ttl`: they leave the view (and so their series) with
    /// the next commit, after the events emitted before them.
    fn evictions(&mut self) {
        let evicted = self.shards.take_evictions();
        if !evicted.is_empty() {
            self.evicted.extend(evicted);
            self.dirty = true;
        }
    }

    /// How long the task may sleep: until the engine's next deadline while every source is
    /// caught up, and no longer than a pending commit may wait.
    fn wake_in(&self, last_commit: Instant) -> Duration {
        let mut wake = Duration::from_secs(3600);
        // Delivered events leave the outbox on disk only with a commit: without one, a crash
        // would redeliver them. While some are out, look again within the interval.
        if self.dirty || self.outbox.is_busy() {
            wake = wake.min(COMMIT_INTERVAL.saturating_sub(last_commit.elapsed()));
        }
        if self.shards.has_events() {
            wake = wake.min(EVENT_LINGER.saturating_sub(last_commit.elapsed()));
        }
        let whole = self.sources.iter().all(|s| s.caught_up);
        if let Some(deadline) = self.shards.next_deadline(whole) {
            let until = deadline.saturating_sub(self.clock.now()).to_std();
            // A deadline past already is an eviction left for after the commit the events
            // wait for (see `tick`): it wakes nothing before that commit.
            if !(until.is_zero() && self.shards.untidy()) {
                wake = wake.min(until);
            }
        }
        wake
    }

    /// Persists a consistent cut, then hands the new events to the sinks.
    async fn commit(&mut self) -> Result<(), PipelineError> {
        if let Some(why) = self.changelog.as_ref().and_then(|g| g.appender.failed()) {
            return Err(PipelineError::Commit(format!("the changelog: {why}")));
        }
        let (events, ranges) = self.shards.take_events_by_partition();
        // With a changelog, a revoked partition's last changes are let go, not produced: its
        // new owner may already be reading the changelog, and its records whose effect was
        // not committed are not acknowledged, so the new owner applies them again. Nor are
        // they stored: the store stays a cache of the changelog.
        let keep_revoked = self.changelog.is_none();
        if let Some(grouped) = &self.changelog {
            for p in self.shards.revoked() {
                let (_, input) = shard_positions(&grouped.source, p);
                self.moved.remove(&input);
                self.positions.remove(&input);
            }
        }
        let stored = self.store.is_some() || self.changelog.is_some();
        // A large commit is cut in two: a thread of its own takes the events into the view
        // and serializes the second half while the engine task takes the changed entries and
        // serializes the first. At a startup burst (a million events) these cost the engine
        // task 2.7 s in a row, while the other core had room.
        let cut = match events.len() >= PARALLEL_LINES {
            true => events.len() / 2,
            false => events.len(),
        };
        let (front, back) = events.split_at(cut);
        let (view, metrics) = (&self.view, &self.metrics);
        // Only references: the same work runs on the helper thread or, for a small commit,
        // here after the first half.
        let helper_s = || {
            view_events(view, metrics, &events);
            json_lines(back)
        };
        let (changes, serialized) = std::thread::scope(|scope| {
            let helper = (!back.is_empty()).then(|| scope.spawn(helper_s));
            let changes = stored.then(|| self.shards.changes(keep_revoked));
            let mut lines = json_lines(front);
            lines.extend(match helper {
                Some(helper) => helper.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                None => helper_s(),
            });
            (changes, lines)
        });
        // State that cannot be encoded fails the commit: leaving it out would make the
        // next start forget what it held, re-emitting states or losing pending ones.
        let changes = changes.transpose()?;
        // A revoked partition's clusters leave the view after its last events.
        let dropped = self.shards.drop_revoked();
        self.forget(dropped);
        self.publish_view();
        let mut lines: Vec<EventLine> = Vec::with_capacity(events.len());
        // Exactly once: each partition's events, for its transaction.
        let exactly_once = self.exactly_once();
        let mut by_partition: BTreeMap<i32, Vec<EventLine>> = BTreeMap::new();
        let mut range = ranges.into_iter().peekable();
        for (i, (e, line)) in EventRef::all(events).zip(serialized).enumerate() {
            while range.peek().is_some_and(|(_, to, _)| i >= *to) {
                range.next();
            }
            let partition = range.peek().filter(|(from, _, _)| i >= *from).map(|(_, _, p)| *p);
            match line {
                Ok(line) => {
                    let line: EventLine = (line, e);
                    if let Some(p) = partition.filter(|_| exactly_once) {
                        by_partition.entry(p).or_default().push(line.clone());
                    }
                    lines.push(line);
                }
                Err(error) => EventUnserializable { event: &e, error }.emit(&self.metrics),
            }
        }
        let fresh = self.outbox.enqueue(lines);
        let mut removed = self.outbox.trim(self.sinks.held());
        self.dirty = false;
        let Some((engine, shards)) = changes else {
            let sealed = self.outbox.seal();
            return self.settled(fresh, sealed, Ok(Ok(()))).await;
        };
        let positions = std::mem::take(&mut self.moved);
        let positions = positions
            .into_iter()
            .filter_map(|name| Some((name.clone(), self.positions.get(&name)?.clone())))
            .collect();
        let added = self.outbox.chunk_new();
        if !self.stale_outbox.is_empty() {
            // The first commit after a restart: `added` holds the redelivered events under
            // their new numbers; the old chunks go where no new chunk takes their key.
            let kept: BTreeSet<u64> = added.iter().map(|c| c.first).collect();
            removed.extend(self.stale_outbox.drain(..).filter(|first| !kept.contains(first)));
        }
        let (commit, sealed) = match &self.changelog {
            None => (Commit { engine, shards, positions, added, removed }, self.outbox.seal()),
            Some(grouped) => {
                // The partitions' entries and input offsets go to the changelog once the
                // commit's events are held, and from there to the store (see `appender`).
                let prefix = format!("{}#partition", grouped.source);
                let positions = positions.into_iter().filter(|(n, _)| !n.starts_with(&prefix));
                let commit = Commit {
                    engine,
                    positions: positions.collect(),
                    added,
                    removed,
                    ..Commit::default()
                };
                let shards = shards
                    .into_iter()
                    .map(|(partition, entries)| {
                        let (_, input) = shard_positions(&grouped.source, partition);
                        let input = self.positions.get(&input).map_or(0, |p| p.offset);
                        ShardJob {
                            partition,
                            assignment: self
                                .shards
                                .get_mut(Shard::Partition(partition))
                                .map_or(0, |s| s.assignment),
                            entries,
                            input,
                            events: by_partition.remove(&partition).unwrap_or_default(),
                        }
                    })
                    .collect();
                let appender = grouped.appender.clone();
                let sealed = self.outbox.seal_with(move |batches| {
                    Box::new(move || appender.send(Job { shards, batches }))
                });
                (commit, sealed)
            }
        };
        while self.inflight.len() >= IN_FLIGHT {
            self.settle_oldest().await?;
        }
        let store = self.store.clone();
        let write = self.writes.queue(move || store.commit_blocking(commit));
        self.inflight.push_back(InFlight { write, fresh, sealed });
        Ok(())
    }

    /// Waits for every commit under way, then hands their events to the sinks.
    async fn settle(&mut self) -> Result<(), PipelineError> {
        while !self.inflight.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(())
    }

    /// Waits for the oldest commit under way, then hands its events to the sinks.
    async fn settle_oldest(&mut self) -> Result<(), PipelineError> {
        let Some(f) = self.inflight.pop_front() else { return Ok(()) };
        let written = f.write.await;
        self.settled(f.fresh, f.sealed, written).await
    }

    /// A commit is on disk (or failed, which ends the task): its batches wait for its events,
    /// which go to the sinks.
    async fn settled(
        &mut self,
        fresh: Vec<Delivery>,
        sealed: Sealed,
        written: Result<Result<(), PipelineError>, tokio::task::JoinError>,
    ) -> Result<(), PipelineError> {
        written.map_err(|e| PipelineError::Commit(e.to_string()))??;
        self.outbox.committed_sealed(sealed);
        self.outbox.release(self.sinks.held());
        if let Some(tap) = &self.tap {
            for d in &fresh {
                tap.publish(&d.event, &d.line);
            }
        }
        self.sinks.dispatch(fresh).await
    }

    /// After a commit's events (see [`view_events`]): evicted keys leave the view, the
    /// suppressed counters follow the engines, and so do the gauges of what they hold.
    fn publish_view(&mut self) {
        self.metrics.clusters.set(self.shards.clusters() as i64);
        self.metrics.keys.set(self.shards.keys() as i64);
        for refusal in self.shards.take_refusals() {
            LimitReached { refusal: &refusal }.emit();
        }
        if !self.evicted.is_empty() {
            let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
            for e in self.evicted.drain(..) {
                view.evict(&e);
                if e.key == "cluster" {
                    self.metrics.forget_cluster(&e.cluster);
                    self.suppressed_seen.retain(|(c, _), _| *c != e.cluster);
                    self.skew_warned.retain(|(c, _)| *c != e.cluster);
                }
            }
        }
        let suppressed = self.shards.iter().flat_map(|s| s.driver.engine.suppressed_by_kind());
        for (cluster, kind, n) in suppressed {
            let seen = self.suppressed_seen.entry((cluster.to_string(), kind)).or_insert(0);
            if n > *seen {
                self.metrics
                    .suppressed
                    .with_label_values(&[cluster, kind.as_str()])
                    .inc_by(n - *seen);
                *seen = n;
            }
        }
    }
}

/// The stable view and the transition counters follow a commit's events.
fn view_events(view: &SharedView, metrics: &Metrics, events: &[ClusterEvent]) {
    if events.is_empty() {
        return;
    }
    let mut view = view.lock().unwrap_or_else(|p| p.into_inner());
    // Counted per commit, not per event: a label lookup per event showed in profiles.
    let mut transitions: BTreeMap<(&str, EventKind), u64> = BTreeMap::new();
    for e in events {
        view.apply(e);
        *transitions.entry((e.cluster.as_str(), e.kind)).or_default() += 1;
    }
    drop(view);
    for ((cluster, kind), n) in transitions {
        metrics.transitions(cluster, kind, n);
    }
}

/// What the engine task learns of each live record: the reporter's clock offset, the newest
/// record time, decode errors.
struct Live<'a> {
    src: &'a Source,
    now: Timestamp,
    live: bool,
    metrics: &'a Metrics,
    skew_warned: &'a mut BTreeSet<(String, String)>,
}

impl Watch for Live<'_> {
    fn observed(&mut self, obs: &Observation<'_>, engine: &Engine) {
        self.src.metrics.record_time(obs.at);
        if !self.live {
            return;
        }
        let offset = self.now.saturating_sub(obs.at);
        let seconds = offset.0 as f64 / 1e9;
        self.metrics.clock_offset(&obs.cluster, &obs.reporter).set(seconds);
        // Windows run on record time: a clock off by more than W misplaces them.
        if offset.0.abs() > engine.params(&obs.cluster).windows.leader.0
            && self.skew_warned.insert((obs.cluster.to_string(), obs.reporter.to_string()))
        {
            tracing::warn!(cluster = %obs.cluster, reporter = %obs.reporter, offset_seconds = seconds, "reporter clock offset is larger than the stability window; windows are unreliable for it");
        }
    }

    fn decode_error(&mut self, error: &DecodeError) {
        DecodeFailed { source: &self.src.name, error }.emit(&self.src.metrics);
    }
}

#[cfg(test)]
mod tests {
    //! The daemon's live clock on tokio's paused test clock: deterministic, no sleeps.

    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::sync::oneshot;

    use super::*;
    use crate::pipeline::fanout::{Full, SinkQueue};
    use crate::pipeline::{Acked, OnCommit};

    const T0: &str = "2025-01-10T18:00:00Z";

    fn t0() -> Timestamp {
        Timestamp::parse(T0).expect("timestamp")
    }

    fn router_online(at: Timestamp) -> Vec<u8> {
        format!(
            r#"{{"namespace":"router","event_type":"router-online","router_id":"r1","event_src_id":"c1","timestamp":"{}"}}"#,
            at.to_rfc3339()
        )
        .into_bytes()
    }

    /// A record a partitioned log delivers again, at an offset the state already reflects, is
    /// not applied twice: re-applying records is not harmless (a repeated emitted state drops
    /// a pending one, rule 2 of DESIGN §5.2).
    #[tokio::test]
    async fn a_kafka_record_at_an_offset_already_applied_is_not_applied_again() {
        let clock = Clock::starting_at(t0());
        let metrics = Arc::new(Metrics::with_clock(clock).expect("metrics"));
        let mut task = EngineTask::restore(
            EngineConfig::default(),
            Store::none(),
            metrics.clone(),
            SharedView::default(),
            clock,
        )
        .expect("engine task");
        task.add_source("raw", Context::new("prod", "unknown"), false);
        let line = r#"{"namespace":"router","event_type":"router-online","router_id":"r1","timestamp":"2025-01-01T00:00:00Z"}"#;
        let batch = |offset| Input::Batch {
            source: 0,
            lines: vec![line.as_bytes().to_vec()],
            live: false,
            on_commit: Box::new(|| {}),
            key: None,
            redelivery: false,
            context: None,
            offset: Some((2, offset)),
        };
        for offset in [7, 7, 3, 8] {
            task.accept(batch(offset)).await.expect("applied");
        }
        assert_eq!(task.positions["raw#partition2"].offset, 9, "the next offset to apply");
        let count = |outcome: &str| {
            metrics
                .registry
                .gather()
                .iter()
                .filter(|f| f.name() == "herald_records_total")
                .flat_map(|f| f.get_metric().to_vec())
                .filter(|m| m.get_label().iter().any(|l| l.value() == outcome))
                .map(|m| m.get_counter().get_value() as u64)
                .sum::<u64>()
        };
        assert_eq!((count("ok"), count("ignored")), (2, 2), "offsets 7 and 8 applied, 7 and 3 not");
    }

    /// An engine task with one grouped kafka source that has not caught up, and `store`.
    fn grouped(store: Store) -> (EngineTask, SharedView, Arc<Metrics>) {
        let clock = Clock::starting_at(t0());
        let metrics = Arc::new(Metrics::with_clock(clock).expect("metrics"));
        let view = SharedView::default();
        let mut task = EngineTask::restore(
            EngineConfig::default(),
            store,
            metrics.clone(),
            view.clone(),
            clock,
        )
        .expect("engine task");
        task.add_source("raw", Context::new("unknown", "unknown"), false);
        (task, view, metrics)
    }

    /// Router r1 online at `at`, in `cluster`, at `offset` of `partition`.
    fn raw_record(partition: i32, offset: u64, cluster: &str, at: Timestamp) -> Input {
        Input::Batch {
            source: 0,
            lines: vec![router_online(at)],
            live: false,
            on_commit: Box::new(|| {}),
            key: None,
            redelivery: false,
            context: Some(Context::new(cluster, "c1")),
            offset: Some((partition, offset)),
        }
    }

    fn partition(partition: i32, change: PartitionChange) -> Input {
        Input::Partition { source: 0, partition, change }
    }

    fn before_t0(seconds: u64) -> Timestamp {
        Timestamp(t0().0 - crate::model::Nanos::from_std(Duration::from_secs(seconds)).0)
    }

    fn routers(view: &SharedView, cluster: &str) -> Option<BTreeMap<String, bool>> {
        let view = view.lock().expect("view");
        view.clusters.get(cluster).map(|c| c.routers.clone().into_iter().collect())
    }

    /// DESIGN §10: each partition's engine runs on its own partition's record time. In one
    /// engine, a partition read ahead would close the windows of one still in its backlog.
    #[tokio::test]
    async fn each_partition_keeps_its_own_engine_time() {
        let (mut task, view, _) = grouped(Store::none());
        task.accept(raw_record(0, 0, "a", before_t0(60))).await.expect("applied");
        task.accept(raw_record(1, 0, "b", before_t0(10))).await.expect("applied");
        task.accept(raw_record(1, 1, "b", before_t0(5))).await.expect("applied");
        task.commit().await.expect("commit");
        task.settle().await.expect("settled");
        assert_eq!(routers(&view, "b"), Some(BTreeMap::from([("r1".into(), true)])));
        assert_eq!(routers(&view, "a"), None, "partition 0's time is still 60 s ago");

        // Caught up, a partition's time follows the wall clock; the other's need not.
        task.accept(partition(0, PartitionChange::CaughtUp(true))).await.expect("applied");
        task.shards.tick(task.clock.now(), false);
        task.commit().await.expect("commit");
        task.settle().await.expect("settled");
        assert_eq!(routers(&view, "a"), Some(BTreeMap::from([("r1".into(), true)])));
    }

    /// DESIGN §10: `/state` and the gauges cover what this instance owns. A revoked partition's
    /// clusters leave them once its state is committed; assigned again, it resumes from the
    /// store, and what it had emitted is not emitted again.
    #[tokio::test]
    async fn a_revoked_partition_leaves_the_view_and_resumes_from_the_store_when_assigned_again() {
        let dir = tempfile::tempdir().expect("dir");
        let config = EngineConfig::default();
        let (mut task, view, metrics) = grouped(Store::open(dir.path(), &config).expect("store"));
        task.accept(partition(3, PartitionChange::Assigned(1))).await.expect("assigned");
        task.accept(raw_record(3, 0, "a", before_t0(60))).await.expect("applied");
        task.accept(raw_record(3, 1, "a", before_t0(50))).await.expect("applied");
        task.commit().await.expect("commit");
        task.settle().await.expect("settled");
        assert!(routers(&view, "a").is_some());
        assert_eq!(metrics.clusters.get(), 1);

        task.accept(partition(3, PartitionChange::Revoked)).await.expect("revoked");
        task.commit().await.expect("commit");
        task.settle().await.expect("settled");
        assert_eq!(routers(&view, "a"), None, "no longer this instance's");
        assert_eq!((metrics.clusters.get(), metrics.keys.get()), (0, 0));

        task.accept(partition(3, PartitionChange::Assigned(1))).await.expect("assigned");
        assert_eq!(routers(&view, "a"), Some(BTreeMap::from([("r1".into(), true)])));
        task.accept(raw_record(3, 2, "a", before_t0(40))).await.expect("applied");
        task.accept(partition(3, PartitionChange::CaughtUp(true))).await.expect("applied");
        task.shards.tick(task.clock.now(), false);
        let events = task.shards.take_events();
        assert!(events.is_empty(), "r1 was online already: {events:?}");
        assert_eq!(task.positions["raw#partition3"].offset, 3);
    }

    /// A changelog topic in memory: each partition's records in order.
    #[derive(Default)]
    struct MemoryChangelog(std::sync::Mutex<BTreeMap<i32, Vec<crate::state::Entry>>>);

    impl Changelog for MemoryChangelog {
        fn append(
            &self,
            shards: Vec<(i32, Vec<crate::state::Entry>)>,
        ) -> crate::state::changelog::Appended {
            let mut log = self.0.lock().expect("log");
            let mut next = Vec::new();
            for (p, entries) in shards {
                let records = log.entry(p).or_default();
                records.extend(entries);
                next.push((p, records.len() as u64));
            }
            Box::pin(async move { Ok(next) })
        }

        fn read(
            &self,
            partition: i32,
            from: u64,
        ) -> Result<crate::state::changelog::Replayed, crate::state::StateError> {
            let log = self.0.lock().expect("log");
            let records = log.get(&partition).cloned().unwrap_or_default();
            let entries = records.get(from as usize..).unwrap_or_default().to_vec();
            let next = records.len() as u64;
            Ok(crate::state::changelog::Replayed { entries, next, from_start: false })
        }
    }

    impl MemoryChangelog {
        fn records(&self, partition: i32) -> usize {
            self.0.lock().expect("log").get(&partition).map_or(0, Vec::len)
        }
    }

    /// What the kafka source marks as owned when the group assigns `partition` (the first
    /// assignment).
    fn owning(partition: i32) -> Owned {
        let owned = Owned::default();
        owned.assign(partition, 1);
        owned
    }

    async fn committed(task: &mut EngineTask) {
        task.commit().await.expect("commit");
        task.settle().await.expect("settled");
        if let Some(g) = &task.changelog {
            g.appender.idle().await;
        }
    }

    /// DESIGN §10: a partition's engine lives in the changelog, so the instance the group
    /// gives it to next resumes it — its emitted states, and the input offset its entries
    /// reflect, so that a record the old owner applied but whose offset it had not yet
    /// committed is not applied twice.
    #[tokio::test]
    async fn a_partition_moved_to_another_instance_resumes_from_its_changelog() {
        let log = Arc::new(MemoryChangelog::default());
        let (mut a, view_a, _) = grouped(Store::none());
        a.set_changelog("raw", log.clone(), owning(3));
        a.accept(partition(3, PartitionChange::Assigned(1))).await.expect("assigned");
        a.accept(raw_record(3, 0, "a", before_t0(60))).await.expect("applied");
        a.accept(raw_record(3, 1, "a", before_t0(50))).await.expect("applied");
        committed(&mut a).await;
        assert!(routers(&view_a, "a").is_some());
        assert!(log.records(3) > 0, "the commit's entries are in the changelog");

        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path(), &EngineConfig::default()).expect("store");
        let (mut b, view_b, metrics_b) = grouped(store);
        b.set_changelog("raw", log.clone(), owning(3));
        b.accept(partition(3, PartitionChange::Assigned(1))).await.expect("assigned");
        assert_eq!(routers(&view_b, "a"), Some(BTreeMap::from([("r1".into(), true)])));
        assert_eq!(b.positions["raw#partition3"].offset, 2, "the input offset it reflects");
        b.accept(raw_record(3, 1, "a", before_t0(50))).await.expect("applied");
        let ignored = metrics_b
            .registry
            .gather()
            .iter()
            .filter(|f| f.name() == "herald_records_total")
            .flat_map(|f| f.get_metric().to_vec())
            .filter(|m| m.get_label().iter().any(|l| l.value() == "ignored"))
            .map(|m| m.get_counter().get_value() as u64)
            .sum::<u64>();
        assert_eq!(ignored, 1, "offset 1 is in the restored state already");
        assert_eq!(metrics_b.clusters.get(), 1);
    }

    /// A revoked partition's changes since its last commit are not appended: its new owner
    /// may be reading the changelog already, and applies those records again itself.
    #[tokio::test]
    async fn a_revoked_partition_appends_nothing_after_its_revocation() {
        let log = Arc::new(MemoryChangelog::default());
        let (mut a, view, _) = grouped(Store::none());
        let owned = owning(1);
        a.set_changelog("raw", log.clone(), owned.clone());
        a.accept(partition(1, PartitionChange::Assigned(1))).await.expect("assigned");
        a.accept(raw_record(1, 0, "a", before_t0(60))).await.expect("applied");
        committed(&mut a).await;
        let before = log.records(1);
        a.accept(raw_record(1, 1, "a", before_t0(50))).await.expect("applied");
        // As the kafka source does inside the rebalance, before the engine hears of it.
        owned.revoke(1);
        committed(&mut a).await;
        assert_eq!(log.records(1), before, "nothing appended once the group took it away");
        a.accept(partition(1, PartitionChange::Revoked)).await.expect("revoked");
        committed(&mut a).await;
        assert_eq!(log.records(1), before, "nothing appended after the revocation");
        assert_eq!(routers(&view, "a"), None);
        assert!(!a.positions.contains_key("raw#partition1"));
    }

    /// An engine task over `store` with one source (`caught_up` from the start, as a push
    /// source is) and one sink the test reads, holding up to `room` events.
    async fn with_sink(
        store: Store,
        caught_up: bool,
        room: usize,
    ) -> (EngineTask, mpsc::Receiver<Delivery>) {
        let clock = Clock::starting_at(t0());
        let metrics = Arc::new(Metrics::with_clock(clock).expect("metrics"));
        let mut task = EngineTask::restore(
            EngineConfig::default(),
            store,
            metrics.clone(),
            SharedView::default(),
            clock,
        )
        .expect("engine task");
        let (sink_tx, out) = mpsc::channel(room);
        let queue = SinkQueue {
            name: "t".into(),
            tx: Some(sink_tx),
            metrics: metrics.sink("t"),
            acked: Acked::default(),
            when_full: Full::Block,
        };
        task.connect(Fanout::new(vec![queue])).await.expect("connect");
        task.add_source("s", Context::new("prod", "c1"), caught_up);
        (task, out)
    }

    /// Router `id`'s record of `kind` (`online` or `offline`) at `at`.
    fn router_line(kind: &str, id: &str, at: Timestamp) -> Vec<u8> {
        format!(
            r#"{{"namespace":"router","event_type":"router-{kind}","router_id":"{id}","event_src_id":"c1","timestamp":"{}"}}"#,
            at.to_rfc3339()
        )
        .into_bytes()
    }

    /// `lines` as one pushed message of source 0.
    fn pushed(lines: Vec<Vec<u8>>) -> Input {
        Input::Batch {
            source: 0,
            lines,
            live: false,
            on_commit: Box::new(|| {}),
            key: None,
            redelivery: false,
            context: None,
            offset: None,
        }
    }

    /// The routers of the events the sink holds, in order.
    fn routers_out(out: &mut mpsc::Receiver<Delivery>) -> Vec<String> {
        std::iter::from_fn(|| out.try_recv().ok())
            .map(|d| d.event.router.clone().unwrap_or_default())
            .collect()
    }

    /// Commits are written in the order they were made, each after the one before it, though
    /// the engine task queues the next while the last is still being written.
    #[tokio::test]
    async fn queued_commits_reach_the_disk_in_order_and_none_after_one_that_failed() {
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut writes = Writes::default();
        let write = |n: u32, ms: u64, ok: bool| {
            let order = order.clone();
            move || {
                std::thread::sleep(Duration::from_millis(ms));
                order.lock().expect("order").push(n);
                match ok {
                    true => Ok(()),
                    false => Err(crate::state::StateError::Store {
                        path: "store".into(),
                        reason: "disk full".into(),
                    }),
                }
            }
        };
        let slow = writes.queue(write(1, 200, true));
        let fast = writes.queue(write(2, 0, true));
        assert!(fast.await.expect("joined").is_ok());
        assert!(slow.await.expect("joined").is_ok());
        assert_eq!(*order.lock().expect("order"), [1, 2], "the slow write first");

        let failed = writes.queue(write(3, 50, false));
        let after = writes.queue(write(4, 0, true));
        assert!(failed.await.expect("joined").is_err());
        assert!(after.await.expect("joined").is_err(), "a commit after a failed one fails");
        assert_eq!(*order.lock().expect("order"), [1, 2, 3], "and is not written");
    }

    /// A commit does not wait for the one before it to be written: the engine task goes on
    /// (a startup burst's large write held up every record behind it). The events still go
    /// out in order, each commit's once it is on disk.
    #[tokio::test]
    async fn the_next_commit_is_made_while_the_last_is_written_and_events_go_out_in_order() {
        let dir = tempfile::tempdir().expect("dir");
        let config = EngineConfig::default();
        let store = Store::open(dir.path(), &config).expect("store");
        let (mut task, mut out) = with_sink(store, false, 64).await;
        // Record time, in the past of the clock (a record from the future is clamped).
        let later = |s: u64| before_t0(100 - s);
        for (i, id) in ["r1", "r2", "r3"].into_iter().enumerate() {
            // `rx` closes the window of the router before it.
            let s = 10 * i as u64;
            let lines = vec![
                router_line("online", id, later(s)),
                router_line("online", "rx", later(s + 5)),
            ];
            task.accept(pushed(lines)).await.expect("applied");
            task.commit().await.expect("commit");
        }
        assert!(task.inflight.len() > 1, "commits queued without waiting for the last");
        task.settle().await.expect("settled");
        assert!(task.inflight.is_empty());
        assert_eq!(routers_out(&mut out), ["r1", "rx", "r2", "r3"], "in commit order");
        drop(task);
        let restored = Store::open(dir.path(), &config).expect("store").load(config).expect("load");
        assert_eq!(restored.engine.keys(), 4, "every commit on disk");
    }

    /// Keys that expire at the tick that fires events go in a commit after those events,
    /// not in theirs: the events of a restart after a long stop waited, with a million
    /// routers expiring at once, for a million removals to be written.
    #[tokio::test]
    async fn events_due_with_a_mass_eviction_are_committed_before_it() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path(), &EngineConfig::default()).expect("store");
        // A push source: caught up, so the engine follows the wall clock.
        let (mut task, mut out) = with_sink(store, true, 64).await;
        let ttl = EngineConfig::default().defaults.key_ttl.to_std().as_secs();
        // Offline: an online router is kept, however old its record (its check re-armed).
        let lines = vec![
            router_line("offline", "r1", before_t0(ttl + 10)),
            router_line("offline", "r2", before_t0(ttl + 5)),
        ];
        task.accept(pushed(lines)).await.expect("applied");
        let stored_keys = |task: &EngineTask| {
            task.store.load(EngineConfig::default()).expect("load").engine.keys()
        };

        // r2's window closes, and both routers are a key TTL old: all due at once.
        task.tick();
        assert!(task.shards.untidy(), "the evictions wait for the events' commit");
        task.commit().await.expect("commit");
        task.settle().await.expect("settled");
        assert_eq!(routers_out(&mut out), ["r1", "r2"], "the events are out");
        assert_eq!(stored_keys(&task), 2, "their commit holds both routers still");

        task.tidy();
        assert!(!task.shards.untidy());
        assert_eq!(task.shards.keys(), 0, "both evicted once the events were committed");
        task.commit().await.expect("commit");
        task.settle().await.expect("settled");
        assert_eq!(stored_keys(&task), 0, "the evictions' own commit removes them");
    }

    /// A commit large enough to serialize its events on two threads hands them out in order,
    /// each with its own line.
    #[tokio::test]
    async fn a_large_commit_s_events_go_out_in_order_each_with_its_own_line() {
        let n = PARALLEL_LINES + 1001;
        let dir = tempfile::tempdir().expect("dir");
        let config = EngineConfig::default();
        let store = Store::open(dir.path(), &config).expect("store");
        let (mut task, mut out) = with_sink(store, false, 2 * n).await;
        // Every router online at once; the last record closes their windows.
        let mut lines: Vec<Vec<u8>> =
            (0..n).map(|i| router_line("online", &format!("r{i}"), before_t0(60))).collect();
        lines.push(router_line("online", "last", before_t0(50)));
        task.accept(pushed(lines)).await.expect("applied");
        task.commit().await.expect("commit");
        task.settle().await.expect("settled");
        let mut seen = 0;
        while let Ok(d) = out.try_recv() {
            let expected = serde_json::to_string(&*d.event).expect("json");
            assert_eq!(&*d.line, expected, "event {seen}'s own line");
            assert_eq!(d.event.router.as_deref(), Some(format!("r{seen}").as_str()), "in order");
            seen += 1;
        }
        assert_eq!(seen, n);
        // The view took the events on the other thread, the store the changed entries.
        let view = routers(&task.view, "prod").expect("the cluster in the view");
        assert_eq!(view.values().filter(|online| **online).count(), n, "every router out");
        drop(task);
        let restored = Store::open(dir.path(), &config).expect("store").load(config).expect("load");
        assert_eq!(restored.engine.keys(), n as u64 + 1, "every router's entry on disk");
    }

    struct Harness {
        tx: mpsc::Sender<Input>,
        out: mpsc::Receiver<Delivery>,
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<Result<(), PipelineError>>,
    }

    /// An engine task on a clock that reads T0 now, with one caught-up push source and one
    /// sink the test reads.
    async fn harness() -> Harness {
        let (mut task, out) = with_sink(Store::none(), true, 64).await;
        let (tx, rx) = mpsc::channel(8);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            task.run(rx, async move {
                let _ = stopped.await;
            })
            .await
        });
        Harness { tx, out, stop: Some(stop), task }
    }

    impl Harness {
        async fn send(&self, line: Vec<u8>, on_commit: OnCommit) {
            let batch = Input::Batch {
                source: 0,
                lines: vec![line],
                live: true,
                on_commit,
                key: None,
                redelivery: false,
                context: None,
                offset: None,
            };
            self.tx.send(batch).await.expect("engine task takes input");
            self.advance(Duration::ZERO).await;
        }

        /// Moves the paused clock and lets the engine task run.
        async fn advance(&self, d: Duration) {
            tokio::time::advance(d).await;
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        }

        async fn stop(mut self) {
            if let Some(s) = self.stop.take() {
                let _ = s.send(());
            }
            let _ = self.task.await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_closes_on_the_wall_clock_with_no_record_after_it() {
        let mut h = harness().await;
        h.send(router_online(t0()), Box::new(|| {})).await;
        h.advance(Duration::from_millis(1_900)).await;
        assert!(h.out.try_recv().is_err(), "nothing before the window has passed");
        h.advance(Duration::from_millis(200)).await;
        let d = h.out.try_recv().expect("the event, once W passed on the wall clock");
        assert_eq!(
            d.event.stable_at,
            t0().saturating_add(crate::model::Nanos::from_std(Duration::from_secs(2)))
        );
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_without_events_is_committed_within_the_commit_interval() {
        let h = harness().await;
        let committed = Arc::new(AtomicBool::new(false));
        let c = committed.clone();
        let ignored = br#"{"namespace":"sdk","event_type":"x","timestamp":"2025-01-10T18:00:00Z"}"#;
        h.send(ignored.to_vec(), Box::new(move || c.store(true, Ordering::SeqCst))).await;
        h.advance(Duration::from_millis(150)).await;
        assert!(!committed.load(Ordering::SeqCst), "not before the commit interval");
        h.advance(COMMIT_INTERVAL).await;
        assert!(committed.load(Ordering::SeqCst), "committed, and acknowledged, within it");
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_from_the_future_is_clamped_to_the_wall_clock() {
        let mut h = harness().await;
        let ahead = t0().saturating_add(crate::model::Nanos::from_std(Duration::from_secs(60)));
        h.send(router_online(ahead), Box::new(|| {})).await;
        h.advance(Duration::from_secs(3)).await;
        let d = h.out.try_recv().expect("the event");
        assert_eq!(d.event.at, t0(), "its time is the wall clock when it arrived");
        h.stop().await;
    }
}
