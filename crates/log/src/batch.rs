//! Kafka RecordBatch v2: the 61-byte header, its validation, and walking a buffer of batches.
//!
//! The log stores batches byte for byte as clients send them. It reads only the header: records
//! are never decoded on the append path. The CRC-32C covers `attributes..end`, so the two fields
//! the log stamps (base offset and partition leader epoch) sit outside it and stamping does not
//! invalidate the checksum.
//!
//! ```text
//! offset size field                      offset size field
//!  0     8    base offset                 27    8    first timestamp
//!  8     4    batch length (after this)   35    8    max timestamp
//! 12     4    partition leader epoch      43    8    producer id
//! 16     1    magic (= 2)                 51    2    producer epoch
//! 17     4    crc32c(attributes..end)     53    4    base sequence
//! 21     2    attributes                  57    4    record count
//! 23     4    last offset delta           61    ..   records
//! ```

pub mod build;
pub mod records;

/// Size of the fixed RecordBatch v2 header.
pub const HEADER_BYTES: usize = 61;
/// Bytes before the `batch length` field ends: base offset (8) + batch length (4).
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// The smallest legal value of the `batch length` field: the header without its first 12 bytes.
pub const BATCH_LENGTH_MIN: i32 = (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;

const OFF_BASE_OFFSET: usize = 0;
const OFF_LENGTH: usize = 8;
const OFF_LEADER_EPOCH: usize = 12;
const OFF_MAGIC: usize = 16;
const OFF_CRC: usize = 17;
const OFF_ATTRIBUTES: usize = 21;
const OFF_LAST_OFFSET_DELTA: usize = 23;
const OFF_FIRST_TIMESTAMP: usize = 27;
const OFF_MAX_TIMESTAMP: usize = 35;
const OFF_PRODUCER_ID: usize = 43;
const OFF_PRODUCER_EPOCH: usize = 51;
const OFF_BASE_SEQUENCE: usize = 53;
const OFF_RECORD_COUNT: usize = 57;

/// The compression codec in bits 0..3 of the attributes. Highest codec Kafka defines (zstd).
const COMPRESSION_MAX: u8 = 4;

/// A malformed RecordBatch. Each case names one way the bytes can be wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than the header or the declared length needs. Cheap to detect: the caller may
    /// read more and retry.
    #[error("incomplete batch: {needed} bytes needed, {available} available")]
    Incomplete { needed: usize, available: usize },
    #[error("batch length {length} is below the minimum {BATCH_LENGTH_MIN}")]
    LengthTooSmall { length: i32 },
    #[error("unsupported magic {magic}: only RecordBatch v2 (magic 2) is accepted")]
    UnsupportedMagic { magic: i8 },
    #[error("CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("unknown compression codec {codec}")]
    UnknownCompression { codec: u8 },
    #[error("record count {count} is not positive")]
    NoRecords { count: i32 },
    #[error("last offset delta {last_offset_delta} does not match record count {record_count}")]
    OffsetDeltaMismatch {
        last_offset_delta: i32,
        record_count: i32,
    },
}

