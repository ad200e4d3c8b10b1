//! InitProducerId: producer ids for idempotent producers, never reused across restarts. The
//! per-partition sequence checks live with the partitions (`partition.rs`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use weir_kafka::producer_id::{self, InitProducerIdRequest, NO_PRODUCER_ID};
use weir_kafka::{error_code, Response};

use crate::broker::Broker;

/// The file holding the end of the last reserved block of producer ids (decimal text).
fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("producer-ids")
}

/// The stored block end: ids below it may have been handed out. 0 for a new data directory.
pub(crate) fn stored_block_end(data_dir: &Path) -> std::io::Result<i64> {
    let path = path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|end| *end >= 0)
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "{}: expected a producer id, found {:?}",
                    path.display(),
                    text.trim()
                ))
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Stores a new block end durably: temporary file, fsync, rename, directory fsync.
fn store_block_end(data_dir: &Path, end: i64) -> std::io::Result<()> {
    let path = path(data_dir);
    let tmp = data_dir.join(format!("producer-ids.{end}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    writeln!(file, "{end}")?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(data_dir)?.sync_all()
}

fn try_allocate(broker: &Broker) -> Result<i64, i64> {
    broker
        .producer_ids
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .allocate()
}

/// A new producer id. Reserving a new block writes a file, on the blocking pool; one
/// reservation at a time (every shard may ask), so the stored block end only grows.
async fn allocate(broker: &Arc<Broker>) -> std::io::Result<i64> {
    loop {
        if let Ok(id) = try_allocate(broker) {
            return Ok(id);
        }
        let _reserving = broker.producer_id_reservation.lock().await;
        // Another task may have reserved a block while this one waited.
        let wanted = match try_allocate(broker) {
            Ok(id) => return Ok(id),
            Err(end) => end,
        };
        let dir = broker.config.data_dir.clone();
        tokio::task::spawn_blocking(move || store_block_end(&dir, wanted))
            .await
            .map_err(std::io::Error::other)??;
        broker
            .producer_ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .block_stored(wanted);
    }
}

pub(crate) async fn init_producer_id(
    broker: &Arc<Broker>,
    request: InitProducerIdRequest,
) -> Response {
    let answer = |code, id, epoch| Response::InitProducerId(producer_id::response(code, id, epoch));
    if request.transactional_id.is_some() {
        // Transactions are not served yet: say so rather than hand out an id they would misuse.
        return answer(error_code::INVALID_REQUEST, NO_PRODUCER_ID, -1);
    }
    // Without a transactional id, Kafka hands out a new id every time, also to a producer that
    // names its current one (KIP-360): a new id has fresh sequences on every partition.
    match allocate(broker).await {
        Ok(id) => answer(error_code::NONE, id, 0),
        Err(e) => {
            eprintln!("weir: storing producer ids: {e}");
            answer(error_code::KAFKA_STORAGE_ERROR, NO_PRODUCER_ID, -1)
        }
    }
}
