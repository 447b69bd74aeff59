//! Streaming stdin (or a producer's stdout) to one S3 object.
//!
//! Invariants:
//! - Memory: at most `concurrency + 1` part buffers exist, reused from a pool.
//! - Every part but the last is `part_size` bytes; the stream never needs part
//!   `max_parts + 1` (we fail before reading it into a part).
//! - Nothing becomes visible unless the whole stream was read, the producer (with
//!   `--exec`) exited 0, and every part was stored: on any error or signal the multipart
//!   upload is aborted; a single PUT is only sent once EOF is seen.
//! - With a stream gate (`--zfs-stream`) every raw byte passes the gate before it is
//!   compressed or filtered, and the end of the stream is only handed to the uploader
//!   (which then completes the upload or sends the single PUT) once the gate accepted the
//!   whole stream and the producer and filter exited 0.

use super::client::Client;
use super::error::{cause_chain, failure};
use super::part_size::PartPlan;
use super::{meta, S3Url};
use crate::cli::output::Progress;
use crate::cli::{ExitCode, Failure};
use crate::compress::{Codec, Compressor};
use crate::zfs::stream::{StreamError, StreamGate, StreamSummary};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumType, CompletedMultipartUpload, CompletedPart, ObjectLockMode, StorageClass,
};
use bytes::Bytes;
use std::collections::HashMap;
use std::future::Future;
use std::io::{Read, Write};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Where the bytes come from.
#[derive(Debug, PartialEq, Eq)]
pub enum Source {
    Stdin,
    /// A shell pipeline run by `bash -o pipefail -c`; its exit status decides the commit.
    Exec(String),
}

/// Everything decided before the first byte is read.
pub struct UploadSpec {
    pub url: S3Url,
    pub plan: PartPlan,
    pub concurrency: usize,
    pub metadata: Vec<(String, String)>,
    pub storage_class: Option<String>,
    pub content_type: Option<String>,
    pub lock_mode: Option<String>,
    pub lock_until: Option<aws_smithy_types::DateTime>,
    pub allow_empty: bool,
    /// Send x-amz-checksum-crc32 per part and the whole-object CRC32 at completion.
    pub checksums: bool,
    /// Verify the input as a raw `zfs send` stream (`--zfs-stream`), with these
    /// expectations about the snapshot.
    pub gate: Option<GateSpec>,
    /// In-process compression applied after the gate.
    pub codec: Codec,
    /// Worker threads for zstd and gzip.
    pub threads: usize,
    /// A command the (gated) stream goes through instead of `codec` (`--filter`).
    pub filter: Option<String>,
}

/// What the stream gate must see besides a whole stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateSpec {
    pub expect_guid: Option<u64>,
    pub expect_from: Option<u64>,
    /// Refuse a stream that is not raw (`zfs send -w`).
    pub expect_raw: bool,
}

/// What was stored, for the JSON line on stdout.
#[derive(Debug)]
pub struct UploadReport {
    pub bytes: u64,
    pub parts: u32,
    pub crc32: u32,
    pub part_size: u64,
    pub elapsed: Duration,
    pub multipart: bool,
    /// Bytes read from the source, before compression or filtering.
    pub input_bytes: u64,
    /// What the stream gate saw (with `--zfs-stream`).
    pub stream: Option<StreamSummary>,
}

/// The end of a stream that may be committed: sizes, CRC32 and the gate's summary.
#[derive(Debug)]
struct Ended {
    bytes: u64,
    crc32: u32,
    input_bytes: u64,
    stream: Option<StreamSummary>,
}

/// A filled part, or the end of the stream, as the reader thread hands them over.
enum Chunk {
    Part {
        number: u32,
        data: Vec<u8>,
        crc: u32,
    },
    /// Only sent once everything that decides the commit has said yes.
    End(Ended),
    Failed(Failure),
}

