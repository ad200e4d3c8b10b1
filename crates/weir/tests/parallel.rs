//! The parallel consumer against a real `weir serve`: a group of three member processes, one
//! SIGKILLed mid-run. Every record must be processed at least once, and each member must
//! process each key's records in offset order (checked from the members' processing logs).
//!
//! The members are this test binary run again as child processes (`parallel_member`, below,
//! does nothing unless WEIR_PARALLEL_MEMBER is set), so they are real processes to kill and
//! need no separate build.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Serve;
use weir_client::{Admin, Config, Message, ParallelConsumer, ParallelOptions, Producer, Record};

const TOPIC: &str = "parallel";
const PARTITIONS: i32 = 6;
const KEYS: u64 = 120;
const RECORDS: u64 = 30_000;
const WORK: Duration = Duration::from_millis(10);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs as a group member when WEIR_PARALLEL_MEMBER="bootstrap,log file" is set: processes
/// records with `WORK` of simulated I/O, logging `partition offset key` per record before it
/// counts as finished, until the file `<log>.stop` appears.
#[test]
#[ignore = "a child process of parallel_consumer_group_survives_a_killed_member"]
fn parallel_member() {
    let Ok(spec) = std::env::var("WEIR_PARALLEL_MEMBER") else {
        return;
    };
    let (bootstrap, log) = spec.split_once(',').expect("bootstrap,log");
    let log = PathBuf::from(log);
    let stop = log.with_extension("stop");
    let config = Config::new(bootstrap)
        .set("auto.offset.reset", "earliest")
        // A killed member's partitions move after this long (the smallest Kafka accepts).
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("log");
    let file = Arc::new(std::sync::Mutex::new(file));
    runtime().block_on(async move {
        let options = ParallelOptions {
            in_flight_max: 1_000,
            workers: 2,
            ..ParallelOptions::default()
        };
        let consumer = ParallelConsumer::subscribe(&config, "parallel-group", &[TOPIC], options)
            .await
            .expect("subscribe");
        let handler = move |m: Message| {
            let file = file.clone();
            async move {
                tokio::time::sleep(WORK).await;
                let key = String::from_utf8(m.key.unwrap_or_default()).expect("utf-8 key");
                let line = format!("{} {} {key}\n", m.partition, m.offset);
                use std::io::Write;
                file.lock()
                    .unwrap()
                    .write_all(line.as_bytes())
                    .expect("log write");
            }
        };
        let stopped = async move {
            while !stop.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let report = consumer.run(handler, stopped).await.expect("run");
        eprintln!("member done: {report:?}");
    });
}

/// Kills the members still running when the test ends, passed or failed.
struct Members(Vec<Child>);

impl Drop for Members {
    fn drop(&mut self) {
        for m in &mut self.0 {
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}

fn spawn_member(bootstrap: &str, log: &Path) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "parallel_member",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(
            "WEIR_PARALLEL_MEMBER",
            format!("{bootstrap},{}", log.display()),
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn member")
}

/// (partition, offset, key) per line; a line cut short by the kill is left out.
fn read_log(path: &Path) -> Vec<(i32, i64, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            let partition = parts.next().unwrap().parse().expect("partition");
            let offset = parts.next().expect("offset").parse().expect("offset");
            (partition, offset, parts.next().expect("key").to_string())
        })
        .collect()
}

#[test]
fn parallel_consumer_group_survives_a_killed_member() {
    let serve = Serve::start();
    let dir = serve.dir.join("parallel-logs");
    std::fs::create_dir_all(&dir).expect("log dir");
    let config = Config::new(serve.kafka.clone());
    // The records, and where each landed.
    let produced: BTreeMap<(i32, i64), String> = runtime().block_on(async {
        Admin::connect(&config)
            .await
            .expect("admin")
            .create_topic(TOPIC, PARTITIONS, &[])
            .await
            .expect("create");
        let producer = Producer::connect(&config).await.expect("producer");
        let mut pending = Vec::new();
        for i in 0..RECORDS {
            let key = format!("key-{}", i % KEYS);
            let value = i.to_string();
            let record = Record::new(TOPIC)
                .key(key.as_bytes())
                .value(value.as_bytes());
            let queued = producer.enqueue(&record).await.expect("enqueue");
            pending.push((key, queued));
        }
        let mut produced = BTreeMap::new();
        for (key, p) in pending {
            let d = p.await.expect("delivered");
            produced.insert((d.partition, d.offset), key);
        }
        produced
    });
    assert_eq!(produced.len() as u64, RECORDS);

    let logs: Vec<PathBuf> = (0..3)
        .map(|i| dir.join(format!("member-{i}.log")))
        .collect();
    let mut members = Members(logs.iter().map(|l| spawn_member(&serve.kafka, l)).collect());
    let members = &mut members.0;
    // Kill member 0 well into its share, after it has committed (every second).
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_log(&logs[0]).is_empty() {
        assert!(Instant::now() < deadline, "member 0 processed nothing");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(1_500));
    let _ = Command::new("kill")
        .args(["-KILL", &members[0].id().to_string()])
        .status();
    let _ = members[0].wait();
    let killed_at = read_log(&logs[0]).len();

    // The survivors take over its partitions once its session expires, and finish.
    let deadline = Instant::now() + Duration::from_secs(120);
    let seen = loop {
        let mut seen: HashSet<(i32, i64)> = HashSet::new();
        for log in &logs {
            seen.extend(read_log(log).into_iter().map(|(p, o, _)| (p, o)));
        }
        if produced.keys().all(|k| seen.contains(k)) {
            break seen;
        }
        if Instant::now() >= deadline {
            let missing: Vec<_> = produced.keys().filter(|k| !seen.contains(k)).collect();
            panic!(
                "only {} of {RECORDS} records processed; missing {} (partition, offset), first: {:?}",
                seen.len(),
                missing.len(),
                &missing[..missing.len().min(20)]
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for log in &logs[1..] {
        std::fs::write(log.with_extension("stop"), b"").expect("stop file");
    }
    for member in &mut members[1..] {
        let status = member.wait().expect("member");
        assert!(status.success(), "a surviving member exited with {status}");
    }

    // At least once, with the right keys.
    let mut times: HashMap<(i32, i64), usize> = HashMap::new();
    for (i, log) in logs.iter().enumerate() {
        let lines = read_log(log);
        // In order per key, within each member's run.
        let mut last: HashMap<&str, (i32, i64)> = HashMap::new();
        for (partition, offset, key) in &lines {
            assert_eq!(
                produced.get(&(*partition, *offset)),
                Some(key),
                "member {i} logged {partition}:{offset} with key {key}"
            );
            if let Some(&(p, o)) = last.get(key.as_str()) {
                assert!(
                    p == *partition && o < *offset,
                    "member {i}: key {key} ran {partition}:{offset} after {p}:{o}"
                );
            }
            last.insert(key, (*partition, *offset));
            *times.entry((*partition, *offset)).or_default() += 1;
        }
    }
    assert!(produced.keys().all(|k| seen.contains(k)));
    let again = times.values().filter(|&&n| n > 1).count();
    // The survivors resumed from member 0's commits, not from the beginning.
    assert!(
        again < killed_at,
        "{again} records ran twice of the {killed_at} member 0 processed"
    );
    eprintln!(
        "{RECORDS} records, {KEYS} keys, {PARTITIONS} partitions: member 0 killed after {killed_at}; \
         {again} records processed twice (after the last commit of the killed member)"
    );
    drop(serve);
}
