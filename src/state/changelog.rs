//! The changelog topic (DESIGN §10): where the engine of each partition of a grouped kafka
//! source keeps its entries, so that the partition's next owner restores it.
//!
//! Partition `p` of the changelog holds partition `p`'s engine: each commit produces the
//! entries it changed (key = entry key, value = entry, a tombstone for a removed one) and the
//! input partition's next offset under [`INPUT_KEY`], which tells the next owner which input
//! records the entries already reflect. The topic is compacted: the latest value of each key
//! is all a restore needs. The local store is a cache of it: it records the changelog offset
//! it reflects, and a restore reads only from there.

use std::future::Future;
use std::pin::Pin;

use super::{Entry, StateError};

/// The key of the entry that holds the input partition's next offset (big-endian `u64`):
/// no engine entry starts with `#`.
pub const INPUT_KEY: &[u8] = b"#input";

/// A changelog partition read from an offset to its end.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The entries, in the order they were produced.
    pub entries: Vec<Entry>,
    /// The offset after the last record read.
    pub next: u64,
    /// The offset asked for is no longer in the partition (compacted or deleted away, or a
    /// topic made anew): this is the partition from its start, and a cache of it is void.
    pub from_start: bool,
}

/// Resolves, once Kafka holds every record, to each partition's next offset.
pub type Appended = Pin<Box<dyn Future<Output = Result<Vec<(i32, u64)>, StateError>> + Send>>;

pub trait Changelog: Send + Sync {
    /// Produces each partition's entries to its changelog partition, in order.
    fn append(&self, shards: Vec<(i32, Vec<Entry>)>) -> Appended;
    /// Reads changelog partition `partition` from offset `from` to its end. Blocking.
    fn read(&self, partition: i32, from: u64) -> Result<Replayed, StateError>;
    /// The group's committed offset of input partition `partition`, once stable, where the
    /// offsets are committed with the entries (exactly once); `None` otherwise. Blocking.
    fn committed_input(&self, _partition: i32) -> Result<Option<u64>, StateError> {
        Ok(None)
    }
}

#[cfg(feature = "kafka")]
pub use kafka::{record, KafkaChangelog};

#[cfg(feature = "kafka")]
mod kafka {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::message::Message;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{Offset, TopicPartitionList};

    use super::{Appended, Changelog, Entry, Replayed, StateError};
    use crate::support::kafka::{next_offsets, send};

    /// How long a restore may take to read its changelog partition before it fails.
    const READ_LIMIT: Duration = Duration::from_secs(300);
    const METADATA: Duration = Duration::from_secs(30);
    const WATERMARKS: Duration = Duration::from_secs(10);

    pub struct KafkaChangelog {
        producer: FutureProducer,
        topic: Arc<str>,
        /// Reads a partition on its restore, one at a time.
        reader: ClientConfig,
        input: String,
        /// Exactly once: reads the group's committed offsets (stable ones: read_committed).
        committed: Option<ClientConfig>,
    }

    impl KafkaChangelog {
        /// The changelog `topic` of input topic `input`, created compacted with the input's
        /// partition count if it does not exist; refused if it has another count, since a
        /// cluster's entries would then be read by another partition's engine. Blocking.
        pub fn open(client: ClientConfig, topic: &str, input: &str) -> Result<Self, StateError> {
            let fail = |reason: String| StateError::Changelog { topic: topic.into(), reason };
            let count = |consumer: &BaseConsumer, name: &str| -> Result<usize, StateError> {
                let metadata = consumer
                    .fetch_metadata(Some(name), METADATA)
                    .map_err(|e| fail(format!("reading the metadata of topic {name}: {e}")))?;
                Ok(metadata.topics().first().map_or(0, |t| t.partitions().len()))
            };
            let probe: BaseConsumer =
                client.create().map_err(|e| fail(format!("connecting: {e}")))?;
            let partitions = count(&probe, input)?;
            if partitions == 0 {
                return Err(fail(format!(
                    "the input topic {input} has no partitions (does it exist?)"
                )));
            }
            match count(&probe, topic)? {
                0 => create(&client, topic, partitions).map_err(fail)?,
                n if n == partitions => {}
                n => {
                    return Err(fail(format!(
                        "it has {n} partitions and the input topic {input} {partitions}: each input partition's engine lives in the changelog partition of the same number"
                    )))
                }
            }
            let producer = client
                .clone()
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "5")
                .create()
                .map_err(|e| fail(format!("creating its producer: {e}")))?;
            let mut reader = client.clone();
            reader
                .set("group.id", "herald-changelog-restore")
                .set("enable.auto.commit", "false")
                .set("isolation.level", "read_committed")
                .set("enable.partition.eof", "true")
                // A restore waits for nothing that is not there yet.
                .set("fetch.wait.max.ms", "20");
            // A topic just created may show only some of its partitions for a moment; a
            // reader that cached that would wait for the rest until its next refresh.
            let deadline = Instant::now() + METADATA;
            while count(&probe, topic)? < partitions {
                if Instant::now() > deadline {
                    return Err(fail(format!("it does not show its {partitions} partitions")));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(KafkaChangelog {
                producer,
                topic: topic.into(),
                reader,
                input: input.to_string(),
                committed: None,
            })
        }

        /// Exactly once: a restore reads on until the changelog reaches group `group_id`'s
        /// committed offset of the partition, which goes in the same transaction.
        pub fn with_committed_offsets_of(mut self, group_id: &str) -> Self {
            let mut c = self.reader.clone();
            c.set("group.id", group_id);
            self.committed = Some(c);
            self
        }
    }

