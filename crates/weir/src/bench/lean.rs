//! The lean producer: builds one uncompressed RecordBatch per partition once, encodes one
//! Produce request frame per partition once, and then only patches the correlation id and
//! writes. Several requests stay in flight per connection (the broker answers them in order),
//! so what is measured is the broker, not a client library.
//!
//! Latency is from a request's intended send time to its response: in fixed-rate mode a
//! request that leaves late (the producer fell behind) is charged from when it should have
//! left, so a slow broker cannot hide behind the producer's own waiting (coordinated omission).

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use weir_log::batch::build::BatchBuilder;

use super::histogram::Histogram;
use super::Options;

const PRODUCE_VERSION: i16 = 9;
/// The largest response the bench accepts (a Fetch answers with up to `--fetch-bytes`).
const RESPONSE_BYTES_MAX: i32 = 256 * 1024 * 1024;
/// Socket read buffer of a producer's response reader.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Where the correlation id sits in a request frame: size (4), api key (2), api version (2).
const CORRELATION_AT: usize = 8;

/// What one connection measured.
#[derive(Default)]
pub struct Measured {
    pub records: u64,
    /// Record bytes: produce counts values, consume the fetched batches.
    pub bytes: u64,
    pub requests: u64,
    pub errors: u64,
    pub latency: Histogram,
    /// How late each request was ready to leave: the producer's own delays, and earlier
    /// requests' waits for a window slot (a slow broker). Zero unless paced.
    pub lateness: Histogram,
    /// Produce: from when a request was ready to leave (its own wait for a window slot
    /// included) to its answer: the broker's part of `latency`, with the sockets' and the
    /// scheduler's.
    pub from_write: Histogram,
    pub first_error: Option<String>,
}

fn frame<T: Encodable>(key: ApiKey, version: i16, correlation_id: i32, body: &T) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("weir-bench")))
        .encode(&mut buf, key.request_header_version(version))
        .expect("request header encodes");
    body.encode(&mut buf, version).expect("request encodes");
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    buf.to_vec()
}

fn read_response(stream: &mut impl Read, key: ApiKey, version: i16) -> std::io::Result<Bytes> {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size)?;
    let size = i32::from_be_bytes(size);
    if !(4..=RESPONSE_BYTES_MAX).contains(&size) {
        return Err(std::io::Error::other(format!("response size {size}")));
    }
    let mut body = vec![0u8; size as usize];
    stream.read_exact(&mut body)?;
    let mut body = Bytes::from(body);
    ResponseHeader::decode(&mut body, key.response_header_version(version))
        .map_err(|e| std::io::Error::other(format!("response header: {e}")))?;
    Ok(body)
}

/// One request, one response, on a fresh exchange.
fn call<T: Encodable>(
    stream: &mut TcpStream,
    key: ApiKey,
    version: i16,
    body: &T,
) -> std::io::Result<Bytes> {
    stream.write_all(&frame(key, version, 0, body))?;
    read_response(stream, key, version)
}

/// The topic's partition count, creating the topic with `partitions` if it does not exist.
pub fn prepare_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<i32, String> {
    let mut stream = connect(bootstrap)?;
    let name = TopicName(StrBytes::from_string(topic.to_string()));
    let metadata = |stream: &mut TcpStream| -> Result<Option<i32>, String> {
        let request = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name.clone()))
            ]))
            .with_allow_auto_topic_creation(false);
        let mut body = call(stream, ApiKey::Metadata, 12, &request).map_err(|e| e.to_string())?;
        let response = MetadataResponse::decode(&mut body, 12).map_err(|e| e.to_string())?;
        Ok(response
            .topics
            .first()
            .filter(|t| t.error_code == 0)
            .map(|t| t.partitions.len() as i32))
    };
    if let Some(n) = metadata(&mut stream)? {
        return Ok(n);
    }
    let request = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(name.clone())
            .with_num_partitions(partitions)
            .with_replication_factor(-1)])
        .with_timeout_ms(30_000);
    let mut body =
        call(&mut stream, ApiKey::CreateTopics, 7, &request).map_err(|e| e.to_string())?;
    let response = CreateTopicsResponse::decode(&mut body, 7).map_err(|e| e.to_string())?;
    let code = response.topics.first().map_or(-1, |t| t.error_code);
    if code != 0 && code != 36 {
        return Err(format!("cannot create topic {topic:?}: error code {code}"));
    }
    metadata(&mut stream)?.ok_or_else(|| format!("topic {topic:?} did not appear"))
}

pub fn connect(bootstrap: &str) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(bootstrap)
        .map_err(|e| format!("cannot reach {bootstrap}: {e} — is `weir serve` running?"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

/// A Produce frame for `partition` carrying one batch of `records` values of `size` bytes.
fn produce_frame(options: &Options, partition: i32) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut builder = BatchBuilder::new(now);
    let value: Vec<u8> = (0..options.size).map(|i| b'a' + (i % 26) as u8).collect();
    for _ in 0..options.batch {
        builder.push(None, Some(&value), now);
    }
    let request = ProduceRequest::default()
        .with_acks(options.acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(options.topic.clone())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(builder.build())))])]);
    frame(ApiKey::Produce, PRODUCE_VERSION, 0, &request)
}

