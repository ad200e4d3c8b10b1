//! The group coordinator's shell: owns the coordinator partitions of one shard (their offsets
//! logs, committed-offset tables and groups), feeds the pure state machines
//! (`weir_broker::group`) with requests and time, and routes their answers back.
//!
//! A group lives on one coordinator partition (sticky hash of the group id, of
//! `offsets_partitions`), and a partition on one shard, so no group state is shared between
//! threads. A commit is appended to the partition's offsets log (flush.messages=1) and answered
//! once it is on disk; on start each log is replayed into the table. When a log holds many more
//! records than live entries, the live entries are appended again and the log start moves past
//! the old ones (see `docs/format/offsets.md`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;
use weir_broker::group::offsets::{self, Committed, OffsetStore};
use weir_broker::group::{
    Effect, Group, GroupError, GroupState, JoinRequest, JoinResponse, MemberDescription,
    SyncRequest, SyncResponse, Token,
};
use weir_kafka::error_code;
use weir_log::batch::build::BatchBuilder;
use weir_log::{Durable, Log, LogConfig, LogError, LogOptions};

use crate::broker::Broker;

/// The name coordinator partitions go by in shard ownership and metrics (Kafka's internal
/// topic); it is not a topic clients see.
pub(crate) const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// The batch bytes the coordinator writes at a time when it writes many records (compaction,
/// expiry, group deletion): well below the offsets log's `max.message.bytes`.
const OFFSETS_CHUNK_BYTES: usize = 1024 * 1024;
/// The offsets log's `max.message.bytes`: one OffsetCommit request is one batch, and a larger
/// one is refused with INVALID_COMMIT_OFFSET_SIZE.
const OFFSETS_BATCH_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// A log is compacted once it holds this many records more than twice its live entries.
const COMPACTION_SLACK_RECORDS: i64 = 10_000;
/// Bytes of the offsets log read at a time while replaying it on start.
const REPLAY_READ_BYTES: u64 = 1024 * 1024;
/// Kafka's offsets.topic.segment.bytes.
const OFFSETS_SEGMENT_BYTES: u64 = 100 * 1024 * 1024;

/// Per topic, per partition: an error code.
pub(crate) type TopicCodes = Vec<(String, Vec<(i32, i16)>)>;

/// The same error code for every partition of a commit.
fn every_partition(offsets: &[(String, Vec<CommitPart>)], code: i16) -> TopicCodes {
    offsets
        .iter()
        .map(|(t, parts)| {
            (
                t.clone(),
                parts.iter().map(|p| (p.partition, code)).collect(),
            )
        })
        .collect()
}

