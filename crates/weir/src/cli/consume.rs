//! `weir consume TOPIC`: print records as they arrive, from a chosen start or as a group member.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::json;
use weir_client::{Consumer, Message, Start};

use super::{block_on, bytes_json, number, Args, Failure, COMMON_FLAGS};

/// How often a group consumer commits what it has printed.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

pub fn usage() -> String {
    format!(
        "usage: weir consume TOPIC [--from-beginning | --offset N | --time MILLIS] [--group GROUP]
                    [--count N] [--timeout-ms MS] [--format plain|json]

  Prints each record's value on its own line (--format json: one object per record with
  topic, partition, offset, timestamp, key, value and headers).
  --from-beginning  start at the earliest offset (default: only new records)
  --offset N        start at offset N of every partition (not with --group)
  --time MILLIS     start at the first record at or after MILLIS since the epoch (not with --group)
  --group GROUP     consume as a member of GROUP, resuming from its committed offsets and
                    committing what was printed
  --count N         stop after N records
  --timeout-ms MS   stop when no record arrives for MS milliseconds
{COMMON_FLAGS}"
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Plain,
    Json,
}

pub fn run(args: &[String]) -> Result<(), Failure> {
    let usage = usage();
    let a = Args::parse(
        args,
        &[
            "--offset",
            "--time",
            "--group",
            "--count",
            "--timeout-ms",
            "--format",
        ],
        &["--from-beginning"],
        &usage,
    )?;
    let bad = |m: &str| Failure::Usage(format!("{m}\n\n{usage}"));
    let topic = match a.positional.as_slice() {
        [topic] => topic.clone(),
        [] => return Err(bad("weir consume needs a topic")),
        _ => return Err(bad("weir consume takes one topic")),
    };
    let mut starts = Vec::new();
    if a.switch("--from-beginning") {
        starts.push(Start::Beginning);
    }
    if let Some(v) = a.value("--offset") {
        starts.push(Start::Offset(number("--offset", v, &usage)?));
    }
    if let Some(v) = a.value("--time") {
        starts.push(Start::Time(number("--time", v, &usage)?));
    }
    if starts.len() > 1 {
        return Err(bad("choose one of --from-beginning, --offset, --time"));
    }
    let group = a.value("--group").map(str::to_string);
    if group.is_some() && matches!(starts.first(), Some(Start::Offset(_) | Start::Time(_))) {
        return Err(bad(
            "--offset and --time read outside a group; a group resumes from its committed \
             offsets (move them with `weir group reset-offsets`)",
        ));
    }
    let count: Option<u64> = a
        .value("--count")
        .map(|v| number("--count", v, &usage))
        .transpose()?;
    let idle: Option<u64> = a
        .value("--timeout-ms")
        .map(|v| number("--timeout-ms", v, &usage))
        .transpose()?;
    let format = match a.value("--format") {
        None | Some("plain") => Format::Plain,
        Some("json") => Format::Json,
        Some(other) => return Err(bad(&format!("--format is plain or json, not {other:?}"))),
    };
    let format = if a.json { Format::Json } else { format };
    block_on(async {
        let mut config = a.config();
        let consumer = match &group {
            Some(group) => {
                if starts.first() == Some(&Start::Beginning) {
                    config = config.set("auto.offset.reset", "earliest");
                }
                Consumer::subscribe(&config, group, &[&topic]).await?
            }
            None => {
                let start = starts.first().copied().unwrap_or(Start::End);
                Consumer::assign(&config, &topic, start).await?
            }
        };
        let mut to_commit: BTreeMap<i32, i64> = BTreeMap::new();
        let mut last_commit = Instant::now();
        let mut printed = 0u64;
        let stdout = std::io::stdout();
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        let outcome: Result<(), Failure> = loop {
            if count.is_some_and(|c| printed >= c) {
                break Ok(());
            }
            let wait = idle.map_or(Duration::from_secs(3600), Duration::from_millis);
            let next = tokio::select! {
                next = consumer.recv_timeout(wait) => next,
                _ = &mut interrupted => break Ok(()),
            };
            let message = match next {
                Ok(Some(m)) => m,
                Ok(None) if idle.is_some() => break Ok(()),
                Ok(None) => continue,
                Err(e) if e.is_retriable() => continue,
                Err(e) => break Err(e.into()),
            };
            let mut out = stdout.lock();
            let written = match format {
                Format::Plain => {
                    let value = message.value.as_deref().unwrap_or_default();
                    out.write_all(value).and_then(|_| out.write_all(b"\n"))
                }
                Format::Json => writeln!(out, "{}", message_json(&message)),
            };
            // A closed pipe (`| head`) ends the command quietly.
            if written.and_then(|_| out.flush()).is_err() {
                break Ok(());
            }
            drop(out);
            printed += 1;
            if group.is_some() {
                to_commit.insert(message.partition, message.offset + 1);
                if last_commit.elapsed() >= COMMIT_INTERVAL {
                    // A failed periodic commit (a rebalance, a coordinator moving) keeps its
                    // offsets for the next one; only the final commit fails the command.
                    let _ = commit(&consumer, &topic, &mut to_commit).await;
                    last_commit = Instant::now();
                }
            }
        };
        if group.is_some() {
            commit(&consumer, &topic, &mut to_commit).await?;
        }
        outcome
    })
}

async fn commit(
    consumer: &Consumer,
    topic: &str,
    offsets: &mut BTreeMap<i32, i64>,
) -> Result<(), Failure> {
    if offsets.is_empty() {
        return Ok(());
    }
    let list: Vec<(String, i32, i64)> = offsets
        .iter()
        .map(|(p, o)| (topic.to_string(), *p, *o))
        .collect();
    consumer.commit_offsets(&list).await?;
    offsets.clear();
    Ok(())
}

fn message_json(m: &Message) -> serde_json::Value {
    let headers: Vec<_> = m
        .headers
        .iter()
        .map(|(k, v)| json!({"key": k, "value": bytes_json(v)}))
        .collect();
    json!({
        "topic": m.topic,
        "partition": m.partition,
        "offset": m.offset,
        "timestamp": m.timestamp,
        "key": m.key.as_deref().map(bytes_json),
        "value": m.value.as_deref().map(bytes_json),
        "headers": headers,
    })
}
