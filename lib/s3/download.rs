//! One S3 object to a writer (stdout), fetched as parallel ranged GETs and written
//! strictly in order.
//!
//! Invariants:
//! - Memory: at most `concurrency` ranges are fetched or waiting, plus the one being
//!   written: `(concurrency + 1) × chunk size`, in buffers allocated once and reused (a
//!   fresh buffer per range lets the allocator's per-thread arenas keep freed ones, and
//!   RSS grows past the bound).
//! - Every range is pinned to the ETag seen first (If-Match), so an object replaced
//!   mid-read fails instead of splicing two versions.
//! - Nothing is written past a detected error; the byte count is always checked, and the
//!   CRC32 too when the object carries one (s3put's metadata or the server's checksum).

use super::client::Client;
use super::error::{cause_chain, failure, is_transient};
use super::part_size::Schedule;
use super::{meta, S3Url};
use crate::cli::output::Progress;
use crate::cli::values::ByteRange;
use crate::cli::{ExitCode, Failure};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{ChecksumMode, ChecksumType};
use futures_util::StreamExt;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct DownloadSpec {
    pub url: S3Url,
    pub chunk_size: u64,
    pub concurrency: usize,
    pub range: Option<ByteRange>,
    pub retries: u32,
    /// Give up on a body that sends nothing for this long (--read-timeout): the SDK's own
    /// read timeout covers the wait for the answer's head, not a body that stalls midway.
    pub body_timeout: Option<Duration>,
}

/// How the bytes were checked, strongest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// Whole-object CRC32 from s3put's `zsnap-crc32` metadata.
    MetadataCrc32,
    /// Whole-object CRC32 the server stored (`x-amz-checksum-type: FULL_OBJECT`).
    ServerCrc32,
    /// Per-part CRC32s combined as S3's composite checksum (`…-N`).
    ServerCompositeCrc32,
    /// Only the byte count (no checksum on the object, or a partial range).
    LengthOnly,
}

impl Check {
    pub fn name(&self) -> &'static str {
        match self {
            Check::MetadataCrc32 => "crc32 (zsnap metadata)",
            Check::ServerCrc32 => "crc32 (server full-object checksum)",
            Check::ServerCompositeCrc32 => "crc32 (server per-part checksums)",
            Check::LengthOnly => "length only",
        }
    }
}

#[derive(Debug)]
pub struct DownloadReport {
    pub bytes: u64,
    pub crc32: u32,
    pub check: Check,
    pub elapsed: Duration,
}

/// What HEAD told us about the object.
struct ObjectInfo {
    size: u64,
    etag: Option<String>,
    meta_crc32: Option<u32>,
    /// How the parts were cut (`zsnap-part-size` or `zsnap-part-schedule`), when recorded.
    meta_schedule: Option<Schedule>,
    server_crc32: Option<String>,
    server_full_object: bool,
}

pub async fn download(
    client: &Client,
    spec: &DownloadSpec,
    out: &mut (dyn Write + Send),
    progress: &Progress,
) -> Result<DownloadReport, Failure> {
    let start = Instant::now();
    let info = head(client, &spec.url).await?;
    let (from, to) = span(spec.range, info.size)?;
    let whole = from == 0 && to == info.size;
    progress.set_total(to - from);
    let mut verifier = Verifier::new(if whole { info.meta_schedule.clone() } else { None });

    let chunk = spec.chunk_size.max(1);
    let pool = Pool::default();
    let pieces: Vec<(u64, u64)> = (from..to).step_by(chunk as usize).map(|a| (a, (a + chunk).min(to))).collect();
    let fetches = futures_util::stream::iter(pieces).map(|(a, b)| {
        let job = RangeJob {
            client: client.clone(),
            url: spec.url.clone(),
            etag: info.etag.clone(),
            retries: spec.retries,
            body_timeout: spec.body_timeout,
            pool: pool.clone(),
        };
        tokio::spawn(job.fetch(a, b))
    });
    let mut ordered = fetches.buffered(spec.concurrency.max(1));
    let mut written: u64 = 0;
    while let Some(joined) = ordered.next().await {
        let data = joined.map_err(|e| Failure::new(ExitCode::Internal, format!("range task failed: {e}")))??;
        verifier.update(&data);
        tokio::task::block_in_place(|| out.write_all(&data)).map_err(|e| write_failure(e, &spec.url))?;
        written += data.len() as u64;
        progress.add(data.len() as u64);
        pool.give(data);
    }
    tokio::task::block_in_place(|| out.flush()).map_err(|e| write_failure(e, &spec.url))?;

    if written != to - from {
        return Err(Failure::new(
            ExitCode::Data,
            format!("{}: read {written} bytes, expected {}", spec.url, to - from),
        ));
    }
    let (crc32, check) = if whole { verifier.check(&info)? } else { (verifier.whole(), Check::LengthOnly) };
    Ok(DownloadReport { bytes: written, crc32, check, elapsed: start.elapsed() })
}

