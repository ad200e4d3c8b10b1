//! One subscriber's stream of one partition: catch up with its own reads from its offset,
//! then follow the shard's live feed; back to its own reads whenever it falls behind the feed
//! (paused at its offset, never buffered for).

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use weir_broker::topics::Topic;

use super::feed::{self, records_frame};
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
                    if !item.records.is_empty() && !writer.send(&item.frame).await {
                        return;
                    }
                    offset = item.next;
                }
            }
        }
        // Live: follow the shard's feed of the partition.
        let mut live = feed::subscribe(&broker, &topic, partition, encoding, offset);
        loop {
            let item = match live.recv().await {
                Ok(item) => item,
                // Fell behind the feed's ring: paused at `offset`, read on our own again.
                Err(RecvError::Lagged(_)) => {
                    metrics.ws_lagged.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                // The feed stopped (its partition is gone or unreadable): our own read says.
                Err(RecvError::Closed) => break,
            };
            if item.next <= offset {
                continue;
            }
            if item.first > offset {
                // Records between our offset and the feed's: read them ourselves.
                break;
            }
            let sent = if item.first == offset {
                writer.send(&item.frame).await
            } else {
                let frame = records_frame(
                    &topic.name,
                    partition,
                    item.records
                        .iter()
                        .filter(|(o, _)| *o >= offset)
                        .map(|(_, r)| r.as_str()),
                );
                writer.send(&frame).await
            };
            if !sent {
                return;
            }
            offset = item.next;
        }
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
