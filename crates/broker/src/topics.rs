//! Topics: created, listed and looked up. Writers take a lock and publish a new snapshot;
//! readers clone an `Arc` of the current one and never wait for a writer's disk I/O.
//!
//! On disk: `<data_dir>/topics/<name>/topic.meta` (text, `key=value` lines: `id`, `partitions`,
//! then the topic's log settings under their Kafka names), written to a temporary file, synced
//! and renamed into place. Partition logs live in `<data_dir>/partitions/<topic id>/<partition>/`:
//! by id, so a topic deleted and created again under the same name can never meet the old data,
//! even if a request that was in flight during the deletion recreates a directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use weir_log::LogConfig;

/// Kafka's limit on topic name length.
pub const TOPIC_NAME_MAX_BYTES: usize = 249;
/// Upper bound on partitions per topic: a named limit, like every other.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub name: String,
    pub id: [u8; 16],
    pub partitions: i32,
    pub config: LogConfig,
}

pub type Snapshot = Arc<BTreeMap<String, Arc<Topic>>>;

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error(
        "invalid topic name {0:?}: 1 to 249 characters of [a-zA-Z0-9._-], not \".\" or \"..\""
    )]
    InvalidName(String),
    #[error("topic {0:?} already exists")]
    Exists(String),
    #[error("invalid partition count {0}: must be between 1 and {PARTITIONS_PER_TOPIC_MAX}")]
    InvalidPartitions(i32),
    #[error("invalid config: {0}")]
    Config(#[from] weir_log::ConfigError),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt topic metadata {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("topic {0:?} does not exist")]
    Unknown(String),
    #[error("invalid config: {0}")]
    Invalid(String),
    #[error("topic {name:?} has {current} partitions; the count can only grow (asked {asked})")]
    PartitionsCannotShrink {
        name: String,
        current: i32,
        asked: i32,
    },
}

pub struct Topics {
    dir: PathBuf,
    partitions_dir: PathBuf,
    /// Serialises writers; readers never take it.
    writer: Mutex<()>,
    current: RwLock<Snapshot>,
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= TOPIC_NAME_MAX_BYTES
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Topics {
    /// Loads every topic under `<data_dir>/topics`, and finishes deleting what a crash left in
    /// `<data_dir>/deleted`.
    pub fn open(data_dir: &Path) -> Result<Topics, TopicError> {
        let deleted = data_dir.join("deleted");
        if deleted.exists() {
            std::fs::remove_dir_all(&deleted).map_err(|source| TopicError::Io {
                op: "remove",
                path: deleted.clone(),
                source,
            })?;
        }
        let dir = data_dir.join("topics");
        std::fs::create_dir_all(&dir).map_err(|source| TopicError::Io {
            op: "create",
            path: dir.clone(),
            source,
        })?;
        let mut topics = BTreeMap::new();
        let entries = std::fs::read_dir(&dir).map_err(|source| TopicError::Io {
            op: "list",
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| TopicError::Io {
                op: "list",
                path: dir.clone(),
                source,
            })?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let path = entry.path().join("topic.meta");
            if !valid_name(&name) || !path.exists() {
                continue;
            }
            let topic = read_meta(&name, &path)?;
            topics.insert(name, Arc::new(topic));
        }
        // Partition data of topics that no longer exist (a deletion cut short, or a directory
        // recreated by a request in flight during one).
        let partitions_dir = data_dir.join("partitions");
        std::fs::create_dir_all(&partitions_dir).map_err(|source| TopicError::Io {
            op: "create",
            path: partitions_dir.clone(),
            source,
        })?;
        let live: Vec<String> = topics.values().map(|t: &Arc<Topic>| hex(&t.id)).collect();
        let listed = std::fs::read_dir(&partitions_dir).map_err(|source| TopicError::Io {
            op: "list",
            path: partitions_dir.clone(),
            source,
        })?;
        for entry in listed.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !live.contains(&name) {
                let path = entry.path();
                std::fs::remove_dir_all(&path).map_err(|source| TopicError::Io {
                    op: "remove",
                    path,
                    source,
                })?;
            }
        }
        Ok(Topics {
            dir,
            partitions_dir,
            writer: Mutex::new(()),
            current: RwLock::new(Arc::new(topics)),
        })
    }

    /// The current topics. Cheap: an `Arc` clone under a read lock held for no I/O.
    pub fn snapshot(&self) -> Snapshot {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.snapshot().get(name).cloned()
    }

