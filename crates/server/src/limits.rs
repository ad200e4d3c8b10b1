//! Connection admission: Kafka's `max.connections` and `max.connections.per.ip`, counted over
//! every shard. A connection over a limit is closed as soon as it is accepted, before any byte
//! is read from it, so it costs the broker nothing and no other client notices.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` reached.
    Total,
    /// `max_connections_per_ip` reached for the peer's address.
    PerIp,
}

/// Open connections, in all and per peer address.
pub(crate) struct Connections {
    total_max: usize,
    per_ip_max: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// A counted connection; dropping it frees its place.
pub(crate) struct Admitted {
    table: Arc<Connections>,
    ip: IpAddr,
}

impl Connections {
    pub fn new(total_max: usize, per_ip_max: usize) -> Arc<Connections> {
        Arc::new(Connections {
            total_max,
            per_ip_max,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a new connection from `ip`, or says which limit it is over.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refusal> {
        // One lock for both counts: admissions are rare next to requests, and the per-IP map
        // needs it anyway.
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if self.total.load(Ordering::Relaxed) >= self.total_max {
            return Err(Refusal::Total);
        }
        let from_ip = per_ip.entry(ip).or_insert(0);
        if *from_ip >= self.per_ip_max {
            return Err(Refusal::PerIp);
        }
        *from_ip += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(Admitted {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut per_ip = self.table.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.table.total.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_in_all_and_per_address_and_free_on_drop() {
        let table = Connections::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = table.admit(a).unwrap();
        let _a2 = table.admit(a).unwrap();
        assert_eq!(table.admit(a).err(), Some(Refusal::PerIp));
        let _b1 = table.admit(b).unwrap();
        assert_eq!(table.admit(b).err(), Some(Refusal::Total));
        drop(a1);
        assert!(
            table.admit(b).is_ok(),
            "a closed connection frees its place"
        );
        assert_eq!(table.per_ip.lock().unwrap().len(), 2);
    }
}
