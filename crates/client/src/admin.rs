//! Topic and group administration, with retries around every call.

use std::sync::Arc;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::consumer::{Start, CONSUMER_DEFAULTS};
use crate::error::{Error, Result};
use crate::shared::{blocking, Ctx, Shared};
use crate::Config;

/// A topic and its partition count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSummary {
    pub name: String,
    pub partitions: usize,
}

/// One partition: its leader and the offsets it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
    /// The first offset still stored.
    pub earliest: i64,
    /// The offset the next record gets.
    pub latest: i64,
}

/// A topic config as the broker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigValue {
    pub name: String,
    pub value: Option<String>,
    /// Set on this topic, rather than inherited from the broker's defaults.
    pub overridden: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub name: String,
    pub partitions: Vec<PartitionInfo>,
    pub configs: Vec<ConfigValue>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
    pub members: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub client_id: String,
    pub host: String,
    /// (topic, partitions) this member consumes.
    pub assignment: Vec<(String, Vec<i32>)>,
}

/// A committed offset and how far behind the partition's end it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
    pub end: i64,
    pub lag: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group: String,
    pub state: String,
    /// The assignor the members agreed on ("range", "cooperative-sticky", …).
    pub protocol: String,
    pub members: Vec<MemberDescription>,
    pub offsets: Vec<GroupOffset>,
}

/// The admin client.
pub struct Admin {
    inner: Arc<AdminClient<Ctx>>,
    /// Metadata and offsets go through a consumer handle: the admin handle's metadata
    /// requests would auto-create the topic they ask about.
    reader: Arc<BaseConsumer<Ctx>>,
    shared: Arc<Shared>,
    config: Config,
}

impl Admin {
    /// Creates an admin client and waits for the broker's first answer.
    pub async fn connect(config: &Config) -> Result<Admin> {
        let ctx = Ctx::new(config);
        let inner: AdminClient<Ctx> = ctx.create(&config.rdkafka(&[]))?;
        let mut rd = config.rdkafka(&CONSUMER_DEFAULTS);
        rd.set("allow.auto.create.topics", "false");
        let reader: BaseConsumer<Ctx> = ctx.create(&rd)?;
        let admin = Admin {
            inner: Arc::new(inner),
            reader: Arc::new(reader),
            shared: ctx.shared,
            config: config.clone(),
        };
        admin.shared.connect(admin.probe()).await?;
        Ok(admin)
    }

