//! DescribeConfigs, AlterConfigs, IncrementalAlterConfigs and DeleteRecords.
//!
//! Topic settings are the log settings under their Kafka names, plus `cleanup.policy=delete`.
//! Broker settings are described read-only: they come from flags, env and the config file.

use std::sync::Arc;

use tokio::sync::oneshot;
use weir_kafka::configs::{
    self, AlterRequest, ConfigEntry, DescribeResource, Described, OP_DELETE, OP_SET,
    RESOURCE_BROKER, RESOURCE_TOPIC,
};
use weir_kafka::delete_records::{self, DeleteRecordsRequest};
use weir_kafka::{error_code, Response};
use weir_log::LogConfig;

use crate::broker::Broker;
use crate::partition::ShardMsg;

const CLEANUP_POLICY: (&str, &str) = ("cleanup.policy", "delete");

fn topic_entries(config: &LogConfig) -> Vec<ConfigEntry> {
    let defaults = LogConfig::default().entries();
    let mut entries: Vec<ConfigEntry> = config
        .entries()
        .into_iter()
        .zip(defaults)
        .map(|((name, value), (_, default))| ConfigEntry {
            name: name.to_string(),
            is_default: value == default,
            value,
            read_only: false,
        })
        .collect();
    entries.push(ConfigEntry {
        name: CLEANUP_POLICY.0.into(),
        value: CLEANUP_POLICY.1.into(),
        is_default: true,
        read_only: false,
    });
    entries
}

fn broker_entries(broker: &Broker) -> Vec<ConfigEntry> {
    let c = &broker.config;
    [
        ("log.dirs", c.data_dir.display().to_string()),
        ("num.partitions", c.num_partitions.to_string()),
        (
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
        ),
        (
            "socket.request.max.bytes",
            c.socket_request_max_bytes.to_string(),
        ),
        ("max.connections", c.max_connections.to_string()),
        (
            "max.connections.per.ip",
            c.max_connections_per_ip.to_string(),
        ),
        (
            "connections.max.idle.ms",
            c.connections_max_idle.as_millis().to_string(),
        ),
        ("broker.id", "0".to_string()),
    ]
    .into_iter()
    .map(|(name, value)| ConfigEntry {
        name: name.into(),
        value,
        is_default: false,
        read_only: true,
    })
    .collect()
}

pub(crate) fn describe(broker: &Broker, resources: Vec<DescribeResource>) -> Response {
    let results = resources
        .into_iter()
        .map(|r| {
            let entries = match r.resource_type {
                RESOURCE_TOPIC => broker
                    .topics
                    .get(&r.name)
                    .map(|t| topic_entries(&t.config))
                    .ok_or((error_code::UNKNOWN_TOPIC_OR_PARTITION, "unknown topic")),
                RESOURCE_BROKER => Ok(broker_entries(broker)),
                _ => Err((
                    error_code::INVALID_REQUEST,
                    "only topic and broker resources",
                )),
            };
            match entries {
                Ok(mut entries) => {
                    if let Some(keys) = &r.keys {
                        entries.retain(|e| keys.contains(&e.name));
                    }
                    Described {
                        resource_type: r.resource_type,
                        name: r.name,
                        error_code: error_code::NONE,
                        error_message: None,
                        entries,
                    }
                }
                Err((code, message)) => Described {
                    resource_type: r.resource_type,
                    name: r.name,
                    error_code: code,
                    error_message: Some(message.to_string()),
                    entries: Vec::new(),
                },
            }
        })
        .collect();
    Response::DescribeConfigs(configs::describe_response(results))
}

/// The settings a topic would have after `entries` (AlterConfigs replaces everything, the
/// incremental form changes only what it names).
fn altered(
    current: &LogConfig,
    entries: &[(String, i8, Option<String>)],
    incremental: bool,
) -> Result<LogConfig, String> {
    let defaults = LogConfig::default();
    let mut config = if incremental {
        current.clone()
    } else {
        defaults.clone()
    };
    for (key, op, value) in entries {
        if key == CLEANUP_POLICY.0 {
            match (op, value.as_deref()) {
                (&OP_SET, Some("delete")) | (&OP_DELETE, _) => continue,
                _ => return Err(format!("{key}: only delete is supported")),
            }
        }
        match (*op, value) {
            (OP_SET, Some(value)) => config.set(key, value).map_err(|e| e.to_string())?,
            (OP_SET, None) | (OP_DELETE, _) => {
                let default = defaults
                    .entries()
                    .into_iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v)
                    .ok_or_else(|| format!("unknown config {key:?}"))?;
                config.set(key, &default).map_err(|e| e.to_string())?;
            }
            (op, _) => {
                return Err(format!(
                    "{key}: operation {op} applies to list configs only"
                ))
            }
        }
    }
    Ok(config)
}

