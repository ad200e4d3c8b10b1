//! The HTTP listener: the dashboard at `/`, REST produce, fetch and administration in JSON,
//! WebSocket subscriptions at `/ws`, `/health`, `/metrics` and `/openapi.json`. Every shard
//! binds it (SO_REUSEPORT, like the Kafka listener) and serves the connections the kernel hands
//! it; a REST request or a WebSocket feed reaches partitions through the same owner mailboxes
//! as a Kafka request.
//!
//! ```text
//! accept (http_max_connections) → http::Conn::read_request (bounded head, body, budget)
//!   → rest::route → partition owners' mailboxes / coordinator → JSON → write, keep-alive
//!   | GET /ws upgrade → ws::serve → subscriptions (ws::subscription) ← a feed per partition
//!                                   and shard (ws::feed) | group member (ws::group)
//! ```

mod http;
mod records;
mod rest;
mod ws;

pub(crate) use ws::frame as ws_frames;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::broker::Broker;
use http::{Conn, Read};

pub(crate) async fn run(
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
) {
    let mut stop = shutdown.clone();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match broker.http_connections.admit(peer.ip()) {
                    Ok(admitted) => {
                        let serve = serve(stream, broker.clone(), shutdown.clone());
                        connections.spawn_local(async move {
                            serve.await;
                            drop(admitted);
                        });
                    }
                    Err(_) => {
                        drop(stream);
                        broker.metrics.http_refused.fetch_add(1, Ordering::Relaxed);
                    }
                },
                Err(e) => {
                    eprintln!("weir: HTTP accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    drop(listener);
    // In-flight requests finish (each is bounded by its timeouts); idle connections close.
    let grace = broker.config.shutdown_grace;
    if tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        connections.abort_all();
    }
}

async fn serve(stream: TcpStream, broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    broker
        .metrics
        .http_connections_open
        .fetch_add(1, Ordering::Relaxed);
    let mut conn = Conn::new(stream);
    loop {
        let read = tokio::select! {
            read = conn.read_request(&broker) => read,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (request, permit) = match read {
            (Read::Request(request), permit) => (request, permit),
            (Read::Closed, _) => break,
            (Read::Refuse(response), _) => {
                broker.metrics.http_response(response.status);
                if conn
                    .write_response(&response, false, broker.config.http_idle_timeout)
                    .await
                {
                    conn.linger().await;
                }
                break;
            }
        };
        if request.segments == ["ws"] && ws::is_upgrade(&request) {
            match ws::handshake(&request) {
                Ok(accept) => {
                    drop(permit);
                    broker.metrics.http_response(101);
                    broker
                        .metrics
                        .http_connections_open
                        .fetch_sub(1, Ordering::Relaxed);
                    return ws::serve(conn, accept, broker.clone(), shutdown).await;
                }
                Err(refusal) => {
                    broker.metrics.http_response(refusal.status);
                    conn.write_response(&refusal, false, broker.config.http_idle_timeout)
                        .await;
                    break;
                }
            }
        }
        let started = std::time::Instant::now();
        let response = rest::route(&broker, &request).await;
        broker.metrics.http_response(response.status);
        broker.metrics.http_latency.observe(started.elapsed());
        let keep_alive = request.keep_alive && !*shutdown.borrow();
        drop(permit);
        if !conn
            .write_response(&response, keep_alive, broker.config.http_idle_timeout)
            .await
            || !keep_alive
        {
            break;
        }
    }
    broker
        .metrics
        .http_connections_open
        .fetch_sub(1, Ordering::Relaxed);
}
