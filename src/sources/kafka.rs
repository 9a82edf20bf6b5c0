//! The Kafka source: a consumer group reading the raw records edges forward (DESIGN §10), or
//! plain OpenZiti or generic lines with the configured cluster.
//!
//! A raw record names its cluster and reporter in its `herald-cluster` and `herald-reporter`
//! headers; a record without them is read with the source's `cluster` and `reporter`. Offsets
//! are committed by herald, never automatically: a record's offset is committed once its
//! effect is persisted and every event produced by then is held by every sink, so a crash or
//! a rebalance reads again what was not (at least once), never skips it.
//!
//! A topic is mostly a backlog: the source counts as caught up (engine time may follow the
//! wall clock, DESIGN §5.1) only once it has read every partition it owns to its end, not
//! after a quiet moment as a broker queue does, or a restart's backlog would be read on
//! wall-clock time and its windows would close at once.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::Common;
use crate::support::problems::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Config {
    /// `cluster`, `reporter`, `format`: read apart, see [`Common`].
    #[serde(skip)]
    pub common: Common,
    /// `host:port[,host:port…]`; required.
    pub brokers: Option<String>,
    /// The topic to read; required.
    pub topic: Option<String>,
    /// The consumer group; required. Instances in one group share the topic's partitions.
    pub group_id: Option<String>,
    /// librdkafka options passed through as they are (SASL, TLS,
    /// `partition.assignment.strategy`, …).
    #[serde(default)]
    pub client: BTreeMap<String, String>,
    /// The compacted topic each partition's engine lives in (DESIGN §10), created with the
    /// input's partition count when absent; `<group_id>-changelog` by default.
    pub state_topic: Option<String>,
    /// `at_least_once` (default) or `exactly_once` (DESIGN §10).
    #[serde(default)]
    pub processing: Processing,
    /// Exactly once: the transactional id of this instance's producer, unique in the group
    /// and the same across its restarts (a restart then fences its former self).
    /// `<group_id>-<hostname>` by default.
    pub transactional_id: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Processing {
    /// Offsets are committed once every sink holds the events and the changelog its entries.
    #[default]
    AtLeastOnce,
    /// A commit's Kafka events, changelog entries and input offsets go in one transaction.
    ExactlyOnce,
}

impl Config {
    pub(crate) fn validate(self, path: &str, p: &mut Problems) -> Option<Self> {
        let mut ok = p.require(path, "brokers", self.brokers.is_some());
        ok &= p.require(path, "topic", self.topic.is_some());
        ok &= p.require(path, "group_id", self.group_id.is_some());
        if self.transactional_id.is_some() && self.processing != Processing::ExactlyOnce {
            p.push(format!("{path}.transactional_id"), "only with processing = \"exactly_once\"");
            ok = false;
        }
        let isolation = self.client.get("isolation.level").map(String::as_str);
        if self.processing == Processing::ExactlyOnce && isolation == Some("read_uncommitted") {
            p.push(
                format!("{path}.client.isolation.level"),
                "exactly once reads only committed records: an aborted transaction's would be applied",
            );
            ok = false;
        }
        for key in
            ["enable.auto.commit", "enable.auto.offset.store", "group.id", "transactional.id"]
        {
            if self.client.contains_key(key) {
                p.push(
                    format!("{path}.client.{key}"),
                    "herald sets this itself: it commits a record's offset once its events are held",
                );
                ok = false;
            }
        }
        ok.then_some(self)
    }
}

// ---- running ------------------------------------------------------------------------------

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};

use super::broker::{drain, message_lines, Freshness, Outstanding, QUIET};
use super::{Source, SourceContext, SourceError};
use crate::decode::Context;
use crate::pipeline::{Input, OnCommit, PartitionChange, Shutdown};
use crate::telemetry::events::{Reachability, Side};

/// How often the offsets of what is held are committed.
const COMMIT_EVERY: Duration = Duration::from_secs(1);
/// How long after a failed rewind it is tried again.
const REWIND_RETRY: Duration = Duration::from_secs(1);

