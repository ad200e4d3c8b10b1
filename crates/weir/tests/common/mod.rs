//! What the client test files share: the Python venv and a `weir serve` child process.
#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether a client the test needs is `present`; under CI=true its absence fails the test
/// instead of skipping it (scripts/test installs every one).
pub fn installed(present: bool, what: &str) -> bool {
    if !present {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "{what} missing: scripts/test installs it"
        );
        eprintln!("SKIPPED: {what} missing (scripts/test installs it)");
    }
    present
}

pub fn python() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    installed(python.exists(), "the Python clients' .venv").then_some(python)
}

/// The broker's `/metrics` text.
pub fn metrics(serve: &Serve) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(&serve.http).expect("http");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").expect("get");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("metrics");
    text
}

/// A config file for `weir serve --config`, removed when dropped.
pub struct ConfigFile(pub PathBuf);

impl ConfigFile {
    pub fn new(name: &str, settings: &str) -> ConfigFile {
        let path = std::env::temp_dir().join(format!("weir-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, settings).expect("config file");
        ConfigFile(path)
    }

    pub fn args(&self) -> [&str; 2] {
        ["--config", self.0.to_str().expect("utf-8 path")]
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Whether kcat is installed; under CI=true its absence fails the test instead.
pub fn kcat_available() -> bool {
    installed(Command::new("kcat").arg("-V").output().is_ok(), "kcat")
}

/// Reads what the socket has onto `buf`; false at end of stream or on an error (a timeout).
pub fn read_more(stream: &mut std::net::TcpStream, buf: &mut Vec<u8>) -> bool {
    use std::io::Read;
    let mut chunk = [0u8; 65536];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// A process's resident memory, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .expect("VmRSS")
}

pub struct Serve {
    pub child: std::process::Child,
    pub kafka: String,
    /// The HTTP listener (`/health`, `/metrics`).
    pub http: String,
    pub dir: PathBuf,
    /// Keep the data directory when dropped (a restart follows).
    keep: bool,
}

impl Serve {
    pub fn start() -> Serve {
        Serve::start_in(Serve::fresh_dir(), &[])
    }

    /// A broker on a fresh data directory that reads `config`.
    pub fn start_with(config: &ConfigFile) -> Serve {
        Serve::start_in(Serve::fresh_dir(), &config.args())
    }

    fn fresh_dir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weir-clients-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Stops the broker with `signal` (TERM or KILL) and starts it again on the same data.
    pub fn restart(self, signal: &str) -> Serve {
        self.restart_with(signal, &[])
    }

    /// Restarts on the same Kafka port, so clients that know only that address reconnect.
    pub fn restart_same_port(self, signal: &str) -> Serve {
        let listen = self.kafka.clone();
        self.restart_with(signal, &["--kafka-listen", &listen])
    }

    fn restart_with(mut self, signal: &str, extra: &[&str]) -> Serve {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        let status = self.child.wait().expect("wait");
        if signal == "TERM" {
            assert!(
                status.success(),
                "weir serve exited with {status} on SIGTERM"
            );
        }
        self.keep = true;
        Serve::start_in(self.dir.clone(), extra)
    }

    /// Kills the broker; returns its data directory and Kafka address for a later start.
    pub fn kill_keep(mut self) -> (PathBuf, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.keep = true;
        (self.dir.clone(), self.kafka.clone())
    }

    pub fn start_in(dir: PathBuf, extra: &[&str]) -> Serve {
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
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn weir serve");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut kafka, mut http) = (None, None);
        while kafka.is_none() || http.is_none() {
            assert!(Instant::now() < deadline, "no listening lines");
            let line = lines.next().expect("weir exited").expect("read");
            if let Some(addr) = line.strip_prefix("weir: kafka listening on ") {
                kafka = Some(addr.to_string());
            }
            if let Some(addr) = line.strip_prefix("weir: http listening on ") {
                http = Some(addr.to_string());
            }
        }
        let (kafka, http) = (kafka.expect("kafka"), http.expect("http"));
        // Keep draining stderr so the broker never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Serve {
            child,
            kafka,
            http,
            dir,
            keep: false,
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
