//! `zsync-ssh`: bring a replica of a dataset (on another host through ssh, or local) up to
//! the source's newest snapshot with `zfs send | ssh HOST zfs recv`. The replica only moves
//! forward: a diverged target is refused unless --rollback; a failed transfer leaves it at
//! its last good snapshot.

use crate::cli::flags::{Flag, Page};
use crate::cli::output::json_line;
use crate::cli::values::{parse_number, parse_size};
use crate::cli::{early_exit, ExitCode, Failure, COMMON_FLAGS};
use crate::sync::pipeline::Stage;
use crate::sync::pipeline::{self, Compress, Location};
use crate::sync::plan::{self, Decision, Divergence, Options, Step, Target};
use crate::sync::side::{Hold, Side};
use crate::sync::transfer::{self, ProgressMode};
use crate::zfs::send::SendOptions;
use lexopt::prelude::*;
use serde_json::{json, Value};
use std::ffi::OsString;
use std::time::Instant;

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
        doc: "Print the exact commands a real run would execute, one per line, then the JSON summary \
              (action \"dry-run\"); change nothing. Snapshots are still listed on both sides.",
    },
    Flag {
        short: None,
        long: "progress",
        value: None,
        doc: "Report bytes sent on stderr every 10 s even when stderr is not a terminal (on a terminal: \
              every second), and a line per snapshot sent.",
    },
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
changed referenced size or blocks held only by the newest snapshot). Then nothing is sent and exit is 2, \
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

One send, many sinks: one zfs send can feed both an S3 backup and a replica, and a new replica can be \
seeded from S3 instead of the source (see EXAMPLES).

stdout carries one JSON line: {\"source\", \"target\", \"common\" ({\"snapshot\", \"target_snapshot\", \
\"guid\"} or null), \"sent\" (snapshot names received), \"bytes\" (send stream bytes), \"seconds\", \
\"action\"}; action is \"sent\", \"none\", \"dry-run\", \"refused\" (also \"reason\", \"sender_only\", \
\"receiver_only\") or \"failed\" (also \"error\"). Exit status: 0 sent (or nothing to do, see \
--exit-nothing), 79 refused because the target diverged, 67 a transfer stage failed or was cut (nothing \
partial kept), 66 dataset or snapshot missing, 69/71/78 ssh could not connect, resolve or log in, 77 \
permission denied on a zfs command, 128+N stopped by signal N.",
    groups: &[("Options", FLAGS), ("ssh", SSH_FLAGS), ("General", COMMON_FLAGS)],
    environment: &[],
    examples: &[
        ("zsync-ssh tank/data backup@nas:pool/data", "Replicate tank/data to nas (full the first time, then incrementals)."),
        ("zsync-ssh -c zstd -b 256M -s daily- tank/data nas:pool/data", "Compressed and buffered, daily snapshots only."),
        ("zsync-ssh --dry-run tank/data nas:pool/data", "Show the commands without running them."),
        ("zsync-ssh --rollback tank/data nas:pool/data", "Discard what was done on the replica since the common snapshot."),
        (
            "zfs send -i tank/data@d1 tank/data@d2 | tee >(ssh nas zfs recv pool/data) | s3put --zfs-stream --compress zstd s3://backups/tank/data@d2",
            "One send, many sinks: one stream to a replica and to S3 (bash; s3put commits only a whole stream, \
             zfs recv only a whole stream; check both exit statuses, e.g. with set -o pipefail and wait).",
        ),
        (
            "s3get --decompress zstd --zfs-stream s3://backups/tank/data@d1 | ssh nas zfs recv pool/data",
            "Seed a new replica from S3 instead of the source; later runs of zsync-ssh continue from the \
             common snapshot (matched by guid).",
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
    pub progress: bool,
    pub exit_nothing: i32,
    /// `--send-option`s.
    pub send_options: SendOptions,
    pub decrypt_send: bool,
}

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
        (Compress::None, None, false, false, 0);
    let (mut ssh_options, mut port, mut identity, mut config) = (Vec::new(), None, None, None);
    let mut positional = Vec::new();
    let (mut send_options, mut decrypt_send) = (SendOptions::default(), false);
    while let Some(arg) = p.next()? {
        if let Some(text) = early_exit(&arg, &PAGE) {
            return Ok(Err(text));
        }
        match arg {
            Short('s') | Long("snapshot-prefix") => opts.prefix = p.value()?.string()?,
            Short('I') | Long("intermediates") => opts.intermediates = true,
            Long("rollback") => opts.rollback = true,
            Short('c') | Long("compress") => compress = Compress::parse(&p.value()?.string()?)?,
            Short('b') | Long("buffer") => {
                let text = p.value()?.string()?;
                parse_size("buffer", &text)?;
                buffer = Some(text);
            }
            Short('n') | Long("dry-run") => dry_run = true,
            Long("progress") => progress = true,
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
    }))
}

pub fn main(argv: impl IntoIterator<Item = OsString>) -> Result<(), Failure> {
    let args = match parse(argv)? {
        Ok(a) => a,
        Err(text) => {
            return crate::cli::output::emit(&text);
        }
    };
    transfer::catch_signals()?;
    let mut summary = Summary::new(&args);
    let result = run(&args, &mut summary);
    if let Err(f) = &result {
        if summary.action == "sent" || summary.action == "running" {
            summary.action = "failed".into();
            summary.extra.push(("error".into(), json!(f.message)));
        }
    }
    json_line(&summary.to_json())?;
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
}

