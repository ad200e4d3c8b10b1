//! Client quotas: produce and fetch bytes per second per client id, as Kafka's
//! `producer_byte_rate` and `consumer_byte_rate`, and the share of request handling time, as
//! Kafka's `request_percentage` (kept here in microseconds per second: 100 % is one thread). A pure core: the caller passes the time and
//! gets back how long to throttle the client (the `throttle_time_ms` of the response, for which
//! the connection is then not read: KIP-219).
//!
//! Each (client id, kind) has a token bucket holding at most one second of its rate. A request
//! takes its bytes at once, going into debt if need be; the throttle is the time the debt takes
//! to repay. Over any long span a client gets its rate, give or take one second's burst.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Record bytes produced (Kafka's `producer_byte_rate`).
    Produce,
    /// Bytes of fetch responses (Kafka's `consumer_byte_rate`).
    Fetch,
    /// Microseconds spent handling requests (Kafka's `request_percentage`).
    Request,
}

const KINDS: [Kind; 3] = [Kind::Produce, Kind::Fetch, Kind::Request];

/// Rates for one client id (or the default for all); `None`: unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rates {
    pub producer_byte_rate: Option<u64>,
    pub consumer_byte_rate: Option<u64>,
    /// Microseconds of request handling per second: Kafka's `request_percentage` × 10,000.
    pub request_time_rate: Option<u64>,
}

/// Microseconds per second of request time that 1 % of `request_percentage` stands for.
pub const MICROS_PER_PERCENT: f64 = 10_000.0;

/// Kafka's `request_percentage` (of one thread; may exceed 100) as microseconds per second;
/// `None` unless it comes to at least one.
pub fn request_time_rate(percentage: f64) -> Option<u64> {
    let micros = percentage * MICROS_PER_PERCENT;
    (micros.is_finite() && micros >= 1.0 && micros <= u64::MAX as f64).then_some(micros as u64)
}

impl Rates {
    fn of(&self, kind: Kind) -> Option<u64> {
        match kind {
            Kind::Produce => self.producer_byte_rate,
            Kind::Fetch => self.consumer_byte_rate,
            Kind::Request => self.request_time_rate,
        }
    }
}

/// Client ids tracked at once per kind of quota; beyond it, buckets that have refilled completely (idle
/// clients) are forgotten, and if none has, new clients share one more, unnamed bucket. Client ids come from clients, so their number must not grow the broker's memory.
pub const CLIENTS_TRACKED_MAX: usize = 10_000;

/// The longest throttle handed out, as Kafka caps it (a client over its quota by far is slowed
/// in steps, not silenced for minutes).
pub const THROTTLE_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    rate: u64,
    /// Bytes available; negative: debt.
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.rate as f64);
        self.last = now;
    }
}

/// Every client's quota state.
#[derive(Debug, Default)]
pub struct Quotas {
    default: Rates,
    clients: HashMap<String, Rates>,
    /// Per kind (indexed by `Kind as usize`), by client id: looked up by `&str`, so a request
    /// allocates only when its client id is new.
    buckets: [HashMap<String, Bucket>; 3],
    throttled: [HashMap<String, Duration>; 3],
}

impl Quotas {
    pub fn new(default: Rates, clients: HashMap<String, Rates>) -> Quotas {
        Quotas {
            default,
            clients,
            ..Quotas::default()
        }
    }

    /// True if some client has a limit: otherwise nothing needs recording.
    pub fn any(&self) -> bool {
        self.default != Rates::default() || self.clients.values().any(|r| *r != Rates::default())
    }

    /// The rates that apply to `client`.
    pub fn rates(&self, client: &str) -> Rates {
        self.clients.get(client).copied().unwrap_or(self.default)
    }

    /// Replaces every rate (the default and all clients'); buckets start afresh (a rate may
    /// have changed), throttle totals carry on.
    pub fn replace(&mut self, default: Rates, clients: HashMap<String, Rates>) {
        self.default = default;
        self.clients = clients;
        self.buckets.iter_mut().for_each(HashMap::clear);
    }

