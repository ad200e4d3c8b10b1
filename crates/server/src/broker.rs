//! What every shard shares: settings, identity, metrics. Topics and partitions arrive with the
//! produce/fetch increment.

use std::path::Path;

use weir_kafka::metadata::{self, MetadataRequest, Node, TopicInfo};
use weir_kafka::Response;

use crate::config::ServerConfig;
use crate::metrics::Metrics;

/// Kafka's UNKNOWN_TOPIC_OR_PARTITION.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

pub(crate) struct Broker {
    pub config: ServerConfig,
    pub node: Node,
    pub cluster_id: String,
    pub metrics: Metrics,
}

impl Broker {
    pub fn metadata(&self, request: &MetadataRequest) -> Response {
        let topics: Vec<TopicInfo> = request
            .topics
            .iter()
            .flatten()
            .map(|t| TopicInfo {
                name: t.name.clone().unwrap_or_default(),
                topic_id: t.topic_id,
                error_code: UNKNOWN_TOPIC_OR_PARTITION,
                partitions: Vec::new(),
            })
            .collect();
        Response::Metadata(metadata::response(&self.node, &self.cluster_id, &topics))
    }
}

/// The cluster id: made once, kept in `<data_dir>/cluster.id` (22 characters of URL-safe
/// base64 of 16 random bytes, as Kafka's are).
pub(crate) fn cluster_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("cluster.id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut random = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut random)?;
    let id = base64url(&random);
    let tmp = data_dir.join("cluster.id.tmp");
    std::fs::write(&tmp, &id)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(id)
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    let mut bits = 0u32;
    let mut n = 0;
    for &b in bytes {
        bits = (bits << 8) | u32::from(b);
        n += 8;
        while n >= 6 {
            n -= 6;
            out.push(ALPHABET[((bits >> n) & 63) as usize] as char);
        }
    }
    if n > 0 {
        out.push(ALPHABET[((bits << (6 - n)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64url_of_16_bytes_is_22_characters() {
        let id = super::base64url(&[0xff; 16]);
        assert_eq!(id.len(), 22);
        assert_eq!(&id[..4], "____");
        assert_eq!(super::base64url(&[0, 0, 0]), "AAAA");
    }
}
