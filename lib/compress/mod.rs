//! In-process compression and decompression (zstd, gzip, lz4, none) for s3put and s3get.
//!
//! Compressors are `Write` adapters in front of the part buffers, so the stream stays a
//! stream. Every format is the standard one, readable by the usual command-line tools:
//! zstd frames (multi-threaded by libzstd's own workers), gzip as a concatenation of
//! independent members of 1 MiB of input each (compressed in parallel; `gzip -d` and
//! `pigz -d` read them as one file), and LZ4 frames (`lz4 -d`).
//!
//! Memory beyond the part buffers (RSS measured with 2 threads): zstd ~55 MiB a worker at
//! level 3 and ~85 MiB at level 9 (libzstd sizes its jobs from the window), gzip 2 ×
//! threads blocks of 1 MiB in and out, lz4 ~10 MiB (4 MiB blocks).

pub mod channel;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

/// A compression format and, when compressing, its level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    None,
    Zstd { level: i32 },
    Gzip { level: u32 },
    Lz4,
}

/// Input per gzip member: big enough that the per-member header and the lost history at
/// each boundary cost well under 1%, small enough to keep every core busy.
pub const GZIP_BLOCK: usize = 1 << 20;

impl Codec {
    /// `zstd[:LEVEL]`, `gzip[:LEVEL]`, `lz4` or `none`.
    pub fn parse(text: &str) -> Result<Codec, String> {
        let (name, level) = match text.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (text, None),
        };
        let bad_level = |range: &str| format!("'{text}': the level must be a number in {range}");
        match (name, level) {
            ("none", None) => Ok(Codec::None),
            ("lz4", None) => Ok(Codec::Lz4),
            ("zstd", None) => Ok(Codec::Zstd { level: 3 }),
            ("zstd", Some(l)) => match l.parse::<i32>() {
                Ok(n) if (1..=22).contains(&n) => Ok(Codec::Zstd { level: n }),
                _ => Err(bad_level("1..=22")),
            },
            ("gzip", None) => Ok(Codec::Gzip { level: 6 }),
            ("gzip", Some(l)) => match l.parse::<u32>() {
                Ok(n) if (1..=9).contains(&n) => Ok(Codec::Gzip { level: n }),
                _ => Err(bad_level("1..=9")),
            },
            ("none" | "lz4", Some(_)) => Err(format!("'{text}': {name} takes no level")),
            _ => Err(format!("'{text}' is not one of zstd[:LEVEL], gzip[:LEVEL], lz4, none")),
        }
    }

    /// The name recorded with a backup (`z=` in the key, `"compressor"` in JSON).
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Zstd { .. } => "zstd",
            Codec::Gzip { .. } => "gzip",
            Codec::Lz4 => "lz4",
        }
    }
}

/// A compressing writer in front of `W`; `finish` writes the trailer and gives `W` back.
pub enum Compressor<W: Write> {
    None(W),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Gzip(ParallelGzip<W>),
    Lz4(lz4_flex::frame::FrameEncoder<W>),
}

impl<W: Write> Compressor<W> {
    /// `threads` is used by zstd and gzip (at least 1).
    pub fn new(codec: Codec, threads: usize, inner: W) -> io::Result<Self> {
        let threads = threads.max(1);
        Ok(match codec {
            Codec::None => Compressor::None(inner),
            Codec::Zstd { level } => {
                let mut e = zstd::stream::write::Encoder::new(inner, level)?;
                // Even one worker runs beside the reader, so reading and verifying overlap
                // with compressing.
                e.multithread(threads as u32)?;
                e.include_checksum(true)?;
                Compressor::Zstd(e)
            }
            Codec::Gzip { level } => Compressor::Gzip(ParallelGzip::new(inner, level, threads, GZIP_BLOCK)?),
            Codec::Lz4 => {
                let info = lz4_flex::frame::FrameInfo::new()
                    .block_size(lz4_flex::frame::BlockSize::Max4MB)
                    .content_checksum(true);
                Compressor::Lz4(lz4_flex::frame::FrameEncoder::with_frame_info(info, inner))
            }
        })
    }

