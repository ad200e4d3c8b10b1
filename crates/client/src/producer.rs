//! The producer: idempotent, keys partitioned like the Java client, and failing fast while the
//! broker is unreachable.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::DeliveryFuture;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};

use crate::error::{Error, Result};
use crate::shared::{Ctx, Shared};
use crate::Config;

/// librdkafka settings every Weir producer starts from (a [`Config::set`] overrides them).
pub const PRODUCER_DEFAULTS: [(&str, &str); 4] = [
    // Retries cannot duplicate or reorder records.
    ("enable.idempotence", "true"),
    // Java's default: murmur2 of the key; keyless records spread at random. Keys land where
    // Java, kafka-python and kafkajs put them (librdkafka's own default is crc32).
    ("partitioner", "murmur2_random"),
    // Longer than the breaker's grace, so a broker restart is ridden out, not failed.
    ("message.timeout.ms", "60000"),
    ("linger.ms", "5"),
];

/// One record to send. Borrowed: nothing is copied until librdkafka copies it into its queue.
#[derive(Debug, Clone, Default)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a str, &'a [u8])>,
    /// Chosen by the partitioner from the key when `None`.
    pub partition: Option<i32>,
    /// Milliseconds since the epoch; the send time when `None`.
    pub timestamp: Option<i64>,
}

impl<'a> Record<'a> {
    pub fn new(topic: &'a str) -> Record<'a> {
        Record {
            topic,
            ..Record::default()
        }
    }

    pub fn key(mut self, key: &'a [u8]) -> Record<'a> {
        self.key = Some(key);
        self
    }

    pub fn value(mut self, value: &'a [u8]) -> Record<'a> {
        self.value = Some(value);
        self
    }

    pub fn header(mut self, key: &'a str, value: &'a [u8]) -> Record<'a> {
        self.headers.push((key, value));
        self
    }

    pub fn partition(mut self, partition: i32) -> Record<'a> {
        self.partition = Some(partition);
        self
    }

    pub fn timestamp(mut self, millis: i64) -> Record<'a> {
        self.timestamp = Some(millis);
        self
    }
}

/// How long `send` waits before retrying a record that found librdkafka's queue full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(1);

/// A queued record's acknowledgement, to await.
pub struct Pending {
    delivery: DeliveryFuture,
    shared: Arc<Shared>,
    topic: String,
}

impl Future for Pending {
    type Output = Result<Delivered>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Delivered>> {
        let answer = match Pin::new(&mut self.delivery).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(answer) => answer,
        };
        Poll::Ready(match answer {
            Ok(Ok(delivery)) => {
                self.shared.succeeded();
                Ok(Delivered {
                    partition: delivery.partition,
                    offset: delivery.offset,
                })
            }
            Ok(Err((e, _))) => Err(Error::kafka(format!("send to {}", self.topic), &e)),
            // librdkafka dropped the record without a report: only when the producer is dropped.
            Err(_) => Err(Error::Invalid(format!(
                "send to {}: the producer was closed before the record was acknowledged",
                self.topic
            ))),
        })
    }
}

/// Where an acknowledged record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// A producer. Cheap to clone; clones share one connection and one queue.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer<Ctx>,
    shared: Arc<Shared>,
    request_timeout: Duration,
}

impl Producer {
    /// Creates a producer and waits for the broker's first answer: an unreachable broker is
    /// an error here, not a record that waits a minute to fail.
    pub async fn connect(config: &Config) -> Result<Producer> {
        let ctx = Ctx::new(config);
        let inner: FutureProducer<Ctx> = ctx.create(&config.rdkafka(&PRODUCER_DEFAULTS))?;
        let producer = Producer {
            inner,
            shared: ctx.shared,
            request_timeout: config.request_timeout,
        };
        producer.shared.connect(producer.probe()).await?;
        Ok(producer)
    }

    /// Sends one record and waits for its acknowledgement. Waits for room while librdkafka's
    /// queue (`queue.buffering.max.messages`) is full; fails at once while the breaker is open.
    pub async fn send(&self, record: &Record<'_>) -> Result<Delivered> {
        loop {
            match self.enqueue(record).await {
                Ok(pending) => return pending.await,
                Err(e) if e.error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues one record and returns at once; the [`Pending`] resolves when the broker has
    /// acknowledged it. Records queued one after another keep their order within a partition.
    /// A full queue is the error `QueueFull`: await an earlier `Pending` and try again.
    pub async fn enqueue(&self, record: &Record<'_>) -> Result<Pending> {
        self.shared.admit(self.probe()).await?;
        let mut future = FutureRecord::<[u8], [u8]>::to(record.topic);
        if let Some(key) = record.key {
            future = future.key(key);
        }
        if let Some(value) = record.value {
            future = future.payload(value);
        }
        if let Some(partition) = record.partition {
            future = future.partition(partition);
        }
        if let Some(timestamp) = record.timestamp {
            future = future.timestamp(timestamp);
        }
        if !record.headers.is_empty() {
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for (key, value) in &record.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(*value),
                });
            }
            future = future.headers(headers);
        }
        match self.inner.send_result(future) {
            Ok(delivery) => Ok(Pending {
                delivery,
                shared: self.shared.clone(),
                topic: record.topic.to_string(),
            }),
            Err((e, _)) => Err(Error::kafka(format!("send to {}", record.topic), &e)),
        }
    }

    /// Waits until every queued record is acknowledged or has failed.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.inner
            .flush(timeout)
            .map_err(|e| Error::kafka("flush", &e))
    }

    /// Records queued or unacknowledged.
    pub fn in_flight(&self) -> i32 {
        self.inner.in_flight_count()
    }

    fn probe(&self) -> impl FnOnce() -> Result<()> + Send + 'static {
        let inner = self.inner.clone();
        let timeout = self.request_timeout;
        move || {
            inner
                .client()
                .fetch_metadata(None, timeout)
                .map(drop)
                .map_err(|e| Error::kafka("metadata", &e))
        }
    }
}
