//! Runs one pipeline: every stage its own process with its own exit status (stricter than
//! `bash -o pipefail`, which keeps only one), and this process copying between `zfs send`
//! and the next stage to count bytes for progress and the summary. A signal (SIGINT,
//! SIGTERM, SIGHUP) kills the stages and is reported; the caller's hold guard then releases.

use super::pipeline::{blame, Ended, Location, Stage};
use crate::cli::output::{Ended as Summary, Gauge, Progress, ProgressMode};
use crate::cli::{ExitCode, Failure};
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The first SIGINT, SIGTERM or SIGHUP received (0: none yet).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Catch SIGINT, SIGTERM and SIGHUP from now on, so a run can release its holds and report.
pub fn catch_signals() -> Result<(), Failure> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| Failure::new(ExitCode::Internal, format!("cannot catch signals: {e}")))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(n) = signals.forever().next() {
                let _ = SIGNAL.compare_exchange(0, n, Ordering::SeqCst, Ordering::SeqCst);
            }
        })
        .map(|_| ())
        .map_err(|e| Failure::new(ExitCode::Internal, format!("cannot start the signal thread: {e}")))
}

/// `Err` once a signal arrived: stop before starting anything new.
pub fn check_signal() -> Result<(), Failure> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => Ok(()),
        n => Err(Failure::new(
            ExitCode::Signal(n),
            format!("stopped by signal {n}; the target keeps its last good snapshot"),
        )),
    }
}

