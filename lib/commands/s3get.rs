//! `s3get`: one S3 object to stdout, fetched in parallel, written in order, verified.

use crate::cli::flags::{Flag, Page};
use crate::cli::output::{human_bytes, mb_per_s, Progress};
use crate::cli::s3_flags::{self, S3Args};
use crate::cli::values::{parse_number, parse_range, parse_size, ByteRange};
use crate::cli::{early_exit, ExitCode, Failure, COMMON_FLAGS};
use crate::compress::{self, Codec};
use crate::s3::download::{self, DownloadSpec};
use crate::s3::{client, S3Url};
use crate::zfs::stream::{StreamGate, StreamSummary};
use lexopt::prelude::*;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::io::{Read, Write};
use std::os::fd::AsFd;

const FLAGS: &[Flag] = &[
    Flag {
        short: Some('c'),
        long: "concurrency",
        value: Some("N"),
        doc: "Ranges fetched at once (default 4). Memory is at most (N + 1) × part size.",
    },
    Flag { short: Some('p'), long: "part-size", value: Some("SIZE"), doc: "Size of each ranged GET (default 16M)." },
    Flag {
        short: Some('r'),
        long: "range",
        value: Some("START-END"),
        doc: "Only these bytes, inclusive as in HTTP (`0-1023`, or `4096-` to the end). The byte count \
              is checked; the object's CRC32 is not (it covers the whole object).",
    },
    Flag {
        short: None,
        long: "progress",
        value: None,
        doc: "Report progress on stderr even when it is not a terminal, and a summary at the end.",
    },
    Flag {
        short: Some('d'),
        long: "decompress",
        value: Some("CODEC"),
        doc: "Decompress in process before writing: zstd, gzip (also multi-member, as s3put --compress \
              gzip and pigz write), lz4 (an LZ4 frame) or none (the default). Corrupt or truncated \
              compressed data exits 65.",
    },
    Flag {
        short: None,
        long: "zfs-stream",
        value: None,
        doc: "Check the (decompressed) output as a raw zfs send stream on its way out, like s3put's \
              stream gate: a stream that is cut, corrupt, or followed by extra bytes exits 65 (67 if cut) \
              naming the problem and the byte. Bytes before the bad record may already have been written; \
              zfs recv discards an incomplete receive.",
    },
    Flag {
        short: None,
        long: "expect-guid",
        value: Some("GUID"),
        doc: "With --zfs-stream: the stream must be of the snapshot with this guid (decimal); otherwise \
              exit 65 before its first record is written.",
    },
    Flag {
        short: None,
        long: "expect-from",
        value: Some("GUID"),
        doc: "With --zfs-stream: the stream must be an incremental from this guid (0: a full stream).",
    },
];

pub static PAGE: Page = Page {
    name: "s3get",
    synopsis: "s3get [OPTIONS] s3://BUCKET/KEY > STREAM",
    about: "stream an S3 object to stdout, in order and verified",
    description: "s3get writes one S3 object to stdout. It fetches ranges in parallel and writes them \
strictly in order through a bounded reorder buffer, so memory stays at (concurrency + 1) × part size. \
Each range is retried on its own, and pinned to the ETag first seen, so an object replaced during the \
download fails rather than mixing two versions.

The byte count is always checked. The CRC32 is checked whenever the object carries one: the zsnap-crc32 \
metadata s3put records, or the server's full-object or per-part CRC32 checksum. A mismatch exits 65. \
Nothing is written after an error is detected; note that bytes already written cannot be taken back, so \
consumers such as zfs recv must also check the stream (zfs send streams carry their own checksums).

With --decompress and --zfs-stream the object is decompressed and checked as a zfs send stream as it is \
written, in a thread beside the downloads; memory grows by about three part sizes (ranges in flight to \
it) plus the decoder's window. Each piece is \
checked before it is written, so nothing after a detected error reaches stdout, but what came before it \
may already be out (an END checksum can only fail at the end): let zfs recv, which discards an \
incomplete receive, be the reader, and trust the exit status.

If the reader of stdout goes away (EPIPE), s3get stops quietly with exit 80. It refuses to write to a \
terminal.",
    groups: &[("Options", FLAGS), ("S3 connection", s3_flags::FLAGS), ("General", COMMON_FLAGS)],
    environment: s3_flags::ENVIRONMENT,
    examples: &[
        ("s3get s3://backups/tank/data@daily-1 | zfs recv -u tank/restored", "Restore a snapshot."),
        (
            "s3get --decompress zstd --zfs-stream s3://backups/tank/data@d1.zst | zfs recv -u tank/restored",
            "Restore a zstd-compressed backup, checking the stream on the way.",
        ),
        ("s3get -r 0-311 s3://backups/tank/data@daily-1 | xxd | head", "Look at the first record."),
    ],
    see_also: "s3put(1), zfs-recv(8)",
};

