//! `weir-server`: the broker process. Starts the shards and the HTTP listener, and stops them.
//!
//! ```text
//! Server::start → shard threads (current_thread reactors) → listener (SO_REUSEPORT)
//!               → connection → weir_kafka::decode_request → Broker → encode_response
//! ```

mod broker;
pub mod config;
mod connection;
mod http;
mod metrics;
mod shard;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::watch;

pub use config::ServerConfig;

/// A running broker.
pub struct Server {
    kafka_addr: SocketAddr,
    http_addr: SocketAddr,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds the listeners and starts `config.shards` shard threads.
    pub fn start(config: ServerConfig) -> std::io::Result<Server> {
        std::fs::create_dir_all(&config.data_dir)?;
        let cluster_id = broker::cluster_id(&config.data_dir)?;
        let (stop, stopped) = watch::channel(false);
        let shards = config.shards.max(1);

        // Shard 0 binds first: with port 0 it learns the port the others must share.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        let mut kafka_addr = config.kafka_listen;
        let mut broker: Option<Arc<Broker>> = None;
        let mut http_addr = config.http_listen;
        for index in 0..shards {
            let ready = ready_tx.clone();
            let stopped = stopped.clone();
            let shared = broker.clone();
            let config = config.clone();
            let cluster_id = cluster_id.clone();
            let handle = std::thread::Builder::new()
                .name(format!("weir-shard-{index}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
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
                        let listener = match shard::bind(kafka_addr) {
                            Ok(listener) => listener,
                            Err(e) => {
                                let _ = ready.send(Err(e));
                                return;
                            }
                        };
                        let bound = listener.local_addr();
                        // Shard 0 creates the shared state and the HTTP listener.
                        let (broker, http) = match shared {
                            Some(broker) => (broker, None),
                            None => {
                                let http = match shard::bind(config.http_listen) {
                                    Ok(http) => http,
                                    Err(e) => {
                                        let _ = ready.send(Err(e));
                                        return;
                                    }
                                };
                                let bound = match bound.as_ref() {
                                    Ok(addr) => *addr,
                                    Err(_) => kafka_addr,
                                };
                                let node = broker_node(&config, bound);
                                let broker = Arc::new(Broker {
                                    config: config.clone(),
                                    node,
                                    cluster_id,
                                    metrics: Default::default(),
                                });
                                (broker, Some(http))
                            }
                        };
                        let http_addr = http.as_ref().and_then(|h| h.local_addr().ok());
                        let _ = ready.send(bound.map(|addr| (addr, http_addr, broker.clone())));
                        if let Some(http) = http {
                            tokio::task::spawn_local(http::run(
                                http,
                                broker.clone(),
                                stopped.clone(),
                            ));
                        }
                        shard::run(listener, broker, stopped, config.shutdown_grace).await;
                    });
                })?;
            threads.push(handle);
            let (addr, http, shared) = ready_rx
                .recv()
                .map_err(|_| std::io::Error::other("shard thread exited during start"))??;
            if index == 0 {
                kafka_addr = addr;
                http_addr = http.unwrap_or(http_addr);
                broker = Some(shared);
            }
        }
        Ok(Server {
            kafka_addr,
            http_addr,
            stop,
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

    /// Stops accepting, lets in-flight requests finish (up to `shutdown_grace_ms`), and waits
    /// for every shard to end.
    pub fn shutdown(self) {
        let _ = self.stop.send(true);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn broker_node(config: &ServerConfig, bound: SocketAddr) -> weir_kafka::metadata::Node {
    let (host, port) = match &config.advertised_listener {
        Some((host, port)) => (host.clone(), *port),
        None => (bound.ip().to_string(), bound.port()),
    };
    weir_kafka::metadata::Node {
        node_id: 0,
        host,
        port: i32::from(port),
    }
}

use broker::Broker;