/// Upload `source` to `spec.url`. `cancel` resolves to a signal number when the user
/// interrupts; the upload is then aborted and a `Signal` failure returned.
pub async fn upload(
    client: &Client,
    spec: &UploadSpec,
    source: Source,
    progress: &Progress,
    cancel: impl Future<Output = i32>,
) -> Result<UploadReport, Failure> {
    let start = Instant::now();
    let part_size = spec.plan.part_size as usize;
    let pool = BufferPool::new(spec.concurrency + 1);
    let (tx, mut rx) = mpsc::channel::<Chunk>(1);
    let reader = Reader {
        part_size,
        max_parts: spec.plan.max_parts,
        pool: pool.clone(),
        tx,
        gate: spec.gate,
        codec: spec.codec,
        threads: spec.threads,
        filter: spec.filter.clone(),
        allow_empty: spec.allow_empty,
        input: progress.input.clone(),
    };
    let producer = match &source {
        Source::Stdin => None,
        Source::Exec(cmd) => Some((spawn_producer(cmd)?, cmd.clone())),
    };
    std::thread::Builder::new()
        .name("s3put-reader".into())
        .spawn(move || reader.run(producer))
        .map_err(|e| Failure::new(ExitCode::Internal, format!("cannot start reader thread: {e}")))?;

    tokio::pin!(cancel);
    let interrupted =
        |n: i32| Failure::new(ExitCode::Signal(n), format!("interrupted by signal {n}; nothing was stored"));

    // Read the first two chunks: a stream that ends within one part goes up as one PUT.
    let first = tokio::select! { c = rx.recv() => c, n = &mut cancel => return Err(interrupted(n)) };
    let first = first.ok_or_else(reader_vanished)?;
    let (data, crc, ended) = match first {
        Chunk::Failed(f) => return Err(f),
        Chunk::End(ended) => {
            if !spec.allow_empty {
                return Err(Failure::new(
                    ExitCode::StreamCut,
                    "stdin is empty: refusing to store an empty object (--allow-empty allows it)",
                ));
            }
            (Vec::new(), 0, ended)
        }
        Chunk::Part { data, crc, .. } => {
            let second = tokio::select! { c = rx.recv() => c, n = &mut cancel => return Err(interrupted(n)) };
            match second.ok_or_else(reader_vanished)? {
                Chunk::Failed(f) => return Err(f),
                Chunk::End(ended) => (data, crc, ended),
                Chunk::Part { number, data: d2, crc: c2 } => {
                    let held = vec![(1, data, crc), (number, d2, c2)];
                    let ctx = PartsCtx { client, spec, pool, progress };
                    return multipart(ctx, held, rx, cancel, start).await;
                }
            }
        }
    };
    let bytes = data.len() as u64;
    let put = single_put(client, spec, data, crc);
    let sent = tokio::select! { r = put => r, n = &mut cancel => return Err(interrupted(n)) };
    sent?;
    progress.add(bytes);
    Ok(UploadReport {
        bytes,
        parts: 1,
        crc32: crc,
        part_size: spec.plan.part_size,
        elapsed: start.elapsed(),
        multipart: false,
        input_bytes: ended.input_bytes,
        stream: ended.stream,
    })
}

fn reader_vanished() -> Failure {
    Failure::new(ExitCode::Internal, "reader thread ended without a result")
}

async fn single_put(client: &Client, spec: &UploadSpec, data: Vec<u8>, crc: u32) -> Result<(), Failure> {
    let mut md = user_metadata(spec);
    // Known up front for a single PUT, so a reader can verify the whole object.
    md.insert(meta::CRC32.into(), format!("{crc:08x}"));
    md.insert(meta::BYTES.into(), data.len().to_string());
    let req = client
        .put_object()
        .bucket(&spec.url.bucket)
        .key(&spec.url.key)
        .set_metadata(Some(md))
        .content_type(spec.content_type.as_deref().unwrap_or("application/octet-stream"))
        .set_storage_class(spec.storage_class.as_deref().map(StorageClass::from))
        .set_object_lock_mode(spec.lock_mode.as_deref().map(ObjectLockMode::from))
        .set_object_lock_retain_until_date(spec.lock_until)
        .body(ByteStream::from(data));
    let sent = if spec.checksums {
        // The signed CRC32 header lets the server verify the body, so SigV4 need not
        // SHA-256 it too (that hash would cost more CPU than the whole upload). Naming the
        // algorithm too (x-amz-sdk-checksum-algorithm) is what S3 requires of a PUT with
        // Object Lock, in place of Content-MD5.
        req.checksum_algorithm(ChecksumAlgorithm::Crc32)
            .checksum_crc32(crc_b64(crc))
            .customize()
            .disable_payload_signing()
            .send()
            .await
    } else {
        req.send().await
    };
    sent.map_err(|e| failure(format!("upload of {} failed", spec.url), &e))?;
    Ok(())
}

fn user_metadata(spec: &UploadSpec) -> HashMap<String, String> {
    let mut md: HashMap<String, String> = spec.metadata.iter().cloned().collect();
    if spec.codec != Codec::None && spec.filter.is_none() {
        md.insert(meta::COMPRESSOR.into(), spec.codec.name().into());
    }
    md
}

/// Base64 of the big-endian CRC32, as `x-amz-checksum-crc32` wants it.
pub fn crc_b64(crc: u32) -> String {
    aws_smithy_types::base64::encode(crc.to_be_bytes())
}

struct PartsCtx<'a> {
    client: &'a Client,
    spec: &'a UploadSpec,
    pool: BufferPool,
    progress: &'a Progress,
}