    /// End the compressed stream (trailers, last blocks) and return the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::None(w) => Ok(w),
            Compressor::Zstd(e) => e.finish(),
            Compressor::Gzip(g) => g.finish(),
            Compressor::Lz4(e) => e.finish().map_err(io::Error::other),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Zstd(e) => e.write(buf),
            Compressor::Gzip(g) => g.write(buf),
            Compressor::Lz4(e) => e.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.write_all(buf),
            Compressor::Zstd(e) => e.write_all(buf),
            Compressor::Gzip(g) => g.write_all(buf),
            Compressor::Lz4(e) => e.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Zstd(e) => e.flush(),
            Compressor::Gzip(g) => g.flush(),
            Compressor::Lz4(e) => e.flush(),
        }
    }
}

/// A decompressing reader over `r`. A truncated or corrupt input is an `io::Error`.
pub fn decoder<'a, R: Read + Send + 'a>(codec: Codec, r: R) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match codec {
        Codec::None => Box::new(r),
        Codec::Zstd { .. } => Box::new(zstd::stream::read::Decoder::new(r)?),
        Codec::Gzip { .. } => Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::with_capacity(1 << 16, r))),
        Codec::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(r)),
    })
}

/// A compression job: one block in, its gzip member back through `reply`.
struct GzipJob {
    data: Vec<u8>,
    reply: mpsc::SyncSender<io::Result<Vec<u8>>>,
}

/// gzip on several cores: the input is cut into fixed-size blocks, each compressed as an
/// independent gzip member by a worker, and the members written in input order. At most
/// `2 × threads` blocks are in flight, so memory stays bounded.
pub struct ParallelGzip<W: Write> {
    inner: Option<W>,
    block: Vec<u8>,
    block_size: usize,
    pending: VecDeque<mpsc::Receiver<io::Result<Vec<u8>>>>,
    max_pending: usize,
    jobs: Option<mpsc::Sender<GzipJob>>,
    workers: Vec<JoinHandle<()>>,
    members: u64,
}