    fn create(client: &ClientConfig, topic: &str, partitions: usize) -> Result<(), String> {
        let admin: AdminClient<DefaultClientContext> =
            client.create().map_err(|e| format!("connecting: {e}"))?;
        let partitions = i32::try_from(partitions).unwrap_or(i32::MAX);
        // -1: the broker's default replication factor.
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact");
        let opts = AdminOptions::new().operation_timeout(Some(METADATA));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let results = runtime
            .block_on(admin.create_topics([&new], &opts))
            .map_err(|e| format!("creating it: {e}"))?;
        for result in results {
            match result {
                Ok(_) => tracing::info!(topic, partitions, "changelog topic created (compacted)"),
                // Another instance of the group created it a moment ago.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(format!("creating it: {code}")),
            }
        }
        Ok(())
    }

    /// Entry `entry` as a record of changelog partition `partition`: a tombstone for a
    /// removed one.
    pub fn record<'a>(
        topic: &'a str,
        partition: i32,
        entry: &'a Entry,
    ) -> FutureRecord<'a, [u8], [u8]> {
        let (key, value) = entry;
        let record = FutureRecord::<[u8], [u8]>::to(topic).partition(partition).key(key.as_slice());
        match value {
            Some(v) => record.payload(v.as_slice()),
            None => record,
        }
    }

    impl Changelog for KafkaChangelog {
        fn append(&self, shards: Vec<(i32, Vec<Entry>)>) -> Appended {
            let producer = self.producer.clone();
            let topic = self.topic.clone();
            Box::pin(async move {
                let fail =
                    |reason: String| StateError::Changelog { topic: topic.to_string(), reason };
                let producing = |e: KafkaError| fail(format!("producing: {e}"));
                let mut pending = Vec::new();
                for (partition, entries) in &shards {
                    for entry in entries {
                        let record = record(&topic, *partition, entry);
                        pending.push(send(&producer, record).await.map_err(producing)?);
                    }
                }
                next_offsets(pending).await.map_err(producing)
            })
        }

        fn read(&self, partition: i32, from: u64) -> Result<Replayed, StateError> {
            let topic = &*self.topic;
            // A reader of its own per restore: one kept across restores carried what it had
            // fetched, its position and its end of one read into the next read of the same
            // partition, where they could end the read early.
            let result = self
                .reader
                .create_with_context::<_, BaseConsumer<Reader>>(Reader)
                .map_err(|e| format!("creating its reader: {e}"))
                .and_then(|consumer| read(&consumer, topic, partition, from));
            result.map_err(|reason| StateError::Changelog { topic: topic.into(), reason })
        }

        fn committed_input(&self, partition: i32) -> Result<Option<u64>, StateError> {
            let Some(config) = &self.committed else { return Ok(None) };
            let fail =
                |reason: String| StateError::Changelog { topic: self.topic.to_string(), reason };
            // Not a member: a consumer that only asks the coordinator, which waits for a
            // transaction's offsets to be settled before it answers a read_committed one.
            let consumer: BaseConsumer<Reader> = config
                .create_with_context(Reader)
                .map_err(|e| fail(format!("creating its offsets reader: {e}")))?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&self.input, partition);
            let committed = consumer.committed_offsets(tpl, WATERMARKS).map_err(|e| {
                fail(format!("reading the committed offset of {} [{partition}]: {e}", self.input))
            })?;
            let Some(element) = committed.find_partition(&self.input, partition) else {
                return Ok(None);
            };
            element.error().map_err(|e| {
                fail(format!("the committed offset of {} [{partition}]: {e}", self.input))
            })?;
            Ok(element.offset().to_raw().and_then(|o| u64::try_from(o).ok()))
        }
    }

    /// The reader's client: the end of its partition is what it waits for, not an error.
    struct Reader;

    impl rdkafka::ClientContext for Reader {
        fn error(&self, error: KafkaError, reason: &str) {
            if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
                tracing::warn!(error = %error, reason, "changelog reader");
            }
        }
    }

    impl rdkafka::consumer::ConsumerContext for Reader {}

    fn read(
        consumer: &BaseConsumer<Reader>,
        topic: &str,
        partition: i32,
        from: u64,
    ) -> Result<Replayed, String> {
        let mut attempt = 0;
        let (low, high) = loop {
            match consumer.fetch_watermarks(topic, partition, WATERMARKS) {
                Ok(w) => break w,
                // Stale metadata (a leader moved, a partition not yet known): refresh it.
                Err(_) if attempt < 3 => {
                    attempt += 1;
                    let _ = consumer.fetch_metadata(Some(topic), METADATA);
                }
                Err(e) => return Err(format!("partition {partition}: {e}")),
            }
        };
        let (low, high) = (u64::try_from(low).unwrap_or(0), u64::try_from(high).unwrap_or(0));
        let from_start = from < low || from > high;
        let start = if from_start { low } else { from };
        let mut out = Replayed { entries: Vec::new(), next: start, from_start };
        // The end is where a fetch finds nothing more (librdkafka's partition end, at the
        // last stable offset), not only the end ListOffsets gave: a broker was seen to give
        // there the start of its newest batch plus one, which would end a restore before the
        // last records of the last commit appended. So the read goes on to both.
        let mut at_end = false;
        let mut tpl = TopicPartitionList::new();
        let at = Offset::Offset(i64::try_from(start).unwrap_or(i64::MAX));
        tpl.add_partition_offset(topic, partition, at)
            .and_then(|()| consumer.assign(&tpl))
            .map_err(|e| format!("partition {partition}: {e}"))?;
        // Up to the end as it was when the restore began: what comes after is this
        // instance's own, or a former owner's that the group has fenced off.
        let deadline = Instant::now() + READ_LIMIT;
        while Instant::now() < deadline {
            let quiet = match consumer.poll(Duration::from_millis(100)) {
                Some(Err(KafkaError::PartitionEOF(p))) if p == partition => {
                    at_end = true;
                    true
                }
                Some(Err(KafkaError::PartitionEOF(_))) => false,
                Some(Err(e)) => return Err(format!("reading partition {partition}: {e}")),
                Some(Ok(m)) if m.partition() != partition => false,
                Some(Ok(m)) => {
                    out.next = u64::try_from(m.offset()).unwrap_or_default() + 1;
                    if let Some(key) = m.key() {
                        out.entries.push((key.to_vec(), m.payload().map(<[u8]>::to_vec)));
                    }
                    at_end = false;
                    false
                }
                None => true,
            };
            if quiet {
                // Past the last record there may be transaction markers, which are never
                // handed out: the position tells (this reader's own, it read nothing else).
                let position = consumer.position().ok().and_then(|tpl| {
                    let e = tpl.find_partition(topic, partition)?;
                    e.offset().to_raw().and_then(|o| u64::try_from(o).ok())
                });
                if let Some(p) = position {
                    out.next = out.next.max(p);
                }
            }
            if at_end && out.next >= high {
                tracing::info!(
                    topic,
                    partition,
                    from = start,
                    to = out.next,
                    records = out.entries.len(),
                    "changelog partition read"
                );
                return Ok(out);
            }
        }
        Err(format!("reading partition {partition} took longer than {READ_LIMIT:?}"))
    }
}
