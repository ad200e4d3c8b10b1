//! DescribeClientQuotas (48) v0–v1 and AlterClientQuotas (49) v0–v1: client quotas by entity.
//! Entities are lists of (type, name) pairs; a null name is the type's default entity.

use kafka_protocol::messages::alter_client_quotas_response::{
    AlterClientQuotasResponse, EntityData as AlterEntity, EntryData as AlterEntry,
};
use kafka_protocol::messages::describe_client_quotas_response::{
    DescribeClientQuotasResponse, EntityData, EntryData, ValueData,
};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::StrBytes;

use crate::api::is_flexible;
use crate::error::DecodeError;
use crate::wire::Reader;

/// How a DescribeClientQuotas component matches entity names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// This name exactly.
    Exact(String),
    /// The default entity of the type (a null name).
    Default,
    /// Any entity of the type, default included.
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeClientQuotasRequest {
    /// (entity type, match)
    pub components: Vec<(String, Match)>,
    /// Only entities made of exactly these component types.
    pub strict: bool,
}

/// An entity: (type, name or None for the default).
pub type Entity = Vec<(String, Option<String>)>;

/// A quota value as sent (compared bit for bit, so requests can be compared whole).
#[derive(Debug, Clone, Copy)]
pub struct QuotaValue(pub f64);

impl PartialEq for QuotaValue {
    fn eq(&self, other: &QuotaValue) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}
impl Eq for QuotaValue {}

/// One change: (key, value, remove).
pub type QuotaOp = (String, QuotaValue, bool);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterClientQuotasRequest {
    pub entries: Vec<(Entity, Vec<QuotaOp>)>,
    pub validate_only: bool,
}

pub fn decode_describe(
    reader: &mut Reader<'_>,
    version: i16,
) -> Result<DescribeClientQuotasRequest, DecodeError> {
    let flexible = is_flexible(ApiKey::DescribeClientQuotas, version);
    let n = reader.array_len_v(flexible, "components")?.unwrap_or(0);
    let mut components = Vec::with_capacity(n);
    for _ in 0..n {
        let entity_type = reader.string_v(flexible, "entity type")?.to_string();
        let match_type = reader.i8("match type")?;
        let name = reader.nullable_string_v(flexible, "match")?;
        reader.tagged_fields_v(flexible)?;
        let matched = match (match_type, name) {
            (0, Some(name)) => Match::Exact(name.to_string()),
            (1, _) => Match::Default,
            (2, _) => Match::Any,
            _ => {
                return Err(DecodeError::Invalid {
                    what: "match type",
                    reason: "not 0 (exact, with a name), 1 (default) or 2 (any)",
                })
            }
        };
        components.push((entity_type, matched));
    }
    let strict = reader.bool("strict")?;
    reader.tagged_fields_v(flexible)?;
    Ok(DescribeClientQuotasRequest { components, strict })
}

pub fn decode_alter(
    reader: &mut Reader<'_>,
    version: i16,
) -> Result<AlterClientQuotasRequest, DecodeError> {
    let flexible = is_flexible(ApiKey::AlterClientQuotas, version);
    let n = reader.array_len_v(flexible, "entries")?.unwrap_or(0);
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let parts = reader.array_len_v(flexible, "entity")?.unwrap_or(0);
        let mut entity = Vec::with_capacity(parts);
        for _ in 0..parts {
            let entity_type = reader.string_v(flexible, "entity type")?.to_string();
            let name = reader.nullable_string_v(flexible, "entity name")?;
            reader.tagged_fields_v(flexible)?;
            entity.push((entity_type, name.map(str::to_string)));
        }
        let count = reader.array_len_v(flexible, "ops")?.unwrap_or(0);
        let mut ops = Vec::with_capacity(count);
        for _ in 0..count {
            let key = reader.string_v(flexible, "quota key")?.to_string();
            let value = QuotaValue(reader.f64("quota value")?);
            let remove = reader.bool("remove")?;
            reader.tagged_fields_v(flexible)?;
            ops.push((key, value, remove));
        }
        reader.tagged_fields_v(flexible)?;
        entries.push((entity, ops));
    }
    let validate_only = reader.bool("validate only")?;
    reader.tagged_fields_v(flexible)?;
    Ok(AlterClientQuotasRequest {
        entries,
        validate_only,
    })
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// An entity and its quota (key, value)s.
pub type EntityQuotas = (Entity, Vec<(String, f64)>);

