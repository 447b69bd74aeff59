//! Streaming a stream's parts to one S3 object. What the parts hold is not this module's
//! business: a filler (s3put's input pipeline, `crate::stream_in`) runs on a thread of its
//! own and writes into the [`PartWriter`] it is handed; this side uploads what arrives.
//!
//! Invariants:
//! - Memory: at most `concurrency + 1` part buffers exist, reused from a pool. Each is
//!   grown to the size of the part it is filled with when it is taken, never before, so
//!   the bound is `(concurrency + 1) ×` the current part's size: with the growth schedule
//!   the buffers of a small stream stay 16 MiB however large later parts could be.
//! - Part `n` but the last is exactly `plan.part_size(n)` bytes (equal parts, or the
//!   growth schedule); the stream never needs part `max_parts + 1` (we fail before
//!   reading it into a part).
//! - Nothing becomes visible unless the filler returned `Ok` (it read the whole stream and
//!   everything that decides the commit said yes) and every part was stored: on any error
//!   or signal the multipart upload is aborted; a single PUT is only sent once the end is
//!   handed over, and the end (with the last, short part) only after the filler's `Ok`.
//! - Resuming (`--resume`, [`super::resume`]): the part writer compares each part it cuts
//!   with the part the server already holds under that number; a match goes over as a
//!   [`Chunk::Reused`] (not sent again), a difference fails the filler, which aborts the
//!   upload. With `spec.resume`, an upload that fails in a way the next run can continue
//!   (outage, signal, cut producer) is kept instead of aborted.

use super::client::Client;
use super::error::{cause_chain, failure};
use super::part_size::{PartPlan, Schedule};
use super::resume::{self, PartVerdict, Resume};
use super::{meta, S3Url};
use crate::cli::output::Progress;
use crate::cli::{ExitCode, Failure};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumType, CompletedMultipartUpload, CompletedPart, ObjectLockMode, StorageClass,
};
use bytes::Bytes;
use std::collections::HashMap;
use std::future::Future;
use std::io::{Read, Write};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

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
    /// Store an empty object when the filler hands over no bytes at all.
    pub allow_empty: bool,
    /// Send x-amz-checksum-crc32 per part and the whole-object CRC32 at completion.
    pub checksums: bool,
    /// The in-process compressor of the stored bytes (`zstd`, `gzip`, `lz4`), recorded as
    /// `zsnap-compressor` metadata so a reader knows how to decode them.
    pub compressor: Option<String>,
    /// `--resume`: keep a failed upload for the next run when it can be continued.
    pub resume: bool,
}

/// What was stored, for the JSON line on stdout.
#[derive(Debug)]
pub struct UploadReport {
    pub bytes: u64,
    pub parts: u32,
    pub crc32: u32,
    /// The size of the last part cut (every part's, with equal parts).
    pub part_size: u64,
    pub elapsed: Duration,
    pub multipart: bool,
    /// The in-progress upload this run continued, if it did.
    pub resumed: Option<String>,
    /// Parts the server already held and that were not sent again, and their bytes.
    pub reused_parts: u32,
    pub saved_bytes: u64,
}

/// The end of a stream that may be committed: its size and CRC32.
#[derive(Debug)]
struct Ended {
    bytes: u64,
    crc32: u32,
}

/// A filled part, or the end of the stream, as the filler's thread hands them over.
enum Chunk {
    Part {
        number: u32,
        data: Vec<u8>,
        crc: u32,
    },
    /// A part the server already holds with exactly these bytes (resuming).
    Reused {
        number: u32,
        size: u64,
        crc: u32,
        etag: String,
    },
    /// Only sent once the filler said the stream may be committed.
    End(Ended),
    Failed(Failure),
}

