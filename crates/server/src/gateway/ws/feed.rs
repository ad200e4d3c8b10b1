//! Live feeds: one reader per (partition, encoding) per shard, broadcasting what is appended to
//! every WebSocket subscriber on that shard. The records are read and turned into JSON once per
//! shard, and the WebSocket frame is built once, then written to each subscriber's socket.
//!
//! A subscriber that cannot keep up is not buffered for: the broadcast ring is bounded
//! (`ws_feed_buffer_messages`), and a subscriber that falls behind it is paused at its offset
//! and reads on its own from there, at the pace its socket takes, until it reaches the feed
//! again (`subscription.rs`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use weir_broker::topics::Topic;
use weir_kafka::error_code;

use crate::broker::Broker;
use crate::gateway::records::{self, Encoding};
use crate::partition::{FetchOutcome, ShardMsg};

/// How often an idle feed checks whether anyone still listens.
const FEED_IDLE_CHECK: Duration = Duration::from_secs(1);
/// Records one message carries at most.
pub(crate) const MESSAGE_RECORDS_MAX: usize = 10_000;

/// Records from `first` up to (not including) `next`: the WebSocket frame that carries them
/// all, and where each record's JSON sits in it (so a subscriber that needs only the later
/// ones builds its frame from those bytes).
pub(crate) struct Item {
    pub first: i64,
    pub next: i64,
    pub frame: Vec<u8>,
    /// (offset, start, end) of each record's JSON in `frame`.
    pub spans: Vec<(i64, usize, usize)>,
}

impl Item {
    /// (offset, JSON) of the records at or after `offset`.
    pub fn records_from(&self, offset: i64) -> impl Iterator<Item = (i64, &str)> {
        self.spans
            .iter()
            .filter(move |(o, _, _)| *o >= offset)
            .filter_map(|(o, start, end)| {
                Some((*o, std::str::from_utf8(&self.frame[*start..*end]).ok()?))
            })
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    topic_id: [u8; 16],
    partition: i32,
    encoding: Encoding,
}

thread_local! {
    /// This shard's feeds.
    static FEEDS: RefCell<HashMap<Key, broadcast::Sender<Arc<Item>>>> = RefCell::new(HashMap::new());
}

/// The `records` message for `records` as a text frame, and where each record sits in it.
pub(crate) fn records_frame<'a>(
    topic: &str,
    partition: i32,
    records: impl Iterator<Item = (i64, &'a str)>,
) -> (Vec<u8>, Vec<(i64, usize, usize)>) {
    let mut text = format!(
        "{{\"type\":\"records\",\"topic\":{},\"partition\":{partition},\"records\":[",
        serde_json::Value::from(topic)
    );
    let mut spans = Vec::new();
    for (i, (offset, record)) in records.enumerate() {
        if i > 0 {
            text.push(',');
        }
        spans.push((offset, text.len(), text.len() + record.len()));
        text.push_str(record);
    }
    text.push_str("]}");
    let frame = super::frame::encode(super::frame::OP_TEXT, text.as_bytes());
    // The frame is the text behind a header of this many bytes.
    let header = frame.len() - text.len();
    let spans = spans
        .into_iter()
        .map(|(o, start, end)| (o, start + header, end + header))
        .collect();
    (frame, spans)
}

/// Reads `max_bytes` of the partition from `offset` and turns the records into JSON: the item,
/// or the Kafka error code (a read that found nothing new is an item with no records).
pub(crate) async fn read(
    broker: &Arc<Broker>,
    topic: &Arc<Topic>,
    partition: i32,
    offset: i64,
    encoding: Encoding,
) -> Result<(Item, Option<tokio::sync::watch::Receiver<i64>>), i16> {
    let outcome = crate::connection::ask(broker, &topic.name, partition, |reply| ShardMsg::Fetch {
        topic: topic.clone(),
        partition,
        offset,
        max_bytes: Some(broker.config.ws_fetch_max_bytes as u64),
        reply,
    })
    .await
    .unwrap_or_else(|| FetchOutcome::error(error_code::KAFKA_STORAGE_ERROR));
    if outcome.error_code != error_code::NONE {
        return Err(outcome.error_code);
    }
    let decoded = records::decode(
        &outcome.records,
        offset,
        MESSAGE_RECORDS_MAX,
        encoding,
        broker.config.http_decompressed_batch_max_bytes,
    )
    .map_err(|e| {
        eprintln!("weir: {}/{partition}: {e}", topic.name);
        error_code::CORRUPT_MESSAGE
    })?;
    broker
        .metrics
        .topic(&topic.name)
        .bytes_out
        .fetch_add(outcome.records.len() as u64, Ordering::Relaxed);
    let records: Vec<(i64, String)> = decoded
        .records
        .iter()
        .map(|r| (r["offset"].as_i64().unwrap_or(-1), r.to_string()))
        .collect();
    let (frame, spans) = if records.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        records_frame(
            &topic.name,
            partition,
            records.iter().map(|(o, r)| (*o, r.as_str())),
        )
    };
    Ok((
        Item {
            first: offset,
            next: decoded.next_offset,
            frame,
            spans,
        },
        outcome.end,
    ))
}

/// A receiver of this shard's feed of the partition, started at `offset` if there is none.
pub(crate) fn subscribe(
    broker: &Arc<Broker>,
    topic: &Arc<Topic>,
    partition: i32,
    encoding: Encoding,
    offset: i64,
) -> broadcast::Receiver<Arc<Item>> {
    let key = Key {
        topic_id: topic.id,
        partition,
        encoding,
    };
    FEEDS.with(|feeds| {
        let mut feeds = feeds.borrow_mut();
        if let Some(sender) = feeds.get(&key) {
            return sender.subscribe();
        }
        let (sender, receiver) = broadcast::channel(broker.config.ws_feed_buffer_messages.max(1));
        feeds.insert(key.clone(), sender.clone());
        broker.metrics.ws_feeds.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_local(run(broker.clone(), topic.clone(), key, sender, offset));
        receiver
    })
}

async fn run(
    broker: Arc<Broker>,
    topic: Arc<Topic>,
    key: Key,
    sender: broadcast::Sender<Arc<Item>>,
    mut position: i64,
) {
    loop {
        // Nobody listens any more: stop.
        if sender.receiver_count() == 0 {
            break;
        }
        let (item, end) = match read(&broker, &topic, key.partition, position, key.encoding).await {
            Ok(read) => read,
            // Deleted, truncated past us, unreadable: the subscribers find out on their own
            // reads once this feed is gone.
            Err(_) => break,
        };
        if item.next > position {
            position = item.next;
            if !item.spans.is_empty() {
                broker
                    .metrics
                    .ws_feed_messages
                    .fetch_add(1, Ordering::Relaxed);
                let _ = sender.send(Arc::new(item));
            }
            continue;
        }
        // Nothing new: sleep until the log end moves (or check for listeners now and then).
        match end {
            Some(mut end) => {
                let _ = tokio::time::timeout(FEED_IDLE_CHECK, end.changed()).await;
            }
            None => tokio::time::sleep(FEED_IDLE_CHECK).await,
        }
    }
    FEEDS.with(|feeds| feeds.borrow_mut().remove(&key));
    broker.metrics.ws_feeds.fetch_sub(1, Ordering::Relaxed);
}
