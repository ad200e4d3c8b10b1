//! `weir-client`: Weir's Rust client, a thin layer over librdkafka (the `rdkafka` crate; why
//! that library is ARCHITECTURE.md decision 27).
//!
//! What it adds: Weir's defaults (idempotent producer, Java-compatible key partitioning,
//! explicit commits), errors that say what to do, a circuit breaker that fails calls fast while
//! no broker answers, and retries with backoff and jitter around admin calls.
//!
//! # Tutorial
//!
//! Start a broker (`weir serve`), then connect, create a topic, produce a keyed record, read it
//! back as a member of a consumer group, and commit it:
//!
//! ```
//! use weir_client::{Admin, Config, Consumer, Producer, Record};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("weir-client-doc-{}", std::process::id()));
//! # let mut server = weir_server::ServerConfig::default();
//! # server.data_dir = dir.clone();
//! # server.kafka_listen = "127.0.0.1:0".parse()?;
//! # server.http_listen = "127.0.0.1:0".parse()?;
//! # server.shards = 1;
//! # server.groups.coordination.initial_rebalance_delay_ms = 0;
//! # let server = weir_server::Server::start(server)?;
//! # let bootstrap = server.kafka_addr().to_string();
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! // Where the broker listens; `Config::from_env()` reads WEIR_BOOTSTRAP instead.
//! let config = Config::new(bootstrap);
//!
//! // Topics: Kafka's names for the configs.
//! let admin = Admin::connect(&config).await?;
//! admin
//!     .create_topic("orders", 3, &[("retention.ms".into(), "86400000".into())])
//!     .await?;
//!
//! // Produce: the key picks the partition (murmur2, like the Java client), and the future
//! // resolves once the broker has acknowledged the record.
//! let producer = Producer::connect(&config).await?;
//! let delivered = producer
//!     .send(
//!         &Record::new("orders")
//!             .key(b"customer-42")
//!             .value(b"{\"total\": 99}")
//!             .header("source", b"web"),
//!     )
//!     .await?;
//! println!("stored at partition {} offset {}", delivered.partition, delivered.offset);
//!
//! // Consume as a member of the group "billing"; a new group starts from the beginning
//! // because of the librdkafka setting passed through `set`.
//! let consumer = Consumer::subscribe(
//!     &config.clone().set("auto.offset.reset", "earliest"),
//!     "billing",
//!     &["orders"],
//! )
//! .await?;
//! let message = consumer.recv().await?;
//! assert_eq!(message.key.as_deref(), Some(&b"customer-42"[..]));
//! assert_eq!(message.value.as_deref(), Some(&b"{\"total\": 99}"[..]));
//! assert_eq!((message.partition, message.offset), (delivered.partition, delivered.offset));
//!
//! // Commit: the group resumes after this record, whichever member reads the partition next.
//! consumer.commit(&message).await?;
//! let group = admin.describe_group("billing").await?;
//! assert_eq!(group.offsets[0].committed, delivered.offset + 1);
//! # Ok::<(), weir_client::Error>(())
//! # })?;
//! # server.shutdown();
//! # let _ = std::fs::remove_dir_all(dir);
//! # Ok(())
//! # }
//! ```
//!
//! A broker that is not there is an error at once, not a hang:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! use weir_client::{Config, Error, Producer};
//!
//! // Nothing listens on port 1.
//! let err = Producer::connect(&Config::new("127.0.0.1:1")).await.err().unwrap();
//! assert!(matches!(err, Error::Unreachable { .. }));
//! assert!(err.to_string().starts_with("cannot reach 127.0.0.1:1: connection refused"));
//! # });
//! # Ok(())
//! # }
//! ```
//!
//! The client runs on tokio: blocking librdkafka calls go to tokio's blocking pool.

pub mod admin;
pub mod breaker;
mod config;
pub mod consumer;
mod error;
pub mod parallel;
pub mod producer;
pub mod retry;
mod shared;

pub use admin::Admin;
pub use config::{Config, BOOTSTRAP_DEFAULT};
pub use consumer::{Consumer, Message, Start};
pub use error::{Error, Result};
pub use parallel::{ParallelConsumer, ParallelOptions, ParallelReport};
pub use producer::{Delivered, Pending, Producer, Record};
/// The library underneath, for settings and types this layer does not wrap.
pub use rdkafka;
