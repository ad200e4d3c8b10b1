//! Any request frame through the Kafka request decoder: an error or a request, never a panic,
//! and never an allocation beyond what the frame holds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = weir_kafka::decode_request(data);
});
