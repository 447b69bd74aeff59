//! Streaming stdin (or a producer's stdout) to one S3 object.
//!
//! Invariants:
//! - Memory: at most `concurrency + 1` part buffers exist, reused from a pool.
//! - Every part but the last is `part_size` bytes; the stream never needs part
//!   `max_parts + 1` (we fail before reading it into a part).
//! - Nothing becomes visible unless the whole stream was read, the producer (with
//!   `--exec`) exited 0, and every part was stored: on any error or signal the multipart
//!   upload is aborted; a single PUT is only sent once EOF is seen.

use super::client::Client;
use super::error::{cause_chain, failure};
use super::part_size::PartPlan;
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
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Where the bytes come from.
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
}

/// A filled part, or the end of the stream, as the reader thread hands them over.
enum Chunk {
    Part { number: u32, data: Vec<u8>, crc: u32 },
    End { bytes: u64, crc32: u32 },
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
    let reader = Reader { part_size, max_parts: spec.plan.max_parts, pool: pool.clone(), tx };
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
    let (data, crc) = match first {
        Chunk::Failed(f) => return Err(f),
        Chunk::End { .. } => {
            if !spec.allow_empty {
                return Err(Failure::new(
                    ExitCode::StreamCut,
                    "stdin is empty: refusing to store an empty object (--allow-empty allows it)",
                ));
            }
            (Vec::new(), 0)
        }
        Chunk::Part { data, crc, .. } => {
            let second = tokio::select! { c = rx.recv() => c, n = &mut cancel => return Err(interrupted(n)) };
            match second.ok_or_else(reader_vanished)? {
                Chunk::Failed(f) => return Err(f),
                Chunk::End { .. } => (data, crc),
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
        // SHA-256 it too (that hash would cost more CPU than the whole upload).
        req.checksum_crc32(crc_b64(crc)).customize().disable_payload_signing().send().await
    } else {
        req.send().await
    };
    sent.map_err(|e| failure(format!("upload of {} failed", spec.url), &e))?;
    Ok(())
}

fn user_metadata(spec: &UploadSpec) -> HashMap<String, String> {
    spec.metadata.iter().cloned().collect()
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
            Chunk::End { bytes, crc32 } => break (bytes, crc32),
            Chunk::Failed(f) => return Err(f),
        }
    };
    while !running.is_empty() {
        done.push(join_one(&mut running).await?);
    }
    let (bytes, crc32) = end;
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
    Ok(UploadReport { bytes, parts, crc32, part_size: spec.plan.part_size, elapsed: start.elapsed(), multipart: true })
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
}

impl Reader {
    fn run(self, producer: Option<(Child, String)>) {
        let outcome = match producer {
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
        };
        let msg = match outcome {
            Ok((bytes, crc32)) => Chunk::End { bytes, crc32 },
            Err(f) => Chunk::Failed(f),
        };
        let _ = self.tx.blocking_send(msg);
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
                return Err(Failure::new(
                    ExitCode::TooLarge,
                    format!(
                        "stream is larger than {} parts of {} bytes; raise --expected-size, --part-size or --max-parts",
                        self.max_parts, self.part_size
                    ),
                ));
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

fn describe_status(status: std::process::ExitStatus) -> String {
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
        (Reader { part_size, max_parts, pool: BufferPool::new(64), tx }, rx)
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

    #[test]
    fn crc_header_is_big_endian_base64() {
        // CRC32 of "123456789" is 0xCBF43926.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc_b64(0xCBF4_3926), "y/Q5Jg==");
    }
}
