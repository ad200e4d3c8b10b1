//! Any bytes through the RecordBatch header decoder and validator: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_log::batch::{self, BatchHeader, Batches};

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = batch::validate(data) {
        assert!(header.size() <= data.len());
        assert_eq!(header.magic, 2);
    }
    let _ = BatchHeader::decode_checked(data);
    let mut end = 0;
    for item in Batches::new(data) {
        match item {
            Ok((at, header)) => {
                assert_eq!(at, end);
                end = at + header.size();
            }
            Err(_) => break,
        }
    }
    assert!(end <= data.len());
});
