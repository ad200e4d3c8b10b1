//! `weir-dispatch`: a keyed processing runtime. Every task submitted with the same key runs
//! on the same worker, one at a time, in submission order, and gets that key's state as
//! `&mut S` — no lock, because only that worker touches it (the sticky dispatch of
//! ../shared/reference/000, Q1–Q5).
//!
//! - Routing is a consistent-hash ring with virtual nodes ([`ring`]), so
//!   [`resize`](Dispatcher::resize) moves only about 1/n of the keys; a moved key's tasks
//!   resume on its new worker after its earlier ones finished on the old, and its state moves
//!   with it.
//! - Tasks are async: a task waiting on I/O parks and its worker runs other keys' tasks (up to
//!   `running_tasks_max` at once). Their futures need not be `Send`: a worker is an OS thread
//!   with its own current_thread runtime (ARCHITECTURE.md decision 31).
//! - Queues are bounded: [`submit`](Dispatcher::submit) waits while the key's worker holds
//!   `queue_tasks_max` tasks; [`try_submit`](Dispatcher::try_submit) returns `Full`.
//! - [`Adaptive`] sizing grows the pool when every worker stays busy and shrinks it when they
//!   idle; [`stats`](Dispatcher::stats) reports each worker's queue, busy time and tasks done.
//! - Around the calls a handler makes: a token-bucket [`RateLimiter`] (fixed or tracking a
//!   target latency) and a [`CircuitBreaker`].
//!
//! ```
//! use weir_dispatch::{Config, Dispatcher};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // Per-key state: a running total per account.
//! let dispatcher: Dispatcher<String, u64> =
//!     Dispatcher::new(Config { workers: 2, ..Config::default() }).unwrap();
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! for (account, amount) in [("alice", 5), ("bob", 7), ("alice", 10)] {
//!     let tx = tx.clone();
//!     dispatcher
//!         .submit(account.to_string(), async move |total: &mut u64| {
//!             // A task may wait on I/O; the worker runs other accounts meanwhile.
//!             tokio::time::sleep(std::time::Duration::from_millis(1)).await;
//!             *total += amount;
//!             tx.send((account, *total)).unwrap();
//!         })
//!         .await
//!         .unwrap();
//! }
//! dispatcher.shutdown().await; // runs everything submitted, then stops the workers
//! drop(tx);
//! let mut alice = Vec::new();
//! while let Some((account, total)) = rx.recv().await {
//!     if account == "alice" {
//!         alice.push(total);
//!     }
//! }
//! assert_eq!(alice, [5, 15]); // in order, with the state carried from one task to the next
//! # });
//! ```

pub mod adaptive;
pub mod breaker;
mod dispatcher;
pub mod limiter;
pub mod ring;
mod route;
mod worker;

pub use adaptive::Adaptive;
pub use breaker::{BreakerConfig, CallError, CircuitBreaker};
pub use dispatcher::{Config, Dispatcher, Error, TrySubmitError, WorkerStats, WORKERS_MAX};
pub use limiter::{AdaptiveRate, RateLimiter};
