//! One consumer group's coordinator, as a state machine (Kafka's classic group protocol).
//!
//! ```text
//!            join                     all joined / timeout        leader's SyncGroup
//!   Empty ─────────▶ PreparingRebalance ───────────────▶ CompletingRebalance ─────────▶ Stable
//!     ▲                 ▲    │ no member left                   │ join, leave, expiry      │
//!     └─────────────────┼────┘                                  ▼                          │
//!                       └──────────────── join (new member or changed protocols), leave, ──┘
//!                                         session expiry
//! ```
//!
//! Joins are parked until the rebalance completes; the leader gets every member's metadata,
//! picks the assignment on the client side (range, roundrobin, cooperative-sticky: the broker
//! only relays bytes) and sends it in its SyncGroup; each member's parked SyncGroup is then
//! answered with its share. Time is an argument (milliseconds, monotonic); deadlines are
//! handled in [`Group::tick`], and [`Group::next_deadline`] tells the caller when to call it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{
    Effect, GroupConfig, GroupError, JoinRequest, JoinResponse, JoinedMember, MemberDescription,
    SyncRequest, SyncResponse, Token,
};

/// The answer to a JoinGroup that failed.
fn join_failed(token: Token, member_id: impl Into<String>, error: GroupError) -> Effect {
    Effect::Join(
        token,
        JoinResponse {
            error: Some(error),
            member_id: member_id.into(),
            ..JoinResponse::default()
        },
    )
}

/// The answer to a SyncGroup that failed.
fn sync_failed(token: Token, error: GroupError) -> Effect {
    Effect::Sync(
        token,
        SyncResponse {
            error: Some(error),
            ..SyncResponse::default()
        },
    )
}

/// Protocols (assignors) one member may offer. Clients offer a handful; the protocol vote
/// compares every member's list, so a peer must not make it long.
pub const PROTOCOLS_PER_MEMBER_MAX: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// Kafka's name of the state, as DescribeGroups and ListGroups report it.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone)]
struct Member {
    client_id: String,
    client_host: String,
    instance_id: Option<String>,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    protocol_type: String,
    protocols: Vec<(String, Vec<u8>)>,
    assignment: Vec<u8>,
    /// A JoinGroup waiting for the rebalance to complete.
    join: Option<Token>,
    /// A SyncGroup waiting for the leader's assignment.
    sync: Option<Token>,
    /// When the session expires unless the member is heard from.
    session_deadline: u64,
    /// Join order: the first member still present leads when the leader leaves.
    seq: u64,
}

impl Member {
    /// Takes what a rejoining member's request says about it; its session starts again.
    fn rejoined(&mut self, now: u64, request: JoinRequest) {
        self.client_id = request.client_id;
        self.client_host = request.client_host;
        self.session_timeout_ms = request.session_timeout_ms;
        self.rebalance_timeout_ms = request.rebalance_timeout_ms;
        self.protocol_type = request.protocol_type;
        self.protocols = request.protocols;
        self.session_deadline = now + self.session_timeout_ms;
    }
}

#[derive(Debug, Clone, Copy)]
struct Rebalance {
    /// When the join phase ends, joined or not.
    deadline: u64,
    /// The latest the deadline may move to (start + the longest rebalance timeout).
    limit: u64,
    /// The first rebalance of an empty group: it waits out `initial_rebalance_delay_ms` for
    /// more members instead of completing once everybody present has joined.
    initial: bool,
}

#[derive(Debug, Clone)]
pub struct Group {
    id: String,
    config: GroupConfig,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: HashMap<String, Member>,
    /// Static membership: group.instance.id → the member id currently holding it.
    instances: HashMap<String, String>,
    /// KIP-394: member ids handed out with MEMBER_ID_REQUIRED, not yet used; → expiry.
    pending: BTreeMap<String, u64>,
    rebalance: Option<Rebalance>,
    /// CompletingRebalance: members that have not sent SyncGroup by then are removed.
    sync_deadline: Option<u64>,
    next_seq: u64,
    /// Makes member ids unique across coordinator restarts (the server passes a random value).
    nonce: u64,
}

