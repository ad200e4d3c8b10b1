//! The HTTP listener: `GET /health` and `GET /metrics`. Deliberately minimal (one request per
//! connection, bounded request head) until the HTTP gateway issue replaces it.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::broker::Broker;

/// Largest request head read; anything longer is answered 431.
const HTTP_HEAD_MAX_BYTES: usize = 8 * 1024;

pub(crate) async fn run(
    listener: TcpListener,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::task::spawn_local(handle(stream, broker.clone()));
                }
            }
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

async fn handle(mut stream: TcpStream, broker: Arc<Broker>) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let complete = loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break true;
        }
        if head.len() > HTTP_HEAD_MAX_BYTES {
            break false;
        }
    };
    let (status, content_type, body) = if !complete {
        (
            "431 Request Header Fields Too Large",
            "text/plain",
            String::new(),
        )
    } else {
        let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
        let mut parts = line.split(|b| *b == b' ');
        match (parts.next(), parts.next()) {
            (Some(b"GET"), Some(b"/health")) => ("200 OK", "text/plain", "ok\n".to_string()),
            (Some(b"GET"), Some(b"/metrics")) => (
                "200 OK",
                "text/plain; version=0.0.4",
                crate::metrics::render(&broker),
            ),
            (Some(b"GET"), _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
            _ => ("405 Method Not Allowed", "text/plain", String::new()),
        }
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
