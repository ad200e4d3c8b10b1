//! Shards: one OS thread per core, each a tokio current_thread reactor with its own Kafka
//! listener socket on the same address (SO_REUSEPORT), so the kernel spreads connections; a
//! connection may later move to the shard that owns the partitions it uses (`arrivals`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::connection::{self, Handoff, Held};
use crate::limits::Refusal;

/// Pending connections the kernel queues per listener socket.
const LISTEN_BACKLOG: u32 = 1024;
/// Pause after a failed accept (out of file descriptors, say) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // A restart binds the same port at once, and every shard binds it too.
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves a connection that moved here from another shard.
fn adopt(
    Handoff { stream, held }: Handoff,
    connections: &mut JoinSet<()>,
    index: usize,
    shutdown: &watch::Receiver<bool>,
) {
    // Registered with this shard's reactor; a failure closes the connection.
    if let Ok(stream) = TcpStream::from_std(stream) {
        connections.spawn_local(connection::run(stream, held, index, shutdown.clone()));
    }
}

/// Runs shard `index`'s accept loop until shutdown, then gives in-flight connections `grace`
/// to finish their current request. Connections moving here from other shards arrive on
/// `arrivals`; the queue is closed when the loop ends (a connection that wants to move after
/// that stays where it is), and those already in it are served, within the same grace.
pub(crate) async fn run(
    index: usize,
    listener: TcpListener,
    mut arrivals: mpsc::Receiver<Handoff>,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut stop = shutdown.clone();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match broker.connections.admit(peer.ip()) {
                    Ok(admitted) => {
                        let held = Held::new(admitted, broker.clone());
                        let run = connection::run(stream, held, index, shutdown.clone());
                        connections.spawn_local(run);
                    }
                    Err(refusal) => {
                        // Closed before a byte is read: the client sees the connection end and
                        // retries with its backoff, as with a Kafka broker at its limit.
                        drop(stream);
                        let counter = match refusal {
                            Refusal::Total => &broker.metrics.refused_total,
                            Refusal::PerIp => &broker.metrics.refused_per_ip,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                },
                Err(e) => {
                    eprintln!("weir: accept failed: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            },
            Some(handoff) = arrivals.recv() => {
                adopt(handoff, &mut connections, index, &shutdown);
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    drop(listener);
    // No more arrivals; those already on their way are served like the others: they finish
    // the request they may have sent, within the grace, and close.
    arrivals.close();
    while let Some(handoff) = arrivals.recv().await {
        adopt(handoff, &mut connections, index, &shutdown);
    }
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}
