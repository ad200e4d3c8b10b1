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
use tokio::sync::watch;

use serde_json::json;
use weir_broker::topics::Topic;

use super::feed::{self, records_frame, Item, Next};
use super::Writer;
use crate::broker::Broker;
use crate::gateway::records::Encoding;

/// A running subscription. Dropping it stops the stream between two writes, never in the
/// middle of a frame (which would leave the client's stream corrupt); [`Running::kill`] is for
/// a connection that is closing anyway.
pub(crate) struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Running {
    pub fn kill(self) {
        self.task.abort();
    }

    /// Whether it ended on its own (its partition went away).
    pub fn ended(&self) -> bool {
        self.task.is_finished()
    }
}

/// Starts streaming the partition from `offset`; `end` is its log end as the subscription
/// starts, where a new live feed begins (one behind it reads the log until it gets there).
#[allow(clippy::too_many_arguments)]
pub(crate) fn start(
    broker: Arc<Broker>,
    writer: Rc<Writer>,
    topic: Arc<Topic>,
    partition: i32,
    encoding: Encoding,
    offset: i64,
    end: i64,
) -> Running {
    let (stop, stopped) = watch::channel(false);
    let task = tokio::task::spawn_local(run(
        broker, writer, topic, partition, encoding, offset, end, stopped,
    ));
    Running { stop, task }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    broker: Arc<Broker>,
    writer: Rc<Writer>,
    topic: Arc<Topic>,
    partition: i32,
    encoding: Encoding,
    mut offset: i64,
    end: i64,
    mut stop: watch::Receiver<bool>,
) {
    let metrics = &broker.metrics;
    metrics.ws_subscriptions.fetch_add(1, Ordering::Relaxed);
    let _gone = scopeguard(|| {
        metrics.ws_subscriptions.fetch_sub(1, Ordering::Relaxed);
    });
    let mut joined: Option<(feed::Joined, watch::Receiver<i64>)> = None;
    // Whether the last records came from the feed (for counting falls behind it).
    let mut live = false;
    // Waits for `future` unless the subscription is stopped first (None).
    macro_rules! unless_stopped {
        ($future:expr) => {
            tokio::select! {
                out = $future => Some(out),
                _ = stop.wait_for(|s| *s) => None,
            }
        };
    }
    loop {
        if *stop.borrow() {
            return;
        }
        // A stopped feed answers Behind: our own read then says what happened to the
        // partition, before a new feed is joined.
        let (feed, position) = match &mut joined {
            Some((joined, position)) => (joined.feed.clone(), position),
            None => {
                let joining = feed::join(&broker, &topic, partition, encoding, offset.max(end));
                let position = joining.feed.watch();
                let (joining, position) = joined.insert((joining, position));
                (joining.feed.clone(), position)
            }
        };
        // Seen before looking, so a message added after the look wakes the wait below.
        position.borrow_and_update();
        match feed.after(offset, broker.config.ws_write_max_bytes) {
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
                if live && !feed.stopped() {
                    metrics.ws_lagged.fetch_add(1, Ordering::Relaxed);
                }
                live = false;
                let Some(Some(_permit)) = unless_stopped!(feed::catch_up_permit(&broker)) else {
                    return;
                };
                let Some(read) =
                    unless_stopped!(feed::read(&broker, &topic, partition, offset, encoding))
                else {
                    return;
                };
                match read {
                    Err(code) => {
                        let message = json!({
                            "type": "error",
                            "error": "subscription_ended",
                            "topic": topic.name,
                            "partition": partition,
                            "message": format!(
                                "reading from offset {offset} failed (Kafka error code {code}): \
                                 the topic was deleted, the offset is no longer in the log, or \
                                 its records cannot be read"
                            ),
                        });
                        writer.send_text(&message.to_string()).await;
                        return;
                    }
                    Ok((item, _)) if item.next > offset => {
                        if !item.frame.is_empty() && !writer.send(&item.frame).await {
                            return;
                        }
                        offset = item.next;
                        // A feed that stopped on a passing error is replaced now, not only
                        // once this subscriber has read its way to the log end.
                        if feed.stopped() {
                            joined = None;
                        }
                    }
                    // Nothing at our offset in the log yet, though the feed stands further on
                    // (it started at a later log end): wait for records like anyone else.
                    // The partition is readable but has nothing new: a feed that stopped is
                    // replaced; one that stands further on (it started at a later log end) is
                    // waited for, like by anyone else.
                    Ok(_) if feed.stopped() => joined = None,
                    Ok(_) => {
                        drop(_permit);
                        if unless_stopped!(position.changed()).is_none() {
                            return;
                        }
                    }
                }
            }
            Next::UpToDate => {
                // Woken by a new message, or by the feed stopping (then `after` answers
                // Behind). Our handle keeps the watch open, so it cannot close under us.
                if unless_stopped!(position.changed()).is_none() {
                    return;
                }
            }
        }
    }
}

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
        self.next = item.next;
        if item.frame.is_empty() {
            // Transaction markers only: nothing to show.
            return;
        }
        let part = if item.first >= offset {
            Part::Shared(item.clone())
        } else {
            let mut later = item.records_from(offset).peekable();
            if later.peek().is_none() {
                // Only transaction markers after the offset.
                return;
            }
            Part::Own(records_frame(topic, partition, later).0)
        };
        self.parts.push(part);
    }

    async fn send(&self, writer: &Writer) -> bool {
        if self.parts.is_empty() {
            return true;
        }
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
