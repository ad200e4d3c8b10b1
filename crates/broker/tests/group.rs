//! The group coordinator's state machine, driven without sockets: named scenarios, and a seeded
//! simulation of many clients following the consumer protocol, checking after every completed
//! rebalance that each partition is owned by exactly one member.
//!
//! WEIR_SEED=<n> replays one simulation seed.

use std::collections::{BTreeMap, HashMap};

use weir_broker::group::{
    Effect, Group, GroupConfig, GroupError, GroupState, JoinRequest, JoinResponse, SyncRequest,
    SyncResponse, Token,
};

const SESSION_MS: u64 = 10_000;
const REBALANCE_MS: u64 = 20_000;

fn config() -> GroupConfig {
    GroupConfig::default()
}

fn join_request(member_id: &str, instance: Option<&str>, protocols: &[&str]) -> JoinRequest {
    JoinRequest {
        member_id: member_id.to_string(),
        group_instance_id: instance.map(str::to_string),
        client_id: "client".to_string(),
        client_host: "/127.0.0.1".to_string(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".to_string(),
        protocols: protocols
            .iter()
            .map(|p| (p.to_string(), format!("meta-{p}").into_bytes()))
            .collect(),
        require_known_member_id: true,
    }
}

fn sync_request(member_id: &str, generation: i32, assignments: &[(&str, &[u8])]) -> SyncRequest {
    SyncRequest {
        generation_id: generation,
        member_id: member_id.to_string(),
        group_instance_id: None,
        protocol_type: Some("consumer".to_string()),
        protocol_name: None,
        assignments: assignments
            .iter()
            .map(|(m, a)| (m.to_string(), a.to_vec()))
            .collect(),
    }
}

fn joins(out: &mut Vec<Effect>) -> BTreeMap<Token, JoinResponse> {
    let mut found = BTreeMap::new();
    out.retain(|e| match e {
        Effect::Join(t, r) => {
            found.insert(*t, r.clone());
            false
        }
        _ => true,
    });
    found
}

fn syncs(out: &mut Vec<Effect>) -> BTreeMap<Token, SyncResponse> {
    let mut found = BTreeMap::new();
    out.retain(|e| match e {
        Effect::Sync(t, r) => {
            found.insert(*t, r.clone());
            false
        }
        _ => true,
    });
    found
}

/// Joins `n` dynamic members into an empty group and completes the first rebalance; returns
/// their member ids (the leader first).
fn form_group(group: &mut Group, n: usize, now: &mut u64) -> Vec<String> {
    let mut out = Vec::new();
    let mut ids = Vec::new();
    for i in 0..n {
        group.join(
            *now,
            i as Token,
            join_request("", None, &["range"]),
            &mut out,
        );
        let answer = joins(&mut out).remove(&(i as Token)).expect("answered");
        assert_eq!(answer.error, Some(GroupError::MemberIdRequired));
        ids.push(answer.member_id.clone());
        group.join(
            *now,
            100 + i as Token,
            join_request(&answer.member_id, None, &["range"]),
            &mut out,
        );
    }
    assert!(
        joins(&mut out).is_empty(),
        "the initial rebalance waits for its delay"
    );
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    *now += config().initial_rebalance_delay_ms;
    group.tick(*now, &mut out);
    let answers = joins(&mut out);
    assert_eq!(answers.len(), n);
    let generation = group.generation();
    let leader = group.leader().expect("leader").to_string();
    for (token, answer) in &answers {
        assert_eq!(answer.error, None);
        assert_eq!(answer.generation_id, generation);
        assert_eq!(answer.protocol_name.as_deref(), Some("range"));
        assert_eq!(answer.leader, leader);
        if answer.member_id == leader {
            assert_eq!(answer.members.len(), n, "token {token}");
            assert!(answer.members.iter().all(|m| m.metadata == b"meta-range"));
        } else {
            assert!(answer.members.is_empty());
        }
    }
    assert_eq!(group.state(), GroupState::CompletingRebalance);
    // Followers sync first and wait; the leader's assignment answers everybody.
    for (i, id) in ids.iter().filter(|id| **id != leader).enumerate() {
        group.sync(
            *now,
            200 + i as Token,
            sync_request(id, generation, &[]),
            &mut out,
        );
    }
    assert!(syncs(&mut out).is_empty());
    let assignment: Vec<(String, Vec<u8>)> = ids
        .iter()
        .map(|id| (id.clone(), format!("parts-of-{id}").into_bytes()))
        .collect();
    let refs: Vec<(&str, &[u8])> = assignment
        .iter()
        .map(|(m, a)| (m.as_str(), a.as_slice()))
        .collect();
    group.sync(
        *now,
        300,
        sync_request(&leader, generation, &refs),
        &mut out,
    );
    let synced = syncs(&mut out);
    assert_eq!(synced.len(), n, "every member is answered: {synced:?}");
    assert!(synced.values().all(|s| s.error.is_none()));
    assert_eq!(group.state(), GroupState::Stable);
    for (id, bytes) in group.assignments() {
        assert_eq!(bytes, format!("parts-of-{id}").into_bytes());
    }
    let mut ordered = vec![leader.clone()];
    ordered.extend(ids.into_iter().filter(|id| *id != leader));
    ordered
}

#[test]
fn members_join_with_kip394_then_sync_and_the_leader_relays_the_assignment() {
    let mut group = Group::new("g", config(), 1);
    let mut now = 0;
    let ids = form_group(&mut group, 3, &mut now);
    assert_eq!(group.generation(), 1);
    assert_eq!(group.member_count(), 3);
    for id in &ids {
        assert_eq!(group.heartbeat(now, id, &None, 1), Ok(()));
    }
    // A stale generation and a stranger are refused.
    assert_eq!(
        group.heartbeat(now, &ids[1], &None, 0),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        group.heartbeat(now, "nobody", &None, 1),
        Err(GroupError::UnknownMemberId)
    );
    let mut out = Vec::new();
    group.sync(now, 9, sync_request(&ids[2], 0, &[]), &mut out);
    assert_eq!(
        syncs(&mut out)[&9].error,
        Some(GroupError::IllegalGeneration)
    );
    assert_eq!(
        group.validate_commit(0, &ids[0], &None),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(group.validate_commit(1, &ids[0], &None), Ok(()));
    assert_eq!(
        group.validate_commit(-1, "", &None),
        Err(GroupError::UnknownMemberId),
        "anonymous commits only while the group has no members"
    );
}

#[test]
fn a_leaving_member_triggers_a_rebalance_that_completes_when_the_rest_rejoin() {
    let mut group = Group::new("g", config(), 1);
    let mut now = 0;
    let ids = form_group(&mut group, 3, &mut now);
    let mut out = Vec::new();
    now += 100;
    let results = group.leave(now, &[(ids[1].clone(), None)], &mut out);
    assert_eq!(results, vec![Ok(())]);
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    assert_eq!(
        group.heartbeat(now, &ids[0], &None, 1),
        Err(GroupError::RebalanceInProgress)
    );
    group.join(now, 1, join_request(&ids[0], None, &["range"]), &mut out);
    assert!(joins(&mut out).is_empty());
    group.join(now, 2, join_request(&ids[2], None, &["range"]), &mut out);
    let answers = joins(&mut out);
    assert_eq!(
        answers.len(),
        2,
        "no initial delay once the group has formed"
    );
    assert_eq!(answers[&1].generation_id, 2);
    assert_eq!(answers[&1].members.len(), 2, "the old leader still leads");
    assert_eq!(
        group.leave(now, &[(ids[1].clone(), None)], &mut out),
        vec![Err(GroupError::UnknownMemberId)]
    );
}

#[test]
fn a_silent_member_is_removed_after_its_session_timeout() {
    let mut group = Group::new("g", config(), 1);
    let mut now = 0;
    let ids = form_group(&mut group, 2, &mut now);
    let mut out = Vec::new();
    for _ in 0..5 {
        now += 3_000;
        assert_eq!(group.heartbeat(now, &ids[0], &None, 1), Ok(()));
        group.tick(now, &mut out);
        if group.state() != GroupState::Stable {
            break;
        }
    }
    assert_eq!(group.state(), GroupState::PreparingRebalance);
    assert_eq!(group.member_count(), 1);
    assert!(group.next_deadline().is_some());
    group.join(now, 5, join_request(&ids[0], None, &["range"]), &mut out);
    let answer = &joins(&mut out)[&5];
    assert_eq!(answer.generation_id, 2);
    assert_eq!(answer.leader, ids[0]);
    assert_eq!(answer.members.len(), 1);
}

#[test]
fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
    let mut group = Group::new("g", config(), 1);
    let mut now = 0;
    let ids = form_group(&mut group, 2, &mut now);
    let mut out = Vec::new();
    // A third member joins: both old members must rejoin.
    group.join(now, 1, join_request("", None, &["range"]), &mut out);
    let new_id = joins(&mut out)[&1].member_id.clone();
    group.join(now, 2, join_request(&new_id, None, &["range"]), &mut out);
    group.join(now, 3, join_request(&ids[0], None, &["range"]), &mut out);
    assert!(joins(&mut out).is_empty());
    // ids[1] keeps heartbeating but never rejoins.
    now += REBALANCE_MS / 2;
    assert_eq!(
        group.heartbeat(now, &ids[1], &None, 1),
        Err(GroupError::RebalanceInProgress)
    );
    now += REBALANCE_MS / 2;
    group.tick(now, &mut out);
    let answers = joins(&mut out);
    assert_eq!(answers.len(), 2);
    assert_eq!(group.member_count(), 2);
    assert_eq!(
        group.heartbeat(now, &ids[1], &None, 2),
        Err(GroupError::UnknownMemberId)
    );
}

#[test]
fn a_leader_that_never_syncs_is_dropped_and_the_group_rebalances() {
    let mut group = Group::new("g", config(), 1);
    let mut out = Vec::new();
    let mut now = 0;
    let mut ids = Vec::new();
    for i in 0..2u64 {
        group.join(now, i, join_request("", None, &["range"]), &mut out);
        let id = joins(&mut out)[&i].member_id.clone();
        group.join(now, 10 + i, join_request(&id, None, &["range"]), &mut out);
        ids.push(id);
    }
    now += 3_000;
    group.tick(now, &mut out);
    assert_eq!(joins(&mut out).len(), 2);
    let leader = group.leader().expect("leader").to_string();
    let follower = ids
        .iter()
        .find(|id| **id != leader)
        .expect("follower")
        .clone();
    group.sync(now, 20, sync_request(&follower, 1, &[]), &mut out);
    now += REBALANCE_MS;
    group.tick(now, &mut out);
    assert_eq!(group.member_count(), 1);
    assert_eq!(group.leader(), Some(follower.as_str()));
    // The follower's parked sync was told to rejoin, and it is now the only member.
    assert_eq!(
        syncs(&mut out)[&20].error,
        Some(GroupError::RebalanceInProgress)
    );
}

#[test]
fn a_static_member_restarting_takes_its_place_back_without_a_rebalance() {
    let mut group = Group::new("g", config(), 1);
    let mut out = Vec::new();
    let mut now = 0;
    // Static members skip KIP-394's MEMBER_ID_REQUIRED round.
    group.join(
        now,
        1,
        join_request("", Some("pod-a"), &["range"]),
        &mut out,
    );
    group.join(
        now,
        2,
        join_request("", Some("pod-b"), &["range"]),
        &mut out,
    );
    now += 3_000;
    group.tick(now, &mut out);
    let answers = joins(&mut out);
    let (a, b) = (answers[&1].member_id.clone(), answers[&2].member_id.clone());
    let leader = answers[&1].leader.clone();
    let mut leader_sync = sync_request(&leader, 1, &[(&a, b"A"), (&b, b"B")]);
    leader_sync.group_instance_id = Some(if leader == a { "pod-a" } else { "pod-b" }.to_string());
    group.sync(now, 3, leader_sync, &mut out);
    assert_eq!(group.state(), GroupState::Stable);
    // pod-b restarts: no member id, same instance id.
    now += 1_000;
    group.join(
        now,
        4,
        join_request("", Some("pod-b"), &["range"]),
        &mut out,
    );
    let answer = joins(&mut out).remove(&4).expect("answered at once");
    assert_eq!(answer.error, None);
    assert_eq!(answer.generation_id, 1, "no new generation");
    assert_ne!(answer.member_id, b);
    assert_eq!(group.state(), GroupState::Stable);
    let mut sync = sync_request(&answer.member_id, 1, &[]);
    sync.group_instance_id = Some("pod-b".into());
    group.sync(now, 5, sync, &mut out);
    assert_eq!(syncs(&mut out)[&5].assignment, b"B");
    // The old incarnation is fenced.
    assert_eq!(
        group.heartbeat(now, &b, &Some("pod-b".into()), 1),
        Err(GroupError::FencedInstanceId)
    );
    // Leaving by instance id alone works (KIP-345 batch leave).
    assert_eq!(
        group.leave(now, &[(String::new(), Some("pod-b".into()))], &mut out),
        vec![Ok(())]
    );
    assert_eq!(group.state(), GroupState::PreparingRebalance);
}

#[test]
fn inconsistent_protocols_and_bad_session_timeouts_are_refused() {
    let mut group = Group::new("g", config(), 1);
    let mut now = 0;
    form_group(&mut group, 1, &mut now);
    let mut out = Vec::new();
    group.join(now, 1, join_request("", None, &["roundrobin"]), &mut out);
    assert_eq!(
        joins(&mut out)[&1].error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    let mut other_type = join_request("", None, &["range"]);
    other_type.protocol_type = "connect".into();
    group.join(now, 2, other_type, &mut out);
    assert_eq!(
        joins(&mut out)[&2].error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    let many: Vec<String> = (0..=weir_broker::group::state::PROTOCOLS_PER_MEMBER_MAX)
        .map(|i| format!("p{i}"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let mut empty = Group::new("other", config(), 1);
    empty.join(now, 4, join_request("", None, &many), &mut out);
    assert_eq!(
        joins(&mut out)[&4].error,
        Some(GroupError::InconsistentGroupProtocol)
    );
    let mut short = join_request("", None, &["range"]);
    short.session_timeout_ms = 10;
    group.join(now, 3, short, &mut out);
    assert_eq!(
        joins(&mut out)[&3].error,
        Some(GroupError::InvalidSessionTimeout)
    );
}

#[test]
fn the_protocol_most_members_prefer_among_common_ones_is_chosen() {
    let mut group = Group::new("g", config(), 1);
    let mut out = Vec::new();
    let prefs: [&[&str]; 3] = [
        &["cooperative-sticky", "range"],
        &["range", "cooperative-sticky"],
        &["cooperative-sticky", "range", "roundrobin"],
    ];
    for (i, p) in prefs.iter().enumerate() {
        let mut request = join_request("", None, p);
        request.require_known_member_id = false;
        group.join(0, i as Token, request, &mut out);
    }
    group.tick(3_000, &mut out);
    let answers = joins(&mut out);
    assert!(answers
        .values()
        .all(|a| a.protocol_name.as_deref() == Some("cooperative-sticky")));
}

#[test]
fn the_last_member_leaving_empties_the_group_and_anonymous_commits_are_accepted_again() {
    let mut group = Group::new("g", config(), 1);
    let mut now = 0;
    let ids = form_group(&mut group, 2, &mut now);
    let mut out = Vec::new();
    let leaving: Vec<(String, Option<String>)> = ids.iter().map(|id| (id.clone(), None)).collect();
    assert_eq!(group.leave(now, &leaving, &mut out), vec![Ok(()), Ok(())]);
    assert_eq!(group.state(), GroupState::Empty);
    assert!(group.is_empty());
    assert_eq!(group.validate_commit(-1, "", &None), Ok(()));
    assert_eq!(group.subscribed_topics(), Some(Default::default()));
}

#[test]
fn an_unused_pending_member_id_does_not_disturb_a_stable_group() {
    let mut group = Group::new("g", config(), 1);
    let mut now = 0;
    let ids = form_group(&mut group, 2, &mut now);
    let mut out = Vec::new();
    group.join(now, 1, join_request("", None, &["range"]), &mut out);
    let pending = joins(&mut out)[&1].member_id.clone();
    // The new consumer never comes back: its id expires, the group stays as it is.
    for _ in 0..6 {
        now += 2_500;
        for id in &ids {
            assert_eq!(group.heartbeat(now, id, &None, 1), Ok(()));
        }
        group.tick(now, &mut out);
    }
    assert_eq!(group.state(), GroupState::Stable);
    assert_eq!(group.generation(), 1);
    group.join(now, 2, join_request(&pending, None, &["range"]), &mut out);
    assert_eq!(joins(&mut out)[&2].error, Some(GroupError::UnknownMemberId));
    // A pending id that carries an instance id cannot take over a static member's place.
    group.join(now, 3, join_request("", Some("pod"), &["range"]), &mut out);
    group.join(now, 4, join_request("", None, &["range"]), &mut out);
    let pending = joins(&mut out)[&4].member_id.clone();
    group.join(
        now,
        5,
        join_request(&pending, Some("pod"), &["range"]),
        &mut out,
    );
    assert_eq!(joins(&mut out)[&5].error, Some(GroupError::UnknownMemberId));
    let pods = group
        .describe()
        .iter()
        .filter(|m| m.group_instance_id.as_deref() == Some("pod"))
        .count();
    assert_eq!(pods, 1);
}

#[test]
fn pending_member_ids_count_toward_the_group_size_limit() {
    let config = GroupConfig {
        members_max: 3,
        ..GroupConfig::default()
    };
    let mut group = Group::new("g", config, 1);
    let mut out = Vec::new();
    for token in 0..3 {
        group.join(0, token, join_request("", None, &["range"]), &mut out);
        assert_eq!(
            joins(&mut out)[&token].error,
            Some(GroupError::MemberIdRequired)
        );
    }
    group.join(0, 9, join_request("", None, &["range"]), &mut out);
    assert_eq!(
        joins(&mut out)[&9].error,
        Some(GroupError::GroupMaxSizeReached)
    );
}

// ---- seeded simulation -------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Not in the group (never joined, left, or crashed and not back yet).
    Out,
    Joining,
    Syncing,
    Member,
}

struct Client {
    instance: Option<String>,
    member_id: String,
    generation: i32,
    phase: Phase,
    /// A crashed client neither heartbeats nor answers until it restarts.
    crashed: bool,
}

const PARTITIONS: i32 = 12;

/// The leader's assignor: partitions dealt round-robin over the members, in the order given.
fn assign(members: &[String]) -> Vec<(String, Vec<u8>)> {
    let mut owned: Vec<Vec<u8>> = vec![Vec::new(); members.len()];
    for p in 0..PARTITIONS {
        owned[p as usize % members.len()].push(p as u8);
    }
    members.iter().cloned().zip(owned).collect()
}

fn simulate(seed: u64) -> usize {
    let mut rng = Rng(seed);
    let mut group = Group::new("sim", config(), seed);
    let mut clients: Vec<Client> = Vec::new();
    let mut waiting: HashMap<Token, usize> = HashMap::new();
    let mut next_token: Token = 0;
    let mut now: u64 = 0;
    let mut out = Vec::new();
    let mut checked = 0;
    let join = |group: &mut Group,
                c: &mut Client,
                i: usize,
                now,
                next_token: &mut Token,
                waiting: &mut HashMap<Token, usize>,
                out: &mut Vec<Effect>| {
        *next_token += 1;
        waiting.insert(*next_token, i);
        c.phase = Phase::Joining;
        group.join(
            now,
            *next_token,
            join_request(&c.member_id, c.instance.as_deref(), &["rr"]),
            out,
        );
    };
    for _step in 0..3_000 {
        // Start a client now and then, up to 8; a third are static.
        if clients.len() < 8 && rng.below(20) == 0 {
            let instance = (rng.below(3) == 0).then(|| format!("pod-{}", clients.len()));
            clients.push(Client {
                instance,
                member_id: String::new(),
                generation: -1,
                phase: Phase::Out,
                crashed: false,
            });
        }
        let i = rng.below(clients.len().max(1) as u64) as usize;
        if let Some(c) = clients.get_mut(i) {
            match (rng.below(40), &c.phase) {
                (0, Phase::Member) if !c.crashed => {
                    // Graceful leave.
                    let leaving = [(c.member_id.clone(), c.instance.clone())];
                    group.leave(now, &leaving, &mut out);
                    c.phase = Phase::Out;
                    c.member_id.clear();
                }
                (1, _) if !c.crashed => {
                    c.crashed = true;
                }
                (2..=5, _) if c.crashed => {
                    // Restart: a dynamic member comes back as a stranger, a static one keeps
                    // its instance id.
                    c.crashed = false;
                    c.member_id.clear();
                    join(
                        &mut group,
                        c,
                        i,
                        now,
                        &mut next_token,
                        &mut waiting,
                        &mut out,
                    );
                }
                (_, Phase::Out) if !c.crashed => {
                    join(
                        &mut group,
                        c,
                        i,
                        now,
                        &mut next_token,
                        &mut waiting,
                        &mut out,
                    );
                }
                (_, Phase::Member) if !c.crashed => {
                    match group.heartbeat(now, &c.member_id, &c.instance, c.generation) {
                        Ok(()) => {}
                        Err(GroupError::RebalanceInProgress) => join(
                            &mut group,
                            c,
                            i,
                            now,
                            &mut next_token,
                            &mut waiting,
                            &mut out,
                        ),
                        Err(GroupError::FencedInstanceId) => c.crashed = true,
                        Err(_) => {
                            c.member_id.clear();
                            join(
                                &mut group,
                                c,
                                i,
                                now,
                                &mut next_token,
                                &mut waiting,
                                &mut out,
                            )
                        }
                    }
                }
                _ => {}
            }
        }
        now += rng.below(1_500);
        group.tick(now, &mut out);
        // Deliver answers; clients react at once (a crashed one ignores them).
        while let Some(effect) = out.pop() {
            let token = match &effect {
                Effect::Join(t, _) | Effect::Sync(t, _) => *t,
            };
            let i = waiting
                .remove(&token)
                .expect("every answer is for a waiting request");
            let c = &mut clients[i];
            if c.crashed {
                continue;
            }
            match effect {
                Effect::Join(_, r) => match r.error {
                    None => {
                        c.member_id = r.member_id.clone();
                        c.generation = r.generation_id;
                        c.phase = Phase::Syncing;
                        let assignments = if r.leader == r.member_id && !r.members.is_empty() {
                            let ids: Vec<String> =
                                r.members.iter().map(|m| m.member_id.clone()).collect();
                            assign(&ids)
                        } else {
                            Vec::new()
                        };
                        next_token += 1;
                        waiting.insert(next_token, i);
                        let mut sync = sync_request(&c.member_id, c.generation, &[]);
                        sync.group_instance_id = c.instance.clone();
                        sync.assignments = assignments;
                        group.sync(now, next_token, sync, &mut out);
                    }
                    Some(GroupError::MemberIdRequired) => {
                        c.member_id = r.member_id.clone();
                        join(
                            &mut group,
                            c,
                            i,
                            now,
                            &mut next_token,
                            &mut waiting,
                            &mut out,
                        );
                    }
                    Some(GroupError::FencedInstanceId) => {
                        c.crashed = true;
                        c.phase = Phase::Out;
                    }
                    Some(_) => {
                        c.member_id.clear();
                        c.phase = Phase::Out;
                    }
                },
                Effect::Sync(_, r) => match r.error {
                    None => c.phase = Phase::Member,
                    Some(GroupError::RebalanceInProgress) => join(
                        &mut group,
                        c,
                        i,
                        now,
                        &mut next_token,
                        &mut waiting,
                        &mut out,
                    ),
                    Some(GroupError::FencedInstanceId) => {
                        c.crashed = true;
                        c.phase = Phase::Out;
                    }
                    Some(_) => {
                        c.member_id.clear();
                        c.phase = Phase::Out;
                    }
                },
            }
        }
        if group.state() == GroupState::Stable {
            // After a completed rebalance every partition has exactly one owner.
            let mut owners = vec![0u32; PARTITIONS as usize];
            for bytes in group.assignments().values() {
                for p in bytes {
                    owners[*p as usize] += 1;
                }
            }
            assert!(
                owners.iter().all(|&n| n == 1),
                "seed {seed}: owners per partition {owners:?} at {now} ms"
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn after_every_completed_rebalance_each_partition_has_exactly_one_owner() {
    let seeds: Vec<u64> = match std::env::var("WEIR_SEED") {
        Ok(s) => vec![s.parse().expect("WEIR_SEED is a number")],
        Err(_) => {
            let base = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64);
            (0..40).map(|i| base.wrapping_add(i)).collect()
        }
    };
    let mut stable_checks = 0;
    for seed in seeds {
        let checks = simulate(seed);
        eprintln!("seed {seed}: {checks} stable checks");
        stable_checks += checks;
    }
    assert!(
        stable_checks > 0,
        "the simulation never reached a stable group"
    );
}