pub struct Args {
    pub spec: DownloadSpec,
    pub s3: S3Args,
    pub progress: bool,
    pub codec: Codec,
    /// `--zfs-stream`, with the expected (guid, from guid).
    pub gate: Option<(Option<u64>, Option<u64>)>,
}

pub fn parse(argv: impl IntoIterator<Item = OsString>) -> Result<Result<Args, String>, Failure> {
    let mut p = lexopt::Parser::from_iter(argv);
    let mut s3 = S3Args::default();
    let mut concurrency: usize = 4;
    let mut chunk_size: u64 = 16 << 20;
    let mut range: Option<ByteRange> = None;
    let mut progress = false;
    let mut url = None;
    let mut codec = Codec::None;
    let (mut zfs_stream, mut expect_guid, mut expect_from) = (false, None, None);
    while let Some(arg) = p.next()? {
        if let Some(text) = early_exit(&arg, &PAGE) {
            return Ok(Err(text));
        }
        match arg {
            Short('c') | Long("concurrency") => concurrency = parse_number("concurrency", &p.value()?.string()?)?,
            Short('p') | Long("part-size") => chunk_size = parse_size("part-size", &p.value()?.string()?)?,
            Short('r') | Long("range") => range = Some(parse_range(&p.value()?.string()?)?),
            Long("progress") => progress = true,
            Short('d') | Long("decompress") => {
                codec = Codec::parse(&p.value()?.string()?).map_err(|e| Failure::usage(format!("--decompress: {e}")))?
            }
            Long("zfs-stream") => zfs_stream = true,
            Long("expect-guid") => expect_guid = Some(parse_number::<u64>("expect-guid", &p.value()?.string()?)?),
            Long("expect-from") => expect_from = Some(parse_number::<u64>("expect-from", &p.value()?.string()?)?),
            Value(v) if url.is_none() => url = Some(v.string()?),
            Long(name) => {
                let name = name.to_string();
                if !s3.take(&name, &mut p)? {
                    return Err(Failure::usage(format!("invalid option '--{name}' (see --help)")));
                }
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let url = S3Url::parse(&url.ok_or_else(|| Failure::usage("missing s3://BUCKET/KEY (see --help)"))?, false)?;
    if concurrency == 0 || concurrency > 64 {
        return Err(Failure::usage("--concurrency must be 1..=64"));
    }
    if !(64 << 10..=5 << 30).contains(&chunk_size) {
        return Err(Failure::usage("--part-size must be between 64K and 5G"));
    }
    if !zfs_stream && (expect_guid.is_some() || expect_from.is_some()) {
        return Err(Failure::usage("--expect-guid and --expect-from need --zfs-stream"));
    }
    if range.is_some() && (zfs_stream || codec != Codec::None) {
        return Err(Failure::usage("--range cannot be combined with --decompress or --zfs-stream"));
    }
    let s3 = s3.with_env()?;
    let spec =
        DownloadSpec { url, chunk_size, concurrency, range, retries: s3.retries(), body_timeout: s3.read_timeout };
    let gate = zfs_stream.then_some((expect_guid, expect_from));
    Ok(Ok(Args { spec, s3, progress, codec, gate }))
}

pub fn main(argv: impl IntoIterator<Item = OsString>) -> Result<(), Failure> {
    let args = match parse(argv)? {
        Ok(a) => a,
        Err(text) => {
            return crate::cli::output::emit(&text);
        }
    };
    if std::io::stdout().is_terminal() {
        return Err(Failure::usage("refusing to write an object to a terminal; redirect stdout"));
    }
    crate::commands::runtime()?.block_on(run(args))
}

async fn run(args: Args) -> Result<(), Failure> {
    let client = client::connect(&args.s3).await;
    let progress = Progress::new(args.progress);
    let ticker = progress.spawn_ticker("s3get", "downloaded");
    // Straight to fd 1: stdout's line buffering would split binary writes at newlines.
    let mut out = std::fs::File::from(
        std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Failure::new(ExitCode::LocalIo, format!("cannot use stdout: {e}")))?,
    );
    let (result, stream) = if args.codec == Codec::None && args.gate.is_none() {
        (download::download(&client, &args.spec, &mut out, &progress).await, None)
    } else {
        let (mut sink, input) = crate::compress::channel::channel(2);
        let (codec, gate, url) = (args.codec, args.gate, args.spec.url.clone());
        let worker = std::thread::Builder::new()
            .name("s3get-decode".into())
            .spawn(move || decode(codec, gate, &url, input, &mut out))
            .map_err(|e| Failure::new(ExitCode::Internal, format!("cannot start decoder thread: {e}")))?;
        let result = download::download(&client, &args.spec, &mut sink, &progress).await;
        // End of input for the decoder: it now says whether the stream was whole.
        drop(sink);
        let decoded = tokio::task::block_in_place(|| worker.join())
            .unwrap_or_else(|_| Err(Failure::new(ExitCode::Internal, "decoder thread panicked")));
        match (result, decoded) {
            // The decoder stopped taking bytes (its error says why), or all went well.
            (Err(f), Err(d)) if f.code == ExitCode::ClosedStdout => (Err(d), None),
            (Err(f), _) => (Err(f), None),
            (Ok(r), Ok(s)) => (Ok(r), s),
            (Ok(_), Err(d)) => (Err(d), None),
        }
    };
    progress.finish(ticker);
    let r = result?;
    if let (true, Some(s)) = (args.progress, &stream) {
        eprintln!(
            "s3get: zfs stream verified: {} {} (guid {}), {} bytes, {} records",
            s.kind.name(),
            s.toname,
            s.toguid,
            s.bytes,
            s.records
        );
    }
    if args.progress {
        eprintln!(
            "s3get: {} ({} bytes) in {:.1}s, {} MB/s, crc32 {:08x}, verified: {}",
            human_bytes(r.bytes),
            r.bytes,
            r.elapsed.as_secs_f64(),
            mb_per_s(r.bytes, r.elapsed),
            r.crc32,
            r.check.name()
        );
    }
    Ok(())
}

/// Decompress and gate what arrives on `input`, writing it to `out` record by record.
fn decode(
    codec: Codec,
    gate: Option<(Option<u64>, Option<u64>)>,
    url: &crate::s3::S3Url,
    input: crate::compress::channel::ChannelReader,
    out: &mut std::fs::File,
) -> Result<Option<StreamSummary>, Failure> {
    let mut dec = compress::decoder(codec, input)
        .map_err(|e| Failure::new(ExitCode::Internal, format!("cannot start the {} decoder: {e}", codec.name())))?;
    let mut gate = gate.map(|(g, f)| StreamGate::expecting(g, f));
    let mut buf = vec![0u8; 1 << 20];
    let write_failed = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Failure::new(ExitCode::ClosedStdout, "")
        } else {
            Failure::new(ExitCode::LocalIo, format!("writing {url} to stdout failed: {e}"))
        }
    };
    loop {
        let n = match dec.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Failure::new(
                    ExitCode::Data,
                    format!("{url}: {} data is corrupt or cut: {e}", codec.name()),
                ))
            }
        };
        if let Some(g) = gate.as_mut() {
            g.feed(&buf[..n]).map_err(|e| Failure::from(e).context(url))?;
        }
        out.write_all(&buf[..n]).map_err(write_failed)?;
    }
    out.flush().map_err(write_failed)?;
    match gate {
        Some(g) => Ok(Some(g.finish().map_err(|e| Failure::from(e).context(url))?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Result<Args, String>, Failure> {
        parse(std::iter::once("s3get").chain(args.iter().copied()).map(OsString::from))
    }

    #[test]
    fn defaults_and_errors() {
        let a = parse_args(&["s3://bkt/k"]).unwrap().unwrap();
        assert_eq!((a.spec.concurrency, a.spec.chunk_size), (4, 16 << 20));
        for (args, needle) in [
            (&["s3://bkt/k", "-r", "5-1"][..], "--range"),
            (&["s3://bkt/k", "-p", "1K"][..], "--part-size"),
            (&["s3://bkt/k", "-c", "100"][..], "--concurrency"),
            (&["s3://bkt/k", "s3://bkt/j"][..], "s3://bkt/j"),
        ] {
            let e = parse_args(args).err().unwrap_or_else(|| panic!("{args:?} parsed"));
            assert_eq!(e.code, ExitCode::Usage);
            assert!(e.message.contains(needle), "{args:?}: {}", e.message);
        }
        let a = parse_args(&["s3://bkt/k", "-d", "gzip", "--zfs-stream", "--expect-guid", "42"]).unwrap().unwrap();
        assert_eq!((a.codec, a.gate), (Codec::Gzip { level: 6 }, Some((Some(42), None))));
        for (args, needle) in [
            (&["s3://bkt/k", "--expect-guid", "42"][..], "need --zfs-stream"),
            (&["s3://bkt/k", "-d", "bz2"][..], "--decompress"),
            (&["s3://bkt/k", "-d", "zstd", "-r", "0-9"][..], "--range"),
        ] {
            let e = parse_args(args).err().unwrap_or_else(|| panic!("{args:?} parsed"));
            assert_eq!(e.code, ExitCode::Usage);
            assert!(e.message.contains(needle), "{args:?}: {}", e.message);
        }
        match parse_args(&["--help"]) {
            Ok(Err(text)) => assert!(text.contains("EXIT CODES"), "{text}"),
            _ => panic!("--help must print the page"),
        }
    }
}
