//! `weir produce TOPIC`: one record per input line, pipelined, in order.

use std::collections::{BTreeMap, VecDeque};
use std::io::BufRead;

use serde_json::json;
use weir_client::rdkafka::error::RDKafkaErrorCode;
use weir_client::{Delivered, Pending, Producer, Record};

use super::{block_on, number, pairs, Args, Failure, COMMON_FLAGS};

/// Records queued and not yet acknowledged before the next line waits for the oldest.
pub const IN_FLIGHT_MAX: usize = 10_000;

pub fn usage() -> String {
    format!(
        "usage: weir produce TOPIC [--key-separator SEP] [--header KEY=VALUE]... [--partition N]
                    [--file PATH]

  Reads one record value per line (any bytes but newline) from stdin, or from --file, and
  sends them in order.
  --key-separator  the text before the first SEP on each line is the record's key
  --header         a header on every record; repeatable
  --partition      send every record to this partition (default: by key, as Java does)
  --json           print {{\"partition\", \"offset\"}} of each record, one per line
{COMMON_FLAGS}"
    )
}

pub fn run(args: &[String]) -> Result<(), Failure> {
    let usage = usage();
    let a = Args::parse(
        args,
        &["--key-separator", "--header", "--partition", "--file"],
        &[],
        &usage,
    )?;
    let topic = match a.positional.as_slice() {
        [topic] => topic.clone(),
        [] => {
            return Err(Failure::Usage(format!(
                "weir produce needs a topic\n\n{usage}"
            )))
        }
        _ => {
            return Err(Failure::Usage(format!(
                "weir produce takes one topic\n\n{usage}"
            )))
        }
    };
    let headers = pairs("--header", &a.values("--header"), &usage)?;
    let separator = a.value("--key-separator").map(str::to_string);
    if separator.as_deref() == Some("") {
        return Err(Failure::Usage(format!(
            "--key-separator cannot be empty\n\n{usage}"
        )));
    }
    let partition: Option<i32> = a
        .value("--partition")
        .map(|v| number("--partition", v, &usage))
        .transpose()?;
    let input: Box<dyn BufRead> = match a.value("--file") {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .map_err(|e| Failure::Failed(format!("cannot read {path}: {e}")))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    block_on(async {
        let producer = Producer::connect(&a.config()).await?;
        let mut out = Output::new(a.json);
        let mut pending: VecDeque<Pending> = VecDeque::new();
        // Lines of bytes: a value need not be UTF-8.
        for (number, line) in input.split(b'\n').enumerate() {
            let line = match line {
                Ok(line) => line,
                Err(e) => {
                    // What was read before is still delivered, and counted.
                    out.finish(&mut pending).await?;
                    return Err(Failure::Failed(format!(
                        "reading line {}: {e}; {} record(s) before it were sent",
                        number + 1,
                        out.records
                    )));
                }
            };
            // A CRLF line ends like an LF one, as with Kafka's console producer.
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            let (key, value) = match &separator {
                None => (None, line),
                Some(sep) => match split_once(line, sep.as_bytes()) {
                    Some((key, value)) => (Some(key), value),
                    None => {
                        out.finish(&mut pending).await?;
                        return Err(Failure::Failed(format!(
                            "line {} has no key separator {sep:?}; {} record(s) before it were \
                             sent",
                            number + 1,
                            out.records
                        )));
                    }
                },
            };
            let mut record = Record::new(&topic).value(value);
            record.key = key;
            record.partition = partition;
            for (k, v) in &headers {
                record = record.header(k, v.as_bytes());
            }
            loop {
                if pending.len() >= IN_FLIGHT_MAX {
                    out.one(&mut pending).await?;
                }
                match producer.enqueue(&record).await {
                    Ok(p) => {
                        pending.push_back(p);
                        break;
                    }
                    Err(e) if e.error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                        if pending.is_empty() {
                            return Err(e.into());
                        }
                        out.one(&mut pending).await?;
                    }
                    Err(e) => {
                        out.finish(&mut pending).await?;
                        return Err(e.into());
                    }
                }
            }
        }
        out.finish(&mut pending).await?;
        if !a.json {
            let spread: Vec<String> = out
                .partitions
                .iter()
                .map(|(p, n)| format!("{p}:{n}"))
                .collect();
            eprintln!(
                "produced {} record(s) to {topic} (partition:records {})",
                out.records,
                spread.join(" ")
            );
        }
        Ok(())
    })
}

/// `line` split at the first `separator`.
fn split_once<'a>(line: &'a [u8], separator: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let at = line.windows(separator.len()).position(|w| w == separator)?;
    Some((&line[..at], &line[at + separator.len()..]))
}

/// Acknowledgements, awaited in input order.
struct Output {
    json: bool,
    records: u64,
    partitions: BTreeMap<i32, u64>,
}

impl Output {
    fn new(json: bool) -> Output {
        Output {
            json,
            records: 0,
            partitions: BTreeMap::new(),
        }
    }

    /// Awaits the oldest pending record.
    async fn one(&mut self, pending: &mut VecDeque<Pending>) -> Result<(), Failure> {
        if let Some(p) = pending.pop_front() {
            let Delivered { partition, offset } = p.await.map_err(|e| {
                Failure::Failed(format!(
                    "{e}; {} record(s) before it were acknowledged",
                    self.records
                ))
            })?;
            self.records += 1;
            *self.partitions.entry(partition).or_default() += 1;
            if self.json {
                println!("{}", json!({"partition": partition, "offset": offset}));
            }
        }
        Ok(())
    }

    async fn finish(&mut self, pending: &mut VecDeque<Pending>) -> Result<(), Failure> {
        while !pending.is_empty() {
            self.one(pending).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::split_once;

    #[test]
    fn keys_split_at_the_first_separator_of_any_bytes() {
        assert_eq!(
            split_once(b"k::v::w", b"::"),
            Some((&b"k"[..], &b"v::w"[..]))
        );
        assert_eq!(
            split_once(b"\xff|\xfe", b"|"),
            Some((&b"\xff"[..], &b"\xfe"[..]))
        );
        assert_eq!(split_once(b"no separator", b"|"), None);
        assert_eq!(split_once(b"|v", b"|"), Some((&b""[..], &b"v"[..])));
    }
}
