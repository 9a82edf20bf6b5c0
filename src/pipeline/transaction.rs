//! Exactly once (DESIGN §10): one transactional producer per instance puts a commit's events
//! for the kafka sinks, its changelog records and its input offsets, over every partition it
//! owns, in one Kafka transaction. A read_committed consumer of the events topic then sees
//! each event once, even across crashes and rebalances: a former owner's transaction is
//! fenced by the group's generation (the offsets go with fresh group metadata), and an
//! aborted one leaves nothing behind, while the partitions are read again from their last
//! committed state (see [`Ownership::rewind`](super::ownership::Ownership::rewind)).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use rdkafka::message::OwnedHeaders;

use super::input::Owned;
use crate::model::ClusterEvent;
use crate::state::Entry;
use crate::telemetry::metrics::Metrics;

/// How long the blocking transaction calls may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);
/// The wait before a transaction after one abort; it doubles with each abort in a row.
const ABORT_BACKOFF: Duration = Duration::from_millis(50);
const ABORT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One partition's share of a transaction.
pub struct TxnShard {
    pub partition: i32,
    /// Its changelog records, the `#input` entry among them.
    pub entries: Vec<Entry>,
    /// The input partition's next offset: what the group commits for it.
    pub input: u64,
    /// The events its engine emitted, with their JSON lines.
    pub events: Vec<(Arc<str>, Arc<ClusterEvent>)>,
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
                "transactional id {transactional_id:?}: no hostname to make it unique; set transactional_id"
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
        })
    }

    fn producer(&self) -> Arc<FutureProducer> {
        self.producer.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// One transaction: every shard's changelog records and kafka events, and the input
    /// offsets with the group's metadata. Gives each changelog partition's next offset.
    pub async fn commit(&self, shards: &[TxnShard]) -> Result<Vec<(i32, u64)>, TxnError> {
        // Aborts in a row wait longer each time: a cause that stays (a coordinator away, an
        // instance fencing this one) would otherwise spin the rewind.
        let aborts = self.aborts.load(Ordering::Acquire);
        if aborts > 0 {
            let wait = ABORT_BACKOFF.saturating_mul(1 << aborts.min(6)).min(ABORT_BACKOFF_MAX);
            tokio::time::sleep(wait).await;
        }
        let producer = self.producer();
        let done = self.attempt(&producer, shards).await;
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
            for (key, value) in &shard.entries {
                let mut record = FutureRecord::<[u8], [u8]>::to(&self.changelog)
                    .partition(shard.partition)
                    .key(key);
                if let Some(v) = value {
                    record = record.payload(v.as_slice());
                }
                changelog.push(send(producer, record).await?);
            }
            for (json, event) in &shard.events {
                for r in (self.records)(event, json) {
                    let record = FutureRecord::<str, str>::to(&r.topic)
                        .key(&r.key)
                        .payload(&r.body)
                        .headers(r.headers);
                    match send(producer, record).await {
                        Ok(delivery) => events.push(delivery),
                        // As the kafka sink does: an event Kafka can never take is reported
                        // and passed over; aborting for it would abort for ever.
                        Err(e) if crate::sinks::kafka::undeliverable(&e) => {
                            tracing::error!(event = %event.id, topic = %r.topic, error = %e, "event passed over: Kafka can never take it");
                            self.metrics.transaction_events_dropped.inc();
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            let next = Offset::Offset(i64::try_from(shard.input).unwrap_or(i64::MAX));
            offsets.add_partition_offset(&self.input, shard.partition, next)?;
        }
        let (p, owned) = (producer.clone(), self.owned.clone());
        tokio::task::spawn_blocking(move || {
            // Fresh metadata, read now: it carries the generation the group fences a former
            // member's offsets with, which moves as soon as a rebalance begins.
            let group = owned.group().ok_or(KafkaError::Canceled)?;
            p.send_offsets_to_transaction(&offsets, &group, TXN_TIMEOUT)?;
            p.commit_transaction(TXN_TIMEOUT)
        })
        .await
        .map_err(|_| KafkaError::Canceled)??;
        let mut next: Vec<(i32, u64)> = Vec::new();
        for delivery in changelog {
            let d = match delivery.await {
                Ok(Ok(d)) => d,
                Ok(Err((e, _))) => return Err(e),
                Err(_) => return Err(KafkaError::Canceled),
            };
            let after = u64::try_from(d.offset).unwrap_or_default() + 1;
            match next.iter_mut().find(|(p, _)| *p == d.partition) {
                Some((_, n)) => *n = (*n).max(after),
                None => next.push((d.partition, after)),
            }
        }
        for delivery in events {
            if let Ok(Err((e, _))) = delivery.await {
                return Err(e);
            }
        }
        Ok(next)
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

fn init(client: &ClientConfig) -> Result<FutureProducer, TxnError> {
    let producer: FutureProducer =
        client.create().map_err(|e| TxnError::Fatal(format!("creating it: {e}")))?;
    producer
        .init_transactions(TXN_TIMEOUT)
        .map_err(|e| TxnError::Fatal(format!("initialising transactions: {e}")))?;
    Ok(producer)
}

/// Enqueues `record`, waiting while the producer's queue is full.
async fn send<K, P>(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, K, P>,
) -> Result<rdkafka::producer::DeliveryFuture, KafkaError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}
