//! stdout carries data only (JSON lines); stderr carries messages prefixed with the
//! binary's name, and progress when asked for or when stderr is a terminal.

use crate::cli::flags::Flag;
use crate::cli::{ExitCode, Failure};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Write `text` to stdout: the one writer every binary's output goes through. A reader
/// that closed the pipe ends us quietly (exit 80); any other write error (a full disk,
/// `> /dev/full`) is one line and exit 74; never a panic, `--help` and `--man` included.
pub fn emit(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|_| out.flush()).map_err(write_failure)
}

/// Print JSON lines on stdout, each written as it comes (buffered), so a long output is
/// never held whole.
pub fn emit_lines(lines: impl Iterator<Item = serde_json::Result<String>>) -> Result<(), Failure> {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    for line in lines {
        let line = line.map_err(|e| Failure::new(ExitCode::Internal, format!("a JSON line did not serialize: {e}")))?;
        out.write_all(line.as_bytes()).and_then(|_| out.write_all(b"\n")).map_err(write_failure)?;
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

/// Human-readable bytes, binary (IEC) units as pv prints them: `1023 B`, `1.5 KiB`.
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

/// Megabytes (10^6) per second: only for the `mb_per_s` field of s3put's JSON line, whose
/// name and number are an interface. Everything people read on stderr is binary (MiB/s).
pub fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        (bytes as f64 / 1e6 / secs * 10.0).round() / 10.0
    }
}

/// Bytes per second over `elapsed` (0 for no time at all).
pub fn per_second(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        bytes as f64 / secs
    }
}

/// A rate in the units of [`human_bytes`]: `512 B/s`, `12.3 MiB/s`.
pub fn human_rate(bytes_per_s: f64) -> String {
    const UNITS: [&str; 6] = ["B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s", "PiB/s"];
    let mut v = if bytes_per_s.is_finite() { bytes_per_s.max(0.0) } else { 0.0 };
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{} {}", v.round() as u64, UNITS[0])
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// How long a run took: tenths under a minute (`0.4s`, `42.0s`), else as [`human_age`].
pub fn human_elapsed(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        human_age(d.as_secs() as i64)
    }
}

/// How progress is shown on stderr, decided once per run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ProgressMode {
    /// Not at all: no terminal and not asked for.
    Off,
    /// One line rewritten in place about once a second, ended by the final line.
    Terminal,
    /// A line every `every` into a log, and a final summary line.
    Log { every: Duration },
}

/// How often the line is redrawn on a terminal.
pub const TERMINAL_EVERY: Duration = Duration::from_secs(1);
/// How often a line goes into a log unless --progress-interval says otherwise.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// `--progress-interval`, the same on every binary that shows progress.
pub const PROGRESS_INTERVAL_FLAG: Flag = Flag {
    short: None,
    long: "progress-interval",
    value: Some("SECS"),
    doc: "Seconds between progress lines off a terminal (default 10, or $ZSNAP_PROGRESS_INTERVAL; e.g. 0.5); \
          implies --progress.",
};

/// The progress flags as parsed: `--progress` and `--progress-interval`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProgressFlags {
    pub requested: bool,
    pub interval: Option<Duration>,
}

