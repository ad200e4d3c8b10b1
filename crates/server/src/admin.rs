//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions. Each change is durable
//! before it is answered; the disk work runs on the blocking pool, never on a reactor.

use std::sync::Arc;

use tokio::sync::oneshot;
use weir_broker::topics::TopicError;
use weir_kafka::admin::{
    self, CreatePartitionsRequest, CreateTopicsRequest, CreatedTopic, DeleteTopicsRequest, NewTopic,
};
use weir_kafka::{error_code, Response};
use weir_log::LogConfig;

use crate::broker::Broker;
use crate::partition::ShardMsg;

fn code_of(error: &TopicError) -> i16 {
    match error {
        TopicError::InvalidName(_) => error_code::INVALID_TOPIC_EXCEPTION,
        TopicError::Exists(_) => error_code::TOPIC_ALREADY_EXISTS,
        TopicError::InvalidPartitions(_) | TopicError::PartitionsCannotShrink { .. } => {
            error_code::INVALID_PARTITIONS
        }
        TopicError::Config(_) | TopicError::Invalid(_) => error_code::INVALID_CONFIG,
        TopicError::Unknown(_) => error_code::UNKNOWN_TOPIC_OR_PARTITION,
        TopicError::Io { .. } | TopicError::Corrupt { .. } => error_code::KAFKA_STORAGE_ERROR,
    }
}

/// A topic's settings from CreateTopics' config entries, under Kafka's names. Weir keeps only
/// the delete cleanup policy (it does not compact), so `cleanup.policy=compact` is refused.
pub(crate) fn topic_config(entries: &[(String, Option<String>)]) -> Result<LogConfig, String> {
    let mut config = LogConfig::default();
    for (key, value) in entries {
        let Some(value) = value else { continue };
        match key.as_str() {
            "cleanup.policy" if value == "delete" => {}
            "cleanup.policy" => {
                return Err(format!("cleanup.policy={value}: only delete is supported"))
            }
            _ => config.set(key, value).map_err(|e| e.to_string())?,
        }
    }
    Ok(config)
}

/// (partitions, error) for one requested topic, checked against a single-broker cluster.
fn partitions_of(broker: &Broker, topic: &NewTopic) -> Result<i32, (i16, String)> {
    if !matches!(topic.replication_factor, -1 | 1) && topic.assignments.is_empty() {
        return Err((
            error_code::INVALID_REPLICATION_FACTOR,
            format!(
                "replication factor {} is larger than the 1 broker of this cluster",
                topic.replication_factor
            ),
        ));
    }
    if !topic.assignments.is_empty() {
        if topic.num_partitions != -1 || topic.replication_factor != -1 {
            return Err((
                error_code::INVALID_REQUEST,
                "give either assignments or partitions and replication factor".into(),
            ));
        }
        if topic.assignments.iter().any(|(_, brokers)| brokers != &[0]) {
            return Err((
                error_code::INVALID_REPLICATION_FACTOR,
                "every partition must be assigned to broker 0, the only broker".into(),
            ));
        }
        return Ok(topic.assignments.len() as i32);
    }
    match topic.num_partitions {
        -1 => Ok(broker.config.num_partitions),
        n if n >= 1 => Ok(n),
        n => Err((error_code::INVALID_PARTITIONS, format!("{n} partitions"))),
    }
}

