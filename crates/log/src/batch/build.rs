//! Building uncompressed RecordBatch v2 bytes.
//!
//! The log never needs this on its append path: clients build batches. It exists for the
//! broker's own records (internal topics), for `weir bench`'s lean mode, and for tests.

use super::{HEADER_BYTES, LOG_OVERHEAD_BYTES, OFF_ATTRIBUTES, OFF_CRC};

/// Accumulates records and produces one uncompressed v2 batch with a valid CRC.
pub struct BatchBuilder {
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    attributes: i16,
    records: Vec<u8>,
    count: i32,
}

impl BatchBuilder {
    /// A builder whose record timestamps are stored as deltas from `base_timestamp`.
    pub fn new(base_timestamp: i64) -> BatchBuilder {
        BatchBuilder {
            base_timestamp,
            max_timestamp: base_timestamp,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            attributes: 0,
            records: Vec::new(),
            count: 0,
        }
    }

    /// Marks the batch as coming from an idempotent producer.
    pub fn producer(mut self, id: i64, epoch: i16, base_sequence: i32) -> BatchBuilder {
        self.producer_id = id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Appends one record with no headers.
    pub fn push(&mut self, key: Option<&[u8]>, value: Option<&[u8]>, timestamp: i64) {
        self.push_with_headers(key, value, &[], timestamp);
    }

    /// Appends one record; a header's value may be null.
    pub fn push_with_headers(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
        timestamp: i64,
    ) {
        let mut body =
            Vec::with_capacity(16 + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len));
        body.push(0); // record attributes: unused in v2
        put_varlong(&mut body, timestamp - self.base_timestamp);
        put_varlong(&mut body, i64::from(self.count));
        put_bytes(&mut body, key);
        put_bytes(&mut body, value);
        put_varlong(&mut body, headers.len() as i64);
        for (name, value) in headers {
            put_bytes(&mut body, Some(name.as_bytes()));
            put_bytes(&mut body, *value);
        }
        put_varlong(&mut self.records, body.len() as i64);
        self.records.extend_from_slice(&body);
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp);
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The finished batch, base offset 0 and leader epoch -1 (the log stamps both).
    pub fn build(&self) -> Vec<u8> {
        let size = HEADER_BYTES + self.records.len();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&0i64.to_be_bytes());
        out.extend_from_slice(&((size - LOG_OVERHEAD_BYTES) as i32).to_be_bytes());
        out.extend_from_slice(&(-1i32).to_be_bytes());
        out.push(2);
        out.extend_from_slice(&0u32.to_be_bytes()); // CRC, filled in below
        out.extend_from_slice(&self.attributes.to_be_bytes());
        out.extend_from_slice(&(self.count - 1).max(0).to_be_bytes());
        out.extend_from_slice(&self.base_timestamp.to_be_bytes());
        out.extend_from_slice(&self.max_timestamp.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.producer_epoch.to_be_bytes());
        out.extend_from_slice(&self.base_sequence.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.records);
        let crc = crc32c::crc32c(&out[OFF_ATTRIBUTES..]);
        out[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        out
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varlong(out, -1),
        Some(bytes) => {
            put_varlong(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
    }
}

/// Zig-zag varint, as Kafka's records use for both varint and varlong fields.
fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varlong_matches_kafka_zigzag_examples() {
        let cases: [(i64, &[u8]); 5] = [
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (63, &[0x7e]),
            (64, &[0x80, 0x01]),
        ];
        for (value, expected) in cases {
            let mut out = Vec::new();
            put_varlong(&mut out, value);
            assert_eq!(out, expected, "value {value}");
        }
    }

    #[test]
    fn a_single_record_batch_has_the_expected_layout() {
        let mut builder = BatchBuilder::new(10).producer(42, 3, 7);
        builder.push(Some(b"k"), Some(b"v"), 12);
        let bytes = builder.build();
        // record: len, attrs 0, tsDelta 2 -> 4, offsetDelta 0, key len 1 -> 2, 'k', value len 2, 'v', headers 0
        assert_eq!(
            &bytes[HEADER_BYTES..],
            &[0x10, 0, 4, 0, 2, b'k', 2, b'v', 0][..]
        );
        let header = super::super::validate(&bytes).expect("valid");
        assert_eq!(header.producer_id, 42);
        assert_eq!(header.producer_epoch, 3);
        assert_eq!(header.base_sequence, 7);
        assert_eq!(header.max_timestamp, 12);
    }
}
