//! Where the broker is and how patient to be with it.

use std::time::Duration;

use crate::breaker::BreakerConfig;
use crate::retry::RetryPolicy;

/// The broker address the CLI and the bench use when neither a flag nor `WEIR_BOOTSTRAP` names one.
pub const BOOTSTRAP_DEFAULT: &str = "127.0.0.1:9092";

/// Settings shared by [`Producer`](crate::Producer), [`Consumer`](crate::Consumer) and
/// [`Admin`](crate::Admin).
#[derive(Debug, Clone)]
pub struct Config {
    /// `host:port[,host:port…]` of the broker (librdkafka's `bootstrap.servers`).
    pub bootstrap: String,
    /// The client id the broker sees (quotas and logs are keyed by it).
    pub client_id: String,
    /// How long `connect` waits for a first answer before giving up.
    pub connect_timeout: Duration,
    /// How long one admin or metadata request may take.
    pub request_timeout: Duration,
    /// When calls start failing fast while the broker is unreachable.
    pub breaker: BreakerConfig,
    /// Retries around admin calls.
    pub retry: RetryPolicy,
    /// librdkafka properties, applied over Weir's defaults.
    pub settings: Vec<(String, String)>,
}

impl Config {
    pub fn new(bootstrap: impl Into<String>) -> Config {
        Config {
            bootstrap: bootstrap.into(),
            client_id: "weir".to_string(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            breaker: BreakerConfig::default(),
            retry: RetryPolicy::default(),
            settings: Vec::new(),
        }
    }

    /// `WEIR_BOOTSTRAP`, else [`BOOTSTRAP_DEFAULT`].
    pub fn from_env() -> Config {
        Config::new(std::env::var("WEIR_BOOTSTRAP").unwrap_or_else(|_| BOOTSTRAP_DEFAULT.into()))
    }

    /// Sets a librdkafka property (e.g. `compression.type`, `auto.offset.reset`); it wins over
    /// Weir's defaults.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Config {
        self.settings.push((key.into(), value.into()));
        self
    }

    pub fn client_id(mut self, id: impl Into<String>) -> Config {
        self.client_id = id.into();
        self
    }

    /// The librdkafka configuration: the connection, then `defaults`, then [`set`](Self::set)'s.
    pub(crate) fn rdkafka(&self, defaults: &[(&str, &str)]) -> rdkafka::ClientConfig {
        let mut config = rdkafka::ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("client.id", &self.client_id)
            // Connection failures reach the error callback (and the breaker), not stderr.
            .set("log.connection.close", "false");
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.settings {
            config.set(key, value);
        }
        config
    }
}
