//! `s3put`: stdin (or a producer command) to one S3 object, committed only when the whole
//! stream arrived; plus maintenance modes: listing and aborting uploads left in progress,
//! batch deletes and raising Object Lock retention (the S3 side of prune).

use crate::calendar::rfc3339;
use crate::catalog::KEY_TAG;
use crate::cli::flags::{Flag, Page};
use crate::cli::output::{self, human_bytes, json_line, mb_per_s, Gauge, Progress, ProgressFlags};
use crate::cli::s3_flags::{self, S3Args};
use crate::cli::values::{parse_duration, parse_meta, parse_number, parse_size};
use crate::cli::{early_exit, first_signal, Failure, COMMON_FLAGS};
use crate::compress::Codec;
use crate::crypt::Recipients;
use crate::s3::objects;
use crate::s3::part_size::{self, DEFAULT_MAX_PARTS};
use crate::s3::resume::{self, Choice, Resume};
use crate::s3::upload::{self, UploadSpec};
use crate::s3::{client, uploads, S3Url};
use crate::stream_in::{self, GateSpec, InputSpec, Source};
use lexopt::prelude::*;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const FLAGS: &[Flag] = &[
    Flag {
        short: Some('e'),
        long: "expected-size",
        value: Some("SIZE"),
        doc: "About how big the stream will be (e.g. from `zfs send -nP` or the snapshot's referenced \
              size). Parts are then all one size (but the last), chosen so the stream fits in --max-parts \
              with 25% headroom, never below 16 MiB, and the progress line says how far along the stream \
              is (percent of this size) and when it should end.",
    },
    Flag {
        short: Some('p'),
        long: "part-size",
        value: Some("SIZE"),
        doc: "Size of every part but the last (5M..5G). Overrides --expected-size. Without either, parts \
              grow with the stream: 16 MiB for the first 25 GiB, at most 256 MiB up to 1 TiB, 2 GiB at \
              the end, so 10,000 parts carry 5 TiB (with a smaller --max-parts the same shape, scaled: \
              1,000 parts carry 922 GiB). Cloudflare R2 requires every part but the last to be the same \
              size: give it --part-size or --expected-size.",
    },
    Flag {
        short: None,
        long: "max-parts",
        value: Some("N"),
        doc: "The server's part-count limit (default 10000; e.g. 1000 for Scaleway). A stream that would \
              need more parts fails before the first extra part is sent.",
    },
    Flag {
        short: Some('c'),
        long: "concurrency",
        value: Some("N"),
        doc: "Parts uploaded at once (default 4). Memory is at most (N + 1) × the current part size.",
    },
    Flag {
        short: Some('m'),
        long: "meta",
        value: Some("KEY=VALUE"),
        doc: "User metadata stored with the object (x-amz-meta-KEY); repeatable. Keys are lowercased.",
    },
    Flag { short: None, long: "storage-class", value: Some("CLASS"), doc: "e.g. STANDARD_IA, GLACIER_IR." },
    Flag {
        short: None,
        long: "content-type",
        value: Some("TYPE"),
        doc: "Content-Type of the object (default application/octet-stream).",
    },
    Flag {
        short: None,
        long: "lock-mode",
        value: Some("MODE"),
        doc: "Object Lock mode, GOVERNANCE or COMPLIANCE (needs --lock-until and a bucket with Object Lock, \
              checked before anything is sent: exit 76 where the server would drop the lock). Also for \
              --extend-lock.",
    },
    Flag {
        short: None,
        long: "lock-until",
        value: Some("TIME"),
        doc: "Object Lock retain-until date, RFC 3339 (e.g. 2027-01-31T00:00:00Z). Also for --extend-lock, \
              where it must be in the future.",
    },
    Flag {
        short: None,
        long: "allow-empty",
        value: None,
        doc: "Store an empty object when stdin is empty (by default empty input is an error: it usually \
              means the producer failed).",
    },
    Flag {
        short: Some('x'),
        long: "exec",
        value: Some("COMMAND"),
        doc: "Run COMMAND with `bash -o pipefail -c` and upload its stdout instead of stdin. The object is \
              committed only if COMMAND exits 0: a producer that fails or is killed mid-stream (exit 67) \
              leaves nothing behind. This is how a pipeline tells s3put that its stream was cut.",
    },
    Flag {
        short: None,
        long: "resume",
        value: None,
        doc: "Continue the newest multipart upload of this key that an earlier run left in progress: the \
              stream is read again in full (the stream gate still sees every byte), each part is compared \
              by size and CRC32 with the part the server holds under its number (ListParts), and a part \
              that matches is not sent again; the JSON line's reused_parts and saved_bytes say how much \
              was saved. A part that differs means the stream changed: that upload is aborted and the \
              stream starts over as a new upload (with --exec, at once; from stdin, on the next run). An \
              upload cut with different part sizes (another --part-size, or growing parts continued with \
              --expected-size or the other way round), or without CRC32s (--no-checksum), is aborted too. \
              And with --resume, an upload that fails in a way the next run can continue (the server or \
              network gone past --retries, a signal, a producer cut off) is kept instead of aborted, and \
              the message says so. Needs a stream that is the same bytes every time (zfs send of one \
              snapshot, with the same options and compressor), and one writer per key: zsnap-backup's \
              lock gives that.",
    },
    Flag {
        short: None,
        long: "no-checksum",
        value: None,
        doc: "Do not send x-amz-checksum-crc32 headers (for servers that reject them). Our own CRC32 is \
              still computed and printed.",
    },
    Flag {
        short: None,
        long: "progress",
        value: None,
        doc: "Report progress on stderr even when it is not a terminal: a line every 10 s (--progress-interval) \
              with the stream read, its rate (MiB/s), percent and ETA against --expected-size and the bytes \
              uploaded, and a summary line at the end. On a terminal one line is rewritten in place every \
              second, with or without this flag. ZSNAP_PROGRESS=1 in the environment does the same as this \
              flag, ZSNAP_PROGRESS=tty draws the terminal line into a pipe that ends at a terminal (the \
              zsnap-* scripts' steps), ZSNAP_PROGRESS=0 turns off the default on a terminal.",
    },
    output::PROGRESS_INTERVAL_FLAG,
];

