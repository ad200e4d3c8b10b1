//! `weir-server`: the broker process. Starts the shards and the HTTP listener, and stops them.
//!
//! ```text
//! Server::start → shard threads (current_thread reactors) → listener (SO_REUSEPORT)
//!   → connection → weir_kafka::decode_request → Broker / owning shard's mailbox
//!   → partition (weir_log::Log) → answers gathered → encode_response → in request order
//! ```

mod admin;
mod append;
mod broker;
mod codecs;
pub mod config;
mod configs;
mod connection;
mod coordinator;
mod gateway;
mod groups;
mod limits;
mod metrics;
mod partition;
mod producers;
mod quotas;
mod shard;
mod threads;

use std::net::SocketAddr;
use std::sync::{mpsc as std_mpsc, Arc, OnceLock};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, watch};
use weir_broker::topics::Topics;
use weir_log::Flusher;

use broker::Broker;
pub use config::ServerConfig;

/// WebSocket framing for Weir's own clients of the HTTP gateway (`weir bench ws`, tests).
pub mod websocket {
    pub use crate::gateway::ws_frames::{client_frame, server_frame_at};
}

/// A running broker.
pub struct Server {
    kafka_addr: SocketAddr,
    http_addr: SocketAddr,
    /// Phase 1 of shutdown: stop accepting, finish in-flight requests.
    stop: watch::Sender<bool>,
    /// Phase 2: every shard's connections are done; close the logs.
    close: watch::Sender<bool>,
    drained: std_mpsc::Receiver<()>,
    shutdown_grace: std::time::Duration,
    threads: Vec<JoinHandle<()>>,
}

/// Threads of a shard's blocking pool: appends (one run per partition at a time), reads that
/// found their partition busy, log opens, retention passes. More work waits in the pool's queue.
const BLOCKING_THREADS_PER_SHARD: usize = 64;
/// Time beyond `shutdown_grace_ms` shutdown waits for a shard to report its connections done.
const SHUTDOWN_REPORT_SLACK: std::time::Duration = std::time::Duration::from_secs(5);

