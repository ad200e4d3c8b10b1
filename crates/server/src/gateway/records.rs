//! Records as JSON: what a REST produce sends, turned into a RecordBatch; the batches a fetch
//! reads, turned into JSON records.
//!
//! Keys, values and header values are strings in the request's `encoding`: `base64` (the
//! default, safe for any bytes) or `utf8` (text; bytes that are not UTF-8 are replaced by
//! U+FFFD when read). `null` is a null key or value. Header keys are strings.

use base64::Engine;
use serde_json::{json, Map, Value};
use weir_log::batch::build::BatchBuilder;
use weir_log::batch::{records, Batches};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Encoding {
    Base64,
    Utf8,
}

impl Encoding {
    pub fn parse(name: Option<&str>) -> Result<Encoding, String> {
        match name {
            None | Some("base64") => Ok(Encoding::Base64),
            Some("utf8") | Some("utf-8") => Ok(Encoding::Utf8),
            Some(other) => Err(format!(
                "encoding {other:?}: expected \"base64\" or \"utf8\""
            )),
        }
    }

    pub fn encode(self, bytes: Option<&[u8]>) -> Value {
        match (bytes, self) {
            (None, _) => Value::Null,
            (Some(b), Encoding::Base64) => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(b))
            }
            (Some(b), Encoding::Utf8) => Value::String(String::from_utf8_lossy(b).into_owned()),
        }
    }

    fn decode(self, value: Option<&Value>, what: &str) -> Result<Option<Vec<u8>>, String> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => match self {
                Encoding::Utf8 => Ok(Some(s.as_bytes().to_vec())),
                Encoding::Base64 => base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map(Some)
                    .map_err(|e| {
                        format!(
                            "{what} is not base64 ({e}); set \"encoding\": \"utf8\" to send text"
                        )
                    }),
            },
            Some(_) => Err(format!("{what} must be a string or null")),
        }
    }
}

/// One record of a produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub partition: Option<i32>,
    pub timestamp: Option<i64>,
}

/// Reads a produce body: `{"encoding"?, "records": [{"key"?, "value"?, "headers"?,
/// "partition"?, "timestamp"?}, ...]}`. The error names the field that is wrong.
pub(crate) fn parse_produce(body: &[u8]) -> Result<Vec<NewRecord>, String> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let doc = doc.as_object().ok_or("the body must be a JSON object")?;
    for key in doc.keys() {
        if key != "records" && key != "encoding" {
            return Err(format!(
                "unknown field {key:?} (expected \"records\", \"encoding\")"
            ));
        }
    }
    parse_records(doc)
}

/// The `encoding` and `records` fields of a produce request (a REST body or a WebSocket
/// message; other fields are the caller's).
pub(crate) fn parse_records(doc: &Map<String, Value>) -> Result<Vec<NewRecord>, String> {
    let encoding = Encoding::parse(match doc.get("encoding") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err("encoding must be a string".into()),
    })?;
    let list = doc
        .get("records")
        .and_then(Value::as_array)
        .ok_or("\"records\" must be an array of records")?;
    if list.is_empty() {
        return Err("\"records\" is empty".into());
    }
    list.iter()
        .enumerate()
        .map(|(i, record)| parse_record(record, encoding).map_err(|e| format!("records[{i}]: {e}")))
        .collect()
}

fn parse_record(record: &Value, encoding: Encoding) -> Result<NewRecord, String> {
    let record = record.as_object().ok_or("a record must be a JSON object")?;
    for key in record.keys() {
        if !["key", "value", "headers", "partition", "timestamp"].contains(&key.as_str()) {
            return Err(format!(
                "unknown field {key:?} (expected key, value, headers, partition, timestamp)"
            ));
        }
    }
    let partition = match record.get("partition") {
        None | Some(Value::Null) => None,
        Some(p) => Some(
            p.as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .filter(|p| *p >= 0)
                .ok_or("partition must be a non-negative integer")?,
        ),
    };
    let timestamp = match record.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(t) => Some(
            t.as_i64()
                .filter(|t| *t >= 0)
                .ok_or("timestamp must be milliseconds since the epoch")?,
        ),
    };
    let headers = match record.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(j, h)| {
                let h = h.as_object().ok_or_else(|| {
                    format!("headers[{j}] must be {{\"key\": ..., \"value\": ...}}")
                })?;
                let key = h
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("headers[{j}].key must be a string"))?;
                let value = encoding.decode(h.get("value"), &format!("headers[{j}].value"))?;
                Ok((key.to_string(), value))
            })
            .collect::<Result<_, String>>()?,
        Some(_) => return Err("headers must be an array of {\"key\", \"value\"}".into()),
    };
    Ok(NewRecord {
        key: encoding.decode(record.get("key"), "key")?,
        value: encoding.decode(record.get("value"), "value")?,
        headers,
        partition,
        timestamp,
    })
}

