//! InitProducerId (22) v0–v4: a producer id and epoch for an idempotent (or transactional)
//! producer.

use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::{ApiKey, ProducerId};

use crate::api::is_flexible;
use crate::error::DecodeError;
use crate::wire::Reader;

/// The producer id (and, as an i16, the epoch) of a producer that has none yet.
pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitProducerIdRequest {
    /// None for an idempotent producer without transactions.
    pub transactional_id: Option<String>,
    pub transaction_timeout_ms: i32,
    /// v3+: the id and epoch the producer has, to bump its epoch (KIP-360);
    /// [`NO_PRODUCER_ID`] / [`NO_PRODUCER_EPOCH`] for a new one, and always before v3.
    pub producer_id: i64,
    pub producer_epoch: i16,
}

pub fn decode(reader: &mut Reader<'_>, version: i16) -> Result<InitProducerIdRequest, DecodeError> {
    let flexible = is_flexible(ApiKey::InitProducerId, version);
    let transactional_id = reader
        .nullable_string_v(flexible, "transactional id")?
        .map(str::to_string);
    let transaction_timeout_ms = reader.i32("transaction timeout")?;
    let (producer_id, producer_epoch) = if version >= 3 {
        (reader.i64("producer id")?, reader.i16("producer epoch")?)
    } else {
        (NO_PRODUCER_ID, NO_PRODUCER_EPOCH)
    };
    reader.tagged_fields_v(flexible)?;
    Ok(InitProducerIdRequest {
        transactional_id,
        transaction_timeout_ms,
        producer_id,
        producer_epoch,
    })
}

/// On an error Kafka answers [`NO_PRODUCER_ID`] and [`NO_PRODUCER_EPOCH`].
pub fn response(error_code: i16, producer_id: i64, producer_epoch: i16) -> InitProducerIdResponse {
    InitProducerIdResponse::default()
        .with_error_code(error_code)
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(producer_epoch)
}