/// Upload what `fill` writes to `spec.url`. `fill` runs on a thread of its own and
/// returns `Ok` only when the stream may be committed; its value comes back beside the
/// report. `cancel` resolves to a signal number when the user interrupts; the upload is
/// then aborted (or, with `spec.resume`, kept) and a `Signal` failure returned. With
/// `resume`, the parts go into that in-progress upload, those the server holds unsent.
pub async fn upload<T, F>(
    client: &Client,
    spec: &UploadSpec,
    resume: Option<Arc<Resume>>,
    progress: &Progress,
    cancel: impl Future<Output = i32>,
    fill: F,
) -> Result<(UploadReport, T), Failure>
where
    T: Send + 'static,
    F: FnOnce(&mut PartWriter) -> Result<T, Failure> + Send + 'static,
{
    let start = Instant::now();
    let pool = BufferPool::new(spec.concurrency + 1);
    let (tx, rx) = mpsc::channel::<Chunk>(1);
    let (filled_tx, filled_rx) = oneshot::channel::<T>();
    let mut parts = PartWriter::new(spec.plan.clone(), pool.clone(), tx.clone());
    parts.resume = resume.clone();
    std::thread::Builder::new()
        .name("s3put-reader".into())
        .spawn(move || {
            // The last, short part goes over only once `fill` said yes. Its value is sent
            // before the end, so it is there once the end has been received.
            let msg = match fill(&mut parts).and_then(|t| Ok((t, parts.finish()?))) {
                Ok((t, (bytes, crc32))) => {
                    let _ = filled_tx.send(t);
                    Chunk::End(Ended { bytes, crc32 })
                }
                Err(f) => Chunk::Failed(f),
            };
            let _ = tx.blocking_send(msg);
        })
        .map_err(|e| Failure::new(ExitCode::Internal, format!("cannot start reader thread: {e}")))?;
    let report = store(client, spec, resume, progress, cancel, pool, rx, start).await?;
    let filled = filled_rx.await.map_err(|_| reader_vanished())?;
    Ok((report, filled))
}

