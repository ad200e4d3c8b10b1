//! One Kafka connection: read a frame, decode, answer, write; responses leave in request order
//! because a connection handles one request at a time.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use weir_kafka::{api_versions, decode_request, encode_response, Decoded, Request, Response};

use crate::broker::Broker;

/// Bytes read from the socket at a time while a frame body arrives: memory follows what the
/// peer actually sent, not the size it declared.
const READ_CHUNK_BYTES: usize = 64 * 1024;

pub(crate) async fn serve(
    mut stream: TcpStream,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    broker
        .metrics
        .connections_accepted
        .fetch_add(1, Ordering::Relaxed);
    broker
        .metrics
        .connections_open
        .fetch_add(1, Ordering::Relaxed);
    let mut frame = Vec::new();
    loop {
        let mut prefix = [0u8; 4];
        tokio::select! {
            read = stream.read_exact(&mut prefix) => if read.is_err() { break },
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
        let size =
            match weir_kafka::frame::frame_size(prefix, broker.config.socket_request_max_bytes) {
                Ok(size) => size,
                Err(_) => {
                    broker
                        .metrics
                        .requests_rejected
                        .fetch_add(1, Ordering::Relaxed);
                    break;
                }
            };
        if read_body(&mut stream, &mut frame, size).await.is_err() {
            break;
        }
        let Some(response) = answer(&broker, &frame) else {
            broker
                .metrics
                .requests_rejected
                .fetch_add(1, Ordering::Relaxed);
            break;
        };
        broker.metrics.requests.fetch_add(1, Ordering::Relaxed);
        if stream.write_all(&response).await.is_err() {
            break;
        }
    }
    broker
        .metrics
        .connections_open
        .fetch_sub(1, Ordering::Relaxed);
}

async fn read_body(
    stream: &mut TcpStream,
    frame: &mut Vec<u8>,
    size: usize,
) -> std::io::Result<()> {
    frame.clear();
    while frame.len() < size {
        let want = (size - frame.len()).min(READ_CHUNK_BYTES);
        let start = frame.len();
        frame.resize(start + want, 0);
        let n = stream.read(&mut frame[start..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        frame.truncate(start + n);
    }
    Ok(())
}

/// The encoded response to one request frame, or None to close the connection.
fn answer(broker: &Broker, frame: &[u8]) -> Option<Vec<u8>> {
    match decode_request(frame).ok()? {
        Decoded::Request { header, request } => {
            let response = match request {
                Request::ApiVersions(_) => Response::ApiVersions(api_versions::response(0)),
                Request::Metadata(request) => broker.metadata(&request),
            };
            Some(encode_response(header.id, &response, false))
        }
        Decoded::ApiVersionsFallback(id) => Some(encode_response(
            id,
            &Response::ApiVersions(api_versions::response(api_versions::UNSUPPORTED_VERSION)),
            true,
        )),
        Decoded::Unsupported(_) => None,
    }
}
