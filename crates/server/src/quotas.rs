//! Client quotas at the edge: charges a Produce's request bytes or a Fetch's record bytes, and
//! every request's handling time, to the client id's quotas (`weir_broker::quota`) and writes
//! the throttle into the response.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use weir_broker::quota::Kind;
use weir_kafka::Response;

use crate::broker::Broker;

/// Charges `response`'s request to `client_id` and returns the throttle, also set as the
/// response's `throttle_time_ms` (Produce and Fetch from v1; other answers carry no throttle
/// field here, but the connection is muted all the same). `request_bytes` is the Produce
/// frame's size; a Fetch is charged its record bytes; every request is charged `spent`, the
/// time the broker's threads worked on it. The throttle is the longer of the two, as Kafka's.
pub(crate) fn charge(
    broker: &Broker,
    client_id: Option<&str>,
    request_bytes: usize,
    spent: Duration,
    version: i16,
    response: &mut Response,
) -> Duration {
    if !broker.quotas_on.load(Ordering::Relaxed) {
        return Duration::ZERO;
    }
    let bytes = match response {
        Response::Produce(_) => Some((Kind::Produce, request_bytes)),
        Response::Fetch(r) => {
            let bytes = r
                .responses
                .iter()
                .flat_map(|t| t.partitions.iter())
                .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
                .sum();
            Some((Kind::Fetch, bytes))
        }
        _ => None,
    };
    let client = client_id.unwrap_or("");
    let now = Instant::now();
    let micros = u64::try_from(spent.as_micros()).unwrap_or(u64::MAX);
    let mut quotas = broker.quotas.lock().unwrap_or_else(|e| e.into_inner());
    let Some((kind, bytes)) = bytes else {
        // Only Produce and Fetch answers carry throttle_time_ms here: other requests' time is
        // charged, and the throttle it earns falls on the client's next Produce or Fetch,
        // which tells it. Muting a client on a Heartbeat it is not told about could cost it
        // its group session.
        quotas.charge(client, Kind::Request, micros, now);
        return Duration::ZERO;
    };
    let by_bytes = quotas.record(client, kind, bytes as u64, now);
    let by_time = quotas.record(client, Kind::Request, micros, now);
    drop(quotas);
    let throttle = by_bytes.max(by_time);
    let ms = i32::try_from(throttle.as_millis()).unwrap_or(i32::MAX);
    if version >= 1 && ms > 0 {
        match response {
            Response::Produce(r) => r.throttle_time_ms = ms,
            Response::Fetch(r) => r.throttle_time_ms = ms,
            _ => {}
        }
    }
    throttle
}

// ---- DescribeClientQuotas / AlterClientQuotas ----------------------------------------------
//
// Two layers, as with Kafka's static and dynamic configs: the config file's quotas, and those
// set at runtime by AlterClientQuotas, which are stored in `<data_dir>/client-quotas` and win
// key by key. Removing a runtime quota falls back to the file's, if any.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use weir_broker::quota::{request_time_rate, Rates, MICROS_PER_PERCENT};
use weir_kafka::client_quotas::{self, AlterClientQuotasRequest, DescribeClientQuotasRequest};
use weir_kafka::error_code;

use crate::config::QuotaSettings;

const ENTITY_CLIENT_ID: &str = "client-id";
const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
const REQUEST_PERCENTAGE: &str = "request_percentage";

/// The file that keeps the runtime layer.
pub(crate) fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join("client-quotas")
}

/// Reads the runtime layer; an absent file is an empty layer, a damaged one an error that names
/// the file and line.
pub(crate) fn load(data_dir: &Path) -> std::io::Result<QuotaSettings> {
    let path = store_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(QuotaSettings::default()),
        Err(e) => return Err(e),
    };
    let mut layer = QuotaSettings::default();
    for (n, line) in text.lines().enumerate() {
        let bad =
            |why: &str| std::io::Error::other(format!("{}: line {}: {why}", path.display(), n + 1));
        let fields: Vec<&str> = line.split(' ').collect();
        // Files from before request quotas have 4 fields.
        let (kind, name, producer, consumer, request) = match fields[..] {
            [kind, name, producer, consumer] => (kind, name, producer, consumer, "-"),
            [kind, name, producer, consumer, request] => (kind, name, producer, consumer, request),
            _ => return Err(bad("expected 5 fields")),
        };
        let rate = |v: &str| match v {
            "-" => Ok(None),
            v => v.parse::<u64>().map(Some).map_err(|_| bad("bad rate")),
        };
        let rates = Rates {
            producer_byte_rate: rate(producer)?,
            consumer_byte_rate: rate(consumer)?,
            request_time_rate: rate(request)?,
        };
        match kind {
            "default" => layer.default = rates,
            "client" => {
                let name = unhex(name).ok_or_else(|| bad("bad client id"))?;
                layer.clients.insert(name, rates);
            }
            _ => return Err(bad("expected `default` or `client`")),
        }
    }
    Ok(layer)
}

