//! `s3get`: one S3 object to stdout, fetched in parallel, written in order, verified.

use crate::cli::flags::{Flag, Page};
use crate::cli::output::{self, Gauge, Progress, ProgressFlags, ProgressMode};
use crate::cli::s3_flags::{self, S3Args};
use crate::cli::values::{parse_number, parse_range, parse_size, ByteRange};
use crate::cli::{early_exit, ExitCode, Failure, COMMON_FLAGS};
use crate::compress::{self, Codec};
use crate::crypt::Identities;
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
        doc: "Ranges fetched at once (default 8). Memory is at most (N + 1) × part size.",
    },
    Flag { short: Some('p'), long: "part-size", value: Some("SIZE"), doc: "Size of each ranged GET (default 8M)." },
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
        doc: "Report progress on stderr even when it is not a terminal: a line every 10 s (--progress-interval) \
              with the bytes downloaded, their rate (MiB/s), and percent and ETA against the object's size, \
              and a summary line at the end (with the CRC32 and how it was verified). On a terminal one line \
              is rewritten in place every second, with or without this flag. ZSNAP_PROGRESS=1 in the \
              environment does the same as this flag, ZSNAP_PROGRESS=tty draws the terminal line into a pipe \
              that ends at a terminal (the zsnap-* scripts' steps), ZSNAP_PROGRESS=0 turns off the default on \
              a terminal.",
    },
    output::PROGRESS_INTERVAL_FLAG,
    Flag {
        short: None,
        long: "decrypt",
        value: None,
        doc: "The object is an age file (s3put --encrypt-to): decrypt it first (then --decompress, then the \
              --zfs-stream gate). The identity is read before anything is downloaded, and the age header is \
              checked before a byte is written: no identity exits 64, one that opens none of the object's \
              recipients 81, a header that is not age 65. A chunk that does not authenticate (a flipped \
              bit) or a cut end exits 65 at that chunk.",
    },
    Flag {
        short: Some('i'),
        long: "identity",
        value: Some("FILE"),
        doc: "With --decrypt: an age identity file (AGE-SECRET-KEY-1... lines, as age-keygen writes them); \
              repeatable. Default $AGE_IDENTITY_FILE.",
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
        long: "filter",
        value: Some("COMMAND"),
        doc: "Instead of --decompress, pipe the object (after --decrypt) through `bash -o pipefail -c COMMAND` \
              (e.g. a custom compressor's DECOMPRESS, 'xz -d') and write its output, through the \
              --zfs-stream gate when given: the gate stands between the command and zfs recv. A COMMAND \
              that exits non-zero exits 65.",
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
metadata s3put records, or the server's full-object or per-part CRC32 checksum (the part boundaries from \
s3put's zsnap-part-size for equal parts or zsnap-part-schedule for growing ones). A mismatch exits 65. \
Nothing is written after an error is detected; note that bytes already written cannot be taken back, so \
consumers such as zfs recv must also check the stream (zfs send streams carry their own checksums).

With --decompress and --zfs-stream the object is decompressed and checked as a zfs send stream as it is \
written, in a thread beside the downloads; memory grows by at most 9 MiB (the pipe to it) plus the \
decoder's window. Each piece is \
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
    pub progress: ProgressFlags,
    pub codec: Codec,
    /// `--zfs-stream`, with the expected (guid, from guid).
    pub gate: Option<(Option<u64>, Option<u64>)>,
    /// `--decrypt`: the object is an age file, opened with these identity files.
    pub decrypt: Option<Decrypt>,
    /// `--filter`: a command that decodes the object instead of `codec`.
    pub filter: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decrypt {
    pub identity_files: Vec<String>,
}

