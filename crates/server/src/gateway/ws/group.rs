//! Group mode: the gateway is a consumer-group member on the WebSocket client's behalf. It
//! joins with the consumer protocol (range assignment, so Kafka consumers can share the group),
//! heartbeats, follows rebalances, streams the partitions it is assigned from the group's
//! committed offsets, and commits what the client acknowledges (`ack` of offset N commits N+1,
//! Kafka's "next offset to read"). Closing the socket leaves the group.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use weir_broker::group::{JoinRequest, SyncRequest};
use weir_broker::topics::Topic;
use weir_kafka::error_code;

use super::Writer;
use crate::broker::Broker;
use crate::coordinator::{group_error_code, CommitPart, GroupMsg};
use crate::gateway::records::Encoding;
use crate::groups::ask;
use crate::partition::ShardMsg;

/// The only assignment strategy the gateway offers (and so, as leader, computes).
const PROTOCOL: &str = "range";
/// Rejoins after a refused join (coordinator moving, say) before the client is told.
const JOIN_ATTEMPTS: usize = 5;

/// What the connection asks of its member task.
pub(crate) enum Command {
    Ack {
        topic: String,
        partition: i32,
        offset: i64,
        reference: Option<Value>,
    },
    Leave,
}

/// Where a partition without a committed offset starts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reset {
    Earliest,
    Latest,
}

pub(crate) struct Spec {
    pub group: String,
    pub topic: Arc<Topic>,
    pub encoding: Encoding,
    pub reset: Reset,
    pub client_host: String,
}

/// The streams of the current assignment; dropping it stops them (each after its current
/// write).
struct Assigned(Vec<(i32, super::subscription::Running)>);

/// A member's partitions: (topic, partitions).
type Partitions = Vec<(String, Vec<i32>)>;

/// A member as the assignor sees it: id, static instance id, subscribed topics.
pub(crate) struct Member {
    pub id: String,
    pub instance: Option<String>,
    pub topics: Vec<String>,
}

