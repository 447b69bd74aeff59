//! `zsnap-plan`: decisions printed as data. It reads local snapshots (`zfs get`) and the
//! bucket (one listing), decides with the pure planners in `plan`, and prints JSON lines,
//! the exact shell commands, or a table. It never sends, receives or deletes anything.

mod local;
mod retention;

use crate::calendar::Period;
use crate::catalog::{self, Catalog};
use crate::cli::flags::{Flag, Page};
use crate::cli::output::{emit, human_bytes};
use crate::cli::s3_flags::{self, S3Args};
use crate::cli::{early_exit, ExitCode, Failure, COMMON_FLAGS};
use crate::config::policy::{self, Effective};
use crate::config::{self, Settings};
use crate::plan::{backup, prune, restore, snapshot, status, Context};
use crate::s3::client;
use crate::zfs::snapshots;
use lexopt::prelude::*;
use serde_json::{json, Value};
use std::ffi::OsString;

const SETTINGS_FLAGS: &[Flag] = &[
    Flag {
        short: None,
        long: "config",
        value: Some("FILE"),
        doc: "Configuration file (default $ZSNAP_CONFIG, else /etc/zsnap/zsnap.conf, which may be missing). \
              A file named here or in $ZSNAP_CONFIG must exist.",
    },
    Flag { short: Some('b'), long: "bucket", value: Some("NAME"), doc: "Bucket. Default $ZSNAP_BUCKET, then BUCKET." },
    Flag {
        short: None,
        long: "s3-prefix",
        value: Some("PREFIX"),
        doc: "Key prefix, e.g. zsnap/web1/ ('/' is added when missing). Default $ZSNAP_S3_PREFIX, then S3_PREFIX, \
              else empty.",
    },
    Flag {
        short: Some('d'),
        long: "dataset",
        value: Some("DATASET"),
        doc: "Dataset, e.g. tank/data. Default $ZSNAP_DATASET, then DATASET in [main].",
    },
    Flag {
        short: None,
        long: "snapshot-prefix",
        value: Some("PREFIX"),
        doc: "Only snapshots whose name starts with PREFIX (e.g. daily-). Default $ZSNAP_SNAPSHOT_PREFIX, then \
              SNAPSHOT_PREFIX, else every snapshot.",
    },
    Flag {
        short: None,
        long: "compressor",
        value: Some("NAME"),
        doc: "zstd, zstd:LEVEL, gzip, gzip:LEVEL, pigz, pigzN (gzip at level N, as zfs3backup names it), lz4, \
              none, or the NAME of a [compressor:NAME] section (recorded as x-NAME). Default \
              $ZSNAP_COMPRESSOR, then COMPRESSOR, else zstd.",
    },
    Flag {
        short: Some('f'),
        long: "format",
        value: Some("FORMAT"),
        doc: "json (default): JSON lines; sh: only the commands, one per line, shell-quoted (config: \
              assignments to eval); table: for people.",
    },
];

const COMMAND_FLAGS: &[Flag] = &[
    Flag {
        short: None,
        long: "send-option",
        value: Some("OPT"),
        doc: "backup: pass a zfs send option through, repeatable (or SEND_OPTIONS=\"-L -c\" in the config, \
              $ZSNAP_SEND_OPTIONS): -L (--large-block), -c (--compressed), -e (--embed), -p (--props), \
              -w (--raw). Anything else is refused, and so is an option the local zfs lacks, before anything \
              is sent. Each object records its options (send= in its key); an incremental whose options \
              zfs recv would refuse on its parent's (-w or -L differing) makes the plan send a full.",
    },
    Flag {
        short: None,
        long: "decrypt-send",
        value: None,
        doc: "backup: send an encrypted dataset DECRYPTED (without -w). This EXPOSES its plaintext to the \
              bucket, its provider and anyone holding the bucket's credentials, needs the key loaded, and \
              restores as an unencrypted dataset. Without it, every send of an encrypted dataset is raw \
              (-w): the stored bytes stay encrypted and the key need not be loaded.",
    },
    Flag {
        short: None,
        long: "full",
        value: None,
        doc: "backup: send one full stream of the target snapshot, whatever S3 holds.",
    },
    Flag {
        short: Some('s'),
        long: "snapshot",
        value: Some("NAME"),
        doc: "backup: back up to this snapshot (the part after @) instead of the newest.",
    },
    Flag {
        short: Some('t'),
        long: "target",
        value: Some("DATASET"),
        doc: "restore: receive into this dataset (default: the source dataset's name).",
    },
    Flag {
        short: None,
        long: "force",
        value: None,
        doc: "restore: receive with zfs recv -F (rolls back changes made in the target since its last \
              snapshot; overwrites an existing target that has no snapshots).",
    },
    Flag {
        short: None,
        long: "now",
        value: Some("SECONDS"),
        doc: "backup, prune, snapshot, rotate: decide as if it were this time (Unix seconds), e.g. to see \
              what a prune next month would delete. Default: the clock.",
    },
];