pub(crate) async fn create_topics(
    broker: &Arc<Broker>,
    version: i16,
    request: CreateTopicsRequest,
) -> Response {
    let mut results = Vec::new();
    for topic in request.topics {
        let checked = partitions_of(broker, &topic).and_then(|partitions| {
            topic_config(&topic.configs)
                .map(|config| (partitions, config))
                .map_err(|e| (error_code::INVALID_CONFIG, e))
        });
        let result = match checked {
            Err((code, message)) => Err((code, message)),
            Ok((partitions, config)) if request.validate_only => {
                if broker.topics.get(&topic.name).is_some() {
                    Err((error_code::TOPIC_ALREADY_EXISTS, "topic exists".into()))
                } else if !weir_broker::topics::valid_name(&topic.name) {
                    Err((error_code::INVALID_TOPIC_EXCEPTION, "invalid name".into()))
                } else if partitions > weir_broker::topics::PARTITIONS_PER_TOPIC_MAX {
                    Err((
                        error_code::INVALID_PARTITIONS,
                        format!("{partitions} partitions"),
                    ))
                } else {
                    let _ = config;
                    Ok(([0u8; 16], partitions))
                }
            }
            Ok((partitions, config)) => {
                let b = broker.clone();
                let name = topic.name.clone();
                match tokio::task::spawn_blocking(move || {
                    b.topics.create(&name, partitions, config)
                })
                .await
                {
                    Ok(Ok(created)) => Ok((created.id, created.partitions)),
                    Ok(Err(e)) => Err((code_of(&e), e.to_string())),
                    Err(e) => Err((error_code::UNKNOWN_SERVER_ERROR, e.to_string())),
                }
            }
        };
        results.push(match result {
            Ok((topic_id, num_partitions)) => CreatedTopic {
                name: topic.name,
                topic_id,
                error_code: error_code::NONE,
                error_message: None,
                num_partitions,
            },
            Err((code, message)) => CreatedTopic {
                name: topic.name,
                topic_id: [0; 16],
                error_code: code,
                error_message: Some(message),
                num_partitions: -1,
            },
        });
    }
    Response::CreateTopics(admin::create_topics_response(version, results))
}

pub(crate) async fn delete_topics(
    broker: &Arc<Broker>,
    version: i16,
    request: DeleteTopicsRequest,
) -> Response {
    let mut results = Vec::new();
    for (name, id) in request.topics {
        // v6 may name a topic by id only.
        let name = match name {
            Some(name) => name,
            None => match broker.topics.by_id(&id) {
                Some(topic) => topic.name.clone(),
                None => {
                    results.push((String::new(), id, error_code::UNKNOWN_TOPIC_ID));
                    continue;
                }
            },
        };
        match delete_topic(broker, &name).await {
            Ok(id) => results.push((name, id, error_code::NONE)),
            Err(code) => results.push((name, [0; 16], code)),
        }
    }
    Response::DeleteTopics(admin::delete_topics_response(version, results))
}

/// Deletes a topic: its registry entry first, then every owner lets go of its logs, then the
/// files go. Answers the deleted topic's id, or the Kafka error code.
pub(crate) async fn delete_topic(broker: &Arc<Broker>, name: &str) -> Result<[u8; 16], i16> {
    let b = broker.clone();
    let deleting = name.to_string();
    let (topic, trash) = match tokio::task::spawn_blocking(move || b.topics.delete(&deleting)).await
    {
        Ok(Ok(deleted)) => deleted,
        Ok(Err(e)) => return Err(code_of(&e)),
        Err(_) => return Err(error_code::UNKNOWN_SERVER_ERROR),
    };
    for partition in 0..topic.partitions {
        let (reply, done) = oneshot::channel();
        let msg = ShardMsg::Forget {
            topic_id: topic.id,
            partition,
            reply,
        };
        if broker
            .mailbox(&topic.name, partition)
            .send(msg)
            .await
            .is_ok()
        {
            let _ = done.await;
        }
    }
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(trash)).await;
    Ok(topic.id)
}

pub(crate) async fn create_partitions(
    broker: &Arc<Broker>,
    request: CreatePartitionsRequest,
) -> Response {
    let mut results = Vec::new();
    for (name, total) in request.topics {
        let result = if request.validate_only {
            match broker.topics.get(&name) {
                None => Err(TopicError::Unknown(name.clone())),
                Some(t) if total <= t.partitions => Err(TopicError::PartitionsCannotShrink {
                    name: name.clone(),
                    current: t.partitions,
                    asked: total,
                }),
                Some(_) => Ok(()),
            }
        } else {
            let b = broker.clone();
            let growing = name.clone();
            tokio::task::spawn_blocking(move || {
                b.topics.add_partitions(&growing, total).map(|_| ())
            })
            .await
            .unwrap_or_else(|e| {
                Err(TopicError::Io {
                    op: "add partitions",
                    path: Default::default(),
                    source: std::io::Error::other(e.to_string()),
                })
            })
        };
        results.push(match result {
            Ok(()) => (name, error_code::NONE, None),
            Err(e) => (name, code_of(&e), Some(e.to_string())),
        });
    }
    Response::CreatePartitions(admin::create_partitions_response(results))
}
