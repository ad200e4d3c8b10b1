//! A progress line on stderr while a bench runs, only when stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the line is redrawn.
const REDRAW: Duration = Duration::from_millis(250);
const BAR_WIDTH: usize = 30;

/// Records done so far, shared by every producer and consumer of a run.
pub struct Progress {
    pub done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    drawer: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts drawing toward `total` records (or `duration`, whichever the run is bounded by).
    pub fn start(what: &'static str, total: u64, duration: Option<Duration>) -> Progress {
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let drawer = std::io::stderr().is_terminal().then(|| {
            let (done, stop) = (done.clone(), stop.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(REDRAW);
                    let n = done.load(Ordering::Relaxed);
                    let elapsed = started.elapsed();
                    let fraction = match duration {
                        Some(d) => elapsed.as_secs_f64() / d.as_secs_f64(),
                        None => n as f64 / total.max(1) as f64,
                    }
                    .min(1.0);
                    eprint!("\r{}", line(what, fraction, n, elapsed));
                    let _ = std::io::stderr().flush();
                }
                eprint!("\r{}\r", " ".repeat(BAR_WIDTH + 60));
            })
        });
        Progress { done, stop, drawer }
    }

    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(drawer) = self.drawer.take() {
            let _ = drawer.join();
        }
    }
}

fn line(what: &str, fraction: f64, done: u64, elapsed: Duration) -> String {
    let filled = (fraction * BAR_WIDTH as f64) as usize;
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
    format!(
        "{what} [{}{}] {:>3.0}%  {done} records  {:.0} records/s",
        "#".repeat(filled),
        "-".repeat(BAR_WIDTH - filled),
        fraction * 100.0,
        rate
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_the_fraction_and_the_rate() {
        let l = line("produce", 0.5, 1000, Duration::from_secs(2));
        assert_eq!(
            l,
            format!(
                "produce [{}{}]  50%  1000 records  500 records/s",
                "#".repeat(15),
                "-".repeat(15)
            )
        );
    }
}
