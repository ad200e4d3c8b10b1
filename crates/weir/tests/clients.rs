//! Real Kafka clients against a real `weir serve`: confluent-kafka (librdkafka), kafka-python
//! and aiokafka produce keyed records with headers and timestamps and read them back by
//! assignment (tests/clients/roundtrip.py checks every field and contiguous offsets); kafkajs
//! creates a topic, produces, lists offsets and reads everything back with a group consumer
//! (tests/clients/kafkajs.js). Consumer groups with every client, and committed offsets across
//! broker restarts: tests/clients/groups.py.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{python, Serve};

/// Runs tests/clients/groups.py in `mode` and checks it printed `expect`; returns its output.
fn groups(python: &PathBuf, serve: &Serve, args: &[&str], expect: &str) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/groups.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(&serve.kafka)
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && stdout.contains(expect),
        "groups.py {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn confluent_group_members_share_partitions_and_take_over_from_a_killed_one() {
    let Some(python) = python() else { return };
    let serve = Serve::start();
    let out = groups(&python, &serve, &["three-members"], "OK three-members");
    eprint!("{out}");
    groups(&python, &serve, &["cooperative"], "OK cooperative");
}

#[test]
fn kafka_python_and_aiokafka_group_consumers_consume_and_commit() {
    let Some(python) = python() else { return };
    let serve = Serve::start();
    groups(
        &python,
        &serve,
        &["kafka-python"],
        "OK kafka-python group 40",
    );
    groups(&python, &serve, &["aiokafka"], "OK aiokafka group 40");
}

#[test]
fn group_admin_lists_describes_and_deletes_groups_and_offsets() {
    let Some(python) = python() else { return };
    let serve = Serve::start();
    groups(&python, &serve, &["admin"], "OK admin");
}

#[test]
fn committed_offsets_survive_sigterm_and_sigkill() {
    let Some(python) = python() else { return };
    let serve = Serve::start();
    groups(
        &python,
        &serve,
        &["commit", "g-restart", "t-restart", "37"],
        "OK commit",
    );
    let serve = serve.restart("TERM");
    groups(
        &python,
        &serve,
        &["committed", "g-restart", "t-restart", "37"],
        "OK committed g-restart 37",
    );
    // A commit is acknowledged only once it is on disk: SIGKILL right after it loses nothing.
    groups(
        &python,
        &serve,
        &["commit", "g-restart", "t-restart", "45"],
        "OK commit",
    );
    let serve = serve.restart("KILL");
    groups(
        &python,
        &serve,
        &["committed", "g-restart", "t-restart", "45"],
        "OK committed g-restart 45",
    );
}

#[test]
fn python_clients_round_trip_records() {
    let Some(python) = python() else { return };
    let serve = Serve::start();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/roundtrip.py");
    let cases = [
        ("confluent", "none"),
        ("confluent", "gzip"),
        ("confluent", "snappy"),
        ("confluent", "lz4"),
        ("confluent", "zstd"),
        ("kafka-python", "none"),
        ("kafka-python", "gzip"),
        ("aiokafka", "none"),
        ("aiokafka", "gzip"),
    ];
    for (client, codec) in cases {
        let out = Command::new(&python)
            .arg(&script)
            .args([serve.kafka.as_str(), client, codec])
            .output()
            .expect("run python");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(&format!("OK {client} {codec} 300")),
            "{client} {codec}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn confluent_admin_configs_and_delete_records() {
    let Some(python) = python() else { return };
    let serve = Serve::start();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/roundtrip.py");
    let out = Command::new(&python)
        .arg(&script)
        .args([serve.kafka.as_str(), "confluent-admin"])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK confluent-admin"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kafkajs_creates_produces_and_lists_offsets() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients");
    if !common::installed(root.join("node_modules/kafkajs").exists(), "kafkajs") {
        return;
    }
    let serve = Serve::start();
    let out = Command::new("node")
        .arg(root.join("kafkajs.js"))
        .arg(&serve.kafka)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK kafkajs 200"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn idempotent_producer_delivers_exactly_once_through_a_faulty_proxy() {
    let Some(python) = python() else { return };
    // The broker advertises the proxy's port, so every client connection goes through it.
    let proxy_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = std::env::temp_dir().join(format!("weir-clients-eos-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let advertised = format!("127.0.0.1:{proxy_port}");
    let serve = Serve::start_in(dir, &["--advertised-listener", &advertised]);
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/exactly_once.py");
    let out = Command::new(&python)
        .arg(&script)
        .args([&proxy_port.to_string(), serve.kafka.as_str(), "200000"])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK exactly-once 200000 records"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{stdout}");
}

#[test]
fn a_client_over_its_produce_quota_is_throttled_to_it_and_others_are_not() {
    let Some(python) = python() else { return };
    let dir = std::env::temp_dir().join(format!("weir-quota-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("weir.toml");
    std::fs::write(
        &config,
        "[client_quotas.limited]\nproducer_byte_rate = 1000000\n",
    )
    .expect("config");
    let serve = Serve::start_in(
        dir.join("data"),
        &["--config", config.to_str().expect("utf-8 path")],
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/quota.py");
    let out = Command::new(&python)
        .arg(&script)
        .args([serve.kafka.as_str(), "quota", "20"])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "quota.py: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json");
    eprintln!("{results}");
    let limited = &results["limited"];
    let rate = limited["bytes_per_s"].as_f64().expect("rate");
    assert!(
        (0.85e6..=1.15e6).contains(&rate),
        "the limited client got {rate:.0} B/s against a quota of 1,000,000"
    );
    assert!(limited["throttle_events"].as_u64().expect("events") > 0);
    let free = &results["free"];
    assert_eq!(free["throttle_events"].as_u64(), Some(0), "{free}");
    let free_rate = free["bytes_per_s"].as_f64().expect("rate");
    assert!(
        free_rate > 0.85 * 20e6,
        "the unlimited client got {free_rate:.0} B/s of the 20 MB/s it offered"
    );
    let metrics = common::metrics(&serve);
    assert!(
        metrics.contains(
            "weir_client_throttle_seconds_total{client_id=\"limited\",quota=\"produce\"}"
        ),
        "{metrics}"
    );
    assert!(!metrics.contains("client_id=\"free\""));
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
}