/// Range assignment (Kafka's `RangeAssignor`): for each topic, its partitions in order split
/// into contiguous runs over the members subscribed to it; the first `partitions % members`
/// get one more. Members are ordered as Kafka orders them: static members (with an instance
/// id) first, by instance id, then the others by member id.
pub(crate) fn range_assign(
    members: &[Member],
    partitions_of: impl Fn(&str) -> i32,
) -> Vec<(String, Partitions)> {
    let mut order: Vec<&Member> = members.iter().collect();
    order.sort_by(|a, b| match (&a.instance, &b.instance) {
        (Some(x), Some(y)) => x.cmp(y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.id.cmp(&b.id),
    });
    let mut out: Vec<(String, Partitions)> =
        order.iter().map(|m| (m.id.clone(), Vec::new())).collect();
    let mut topics: Vec<&String> = members.iter().flat_map(|m| &m.topics).collect();
    topics.sort();
    topics.dedup();
    for topic in topics {
        let subscribed: Vec<usize> = (0..order.len())
            .filter(|&i| order[i].topics.contains(topic))
            .collect();
        let n = partitions_of(topic).max(0) as usize;
        if subscribed.is_empty() || n == 0 {
            continue;
        }
        let (each, extra) = (n / subscribed.len(), n % subscribed.len());
        let mut next = 0;
        for (k, &i) in subscribed.iter().enumerate() {
            let count = each + usize::from(k < extra);
            let run: Vec<i32> = (next..next + count).map(|p| p as i32).collect();
            next += count;
            if !run.is_empty() {
                out[i].1.push((topic.clone(), run));
            }
        }
    }
    out
}

/// Joins (or rejoins) and syncs: (member id, generation, this member's partitions of the topic).
async fn join(
    broker: &Arc<Broker>,
    spec: &Spec,
    member_id: &mut String,
) -> Result<(i32, Vec<i32>), String> {
    let session = broker.config.ws_group_session_timeout;
    let mut refusals = 0;
    loop {
        let request = JoinRequest {
            member_id: member_id.clone(),
            group_instance_id: None,
            client_id: "weir-ws".into(),
            client_host: spec.client_host.clone(),
            session_timeout_ms: session.as_millis() as u64,
            rebalance_timeout_ms: session.as_millis() as u64,
            protocol_type: "consumer".into(),
            protocols: vec![(
                PROTOCOL.into(),
                weir_kafka::group::consumer_subscription(std::slice::from_ref(&spec.topic.name)),
            )],
            require_known_member_id: true,
        };
        let joined = ask(broker, &spec.group, |reply| GroupMsg::Join {
            group: spec.group.clone(),
            request,
            reply,
        })
        .await
        .ok_or("the group's coordinator is not available")?;
        *member_id = joined.member_id.clone();
        match joined.error.map(group_error_code) {
            None => {}
            Some(error_code::MEMBER_ID_REQUIRED) => continue,
            Some(error_code::UNKNOWN_MEMBER_ID) => {
                member_id.clear();
                continue;
            }
            Some(_) if refusals < JOIN_ATTEMPTS => {
                refusals += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Some(code) => {
                return Err(format!(
                    "joining the group failed (Kafka error code {code})"
                ))
            }
        }
        if joined
            .protocol_name
            .as_deref()
            .is_some_and(|p| p != PROTOCOL)
        {
            return Err(format!(
                "the group uses assignment strategy {:?}; the gateway offers only {PROTOCOL}",
                joined.protocol_name
            ));
        }
        let assignments = if joined.leader == *member_id {
            let members: Vec<Member> = joined
                .members
                .iter()
                .map(|m| Member {
                    id: m.member_id.clone(),
                    instance: m.group_instance_id.clone(),
                    topics: weir_kafka::group::consumer_subscription_topics(&m.metadata)
                        .unwrap_or_default(),
                })
                .collect();
            let snapshot = broker.topics.snapshot();
            range_assign(&members, |t| snapshot.get(t).map_or(0, |t| t.partitions))
                .into_iter()
                .map(|(m, assigned)| (m, weir_kafka::group::encode_consumer_assignment(&assigned)))
                .collect()
        } else {
            Vec::new()
        };
        let sync = SyncRequest {
            generation_id: joined.generation_id,
            member_id: member_id.clone(),
            group_instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some(PROTOCOL.into()),
            assignments,
        };
        let synced = ask(broker, &spec.group, |reply| GroupMsg::Sync {
            group: spec.group.clone(),
            request: sync,
            reply,
        })
        .await
        .ok_or("the group's coordinator is not available")?;
        match synced.error.map(group_error_code) {
            None => {}
            Some(error_code::REBALANCE_IN_PROGRESS | error_code::ILLEGAL_GENERATION) => continue,
            Some(error_code::UNKNOWN_MEMBER_ID) => {
                member_id.clear();
                continue;
            }
            Some(code) => {
                return Err(format!(
                    "syncing with the group failed (Kafka error code {code})"
                ))
            }
        }
        let mine = weir_kafka::group::consumer_assignment(&synced.assignment)
            .unwrap_or_default()
            .into_iter()
            .filter(|(t, _)| *t == spec.topic.name)
            .flat_map(|(_, partitions)| partitions)
            .filter(|p| (0..spec.topic.partitions).contains(p))
            .collect();
        return Ok((joined.generation_id, mine));
    }
}

/// (partition, offset to stream it from: committed, or the reset point, log end).
async fn start_offsets(
    broker: &Arc<Broker>,
    spec: &Spec,
    partitions: &[i32],
) -> Result<Vec<(i32, i64, i64)>, String> {
    let fetched = ask(broker, &spec.group, |reply| GroupMsg::Fetch {
        group: spec.group.clone(),
        topics: Some(vec![(spec.topic.name.clone(), partitions.to_vec())]),
        reply,
    })
    .await
    .ok_or("the group's coordinator is not available")?;
    let committed: Vec<(i32, i64)> = fetched
        .into_iter()
        .flat_map(|(_, parts)| parts)
        .filter(|p| p.error_code == error_code::NONE && p.offset >= 0)
        .map(|p| (p.partition, p.offset))
        .collect();
    let mut out = Vec::new();
    for &partition in partitions {
        let summary = crate::connection::ask(broker, &spec.topic.name, partition, |reply| {
            ShardMsg::Describe {
                topic: spec.topic.clone(),
                partition,
                reply,
            }
        })
        .await
        .and_then(Result::ok)
        .ok_or_else(|| format!("partition {partition} is not available"))?;
        let offset = match committed.iter().find(|(p, _)| *p == partition) {
            // A committed offset retention has passed starts at the log start, as Kafka's
            // consumer does after OFFSET_OUT_OF_RANGE with auto.offset.reset=earliest.
            Some((_, o)) => (*o).clamp(summary.log_start_offset, summary.log_end_offset),
            None if spec.reset == Reset::Earliest => summary.log_start_offset,
            None => summary.log_end_offset,
        };
        out.push((partition, offset, summary.log_end_offset));
    }
    Ok(out)
}

pub(crate) async fn run(
    broker: Arc<Broker>,
    writer: Rc<Writer>,
    spec: Spec,
    mut commands: mpsc::Receiver<Command>,
) {
    let mut member_id = String::new();
    let fail = |message: String| {
        json!({"type": "error", "error": "group_failed", "group": spec.group, "message": message})
            .to_string()
    };
    'rejoin: loop {
        let (generation, partitions) = match join(&broker, &spec, &mut member_id).await {
            Ok(joined) => joined,
            Err(message) => {
                writer.send_text(&fail(message)).await;
                return;
            }
        };
        let starts = match start_offsets(&broker, &spec, &partitions).await {
            Ok(starts) => starts,
            Err(message) => {
                writer.send_text(&fail(message)).await;
                leave(&broker, &spec, &member_id).await;
                return;
            }
        };
        let assigned = Assigned(
            starts
                .iter()
                .map(|&(partition, offset, end)| {
                    let running = super::subscription::start(
                        broker.clone(),
                        writer.clone(),
                        spec.topic.clone(),
                        partition,
                        spec.encoding,
                        offset,
                        end,
                    );
                    (partition, running)
                })
                .collect(),
        );
        let listed: Vec<Value> = starts
            .iter()
            .map(|(p, o, _)| json!({"partition": p, "offset": o}))
            .collect();
        let message = json!({"type": "assigned", "group": spec.group, "topic": spec.topic.name,
            "generation": generation, "partitions": listed});
        if !writer.send_text(&message.to_string()).await {
            leave(&broker, &spec, &member_id).await;
            return;
        }
        let every = (broker.config.ws_group_session_timeout / 10).max(Duration::from_millis(100));
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    let code = ask(&broker, &spec.group, |reply| GroupMsg::Heartbeat {
                        group: spec.group.clone(),
                        member_id: member_id.clone(),
                        instance_id: None,
                        generation,
                        reply,
                    })
                    .await
                    .unwrap_or(error_code::COORDINATOR_NOT_AVAILABLE);
                    match code {
                        error_code::NONE => {}
                        error_code::UNKNOWN_MEMBER_ID => {
                            member_id.clear();
                            drop(assigned);
                            continue 'rejoin;
                        }
                        // A rebalance, or a coordinator that moved: stop streaming, rejoin.
                        _ => {
                            drop(assigned);
                            continue 'rejoin;
                        }
                    }
                }
                command = commands.recv() => match command {
                    Some(Command::Ack { topic, partition, offset, reference }) => {
                        let mut answer = if topic != spec.topic.name
                            || !assigned.0.iter().any(|(p, _)| *p == partition)
                        {
                            json!({"type": "error", "error": "not_assigned", "message":
                                format!("{topic}/{partition} is not assigned to this member")})
                        } else {
                            commit(&broker, &spec, &member_id, generation, partition, offset).await
                        };
                        if let Some(reference) = reference {
                            answer["ref"] = reference;
                        }
                        writer.send_text(&answer.to_string()).await;
                    }
                    Some(Command::Leave) | None => {
                        drop(assigned);
                        leave(&broker, &spec, &member_id).await;
                        return;
                    }
                }
            }
        }
    }
}

