//! What the Kafka sink and the exactly-once transactions agree on about Kafka's errors.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

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
