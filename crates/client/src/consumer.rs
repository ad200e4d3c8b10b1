//! The consumer: a group member ([`Consumer::subscribe`]) or a reader of chosen partitions
//! ([`Consumer::assign`]). Offsets are committed when the application says so.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::{Offset, TopicPartitionList};

use crate::error::{Error, Result};
use crate::shared::{blocking, Ctx, Shared};
use crate::Config;

/// librdkafka settings every Weir consumer starts from (a [`Config::set`] overrides them).
pub const CONSUMER_DEFAULTS: [(&str, &str); 2] = [
    // At least once: an offset is committed after the application handled the record.
    ("enable.auto.commit", "false"),
    ("enable.partition.eof", "false"),
];

/// How long one wait for a record lasts before the breaker is consulted again.
const RECV_SLICE: Duration = Duration::from_millis(200);

/// Where an assigned consumer starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Beginning,
    End,
    /// This offset in every partition.
    Offset(i64),
    /// The first record at or after this time (milliseconds since the epoch).
    Time(i64),
}

/// A record read from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Milliseconds since the epoch, as the record carries it.
    pub timestamp: Option<i64>,
}

impl Message {
    /// An owned copy of a record librdkafka lent us.
    pub(crate) fn copy_of(m: &impl rdkafka::message::Message) -> Message {
        let headers = m.headers().map_or_else(Vec::new, |h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                .collect()
        });
        Message {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
            timestamp: m.timestamp().to_millis(),
        }
    }
}

/// A consumer.
pub struct Consumer {
    inner: Arc<StreamConsumer<Ctx>>,
    shared: Arc<Shared>,
    request_timeout: Duration,
}

impl Consumer {
    fn create(config: &Config, group: Option<&str>) -> Result<Consumer> {
        let ctx = Ctx::new(config);
        let mut rd = config.rdkafka(&CONSUMER_DEFAULTS);
        // librdkafka wants a group id even to assign partitions; one that never joins or
        // commits leaves no trace on the broker.
        rd.set("group.id", group.unwrap_or("weir-assign"));
        let inner: StreamConsumer<Ctx> = ctx.create(&rd)?;
        Ok(Consumer {
            inner: Arc::new(inner),
            shared: ctx.shared,
            request_timeout: config.request_timeout,
        })
    }

    /// Joins `group` and consumes `topics` from the partitions the group assigns. A partition
    /// without a committed offset starts at `auto.offset.reset` (Kafka's default, `latest`,
    /// unless [`Config::set`] says otherwise).
    pub async fn subscribe(config: &Config, group: &str, topics: &[&str]) -> Result<Consumer> {
        let consumer = Consumer::create(config, Some(group))?;
        consumer.shared.connect(consumer.probe()).await?;
        consumer
            .inner
            .subscribe(topics)
            .map_err(|e| Error::kafka(format!("subscribe to {topics:?}"), &e))?;
        Ok(consumer)
    }

    /// Reads every partition of `topic` from `start`, outside any group.
    pub async fn assign(config: &Config, topic: &str, start: Start) -> Result<Consumer> {
        let consumer = Consumer::create(config, None)?;
        consumer.shared.connect(consumer.probe()).await?;
        let inner = consumer.inner.clone();
        let topic = topic.to_string();
        let timeout = consumer.request_timeout;
        blocking(move || {
            let metadata = inner
                .fetch_metadata(Some(&topic), timeout)
                .map_err(|e| Error::kafka(format!("topic {topic}"), &e))?;
            let partitions = match metadata.topics().first() {
                Some(t) => match t.error() {
                    Some(code) => return Err(Error::code(format!("topic {topic}"), code.into())),
                    None => t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>(),
                },
                None => {
                    let code = rdkafka::error::RDKafkaErrorCode::UnknownTopicOrPartition;
                    return Err(Error::code(format!("topic {topic}"), code));
                }
            };
            let mut list = TopicPartitionList::new();
            for p in partitions {
                let offset = match start {
                    Start::Beginning => Offset::Beginning,
                    Start::End => Offset::End,
                    Start::Offset(n) => Offset::Offset(n),
                    Start::Time(ms) => Offset::Offset(ms),
                };
                list.add_partition_offset(&topic, p, offset)
                    .map_err(|e| Error::kafka("assign", &e))?;
            }
            if let Start::Time(_) = start {
                list = inner
                    .offsets_for_times(list, timeout)
                    .map_err(|e| Error::kafka(format!("offsets by time in {topic}"), &e))?;
            }
            inner
                .assign(&list)
                .map_err(|e| Error::kafka(format!("assign {topic}"), &e))
        })
        .await?;
        Ok(consumer)
    }

    /// Reads the given (topic, partition, offset)s, outside any group.
    pub async fn assign_partitions(config: &Config, at: &[(String, i32, i64)]) -> Result<Consumer> {
        let consumer = Consumer::create(config, None)?;
        consumer.shared.connect(consumer.probe()).await?;
        let inner = consumer.inner.clone();
        let at = at.to_vec();
        blocking(move || {
            let mut list = TopicPartitionList::new();
            for (topic, partition, offset) in &at {
                list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                    .map_err(|e| Error::kafka("assign", &e))?;
            }
            inner.assign(&list).map_err(|e| Error::kafka("assign", &e))
        })
        .await?;
        Ok(consumer)
    }

    /// The next record. Fails fast while the broker is unreachable.
    pub async fn recv(&self) -> Result<Message> {
        loop {
            if let Some(message) = self.recv_timeout(RECV_SLICE).await? {
                return Ok(message);
            }
        }
    }

    /// The next record, or `None` if none arrives within `wait`.
    pub async fn recv_timeout(&self, wait: Duration) -> Result<Option<Message>> {
        self.shared.admit(self.probe()).await?;
        match tokio::time::timeout(wait, self.inner.recv()).await {
            Err(_) => Ok(None),
            Ok(Err(e)) => {
                // librdkafka hands transport trouble to the consumer too; it reconnects by
                // itself, and the breaker decides when waiting has lasted too long.
                let e = Error::kafka("consume", &e);
                if e.is_retriable() {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
            Ok(Ok(m)) => {
                self.shared.succeeded();
                Ok(Some(Message::copy_of(&m)))
            }
        }
    }

    /// Commits `message` as handled: the group resumes after it.
    pub async fn commit(&self, message: &Message) -> Result<()> {
        self.commit_offsets(&[(message.topic.clone(), message.partition, message.offset + 1)])
            .await
    }

    /// Commits (topic, partition, next offset to read) for the group, waiting for the broker.
    pub async fn commit_offsets(&self, offsets: &[(String, i32, i64)]) -> Result<()> {
        let inner = self.inner.clone();
        let offsets = offsets.to_vec();
        blocking(move || {
            let mut list = TopicPartitionList::new();
            for (topic, partition, offset) in &offsets {
                list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                    .map_err(|e| Error::kafka("commit", &e))?;
            }
            inner
                .commit(&list, CommitMode::Sync)
                .map_err(|e| Error::kafka("commit", &e))
        })
        .await
    }

    fn probe(&self) -> impl FnOnce() -> Result<()> + Send + 'static {
        let inner = self.inner.clone();
        let timeout = self.request_timeout;
        move || {
            inner
                .fetch_metadata(None, timeout)
                .map(drop)
                .map_err(|e| Error::kafka("metadata", &e))
        }
    }
}