impl Group {
    pub fn new(id: &str, config: GroupConfig, nonce: u64) -> Group {
        Group {
            id: id.to_string(),
            config,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: HashMap::new(),
            instances: HashMap::new(),
            pending: BTreeMap::new(),
            rebalance: None,
            sync_deadline: None,
            next_seq: 0,
            nonce,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    /// Each member's assignment, by member id (what a completed rebalance handed out).
    pub fn assignments(&self) -> BTreeMap<String, Vec<u8>> {
        self.members
            .iter()
            .map(|(id, m)| (id.clone(), m.assignment.clone()))
            .collect()
    }

    /// The members, in join order, as DescribeGroups shows them.
    pub fn describe(&self) -> Vec<MemberDescription> {
        self.in_join_order()
            .into_iter()
            .map(|(id, m)| MemberDescription {
                member_id: id.clone(),
                group_instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: self.metadata_of(m).to_vec(),
                assignment: m.assignment.clone(),
            })
            .collect()
    }

    /// The topics the members subscribe to, read from the consumer protocol's metadata; `None`
    /// when the group is not a consumer group or a member's metadata cannot be read.
    pub fn subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return if self.members.is_empty() {
                Some(BTreeSet::new())
            } else {
                None
            };
        }
        let mut topics = BTreeSet::new();
        for member in self.members.values() {
            topics.extend(consumer_subscription(self.metadata_of(member))?);
        }
        Some(topics)
    }