const STREAM_FLAGS: &[Flag] = &[
    Flag {
        short: None,
        long: "zfs-stream",
        value: None,
        doc: "The input is a raw `zfs send` stream: every byte passes the stream gate before it is \
              compressed or uploaded, and the object is committed only if the gate saw the whole stream \
              (every record, every END record's fletcher-4 checksum right, the last END, nothing after \
              it), and the --exec producer and the --filter exited 0. A cut stream exits 67, a corrupt \
              one 65; either way nothing is stored. Compress after the gate (--compress, --filter), never \
              before it.",
    },
    Flag {
        short: None,
        long: "expect-guid",
        value: Some("GUID"),
        doc: "With --zfs-stream: the stream must be of the snapshot with this guid (decimal, as `zfs get \
              -H -p -o value guid` prints it); otherwise exit 65 before anything is stored. For a compound \
              (-R, -I) stream, the last snapshot's guid.",
    },
    Flag {
        short: None,
        long: "expect-from",
        value: Some("GUID"),
        doc: "With --zfs-stream: the stream must be an incremental from the snapshot with this guid; 0 \
              means it must be a full stream.",
    },
    Flag {
        short: None,
        long: "expect-raw",
        value: None,
        doc: "With --zfs-stream: the stream must be raw (zfs send -w), checked at each BEGIN record, so an \
              encrypted dataset's data is never stored decrypted; otherwise exit 65 before anything is \
              stored. Implied by a zsnap1 key with send=...w.",
    },
    Flag {
        short: Some('z'),
        long: "compress",
        value: Some("CODEC"),
        doc: "Compress in process before uploading: zstd[:LEVEL] (1-22, default 3, multi-threaded), \
              gzip[:LEVEL] (1-9, default 6; 1 MiB blocks compressed in parallel as gzip members, which \
              gzip -d and pigz -d read as one file), lz4 (an LZ4 frame), or none (the default). Besides \
              the part buffers, compression needs memory of its own (measured with 2 threads): zstd about \
              55 MiB per thread at level 3 and 85 MiB at level 9 (libzstd's job buffers; far more at \
              levels 19-22), gzip about 12 MiB per thread, lz4 about 10 MiB.",
    },
    Flag {
        short: None,
        long: "encrypt-to",
        value: Some("RECIPIENT"),
        doc: "Encrypt the stored bytes in process with age to RECIPIENT: an age1... X25519 public key, or \
              the path of a recipients file (one per line, # comments); repeatable, and anyone of them can \
              decrypt. Runs after the gate and the compressor (gate -> compress -> encrypt -> parts), so \
              the gate checks the plaintext stream and the object is a plain age file (`age -d -i KEY` \
              opens it); its CRC32 covers the encrypted bytes, so s3get verifies it without the key. No \
              secret is needed here. A zsnap1 key with enc=age.FP... must be given exactly the recipients \
              with those fingerprints, and one without enc= none. The JSON line's encrypted_to lists the \
              recipients' fingerprints. An encrypted stream is new bytes every time, so --resume cannot \
              reuse its parts (it starts over).",
    },
    Flag {
        short: Some('T'),
        long: "threads",
        value: Some("N"),
        doc: "Worker threads for --compress zstd and gzip (default: the number of CPUs).",
    },
    Flag {
        short: None,
        long: "filter",
        value: Some("COMMAND"),
        doc: "Instead of an in-process codec, pipe the (gated) stream through `bash -o pipefail -c \
              COMMAND` (e.g. 'xz -T0') and upload its stdout. Committed only if COMMAND exits 0 after \
              reading all of its input.",
    },
];

const CLEANUP_FLAGS: &[Flag] = &[
    Flag {
        short: None,
        long: "list-uploads",
        value: None,
        doc: "Instead of uploading, list multipart uploads in progress under the URL (a prefix), one JSON \
              line each: {\"action\": \"in-progress\", \"url\", \"upload_id\", \"initiated\", \"parts\", \
              \"stored_bytes\"} (the parts it holds, which --resume would not send again).",
    },
    Flag {
        short: None,
        long: "abort-uploads",
        value: None,
        doc: "Instead of uploading, abort multipart uploads in progress under the URL (a prefix), e.g. \
              after `kill -9` or a server outage. Prints one JSON line per upload aborted.",
    },
    Flag {
        short: None,
        long: "older-than",
        value: Some("DURATION"),
        doc: "With --list-uploads/--abort-uploads: only uploads started at least this long ago (e.g. 1h, \
              2d), so running uploads are left alone.",
    },
];

const RETENTION_FLAGS: &[Flag] = &[
    Flag {
        short: None,
        long: "delete",
        value: None,
        doc: "Instead of uploading, delete the objects named by one or more s3://BUCKET/KEY URLs (all in one \
              bucket) with batch DeleteObjects, in the order given (children before parents). Reads no \
              stdin. One JSON line per key: {\"key\": URL, \"deleted\": true}, or {\"key\", \"deleted\": \
              false, \"code\", \"message\"}. A key that does not exist counts as deleted. A key under Object \
              Lock (a retain-until date in the future or a legal hold: when the bucket's Object Lock \
              configuration, read once, says it has Object Lock, one HEAD per key, so the key needs \
              s3:GetObject too, and on AWS s3:GetObjectRetention and s3:GetObjectLegalHold, without \
              which HEAD hides the lock) is not sent: in a versioned bucket its delete would only add a \
              delete marker and hide it, so it is reported with code ObjectLocked. In a versioned bucket \
              an unlocked key's delete is a delete marker too; its bytes stay until a lifecycle rule \
              expires noncurrent versions. Exit 0 when every key was deleted; 77 when one was denied \
              (AccessDenied: the key lacks s3:DeleteObject) or locked; otherwise the code of the first \
              failure.",
    },
    Flag {
        short: None,
        long: "extend-lock",
        value: None,
        doc: "Instead of uploading, raise the Object Lock retention of each URL's object to at least \
              --lock-until in --lock-mode (PutObjectRetention); never shortens it, and an active COMPLIANCE \
              lock stays COMPLIANCE. One JSON line per key: {\"key\", \"mode\", \"retain_until_before\", \
              \"retain_until\", \"changed\"} (times RFC 3339, null when none). A bucket without Object \
              Lock (or a server without it, such as Garage) fails with exit 76 before anything is written.",
    },
];

