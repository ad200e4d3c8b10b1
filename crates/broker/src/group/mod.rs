//! Consumer groups, the classic protocol: the coordinator's state machine ([`state`]) and the
//! committed offsets with their on-disk records ([`offsets`]).
//!
//! Both are pure: they take requests, a token for each request that waits for an answer, and
//! the time in milliseconds, and return answers ([`Effect`]s). The server owns the sockets, the
//! clock, the timers and the offsets log; so these are tested with seeded scenarios, no sockets.

pub mod offsets;
pub mod state;

pub use state::{Group, GroupState};

/// Settings of group coordination, each with its Kafka broker config name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`: shorter session timeouts are refused.
    pub session_timeout_ms_min: u64,
    /// `group.max.session.timeout.ms`: longer session timeouts are refused.
    pub session_timeout_ms_max: u64,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group
    /// waits for more members, so a fleet starting together settles in one rebalance.
    pub initial_rebalance_delay_ms: u64,
    /// `group.max.size`: members a group may have.
    pub members_max: usize,
    /// `offset.metadata.max.bytes`: the metadata string a commit may carry.
    pub offset_metadata_bytes_max: usize,
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig {
            session_timeout_ms_min: 6_000,
            session_timeout_ms_max: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            members_max: 1_000,
            offset_metadata_bytes_max: 4_096,
        }
    }
}

/// Why a group request failed. Mapped to Kafka's error codes at the edge (the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupError {
    InvalidGroupId,
    UnknownMemberId,
    IllegalGeneration,
    RebalanceInProgress,
    InconsistentGroupProtocol,
    InvalidSessionTimeout,
    /// KIP-394: a new member must rejoin with the member id it was given.
    MemberIdRequired,
    FencedInstanceId,
    GroupMaxSizeReached,
    NonEmptyGroup,
    GroupIdNotFound,
    GroupSubscribedToTopic,
    OffsetMetadataTooLarge,
    /// The coordinator is shutting down; the client looks it up again.
    CoordinatorNotAvailable,
}

/// The server's handle for a request that waits for its answer (a join or a sync).
pub type Token = u64;

/// An answer the state machine gives to a waiting request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Join(Token, JoinResponse),
    Sync(Token, SyncResponse),
}

/// A member's request to join (or rejoin) a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    pub protocol_type: String,
    /// (protocol name, member metadata), in the member's order of preference.
    pub protocols: Vec<(String, Vec<u8>)>,
    /// KIP-394 (JoinGroup v4+): a new member first gets its id with MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JoinResponse {
    pub error: Option<GroupError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: every member and its metadata for the chosen protocol.
    pub members: Vec<JoinedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// The leader's assignment: (member id, assignment bytes). Empty from followers.
    pub assignments: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncResponse {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Vec<u8>,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Vec<u8>,
    pub assignment: Vec<u8>,
}

/// The coordinator partition (of `partitions`) that holds `group_id`'s offsets and whose owning
/// shard coordinates it: a sticky FNV-1a hash, the same on every start.
pub fn coordinator_partition(group_id: &str, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in group_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}
