//! Exactly once (DESIGN §10): one transactional producer per instance puts a commit's events
//! for the kafka sinks, its changelog records and its input offsets, over every partition it
//! owns, in one Kafka transaction. A read_committed consumer of the events topic then sees
//! each event once, even across crashes and rebalances: a former owner's transaction is
//! fenced by the group's generation (the offsets go with fresh group metadata), and an
//! aborted one leaves nothing behind, while the partitions are read again from their last
//! committed state (see [`Ownership::rewind`](super::ownership::Ownership::rewind)).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use rdkafka::message::OwnedHeaders;

use super::input::Owned;
use crate::model::ClusterEvent;
use crate::state::Entry;
use crate::support::kafka::{next_offsets, send};
use crate::telemetry::metrics::Metrics;

/// How long the blocking transaction calls may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);
/// The wait before a transaction after one abort; it doubles with each abort in a row.
const ABORT_BACKOFF: Duration = Duration::from_millis(50);
const ABORT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How many refused events' ids are kept.
const PASSED_OVER: usize = 10_000;

/// One partition's share of a transaction.
pub struct TxnShard {
    pub partition: i32,
    /// Its changelog records, the `#input` entry among them.
    pub entries: Vec<Entry>,
    /// The input partition's next offset: what the group commits for it.
    pub input: u64,
    /// The events its engine emitted, with their JSON lines.
    pub events: Vec<(Arc<str>, crate::pipeline::EventRef)>,
}

/// An event's record for one kafka sink: topic, key, body, headers.
pub struct EventRecord {
    pub topic: Arc<str>,
    pub key: String,
    pub body: String,
    pub headers: OwnedHeaders,
}

/// The records of an event, whose JSON line is given, for every kafka sink: what the sinks
/// themselves would produce.
pub type EventRecords = Box<dyn Fn(&ClusterEvent, &str) -> Vec<EventRecord> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// Aborted, or fenced and a new producer in its place: the partitions go back to their
    /// last committed state and the work is done again.
    #[error("transaction aborted: {0}")]
    Aborted(String),
    /// No producer could be made to work again: the engine stops.
    #[error("transactional producer lost: {0}")]
    Fatal(String),
}

pub struct Transactor {
    client: ClientConfig,
    producer: Mutex<Arc<FutureProducer>>,
    changelog: String,
    input: String,
    records: EventRecords,
    owned: Owned,
    metrics: Arc<Metrics>,
    /// Transactions aborted in a row.
    aborts: AtomicU32,
    /// Events Kafka refused for good, passed over when the rewound engine emits them again.
    passed_over: Mutex<BTreeSet<String>>,
    /// A changelog record Kafka refused for good.
    refused: Mutex<Option<String>>,
}