fn store(data_dir: &Path, layer: &QuotaSettings) -> std::io::Result<()> {
    use std::io::Write;
    let rate = |r: Option<u64>| r.map_or_else(|| "-".to_string(), |r| r.to_string());
    // Without request quotas the lines keep the 4 fields older versions read.
    let with_time = layer.default.request_time_rate.is_some()
        || layer
            .clients
            .values()
            .any(|r| r.request_time_rate.is_some());
    let line = |kind: &str, name: &str, r: &Rates| {
        let time = if with_time {
            format!(" {}", rate(r.request_time_rate))
        } else {
            String::new()
        };
        format!(
            "{kind} {name} {} {}{time}\n",
            rate(r.producer_byte_rate),
            rate(r.consumer_byte_rate),
        )
    };
    let mut text = line("default", "-", &layer.default);
    for (client, r) in &layer.clients {
        text.push_str(&line("client", &hex(client), r));
    }
    let path = store_path(data_dir);
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_data()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(data_dir)?.sync_all()
}

/// Client ids are chosen by clients: stored as hex so any byte is safe in the file.
fn hex(s: &str) -> String {
    if s.is_empty() {
        return "-".into();
    }
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if s == "-" {
        return Some(String::new());
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn overlay(under: Rates, over: Rates) -> Rates {
    Rates {
        producer_byte_rate: over.producer_byte_rate.or(under.producer_byte_rate),
        consumer_byte_rate: over.consumer_byte_rate.or(under.consumer_byte_rate),
        request_time_rate: over.request_time_rate.or(under.request_time_rate),
    }
}

/// The quotas in force: the runtime layer over the file's, key by key.
pub(crate) fn effective(file: &QuotaSettings, runtime: &QuotaSettings) -> QuotaSettings {
    let mut clients = file.clients.clone();
    for (client, rates) in &runtime.clients {
        let under = clients.get(client).copied().unwrap_or_default();
        clients.insert(client.clone(), overlay(under, *rates));
    }
    clients.retain(|_, r| *r != Rates::default());
    QuotaSettings {
        default: overlay(file.default, runtime.default),
        clients,
    }
}

/// Puts `settings` in force.
pub(crate) fn install(broker: &Broker, settings: &QuotaSettings) {
    let clients: HashMap<String, Rates> = settings
        .clients
        .iter()
        .map(|(c, r)| (c.clone(), *r))
        .collect();
    let mut quotas = broker.quotas.lock().unwrap_or_else(|e| e.into_inner());
    quotas.replace(settings.default, clients);
    broker.quotas_on.store(quotas.any(), Ordering::Relaxed);
}

fn values(r: Rates) -> Vec<(String, f64)> {
    let mut v = Vec::new();
    if let Some(p) = r.producer_byte_rate {
        v.push((PRODUCER_BYTE_RATE.to_string(), p as f64));
    }
    if let Some(c) = r.consumer_byte_rate {
        v.push((CONSUMER_BYTE_RATE.to_string(), c as f64));
    }
    if let Some(t) = r.request_time_rate {
        v.push((
            REQUEST_PERCENTAGE.to_string(),
            t as f64 / MICROS_PER_PERCENT,
        ));
    }
    v
}

pub(crate) fn describe(broker: &Broker, request: DescribeClientQuotasRequest) -> Response {
    use client_quotas::Match;
    let settings = broker
        .quota_layers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .effective();
    // Weir's entities have one component, a client id (None: the default).
    let mut entities: Vec<(Option<String>, Rates)> = Vec::new();
    if settings.default != Rates::default() {
        entities.push((None, settings.default));
    }
    entities.extend(settings.clients.iter().map(|(c, r)| (Some(c.clone()), *r)));
    let matches = |name: &Option<String>| {
        request.components.iter().all(|(kind, m)| {
            kind == ENTITY_CLIENT_ID
                && match m {
                    Match::Exact(want) => name.as_deref() == Some(want.as_str()),
                    Match::Default => name.is_none(),
                    Match::Any => true,
                }
        })
    };
    let found = entities
        .into_iter()
        .filter(|(name, _)| matches(name))
        .map(|(name, rates)| (vec![(ENTITY_CLIENT_ID.to_string(), name)], values(rates)))
        .collect();
    Response::DescribeClientQuotas(client_quotas::describe_response(found))
}

/// One entry's change to the runtime layer, or why it cannot be made.
fn change(
    layer: &mut QuotaSettings,
    entity: &client_quotas::Entity,
    ops: &[client_quotas::QuotaOp],
) -> Result<(), String> {
    let [(kind, name)] = &entity[..] else {
        return Err("only client-id quotas are supported: give one client-id component".into());
    };
    if kind != ENTITY_CLIENT_ID {
        return Err(format!(
            "entity type {kind:?} is not supported; use client-id"
        ));
    }
    let mut rates = match name {
        None => layer.default,
        Some(c) => layer.clients.get(c).copied().unwrap_or_default(),
    };
    for (key, value, remove) in ops {
        let v = value.0;
        let byte_rate = || {
            if *remove {
                Ok(None)
            } else if v.is_finite() && v >= 1.0 && v <= u64::MAX as f64 {
                Ok(Some(v as u64))
            } else {
                Err(format!(
                    "{key} must be a rate of at least 1 byte/s, got {v}"
                ))
            }
        };
        match key.as_str() {
            PRODUCER_BYTE_RATE => rates.producer_byte_rate = byte_rate()?,
            CONSUMER_BYTE_RATE => rates.consumer_byte_rate = byte_rate()?,
            REQUEST_PERCENTAGE if *remove => rates.request_time_rate = None,
            REQUEST_PERCENTAGE => {
                rates.request_time_rate = Some(
                    request_time_rate(v)
                        .ok_or_else(|| format!("{key} must be at least 0.0001 (%), got {v}"))?,
                )
            }
            other => {
                return Err(format!(
                    "quota {other:?} is not supported; use {PRODUCER_BYTE_RATE}, \
                     {CONSUMER_BYTE_RATE} or {REQUEST_PERCENTAGE}"
                ))
            }
        }
    }
    match name {
        None => layer.default = rates,
        Some(c) if rates == Rates::default() => {
            layer.clients.remove(c);
        }
        Some(c) => {
            layer.clients.insert(c.clone(), rates);
        }
    }
    Ok(())
}

pub(crate) async fn alter(
    broker: &std::sync::Arc<Broker>,
    request: AlterClientQuotasRequest,
) -> Response {
    // One change at a time: each starts from the layer the previous one stored.
    let _one = broker.quota_alter.lock().await;
    let mut layers = broker
        .quota_layers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut results = Vec::new();
    let mut changed = false;
    for (entity, ops) in &request.entries {
        match change(&mut layers.runtime, entity, ops) {
            Ok(()) => {
                changed = true;
                results.push((entity.clone(), error_code::NONE, None));
            }
            Err(why) => results.push((entity.clone(), error_code::INVALID_REQUEST, Some(why))),
        }
    }
    if changed && !request.validate_only {
        // The file is written and synced off the reactor; the new quotas apply once stored.
        let dir = broker.config.data_dir.clone();
        let runtime = layers.runtime.clone();
        let stored = tokio::task::spawn_blocking(move || store(&dir, &runtime))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
        match stored {
            Ok(()) => {
                install(broker, &layers.effective());
                *broker
                    .quota_layers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = layers;
            }
            Err(e) => {
                let why = format!("cannot store the quotas: {e}");
                for r in results.iter_mut().filter(|r| r.1 == error_code::NONE) {
                    r.1 = error_code::KAFKA_STORAGE_ERROR;
                    r.2 = Some(why.clone());
                }
            }
        }
    }
    Response::AlterClientQuotas(client_quotas::alter_response(results))
}

/// The file's quotas and the runtime layer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Layers {
    pub file: QuotaSettings,
    pub runtime: QuotaSettings,
}

impl Layers {
    pub fn effective(&self) -> QuotaSettings {
        effective(&self.file, &self.runtime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_file_keeps_four_fields_until_a_request_quota_is_set() {
        let dir = std::env::temp_dir().join(format!("weir-quota-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut layer = QuotaSettings::default();
        layer.clients.insert(
            "etl".into(),
            Rates {
                producer_byte_rate: Some(1_000),
                ..Rates::default()
            },
        );
        store(&dir, &layer).expect("store");
        let text = std::fs::read_to_string(store_path(&dir)).expect("read");
        assert_eq!(
            text, "default - - -\nclient 65746c 1000 -\n",
            "as older versions wrote"
        );
        assert_eq!(load(&dir).expect("load"), layer);
        layer.default.request_time_rate = Some(5_000);
        store(&dir, &layer).expect("store");
        let text = std::fs::read_to_string(store_path(&dir)).expect("read");
        assert_eq!(text, "default - - - 5000\nclient 65746c 1000 - -\n");
        assert_eq!(load(&dir).expect("load"), layer);
        std::fs::remove_dir_all(&dir).ok();
    }
}
