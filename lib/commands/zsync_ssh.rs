//! `zsync-ssh`: bring a replica of a dataset (on another host through ssh, or local) up to
//! the source's newest snapshot with `zfs send | ssh HOST zfs recv`. The replica only moves
//! forward: a diverged target is refused unless --rollback; a failed transfer leaves it at
//! its last good snapshot. --from-s3 brings it forward from the chain in S3 instead (each
//! object through s3get's gate), and --prune-target then applies zsnap's retention rules
//! to it, never touching the common snapshot or anything newer.

use crate::cli::flags::{Flag, Page};
use crate::cli::output::json_line;
use crate::cli::output::{self, ProgressFlags, ProgressMode};
use crate::cli::s3_flags::{self, S3Args};
use crate::cli::values::{parse_duration, parse_number, parse_size};
use crate::cli::{early_exit, ExitCode, Failure, COMMON_FLAGS};
use crate::config::Settings;
use crate::plan::{restore, Context};
use crate::sync::pipeline::Stage;
use crate::sync::pipeline::{self, Compress, Location};
use crate::sync::plan::{self, Decision, Divergence, Options, Step, Target};
use crate::sync::side::{Hold, Side};
use crate::sync::tee;
use crate::sync::transfer;
use crate::zfs::send::SendOptions;
use lexopt::prelude::*;
use serde_json::{json, Value};
use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

const FLAGS: &[Flag] = &[
    Flag {
        short: Some('s'),
        long: "snapshot-prefix",
        value: Some("PREFIX"),
        doc: "Send only snapshots whose name starts with PREFIX. Any snapshot both sides hold can still \
              be the incremental base.",
    },
    Flag {
        short: Some('I'),
        long: "intermediates",
        value: None,
        doc: "Send all missing snapshots as one `zfs send -I` stream (it also carries snapshots that do \
              not match --snapshot-prefix). Default: one `zfs send -i` per missing snapshot, each \
              received and committed on its own.",
    },
    Flag {
        short: None,
        long: "rollback",
        value: None,
        doc: "When the target has diverged (snapshots after the common one, or written since its newest \
              snapshot), roll it back to the common snapshot (`zfs rollback -r`, destroying those \
              snapshots and changes) and receive with `zfs recv -F`. Without it a diverged target is \
              refused (exit 79) and left alone. An existing target with no snapshots is overwritten by a \
              full stream.",
    },
    Flag {
        short: Some('c'),
        long: "compress",
        value: Some("ALGO"),
        doc: "zstd, pigz, lz4 or none (default none): compress before ssh and decompress on the target; \
              the program must exist on both hosts. Ignored for a local target.",
    },
    Flag {
        short: Some('b'),
        long: "buffer",
        value: Some("SIZE"),
        doc: "Put `mbuffer -m SIZE` between the compressor and ssh to smooth bursts (skipped, with a \
              warning, when mbuffer is not installed).",
    },
    Flag {
        short: None,
        long: "send-option",
        value: Some("OPT"),
        doc: "Pass a zfs send option through (repeatable): -L (--large-block), -c (--compressed), -e \
              (--embed), -p (--props), -w (--raw). Anything else, or an option the source's zfs lacks, is \
              refused before anything is sent.",
    },
    Flag {
        short: None,
        long: "decrypt-send",
        value: None,
        doc: "Send an encrypted source DECRYPTED (without -w): its plaintext crosses ssh and the replica \
              is an unencrypted dataset readable without the key; the key must be loaded. Without it, an \
              encrypted source is always sent raw (-w): the replica stays encrypted with the source's key, \
              which need not be loaded on either host.",
    },
    Flag {
        short: Some('n'),
        long: "dry-run",
        value: None,
        doc: "Change nothing; print what a real run would do, as --format says. Snapshots are still \
              listed on both sides (and the catalog read, with --from-s3).",
    },
    Flag {
        short: Some('f'),
        long: "format",
        value: Some("FORMAT"),
        doc: "For --dry-run: json (the default when stdout is not a terminal): one JSON line per \
              action, each with its exact \"command\", then the summary (action \"dry-run\"); sh (the \
              default on a terminal): only the commands, one per line, shell-quoted. Never both.",
    },
    Flag {
        short: None,
        long: "prune-target",
        value: None,
        doc: "After a successful sync (or when there was nothing to send), destroy the replica's \
              snapshots that zsnap's retention policy does not keep (KEEP_LAST, KEEP_HOURLY … \
              KEEP_YEARLY, MIN_AGE from the configuration's [fs:SRC_DATASET] or [main] section, or \
              ZSNAP_KEEP_*; the policy object in a bucket and quotas are not read). Only snapshots \
              matching the snapshot prefix, older than the common snapshot (the newest one both sides \
              hold: the base of the next sync) and without holds are candidates; the common snapshot \
              and anything newer are never destroyed. Each `zfs destroy DST@SNAP` runs on the target over \
              the same ssh and prints a JSON line {\"action\":\"destroy\", \"snapshot\", \"guid\", \
              \"command\", \"reason\"}.",
    },
    Flag {
        short: None,
        long: "from-s3",
        value: None,
        doc: "Seed or catch up the replica from SRC_DATASET's backups in S3 (as zsnap-backup made them) \
              instead of from the source: the chain to the newest backup, as zsnap-plan restore decides it, \
              starting after the newest snapshot the replica already holds (by guid). Each object runs \
              `s3get --zfs-stream … | ssh HOST 'zfs recv DST'`, s3get's stream gate checking every record \
              before zfs recv sees it; zfs recv commits a snapshot only when its whole stream arrived, so a \
              failure leaves the replica at its last whole snapshot and exits with the failing stage's code \
              (s3get's: 65 corrupt, 69 unreachable …). The source dataset need not exist here; later \
              ordinary runs continue from the common snapshot by guid.",
    },
    Flag {
        short: None,
        long: "idle-timeout",
        value: Some("DURATION"),
        doc: "Kill the transfer when no byte has moved for this long while the stream still flows (an \
              ssh or zfs recv that stopped reading; ServerAliveInterval only notices a dead peer): \
              exit 69 naming the timeout; the target keeps its last good snapshot. Default 5m.",
    },
    Flag {
        short: None,
        long: "progress",
        value: None,
        doc: "Report progress on stderr even when it is not a terminal: per transfer, a line every 10 s \
              (--progress-interval) with the bytes sent, their rate (MiB/s), and percent and ETA against the \
              size `zfs send -nP` estimates (where the source's zfs has it), and a summary line when it is done. On \
              a terminal one line is rewritten in place every second, with or without this flag. \
              ZSNAP_PROGRESS=1 in the environment does the same as this flag, ZSNAP_PROGRESS=tty draws the \
              terminal line into a pipe that ends at a terminal, ZSNAP_PROGRESS=0 turns off the default on a \
              terminal.",
    },
    output::PROGRESS_INTERVAL_FLAG,
    Flag {
        short: None,
        long: "exit-nothing",
        value: Some("N"),
        doc: "Exit status when there was nothing to send (default 0; the JSON says \"action\":\"none\").",
    },
];

const SSH_FLAGS: &[Flag] = &[
    Flag {
        short: Some('o'),
        long: "ssh-option",
        value: Some("OPTION"),
        doc: "Passed to ssh as `-o OPTION` (repeatable), before zsync-ssh's own BatchMode=yes and \
              ServerAliveInterval=15, so yours win.",
    },
    Flag { short: Some('p'), long: "port", value: Some("PORT"), doc: "ssh port (ssh -p)." },
    Flag { short: Some('i'), long: "identity", value: Some("FILE"), doc: "ssh private key (ssh -i)." },
    Flag { short: Some('F'), long: "ssh-config", value: Some("FILE"), doc: "ssh configuration file (ssh -F)." },
];

