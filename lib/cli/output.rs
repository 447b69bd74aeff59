//! stdout carries data only (JSON lines); stderr carries messages prefixed with the
//! binary's name, and progress when asked for or when stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Print one JSON value as a line on stdout.
pub fn json_line(value: &serde_json::Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Human-readable bytes, binary units.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Megabytes (10^6) per second, as throughput is usually quoted.
pub fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        (bytes as f64 / 1e6 / secs * 10.0).round() / 10.0
    }
}

/// A counter the worker bumps and a ticker prints from, once a second on a terminal
/// (overwriting one line) or every ten seconds into a log.
#[derive(Clone)]
pub struct Progress {
    pub bytes: Arc<AtomicU64>,
    enabled: bool,
    tty: bool,
}

impl Progress {
    pub fn new(requested: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        Progress { bytes: Arc::new(AtomicU64::new(0)), enabled: requested || tty, tty }
    }

    pub fn add(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Spawn the ticker on the current tokio runtime; it ends when the handle is aborted.
    pub fn spawn_ticker(&self, prog: &'static str, verb: &'static str) -> Option<tokio::task::JoinHandle<()>> {
        if !self.enabled {
            return None;
        }
        let bytes = self.bytes.clone();
        let tty = self.tty;
        let start = Instant::now();
        Some(tokio::spawn(async move {
            let period = if tty { Duration::from_secs(1) } else { Duration::from_secs(10) };
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = bytes.load(Ordering::Relaxed);
                let line = format!("{prog}: {} {verb}, {} MB/s", human_bytes(n), mb_per_s(n, start.elapsed()));
                if tty {
                    eprint!("\r{line}\x1b[K");
                } else {
                    eprintln!("{line}");
                }
            }
        }))
    }

    /// Stop the ticker and end its line on a terminal.
    pub fn finish(&self, ticker: Option<tokio::task::JoinHandle<()>>) {
        if let Some(t) = ticker {
            t.abort();
            if self.tty {
                eprintln!();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn rate() {
        assert_eq!(mb_per_s(10_000_000, Duration::from_secs(2)), 5.0);
        assert_eq!(mb_per_s(1, Duration::ZERO), 0.0);
    }
}