pub(crate) async fn alter(broker: &Arc<Broker>, request: AlterRequest) -> Response {
    let mut results = Vec::new();
    for r in request.resources {
        let outcome = if r.resource_type != RESOURCE_TOPIC {
            Err((
                error_code::INVALID_REQUEST,
                "broker settings come from flags, environment and the config file".to_string(),
            ))
        } else {
            match broker.topics.get(&r.name) {
                None => Err((
                    error_code::UNKNOWN_TOPIC_OR_PARTITION,
                    "unknown topic".to_string(),
                )),
                Some(topic) if request.validate_only => {
                    altered(&topic.config, &r.entries, request.incremental)
                        .map(|_| ())
                        .map_err(|message| (error_code::INVALID_CONFIG, message))
                }
                Some(_) => apply(broker, &r.name, r.entries, request.incremental).await,
            }
        };
        results.push(match outcome {
            Ok(()) => (r.resource_type, r.name, error_code::NONE, None),
            Err((code, message)) => (r.resource_type, r.name, code, Some(message)),
        });
    }
    if request.incremental {
        Response::IncrementalAlterConfigs(configs::incremental_response(results))
    } else {
        Response::AlterConfigs(configs::alter_response(results))
    }
}

/// Computes and persists a topic's new settings (read, change and write under the registry's
/// writer lock, so concurrent changes never lose one another), then tells every shard, which
/// reconfigures the logs it has open for that topic.
async fn apply(
    broker: &Arc<Broker>,
    name: &str,
    entries: Vec<(String, i8, Option<String>)>,
    incremental: bool,
) -> Result<(), (i16, String)> {
    let b = broker.clone();
    let topic_name = name.to_string();
    let topic = tokio::task::spawn_blocking(move || {
        b.topics.update_config(&topic_name, |current| {
            altered(current, &entries, incremental)
        })
    })
    .await
    .map_err(|e| (error_code::UNKNOWN_SERVER_ERROR, e.to_string()))?
    .map_err(|e| match e {
        weir_broker::topics::TopicError::Invalid(message) => (error_code::INVALID_CONFIG, message),
        weir_broker::topics::TopicError::Config(e) => (error_code::INVALID_CONFIG, e.to_string()),
        weir_broker::topics::TopicError::Unknown(_) => {
            (error_code::UNKNOWN_TOPIC_OR_PARTITION, e.to_string())
        }
        e => (error_code::KAFKA_STORAGE_ERROR, e.to_string()),
    })?;
    for mailbox in &broker.mailboxes {
        let (reply, done) = oneshot::channel();
        let msg = ShardMsg::Reconfigure {
            topic: topic.clone(),
            reply,
        };
        if mailbox.send(msg).await.is_ok() {
            let _ = done.await;
        }
    }
    Ok(())
}

pub(crate) async fn delete_records(
    broker: &Arc<Broker>,
    request: DeleteRecordsRequest,
) -> Response {
    let snapshot = broker.topics.snapshot();
    let mut topics = Vec::new();
    for (name, parts) in request.topics {
        let known = snapshot.get(&name).cloned();
        let mut results = Vec::new();
        for (index, offset) in parts {
            let result = match &known {
                Some(t) if (0..t.partitions).contains(&index) => {
                    let (reply, answer) = oneshot::channel();
                    let msg = ShardMsg::DeleteRecords {
                        topic: t.clone(),
                        partition: index,
                        offset,
                        reply,
                    };
                    match broker.mailbox(&t.name, index).send(msg).await {
                        Ok(()) => answer
                            .await
                            .unwrap_or((-1, error_code::KAFKA_STORAGE_ERROR)),
                        Err(_) => (-1, error_code::KAFKA_STORAGE_ERROR),
                    }
                }
                _ => (-1, error_code::UNKNOWN_TOPIC_OR_PARTITION),
            };
            results.push((index, result.0, result.1));
        }
        topics.push((name, results));
    }
    Response::DeleteRecords(delete_records::response(topics))
}
