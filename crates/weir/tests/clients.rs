//! Real Kafka clients against a real `weir serve`: confluent-kafka (librdkafka), kafka-python
//! and aiokafka produce keyed records with headers and timestamps and read them back by
//! assignment (tests/clients/roundtrip.py checks every field and contiguous offsets); kafkajs
//! creates a topic, produces and lists offsets (tests/clients/kafkajs.js).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn python() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    if python.exists() {
        return Some(python);
    }
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "no .venv: scripts/test installs the Python clients"
    );
    eprintln!("SKIPPED: no .venv (scripts/test installs the Python clients)");
    None
}

struct Serve {
    child: std::process::Child,
    kafka: String,
    dir: PathBuf,
}

impl Serve {
    fn start() -> Serve {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weir-clients-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args([
                "serve",
                "--kafka-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(&dir)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn weir serve");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let kafka = loop {
            assert!(Instant::now() < deadline, "no listening line");
            let line = lines.next().expect("weir exited").expect("read");
            if let Some(addr) = line.strip_prefix("weir: kafka listening on ") {
                break addr.to_string();
            }
        };
        // Keep draining stderr so the broker never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Serve { child, kafka, dir }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
    if !root.join("node_modules/kafkajs").exists() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "no kafkajs: scripts/test installs it"
        );
        eprintln!("SKIPPED: kafkajs not installed (scripts/test installs it)");
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