    /// Creates `name` with `partitions` partitions and topic configs (Kafka names:
    /// `retention.ms`, `segment.bytes`, …).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: &[(String, String)],
    ) -> Result<()> {
        let what = format!("create topic {name}");
        self.retry(|| async {
            let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
            for (key, value) in configs {
                topic = topic.set(key, value);
            }
            let results = self
                .inner
                .create_topics([&topic], &self.options())
                .await
                .map_err(|e| Error::kafka(&what, &e))?;
            one_result(&what, results)
        })
        .await
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let what = format!("delete topic {name}");
        self.retry(|| async {
            let results = self
                .inner
                .delete_topics(&[name], &self.options())
                .await
                .map_err(|e| Error::kafka(&what, &e))?;
            one_result(&what, results)
        })
        .await
    }

    /// Every topic, by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicSummary>> {
        let inner = self.reader.clone();
        let timeout = self.config.request_timeout;
        let mut topics = self
            .retry(|| {
                let inner = inner.clone();
                blocking(move || {
                    let metadata = inner
                        .fetch_metadata(None, timeout)
                        .map_err(|e| Error::kafka("list topics", &e))?;
                    Ok(metadata
                        .topics()
                        .iter()
                        .map(|t| TopicSummary {
                            name: t.name().to_string(),
                            partitions: t.partitions().len(),
                        })
                        .collect::<Vec<_>>())
                })
            })
            .await?;
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// Partitions with their offsets, and the topic's configs.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let partitions = self.partitions(name).await?;
        let what = format!("describe configs of {name}");
        let configs = self
            .retry(|| async {
                let results = self
                    .inner
                    .describe_configs([&ResourceSpecifier::Topic(name)], &self.options())
                    .await
                    .map_err(|e| Error::kafka(&what, &e))?;
                let resource = match results.into_iter().next() {
                    Some(Ok(resource)) => resource,
                    Some(Err(code)) => return Err(Error::code(&what, code)),
                    None => return Err(Error::Invalid(format!("{what}: no answer"))),
                };
                let mut configs: Vec<ConfigValue> = resource
                    .entries
                    .into_iter()
                    .map(|e| ConfigValue {
                        overridden: e.source == ConfigSource::DynamicTopic,
                        name: e.name,
                        value: e.value,
                    })
                    .collect();
                configs.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(configs)
            })
            .await?;
        Ok(TopicDescription {
            name: name.to_string(),
            partitions,
            configs,
        })
    }

    /// Sets topic configs (others set before are kept) and grows the partition count.
    pub async fn alter_topic(
        &self,
        name: &str,
        set: &[(String, String)],
        partitions: Option<i32>,
    ) -> Result<()> {
        if !set.is_empty() {
            // AlterConfigs replaces a topic's whole config: carry over what is already set.
            let current = self.describe_topic(name).await?;
            let mut merged: Vec<(String, String)> = current
                .configs
                .into_iter()
                .filter(|c| c.overridden && !set.iter().any(|(k, _)| *k == c.name))
                .filter_map(|c| Some((c.name, c.value?)))
                .collect();
            merged.extend(set.iter().cloned());
            let what = format!("alter configs of {name}");
            self.retry(|| async {
                let mut alter = AlterConfig::new(ResourceSpecifier::Topic(name));
                for (key, value) in &merged {
                    alter = alter.set(key, value);
                }
                let results = self
                    .inner
                    .alter_configs([&alter], &self.options())
                    .await
                    .map_err(|e| Error::kafka(&what, &e))?;
                match results.into_iter().next() {
                    Some(Ok(_)) => Ok(()),
                    Some(Err((_, code))) => Err(Error::code(&what, code)),
                    None => Err(Error::Invalid(format!("{what}: no answer"))),
                }
            })
            .await?;
        }
        if let Some(count) = partitions {
            let what = format!("set partitions of {name} to {count}");
            let count = usize::try_from(count)
                .map_err(|_| Error::code(&what, RDKafkaErrorCode::InvalidPartitions))?;
            self.retry(|| async {
                let results = self
                    .inner
                    .create_partitions([&NewPartitions::new(name, count)], &self.options())
                    .await
                    .map_err(|e| Error::kafka(&what, &e))?;
                one_result(&what, results)
            })
            .await?;
        }
        Ok(())
    }

    /// Every consumer group.
    pub async fn list_groups(&self) -> Result<Vec<GroupSummary>> {
        let inner = self.inner.clone();
        let timeout = self.config.request_timeout;
        let mut groups = self
            .retry(|| {
                let inner = inner.clone();
                blocking(move || {
                    let list = inner
                        .inner()
                        .fetch_group_list(None, timeout)
                        .map_err(|e| Error::kafka("list groups", &e))?;
                    Ok(list
                        .groups()
                        .iter()
                        .map(|g| GroupSummary {
                            group: g.name().to_string(),
                            state: g.state().to_string(),
                            protocol_type: g.protocol_type().to_string(),
                            members: g.members().len(),
                        })
                        .collect::<Vec<_>>())
                })
            })
            .await?;
        groups.sort_by(|a, b| a.group.cmp(&b.group));
        Ok(groups)
    }

    /// A group's members and assignments, and its committed offsets with their lag.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let inner = self.inner.clone();
        let timeout = self.config.request_timeout;
        let what = format!("describe group {group}");
        let (state, protocol, members) = self
            .retry(|| {
                let (inner, group, what) = (inner.clone(), group.to_string(), what.clone());
                blocking(move || {
                    let list = inner
                        .inner()
                        .fetch_group_list(Some(&group), timeout)
                        .map_err(|e| Error::kafka(&what, &e))?;
                    let Some(info) = list.groups().first() else {
                        return Err(Error::code(&what, RDKafkaErrorCode::GroupIdNotFound));
                    };
                    let members = info
                        .members()
                        .iter()
                        .map(|m| MemberDescription {
                            member_id: m.id().to_string(),
                            client_id: m.client_id().to_string(),
                            host: m.client_host().to_string(),
                            assignment: m.assignment().map_or_else(Vec::new, decode_assignment),
                        })
                        .collect::<Vec<_>>();
                    Ok((
                        info.state().to_string(),
                        info.protocol().to_string(),
                        members,
                    ))
                })
            })
            .await?;
        if state == "Dead" {
            return Err(Error::code(&what, RDKafkaErrorCode::GroupIdNotFound));
        }
        let offsets = self.group_offsets(group).await?;
        Ok(GroupDescription {
            group: group.to_string(),
            state,
            protocol,
            members,
            offsets,
        })
    }

    /// Commits new offsets for `group` in every partition of `topic`; the group must have no
    /// members. Returns (partition, new offset).
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: Start,
    ) -> Result<Vec<(i32, i64)>> {
        let what = format!("reset offsets of {group}");
        let described = self.describe_group(group).await;
        match described {
            Ok(d) if !d.members.is_empty() => {
                return Err(Error::code(&what, RDKafkaErrorCode::NonEmptyGroup))
            }
            // A group that never committed does not exist yet: resetting creates its offsets.
            Ok(_) | Err(Error::Kafka { .. }) => {}
            Err(e) => return Err(e),
        }
        let partitions = self.partitions(topic).await?;
        let targets: Vec<(i32, i64)> = match to {
            Start::Beginning => partitions
                .iter()
                .map(|p| (p.partition, p.earliest))
                .collect(),
            Start::End => partitions.iter().map(|p| (p.partition, p.latest)).collect(),
            Start::Offset(n) => partitions
                .iter()
                .map(|p| (p.partition, n.clamp(p.earliest, p.latest)))
                .collect(),
            Start::Time(ms) => self.offsets_for_time(topic, &partitions, ms).await?,
        };
        let consumer = self.group_consumer(group)?;
        let (topic_owned, commit) = (topic.to_string(), targets.clone());
        self.retry(|| {
            let (consumer, topic, commit, what) = (
                consumer.clone(),
                topic_owned.clone(),
                commit.clone(),
                what.clone(),
            );
            blocking(move || {
                let mut list = TopicPartitionList::new();
                for (partition, offset) in &commit {
                    list.add_partition_offset(&topic, *partition, Offset::Offset(*offset))
                        .map_err(|e| Error::kafka(&what, &e))?;
                }
                consumer
                    .commit(&list, CommitMode::Sync)
                    .map_err(|e| Error::kafka(&what, &e))
            })
        })
        .await?;
        Ok(targets)
    }

    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let what = format!("delete group {group}");
        self.retry(|| async {
            let results = self
                .inner
                .delete_groups(&[group], &self.options())
                .await
                .map_err(|e| Error::kafka(&what, &e))?;
            one_result(&what, results)
        })
        .await
    }

    /// Partitions of `topic` with leaders and offsets.
    async fn partitions(&self, topic: &str) -> Result<Vec<PartitionInfo>> {
        let inner = self.reader.clone();
        let timeout = self.config.request_timeout;
        let what = format!("topic {topic}");
        self.retry(|| {
            let (inner, topic, what) = (inner.clone(), topic.to_string(), what.clone());
            blocking(move || {
                let client = inner.client();
                let metadata = client
                    .fetch_metadata(Some(&topic), timeout)
                    .map_err(|e| Error::kafka(&what, &e))?;
                let Some(t) = metadata.topics().first() else {
                    return Err(Error::code(
                        &what,
                        RDKafkaErrorCode::UnknownTopicOrPartition,
                    ));
                };
                if let Some(code) = t.error() {
                    return Err(Error::code(&what, code.into()));
                }
                let mut partitions = Vec::new();
                for p in t.partitions() {
                    let (earliest, latest) = client
                        .fetch_watermarks(&topic, p.id(), timeout)
                        .map_err(|e| Error::kafka(&what, &e))?;
                    partitions.push(PartitionInfo {
                        partition: p.id(),
                        leader: p.leader(),
                        earliest,
                        latest,
                    });
                }
                partitions.sort_by_key(|p| p.partition);
                Ok(partitions)
            })
        })
        .await
    }

    /// Committed offsets of `group` in every partition of every topic, with lag.
    async fn group_offsets(&self, group: &str) -> Result<Vec<GroupOffset>> {
        let topics = self.list_topics().await?;
        let mut all = Vec::new();
        for topic in &topics {
            all.push((topic.name.clone(), self.partitions(&topic.name).await?));
        }
        let consumer = self.group_consumer(group)?;
        let timeout = self.config.request_timeout;
        let what = format!("offsets of {group}");
        self.retry(|| {
            let (consumer, all, what) = (consumer.clone(), all.clone(), what.clone());
            blocking(move || {
                let mut list = TopicPartitionList::new();
                for (topic, partitions) in &all {
                    for p in partitions {
                        list.add_partition(topic, p.partition);
                    }
                }
                let committed = consumer
                    .committed_offsets(list, timeout)
                    .map_err(|e| Error::kafka(&what, &e))?;
                let mut offsets = Vec::new();
                for element in committed.elements() {
                    let Offset::Offset(offset) = element.offset() else {
                        continue;
                    };
                    let end = all
                        .iter()
                        .find(|(t, _)| t == element.topic())
                        .and_then(|(_, ps)| ps.iter().find(|p| p.partition == element.partition()))
                        .map_or(offset, |p| p.latest);
                    offsets.push(GroupOffset {
                        topic: element.topic().to_string(),
                        partition: element.partition(),
                        committed: offset,
                        end,
                        lag: (end - offset).max(0),
                    });
                }
                Ok(offsets)
            })
        })
        .await
    }

    async fn offsets_for_time(
        &self,
        topic: &str,
        partitions: &[PartitionInfo],
        ms: i64,
    ) -> Result<Vec<(i32, i64)>> {
        let consumer = self.group_consumer("")?;
        let timeout = self.config.request_timeout;
        let what = format!("offsets by time in {topic}");
        let (topic, partitions) = (topic.to_string(), partitions.to_vec());
        blocking(move || {
            let mut list = TopicPartitionList::new();
            for p in &partitions {
                list.add_partition_offset(&topic, p.partition, Offset::Offset(ms))
                    .map_err(|e| Error::kafka(&what, &e))?;
            }
            let found = consumer
                .offsets_for_times(list, timeout)
                .map_err(|e| Error::kafka(&what, &e))?;
            Ok(partitions
                .iter()
                .map(|p| {
                    let offset = found
                        .find_partition(&topic, p.partition)
                        .and_then(|e| e.offset().to_raw())
                        .filter(|o| *o >= 0)
                        // No record at or after the time: the end.
                        .unwrap_or(p.latest);
                    (p.partition, offset)
                })
                .collect())
        })
        .await
    }

    /// A consumer that never joins: librdkafka's way to read and commit a group's offsets.
    fn group_consumer(&self, group: &str) -> Result<Arc<BaseConsumer<Ctx>>> {
        let ctx = Ctx::new(&self.config);
        let mut rd = self.config.rdkafka(&CONSUMER_DEFAULTS);
        if !group.is_empty() {
            rd.set("group.id", group);
        }
        Ok(Arc::new(ctx.create(&rd)?))
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new().request_timeout(Some(self.config.request_timeout))
    }

    async fn retry<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.shared.admit(self.probe()).await?;
        let out = self.config.retry.run(Error::is_retriable, op).await;
        if out.is_ok() {
            self.shared.succeeded();
        }
        out
    }

    fn probe(&self) -> impl FnOnce() -> Result<()> + Send + 'static {
        let inner = self.inner.clone();
        let timeout = self.config.request_timeout;
        move || {
            inner
                .inner()
                .fetch_metadata(None, timeout)
                .map(drop)
                .map_err(|e| Error::kafka("metadata", &e))
        }
    }
}