async fn multipart(
    ctx: PartsCtx<'_>,
    held: Vec<(u32, Vec<u8>, u32)>,
    rx: mpsc::Receiver<Chunk>,
    cancel: impl Future<Output = i32>,
    start: Instant,
) -> Result<UploadReport, Failure> {
    let spec = ctx.spec;
    let client = ctx.client;
    let mut md = user_metadata(spec);
    md.insert(meta::PART_SIZE.into(), spec.plan.part_size.to_string());
    let mut create = client
        .create_multipart_upload()
        .bucket(&spec.url.bucket)
        .key(&spec.url.key)
        .set_metadata(Some(md))
        .content_type(spec.content_type.as_deref().unwrap_or("application/octet-stream"))
        .set_storage_class(spec.storage_class.as_deref().map(StorageClass::from))
        .set_object_lock_mode(spec.lock_mode.as_deref().map(ObjectLockMode::from))
        .set_object_lock_retain_until_date(spec.lock_until);
    if spec.checksums {
        create = create.checksum_algorithm(ChecksumAlgorithm::Crc32).checksum_type(ChecksumType::FullObject);
    }
    let created = create.send().await.map_err(|e| failure(format!("upload of {} failed", spec.url), &e))?;
    let upload_id = created
        .upload_id()
        .ok_or_else(|| Failure::new(ExitCode::Protocol, "server returned no upload id"))?
        .to_string();

    tokio::pin!(cancel);
    let outcome = tokio::select! {
        r = send_parts(&ctx, &upload_id, held, rx, start) => r,
        n = &mut cancel => Err(Failure::new(ExitCode::Signal(n), format!("interrupted by signal {n}"))),
    };
    match outcome {
        Ok(report) => Ok(report),
        Err(f) => Err(abort(client, &spec.url, &upload_id, f).await),
    }
}

/// Abort the upload after a failure and say in the message whether that worked.
async fn abort(client: &Client, url: &S3Url, upload_id: &str, f: Failure) -> Failure {
    let req = client.abort_multipart_upload().bucket(&url.bucket).key(&url.key).upload_id(upload_id).send();
    // The server may be the thing that failed; do not hang on it.
    let res = tokio::time::timeout(Duration::from_secs(30), req).await;
    let note = match res {
        Ok(Ok(_)) => "upload aborted, nothing stored".to_string(),
        Ok(Err(e)) => format!(
            "could not abort upload {upload_id} ({}); nothing is visible, run `s3put --abort-uploads {url}` once the server is back",
            cause_chain(&e)
        ),
        Err(_) => format!(
            "abort of upload {upload_id} timed out; nothing is visible, run `s3put --abort-uploads {url}` once the server is back"
        ),
    };
    Failure::new(f.code, format!("{}; {note}", f.message))
}

async fn send_parts(
    ctx: &PartsCtx<'_>,
    upload_id: &str,
    held: Vec<(u32, Vec<u8>, u32)>,
    mut rx: mpsc::Receiver<Chunk>,
    start: Instant,
) -> Result<UploadReport, Failure> {
    let spec = ctx.spec;
    let mut running: JoinSet<Result<CompletedPart, Failure>> = JoinSet::new();
    let mut done: Vec<CompletedPart> = Vec::new();
    let mut held = held.into_iter();
    let end = loop {
        while running.len() >= spec.concurrency.max(1) {
            done.push(join_one(&mut running).await?);
        }
        let chunk = match held.next() {
            Some((number, data, crc)) => Chunk::Part { number, data, crc },
            None => rx.recv().await.ok_or_else(reader_vanished)?,
        };
        match chunk {
            Chunk::Part { number, data, crc } => {
                let job = PartJob {
                    client: ctx.client.clone(),
                    url: spec.url.clone(),
                    upload_id: upload_id.to_string(),
                    number,
                    crc,
                    checksums: spec.checksums,
                    pool: ctx.pool.clone(),
                    progress: ctx.progress.clone(),
                };
                running.spawn(job.run(data));
            }
            Chunk::End(ended) => break ended,
            Chunk::Failed(f) => return Err(f),
        }
    };
    while !running.is_empty() {
        done.push(join_one(&mut running).await?);
    }
    let Ended { bytes, crc32, input_bytes, stream } = end;
    done.sort_by_key(|p| p.part_number());
    let parts = done.len() as u32;
    let mut complete = ctx
        .client
        .complete_multipart_upload()
        .bucket(&spec.url.bucket)
        .key(&spec.url.key)
        .upload_id(upload_id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(done)).build())
        // The server refuses to complete if the parts add up to another size (AWS checks this).
        .mpu_object_size(bytes as i64);
    if spec.checksums {
        complete = complete.checksum_crc32(crc_b64(crc32)).checksum_type(ChecksumType::FullObject);
    }
    complete.send().await.map_err(|e| failure(format!("completing upload of {} failed", spec.url), &e))?;
    Ok(UploadReport {
        bytes,
        parts,
        crc32,
        part_size: spec.plan.part_size,
        elapsed: start.elapsed(),
        multipart: true,
        input_bytes,
        stream,
    })
}

