//! What every client handle shares: the breaker, fed by librdkafka's error callback, and the
//! connect / admit steps built on it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientConfig;

use crate::breaker::{Admit, Breaker};
use crate::error::{transport_cause, Error, Result};
use crate::Config;

/// How often `connect` looks at the breaker while the first metadata request is out.
const CONNECT_POLL: Duration = Duration::from_millis(10);

pub(crate) struct Shared {
    pub bootstrap: String,
    /// How long one TCP connect to a bootstrap address may take.
    connect_timeout: Duration,
    breaker: Mutex<Breaker>,
}

impl Shared {
    fn breaker(&self) -> MutexGuard<'_, Breaker> {
        // A poisoned lock only means a panic elsewhere mid-update; the state is still usable.
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn succeeded(&self) {
        self.breaker().succeeded();
    }

    fn unreachable(&self, cause: String) -> Error {
        Error::Unreachable {
            bootstrap: self.bootstrap.clone(),
            cause,
        }
    }

    /// Lets a call through, fails it fast while the breaker is open, or runs the probe that
    /// decides whether the breaker closes.
    pub async fn admit(&self, probe: impl FnOnce() -> Result<()> + Send + 'static) -> Result<()> {
        let admit = self.breaker().admit(Instant::now());
        match admit {
            Admit::Pass => Ok(()),
            Admit::Reject(cause) => Err(self.unreachable(cause)),
            Admit::Probe => {
                // A caller that drops this future mid-probe must not leave the breaker
                // half-open for good: the guard reports a failed probe unless disarmed.
                let mut guard = ProbeGuard {
                    shared: self,
                    armed: true,
                };
                let (bootstrap, timeout) = (self.bootstrap.clone(), self.connect_timeout);
                let answer = blocking(move || {
                    reach(&bootstrap, timeout).map_err(|cause| Error::Unreachable {
                        bootstrap: bootstrap.clone(),
                        cause,
                    })?;
                    probe()
                })
                .await;
                guard.armed = false;
                let cause = match &answer {
                    Err(Error::Unreachable { cause, .. }) => Some(cause.clone()),
                    Err(e) => Some(e.to_string()),
                    Ok(()) => None,
                };
                self.breaker().probed(
                    Instant::now(),
                    answer.is_ok(),
                    cause.as_deref().unwrap_or(""),
                );
                match answer {
                    Ok(()) => Ok(()),
                    Err(_) => Err(self.unreachable(self.breaker().cause().to_string())),
                }
            }
        }
    }

    /// Waits for the broker's first answer, or fails as soon as librdkafka reports it
    /// unreachable.
    pub async fn connect(&self, probe: impl FnOnce() -> Result<()> + Send + 'static) -> Result<()> {
        // A plain TCP connect first: it names the cause ("connection refused") at once, where
        // librdkafka would retry quietly until its timeout.
        let (bootstrap, timeout) = (self.bootstrap.clone(), self.connect_timeout);
        let reached = tokio::task::spawn_blocking(move || reach(&bootstrap, timeout))
            .await
            .unwrap_or_else(|e| Err(format!("connect check panicked: {e}")));
        if let Err(cause) = reached {
            self.breaker().failed(Instant::now(), &cause);
            return Err(self.unreachable(cause));
        }
        let task = tokio::task::spawn_blocking(probe);
        loop {
            if task.is_finished() {
                return match task.await {
                    Ok(Ok(())) => {
                        self.succeeded();
                        Ok(())
                    }
                    Ok(Err(e)) => {
                        let cause = self.breaker().cause().to_string();
                        if cause.is_empty() {
                            Err(self.unreachable(e.to_string()))
                        } else {
                            Err(self.unreachable(cause))
                        }
                    }
                    Err(e) => Err(Error::Invalid(format!("metadata request panicked: {e}"))),
                };
            }
            if self.breaker().is_open() {
                // The metadata request gives up on its own timeout; nothing waits for it.
                return Err(self.unreachable(self.breaker().cause().to_string()));
            }
            tokio::time::sleep(CONNECT_POLL).await;
        }
    }
}

struct ProbeGuard<'a> {
    shared: &'a Shared,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared
                .breaker()
                .probed(Instant::now(), false, "the probe was cancelled");
        }
    }
}

/// Opens (and closes) a TCP connection to one of the `bootstrap` addresses; the error is the
/// last address's cause, in words ("connection refused").
pub(crate) fn reach(bootstrap: &str, timeout: Duration) -> std::result::Result<(), String> {
    let mut cause = format!("no address in {bootstrap:?}");
    for server in bootstrap
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let addrs = match std::net::ToSocketAddrs::to_socket_addrs(server) {
            Ok(addrs) => addrs,
            Err(e) => {
                cause = format!("cannot resolve {server}: {e}");
                continue;
            }
        };
        for addr in addrs {
            match std::net::TcpStream::connect_timeout(&addr, timeout) {
                Ok(_) => return Ok(()),
                Err(e) => cause = io_cause(&e),
            }
        }
    }
    Err(cause)
}

/// "connection refused", not "Connection refused (os error 111)".
fn io_cause(e: &std::io::Error) -> String {
    let text = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            "connection timed out".to_string()
        }
        _ => e.to_string(),
    };
    text.split(" (os error").next().unwrap_or(&text).to_string()
}

/// Runs a blocking librdkafka call on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Invalid(format!("a client call panicked: {e}")))?
}

/// The librdkafka context of every Weir client: feeds the breaker.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
}

impl Ctx {
    pub fn new(config: &Config) -> Ctx {
        Ctx {
            shared: Arc::new(Shared {
                bootstrap: config.bootstrap.clone(),
                connect_timeout: config.connect_timeout,
                breaker: Mutex::new(Breaker::new(config.breaker)),
            }),
        }
    }

    /// Creates a librdkafka client of kind `T` with this context.
    pub fn create<T: rdkafka::config::FromClientConfigAndContext<Ctx>>(
        &self,
        config: &ClientConfig,
    ) -> Result<T> {
        config
            .create_with_context(self.clone())
            .map_err(|e| Error::Invalid(format!("client configuration: {e}")))
    }
}

impl ClientContext for Ctx {
    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, _fac: &str, _message: &str) {
        // librdkafka's own chatter would interleave with the CLI's output; what matters
        // reaches `error` below.
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let mut breaker = self.shared.breaker();
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => breaker.failed(Instant::now(), ""),
            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::Resolve) => {
                // Remember why, for the message; "all brokers down" follows and opens it.
                breaker.note(&transport_cause(reason));
            }
            _ => {}
        }
    }
}

impl ConsumerContext for Ctx {}
