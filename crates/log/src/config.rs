//! Per-log settings under their Kafka topic-config names, with Kafka's defaults.

/// The settings of one log. Field names are the Kafka keys with `_` for `.`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll to a new segment before one would grow past this size.
    pub segment_bytes: u64,
    /// `segment.ms`: roll a segment whose first batch is older than this.
    pub segment_ms: i64,
    /// `index.interval.bytes`: bytes of log between two sparse-index entries.
    pub index_interval_bytes: u64,
    /// `retention.bytes`: delete old sealed segments while the log is bigger than this; -1 = no limit.
    pub retention_bytes: i64,
    /// `retention.ms`: delete sealed segments whose newest timestamp is older than this; -1 = forever.
    pub retention_ms: i64,
    /// `flush.messages`: the append that brings the unflushed record count to this many waits for
    /// fdatasync before it is acknowledged. 1 = every append is durable when acknowledged.
    pub flush_messages: i64,
    /// `flush.ms`: fdatasync at this interval in the background; acknowledgements do not wait.
    pub flush_ms: i64,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_message_bytes: u64,
}

/// Kafka's `segment.bytes` minimum is 14 bytes; we need room for at least one batch header.
pub const SEGMENT_BYTES_MIN: u64 = crate::batch::HEADER_BYTES as u64;
/// Segment positions are stored as u32 in the index.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
            retention_bytes: -1,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
            max_message_bytes: 1_048_588,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown log config key {0:?}")]
    UnknownKey(String),
    #[error("{key}={value:?}: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: &'static str,
    },
}

/// The keys this crate understands, in the order `entries` lists them.
pub const KEYS: [&str; 8] = [
    "segment.bytes",
    "segment.ms",
    "index.interval.bytes",
    "retention.bytes",
    "retention.ms",
    "flush.messages",
    "flush.ms",
    "max.message.bytes",
];

impl LogConfig {
    /// Sets one setting from its Kafka key and string value, checking its range.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let invalid = |reason| ConfigError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            reason,
        };
        if !KEYS.contains(&key) {
            return Err(ConfigError::UnknownKey(key.to_string()));
        }
        let number: i64 = value
            .trim()
            .parse()
            .map_err(|_| invalid("not an integer"))?;
        let positive = |n: i64| {
            if n >= 1 {
                Ok(n)
            } else {
                Err(invalid("must be at least 1"))
            }
        };
        let limit_or_unlimited = |n: i64| {
            if n >= -1 {
                Ok(n)
            } else {
                Err(invalid("must be -1 (no limit) or at least 0"))
            }
        };
        match key {
            "segment.bytes" => {
                let n = positive(number)? as u64;
                if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&n) {
                    return Err(invalid("must be between 61 and 2147483647"));
                }
                self.segment_bytes = n;
            }
            "segment.ms" => self.segment_ms = positive(number)?,
            "index.interval.bytes" => {
                self.index_interval_bytes = if number >= 0 {
                    number as u64
                } else {
                    return Err(invalid("must be at least 0"));
                }
            }
            "retention.bytes" => self.retention_bytes = limit_or_unlimited(number)?,
            "retention.ms" => self.retention_ms = limit_or_unlimited(number)?,
            "flush.messages" => self.flush_messages = positive(number)?,
            "flush.ms" => {
                self.flush_ms = if number >= 0 {
                    number
                } else {
                    return Err(invalid("must be at least 0"));
                }
            }
            "max.message.bytes" => {
                let n = positive(number)?;
                if n > i32::MAX as i64 {
                    return Err(invalid("must fit in a signed 32-bit integer"));
                }
                self.max_message_bytes = n as u64;
            }
            _ => unreachable!("key checked against KEYS above"),
        }
        Ok(())
    }

    /// Every setting as (Kafka key, value), for DescribeConfigs.
    pub fn entries(&self) -> [(&'static str, String); 8] {
        [
            (KEYS[0], self.segment_bytes.to_string()),
            (KEYS[1], self.segment_ms.to_string()),
            (KEYS[2], self.index_interval_bytes.to_string()),
            (KEYS[3], self.retention_bytes.to_string()),
            (KEYS[4], self.retention_ms.to_string()),
            (KEYS[5], self.flush_messages.to_string()),
            (KEYS[6], self.flush_ms.to_string()),
            (KEYS[7], self.max_message_bytes.to_string()),
        ]
    }

    /// Checks every setting's range, as `set` does one by one (the fields are public).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut check = LogConfig::default();
        for (key, value) in self.entries() {
            check.set(key, &value)?;
        }
        Ok(())
    }

    /// True when every append must wait for fdatasync (`flush.messages=1`).
    pub fn sync_every_append(&self) -> bool {
        self.flush_messages == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_then_entries_round_trips() {
        let mut config = LogConfig::default();
        for (key, value) in [
            ("segment.bytes", "1048576"),
            ("segment.ms", "60000"),
            ("index.interval.bytes", "0"),
            ("retention.bytes", "-1"),
            ("retention.ms", "3600000"),
            ("flush.messages", "1"),
            ("flush.ms", "1000"),
            ("max.message.bytes", "2000000"),
        ] {
            config.set(key, value).expect(key);
        }
        let entries = config.entries();
        assert_eq!(entries[0], ("segment.bytes", "1048576".to_string()));
        assert_eq!(entries[2], ("index.interval.bytes", "0".to_string()));
        assert_eq!(entries[5], ("flush.messages", "1".to_string()));
        assert_eq!(entries[7], ("max.message.bytes", "2000000".to_string()));
        assert!(config.sync_every_append());
    }

    #[test]
    fn bad_values_are_refused_with_the_key() {
        let mut config = LogConfig::default();
        let err = config.set("segment.bytes", "10").unwrap_err();
        assert!(err.to_string().contains("segment.bytes"), "{err}");
        assert!(config.set("flush.messages", "0").is_err());
        assert!(config.set("retention.ms", "-2").is_err());
        assert!(config.set("retention.ms", "soon").is_err());
        assert_eq!(
            config.set("cleanup.policy", "compact"),
            Err(ConfigError::UnknownKey("cleanup.policy".into()))
        );
        assert_eq!(config, LogConfig::default(), "failed sets change nothing");
        let bad = LogConfig {
            segment_bytes: 1 << 40,
            ..LogConfig::default()
        };
        assert!(bad.validate().is_err());
        assert!(LogConfig::default().validate().is_ok());
    }
}