/// The decoded fixed header of one batch. Plain data: decoding copies 61 bytes at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// The `batch length` field: bytes that follow it. The whole batch is `12 + length` bytes.
    pub length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Total size of the batch in bytes, header included. (A negative length, possible in a
    /// header that was only decoded, not validated, counts as 0.)
    pub fn size(&self) -> usize {
        LOG_OVERHEAD_BYTES + self.length.max(0) as usize
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Compression codec: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> u8 {
        (self.attributes & 0x07) as u8
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// Decodes the header fields without validating anything but the available length.
    pub fn decode(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < HEADER_BYTES {
            return Err(BatchError::Incomplete {
                needed: HEADER_BYTES,
                available: buf.len(),
            });
        }
        Ok(BatchHeader {
            base_offset: read_i64(buf, OFF_BASE_OFFSET),
            length: read_i32(buf, OFF_LENGTH),
            partition_leader_epoch: read_i32(buf, OFF_LEADER_EPOCH),
            magic: buf[OFF_MAGIC] as i8,
            crc: read_i32(buf, OFF_CRC) as u32,
            attributes: i16::from_be_bytes([buf[OFF_ATTRIBUTES], buf[OFF_ATTRIBUTES + 1]]),
            last_offset_delta: read_i32(buf, OFF_LAST_OFFSET_DELTA),
            first_timestamp: read_i64(buf, OFF_FIRST_TIMESTAMP),
            max_timestamp: read_i64(buf, OFF_MAX_TIMESTAMP),
            producer_id: read_i64(buf, OFF_PRODUCER_ID),
            producer_epoch: i16::from_be_bytes([
                buf[OFF_PRODUCER_EPOCH],
                buf[OFF_PRODUCER_EPOCH + 1],
            ]),
            base_sequence: read_i32(buf, OFF_BASE_SEQUENCE),
            record_count: read_i32(buf, OFF_RECORD_COUNT),
        })
    }

    /// Decodes and checks every header field that can be checked without the body: length,
    /// magic, codec, record count. Does not touch the CRC.
    pub fn decode_checked(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        // The length and magic come first so that a garbage prefix is reported as such.
        if buf.len() > OFF_MAGIC {
            let length = read_i32(buf, OFF_LENGTH);
            if length < BATCH_LENGTH_MIN {
                return Err(BatchError::LengthTooSmall { length });
            }
            let magic = buf[OFF_MAGIC] as i8;
            if magic != 2 {
                return Err(BatchError::UnsupportedMagic { magic });
            }
        }
        let header = BatchHeader::decode(buf)?;
        if header.compression() > COMPRESSION_MAX {
            return Err(BatchError::UnknownCompression {
                codec: header.compression(),
            });
        }
        if header.record_count <= 0 {
            return Err(BatchError::NoRecords {
                count: header.record_count,
            });
        }
        if i64::from(header.last_offset_delta) != i64::from(header.record_count) - 1 {
            return Err(BatchError::OffsetDeltaMismatch {
                last_offset_delta: header.last_offset_delta,
                record_count: header.record_count,
            });
        }
        Ok(header)
    }
}

/// Validates the batch at the start of `buf`: header checks, declared length within `buf`, and
/// the CRC-32C. Returns the header; the batch occupies `buf[..header.size()]`.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::decode_checked(buf)?;
    let size = header.size();
    if buf.len() < size {
        return Err(BatchError::Incomplete {
            needed: size,
            available: buf.len(),
        });
    }
    let computed = crc32c::crc32c(&buf[OFF_ATTRIBUTES..size]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// Writes `base_offset` into the batch at the start of `buf`. Outside the CRC.
pub fn stamp_base_offset(buf: &mut [u8], base_offset: i64) {
    buf[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Writes the partition leader epoch into the batch at the start of `buf`. Outside the CRC.
pub fn stamp_leader_epoch(buf: &mut [u8], epoch: i32) {
    buf[OFF_LEADER_EPOCH..OFF_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Walks a buffer holding whole batches back to back, validating each (CRC included).
/// Yields `(position, header)`; stops at the first error, which it yields once.
pub struct Batches<'a> {
    buf: &'a [u8],
    position: usize,
    failed: bool,
}

impl<'a> Batches<'a> {
    pub fn new(buf: &'a [u8]) -> Batches<'a> {
        Batches {
            buf,
            position: 0,
            failed: false,
        }
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<(usize, BatchHeader), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.position == self.buf.len() {
            return None;
        }
        match validate(&self.buf[self.position..]) {
            Ok(header) => {
                let at = self.position;
                self.position += header.size();
                Some(Ok((at, header)))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

fn read_i32(buf: &[u8], at: usize) -> i32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&buf[at..at + 4]);
    i32::from_be_bytes(bytes)
}

fn read_i64(buf: &[u8], at: usize) -> i64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::build::BatchBuilder;
    use super::*;

    fn sample() -> Vec<u8> {
        let mut builder = BatchBuilder::new(1_000);
        builder.push(Some(b"k1"), Some(b"value one"), 1_000);
        builder.push(None, Some(b"value two"), 1_005);
        builder.push(Some(b"k3"), None, 1_002);
        builder.build()
    }

    #[test]
    fn valid_batch_round_trips_header_fields() {
        let bytes = sample();
        let header = validate(&bytes).expect("valid");
        assert_eq!(header.size(), bytes.len());
        assert_eq!(header.magic, 2);
        assert_eq!(header.record_count, 3);
        assert_eq!(header.last_offset_delta, 2);
        assert_eq!(header.first_timestamp, 1_000);
        assert_eq!(header.max_timestamp, 1_005);
        assert_eq!(header.producer_id, -1);
        assert_eq!(header.compression(), 0);
    }

    #[test]
    fn stamping_keeps_crc_valid() {
        let mut bytes = sample();
        stamp_base_offset(&mut bytes, 123_456);
        stamp_leader_epoch(&mut bytes, 7);
        let header = validate(&bytes).expect("still valid after stamping");
        assert_eq!(header.base_offset, 123_456);
        assert_eq!(header.partition_leader_epoch, 7);
        assert_eq!(header.last_offset(), 123_458);
    }

    #[test]
    fn each_malformation_has_its_error() {
        let good = sample();

        assert_eq!(
            validate(&good[..40]),
            Err(BatchError::Incomplete {
                needed: HEADER_BYTES,
                available: 40
            })
        );
        assert_eq!(
            validate(&good[..good.len() - 1]),
            Err(BatchError::Incomplete {
                needed: good.len(),
                available: good.len() - 1
            })
        );

        let mut bad = good.clone();
        bad[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&10i32.to_be_bytes());
        assert_eq!(
            validate(&bad),
            Err(BatchError::LengthTooSmall { length: 10 })
        );

        let mut bad = good.clone();
        bad[OFF_MAGIC] = 1;
        assert_eq!(
            validate(&bad),
            Err(BatchError::UnsupportedMagic { magic: 1 })
        );

        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        assert!(matches!(
            validate(&bad),
            Err(BatchError::CrcMismatch { .. })
        ));

        let mut bad = good.clone();
        bad[OFF_ATTRIBUTES + 1] |= 0x07;
        assert_eq!(
            validate(&bad),
            Err(BatchError::UnknownCompression { codec: 7 })
        );

        let mut bad = good.clone();
        bad[OFF_RECORD_COUNT..OFF_RECORD_COUNT + 4].copy_from_slice(&0i32.to_be_bytes());
        assert_eq!(validate(&bad), Err(BatchError::NoRecords { count: 0 }));

        let mut bad = good;
        bad[OFF_LAST_OFFSET_DELTA..OFF_LAST_OFFSET_DELTA + 4].copy_from_slice(&5i32.to_be_bytes());
        assert_eq!(
            validate(&bad),
            Err(BatchError::OffsetDeltaMismatch {
                last_offset_delta: 5,
                record_count: 3
            })
        );
    }

    #[test]
    fn batches_walks_a_buffer_and_stops_at_the_first_error() {
        let one = sample();
        let mut buf = one.clone();
        buf.extend_from_slice(&one);
        buf.extend_from_slice(&one[..30]);
        let items: Vec<_> = Batches::new(&buf).collect();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].as_ref().map(|(at, _)| *at), Ok(0));
        assert_eq!(items[1].as_ref().map(|(at, _)| *at), Ok(one.len()));
        assert!(matches!(items[2], Err(BatchError::Incomplete { .. })));
    }
}