async fn commit(
    broker: &Arc<Broker>,
    spec: &Spec,
    member_id: &str,
    generation: i32,
    partition: i32,
    offset: i64,
) -> Value {
    let codes = ask(broker, &spec.group, |reply| GroupMsg::Commit {
        group: spec.group.clone(),
        generation,
        member_id: member_id.to_string(),
        instance_id: None,
        offsets: vec![(
            spec.topic.name.clone(),
            vec![CommitPart {
                partition,
                offset: offset + 1,
                leader_epoch: -1,
                metadata: None,
            }],
        )],
        reply,
    })
    .await;
    let code = codes
        .and_then(|topics| {
            topics
                .into_iter()
                .flat_map(|(_, parts)| parts)
                .map(|(_, c)| c)
                .next()
        })
        .unwrap_or(error_code::COORDINATOR_NOT_AVAILABLE);
    if code == error_code::NONE {
        json!({"type": "acked", "topic": spec.topic.name, "partition": partition, "offset": offset})
    } else {
        json!({"type": "error", "error": "commit_failed", "topic": spec.topic.name,
            "partition": partition, "message": format!("the commit failed (Kafka error code {code}); \
            a rebalance may have moved the partition")})
    }
}

async fn leave(broker: &Arc<Broker>, spec: &Spec, member_id: &str) {
    if member_id.is_empty() {
        return;
    }
    let _ = ask(broker, &spec.group, |reply| GroupMsg::Leave {
        group: spec.group.clone(),
        members: vec![(member_id.to_string(), None)],
        reply,
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, instance: Option<&str>, topics: &[&str]) -> Member {
        Member {
            id: id.into(),
            instance: instance.map(Into::into),
            topics: topics.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn range_assignment_matches_kafkas() {
        let members = vec![
            member("b", None, &["t"]),
            member("a", None, &["t", "u"]),
            member("c", None, &["t"]),
        ];
        let got = range_assign(&members, |t| if t == "t" { 7 } else { 2 });
        assert_eq!(
            got,
            vec![
                (
                    "a".into(),
                    vec![("t".into(), vec![0, 1, 2]), ("u".into(), vec![0, 1])]
                ),
                ("b".into(), vec![("t".into(), vec![3, 4])]),
                ("c".into(), vec![("t".into(), vec![5, 6])]),
            ]
        );
        let few = range_assign(&members[..1], |_| 0);
        assert_eq!(few, vec![("b".into(), vec![])]);
        // Static members come first, by instance id.
        let mixed = vec![
            member("a", None, &["t"]),
            member("z", Some("i2"), &["t"]),
            member("y", Some("i1"), &["t"]),
        ];
        let got: Vec<(String, Partitions)> = range_assign(&mixed, |_| 3);
        assert_eq!(
            got,
            vec![
                ("y".into(), vec![("t".into(), vec![0])]),
                ("z".into(), vec![("t".into(), vec![1])]),
                ("a".into(), vec![("t".into(), vec![2])]),
            ]
        );
    }
}
