//! What the broker reads back from its own files, whatever the disk holds: committed-offset
//! records, producer snapshots, and the records of a batch. Errors, never panics; whatever
//! decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_broker::group::offsets;
use weir_broker::producer::ProducerState;

fuzz_target!(|data: &[u8]| {
    if let Ok((group, topic, partition)) = offsets::decode_key(data) {
        assert_eq!(offsets::encode_key(&group, &topic, partition), data);
    }
    if let Ok(committed) = offsets::decode_value(data) {
        assert_eq!(offsets::encode_value(&committed), data);
    }
    if let Ok((offset, state)) = ProducerState::decode_snapshot(data) {
        assert_eq!(state.encode_snapshot(offset), data);
    }
    if let Ok(records) = weir_log::batch::records::records(data) {
        for record in records {
            if record.is_err() {
                break;
            }
        }
    }
});