/// What the consume loop, the records' acknowledgements and the rebalance callback share.
#[derive(Default)]
struct Held {
    /// The next offset to read, per (topic, partition), of records whose effect is held.
    next: BTreeMap<(String, i32), i64>,
    /// Whether `next` moved since the last commit.
    moved: bool,
    /// The partitions this instance owns, each with the number of its assignment, and those
    /// of them it has read to their end.
    owned: BTreeMap<i32, u64>,
    at_end: BTreeSet<i32>,
    /// The owned partitions a record was read from since their assignment.
    read: BTreeSet<i32>,
    /// What happened to partitions since the consume loop last looked, in order: the engine
    /// task learns it before the next record (DESIGN §10: one engine per partition).
    changes: Vec<(i32, PartitionChange)>,
}

impl Held {
    fn caught_up(&self) -> bool {
        !self.owned.is_empty() && self.owned.keys().all(|p| self.at_end.contains(p))
    }

    /// A record's effect is held. Not for a partition a rebalance took away meanwhile (even
    /// if it gave it back since): its new owner commits it, and a commit from here could
    /// move its offset under it, past records whose effect the new owner lacks.
    fn hold(&mut self, topic: String, partition: i32, assignment: u64, offset: i64) {
        if self.owned.get(&partition) == Some(&assignment) {
            self.next.insert((topic, partition), offset + 1);
            self.moved = true;
        }
    }

    /// Partition `p` is read from its committed offset under assignment `n`: news the
    /// engine task gets before the partition's next record.
    fn assigned(&mut self, p: i32, n: u64) {
        self.owned.insert(p, n);
        self.at_end.remove(&p);
        self.read.remove(&p);
        self.changes.push((p, PartitionChange::Assigned(n)));
    }

    fn list(&self, only: Option<&TopicPartitionList>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in &self.next {
            let wanted = only.is_none_or(|o| o.find_partition(topic, *partition).is_some());
            if wanted {
                let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next));
            }
        }
        tpl
    }
}

/// Commits what is held of the partitions a rebalance takes away, before they go, and keeps
/// track of what is owned.
struct Group {
    name: String,
    /// Exactly once: offsets go in the transactions, never committed from here.
    transactional: bool,
    held: Arc<Mutex<Held>>,
    shared: crate::pipeline::Owned,
    reach: Reachability,
    metrics: Arc<crate::telemetry::metrics::Metrics>,
}

impl ClientContext for Group {
    fn error(&self, error: KafkaError, reason: &str) {
        // The end of a partition is news, not an outage: the consume loop hears of it too.
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        self.reach.failed(format_args!("{error} ({reason})"));
    }

    /// librdkafka's statistics give each partition's lag behind its committed offset.
    fn stats(&self, statistics: Statistics) {
        let owned: BTreeSet<i32> =
            self.held.lock().unwrap_or_else(|p| p.into_inner()).owned.keys().copied().collect();
        for topic in statistics.topics.values() {
            for (partition, p) in &topic.partitions {
                // -1 is unknown: nothing committed yet, or no high watermark.
                if owned.contains(partition) && p.consumer_lag >= 0 {
                    let labels = [self.name.as_str(), &partition.to_string()];
                    self.metrics.consumer_lag.with_label_values(&labels).set(p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for Group {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(revoked) => {
                let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                let tpl = held.list(Some(revoked));
                // Asynchronous: this runs on the consumer's poll, inside an async worker. A
                // commit that does not land before the new owner reads costs redelivery.
                if tpl.count() > 0 && !self.transactional {
                    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                        tracing::warn!(source = %self.name, error = %e, "committing revoked partitions failed; their new owner reads some records again");
                    }
                }
                held.next.retain(|(t, p), _| revoked.find_partition(t, *p).is_none());
                for p in partitions(revoked) {
                    held.owned.remove(&p);
                    self.shared.revoke(p);
                    held.at_end.remove(&p);
                    held.read.remove(&p);
                    held.changes.push((p, PartitionChange::Revoked));
                    let labels = [self.name.as_str(), &p.to_string()];
                    let _ = self.metrics.partition_owned.remove_label_values(&labels);
                    let _ = self.metrics.consumer_lag.remove_label_values(&labels);
                    self.metrics.rebalances.with_label_values(&[&self.name, "revoke"]).inc();
                }
                tracing::info!(source = %self.name, partitions = ?partitions(revoked), "partitions revoked");
            }
            Rebalance::Assign(assigned) => {
                let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                for p in partitions(assigned) {
                    let n = self.shared.next_assignment();
                    self.shared.assign(p, n);
                    held.assigned(p, n);
                    let owned = [self.name.as_str(), &p.to_string()];
                    self.metrics.partition_owned.with_label_values(&owned).set(1);
                    self.metrics.rebalances.with_label_values(&[&self.name, "assign"]).inc();
                }
                tracing::info!(source = %self.name, partitions = ?partitions(assigned), "partitions assigned");
            }
            Rebalance::Error(e) => {
                tracing::warn!(source = %self.name, error = %e, "rebalance failed")
            }
        }
    }
}

impl Group {
    fn caught_up(&self) -> bool {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).caught_up()
    }

    /// `partition` has been read to its end; true if it was not before.
    fn reached_end(&self, partition: i32) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let changed = held.at_end.insert(partition);
        if changed {
            held.changes.push((partition, PartitionChange::CaughtUp(true)));
        }
        changed
    }

    /// A record of `partition` arrived: it is not at its end. Gives whether it is the first
    /// since the partition's assignment, and the assignment's number. One lock per record.
    fn arrived(&self, partition: i32) -> (bool, u64) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.at_end.remove(&partition) {
            held.changes.push((partition, PartitionChange::CaughtUp(false)));
        }
        let first = held.read.insert(partition);
        (first, held.owned.get(&partition).copied().unwrap_or_default())
    }