/// One uncompressed batch of `records` (timestamps default to `now_ms`).
pub(crate) fn batch_of(records: &[&NewRecord], now_ms: i64) -> Vec<u8> {
    let base = records
        .iter()
        .map(|r| r.timestamp.unwrap_or(now_ms))
        .min()
        .unwrap_or(now_ms);
    let mut builder = BatchBuilder::new(base);
    for record in records {
        let headers: Vec<(&str, Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        builder.push_with_headers(
            record.key.as_deref(),
            record.value.as_deref(),
            &headers,
            record.timestamp.unwrap_or(now_ms),
        );
    }
    builder.build()
}

/// What a fetch decoded.
pub(crate) struct Decoded {
    pub records: Vec<Value>,
    /// The offset after the last record read (`from` when none was).
    pub next_offset: i64,
}

/// The records at or after `from` in `bytes` (whole batches as the log stores them), as
/// JSON, at most `max_records`. Control batches (transaction markers) are skipped. Batches the
/// log hands out were checked when written; a malformed one is still an error, not a panic.
///
/// `budget` bounds the work, whatever the batches hold: the bytes decompressed over all
/// batches, and the key, value and header bytes put out (at least one record goes out; the
/// rest waits for the next read, from `next_offset`).
pub(crate) fn decode(
    bytes: &[u8],
    from: i64,
    max_records: usize,
    encoding: Encoding,
    budget: usize,
) -> Result<Decoded, String> {
    let mut out = Vec::new();
    let mut next_offset = from;
    let mut decompressed_total = 0usize;
    let mut content = 0usize;
    for batch in Batches::new(bytes) {
        let (at, header) = batch.map_err(|e| format!("a stored batch is malformed: {e}"))?;
        if header.is_control() {
            next_offset = next_offset.max(header.last_offset() + 1);
            continue;
        }
        let log_append_time = header.attributes & 0x08 != 0;
        let whole = &bytes[at..at + header.size()];
        let decompressed;
        let iter = if header.compression() == 0 {
            records::records(whole).map_err(|e| e.to_string())?
        } else {
            if !out.is_empty() && decompressed_total >= budget {
                break;
            }
            decompressed = crate::codecs::decompress(
                header.compression(),
                &whole[weir_log::batch::HEADER_BYTES..],
                budget,
            )?;
            decompressed_total += decompressed.len();
            records::records_in(&decompressed, header.record_count)
        };
        // Offset deltas come from the producer: they must rise within the batch's range, or
        // a reader would be sent past records (or past the log end).
        let mut previous_delta = -1;
        for record in iter {
            let record = record.map_err(|e| format!("a stored record is malformed: {e}"))?;
            if record.offset_delta <= previous_delta
                || record.offset_delta > header.last_offset_delta
            {
                return Err(format!(
                    "a stored batch at offset {} has a record with offset delta {} (after {}, \
                     last {})",
                    header.base_offset,
                    record.offset_delta,
                    previous_delta,
                    header.last_offset_delta
                ));
            }
            previous_delta = record.offset_delta;
            let offset = header.base_offset + i64::from(record.offset_delta);
            if offset < from {
                continue;
            }
            let size = record.key.map_or(0, <[u8]>::len)
                + record.value.map_or(0, <[u8]>::len)
                + record
                    .headers()
                    .map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len))
                    .sum::<usize>();
            if out.len() >= max_records || (!out.is_empty() && content + size > budget) {
                return Ok(Decoded {
                    records: out,
                    next_offset,
                });
            }
            content += size;
            let timestamp = if log_append_time {
                header.max_timestamp
            } else {
                header
                    .first_timestamp
                    .saturating_add(record.timestamp_delta)
            };
            let headers: Vec<Value> = record
                .headers()
                .map(|(k, v)| {
                    json!({"key": String::from_utf8_lossy(k), "value": encoding.encode(v)})
                })
                .collect();
            let mut fields = Map::new();
            fields.insert("offset".into(), json!(offset));
            fields.insert("timestamp".into(), json!(timestamp));
            fields.insert("key".into(), encoding.encode(record.key));
            fields.insert("value".into(), encoding.encode(record.value));
            fields.insert("headers".into(), Value::Array(headers));
            out.push(Value::Object(fields));
            next_offset = offset + 1;
        }
        next_offset = next_offset.max(header.last_offset() + 1);
    }
    Ok(Decoded {
        records: out,
        next_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produced_records_decode_back() {
        let body = br#"{"encoding":"utf8","records":[
            {"key":"k1","value":"v1","headers":[{"key":"h","value":"x"},{"key":"n","value":null}]},
            {"value":"v2","timestamp":1700000000000,"partition":2},
            {"key":null,"value":null}
        ]}"#;
        let parsed = parse_produce(body).expect("valid");
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[1].partition, Some(2));
        let refs: Vec<&NewRecord> = parsed.iter().collect();
        let mut batch = batch_of(&refs, 1_700_000_000_500);
        weir_log::batch::stamp_base_offset(&mut batch, 40);
        let decoded = decode(&batch, 41, 100, Encoding::Base64, 1 << 20).expect("decodes");
        assert_eq!(decoded.next_offset, 43);
        assert_eq!(decoded.records.len(), 2);
        assert_eq!(decoded.records[0]["offset"], 41);
        assert_eq!(decoded.records[0]["value"], "djI="); // base64 of v2
        assert_eq!(decoded.records[0]["timestamp"], 1_700_000_000_000i64);
        assert_eq!(decoded.records[1]["key"], Value::Null);
        let all = decode(&batch, 0, 100, Encoding::Utf8, 1 << 20).expect("decodes");
        assert_eq!(all.records[0]["key"], "k1");
        assert_eq!(
            all.records[0]["headers"],
            json!([{"key":"h","value":"x"},{"key":"n","value":null}])
        );
        assert_eq!(all.records[0]["timestamp"], 1_700_000_000_500i64);
        let first = decode(&batch, 0, 1, Encoding::Utf8, 1 << 20).expect("decodes");
        assert_eq!((first.records.len(), first.next_offset), (1, 41));
        // A budget smaller than the records: one goes out, the next read goes on from it.
        let small = decode(&batch, 0, 100, Encoding::Utf8, 3).expect("decodes");
        assert_eq!((small.records.len(), small.next_offset), (1, 41));
    }

    #[test]
    fn offset_deltas_that_do_not_rise_within_the_batch_are_refused() {
        let mut builder = BatchBuilder::new(0);
        builder.push(None, Some(b"a"), 0);
        builder.push(None, Some(b"b"), 0);
        let batch = builder.build();
        // The second record's offset delta (1) is its 4th byte: length, attributes,
        // timestamp delta, offset delta. Make it 0 (zig-zag 0) and re-seal the CRC.
        let first_length = batch[weir_log::batch::HEADER_BYTES] as usize / 2; // zig-zag
        let second = weir_log::batch::HEADER_BYTES + 1 + first_length;
        let mut bad = batch.clone();
        assert_eq!(bad[second + 3], 2, "zig-zag 1");
        bad[second + 3] = 0;
        let crc = crc32c::crc32c(&bad[21..]);
        bad[17..21].copy_from_slice(&crc.to_be_bytes());
        let error = decode(&bad, 0, 10, Encoding::Utf8, 1 << 20)
            .err()
            .expect("refused");
        assert!(error.contains("offset delta 0"), "{error}");
        assert_eq!(
            decode(&batch, 0, 10, Encoding::Utf8, 1 << 20).map(|d| d.next_offset),
            Ok(2)
        );
    }

    #[test]
    fn bad_bodies_name_what_is_wrong() {
        let cases: [(&[u8], &str); 8] = [
            (b"{", "not JSON"),
            (b"[]", "JSON object"),
            (br#"{"records":[]}"#, "empty"),
            (
                br#"{"records":[{"value":"%%%"}]}"#,
                "records[0]: value is not base64",
            ),
            (br#"{"records":[{"value":1}]}"#, "value must be a string"),
            (br#"{"records":[{"partition":-1}]}"#, "partition must be"),
            (br#"{"records":[{"valu":"x"}]}"#, "unknown field \"valu\""),
            (br#"{"encoding":"hex","records":[{}]}"#, "encoding \"hex\""),
        ];
        for (body, expected) in cases {
            let error = parse_produce(body).expect_err("refused");
            assert!(
                error.contains(expected),
                "{error:?} should say {expected:?}"
            );
        }
    }
}
