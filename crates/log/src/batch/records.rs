//! Reading the records of an uncompressed RecordBatch v2.
//!
//! The append path never does this: the log stores what clients send. It is for the broker's
//! own records (committed offsets) and for finding the exact record of a timestamp lookup.
//! The bytes may come from a peer or the disk, so every length is checked against what is left.
//!
//! A record: `length varint, attributes i8, timestamp delta varlong, offset delta varint,
//! key (varint length, -1 = null), value (same), header count varint, headers (key, value)`.

use super::{BatchError, BatchHeader, BATCH_LENGTH_MIN, HEADER_BYTES};

/// One record of a batch, borrowing the batch's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub header_count: u32,
    /// The headers' bytes, already checked: read them with [`Record::headers`].
    headers: &'a [u8],
}

impl<'a> Record<'a> {
    /// The record's headers in order: (key, value), a null value as `None`. Keys are bytes, as
    /// the wire has them (Kafka's are UTF-8 strings by convention only).
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> {
        let mut reader = Records {
            buf: self.headers,
            at: 0,
            left: 0,
        };
        (0..self.header_count).map_while(move |_| {
            // Checked when the record was read: these cannot fail, and stop if they did.
            let key = reader.bytes("header key").ok()??;
            let value = reader.bytes("header value").ok()?;
            Some((key, value))
        })
    }
}

/// A record that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the batch is compressed (codec {codec}); only uncompressed records are read here")]
    Compressed { codec: u8 },
    #[error("malformed batch: {0}")]
    Batch(#[from] BatchError),
    #[error("malformed record at byte {at}: {what}")]
    Malformed { at: usize, what: &'static str },
}

/// The records of the batch at the start of `batch` (header included). The batch's CRC is not
/// checked here: callers read batches the log has already verified.
pub fn records(batch: &[u8]) -> Result<Records<'_>, RecordError> {
    let header = BatchHeader::decode(batch)?;
    if header.length < BATCH_LENGTH_MIN {
        return Err(BatchError::LengthTooSmall {
            length: header.length,
        }
        .into());
    }
    if header.compression() != 0 {
        return Err(RecordError::Compressed {
            codec: header.compression(),
        });
    }
    let end = header.size();
    if end > batch.len() || end < HEADER_BYTES {
        return Err(BatchError::Incomplete {
            needed: end.max(HEADER_BYTES),
            available: batch.len(),
        }
        .into());
    }
    Ok(Records {
        buf: &batch[..end],
        at: HEADER_BYTES,
        left: header.record_count.max(0) as u32,
    })
}

/// The records of a batch read from `body`, its records section as stored (uncompressed) or
/// as decompressed by the caller; `count` is the record count its header declares.
pub fn records_in(body: &[u8], count: i32) -> Records<'_> {
    Records {
        buf: body,
        at: 0,
        left: count.max(0) as u32,
    }
}

/// Iterator over a batch's records; stops after the first error.
pub struct Records<'a> {
    buf: &'a [u8],
    at: usize,
    left: u32,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut record = self.read();
        if record.is_ok() && self.left == 0 && self.at != self.buf.len() {
            record = Err(self.malformed(self.at, "bytes after the last record"));
        }
        if record.is_err() {
            self.left = 0;
        }
        Some(record)
    }
}