/// Take the chunks as they come: one PUT when the stream ends within one part, else a
/// multipart upload.
#[allow(clippy::too_many_arguments)]
async fn store(
    client: &Client,
    spec: &UploadSpec,
    resume: Option<Arc<Resume>>,
    progress: &Progress,
    cancel: impl Future<Output = i32>,
    pool: BufferPool,
    mut rx: mpsc::Receiver<Chunk>,
    start: Instant,
) -> Result<UploadReport, Failure> {
    tokio::pin!(cancel);
    let interrupted =
        |n: i32| Failure::new(ExitCode::Signal(n), format!("interrupted by signal {n}; nothing was stored"));

    // Read the first two chunks: a stream that ends within one part goes up as one PUT,
    // unless an upload is being continued (its parts are the object's).
    let first = tokio::select! { c = rx.recv() => c, n = &mut cancel => return Err(interrupted(n)) };
    let first = first.ok_or_else(reader_vanished)?;
    match resume {
        Some(r) if !matches!(first, Chunk::End(_)) => {
            let ctx = PartsCtx { client, spec, pool, progress };
            return multipart(ctx, Some(r), vec![first], rx, cancel, start).await;
        }
        _ => {}
    }
    let (data, crc) = match first {
        Chunk::Failed(f) => return Err(f),
        Chunk::Reused { .. } => {
            return Err(Failure::new(ExitCode::Internal, "a part was reused with nothing to resume"))
        }
        Chunk::End(_) => {
            if !spec.allow_empty {
                return Err(Failure::new(
                    ExitCode::StreamCut,
                    "stdin is empty: refusing to store an empty object (--allow-empty allows it)",
                ));
            }
            (Vec::new(), 0)
        }
        Chunk::Part { number, data, crc } => {
            let second = tokio::select! { c = rx.recv() => c, n = &mut cancel => return Err(interrupted(n)) };
            match second.ok_or_else(reader_vanished)? {
                Chunk::Failed(f) => return Err(f),
                Chunk::End(_) => (data, crc),
                second => {
                    let held = vec![Chunk::Part { number, data, crc }, second];
                    let ctx = PartsCtx { client, spec, pool, progress };
                    return multipart(ctx, None, held, rx, cancel, start).await;
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
        part_size: spec.plan.part_size(1),
        elapsed: start.elapsed(),
        multipart: false,
        resumed: None,
        reused_parts: 0,
        saved_bytes: 0,
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
    if let Some(c) = &spec.compressor {
        md.insert(meta::COMPRESSOR.into(), c.clone());
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
    resume: Option<Arc<Resume>>,
    held: Vec<Chunk>,
    rx: mpsc::Receiver<Chunk>,
    cancel: impl Future<Output = i32>,
    start: Instant,
) -> Result<UploadReport, Failure> {
    let spec = ctx.spec;
    let client = ctx.client;
    let upload_id = match &resume {
        Some(r) => r.upload_id.clone(),
        None => create(client, spec).await?,
    };
    tokio::pin!(cancel);
    let outcome = tokio::select! {
        r = send_parts(&ctx, &upload_id, held, rx, start) => r,
        n = &mut cancel => Err(Failure::new(ExitCode::Signal(n), format!("interrupted by signal {n}"))),
    };
    match outcome {
        Ok(mut report) => {
            report.resumed = resume.map(|r| r.upload_id.clone());
            Ok(report)
        }
        // A part that differed from the stored one: that upload is of another stream.
        Err(f) if spec.resume && resume::keep_after(f.code) && resume.is_none_or(|r| r.mismatch().is_none()) => {
            Err(keep(&spec.url, &upload_id, f))
        }
        Err(f) => Err(abort(client, &spec.url, &upload_id, f).await),
    }
}

/// Start a multipart upload; its id.
async fn create(client: &Client, spec: &UploadSpec) -> Result<String, Failure> {
    let mut md = user_metadata(spec);
    // How the parts are cut, so a reader can check each part's CRC32. A grown schedule
    // has its own key: a reader that only knows zsnap-part-size would cut it wrongly.
    let (key, value) = spec.plan.schedule.metadata();
    md.insert(key.into(), value);
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
    Ok(created.upload_id().ok_or_else(|| Failure::new(ExitCode::Protocol, "server returned no upload id"))?.to_string())
}

/// Leave the upload in progress for the next `--resume`, and say so.
fn keep(url: &S3Url, upload_id: &str, f: Failure) -> Failure {
    let note = format!(
        "upload {upload_id} is kept (nothing is visible): `s3put --resume` (the next zsnap-backup) continues it \
         without sending its stored parts again, `s3put --abort-uploads {url}` discards it"
    );
    Failure::new(f.code, format!("{}; {note}", f.message))
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
    held: Vec<Chunk>,
    mut rx: mpsc::Receiver<Chunk>,
    start: Instant,
) -> Result<UploadReport, Failure> {
    let spec = ctx.spec;
    let mut running: JoinSet<Result<CompletedPart, Failure>> = JoinSet::new();
    let mut done: Vec<CompletedPart> = Vec::new();
    let (mut reused_parts, mut saved_bytes) = (0u32, 0u64);
    let mut held = held.into_iter();
    let end = loop {
        while running.len() >= spec.concurrency.max(1) {
            done.push(join_one(&mut running).await?);
        }
        let chunk = match held.next() {
            Some(chunk) => chunk,
            None => rx.recv().await.ok_or_else(reader_vanished)?,
        };
        match chunk {
            Chunk::Reused { number, size, crc, etag } => {
                let mut part = CompletedPart::builder().part_number(number as i32).e_tag(etag);
                if spec.checksums {
                    part = part.checksum_crc32(crc_b64(crc));
                }
                done.push(part.build());
                reused_parts += 1;
                saved_bytes += size;
                ctx.progress.add(size);
            }
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
    let Ended { bytes, crc32 } = end;
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
    if let Err(e) = complete.send().await {
        // A retry of a completion whose answer was lost finds the upload gone (NoSuchUpload):
        // the object is there if it has this stream's size and CRC32.
        let gone = e.as_service_error().and_then(|se| se.meta().code()) == Some("NoSuchUpload");
        if !(gone && committed(ctx, bytes, crc32).await) {
            return Err(failure(format!("completing upload of {} failed", spec.url), &e));
        }
    }
    Ok(UploadReport {
        bytes,
        parts,
        crc32,
        part_size: spec.plan.part_size(parts),
        elapsed: start.elapsed(),
        multipart: true,
        resumed: None,
        reused_parts,
        saved_bytes,
    })
}

/// Whether the object now holds exactly the stream this upload was completing.
async fn committed(ctx: &PartsCtx<'_>, bytes: u64, crc32: u32) -> bool {
    let url = &ctx.spec.url;
    let head = ctx
        .client
        .head_object()
        .bucket(&url.bucket)
        .key(&url.key)
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await;
    match head {
        Ok(h) => {
            let size_ok = h.content_length() == Some(bytes as i64);
            // A server that keeps the full-object CRC32 says it; one that does not leaves the size.
            let crc_ok = h.checksum_crc32().is_none_or(|c| c == crc_b64(crc32));
            size_ok && crc_ok
        }
        Err(_) => false,
    }
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
/// what bounds memory to `slots ×` the largest part in flight (buffers are grown to the
/// part they are taken for; parts never shrink, so none is larger than needed).
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

/// Cuts what it is given into parts from the pool and hands them to the uploader, in
/// order, each with its CRC32. Handed to the filler; a write past `max_parts` parts fails
/// with an I/O error wrapping the [`Failure`] (exit 73) before the part is taken.
pub struct PartWriter {
    plan: PartPlan,
    pool: BufferPool,
    tx: mpsc::Sender<Chunk>,
    buf: Option<Vec<u8>>,
    number: u32,
    total: u64,
    whole: crc32fast::Hasher,
    /// The upload being continued: each part is checked against its stored twin.
    resume: Option<Arc<Resume>>,
}

impl PartWriter {
    fn new(plan: PartPlan, pool: BufferPool, tx: mpsc::Sender<Chunk>) -> Self {
        PartWriter { plan, pool, tx, buf: None, number: 0, total: 0, whole: crc32fast::Hasher::new(), resume: None }
    }

    /// Read `src` to its end straight into part buffers (no copy, buffers never zeroed)
    /// and hand every part over, the last too; returns the bytes read.
    pub fn fill_from(&mut self, src: &mut dyn Read) -> Result<u64, Failure> {
        let start = self.total;
        loop {
            let Some(mut buf) = self.pool.take() else {
                return Err(Failure::new(ExitCode::Internal, "upload ended while reading"));
            };
            let part_size = self.next_part_size();
            let filled = fill(src, &mut buf, part_size)?;
            if filled == 0 {
                self.pool.give(buf);
                return Ok(self.total - start);
            }
            if self.number + 1 > self.plan.max_parts {
                return Err(too_many_parts(&self.plan));
            }
            self.buf = Some(buf);
            self.hand_over()?;
            if filled < part_size {
                return Ok(self.total - start);
            }
        }
    }

    /// The size of the part to be cut next.
    fn next_part_size(&self) -> usize {
        self.plan.part_size(self.number.saturating_add(1)) as usize
    }

    fn hand_over(&mut self) -> Result<(), Failure> {
        let Some(buf) = self.buf.take() else { return Ok(()) };
        if buf.is_empty() {
            self.pool.give(buf);
            return Ok(());
        }
        self.number += 1;
        let mut h = crc32fast::Hasher::new();
        h.update(&buf);
        let crc = h.clone().finalize();
        self.whole.combine(&h);
        self.total += buf.len() as u64;
        let number = self.number;
        let size = buf.len() as u64;
        let part = match &self.resume {
            None => Chunk::Part { number, data: buf, crc },
            Some(r) => match PartVerdict::of(r.parts.get(&number), size, crc) {
                PartVerdict::Upload => Chunk::Part { number, data: buf, crc },
                PartVerdict::Reuse { etag } => {
                    self.pool.give(buf);
                    Chunk::Reused { number, size, crc, etag }
                }
                PartVerdict::Mismatch { why } => {
                    r.note_mismatch(number);
                    self.pool.give(buf);
                    return Err(Failure::new(
                        ExitCode::Data,
                        format!(
                            "part {number} of the stream differs from part {number} of upload {} ({why}): the \
                             stream is not the one that upload began with",
                            r.upload_id
                        ),
                    ));
                }
            },
        };
        if self.tx.blocking_send(part).is_err() {
            return Err(Failure::new(ExitCode::Internal, "upload ended while reading"));
        }
        Ok(())
    }

    /// Hand over the last, short part; returns (bytes, crc32) of everything written.
    fn finish(&mut self) -> Result<(u64, u32), Failure> {
        self.hand_over()?;
        Ok((self.total, self.whole.clone().finalize()))
    }
}

impl Write for PartWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let part_size = self.next_part_size();
        if self.buf.is_none() {
            // Fail before the first byte of the part past the limit, as fill_from does.
            if self.number >= self.plan.max_parts {
                return Err(std::io::Error::other(too_many_parts(&self.plan)));
            }
            let Some(mut b) = self.pool.take() else {
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

fn too_many_parts(plan: &PartPlan) -> Failure {
    let (max_parts, capacity) = (plan.max_parts, plan.capacity());
    let parts = match plan.schedule {
        Schedule::Equal(size) => format!("parts of {size} bytes"),
        Schedule::Grow(_) => "growing parts".to_string(),
    };
    Failure::new(
        ExitCode::TooLarge,
        format!(
            "stream is larger than {max_parts} {parts} can carry ({capacity} bytes); raise --expected-size, --part-size or --max-parts"
        ),
    )
}

/// Fill `buf` with up to `part_size` bytes (less only at EOF); returns how many.
/// Reads into spare capacity, so buffers are never zeroed first; a buffer from a smaller
/// part grows here (it is empty, so nothing is copied).
fn fill(src: &mut dyn Read, buf: &mut Vec<u8>, part_size: usize) -> Result<usize, Failure> {
    buf.clear();
    buf.reserve_exact(part_size);
    src.take(part_size as u64)
        .read_to_end(buf)
        .map_err(|e| Failure::new(ExitCode::LocalIo, format!("reading stdin failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(part_size: usize, max_parts: u32) -> (PartWriter, mpsc::Receiver<Chunk>) {
        planned(Schedule::Equal(part_size as u64), max_parts)
    }

    fn planned(schedule: Schedule, max_parts: u32) -> (PartWriter, mpsc::Receiver<Chunk>) {
        let (tx, rx) = mpsc::channel(64);
        (PartWriter::new(PartPlan { schedule, max_parts }, BufferPool::new(64), tx), rx)
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
        let (mut w, rx) = writer(10, 100);
        assert_eq!(w.fill_from(&mut &data[..]).unwrap(), 25);
        let (bytes, crc) = w.finish().unwrap();
        assert_eq!(bytes, 25);
        assert_eq!(crc, crc32fast::hash(&data));
        drop(w);
        let parts = drain(rx);
        assert_eq!(parts.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(), vec![(1, 10), (2, 10), (3, 5)]);
        assert_eq!(parts[2].2, crc32fast::hash(&data[20..]));
    }

    #[test]
    fn exact_multiple_ends_without_an_empty_part() {
        let data = [1u8; 20];
        let (mut w, rx) = writer(10, 100);
        assert_eq!(w.fill_from(&mut &data[..]).unwrap(), 20);
        assert_eq!(w.finish().unwrap().0, 20);
        drop(w);
        assert_eq!(drain(rx).len(), 2);
    }

    #[test]
    fn fails_before_the_part_past_the_limit() {
        let data = [1u8; 21];
        let (mut w, rx) = writer(10, 2);
        let e = w.fill_from(&mut &data[..]).unwrap_err();
        assert_eq!(e.code, ExitCode::TooLarge);
        assert!(e.message.contains("--max-parts") && e.message.contains("--expected-size"), "{}", e.message);
        drop(w);
        assert_eq!(drain(rx).len(), 2, "part 3 must never be handed over");
        let (mut w, _rx) = writer(10, 2);
        assert!(w.fill_from(&mut &vec![1u8; 20][..]).is_ok(), "exactly at the limit fits");
    }

    #[test]
    fn part_writer_cuts_parts_and_stops_at_the_limit() {
        let data: Vec<u8> = (0..25u32).map(|i| (i * 7) as u8).collect();
        let (mut w, rx) = writer(10, 100);
        for piece in data.chunks(3) {
            w.write_all(piece).unwrap();
        }
        let (bytes, crc) = w.finish().unwrap();
        assert_eq!((bytes, crc), (25, crc32fast::hash(&data)));
        drop(w);
        assert_eq!(drain(rx).iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(), vec![(1, 10), (2, 10), (3, 5)]);
        let (mut w, rx) = writer(10, 2);
        let e = w.write_all(&[1u8; 21]).unwrap_err();
        let f = e.get_ref().and_then(|inner| inner.downcast_ref::<Failure>()).expect("the uploader's own failure");
        assert_eq!(f.code, ExitCode::TooLarge);
        drop(w);
        assert_eq!(drain(rx).len(), 2, "part 3 must never be handed over");
    }

    #[test]
    fn grown_parts_follow_the_schedule_and_their_buffers_its_sizes() {
        let schedule = Schedule::Grow(vec![(10, 2), (20, 1), (40, 1)]);
        let data: Vec<u8> = (0..125u32).map(|i| (i * 13) as u8).collect();
        // The last run goes on past its count: 10, 10, 20, 40, 40, then the short 5.
        let want = vec![(1, 10), (2, 10), (3, 20), (4, 40), (5, 40), (6, 5)];
        let (mut w, mut rx) = planned(schedule.clone(), 100);
        assert_eq!(w.fill_from(&mut &data[..]).unwrap(), 125);
        assert_eq!(w.finish().unwrap(), (125, crc32fast::hash(&data)));
        drop(w);
        let mut got = Vec::new();
        let mut from = 0;
        while let Ok(Chunk::Part { number, data: part, crc }) = rx.try_recv() {
            // A buffer holds no more room than the part it was taken for.
            assert!(part.capacity() <= schedule.part_size(number) as usize, "part {number}: {}", part.capacity());
            assert_eq!(crc, crc32fast::hash(&data[from..from + part.len()]));
            from += part.len();
            got.push((number, part.len()));
        }
        assert_eq!(got, want);
        // Written in odd pieces the cut is the same.
        let (mut w, rx) = planned(schedule.clone(), 100);
        for piece in data.chunks(7) {
            w.write_all(piece).unwrap();
        }
        assert_eq!(w.finish().unwrap().0, 125);
        drop(w);
        assert_eq!(drain(rx).iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(), want);
        // And the part limit counts grown parts: 4 parts carry 80 bytes.
        let (mut w, _rx) = planned(schedule, 4);
        let e = w.fill_from(&mut &data[..81]).unwrap_err();
        assert_eq!(e.code, ExitCode::TooLarge);
        assert!(e.message.contains("4 growing parts can carry (80 bytes)"), "{}", e.message);
    }

    #[test]
    fn crc_header_is_big_endian_base64() {
        // CRC32 of "123456789" is 0xCBF43926.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc_b64(0xCBF4_3926), "y/Q5Jg==");
    }
}
