//! Live feeds: one reader per (partition, encoding) per shard, broadcasting what is appended to
//! every WebSocket subscriber on that shard. The records are read and turned into JSON once per
//! shard, and the WebSocket frame is built once, then written to each subscriber's socket.
//!
//! A subscriber that cannot keep up is not buffered for: the feed keeps its latest messages up
//! to `ws_feed_buffer_bytes`, every subscriber writes from there at its own pace, and one that
//! falls behind what the feed still holds is paused at its offset and reads the log on its own
//! (`ws_catchup_reads` such reads at once per shard) until it is back inside the feed.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
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
    /// What the item holds in memory, near enough: its frame, its record index, itself.
    pub fn held_bytes(&self) -> usize {
        self.frame.len() + self.spans.len() * std::mem::size_of::<(i64, usize, usize)>() + 64
    }

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
    static FEEDS: RefCell<HashMap<Key, Rc<Feed>>> = RefCell::new(HashMap::new());
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
    broker.metrics.topic(&topic.name).sent(&outcome.records);
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

/// A shard's live feed of one partition in one encoding: the latest records messages, built
/// once, that every subscriber on the shard writes from.
pub(crate) struct Feed {
    history: RefCell<History>,
    /// Set when the feed's task ends (its partition is gone or unreadable): subscribers read
    /// on their own, which tells them why, or join a new feed.
    stopped: Cell<bool>,
    /// The offset after the newest message: subscribers wait for it to move.
    position: watch::Sender<i64>,
    subscribers: Cell<usize>,
}

#[derive(Default)]
struct History {
    /// Contiguous: each item starts where the one before ends.
    items: VecDeque<Arc<Item>>,
    bytes: usize,
}

/// What a subscriber at some offset gets from its feed.
pub(crate) enum Next {
    /// Messages to write (the first may start before the offset), and the offset after them.
    Items(Vec<Arc<Item>>, i64),
    /// The feed no longer holds the offset: read it from the log.
    Behind,
    /// Nothing after the offset yet: wait for the position to move.
    UpToDate,
}

impl Feed {
    pub fn stopped(&self) -> bool {
        self.stopped.get()
    }

    /// The messages from `offset` on, at most `max_bytes` of them (at least one).
    pub fn after(&self, offset: i64, max_bytes: usize) -> Next {
        if self.stopped.get() {
            return Next::Behind;
        }
        let history = self.history.borrow();
        let start = history
            .items
            .front()
            .map_or(*self.position.borrow(), |item| item.first);
        if offset < start {
            return Next::Behind;
        }
        let from = history.items.partition_point(|item| item.next <= offset);
        let mut items = Vec::new();
        let mut bytes = 0;
        let mut next = offset;
        for item in history.items.range(from..) {
            if !items.is_empty() && bytes + item.frame.len() > max_bytes {
                break;
            }
            bytes += item.frame.len();
            next = item.next;
            items.push(item.clone());
        }
        if items.is_empty() {
            Next::UpToDate
        } else {
            Next::Items(items, next)
        }
    }

    /// Changes whenever a message is added (and ends when the feed stops).
    pub fn watch(&self) -> watch::Receiver<i64> {
        self.position.subscribe()
    }
}

/// A subscriber's hold on its feed; the feed stops once nobody holds it.
pub(crate) struct Joined {
    pub feed: Rc<Feed>,
}

impl Drop for Joined {
    fn drop(&mut self) {
        self.feed
            .subscribers
            .set(self.feed.subscribers.get().saturating_sub(1));
    }
}

/// Joins this shard's feed of the partition, started at `offset` if there is none.
pub(crate) fn join(
    broker: &Arc<Broker>,
    topic: &Arc<Topic>,
    partition: i32,
    encoding: Encoding,
    offset: i64,
) -> Joined {
    let key = Key {
        topic_id: topic.id,
        partition,
        encoding,
    };
    let feed = FEEDS.with(|feeds| {
        let mut feeds = feeds.borrow_mut();
        if let Some(feed) = feeds.get(&key) {
            return feed.clone();
        }
        let feed = Rc::new(Feed {
            history: RefCell::new(History::default()),
            stopped: Cell::new(false),
            position: watch::channel(offset).0,
            subscribers: Cell::new(0),
        });
        feeds.insert(key.clone(), feed.clone());
        broker.metrics.ws_feeds.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_local(run(broker.clone(), topic.clone(), key, feed.clone()));
        feed
    });
    feed.subscribers.set(feed.subscribers.get() + 1);
    Joined { feed }
}

async fn run(broker: Arc<Broker>, topic: Arc<Topic>, key: Key, feed: Rc<Feed>) {
    let limit = broker.config.ws_feed_buffer_bytes;
    let items_max = broker.config.ws_feed_buffer_messages.max(1);
    loop {
        // Nobody follows it any more: stop.
        if feed.subscribers.get() == 0 {
            break;
        }
        let position = *feed.position.borrow();
        let (item, end) = match read(&broker, &topic, key.partition, position, key.encoding).await {
            Ok(read) => read,
            // Deleted, truncated past us, unreadable: the subscribers find out on their own
            // reads once this feed is gone.
            Err(_) => break,
        };
        if item.next > position {
            let next = item.next;
            if !item.spans.is_empty() {
                broker
                    .metrics
                    .ws_feed_messages
                    .fetch_add(1, Ordering::Relaxed);
            }
            // An item of transaction markers only has no frame, and keeps the history
            // contiguous past them.
            let mut history = feed.history.borrow_mut();
            history.bytes += item.held_bytes();
            history.items.push_back(Arc::new(item));
            while (history.bytes > limit || history.items.len() > items_max)
                && history.items.len() > 1
            {
                if let Some(old) = history.items.pop_front() {
                    history.bytes -= old.held_bytes();
                }
            }
            drop(history);
            feed.position.send_replace(next);
            continue;
        }
        // Nothing new: sleep until the log end moves (or check for subscribers now and then).
        match end {
            Some(mut end) => {
                let _ = tokio::time::timeout(FEED_IDLE_CHECK, end.changed()).await;
            }
            None => tokio::time::sleep(FEED_IDLE_CHECK).await,
        }
    }
    FEEDS.with(|feeds| feeds.borrow_mut().remove(&key));
    broker.metrics.ws_feeds.fetch_sub(1, Ordering::Relaxed);
    // Wake every subscriber still waiting on it: they see it stopped.
    feed.stopped.set(true);
    feed.position.send_modify(|_| {});
}

thread_local! {
    /// Reads of subscribers behind their feed on this shard (made on first use).
    static CATCHING_UP: RefCell<Option<Arc<tokio::sync::Semaphore>>> = const { RefCell::new(None) };
}

/// A permit for one catch-up read and its write (`ws_catchup_reads` at once per shard), so
/// subscribers far behind cannot each hold a read's worth of records in memory.
pub(crate) async fn catch_up_permit(broker: &Broker) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let semaphore = CATCHING_UP.with(|s| {
        s.borrow_mut()
            .get_or_insert_with(|| {
                Arc::new(tokio::sync::Semaphore::new(
                    broker.config.ws_catchup_reads.max(1),
                ))
            })
            .clone()
    });
    semaphore.acquire_owned().await.ok()
}
