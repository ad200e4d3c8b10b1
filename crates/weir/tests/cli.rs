//! The `weir` client commands and the Rust client layer against a real `weir serve`: topics,
//! produce and consume, groups, exit codes; records crossing to and from confluent-kafka; keys
//! landing on the partitions Java's partitioner picks; a producer riding out a broker restart.

mod common;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{python, Serve};
use serde_json::Value;
use weir_client::{Admin, Config, Consumer, Pending, Producer, Record, Start};

/// Runs `weir ARGS` against `bootstrap` with `stdin`; returns (exit code, stdout, stderr).
fn weir(bootstrap: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env("WEIR_BOOTSTRAP", bootstrap)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("weir runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// `weir ARGS --json` that must succeed; its output parsed.
fn weir_json(bootstrap: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let (code, out, err) = weir(bootstrap, &args, "");
    assert_eq!(code, 0, "weir {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("weir {args:?} printed {out:?}: {e}"))
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn committed(group: &Value) -> Vec<(i64, i64, i64)> {
    let mut offsets: Vec<(i64, i64, i64)> = group["offsets"]
        .as_array()
        .expect("offsets")
        .iter()
        .map(|o| {
            let n = |k: &str| o[k].as_i64().expect("number");
            (n("partition"), n("committed"), n("lag"))
        })
        .collect();
    offsets.sort();
    offsets
}

#[test]
fn cli_manages_topics_produces_consumes_and_describes_groups() {
    let serve = Serve::start();
    let b = serve.kafka.as_str();

    // Topics.
    let (code, out, err) = weir(
        b,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=3600000",
        ],
        "",
    );
    assert_eq!(
        (code, out.trim()),
        (0, "created topic orders with 3 partition(s)"),
        "{err}"
    );
    let (code, _, err) = weir(b, &["topic", "create", "orders", "--partitions", "3"], "");
    assert_eq!(code, 1);
    assert!(
        err.contains("Topic already exists") && err.contains("choose another name"),
        "{err}"
    );
    let listed = weir_json(b, &["topic", "list"]);
    assert!(listed
        .as_array()
        .expect("list")
        .contains(&serde_json::json!({"name": "orders", "partitions": 3})));
    let (code, table, _) = weir(b, &["topic", "list"], "");
    assert_eq!(code, 0);
    assert!(table.starts_with("TOPIC"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().eq(["orders", "3"])),
        "{table}"
    );
    let described = weir_json(b, &["topic", "describe", "orders"]);
    assert_eq!(described["configs"]["retention.ms"], "3600000");
    assert_eq!(
        described["partitions"]
            .as_array()
            .expect("partitions")
            .len(),
        3
    );

    // Produce 100 keyed lines with a header; every record's place comes back in input order.
    let input: String = (0..100).map(|i| format!("k{}:v{i}\n", i % 7)).collect();
    let (code, out, err) = weir(
        b,
        &[
            "produce",
            "orders",
            "--key-separator",
            ":",
            "--header",
            "src=cli",
            "--json",
        ],
        &input,
    );
    assert_eq!(code, 0, "{err}");
    let placed = json_lines(&out);
    assert_eq!(placed.len(), 100);
    let mut next: HashMap<i64, i64> = HashMap::new();
    let mut key_partition: HashMap<String, i64> = HashMap::new();
    let mut expected: BTreeMap<(i64, i64), (String, String)> = BTreeMap::new();
    for (i, p) in placed.iter().enumerate() {
        let (partition, offset) = (
            p["partition"].as_i64().unwrap(),
            p["offset"].as_i64().unwrap(),
        );
        let at = next.entry(partition).or_insert(0);
        assert_eq!(offset, *at, "offsets within a partition follow input order");
        *at += 1;
        let key = format!("k{}", i % 7);
        assert_eq!(
            *key_partition.entry(key.clone()).or_insert(partition),
            partition
        );
        expected.insert((partition, offset), (key, format!("v{i}")));
    }

    // Read back: every field, by (partition, offset).
    let (code, out, err) = weir(
        b,
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--count",
            "100",
            "--format",
            "json",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let read = json_lines(&out);
    assert_eq!(read.len(), 100);
    for r in &read {
        let at = (
            r["partition"].as_i64().unwrap(),
            r["offset"].as_i64().unwrap(),
        );
        let (key, value) = &expected[&at];
        assert_eq!(r["key"], key.as_str());
        assert_eq!(r["value"], value.as_str());
        assert_eq!(r["topic"], "orders");
        assert_eq!(
            r["headers"],
            serde_json::json!([{"key": "src", "value": "cli"}])
        );
        assert!(r["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    }
    // Plain format: values one per line; --offset and an idle timeout end it.
    let (code, out, err) = weir(
        b,
        &["consume", "orders", "--offset", "0", "--timeout-ms", "2000"],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let mut values: Vec<&str> = out.lines().collect();
    values.sort();
    let mut want: Vec<&str> = expected.values().map(|(_, v)| v.as_str()).collect();
    want.sort();
    assert_eq!(values, want);

    // A group consumer commits what it printed.
    let (code, out, err) = weir(
        b,
        &[
            "consume",
            "orders",
            "--group",
            "g1",
            "--from-beginning",
            "--count",
            "100",
        ],
        "",
    );
    assert_eq!((code, out.lines().count()), (0, 100), "{err}");
    let groups = weir_json(b, &["group", "list"]);
    assert!(
        groups
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["group"] == "g1" && g["state"] == "Empty"),
        "{groups}"
    );
    let g1 = weir_json(b, &["group", "describe", "g1"]);
    let ends: Vec<(i64, i64, i64)> = (0..3).map(|p| (p, next[&p], 0)).collect();
    assert_eq!(committed(&g1), ends, "committed to the end, no lag");

    // A live member shows with its assignment.
    let mut member = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["consume", "orders", "--group", "g2", "--bootstrap", b])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn consumer");
    let deadline = Instant::now() + Duration::from_secs(30);
    let g2 = loop {
        let g2 = weir(b, &["group", "describe", "g2", "--json"], "");
        if let (0, out, _) = &g2 {
            let v: Value = serde_json::from_str(out).expect("json");
            if v["state"] == "Stable" && v["members"].as_array().is_some_and(|m| m.len() == 1) {
                break v;
            }
        }
        assert!(Instant::now() < deadline, "g2 never became stable: {g2:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        g2["members"][0]["assignment"],
        serde_json::json!([{"topic": "orders", "partitions": [0, 1, 2]}])
    );
    assert_eq!(g2["members"][0]["client_id"], "weir-cli");
    let (code, text, _) = weir(b, &["group", "describe", "g2"], "");
    assert_eq!(code, 0);
    assert!(
        text.contains("group g2 is Stable (1 member(s)") && text.contains("orders:0,1,2"),
        "{text}"
    );
    let (code, _, err) = weir(
        b,
        &[
            "group",
            "reset-offsets",
            "g2",
            "--topic",
            "orders",
            "--to-earliest",
        ],
        "",
    );
    assert_eq!(code, 1, "a group with members is not reset");
    assert!(err.contains("stop the group's consumers first"), "{err}");
    let _ = member.kill();
    let _ = member.wait();

    // Reset g1 to the start, then delete it.
    let reset = weir_json(
        b,
        &[
            "group",
            "reset-offsets",
            "g1",
            "--topic",
            "orders",
            "--to-earliest",
        ],
    );
    assert_eq!(reset["offsets"].as_array().unwrap().len(), 3);
    let g1 = weir_json(b, &["group", "describe", "g1"]);
    let starts: Vec<(i64, i64, i64)> = (0..3).map(|p| (p, 0, next[&p])).collect();
    assert_eq!(committed(&g1), starts);
    let (code, out, _) = weir(b, &["group", "delete", "g1"], "");
    assert_eq!((code, out.trim()), (0, "deleted group g1"));
    let groups = weir_json(b, &["group", "list"]);
    assert!(!groups
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["group"] == "g1"));

    // Alter keeps configs set before; partitions only grow.
    let (code, _, err) = weir(
        b,
        &[
            "topic",
            "alter",
            "orders",
            "--partitions",
            "4",
            "--config",
            "segment.bytes=1048576",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let described = weir_json(b, &["topic", "describe", "orders"]);
    assert_eq!(described["partitions"].as_array().unwrap().len(), 4);
    assert_eq!(described["configs"]["segment.bytes"], "1048576");
    assert_eq!(described["configs"]["retention.ms"], "3600000", "kept");
    let (code, _, err) = weir(b, &["topic", "alter", "orders", "--partitions", "2"], "");
    assert_eq!(code, 1);
    assert!(err.contains("can only grow"), "{err}");
    let (code, _, _) = weir(b, &["topic", "delete", "orders"], "");
    assert_eq!(code, 0);
    let (code, _, err) = weir(b, &["topic", "describe", "orders"], "");
    assert_eq!(code, 1);
    assert!(err.contains("weir topic create NAME"), "{err}");
}

#[test]
fn cli_bad_flags_exit_2_and_no_broker_fails_fast() {
    for bad in [
        &["consume"][..],
        &["topic", "create", "x", "--partitions", "many"],
        &["produce", "t", "--bogus"],
        &["group", "reset-offsets", "g", "--topic", "t"],
        &["consume", "t", "--group", "g", "--offset", "3"],
        &["consume", "t", "--format", "xml"],
        &["topic", "frobnicate"],
        &["topic"],
    ] {
        let (code, out, err) = weir("127.0.0.1:9", bad, "");
        assert_eq!(code, 2, "weir {bad:?}: {err}");
        assert!(out.is_empty());
        assert!(
            err.contains("usage: weir"),
            "weir {bad:?} gives a usage hint: {err}"
        );
    }
    let (code, out, _) = weir("127.0.0.1:9", &["produce", "--help"], "");
    assert_eq!(code, 0);
    assert!(out.starts_with("usage: weir produce TOPIC"));

    // Nothing listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let nobody = format!("127.0.0.1:{port}");
    for args in [
        &["topic", "list"][..],
        &["consume", "t"],
        &["group", "list"],
        &["produce", "t"],
    ] {
        let started = Instant::now();
        let (code, _, err) = weir(&nobody, args, "a line\n");
        assert_eq!(code, 1, "weir {args:?}");
        assert_eq!(
            err.trim().split_once(": ").map(|(_, e)| e),
            Some(
                format!("cannot reach {nobody}: connection refused — is `weir serve` running?")
                    .as_str()
            ),
            "weir {args:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "fails fast: {:?}",
            started.elapsed()
        );
    }
}

fn cross(python: &PathBuf, bootstrap: &str, args: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/cross.py");
    let out = Command::new(python)
        .arg(script)
        .arg(bootstrap)
        .args(args)
        .output()
        .expect("run cross.py");
    assert!(
        out.status.success(),
        "cross.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn cli_records_cross_to_and_from_confluent_and_keys_land_alike() {
    let Some(python) = python() else { return };
    let serve = Serve::start();
    let b = serve.kafka.as_str();
    for topic in ["from-weir", "from-confluent", "keys"] {
        let (code, _, err) = weir(b, &["topic", "create", topic, "--partitions", "5"], "");
        assert_eq!(code, 0, "{err}");
    }

    // Weir → confluent-kafka.
    let input: String = (0..200)
        .map(|i| format!("key-{}|value {i} ✓\n", i % 13))
        .collect();
    let (code, out, err) = weir(
        b,
        &[
            "produce",
            "from-weir",
            "--key-separator",
            "|",
            "--header",
            "origin=weir",
            "--json",
        ],
        &input,
    );
    assert_eq!(code, 0, "{err}");
    let placed = json_lines(&out);
    let mut read: Vec<Value> = json_lines(&cross(&python, b, &["read", "from-weir", "200"]));
    read.sort_by_key(|r| (r["partition"].as_i64(), r["offset"].as_i64()));
    let mut want: Vec<(i64, i64, String, String)> = placed
        .iter()
        .zip(input.lines())
        .map(|(p, line)| {
            let (key, value) = line.split_once('|').unwrap();
            (
                p["partition"].as_i64().unwrap(),
                p["offset"].as_i64().unwrap(),
                key.into(),
                value.into(),
            )
        })
        .collect();
    want.sort();
    assert_eq!(read.len(), want.len());
    for (r, (partition, offset, key, value)) in read.iter().zip(&want) {
        assert_eq!(
            (r["partition"].as_i64(), r["offset"].as_i64()),
            (Some(*partition), Some(*offset))
        );
        assert_eq!(
            (&r["key"], &r["value"]),
            (&Value::from(key.as_str()), &Value::from(value.as_str()))
        );
        assert_eq!(
            r["headers"],
            serde_json::json!([{"key": "origin", "value": "weir"}])
        );
    }

    // confluent-kafka → Weir, including values that are not UTF-8.
    let produced: Vec<Value> =
        json_lines(&cross(&python, b, &["produce", "from-confluent", "150"]));
    let (code, out, err) = weir(
        b,
        &[
            "consume",
            "from-confluent",
            "--from-beginning",
            "--count",
            "150",
            "--format",
            "json",
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let mut consumed = json_lines(&out);
    let order = |v: &Value| (v["partition"].as_i64(), v["offset"].as_i64());
    consumed.sort_by_key(order);
    let mut produced = produced;
    produced.sort_by_key(order);
    assert_eq!(consumed.len(), produced.len());
    for (c, p) in consumed.iter().zip(&produced) {
        assert_eq!(c, p, "every field identical");
    }
    assert!(consumed.iter().any(|r| r["value"].get("base64").is_some()));

    // The same keys land on the same partitions: Weir (librdkafka murmur2_random),
    // confluent-kafka with partitioner=murmur2_random, and kafka-python's Java-compatible default.
    let keys: Vec<String> = (0..40).map(|i| format!("customer-{i}")).collect();
    let input: String = keys.iter().map(|k| format!("{k}:x\n")).collect();
    let (code, out, err) = weir(
        b,
        &["produce", "keys", "--key-separator", ":", "--json"],
        &input,
    );
    assert_eq!(code, 0, "{err}");
    let weir_partitions: Vec<i64> = json_lines(&out)
        .iter()
        .map(|p| p["partition"].as_i64().unwrap())
        .collect();
    let mut args = vec!["partitions", "keys"];
    args.extend(keys.iter().map(String::as_str));
    let others: Value = serde_json::from_str(&cross(&python, b, &args)).expect("json");
    for (key, weir_partition) in keys.iter().zip(&weir_partitions) {
        assert_eq!(
            others[key],
            serde_json::json!([weir_partition, weir_partition]),
            "key {key}"
        );
    }
    let spread: std::collections::HashSet<&i64> = weir_partitions.iter().collect();
    assert!(spread.len() >= 4, "40 keys over 5 partitions: {spread:?}");
}

#[test]
fn client_producer_rides_out_a_broker_restart_without_loss_or_duplicates() {
    const N: u64 = 20_000;
    let serve = Serve::start();
    let bootstrap = serve.kafka.clone();
    let acked = Arc::new(AtomicU64::new(0));
    // Kill the broker a quarter of the way in and start it again on the same port.
    let restarter = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            while acked.load(Ordering::Relaxed) < N / 4 {
                std::thread::sleep(Duration::from_millis(5));
            }
            serve.restart_same_port("KILL")
        })
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = Config::new(bootstrap.clone());
    let deliveries: Vec<(u64, i32, i64)> = runtime.block_on(async {
        Admin::connect(&config)
            .await
            .expect("admin")
            .create_topic("restart", 3, &[])
            .await
            .expect("create");
        let producer = Producer::connect(&config).await.expect("producer");
        let mut pending: VecDeque<(u64, Pending)> = VecDeque::new();
        let mut out = Vec::new();
        for i in 0..N {
            let (key, value) = (format!("k{}", i % 50), i.to_string());
            let record = Record::new("restart")
                .key(key.as_bytes())
                .value(value.as_bytes());
            pending.push_back((i, producer.enqueue(&record).await.expect("queued")));
            // Paced, so the restart lands mid-stream.
            if pending.len() >= 200 || i % 50 == 0 {
                let (i, p) = pending.pop_front().expect("pending");
                let d = p.await.expect("acknowledged despite the restart");
                out.push((i, d.partition, d.offset));
                acked.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        for (i, p) in pending {
            let d = p.await.expect("acknowledged despite the restart");
            out.push((i, d.partition, d.offset));
        }
        out
    });
    let serve = restarter.join().expect("restarted");
    assert_eq!(serve.kafka, bootstrap);
    // Read everything back: each record once, where its acknowledgement said.
    let stored: BTreeMap<(i32, i64), u64> = runtime.block_on(async {
        let consumer = Consumer::assign(&config, "restart", Start::Beginning)
            .await
            .expect("consumer");
        let mut stored = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while (stored.len() as u64) < N {
            assert!(Instant::now() < deadline, "read {} of {N}", stored.len());
            let Some(m) = consumer
                .recv_timeout(Duration::from_secs(5))
                .await
                .expect("recv")
            else {
                continue;
            };
            let value: u64 = String::from_utf8(m.value.expect("value"))
                .unwrap()
                .parse()
                .unwrap();
            assert!(stored.insert((m.partition, m.offset), value).is_none());
        }
        // Nothing beyond N: no duplicates.
        let extra = consumer
            .recv_timeout(Duration::from_secs(2))
            .await
            .expect("recv");
        assert_eq!(extra, None, "a record beyond the {N} sent");
        stored
    });
    let mut seen = vec![false; N as usize];
    for (i, partition, offset) in deliveries {
        assert_eq!(
            stored.get(&(partition, offset)),
            Some(&i),
            "record {i} at its acknowledged place"
        );
        assert!(
            !std::mem::replace(&mut seen[i as usize], true),
            "record {i} twice"
        );
    }
    assert!(seen.iter().all(|s| *s));
}

#[test]
fn bench_library_modes_and_e2e_report_what_they_moved() {
    let serve = Serve::start();
    let b = serve.kafka.as_str();
    let produced = weir_json(
        b,
        &[
            "bench",
            "produce",
            "--topic",
            "lb",
            "--partitions",
            "3",
            "--count",
            "20000",
            "--keys",
            "100",
            "--acks",
            "-1",
        ],
    );
    assert_eq!(produced["mode"], "library");
    assert_eq!(
        (produced["records"].as_u64(), produced["errors"].as_u64()),
        (Some(20_000), Some(0))
    );
    assert_eq!(produced["latency_samples"], 20_000);
    // The topic holds exactly what was acknowledged, spread by the 100 keys.
    let described = weir_json(b, &["topic", "describe", "lb"]);
    let ends: Vec<i64> = described["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["latest"].as_i64().unwrap())
        .collect();
    assert_eq!(ends.iter().sum::<i64>(), 20_000);
    assert!(ends.iter().all(|n| *n > 0), "{ends:?}");

    let consumed = weir_json(
        b,
        &["bench", "consume", "--topic", "lb", "--consumers", "2"],
    );
    assert_eq!(
        (consumed["mode"].as_str(), consumed["records"].as_u64()),
        (Some("library"), Some(20_000))
    );
    assert_eq!(consumed["bytes"], 20_000 * 100);

    let e2e = weir_json(
        b,
        &[
            "bench", "e2e", "--topic", "lb", "--count", "5000", "--rate", "20000",
        ],
    );
    assert_eq!(
        (e2e["records"].as_u64(), e2e["received"].as_u64()),
        (Some(5000), Some(5000))
    );
    assert_eq!(e2e["latency_samples"], 5000);
    let p50 = e2e["latency_ms"]["p50"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 < 5000.0, "{e2e}");
    let (code, _, err) = weir(b, &["bench", "e2e", "--lean"], "");
    assert_eq!(code, 2, "{err}");
}

#[test]
fn bench_draws_a_progress_bar_on_a_terminal_only() {
    // `script` (util-linux) gives the bench a pseudo-terminal.
    if Command::new("script").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "no `script` command"
        );
        eprintln!("SKIPPED: no `script` command");
        return;
    }
    let serve = Serve::start();
    let bench = format!(
        "{} bench produce --bootstrap {} --topic tty --count 20000 --rate 20000",
        env!("CARGO_BIN_EXE_weir"),
        serve.kafka
    );
    let out = Command::new("script")
        .args(["-qec", &bench, "/dev/null"])
        .output()
        .expect("script runs");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("produce [#"),
        "a bar on the terminal: {shown:?}"
    );
    assert!(shown.contains("records/s"), "{shown:?}");
    // Not on a pipe: the report alone.
    let (code, piped, err) = weir(
        &serve.kafka,
        &["bench", "produce", "--topic", "tty", "--count", "2000"],
        "",
    );
    assert_eq!(code, 0);
    assert!(
        piped.starts_with("weir bench produce (library): 2000 records"),
        "{piped}"
    );
    assert!(!err.contains('#'), "{err:?}");
}

#[test]
fn client_breaker_fails_fast_while_the_broker_is_gone_and_probes_back() {
    use weir_client::breaker::BreakerConfig;
    let serve = Serve::start();
    let mut config = Config::new(serve.kafka.clone());
    config.breaker = BreakerConfig {
        grace: Duration::from_millis(500),
        open_for: Duration::from_millis(300),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let producer = runtime
        .block_on(Producer::connect(&config))
        .expect("producer");
    let record = |v: &'static str| Record::new("breaker").key(b"k").value(v.as_bytes());
    runtime
        .block_on(producer.send(&record("before")))
        .expect("sent");

    let (dir, kafka) = serve.kill_keep();
    // Records queue during the grace; then calls fail at once, naming the cause.
    let lost_at = Instant::now();
    let mut queued = Vec::new();
    let refused = runtime.block_on(async {
        loop {
            assert!(
                lost_at.elapsed() < Duration::from_secs(15),
                "the breaker never opened"
            );
            match producer.enqueue(&record("during")).await {
                Ok(pending) => queued.push(pending),
                Err(e) => break e,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert!(
        matches!(refused, weir_client::Error::Unreachable { .. }),
        "{refused}"
    );
    assert_eq!(
        refused.to_string(),
        format!("cannot reach {kafka}: connection refused — is `weir serve` running?")
    );
    assert!(
        !queued.is_empty(),
        "sends within the grace are queued, not refused"
    );
    let started = Instant::now();
    let again = runtime.block_on(producer.enqueue(&record("fast")));
    assert!(
        again.is_err() && started.elapsed() < Duration::from_millis(100),
        "fails fast"
    );

    // Back on the same port: a probe closes the breaker; the queued records arrive too.
    let serve = Serve::start_in(dir, &["--kafka-listen", &kafka]);
    let delivered = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(15);
        let after = loop {
            assert!(Instant::now() < deadline, "the breaker never closed");
            match producer.enqueue(&record("after")).await {
                Ok(pending) => break pending,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let mut offsets = Vec::new();
        for pending in queued {
            offsets.push(pending.await.expect("queued record delivered").offset);
        }
        offsets.push(after.await.expect("delivered after recovery").offset);
        offsets
    });
    let expected: Vec<i64> = (1..=delivered.len() as i64).collect();
    assert_eq!(
        delivered, expected,
        "one partition, in order, after the record sent before"
    );
    drop(serve);
}