impl<W: Write> ParallelGzip<W> {
    pub fn new(inner: W, level: u32, threads: usize, block_size: usize) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<GzipJob>();
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let level = flate2::Compression::new(level);
            let handle = std::thread::Builder::new().name(format!("gzip-{i}")).spawn(move || loop {
                let job = match rx.lock() {
                    Ok(guard) => guard.recv(),
                    Err(_) => return,
                };
                let Ok(job) = job else { return };
                let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(job.data.len() / 2 + 64), level);
                let out = enc.write_all(&job.data).and_then(|_| enc.finish());
                let _ = job.reply.send(out);
            })?;
            workers.push(handle);
        }
        Ok(ParallelGzip {
            inner: Some(inner),
            block: Vec::with_capacity(block_size),
            block_size: block_size.max(1),
            pending: VecDeque::new(),
            max_pending: 2 * threads.max(1),
            jobs: Some(tx),
            workers,
            members: 0,
        })
    }

    fn dispatch(&mut self) -> io::Result<()> {
        while self.pending.len() >= self.max_pending {
            self.write_oldest()?;
        }
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(self.block_size));
        let (reply, rx) = mpsc::sync_channel(1);
        let sent = self.jobs.as_ref().map(|j| j.send(GzipJob { data, reply }));
        if !matches!(sent, Some(Ok(()))) {
            return Err(io::Error::other("gzip workers are gone"));
        }
        self.pending.push_back(rx);
        self.members += 1;
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(rx) = self.pending.pop_front() else { return Ok(()) };
        let member = rx.recv().map_err(|_| io::Error::other("a gzip worker died"))??;
        match self.inner.as_mut() {
            Some(w) => w.write_all(&member),
            None => Err(io::Error::other("gzip writer already finished")),
        }
    }

    /// Compress what is left (an empty input still becomes one valid, empty member) and
    /// write every member in order.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.block.is_empty() || self.members == 0 {
            self.dispatch()?;
        }
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        self.inner.take().ok_or_else(|| io::Error::other("gzip writer already finished"))
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (self.block_size - self.block.len()).min(buf.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == self.block_size {
            self.dispatch()?;
        }
        Ok(n)
    }

    /// Ends a member early (a flush point) and writes everything compressed so far.
    fn flush(&mut self) -> io::Result<()> {
        if !self.block.is_empty() {
            self.dispatch()?;
        }
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        match self.inner.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl<W: Write> Drop for ParallelGzip<W> {
    fn drop(&mut self) {
        // Closing the job channel ends the workers once they finish their block.
        self.jobs = None;
        self.pending.clear();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: words with a drifting counter.
        let mut v = Vec::with_capacity(len + 16);
        let mut i = 0u64;
        while v.len() < len {
            v.extend_from_slice(format!("record {} {}\n", i, i * 2654435761 % 1000).as_bytes());
            i += 1;
        }
        v.truncate(len);
        v
    }

    fn round_trip(codec: Codec, data: &[u8], threads: usize) -> Vec<u8> {
        let mut c = Compressor::new(codec, threads, Vec::new()).unwrap_or_else(|e| panic!("{e}"));
        for piece in data.chunks(100_003) {
            c.write_all(piece).unwrap_or_else(|e| panic!("{e}"));
        }
        let packed = c.finish().unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        decoder(codec, &packed[..])
            .and_then(|mut d| d.read_to_end(&mut out))
            .unwrap_or_else(|e| panic!("{codec:?}: {e}"));
        packed
    }

    #[test]
    fn parse_names_and_levels() {
        assert_eq!(Codec::parse("zstd"), Ok(Codec::Zstd { level: 3 }));
        assert_eq!(Codec::parse("zstd:19"), Ok(Codec::Zstd { level: 19 }));
        assert_eq!(Codec::parse("gzip:1"), Ok(Codec::Gzip { level: 1 }));
        assert_eq!(Codec::parse("lz4"), Ok(Codec::Lz4));
        assert_eq!(Codec::parse("none"), Ok(Codec::None));
        for bad in ["zstd:0", "zstd:x", "gzip:10", "lz4:1", "xz", ""] {
            assert!(Codec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_codec_round_trips() {
        let data = sample(5 * GZIP_BLOCK + 12345);
        for codec in [Codec::None, Codec::Zstd { level: 3 }, Codec::Gzip { level: 6 }, Codec::Lz4] {
            for threads in [1, 3] {
                let packed = round_trip(codec, &data, threads);
                let mut out = Vec::new();
                decoder(codec, &packed[..]).and_then(|mut d| d.read_to_end(&mut out)).unwrap_or_else(|e| panic!("{e}"));
                assert!(out == data, "{codec:?} with {threads} threads changed the data");
                if codec != Codec::None {
                    assert!(packed.len() < data.len() / 2, "{codec:?} did not compress");
                }
            }
            // Empty input is a valid, empty stream.
            let packed = round_trip(codec, b"", 2);
            let mut out = Vec::new();
            decoder(codec, &packed[..]).and_then(|mut d| d.read_to_end(&mut out)).unwrap_or_else(|e| panic!("{e}"));
            assert!(out.is_empty());
        }
    }

    #[test]
    fn gzip_members_are_one_gzip_file() {
        let data = sample(3 * GZIP_BLOCK + 7);
        let packed = round_trip(Codec::Gzip { level: 1 }, &data, 2);
        // Four members, each starting with the gzip magic.
        let members = packed.windows(3).filter(|w| w == &[0x1f, 0x8b, 8]).count();
        assert!(members >= 4, "{members} members");
    }

    /// `cargo test --release --lib codec_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn codec_speed() {
        let mut data = Vec::new();
        let mut x = 88172645463325252u64;
        while data.len() < 64 << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
        for codec in [Codec::Gzip { level: 1 }, Codec::Zstd { level: 3 }, Codec::Lz4] {
            for threads in [1, 2] {
                let start = std::time::Instant::now();
                let mut c = Compressor::new(codec, threads, io::sink()).unwrap_or_else(|e| panic!("{e}"));
                for piece in data.chunks(1 << 20) {
                    c.write_all(piece).unwrap_or_else(|e| panic!("{e}"));
                }
                c.finish().unwrap_or_else(|e| panic!("{e}"));
                let secs = start.elapsed().as_secs_f64();
                println!("{codec:?} x{threads}: {:.0} MB/s", data.len() as f64 / 1e6 / secs);
            }
        }
    }

    #[test]
    fn truncated_or_corrupt_input_is_an_error() {
        let data = sample(3 * GZIP_BLOCK);
        for codec in [Codec::Zstd { level: 3 }, Codec::Gzip { level: 6 }, Codec::Lz4] {
            let packed = round_trip(codec, &data, 2);
            for cut in [packed.len() / 2, packed.len() - 1] {
                let mut out = Vec::new();
                let r = decoder(codec, &packed[..cut]).and_then(|mut d| d.read_to_end(&mut out));
                assert!(r.is_err(), "{codec:?} cut at {cut} of {} read fine", packed.len());
            }
        }
    }
}
