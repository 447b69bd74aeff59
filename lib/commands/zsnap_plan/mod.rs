//! `zsnap-plan`: decisions printed as data. It reads local snapshots (`zfs get`) and the
//! bucket (one listing), decides with the pure planners in `plan`, and prints JSON lines,
//! the exact shell commands, or a table. It never sends, receives or deletes anything.

mod backup;
mod config;
pub(crate) mod inputs;
mod list;
pub(crate) mod local;
mod policy;
mod prune;
mod render;
mod restore;
mod snapshot;
mod status;

use crate::calendar::Period;
use crate::cli::completions;
use crate::cli::flags::{Flag, Page};
use crate::cli::output::emit;
use crate::cli::s3_flags::{self, S3Args};
use crate::cli::settings_flags;
use crate::cli::{early_exit, ExitCode, Failure, COMMON_FLAGS};
use crate::config::Settings;
use crate::plan;
use inputs::{Inputs, Needs};
use lexopt::prelude::*;
use render::Rendered;

use std::ffi::OsString;

const SETTINGS_FLAGS: &[Flag] = &[
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
        short: None,
        long: "encrypt-to",
        value: Some("RECIPIENT"),
        doc: "backup: encrypt every object in process with age to RECIPIENT (an age1... public key, or a \
              recipients file), repeatable; default $ZSNAP_ENCRYPT_TO, then ENCRYPT_TO (space-separated). \
              Only the public recipient is needed: a backup host cannot read its own backups. A chain is \
              never mixed: turning encryption on or off, or dropping a recipient, starts a new full; a \
              recipient added applies from the next full (--full starts one now), incrementals going to the \
              chain's recipients. Keys record the recipients' fingerprints (enc=age.FP...).",
    },
    Flag {
        short: None,
        long: "identity",
        value: Some("FILE"),
        doc: "restore, save: the age identity file that decrypts encrypted backups (default \
              $AGE_IDENTITY_FILE, then IDENTITY_FILE). Checked before anything is downloaded: without one an \
              encrypted backup is refused with exit 64, with one that opens none of its recipients 81.",
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
        long: "broken",
        value: None,
        doc: "prune: delete only orphans instead of applying the policy: backups that cannot be restored (a \
              link of their chain is gone) once a restorable copy of the same snapshot (the full that healed the \
              chain) or of a newer one exists. Nothing a complete chain needs is deleted, nor \
              an orphan that is the only copy of its data, nor a locked one.",
    },
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
        short: None,
        long: "replica",
        value: Some("[USER@]HOST:DATASET"),
        doc: "backup: each send also feeds this replica's zfs recv (repeatable; default $ZSNAP_REPLICA, then \
              REPLICA, space-separated): one zfs send, piped through `zsync-ssh --tee SNAP --expect-guid G \
              --expect-from F DATASET TARGET` into s3put, so S3 and the replica get the same bytes (raw for an \
              encrypted dataset). S3 commits by s3put's rules; the replica receives only a stream that moves it \
              forward by guid, and one that is behind, diverged or unreachable is refused or fails on its own \
              without stopping the upload. See zsync-ssh(1) --tee.",
    },
    Flag {
        short: None,
        long: "replica-ssh-config",
        value: Some("FILE"),
        doc: "backup: the ssh configuration file (ssh -F) for reaching the replicas (default \
              $ZSNAP_REPLICA_SSH_CONFIG, then REPLICA_SSH_CONFIG, else ssh's own).",
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
    synopsis: "zsnap-plan [OPTIONS] config|policy|backup|restore SELECTOR|list|save SELECTOR FILE|status|prune [--broken]|snapshot TYPE|rotate",
    about: "decide what to back up or restore, and print it as data",
    description: "zsnap-plan compares a dataset's local snapshots (zfs get) with its backups in S3 (one \
ListObjectsV2 pass over PREFIX+DATASET, one ListMultipartUploads, one HEAD per zfs3backup object) and prints \
what to do. It changes nothing: scripts run the commands it prints. Key names are described in docs/FORMAT.md.

config: the resolved settings and where each came from; with --format sh, shell assignments \
(ZSNAP_DATASET, ZSNAP_BUCKET, ZSNAP_S3_PREFIX, ZSNAP_SNAPSHOT_PREFIX, ZSNAP_COMPRESSOR, ZSNAP_S3_URL) to eval, \
and ZSNAP_FS_DATASETS: the datasets of the file's [fs:DATASET] sections, one a line in name order (what the \
scripts' --all runs for; \"fs_datasets\" in JSON).

backup [--full] [--snapshot NAME]: the base is the newest local snapshot (matching the prefix, ordered by \
createtxg) that S3 holds with a restorable chain, matched by guid (zfs3backup objects by name). Every later \
matching snapshot up to the target is sent on its own as an incremental from the one before it. Without a \
base, or with --full, one full stream of the target is sent and older snapshots are not. Lines: \
{\"action\":\"skip\"} for snapshots in S3, {\"action\":\"send\",\"kind\",\"from\",\"from_guid\",\"from_bookmark\",\
\"send_options\",\"raw\",\"key\",\"bytes_estimate\",\"estimate_source\",\"command\"} per object to write, \
{\"action\":\"bookmark\"} after each (where zfs has bookmarks), or {\"action\":\"none\"} when up to date. Each send \
command is s3put --zfs-stream --resume --expect-guid G --expect-from FG (0 for a full) [--expect-raw] --exec 'zfs send \
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
save SELECTOR FILE [--force]: the command that writes one object's decompressed, verified stream to FILE \
(through FILE.part, removed on any failure). An existing FILE is refused (exit 64) unless --force; a missing \
directory or a FILE that is a directory is refused (exit 74) before anything is downloaded. status: local and remote side by side, one line per snapshot (a snapshot S3 holds only as zfs3backup \
objects has \"legacy\":true and \"guid\":null, as in list: they record no guid and are matched by name; the \
local snapshot's guid is \"local_guid\"; \"duplicates\" names the objects that hold one backup twice), then a summary line \
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
backups younger than min_age, objects under Object Lock or legal hold (one GetObjectLockConfiguration; \
on a bucket with Object Lock, one HEAD per object that would be deleted, else none) and objects that cannot be restored are always kept, and so is every object a kept backup's chain \
needs (\"needed by kept @X\"). A quota deletes the oldest backups first but never breaks a chain: when it \
cannot be met, the plan says why and zsnap-plan exits 1. With CLIENT_QUOTA the quota is the lower of QUOTA and what \
the client's other datasets under the prefix leave of CLIENT_QUOTA (one listing of the prefix). With --format sh: s3put --delete commands, up to \
1,000 objects each (one DeleteObjects request; fewer when long keys would pass the 128 KiB command line), \
children before parents. prune --broken: instead of the policy, delete only orphans, \
backups that cannot be restored once a restorable copy of the same snapshot (the full that healed the chain) \
or of a newer one exists; every restorable object is kept with the reason, and so are orphans that are \
the only copy of their data and locked ones.

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
        ("Settings", settings_flags::WHERE),
        ("Dataset settings", SETTINGS_FLAGS),
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
        s3_flags::CA_BUNDLE,
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

/// The commands, for shell completion (`--completions`); a test parses each one.
pub const COMMANDS: &[completions::Command] = &[
    completions::Command { name: "config", doc: "the resolved settings and where each came from", args: &[] },
    completions::Command { name: "policy", doc: "the retention policy in force", args: &[] },
    completions::Command { name: "backup", doc: "what to send to S3", args: &[] },
    completions::Command { name: "restore", doc: "the chain that restores a backup", args: &["latest"] },
    completions::Command { name: "list", doc: "the backups in S3, numbered", args: &[] },
    completions::Command { name: "save", doc: "write one backup's verified stream to FILE", args: &["latest"] },
    completions::Command { name: "status", doc: "local and S3 side by side", args: &[] },
    completions::Command { name: "prune", doc: "keep or delete each backup, and why", args: &[] },
    completions::Command { name: "snapshot", doc: "take a typed snapshot, then rotate", args: completions::PERIODS },
    completions::Command { name: "rotate", doc: "destroy local snapshots the policy no longer keeps", args: &[] },
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Sh,
    Table,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Config,
    Backup(plan::backup::Request),
    Restore {
        selector: plan::restore::Selector,
        target: Option<String>,
        force: bool,
    },
    List,
    Save {
        selector: plan::restore::Selector,
        file: String,
        force: bool,
    },
    Status,
    Policy,
    /// What it deletes: what the policy no longer keeps, or only orphans (`--broken`).
    Prune(plan::prune::Mode),
    /// `snapshot TYPE` (Some) or `rotate` (None).
    Snapshot(Option<Period>),
}

/// What to do, parsed and validated; no I/O yet.
pub struct Args {
    pub command: Command,
    pub format: Format,
    pub now: Option<i64>,
    pub flags: crate::config::Flags,
    pub s3: S3Args,
}

/// Parse the command line. `Ok(Err(text))` means print `text` and exit 0 (help, man).
pub fn parse(argv: impl IntoIterator<Item = OsString>) -> Result<Result<Args, String>, Failure> {
    let mut p = lexopt::Parser::from_iter(argv);
    let mut s3 = S3Args::default();
    let mut flags = crate::config::Flags::default();
    let mut format = Format::Json;
    let (mut full, mut snapshot, mut target, mut force, mut now) = (false, None, None, false, None);
    let mut broken = false;
    let (mut send_options, mut decrypt_send): (Vec<String>, bool) = (Vec::new(), false);
    let mut encrypt_to: Vec<String> = Vec::new();
    let mut replicas: Vec<String> = Vec::new();
    let mut words: Vec<String> = Vec::new();
    while let Some(arg) = p.next()? {
        if completions::asked(&arg) {
            return completions::take(&mut p, &PAGE, COMMANDS, completions::SCRIPTS).map(Err);
        }
        if let Some(text) = early_exit(&arg, &PAGE) {
            return Ok(Err(text));
        }
        if let Some(name) = settings_flags::name_of(&arg) {
            settings_flags::take(name, &mut p, &mut flags)?;
            continue;
        }
        match arg {
            Long("snapshot-prefix") => flags.snapshot_prefix = Some(p.value()?.string()?),
            Long("compressor") => flags.compressor = Some(p.value()?.string()?),
            Long("encrypt-to") => encrypt_to.push(p.value()?.string()?),
            Long("replica") => replicas.push(p.value()?.string()?),
            Long("replica-ssh-config") => flags.replica_ssh_config = Some(p.value()?.string()?),
            Long("identity") => flags.identity = Some(p.value()?.string()?),
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
            Long("broken") => broken = true,
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
    if !encrypt_to.is_empty() {
        flags.encrypt_to = Some(encrypt_to.join(" "));
    }
    if !replicas.is_empty() {
        flags.replica = Some(replicas.join(" "));
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
            Command::Backup(plan::backup::Request {
                full,
                snapshot: snapshot.take(),
                decrypt_send,
                ..Default::default()
            })
        }
        "restore" => {
            arity(1, "restore SNAPSHOT|latest|N [--target DATASET] [--force]")?;
            if let Some(t) = &target {
                crate::catalog::key::validate_dataset(t).map_err(|e| Failure::usage(format!("--target: {e}")))?;
            }
            Command::Restore { selector: plan::restore::Selector::parse(&rest[0])?, target: target.take(), force }
        }
        "list" => {
            arity(0, "list")?;
            Command::List
        }
        "save" => {
            arity(2, "save SNAPSHOT|latest|N FILE")?;
            Command::Save { selector: plan::restore::Selector::parse(&rest[0])?, file: rest[1].clone(), force }
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
            arity(0, "prune [--broken]")?;
            Command::Prune(if broken { plan::prune::Mode::Broken } else { plan::prune::Mode::Policy })
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
        (broken, "--broken", "prune"),
        (snapshot.is_some(), "--snapshot", "backup"),
        (target.is_some(), "--target", "restore"),
        (decrypt_send, "--decrypt-send", "backup"),
        (flags.send_options.is_some(), "--send-option", "backup"),
    ] {
        if given && !is(owner) {
            return Err(Failure::usage(format!("{flag} only applies to {owner}")));
        }
    }
    if force && !matches!(name.as_str(), "restore" | "save") {
        return Err(Failure::usage("--force only applies to restore and save"));
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
        Err(text) => return emit(&text),
    };
    let settings = crate::config::load(&args.flags, &|k| std::env::var(k).ok())?;
    let f = args.format;
    // The one dispatch: each command says what it needs, decides from what was read, and
    // renders; see inputs.rs for the reading.
    let warning = match &args.command {
        Command::Config => {
            // A retention value the scripts would only trip over at prune time (KEEP_DAILY=abc)
            // is refused here, where every script starts: one line naming it and its file.
            crate::config::policy::resolve(None, &settings.retention)?;
            config::render(&settings, f).print()?
        }
        Command::Backup(req) => run(&args, settings, backup::needs(req), |i| backup::decide(i, req), backup::render)?,
        Command::Restore { selector, target, force } => {
            let needs = restore::needs(target.as_deref(), settings.dataset.value.as_deref());
            run(&args, settings, needs, |i| restore::decide(i, selector, *force), |d, i, f| restore::render(d, i, f))?
        }
        Command::Save { selector, file, force } => {
            let state = restore::file_state(file);
            let decide = |i: &Inputs| restore::decide_save(i, selector, file, state, *force);
            run(&args, settings, Needs { identity: true, ..Needs::default() }, decide, restore::render_save)?
        }
        Command::List => run_list(&args, settings)?,
        Command::Status => run_status(&args, settings)?,
        Command::Policy => run(&args, settings, policy::needs(), |i| Ok(i.effective.clone()), policy::render)?,
        Command::Prune(mode) => run(&args, settings, prune::needs(*mode), |i| prune::decide(i, *mode), prune::render)?,
        Command::Snapshot(period) => run(
            &args,
            settings,
            snapshot::needs(),
            |i| snapshot::decide(i, *period),
            |d, i, f| snapshot::render(d, i, f),
        )?,
    };
    match warning {
        Some(w) => Err(Failure::new(ExitCode::Warning, w)),
        None => Ok(()),
    }
}

/// Read what a command needs, decide, render and print (while the inputs a stream of
/// lines borrows from are alive): the shape of every command but config. Returns the
/// warning to exit 1 with.
fn run<D>(
    args: &Args,
    settings: Settings,
    needs: Needs,
    decide: impl FnOnce(&Inputs) -> Result<D, Failure>,
    render: impl for<'a> FnOnce(&'a D, &'a Inputs, Format) -> Rendered<'a>,
) -> Result<Option<String>, Failure> {
    let inputs = inputs::read(args, settings, needs)?;
    let decided = decide(&inputs)?;
    render(&decided, &inputs, args.format).print()
}

/// `status` rows borrow their records from the inputs too: the same three steps.
fn run_status(args: &Args, settings: Settings) -> Result<Option<String>, Failure> {
    let inputs = inputs::read(args, settings, status::needs())?;
    let decided = status::decide(&inputs)?;
    status::render(&decided, &inputs, args.format).print()
}

/// `list` borrows its entries from the inputs, so it cannot go through [`run`]'s generic
/// decision type; the same three steps.
fn run_list(args: &Args, settings: Settings) -> Result<Option<String>, Failure> {
    let inputs = inputs::read(args, settings, list::needs())?;
    let entries = list::decide(&inputs)?;
    list::render(&entries, &inputs, args.format).print()
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
            Command::Backup(plan::backup::Request { full: true, snapshot: Some("s1".into()), ..Default::default() })
        );
        assert_eq!(a.flags.dataset.as_deref(), Some("tank/data"));
        let a = parse_ok(&["restore", "3", "--target", "tank/r", "--force", "--endpoint", "http://h:1"]);
        assert_eq!(
            a.command,
            Command::Restore {
                selector: plan::restore::Selector::Number(3),
                target: Some("tank/r".into()),
                force: true
            }
        );
        assert_eq!(a.flags.endpoint.as_deref(), Some("http://h:1"));
        let a = parse_ok(&["--format", "sh", "save", "latest", "/tmp/f"]);
        assert_eq!(a.format, Format::Sh);
        assert_eq!(
            a.command,
            Command::Save { selector: plan::restore::Selector::Latest, file: "/tmp/f".into(), force: false }
        );
    }

    #[test]
    fn retention_commands() {
        assert_eq!(parse_ok(&["prune", "--now", "1795392000"]).now, Some(1_795_392_000));
        assert_eq!(parse_ok(&["prune"]).command, Command::Prune(plan::prune::Mode::Policy));
        assert_eq!(parse_ok(&["prune", "--broken"]).command, Command::Prune(plan::prune::Mode::Broken));
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

    /// What completion offers is what the parser takes: each command with its first
    /// argument choice, and no command the parser has that completion lacks.
    #[test]
    fn completion_commands_are_the_parsers() {
        for c in COMMANDS {
            let mut args = vec![c.name];
            args.extend(c.args.first());
            if c.name == "save" {
                args.push("/tmp/f");
            }
            if c.name == "restore" && c.args.is_empty() {
                args.push("latest");
            }
            parse_ok(&args);
        }
        let e = parse_err(&["frobnicate"]);
        let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
        let listed = e.message.split(": expected ").nth(1).unwrap_or("").replace(" or ", ", ");
        let mut listed: Vec<&str> = listed.split(", ").collect();
        let mut want = names.clone();
        listed.sort_unstable();
        want.sort_unstable();
        assert_eq!(listed, want, "{}", e.message);
    }

    #[test]
    fn usage_errors_name_the_problem() {
        for (args, needle) in [
            (&[][..], "missing command"),
            (&["frobnicate"][..], "unknown command 'frobnicate'"),
            (&["list", "--full"][..], "--full only applies to backup"),
            (&["list", "--broken"][..], "--broken only applies to prune"),
            (&["backup", "--force"][..], "--force only applies to restore and save"),
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
}