/// A request for a group, sent to the shard that coordinates it.
pub(crate) enum GroupMsg {
    Join {
        group: String,
        request: JoinRequest,
        reply: oneshot::Sender<JoinResponse>,
    },
    Sync {
        group: String,
        request: SyncRequest,
        reply: oneshot::Sender<SyncResponse>,
    },
    Heartbeat {
        group: String,
        member_id: String,
        instance_id: Option<String>,
        generation: i32,
        reply: oneshot::Sender<i16>,
    },
    Leave {
        group: String,
        members: Vec<(String, Option<String>)>,
        reply: oneshot::Sender<(i16, Vec<i16>)>,
    },
    Commit {
        group: String,
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
        /// (topic, [(partition, offset, leader epoch, metadata)])
        offsets: Vec<(String, Vec<CommitPart>)>,
        reply: oneshot::Sender<TopicCodes>,
    },
    Fetch {
        group: String,
        /// None: every committed offset of the group.
        topics: Option<Vec<(String, Vec<i32>)>>,
        reply: oneshot::Sender<Vec<(String, Vec<FetchedOffset>)>>,
    },
    DeleteOffsets {
        group: String,
        topics: Vec<(String, Vec<i32>)>,
        reply: oneshot::Sender<(i16, TopicCodes)>,
    },
    Describe {
        group: String,
        reply: oneshot::Sender<GroupDescription>,
    },
    /// Every group this shard coordinates: (id, protocol type, state).
    List {
        reply: oneshot::Sender<Vec<(String, String, &'static str)>>,
    },
    Delete {
        group: String,
        reply: oneshot::Sender<i16>,
    },
}

impl GroupMsg {
    /// Answers the request with COORDINATOR_NOT_AVAILABLE (this shard's offsets logs could
    /// not be opened): the client retries and the operator sees the cause in the log.
    pub fn unavailable(self) {
        let code = error_code::COORDINATOR_NOT_AVAILABLE;
        match self {
            GroupMsg::Join { reply, .. } => {
                let _ = reply.send(not_here_join());
            }
            GroupMsg::Sync { reply, .. } => {
                let _ = reply.send(SyncResponse {
                    error: Some(GroupError::CoordinatorNotAvailable),
                    ..SyncResponse::default()
                });
            }
            GroupMsg::Heartbeat { reply, .. } | GroupMsg::Delete { reply, .. } => {
                let _ = reply.send(code);
            }
            GroupMsg::Leave { reply, members, .. } => {
                let _ = reply.send((code, vec![code; members.len()]));
            }
            GroupMsg::Commit { reply, offsets, .. } => {
                let _ = reply.send(every_partition(&offsets, code));
            }
            GroupMsg::Fetch { reply, topics, .. } => {
                let answer = topics
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(t, parts)| {
                        let parts = parts
                            .into_iter()
                            .map(|partition| FetchedOffset {
                                partition,
                                offset: -1,
                                leader_epoch: -1,
                                metadata: String::new(),
                                error_code: code,
                            })
                            .collect();
                        (t, parts)
                    })
                    .collect();
                let _ = reply.send(answer);
            }
            GroupMsg::DeleteOffsets { reply, .. } => {
                let _ = reply.send((code, Vec::new()));
            }
            GroupMsg::Describe { reply, .. } => {
                let _ = reply.send(GroupDescription {
                    error_code: code,
                    state: "Dead",
                    protocol_type: String::new(),
                    protocol: String::new(),
                    members: Vec::new(),
                });
            }
            GroupMsg::List { reply } => {
                let _ = reply.send(Vec::new());
            }
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CommitPart {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct FetchedOffset {
    pub partition: i32,
    /// -1 when nothing is committed.
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub error_code: i16,
}

#[derive(Debug, Clone)]
pub(crate) struct GroupDescription {
    pub error_code: i16,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// Kafka's error code for a coordinator error.
pub(crate) fn group_error_code(error: GroupError) -> i16 {
    match error {
        GroupError::InvalidGroupId => error_code::INVALID_GROUP_ID,
        GroupError::UnknownMemberId => error_code::UNKNOWN_MEMBER_ID,
        GroupError::IllegalGeneration => error_code::ILLEGAL_GENERATION,
        GroupError::RebalanceInProgress => error_code::REBALANCE_IN_PROGRESS,
        GroupError::InconsistentGroupProtocol => error_code::INCONSISTENT_GROUP_PROTOCOL,
        GroupError::InvalidSessionTimeout => error_code::INVALID_SESSION_TIMEOUT,
        GroupError::MemberIdRequired => error_code::MEMBER_ID_REQUIRED,
        GroupError::FencedInstanceId => error_code::FENCED_INSTANCE_ID,
        GroupError::GroupMaxSizeReached => error_code::GROUP_MAX_SIZE_REACHED,
        GroupError::NonEmptyGroup => error_code::NON_EMPTY_GROUP,
        GroupError::GroupIdNotFound => error_code::GROUP_ID_NOT_FOUND,
        GroupError::GroupSubscribedToTopic => error_code::GROUP_SUBSCRIBED_TO_TOPIC,
        GroupError::OffsetMetadataTooLarge => error_code::OFFSET_METADATA_TOO_LARGE,
        GroupError::CoordinatorNotAvailable => error_code::COORDINATOR_NOT_AVAILABLE,
    }
}

fn code_of(result: Result<(), GroupError>) -> i16 {
    result.err().map_or(error_code::NONE, group_error_code)
}

enum Waiter {
    Join(oneshot::Sender<JoinResponse>),
    Sync(oneshot::Sender<SyncResponse>),
}

/// One coordinator partition: its offsets log, the committed offsets and its groups.
struct Partition {
    log: Log,
    store: OffsetStore,
    groups: HashMap<String, Group>,
    /// Compaction appended the live entries from this offset: the log start moves here once
    /// they are durable.
    compacting: Option<(i64, Durable)>,
    /// After a failed compaction: the record count at which to try again (not on every commit).
    compact_after: i64,
}

/// The coordinator partitions one shard owns.
pub(crate) struct Coordinators {
    broker: Arc<Broker>,
    started: Instant,
    nonce: u64,
    partitions: HashMap<u32, Partition>,
    /// Requests parked in a state machine, by token.
    waiting: HashMap<Token, Waiter>,
    next_token: Token,
    next_expiry_ms: u64,
    /// [`Coordinators::next_deadline`]'s answer until group work changes it.
    deadline: Option<tokio::time::Instant>,
}

/// The coordinator partition a group belongs to.
pub(crate) fn partition_of(broker: &Broker, group: &str) -> u32 {
    weir_broker::group::coordinator_partition(group, broker.offsets_partitions)
}

/// The directory of coordinator partition `p`'s offsets log.
fn partition_dir(data_dir: &Path, p: u32) -> PathBuf {
    data_dir.join("groups").join(p.to_string())
}

fn offsets_log_config() -> LogConfig {
    LogConfig {
        segment_bytes: OFFSETS_SEGMENT_BYTES,
        max_message_bytes: OFFSETS_BATCH_BYTES_MAX,
        retention_bytes: -1,
        retention_ms: -1,
        flush_messages: 1,
        ..LogConfig::default()
    }
}

impl Coordinators {
    /// Opens and replays the offsets logs of the coordinator partitions shard `shard` owns.
    /// Runs on the blocking pool (it reads the disk).
    pub async fn open(broker: Arc<Broker>, shard: usize) -> Result<Coordinators, LogError> {
        let shards = broker.mailboxes.len();
        let owned: Vec<u32> = (0..broker.offsets_partitions)
            .filter(|p| weir_broker::owner(OFFSETS_TOPIC, *p as i32, shards) == shard)
            .collect();
        let data_dir = broker.config.data_dir.clone();
        let flusher = broker.flusher.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let mut opened = Vec::new();
            for p in owned {
                let options = LogOptions::new(offsets_log_config(), flusher.clone());
                let dir = partition_dir(&data_dir, p);
                // One unreadable partition makes only its own groups unavailable.
                match Log::open(&dir, options).and_then(|log| Ok((replay(&log)?, log))) {
                    Ok((store, log)) => opened.push((p, log, store)),
                    Err(e) => eprintln!(
                        "weir: coordinator partition {p} ({}) is unavailable: {e}",
                        dir.display()
                    ),
                }
            }
            Ok::<_, LogError>(opened)
        })
        .await
        .map_err(|e| LogError::Failed {
            cause: format!("opening the offsets logs panicked: {e}"),
        })??;
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ ((shard as u64) << 56);
        let expiry = broker.config.groups.offsets_retention_check_ms;
        Ok(Coordinators {
            broker,
            started: Instant::now(),
            nonce,
            partitions: opened
                .into_iter()
                .map(|(p, log, store)| {
                    let partition = Partition {
                        log,
                        store,
                        groups: HashMap::new(),
                        compacting: None,
                        compact_after: 0,
                    };
                    (p, partition)
                })
                .collect(),
            waiting: HashMap::new(),
            next_token: 0,
            next_expiry_ms: expiry,
            deadline: None,
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// When [`Coordinators::tick`] next has work: the earliest group deadline, a pending
    /// compaction, or the next offsets expiry pass. Recomputed only after group work, not for
    /// every partition request the shard serves.
    pub fn next_deadline(&mut self) -> tokio::time::Instant {
        if let Some(cached) = self.deadline {
            return cached;
        }
        let next = self.compute_deadline();
        self.deadline = Some(next);
        next
    }

    fn compute_deadline(&self) -> tokio::time::Instant {
        let mut next = self.next_expiry_ms;
        for partition in self.partitions.values() {
            if partition.compacting.is_some() {
                next = next.min(self.now_ms() + 10);
            }
            for group in partition.groups.values() {
                if let Some(deadline) = group.next_deadline() {
                    next = next.min(deadline);
                }
            }
        }
        tokio::time::Instant::from_std(self.started) + std::time::Duration::from_millis(next)
    }

    /// Expires what is due: sessions, rebalance phases, old offsets of empty groups.
    pub fn tick(&mut self) {
        self.deadline = None;
        let now = self.now_ms();
        let mut out = Vec::new();
        for partition in self.partitions.values_mut() {
            for group in partition.groups.values_mut() {
                if group.next_deadline().is_some_and(|d| d <= now) {
                    group.tick(now, &mut out);
                }
            }
            let store = &partition.store;
            partition
                .groups
                .retain(|id, g| !g.is_empty() || store.has_group(id));
            finish_compaction(partition);
        }
        self.deliver(out);
        if now >= self.next_expiry_ms {
            self.next_expiry_ms = now + self.broker.config.groups.offsets_retention_check_ms;
            self.expire_offsets();
        }
    }

    fn deliver(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Join(token, response) => {
                    if let Some(Waiter::Join(reply)) = self.waiting.remove(&token) {
                        let _ = reply.send(response);
                    }
                }
                Effect::Sync(token, response) => {
                    if let Some(Waiter::Sync(reply)) = self.waiting.remove(&token) {
                        let _ = reply.send(response);
                    }
                }
            }
        }
    }

    fn token(&mut self, waiter: Waiter) -> Token {
        self.next_token += 1;
        self.waiting.insert(self.next_token, waiter);
        self.next_token
    }

    fn partition(&mut self, group: &str) -> Option<&mut Partition> {
        let p = partition_of(&self.broker, group);
        self.partitions.get_mut(&p)
    }

    /// The group, created empty on first use.
    fn group(&mut self, id: &str) -> Option<&mut Group> {
        let config = self.broker.config.groups.coordination.clone();
        let nonce = self.nonce;
        let partition = self.partition(id)?;
        Some(
            partition
                .groups
                .entry(id.to_string())
                .or_insert_with(|| Group::new(id, config, nonce)),
        )
    }

    pub fn handle(&mut self, msg: GroupMsg) {
        self.deadline = None;
        let now = self.now_ms();
        let mut out = Vec::new();
        match msg {
            GroupMsg::Join {
                group,
                request,
                reply,
            } => {
                let token = self.token(Waiter::Join(reply));
                match self.group(&group) {
                    Some(g) => g.join(now, token, request, &mut out),
                    None => out.push(Effect::Join(token, not_here_join())),
                }
                // A refused first join leaves nothing behind.
                self.forget_if_unused(&group);
            }
            GroupMsg::Sync {
                group,
                request,
                reply,
            } => {
                let token = self.token(Waiter::Sync(reply));
                match self.existing(&group) {
                    Some(g) => g.sync(now, token, request, &mut out),
                    None => out.push(Effect::Sync(
                        token,
                        SyncResponse {
                            error: Some(GroupError::UnknownMemberId),
                            ..SyncResponse::default()
                        },
                    )),
                }
            }
            GroupMsg::Heartbeat {
                group,
                member_id,
                instance_id,
                generation,
                reply,
            } => {
                let code = match self.existing(&group) {
                    Some(g) => code_of(g.heartbeat(now, &member_id, &instance_id, generation)),
                    None => error_code::UNKNOWN_MEMBER_ID,
                };
                let _ = reply.send(code);
            }
            GroupMsg::Leave {
                group,
                members,
                reply,
            } => {
                let answer = match self.existing(&group) {
                    Some(g) => {
                        let results = g.leave(now, &members, &mut out);
                        let codes = results.into_iter().map(code_of).collect();
                        (error_code::NONE, codes)
                    }
                    None => (
                        error_code::NONE,
                        vec![error_code::UNKNOWN_MEMBER_ID; members.len()],
                    ),
                };
                let _ = reply.send(answer);
            }
            GroupMsg::Commit {
                group,
                generation,
                member_id,
                instance_id,
                offsets,
                reply,
            } => self.commit(&group, generation, &member_id, &instance_id, offsets, reply),
            GroupMsg::Fetch {
                group,
                topics,
                reply,
            } => {
                let _ = reply.send(self.fetch(&group, topics));
            }
            GroupMsg::DeleteOffsets {
                group,
                topics,
                reply,
            } => self.delete_offsets(&group, topics, reply),
            GroupMsg::Describe { group, reply } => {
                let _ = reply.send(self.describe(&group));
            }
            GroupMsg::List { reply } => {
                let _ = reply.send(self.list());
            }
            GroupMsg::Delete { group, reply } => self.delete_group(&group, reply),
        }
        self.deliver(out);
    }

    /// Drops a group with no members, no pending member ids and no committed offsets: group
    /// ids a peer makes up do not accumulate.
    fn forget_if_unused(&mut self, id: &str) {
        if let Some(partition) = self.partition(id) {
            let unused = partition.groups.get(id).is_some_and(|g| g.is_empty());
            if unused && !partition.store.has_group(id) {
                partition.groups.remove(id);
            }
        }
    }

    /// The group if it has members or offsets (no empty group is created by asking).
    fn existing(&mut self, id: &str) -> Option<&mut Group> {
        let partition = self.partition(id)?;
        partition.groups.get_mut(id)
    }

    fn commit(
        &mut self,
        group: &str,
        generation: i32,
        member_id: &str,
        instance_id: &Option<String>,
        offsets: Vec<(String, Vec<CommitPart>)>,
        reply: oneshot::Sender<TopicCodes>,
    ) {
        if !offsets::fits(group) {
            let _ = reply.send(every_partition(&offsets, error_code::INVALID_GROUP_ID));
            return;
        }
        let metadata_max = self
            .broker
            .config
            .groups
            .coordination
            .offset_metadata_bytes_max;
        let validated = match self.existing(group) {
            Some(g) => g.validate_commit(generation, member_id, instance_id),
            // A commit for a group nobody joined: a consumer with manual assignment.
            None if generation < 0 && member_id.is_empty() => Ok(()),
            // As Kafka: a generation the (memberless) group never had.
            None => Err(GroupError::IllegalGeneration),
        };
        if let Err(error) = validated {
            let _ = reply.send(every_partition(&offsets, group_error_code(error)));
            return;
        }
        let commit_time_ms = wall_clock_ms();
        let Some(partition) = self.partition(group) else {
            let _ = reply.send(every_partition(&offsets, error_code::NOT_COORDINATOR));
            return;
        };
        let mut batch = BatchBuilder::new(commit_time_ms);
        let mut codes = Vec::new();
        let mut accepted = Vec::new();
        for (topic, parts) in &offsets {
            let mut topic_codes = Vec::new();
            for part in parts {
                let metadata = part.metadata.clone().unwrap_or_default();
                let code = if metadata.len() > metadata_max || !offsets::fits(topic) {
                    error_code::OFFSET_METADATA_TOO_LARGE
                } else {
                    let committed = Committed {
                        offset: part.offset,
                        leader_epoch: part.leader_epoch,
                        metadata,
                        commit_time_ms,
                    };
                    let key = offsets::encode_key(group, topic, part.partition);
                    batch.push(
                        Some(&key),
                        Some(&offsets::encode_value(&committed)),
                        commit_time_ms,
                    );
                    accepted.push((topic.clone(), part.partition, committed));
                    error_code::NONE
                };
                topic_codes.push((part.partition, code));
            }
            codes.push((topic.clone(), topic_codes));
        }
        if batch.is_empty() {
            let _ = reply.send(codes);
            return;
        }
        match partition.log.append(&mut batch.build()) {
            Err(LogError::BatchTooLarge { .. }) => {
                let _ = reply.send(every_partition(
                    &offsets,
                    error_code::INVALID_COMMIT_OFFSET_SIZE,
                ));
            }
            Err(e) => {
                eprintln!("weir: offsets log append failed: {e}");
                let _ = reply.send(every_partition(
                    &offsets,
                    crate::partition::error_code_of(&e),
                ));
            }
            Ok(appended) => {
                // Applied now, so a fetch on this shard sees the commit in order with it; the
                // committer hears back only once it is on disk.
                for (topic, p, committed) in accepted {
                    partition.store.apply(group, &topic, p, Some(committed));
                }
                maybe_compact(partition);
                answer_when_durable(appended.durable, reply, codes, offsets);
            }
        }
    }

    fn fetch(
        &mut self,
        group: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> Vec<(String, Vec<FetchedOffset>)> {
        let found = |c: Option<&Committed>, partition| match c {
            Some(c) => FetchedOffset {
                partition,
                offset: c.offset,
                leader_epoch: c.leader_epoch,
                metadata: c.metadata.clone(),
                error_code: error_code::NONE,
            },
            None => FetchedOffset {
                partition,
                offset: -1,
                leader_epoch: -1,
                metadata: String::new(),
                error_code: error_code::NONE,
            },
        };
        let Some(partition) = self.partition(group) else {
            return Vec::new();
        };
        match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(topic, parts)| {
                    let fetched = parts
                        .into_iter()
                        .map(|p| found(partition.store.get(group, &topic, p), p))
                        .collect();
                    (topic, fetched)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<FetchedOffset>> = BTreeMap::new();
                if let Some(offsets) = partition.store.group(group) {
                    for ((topic, p), committed) in offsets {
                        by_topic
                            .entry(topic.clone())
                            .or_default()
                            .push(found(Some(committed), *p));
                    }
                }
                by_topic.into_iter().collect()
            }
        }
    }

    fn delete_offsets(
        &mut self,
        group: &str,
        topics: Vec<(String, Vec<i32>)>,
        reply: oneshot::Sender<(i16, TopicCodes)>,
    ) {
        let subscribed = self.existing(group).map(|g| g.subscribed_topics());
        let Some(partition) = self.partition(group) else {
            let _ = reply.send((error_code::NOT_COORDINATOR, Vec::new()));
            return;
        };
        if subscribed.is_none() && !partition.store.has_group(group) {
            let _ = reply.send((error_code::GROUP_ID_NOT_FOUND, Vec::new()));
            return;
        }
        let now = wall_clock_ms();
        let mut batch = BatchBuilder::new(now);
        let mut codes = Vec::new();
        let mut deleted = Vec::new();
        for (topic, parts) in topics {
            // A topic the group consumes keeps its offsets; unreadable subscriptions keep all.
            let in_use = match &subscribed {
                None => false,
                Some(None) => true,
                Some(Some(topics)) => topics.contains(&topic),
            };
            let mut topic_codes = Vec::new();
            for p in parts {
                let code = if in_use {
                    error_code::GROUP_SUBSCRIBED_TO_TOPIC
                } else {
                    if partition.store.get(group, &topic, p).is_some() && offsets::fits(&topic) {
                        batch.push(Some(&offsets::encode_key(group, &topic, p)), None, now);
                        deleted.push((topic.clone(), p));
                    }
                    error_code::NONE
                };
                topic_codes.push((p, code));
            }
            codes.push((topic, topic_codes));
        }
        if batch.is_empty() {
            let _ = reply.send((error_code::NONE, codes));
            return;
        }
        match partition.log.append(&mut batch.build()) {
            Err(e) => {
                let code = crate::partition::error_code_of(&e);
                let _ = reply.send((code, Vec::new()));
            }
            Ok(appended) => {
                for (topic, p) in deleted {
                    partition.store.apply(group, &topic, p, None);
                }
                let durable = appended.durable;
                tokio::task::spawn_local(async move {
                    let answer = match durable.await {
                        Ok(()) => (error_code::NONE, codes),
                        Err(e) => (crate::partition::error_code_of(&e), Vec::new()),
                    };
                    let _ = reply.send(answer);
                });
            }
        }
    }

    fn describe(&mut self, id: &str) -> GroupDescription {
        let has_offsets = self.partition(id).is_some_and(|p| p.store.has_group(id));
        match self.existing(id) {
            Some(g) => GroupDescription {
                error_code: error_code::NONE,
                state: g.state().name(),
                protocol_type: g.protocol_type().unwrap_or_default().to_string(),
                protocol: g.protocol().unwrap_or_default().to_string(),
                members: g.describe(),
            },
            None => GroupDescription {
                error_code: error_code::NONE,
                // Kafka's answer for a group it does not know: Dead, no members.
                state: if has_offsets { "Empty" } else { "Dead" },
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            },
        }
    }

    fn list(&self) -> Vec<(String, String, &'static str)> {
        let mut listed = BTreeMap::new();
        for partition in self.partitions.values() {
            for id in partition.store.groups() {
                listed.insert(id.clone(), (String::new(), GroupState::Empty.name()));
            }
            for (id, group) in &partition.groups {
                if group.member_count() > 0 || partition.store.has_group(id) {
                    let protocol_type = group.protocol_type().unwrap_or_default().to_string();
                    listed.insert(id.clone(), (protocol_type, group.state().name()));
                }
            }
        }
        listed
            .into_iter()
            .map(|(id, (protocol_type, state))| (id, protocol_type, state))
            .collect()
    }

    fn delete_group(&mut self, id: &str, reply: oneshot::Sender<i16>) {
        if self.existing(id).is_some_and(|g| !g.is_empty()) {
            let _ = reply.send(error_code::NON_EMPTY_GROUP);
            return;
        }
        let known = self.existing(id).is_some();
        let Some(partition) = self.partition(id) else {
            let _ = reply.send(error_code::NOT_COORDINATOR);
            return;
        };
        partition.groups.remove(id);
        let entries: Vec<(String, i32)> = partition
            .store
            .group(id)
            .map(|offsets| offsets.keys().cloned().collect())
            .unwrap_or_default();
        if entries.is_empty() {
            let code = if known {
                error_code::NONE
            } else {
                error_code::GROUP_ID_NOT_FOUND
            };
            let _ = reply.send(code);
            return;
        }
        let tombstones: Vec<(Vec<u8>, Option<Vec<u8>>)> = entries
            .iter()
            .map(|(topic, p)| (offsets::encode_key(id, topic, *p), None))
            .collect();
        match append_chunked(&mut partition.log, tombstones, wall_clock_ms()) {
            Err(e) => {
                let _ = reply.send(crate::partition::error_code_of(&e));
            }
            Ok(appended) => {
                for (topic, p) in entries {
                    partition.store.apply(id, &topic, p, None);
                }
                let durable = appended.map_or_else(Durable::ready, |(_, durable)| durable);
                tokio::task::spawn_local(async move {
                    let code = match durable.await {
                        Ok(()) => error_code::NONE,
                        Err(e) => crate::partition::error_code_of(&e),
                    };
                    let _ = reply.send(code);
                });
            }
        }
    }

    /// offsets.retention.minutes: the offsets of a group without members go once they are
    /// older than the retention (counted from the commit).
    fn expire_offsets(&mut self) {
        let now = wall_clock_ms();
        let cutoff = now.saturating_sub(self.broker.config.groups.offsets_retention_ms);
        for partition in self.partitions.values_mut() {
            expire_partition(partition, cutoff, now);
        }
    }

    /// Shutdown: parked joins and syncs are told to find the coordinator again; the offsets
    /// logs are closed cleanly.
    pub fn close(mut self) {
        let mut out = Vec::new();
        for partition in self.partitions.values_mut() {
            for group in partition.groups.values_mut() {
                group.abandon(&mut out);
            }
        }
        self.deliver(out);
        for (_, partition) in self.partitions.drain() {
            let dir = partition.log.dir().to_path_buf();
            if let Err(e) = partition.log.close() {
                eprintln!("weir: closing {}: {e}", dir.display());
            }
        }
    }
}

fn not_here_join() -> JoinResponse {
    JoinResponse {
        error: Some(GroupError::CoordinatorNotAvailable),
        ..JoinResponse::default()
    }
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn answer_when_durable(
    durable: Durable,
    reply: oneshot::Sender<TopicCodes>,
    codes: TopicCodes,
    offsets: Vec<(String, Vec<CommitPart>)>,
) {
    if durable.is_ready() {
        let _ = reply.send(codes);
        return;
    }
    tokio::task::spawn_local(async move {
        let answer = match durable.await {
            Ok(()) => codes,
            Err(e) => every_partition(&offsets, crate::partition::error_code_of(&e)),
        };
        let _ = reply.send(answer);
    });
}

/// Deletes (with tombstones in the log) the offsets committed before `cutoff` by groups that
/// have no members; forgets such groups once they have no offsets left.
fn expire_partition(partition: &mut Partition, cutoff: i64, now: i64) {
    let mut expired = Vec::new();
    let groups: Vec<String> = partition.store.groups().cloned().collect();
    for id in groups {
        if partition.groups.get(&id).is_some_and(|g| !g.is_empty()) {
            continue;
        }
        for (topic, p) in partition.store.older_than(&id, cutoff) {
            expired.push((id.clone(), topic, p));
        }
    }
    if expired.is_empty() {
        return;
    }
    let tombstones: Vec<(Vec<u8>, Option<Vec<u8>>)> = expired
        .iter()
        .map(|(id, topic, p)| (offsets::encode_key(id, topic, *p), None))
        .collect();
    match append_chunked(&mut partition.log, tombstones, now) {
        Ok(_) => {
            for (id, topic, p) in expired {
                partition.store.apply(&id, &topic, p, None);
            }
            let store = &partition.store;
            partition
                .groups
                .retain(|id, g| !g.is_empty() || store.has_group(id));
        }
        Err(e) => eprintln!("weir: expiring committed offsets: {e}"),
    }
}

/// Rebuilds the committed-offset table from a partition's offsets log.
fn replay(log: &Log) -> Result<OffsetStore, LogError> {
    let mut store = OffsetStore::new();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    let corrupt = |reason: String| LogError::Failed {
        cause: format!("offsets log {}: {reason}", log.dir().display()),
    };
    while offset < end {
        let copy = log.read_copy(offset, REPLAY_READ_BYTES)?;
        if copy.next_offset <= offset {
            return Err(corrupt(format!(
                "no batch at offset {offset} below the end {end}"
            )));
        }
        for batch in weir_log::batch::Batches::new(&copy.bytes) {
            let (position, header) = batch.map_err(|e| corrupt(e.to_string()))?;
            let bytes = &copy.bytes[position..position + header.size()];
            let records =
                weir_log::batch::records::records(bytes).map_err(|e| corrupt(e.to_string()))?;
            for record in records {
                let record = record.map_err(|e| corrupt(e.to_string()))?;
                let offset = header.base_offset + i64::from(record.offset_delta);
                if offset < log.log_start_offset() {
                    continue;
                }
                let key = record
                    .key
                    .ok_or_else(|| corrupt("a record without a key".into()))?;
                store
                    .replay(key, record.value)
                    .map_err(|e| corrupt(e.to_string()))?;
            }
        }
        offset = copy.next_offset;
    }
    Ok(store)
}

/// Appends `records` (key, value or tombstone) in batches of at most [`OFFSETS_CHUNK_BYTES`];
/// returns the durability of the last batch and the offset of the first record.
fn append_chunked(
    log: &mut Log,
    records: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    now: i64,
) -> Result<Option<(i64, Durable)>, LogError> {
    let mut first = None;
    let mut last = None;
    let mut batch = BatchBuilder::new(now);
    let mut bytes = 0usize;
    let mut flush = |batch: &mut BatchBuilder, log: &mut Log| -> Result<(), LogError> {
        let appended = log.append(&mut batch.build())?;
        first.get_or_insert(appended.base_offset);
        last = Some(appended.durable);
        *batch = BatchBuilder::new(now);
        Ok(())
    };
    for (key, value) in records {
        let size = key.len() + value.as_ref().map_or(0, Vec::len) + 32;
        if !batch.is_empty() && bytes + size > OFFSETS_CHUNK_BYTES {
            flush(&mut batch, log)?;
            bytes = 0;
        }
        batch.push(Some(&key), value.as_deref(), now);
        bytes += size;
    }
    if !batch.is_empty() {
        flush(&mut batch, log)?;
    }
    Ok(first.zip(last))
}

/// Appends the live entries again once the log is mostly superseded records; the log start
/// moves past the old ones when the copy is durable ([`finish_compaction`]).
fn maybe_compact(partition: &mut Partition) {
    if partition.compacting.is_some() {
        return;
    }
    let records = partition.log.log_end_offset() - partition.log.log_start_offset();
    let live = partition.store.len() as i64;
    if records <= (2 * live + COMPACTION_SLACK_RECORDS).max(partition.compact_after) {
        return;
    }
    let copy: Vec<(Vec<u8>, Option<Vec<u8>>)> = partition
        .store
        .records()
        .map(|(key, value)| (key, Some(value)))
        .collect();
    let result = partition
        .log
        .roll()
        .and_then(|()| append_chunked(&mut partition.log, copy, wall_clock_ms()));
    match result {
        Ok(Some((start, durable))) => partition.compacting = Some((start, durable)),
        Ok(None) => {
            // Nothing live: everything before the end can go.
            let end = partition.log.log_end_offset();
            partition.compacting = Some((end, partition.log.sync()));
        }
        Err(e) => {
            // A partial copy is harmless (replay gives the same table); try again later.
            eprintln!("weir: compacting the offsets log: {e}");
            partition.compact_after = records + COMPACTION_SLACK_RECORDS;
        }
    }
}

fn finish_compaction(partition: &mut Partition) {
    let Some((start, durable)) = partition.compacting.take() else {
        return;
    };
    if !durable.is_ready() {
        partition.compacting = Some((start, durable));
        return;
    }
    if let Err(e) = durable.wait() {
        eprintln!("weir: compacting the offsets log: {e}");
        return;
    }
    if let Err(e) = partition.log.advance_start_offset(start) {
        eprintln!("weir: compacting the offsets log: {e}");
    }
}

/// File under `<data_dir>/groups/` that fixes the number of coordinator partitions: groups are
/// hashed onto them, so the count cannot change once offsets are stored.
const PARTITIONS_FILE: &str = "partitions";

/// The number of coordinator partitions: the stored one if the data directory has one (a
/// differing `wanted` is reported and ignored), else `wanted`, stored durably.
pub(crate) fn resolve_partitions(data_dir: &Path, wanted: u32) -> std::io::Result<u32> {
    let dir = data_dir.join("groups");
    let path = dir.join(PARTITIONS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let stored: u32 = text.trim().parse().map_err(|_| {
                std::io::Error::other(format!(
                    "{}: expected a partition count, found {:?}",
                    path.display(),
                    text.trim()
                ))
            })?;
            if stored == 0 {
                return Err(std::io::Error::other(format!(
                    "{}: partition count 0",
                    path.display()
                )));
            }
            if stored != wanted {
                eprintln!(
                    "weir: offsets_partitions stays {stored} (stored in {}), not {wanted}: \
                     committed offsets are placed by it",
                    path.display()
                );
            }
            Ok(stored)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&dir)?;
            let tmp = dir.join(format!("{PARTITIONS_FILE}.tmp"));
            {
                use std::io::Write;
                let mut file = std::fs::File::create(&tmp)?;
                writeln!(file, "{wanted}")?;
                file.sync_all()?;
            }
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&dir)?.sync_all()?;
            Ok(wanted)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weir-coord-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// What `Coordinators::commit` does to the log and the table, without the group checks.
    fn commit(partition: &mut Partition, group: &str, topic: &str, p: i32, offset: i64) {
        let committed = Committed {
            offset,
            leader_epoch: 1,
            metadata: format!("m{offset}"),
            // Real time: segment.ms counts from record timestamps (old ones roll at once).
            commit_time_ms: wall_clock_ms(),
        };
        let mut batch = BatchBuilder::new(committed.commit_time_ms);
        let key = offsets::encode_key(group, topic, p);
        let value = offsets::encode_value(&committed);
        batch.push(Some(&key), Some(&value), committed.commit_time_ms);
        partition.log.append(&mut batch.build()).expect("append");
        partition.store.apply(group, topic, p, Some(committed));
        maybe_compact(partition);
    }

    #[test]
    fn old_offsets_of_groups_without_members_expire_and_stay_expired_after_replay() {
        let dir = temp_dir("expire");
        let flusher = weir_log::Flusher::start(1).expect("flusher");
        let options = LogOptions::new(offsets_log_config(), flusher.clone());
        let mut partition = Partition {
            log: Log::open(&dir, options.clone()).expect("open"),
            store: OffsetStore::new(),
            groups: HashMap::new(),
            compacting: None,
            compact_after: 0,
        };
        for group in ["idle", "busy"] {
            commit(&mut partition, group, "orders", 0, 5);
        }
        // "busy" has a member: its offsets stay however old they are.
        let mut busy = Group::new("busy", weir_broker::group::GroupConfig::default(), 1);
        let join = JoinRequest {
            member_id: String::new(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Vec::new())],
            require_known_member_id: false,
        };
        busy.join(0, 1, join, &mut Vec::new());
        partition.groups.insert("busy".into(), busy);
        let now = wall_clock_ms();
        expire_partition(&mut partition, now - 60_000, now);
        assert!(partition.store.has_group("idle"), "not old enough yet");
        expire_partition(&mut partition, now + 1, now);
        assert!(!partition.store.has_group("idle"));
        assert!(partition.store.has_group("busy"));
        partition.log.close().expect("close");
        let log = Log::open(&dir, options).expect("reopen");
        let replayed = replay(&log).expect("replay");
        assert!(!replayed.has_group("idle"), "the expiry is durable");
        assert_eq!(replayed.get("busy", "orders", 0).map(|c| c.offset), Some(5));
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn superseded_commits_are_compacted_away_and_replay_rebuilds_the_table() {
        let dir = temp_dir("compact");
        let flusher = weir_log::Flusher::start(1).expect("flusher");
        let open = || {
            let mut config = offsets_log_config();
            config.flush_messages = LogConfig::default().flush_messages; // no fsync per append
            config.segment_bytes = 64 * 1024;
            Log::open(&dir, LogOptions::new(config, flusher.clone())).expect("open")
        };
        let mut partition = Partition {
            log: open(),
            store: OffsetStore::new(),
            groups: HashMap::new(),
            compacting: None,
            compact_after: 0,
        };
        let mut compactions = 0;
        for i in 0..60_000i64 {
            commit(
                &mut partition,
                &format!("g{}", i % 7),
                "orders",
                (i % 5) as i32,
                i,
            );
            if partition.compacting.is_some() {
                compactions += 1;
                while partition.compacting.is_some() {
                    finish_compaction(&mut partition);
                    std::thread::yield_now();
                }
            }
        }
        assert!(compactions >= 2, "{compactions} compactions");
        let records = partition.log.log_end_offset() - partition.log.log_start_offset();
        assert!(
            records <= 2 * 35 + COMPACTION_SLACK_RECORDS + 35,
            "{records} records left in the log"
        );
        // A tombstone, then reopen: the table comes back from the log alone.
        let mut batch = BatchBuilder::new(wall_clock_ms());
        batch.push(
            Some(&offsets::encode_key("g3", "orders", 3)),
            None,
            wall_clock_ms(),
        );
        partition.log.append(&mut batch.build()).expect("append");
        partition.store.apply("g3", "orders", 3, None);
        let expected = partition.store.clone();
        partition.log.close().expect("close");
        let log = open();
        let replayed = replay(&log).expect("replay");
        assert_eq!(replayed, expected);
        assert_eq!(replayed.len(), 34);
        let last = replayed.get("g1", "orders", 4).expect("committed");
        let latest = (0..60_000i64).rev().find(|i| i % 7 == 1 && i % 5 == 4);
        assert_eq!(Some(last.offset), latest);
        assert_eq!(last.metadata, format!("m{}", last.offset));
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