async fn join_one(running: &mut JoinSet<Result<CompletedPart, Failure>>) -> Result<CompletedPart, Failure> {
    match running.join_next().await {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(Failure::new(ExitCode::Internal, format!("part upload task failed: {e}"))),
        None => Err(Failure::new(ExitCode::Internal, "no part upload running")),
    }
}

/// One part on its way up; owns what it needs so it can run as a task.
struct PartJob {
    client: Client,
    url: S3Url,
    upload_id: String,
    number: u32,
    crc: u32,
    checksums: bool,
    pool: BufferPool,
    progress: Progress,
}

impl PartJob {
    async fn run(self, data: Vec<u8>) -> Result<CompletedPart, Failure> {
        let len = data.len() as u64;
        let body = Bytes::from(data);
        let req = self
            .client
            .upload_part()
            .bucket(&self.url.bucket)
            .key(&self.url.key)
            .upload_id(&self.upload_id)
            .part_number(self.number as i32)
            .content_length(len as i64)
            .body(ByteStream::from(body.clone()));
        let sent = if self.checksums {
            // As for a single PUT: the signed CRC32 header covers the body, not SHA-256.
            req.checksum_crc32(crc_b64(self.crc)).customize().disable_payload_signing().send().await
        } else {
            req.send().await
        };
        // The SDK has dropped its clones of the body by now; take the buffer back.
        self.pool.give(body.try_into_mut().map(Vec::from).unwrap_or_default());
        let out = sent.map_err(|e| failure(format!("upload of part {} of {} failed", self.number, self.url), &e))?;
        self.progress.add(len);
        let etag = out.e_tag().ok_or_else(|| {
            Failure::new(ExitCode::Protocol, format!("server returned no ETag for part {}", self.number))
        })?;
        let mut part = CompletedPart::builder().part_number(self.number as i32).e_tag(etag);
        if self.checksums {
            part = part.checksum_crc32(crc_b64(self.crc));
        }
        Ok(part.build())
    }
}

/// A fixed number of part buffers. Taking one blocks while all are in flight, which is
/// what bounds memory to `slots × part_size`.
#[derive(Clone)]
struct BufferPool {
    free_tx: std_mpsc::Sender<Vec<u8>>,
    free_rx: Arc<Mutex<std_mpsc::Receiver<Vec<u8>>>>,
}

impl BufferPool {
    fn new(slots: usize) -> Self {
        let (free_tx, free_rx) = std_mpsc::channel();
        for _ in 0..slots {
            // Empty until first use: a small stream never allocates all slots.
            let _ = free_tx.send(Vec::new());
        }
        BufferPool { free_tx, free_rx: Arc::new(Mutex::new(free_rx)) }
    }

    /// Block until a buffer is free. `None` if the pool is gone (the upload ended).
    fn take(&self) -> Option<Vec<u8>> {
        let rx = self.free_rx.lock().ok()?;
        rx.recv().ok()
    }

    fn give(&self, buf: Vec<u8>) {
        let _ = self.free_tx.send(buf);
    }
}

/// The blocking side: fills part buffers from the source and hands them over in order.
struct Reader {
    part_size: usize,
    max_parts: u32,
    pool: BufferPool,
    tx: mpsc::Sender<Chunk>,
    gate: Option<GateSpec>,
    codec: Codec,
    threads: usize,
    filter: Option<String>,
    allow_empty: bool,
    /// Source bytes read so far, for progress.
    input: Arc<AtomicU64>,
}

/// Counts what passes through it into a shared counter.
struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Why reading the source stopped before its end.
#[derive(Debug)]
enum Stop {
    /// The gate refused bytes (our decision; the producer may die of SIGPIPE because of it).
    Gate(StreamError),
    /// Reading the source failed.
    Read(std::io::Error),
    /// The uploader or compressor refused bytes (too many parts, upload ended).
    Sink(Failure),
    /// The filter closed its stdin before taking the whole stream.
    FilterClosed,
}

/// Everything that decides whether a stream may be committed, gathered once the source,
/// filter and producer are done. See [`verdict`] for the order they are weighed in.
struct Outcome {
    stop: Option<Stop>,
    /// Exit of `--filter` (`Err(description)` if it failed), with its command.
    filter: Option<(String, Result<(), String>)>,
    /// Exit of `--exec`, likewise.
    producer: Option<(String, Result<(), String>)>,
    /// The gate's verdict at the end of input (only when reading got to the end).
    finish: Option<Result<StreamSummary, StreamError>>,
    input_bytes: u64,
    allow_empty: bool,
}