/// The one result of an admin call about one thing.
fn one_result(what: &str, results: Vec<Result<String, (String, RDKafkaErrorCode)>>) -> Result<()> {
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(()),
        Some(Err((_, code))) => Err(Error::code(what, code)),
        None => Err(Error::Invalid(format!("{what}: no answer"))),
    }
}

/// The (topic, partitions) of a consumer-protocol assignment (version, then topics with their
/// partitions, then user data); empty if it does not decode.
fn decode_assignment(bytes: &[u8]) -> Vec<(String, Vec<i32>)> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if bytes.len() < n {
            return None;
        }
        let (head, tail) = bytes.split_at(n);
        *bytes = tail;
        Some(head)
    }
    fn int(bytes: &mut &[u8]) -> Option<i32> {
        Some(i32::from_be_bytes(take(bytes, 4)?.try_into().ok()?))
    }
    fn decode(mut bytes: &[u8]) -> Option<Vec<(String, Vec<i32>)>> {
        let b = &mut bytes;
        take(b, 2)?; // version
        let topics = usize::try_from(int(b)?).ok()?;
        let mut out = Vec::new();
        for _ in 0..topics {
            let len = i16::from_be_bytes(take(b, 2)?.try_into().ok()?);
            let name = String::from_utf8(take(b, usize::try_from(len).ok()?)?.to_vec()).ok()?;
            let count = usize::try_from(int(b)?).ok()?;
            // Each partition is 4 bytes: a count larger than the rest is a lie.
            if count > b.len() / 4 {
                return None;
            }
            let partitions = (0..count).map(|_| int(b)).collect::<Option<Vec<_>>>()?;
            out.push((name, partitions));
        }
        Some(out)
    }
    decode(bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_decode_and_lies_do_not() {
        let mut bytes = vec![0, 1, 0, 0, 0, 1, 0, 6];
        bytes.extend_from_slice(b"orders");
        bytes.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 5, 0, 0, 0, 0]);
        assert_eq!(
            decode_assignment(&bytes),
            vec![("orders".into(), vec![3, 5])]
        );
        assert!(decode_assignment(&bytes[..12]).is_empty(), "truncated");
        let mut lie = bytes.clone();
        lie[17] = 200;
        assert!(
            decode_assignment(&lie).is_empty(),
            "partition count past the end"
        );
        assert!(decode_assignment(&[]).is_empty());
    }
}
