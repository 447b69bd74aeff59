//! Where a stream to be stored is read: stdin or a producer (`--exec`), through the stream
//! gate, then the in-process codec or a `--filter` command, into a [`PartSink`] (s3put's
//! part writer). And where its commit is decided: [`Opened::read_into`] returns `Ok` only
//! when everything that decides the commit said yes; the caller commits only then.
//!
//! Invariants:
//! - With a gate (`--zfs-stream`) every raw byte passes the gate before it is compressed
//!   or filtered.
//! - `Ok` means the source was read to its end, the gate accepted the whole stream, and
//!   the producer and filter exited 0; the first cause that says no is the one reported
//!   (see `verdict.rs`).
//! - Nothing here knows about S3: the sink decides how the bytes are stored.

mod pump;
mod source;
mod verdict;

pub use source::spawn_filter;

use crate::cli::{ExitCode, Failure};
use crate::compress::Codec;
use crate::zfs::stream::{StreamGate, StreamSummary};
use pump::Pumped;
use source::Counted;
use std::io::{Read, Write};
use std::process::Child;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use verdict::Outcome;

/// Where the bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Stdin,
    /// A shell pipeline run by `bash -o pipefail -c`; its exit status decides the commit.
    Exec(String),
}

/// What the stream gate must see besides a whole stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateSpec {
    pub expect_guid: Option<u64>,
    pub expect_from: Option<u64>,
    /// Refuse a stream that is not raw (`zfs send -w`).
    pub expect_raw: bool,
}

/// How the stream is read, decided before the first byte is.
#[derive(Clone, Debug)]
pub struct InputSpec {
    pub source: Source,
    /// Verify the input as a raw `zfs send` stream (`--zfs-stream`), with these
    /// expectations about the snapshot.
    pub gate: Option<GateSpec>,
    /// In-process compression applied after the gate.
    pub codec: Codec,
    /// Worker threads for zstd and gzip.
    pub threads: usize,
    /// A command the (gated) stream goes through instead of `codec` (`--filter`).
    pub filter: Option<String>,
    /// Accept an empty input (`--allow-empty`).
    pub allow_empty: bool,
    /// Encrypt what the codec or filter gives to these recipients (`--encrypt-to`).
    pub encrypt: Option<crate::crypt::Recipients>,
}

impl InputSpec {
    /// Nothing between the source and the parts: read straight into them.
    fn plain(&self) -> bool {
        self.gate.is_none() && self.codec == Codec::None && self.filter.is_none() && self.encrypt.is_none()
    }
}

/// Gated bytes through the codec or the filter into `sink`.
type Transformed = (Pumped, Option<(String, Result<(), String>)>);
fn transform(
    spec: &InputSpec,
    src: Box<dyn Read + Send>,
    gate: Option<StreamGate>,
    sink: &mut dyn PartSink,
) -> Result<Transformed, Failure> {
    Ok(match &spec.filter {
        None => (pump::compress(spec.codec, spec.threads, src, gate, sink), None),
        Some(fcmd) => {
            let (pumped, status) = pump::through_filter(fcmd, src, gate, sink)?;
            (pumped, Some((fcmd.clone(), status)))
        }
    })
}

/// The age stage: what arrives on `rx` is encrypted into `sink`, the header first and the
/// last chunk at the end of input (the commit is decided elsewhere, by the verdict).
/// Chunks are sealed on up to `threads` threads.
fn encrypt_into(
    recipients: &crate::crypt::Recipients,
    threads: usize,
    mut rx: crate::compress::channel::ChannelReader,
    sink: &mut (dyn PartSink + Send),
) -> Result<(), Failure> {
    let mut w =
        recipients.encrypt(threads, &mut *sink).map_err(|e| pump::sink_failure(e, "cannot start encrypting"))?;
    // Whole pieces as they arrived, not copied through a small buffer.
    while let Some(piece) = rx.next_piece() {
        w.write_all(&piece).map_err(|e| pump::sink_failure(e, "encrypting failed"))?;
    }
    w.finish().map(|_| ()).map_err(|e| pump::sink_failure(e, "encrypting failed"))
}

/// What feeds the encrypting thread is a pipeline's sink like any other.
impl PartSink for crate::compress::channel::ChannelWriter {
    fn read_from(&mut self, src: &mut dyn Read) -> Result<u64, Failure> {
        std::io::copy(src, self).map_err(|e| pump::sink_failure(e, "encrypting failed"))
    }
}

/// Where the read (and gated, compressed) bytes go. A write error that wraps a
/// [`Failure`] (e.g. too many parts) is reported as that failure.
pub trait PartSink: Write {
    /// Read `src` to its end straight into the sink's own buffers, for the plain path
    /// where nothing sits between source and sink (no copy); returns the bytes read.
    fn read_from(&mut self, src: &mut dyn Read) -> Result<u64, Failure>;
}

/// What reading found, once the stream may be committed.
#[derive(Debug)]
pub struct Consumed {
    /// Bytes read from the source, before compression or filtering.
    pub input_bytes: u64,
    /// What the stream gate saw (with a gate).
    pub stream: Option<StreamSummary>,
}