    /// Whether a record of `partition` was read since its assignment.
    fn has_read(&self, partition: i32) -> bool {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).read.contains(&partition)
    }

    /// Hands the partitions' changes to the engine task; false once it is gone.
    async fn hand_over(&self, source: usize, tx: &tokio::sync::mpsc::Sender<Input>) -> bool {
        let changes =
            std::mem::take(&mut self.held.lock().unwrap_or_else(|p| p.into_inner()).changes);
        for (partition, change) in changes {
            if tx.send(Input::Partition { source, partition, change }).await.is_err() {
                return false;
            }
        }
        true
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

/// librdkafka options of a group member that its producer would warn about.
const CONSUMER_ONLY: [&str; 9] = [
    "partition.assignment.strategy",
    "group.instance.id",
    "group.protocol",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "enable.partition.eof",
    "fetch.wait.max.ms",
];

/// The brokers and the `client.*` options: what every client of this source connects with.
fn connection(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", config.brokers.as_deref().unwrap_or_default());
    for (k, v) in &config.client {
        c.set(k, v);
    }
    c
}

impl Config {
    pub fn transactional_id(&self) -> String {
        match &self.transactional_id {
            Some(t) => t.clone(),
            None => {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .or_else(|_| std::fs::read_to_string("/etc/hostname"))
                    .unwrap_or_default();
                format!("{}-{}", self.group_id.as_deref().unwrap_or_default(), host.trim())
            }
        }
    }

    pub fn state_topic(&self) -> String {
        match &self.state_topic {
            Some(t) => t.clone(),
            None => format!("{}-changelog", self.group_id.as_deref().unwrap_or_default()),
        }
    }

    /// The client of the changelog and of the transactions: the source's brokers and
    /// options, without a group member's.
    fn producing(&self) -> ClientConfig {
        let mut client = connection(self);
        for key in CONSUMER_ONLY {
            client.remove(key);
        }
        client
    }

    /// Exactly once: the transactional producer of this instance, which also writes the
    /// kafka sinks' events. Blocking.
    pub fn transactor(
        &self,
        records: crate::pipeline::transaction::EventRecords,
        owned: crate::pipeline::Owned,
        metrics: Arc<crate::telemetry::metrics::Metrics>,
    ) -> Result<crate::pipeline::transaction::Transactor, crate::pipeline::transaction::TxnError>
    {
        crate::pipeline::transaction::Transactor::open(
            self.producing(),
            &self.transactional_id(),
            &self.state_topic(),
            self.topic.as_deref().unwrap_or_default(),
            records,
            owned,
            metrics,
        )
    }

    /// The changelog its partitions' engines live in, created if absent. Blocking.
    pub fn changelog(
        &self,
    ) -> Result<crate::state::changelog::KafkaChangelog, crate::state::StateError> {
        // A group member's options mean nothing to the changelog's producer and reader.
        let client = self.producing();
        let input = self.topic.as_deref().unwrap_or_default();
        let changelog =
            crate::state::changelog::KafkaChangelog::open(client, &self.state_topic(), input)?;
        Ok(match self.processing {
            Processing::AtLeastOnce => changelog,
            Processing::ExactlyOnce => {
                changelog.with_committed_offsets_of(self.group_id.as_deref().unwrap_or_default())
            }
        })
    }
}

/// The consumer's settings: herald's group, no automatic commit or offset store, the
/// beginning of a partition with no committed offset; `client.*` options come after.
pub fn client_config(config: &Config) -> ClientConfig {
    let mut c = connection(config);
    let defaults = [
        ("auto.offset.reset", "earliest"),
        ("enable.partition.eof", "true"),
        ("statistics.interval.ms", "1000"),
    ];
    for (k, v) in defaults {
        if !config.client.contains_key(k) {
            c.set(k, v);
        }
    }
    c.set("group.id", config.group_id.as_deref().unwrap_or_default())
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    c
}

impl Source for Config {
    fn context(&self) -> Context {
        super::context(&self.common)
    }

    fn start(&self, ctx: SourceContext, tasks: &mut Shutdown) {
        let config = self.clone();
        tasks.spawn(ctx.name.clone(), async move {
            if let Err(e) = consume(&config, &ctx).await {
                let _ = ctx
                    .tx
                    .send(Input::Ended { source: ctx.index, error: Some(e.to_string()) })
                    .await;
            }
        });
    }
}

/// A record's cluster and reporter, from an edge's headers.
fn raw_context(m: &impl Message, format: crate::decode::Format) -> Option<Context> {
    let headers = m.headers()?;
    let mut cluster = None;
    let mut reporter = None;
    for h in headers.iter() {
        let value = h.value.and_then(|v| std::str::from_utf8(v).ok());
        match h.key {
            "herald-cluster" => cluster = value,
            "herald-reporter" => reporter = value,
            _ => {}
        }
    }
    Some(Context { cluster: cluster?.to_string(), reporter: reporter?.to_string(), format })
}

async fn consume(config: &Config, ctx: &SourceContext) -> Result<(), SourceError> {
    let (name, source, tx, stop) = (&ctx.name, ctx.index, &ctx.tx, &ctx.stop);
    let brokers = config.brokers.clone().unwrap_or_default();
    let server = format!("kafka {brokers}");
    let held = Arc::new(Mutex::new(Held::default()));
    let transactional = config.processing == Processing::ExactlyOnce;
    let group = Group {
        name: name.clone(),
        transactional,
        held: held.clone(),
        shared: ctx.owned.clone(),
        metrics: ctx.metrics.clone(),
        reach: Reachability::new(Side::Source, name, server, ctx.metrics.outages(name)),
    };
    let consumer: StreamConsumer<Group> = client_config(config)
        .create_with_context(group)
        .map_err(|e| SourceError::broker(&brokers, e))?;
    let consumer = Arc::new(consumer);
    let topic = config.topic.clone().unwrap_or_default();
    consumer.subscribe(&[&topic]).map_err(|e| SourceError::broker(&brokers, e))?;
    tracing::info!(source = %name, topic = %topic, group = config.group_id.as_deref().unwrap_or(""), "consuming");
    let outstanding = Arc::new(AtomicUsize::new(0));
    let mut fresh = Freshness { source, caught_up: false };
    let mut commits = tokio::time::interval(COMMIT_EVERY);
    if transactional {
        let weak = Arc::downgrade(&consumer);
        ctx.owned.set_group(Box::new(move || weak.upgrade().and_then(|c| c.group_metadata())));
    }
    // Exactly once: partitions to read again from their committed offsets, each with its
    // new assignment number (see `rewind`).
    let mut rewinding: BTreeMap<i32, u64> = BTreeMap::new();
    // After a failed rewind, when to try again (the loop comes round every QUIET at least).
    let mut retry_at: Option<tokio::time::Instant> = None;
    let reset_to_end = matches!(
        config.client.get("auto.offset.reset").map(String::as_str),
        Some("latest" | "largest" | "end")
    );
    loop {
        // A partition the group moved meanwhile is read from its committed offset anyway.
        rewinding.retain(|p, n| ctx.owned.owns(*p, *n));
        let due = retry_at.is_none_or(|at| tokio::time::Instant::now() >= at);
        if !rewinding.is_empty() && due {
            retry_at = None;
            let partitions = std::mem::take(&mut rewinding);
            match rewind(&consumer, &topic, &partitions, reset_to_end).await {
                Ok(()) => {
                    if !consumer.context().hand_over(source, tx).await {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(source = %name, error = %e, "reading the rewound partitions again from their committed offsets failed; trying again");
                    rewinding = partitions;
                    retry_at = Some(tokio::time::Instant::now() + REWIND_RETRY);
                }
            }
        }
        let next = tokio::select! {
            _ = stop.stopped() => break,
            _ = commits.tick(), if !transactional => {
                commit(&consumer, &held, CommitMode::Async);
                continue;
            }
            rewound = ctx.owned.rewound(), if transactional => {
                // Reading on from where it is would skip what the aborted commit held: the
                // partitions' records are passed over until they are read again from there.
                rewinding.extend(rewound);
                continue;
            }
            next = tokio::time::timeout(QUIET, consumer.recv()) => next,
        };
        if let Ok(Err(KafkaError::PartitionEOF(partition))) = &next {
            let p = *partition;
            // A partition waiting to be read again from its committed offset is not at its end.
            let rewound = rewinding.contains_key(&p);
            let trusted = consumer.context().has_read(p) || at_end(&consumer, &topic, p).await;
            if !rewound && trusted && consumer.context().reached_end(p) {
                tracing::debug!(source = %name, partition = p, "partition read to its end");
            }
        }
        let mut assignment = 0;
        if let Ok(Ok(m)) = &next {
            let first;
            (first, assignment) = consumer.context().arrived(m.partition());
            if first {
                tracing::info!(source = %name, partition = m.partition(), offset = m.offset(), "reading partition");
            }
        }
        // A rebalance runs inside the poll: what it did goes ahead of the record after it.
        if !consumer.context().hand_over(source, tx).await {
            break;
        }
        let m = match next {
            Err(_) => {
                // Quiet is not enough: only the end of every owned partition is caught up.
                if consumer.context().caught_up() && !fresh.quiet(tx).await {
                    break;
                }
                continue;
            }
            Ok(Err(KafkaError::PartitionEOF(_))) => {
                if consumer.context().caught_up() && !fresh.quiet(tx).await {
                    break;
                }
                continue;
            }
            Ok(Err(e)) => {
                // librdkafka reconnects on its own; the error is logged once per outage.
                consumer.context().reach.failed(e);
                continue;
            }
            Ok(Ok(m)) => m,
        };
        consumer.context().reach.reached();
        if rewinding.get(&m.partition()).is_some_and(|n| ctx.owned.owns(m.partition(), *n)) {
            continue;
        }
        let Some(live) = fresh.arrived(tx).await else { break };
        let lines = message_lines(m.payload().unwrap_or_default());
        let context = raw_context(&m, config.common.format);
        let (t, partition, offset) = (m.topic().to_string(), m.partition(), m.offset());
        drop(m);
        outstanding.fetch_add(1, Ordering::AcqRel);
        let settled = Outstanding(outstanding.clone());
        let held = held.clone();
        let on_commit: OnCommit = Box::new(move || {
            held.lock().unwrap_or_else(|p| p.into_inner()).hold(t, partition, assignment, offset);
            drop(settled);
        });
        // Kafka offsets are never negative.
        let at = Some((partition, u64::try_from(offset).unwrap_or_default()));
        let batch = Input::Batch {
            source,
            lines,
            live,
            on_commit,
            key: None,
            redelivery: false,
            context,
            offset: at,
        };
        if tx.send(batch).await.is_err() {
            break;
        }
    }
    // What was committed before the stop is acknowledged now: wait for it, then commit it.
    drain(&outstanding).await;
    // Closing the consumer leaves the group, a blocking call too.
    let _ = tokio::task::spawn_blocking(move || {
        if !transactional {
            commit(&consumer, &held, CommitMode::Sync);
        }
        drop(consumer);
    })
    .await;
    Ok(())
}

/// Whether partition `p`, newly assigned and not read from yet, really is at its end: its
/// committed offset (or, with none, its start) is its high watermark. Right after a
/// rebalance librdkafka was seen to report the end a partition had reached under the
/// previous assignment, while the new one reads from its committed offset again; taken at
/// its word, the partition's engine would follow the wall clock before its backlog, closing
/// its windows too early. Blocking calls, off the async workers; if they fail, the report is
/// believed.
async fn at_end(consumer: &Arc<StreamConsumer<Group>>, topic: &str, p: i32) -> bool {
    let (consumer, topic) = (consumer.clone(), topic.to_string());
    let checked = tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(5);
        let (low, high) = consumer.fetch_watermarks(&topic, p, timeout).ok()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&topic, p);
        let committed = consumer.committed_offsets(tpl, timeout).ok()?;
        let start = match committed.find_partition(&topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => low,
        };
        Some(start >= high)
    });
    checked.await.ok().flatten().unwrap_or(true)
}