    /// Records `bytes` of `kind` (microseconds for `Kind::Request`) for `client` at `now`;
    /// returns how long to throttle it.
    pub fn record(&mut self, client: &str, kind: Kind, bytes: u64, now: Instant) -> Duration {
        let Some((client, debt, rate)) = self.take(client, kind, bytes, now) else {
            return Duration::ZERO;
        };
        let throttle = Duration::from_secs_f64(debt / rate as f64).min(THROTTLE_MAX);
        let throttled = &mut self.throttled[kind as usize];
        if let Some(total) = throttled.get_mut(client) {
            *total += throttle;
        } else if throttled.len() <= CLIENTS_TRACKED_MAX {
            throttled.insert(client.to_string(), throttle);
        }
        throttle
    }

    /// Takes `bytes` of `kind` from `client`'s bucket without throttling now: the debt, if any,
    /// is repaid through the throttle of its next `record`.
    pub fn charge(&mut self, client: &str, kind: Kind, bytes: u64, now: Instant) {
        let _ = self.take(client, kind, bytes, now);
    }

    /// Takes from the bucket; when it is in debt: (the bucket's client id, the debt, the rate).
    /// The id is `client`, or "" for the shared bucket: nothing is allocated for a known client.
    fn take<'a>(
        &mut self,
        client: &'a str,
        kind: Kind,
        bytes: u64,
        now: Instant,
    ) -> Option<(&'a str, f64, u64)> {
        let rate = self.rates(client).of(kind).filter(|&r| r > 0)?;
        let buckets = &mut self.buckets[kind as usize];
        let full = Bucket {
            rate,
            tokens: rate as f64,
            last: now,
        };
        let client = if buckets.contains_key(client) {
            client
        } else {
            if buckets.len() >= CLIENTS_TRACKED_MAX {
                forget_idle(buckets, now);
            }
            if buckets.len() < CLIENTS_TRACKED_MAX {
                buckets.insert(client.to_string(), full);
                client
            } else {
                buckets.entry(String::new()).or_insert(full);
                ""
            }
        };
        let bucket = buckets.get_mut(client).expect("inserted above");
        bucket.refill(now);
        bucket.tokens -= bytes as f64;
        (bucket.tokens < 0.0).then_some((client, -bucket.tokens, bucket.rate))
    }

    /// Total throttle handed out per (client id, kind), for metrics ("" is the shared bucket of
    /// clients beyond the tracked maximum).
    pub fn throttled(&self) -> impl Iterator<Item = (&str, Kind, Duration)> {
        KINDS.into_iter().flat_map(move |kind| {
            self.throttled[kind as usize]
                .iter()
                .map(move |(c, d)| (c.as_str(), kind, *d))
        })
    }
}