/// `2s`, `1.5s`: a duration as the flags take it.
fn seconds(t: Duration) -> String {
    format!("{}s", t.as_secs_f64())
}

fn write_failure(e: std::io::Error, url: &S3Url) -> Failure {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Failure::new(ExitCode::ClosedStdout, "")
    } else {
        Failure::new(ExitCode::LocalIo, format!("writing {url} to stdout failed: {e}"))
    }
}

/// The half-open byte span to fetch.
fn span(range: Option<ByteRange>, size: u64) -> Result<(u64, u64), Failure> {
    let Some(r) = range else { return Ok((0, size)) };
    if r.start >= size && !(r.start == 0 && size == 0) {
        return Err(Failure::usage(format!("--range starts at {} but the object has {size} bytes", r.start)));
    }
    let end = r.end_inclusive.map(|e| (e + 1).min(size)).unwrap_or(size);
    Ok((r.start, end))
}

async fn head(client: &Client, url: &S3Url) -> Result<ObjectInfo, Failure> {
    let what = format!("reading {url} failed");
    let resp = match client
        .head_object()
        .bucket(&url.bucket)
        .key(&url.key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
    {
        Ok(r) => r,
        // HEAD answers carry no body, so no error code: 404 may be the key or the
        // bucket, 403 a bad key or a denial. A one-byte GET says which.
        Err(e) if is_codeless(&e) => return Err(probe(client, url, failure(&what, &e)).await),
        Err(e) => return Err(failure(&what, &e)),
    };
    let md = resp.metadata();
    let get = |k: &str| md.and_then(|m| m.get(k)).map(|s| s.trim().to_string());
    let meta_crc32 = match get(meta::CRC32) {
        Some(v) => Some(u32::from_str_radix(&v, 16).map_err(|_| {
            Failure::new(ExitCode::Data, format!("{url}: metadata {} is not a CRC32: '{v}'", meta::CRC32))
        })?),
        None => None,
    };
    let size = resp.content_length().unwrap_or(0).max(0) as u64;
    if let Some(b) = get(meta::BYTES).and_then(|v| v.parse::<u64>().ok()) {
        if b != size {
            return Err(Failure::new(
                ExitCode::Data,
                format!("{url}: object has {size} bytes but was stored with {b} ({})", meta::BYTES),
            ));
        }
    }
    Ok(ObjectInfo {
        size,
        etag: resp.e_tag().map(str::to_string),
        meta_crc32,
        meta_schedule: Schedule::from_metadata(get(meta::PART_SIZE).as_deref(), get(meta::PART_SCHEDULE).as_deref()),
        server_crc32: resp.checksum_crc32().map(str::to_string),
        server_full_object: resp.checksum_type() == Some(&ChecksumType::FullObject),
    })
}

fn is_codeless<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    matches!(e, SdkError::ServiceError(se) if se.err().code().is_none_or(|c| c == "NotFound" || c == "Forbidden"))
}

async fn probe(client: &Client, url: &S3Url, fallback: Failure) -> Failure {
    match client.get_object().bucket(&url.bucket).key(&url.key).range("bytes=0-0").send().await {
        Err(e @ SdkError::ServiceError(_)) => failure(format!("reading {url} failed"), &e),
        _ => fallback,
    }
}

/// Range buffers, reused: a range takes a free one (or allocates one) and the writer
/// gives it back once written. `buffered` bounds the ranges alive to `concurrency`, so
/// no more than concurrency + 1 buffers are ever made, and they are the same ones from
/// the first range to the last.
#[derive(Clone, Default)]
struct Pool(Arc<Mutex<Vec<Vec<u8>>>>);

impl Pool {
    fn take(&self, want: usize) -> Vec<u8> {
        let mut buf = self.0.lock().ok().and_then(|mut free| free.pop()).unwrap_or_default();
        buf.clear();
        buf.reserve_exact(want);
        buf
    }

    fn give(&self, buf: Vec<u8>) {
        if let Ok(mut free) = self.0.lock() {
            free.push(buf);
        }
    }
}

/// One range, owned so it can run as a task; retried when the failure is transient
/// (the SDK retries requests, but not a body that breaks off mid-read).
struct RangeJob {
    client: Client,
    url: S3Url,
    etag: Option<String>,
    retries: u32,
    body_timeout: Option<Duration>,
    pool: Pool,
}