/// Decide the commit. The first cause wins: a refusal we made mid-stream (the producer
/// dying of SIGPIPE after it is a consequence), then a failed filter (same reason), then
/// a failed producer, then the gate's verdict on the end of the stream, then emptiness.
fn verdict(o: Outcome) -> Result<Option<StreamSummary>, Failure> {
    let failed = |what: &str, cmd: &str, how: &str, tail: &str| {
        Failure::new(ExitCode::StreamCut, format!("{what} `{cmd}` {how}: {tail}"))
    };
    match o.stop {
        Some(Stop::Gate(e)) => return Err(e.into()),
        Some(Stop::Sink(f)) => return Err(f),
        Some(Stop::Read(e)) => return Err(Failure::new(ExitCode::LocalIo, format!("reading stdin failed: {e}"))),
        Some(Stop::FilterClosed) | None => {}
    }
    if let Some((cmd, Err(how))) = &o.filter {
        return Err(failed("filter", cmd, how, "nothing was committed"));
    }
    if let Some((cmd, Err(how))) = &o.producer {
        return Err(failed("producer", cmd, how, "the stream is cut, nothing was committed"));
    }
    if matches!(o.stop, Some(Stop::FilterClosed)) {
        let cmd = o.filter.as_ref().map(|f| f.0.as_str()).unwrap_or("?");
        return Err(failed("filter", cmd, "stopped reading its input before the end", "nothing was committed"));
    }
    let summary = match o.finish {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => return Err(e.into()),
        None => None,
    };
    if o.input_bytes == 0 && !o.allow_empty {
        return Err(Failure::new(
            ExitCode::StreamCut,
            "stdin is empty: refusing to store an empty object (--allow-empty allows it)",
        ));
    }
    Ok(summary)
}

impl Reader {
    /// Reading, verifying and compressing happen here and in the threads this starts.
    fn plain(&self) -> bool {
        self.gate.is_none() && self.codec == Codec::None && self.filter.is_none()
    }

    fn run(self, producer: Option<(Child, String)>) {
        let msg = if self.plain() {
            match self.run_plain(producer) {
                Ok((bytes, crc32)) => Chunk::End(Ended { bytes, crc32, input_bytes: bytes, stream: None }),
                Err(f) => Chunk::Failed(f),
            }
        } else {
            match self.run_pipeline(producer) {
                Ok(ended) => Chunk::End(ended),
                Err(f) => Chunk::Failed(f),
            }
        };
        let _ = self.tx.blocking_send(msg);
    }

    fn run_plain(&self, producer: Option<(Child, String)>) -> Result<(u64, u32), Failure> {
        match producer {
            None => self.read_all(&mut std::io::stdin().lock()),
            Some((mut child, cmd)) => {
                let res = match child.stdout.take() {
                    Some(mut out) => self.read_all(&mut out),
                    None => Err(Failure::new(ExitCode::Internal, "producer has no stdout")),
                };
                // EOF alone proves nothing: a killed producer closes its stdout too.
                match (res, child.wait()) {
                    (Err(f), _) => {
                        let _ = child.kill();
                        Err(f)
                    }
                    (Ok(end), Ok(status)) if status.success() => Ok(end),
                    (Ok(_), Ok(status)) => Err(Failure::new(
                        ExitCode::StreamCut,
                        format!(
                            "producer `{cmd}` {}: the stream is cut, nothing was committed",
                            describe_status(status)
                        ),
                    )),
                    (Ok(_), Err(e)) => Err(Failure::new(ExitCode::StreamCut, format!("cannot wait for producer: {e}"))),
                }
            }
        }
    }