pub static PAGE: Page = Page {
    name: "zsnap-plan",
    synopsis: "zsnap-plan [OPTIONS] config|policy|backup|restore SELECTOR|list|save SELECTOR FILE|status|prune|snapshot TYPE|rotate",
    about: "decide what to back up or restore, and print it as data",
    description: "zsnap-plan compares a dataset's local snapshots (zfs get) with its backups in S3 (one \
ListObjectsV2 pass over PREFIX+DATASET, one ListMultipartUploads, one HEAD per zfs3backup object) and prints \
what to do. It changes nothing: scripts run the commands it prints. Key names are described in docs/FORMAT.md.

config: the resolved settings and where each came from; with --format sh, shell assignments \
(ZSNAP_DATASET, ZSNAP_BUCKET, ZSNAP_S3_PREFIX, ZSNAP_SNAPSHOT_PREFIX, ZSNAP_COMPRESSOR, ZSNAP_S3_URL) to eval.

backup [--full] [--snapshot NAME]: the base is the newest local snapshot (matching the prefix, ordered by \
createtxg) that S3 holds with a restorable chain, matched by guid (zfs3backup objects by name). Every later \
matching snapshot up to the target is sent on its own as an incremental from the one before it. Without a \
base, or with --full, one full stream of the target is sent and older snapshots are not. Lines: \
{\"action\":\"skip\"} for snapshots in S3, {\"action\":\"send\",\"kind\",\"from\",\"from_guid\",\"from_bookmark\",\
\"send_options\",\"raw\",\"key\",\"bytes_estimate\",\"estimate_source\",\"command\"} per object to write, \
{\"action\":\"bookmark\"} after each (where zfs has bookmarks), or {\"action\":\"none\"} when up to date. Each send \
command is s3put --zfs-stream --expect-guid G --expect-from FG (0 for a full) [--expect-raw] --exec 'zfs send \
[OPTIONS] [-i @FROM | -i DS#FROM] DS@SNAP' --compress C (or --filter CMD) [--expected-size BYTES] s3://BUCKET/KEY. \
An encrypted dataset (encryption not off) is sent raw (-w) unless --decrypt-send. A bookmark (same guid as its \
destroyed snapshot) serves as the base like the snapshot would. BYTES is zfs send -nP's estimate where the local \
zfs has -nP (one run per send), else the snapshot's logical size. What the local zfs supports is probed once \
(its usage text and zfs version).

restore SELECTOR [--target DATASET] [--force]: SELECTOR is a number from list, latest, or a snapshot name \
(@NAME when the name is a number). Prints the chain (full, then incrementals) that reaches it, as \
{\"action\":\"recv\",\"step\",\"of\",\"command\"} lines, each s3get --decompress Z --zfs-stream --expect-guid G --expect-from FG \
s3://... | zfs recv TARGET. A broken chain is refused (exit 66) naming the missing object. When the target \
exists, only the part of the chain after its newest shared snapshot is received; a target that shares \
nothing with the chain is refused.

list: the dataset's committed backups, oldest first, numbered from 1, with whether each is restorable. \
save SELECTOR FILE: the command that writes one object's decompressed, verified stream to FILE (through \
FILE.part). status: local and remote side by side, one line per snapshot, then a summary line \
{\"summary\":true} counting foreign objects and uncommitted uploads, with the policy in force and the bytes stored \
against the quota; the dataset must exist locally (exit 66 otherwise), while list, restore, save and prune need \
only S3.

policy: the retention policy in force and where each value came from. A policy object PREFIX+policy.json in the \
bucket is the central control: where it sets a field, local settings (KEEP_* keys, MIN_AGE, QUOTA, CLIENT_QUOTA, \
LOCK_MODE, LOCK_DAYS in the config file, or ZSNAP_KEEP_DAILY etc. in the environment) may only make it stricter; looser \
local values are ignored and listed under \"overruled\". Without the object: local settings, then defaults \
(keep 24 hourly, 7 daily, 4 weekly, 12 monthly, 0 yearly; no minimum age, quota or lock). Periods are UTC.

prune: for every committed object, keep or delete and why ({\"action\":\"keep|delete\",\"rules\",\"needed_by\",\
\"reason\"}), then {\"summary\":true,\"delete\",\"bytes_freed\",\"quota_met\"}. For each period the newest \
backup of each of the last N periods that have one is kept; keep_last keeps the N newest; the newest backup, \
backups younger than min_age, objects under Object Lock or legal hold (one HEAD per object that would be \
deleted) and objects that cannot be restored are always kept, and so is every object a kept backup's chain \
needs (\"needed by kept @X\"). A quota deletes the oldest backups first but never breaks a chain: when it \
cannot be met, the plan says why and zsnap-plan exits 1. With CLIENT_QUOTA the quota is the lower of QUOTA and what \
the client's other datasets under the prefix leave of CLIENT_QUOTA (one listing of the prefix). With --format sh: s3put --delete commands, at most \
100 objects each, children before parents.

snapshot TYPE: TYPE is hourly, daily, weekly, monthly or yearly. Prints zfs snapshot DATASET@PREFIXTYPE-\
YYYY-MM-DD-HHMMSS (UTC), then rotates as rotate does, counting the new snapshot. rotate: for local snapshots \
named that way, keeps the newest keep_TYPE of each type (and keep_last overall) and prints zfs destroy for the \
rest, except the newest snapshot committed in S3 (the base of the next incremental), snapshots with a hold \
(userrefs) and those younger than min_age; other snapshots are never touched.

backup with LOCK_MODE and LOCK_DAYS (or lock_mode, lock_days in the policy object): each new object is sent \
with s3put --lock-mode MODE --lock-until NOW+DAYS, and first {\"action\":\"lock\"} steps run s3put \
--extend-lock over the chain the first incremental builds on, so a locked backup's ancestors stay locked at \
least as long.

Every JSON line that records a decision has a \"reason\". Guids are decimal strings. Printed commands \
repeat --endpoint, --region and --profile when they came from flags or the file; run each line with \
bash -o pipefail.

Configuration file (/etc/zsnap/zsnap.conf, or --config, or $ZSNAP_CONFIG): a [main] section and \
[fs:POOL/DATASET] sections of KEY=VALUE lines (# starts a comment) with the keys BUCKET, S3_PREFIX, DATASET \
([main] only), SNAPSHOT_PREFIX, COMPRESSOR, ENDPOINT, REGION and PROFILE; and [compressor:NAME] sections \
with COMPRESS=COMMAND and DECOMPRESS=COMMAND for a custom compressor. An unknown key or section is an error \
naming FILE:LINE. Precedence: flags, then the environment, then the dataset's [fs:…] section, then [main], \
then defaults.",
    groups: &[
        ("Settings", SETTINGS_FLAGS),
        ("Command options", COMMAND_FLAGS),
        ("S3 connection", s3_flags::FLAGS),
        ("General", COMMON_FLAGS),
    ],
    environment: &[
        ("ZSNAP_CONFIG", "configuration file (instead of /etc/zsnap/zsnap.conf)"),
        ("ZSNAP_BUCKET, ZSNAP_S3_PREFIX, ZSNAP_DATASET", "defaults for --bucket, --s3-prefix, --dataset"),
        ("ZSNAP_SNAPSHOT_PREFIX, ZSNAP_COMPRESSOR", "defaults for --snapshot-prefix, --compressor"),
        ("ZSNAP_S3_ENDPOINT", "default for --endpoint"),
        ("ZSNAP_S3_PATH_STYLE", "1 or 0: default for --path-style / --virtual-host"),
        ("AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN", "static credentials"),
        ("AWS_PROFILE, AWS_REGION, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3", "as for the AWS CLI"),
    ],
    examples: &[
        ("zsnap-plan -d tank/data -b backups backup", "What would be sent, as JSON lines."),
        (
            "zsnap-plan -d tank/data -b backups --format sh backup | while read -r c; do bash -o pipefail -c \"$c\"; done",
            "Run the backup, one object at a time.",
        ),
        ("zsnap-plan -d tank/data -b backups --format table list", "Backups in S3, numbered."),
        ("zsnap-plan -d tank/data -b backups restore 3 --target tank/restored", "The chain that restores backup 3."),
        ("eval \"$(zsnap-plan --format sh config)\"", "Settings for a script."),
        ("zsnap-plan -d tank/data -b backups --format table prune", "What a prune would delete, and why."),
        ("zsnap-plan -d tank/data --format sh snapshot daily", "Take a daily snapshot and rotate."),
    ],
    see_also: "s3put(1), s3get(1), zfs-send(8), zfs-recv(8)",
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Sh,
    Table,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Config,
    Backup(backup::Request),
    Restore {
        selector: restore::Selector,
        target: Option<String>,
        force: bool,
    },
    List,
    Save {
        selector: restore::Selector,
        file: String,
    },
    Status,
    Policy,
    Prune,
    /// `snapshot TYPE` (Some) or `rotate` (None).
    Snapshot(Option<Period>),
}

/// What to do, parsed and validated; no I/O yet.
pub struct Args {
    pub command: Command,
    pub format: Format,
    pub now: Option<i64>,
    pub flags: config::Flags,
    pub s3: S3Args,
}

/// Parse the command line. `Ok(Err(text))` means print `text` and exit 0 (help, man).
pub fn parse(argv: impl IntoIterator<Item = OsString>) -> Result<Result<Args, String>, Failure> {
    let mut p = lexopt::Parser::from_iter(argv);
    let mut s3 = S3Args::default();
    let mut flags = config::Flags::default();
    let mut format = Format::Json;
    let (mut full, mut snapshot, mut target, mut force, mut now) = (false, None, None, false, None);
    let (mut send_options, mut decrypt_send): (Vec<String>, bool) = (Vec::new(), false);
    let mut words: Vec<String> = Vec::new();
    while let Some(arg) = p.next()? {
        if let Some(text) = early_exit(&arg, &PAGE) {
            return Ok(Err(text));
        }
        match arg {
            Long("config") => flags.config = Some(p.value()?.string()?),
            Short('b') | Long("bucket") => flags.bucket = Some(p.value()?.string()?),
            Long("s3-prefix") => flags.s3_prefix = Some(p.value()?.string()?),
            Short('d') | Long("dataset") => flags.dataset = Some(p.value()?.string()?),
            Long("snapshot-prefix") => flags.snapshot_prefix = Some(p.value()?.string()?),
            Long("compressor") => flags.compressor = Some(p.value()?.string()?),
            Short('f') | Long("format") => {
                let v = p.value()?.string()?;
                format = match v.as_str() {
                    "json" => Format::Json,
                    "sh" => Format::Sh,
                    "table" => Format::Table,
                    _ => return Err(Failure::usage(format!("--format: '{v}' is not json, sh or table"))),
                }
            }
            Long("full") => full = true,
            Long("send-option") => send_options.push(p.value()?.string()?),
            Long("decrypt-send") => decrypt_send = true,
            Short('s') | Long("snapshot") => snapshot = Some(p.value()?.string()?),
            Short('t') | Long("target") => target = Some(p.value()?.string()?),
            Long("force") => force = true,
            Long("now") => now = Some(crate::cli::values::parse_number("now", &p.value()?.string()?)?),
            Value(v) => words.push(v.string()?),
            Long(name) => {
                let name = name.to_string();
                if !s3.take(&name, &mut p)? {
                    return Err(Failure::usage(format!("invalid option '--{name}' (see --help)")));
                }
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    if !send_options.is_empty() {
        flags.send_options = Some(send_options.join(" "));
    }
    // The S3 flags that are also settings: the config resolves them with the file.
    flags.endpoint = s3.endpoint.take();
    flags.region = s3.region.take();
    flags.profile = s3.profile.take();
    let mut words = words.into_iter();
    let name = words.next().ok_or_else(|| {
        Failure::usage(
            "missing command: config, policy, backup, restore, list, save, status, prune, snapshot or rotate \
                 (see --help)",
        )
    })?;
    let rest: Vec<String> = words.collect();
    let arity = |n: usize, usage: &str| -> Result<(), Failure> {
        if rest.len() == n {
            Ok(())
        } else {
            Err(Failure::usage(format!("usage: zsnap-plan [OPTIONS] {usage}")))
        }
    };
    let command = match name.as_str() {
        "config" => {
            arity(0, "config")?;
            Command::Config
        }
        "backup" => {
            arity(0, "backup [--full] [--snapshot NAME]")?;
            if let Some(s) = &snapshot {
                crate::catalog::key::validate_snapshot(s).map_err(|e| Failure::usage(format!("--snapshot: {e}")))?;
            }
            Command::Backup(backup::Request { full, snapshot: snapshot.take(), lock: None, decrypt_send })
        }
        "restore" => {
            arity(1, "restore SNAPSHOT|latest|N [--target DATASET] [--force]")?;
            if let Some(t) = &target {
                crate::catalog::key::validate_dataset(t).map_err(|e| Failure::usage(format!("--target: {e}")))?;
            }
            Command::Restore { selector: restore::Selector::parse(&rest[0])?, target: target.take(), force }
        }
        "list" => {
            arity(0, "list")?;
            Command::List
        }
        "save" => {
            arity(2, "save SNAPSHOT|latest|N FILE")?;
            Command::Save { selector: restore::Selector::parse(&rest[0])?, file: rest[1].clone() }
        }
        "status" => {
            arity(0, "status")?;
            Command::Status
        }
        "policy" => {
            arity(0, "policy")?;
            Command::Policy
        }
        "prune" => {
            arity(0, "prune")?;
            Command::Prune
        }
        "snapshot" => {
            arity(1, "snapshot hourly|daily|weekly|monthly|yearly")?;
            let p = Period::parse(&rest[0]).ok_or_else(|| {
                Failure::usage(format!("snapshot: '{}' is not hourly, daily, weekly, monthly or yearly", rest[0]))
            })?;
            Command::Snapshot(Some(p))
        }
        "rotate" => {
            arity(0, "rotate")?;
            Command::Snapshot(None)
        }
        other => {
            return Err(Failure::usage(format!(
                "unknown command '{other}': expected config, policy, backup, restore, list, save, status, prune, \
                 snapshot or rotate"
            )))
        }
    };
    let is = |c: &str| name == c;
    for (given, flag, owner) in [
        (full, "--full", "backup"),
        (snapshot.is_some(), "--snapshot", "backup"),
        (target.is_some(), "--target", "restore"),
        (force, "--force", "restore"),
        (decrypt_send, "--decrypt-send", "backup"),
        (flags.send_options.is_some(), "--send-option", "backup"),
    ] {
        if given && !is(owner) {
            return Err(Failure::usage(format!("{flag} only applies to {owner}")));
        }
    }
    if now.is_some() && !matches!(name.as_str(), "backup" | "prune" | "snapshot" | "rotate") {
        return Err(Failure::usage("--now only applies to backup, prune, snapshot and rotate"));
    }
    if format == Format::Sh && matches!(command, Command::List | Command::Status | Command::Policy) {
        return Err(Failure::usage(format!("--format sh has no commands to print for {name}: use json or table")));
    }
    Ok(Ok(Args { command, format, now, flags, s3 }))
}

pub fn main(argv: impl IntoIterator<Item = OsString>) -> Result<(), Failure> {
    let args = match parse(argv)? {
        Ok(a) => a,
        Err(text) => {
            return crate::cli::output::emit(&text);
        }
    };
    let settings = config::load(&args.flags, &|k| std::env::var(k).ok())?;
    if args.command == Command::Config {
        return emit(&config_output(&settings, args.format));
    }
    let dataset = settings.dataset()?.to_string();
    let bucket = settings.bucket()?.to_string();
    let mut s3 = args.s3.clone();
    s3.endpoint = settings.endpoint.value.clone();
    s3.region = settings.region.value.clone();
    s3.profile = settings.profile.value.clone();
    let s3 = s3.with_env()?;
    let ctx = Context {
        bucket,
        prefix: settings.s3_prefix().to_string(),
        dataset: dataset.clone(),
        connection: connection_flags(&settings, args.s3.path_style),
        customs: settings.customs.clone(),
    };
    // Local state first: a missing dataset is reported before any S3 request.
    let local = match &args.command {
        Command::Backup(req) => Some(local::read(&dataset, &settings, Some(req))?),
        // A dataset that does not exist is an error here too (a typo must not look like
        // "nothing backed up"); `list` shows what S3 holds without a local dataset.
        Command::Status | Command::Snapshot(_) => Some(local::read(&dataset, &settings, None)?),
        // Only to show bookmarks beside the backups: list works on a host without the
        // dataset (or without zfs) too.
        Command::List => local::read(&dataset, &settings, None).ok(),
        _ => None,
    };
    let target_snaps = match &args.command {
        Command::Restore { target, .. } => {
            let t = target.clone().unwrap_or_else(|| dataset.clone());
            Some((t.clone(), snapshots::list_if_exists(&t)?))
        }
        _ => None,
    };
    let now = args.now.unwrap_or_else(crate::calendar::now);
    let needs_policy = !matches!(args.command, Command::Restore { .. } | Command::List | Command::Save { .. });
    let (catalog, effective, policy, others, locks) = crate::commands::runtime()?.block_on(async {
        let client = client::connect(&s3).await;
        let catalog = catalog::listing::read(&client, &ctx.bucket, &ctx.prefix, &dataset).await?;
        let central = match needs_policy {
            true => policy::read_central(&client, &ctx.bucket, &ctx.prefix, &dataset).await?,
            false => None,
        };
        let effective = policy::resolve(central.as_ref(), &settings.retention)?;
        // A client quota counts the client's other datasets: one listing of the prefix.
        let others = match (&args.command, effective.policy.client_quota) {
            (Command::Prune | Command::Status, Some(_)) => {
                Some(retention::others_bytes(&client, &ctx.bucket, &ctx.prefix, &dataset).await?)
            }
            _ => None,
        };
        let mut policy = effective.policy.clone();
        policy.quota = prune::budget(&policy, others.unwrap_or(0));
        let locks = match args.command {
            Command::Prune => retention::read_locks(&client, &ctx.bucket, &catalog, &policy, now).await?,
            _ => Default::default(),
        };
        Ok::<_, Failure>((catalog, effective, policy, others, locks))
    })?;
    let rules = Rules { effective: &effective, policy: &policy, others, locks: &locks, now };
    let mut local = local;
    if let (Some(l), Command::Backup(req)) = (local.as_mut(), &args.command) {
        // zfs send -nP for the sends a first plan makes: the second plan sizes them.
        let steps = backup_steps(&ctx, &settings, req, l, &catalog, &rules)?;
        l.estimate(&steps)?;
        if let Some(w) =
            quota_warning(&dataset, &backup_steps(&ctx, &settings, req, l, &catalog, &rules)?, &catalog, &rules)
        {
            eprintln!("zsnap-plan: warning: {w}");
        }
    }
    let (text, warning) = decide(&ctx, &settings, &args, &catalog, local.as_ref(), target_snaps, &rules)?;
    emit(&text)?;
    match warning {
        Some(w) => Err(Failure::new(ExitCode::Warning, w)),
        None => Ok(()),
    }
}

/// What retention decisions need besides the catalog: the policy in force, lock states
/// read from S3, and the time to judge at.
struct Rules<'a> {
    effective: &'a Effective,
    /// The effective policy with the quota this dataset may use (its share of a client
    /// quota, see `prune::budget`).
    policy: &'a crate::config::policy::RetentionPolicy,
    /// Bytes of the client's other datasets, when a client quota needs them.
    others: Option<u64>,
    locks: &'a std::collections::HashMap<String, crate::s3::objects::LockState>,
    now: i64,
}

/// The decision for one command, rendered, and a warning to exit 1 with (a quota that
/// cannot be met). Pure given its inputs.
fn decide(
    ctx: &Context,
    settings: &Settings,
    args: &Args,
    catalog: &Catalog,
    local: Option<&local::Local>,
    target: Option<(String, Option<Vec<snapshots::Snapshot>>)>,
    rules: &Rules,
) -> Result<(String, Option<String>), Failure> {
    let health = catalog.health();
    let records = &catalog.records;
    let f = args.format;
    let text = match &args.command {
        Command::Policy => Ok(retention::policy_output(rules.effective, f)),
        Command::Prune => {
            let p = prune::plan(records, &health, rules.policy, rules.now, rules.locks);
            let warning = p.quota_problem.clone().map(|w| retention::with_client_share(w, rules));
            return Ok((retention::prune_output(ctx, &p, records, rules, f), warning));
        }
        Command::Snapshot(period) => {
            let req = snapshot::Request {
                dataset: &ctx.dataset,
                prefix: settings.snapshot_prefix(),
                period: *period,
                now: rules.now,
            };
            let snaps = local.map(|l| l.listing.snapshots.as_slice()).unwrap_or_default();
            let marks = local.map(|l| l.listing.bookmarks.as_slice()).unwrap_or_default();
            let steps = snapshot::plan(req, snaps, marks, records, &health, &rules.effective.policy);
            Ok(retention::snapshot_output(&ctx.dataset, &steps, f))
        }
        Command::Config => Ok(config_output(settings, f)),
        Command::Backup(req) => {
            let local = local.ok_or_else(|| Failure::new(ExitCode::Internal, "backup without local state"))?;
            let steps = backup_steps(ctx, settings, req, local, catalog, rules)?;
            Ok(match f {
                Format::Json => lines(steps.iter().map(|s| s.to_json(&ctx.dataset))),
                Format::Sh => commands(steps.iter().filter_map(|s| match s {
                    backup::Step::Send(s) => Some(s.command.as_str()),
                    backup::Step::Lock { command, .. } => Some(command.as_str()),
                    backup::Step::Bookmark { command, .. } => Some(command.as_str()),
                    _ => None,
                })),
                Format::Table => table(
                    &["ACTION", "SNAPSHOT", "KIND", "FROM", "ESTIMATE", "REASON"],
                    steps
                        .iter()
                        .map(|s| match s {
                            backup::Step::Skip { snapshot, reason, .. } => {
                                vec![
                                    "skip".into(),
                                    snapshot.name.clone(),
                                    "".into(),
                                    "".into(),
                                    "".into(),
                                    reason.clone(),
                                ]
                            }
                            backup::Step::Send(s) => vec![
                                "send".into(),
                                s.snapshot.name.clone(),
                                match s.options.is_empty() {
                                    true => s.kind.as_str().into(),
                                    false => format!("{} -{}", s.kind.as_str(), s.options.letters()),
                                },
                                s.from
                                    .as_ref()
                                    .map(|f| format!("{}{}", if f.bookmark { "#" } else { "@" }, f.name))
                                    .unwrap_or_default(),
                                s.bytes_estimate
                                    .map(|b| format!("{}{}", human_bytes(b), if s.estimated { "" } else { "?" }))
                                    .unwrap_or_default(),
                                s.reason.clone(),
                            ],
                            backup::Step::Bookmark { snapshot, .. } => vec![
                                "bookmark".into(),
                                snapshot.clone(),
                                "".into(),
                                "".into(),
                                "".into(),
                                "keeps the chain's base after the snapshot is destroyed".into(),
                            ],
                            backup::Step::Lock { urls, until, .. } => vec![
                                "lock".into(),
                                format!("{} objects", urls.len()),
                                "".into(),
                                "".into(),
                                "".into(),
                                format!(
                                    "extend to {}: the chain under the new backups",
                                    crate::calendar::rfc3339(*until)
                                ),
                            ],
                            backup::Step::Nothing { reason } => {
                                vec!["none".into(), "".into(), "".into(), "".into(), "".into(), reason.clone()]
                            }
                        })
                        .collect(),
                ),
            })
        }
        Command::Restore { selector, force, .. } => {
            let (target, have) = target.ok_or_else(|| Failure::new(ExitCode::Internal, "restore without target"))?;
            let req = restore::Request { selector: selector.clone(), target, force: *force };
            let steps = restore::plan(ctx, records, &health, &req, have.as_deref())?;
            Ok(match f {
                Format::Json => lines(steps.iter().map(|s| s.to_json(ctx))),
                Format::Sh => commands(steps.iter().filter_map(|s| s.command())),
                Format::Table => table(
                    &["STEP", "SNAPSHOT", "KIND", "SIZE", "REASON"],
                    steps
                        .iter()
                        .map(|s| match s {
                            restore::Step::Recv(r) => vec![
                                format!("{}/{}", r.step, r.of),
                                r.record.snapshot.clone(),
                                r.record.kind.as_str().into(),
                                human_bytes(r.record.bytes),
                                r.reason.clone(),
                            ],
                            restore::Step::Nothing { reason } => {
                                vec!["-".into(), "".into(), "".into(), "".into(), reason.clone()]
                            }
                        })
                        .collect(),
                ),
            })
        }
        Command::Save { selector, file } => {
            let s = restore::save(ctx, records, &health, selector, file)?;
            Ok(match f {
                Format::Json => lines(std::iter::once(s.to_json(ctx))),
                Format::Sh => commands(std::iter::once(s.command.as_str())),
                Format::Table => table(
                    &["SNAPSHOT", "KIND", "FILE", "REASON"],
                    vec![vec![
                        s.record.snapshot.clone(),
                        s.record.kind.as_str().into(),
                        s.file.clone(),
                        s.reason.clone(),
                    ]],
                ),
            })
        }
        Command::List => {
            let mut entries = status::list(ctx, records, &health);
            if let Some(l) = local {
                for e in &mut entries {
                    let mark = l.listing.bookmarks.iter().find(|b| e["guid"] == b.guid.to_string().as_str());
                    e["bookmark"] = mark.map(|b| Value::from(b.name.as_str())).unwrap_or(Value::Null);
                }
            }
            Ok(match f {
                Format::Table => table(
                    &["N", "SNAPSHOT", "KIND", "FROM", "CREATED (UTC)", "SIZE", "Z", "RESTORABLE"],
                    entries
                        .iter()
                        .map(|e| {
                            vec![
                                e["n"].to_string(),
                                match e["bookmark"].as_str() {
                                    Some(b) => format!("{} (#{b})", str_of(&e["snapshot"])),
                                    None => str_of(&e["snapshot"]),
                                },
                                match e["raw"].as_bool() {
                                    Some(true) => format!("{} raw", str_of(&e["kind"])),
                                    _ => str_of(&e["kind"]),
                                },
                                str_of(&e["from"]),
                                crate::calendar::minutes(e["time"].as_i64().unwrap_or(0)),
                                human_bytes(e["bytes"].as_u64().unwrap_or(0)),
                                str_of(&e["compressor"]),
                                match e["broken"].as_str() {
                                    Some(b) => format!("no: {b}"),
                                    None => "yes".into(),
                                },
                            ]
                        })
                        .collect(),
                ),
                _ => lines(entries.into_iter()),
            })
        }
        Command::Status => {
            let (mut rows, summary) = status::status(
                local.map(|l| l.listing.snapshots.as_slice()).unwrap_or_default(),
                settings.snapshot_prefix(),
                records,
                &health,
                &catalog.uncommitted,
                catalog.foreign.len(),
            );
            status::mark_bookmarks(&mut rows, local.map(|l| l.listing.bookmarks.as_slice()).unwrap_or_default());
            Ok(match f {
                Format::Table => {
                    let mut t = table(
                        &["SNAPSHOT", "LOCAL", "REMOTE", "KIND", "SIZE", "RESTORABLE"],
                        rows.iter()
                            .map(|r| {
                                vec![
                                    match &r.remote_name {
                                        Some(n) => format!("{} (in S3 as @{n})", r.snapshot),
                                        None => r.snapshot.clone(),
                                    },
                                    match (r.local, &r.bookmark) {
                                        (true, _) => "yes".into(),
                                        (false, Some(b)) => format!("#{b}"),
                                        (false, None) => "no".into(),
                                    },
                                    r.remote.as_str().into(),
                                    r.record
                                        .as_ref()
                                        .map(|x| match x.send.raw() {
                                            true => format!("{} raw", x.kind.as_str()),
                                            false => x.kind.as_str().to_string(),
                                        })
                                        .unwrap_or_default(),
                                    r.record.as_ref().map(|x| human_bytes(x.bytes)).unwrap_or_default(),
                                    match &r.health {
                                        Some(crate::catalog::Health::Broken { missing }) => format!("no: {missing}"),
                                        Some(_) => "yes".into(),
                                        None => "".into(),
                                    },
                                ]
                            })
                            .collect(),
                    );
                    t.push_str(&format!(
                        "{} local, {} committed ({} restorable, {} broken), {} local only, {} remote only, \
                         {} uncommitted uploads, {} foreign objects\n",
                        summary.local,
                        summary.backups,
                        summary.restorable,
                        summary.broken,
                        summary.local_only,
                        summary.remote_only,
                        summary.uncommitted,
                        summary.foreign
                    ));
                    t.push_str(&retention::usage_line(records, rules));
                    t
                }
                _ => {
                    let mut sum = summary.to_json(ctx);
                    retention::add_usage(&mut sum, records, rules);
                    lines(rows.iter().map(|r| r.to_json(ctx)).chain(std::iter::once(sum)))
                }
            })
        }
    };
    text.map(|t| (t, None))
}

/// `--endpoint`, `--region`, `--profile` (and an addressing flag given to us) as the
/// printed commands must repeat them; what came from the environment is inherited.
fn connection_flags(s: &Settings, path_style_flag: Option<bool>) -> Vec<String> {
    let mut out = Vec::new();
    for (flag, setting) in [("--endpoint", &s.endpoint), ("--region", &s.region), ("--profile", &s.profile)] {
        if let (Some(v), true) = (&setting.value, setting.source.must_repeat()) {
            out.extend([flag.to_string(), v.clone()]);
        }
    }
    match path_style_flag {
        Some(true) => out.push("--path-style".into()),
        Some(false) => out.push("--virtual-host".into()),
        None => {}
    }
    out
}

/// The backup plan for the request, with the lock the policy asks for. Pure.
fn backup_steps(
    ctx: &Context,
    settings: &Settings,
    req: &backup::Request,
    local: &local::Local,
    catalog: &Catalog,
    rules: &Rules,
) -> Result<Vec<backup::Step>, Failure> {
    let mut req = req.clone();
    req.lock = rules.effective.policy.lock.map(|l| backup::LockUntil {
        mode: l.mode.as_str(),
        until: rules.now.saturating_add(i64::try_from(l.days).unwrap_or(i64::MAX).saturating_mul(86_400)),
    });
    let health = catalog.health();
    backup::plan(
        ctx,
        &settings.compressor,
        settings.snapshot_prefix(),
        &local.source(),
        &catalog.records,
        &health,
        &req,
    )
}

/// Said before the upload, not refused: a backup is never skipped for space. The
/// estimate is of the uncompressed stream, so this errs on the side of warning.
fn quota_warning(dataset: &str, steps: &[backup::Step], catalog: &Catalog, rules: &Rules) -> Option<String> {
    let quota = rules.policy.quota?;
    let stored: u64 = catalog.records.iter().map(|r| r.bytes).sum();
    let coming: u64 = steps
        .iter()
        .filter_map(|s| match s {
            backup::Step::Send(s) => s.bytes_estimate,
            _ => None,
        })
        .sum();
    (stored.saturating_add(coming) > quota).then(|| {
        format!(
            "{dataset}: {} stored and up to {} to send (zfs send's estimate, before compression) exceed its quota of \
             {}; zsnap-prune will have to make room",
            human_bytes(stored),
            human_bytes(coming),
            human_bytes(quota)
        )
    })
}

fn config_output(s: &Settings, f: Format) -> String {
    let v = |x: &config::Setting| x.value.clone().unwrap_or_default();
    match f {
        Format::Sh => {
            // Always single-quoted: scripts eval this.
            let q = |x: &str| format!("'{}'", x.replace('\'', "'\\''"));
            let mut out = String::new();
            for (name, value) in [
                ("ZSNAP_DATASET", v(&s.dataset)),
                ("ZSNAP_BUCKET", v(&s.bucket)),
                ("ZSNAP_S3_PREFIX", s.s3_prefix().to_string()),
                ("ZSNAP_SNAPSHOT_PREFIX", s.snapshot_prefix().to_string()),
                ("ZSNAP_COMPRESSOR", s.compressor.spec()),
                ("ZSNAP_S3_URL", s.s3_url().unwrap_or_default()),
            ] {
                out.push_str(&format!("{name}={}\n", q(&value)));
            }
            if let Some(e) = &s.endpoint.value {
                out.push_str(&format!("ZSNAP_S3_ENDPOINT={}\n", q(e)));
            }
            out
        }
        Format::Json => lines(std::iter::once(json!({
            "dataset": s.dataset.value,
            "bucket": s.bucket.value,
            "s3_prefix": s.s3_prefix(),
            "snapshot_prefix": s.snapshot_prefix(),
            "compressor": s.compressor.spec(),
            "compressor_recorded": s.compressor.recorded(),
            "send_options": s.send_options.letters(),
            "s3_url": s.s3_url(),
            "endpoint": s.endpoint.value,
            "region": s.region.value,
            "profile": s.profile.value,
            "config_file": s.config_file,
            "sources": {
                "dataset": s.dataset.source.to_string(),
                "bucket": s.bucket.source.to_string(),
                "s3_prefix": s.s3_prefix.source.to_string(),
                "snapshot_prefix": s.snapshot_prefix.source.to_string(),
                "compressor": s.compressor_setting.source.to_string(),
                "send_options": s.send_options_setting.source.to_string(),
                "endpoint": s.endpoint.source.to_string(),
                "region": s.region.source.to_string(),
                "profile": s.profile.source.to_string(),
            },
        }))),
        Format::Table => table(
            &["SETTING", "VALUE", "FROM"],
            [
                ("dataset", v(&s.dataset), &s.dataset.source),
                ("bucket", v(&s.bucket), &s.bucket.source),
                ("s3-prefix", s.s3_prefix().to_string(), &s.s3_prefix.source),
                ("snapshot-prefix", s.snapshot_prefix().to_string(), &s.snapshot_prefix.source),
                ("compressor", s.compressor.spec(), &s.compressor_setting.source),
                ("endpoint", v(&s.endpoint), &s.endpoint.source),
                ("region", v(&s.region), &s.region.source),
                ("profile", v(&s.profile), &s.profile.source),
            ]
            .into_iter()
            .map(|(k, val, src)| vec![k.to_string(), val, src.to_string()])
            .collect(),
        ),
    }
}

fn str_of(v: &Value) -> String {
    v.as_str().map(str::to_string).unwrap_or_default()
}

fn lines(values: impl Iterator<Item = Value>) -> String {
    let mut s = String::new();
    for v in values {
        s.push_str(&v.to_string());
        s.push('\n');
    }
    s
}

fn commands<'a>(cmds: impl Iterator<Item = &'a str>) -> String {
    let mut s = String::new();
    for c in cmds {
        s.push_str(c);
        s.push('\n');
    }
    s
}

/// Columns padded to their widest cell; the last column is not padded.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let render = |cells: Vec<String>| {
        let n = cells.len();
        let mut line = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                line.push_str(&c);
            } else {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        line.trim_end().to_string() + "\n"
    };
    let mut out = render(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&render(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(args: &[&str]) -> Args {
        crate::commands::parse_test::ok(parse, "zsnap-plan", args)
    }

    fn parse_err(args: &[&str]) -> Failure {
        crate::commands::parse_test::err(parse, "zsnap-plan", args)
    }

    #[test]
    fn commands_and_options() {
        let a = parse_ok(&["-d", "tank/data", "--bucket", "b", "backup", "--full", "--snapshot", "s1"]);
        assert_eq!(
            a.command,
            Command::Backup(backup::Request { full: true, snapshot: Some("s1".into()), ..Default::default() })
        );
        assert_eq!(a.flags.dataset.as_deref(), Some("tank/data"));
        let a = parse_ok(&["restore", "3", "--target", "tank/r", "--force", "--endpoint", "http://h:1"]);
        assert_eq!(
            a.command,
            Command::Restore { selector: restore::Selector::Number(3), target: Some("tank/r".into()), force: true }
        );
        assert_eq!(a.flags.endpoint.as_deref(), Some("http://h:1"));
        let a = parse_ok(&["--format", "sh", "save", "latest", "/tmp/f"]);
        assert_eq!(a.format, Format::Sh);
        assert_eq!(a.command, Command::Save { selector: restore::Selector::Latest, file: "/tmp/f".into() });
    }

    #[test]
    fn retention_commands() {
        assert_eq!(parse_ok(&["prune", "--now", "1795392000"]).now, Some(1_795_392_000));
        assert_eq!(parse_ok(&["prune"]).command, Command::Prune);
        assert_eq!(parse_ok(&["policy"]).command, Command::Policy);
        assert_eq!(parse_ok(&["snapshot", "weekly"]).command, Command::Snapshot(Some(Period::Weekly)));
        assert_eq!(parse_ok(&["--format", "sh", "rotate"]).command, Command::Snapshot(None));
        for (args, needle) in [
            (&["snapshot"][..], "usage: zsnap-plan [OPTIONS] snapshot hourly|daily"),
            (&["snapshot", "fortnightly"][..], "'fortnightly' is not hourly, daily"),
            (&["list", "--now", "5"][..], "--now only applies to backup, prune, snapshot and rotate"),
            (&["prune", "--now", "soon"][..], "--now: 'soon' is not a number"),
            (&["--format", "sh", "policy"][..], "--format sh has no commands"),
            (&["prune", "extra"][..], "usage: zsnap-plan [OPTIONS] prune"),
        ] {
            let e = parse_err(args);
            assert_eq!(e.code, ExitCode::Usage, "{args:?}");
            assert!(e.message.contains(needle), "{args:?}: {}", e.message);
        }
    }

    #[test]
    fn usage_errors_name_the_problem() {
        for (args, needle) in [
            (&[][..], "missing command"),
            (&["frobnicate"][..], "unknown command 'frobnicate'"),
            (&["list", "--full"][..], "--full only applies to backup"),
            (&["backup", "--force"][..], "--force only applies to restore"),
            (&["restore"][..], "usage: zsnap-plan [OPTIONS] restore"),
            (&["save", "1"][..], "save SNAPSHOT|latest|N FILE"),
            (&["--format", "xml", "list"][..], "--format: 'xml'"),
            (&["--format", "sh", "status"][..], "--format sh has no commands"),
            (&["--bogus", "list"][..], "--bogus"),
            (&["backup", "--snapshot", "a/b"][..], "--snapshot"),
            (&["restore", "x", "--target", "tank//x"][..], "--target"),
        ] {
            let e = parse_err(args);
            assert_eq!(e.code, ExitCode::Usage, "{args:?}");
            assert!(e.message.contains(needle), "{args:?}: {}", e.message);
        }
    }

    #[test]
    fn config_as_shell() {
        let flags = config::Flags {
            dataset: Some("tank/data".into()),
            bucket: Some("bkt".into()),
            s3_prefix: Some("it's".into()),
            ..Default::default()
        };
        let s = config::resolve(&flags, &|_| None, None).unwrap();
        let out = config_output(&s, Format::Sh);
        assert_eq!(
            out,
            "ZSNAP_DATASET='tank/data'\nZSNAP_BUCKET='bkt'\nZSNAP_S3_PREFIX='it'\\''s/'\nZSNAP_SNAPSHOT_PREFIX=''\n\
             ZSNAP_COMPRESSOR='zstd'\nZSNAP_S3_URL='s3://bkt/it'\\''s/'\n"
        );
        let j: Value = serde_json::from_str(config_output(&s, Format::Json).trim()).unwrap();
        assert_eq!(j["sources"]["bucket"], "flag --bucket");
        assert_eq!(j["sources"]["compressor"], "default");
    }

    #[test]
    fn connection_flags_repeat_flags_and_file_not_env() {
        let flags = config::Flags { region: Some("eu-1".into()), ..Default::default() };
        let env = |k: &str| (k == "ZSNAP_S3_ENDPOINT").then(|| "http://env:1".to_string());
        let file = config::ConfigFile::parse("f.conf", "[main]\nPROFILE=backup\n").unwrap();
        let s = config::resolve(&flags, &env, Some(&file)).unwrap();
        assert_eq!(
            connection_flags(&s, Some(false)),
            vec!["--region", "eu-1", "--profile", "backup", "--virtual-host"]
        );
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "LONGER"], vec![vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\n");
    }
}