impl RangeJob {
    async fn fetch(self, a: u64, b: u64) -> Result<Vec<u8>, Failure> {
        let mut attempt = 0;
        loop {
            match self.fetch_once(a, b).await {
                Ok(data) => return Ok(data),
                Err(f) if attempt < self.retries && is_transient(f.code) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200u64 << attempt.min(7))).await;
                }
                Err(f) => return Err(f),
            }
        }
    }

    async fn fetch_once(&self, a: u64, b: u64) -> Result<Vec<u8>, Failure> {
        let what = format!("reading bytes {a}-{} of {} failed", b - 1, self.url);
        let resp = self
            .client
            .get_object()
            .bucket(&self.url.bucket)
            .key(&self.url.key)
            .range(format!("bytes={a}-{}", b - 1))
            .set_if_match(self.etag.clone())
            .send()
            .await
            .map_err(|e| failure(&what, &e))?;
        // Into one buffer of the range's size, chunk by chunk: collecting the body first
        // and then flattening it would hold every range twice (and copy it once more).
        let want = (b - a) as usize;
        let mut body = resp.body;
        let mut data = self.pool.take(want);
        loop {
            let next = match self.body_timeout {
                Some(t) => tokio::time::timeout(t, body.next()).await.map_err(|_| {
                    Failure::new(
                        ExitCode::Unreachable,
                        format!("{what}: timed out: the body stalled, no bytes for {} (--read-timeout)", seconds(t)),
                    )
                })?,
                None => body.next().await,
            };
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| {
                Failure::new(ExitCode::Unreachable, format!("{what}: body broke off: {}", cause_chain(&e)))
            })?;
            if data.len() + chunk.len() > want {
                // The server ignored Range (or sent more than it said).
                return Err(Failure::new(
                    ExitCode::Protocol,
                    format!("{what}: got more than the {want} bytes asked for"),
                ));
            }
            data.extend_from_slice(&chunk);
        }
        if data.len() != want {
            // A short body is a transport fault: retried.
            return Err(Failure::new(
                ExitCode::Unreachable,
                format!("{what}: got {} bytes, expected {want}", data.len()),
            ));
        }
        Ok(data)
    }
}

/// Running CRC32s of what passed by: the whole stream, and per part when the parts' cut
/// is known (equal or growing), so S3's composite checksum (CRC32 of the parts' CRC32s)
/// can be checked.
pub struct Verifier {
    whole: crc32fast::Hasher,
    schedule: Option<Schedule>,
    part: crc32fast::Hasher,
    part_len: u64,
    part_crcs: Vec<u32>,
}

impl Verifier {
    pub fn new(schedule: Option<Schedule>) -> Self {
        Verifier {
            whole: crc32fast::Hasher::new(),
            schedule,
            part: crc32fast::Hasher::new(),
            part_len: 0,
            part_crcs: Vec::new(),
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.whole.update(data);
        let Some(schedule) = &self.schedule else { return };
        while !data.is_empty() {
            // The part being read is the one after those done (1-based).
            let ps = schedule.part_size(self.part_crcs.len() as u32 + 1);
            let room = (ps - self.part_len) as usize;
            let (now, rest) = data.split_at(room.min(data.len()));
            self.part.update(now);
            self.part_len += now.len() as u64;
            if self.part_len == ps {
                let done = std::mem::replace(&mut self.part, crc32fast::Hasher::new());
                self.part_crcs.push(done.finalize());
                self.part_len = 0;
            }
            data = rest;
        }
    }

    pub fn whole(&self) -> u32 {
        self.whole.clone().finalize()
    }

    /// S3's composite form: base64 of CRC32 over the big-endian part CRC32s, then `-N`.
    pub fn composite(&self) -> Option<String> {
        self.schedule.as_ref()?;
        let mut crcs = self.part_crcs.clone();
        if self.part_len > 0 {
            crcs.push(self.part.clone().finalize());
        }
        let mut h = crc32fast::Hasher::new();
        for c in &crcs {
            h.update(&c.to_be_bytes());
        }
        Some(format!("{}-{}", super::upload::crc_b64(h.finalize()), crcs.len()))
    }

    fn check(&self, info: &ObjectInfo) -> Result<(u32, Check), Failure> {
        let got = self.whole();
        let mismatch = |want: String, got: String, how: &Check| {
            Failure::new(ExitCode::Data, format!("CRC32 mismatch ({}): object says {want}, read {got}", how.name()))
        };
        if let Some(want) = info.meta_crc32 {
            if want != got {
                return Err(mismatch(format!("{want:08x}"), format!("{got:08x}"), &Check::MetadataCrc32));
            }
            return Ok((got, Check::MetadataCrc32));
        }
        match &info.server_crc32 {
            Some(s) if info.server_full_object || !s.contains('-') => {
                let mine = super::upload::crc_b64(got);
                if *s != mine {
                    return Err(mismatch(s.clone(), mine, &Check::ServerCrc32));
                }
                Ok((got, Check::ServerCrc32))
            }
            Some(s) => match self.composite() {
                // Boundaries that give another part count than the server's are not the
                // object's (an upload resumed across two ways of cutting records the first
                // run's): no per-part check, rather than a false alarm.
                Some(mine) if part_count(s) != part_count(&mine) => Ok((got, Check::LengthOnly)),
                Some(mine) if *s != mine => Err(mismatch(s.clone(), mine, &Check::ServerCompositeCrc32)),
                Some(_) => Ok((got, Check::ServerCompositeCrc32)),
                None => Ok((got, Check::LengthOnly)),
            },
            None => Ok((got, Check::LengthOnly)),
        }
    }
}

/// The `N` of a composite checksum `…-N`.
fn part_count(composite: &str) -> Option<&str> {
    composite.rsplit_once('-').map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        let r = |s, e| Some(ByteRange { start: s, end_inclusive: e });
        assert_eq!(span(None, 10).unwrap(), (0, 10));
        assert_eq!(span(None, 0).unwrap(), (0, 0));
        assert_eq!(span(r(2, Some(4)), 10).unwrap(), (2, 5));
        assert_eq!(span(r(2, None), 10).unwrap(), (2, 10));
        assert_eq!(span(r(2, Some(99)), 10).unwrap(), (2, 10));
        assert!(span(r(10, None), 10).is_err());
    }