    /// Source → gate → codec or filter → parts. The end is only reported as committable
    /// when [`verdict`] says so.
    fn run_pipeline(&self, producer: Option<(Child, String)>) -> Result<Ended, Failure> {
        let (mut child, cmd) = match producer {
            Some((c, cmd)) => (Some(c), Some(cmd)),
            None => (None, None),
        };
        let src: Box<dyn Read + Send> = match child.as_mut() {
            Some(c) => match c.stdout.take() {
                Some(out) => Box::new(Counted { inner: out, count: self.input.clone() }),
                None => return Err(Failure::new(ExitCode::Internal, "producer has no stdout")),
            },
            None => Box::new(Counted { inner: std::io::stdin(), count: self.input.clone() }),
        };
        let gate = self.gate.map(|g| StreamGate::expecting(g.expect_guid, g.expect_from).requiring_raw(g.expect_raw));
        let mut parts = PartWriter::new(self);
        let (pumped, filter) = match &self.filter {
            None => (self.compress(src, gate, &mut parts), None),
            Some(fcmd) => {
                let (pumped, status) = self.through_filter(fcmd, src, gate, &mut parts)?;
                (pumped, Some((fcmd.clone(), status)))
            }
        };
        let producer = match (child.as_mut(), cmd) {
            (Some(c), Some(cmd)) => {
                if pumped.stop.is_some() {
                    // We stopped reading for a reason of our own; a producer that ignores
                    // the closed pipe must not keep us waiting (the verdict names our reason).
                    let _ = c.kill();
                }
                Some((cmd, wait_status(c)))
            }
            _ => None,
        };
        let finish = if pumped.stop.is_none() { pumped.gate.map(StreamGate::finish) } else { None };
        let stream = verdict(Outcome {
            stop: pumped.stop,
            filter,
            producer,
            finish,
            input_bytes: pumped.input_bytes,
            allow_empty: self.allow_empty,
        })?;
        let (bytes, crc32) = parts.finish()?;
        Ok(Ended { bytes, crc32, input_bytes: pumped.input_bytes, stream })
    }

    /// In process: gate, then codec, into the part buffers.
    fn compress(&self, mut src: Box<dyn Read + Send>, mut gate: Option<StreamGate>, parts: &mut PartWriter) -> Pumped {
        let mut enc = match Compressor::new(self.codec, self.threads, &mut *parts) {
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
    /// this one reads its output into parts (two threads, or the pipes would deadlock).
    fn through_filter(
        &self,
        cmd: &str,
        mut src: Box<dyn Read + Send>,
        mut gate: Option<StreamGate>,
        parts: &mut PartWriter,
    ) -> Result<(Pumped, Result<(), String>), Failure> {
        let mut child = Command::new("bash")
            .args(["-o", "pipefail", "-c", cmd])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| Failure::new(ExitCode::LocalIo, format!("cannot start filter `{cmd}`: {e}")))?;
        let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Failure::new(ExitCode::Internal, "filter has no stdin or stdout"));
        };
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
        let out_stop = copy_out(&mut stdout, parts);
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

    /// Returns (bytes, crc32) of the whole stream.
    fn read_all(&self, src: &mut dyn Read) -> Result<(u64, u32), Failure> {
        let mut whole = crc32fast::Hasher::new();
        let mut total: u64 = 0;
        let mut number: u32 = 0;
        loop {
            let Some(mut buf) = self.pool.take() else {
                return Err(Failure::new(ExitCode::Internal, "upload ended while reading"));
            };
            let filled = fill(src, &mut buf, self.part_size)?;
            if filled == 0 {
                self.pool.give(buf);
                return Ok((total, whole.finalize()));
            }
            number += 1;
            if number > self.max_parts {
                return Err(too_many_parts(self.max_parts, self.part_size));
            }
            let mut h = crc32fast::Hasher::new();
            h.update(&buf);
            let crc = h.clone().finalize();
            whole.combine(&h);
            total += filled as u64;
            if self.tx.blocking_send(Chunk::Part { number, data: buf, crc }).is_err() {
                return Err(Failure::new(ExitCode::Internal, "upload ended while reading"));
            }
            if filled < self.part_size {
                return Ok((total, whole.finalize()));
            }
        }
    }
}

fn too_many_parts(max_parts: u32, part_size: usize) -> Failure {
    Failure::new(
        ExitCode::TooLarge,
        format!(
            "stream is larger than {max_parts} parts of {part_size} bytes; raise --expected-size, --part-size or --max-parts"
        ),
    )
}

/// What became of the source: bytes read, why it stopped early (if it did), and the gate
/// (still to be asked for its verdict).
struct Pumped {
    input_bytes: u64,
    stop: Option<Stop>,
    gate: Option<StreamGate>,
}

impl Pumped {
    fn stopped(gate: Option<StreamGate>, stop: Stop) -> Self {
        Pumped { input_bytes: 0, stop: Some(stop), gate }
    }
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

/// The filter's output into the part buffers.
fn copy_out(src: &mut ChildStdout, parts: &mut PartWriter) -> Option<Stop> {
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
        if let Err(e) = parts.write_all(&buf[..n]) {
            return Some(Stop::Sink(sink_failure(e, "storing the filter's output failed")));
        }
    }
}

/// An I/O error from a writer chain ending in a [`PartWriter`] carries the uploader's
/// own `Failure` (e.g. too many parts); anything else is a compressor failure.
fn sink_failure(e: std::io::Error, what: &str) -> Failure {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Failure>()) {
        Some(f) => Failure::new(f.code, f.message.clone()),
        None => Failure::new(ExitCode::Internal, format!("{what}: {e}")),
    }
}