/// A transaction failed (exactly once): each rewound partition is read again from its
/// committed offset, under its new assignment number, whose news goes ahead of its records
/// so that the engine task restores the partition's last committed engine first. The seek
/// drops what librdkafka had fetched from the old position. A partition the group moved
/// meanwhile is left alone: its new assignment reads from the committed offset anyway.
async fn rewind(
    consumer: &Arc<StreamConsumer<Group>>,
    topic: &str,
    rewound: &BTreeMap<i32, u64>,
    reset_to_end: bool,
) -> Result<(), KafkaError> {
    let shared = consumer.context().shared.clone();
    let seek: Vec<i32> =
        rewound.iter().filter(|(p, n)| shared.owns(**p, **n)).map(|(p, _)| *p).collect();
    if seek.is_empty() {
        return Ok(());
    }
    let (c, t, partitions) = (consumer.clone(), topic.to_string(), seek.clone());
    let sought = tokio::task::spawn_blocking(move || {
        let timeout = Duration::from_secs(10);
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition(&t, *p);
        }
        let committed = c.committed_offsets(tpl, timeout)?;
        let none = if reset_to_end { Offset::End } else { Offset::Beginning };
        for p in partitions {
            let at = committed
                .find_partition(&t, p)
                .map(|e| e.offset())
                .filter(|o| matches!(o, Offset::Offset(_)))
                .unwrap_or(none);
            // A partition still starting to fetch refuses a seek for a moment.
            let mut attempt = 0;
            loop {
                match c.seek(&t, p, at, timeout) {
                    Ok(()) => break,
                    Err(_) if attempt < 20 => {
                        attempt += 1;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => return Err(e),
                }
            }
            tracing::info!(partition = p, offset = ?at, "partition read again from its committed offset");
        }
        Ok(())
    });
    sought.await.unwrap_or(Err(KafkaError::Canceled))?;
    let group = consumer.context();
    let mut held = group.held.lock().unwrap_or_else(|p| p.into_inner());
    for p in seek {
        let Some(n) = rewound.get(&p).copied() else { continue };
        // Moved by a rebalance while the seek ran: its assignment says what it is.
        if !shared.owns(p, n) {
            continue;
        }
        if held.owned.contains_key(&p) {
            held.assigned(p, n);
        }
    }
    Ok(())
}

