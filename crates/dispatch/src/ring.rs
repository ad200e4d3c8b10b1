//! The consistent-hash ring that maps a key's hash to a worker.
//!
//! Each worker owns `vnodes` points on a 64-bit circle; a key belongs to the worker owning the
//! first point at or after the key's hash (wrapping). A worker's points depend only on its id,
//! never on how many workers there are, so growing from n to n+1 workers moves only the keys
//! that land on the newcomer's arcs (about 1/(n+1) of them), and shrinking moves only the
//! retired worker's keys. Everything here is deterministic: the same key hashes the same way in
//! every process built from the same source, and the same worker count yields the same ring.

use std::hash::{Hash, Hasher};

/// Virtual nodes per worker unless configured: enough that shares stay within a few percent of
/// even for small worker counts, few enough that a ring of 64 workers is 10,240 points (80 KiB).
pub const VNODES_DEFAULT: usize = 160;

/// A fixed, seedless hasher: FNV-1a over the bytes `Hash` writes, then murmur3's 64-bit
/// finalizer so that nearby keys ("key-1", "key-2") spread over the whole circle.
#[derive(Debug, Clone, Copy)]
pub struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for StableHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        fmix64(self.0)
    }
}

/// murmur3's finalizer: a bijection on u64 with full avalanche.
pub fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The ring position of `key`.
pub fn key_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = StableHasher::default();
    key.hash(&mut h);
    h.finish()
}

/// A ring of `workers` workers with `vnodes` points each.
#[derive(Debug, Clone)]
pub struct Ring {
    /// (point, worker), sorted by point. Points are distinct: `fmix64` is a bijection and the
    /// inputs (worker, vnode) are.
    points: Vec<(u64, u32)>,
    workers: usize,
}

impl Ring {
    pub fn new(workers: usize, vnodes: usize) -> Ring {
        assert!(workers >= 1, "a ring needs at least one worker");
        assert!(vnodes >= 1, "a ring needs at least one point per worker");
        assert!(workers <= u32::MAX as usize && vnodes <= u32::MAX as usize);
        let mut points = Vec::with_capacity(workers * vnodes);
        for w in 0..workers {
            for v in 0..vnodes {
                let point = fmix64(((w as u64) << 32) | v as u64);
                points.push((point, w as u32));
            }
        }
        points.sort_unstable();
        Ring { points, workers }
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The worker that owns `hash`.
    pub fn owner(&self, hash: u64) -> usize {
        let i = self.points.partition_point(|&(p, _)| p < hash);
        let (_, w) = self.points.get(i).unwrap_or(&self.points[0]);
        *w as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_key_lands_on_the_same_worker_every_time() {
        let a = Ring::new(7, 64);
        let b = Ring::new(7, 64);
        for i in 0..1_000u32 {
            let h = key_hash(&format!("key-{i}"));
            assert_eq!(h, key_hash(&format!("key-{i}")));
            assert_eq!(a.owner(h), b.owner(h));
            assert!(a.owner(h) < 7);
        }
        // Pinned values: a change to the hash or the ring moves every user's keys.
        assert_eq!(key_hash("orders-42"), key_hash(&String::from("orders-42")));
        assert_eq!(fmix64(0), 0);
        assert_eq!(fmix64(1), 0xb456_bcfc_34c2_cb2c);
    }

    #[test]
    fn shares_are_close_to_even() {
        let ring = Ring::new(4, VNODES_DEFAULT);
        let mut counts = [0usize; 4];
        let keys = 100_000u64;
        for i in 0..keys {
            counts[ring.owner(key_hash(&i))] += 1;
        }
        for (w, &c) in counts.iter().enumerate() {
            let share = c as f64 / keys as f64;
            assert!(
                (0.20..0.30).contains(&share),
                "worker {w} has {share:.3} of the keys"
            );
        }
    }

    #[test]
    fn growing_moves_keys_only_to_the_newcomer() {
        let small = Ring::new(3, VNODES_DEFAULT);
        let big = Ring::new(4, VNODES_DEFAULT);
        for i in 0..10_000u64 {
            let h = key_hash(&i);
            let (before, after) = (small.owner(h), big.owner(h));
            assert!(
                before == after || after == 3,
                "key {i} moved {before} -> {after}"
            );
        }
    }
}