impl Summary {
    fn new(args: &Args) -> Summary {
        let target = match &args.target {
            Location::Local => args.target_dataset.clone(),
            Location::Remote { host, .. } => format!("{host}:{}", args.target_dataset),
        };
        Summary {
            source: args.source.clone(),
            target,
            common: Value::Null,
            sent: Vec::new(),
            bytes: 0,
            start: Instant::now(),
            action: "running".into(),
            extra: Vec::new(),
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
}

impl Action {
    /// The exact command, as `--dry-run` prints it.
    fn line(&self, args: &Args) -> String {
        let dst = &args.target_dataset;
        let at_target = |w: &[&str]| crate::plan::join(&args.target.argv(&words(w)));
        match self {
            Action::Resume { stages } | Action::Transfer { stages, .. } => pipeline::shell_line(stages),
            Action::AbortResume => at_target(&["zfs", "recv", "-A", dst]),
            Action::Rollback { snapshot } => at_target(&["zfs", "rollback", "-r", &format!("{dst}@{snapshot}")]),
            Action::Bookmark { snapshot } => {
                crate::plan::join(&crate::zfs::snapshots::bookmark_argv(&args.source, snapshot))
            }
        }
    }
}

/// What the source is and how it is sent, read once.
struct SourceState {
    features: crate::zfs::features::Features,
    listing: crate::zfs::snapshots::Listing,
    options: SendOptions,
}

/// The whole run; `Ok` carries the exit code for a run that went as designed. Two rounds of
/// plan-then-act: first what a cut receive left (resume or discard it), then, from what the
/// target holds after that, the transfers.
fn run(args: &Args, summary: &mut Summary) -> Result<ExitCode, Failure> {
    let source = Side { location: Location::Local };
    let target = Side { location: args.target.clone() };
    let dst = &args.target_dataset;
    let src = read_source(&source, args)?;
    if src.options.raw() {
        summary.extra.push(("raw".into(), json!(true)));
    }
    let mut commands: Vec<String> = Vec::new();
    let (state, token) = target_state(&target, dst)?;
    let mut state = state;
    let resuming = token.is_some();
    if let Some(token) = token {
        let actions = resume_actions(args, &src, &token)?;
        if args.dry_run {
            commands.extend(actions.iter().map(|a| a.line(args)));
        } else {
            execute(args, &source, &target, &actions, summary)?;
            state = target_state(&target, dst)?.0;
        }
    }
    let decision = plan::decide(&src.listing.snapshots, &state, &args.opts);
    let (common, steps, rollback_to, force_full) = match decision {
        Decision::NoSource => {
            let which =
                if args.opts.prefix.is_empty() { String::new() } else { format!(" matching '{}'", args.opts.prefix) };
            return Err(Failure::new(ExitCode::NotFound, format!("{} has no snapshots{which} to send", args.source)));
        }
        Decision::Nothing { common } => {
            summary.common = common_json(Some(&common));
            summary.action = "none".into();
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
    let actions = send_actions(args, &src, &steps, rollback_to, force_full, resumable)?;
    if args.dry_run {
        commands.extend(actions.iter().map(|a| a.line(args)));
        for c in &commands {
            crate::cli::output::emit(&format!("{c}\n"))?;
        }
        summary.extra.push(("commands".into(), json!(commands)));
        summary.sent = steps.iter().map(|s| s.to().to_string()).collect();
        summary.action = "dry-run".into();
        return Ok(ExitCode::Ok);
    }
    execute(args, &source, &target, &actions, summary)?;
    summary.action = if steps.is_empty() { "rolled-back".into() } else { "sent".into() };
    Ok(ExitCode::Ok)
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

/// Run the actions in order; the first failure stops the run (later steps build on it).
fn execute(
    args: &Args,
    source: &Side,
    target: &Side,
    actions: &[Action],
    summary: &mut Summary,
) -> Result<(), Failure> {
    let tag = format!("zsync-ssh-{}", std::process::id());
    for action in actions {
        match action {
            Action::Resume { stages } => {
                let what = format!("resuming the cut receive into {}", summary.target);
                summary.bytes += transfer::run(stages, &args.target, &what, ProgressMode::new(args.progress))?;
                summary.sent.push("(resumed)".into());
            }
            Action::AbortResume => target.abort_resume(&args.target_dataset)?,
            Action::Rollback { snapshot } => target.rollback(&args.target_dataset, snapshot)?,
            Action::Transfer { step, stages, hold } => {
                transfer::check_signal()?;
                let held = Hold::take(source, &tag, hold)?;
                let what = match step {
                    Step::Full { to, .. } => format!("full {}@{to} to {}", args.source, summary.target),
                    Step::Incremental { from, to, .. } => {
                        format!("{}@{from}..{to} to {}", args.source, summary.target)
                    }
                };
                summary.action = "sent".into();
                let sent = transfer::run(stages, &args.target, &what, ProgressMode::new(args.progress));
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