pub static PAGE: Page = Page {
    name: "s3put",
    synopsis: "s3put [OPTIONS] s3://BUCKET/KEY < STREAM",
    about: "stream stdin to an S3 object, all or nothing",
    description: "s3put reads a stream from stdin (or from the stdout of --exec COMMAND) and stores it as \
one S3 object with a streaming multipart upload. Memory stays bounded at (concurrency + 1) × part size, \
whatever the stream's length. A stream shorter than one part is stored with a single PUT.

With --part-size or --expected-size every part but the last has one size. With neither (a pipe of unknown \
length), parts grow with the stream so that a small one needs little memory and a large one still fits: 1,600 \
parts of 16 MiB (25 GiB), then 500 each of 32, 64 and 128 MiB, 3,560 of 256 MiB (to 1 TiB), 1,000 each of \
512 MiB and 1 GiB, and 1,340 of 2 GiB: 10,000 parts carry 5.08 TiB. With the default concurrency that is \
at most 80 MiB of part buffers up to 25 GiB, 1.25 GiB (the old fixed 256 MiB default's) up to 1 TiB, and \
10 GiB near 5 TiB. A smaller --max-parts scales the runs (the last run is then 5 GiB parts): 1,000 parts \
carry 922 GiB. Cloudflare R2 refuses parts of different sizes: give it --part-size (or --expected-size).

The object appears only when the whole stream has been read and every part stored. On any error, and on \
SIGINT, SIGTERM, SIGPIPE or SIGHUP, the multipart upload is aborted and nothing is stored. An upload that \
could not be aborted (kill -9, server down) stays invisible and can be removed with --abort-uploads.

End of input alone cannot prove a stream is whole: a producer that is killed closes the pipe just like one \
that finished. With --exec, s3put runs the producer itself and commits only when it exits 0 (run through bash -o pipefail, so any \
failing stage of a pipeline counts). With --zfs-stream, s3put reads the zfs send stream itself and commits \
only when its final END record has arrived with the right checksum: this works from a plain stdin pipe too, \
where a cut stream looks like any other end of input. A key whose name starts with zsnap1, (a zsnap backup) \
is refused from a bare pipe: give --zfs-stream or --exec. With --zfs-stream, such a key's guid= (and from=, \
or kind=full) fields are what the stream must be, as with --expect-guid and --expect-from.

Each part carries an x-amz-checksum-crc32 header, which the server checks, and the whole-object CRC32 is \
given at completion. A single-PUT object records its CRC32 and length in metadata (zsnap-crc32, \
zsnap-bytes), a multipart object how its parts are cut (zsnap-part-size for equal parts, zsnap-part-schedule \
for growing ones), so s3get can verify what it reads.

On success one JSON line goes to stdout: {\"key\", \"bytes\", \"parts\", \"part_size\" (of the last part \
cut, the largest), \"part_schedule\" (the growing parts' zsnap-part-schedule, else null), \"crc32\", \
\"seconds\", \"mb_per_s\", \"multipart\", \"compressor\", \"input_bytes\", \"resumed\", \"reused_parts\", \
\"saved_bytes\", \"encrypted_to\"}, where bytes is what was stored, input_bytes what was read, resumed the id \
of the upload --resume continued (else null), saved_bytes the bytes of its reused_parts that were not sent \
again, and encrypted_to the recipients' fingerprints (null when not encrypted); with --filter also \"filter\", \
and with --zfs-stream also \"stream\": \
{\"bytes\", \"kind\" (full, incremental or compound), \"toguid\", \"fromguid\", \"toname\", \"records\", \
\"dedup\"} (guids as decimal strings; a compound stream adds \"substreams\"). Messages go to stderr, \
prefixed with s3put:.

Maintenance modes read no stdin and take only their own flags and the S3 connection flags: \
s3put --list-uploads|--abort-uploads [--older-than DURATION] s3://BUCKET/PREFIX; \
s3put --delete s3://BUCKET/KEY...; and \
s3put --extend-lock --lock-mode MODE --lock-until TIME s3://BUCKET/KEY... (several URLs, one bucket).",
    groups: &[
        ("Options", FLAGS),
        ("ZFS streams and compression", STREAM_FLAGS),
        ("Cleanup", CLEANUP_FLAGS),
        ("Retention (delete, Object Lock)", RETENTION_FLAGS),
        ("S3 connection", s3_flags::FLAGS),
        ("General", COMMON_FLAGS),
    ],
    environment: s3_flags::ENVIRONMENT,
    examples: &[
        ("zfs send tank/data@daily-1 | s3put -e 40G s3://backups/tank/data@daily-1", "Back up a snapshot."),
        (
            "zfs send tank/data@d1 | s3put --zfs-stream --compress zstd s3://backups/tank/data@d1.zst",
            "Back up a snapshot, verified as a whole zfs send stream, compressed with zstd on every core.",
        ),
        (
            "s3put --exec 'zfs send tank/data@d1' --zfs-stream --filter 'xz -T0' s3://backups/tank/data@d1.xz",
            "Back up through an external compressor; nothing is stored unless zfs send and xz both succeed \
             and the stream is whole.",
        ),
        ("s3put --abort-uploads --older-than 1d s3://backups/tank/", "Clean up after crashed uploads."),
        (
            "s3put --extend-lock --lock-mode GOVERNANCE --lock-until 2027-06-30T00:00:00Z s3://backups/tank/data/@d1/k",
            "Keep a backup under Object Lock until mid-2027 (a later date already set is kept).",
        ),
        ("s3put --delete s3://backups/tank/data/@d2/k2 s3://backups/tank/data/@d1/k1", "Delete two backups, child first."),
    ],
    see_also: "s3get(1), zfs-send(8)",
};

/// What to do, parsed and validated; no I/O yet.
pub struct Args {
    /// The object (or prefix) to work on; for --delete and --extend-lock the first URL.
    pub url: S3Url,
    pub s3: S3Args,
    pub action: Action,
}

pub enum Action {
    Upload {
        spec: Box<UploadSpec>,
        /// What is read and how: source, gate, codec or filter.
        input: Box<InputSpec>,
        progress: ProgressFlags,
        /// `--expected-size`: what the progress line measures the stream against.
        expected: Option<u64>,
    },
    ListUploads {
        older_than: Duration,
    },
    AbortUploads {
        older_than: Duration,
    },
    /// Keys in `url.bucket`, in the order given.
    Delete {
        keys: Vec<String>,
    },
    /// Keys in `url.bucket`; `until` in unix seconds.
    ExtendLock {
        keys: Vec<String>,
        mode: String,
        until: i64,
    },
}

/// The maintenance modes and the flags of ours each accepts (besides the S3 connection
/// and general flags); an upload takes every flag but these modes' own.
const MODES: &[(&str, &[&str])] = &[
    ("list-uploads", &["older-than"]),
    ("abort-uploads", &["older-than"]),
    ("delete", &[]),
    ("extend-lock", &["lock-mode", "lock-until"]),
];

/// The long name of one of s3put's own flags (not the S3 or general ones).
fn own_flag(arg: &lexopt::Arg<'_>) -> Option<&'static str> {
    let tables = [FLAGS, STREAM_FLAGS, CLEANUP_FLAGS, RETENTION_FLAGS];
    let mut all = tables.iter().flat_map(|t| t.iter());
    match arg {
        Long(name) => all.find(|f| f.long == *name).map(|f| f.long),
        Short(c) => all.find(|f| f.short == Some(*c)).map(|f| f.long),
        Value(_) => None,
    }
}

/// Which mode the flags seen ask for (`None`: an upload), refusing two modes at once and
/// flags that do not belong to the mode.
fn mode_of(seen: &[&'static str]) -> Result<Option<&'static str>, Failure> {
    let modes: Vec<&str> = MODES.iter().map(|(m, _)| *m).filter(|m| seen.contains(m)).collect();
    match modes[..] {
        [] if seen.contains(&"older-than") => {
            Err(Failure::usage("--older-than needs --list-uploads or --abort-uploads"))
        }
        [] => Ok(None),
        [mode] => {
            let own = MODES.iter().find(|(m, _)| *m == mode).map(|(_, o)| *o).unwrap_or(&[]);
            match seen.iter().find(|f| **f != mode && !own.contains(f)) {
                Some(f) => Err(Failure::usage(format!("--{mode} does not take --{f}"))),
                None => Ok(Some(mode)),
            }
        }
        [a, b, ..] => Err(Failure::usage(format!("--{a} and --{b} are different modes; give one"))),
    }
}

/// Parse the command line. `Ok(Err(text))` means print `text` and exit 0 (help, man).
pub fn parse(argv: impl IntoIterator<Item = OsString>) -> Result<Result<Args, String>, Failure> {
    let mut p = lexopt::Parser::from_iter(argv);
    let mut s3 = S3Args::default();
    let (mut part_size, mut expected, mut max_parts) = (None, None, DEFAULT_MAX_PARTS);
    let mut concurrency: usize = 4;
    let mut metadata = Vec::new();
    let (mut storage_class, mut content_type, mut lock_mode, mut lock_until) = (None, None, None, None);
    let (mut allow_empty, mut exec, mut checksums) = (false, None, true);
    let mut progress = ProgressFlags::default();
    let mut resume = false;
    let mut older_than = None;
    let (mut zfs_stream, mut expect_guid, mut expect_from): (bool, Option<u64>, Option<u64>) = (false, None, None);
    let mut expect_raw = false;
    let (mut codec, mut threads, mut filter) = (Codec::None, None, None);
    let mut encrypt_to: Vec<String> = Vec::new();
    let mut urls: Vec<String> = Vec::new();
    let mut seen: Vec<&'static str> = Vec::new();
    while let Some(arg) = p.next()? {
        if crate::cli::completions::asked(&arg) {
            return crate::cli::completions::take(&mut p, &PAGE, &[], &[]).map(Err);
        }
        if let Some(text) = early_exit(&arg, &PAGE) {
            return Ok(Err(text));
        }
        seen.extend(own_flag(&arg));
        match arg {
            Short('e') | Long("expected-size") => expected = Some(parse_size("expected-size", &p.value()?.string()?)?),
            Short('p') | Long("part-size") => part_size = Some(parse_size("part-size", &p.value()?.string()?)?),
            Long("max-parts") => max_parts = parse_number("max-parts", &p.value()?.string()?)?,
            Short('c') | Long("concurrency") => concurrency = parse_number("concurrency", &p.value()?.string()?)?,
            Short('m') | Long("meta") => metadata.push(parse_meta(&p.value()?.string()?)?),
            Long("storage-class") => storage_class = Some(p.value()?.string()?),
            Long("content-type") => content_type = Some(p.value()?.string()?),
            Long("lock-mode") => lock_mode = Some(p.value()?.string()?.to_ascii_uppercase()),
            Long("lock-until") => lock_until = Some(p.value()?.string()?),
            Long("allow-empty") => allow_empty = true,
            Short('x') | Long("exec") => exec = Some(p.value()?.string()?),
            Long("no-checksum") => checksums = false,
            Long("resume") => resume = true,
            Long("zfs-stream") => zfs_stream = true,
            Long("expect-guid") => expect_guid = Some(parse_number::<u64>("expect-guid", &p.value()?.string()?)?),
            Long("expect-from") => expect_from = Some(parse_number::<u64>("expect-from", &p.value()?.string()?)?),
            Long("expect-raw") => expect_raw = true,
            Short('z') | Long("compress") => {
                codec = Codec::parse(&p.value()?.string()?).map_err(|e| Failure::usage(format!("--compress: {e}")))?
            }
            Short('T') | Long("threads") => threads = Some(parse_number::<usize>("threads", &p.value()?.string()?)?),
            Long("filter") => filter = Some(p.value()?.string()?),
            Long("encrypt-to") => encrypt_to.push(p.value()?.string()?),
            Long("list-uploads") | Long("abort-uploads") | Long("delete") | Long("extend-lock") => {}
            Long("older-than") => older_than = Some(parse_duration("older-than", &p.value()?.string()?)?),
            Value(v) => urls.push(v.string()?),
            Long(name) => {
                let name = name.to_string();
                if !progress.take(&name, &mut p)? && !s3.take(&name, &mut p)? {
                    return Err(Failure::usage(format!("invalid option '--{name}' (see --help)")));
                }
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let mode = mode_of(&seen)?;
    if urls.is_empty() {
        return Err(Failure::usage("missing s3://BUCKET/KEY (see --help)"));
    }
    let s3 = s3.with_env()?;
    if let Some(mode @ ("delete" | "extend-lock")) = mode {
        let parsed = urls.iter().map(|u| S3Url::parse(u, false)).collect::<Result<Vec<_>, _>>()?;
        let url = parsed[0].clone();
        if let Some(other) = parsed.iter().find(|u| u.bucket != url.bucket) {
            return Err(Failure::usage(format!(
                "--{mode}: every URL must be in one bucket ({} and {other})",
                url.bucket
            )));
        }
        let keys = parsed.into_iter().map(|u| u.key).collect();
        let action = if mode == "delete" {
            Action::Delete { keys }
        } else {
            let mode = lock_mode.ok_or_else(|| Failure::usage("--extend-lock needs --lock-mode and --lock-until"))?;
            let until = lock_until.ok_or_else(|| Failure::usage("--extend-lock needs --lock-mode and --lock-until"))?;
            let until = parse_lock_until(&until)?.secs();
            check_lock_mode(&mode)?;
            if until <= crate::calendar::now() {
                return Err(Failure::usage(format!("--lock-until: {} is not in the future", rfc3339(until))));
            }
            Action::ExtendLock { keys, mode, until }
        };
        return Ok(Ok(Args { url, s3, action }));
    }
    let [url] = &urls[..] else {
        return Err(Failure::usage(format!(
            "one s3://BUCKET/KEY at a time (several only with --delete or --extend-lock): '{}'",
            urls[1]
        )));
    };
    let older_than = older_than.unwrap_or(Duration::ZERO);
    if let Some(mode) = mode {
        let url = S3Url::parse(url, true)?;
        let action = if mode == "abort-uploads" {
            Action::AbortUploads { older_than }
        } else {
            Action::ListUploads { older_than }
        };
        return Ok(Ok(Args { url, s3, action }));
    }
    let url = S3Url::parse(url, false)?;
    if concurrency == 0 || concurrency > 64 {
        return Err(Failure::usage("--concurrency must be 1..=64"));
    }
    let plan = part_size::plan(part_size, expected, max_parts).map_err(Failure::usage)?;
    if let Some(m) = &lock_mode {
        check_lock_mode(m)?;
    }
    if lock_mode.is_some() != lock_until.is_some() {
        return Err(Failure::usage("--lock-mode and --lock-until go together"));
    }
    let lock_until = lock_until.as_deref().map(parse_lock_until).transpose()?;
    if !zfs_stream && (expect_guid.is_some() || expect_from.is_some() || expect_raw) {
        return Err(Failure::usage("--expect-guid, --expect-from and --expect-raw need --zfs-stream"));
    }
    if filter.is_some() && codec != Codec::None {
        return Err(Failure::usage("--compress and --filter are alternatives; give one"));
    }
    let threads = match threads {
        Some(n) if !(1..=256).contains(&n) => return Err(Failure::usage("--threads must be 1..=256")),
        Some(n) => n,
        None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };
    let encrypt = match encrypt_to.is_empty() {
        true => None,
        false => Some(Recipients::parse(&encrypt_to).map_err(|e| Failure::usage(format!("--encrypt-to: {e}")))?),
    };
    let base = url.key.rsplit('/').next().unwrap_or("");
    if base.starts_with(KEY_TAG) && !zfs_stream && exec.is_none() {
        return Err(Failure::usage(
            "refusing to store a zsnap backup key from a bare pipe: a cut stream could not be detected; use \
             --zfs-stream or --exec",
        ));
    }
    if zfs_stream && base.starts_with(KEY_TAG) {
        // docs/FORMAT.md: a zsnap1 key is only committed when the stream is the snapshot
        // (and parent) the key names.
        // The catalog's own parser: a key it would not list as a backup is not stored as one.
        let f = match crate::catalog::key::parse("", &url.key) {
            crate::catalog::key::ParsedKey::Zsnap(f) => f,
            crate::catalog::key::ParsedKey::Foreign(why)
            | crate::catalog::key::ParsedKey::Legacy { dataset: why, .. } => {
                return Err(Failure::usage(format!(
                    "{} is not a valid zsnap1 backup key ({why}); see docs/FORMAT.md",
                    url.key
                )))
            }
        };
        expect_guid = Some(agree("--expect-guid", expect_guid, f.guid)?);
        expect_from = Some(agree("--expect-from", expect_from, f.from.map_or(0, |(g, _)| g))?);
        expect_raw |= f.send.raw();
        let given = encrypt.as_ref().map(Recipients::fingerprints).unwrap_or_default();
        if given != f.encrypted_to {
            let said = |fps: &[String], none: &str| match fps {
                [] => none.to_string(),
                fps => format!("encrypted to {}", fps.join(", ")),
            };
            return Err(Failure::usage(format!(
                "--encrypt-to gives {} but the key says {}",
                said(&given, "no recipient"),
                said(&f.encrypted_to, "not encrypted")
            )));
        }
    }
    let gate = zfs_stream.then_some(GateSpec { expect_guid, expect_from, expect_raw });
    let spec = UploadSpec {
        url: url.clone(),
        plan,
        concurrency,
        metadata,
        storage_class,
        content_type,
        lock_mode,
        lock_until,
        allow_empty,
        checksums,
        compressor: (codec != Codec::None && filter.is_none()).then(|| codec.name().to_string()),
        resume,
    };
    let source = match exec {
        Some(cmd) => Source::Exec(cmd),
        None => Source::Stdin,
    };
    let input = InputSpec { source, gate, codec, threads, filter, allow_empty, encrypt };
    Ok(Ok(Args {
        url,
        s3,
        action: Action::Upload { spec: Box::new(spec), input: Box::new(input), progress, expected },
    }))
}

/// The input pipeline writes into the uploader's parts; plain input is read straight into
/// part buffers.
impl stream_in::PartSink for upload::PartWriter {
    fn read_from(&mut self, src: &mut dyn std::io::Read) -> Result<u64, Failure> {
        self.fill_from(src)
    }
}

fn check_lock_mode(mode: &str) -> Result<(), Failure> {
    match mode {
        "GOVERNANCE" | "COMPLIANCE" => Ok(()),
        m => Err(Failure::usage(format!("--lock-mode: '{m}' is not GOVERNANCE or COMPLIANCE"))),
    }
}

fn parse_lock_until(t: &str) -> Result<aws_smithy_types::DateTime, Failure> {
    aws_smithy_types::DateTime::from_str(t, aws_smithy_types::date_time::Format::DateTime)
        .map_err(|_| Failure::usage(format!("--lock-until: '{t}' is not an RFC 3339 time")))
}

/// A flag and the key may both name a guid, but not two different ones.
fn agree(flag: &str, given: Option<u64>, from_key: u64) -> Result<u64, Failure> {
    match given {
        Some(g) if g != from_key => {
            Err(Failure::usage(format!("{flag} {g} contradicts the key, which names {from_key}")))
        }
        _ => Ok(from_key),
    }
}

pub fn main(argv: impl IntoIterator<Item = OsString>) -> Result<(), Failure> {
    let args = match parse(argv)? {
        Ok(a) => a,
        Err(text) => {
            return crate::cli::output::emit(&text);
        }
    };
    crate::commands::runtime()?.block_on(run(args))
}

async fn run(args: Args) -> Result<(), Failure> {
    let client = client::connect(&args.s3).await;
    match args.action {
        Action::Upload { spec, input, progress, expected } => {
            // A lock the server would silently drop (Garage) must fail before anything is
            // stored, not leave an unlocked backup that looks locked.
            if spec.lock_mode.is_some() {
                objects::require_object_lock(&client, &spec.url.bucket).await?;
            }
            let resume = if spec.resume { resumable(&client, &spec).await? } else { None };
            // The environment and stderr are read here, not in the pure parse.
            let progress = Progress::new(progress.mode()?).with_total(expected);
            let gauge = Gauge { prefix: "s3put: ".into(), verb: "read", stored: Some("uploaded") };
            let ticker = progress.start(gauge);
            let mut result = upload_once(&client, &spec, &input, resume.clone(), &progress).await;
            if let (Err(f), Some(r)) = (&result, &resume) {
                if let (Some(part), Source::Exec(_)) = (r.mismatch(), &input.source) {
                    // The producer can be run again: start over as a new upload.
                    eprintln!("s3put: {}; starting over as a new upload", f.message);
                    eprintln!("s3put: part {part} differed, so the stream is sent again in full");
                    // The stream is read again from its first byte: so is the count.
                    progress.reset();
                    result = upload_once(&client, &spec, &input, None, &progress).await;
                }
            }
            let (r, read) = result.map_err(|f| match resume.as_ref().and_then(|r| r.mismatch()) {
                Some(_) if matches!(input.source, Source::Stdin) => {
                    Failure::new(f.code, format!("{}; run again to send the stream as a new upload", f.message))
                }
                _ => f,
            })?;
            let extra = if r.reused_parts > 0 {
                format!(", {} parts ({}) already stored", r.reused_parts, human_bytes(r.saved_bytes))
            } else {
                String::new()
            };
            let elapsed = Some(r.elapsed);
            ticker.finish(output::Ended { done: read.input_bytes, stored: r.bytes, elapsed, extra });
            let mut line = serde_json::json!({
                "key": spec.url.to_string(),
                "bytes": r.bytes,
                "parts": r.parts,
                "part_size": r.part_size,
                "part_schedule": match &spec.plan.schedule {
                    part_size::Schedule::Grow(_) => Some(spec.plan.schedule.metadata().1),
                    part_size::Schedule::Equal(_) => None,
                },
                "crc32": format!("{:08x}", r.crc32),
                "seconds": (r.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
                "mb_per_s": mb_per_s(r.bytes, r.elapsed),
                "multipart": r.multipart,
                "compressor": if input.filter.is_some() { "filter" } else { input.codec.name() },
                "input_bytes": read.input_bytes,
                "resumed": r.resumed,
                "reused_parts": r.reused_parts,
                "saved_bytes": r.saved_bytes,
                "encrypted_to": input.encrypt.as_ref().map(Recipients::fingerprints),
            });
            if let Some(f) = &input.filter {
                line["filter"] = f.as_str().into();
            }
            if let Some(s) = &read.stream {
                line["stream"] = s.to_json();
            }
            json_line(&line)
        }
        Action::ListUploads { older_than } | Action::AbortUploads { older_than } => {
            let abort = matches!(args.action, Action::AbortUploads { .. });
            let found = uploads::list(&client, &args.url).await?;
            let chosen = uploads::older_than(found, older_than, SystemTime::now());
            for u in &chosen {
                if abort {
                    uploads::abort(&client, &args.url.bucket, u).await?;
                }
                let action = if abort { "aborted" } else { "in-progress" };
                let mut line = u.to_json(&args.url.bucket, action);
                if !abort {
                    // What a --resume would not send again.
                    let url = S3Url { bucket: args.url.bucket.clone(), key: u.key.clone() };
                    let parts = resume::list_parts(&client, &url, &u.upload_id).await?;
                    line["parts"] = parts.len().into();
                    line["stored_bytes"] = parts.values().map(|p| p.size).sum::<u64>().into();
                }
                json_line(&line)?;
            }
            Ok(())
        }
        Action::Delete { keys } => {
            let bucket = &args.url.bucket;
            let results = objects::delete_unlocked(&client, bucket, &keys, crate::calendar::now()).await?;
            for d in &results {
                let mut line =
                    serde_json::json!({"key": format!("s3://{bucket}/{}", d.key), "deleted": d.error.is_none()});
                if let Some((code, message)) = &d.error {
                    line["code"] = code.as_str().into();
                    line["message"] = message.as_str().into();
                }
                print_line(&line)?;
            }
            objects::delete_failure(bucket, &results).map_or(Ok(()), Err)
        }
        Action::ExtendLock { keys, mode, until } => {
            let bucket = &args.url.bucket;
            for key in &keys {
                let (before, changed) = objects::extend_lock(&client, bucket, key, &mode, until).await?;
                // What extend_lock set, from the same pure rule it applied.
                let (now_mode, now_until) = match objects::extension(&before, &mode, until, crate::calendar::now()) {
                    Some((m, t)) if changed => (Some(m), Some(t)),
                    _ => (before.mode.clone(), before.retain_until),
                };
                print_line(&serde_json::json!({
                    "key": format!("s3://{bucket}/{key}"),
                    "mode": now_mode,
                    "retain_until_before": before.retain_until.map(rfc3339),
                    "retain_until": now_until.map(rfc3339),
                    "changed": changed,
                }))?;
            }
            Ok(())
        }
    }
}

/// With --resume: the in-progress upload of the key to continue, if one can be. One that
/// cannot (cut another way) is aborted here, before the producer starts.
async fn resumable(client: &client::Client, spec: &UploadSpec) -> Result<Option<Arc<Resume>>, Failure> {
    match resume::find(client, &spec.url, &spec.plan.schedule).await? {
        Choice::Fresh => Ok(None),
        Choice::Resume(r) => {
            eprintln!(
                "s3put: resuming upload {} of {}: {} part(s), {} stored; each is checked against the stream \
                 (size and CRC32) and not sent again",
                r.upload_id,
                spec.url,
                r.parts.len(),
                human_bytes(r.stored_bytes())
            );
            Ok(Some(Arc::new(r)))
        }
        Choice::Discard { upload_id, why } => {
            eprintln!("s3put: not resuming upload {upload_id} of {}: {why}; aborting it and starting over", spec.url);
            let pending = uploads::PendingUpload { key: spec.url.key.clone(), upload_id, initiated: None };
            uploads::abort(client, &spec.url.bucket, &pending).await?;
            Ok(None)
        }
    }
}

/// Start the producer (only now, after every check) and upload what it gives.
async fn upload_once(
    client: &client::Client,
    spec: &UploadSpec,
    input: &InputSpec,
    resume: Option<Arc<Resume>>,
    progress: &Progress,
) -> Result<(upload::UploadReport, stream_in::Consumed), Failure> {
    let opened = stream_in::open(input, progress.input.clone())?;
    upload::upload(client, spec, resume, progress, first_signal(), move |parts| opened.read_into(parts)).await
}

fn print_line(line: &serde_json::Value) -> Result<(), Failure> {
    json_line(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ExitCode;

    fn parse_ok(args: &[&str]) -> Args {
        crate::commands::parse_test::ok(parse, "s3put", args)
    }

    fn parse_err(args: &[&str]) -> Failure {
        crate::commands::parse_test::err(parse, "s3put", args)
    }

    #[test]
    fn upload_defaults() {
        let a = parse_ok(&["s3://bkt/k"]);
        let Action::Upload { spec, .. } = a.action else { panic!() };
        assert_eq!(spec.plan, part_size::plan(None, None, DEFAULT_MAX_PARTS).unwrap());
        assert!(matches!(spec.plan.schedule, part_size::Schedule::Grow(_)));
        assert_eq!(spec.plan.part_size(1), 16 << 20);
        assert_eq!(spec.concurrency, 4);
        assert!(spec.checksums && !spec.allow_empty);
    }

    #[test]
    fn errors_name_the_flag() {
        for (args, needle) in [
            (&["s3://bkt/k", "--part-size", "1M"][..], "--part-size"),
            (&["s3://bkt/k", "--max-parts", "0"][..], "--max-parts"),
            (&["s3://bkt/k", "--lock-mode", "GOVERNANCE"][..], "--lock-until"),
            (&["s3://bkt/k", "--lock-mode", "x", "--lock-until", "2030-01-01T00:00:00Z"][..], "--lock-mode"),
            (&["s3://bkt/k", "--lock-mode", "governance", "--lock-until", "tomorrow"][..], "--lock-until"),
            (&["s3://bkt/k", "--concurrency", "0"][..], "--concurrency"),
            (&[][..], "s3://BUCKET/KEY"),
            (&["s3://bkt/"][..], "names no object"),
            (&["s3://bkt/k", "--bogus"][..], "--bogus"),
        ] {
            let e = parse_err(args);
            assert_eq!(e.code, ExitCode::Usage, "{args:?}");
            assert!(e.message.contains(needle), "{args:?}: {}", e.message);
        }
    }

    #[test]
    fn stream_flags() {
        let a =
            parse_ok(&["--zfs-stream", "--expect-guid", "18446744073709551615", "--expect-from", "0", "s3://bkt/k"]);
        let Action::Upload { input, .. } = a.action else { panic!() };
        assert_eq!(input.gate, Some(GateSpec { expect_guid: Some(u64::MAX), expect_from: Some(0), expect_raw: false }));
        assert_eq!(input.codec, Codec::None);
        let a = parse_ok(&["-z", "zstd:9", "-T", "3", "s3://bkt/k"]);
        let Action::Upload { spec, input, .. } = a.action else { panic!() };
        assert_eq!((input.codec, input.threads, input.gate), (Codec::Zstd { level: 9 }, 3, None));
        assert_eq!(spec.compressor.as_deref(), Some("zstd"), "recorded as zsnap-compressor");
        for (args, needle) in [
            (&["--expect-guid", "1", "s3://bkt/k"][..], "need --zfs-stream"),
            (&["--zfs-stream", "--expect-guid", "-1", "s3://bkt/k"][..], "--expect-guid"),
            (&["--compress", "bzip2", "s3://bkt/k"][..], "--compress"),
            (&["--compress", "gzip", "--filter", "xz", "s3://bkt/k"][..], "--filter"),
            (&["--threads", "0", "s3://bkt/k"][..], "--threads"),
        ] {
            let e = parse_err(args);
            assert_eq!(e.code, ExitCode::Usage, "{args:?}");
            assert!(e.message.contains(needle), "{args:?}: {}", e.message);
        }
    }

    #[test]
    fn zsnap_keys_need_a_way_to_see_a_cut_stream() {
        let key = "s3://bkt/pre/tank/data/@s1/zsnap1,kind=full,guid=1,time=2,z=none";
        let e = parse_err(&[key]);
        assert_eq!(e.code, ExitCode::Usage);
        assert!(e.message.starts_with("refusing to store a zsnap backup key from a bare pipe"), "{}", e.message);
        // With the gate, the key's guids become what the stream must be.
        let a = parse_ok(&["--zfs-stream", key]);
        let Action::Upload { input, .. } = a.action else { panic!() };
        assert_eq!(input.gate, Some(GateSpec { expect_guid: Some(1), expect_from: Some(0), expect_raw: false }));
        let inc = "s3://bkt/tank/data/@s2/zsnap1,kind=inc,guid=22,from=11,fromsnap=s1,time=2,z=zstd";
        let a = parse_ok(&["--zfs-stream", "--expect-guid", "22", inc]);
        let Action::Upload { input, .. } = a.action else { panic!() };
        assert_eq!(input.gate, Some(GateSpec { expect_guid: Some(22), expect_from: Some(11), expect_raw: false }));
        let raw = "s3://bkt/tank/enc/@s2/zsnap1,kind=inc,guid=22,from=11,fromsnap=s1,time=2,z=zstd,send=w";
        let Action::Upload { input, .. } = parse_ok(&["--zfs-stream", raw]).action else { panic!() };
        assert_eq!(input.gate, Some(GateSpec { expect_guid: Some(22), expect_from: Some(11), expect_raw: true }));
        // The catalog would not list a key without kind=: s3put does not store one.
        let e = parse_err(&["--zfs-stream", "s3://bkt/tank/data/@s1/zsnap1,guid=5"]);
        assert!(e.message.contains("is not a valid zsnap1 backup key (no kind)"), "{}", e.message);
        assert!(parse_err(&["--zfs-stream", "--expect-guid", "23", inc]).message.contains("contradicts the key"));
        let bad = "s3://bkt/tank/data/@s2/zsnap1,kind=inc,guid=22,time=2,z=zstd";
        assert!(parse_err(&["--zfs-stream", bad]).message.contains("an incremental without from and fromsnap"));
        parse_ok(&["--exec", "zfs send tank/data@s1", key]);
        // Only the base name counts.
        parse_ok(&["s3://bkt/zsnap1,dir/plain"]);
    }

    #[test]
    fn delete_takes_several_keys_in_one_bucket() {
        let a = parse_ok(&["--delete", "s3://bkt/t/@2/k2", "s3://bkt/t/@1/k1"]);
        let Action::Delete { keys } = a.action else { panic!() };
        assert_eq!(keys, vec!["t/@2/k2", "t/@1/k1"], "in the order given");
        assert_eq!(a.url.bucket, "bkt");
        parse_ok(&["--delete", "--endpoint", "http://127.0.0.1:1", "--retries", "0", "s3://bkt/k"]);
    }

    #[test]
    fn extend_lock_needs_a_mode_and_a_future_time() {
        let a = parse_ok(&[
            "--extend-lock",
            "--lock-mode",
            "governance",
            "--lock-until",
            "2999-01-01T00:00:00Z",
            "s3://bkt/a",
            "s3://bkt/b",
        ]);
        let Action::ExtendLock { keys, mode, until } = a.action else { panic!() };
        assert_eq!(
            (keys, mode.as_str(), until),
            (vec!["a".to_string(), "b".to_string()], "GOVERNANCE", 32_472_144_000)
        );
    }

    #[test]
    fn maintenance_modes_refuse_what_is_not_theirs() {
        let until = "2999-01-01T00:00:00Z";
        for (args, needle) in [
            (&["--delete"][..], "s3://BUCKET/KEY"),
            (&["--delete", "s3://bkt/a", "s3://other/b"][..], "one bucket"),
            (&["--delete", "s3://bkt/pre/"][..], "names no object"),
            (&["--delete", "--part-size", "5M", "s3://bkt/a"][..], "--delete does not take --part-size"),
            (&["--delete", "-x", "true", "s3://bkt/a"][..], "--delete does not take --exec"),
            (&["--delete", "--lock-mode", "GOVERNANCE", "--lock-until", until, "s3://bkt/a"][..], "--lock-mode"),
            (&["--delete", "--older-than", "1h", "s3://bkt/a"][..], "--older-than"),
            (&["--delete", "--extend-lock", "s3://bkt/a"][..], "different modes"),
            (&["--delete", "--abort-uploads", "s3://bkt/a"][..], "different modes"),
            (&["--extend-lock", "s3://bkt/a"][..], "--lock-mode and --lock-until"),
            (&["--extend-lock", "--lock-mode", "GOVERNANCE", "s3://bkt/a"][..], "--lock-until"),
            (&["--extend-lock", "--lock-mode", "x", "--lock-until", until, "s3://bkt/a"][..], "--lock-mode"),
            (&["--extend-lock", "--lock-mode", "GOVERNANCE", "--lock-until", "soon", "s3://bkt/a"][..], "RFC 3339"),
            (
                &["--extend-lock", "--lock-mode", "GOVERNANCE", "--lock-until", "2001-01-01T00:00:00Z", "s3://bkt/a"][..],
                "not in the future",
            ),
            (
                &["--extend-lock", "--lock-mode", "GOVERNANCE", "--lock-until", until, "--meta", "a=b", "s3://bkt/a"][..],
                "--meta",
            ),
            (&["--list-uploads", "--concurrency", "2", "s3://bkt/"][..], "--list-uploads does not take --concurrency"),
            (&["--list-uploads", "s3://bkt/a", "s3://bkt/b"][..], "one s3://BUCKET/KEY at a time"),
            (&["s3://bkt/a", "s3://bkt/b"][..], "one s3://BUCKET/KEY at a time"),
            (&["--older-than", "1h", "s3://bkt/a"][..], "--older-than needs"),
        ] {
            let e = parse_err(args);
            assert_eq!(e.code, ExitCode::Usage, "{args:?}");
            assert!(e.message.contains(needle), "{args:?}: {}", e.message);
        }
    }

    #[test]
    fn cleanup_takes_a_prefix() {
        let a = parse_ok(&["--abort-uploads", "--older-than", "1h", "s3://bkt/pre/"]);
        assert!(matches!(a.action, Action::AbortUploads { older_than } if older_than == Duration::from_secs(3600)));
        assert_eq!(a.url.key, "pre/");
    }
}
