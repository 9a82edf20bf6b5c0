//! What herald's Kafka producers share: the errors no retry cures, waiting for room in
//! librdkafka's queue, and the offsets a batch of deliveries reached.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

/// Refusals that no retry can cure: the record is reported and passed over.
pub fn undeliverable(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed
        )
    )
}

/// Enqueues `record`, waiting while the producer's queue is full.
pub async fn send<K, P>(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, K, P>,
) -> Result<DeliveryFuture, KafkaError>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                // librdkafka's own queue is full: let its threads drain it.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Once every delivery is done: each partition's next offset after what was delivered.
pub async fn next_offsets(
    deliveries: impl IntoIterator<Item = DeliveryFuture>,
) -> Result<Vec<(i32, u64)>, KafkaError> {
    let mut next: Vec<(i32, u64)> = Vec::new();
    for delivery in deliveries {
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
    Ok(next)
}