/// Runs one producer connection: `requests` requests, round-robin over `partitions`, at most
/// `inflight` unanswered, spaced `interval` apart when a rate is set.
pub fn run_producer(
    options: &Options,
    partitions: i32,
    first_partition: i32,
    requests: u64,
    interval: Option<Duration>,
    done: &AtomicU64,
    stop: &AtomicBool,
) -> Result<Measured, String> {
    let stream = connect(&options.bootstrap)?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut frames: Vec<Vec<u8>> = (0..partitions).map(|p| produce_frame(options, p)).collect();
    // The window: each entry is a request in flight (its intended send time, and when it left).
    let (sent, in_flight) = mpsc::sync_channel::<(Instant, Instant)>(options.inflight.max(1) - 1);
    let reader = std::thread::spawn(move || -> Measured {
        let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, stream);
        let mut measured = Measured::default();
        while let Ok((intended, written)) = in_flight.recv() {
            let answer = read_response(&mut reader, ApiKey::Produce, PRODUCE_VERSION).and_then(
                |mut body| {
                    ProduceResponse::decode(&mut body, PRODUCE_VERSION)
                        .map_err(|e| std::io::Error::other(e.to_string()))
                },
            );
            // One clock reading for both: the part never exceeds the whole.
            let answered = Instant::now();
            let elapsed = answered.duration_since(intended);
            measured.requests += 1;
            match answer {
                Ok(response) => {
                    let code = response
                        .responses
                        .iter()
                        .flat_map(|t| t.partition_responses.iter())
                        .map(|p| p.error_code)
                        .find(|c| *c != 0);
                    match code {
                        None => {
                            measured.latency.record(elapsed.as_nanos() as u64);
                            measured
                                .from_write
                                .record(answered.duration_since(written).as_nanos() as u64);
                        }
                        Some(code) => {
                            measured.errors += 1;
                            measured
                                .first_error
                                .get_or_insert_with(|| format!("produce error code {code}"));
                        }
                    }
                }
                Err(e) => {
                    measured.errors += 1;
                    measured.first_error.get_or_insert_with(|| e.to_string());
                    break;
                }
            }
        }
        measured
    });
    let started = Instant::now();
    let mut lateness = Histogram::default();
    for i in 0..requests {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let intended = match interval {
            Some(gap) => {
                let at = started + gap.mul_f64(i as f64);
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                at
            }
            None => Instant::now(),
        };
        let partition = ((first_partition as u64 + i) % partitions as u64) as usize;
        let frame = &mut frames[partition];
        frame[CORRELATION_AT..CORRELATION_AT + 4].copy_from_slice(&(i as i32).to_be_bytes());
        // Blocks while the window is full: at most `inflight` requests unanswered.
        // Ready to go: a full window still holds it up below, which counts to the broker.
        let ready = Instant::now();
        lateness.record(ready.saturating_duration_since(intended).as_nanos() as u64);
        if sent.send((intended, ready)).is_err() || writer.write_all(frame).is_err() {
            break;
        }
        // Progress counts what was sent: the reader thread owns the answers.
        done.fetch_add(options.batch as u64, Ordering::Relaxed);
    }
    drop(sent);
    let mut measured = reader
        .join()
        .map_err(|_| "the response reader panicked".to_string())?;
    measured.lateness = lateness;
    measured.records = (measured.requests - measured.errors) * options.batch as u64;
    measured.bytes = measured.records * options.size as u64;
    Ok(measured)
}

const FETCH_VERSION: i16 = 12;

/// Reads every partition of the topic from its log start to the high watermark seen at the
/// start (or `options.count` records, if fewer), one Fetch at a time per partition, each
/// partition on its own connection. Records are counted from batch headers; bodies are not
/// decoded (a lean consumer, like librdkafka with check.crcs=false).
pub fn run_consumer(
    options: &Options,
    partition: i32,
    limit: u64,
    done: &AtomicU64,
    stop: &AtomicBool,
) -> Result<Measured, String> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, FetchResponse};
    let mut stream = connect(&options.bootstrap)?;
    let topic = TopicName(StrBytes::from_string(options.topic.clone()));
    let mut measured = Measured::default();
    let mut offset = 0i64;
    let mut end = None;
    while measured.records < limit
        && end.is_none_or(|end| offset < end)
        && !stop.load(Ordering::Relaxed)
    {
        let request = FetchRequest::default()
            .with_max_wait_ms(500)
            .with_min_bytes(1)
            .with_max_bytes(options.fetch_bytes)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic.clone())
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(options.fetch_bytes)])]);
        let started = Instant::now();
        let mut body =
            call(&mut stream, ApiKey::Fetch, FETCH_VERSION, &request).map_err(|e| e.to_string())?;
        let response =
            FetchResponse::decode(&mut body, FETCH_VERSION).map_err(|e| e.to_string())?;
        measured.latency.record(started.elapsed().as_nanos() as u64);
        measured.requests += 1;
        let Some(part) = response
            .responses
            .first()
            .and_then(|t| t.partitions.first())
        else {
            return Err("a Fetch response without the partition".to_string());
        };
        if part.error_code != 0 {
            measured.errors += 1;
            measured.first_error = Some(format!("fetch error code {}", part.error_code));
            break;
        }
        end.get_or_insert(part.high_watermark);
        let records = part.records.clone().unwrap_or_default();
        measured.bytes += records.len() as u64;
        let mut at = 0;
        let mut moved = false;
        while let Ok(header) = weir_log::batch::BatchHeader::decode(&records[at..]) {
            if header.size() > records.len() - at {
                break; // a partial batch at the end (not sent by Weir, allowed by Kafka)
            }
            if header.last_offset() >= offset {
                let first = header.base_offset.max(offset);
                let records = (header.last_offset() - first + 1) as u64;
                measured.records += records;
                done.fetch_add(records, Ordering::Relaxed);
                offset = header.last_offset() + 1;
                moved = true;
            }
            at += header.size();
        }
        if !moved && end.is_some_and(|end| offset >= end) {
            break;
        }
    }
    Ok(measured)
}