/// `--tee`: a stream passing through to S3 also received by the replica (zsnap-backup --replica).
const TEE_FLAGS: &[Flag] = &[
    Flag {
        short: None,
        long: "tee",
        value: Some("SNAPSHOT"),
        doc: "Read a `zfs send` stream of SRC_DATASET@SNAPSHOT on stdin and copy it unchanged to stdout \
              (for s3put) while the replica receives it: one send, two sinks (zsnap-backup --replica runs \
              `zfs send … | zsync-ssh --tee … | s3put`). Needs --expect-guid and --expect-from. The replica \
              receives only a stream that moves it forward, decided by guid before the first byte: its newest \
              snapshot is the stream's base (a full stream: the replica does not exist yet), else it is refused \
              (behind, diverged, or a full stream into an existing replica) and the stream only passes through; \
              one it already holds is skipped (\"none\"). Both sinks move at the pace of the slower (up to 8 MiB \
              is queued for the replica). A replica that fails or stalls (--idle-timeout) never stops the \
              stream: its outcome is one JSON line {\"sink\":\"replica\", \"source\", \"target\", \
              \"guid\", \"from_guid\", \"action\" (sent, none, refused, failed), \"result\" (ok or failed), \
              \"exit\" (its exit code: 66 behind or missing, 79 diverged, 67 cut …), \"bytes\", \"seconds\", \
              and \"reason\" or \"error\"} appended to --report FILE (default $ZSNAP_REPLICA_REPORT, else \
              stderr), and the exit status is 0 all the same. Exit 74 when stdin cannot be read, 80 when \
              stdout closed early (the replica still gets the whole stream).",
    },
    Flag {
        short: None,
        long: "expect-guid",
        value: Some("GUID"),
        doc: "--tee: the guid of the snapshot the stream carries.",
    },
    Flag {
        short: None,
        long: "expect-from",
        value: Some("GUID"),
        doc: "--tee: the guid of the stream's base (0 for a full stream).",
    },
    Flag {
        short: None,
        long: "report",
        value: Some("FILE"),
        doc: "--tee: append the replica's JSON line to FILE (default $ZSNAP_REPLICA_REPORT, else stderr).",
    },
];

/// Where zsnap's configuration and backups are (read only with --prune-target and --from-s3).
/// zsync-ssh's -b is --buffer, so these have no short names.
const CONFIG_FLAGS: &[Flag] = &[
    Flag {
        short: None,
        long: "config",
        value: Some("FILE"),
        doc: "zsnap's configuration file (default $ZSNAP_CONFIG, else /etc/zsnap/zsnap.conf, which may be \
              missing): the retention policy, SNAPSHOT_PREFIX (when -s is not given), and for --from-s3 \
              BUCKET, S3_PREFIX, the endpoint and IDENTITY_FILE, from [fs:SRC_DATASET] then [main].",
    },
    Flag {
        short: None,
        long: "bucket",
        value: Some("NAME"),
        doc: "--from-s3: the bucket. Default $ZSNAP_BUCKET, then BUCKET.",
    },
    Flag {
        short: None,
        long: "s3-prefix",
        value: Some("PREFIX"),
        doc: "--from-s3: the key prefix. Default $ZSNAP_S3_PREFIX, then S3_PREFIX, else empty.",
    },
];

pub static PAGE: Page = Page {
    name: "zsync-ssh",
    synopsis: "zsync-ssh [OPTIONS] SRC_DATASET [USER@]HOST:DST_DATASET | DST_DATASET",
    about: "replicate a dataset's snapshots to another host over ssh",
    description: "zsync-ssh brings DST_DATASET up to the newest snapshot of SRC_DATASET. It lists the \
snapshots on both sides (zfs get -H -p … -d 1) and finds the newest common snapshot by guid, so renamed \
snapshots still match. A missing target gets a full stream of the oldest matching snapshot, then \
incrementals; an existing one gets `zfs send -i` from the common snapshot, one per missing snapshot \
(or one `-I` stream with --intermediates). A target with no host part (no colon before the first \
slash) is received locally.

Each transfer runs zfs send | [compressor] | [mbuffer] | ssh HOST '[decompressor |] zfs recv DST' with \
every stage as its own process and its own exit status checked; this process copies between zfs send \
and the next stage to count bytes. The incremental base (for a full: the snapshot sent) is held on the \
source with `zfs hold zsync-ssh-PID` during the transfer and released afterwards, also on failure, \
SIGINT, SIGTERM and SIGHUP (a kill -9 leaves the hold: zfs release zsync-ssh-PID SNAP).

The target only moves forward. It has diverged when it holds snapshots after the common one, or was \
written since its newest snapshot (the written property on OpenZFS; on zfs-fuse, which lacks it, a \
changed referenced size or blocks held only by the newest snapshot). Then nothing is sent and exit is 79, \
with the sender-only and receiver-only snapshots in the JSON, unless --rollback. Changes no property \
shows (atime updates, chmod) surface as zfs recv's \"destination has been modified\" and are reported \
the same way: give replicas atime=off or readonly=on. No common snapshot at all is refused even with \
--rollback: destroy the target to start over.

A failed stage (remote zfs missing, permission denied, disk full on the target, ssh dropped, zfs send \
killed) is one line on stderr naming the stage and host; zfs recv commits a snapshot only after its \
whole stream arrived, so the target keeps its last good snapshot. Where the target's zfs has `zfs recv \
-s` (OpenZFS) the receive is resumable: the next run reads receive_resume_token and continues with \
`zfs send -t` (or discards the partial state with `zfs recv -A` when the source cannot resume). zfs-fuse \
has neither (probed once per run: its answer is \"invalid option\"); there a cut transfer leaves \
nothing behind and the next run starts that snapshot again.

A transfer whose bytes stop moving for --idle-timeout (default 5m) while zfs send still has more (an \
ssh or zfs recv that stopped reading) is killed: exit 69, the target keeps its last good snapshot.

--prune-target destroys, after a successful sync, the replica's snapshots that zsnap's retention policy \
does not keep, by the rules zsnap-plan prune applies to backups (newest, KEEP_LAST, the newest of each of \
the last KEEP_HOURLY … KEEP_YEARLY periods that have one, MIN_AGE; by each snapshot's creation time, \
which zfs recv keeps), read from zsnap's configuration ([fs:SRC_DATASET], then [main], or ZSNAP_KEEP_*). \
Only snapshots matching the snapshot prefix (-s, else SNAPSHOT_PREFIX) older than the common snapshot \
are candidates; the common snapshot (the base of the next sync), anything newer, held snapshots and \
other names are never destroyed.

--from-s3 seeds or catches up the replica from SRC_DATASET's backups in S3 (BUCKET, S3_PREFIX and the \
endpoint from flags, environment or zsnap's configuration, as zsnap-plan reads them): the chain to the \
newest backup that zsnap-plan restore would receive, after the newest snapshot the replica holds (by \
guid). Each object is one s3get --zfs-stream (its gate checks every record and checksum before zfs recv \
sees it) piped into ssh HOST 'zfs recv DST'; a failure stops the run with the failing stage's code \
(s3get's own: 65 corrupt, 66 missing, 69 unreachable …), and since zfs recv commits a snapshot only \
whole (no -s: a cut stream from S3 cannot be resumed), the replica keeps the snapshots that arrived \
whole and nothing of the one that failed. The next --from-s3 run, or an ordinary run from the source, \
continues from there by guid. One send, many sinks: with --tee the stream of a `zfs send` on its way to \
s3put also feeds the replica (zsnap-backup --replica; see EXAMPLES).