impl Server {
    /// Opens the topics, binds the listeners and starts `config.shards` shard threads.
    pub fn start(config: ServerConfig) -> std::io::Result<Server> {
        if config.advertised_listener.is_none() && config.kafka_listen.ip().is_unspecified() {
            return Err(std::io::Error::other(format!(
                "kafka_listen {} binds every address: set advertised_listener to the host:port \
                 clients should connect to",
                config.kafka_listen
            )));
        }
        std::fs::create_dir_all(&config.data_dir)?;
        let cluster_id = broker::cluster_id(&config.data_dir)?;
        let quota_layers = quotas::Layers {
            file: config.quotas.clone(),
            runtime: quotas::load(&config.data_dir)?,
        };
        let in_force = quota_layers.effective();
        let topics = Topics::open(&config.data_dir).map_err(std::io::Error::other)?;
        let flusher = Flusher::start(config.flush_threads)?;
        flusher.set_cache_window(config.log_cache_window_bytes);
        let offsets_partitions =
            coordinator::resolve_partitions(&config.data_dir, config.offsets_partitions.max(1))?;
        let shards = config.shards.max(1);
        let mut inboxes = Vec::new();
        let mut mailboxes = Vec::new();
        let mut handoffs = Vec::new();
        let mut arrivals = Vec::new();
        for _ in 0..shards {
            let (tx, rx) = mpsc::channel(config.shard_mailbox_capacity.max(1));
            mailboxes.push(tx);
            inboxes.push(rx);
            let (tx, rx) = mpsc::channel(config.shard_mailbox_capacity.max(1));
            handoffs.push(tx);
            arrivals.push(rx);
        }
        let broker = Arc::new(Broker {
            config: config.clone(),
            node: OnceLock::new(),
            cluster_id,
            metrics: metrics::Metrics::new(shards),
            request_budget: limits::RequestBudget::new(config.request_memory_budget_bytes),
            // Put in force below, by the same path as AlterClientQuotas.
            quotas_on: std::sync::atomic::AtomicBool::new(false),
            quotas: std::sync::Mutex::new(weir_broker::quota::Quotas::default()),
            quota_layers: std::sync::Mutex::new(quota_layers),
            quota_alter: tokio::sync::Mutex::new(()),
            connections: limits::Connections::new(
                config.max_connections,
                config.max_connections_per_ip,
            ),
            http_connections: limits::Connections::new(
                config.http_max_connections,
                config.http_max_connections,
            ),
            http_round_robin: std::sync::atomic::AtomicUsize::new(0),
            topics,
            mailboxes,
            handoffs,
            flusher,
            offsets_partitions,
            producer_ids: std::sync::Mutex::new(weir_broker::producer::ProducerIds::new(
                producers::stored_block_end(&config.data_dir)?,
            )),
            producer_id_reservation: tokio::sync::Mutex::new(()),
        });
        quotas::install(&broker, &in_force);
        let (stop, stopped) = watch::channel(false);
        let (close, closed) = watch::channel(false);
        let (drained_tx, drained) = std_mpsc::channel();

        // Shard 0 binds first: with port 0 it learns the port the others must share.
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let mut threads = Vec::new();
        let mut kafka_addr = config.kafka_listen;
        let mut http_addr = config.http_listen;
        // Shard i runs on the i-th CPU the process may use (wrapping around when there are
        // more shards than CPUs); its blocking pool on any of them. Only when the shards use
        // all those CPUs: with fewer shards (a CPU quota in a container with the machine's
        // CPUs, say), which CPUs are the broker's is not known, and every broker on the
        // machine would pin to the first ones.
        let cpus = Arc::new(threads::allowed_cpus());
        let pin = config.shard_cpu_pinning && !cpus.is_empty() && shards >= cpus.len();
        if config.shard_cpu_pinning && !pin {
            eprintln!(
                "weir: shards not pinned: {shards} shards for {} CPUs the process may use",
                cpus.len()
            );
        }
        for (index, (inbox, arrivals)) in inboxes.into_iter().zip(arrivals).enumerate() {
            let cpu = pin.then(|| cpus[index % cpus.len()]);
            let pool_cpus = cpus.clone();
            let ready = ready_tx.clone();
            let drained = drained_tx.clone();
            let stopped = stopped.clone();
            let closed = closed.clone();
            let broker = broker.clone();
            let bind_to = kafka_addr;
            let http_bind = http_addr;
            let handle = std::thread::Builder::new()
                .name(format!("weir-shard-{index}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        if !threads::run_on(&[cpu]) {
                            eprintln!("weir: shard {index}: cannot pin to CPU {cpu}; not pinned");
                        }
                    }
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .max_blocking_threads(BLOCKING_THREADS_PER_SHARD)
                        .on_thread_start(move || threads::below_the_reactors(&pool_cpus))
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&runtime, async move {
                        let started = start_listeners(index, bind_to, http_bind, &broker);
                        let (listener, http) = match started {
                            Ok(bound) => bound,
                            Err(e) => {
                                let _ = ready.send(Err(e));
                                return;
                            }
                        };
                        let addrs = listener
                            .local_addr()
                            .and_then(|kafka| Ok((kafka, http.local_addr()?)));
                        let _ = ready.send(addrs);
                        let mailbox = tokio::task::spawn_local(partition::run_mailbox(
                            index,
                            inbox,
                            broker.clone(),
                            closed,
                        ));
                        tokio::task::spawn_local(gateway::run(
                            http,
                            broker.clone(),
                            stopped.clone(),
                        ));
                        tokio::task::spawn_local(metrics::watch_stalls(
                            broker.clone(),
                            index,
                            stopped.clone(),
                        ));
                        let grace = broker.config.shutdown_grace;
                        shard::run(index, listener, arrivals, broker, stopped, grace).await;
                        let _ = drained.send(());
                        let _ = mailbox.await;
                    });
                })?;
            threads.push(handle);
            let (addr, http) = ready_rx
                .recv()
                .map_err(|_| std::io::Error::other("shard thread exited during start"))??;
            if index == 0 {
                kafka_addr = addr;
                http_addr = http;
            }
        }
        Ok(Server {
            kafka_addr,
            http_addr,
            stop,
            close,
            drained,
            shutdown_grace: config.shutdown_grace,
            threads,
        })
    }

    /// The address the Kafka listener is bound to (the real port when 0 was asked for).
    pub fn kafka_addr(&self) -> SocketAddr {
        self.kafka_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Stops accepting, lets in-flight requests finish (up to `shutdown_grace_ms`), then closes
    /// every log cleanly (clean-shutdown checkpoints) and waits for the shards to end.
    pub fn shutdown(self) {
        let _ = self.stop.send(true);
        // A shard that died never reports: wait for the others, not forever.
        let wait = self.shutdown_grace + SHUTDOWN_REPORT_SLACK;
        for _ in 0..self.threads.len() {
            if self.drained.recv_timeout(wait).is_err() {
                break;
            }
        }
        let _ = self.close.send(true);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Binds shard `index`'s Kafka and HTTP listeners (every shard binds both, SO_REUSEPORT); shard
/// 0 also records the advertised node (the Kafka port may have been 0).
fn start_listeners(
    index: usize,
    kafka: SocketAddr,
    http: SocketAddr,
    broker: &Broker,
) -> std::io::Result<(tokio::net::TcpListener, tokio::net::TcpListener)> {
    let listener = shard::bind(kafka)?;
    let http = shard::bind(http)?;
    if index != 0 {
        return Ok((listener, http));
    }
    let bound = listener.local_addr()?;
    let (host, port) = match &broker.config.advertised_listener {
        Some((host, port)) => (host.clone(), *port),
        None => (bound.ip().to_string(), bound.port()),
    };
    let _ = broker.node.set(weir_kafka::metadata::Node {
        node_id: 0,
        host,
        port: i32::from(port),
    });
    Ok((listener, http))
}
