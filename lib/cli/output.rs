//! stdout carries data only (JSON lines); stderr carries messages prefixed with the
//! binary's name, and progress when asked for or when stderr is a terminal.

use crate::cli::{ExitCode, Failure};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Write `text` to stdout: the one writer every binary's output goes through. A reader
/// that closed the pipe ends us quietly (exit 80); any other write error (a full disk,
/// `> /dev/full`) is one line and exit 74; never a panic, `--help` and `--man` included.
pub fn emit(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|_| out.flush()).map_err(write_failure)
}

/// Print JSON values as lines on stdout, each written as it comes (buffered), so a long
/// output is never held whole.
pub fn emit_lines(values: impl Iterator<Item = serde_json::Value>) -> Result<(), Failure> {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    for v in values {
        serde_json::to_writer(&mut out, &v).map_err(std::io::Error::from).map_err(write_failure)?;
        out.write_all(b"\n").map_err(write_failure)?;
    }
    out.flush().map_err(write_failure)
}

/// Print one JSON value as a line on stdout, as [`emit`] does.
pub fn json_line(value: &serde_json::Value) -> Result<(), Failure> {
    let mut line = value.to_string();
    line.push('\n');
    emit(&line)
}

fn write_failure(e: std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Failure::new(ExitCode::ClosedStdout, "")
    } else {
        Failure::new(ExitCode::LocalIo, format!("writing stdout failed: {e}"))
    }
}

/// Human-readable bytes, binary units.
/// An age for people: `42s`, `5m12s`, `27h47m`, `3d4h` (two units at most; negative: 0s).
pub fn human_age(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m) = (s / 86_400, s / 3_600, s / 60);
    if s >= 2 * 86_400 {
        format!("{d}d{}h", (s % 86_400) / 3_600)
    } else if s >= 3_600 {
        format!("{h}h{}m", (s % 3_600) / 60)
    } else if s >= 60 {
        format!("{m}m{}s", s % 60)
    } else {
        format!("{s}s")
    }
}

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
    /// Bytes read from the source (before compression), counted where that differs from
    /// `bytes` (s3put), and what the source is expected to weigh: with both, the line
    /// says how far along the stream is and when it should end.
    pub input: Arc<AtomicU64>,
    total: Option<u64>,
    enabled: bool,
    tty: bool,
}

impl Progress {
    pub fn new(requested: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        Progress {
            bytes: Arc::new(AtomicU64::new(0)),
            input: Arc::new(AtomicU64::new(0)),
            total: None,
            enabled: requested || tty,
            tty,
        }
    }

    /// Report progress against `total` source bytes (e.g. `zfs send -nP`'s estimate).
    pub fn with_total(self, total: Option<u64>) -> Self {
        Progress { total: total.filter(|&t| t > 0), ..self }
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
        let input = self.input.clone();
        let total = self.total;
        let tty = self.tty;
        let start = Instant::now();
        Some(tokio::spawn(async move {
            let period = if tty { Duration::from_secs(1) } else { Duration::from_secs(10) };
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = bytes.load(Ordering::Relaxed);
                let mut line = format!("{prog}: {} {verb}, {} MB/s", human_bytes(n), mb_per_s(n, start.elapsed()));
                if let Some(t) = total {
                    line.push_str(&along(input.load(Ordering::Relaxed), t, start.elapsed()));
                }
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

/// `, stream 40.0 MiB of ~100.0 MiB (40%), ETA 1m30s`: how far a source of about `total`
/// bytes is after `done` bytes in `elapsed`. An estimate can run low: past it, no ETA.
fn along(done: u64, total: u64, elapsed: Duration) -> String {
    let pct = (u128::from(done) * 100 / u128::from(total.max(1))).min(100);
    let mut s = format!(", stream {} of ~{} ({pct}%)", human_bytes(done), human_bytes(total));
    if done > 0 && done < total {
        let secs = elapsed.as_secs_f64() * (total - done) as f64 / done as f64;
        let secs = secs.round() as u64;
        s.push_str(&format!(", ETA {}m{:02}s", secs / 60, secs % 60));
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_for_people() {
        let cases = [(-5, "0s"), (42, "42s"), (312, "5m12s"), (100_020, "27h47m"), (273_600, "3d4h")];
        for (secs, want) in cases {
            assert_eq!(human_age(secs), want, "{secs}");
        }
    }

    use super::*;

    #[test]
    fn how_far_along() {
        assert_eq!(along(0, 100 << 20, Duration::from_secs(1)), ", stream 0 B of ~100.0 MiB (0%)");
        assert_eq!(
            along(25 << 20, 100 << 20, Duration::from_secs(30)),
            ", stream 25.0 MiB of ~100.0 MiB (25%), ETA 1m30s"
        );
        assert_eq!(along(200, 100, Duration::from_secs(3)), ", stream 200 B of ~100 B (100%)");
    }

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
