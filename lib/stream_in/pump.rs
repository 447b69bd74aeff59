//! Moving the bytes: source → gate → codec (in process) or filter (a child process) →
//! sink. Every byte is fed to the gate before it moves on; a stop is recorded, not
//! returned early, so the verdict can weigh it against how the producer and filter ended.

use super::source::{spawn_filter, wait_status};
use super::verdict::Stop;
use super::PartSink;
use crate::cli::{ExitCode, Failure};
use crate::compress::{Codec, Compressor};
use crate::zfs::stream::StreamGate;
use std::io::{Read, Write};
use std::process::ChildStdout;

/// What became of the source: bytes read, why it stopped early (if it did), and the gate
/// (still to be asked for its verdict).
pub(super) struct Pumped {
    pub(super) input_bytes: u64,
    pub(super) stop: Option<Stop>,
    pub(super) gate: Option<StreamGate>,
}

impl Pumped {
    fn stopped(gate: Option<StreamGate>, stop: Stop) -> Self {
        Pumped { input_bytes: 0, stop: Some(stop), gate }
    }
}

/// In process: gate, then codec, into the sink.
pub(super) fn compress(
    codec: Codec,
    threads: usize,
    mut src: Box<dyn Read + Send>,
    mut gate: Option<StreamGate>,
    sink: &mut dyn PartSink,
) -> Pumped {
    let mut enc = match Compressor::new(codec, threads, &mut *sink) {
        Ok(e) => e,
        Err(e) => return Pumped::stopped(gate, Stop::Sink(sink_failure(e, "cannot start the compressor"))),
    };
    let (input_bytes, stop) = pump(&mut *src, gate.as_mut(), &mut enc);
    // Closing the source now lets a producer we stopped reading die of SIGPIPE
    // instead of blocking on a full pipe while we wait for it.
    drop(src);
    let stop = match stop {
        Some(s) => Some(s),
        None => enc.finish().err().map(|e| Stop::Sink(sink_failure(e, "compressing failed"))),
    };
    Pumped { input_bytes, stop, gate }
}

/// Through `bash -o pipefail -c FILTER`: one thread feeds it the gated stream while
/// this one reads its output into the sink (two threads, or the pipes would deadlock).
pub(super) fn through_filter(
    cmd: &str,
    mut src: Box<dyn Read + Send>,
    mut gate: Option<StreamGate>,
    sink: &mut dyn PartSink,
) -> Result<(Pumped, Result<(), String>), Failure> {
    let (mut child, mut stdin, mut stdout) = spawn_filter(cmd)?;
    let feeder = std::thread::Builder::new().name("s3put-filter-feed".into()).spawn(move || {
        let (n, stop) = pump(&mut *src, gate.as_mut(), &mut stdin);
        // EPIPE here means the filter went away; how it exited tells why.
        let stop = match stop {
            Some(Stop::Sink(_)) => Some(Stop::FilterClosed),
            other => other,
        };
        Pumped { input_bytes: n, stop, gate }
    });
    let feeder = match feeder {
        Ok(f) => f,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Failure::new(ExitCode::Internal, format!("cannot start filter feeder thread: {e}")));
        }
    };
    let out_stop = copy_out(&mut stdout, sink);
    // Stop reading first: a filter blocked on a full stdout must see EPIPE, so the
    // feeder (and the filter) can end before we join them.
    drop(stdout);
    if out_stop.is_some() {
        let _ = child.kill();
    }
    let pumped = feeder.join().unwrap_or_else(|_| {
        Pumped::stopped(None, Stop::Sink(Failure::new(ExitCode::Internal, "filter feeder thread panicked")))
    });
    let status = wait_status(&mut child);
    let mut pumped = pumped;
    if pumped.stop.is_none() {
        pumped.stop = out_stop;
    }
    Ok((pumped, status))
}

/// Copy `src` to `sink` through the gate; every byte is checked before it moves on.
fn pump(src: &mut dyn Read, mut gate: Option<&mut StreamGate>, sink: &mut dyn Write) -> (u64, Option<Stop>) {
    let mut buf = vec![0u8; 1 << 20];
    let mut total: u64 = 0;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return (total, None),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return (total, Some(Stop::Read(e))),
        };
        if let Some(g) = gate.as_deref_mut() {
            if let Err(e) = g.feed(&buf[..n]) {
                return (total, Some(Stop::Gate(e)));
            }
        }
        total += n as u64;
        if let Err(e) = sink.write_all(&buf[..n]) {
            return (total, Some(Stop::Sink(sink_failure(e, "compressing failed"))));
        }
    }
}

/// The filter's output into the sink.
fn copy_out(src: &mut ChildStdout, sink: &mut dyn PartSink) -> Option<Stop> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Some(Stop::Sink(Failure::new(
                    ExitCode::LocalIo,
                    format!("reading the filter's output failed: {e}"),
                )))
            }
        };
        if let Err(e) = sink.write_all(&buf[..n]) {
            return Some(Stop::Sink(sink_failure(e, "storing the filter's output failed")));
        }
    }
}

/// An I/O error from a writer chain ending in the sink carries the sink's own `Failure`
/// (e.g. too many parts); anything else is a compressor failure.
pub(super) fn sink_failure(e: std::io::Error, what: &str) -> Failure {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Failure>()) {
        Some(f) => Failure::new(f.code, f.message.clone()),
        None => Failure::new(ExitCode::Internal, format!("{what}: {e}")),
    }
}