fn wait_status(child: &mut Child) -> Result<(), String> {
    match child.wait() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(describe_status(s)),
        Err(e) => Err(format!("could not be waited for ({e})")),
    }
}

/// A `Write` that cuts what it is given into parts from the pool and hands them to the
/// uploader, like `read_all` does for the plain path.
struct PartWriter<'a> {
    reader: &'a Reader,
    buf: Option<Vec<u8>>,
    number: u32,
    total: u64,
    whole: crc32fast::Hasher,
}

impl<'a> PartWriter<'a> {
    fn new(reader: &'a Reader) -> Self {
        PartWriter { reader, buf: None, number: 0, total: 0, whole: crc32fast::Hasher::new() }
    }

    fn hand_over(&mut self) -> Result<(), Failure> {
        let Some(buf) = self.buf.take() else { return Ok(()) };
        if buf.is_empty() {
            self.reader.pool.give(buf);
            return Ok(());
        }
        self.number += 1;
        let mut h = crc32fast::Hasher::new();
        h.update(&buf);
        let crc = h.clone().finalize();
        self.whole.combine(&h);
        self.total += buf.len() as u64;
        let part = Chunk::Part { number: self.number, data: buf, crc };
        if self.reader.tx.blocking_send(part).is_err() {
            return Err(Failure::new(ExitCode::Internal, "upload ended while reading"));
        }
        Ok(())
    }

    /// Hand over the last, short part; returns (bytes, crc32) of everything written.
    fn finish(mut self) -> Result<(u64, u32), Failure> {
        self.hand_over()?;
        Ok((self.total, self.whole.clone().finalize()))
    }
}