impl Transactor {
    /// Makes the producer and fences a former producer of the same transactional id (its
    /// open transaction is aborted). Blocking.
    pub fn open(
        client: ClientConfig,
        transactional_id: &str,
        changelog: &str,
        input: &str,
        records: EventRecords,
        owned: Owned,
        metrics: Arc<Metrics>,
    ) -> Result<Transactor, TxnError> {
        if transactional_id.is_empty() || transactional_id.ends_with('-') {
            return Err(TxnError::Fatal(format!(
                "transactional id {transactional_id:?} is empty or ends in '-' (the default when there is no hostname to make it unique): set transactional_id"
            )));
        }
        let mut client = client;
        // A consumer's option means nothing to the producer (librdkafka warns of it).
        client.remove("isolation.level");
        client
            .set("transactional.id", transactional_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5");
        let producer = Arc::new(init(&client)?);
        tracing::info!(transactional_id, "transactional producer ready (exactly once)");
        Ok(Transactor {
            client,
            producer: Mutex::new(producer),
            changelog: changelog.to_string(),
            input: input.to_string(),
            records,
            owned,
            metrics,
            aborts: AtomicU32::new(0),
            passed_over: Mutex::default(),
            refused: Mutex::default(),
        })
    }

    fn producer(&self) -> Arc<FutureProducer> {
        self.producer.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Aborts in a row wait longer each time before the next transaction: a cause that
    /// stays (a coordinator away, an instance fencing this one) would otherwise spin the
    /// rewind. Called before a job takes its partitions, so a revocation does not wait on it.
    pub async fn backoff(&self) {
        let wait = abort_wait(self.aborts.load(Ordering::Acquire));
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// One transaction: every shard's changelog records and kafka events, and the input
    /// offsets with the group's metadata. Gives each changelog partition's next offset.
    pub async fn commit(&self, shards: &[TxnShard]) -> Result<Vec<(i32, u64)>, TxnError> {
        let producer = self.producer();
        let done = self.attempt(&producer, shards).await;
        if let Some(why) = self.refused.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(TxnError::Fatal(why));
        }
        let outcome = match &done {
            Ok(_) => "committed",
            Err(_) => "aborted",
        };
        self.metrics.transactions.with_label_values(&[outcome]).inc();
        match done {
            Ok(next) => {
                self.aborts.store(0, Ordering::Release);
                Ok(next)
            }
            Err(e) => {
                self.aborts.fetch_add(1, Ordering::AcqRel);
                Err(self.recover(producer, e).await)
            }
        }
    }

    async fn attempt(
        &self,
        producer: &Arc<FutureProducer>,
        shards: &[TxnShard],
    ) -> Result<Vec<(i32, u64)>, KafkaError> {
        let p = producer.clone();
        // Blocking: librdkafka's main thread answers it.
        tokio::task::spawn_blocking(move || p.begin_transaction())
            .await
            .map_err(|_| KafkaError::Canceled)??;
        let mut changelog = Vec::new();
        let mut events = Vec::new();
        let mut offsets = TopicPartitionList::new();
        for shard in shards {
            for entry in &shard.entries {
                let record =
                    crate::state::changelog::record(&self.changelog, shard.partition, entry);
                changelog.push(send(producer, record).await?);
            }
            for (json, event) in &shard.events {
                if self.passed_over.lock().unwrap_or_else(|p| p.into_inner()).contains(&event.id) {
                    continue;
                }
                for r in (self.records)(event, json) {
                    let record = FutureRecord::<str, str>::to(&r.topic)
                        .key(&r.key)
                        .payload(&r.body)
                        .headers(r.headers);
                    match send(producer, record).await {
                        Ok(delivery) => events.push((event.id.clone(), delivery)),
                        // As the kafka sink does: an event Kafka can never take is reported
                        // and passed over; aborting for it would abort for ever.
                        Err(e) if crate::support::kafka::undeliverable(&e) => {
                            tracing::error!(event = %event.id, topic = %r.topic, error = %e, "event passed over: Kafka can never take it");
                            self.pass_over(event.id.clone());
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            let next = Offset::Offset(i64::try_from(shard.input).unwrap_or(i64::MAX));
            offsets.add_partition_offset(&self.input, shard.partition, next)?;
        }
        let (p, owned) = (producer.clone(), self.owned.clone());
        let committed = tokio::task::spawn_blocking(move || {
            // Fresh metadata, read now: it carries the generation the group fences a former
            // member's offsets with, which moves as soon as a rebalance begins.
            let group = owned.group().ok_or(KafkaError::Canceled)?;
            p.send_offsets_to_transaction(&offsets, &group, TXN_TIMEOUT)?;
            p.commit_transaction(TXN_TIMEOUT)
        })
        .await
        .map_err(|_| KafkaError::Canceled)?;
        if let Err(e) = committed {
            self.note_refusals(&mut events, &mut changelog).await;
            return Err(e);
        }
        let next = next_offsets(changelog).await?;
        for (_, delivery) in events {
            if let Ok(Err((e, _))) = delivery.await {
                return Err(e);
            }
        }
        Ok(next)
    }

    /// Event `id` is not produced again (an event of a transaction that fails is emitted
    /// again by the rewound engine).
    fn pass_over(&self, id: String) {
        let mut passed = self.passed_over.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: ids passed over long ago are not emitted again anyway.
        if passed.len() >= PASSED_OVER {
            passed.clear();
        }
        if passed.insert(id) {
            self.metrics.transaction_events_dropped.inc();
        }
    }

    /// A failed commit: a record the broker refused for good would fail every attempt
    /// again. An event's is passed over from now on, as the kafka sink does; a changelog
    /// record's stops the engine (the partition's state could not move on without it).
    async fn note_refusals(
        &self,
        events: &mut Vec<(String, rdkafka::producer::DeliveryFuture)>,
        changelog: &mut Vec<rdkafka::producer::DeliveryFuture>,
    ) {
        // The refusal came before the commit failed; the rest are purged with the abort.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        for (id, delivery) in events.drain(..) {
            if let Ok(Ok(Err((e, _)))) = tokio::time::timeout_at(deadline, delivery).await {
                if crate::support::kafka::undeliverable(&e) {
                    tracing::error!(event = %id, error = %e, "event passed over: Kafka can never take it");
                    self.pass_over(id);
                }
            }
        }
        for delivery in changelog.drain(..) {
            if let Ok(Ok(Err((e, _)))) = tokio::time::timeout_at(deadline, delivery).await {
                if crate::support::kafka::undeliverable(&e) {
                    *self.refused.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(format!("the changelog refuses an entry for good: {e}"));
                }
            }
        }
    }

    /// After a failed attempt: abort the transaction, or, if the producer is fenced or
    /// failed for good, make a new one (which aborts what its predecessor left open).
    async fn recover(&self, producer: Arc<FutureProducer>, error: KafkaError) -> TxnError {
        let fatal = match &error {
            KafkaError::Transaction(e) => e.is_fatal(),
            _ => false,
        };
        let aborted = match fatal {
            true => false,
            false => {
                let p = producer.clone();
                tokio::task::spawn_blocking(move || p.abort_transaction(TXN_TIMEOUT))
                    .await
                    .is_ok_and(|r| r.is_ok())
            }
        };
        if !aborted {
            let client = self.client.clone();
            match tokio::task::spawn_blocking(move || init(&client)).await {
                Ok(Ok(fresh)) => {
                    let old = std::mem::replace(
                        &mut *self.producer.lock().unwrap_or_else(|p| p.into_inner()),
                        Arc::new(fresh),
                    );
                    drop(producer);
                    // Destroying a producer flushes and joins its threads: off the workers.
                    let _ = tokio::task::spawn_blocking(move || drop(old)).await;
                    tracing::warn!(error = %error, "transactional producer made anew");
                }
                Ok(Err(e)) => return e,
                Err(e) => return TxnError::Fatal(e.to_string()),
            }
        }
        TxnError::Aborted(error.to_string())
    }
}

/// The wait before the next transaction after `aborts` in a row: none, then 50 ms,
/// doubling up to 5 s.
fn abort_wait(aborts: u32) -> Duration {
    match aborts {
        0 => Duration::ZERO,
        n => ABORT_BACKOFF.saturating_mul(1 << (n - 1).min(7)).min(ABORT_BACKOFF_MAX),
    }
}

fn init(client: &ClientConfig) -> Result<FutureProducer, TxnError> {
    let producer: FutureProducer =
        client.create().map_err(|e| TxnError::Fatal(format!("creating it: {e}")))?;
    producer
        .init_transactions(TXN_TIMEOUT)
        .map_err(|e| TxnError::Fatal(format!("initialising transactions: {e}")))?;
    Ok(producer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the first abort waited 100 ms and the waits stopped at 3.2 s.
    #[test]
    fn aborts_in_a_row_back_off_from_50_ms_doubling_to_5_s() {
        let waits: Vec<u128> = (0..10).map(|n| abort_wait(n).as_millis()).collect();
        assert_eq!(waits, [0, 50, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(abort_wait(u32::MAX), ABORT_BACKOFF_MAX);
    }
}