stdout is JSON lines. A run prints one summary line: {\"source\", \"target\", \"common\" ({\"snapshot\", \
\"target_snapshot\", \"guid\"} or null), \"sent\" (snapshot names received), \"bytes\" (stream bytes), \
\"seconds\", \"action\"}; action is \"sent\", \"none\", \"dry-run\", \"refused\" (also \"reason\", \
\"sender_only\", \"receiver_only\") or \"failed\" (also \"error\"); with --from-s3 also \"from\", with \
--prune-target \"pruned\" (\"to_prune\" in a dry run, and \"prune_error\" when only the prune failed), \
each destroyed snapshot having its own line before it. --dry-run prints, before the summary, one line \
per action with its \"action\" (send, resume, abort-resume, rollback, bookmark, recv, destroy), \
\"target\" and exact \"command\"; with --format sh only those commands. Exit status: 0 sent (or nothing \
to do, see --exit-nothing), 79 refused because the target diverged, 67 a transfer stage failed or was \
cut (nothing partial kept), 66 dataset or snapshot missing, 69/71/78 ssh could not connect, resolve or \
log in (69 also --idle-timeout), 77 permission denied on a zfs command, with --from-s3 s3get's code, \
128+N stopped by signal N.",
    groups: &[
        ("Options", FLAGS),
        ("ssh", SSH_FLAGS),
        ("One send, two sinks (--tee)", TEE_FLAGS),
        ("Configuration and S3 (--prune-target, --from-s3)", CONFIG_FLAGS),
        ("S3 connection (--from-s3)", s3_flags::FLAGS),
        ("General", COMMON_FLAGS),
    ],
    environment: s3_flags::ENVIRONMENT,
    examples: &[
        ("zsync-ssh tank/data backup@nas:pool/data", "Replicate tank/data to nas (full the first time, then incrementals)."),
        ("zsync-ssh -c zstd -b 256M -s daily- tank/data nas:pool/data", "Compressed and buffered, daily snapshots only."),
        ("zsync-ssh --dry-run tank/data nas:pool/data", "What a run would do, as JSON lines with each command."),
        ("zsync-ssh --rollback tank/data nas:pool/data", "Discard what was done on the replica since the common snapshot."),
        (
            "zfs send -i @d1 tank/data@d2 | zsync-ssh --tee d2 --expect-guid G2 --expect-from G1 tank/data nas:pool/data \
             | s3put --zfs-stream --compress zstd s3://backups/KEY",
            "One send, many sinks (what zsnap-backup --replica runs): the replica receives the stream on its way \
             to s3put, if it moves the replica forward; its outcome is a JSON line of its own, and a replica that \
             fails never stops the upload.",
        ),
        (
            "zsync-ssh --from-s3 --bucket backups tank/data nas:pool/data",
            "Seed a new replica (or catch one up) from tank/data's backups in S3 instead of the source; later \
             runs of zsync-ssh continue from the common snapshot (matched by guid).",
        ),
        (
            "zsync-ssh -s daily- --prune-target tank/data nas:pool/data",
            "Sync, then destroy the replica's daily- snapshots zsnap's retention policy no longer keeps.",
        ),
        (
            "zsync-ssh --dry-run --format sh tank/data nas:pool/data",
            "Only the commands a run would execute, one per line.",
        ),
    ],
    see_also: "s3put(1), s3get(1), zsnap-backup(1), zfs-send(8), zfs-recv(8), ssh(1)",
};

/// What to do, parsed and validated; no I/O yet.
#[derive(Debug)]
pub struct Args {
    pub source: String,
    pub target: Location,
    pub target_dataset: String,
    pub opts: Options,
    pub compress: Compress,
    pub buffer: Option<String>,
    pub dry_run: bool,
    pub progress: ProgressFlags,
    pub exit_nothing: i32,
    /// `--send-option`s.
    pub send_options: SendOptions,
    pub decrypt_send: bool,
    /// `--format`; `None`: by whether stdout is a terminal.
    pub format: Option<Format>,
    pub prune_target: bool,
    pub from_s3: bool,
    pub idle_timeout: Duration,
    /// `--tee SNAPSHOT` with (guid, from guid) and `--report`.
    pub tee: Option<Tee>,
    /// `--snapshot-prefix` as given (it also picks the configuration's SNAPSHOT_PREFIX).
    pub prefix_given: bool,
    /// `--config`, `--bucket`, `--s3-prefix` (and the source dataset, for its section).
    pub settings: crate::config::Flags,
    pub s3: S3Args,
}

/// `--tee`: the stream on stdin and where the replica's line goes.
#[derive(Debug)]
pub struct Tee {
    pub snapshot: String,
    pub guid: u64,
    pub from: u64,
    pub report: Option<String>,
}

/// How `--dry-run` prints its plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Sh,
}

/// An ssh or zfs recv that stopped reading is noticed after this long by default.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// `[USER@]HOST:DATASET` or a local `DATASET`: remote when a colon comes before the first slash.
pub fn split_target(text: &str) -> Result<(Option<String>, String), Failure> {
    let slash = text.find('/').unwrap_or(text.len());
    match text[..slash].rfind(':') {
        Some(colon) => {
            let (host, ds) = (&text[..colon], &text[colon + 1..]);
            if host.is_empty() || ds.is_empty() {
                return Err(Failure::usage(format!("'{text}' is not [USER@]HOST:DATASET")));
            }
            Ok((Some(host.to_string()), ds.to_string()))
        }
        None => Ok((None, text.to_string())),
    }
}

fn check_dataset(what: &str, ds: &str) -> Result<(), Failure> {
    if ds.is_empty() || ds.contains('@') || ds.starts_with('/') || ds.starts_with('-') {
        return Err(Failure::usage(format!("{what} '{ds}' is not a dataset name (pool/path, no @)")));
    }
    Ok(())
}