impl<'a> Records<'a> {
    fn read(&mut self) -> Result<Record<'a>, RecordError> {
        let start = self.at;
        let length = self.varlong("record length")?;
        if length < 0 || length as u64 > (self.buf.len() - self.at) as u64 {
            return Err(self.malformed(start, "record length past the batch end"));
        }
        let end = self.at + length as usize;
        let mut inner = Records {
            buf: &self.buf[..end],
            at: self.at,
            left: 0,
        };
        inner.byte("attributes")?;
        let timestamp_delta = inner.varlong("timestamp delta")?;
        let offset_delta = inner.varlong("offset delta")?;
        let offset_delta = i32::try_from(offset_delta)
            .map_err(|_| inner.malformed(start, "offset delta out of range"))?;
        let key = inner.bytes("key")?;
        let value = inner.bytes("value")?;
        let header_count = inner.varlong("header count")?;
        let header_count = u32::try_from(header_count)
            .map_err(|_| inner.malformed(start, "negative header count"))?;
        let headers_at = inner.at;
        for _ in 0..header_count {
            if inner.bytes("header key")?.is_none() {
                return Err(inner.malformed(start, "null header key"));
            }
            inner.bytes("header value")?;
        }
        if inner.at != end {
            return Err(inner.malformed(start, "record length does not match its fields"));
        }
        self.at = end;
        Ok(Record {
            offset_delta,
            timestamp_delta,
            key,
            value,
            header_count,
            headers: &self.buf[headers_at..end],
        })
    }

    fn malformed(&self, at: usize, what: &'static str) -> RecordError {
        RecordError::Malformed { at, what }
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, RecordError> {
        let byte = *self
            .buf
            .get(self.at)
            .ok_or(RecordError::Malformed { at: self.at, what })?;
        self.at += 1;
        Ok(byte)
    }

    /// A zig-zag varint of at most 10 bytes.
    fn varlong(&mut self, what: &'static str) -> Result<i64, RecordError> {
        let start = self.at;
        let mut raw: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = self.byte(what)?;
            raw |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err(self.malformed(start, "varint longer than 10 bytes"))
    }

    fn bytes(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, RecordError> {
        let start = self.at;
        let len = self.varlong(what)?;
        if len == -1 {
            return Ok(None);
        }
        if len < 0 || len as u64 > (self.buf.len() - self.at) as u64 {
            return Err(self.malformed(start, what));
        }
        let bytes = &self.buf[self.at..self.at + len as usize];
        self.at += len as usize;
        Ok(Some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::super::build::BatchBuilder;
    use super::*;

    #[test]
    fn built_records_read_back() {
        let mut builder = BatchBuilder::new(1_000);
        builder.push(Some(b"k1"), Some(b"v1"), 1_000);
        builder.push(None, None, 1_005);
        builder.push_with_headers(Some(b""), Some(b"v3"), &[("h", Some(b"x"))], 990);
        let batch = builder.build();
        let read: Vec<Record<'_>> = records(&batch)
            .expect("uncompressed")
            .collect::<Result<_, _>>()
            .expect("well formed");
        assert_eq!(read.len(), 3);
        assert_eq!(read[0].key, Some(&b"k1"[..]));
        assert_eq!(read[0].value, Some(&b"v1"[..]));
        assert_eq!((read[1].offset_delta, read[1].timestamp_delta), (1, 5));
        assert_eq!((read[1].key, read[1].value), (None, None));
        assert_eq!(read[2].timestamp_delta, -10);
        assert_eq!(read[2].key, Some(&b""[..]));
        assert_eq!(read[2].header_count, 1);
        assert_eq!(
            read[2].headers().collect::<Vec<_>>(),
            vec![(&b"h"[..], Some(&b"x"[..]))]
        );
        assert_eq!(read[0].headers().count(), 0);
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let mut builder = BatchBuilder::new(0);
        builder.push_with_headers(Some(b"key"), Some(b"value"), &[("a", Some(b"b"))], 3);
        builder.push(Some(b"k"), None, 4);
        let batch = builder.build();
        for cut in 0..batch.len() {
            let mut short = batch[..cut].to_vec();
            if cut >= HEADER_BYTES {
                // Keep the declared length consistent, so the record reader sees the cut.
                let length = (cut - 12) as i32;
                short[8..12].copy_from_slice(&length.to_be_bytes());
            }
            if let Ok(records) = records(&short) {
                assert!(records.collect::<Result<Vec<_>, _>>().is_err(), "cut {cut}");
            }
        }
        for at in HEADER_BYTES..batch.len() {
            for flip in [0x80u8, 0x7f, 0xff] {
                let mut bad = batch.clone();
                bad[at] ^= flip;
                if let Ok(records) = records(&bad) {
                    for record in records {
                        let _ = record;
                    }
                }
            }
        }
    }

    #[test]
    fn a_negative_declared_length_is_an_error() {
        let mut builder = BatchBuilder::new(0);
        builder.push(None, Some(b"v"), 0);
        let mut batch = builder.build();
        batch[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            records(&batch),
            Err(RecordError::Batch(BatchError::LengthTooSmall {
                length: -5
            }))
        ));
    }

    #[test]
    fn bytes_after_the_declared_records_are_an_error() {
        let mut builder = BatchBuilder::new(0);
        builder.push(None, Some(b"a"), 0);
        builder.push(None, Some(b"b"), 0);
        let mut batch = builder.build();
        batch[57..61].copy_from_slice(&1i32.to_be_bytes()); // record count 2 -> 1
        let read: Vec<_> = records(&batch).expect("uncompressed").collect();
        assert_eq!(read.len(), 1);
        assert!(read[0].is_err());
    }

    #[test]
    fn compressed_batches_are_refused() {
        let mut builder = BatchBuilder::new(0);
        builder.push(None, Some(b"v"), 0);
        let mut batch = builder.build();
        batch[22] |= 1; // gzip
        assert!(matches!(
            records(&batch),
            Err(RecordError::Compressed { codec: 1 })
        ));
    }
}