    #[test]
    fn composite_matches_split_points() {
        let data: Vec<u8> = (0..100u32).map(|i| (i * 31) as u8).collect();
        let mut a = Verifier::new(Some(Schedule::Equal(30)));
        // Feed in odd pieces that straddle part boundaries.
        for piece in data.chunks(7) {
            a.update(piece);
        }
        let mut h = crc32fast::Hasher::new();
        for part in data.chunks(30) {
            h.update(&crc32fast::hash(part).to_be_bytes());
        }
        let want = format!("{}-4", super::super::upload::crc_b64(h.finalize()));
        assert_eq!(a.composite().unwrap(), want);
        assert_eq!(a.whole(), crc32fast::hash(&data));
    }

    #[test]
    fn composite_of_growing_parts() {
        let data: Vec<u8> = (0..100u32).map(|i| (i * 29) as u8).collect();
        // 10, 10, 20, then the last run goes on: 40, and the short 20.
        let schedule = Schedule::Grow(vec![(10, 2), (20, 1), (40, 1)]);
        let mut v = Verifier::new(Some(schedule));
        for piece in data.chunks(7) {
            v.update(piece);
        }
        let mut h = crc32fast::Hasher::new();
        for (a, b) in [(0, 10), (10, 20), (20, 40), (40, 80), (80, 100)] {
            h.update(&crc32fast::hash(&data[a..b]).to_be_bytes());
        }
        let want = format!("{}-5", super::super::upload::crc_b64(h.finalize()));
        assert_eq!(v.composite().unwrap(), want);
        let mut i = info(None, Some(&want), false);
        assert_eq!(v.check(&i).unwrap().1, Check::ServerCompositeCrc32);
        // Another composite of five parts is a mismatch; one of another part count says
        // the recorded cut is not the object's: length only.
        i.server_crc32 = Some("AAAAAA==-5".into());
        assert_eq!(v.check(&i).unwrap_err().code, ExitCode::Data);
        i.server_crc32 = Some("AAAAAA==-7".into());
        assert_eq!(v.check(&i).unwrap().1, Check::LengthOnly);
    }

    fn info(meta_crc32: Option<u32>, server: Option<&str>, full: bool) -> ObjectInfo {
        ObjectInfo {
            size: 3,
            etag: None,
            meta_crc32,
            meta_schedule: None,
            server_crc32: server.map(str::to_string),
            server_full_object: full,
        }
    }

    #[test]
    fn checks_pick_the_strongest_and_catch_mismatch() {
        let mut v = Verifier::new(None);
        v.update(b"abc");
        let crc = crc32fast::hash(b"abc");
        let b64 = super::super::upload::crc_b64(crc);
        assert_eq!(v.check(&info(Some(crc), None, false)).unwrap().1, Check::MetadataCrc32);
        assert_eq!(v.check(&info(Some(crc ^ 1), None, false)).unwrap_err().code, ExitCode::Data);
        assert_eq!(v.check(&info(None, Some(&b64), true)).unwrap().1, Check::ServerCrc32);
        assert_eq!(v.check(&info(None, Some("AAAAAA=="), true)).unwrap_err().code, ExitCode::Data);
        assert_eq!(v.check(&info(None, None, false)).unwrap().1, Check::LengthOnly);
        assert_eq!(v.check(&info(None, Some("AAAAAA==-2"), false)).unwrap().1, Check::LengthOnly);
    }
}
