//! Decompressing a batch's records, for REST and WebSocket readers and for ListOffsets by
//! timestamp (which answers the exact record inside a compressed batch). Fetch never does
//! this: it serves batches as they were stored. The output is bounded by the caller
//! (`http_decompressed_batch_max_bytes`, `list_offsets_decompress_max_bytes`), so a small
//! batch cannot expand without limit.
//!
//! Kafka's codecs: 1 gzip, 2 snappy (raw, or the xerial framing the Java client writes),
//! 3 lz4 (the LZ4 frame format), 4 zstd.

use std::io::Read;

/// The xerial snappy framing's magic, then version and compatible version (4 bytes each).
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;

/// The records section of a batch compressed with `codec`, at most `max` bytes.
pub(crate) fn decompress(codec: u8, data: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let name = match codec {
        1 => "gzip",
        2 => "snappy",
        3 => "lz4",
        4 => "zstd",
        _ => return Err(format!("unknown compression codec {codec}")),
    };
    let out = match codec {
        1 => bounded(flate2::read::MultiGzDecoder::new(data), max),
        2 => snappy(data, max),
        3 => bounded(lz4_flex::frame::FrameDecoder::new(data), max),
        _ => zstd::stream::read::Decoder::new(data)
            .map_err(|e| e.to_string())
            .and_then(|decoder| bounded(decoder, max)),
    };
    out.map_err(|e| format!("a stored {name} batch cannot be decompressed: {e}"))
}

fn bounded(reader: impl Read, max: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    reader
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() > max {
        return Err(too_large(max));
    }
    Ok(out)
}

fn too_large(max: usize) -> String {
    format!("it expands past {max} bytes (http_decompressed_batch_max_bytes)")
}

fn snappy(data: &[u8], max: usize) -> Result<Vec<u8>, String> {
    if !data.starts_with(XERIAL_MAGIC) {
        return snappy_block(data, max, 0);
    }
    let mut out = Vec::new();
    let mut rest = data
        .get(XERIAL_HEADER_BYTES..)
        .ok_or("truncated xerial header")?;
    while !rest.is_empty() {
        let length = rest.get(..4).ok_or("truncated xerial block length")?;
        let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
        let block = rest.get(4..4 + length).ok_or("truncated xerial block")?;
        out.extend(snappy_block(block, max, out.len())?);
        rest = &rest[4 + length..];
    }
    Ok(out)
}

/// One raw snappy block, refused before allocating if it would take the output past `max`.
fn snappy_block(block: &[u8], max: usize, so_far: usize) -> Result<Vec<u8>, String> {
    let length = snap::raw::decompress_len(block).map_err(|e| e.to_string())?;
    if so_far.saturating_add(length) > max {
        return Err(too_large(max));
    }
    snap::raw::Decoder::new()
        .decompress_vec(block)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample() -> Vec<u8> {
        (0..10_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips_and_is_bounded() {
        let plain = sample();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let raw_snappy = snap::raw::Encoder::new()
            .compress_vec(&plain)
            .expect("snappy");
        let mut xerial = XERIAL_MAGIC.to_vec();
        xerial.extend([0, 0, 0, 1, 0, 0, 0, 1]);
        for half in plain.chunks(plain.len() / 2 + 1) {
            let block = snap::raw::Encoder::new()
                .compress_vec(half)
                .expect("snappy");
            xerial.extend((block.len() as u32).to_be_bytes());
            xerial.extend(block);
        }
        let mut lz4 = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz4.write_all(&plain).expect("lz4");
        let lz4 = lz4.finish().expect("lz4");
        let zstd = zstd::stream::encode_all(&plain[..], 1).expect("zstd");
        for (codec, data) in [(1, gz), (2, raw_snappy), (2, xerial), (3, lz4), (4, zstd)] {
            assert_eq!(
                decompress(codec, &data, plain.len()).as_deref(),
                Ok(&plain[..]),
                "codec {codec}"
            );
            let error = decompress(codec, &data, plain.len() - 1).expect_err("bounded");
            assert!(error.contains("expands past"), "codec {codec}: {error}");
            // Garbage is an error, never a panic.
            for cut in [0, 1, data.len() / 2] {
                let _ = decompress(codec, &data[..cut], plain.len());
            }
        }
        assert!(decompress(7, b"", 10).is_err());
    }
}