    /// Directory of one partition's log.
    pub fn partition_dir(&self, topic: &Topic, partition: i32) -> PathBuf {
        self.partitions_dir
            .join(hex(&topic.id))
            .join(partition.to_string())
    }

    /// The topic with this id, if it exists.
    pub fn by_id(&self, id: &[u8; 16]) -> Option<Arc<Topic>> {
        self.snapshot().values().find(|t| &t.id == id).cloned()
    }

    /// Creates a topic durably, then publishes it.
    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        config: LogConfig,
    ) -> Result<Arc<Topic>, TopicError> {
        if !valid_name(name) {
            return Err(TopicError::InvalidName(name.to_string()));
        }
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            return Err(TopicError::InvalidPartitions(partitions));
        }
        config.validate()?;
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if self.snapshot().contains_key(name) {
            return Err(TopicError::Exists(name.to_string()));
        }
        let topic = Topic {
            name: name.to_string(),
            id: random_id().map_err(|source| TopicError::Io {
                op: "read",
                path: PathBuf::from("/dev/urandom"),
                source,
            })?,
            partitions,
            config,
        };
        let dir = self.dir.join(name);
        write_meta(&dir, &topic).map_err(|source| TopicError::Io {
            op: "write topic metadata",
            path: dir.clone(),
            source,
        })?;
        let topic = Arc::new(topic);
        let mut next = (*self.snapshot()).clone();
        next.insert(name.to_string(), topic.clone());
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        Ok(topic)
    }
}

impl Topics {
    fn existing(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        self.get(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))
    }

    /// Raises a topic's partition count (CreatePartitions). Counts never shrink.
    pub fn add_partitions(&self, name: &str, total: i32) -> Result<Arc<Topic>, TopicError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.existing(name)?;
        if total <= current.partitions {
            return Err(TopicError::PartitionsCannotShrink {
                name: name.to_string(),
                current: current.partitions,
                asked: total,
            });
        }
        if total > PARTITIONS_PER_TOPIC_MAX {
            return Err(TopicError::InvalidPartitions(total));
        }
        let topic = Topic {
            partitions: total,
            ..(*current).clone()
        };
        self.replace(topic)
    }

    /// Changes a topic's settings (AlterConfigs): `change` maps the current settings to the new
    /// ones, under the writer lock, so concurrent changes never lose one another.
    pub fn update_config(
        &self,
        name: &str,
        change: impl FnOnce(&LogConfig) -> Result<LogConfig, String>,
    ) -> Result<Arc<Topic>, TopicError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.existing(name)?;
        let config = change(&current.config).map_err(TopicError::Invalid)?;
        config.validate()?;
        self.replace(Topic {
            config,
            ..(*current).clone()
        })
    }

    /// Writes and publishes a changed topic. The caller holds the writer lock.
    fn replace(&self, topic: Topic) -> Result<Arc<Topic>, TopicError> {
        let dir = self.dir.join(&topic.name);
        write_meta(&dir, &topic).map_err(|source| TopicError::Io {
            op: "write topic metadata",
            path: dir,
            source,
        })?;
        let topic = Arc::new(topic);
        let mut next = (*self.snapshot()).clone();
        next.insert(topic.name.clone(), topic.clone());
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        Ok(topic)
    }

    /// Deletes a topic: it leaves the snapshot first (new requests stop finding it), then its
    /// metadata and partition data move into `<data_dir>/deleted/<id>/` by atomic renames, from
    /// which the caller removes them once no shard holds its logs open. Returns the deleted topic
    /// and that directory.
    pub fn delete(&self, name: &str) -> Result<(Arc<Topic>, PathBuf), TopicError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let topic = self.existing(name)?;
        let before = self.snapshot();
        let mut next = (*before).clone();
        next.remove(name);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        let moved = self.move_to_trash(&topic);
        if moved.is_err() {
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = before;
        }
        Ok((topic, moved?))
    }

    fn move_to_trash(&self, topic: &Topic) -> Result<PathBuf, TopicError> {
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| TopicError::Io { op, path, source }
        };
        let trash = self.dir.with_file_name("deleted").join(hex(&topic.id));
        std::fs::create_dir_all(&trash).map_err(io("create", &trash))?;
        let meta = self.dir.join(&topic.name);
        std::fs::rename(&meta, trash.join("meta")).map_err(io("rename", &meta))?;
        let data = self.partitions_dir.join(hex(&topic.id));
        if data.exists() {
            std::fs::rename(&data, trash.join("partitions")).map_err(io("rename", &data))?;
        }
        for dir in [&self.dir, &self.partitions_dir] {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("fsync", dir))?;
        }
        Ok(trash)
    }
}

fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_id() -> std::io::Result<[u8; 16]> {
    let mut id = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut id)?;
    Ok(id)
}

fn write_meta(dir: &Path, topic: &Topic) -> std::io::Result<()> {
    use std::fmt::Write;
    std::fs::create_dir_all(dir)?;
    let mut text = String::new();
    let _ = writeln!(text, "id={}", hex(&topic.id));
    let _ = writeln!(text, "partitions={}", topic.partitions);
    for (key, value) in topic.config.entries() {
        let _ = writeln!(text, "{key}={value}");
    }
    let tmp = dir.join("topic.meta.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join("topic.meta"))?;
    std::fs::File::open(dir)?.sync_all()?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn read_meta(name: &str, path: &Path) -> Result<Topic, TopicError> {
    let corrupt = |reason: String| TopicError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|source| TopicError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let mut id = None;
    let mut partitions = None;
    let mut config = LogConfig::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| corrupt(format!("line {line:?} is not key=value")))?;
        match key {
            "id" => {
                let bytes: Option<Vec<u8>> = (0..value.len())
                    .step_by(2)
                    .map(|i| {
                        value
                            .get(i..i + 2)
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                    })
                    .collect();
                id = bytes.and_then(|b| <[u8; 16]>::try_from(b).ok());
                if id.is_none() {
                    return Err(corrupt(format!("bad id {value:?}")));
                }
            }
            "partitions" => {
                partitions = Some(
                    value
                        .parse::<i32>()
                        .ok()
                        .filter(|n| (1..=PARTITIONS_PER_TOPIC_MAX).contains(n))
                        .ok_or_else(|| corrupt(format!("bad partitions {value:?}")))?,
                )
            }
            key => config.set(key, value).map_err(|e| corrupt(e.to_string()))?,
        }
    }
    Ok(Topic {
        name: name.to_string(),
        id: id.ok_or_else(|| corrupt("no id".into()))?,
        partitions: partitions.ok_or_else(|| corrupt("no partitions".into()))?,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_persist_and_names_are_checked() {
        let dir = std::env::temp_dir().join(format!("weir-topics-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let topics = Topics::open(&dir).expect("open");
        let before = topics.snapshot();
        let config = LogConfig {
            flush_messages: 1,
            ..LogConfig::default()
        };
        let orders = topics.create("orders", 3, config.clone()).expect("create");
        assert!(before.is_empty(), "an old snapshot does not change");
        assert!(matches!(
            topics.create("orders", 1, LogConfig::default()),
            Err(TopicError::Exists(_))
        ));
        for bad in ["", ".", "..", "a/b", "spaces here", &"x".repeat(250)] {
            assert!(matches!(
                topics.create(bad, 1, LogConfig::default()),
                Err(TopicError::InvalidName(_))
            ));
        }
        assert!(matches!(
            topics.create("zero", 0, LogConfig::default()),
            Err(TopicError::InvalidPartitions(0))
        ));
        drop(topics);
        let reopened = Topics::open(&dir).expect("reopen");
        let again = reopened.get("orders").expect("persisted");
        assert_eq!(*again, *orders);
        assert_eq!(again.config, config);

        let grown = reopened.add_partitions("orders", 5).expect("grow");
        assert_eq!(grown.partitions, 5);
        assert!(matches!(
            reopened.add_partitions("orders", 2),
            Err(TopicError::PartitionsCannotShrink { .. })
        ));
        let old_dir = reopened.partition_dir(&grown, 0);
        std::fs::create_dir_all(&old_dir).expect("partition dir");
        let (gone, trash) = reopened.delete("orders").expect("delete");
        assert!(
            !old_dir.exists(),
            "partition data moved away with the topic"
        );
        let again = reopened
            .create("orders", 1, LogConfig::default())
            .expect("recreate");
        assert_ne!(
            reopened.partition_dir(&again, 0),
            old_dir,
            "data is by topic id"
        );
        // A request in flight during the deletion recreates the old directory: harmless,
        // and removed at the next open.
        std::fs::create_dir_all(&old_dir).expect("stale recreation");
        reopened.delete("orders").expect("delete again");
        assert_eq!(gone.id, orders.id);
        assert!(trash.exists() && reopened.get("orders").is_none());
        drop(reopened);
        let after = Topics::open(&dir).expect("reopen after delete");
        assert!(after.get("orders").is_none());
        assert!(
            !trash.exists(),
            "leftovers of a deletion are removed at open"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