    /// When [`Group::tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        let sessions = self
            .members
            .values()
            .filter(|m| m.join.is_none() && m.sync.is_none())
            .map(|m| m.session_deadline);
        sessions
            .chain(self.pending.values().copied())
            .chain(self.rebalance.map(|r| r.deadline))
            .chain(self.sync_deadline)
            .min()
    }

    /// JoinGroup. The answer comes as an [`Effect::Join`] for `token`, now or later.
    pub fn join(&mut self, now: u64, token: Token, request: JoinRequest, out: &mut Vec<Effect>) {
        let fail = |error| join_failed(token, request.member_id.clone(), error);
        let timeouts = self.config.session_timeout_ms_min..=self.config.session_timeout_ms_max;
        if !timeouts.contains(&request.session_timeout_ms) {
            out.push(fail(GroupError::InvalidSessionTimeout));
            return;
        }
        if !self.accepts_protocols(&request.protocol_type, &request.protocols) {
            out.push(fail(GroupError::InconsistentGroupProtocol));
            return;
        }
        if request.member_id.is_empty() {
            self.join_new(now, token, request, out);
            return;
        }
        if self.pending.contains_key(&request.member_id) {
            if request.group_instance_id.is_some() {
                // Static members never get a pending id; this one must rejoin without it.
                out.push(fail(GroupError::UnknownMemberId));
                return;
            }
            self.pending.remove(&request.member_id);
            let id = request.member_id.clone();
            self.add_member(now, id, token, request, out);
            return;
        }
        if let Err(error) = self.check_member(&request.member_id, &request.group_instance_id) {
            out.push(fail(error));
            return;
        }
        let id = request.member_id.clone();
        let member = self.members.get(&id).expect("checked");
        let changed = member.protocols != request.protocols;
        match self.state {
            GroupState::Empty => out.push(fail(GroupError::UnknownMemberId)),
            GroupState::PreparingRebalance => {
                self.update_member(now, &id, token, request, out);
                self.try_complete_join(now, out);
            }
            GroupState::CompletingRebalance if !changed => {
                // A rejoin that changes nothing: answer with the generation being completed.
                let response = self.join_response(&id);
                out.push(Effect::Join(token, response));
            }
            GroupState::Stable if !changed && self.leader.as_deref() != Some(id.as_str()) => {
                let response = self.join_response(&id);
                out.push(Effect::Join(token, response));
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member(now, &id, token, request, out);
                self.prepare_rebalance(now, out);
            }
        }
    }

    fn join_new(&mut self, now: u64, token: Token, request: JoinRequest, out: &mut Vec<Effect>) {
        let id = self.new_member_id(&request.client_id);
        if let Some(instance) = request.group_instance_id.clone() {
            if let Some(old) = self.instances.get(&instance).cloned() {
                self.replace_static_member(now, &old, &id, token, request, out);
                return;
            }
        } else if request.require_known_member_id {
            if self.members.len() + self.pending.len() >= self.config.members_max {
                out.push(join_failed(token, "", GroupError::GroupMaxSizeReached));
                return;
            }
            self.pending
                .insert(id.clone(), now + request.session_timeout_ms);
            out.push(join_failed(token, id, GroupError::MemberIdRequired));
            return;
        }
        self.add_member(now, id, token, request, out);
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.next_seq += 1;
        format!("{client_id}-{:016x}-{}", self.nonce, self.next_seq)
    }

    fn add_member(
        &mut self,
        now: u64,
        id: String,
        token: Token,
        request: JoinRequest,
        out: &mut Vec<Effect>,
    ) {
        if self.members.len() >= self.config.members_max {
            out.push(join_failed(token, id, GroupError::GroupMaxSizeReached));
            return;
        }
        self.next_seq += 1;
        let member = Member {
            client_id: request.client_id,
            client_host: request.client_host,
            instance_id: request.group_instance_id,
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            protocol_type: request.protocol_type,
            protocols: request.protocols,
            assignment: Vec::new(),
            join: Some(token),
            sync: None,
            session_deadline: now + request.session_timeout_ms,
            seq: self.next_seq,
        };
        if let Some(instance) = &member.instance_id {
            self.instances.insert(instance.clone(), id.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(id.clone());
        }
        self.members.insert(id, member);
        match self.state {
            GroupState::PreparingRebalance => {
                if let Some(rebalance) = self.rebalance.as_mut().filter(|r| r.initial) {
                    // The initial delay restarts with each new member, up to the limit.
                    let later = now + self.config.initial_rebalance_delay_ms;
                    rebalance.deadline = rebalance.deadline.max(later).min(rebalance.limit);
                }
                self.try_complete_join(now, out);
            }
            _ => self.prepare_rebalance(now, out),
        }
    }

    fn update_member(
        &mut self,
        now: u64,
        id: &str,
        token: Token,
        request: JoinRequest,
        out: &mut Vec<Effect>,
    ) {
        let member = self.members.get_mut(id).expect("known member");
        if let Some(old) = member.join.replace(token) {
            // The same member joined twice; only the newer request is answered with the result.
            out.push(join_failed(
                old,
                id.to_string(),
                GroupError::RebalanceInProgress,
            ));
        }
        member.rejoined(now, request);
    }

    /// A static member came back with no member id (a restarted process): it takes over the
    /// old member's place and assignment; the old id is fenced.
    fn replace_static_member(
        &mut self,
        now: u64,
        old: &str,
        id: &str,
        token: Token,
        request: JoinRequest,
        out: &mut Vec<Effect>,
    ) {
        let mut member = self.members.remove(old).expect("static member is a member");
        if let Some(waiting) = member.join.take() {
            out.push(join_failed(waiting, old, GroupError::FencedInstanceId));
        }
        if let Some(waiting) = member.sync.take() {
            out.push(sync_failed(waiting, GroupError::FencedInstanceId));
        }
        let changed = member.protocols != request.protocols;
        let old_leader = self.leader.clone().unwrap_or_default();
        if self.leader.as_deref() == Some(old) {
            self.leader = Some(id.to_string());
        }
        let instance = request.group_instance_id.clone().expect("static member");
        self.instances.insert(instance, id.to_string());
        member.rejoined(now, request);
        self.members.insert(id.to_string(), member);
        match self.state {
            GroupState::Stable if !changed => {
                // Same generation, same assignment: no rebalance. The old leader id is returned
                // so that even a returning leader does not compute an assignment nobody reads.
                let mut response = self.join_response(id);
                response.leader = old_leader;
                response.members.clear();
                out.push(Effect::Join(token, response));
            }
            GroupState::PreparingRebalance => {
                self.members.get_mut(id).expect("inserted").join = Some(token);
                self.try_complete_join(now, out);
            }
            _ => {
                self.members.get_mut(id).expect("inserted").join = Some(token);
                self.prepare_rebalance(now, out);
            }
        }
    }

    /// SyncGroup. The answer comes as an [`Effect::Sync`] for `token`, now or once the leader's
    /// assignment arrives.
    pub fn sync(&mut self, now: u64, token: Token, request: SyncRequest, out: &mut Vec<Effect>) {
        let fail = |error| sync_failed(token, error);
        if let Err(error) = self.check_member(&request.member_id, &request.group_instance_id) {
            out.push(fail(error));
            return;
        }
        if request.generation_id != self.generation {
            out.push(fail(GroupError::IllegalGeneration));
            return;
        }
        let type_differs = request
            .protocol_type
            .as_ref()
            .is_some_and(|t| Some(t) != self.protocol_type.as_ref());
        let name_differs = request
            .protocol_name
            .as_ref()
            .is_some_and(|n| Some(n) != self.protocol.as_ref());
        if type_differs || name_differs {
            out.push(fail(GroupError::InconsistentGroupProtocol));
            return;
        }
        let id = request.member_id.clone();
        match self.state {
            GroupState::Empty => out.push(fail(GroupError::UnknownMemberId)),
            GroupState::PreparingRebalance => out.push(fail(GroupError::RebalanceInProgress)),
            GroupState::CompletingRebalance => {
                let member = self.members.get_mut(&id).expect("checked");
                if let Some(old) = member.sync.replace(token) {
                    out.push(sync_failed(old, GroupError::RebalanceInProgress));
                }
                member.session_deadline = now + member.session_timeout_ms;
                if self.leader.as_deref() == Some(id.as_str()) {
                    let mut assigned: HashMap<String, Vec<u8>> =
                        request.assignments.into_iter().collect();
                    for (member_id, member) in self.members.iter_mut() {
                        member.assignment = assigned.remove(member_id).unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    self.sync_deadline = None;
                    let protocol_type = self.protocol_type.clone();
                    let protocol_name = self.protocol.clone();
                    for member in self.members.values_mut() {
                        if let Some(waiting) = member.sync.take() {
                            member.session_deadline = now + member.session_timeout_ms;
                            out.push(Effect::Sync(
                                waiting,
                                SyncResponse {
                                    error: None,
                                    protocol_type: protocol_type.clone(),
                                    protocol_name: protocol_name.clone(),
                                    assignment: member.assignment.clone(),
                                },
                            ));
                        }
                    }
                }
            }
            GroupState::Stable => {
                let member = self.members.get_mut(&id).expect("checked");
                member.session_deadline = now + member.session_timeout_ms;
                out.push(Effect::Sync(
                    token,
                    SyncResponse {
                        error: None,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol.clone(),
                        assignment: member.assignment.clone(),
                    },
                ));
            }
        }
    }

    /// Heartbeat: keeps the member's session alive; tells it when to rejoin.
    pub fn heartbeat(
        &mut self,
        now: u64,
        member_id: &str,
        instance_id: &Option<String>,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Empty {
            return Err(GroupError::UnknownMemberId);
        }
        self.check_member(member_id, instance_id)?;
        if generation_id != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        let member = self.members.get_mut(member_id).expect("checked");
        member.session_deadline = now + member.session_timeout_ms;
        match self.state {
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// LeaveGroup for each (member id, group instance id): one result per member. A static
    /// member may leave by instance id alone (member id empty).
    pub fn leave(
        &mut self,
        now: u64,
        leaving: &[(String, Option<String>)],
        out: &mut Vec<Effect>,
    ) -> Vec<Result<(), GroupError>> {
        let mut results = Vec::with_capacity(leaving.len());
        let mut removed = false;
        for (member_id, instance_id) in leaving {
            let result = match instance_id {
                Some(instance) => match self.instances.get(instance).cloned() {
                    None => Err(GroupError::UnknownMemberId),
                    Some(holder) if !member_id.is_empty() && holder != *member_id => {
                        Err(GroupError::FencedInstanceId)
                    }
                    Some(holder) => {
                        self.remove_member(&holder, out);
                        Ok(())
                    }
                },
                None if self.pending.remove(member_id).is_some() => {
                    if self.state == GroupState::PreparingRebalance {
                        self.try_complete_join(now, out);
                    }
                    Ok(())
                }
                None if self.members.contains_key(member_id) => {
                    self.remove_member(member_id, out);
                    Ok(())
                }
                None => Err(GroupError::UnknownMemberId),
            };
            removed |= result.is_ok();
            results.push(result);
        }
        if removed {
            self.members_changed(now, out);
        }
        results
    }

    /// Whether an offset commit from (generation, member) is accepted. A commit with no member
    /// and generation -1 (a consumer with manual assignment, an admin tool) is accepted while
    /// the group has no members.
    pub fn validate_commit(
        &self,
        generation_id: i32,
        member_id: &str,
        instance_id: &Option<String>,
    ) -> Result<(), GroupError> {
        if generation_id < 0 && member_id.is_empty() && instance_id.is_none() {
            return if self.members.is_empty() {
                Ok(())
            } else {
                Err(GroupError::UnknownMemberId)
            };
        }
        if self.state == GroupState::Empty {
            return Err(GroupError::UnknownMemberId);
        }
        self.check_member(member_id, instance_id)?;
        if generation_id != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Expires sessions, pending member ids and rebalance phases whose time has come.
    pub fn tick(&mut self, now: u64, out: &mut Vec<Effect>) {
        let before = self.pending.len();
        self.pending.retain(|_, deadline| *deadline > now);
        if self.pending.len() != before && self.state == GroupState::PreparingRebalance {
            // An unused pending id only ever held up a join phase; it changes no assignment.
            self.try_complete_join(now, out);
        }
        let changed = self.remove_members_where(
            |m| m.join.is_none() && m.sync.is_none() && m.session_deadline <= now,
            out,
        );
        if self.state == GroupState::CompletingRebalance
            && self.sync_deadline.is_some_and(|d| d <= now)
        {
            // The leader never sent its assignment (or members never synced): drop those who
            // did not sync and start over.
            self.remove_members_where(|m| m.sync.is_none(), out);
            self.sync_deadline = None;
            self.prepare_rebalance(now, out);
            return;
        }
        if changed {
            self.members_changed(now, out);
        }
        if self.state == GroupState::PreparingRebalance
            && self.rebalance.is_some_and(|r| r.deadline <= now)
        {
            self.complete_join(now, out);
        }
    }

    /// The coordinator is going away: every parked request gets an error telling the client
    /// to find the coordinator again.
    pub fn abandon(&mut self, out: &mut Vec<Effect>) {
        for (id, member) in self.members.iter_mut() {
            if let Some(waiting) = member.join.take() {
                out.push(join_failed(
                    waiting,
                    id.clone(),
                    GroupError::CoordinatorNotAvailable,
                ));
            }
            if let Some(waiting) = member.sync.take() {
                out.push(sync_failed(waiting, GroupError::CoordinatorNotAvailable));
            }
        }
    }

    /// After members left or expired: rebalance (or finish the one in progress without them).
    fn members_changed(&mut self, now: u64, out: &mut Vec<Effect>) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, out)
            }
            GroupState::PreparingRebalance => self.try_complete_join(now, out),
            GroupState::Empty => {}
        }
    }

    fn check_member(
        &self,
        member_id: &str,
        instance_id: &Option<String>,
    ) -> Result<(), GroupError> {
        if let Some(instance) = instance_id {
            return match self.instances.get(instance) {
                Some(holder) if holder == member_id => Ok(()),
                Some(_) => Err(GroupError::FencedInstanceId),
                None => Err(GroupError::UnknownMemberId),
            };
        }
        if self.members.contains_key(member_id) {
            Ok(())
        } else {
            Err(GroupError::UnknownMemberId)
        }
    }

    /// Removes every member `leaves` selects; returns whether any was.
    fn remove_members_where(
        &mut self,
        leaves: impl Fn(&Member) -> bool,
        out: &mut Vec<Effect>,
    ) -> bool {
        let leaving: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| leaves(m))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &leaving {
            self.remove_member(id, out);
        }
        !leaving.is_empty()
    }

    fn remove_member(&mut self, id: &str, out: &mut Vec<Effect>) {
        let Some(member) = self.members.remove(id) else {
            return;
        };
        if let Some(instance) = &member.instance_id {
            if self.instances.get(instance).map(String::as_str) == Some(id) {
                self.instances.remove(instance);
            }
        }
        if let Some(waiting) = member.join {
            out.push(join_failed(
                waiting,
                id.to_string(),
                GroupError::UnknownMemberId,
            ));
        }
        if let Some(waiting) = member.sync {
            out.push(sync_failed(waiting, GroupError::UnknownMemberId));
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = self
                .members
                .iter()
                .min_by_key(|(_, m)| m.seq)
                .map(|(id, _)| id.clone());
        }
    }

    fn prepare_rebalance(&mut self, now: u64, out: &mut Vec<Effect>) {
        if self.state == GroupState::CompletingRebalance {
            for member in self.members.values_mut() {
                if let Some(waiting) = member.sync.take() {
                    out.push(sync_failed(waiting, GroupError::RebalanceInProgress));
                }
            }
        }
        let initial = self.state == GroupState::Empty;
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        let limit = now + timeout;
        let deadline = if initial {
            (now + self.config.initial_rebalance_delay_ms).min(limit)
        } else {
            limit
        };
        self.state = GroupState::PreparingRebalance;
        self.sync_deadline = None;
        self.rebalance = Some(Rebalance {
            deadline,
            limit,
            initial,
        });
        self.try_complete_join(now, out);
    }

    fn try_complete_join(&mut self, now: u64, out: &mut Vec<Effect>) {
        let Some(rebalance) = self.rebalance else {
            return;
        };
        let all_joined = self.members.values().all(|m| m.join.is_some()) && self.pending.is_empty();
        if (all_joined && !rebalance.initial)
            || self.members.is_empty()
            || rebalance.deadline <= now
        {
            self.complete_join(now, out);
        }
    }

    /// Ends the join phase: members that did not rejoin are removed, a new generation starts
    /// and every joined member is answered (the leader with everybody's metadata).
    fn complete_join(&mut self, now: u64, out: &mut Vec<Effect>) {
        self.remove_members_where(|m| m.join.is_none(), out);
        self.rebalance = None;
        // Generations stay positive, even after 2^31 rebalances.
        self.generation = self.generation.checked_add(1).unwrap_or(1);
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        self.protocol_type = self
            .members
            .values()
            .next()
            .map(|m| m.protocol_type.clone());
        self.state = GroupState::CompletingRebalance;
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        self.sync_deadline = Some(now + timeout);
        let mut ids: Vec<(u64, String)> = self
            .members
            .iter()
            .map(|(id, m)| (m.seq, id.clone()))
            .collect();
        ids.sort();
        for (_, id) in ids {
            let response = self.join_response(&id);
            let member = self.members.get_mut(&id).expect("member");
            member.session_deadline = now + member.session_timeout_ms;
            if let Some(waiting) = member.join.take() {
                out.push(Effect::Join(waiting, response));
            }
        }
    }

    /// The join answer of the current generation for `id` (the member list for the leader).
    fn join_response(&self, id: &str) -> JoinResponse {
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == id {
            self.in_join_order()
                .into_iter()
                .map(|(member_id, m)| JoinedMember {
                    member_id: member_id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    metadata: self.metadata_of(m).to_vec(),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error: None,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader,
            member_id: id.to_string(),
            members,
        }
    }

    fn metadata_of<'a>(&self, member: &'a Member) -> &'a [u8] {
        let Some(protocol) = &self.protocol else {
            return &[];
        };
        member
            .protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map_or(&[][..], |(_, metadata)| metadata)
    }

    /// The members, the longest-present first.
    fn in_join_order(&self) -> Vec<(&String, &Member)> {
        let mut members: Vec<(&String, &Member)> = self.members.iter().collect();
        members.sort_by_key(|(_, m)| m.seq);
        members
    }

    /// Protocols every member supports, in the order the longest-present member prefers them.
    fn candidate_protocols(&self) -> Vec<String> {
        let members: Vec<&Member> = self.in_join_order().into_iter().map(|(_, m)| m).collect();
        let Some(first) = members.first() else {
            return Vec::new();
        };
        first
            .protocols
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| {
                members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
            .collect()
    }

    /// The protocol most members prefer among those all support (ties: the earlier candidate).
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes = vec![0usize; candidates.len()];
        for member in self.members.values() {
            let choice = member
                .protocols
                .iter()
                .find_map(|(name, _)| candidates.iter().position(|c| c == name));
            if let Some(i) = choice {
                votes[i] += 1;
            }
        }
        let best = votes.iter().copied().max()?;
        let i = votes.iter().position(|&v| v == best)?;
        candidates.get(i).cloned()
    }

    fn accepts_protocols(&self, protocol_type: &str, protocols: &[(String, Vec<u8>)]) -> bool {
        if protocol_type.is_empty()
            || protocols.is_empty()
            || protocols.len() > PROTOCOLS_PER_MEMBER_MAX
        {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        let group_type = self
            .members
            .values()
            .next()
            .map(|m| m.protocol_type.as_str());
        if group_type != Some(protocol_type) {
            return false;
        }
        let candidates = self.candidate_protocols();
        protocols.iter().any(|(name, _)| candidates.contains(name))
    }
}

/// The topics of a ConsumerProtocolSubscription (any version): `version i16, topics
/// [string]`, then fields we do not need. `None` if the bytes do not hold that.
pub fn consumer_subscription(metadata: &[u8]) -> Option<Vec<String>> {
    let mut at = 2usize; // version
    let count = i32::from_be_bytes(metadata.get(at..at + 4)?.try_into().ok()?);
    at += 4;
    // Each topic takes at least its 2-byte length.
    if count < 0 || count as usize > metadata.len() / 2 {
        return None;
    }
    let mut topics = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = i16::from_be_bytes(metadata.get(at..at + 2)?.try_into().ok()?);
        at += 2;
        let len = usize::try_from(len).ok()?;
        let name = std::str::from_utf8(metadata.get(at..at + len)?).ok()?;
        at += len;
        topics.push(name.to_string());
    }
    Some(topics)
}