impl ProgressFlags {
    /// Take `--progress` or `--progress-interval SECS` if `name` is one; `Ok(false)` otherwise.
    pub fn take(&mut self, name: &str, p: &mut lexopt::Parser) -> Result<bool, Failure> {
        match name {
            "progress" => self.requested = true,
            "progress-interval" => {
                use lexopt::ValueExt;
                self.interval = Some(parse_interval("--progress-interval", &p.value()?.string()?)?);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The mode, with the environment and stderr read now.
    pub fn mode(self) -> Result<ProgressMode, Failure> {
        ProgressAsk::from_env(self).mode()
    }
}

/// What decides the mode: the flags, the environment the scripts set, and whether stderr
/// is a terminal. Plain data, so the decision is a pure function.
#[derive(Clone, Debug, Default)]
pub struct ProgressAsk {
    pub flags: ProgressFlags,
    /// `$ZSNAP_PROGRESS`: `1` as --progress, `tty` when stderr reaches a terminal through
    /// a pipe (the scripts' tee), `0` or empty: nothing unless asked by a flag.
    pub env: Option<String>,
    /// `$ZSNAP_PROGRESS_INTERVAL`: the default for --progress-interval.
    pub env_interval: Option<String>,
    pub stderr_tty: bool,
}

impl ProgressAsk {
    /// The flags as parsed, with the environment and stderr read now.
    pub fn from_env(flags: ProgressFlags) -> ProgressAsk {
        ProgressAsk {
            flags,
            env: std::env::var("ZSNAP_PROGRESS").ok(),
            env_interval: std::env::var("ZSNAP_PROGRESS_INTERVAL").ok(),
            stderr_tty: std::io::stderr().is_terminal(),
        }
    }

    /// A terminal wins (it is where someone watches); then a flag; then the environment.
    /// A flag given makes `ZSNAP_PROGRESS=0` moot. A value we cannot read is a usage error
    /// naming the variable, not a silent default.
    pub fn mode(&self) -> Result<ProgressMode, Failure> {
        let env = match self.env.as_deref().map(str::trim) {
            None | Some("") | Some("0") => None,
            Some("1") => Some(false),
            Some("tty") => Some(true),
            Some(v) => {
                return Err(Failure::usage(format!("ZSNAP_PROGRESS: '{v}' is not 0, 1 or tty")));
            }
        };
        let env_interval = match self.env_interval.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(v) => Some(parse_interval("ZSNAP_PROGRESS_INTERVAL", v)?),
        };
        if self.stderr_tty || env == Some(true) {
            return Ok(ProgressMode::Terminal);
        }
        let f = self.flags;
        if f.requested || f.interval.is_some() || env == Some(false) {
            let every = f.interval.or(env_interval).unwrap_or(LOG_EVERY);
            return Ok(ProgressMode::Log { every });
        }
        Ok(ProgressMode::Off)
    }
}

/// `10`, `0.5`: seconds between progress lines in a log, from 0.1 s to a day.
pub fn parse_interval(name: &str, text: &str) -> Result<Duration, Failure> {
    let bad =
        || Failure::usage(format!("{name}: '{text}' is not a number of seconds from 0.1 to 86400 (e.g. 10, 0.5)"));
    let secs: f64 = text.trim().trim_end_matches('s').parse().map_err(|_| bad())?;
    if !(0.1..=86_400.0).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// What a transfer measures itself against: a size known exactly (an object's, from
/// HEAD) or an estimate (`--expected-size`, `zfs send -nP`) the stream may run past.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Total {
    pub bytes: u64,
    pub estimate: bool,
}

/// The words of one command's progress line.
#[derive(Clone, Debug)]
pub struct Gauge {
    /// `s3put: `, or `zsync-ssh: full tank/a@s1 to nas:pool/a: `.
    pub prefix: String,
    /// What happened to the bytes counted: `read`, `downloaded`, `sent`.
    pub verb: &'static str,
    /// s3put: the bytes counted are the stream read, and these many were stored (after
    /// compression) under this word: `uploaded`.
    pub stored: Option<&'static str>,
}

/// One reading of a transfer, as a line is drawn from it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    /// Bytes counted so far: what `total` measures.
    pub done: u64,
    pub total: Option<Total>,
    pub elapsed: Duration,
    /// Bytes stored so far, for a [`Gauge`] with `stored`.
    pub stored: u64,
}

/// `62%`, or `~100%` for a stream that ran past its estimate (never more than 100).
fn percent(done: u64, total: Total) -> String {
    if total.bytes == 0 || done >= total.bytes {
        return if total.estimate && done > total.bytes { "~100%".into() } else { "100%".into() };
    }
    format!("{}%", u128::from(done) * 100 / u128::from(total.bytes))
}

/// The line while running: `s3put: read 40.0 MiB of ~100.0 MiB (40%), 12.3 MiB/s, ETA 5s,
/// uploaded 20.0 MiB`. `rate` is the current one (since the last line); the ETA comes from
/// the average, which does not jump. Past an estimate there is no ETA, never a negative one.
pub fn running_line(g: &Gauge, r: &Reading, rate: f64) -> String {
    let mut s = format!("{}{} {}", g.prefix, g.verb, human_bytes(r.done));
    if let Some(t) = r.total {
        let tilde = if t.estimate { "~" } else { "" };
        s.push_str(&format!(" of {tilde}{} ({})", human_bytes(t.bytes), percent(r.done, t)));
    }
    s.push_str(&format!(", {}", human_rate(rate)));
    if let Some(t) = r.total.filter(|t| r.done > 0 && r.done < t.bytes) {
        let eta = r.elapsed.as_secs_f64() * (t.bytes - r.done) as f64 / r.done as f64;
        s.push_str(&format!(", ETA {}", human_age(eta.ceil() as i64)));
    }
    if let Some(word) = g.stored {
        s.push_str(&format!(", {word} {}", human_bytes(r.stored)));
    }
    s
}

/// The last line, once the transfer succeeded: `s3get: downloaded 4.0 MiB (4194304 bytes),
/// 100% in 0.4s, 10.0 MiB/s average`. 100% whenever a size was known (the stream is whole,
/// whatever the estimate said); `extra` is appended as is (`, crc32 …`).
pub fn final_line(g: &Gauge, r: &Reading, extra: &str) -> String {
    let mut s = format!("{}{} {} ({} bytes)", g.prefix, g.verb, human_bytes(r.done), r.done);
    if r.total.is_some() {
        s.push_str(", 100%");
    }
    s.push_str(&format!(" in {}, {} average", human_elapsed(r.elapsed), human_rate(per_second(r.done, r.elapsed))));
    if let Some(word) = g.stored {
        s.push_str(&format!(", {word} {}", human_bytes(r.stored)));
    }
    s.push_str(extra);
    s
}

/// The counters a transfer bumps and the ticker reads, plus how they are shown.
#[derive(Clone)]
pub struct Progress {
    /// Bytes moved: uploaded (s3put), downloaded (s3get), taken by the next stage (zsync-ssh).
    pub bytes: Arc<AtomicU64>,
    /// Bytes read from the source before compression (s3put), where that differs from
    /// `bytes`; what `--expected-size` measures.
    pub input: Arc<AtomicU64>,
    /// The size to measure against, once known (`u64::MAX`: not known).
    total: Arc<AtomicU64>,
    estimate: bool,
    pub mode: ProgressMode,
}

impl Progress {
    pub fn new(mode: ProgressMode) -> Self {
        Progress {
            bytes: Arc::new(AtomicU64::new(0)),
            input: Arc::new(AtomicU64::new(0)),
            total: Arc::new(AtomicU64::new(u64::MAX)),
            estimate: true,
            mode,
        }
    }