/// A source opened (its producer started), to be read on a thread of its own.
pub struct Opened {
    spec: InputSpec,
    producer: Option<(Child, String)>,
    /// Source bytes read so far, for progress.
    input: Arc<AtomicU64>,
}

/// Start reading `spec`'s source: with `--exec`, start the producer now, so a command
/// that cannot start fails before anything is uploaded.
pub fn open(spec: &InputSpec, input: Arc<AtomicU64>) -> Result<Opened, Failure> {
    let producer = match &spec.source {
        Source::Stdin => None,
        Source::Exec(cmd) => Some((source::spawn_producer(cmd)?, cmd.clone())),
    };
    Ok(Opened { spec: spec.clone(), producer, input })
}

impl Opened {
    /// Read the whole source into `sink`. Blocking: reading, verifying and compressing
    /// happen here and in the threads this starts.
    pub fn read_into(self, sink: &mut (dyn PartSink + Send)) -> Result<Consumed, Failure> {
        if self.spec.plain() {
            let input_bytes = self.read_plain(sink)?;
            Ok(Consumed { input_bytes, stream: None })
        } else {
            self.read_pipeline(sink)
        }
    }

    fn read_plain(self, sink: &mut dyn PartSink) -> Result<u64, Failure> {
        // Counted as the pipeline counts, so progress knows how far along the source is.
        let count = self.input;
        match self.producer {
            None => sink.read_from(&mut Counted { inner: std::io::stdin().lock(), count }),
            Some((mut child, cmd)) => {
                let res = match child.stdout.take() {
                    Some(out) => sink.read_from(&mut Counted { inner: out, count }),
                    None => Err(Failure::new(ExitCode::Internal, "producer has no stdout")),
                };
                // EOF alone proves nothing: a killed producer closes its stdout too.
                match (res, child.wait()) {
                    (Err(f), _) => {
                        let _ = child.kill();
                        Err(f)
                    }
                    (Ok(n), Ok(status)) if status.success() => Ok(n),
                    (Ok(_), Ok(status)) => Err(Failure::new(
                        ExitCode::StreamCut,
                        format!(
                            "producer `{cmd}` {}: the stream is cut, nothing was committed",
                            source::describe_status(status)
                        ),
                    )),
                    (Ok(_), Err(e)) => Err(Failure::new(ExitCode::StreamCut, format!("cannot wait for producer: {e}"))),
                }
            }
        }
    }

    /// Source → gate → codec or filter → sink, then [`verdict`].
    fn read_pipeline(self, sink: &mut (dyn PartSink + Send)) -> Result<Consumed, Failure> {
        let Opened { spec, producer, input } = self;
        let (mut child, cmd) = match producer {
            Some((c, cmd)) => (Some(c), Some(cmd)),
            None => (None, None),
        };
        let src: Box<dyn Read + Send> = match child.as_mut() {
            Some(c) => match c.stdout.take() {
                Some(out) => Box::new(Counted { inner: out, count: input.clone() }),
                None => return Err(Failure::new(ExitCode::Internal, "producer has no stdout")),
            },
            None => Box::new(Counted { inner: std::io::stdin(), count: input.clone() }),
        };
        let gate = spec.gate.map(|g| StreamGate::expecting(g.expect_guid, g.expect_from).requiring_raw(g.expect_raw));
        let (pumped, filter) = match &spec.encrypt {
            None => transform(&spec, src, gate, sink)?,
            // On a thread of its own, so encrypting runs beside reading, gating and
            // compressing instead of after them (the only CPU it takes from them is a copy).
            Some(recipients) => std::thread::scope(|scope| -> Result<Transformed, Failure> {
                let (mut tx, rx) = crate::compress::channel::channel(8);
                let threads = spec.threads;
                let worker = scope.spawn(move || encrypt_into(recipients, threads, rx, sink));
                let res = transform(&spec, src, gate, &mut tx);
                // End of input for the encrypting side: it writes the last chunk.
                drop(tx);
                let encrypted = worker
                    .join()
                    .unwrap_or_else(|_| Err(Failure::new(ExitCode::Internal, "encryption thread panicked")));
                let (mut pumped, filter) = res?;
                if let Err(f) = encrypted {
                    // Its own failure (e.g. too many parts) is why the channel closed.
                    if matches!(pumped.stop, None | Some(verdict::Stop::Sink(_))) {
                        pumped.stop = Some(verdict::Stop::Sink(f));
                    }
                }
                Ok((pumped, filter))
            })?,
        };
        let producer = match (child.as_mut(), cmd) {
            (Some(c), Some(cmd)) => {
                if pumped.stop.is_some() {
                    // We stopped reading for a reason of our own; a producer that ignores
                    // the closed pipe must not keep us waiting (the verdict names our reason).
                    let _ = c.kill();
                }
                Some((cmd, source::wait_status(c)))
            }
            _ => None,
        };
        let finish = if pumped.stop.is_none() { pumped.gate.map(StreamGate::finish) } else { None };
        let stream = verdict::verdict(Outcome {
            stop: pumped.stop,
            filter,
            producer,
            finish,
            input_bytes: pumped.input_bytes,
            allow_empty: spec.allow_empty,
        })?;
        Ok(Consumed { input_bytes: pumped.input_bytes, stream })
    }
}