pub fn parse(argv: impl IntoIterator<Item = OsString>) -> Result<Result<Args, String>, Failure> {
    let mut p = lexopt::Parser::from_iter(argv);
    let mut s3 = S3Args::default();
    // Chosen by bench/s3-throughput: 8 ranges of 8 MiB beat 4 of 16 MiB (the same
    // server's CPU goes further with more, smaller ranges in flight) in 72 MiB, not 80.
    let mut concurrency: usize = 8;
    let mut chunk_size: u64 = 8 << 20;
    let mut range: Option<ByteRange> = None;
    let mut progress = ProgressFlags::default();
    let mut url = None;
    let mut codec = Codec::None;
    let (mut zfs_stream, mut expect_guid, mut expect_from) = (false, None, None);
    let (mut decrypt, mut identities) = (false, Vec::new());
    let mut filter = None;
    while let Some(arg) = p.next()? {
        if crate::cli::completions::asked(&arg) {
            return crate::cli::completions::take(&mut p, &PAGE, &[], &[]).map(Err);
        }
        if let Some(text) = early_exit(&arg, &PAGE) {
            return Ok(Err(text));
        }
        match arg {
            Short('c') | Long("concurrency") => concurrency = parse_number("concurrency", &p.value()?.string()?)?,
            Short('p') | Long("part-size") => chunk_size = parse_size("part-size", &p.value()?.string()?)?,
            Short('r') | Long("range") => range = Some(parse_range(&p.value()?.string()?)?),
            Short('d') | Long("decompress") => {
                codec = Codec::parse(&p.value()?.string()?).map_err(|e| Failure::usage(format!("--decompress: {e}")))?
            }
            Long("zfs-stream") => zfs_stream = true,
            Long("decrypt") => decrypt = true,
            Long("filter") => filter = Some(p.value()?.string()?),
            Short('i') | Long("identity") => identities.push(p.value()?.string()?),
            Long("expect-guid") => expect_guid = Some(parse_number::<u64>("expect-guid", &p.value()?.string()?)?),
            Long("expect-from") => expect_from = Some(parse_number::<u64>("expect-from", &p.value()?.string()?)?),
            Value(v) if url.is_none() => url = Some(v.string()?),
            Long(name) => {
                let name = name.to_string();
                if !progress.take(&name, &mut p)? && !s3.take(&name, &mut p)? {
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
    if filter.is_some() && codec != Codec::None {
        return Err(Failure::usage("--decompress and --filter are alternatives; give one"));
    }
    if filter.is_some() && range.is_some() {
        return Err(Failure::usage("--range cannot be combined with --filter"));
    }
    if !decrypt && !identities.is_empty() {
        return Err(Failure::usage("--identity needs --decrypt"));
    }
    if decrypt && range.is_some() {
        return Err(Failure::usage("--range cannot be combined with --decrypt"));
    }
    if decrypt && identities.is_empty() {
        match std::env::var("AGE_IDENTITY_FILE") {
            Ok(f) if !f.is_empty() => identities.push(f),
            _ => {
                return Err(Failure::usage(format!(
                    "{url} is to be decrypted: give --identity FILE or set AGE_IDENTITY_FILE"
                )))
            }
        }
    }
    let s3 = s3.with_env()?;
    let spec = DownloadSpec {
        url,
        chunk_size,
        concurrency,
        range,
        retries: s3.retries(),
        body_timeout: Some(s3.read_timeout.unwrap_or(client::DEFAULT_READ_TIMEOUT)),
    };
    let gate = zfs_stream.then_some((expect_guid, expect_from));
    let decrypt = decrypt.then_some(Decrypt { identity_files: identities });
    Ok(Ok(Args { spec, s3, progress, codec, gate, decrypt, filter }))
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
    // The object's size, from the download's HEAD, is what the percent is of.
    let progress = Progress::new(args.progress.mode()?).exact();
    let ticker = progress.start(Gauge { prefix: "s3get: ".into(), verb: "downloaded", stored: None });
    // Straight to fd 1: stdout's line buffering would split binary writes at newlines.
    let mut out = std::fs::File::from(
        std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Failure::new(ExitCode::LocalIo, format!("cannot use stdout: {e}")))?,
    );
    // Read (and refuse) the identity before a byte is downloaded.
    let identities = match &args.decrypt {
        Some(d) => Some(Identities::load(&d.identity_files)?),
        None => None,
    };
    let plain = args.codec == Codec::None && args.gate.is_none() && identities.is_none() && args.filter.is_none();
    let (result, stream) = if plain {
        (download::download(&client, &args.spec, &mut out, &progress).await, None)
    } else {
        // Eight 1 MiB pieces in flight to the decoder: slack for it, whatever the part size.
        let (mut sink, input) = crate::compress::channel::channel(8);
        let (codec, gate, url, filter) = (args.codec, args.gate, args.spec.url.clone(), args.filter.clone());
        let worker = std::thread::Builder::new()
            .name("s3get-decode".into())
            .spawn(move || {
                let how = Decode { codec, filter: filter.as_deref(), gate, identities: identities.as_ref() };
                decode(&how, &url, input, &mut out)
            })
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
    let r = result?;
    let extra = format!(", crc32 {:08x}, verified: {}", r.crc32, r.check.name());
    ticker.finish(output::Ended { done: r.bytes, stored: 0, elapsed: Some(r.elapsed), extra });
    let asked = args.progress.requested || matches!(progress.mode, ProgressMode::Log { .. });
    if let (true, Some(s)) = (asked, &stream) {
        eprintln!(
            "s3get: zfs stream verified: {} {} (guid {}), {} bytes, {} records",
            s.kind.name(),
            s.toname,
            s.toguid,
            s.bytes,
            s.records
        );
    }
    Ok(())
}

/// Decompress and gate what arrives on `input`, writing it to `out` record by record.
/// How the downloaded bytes become the output.
struct Decode<'a> {
    codec: Codec,
    filter: Option<&'a str>,
    gate: Option<(Option<u64>, Option<u64>)>,
    identities: Option<&'a Identities>,
}

fn decode(
    how: &Decode<'_>,
    url: &crate::s3::S3Url,
    input: crate::compress::channel::ChannelReader,
    out: &mut std::fs::File,
) -> Result<Option<StreamSummary>, Failure> {
    let Decode { codec, filter, gate, identities } = *how;
    // Decrypt first: the age header names the recipients before any byte goes out.
    let (input, what): (Box<dyn Read + Send>, &str) = match identities {
        Some(ids) => (Box::new(Decrypted(ids.decrypt(input, &url.to_string())?)), "decrypted"),
        None => (Box::new(input), ""),
    };
    let mut filtered = None;
    let mut dec: Box<dyn Read + Send> = match filter {
        Some(cmd) => {
            let f = Filter::start(cmd, input)?;
            let out = f.stdout;
            filtered = Some((f.child, f.feeder, cmd));
            Box::new(out)
        }
        None => compress::decoder(codec, input)
            .map_err(|e| Failure::new(ExitCode::Internal, format!("cannot start the {} decoder: {e}", codec.name())))?,
    };
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
            Err(e) if e.get_ref().is_some_and(|i| i.is::<DecryptFailed>()) => {
                return Err(crate::crypt::read_failure(&e, &url.to_string()))
            }
            Err(e) => {
                return Err(Failure::new(
                    ExitCode::Data,
                    format!("{url}: {} {what} data is corrupt or cut: {e}", codec.name()).replace("  ", " "),
                ))
            }
        };
        if let Some(g) = gate.as_mut() {
            g.feed(&buf[..n]).map_err(|e| Failure::from(e).context(url))?;
        }
        out.write_all(&buf[..n]).map_err(write_failed)?;
    }
    out.flush().map_err(write_failed)?;
    if let Some((mut child, feeder, cmd)) = filtered {
        drop(dec);
        let fed = feeder.join().unwrap_or_else(|_| Err("the filter's feeder thread panicked".into()));
        let status =
            child.wait().map_err(|e| Failure::new(ExitCode::Internal, format!("cannot wait for `{cmd}`: {e}")))?;
        if !status.success() {
            return Err(Failure::new(
                ExitCode::Data,
                format!("{url}: filter `{cmd}` failed ({status}): the object did not decode"),
            ));
        }
        fed.map_err(|e| Failure::new(ExitCode::Data, format!("{url}: feeding filter `{cmd}` failed: {e}")))?;
    }
    match gate {
        Some(g) => Ok(Some(g.finish().map_err(|e| Failure::from(e).context(url))?)),
        None => Ok(None),
    }
}

/// A `--filter` command: one thread feeds it the downloaded bytes while the caller reads
/// its stdout (two threads, or the pipes would deadlock).
struct Filter {
    child: std::process::Child,
    stdout: std::process::ChildStdout,
    feeder: std::thread::JoinHandle<Result<(), String>>,
}

impl Filter {
    fn start(cmd: &str, mut input: Box<dyn Read + Send>) -> Result<Filter, Failure> {
        let (child, mut stdin, stdout) = crate::stream_in::spawn_filter(cmd)?;
        let feeder = std::thread::Builder::new()
            .name("s3get-filter-feed".into())
            .spawn(move || match std::io::copy(&mut input, &mut stdin) {
                Ok(_) => Ok(()),
                // The filter stopped reading: how it exited says why.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                Err(e) => Err(e.to_string()),
            })
            .map_err(|e| Failure::new(ExitCode::Internal, format!("cannot start the filter's feeder: {e}")))?;
        Ok(Filter { child, stdout, feeder })
    }
}

/// The plaintext of an age file; a read error is age's (a chunk that does not
/// authenticate, or a cut end), marked so it is reported as such and not as the codec's.
struct Decrypted<R: Read>(age::stream::StreamReader<R>);

#[derive(Debug)]
struct DecryptFailed(std::io::Error);

impl std::fmt::Display for DecryptFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DecryptFailed {}

impl<R: Read> Read for Decrypted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf).map_err(|e| std::io::Error::new(e.kind(), DecryptFailed(e)))
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
        assert_eq!((a.spec.concurrency, a.spec.chunk_size), (8, 8 << 20));
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
