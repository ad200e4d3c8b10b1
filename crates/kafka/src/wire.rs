//! Bounded decoding of Kafka's primitive types from bytes a peer sent.
//!
//! Why not the `kafka-protocol` crate's decoders: they reserve `Vec::with_capacity(n)` for an
//! array count `n` read off the wire before reading any element, so a 4-byte Metadata v0 body
//! declaring 2³¹−1 topics asks for 154 GB and aborts the process (measured with 0.18; see
//! ARCHITECTURE.md). Here every count is checked against the bytes left: each array element,
//! string byte or tagged field takes at least one byte, so a count above what remains is
//! rejected before anything is allocated.

use crate::error::DecodeError;

/// A cursor over one request body.
pub struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, at: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.at
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                what,
                needed: n,
                available: self.remaining(),
            });
        }
        let out = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub fn i8(&mut self, what: &'static str) -> Result<i8, DecodeError> {
        Ok(i8::from_be_bytes(self.array(what)?))
    }

    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        Ok(self.i8(what)? != 0)
    }

    pub fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    pub fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    pub fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    pub fn f64(&mut self, what: &'static str) -> Result<f64, DecodeError> {
        Ok(f64::from_bits(u64::from_be_bytes(self.array(what)?)))
    }

    pub fn uuid(&mut self, what: &'static str) -> Result<[u8; 16], DecodeError> {
        self.array(what)
    }

    /// Unsigned LEB128 varint of at most 5 bytes (u32).
    pub fn uvarint(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let byte = self.take(1, what)?[0];
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if i == 4 && byte > 0x0f {
                    break;
                }
                return Ok(value);
            }
        }
        Err(DecodeError::Invalid {
            what,
            reason: "varint longer than 32 bits",
        })
    }

    /// Length of a non-compact array: i32, -1 for null (returned as None).
    pub fn array_len(&mut self, what: &'static str) -> Result<Option<usize>, DecodeError> {
        let n = self.i32(what)?;
        match n {
            -1 => Ok(None),
            n if n < 0 => Err(DecodeError::Invalid {
                what,
                reason: "negative length",
            }),
            n => self.bounded(n as usize, what).map(Some),
        }
    }

    /// Length of a compact array: unsigned varint N+1, 0 for null.
    pub fn compact_array_len(&mut self, what: &'static str) -> Result<Option<usize>, DecodeError> {
        match self.uvarint(what)? {
            0 => Ok(None),
            n => self.bounded(n as usize - 1, what).map(Some),
        }
    }

    /// An element count or length is plausible only if at least that many bytes remain.
    fn bounded(&self, n: usize, what: &'static str) -> Result<usize, DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated {
                what,
                needed: n,
                available: self.remaining(),
            });
        }
        Ok(n)
    }

    fn utf8(bytes: &'a [u8], what: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(bytes).map_err(|_| DecodeError::Invalid {
            what,
            reason: "not UTF-8",
        })
    }

    /// STRING / NULLABLE_STRING: i16 length, -1 for null.
    pub fn nullable_string(&mut self, what: &'static str) -> Result<Option<&'a str>, DecodeError> {
        let n = self.i16(what)?;
        match n {
            -1 => Ok(None),
            n if n < 0 => Err(DecodeError::Invalid {
                what,
                reason: "negative length",
            }),
            n => Self::utf8(self.take(n as usize, what)?, what).map(Some),
        }
    }

    pub fn string(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        self.nullable_string(what)?.ok_or(DecodeError::Invalid {
            what,
            reason: "null where a string is required",
        })
    }

    /// COMPACT_NULLABLE_STRING: unsigned varint N+1, 0 for null.
    pub fn compact_nullable_string(
        &mut self,
        what: &'static str,
    ) -> Result<Option<&'a str>, DecodeError> {
        match self.uvarint(what)? {
            0 => Ok(None),
            n => Self::utf8(self.take(n as usize - 1, what)?, what).map(Some),
        }
    }

    pub fn compact_string(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        self.compact_nullable_string(what)?
            .ok_or(DecodeError::Invalid {
                what,
                reason: "null where a string is required",
            })
    }

    /// A string in the encoding the version uses.
    pub fn string_v(&mut self, flexible: bool, what: &'static str) -> Result<&'a str, DecodeError> {
        if flexible {
            self.compact_string(what)
        } else {
            self.string(what)
        }
    }

    /// A nullable string in the encoding the version uses.
    pub fn nullable_string_v(
        &mut self,
        flexible: bool,
        what: &'static str,
    ) -> Result<Option<&'a str>, DecodeError> {
        if flexible {
            self.compact_nullable_string(what)
        } else {
            self.nullable_string(what)
        }
    }

    /// BYTES / NULLABLE_BYTES: i32 length, -1 for null.
    pub fn nullable_bytes(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, DecodeError> {
        let n = self.i32(what)?;
        match n {
            -1 => Ok(None),
            n if n < 0 => Err(DecodeError::Invalid {
                what,
                reason: "negative length",
            }),
            n => self.take(n as usize, what).map(Some),
        }
    }

    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        self.nullable_bytes(what)?.ok_or(DecodeError::Invalid {
            what,
            reason: "null where bytes are required",
        })
    }

    /// COMPACT_NULLABLE_BYTES: unsigned varint N+1, 0 for null.
    pub fn compact_nullable_bytes(
        &mut self,
        what: &'static str,
    ) -> Result<Option<&'a [u8]>, DecodeError> {
        match self.uvarint(what)? {
            0 => Ok(None),
            n => self.take(n as usize - 1, what).map(Some),
        }
    }

    pub fn compact_bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        self.compact_nullable_bytes(what)?
            .ok_or(DecodeError::Invalid {
                what,
                reason: "null where bytes are required",
            })
    }

    /// Bytes in the encoding the version uses.
    pub fn bytes_v(&mut self, flexible: bool, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if flexible {
            self.compact_bytes(what)
        } else {
            self.bytes(what)
        }
    }

    /// Nullable bytes in the encoding the version uses.
    pub fn nullable_bytes_v(
        &mut self,
        flexible: bool,
        what: &'static str,
    ) -> Result<Option<&'a [u8]>, DecodeError> {
        if flexible {
            self.compact_nullable_bytes(what)
        } else {
            self.nullable_bytes(what)
        }
    }

    /// An array of strings in the encoding the version uses; None when the array is null.
    pub fn nullable_strings_v(
        &mut self,
        flexible: bool,
        what: &'static str,
    ) -> Result<Option<Vec<String>>, DecodeError> {
        let Some(n) = self.array_len_v(flexible, what)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.string_v(flexible, what)?.to_string());
        }
        Ok(Some(out))
    }

    /// An array of strings in the encoding the version uses; null reads as empty.
    pub fn strings_v(
        &mut self,
        flexible: bool,
        what: &'static str,
    ) -> Result<Vec<String>, DecodeError> {
        Ok(self.nullable_strings_v(flexible, what)?.unwrap_or_default())
    }

    /// An array of INT32 in the encoding the version uses; null reads as empty.
    pub fn int32s_v(
        &mut self,
        flexible: bool,
        what: &'static str,
    ) -> Result<Vec<i32>, DecodeError> {
        let n = self.array_len_v(flexible, what)?.unwrap_or(0);
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.i32(what)?);
        }
        Ok(out)
    }

    /// An array length in the encoding the version uses.
    pub fn array_len_v(
        &mut self,
        flexible: bool,
        what: &'static str,
    ) -> Result<Option<usize>, DecodeError> {
        if flexible {
            self.compact_array_len(what)
        } else {
            self.array_len(what)
        }
    }

    /// Skips a tagged-field section (flexible versions): count, then (tag, size, bytes) each.
    /// No tagged field of a request we decode carries anything we act on.
    pub fn skip_tagged_fields(&mut self) -> Result<(), DecodeError> {
        let count = self.uvarint("tagged field count")? as usize;
        self.bounded(count, "tagged field count")?;
        for _ in 0..count {
            self.uvarint("tag")?;
            let size = self.uvarint("tagged field size")? as usize;
            self.take(size, "tagged field")?;
        }
        Ok(())
    }

    /// Tagged fields when the version is flexible.
    pub fn tagged_fields_v(&mut self, flexible: bool) -> Result<(), DecodeError> {
        if flexible {
            self.skip_tagged_fields()
        } else {
            Ok(())
        }
    }

    /// Skips `n` bytes (a length the caller already bounded, or one checked here).
    pub fn skip(&mut self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        self.take(n, what).map(|_| ())
    }

    /// The `[topic name, [partition fields]]` shape most requests share: `partition` reads one
    /// partition's fields; the tagged fields after each partition and topic are read here.
    pub fn topics<T>(
        &mut self,
        flexible: bool,
        mut partition: impl FnMut(&mut Reader<'a>) -> Result<T, DecodeError>,
    ) -> Result<Vec<(String, Vec<T>)>, DecodeError> {
        let count = self.array_len_v(flexible, "topics")?.unwrap_or(0);
        let mut topics = Vec::with_capacity(count);
        for _ in 0..count {
            let name = self.string_v(flexible, "topic name")?.to_string();
            let n = self.array_len_v(flexible, "partitions")?.unwrap_or(0);
            let mut partitions = Vec::with_capacity(n);
            for _ in 0..n {
                partitions.push(partition(self)?);
                self.tagged_fields_v(flexible)?;
            }
            self.tagged_fields_v(flexible)?;
            topics.push((name, partitions));
        }
        Ok(topics)
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.at..];
        self.at = self.buf.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_declared_counts_are_refused_before_allocation() {
        // The Metadata v0 body that aborts the process under kafka-protocol 0.18.
        let mut r = Reader::new(&[0x7f, 0xff, 0xff, 0xff]);
        assert!(matches!(
            r.array_len("topics"),
            Err(DecodeError::Truncated {
                needed: 2147483647,
                ..
            })
        ));
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x07]);
        assert!(matches!(
            r.compact_array_len("topics"),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn varints_and_strings() {
        let mut r = Reader::new(&[
            0x96, 0x01, 0x04, b'a', b'b', b'c', 0x00, 0x00, 0x02, b'h', b'i',
        ]);
        assert_eq!(r.uvarint("v").ok(), Some(150));
        assert_eq!(r.compact_string("s").ok(), Some("abc"));
        assert_eq!(r.compact_nullable_string("n").ok(), Some(None));
        assert_eq!(r.string("s").ok(), Some("hi"));
        assert_eq!(r.remaining(), 0);
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(r.uvarint("v").is_err(), "more than 32 bits");
    }

    #[test]
    fn bytes_are_bounded_and_nullable() {
        let mut r = Reader::new(&[0, 0, 0, 2, 0xaa, 0xbb, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        assert_eq!(r.bytes("b").ok(), Some(&[0xaa, 0xbb][..]));
        assert_eq!(r.nullable_bytes("n").ok(), Some(None));
        assert_eq!(r.bytes("e").ok(), Some(&[][..]));
        assert_eq!(r.remaining(), 0);
        let mut r = Reader::new(&[0x03, 0x01, 0x02, 0x00, 0x01]);
        assert_eq!(r.compact_bytes("b").ok(), Some(&[0x01, 0x02][..]));
        assert_eq!(r.compact_nullable_bytes("n").ok(), Some(None));
        assert_eq!(r.bytes_v(true, "e").ok(), Some(&[][..]));
        // Declared lengths beyond what arrived, null where bytes are required, negative lengths.
        assert!(Reader::new(&[0x7f, 0xff, 0xff, 0xff, 0])
            .bytes("b")
            .is_err());
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x07, 0])
            .compact_bytes("b")
            .is_err());
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff]).bytes("b").is_err());
        assert!(Reader::new(&[0x00]).compact_bytes("b").is_err());
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xfe])
            .nullable_bytes("b")
            .is_err());
    }

    #[test]
    fn string_and_int32_arrays() {
        let mut r = Reader::new(&[0, 0, 0, 2, 0, 1, b'a', 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            r.strings_v(false, "s").ok(),
            Some(vec!["a".into(), "".into()])
        );
        assert_eq!(r.nullable_strings_v(false, "s").ok(), Some(None));
        let mut r = Reader::new(&[0x03, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0x00]);
        assert_eq!(r.int32s_v(true, "i").ok(), Some(vec![1, -1]));
        assert_eq!(r.int32s_v(true, "i").ok(), Some(vec![]));
        assert!(Reader::new(&[0, 0, 0, 2, 0, 0, 0, 1])
            .int32s_v(false, "i")
            .is_err());
    }

    #[test]
    fn tagged_fields_are_skipped_within_bounds() {
        let mut r = Reader::new(&[0x02, 0x00, 0x01, 0xaa, 0x05, 0x02, 0xbb, 0xcc, 0x09]);
        r.skip_tagged_fields().expect("skip");
        assert_eq!(r.rest(), &[0x09]);
        let mut r = Reader::new(&[0x01, 0x00, 0x7f]);
        assert!(r.skip_tagged_fields().is_err());
    }
}
