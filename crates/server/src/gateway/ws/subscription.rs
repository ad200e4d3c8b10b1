//! One subscriber's stream of one partition: catch up with its own reads from its offset,
//! then follow the shard's live feed; back to its own reads whenever it falls behind the feed
//! (paused at its offset, never buffered for).
//!
//! A subscriber that is behind the feed but still inside its ring takes every frame that is
//! waiting and writes them in one call: the more subscribers there are, the fewer, larger
//! writes each makes, instead of one system call per message per subscriber.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::json;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use weir_broker::topics::Topic;

use super::feed::{self, records_frame, Item};
use super::Writer;
use crate::broker::Broker;
use crate::gateway::records::Encoding;

/// Most bytes of waiting frames a subscriber writes in one go.
const BATCH_BYTES_MAX: usize = 256 * 1024;

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
    loop {
        // Catch up: read from our offset until there is nothing more.
        loop {
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
                Ok((item, _)) => {
                    if item.next <= offset {
                        break;
                    }
                    if !item.spans.is_empty() && !writer.send(&item.frame).await {
                        return;
                    }
                    offset = item.next;
                }
            }
        }
        // Live: follow the shard's feed of the partition.
        let mut live = feed::subscribe(&broker, &topic, partition, encoding, offset);
        loop {
            let mut batch = Batch::default();
            let mut next = Some(live.recv().await);
            let mut rejoin = false;
            while let Some(received) = next.take() {
                let item = match received {
                    Ok(item) => item,
                    // Fell behind the feed's ring: paused at `offset`, read on our own again.
                    Err(RecvError::Lagged(_)) => {
                        metrics.ws_lagged.fetch_add(1, Ordering::Relaxed);
                        rejoin = true;
                        break;
                    }
                    // The feed stopped (its partition is gone or unreadable): our own read says.
                    Err(RecvError::Closed) => {
                        rejoin = true;
                        break;
                    }
                };
                if item.first > offset {
                    // Records between our offset and the feed's: read them ourselves.
                    rejoin = true;
                    break;
                }
                if item.next > offset {
                    batch.add(&topic.name, partition, item, offset);
                    offset = batch.next;
                }
                if batch.bytes < BATCH_BYTES_MAX {
                    next = match live.try_recv() {
                        Err(TryRecvError::Empty) => None,
                        Ok(item) => Some(Ok(item)),
                        Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
                        Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
                    };
                }
            }
            if !batch.parts.is_empty() && !batch.send(&writer).await {
                return;
            }
            if rejoin {
                break;
            }
        }
    }
}

/// Frames gathered for one write: whole feed frames, or a frame of an item's later records
/// (a subscriber that joined in the middle of one).
#[derive(Default)]
struct Batch {
    parts: Vec<Part>,
    bytes: usize,
    next: i64,
}

enum Part {
    Shared(Arc<Item>),
    Own(Vec<u8>),
}

impl Batch {
    fn add(&mut self, topic: &str, partition: i32, item: Arc<Item>, offset: i64) {
        let part = if item.first == offset {
            Part::Shared(item.clone())
        } else {
            Part::Own(records_frame(topic, partition, item.records_from(offset)).0)
        };
        self.bytes += match &part {
            Part::Shared(item) => item.frame.len(),
            Part::Own(frame) => frame.len(),
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