impl Write for PartWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let part_size = self.reader.part_size;
        if self.buf.is_none() {
            // Fail before the first byte of the part past the limit, as read_all does.
            if self.number >= self.reader.max_parts {
                return Err(std::io::Error::other(too_many_parts(self.reader.max_parts, part_size)));
            }
            let Some(mut b) = self.reader.pool.take() else {
                return Err(std::io::Error::other(Failure::new(ExitCode::Internal, "upload ended while reading")));
            };
            b.clear();
            b.reserve_exact(part_size);
            self.buf = Some(b);
        }
        let Some(buf) = self.buf.as_mut() else { return Ok(0) };
        let n = (part_size - buf.len()).min(data.len());
        buf.extend_from_slice(&data[..n]);
        if buf.len() == part_size {
            self.hand_over().map_err(std::io::Error::other)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Fill `buf` with up to `part_size` bytes (less only at EOF); returns how many.
/// Reads into spare capacity, so buffers are never zeroed first.
fn fill(src: &mut dyn Read, buf: &mut Vec<u8>, part_size: usize) -> Result<usize, Failure> {
    buf.clear();
    buf.reserve_exact(part_size);
    src.take(part_size as u64)
        .read_to_end(buf)
        .map_err(|e| Failure::new(ExitCode::LocalIo, format!("reading stdin failed: {e}")))
}

fn spawn_producer(cmd: &str) -> Result<Child, Failure> {
    Command::new("bash")
        .args(["-o", "pipefail", "-c", cmd])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::new(ExitCode::LocalIo, format!("cannot start producer `{cmd}`: {e}")))
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => format!("ended with {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(part_size: usize, max_parts: u32) -> (Reader, mpsc::Receiver<Chunk>) {
        let (tx, rx) = mpsc::channel(64);
        let r = Reader {
            part_size,
            max_parts,
            pool: BufferPool::new(64),
            tx,
            gate: None,
            codec: Codec::None,
            threads: 1,
            filter: None,
            allow_empty: false,
            input: Default::default(),
        };
        (r, rx)
    }

    fn drain(mut rx: mpsc::Receiver<Chunk>) -> Vec<(u32, usize, u32)> {
        let mut v = Vec::new();
        while let Ok(c) = rx.try_recv() {
            if let Chunk::Part { number, data, crc } = c {
                v.push((number, data.len(), crc));
            }
        }
        v
    }

    #[test]
    fn parts_are_equal_but_the_last_and_crc_combines() {
        let data: Vec<u8> = (0..25u32).map(|i| (i * 7) as u8).collect();
        let (r, rx) = reader(10, 100);
        let (bytes, crc) = r.read_all(&mut &data[..]).unwrap();
        assert_eq!(bytes, 25);
        assert_eq!(crc, crc32fast::hash(&data));
        let parts = drain(rx);
        assert_eq!(parts.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(), vec![(1, 10), (2, 10), (3, 5)]);
        assert_eq!(parts[2].2, crc32fast::hash(&data[20..]));
    }

    #[test]
    fn exact_multiple_ends_without_an_empty_part() {
        let data = [1u8; 20];
        let (r, rx) = reader(10, 100);
        assert_eq!(r.read_all(&mut &data[..]).unwrap().0, 20);
        assert_eq!(drain(rx).len(), 2);
    }

    #[test]
    fn fails_before_the_part_past_the_limit() {
        let data = [1u8; 21];
        let (r, rx) = reader(10, 2);
        let e = r.read_all(&mut &data[..]).unwrap_err();
        assert_eq!(e.code, ExitCode::TooLarge);
        assert!(e.message.contains("--max-parts") && e.message.contains("--expected-size"), "{}", e.message);
        assert_eq!(drain(rx).len(), 2, "part 3 must never be handed over");
        let (r, _rx) = reader(10, 2);
        assert!(r.read_all(&mut &vec![1u8; 20][..]).is_ok(), "exactly at the limit fits");
    }

    fn outcome() -> Outcome {
        Outcome { stop: None, filter: None, producer: None, finish: None, input_bytes: 10, allow_empty: false }
    }

    fn gate_err(data: &[u8]) -> StreamError {
        let mut g = StreamGate::new();
        match g.feed(data) {
            Err(e) => e,
            Ok(()) => g.finish().err().unwrap_or_else(|| panic!("{data:?} verified")),
        }
    }

    #[test]
    fn verdict_weighs_causes_in_order() {
        let failed = |cmd: &str| Some((cmd.to_string(), Err("exited with status 1".to_string())));
        let ok = |cmd: &str| Some((cmd.to_string(), Ok(())));
        assert!(verdict(outcome()).unwrap().is_none());
        // Our mid-stream refusal beats the producer dying of the SIGPIPE it caused.
        let garbage = gate_err(&[7u8; 400]);
        let v = verdict(Outcome { stop: Some(Stop::Gate(garbage)), producer: failed("zfs send"), ..outcome() });
        assert_eq!(v.unwrap_err().code, ExitCode::Data);
        // A failing filter beats the producer it made fail.
        let v = verdict(Outcome {
            stop: Some(Stop::FilterClosed),
            filter: failed("false"),
            producer: failed("zfs send"),
            ..outcome()
        });
        let e = v.unwrap_err();
        assert_eq!(e.code, ExitCode::StreamCut);
        assert!(e.message.starts_with("filter `false` exited with status 1"), "{}", e.message);
        let v = verdict(Outcome { stop: Some(Stop::FilterClosed), filter: ok("head -c 1"), ..outcome() });
        assert!(v.unwrap_err().message.contains("stopped reading its input"));
        // A failed producer beats the gate's "cut" at the end (the cut is its doing).
        let cut = gate_err(&[]);
        let v = verdict(Outcome { producer: failed("zfs send"), finish: Some(Err(cut.clone())), ..outcome() });
        assert!(v.unwrap_err().message.starts_with("producer `zfs send` exited with status 1"));
        let v = verdict(Outcome { producer: ok("zfs send"), finish: Some(Err(cut)), ..outcome() });
        assert_eq!(v.unwrap_err().code, ExitCode::StreamCut);
        // Empty input is refused unless allowed, also when a codec made bytes of it.
        let v = verdict(Outcome { input_bytes: 0, ..outcome() });
        assert!(v.unwrap_err().message.starts_with("stdin is empty"));
        assert!(verdict(Outcome { input_bytes: 0, allow_empty: true, ..outcome() }).is_ok());
    }

    #[test]
    fn part_writer_cuts_parts_and_stops_at_the_limit() {
        let data: Vec<u8> = (0..25u32).map(|i| (i * 7) as u8).collect();
        let (r, rx) = reader(10, 100);
        let mut w = PartWriter::new(&r);
        for piece in data.chunks(3) {
            w.write_all(piece).unwrap();
        }
        let (bytes, crc) = w.finish().unwrap();
        assert_eq!((bytes, crc), (25, crc32fast::hash(&data)));
        assert_eq!(drain(rx).iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(), vec![(1, 10), (2, 10), (3, 5)]);
        let (r, rx) = reader(10, 2);
        let mut w = PartWriter::new(&r);
        let e = w.write_all(&[1u8; 21]).unwrap_err();
        assert_eq!(sink_failure(e, "x").code, ExitCode::TooLarge);
        assert_eq!(drain(rx).len(), 2, "part 3 must never be handed over");
    }

    #[test]
    fn crc_header_is_big_endian_base64() {
        // CRC32 of "123456789" is 0xCBF43926.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc_b64(0xCBF4_3926), "y/Q5Jg==");
    }
}