    /// Measure against an estimate of the source's size (e.g. `zfs send -nP`'s).
    pub fn with_total(self, total: Option<u64>) -> Self {
        if let Some(t) = total {
            self.total.store(t, Ordering::Relaxed);
        }
        self
    }

    /// The exact size, learnt on the way (s3get's HEAD).
    pub fn set_total(&self, exact: u64) {
        self.total.store(exact, Ordering::Relaxed);
    }

    /// Measure against sizes set with [`Progress::set_total`], which are exact.
    pub fn exact(self) -> Self {
        Progress { estimate: false, ..self }
    }

    pub fn add(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Back to nothing done: a run that starts the stream over counts it again.
    pub fn reset(&self) {
        self.bytes.store(0, Ordering::Relaxed);
        self.input.store(0, Ordering::Relaxed);
    }

    fn total(&self) -> Option<Total> {
        match self.total.load(Ordering::Relaxed) {
            u64::MAX => None,
            bytes => Some(Total { bytes, estimate: self.estimate }),
        }
    }

    fn reading(&self, g: &Gauge, elapsed: Duration) -> Reading {
        let (bytes, input) = (self.bytes.load(Ordering::Relaxed), self.input.load(Ordering::Relaxed));
        match g.stored {
            Some(_) => Reading { done: input, total: self.total(), elapsed, stored: bytes },
            None => Reading { done: bytes, total: self.total(), elapsed, stored: 0 },
        }
    }

    /// Start drawing `g`'s line on a thread of its own (nothing when the mode is off).
    pub fn start(&self, g: Gauge) -> Ticker {
        let start = Instant::now();
        let drawn = Arc::new(AtomicBool::new(false));
        let every = match self.mode {
            ProgressMode::Off => return Ticker { progress: self.clone(), gauge: g, start, stop: None, drawn },
            ProgressMode::Terminal => TERMINAL_EVERY,
            ProgressMode::Log { every } => every,
        };
        let (tx, rx) = mpsc::channel::<()>();
        let (p, gauge, d) = (self.clone(), g.clone(), drawn.clone());
        let thread = std::thread::Builder::new().name("progress".into()).spawn(move || {
            let mut prev = (0u64, Duration::ZERO);
            // Ends when the ticker is finished or dropped (the sender goes away).
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                let r = p.reading(&gauge, start.elapsed());
                let rate = per_second(r.done.saturating_sub(prev.0), r.elapsed.saturating_sub(prev.1));
                prev = (r.done, r.elapsed);
                draw(p.mode, &running_line(&gauge, &r, rate), false);
                d.store(true, Ordering::Relaxed);
            }
        });
        // No thread (out of resources): no progress, but the transfer goes on.
        let stop = thread.ok().map(|t| (tx, t));
        Ticker { progress: self.clone(), gauge: g, start, stop, drawn }
    }
}

/// Write a line as the mode wants it: rewritten in place on a terminal (carriage return,
/// clear to the end of the line; `last` ends it), a line of its own in a log. One write, so
/// a tee between us and the terminal (the scripts') never splits it around another writer.
fn draw(mode: ProgressMode, line: &str, last: bool) {
    let text = match mode {
        ProgressMode::Off => return,
        ProgressMode::Terminal => format!("\r{line}\x1b[K{}", if last { "\n" } else { "" }),
        ProgressMode::Log { .. } => format!("{line}\n"),
    };
    // A stderr that is gone must not stop the transfer: progress is best effort.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// A running progress line; [`Ticker::finish`] draws the last one. Dropped unfinished (a
/// failure returned early), it stops and ends a terminal line so the error starts clean.
pub struct Ticker {
    progress: Progress,
    gauge: Gauge,
    start: Instant,
    stop: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
    drawn: Arc<AtomicBool>,
}

/// What a successful transfer ended with, as its report says (the counters may lag it).
pub struct Ended {
    pub done: u64,
    pub stored: u64,
    pub elapsed: Option<Duration>,
    /// Appended to the final line: `, crc32 1234abcd, verified: crc32`.
    pub extra: String,
}

impl Ticker {
    fn halt(&mut self) {
        if let Some((tx, thread)) = self.stop.take() {
            drop(tx);
            let _ = thread.join();
        }
    }

    /// Stop the ticker and draw the final line (a summary into a log, the line's last state
    /// on a terminal).
    pub fn finish(mut self, end: Ended) {
        self.halt();
        if self.progress.mode == ProgressMode::Off {
            return;
        }
        let r = Reading {
            done: end.done,
            total: self.progress.total(),
            elapsed: end.elapsed.unwrap_or_else(|| self.start.elapsed()),
            stored: end.stored,
        };
        let line = final_line(&self.gauge, &r, &end.extra);
        draw(self.progress.mode, &line, true);
        // Nothing left for drop to end.
        self.drawn.store(false, Ordering::Relaxed);
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.halt();
        if self.progress.mode == ProgressMode::Terminal && self.drawn.load(Ordering::Relaxed) {
            eprintln!();
        }
    }
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
    fn human() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn rates_and_elapsed_in_binary_units() {
        assert_eq!(mb_per_s(10_000_000, Duration::from_secs(2)), 5.0, "the JSON field stays decimal");
        assert_eq!(mb_per_s(1, Duration::ZERO), 0.0);
        let cases = [(0.0, "0 B/s"), (512.4, "512 B/s"), (1536.0, "1.5 KiB/s"), (12.3 * MIB, "12.3 MiB/s")];
        for (rate, want) in cases {
            assert_eq!(human_rate(rate), want, "{rate}");
        }
        assert_eq!(human_rate(f64::NAN), "0 B/s");
        assert_eq!(human_rate(-3.0), "0 B/s");
        assert_eq!(per_second(10 << 20, Duration::from_secs(2)), 5.0 * MIB);
        assert_eq!(per_second(5, Duration::ZERO), 0.0);
        assert_eq!(human_elapsed(Duration::from_millis(430)), "0.4s");
        assert_eq!(human_elapsed(Duration::from_secs(312)), "5m12s");
    }

    const MIB: f64 = 1048576.0;

    fn gauge(stored: Option<&'static str>) -> Gauge {
        Gauge { prefix: "s3put: ".into(), verb: "read", stored }
    }

    fn at(done: u64, total: Option<(u64, bool)>, secs: u64) -> Reading {
        Reading {
            done,
            total: total.map(|(bytes, estimate)| Total { bytes, estimate }),
            elapsed: Duration::from_secs(secs),
            stored: done / 2,
        }
    }

    #[test]
    fn running_lines() {
        let g = gauge(None);
        let cases = [
            // Nothing known but the bytes.
            (at(0, None, 1), 0.0, "s3put: read 0 B, 0 B/s"),
            (at(3 << 20, None, 1), 3.0 * MIB, "s3put: read 3.0 MiB, 3.0 MiB/s"),
            // An estimate: `~`, percent, ETA from the average (25 MiB in 30 s: 90 s to go).
            (
                at(25 << 20, Some((100 << 20, true)), 30),
                MIB,
                "s3put: read 25.0 MiB of ~100.0 MiB (25%), 1.0 MiB/s, ETA 1m30s",
            ),
            // An exact size has no `~`; nothing done yet: no ETA.
            (at(0, Some((4 << 20, false)), 1), 0.0, "s3put: read 0 B of 4.0 MiB (0%), 0 B/s"),
            // 99.9% floors to 99, never shown as done before it is.
            (at(999, Some((1000, false)), 9), 111.0, "s3put: read 999 B of 1000 B (99%), 111 B/s, ETA 1s"),
            // Past the estimate: ~100%, no ETA (never a negative one), never above 100.
            (
                at(120 << 20, Some((100 << 20, true)), 12),
                10.0 * MIB,
                "s3put: read 120.0 MiB of ~100.0 MiB (~100%), 10.0 MiB/s",
            ),
            // Exactly at it.
            (at(100, Some((100, true)), 2), 50.0, "s3put: read 100 B of ~100 B (100%), 50 B/s"),
            // A zero-byte total is done from the start.
            (at(0, Some((0, false)), 1), 0.0, "s3put: read 0 B of 0 B (100%), 0 B/s"),
        ];
        for (r, rate, want) in cases {
            assert_eq!(running_line(&g, &r, rate), want);
        }
        assert_eq!(
            running_line(&gauge(Some("uploaded")), &at(8 << 20, Some((16 << 20, true)), 4), 2.0 * MIB),
            "s3put: read 8.0 MiB of ~16.0 MiB (50%), 2.0 MiB/s, ETA 4s, uploaded 4.0 MiB"
        );
    }

    #[test]
    fn final_lines() {
        let g = gauge(None);
        let cases = [
            (
                at(4 << 20, Some((4 << 20, false)), 2),
                "s3put: read 4.0 MiB (4194304 bytes), 100% in 2.0s, 2.0 MiB/s average",
            ),
            // The estimate was exceeded or not reached: the stream is whole, 100% all the same.
            (
                at(5 << 20, Some((4 << 20, true)), 1),
                "s3put: read 5.0 MiB (5242880 bytes), 100% in 1.0s, 5.0 MiB/s average",
            ),
            (
                at(1 << 20, Some((4 << 20, true)), 1),
                "s3put: read 1.0 MiB (1048576 bytes), 100% in 1.0s, 1.0 MiB/s average",
            ),
            // No size known: no percent.
            (at(1536, None, 3), "s3put: read 1.5 KiB (1536 bytes) in 3.0s, 512 B/s average"),
            // Zero bytes in no time at all.
            (at(0, Some((0, false)), 0), "s3put: read 0 B (0 bytes), 100% in 0.0s, 0 B/s average"),
        ];
        for (r, want) in cases {
            assert_eq!(final_line(&g, &r, ""), want);
        }
        let r = at(10 << 20, None, 100);
        assert_eq!(
            final_line(&gauge(Some("uploaded")), &r, ", crc32 0000abcd"),
            "s3put: read 10.0 MiB (10485760 bytes) in 1m40s, 102.4 KiB/s average, uploaded 5.0 MiB, crc32 0000abcd"
        );
    }

    #[test]
    fn when_progress_is_shown() {
        let ask = |requested, interval: Option<u64>, env: Option<&str>, env_interval: Option<&str>, tty| ProgressAsk {
            flags: ProgressFlags { requested, interval: interval.map(Duration::from_millis) },
            env: env.map(String::from),
            env_interval: env_interval.map(String::from),
            stderr_tty: tty,
        };
        let log = |ms| Ok(ProgressMode::Log { every: Duration::from_millis(ms) });
        let cases = [
            (ask(false, None, None, None, false), Ok(ProgressMode::Off)),
            (ask(false, None, None, None, true), Ok(ProgressMode::Terminal)),
            (ask(true, None, None, None, true), Ok(ProgressMode::Terminal)),
            (ask(true, None, None, None, false), log(10_000)),
            (ask(false, Some(500), None, None, false), log(500)),
            (ask(false, None, Some("1"), None, false), log(10_000)),
            (ask(false, None, Some("1"), Some("2.5"), false), log(2_500)),
            (ask(true, Some(300), Some("1"), Some("2.5"), false), log(300)),
            (ask(false, None, Some("tty"), None, false), Ok(ProgressMode::Terminal)),
            (ask(false, None, Some("0"), Some("3"), false), Ok(ProgressMode::Off)),
            (ask(true, None, Some("0"), None, false), log(10_000)),
            (ask(false, None, Some(""), None, false), Ok(ProgressMode::Off)),
        ];
        for (a, want) in cases {
            assert_eq!(a.mode().map_err(|f| f.message), want.map_err(|_: ()| String::new()), "{a:?}");
        }
        let e = ask(false, None, Some("yes"), None, false).mode().unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (ExitCode::Usage, "ZSNAP_PROGRESS: 'yes' is not 0, 1 or tty"));
        let e = ask(true, None, None, Some("-1"), false).mode().unwrap_err();
        assert!(e.message.starts_with("ZSNAP_PROGRESS_INTERVAL: '-1' is not a number of seconds"), "{}", e.message);
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("--progress-interval", "10").ok(), Some(Duration::from_secs(10)));
        assert_eq!(parse_interval("--progress-interval", "0.5s").ok(), Some(Duration::from_millis(500)));
        for bad in ["0", "0.01", "abc", "", "1e9", "NaN", "-2"] {
            let e = parse_interval("--progress-interval", bad).unwrap_err();
            assert_eq!(e.code, ExitCode::Usage, "{bad}");
            assert!(e.message.starts_with(&format!("--progress-interval: '{bad}'")), "{}", e.message);
        }
    }
}