/// A DescribeClientQuotas answer: the entities found, with their (key, value)s.
pub fn describe_response(found: Vec<EntityQuotas>) -> DescribeClientQuotasResponse {
    DescribeClientQuotasResponse::default().with_entries(Some(
        found
            .into_iter()
            .map(|(entity, values)| {
                EntryData::default()
                    .with_entity(
                        entity
                            .iter()
                            .map(|(t, n)| {
                                EntityData::default()
                                    .with_entity_type(text(t))
                                    .with_entity_name(n.as_deref().map(text))
                            })
                            .collect(),
                    )
                    .with_values(
                        values
                            .into_iter()
                            .map(|(k, v)| ValueData::default().with_key(text(&k)).with_value(v))
                            .collect(),
                    )
            })
            .collect(),
    ))
}

/// An AlterClientQuotas answer: per entity, an error code and message (0 and None if applied).
pub fn alter_response(results: Vec<(Entity, i16, Option<String>)>) -> AlterClientQuotasResponse {
    AlterClientQuotasResponse::default().with_entries(
        results
            .into_iter()
            .map(|(entity, code, message)| {
                AlterEntry::default()
                    .with_error_code(code)
                    .with_error_message(message.as_deref().map(text))
                    .with_entity(
                        entity
                            .iter()
                            .map(|(t, n)| {
                                AlterEntity::default()
                                    .with_entity_type(text(t))
                                    .with_entity_name(n.as_deref().map(text))
                            })
                            .collect(),
                    )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{
        alter_client_quotas_request as alter, describe_client_quotas_request as describe,
        AlterClientQuotasRequest as KAlter, DescribeClientQuotasRequest as KDescribe,
    };
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn both_requests_decode_as_kafka_protocol_encodes_them() {
        for version in 0..=1 {
            let k = KDescribe::default()
                .with_components(vec![
                    describe::ComponentData::default()
                        .with_entity_type(text("client-id"))
                        .with_match_type(0)
                        .with_match(Some(text("billing"))),
                    describe::ComponentData::default()
                        .with_entity_type(text("client-id"))
                        .with_match_type(2),
                ])
                .with_strict(true);
            let mut buf = bytes::BytesMut::new();
            k.encode(&mut buf, version).unwrap();
            let got = decode_describe(&mut Reader::new(&buf), version).unwrap();
            assert_eq!(
                got.components,
                vec![
                    ("client-id".to_string(), Match::Exact("billing".into())),
                    ("client-id".to_string(), Match::Any)
                ]
            );
            assert!(got.strict);

            let k = KAlter::default()
                .with_entries(vec![alter::EntryData::default()
                    .with_entity(vec![alter::EntityData::default()
                        .with_entity_type(text("client-id"))
                        .with_entity_name(None)])
                    .with_ops(vec![alter::OpData::default()
                        .with_key(text("producer_byte_rate"))
                        .with_value(1048576.0)
                        .with_remove(false)])])
                .with_validate_only(true);
            let mut buf = bytes::BytesMut::new();
            k.encode(&mut buf, version).unwrap();
            let got = decode_alter(&mut Reader::new(&buf), version).unwrap();
            assert_eq!(
                got.entries,
                vec![(
                    vec![("client-id".to_string(), None)],
                    vec![(
                        "producer_byte_rate".to_string(),
                        QuotaValue(1048576.0),
                        false
                    )]
                )]
            );
            assert!(got.validate_only);
        }
    }

    #[test]
    fn a_bad_match_type_is_an_error_not_a_panic() {
        let k = KDescribe::default().with_components(vec![describe::ComponentData::default()
            .with_entity_type(text("client-id"))
            .with_match_type(0)
            .with_match(None)]);
        let mut buf = bytes::BytesMut::new();
        k.encode(&mut buf, 0).unwrap();
        assert!(decode_describe(&mut Reader::new(&buf), 0).is_err());
    }
}