/// Run the stages of one transfer; the bytes `zfs send` produced on success. With `idle`,
/// a stream that stops moving for that long (while the first stage still has bytes for the
/// next: an ssh or zfs recv that stopped reading) kills every stage: exit 69. Progress is
/// of the bytes the next stage took, against `estimate` (`zfs send -nP`) when there is one.
pub fn run(
    stages: &[Stage],
    target: &Location,
    what: &str,
    (mode, estimate): (ProgressMode, Option<u64>),
    idle: Option<Duration>,
) -> Result<u64, Failure> {
    check_signal()?;
    let start = Instant::now();
    let mut children: Vec<Child> = Vec::with_capacity(stages.len());
    let progress = Progress::new(mode).with_total(estimate);
    let spawned = spawn_all(stages, &mut children, progress.bytes.clone());
    let (copier, errs) = match spawned {
        Ok(v) => v,
        Err(f) => {
            for c in &mut children {
                let _ = c.kill();
                let _ = c.wait();
            }
            return Err(f.context(what));
        }
    };
    let (copier, counted) = copier;
    let ticker = progress.start(Gauge { prefix: format!("zsync-ssh: {what}: "), verb: "sent", stored: None });
    let first = &stages[0].name;
    let next = stages.get(1).map_or("the next stage", |s| s.name.as_str());
    let mut status = vec![None; children.len()];
    let mut killed = false;
    let mut stalled = None;
    let mut moved = (0u64, Instant::now());
    while status.iter().any(Option::is_none) {
        if !killed && SIGNAL.load(Ordering::SeqCst) != 0 {
            for c in &mut children {
                let _ = c.kill();
            }
            killed = true;
        }
        // Idle: bytes counted only once the next stage took them, so a reader that stopped
        // shows as a count that stops while the copier is still at work.
        let n = counted.bytes.load(Ordering::Relaxed);
        if n != moved.0 {
            moved = (n, Instant::now());
        }
        if let Some(limit) = idle.filter(|_| !killed && !copier.is_finished()) {
            if moved.1.elapsed() >= limit {
                for c in &mut children {
                    let _ = c.kill();
                }
                killed = true;
                // Blocked writing: the reader stopped; blocked reading: the producer did.
                stalled = Some((limit, counted.writing.load(Ordering::Relaxed)));
            }
        }
        for (i, c) in children.iter_mut().enumerate() {
            if status[i].is_none() {
                match c.try_wait() {
                    Ok(Some(s)) => status[i] = Some(s),
                    Ok(None) => {}
                    Err(e) => {
                        return Err(Failure::new(
                            ExitCode::Internal,
                            format!("{what}: waiting for {}: {e}", stages[i].name),
                        ))
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let bytes = copier.join().unwrap_or(0);
    check_signal()?;
    if let Some((limit, writing)) = stalled {
        let who = match writing {
            true => format!("{next} stopped reading"),
            false => format!("{first} stopped writing"),
        };
        return Err(Failure::new(
            ExitCode::Unreachable,
            format!(
                "{what}: no byte moved for {}s (--idle-timeout): {who}, so every stage was killed; the target \
                 keeps its last good snapshot",
                limit.as_secs()
            ),
        ));
    }
    let ended: Vec<Ended> = status
        .into_iter()
        .zip(errs)
        .map(|(s, e)| {
            use std::os::unix::process::ExitStatusExt;
            let s = s.unwrap_or_default();
            Ended { code: s.code(), signal: s.signal(), stderr: e.join().unwrap_or_default() }
        })
        .collect();
    if let Some(f) = blame(stages, &ended, target, what) {
        return Err(f);
    }
    ticker.finish(Summary { done: bytes, stored: 0, elapsed: Some(start.elapsed()), extra: String::new() });
    Ok(bytes)
}

/// What the copier between the first two stages has done: bytes the next stage took (the
/// progress line's counter), and whether it is waiting for that stage to take more (else
/// for the first to give more).
struct Flow {
    bytes: Arc<AtomicU64>,
    writing: AtomicBool,
}

type Copier = (JoinHandle<u64>, Arc<Flow>);

/// Start every stage, wired stdout to stdin, with this process copying from the first stage
/// to the second. Returns the copier and one stderr collector per stage.
fn spawn_all(
    stages: &[Stage],
    children: &mut Vec<Child>,
    bytes: Arc<AtomicU64>,
) -> Result<(Copier, Vec<JoinHandle<String>>), Failure> {
    let mut errs = Vec::with_capacity(stages.len());
    let mut prev: Option<ChildStdout> = None;
    let mut first_out: Option<ChildStdout> = None;
    let mut second_in: Option<ChildStdin> = None;
    for (i, stage) in stages.iter().enumerate() {
        let last = i + 1 == stages.len();
        let stdin = match (i, prev.take()) {
            (0, _) => Stdio::null(),
            (1, _) => Stdio::piped(),
            (_, Some(out)) => Stdio::from(out),
            (_, None) => Stdio::null(),
        };
        // Progress is ours to draw: an s3get stage drawing its own would land in the stderr
        // collected for the failure message.
        let mut child = Command::new(&stage.argv[0])
            .args(&stage.argv[1..])
            .env_remove("ZSNAP_PROGRESS")
            .stdin(stdin)
            .stdout(if last { Stdio::null() } else { Stdio::piped() })
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Failure::new(ExitCode::Failure, format!("cannot start {}: {e}", stage.name)))?;
        if i == 1 {
            second_in = child.stdin.take();
        }
        let out = child.stdout.take();
        if i == 0 {
            first_out = out;
        } else {
            prev = out;
        }
        let err = child.stderr.take();
        errs.push(std::thread::spawn(move || collect(err)));
        children.push(child);
    }
    let (Some(from), Some(to)) = (first_out, second_in) else {
        return Err(Failure::new(ExitCode::Internal, "pipeline has fewer than two stages"));
    };
    let counted = Arc::new(Flow { bytes, writing: AtomicBool::new(false) });
    let c = counted.clone();
    let copier = std::thread::spawn(move || copy(from, to, &c));
    Ok(((copier, counted), errs))
}

/// Copy until end of input or until the next stage stops reading (then dropping our end
/// of `zfs send`'s pipe stops it too).
fn copy(mut from: ChildStdout, mut to: ChildStdin, flow: &Flow) -> u64 {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // Counted in pipe-sized pieces, so a slow reader still shows as moving to
                // the idle timeout.
                flow.writing.store(true, Ordering::Relaxed);
                for piece in buf[..n].chunks(64 << 10) {
                    if to.write_all(piece).is_err() {
                        return flow.bytes.load(Ordering::Relaxed);
                    }
                    flow.bytes.fetch_add(piece.len() as u64, Ordering::Relaxed);
                }
                flow.writing.store(false, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    flow.bytes.load(Ordering::Relaxed)
}

/// A stage's stderr, keeping at most the last 64 KiB.
pub(super) fn collect(err: Option<std::process::ChildStderr>) -> String {
    let Some(mut err) = err else { return String::new() };
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = err.read(&mut buf) {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 64 << 10 {
            kept.drain(..kept.len() - (64 << 10));
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}
