//! What every shard shares: settings, identity, topics, the shards' mailboxes, metrics.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;
use weir_broker::topics::{Topic, Topics};
use weir_kafka::error_code;
use weir_kafka::metadata::{self, MetadataRequest, Node, PartitionInfo, TopicInfo};
use weir_kafka::Response;
use weir_log::{Flusher, LogConfig};

use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::partition::ShardMsg;

pub(crate) struct Broker {
    pub config: ServerConfig,
    /// Set by shard 0 once the Kafka listener is bound (the port may have been 0).
    pub node: OnceLock<Node>,
    pub cluster_id: String,
    pub metrics: Metrics,
    /// The quotas from the config file and those set at runtime (stored in the data dir).
    pub quota_layers: std::sync::Mutex<crate::quotas::Layers>,
    /// Held while an AlterClientQuotas stores its change.
    pub quota_alter: tokio::sync::Mutex<()>,
    /// Client quotas in force; `quotas_on` is false while no client has one (nothing is
    /// recorded).
    pub quotas: std::sync::Mutex<weir_broker::quota::Quotas>,
    pub quotas_on: std::sync::atomic::AtomicBool,
    /// Request bytes in memory, against `request_memory_budget_bytes` (one permit per byte).
    pub request_budget: crate::limits::RequestBudget,
    /// Open Kafka connections, against `max_connections` and `max_connections_per_ip`.
    pub connections: Arc<crate::limits::Connections>,
    /// Open HTTP connections, against `http_max_connections`.
    pub http_connections: Arc<crate::limits::Connections>,
    /// Where the unkeyed records of the next REST produce go (round robin over partitions).
    pub http_round_robin: std::sync::atomic::AtomicUsize,
    pub topics: Topics,
    /// One bounded mailbox per shard, indexed by shard number.
    pub mailboxes: Vec<mpsc::Sender<ShardMsg>>,
    /// One bounded queue per shard of Kafka connections moving to it (connection affinity).
    pub handoffs: Vec<mpsc::Sender<crate::connection::Handoff>>,
    pub flusher: Flusher,
    /// Coordinator partitions, as fixed in the data directory.
    pub offsets_partitions: u32,
    /// InitProducerId's allocator; blocks of ids are stored in `<data_dir>/producer-ids`.
    pub producer_ids: std::sync::Mutex<weir_broker::producer::ProducerIds>,
    /// Held while a block of producer ids is being stored.
    pub producer_id_reservation: tokio::sync::Mutex<()>,
}

impl Broker {
    pub fn node(&self) -> Node {
        self.node.get().cloned().unwrap_or(Node {
            node_id: 0,
            host: self.config.kafka_listen.ip().to_string(),
            port: i32::from(self.config.kafka_listen.port()),
        })
    }

    pub fn mailbox(&self, topic: &str, partition: i32) -> &mpsc::Sender<ShardMsg> {
        &self.mailboxes[self.owner(topic, partition)]
    }

    /// The shard that owns a partition.
    pub fn owner(&self, topic: &str, partition: i32) -> usize {
        weir_broker::owner(topic, partition, self.mailboxes.len())
    }

    /// The mailbox of the shard coordinating `group`.
    pub fn group_mailbox(&self, group: &str) -> &mpsc::Sender<ShardMsg> {
        let p = crate::coordinator::partition_of(self, group);
        self.mailbox(crate::coordinator::OFFSETS_TOPIC, p as i32)
    }

    /// Answers Metadata, creating requested unknown topics first when allowed. Topic creation
    /// writes and syncs a file: it runs on the blocking pool, not on the reactor.
    pub async fn metadata(self: &Arc<Broker>, request: &MetadataRequest) -> Response {
        let snapshot = self.topics.snapshot();
        let mut topics: Vec<TopicInfo> = Vec::new();
        match &request.topics {
            None => topics.extend(snapshot.values().map(|t| topic_info(t))),
            Some(wanted) => {
                for wanted in wanted {
                    // v10+ may name a topic by id only.
                    if wanted.name.as_deref().is_none_or(str::is_empty)
                        && wanted.topic_id != [0; 16]
                    {
                        topics.push(match self.topics.by_id(&wanted.topic_id) {
                            Some(topic) => topic_info(&topic),
                            None => TopicInfo {
                                name: String::new(),
                                topic_id: wanted.topic_id,
                                error_code: error_code::UNKNOWN_TOPIC_ID,
                                partitions: Vec::new(),
                            },
                        });
                        continue;
                    }
                    let name = wanted.name.clone().unwrap_or_default();
                    let found = match snapshot.get(&name) {
                        Some(topic) => Some(topic.clone()),
                        None if request.allow_auto_topic_creation
                            && self.config.auto_create_topics
                            && weir_broker::topics::valid_name(&name) =>
                        {
                            self.create_topic(&name).await
                        }
                        None => None,
                    };
                    topics.push(match found {
                        Some(topic) => topic_info(&topic),
                        None => TopicInfo {
                            error_code: if weir_broker::topics::valid_name(&name) {
                                error_code::UNKNOWN_TOPIC_OR_PARTITION
                            } else {
                                error_code::INVALID_TOPIC_EXCEPTION
                            },
                            name,
                            topic_id: wanted.topic_id,
                            partitions: Vec::new(),
                        },
                    });
                }
            }
        }
        Response::Metadata(metadata::response(&self.node(), &self.cluster_id, &topics))
    }

    async fn create_topic(self: &Arc<Broker>, name: &str) -> Option<Arc<Topic>> {
        let broker = self.clone();
        let name = name.to_string();
        let partitions = self.config.num_partitions;
        tokio::task::spawn_blocking(move || {
            match broker
                .topics
                .create(&name, partitions, LogConfig::default())
            {
                Ok(topic) => Some(topic),
                // Another connection created it first.
                Err(weir_broker::topics::TopicError::Exists(_)) => broker.topics.get(&name),
                Err(e) => {
                    eprintln!("weir: cannot create topic {name:?}: {e}");
                    None
                }
            }
        })
        .await
        .ok()
        .flatten()
    }
}

fn topic_info(topic: &Topic) -> TopicInfo {
    TopicInfo {
        name: topic.name.clone(),
        topic_id: topic.id,
        error_code: error_code::NONE,
        partitions: (0..topic.partitions)
            .map(|index| PartitionInfo {
                index,
                error_code: error_code::NONE,
            })
            .collect(),
    }
}

/// The cluster id: made once, kept in `<data_dir>/cluster.id` (22 characters of URL-safe
/// base64 of 16 random bytes, as Kafka's are).
pub(crate) fn cluster_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("cluster.id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut random = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut random)?;
    let id = base64url(&random);
    let tmp = data_dir.join("cluster.id.tmp");
    std::fs::write(&tmp, &id)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(id)
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    let mut bits = 0u32;
    let mut n = 0;
    for &b in bytes {
        bits = (bits << 8) | u32::from(b);
        n += 8;
        while n >= 6 {
            n -= 6;
            out.push(ALPHABET[((bits >> n) & 63) as usize] as char);
        }
    }
    if n > 0 {
        out.push(ALPHABET[((bits << (6 - n)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64url_of_16_bytes_is_22_characters() {
        let id = super::base64url(&[0xff; 16]);
        assert_eq!(id.len(), 22);
        assert_eq!(&id[..4], "____");
        assert_eq!(super::base64url(&[0, 0, 0]), "AAAA");
    }
}