/// Parse the command line. `Ok(Err(text))` means print `text` and exit 0 (help, man).
pub fn parse(argv: impl IntoIterator<Item = OsString>) -> Result<Result<Args, String>, Failure> {
    let mut p = lexopt::Parser::from_iter(argv);
    let mut opts = Options::default();
    let (mut compress, mut buffer, mut dry_run, mut progress, mut exit_nothing) =
        (Compress::None, None, false, ProgressFlags::default(), 0);
    let (mut ssh_options, mut port, mut identity, mut config) = (Vec::new(), None, None, None);
    let mut positional = Vec::new();
    let (mut send_options, mut decrypt_send) = (SendOptions::default(), false);
    let (mut format, mut prune_target, mut from_s3, mut idle_timeout) = (None, false, false, IDLE_TIMEOUT);
    let (mut prefix_given, mut settings, mut s3) = (false, crate::config::Flags::default(), S3Args::default());
    let (mut tee, mut expect_guid, mut expect_from, mut report) = (None, None, None, None);
    while let Some(arg) = p.next()? {
        if crate::cli::completions::asked(&arg) {
            return crate::cli::completions::take(&mut p, &PAGE, &[], &[]).map(Err);
        }
        if let Some(text) = early_exit(&arg, &PAGE) {
            return Ok(Err(text));
        }
        match arg {
            Short('s') | Long("snapshot-prefix") => {
                opts.prefix = p.value()?.string()?;
                prefix_given = true;
            }
            Short('f') | Long("format") => {
                let v = p.value()?.string()?;
                format = Some(match v.as_str() {
                    "json" => Format::Json,
                    "sh" => Format::Sh,
                    _ => return Err(Failure::usage(format!("--format: '{v}' is not json or sh"))),
                });
            }
            Long("prune-target") => prune_target = true,
            Long("from-s3") => from_s3 = true,
            Long("tee") => {
                let snap = p.value()?.string()?;
                crate::catalog::key::validate_snapshot(&snap).map_err(|e| Failure::usage(format!("--tee: {e}")))?;
                tee = Some(snap);
            }
            Long("expect-guid") => expect_guid = Some(parse_number::<u64>("expect-guid", &p.value()?.string()?)?),
            Long("expect-from") => expect_from = Some(parse_number::<u64>("expect-from", &p.value()?.string()?)?),
            Long("report") => report = Some(p.value()?.string()?),
            Long("idle-timeout") => {
                idle_timeout = parse_duration("idle-timeout", &p.value()?.string()?)?;
                if idle_timeout.is_zero() {
                    return Err(Failure::usage("--idle-timeout must be at least 1s"));
                }
            }
            Long("config") => settings.config = Some(p.value()?.string()?),
            Long("bucket") => settings.bucket = Some(p.value()?.string()?),
            Long("s3-prefix") => settings.s3_prefix = Some(p.value()?.string()?),
            Short('I') | Long("intermediates") => opts.intermediates = true,
            Long("rollback") => opts.rollback = true,
            Short('c') | Long("compress") => compress = Compress::parse(&p.value()?.string()?)?,
            Short('b') | Long("buffer") => {
                let text = p.value()?.string()?;
                parse_size("buffer", &text)?;
                buffer = Some(text);
            }
            Short('n') | Long("dry-run") => dry_run = true,
            Long("send-option") => {
                let o = SendOptions::parse(&p.value()?.string()?).map_err(Failure::usage)?;
                send_options = send_options.with(o);
            }
            Long("decrypt-send") => decrypt_send = true,
            Long("exit-nothing") => {
                exit_nothing = parse_number("exit-nothing", &p.value()?.string()?)?;
                if !(0..=255).contains(&exit_nothing) {
                    return Err(Failure::usage("--exit-nothing must be 0..=255"));
                }
            }
            Short('o') | Long("ssh-option") => ssh_options.push(p.value()?.string()?),
            Short('p') | Long("port") => port = Some(parse_number::<u16>("port", &p.value()?.string()?)?),
            Short('i') | Long("identity") => identity = Some(p.value()?.string()?),
            Short('F') | Long("ssh-config") => config = Some(p.value()?.string()?),
            Value(v) => positional.push(v.string()?),
            Long(name) => {
                let name = name.to_string();
                if !progress.take(&name, &mut p)? && !s3.take(&name, &mut p)? {
                    return Err(Failure::usage(format!("invalid option '--{name}' (see --help)")));
                }
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let [source, target]: [String; 2] = positional
        .try_into()
        .map_err(|_| Failure::usage("expected SRC_DATASET and [USER@]HOST:DST_DATASET (see --help)"))?;
    check_dataset("source", &source)?;
    let (host, target_dataset) = split_target(&target)?;
    check_dataset("target", &target_dataset)?;
    let target = match host {
        Some(host) => Location::Remote {
            ssh: pipeline::ssh_command(config.as_deref(), &ssh_options, port, identity.as_deref()),
            host,
        },
        None => {
            if target_dataset == source {
                return Err(Failure::usage("the target is the source dataset"));
            }
            Location::Local
        }
    };
    if decrypt_send && send_options.raw() {
        return Err(Failure::usage("--decrypt-send contradicts --send-option -w"));
    }
    if format == Some(Format::Sh) && !dry_run {
        return Err(Failure::usage("--format sh prints the commands of a --dry-run; a real run prints JSON"));
    }
    if from_s3 {
        let sending = [
            (opts.intermediates, "--intermediates"),
            (opts.rollback, "--rollback"),
            (send_options != SendOptions::default(), "--send-option"),
            (decrypt_send, "--decrypt-send"),
        ];
        if let Some((_, flag)) = sending.iter().find(|(set, _)| *set) {
            return Err(Failure::usage(format!(
                "{flag} is about zfs send; --from-s3 receives the streams stored in S3"
            )));
        }
    }
    let tee = match (tee, expect_guid, expect_from) {
        (Some(snapshot), Some(guid), Some(from)) => {
            let other = [
                (dry_run, "--dry-run"),
                (from_s3, "--from-s3"),
                (prune_target, "--prune-target"),
                (opts.rollback, "--rollback"),
                (opts.intermediates, "--intermediates"),
                (send_options != SendOptions::default(), "--send-option"),
                (decrypt_send, "--decrypt-send"),
            ];
            if let Some((_, flag)) = other.iter().find(|(set, _)| *set) {
                return Err(Failure::usage(format!(
                    "{flag} does not go with --tee, which receives the stream on stdin"
                )));
            }
            Some(Tee { snapshot, guid, from, report })
        }
        (Some(_), _, _) => return Err(Failure::usage("--tee needs --expect-guid and --expect-from")),
        (None, None, None) if report.is_none() => None,
        _ => return Err(Failure::usage("--expect-guid, --expect-from and --report go with --tee")),
    };
    settings.dataset = Some(source.clone());
    settings.snapshot_prefix = prefix_given.then(|| opts.prefix.clone());
    // The configuration's precedence (flags > environment > file) for the endpoint too.
    settings.endpoint = s3.endpoint.take();
    settings.region = s3.region.take();
    settings.profile = s3.profile.take();
    Ok(Ok(Args {
        source,
        target,
        target_dataset,
        opts,
        compress,
        buffer,
        dry_run,
        progress,
        exit_nothing,
        send_options,
        decrypt_send,
        format,
        prune_target,
        from_s3,
        idle_timeout,
        tee,
        prefix_given,
        settings,
        s3,
    }))
}

pub fn main(argv: impl IntoIterator<Item = OsString>) -> Result<(), Failure> {
    let args = match parse(argv)? {
        Ok(a) => a,
        Err(text) => {
            return crate::cli::output::emit(&text);
        }
    };
    if let Some(tee) = &args.tee {
        return run_tee(&args, tee);
    }
    transfer::catch_signals()?;
    let mut summary = Summary::new(&args);
    let result = if args.from_s3 { run_from_s3(&args, &mut summary) } else { run(&args, &mut summary) };
    if let Err(f) = &result {
        if summary.pruning {
            // The replica is synced; only the prune after it failed.
            summary.extra.push(("prune_error".into(), json!(f.message)));
        } else if summary.action == "sent" || summary.action == "running" {
            summary.action = "failed".into();
            summary.extra.push(("error".into(), json!(f.message)));
        }
    }
    let format = args.format.unwrap_or(if std::io::stdout().is_terminal() { Format::Sh } else { Format::Json });
    match (args.dry_run, format) {
        (true, Format::Sh) => {
            if result.is_ok() {
                let text: String = summary.planned.iter().map(|(line, _)| format!("{line}\n")).collect();
                crate::cli::output::emit(&text)?;
            }
        }
        (true, Format::Json) => {
            if result.is_ok() {
                crate::cli::output::emit_lines(summary.planned.iter().map(|(_, v)| serde_json::to_string(v)))?;
            }
            json_line(&summary.to_json())?;
        }
        (false, _) => json_line(&summary.to_json())?,
    }
    match result {
        Err(f) => Err(f),
        Ok(ExitCode::Ok) => Ok(()),
        Ok(code) => Err(Failure::new(code, "")),
    }
}

/// The JSON line, filled in as the run goes.
struct Summary {
    source: String,
    target: String,
    common: Value,
    sent: Vec<String>,
    bytes: u64,
    start: Instant,
    action: String,
    extra: Vec<(String, Value)>,
    /// `--dry-run`: each action's command and JSON line, in order.
    planned: Vec<(String, Value)>,
    /// `--prune-target`: the snapshots destroyed on the target.
    prune: bool,
    dry_run: bool,
    pruned: Vec<String>,
    /// The sync is done and the prune after it runs: a failure now is the prune's.
    pruning: bool,
}

impl Summary {
    fn new(args: &Args) -> Summary {
        Summary {
            source: args.source.clone(),
            target: target_name(args),
            common: Value::Null,
            sent: Vec::new(),
            bytes: 0,
            start: Instant::now(),
            action: "running".into(),
            extra: Vec::new(),
            planned: Vec::new(),
            prune: args.prune_target,
            dry_run: args.dry_run,
            pruned: Vec::new(),
            pruning: false,
        }
    }

    /// Record what a dry run would do.
    fn plan(&mut self, args: &Args, actions: &[Action]) {
        for a in actions {
            self.planned.push((a.line(args), a.to_json(args, &self.target)));
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "source": self.source,
            "target": self.target,
            "common": self.common,
            "sent": self.sent,
            "bytes": self.bytes,
            "seconds": (self.start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            "action": self.action,
        });
        if let Value::Object(m) = &mut v {
            if self.prune && self.dry_run {
                let names: Vec<&str> = self
                    .planned
                    .iter()
                    .filter(|(_, j)| j["action"] == "destroy")
                    .filter_map(|(_, j)| j["snapshot"].as_str())
                    .collect();
                m.insert("to_prune".into(), json!(names));
            } else if self.prune {
                m.insert("pruned".into(), json!(self.pruned));
            }
            for (k, x) in &self.extra {
                m.insert(k.clone(), x.clone());
            }
        }
        v
    }
}

/// One thing a run does, decided before anything is done: `--dry-run` prints the list,
/// a real run executes it in order, and both come from the same plan.
#[derive(Clone, Debug)]
enum Action {
    /// Continue a cut receive: `zfs send -t TOKEN | … | zfs recv -s DST`.
    Resume { stages: Vec<Stage> },
    /// Discard a cut receive's state (`zfs recv -A`): the source cannot resume it.
    AbortResume,
    /// `zfs rollback -r DST@SNAP` before receiving with -F.
    Rollback { snapshot: String },
    /// One `zfs send | … | zfs recv`, holding the source snapshot `hold` while it runs.
    Transfer { step: Step, stages: Vec<Stage>, hold: String },
    /// Bookmark a source snapshot (the name after `@`) the replica now holds.
    Bookmark { snapshot: String },
    /// One object of the chain in S3 into the replica: `s3get … | … | zfs recv DST`.
    FromS3 { snapshot: String, guid: Option<u64>, url: String, stages: Vec<Stage>, reason: String },
    /// `zfs destroy DST@SNAP` of a snapshot the retention policy lets go (--prune-target).
    Destroy { snapshot: String, guid: u64, reason: String },
}

impl Action {
    /// The exact command, as `--dry-run` prints it.
    fn line(&self, args: &Args) -> String {
        let dst = &args.target_dataset;
        let at_target = |w: &[&str]| crate::plan::join(&args.target.argv(&words(w)));
        match self {
            Action::Resume { stages } | Action::Transfer { stages, .. } | Action::FromS3 { stages, .. } => {
                pipeline::shell_line(stages)
            }
            Action::AbortResume => at_target(&["zfs", "recv", "-A", dst]),
            Action::Rollback { snapshot } => at_target(&["zfs", "rollback", "-r", &format!("{dst}@{snapshot}")]),
            Action::Bookmark { snapshot } => {
                crate::plan::join(&crate::zfs::snapshots::bookmark_argv(&args.source, snapshot))
            }
            Action::Destroy { snapshot, .. } => at_target(&["zfs", "destroy", &format!("{dst}@{snapshot}")]),
        }
    }

    /// Its JSON line: what it is, on which target, and its exact command.
    fn to_json(&self, args: &Args, target: &str) -> Value {
        let mut v = match self {
            Action::Resume { .. } => json!({"action": "resume"}),
            Action::AbortResume => json!({"action": "abort-resume"}),
            Action::Rollback { snapshot } => json!({"action": "rollback", "snapshot": snapshot}),
            Action::Transfer { step: Step::Full { to, guid }, .. } => {
                json!({"action": "send", "kind": "full", "snapshot": to, "guid": guid.to_string()})
            }
            Action::Transfer { step: Step::Incremental { from, to, guid, intermediates }, .. } => json!({
                "action": "send", "kind": "inc", "from": from, "snapshot": to, "guid": guid.to_string(),
                "intermediates": intermediates,
            }),
            Action::Bookmark { snapshot } => json!({"action": "bookmark", "snapshot": snapshot}),
            Action::FromS3 { snapshot, guid, url, reason, .. } => json!({
                "action": "recv", "snapshot": snapshot, "guid": guid.map(|g| g.to_string()), "key": url,
                "reason": reason,
            }),
            Action::Destroy { snapshot, guid, reason } => {
                json!({"action": "destroy", "snapshot": snapshot, "guid": guid.to_string(), "reason": reason})
            }
        };
        if let Value::Object(m) = &mut v {
            m.insert("target".into(), json!(target));
            m.insert("command".into(), json!(self.line(args)));
        }
        v
    }
}

/// What the source is and how it is sent, read once.
struct SourceState {
    features: crate::zfs::features::Features,
    listing: crate::zfs::snapshots::Listing,
    options: SendOptions,
}

/// zsnap's settings, read only when a flag needs them (--prune-target; --from-s3 reads
/// them itself), so a plain sync never depends on /etc/zsnap.
fn settings_for(args: &Args) -> Result<Option<Settings>, Failure> {
    match args.prune_target || args.from_s3 {
        true => crate::config::load(&args.settings, &|k| std::env::var(k).ok()).map(Some),
        false => Ok(None),
    }
}

/// The snapshot prefix: -s, else (with the configuration read) its SNAPSHOT_PREFIX.
fn prefix_of(args: &Args, settings: Option<&Settings>) -> String {
    match (args.prefix_given, settings) {
        (false, Some(s)) => s.snapshot_prefix().to_string(),
        _ => args.opts.prefix.clone(),
    }
}

/// The whole run; `Ok` carries the exit code for a run that went as designed. Two rounds of
/// plan-then-act: first what a cut receive left (resume or discard it), then, from what the
/// target holds after that, the transfers; then, with --prune-target, the prune.
fn run(args: &Args, summary: &mut Summary) -> Result<ExitCode, Failure> {
    let source = Side { location: Location::Local };
    let target = Side { location: args.target.clone() };
    let dst = &args.target_dataset;
    let settings = settings_for(args)?;
    let opts = Options { prefix: prefix_of(args, settings.as_ref()), ..args.opts.clone() };
    let src = read_source(&source, args)?;
    if src.options.raw() {
        summary.extra.push(("raw".into(), json!(true)));
    }
    let (state, token) = target_state(&target, dst)?;
    let mut state = state;
    let resuming = token.is_some();
    if let Some(token) = token {
        let actions = resume_actions(args, &src, &token)?;
        if args.dry_run {
            summary.plan(args, &actions);
        } else {
            execute(args, (&source, src.features.size_estimate()), &target, &actions, summary)?;
            state = target_state(&target, dst)?.0;
        }
    }
    let have = match &state {
        Target::Missing => Vec::new(),
        Target::Present { snapshots, .. } => snapshots.clone(),
    };
    let decision = plan::decide(&src.listing.snapshots, &state, &opts);
    let (common, steps, rollback_to, force_full) = match decision {
        Decision::NoSource => {
            let which = if opts.prefix.is_empty() { String::new() } else { format!(" matching '{}'", opts.prefix) };
            return Err(Failure::new(ExitCode::NotFound, format!("{} has no snapshots{which} to send", args.source)));
        }
        Decision::Nothing { common } => {
            summary.common = common_json(Some(&common));
            summary.action = "none".into();
            prune_after(args, &source, &target, settings.as_ref(), &opts.prefix, have, Some(common.guid), summary)?;
            return Ok(if args.exit_nothing == 0 {
                ExitCode::Ok
            } else {
                crate::cli::exit::from_code(args.exit_nothing)
            });
        }
        Decision::Diverged(d) => return Err(refuse(summary, d)),
        Decision::Send { common, steps, rollback_to, force_full } => (common, steps, rollback_to, force_full),
    };
    summary.common = common_json(common.as_ref());
    // A target that had a resumable receive keeps them; else one probe of its zfs.
    let resumable = resuming || (!steps.is_empty() && target.features()?.resumable_receive());
    let actions = send_actions(args, &src, &steps, rollback_to.clone(), force_full, resumable)?;
    let newest = steps.last().map(Step::guid).or(common.as_ref().map(|c| c.guid));
    if args.dry_run {
        summary.plan(args, &actions);
        summary.sent = steps.iter().map(|s| s.to().to_string()).collect();
        summary.action = "dry-run".into();
        let after = plan::after(&src.listing.snapshots, &have, &steps, rollback_to.as_deref());
        prune_after(args, &source, &target, settings.as_ref(), &opts.prefix, after, newest, summary)?;
        return Ok(ExitCode::Ok);
    }
    execute(args, (&source, src.features.size_estimate()), &target, &actions, summary)?;
    summary.action = if steps.is_empty() { "rolled-back".into() } else { "sent".into() };
    if args.prune_target {
        let after = target.snapshots(dst)?.unwrap_or_default();
        let common = plan::common(&src.listing.snapshots, &after).map(|c| c.guid);
        prune_after(args, &source, &target, settings.as_ref(), &opts.prefix, after, common, summary)?;
    }
    Ok(ExitCode::Ok)
}

/// --prune-target, once the replica holds `after` and the common snapshot has
/// `common_guid`: destroy (or, in a dry run, plan) what the retention policy lets go.
#[allow(clippy::too_many_arguments)]
fn prune_after(
    args: &Args,
    source: &Side,
    target: &Side,
    settings: Option<&Settings>,
    prefix: &str,
    after: Vec<crate::zfs::snapshots::Snapshot>,
    common_guid: Option<u64>,
    summary: &mut Summary,
) -> Result<(), Failure> {
    let (Some(settings), true) = (settings, args.prune_target) else { return Ok(()) };
    summary.pruning = true;
    let policy = crate::config::policy::resolve(None, &settings.retention)?.policy;
    let actions: Vec<Action> = match common_guid {
        Some(guid) => crate::sync::prune::decide(&after, guid, prefix, &policy, crate::calendar::now())
            .into_iter()
            .filter(|v| v.destroy)
            .map(|v| Action::Destroy { snapshot: v.snapshot.name, guid: v.snapshot.guid, reason: v.reason })
            .collect(),
        None => Vec::new(),
    };
    if args.dry_run {
        summary.plan(args, &actions);
    } else {
        execute(args, (source, false), target, &actions, summary)?;
    }
    summary.pruning = false;
    Ok(())
}

/// --from-s3: the chain in S3 to the newest backup of SRC_DATASET, after what the replica
/// holds, received object by object through s3get's gate.
fn run_from_s3(args: &Args, summary: &mut Summary) -> Result<ExitCode, Failure> {
    let source = Side { location: Location::Local };
    let target = Side { location: args.target.clone() };
    let dst = &args.target_dataset;
    let settings = crate::config::load(&args.settings, &|k| std::env::var(k).ok())?;
    let prefix = prefix_of(args, Some(&settings));
    let (state, token) = target_state(&target, dst)?;
    let have = match &state {
        Target::Missing => None,
        Target::Present { snapshots, .. } => Some(snapshots.clone()),
    };
    let (ctx, catalog) = read_catalog(args, &settings)?;
    summary.extra.push(("from".into(), json!(ctx.url(&format!("{}{}/", ctx.prefix, ctx.dataset)))));
    let records = &catalog.records;
    let health = catalog.health();
    let req = restore::Request { selector: restore::Selector::Latest, target: dst.clone(), force: false };
    let steps = restore::plan(&ctx, records, &health, &req, have.as_deref()).map_err(|f| {
        // The restore planner refuses a target that shares nothing with the chain, or has
        // snapshots after it, with a message that starts with the target: the replica has
        // diverged from the backups.
        if f.code == ExitCode::Usage && have.is_some() && f.message.starts_with(dst.as_str()) {
            Failure::new(ExitCode::Diverged, format!("refusing to seed {} from S3: {}", summary.target, f.message))
        } else {
            f
        }
    })?;
    let mut actions = Vec::new();
    // s3get cannot continue a cut receive (zfs send -t): discard its saved state.
    if token.is_some() {
        actions.push(Action::AbortResume);
    }
    let buffer = buffer(args)?;
    let mut arriving = Vec::new();
    for step in &steps {
        let restore::Step::Recv(r) = step else { continue };
        let rec = &r.record;
        let call =
            ctx.s3get_call(&rec.key, &rec.compressor, rec.stream_guids(), !rec.encrypted_to.is_empty()).map_err(
                |e| Failure::usage(format!("cannot receive {}: object {} was {e}", rec.describe(), ctx.url(&rec.key))),
            )?;
        let mut argv = call.argv();
        argv[0] = beside_me("s3get");
        // No -s: a cut stream cannot be continued from S3, and without it zfs recv keeps
        // nothing of one.
        let stages = pipeline::s3get_stages(
            argv,
            args.compress,
            buffer.as_deref(),
            &args.target,
            pipeline::recv_argv(dst, false, false),
        );
        let url = ctx.url(&rec.key);
        actions.push(Action::FromS3 {
            snapshot: rec.snapshot.clone(),
            guid: rec.guid,
            url,
            stages,
            reason: r.reason.clone(),
        });
        arriving.push(rec);
    }
    // As for a sync from the source: the common snapshot is where the chain starts, the
    // replica's newest snapshot that a backup holds.
    let common = have.iter().flatten().rev().find_map(|t| {
        let r = records.iter().find(|r| r.holds(t.guid, &t.name))?;
        Some(plan::Common { source: r.snapshot.clone(), target: t.name.clone(), guid: t.guid })
    });
    summary.common = common_json(common.as_ref());
    let newest_guid = records.last().and_then(|r| r.guid);
    if arriving.is_empty() {
        summary.action = "none".into();
        if args.dry_run {
            summary.plan(args, &actions);
        } else {
            execute(args, (&source, false), &target, &actions, summary)?;
        }
        let after = have.clone().unwrap_or_default();
        prune_after(args, &source, &target, Some(&settings), &prefix, after, newest_guid, summary)?;
        return Ok(if args.exit_nothing == 0 { ExitCode::Ok } else { crate::cli::exit::from_code(args.exit_nothing) });
    }
    if args.dry_run {
        summary.plan(args, &actions);
        summary.sent = arriving.iter().map(|r| r.snapshot.clone()).collect();
        summary.action = "dry-run".into();
        // What the replica will hold: its snapshots, then the chain's (each keeps its
        // snapshot's creation time, which zfs recv carries over).
        let mut after = have.clone().unwrap_or_default();
        let base = after.iter().map(|s| s.createtxg).max().unwrap_or(0);
        after.extend(arriving.iter().enumerate().map(|(k, r)| crate::zfs::snapshots::Snapshot {
            dataset: dst.clone(),
            name: r.snapshot.clone(),
            guid: r.guid.unwrap_or(0),
            createtxg: base + 1 + k as u64,
            creation: r.time,
            used: 0,
            referenced: 0,
            logical_referenced: None,
            holds: 0,
        }));
        prune_after(args, &source, &target, Some(&settings), &prefix, after, newest_guid, summary)?;
        return Ok(ExitCode::Ok);
    }
    execute(args, (&source, false), &target, &actions, summary)?;
    summary.action = "sent".into();
    if args.prune_target {
        let after = target.snapshots(dst)?.unwrap_or_default();
        prune_after(args, &source, &target, Some(&settings), &prefix, after, newest_guid, summary)?;
    }
    Ok(ExitCode::Ok)
}

/// `HOST:DST` (or the local `DST`), as messages and JSON lines name the target.
fn target_name(args: &Args) -> String {
    match &args.target {
        Location::Local => args.target_dataset.clone(),
        Location::Remote { host, .. } => format!("{host}:{}", args.target_dataset),
    }
}

/// How the replica came out of one `--tee` run.
enum TeeOutcome {
    Sent,
    /// It already held the snapshot (`@NAME` there).
    Have(String),
    /// It could not take the stream, decided before the first byte.
    Refused(Failure),
    /// Reading it, or receiving, failed.
    Failed(Failure),
}

/// `--tee`: pass the stream on stdin through to stdout while the replica receives it (when
/// it can), then report the replica's outcome as one JSON line. Only stdin and stdout
/// failing are this process's exit status; the replica's is in its line.
fn run_tee(args: &Args, tee: &Tee) -> Result<(), Failure> {
    let start = Instant::now();
    let target_name = target_name(args);
    let source = format!("{}@{}", args.source, tee.snapshot);
    let what = format!("{source} to {target_name}");
    let target = Side { location: args.target.clone() };
    let fix = format!("zsync-ssh {} {target_name}", args.source);
    // Decided before the first byte: `Err` is the outcome when the replica gets nothing.
    let sink = match target_state(&target, &args.target_dataset) {
        Err(f) => Err(TeeOutcome::Failed(f.context(format!("{what}: reading the replica")))),
        Ok((state, token)) => match tee::decide(&state, tee.guid, tee.from, &fix) {
            tee::Passing::Have { snapshot } => Err(TeeOutcome::Have(snapshot)),
            tee::Passing::Refuse { code, reason } => Err(TeeOutcome::Refused(Failure::new(code, reason))),
            // A cut resumable receive would make plain `zfs recv` refuse: this stream
            // starts the snapshot over, so its saved state goes.
            tee::Passing::Receive => match token.map_or(Ok(()), |_| target.abort_resume(&args.target_dataset)) {
                Err(f) => Err(TeeOutcome::Failed(f)),
                Ok(()) => {
                    let stages = pipeline::receiving_stages(
                        args.compress,
                        buffer(args)?.as_deref(),
                        &args.target,
                        pipeline::recv_argv(&args.target_dataset, false, false),
                    );
                    Ok(tee::Sink { stages, target: args.target.clone(), what: what.clone(), idle: args.idle_timeout })
                }
            },
        },
    };
    let stdout = std::io::stdout().as_fd().try_clone_to_owned().map(std::fs::File::from);
    let stdout = stdout.map_err(|e| Failure::new(ExitCode::LocalIo, format!("cannot use stdout: {e}")))?;
    let (fed, early) = match sink {
        Ok(sink) => (Some(sink), None),
        Err(outcome) => (None, Some(outcome)),
    };
    let passed = tee::pass(std::io::stdin().lock(), std::io::BufWriter::with_capacity(1 << 20, stdout), fed);
    // Fed (no early outcome): the replica's own result says how it went.
    let outcome = match early {
        Some(outcome) => outcome,
        None => match passed.replica {
            Some(Err(f)) => TeeOutcome::Failed(f),
            _ => TeeOutcome::Sent,
        },
    };
    let (action, code, bytes) = match &outcome {
        TeeOutcome::Sent => ("sent", ExitCode::Ok, passed.bytes),
        TeeOutcome::Have(_) => ("none", ExitCode::Ok, 0),
        TeeOutcome::Refused(f) => ("refused", f.code, 0),
        TeeOutcome::Failed(f) => ("failed", f.code, 0),
    };
    let mut line = json!({
        "sink": "replica",
        "source": source,
        "target": target_name,
        "guid": tee.guid.to_string(),
        "from_guid": (tee.from != 0).then(|| tee.from.to_string()),
        "action": action,
        "result": if code == ExitCode::Ok { "ok" } else { "failed" },
        "exit": code.code(),
        "bytes": bytes,
        "seconds": (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
    });
    let said = match &outcome {
        TeeOutcome::Sent => None,
        TeeOutcome::Have(snapshot) => Some(("reason", format!("the replica already holds it (@{snapshot})"))),
        TeeOutcome::Refused(f) => Some(("reason", f.message.clone())),
        TeeOutcome::Failed(f) => Some(("error", f.message.clone())),
    };
    if let (Some((key, text)), Value::Object(m)) = (&said, &mut line) {
        m.insert(key.to_string(), json!(text));
    }
    match &outcome {
        TeeOutcome::Refused(f) => {
            eprintln!("zsync-ssh: {what}: not received: {} (the stream still went on to the other sink)", f.message)
        }
        TeeOutcome::Failed(f) => eprintln!("zsync-ssh: {} (the stream still went on to the other sink)", f.message),
        TeeOutcome::Sent | TeeOutcome::Have(_) => {}
    }
    report_line(tee, &line)?;
    if let Some(e) = passed.read_error {
        return Err(Failure::new(ExitCode::LocalIo, format!("{what}: reading the stream from stdin failed: {e}")));
    }
    if passed.stdout_closed {
        return Err(Failure::new(ExitCode::ClosedStdout, ""));
    }
    Ok(())
}

/// Append the replica's line to --report, $ZSNAP_REPLICA_REPORT, or else stderr (stdout is the stream).
fn report_line(tee: &Tee, line: &Value) -> Result<(), Failure> {
    let text = format!("{line}\n");
    let file = tee.report.clone().or_else(|| std::env::var("ZSNAP_REPLICA_REPORT").ok().filter(|v| !v.is_empty()));
    let Some(file) = file else {
        eprint!("{text}");
        return Ok(());
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .map_err(|e| Failure::new(ExitCode::LocalIo, format!("cannot open report file {file}: {e}")))?;
    std::io::Write::write_all(&mut f, text.as_bytes())
        .map_err(|e| Failure::new(ExitCode::LocalIo, format!("cannot write report file {file}: {e}")))
}

/// The catalog of SRC_DATASET's backups (one listing), and the context its s3get
/// commands are built in, as zsnap-plan restore reads them.
fn read_catalog(args: &Args, settings: &Settings) -> Result<(Context, crate::catalog::Catalog), Failure> {
    use crate::commands::zsnap_plan::inputs;
    let bucket = settings.bucket()?.to_string();
    let s3 = settings.s3_args(&args.s3)?;
    let ctx = Context {
        bucket,
        prefix: settings.s3_prefix().to_string(),
        dataset: args.source.clone(),
        connection: inputs::connection_flags(settings, &args.s3),
        customs: settings.customs.clone(),
        encrypt_to: settings.encrypt_to.clone(),
        identity: inputs::identity_use(settings, true)?,
    };
    let catalog = crate::commands::runtime()?.block_on(async {
        let client = crate::s3::client::connect(&s3).await;
        crate::catalog::listing::read(&client, &ctx.bucket, &ctx.prefix, &ctx.dataset).await
    })?;
    Ok((ctx, catalog))
}

/// `bin` from the directory this binary runs from (where make install puts them all),
/// else by name on PATH.
fn beside_me(bin: &str) -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(bin)))
        .filter(|p| p.is_file())
        .map_or_else(|| bin.to_string(), |p| p.display().to_string())
}

/// The source's features, snapshots and bookmarks, and the options it is sent with: an
/// encrypted source goes raw unless --decrypt-send, so the replica never holds its
/// plaintext and the key need not be loaded.
fn read_source(source: &Side, args: &Args) -> Result<SourceState, Failure> {
    let features = source.features()?;
    let listing = source
        .listing(&args.source, &features)?
        .ok_or_else(|| Failure::new(ExitCode::NotFound, format!("source dataset {} does not exist", args.source)))?;
    let options = crate::plan::backup::checked_send_options(
        args.send_options,
        &args.source,
        &listing,
        args.decrypt_send,
        &features,
    )?;
    Ok(SourceState { features, listing, options })
}

/// A cut receive left resumable state (OpenZFS only): continue it if the source can send
/// -t, else discard it.
fn resume_actions(args: &Args, src: &SourceState, token: &str) -> Result<Vec<Action>, Failure> {
    if !src.features.resume_send() {
        return Ok(vec![Action::AbortResume]);
    }
    let stages = pipeline::stages(
        pipeline::resume_send_argv(token),
        args.compress,
        buffer(args)?.as_deref(),
        &args.target,
        pipeline::recv_argv(&args.target_dataset, true, false),
    );
    Ok(vec![Action::Resume { stages }])
}

/// The rollback (if any), then per step its transfer and, where zfs has bookmarks, the
/// bookmark of the snapshot sent.
fn send_actions(
    args: &Args,
    src: &SourceState,
    steps: &[Step],
    rollback_to: Option<String>,
    force_full: bool,
    resumable: bool,
) -> Result<Vec<Action>, Failure> {
    let buffer = buffer(args)?;
    let mut actions = Vec::new();
    let forced = rollback_to.is_some() || force_full;
    if let Some(snapshot) = rollback_to {
        actions.push(Action::Rollback { snapshot });
    }
    for (i, step) in steps.iter().enumerate() {
        let stages = pipeline::stages(
            pipeline::send_argv(&args.source, src.options, step),
            args.compress,
            buffer.as_deref(),
            &args.target,
            pipeline::recv_argv(&args.target_dataset, resumable, i == 0 && forced),
        );
        let hold = format!("{}@{}", args.source, step.hold());
        actions.push(Action::Transfer { step: step.clone(), stages, hold });
        // The replica holds it now: a bookmark keeps it a valid base for the next send even
        // after local rotation destroys the snapshot.
        if src.features.bookmarks() && !src.listing.bookmarks.iter().any(|b| b.name == step.to()) {
            actions.push(Action::Bookmark { snapshot: step.to().to_string() });
        }
    }
    Ok(actions)
}

/// `zfs send -nP` of a transfer's send, for the progress line's percent and ETA; `None` (no
/// percent; the transfer goes on) when it fails.
fn estimate(source: &Side, send: &[String]) -> Option<u64> {
    let out = source.run(&pipeline::estimate_argv(send)?).ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success().then(|| crate::commands::zsnap_plan::local::parse_size(&text)).flatten()
}

/// Run the actions in order; the first failure stops the run (later steps build on it).
/// `can_estimate`: the source's zfs has `zfs send -nP`, for the progress line.
fn execute(
    args: &Args,
    (source, can_estimate): (&Side, bool),
    target: &Side,
    actions: &[Action],
    summary: &mut Summary,
) -> Result<(), Failure> {
    let tag = format!("zsync-ssh-{}", std::process::id());
    let mode = args.progress.mode()?;
    let progress = (mode, None);
    let idle = Some(args.idle_timeout);
    for action in actions {
        transfer::check_signal()?;
        match action {
            Action::Resume { stages } => {
                let what = format!("resuming the cut receive into {}", summary.target);
                summary.bytes += transfer::run(stages, &args.target, &what, progress, idle)?;
                summary.sent.push("(resumed)".into());
            }
            Action::AbortResume => target.abort_resume(&args.target_dataset)?,
            Action::Rollback { snapshot } => target.rollback(&args.target_dataset, snapshot)?,
            Action::Transfer { step, stages, hold } => {
                let held = Hold::take(source, &tag, hold)?;
                let what = match step {
                    Step::Full { to, .. } => format!("full {}@{to} to {}", args.source, summary.target),
                    Step::Incremental { from, to, .. } => {
                        format!("{}@{from}..{to} to {}", args.source, summary.target)
                    }
                };
                summary.action = "sent".into();
                // Asked only when it is shown: one more zfs run per snapshot.
                let estimate = match (mode, can_estimate) {
                    (ProgressMode::Off, _) | (_, false) => None,
                    _ => estimate(source, &stages[0].argv),
                };
                let sent = transfer::run(stages, &args.target, &what, (mode, estimate), idle);
                drop(held);
                summary.bytes += sent?;
                summary.sent.push(step.to().to_string());
            }
            // Not fatal: the replica is whole; only the next send's base after rotation is.
            Action::Bookmark { snapshot } => {
                if let Err(f) = source.bookmark(&args.source, snapshot) {
                    eprintln!("zsync-ssh: warning: {f}");
                }
            }
            Action::FromS3 { snapshot, stages, .. } => {
                // s3get's own message names the object.
                let what = format!("receiving @{snapshot} from S3 into {}", summary.target);
                summary.action = "sent".into();
                summary.bytes += transfer::run(stages, &args.target, &what, progress, idle)?;
                summary.sent.push(snapshot.clone());
            }
            Action::Destroy { snapshot, .. } => {
                target.destroy(&args.target_dataset, snapshot)?;
                summary.pruned.push(snapshot.clone());
                json_line(&action.to_json(args, &summary.target))?;
            }
        }
    }
    Ok(())
}

/// What the target holds: its snapshots (or missing), whether it was written since, and a
/// resume token if a cut receive left one.
fn target_state(target: &Side, dst: &str) -> Result<(Target, Option<String>), Failure> {
    let Some(snapshots) = target.snapshots(dst)? else { return Ok((Target::Missing, None)) };
    let props = target.properties(dst)?;
    let modified = plan::modified_since(&props, snapshots.last());
    let token = props.get("receive_resume_token").filter(|t| !t.is_empty() && t.as_str() != "-").cloned();
    Ok((Target::Present { snapshots, modified }, token))
}

/// mbuffer's size when asked for and installed.
fn buffer(args: &Args) -> Result<Option<String>, Failure> {
    let Some(size) = &args.buffer else { return Ok(None) };
    if matches!(args.target, Location::Local) {
        return Ok(None);
    }
    let found = std::process::Command::new("mbuffer")
        .arg("-V")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("zsync-ssh: warning: mbuffer is not installed; sending without --buffer");
        return Ok(None);
    }
    Ok(Some(size.clone()))
}

fn refuse(summary: &mut Summary, d: Divergence) -> Failure {
    summary.common = common_json(d.common.as_ref());
    summary.action = "refused".into();
    summary.extra.push(("reason".into(), json!(d.reason)));
    summary.extra.push(("sender_only".into(), json!(d.sender_only)));
    summary.extra.push(("receiver_only".into(), json!(d.receiver_only)));
    let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(",") };
    let hint = if d.common.is_some() { "; --rollback discards the target's changes" } else { "" };
    Failure::new(
        ExitCode::Diverged,
        format!(
            "refusing to sync {} to {}: {}; sender-only: {}; receiver-only: {}{hint}",
            summary.source,
            summary.target,
            d.reason,
            list(&d.sender_only),
            list(&d.receiver_only)
        ),
    )
}

