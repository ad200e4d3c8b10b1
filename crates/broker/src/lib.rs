//! `weir-broker`: what the broker knows, apart from sockets and wire formats: the topics (one
//! writer, cheap snapshots for every reader) and which shard owns which partition.

pub mod group;
pub mod partitioner;
pub mod producer;
pub mod quota;
pub mod topics;

/// The shard that owns partition `partition` of `topic` among `shards`: a sticky hash (FNV-1a)
/// so ownership is the same on every start with the same shard count.
pub fn owner(topic: &str, partition: i32, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in topic.bytes().chain(partition.to_be_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    #[test]
    fn owners_spread_and_are_stable() {
        let mut counts = [0usize; 4];
        for p in 0..4000 {
            counts[super::owner("orders", p, 4)] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
        assert_eq!(super::owner("orders", 7, 4), super::owner("orders", 7, 4));
    }
}