/// Forgets the buckets that have refilled completely (their clients are idle).
fn forget_idle(buckets: &mut HashMap<String, Bucket>, now: Instant) {
    buckets.retain(|_, b| {
        let mut b = *b;
        b.refill(now);
        b.tokens < b.rate as f64
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(n: u64) -> Option<u64> {
        Some(n * 1_000_000)
    }

    #[test]
    fn a_client_gets_its_rate_over_time_and_others_are_not_touched() {
        let limited = Rates {
            producer_byte_rate: mb(1),
            ..Rates::default()
        };
        let mut q = Quotas::new(
            Rates::default(),
            HashMap::from([("slow".to_string(), limited)]),
        );
        assert!(q.any());
        let t0 = Instant::now();
        // "slow" sends 100 KB requests as fast as the throttles let it, for 20 s.
        let (mut now, mut sent) = (t0, 0u64);
        while now < t0 + Duration::from_secs(20) {
            let throttle = q.record("slow", Kind::Produce, 100_000, now);
            sent += 100_000;
            now += throttle.max(Duration::from_millis(1));
        }
        let rate = sent as f64 / 20.0;
        assert!((0.95e6..=1.1e6).contains(&rate), "got {rate} B/s");
        // The one-second burst first, then throttles of 0.1 s per request.
        assert_eq!(
            q.record("fast", Kind::Produce, 50_000_000, now),
            Duration::ZERO
        );
        assert_eq!(
            q.record("slow", Kind::Fetch, 50_000_000, now),
            Duration::ZERO
        );
        let total: Duration = q.throttled().map(|(_, _, d)| d).sum();
        assert!(total > Duration::from_secs(18), "{total:?}");
    }

    #[test]
    fn the_default_applies_to_unnamed_clients_and_throttles_are_capped() {
        let mut q = Quotas::new(
            Rates {
                consumer_byte_rate: mb(1),
                ..Rates::default()
            },
            HashMap::new(),
        );
        let now = Instant::now();
        assert_eq!(q.record("any", Kind::Fetch, 1_000_000, now), Duration::ZERO);
        assert_eq!(
            q.record("any", Kind::Fetch, 500_000, now),
            Duration::from_millis(500)
        );
        assert_eq!(q.record("any", Kind::Fetch, 100_000_000, now), THROTTLE_MAX);
        q.replace(Rates::default(), HashMap::new());
        assert!(!q.any());
        assert_eq!(
            q.record("any", Kind::Fetch, 100_000_000, now),
            Duration::ZERO
        );
    }

    #[test]
    fn a_client_over_its_request_time_share_is_throttled_for_its_excess() {
        // 10 %: 100 ms of handling per second.
        let ten_percent = Rates {
            request_time_rate: Some((10.0 * MICROS_PER_PERCENT) as u64),
            ..Rates::default()
        };
        let mut q = Quotas::new(
            Rates::default(),
            HashMap::from([("busy".to_string(), ten_percent)]),
        );
        let t0 = Instant::now();
        // Requests of 5 ms each, sent as fast as the throttles let them, for 10 s.
        let (mut now, mut spent) = (t0, Duration::ZERO);
        while now < t0 + Duration::from_secs(10) {
            let throttle = q.record("busy", Kind::Request, 5_000, now);
            spent += Duration::from_millis(5);
            now += throttle.max(Duration::from_millis(5));
        }
        // 10 % of 10 s, plus the one-second bucket (100 ms) it starts with.
        assert!(
            (Duration::from_millis(1_000)..=Duration::from_millis(1_150)).contains(&spent),
            "{spent:?}"
        );
        assert!(q
            .throttled()
            .any(|(c, k, d)| c == "busy" && k == Kind::Request && !d.is_zero()));
        // Other kinds and clients are untouched.
        assert_eq!(
            q.record("busy", Kind::Produce, 1 << 30, now),
            Duration::ZERO
        );
        assert_eq!(
            q.record("idle", Kind::Request, 1 << 30, now),
            Duration::ZERO
        );
    }

    #[test]
    fn client_ids_cannot_grow_memory_without_bound() {
        let mut q = Quotas::new(
            Rates {
                producer_byte_rate: mb(1),
                ..Rates::default()
            },
            HashMap::new(),
        );
        let now = Instant::now();
        for i in 0..CLIENTS_TRACKED_MAX + 500 {
            q.record(&format!("c{i}"), Kind::Produce, 2_000_000, now);
        }
        // The named ones, and the one shared by the clients beyond them.
        let produce = Kind::Produce as usize;
        assert_eq!(q.buckets[produce].len(), CLIENTS_TRACKED_MAX + 1);
        assert!(q.throttled[produce].len() <= CLIENTS_TRACKED_MAX + 1);
        // Later, idle buckets are forgotten to make room.
        let later = now + Duration::from_secs(10);
        assert_eq!(
            q.record("newcomer", Kind::Produce, 10, later),
            Duration::ZERO
        );
        assert!(q.buckets[produce].contains_key("newcomer"));
    }
}