fn common_json(c: Option<&plan::Common>) -> Value {
    match c {
        Some(c) => json!({"snapshot": c.source, "target_snapshot": c.target, "guid": c.guid.to_string()}),
        None => Value::Null,
    }
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(args: &[&str]) -> Args {
        crate::commands::parse_test::ok(parse, "zsync-ssh", args)
    }

    fn parse_err(args: &[&str]) -> Failure {
        crate::commands::parse_test::err(parse, "zsync-ssh", args)
    }

    #[test]
    fn targets() {
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("nas:pool/d", Some("nas"), "pool/d"),
            ("backup@nas:pool/d", Some("backup@nas"), "pool/d"),
            ("pool/d", None, "pool/d"),
            ("pool/a:b", None, "pool/a:b"),
            ("nas:pool", Some("nas"), "pool"),
        ];
        for (text, host, ds) in cases {
            let (h, d) = split_target(text).unwrap();
            assert_eq!((h.as_deref(), d.as_str()), (*host, *ds), "{text}");
        }
        assert!(split_target(":pool/d").is_err());
        assert!(split_target("nas:").is_err());
    }

    #[test]
    fn flags() {
        let a = parse_ok(&[
            "-o",
            "Compression=no",
            "-p",
            "22",
            "-i",
            "/k",
            "-c",
            "zstd",
            "-s",
            "daily-",
            "-I",
            "--rollback",
            "t/d",
            "u@h:p/d",
        ]);
        assert_eq!(a.opts, Options { prefix: "daily-".into(), intermediates: true, rollback: true });
        assert_eq!(a.compress, Compress::Zstd);
        assert_eq!(a.target_dataset, "p/d");
        let Location::Remote { host, ssh } = &a.target else { panic!("remote") };
        assert_eq!(host, "u@h");
        assert_eq!(ssh[..7], ["ssh", "-o", "Compression=no", "-p", "22", "-i", "/k"]);
        assert!(matches!(parse_ok(&["t/d", "t/copy"]).target, Location::Local));
        assert_eq!(parse_ok(&["--exit-nothing", "3", "t/d", "h:p/d"]).exit_nothing, 3);
        for (bad, needle) in [
            (&["t/d"][..], "expected SRC_DATASET"),
            (&["t/d@a", "h:p/d"][..], "not a dataset"),
            (&["-c", "gzip", "t/d", "h:p/d"][..], "--compress"),
            (&["--exit-nothing", "300", "t/d", "h:p/d"][..], "0..=255"),
            (&["t/d", "t/d"][..], "is the source"),
            (&["--buffer", "lots", "t/d", "h:p/d"][..], "--buffer"),
        ] {
            let f = parse_err(bad);
            assert_eq!(f.code, ExitCode::Usage);
            assert!(f.message.contains(needle), "{bad:?}: {}", f.message);
        }
    }

    #[test]
    fn prune_from_s3_format_and_idle_flags() {
        let a = parse_ok(&["--prune-target", "--config", "/c", "-s", "d-", "t/d", "h:p/d"]);
        assert!(a.prune_target && !a.from_s3 && a.prefix_given);
        assert_eq!(a.idle_timeout, IDLE_TIMEOUT);
        assert_eq!(
            (a.settings.config.as_deref(), a.settings.dataset.as_deref(), a.settings.snapshot_prefix.as_deref()),
            (Some("/c"), Some("t/d"), Some("d-")),
            "the source's [fs:] section, and -s over SNAPSHOT_PREFIX"
        );
        let a =
            parse_ok(&["--from-s3", "--bucket", "b", "--s3-prefix", "p/", "--endpoint", "http://h:1", "t/d", "h:p/d"]);
        assert!(a.from_s3 && !a.prefix_given);
        assert_eq!((a.settings.bucket.as_deref(), a.settings.s3_prefix.as_deref()), (Some("b"), Some("p/")));
        assert_eq!(a.settings.endpoint.as_deref(), Some("http://h:1"), "flags > environment > file");
        assert_eq!(a.settings.snapshot_prefix, None);
        let a = parse_ok(&["-n", "-f", "sh", "--idle-timeout", "90s", "t/d", "h:p/d"]);
        assert_eq!((a.format, a.idle_timeout), (Some(Format::Sh), Duration::from_secs(90)));
        assert_eq!(parse_ok(&["--format", "json", "t/d", "h:p/d"]).format, Some(Format::Json));
        for (bad, needle) in [
            (&["--format", "sh", "t/d", "h:p/d"][..], "--format sh prints the commands of a --dry-run"),
            (&["-n", "--format", "yaml", "t/d", "h:p/d"][..], "not json or sh"),
            (&["--idle-timeout", "0", "t/d", "h:p/d"][..], "at least 1s"),
            (&["--idle-timeout", "soon", "t/d", "h:p/d"][..], "--idle-timeout"),
            (&["--from-s3", "-I", "t/d", "h:p/d"][..], "--intermediates is about zfs send"),
            (&["--from-s3", "--send-option", "-c", "t/d", "h:p/d"][..], "--send-option is about zfs send"),
            (&["--bogus", "t/d", "h:p/d"][..], "invalid option '--bogus'"),
        ] {
            let f = parse_err(bad);
            assert_eq!(f.code, ExitCode::Usage);
            assert!(f.message.contains(needle), "{bad:?}: {}", f.message);
        }
    }

    #[test]
    fn exit_nothing_codes() {
        assert_eq!(crate::cli::exit::from_code(2), ExitCode::Critical);
        assert_eq!(crate::cli::exit::from_code(3).code(), 3);
        assert_eq!(crate::cli::exit::from_code(200).code(), 200);
        assert_eq!(
            crate::cli::exit::ALL.len() + 1,
            crate::cli::exit::TABLE.len(),
            "every table row but the signal one"
        );
    }
}
