//! One subscriber's stream of one partition: catch up with its own reads from its offset,
//! then follow the shard's live feed; back to its own reads whenever it falls behind the feed
//! (paused at its offset, never buffered for).
//!
//! A subscriber that is behind the feed but still inside what it holds takes every message
//! that is waiting and writes them in one call: the more subscribers there are, the fewer,
//! larger writes each makes, instead of one system call per message per subscriber.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::json;
use weir_broker::topics::Topic;

use super::feed::{self, records_frame, Item, Next};
use super::Writer;
use crate::broker::Broker;
use crate::gateway::records::Encoding;

pub(crate) async fn run(
    broker: Arc<Broker>,
    writer: Rc<Writer>,
    topic: Arc<Topic>,
    partition: i32,
    encoding: Encoding,
    mut offset: i64,
) {
    let metrics = &broker.metrics;
    metrics.ws_subscriptions.fetch_add(1, Ordering::Relaxed);
    let _gone = scopeguard(|| {
        metrics.ws_subscriptions.fetch_sub(1, Ordering::Relaxed);
    });
    let mut joined: Option<(feed::Joined, tokio::sync::watch::Receiver<i64>)> = None;
    // Whether the last records came from the feed (for counting falls behind it).
    let mut live = false;
    loop {
        let (feed, position) = match &mut joined {
            Some((joined, position)) => (joined.feed.clone(), position),
            None => {
                let joining = feed::join(&broker, &topic, partition, encoding, offset);
                let position = joining.feed.watch();
                let (joining, position) = joined.insert((joining, position));
                (joining.feed.clone(), position)
            }
        };
        // Seen before looking, so a message added after the look wakes the wait below.
        position.borrow_and_update();
        match feed.after(offset, BATCH_BYTES_MAX) {
            Next::Items(items, next) => {
                live = true;
                let mut batch = Batch::default();
                for item in items {
                    batch.add(&topic.name, partition, item, offset);
                    offset = batch.next;
                }
                if !batch.send(&writer).await {
                    return;
                }
                debug_assert_eq!(offset, next);
            }
            Next::Behind => {
                if live {
                    metrics.ws_lagged.fetch_add(1, Ordering::Relaxed);
                    live = false;
                }
                let Some(_permit) = feed::catch_up_permit(&broker).await else {
                    return;
                };
                match feed::read(&broker, &topic, partition, offset, encoding).await {
                    Err(code) => {
                        let message = json!({
                            "type": "error",
                            "error": "subscription_ended",
                            "topic": topic.name,
                            "partition": partition,
                            "message": format!(
                                "reading from offset {offset} failed (Kafka error code {code}): \
                                 the topic was deleted or the offset is no longer in the log"
                            ),
                        });
                        writer.send_text(&message.to_string()).await;
                        return;
                    }
                    Ok((item, _)) if item.next > offset => {
                        if !item.spans.is_empty() && !writer.send(&item.frame).await {
                            return;
                        }
                        offset = item.next;
                    }
                    // Nothing at our offset in the log yet, though the feed is past it: the
                    // feed was started further on. Wait for records like anyone else.
                    Ok(_) => {
                        drop(_permit);
                        if position.changed().await.is_err() {
                            joined = None;
                        }
                    }
                }
            }
            Next::UpToDate => {
                // The feed stopped (its partition is gone, or it was idle with no subscriber
                // for a moment): join it again, which says what happened.
                if position.changed().await.is_err() {
                    joined = None;
                }
            }
        }
    }
}

/// Most bytes of waiting messages a subscriber writes in one go.
const BATCH_BYTES_MAX: usize = 256 * 1024;

/// Frames gathered for one write: whole feed frames, or a frame of an item's later records
/// (a subscriber that joined in the middle of one).
#[derive(Default)]
struct Batch {
    parts: Vec<Part>,
    next: i64,
}

enum Part {
    Shared(Arc<Item>),
    Own(Vec<u8>),
}

impl Batch {
    fn add(&mut self, topic: &str, partition: i32, item: Arc<Item>, offset: i64) {
        let part = if item.first >= offset {
            Part::Shared(item.clone())
        } else {
            Part::Own(records_frame(topic, partition, item.records_from(offset)).0)
        };
        self.next = item.next;
        self.parts.push(part);
    }

    async fn send(&self, writer: &Writer) -> bool {
        let slices: Vec<&[u8]> = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Shared(item) => item.frame.as_slice(),
                Part::Own(frame) => frame.as_slice(),
            })
            .collect();
        writer.send_all(&slices).await
    }
}

/// Runs `f` when dropped (when the subscription ends or is aborted).
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