/// Commits the offsets of what is held, if they moved.
fn commit(consumer: &StreamConsumer<Group>, held: &Mutex<Held>, mode: CommitMode) {
    let tpl = {
        let mut h = held.lock().unwrap_or_else(|p| p.into_inner());
        if !h.moved {
            return;
        }
        h.moved = false;
        h.list(None)
    };
    if let Err(e) = consumer.commit(&tpl, mode) {
        consumer.context().reach.failed(format_args!("committing offsets: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression guard: a quiet moment (a group still joining, a slow fetch) is not caught
    /// up; a restart's backlog read on wall-clock time would close every window at once.
    #[test]
    fn caught_up_means_every_owned_partition_read_to_its_end() {
        let mut p = Held::default();
        assert!(!p.caught_up(), "owning nothing yet: the group is still joining");
        p.owned.extend([(0, 1), (1, 2)]);
        p.at_end.insert(0);
        assert!(!p.caught_up());
        p.at_end.insert(1);
        assert!(p.caught_up());
    }

    /// A record of a partition taken away before its events were held is not committed from
    /// here: the partition's new owner commits it.
    #[test]
    fn a_revoked_partition_is_not_committed_by_its_old_owner() {
        let mut h = Held::default();
        h.owned.insert(0, 1);
        h.hold("raw".into(), 0, 1, 41);
        h.hold("raw".into(), 1, 1, 7);
        assert_eq!(h.next, BTreeMap::from([(("raw".to_string(), 0), 42)]));
        // Taken away and given back: a record of the first assignment is not committed.
        h.owned.insert(0, 2);
        h.hold("raw".into(), 0, 1, 50);
        assert_eq!(h.next, BTreeMap::from([(("raw".to_string(), 0), 42)]));
    }
}
