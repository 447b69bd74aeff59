//! What to send. Base = the newest local snapshot or bookmark (older than the target) that
//! S3 holds with a restorable chain, matched by guid (zfs3backup objects: by name), and
//! whose send options an incremental may build on. Every later matching snapshot is sent
//! on its own, as an incremental from the one before it (zfs3backup style), so each can
//! later be restored or pruned alone. No base, or `--full`: one full of the target; older
//! snapshots are not sent. Encrypted datasets are sent raw (`-w`) unless the caller said
//! otherwise; each sent snapshot is bookmarked where zfs has bookmarks, so the chain
//! survives the snapshot's local destruction.

use super::calls::{S3putExtendLock, S3putUpload};
use super::{join, Context};
use crate::catalog::key::{self, KeyFields};
use crate::catalog::{BackupRecord, Health, Kind};
use crate::cli::{ExitCode, Failure};
use crate::config::Compressor;
use crate::zfs::send::SendOptions;
use crate::zfs::snapshots::{bookmark_argv, Bookmark, Snapshot};
use serde_json::{json, Value};
use std::collections::HashMap;

/// What the user asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub full: bool,
    /// Back up to this snapshot (name after `@`) instead of the newest.
    pub snapshot: Option<String>,
    /// Object Lock for the new objects; the chain they extend is locked as long.
    pub lock: Option<LockUntil>,
    /// `--decrypt-send`: send an encrypted dataset without `-w`.
    pub decrypt_send: bool,
    /// `--replica` / `REPLICA`: each send also feeds these replicas' `zfs recv`
    /// (`[USER@]HOST:DATASET` or a local dataset), through `zsync-ssh --tee`.
    pub replicas: Vec<String>,
    /// zsync-ssh options every replica's tee gets (`-F FILE` for REPLICA_SSH_CONFIG).
    pub replica_args: Vec<String>,
}

/// Lock new backups in `mode` until `until` (Unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockUntil {
    pub mode: &'static str,
    pub until: i64,
}

/// What the local side holds and how it sends: everything the plan needs besides S3.
#[derive(Clone, Copy, Debug, Default)]
pub struct Source<'a> {
    /// Snapshots matching the prefix, ordered by createtxg.
    pub snapshots: &'a [Snapshot],
    /// The dataset's bookmarks (any name), ordered by createtxg.
    pub bookmarks: &'a [Bookmark],
    /// Options every new stream is made with (raw already added for an encrypted dataset).
    pub options: SendOptions,
    /// Bookmark each snapshot after it is committed (zfs has bookmarks).
    pub bookmark_sent: bool,
    /// `zfs send -nP` sizes by (from guid, 0 for a full; to guid).
    pub estimates: Option<&'a HashMap<(u64, u64), u64>>,
}

/// The options new streams of a dataset are made with: the user's, plus `-w` when the
/// dataset is encrypted, unless `decrypt` (`--decrypt-send`) says to send it decrypted.
pub fn send_options(user: SendOptions, encrypted: bool, decrypt: bool) -> Result<SendOptions, String> {
    match (decrypt, user.raw()) {
        (true, true) => Err("--decrypt-send contradicts the send option -w (--raw)".into()),
        (true, false) => Ok(user),
        (false, _) if encrypted => Ok(user.with(SendOptions::RAW)),
        (false, _) => Ok(user),
    }
}

/// [`send_options`] for `dataset` as `listing` shows it, checked against what the local
/// `features` accept: a bad combination or an option this zfs lacks is a usage error
/// before anything is sent.
pub fn checked_send_options(
    user: SendOptions,
    dataset: &str,
    listing: &crate::zfs::snapshots::Listing,
    decrypt: bool,
    features: &crate::zfs::features::Features,
) -> Result<SendOptions, Failure> {
    let options = send_options(user, listing.encrypted(), decrypt).map_err(Failure::usage)?;
    options.check(features).map_err(|e| Failure::usage(format!("{dataset}: {e}")))?;
    Ok(options)
}

/// Where an incremental starts: a snapshot, or a bookmark of one whose snapshot is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub name: String,
    pub guid: u64,
    pub bookmark: bool,
}

impl Origin {
    fn of(s: &Snapshot) -> Origin {
        Origin { name: s.name.clone(), guid: s.guid, bookmark: false }
    }

    /// `DS@NAME` or `DS#NAME`, as zfs send -i takes it.
    fn full_name(&self, dataset: &str) -> String {
        format!("{dataset}{}{}", if self.bookmark { '#' } else { '@' }, self.name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Send {
    pub snapshot: Snapshot,
    pub kind: Kind,
    /// Where the incremental starts (incrementals).
    pub from: Option<Origin>,
    /// The `zfs send` options (raw for an encrypted dataset).
    pub options: SendOptions,
    /// `zfs send` as run, and `zfs send -nP` with the same arguments.
    pub zfs_send: Vec<String>,
    /// Recorded compressor (`z=`).
    pub compressor: String,
    /// Fingerprints of the recipients it is encrypted to (`enc=`; empty: not encrypted).
    pub encrypted_to: Vec<String>,
    /// Replicas that receive the same stream (`zsync-ssh --tee`), as given.
    pub replicas: Vec<String>,
    /// Key relative to the bucket.
    pub key: String,
    pub url: String,
    /// What the stream is expected to weigh: `zfs send -nP`'s figure when there is one
    /// (`estimated`), else a guess (full: logical referenced; incremental: from
    /// used/referenced).
    pub bytes_estimate: Option<u64>,
    pub estimated: bool,
    pub command: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A snapshot not sent: already in S3 (`url` of its object), or older than the base.
    Skip {
        snapshot: Snapshot,
        url: Option<String>,
        reason: String,
    },
    Send(Box<Send>),
    /// Extend the locks of objects a new incremental depends on, so that no ancestor of a
    /// locked backup can be deleted before it (run before the sends).
    Lock {
        urls: Vec<String>,
        until: i64,
        command: String,
    },
    /// After a send commits: `zfs bookmark DS@SNAP DS#SNAP`, the base of a later
    /// incremental once the snapshot is destroyed.
    Bookmark {
        snapshot: String,
        command: String,
    },
    /// Nothing to do.
    Nothing {
        reason: String,
    },
}

impl Step {
    pub fn to_json(&self, dataset: &str) -> Value {
        match self {
            Step::Skip { snapshot, url, reason } => json!({
                "action": "skip",
                "dataset": dataset,
                "snapshot": snapshot.name,
                "guid": snapshot.guid.to_string(),
                "key": url,
                "reason": reason,
            }),
            Step::Send(s) => json!({
                "action": "send",
                "dataset": dataset,
                "snapshot": s.snapshot.name,
                "guid": s.snapshot.guid.to_string(),
                "kind": s.kind.as_str(),
                "from": s.from.as_ref().map(|f| f.name.clone()),
                "from_guid": s.from.as_ref().map(|f| f.guid.to_string()),
                "from_bookmark": s.from.as_ref().is_some_and(|f| f.bookmark),
                "compressor": s.compressor,
                "send_options": s.options.letters(),
                "raw": s.options.raw(),
                "encrypted_to": s.encrypted_to,
                "replicas": s.replicas,
                "key": s.url,
                "bytes_estimate": s.bytes_estimate,
                "estimate_source": if s.estimated { "zfs send -nP" } else { "guess" },
                "command": s.command,
                "reason": s.reason,
            }),
            Step::Lock { urls, until, command } => json!({
                "action": "lock",
                "dataset": dataset,
                "keys": urls,
                "lock_until": crate::calendar::rfc3339(*until),
                "command": command,
                "reason": "the chain under a locked incremental stays locked at least as long",
            }),
            Step::Bookmark { snapshot, command } => json!({
                "action": "bookmark",
                "dataset": dataset,
                "snapshot": snapshot,
                "command": command,
                "reason": "keeps the chain's base after the snapshot is destroyed",
            }),
            Step::Nothing { reason } => json!({"action": "none", "dataset": dataset, "reason": reason}),
        }
    }
}

/// The best record holding `snap`: a restorable one if any.
fn in_s3<'a>(snap: &Snapshot, records: &'a [BackupRecord], health: &[Health]) -> Option<(&'a BackupRecord, bool)> {
    let mut found: Option<(&BackupRecord, bool)> = None;
    for (r, h) in records.iter().zip(health) {
        if r.holds(snap.guid, &snap.name) {
            let ok = h.is_restorable();
            if found.is_none_or(|(_, was_ok)| ok && !was_ok) {
                found = Some((r, ok));
            }
        }
    }
    found
}

fn where_in_s3(snap: &Snapshot, r: &BackupRecord) -> String {
    if r.legacy {
        "in S3 as a zfs3backup object (matched by name)".into()
    } else if r.snapshot != snap.name {
        format!("in S3 as @{} (same guid)", r.snapshot)
    } else {
        "in S3".into()
    }
}

fn broken_reason(r: &BackupRecord, h: Option<&Health>) -> String {
    match h {
        Some(Health::Broken { missing }) => format!("{} is in S3 but cannot be restored: {missing}", r.describe()),
        _ => String::new(),
    }
}

/// A guess at an incremental stream: what the newer snapshot adds over its parent plus
/// what the parent alone holds (blocks overwritten since), scaled like the snapshot's
/// data is by ZFS compression (streams are uncompressed).
fn inc_estimate(from: &Snapshot, to: &Snapshot) -> u64 {
    let allocated =
        to.referenced.saturating_sub(from.referenced).saturating_add(from.used).min(to.referenced.max(from.used));
    match (to.logical_referenced, to.referenced) {
        (Some(l), r) if r > 0 => u64::try_from(u128::from(allocated) * u128::from(l) / u128::from(r)).unwrap_or(l),
        _ => allocated,
    }
}

/// The restorable record holding a bookmark's snapshot (by guid: zfs3backup objects,
/// which have none, never match a bookmark).
fn mark_in_s3<'a>(b: &Bookmark, records: &'a [BackupRecord], health: &[Health]) -> Option<&'a BackupRecord> {
    records.iter().zip(health).find(|(r, h)| r.guid == Some(b.guid) && h.is_restorable()).map(|(r, _)| r)
}

/// Why an incremental may not extend a chain encrypted to `chain` (fingerprints; empty:
/// not encrypted) when backups are encrypted to `now`: a chain is all plaintext or all
/// encrypted to one set of recipients, so a change starts a new full. Recipients added to
/// ENCRYPT_TO apply from that full; the chain goes on to those of its recipients still named.
pub fn encryption_refused(now: Option<&crate::crypt::Recipients>, chain: &[String]) -> Option<String> {
    match (now, chain) {
        (None, []) => None,
        (None, fps) => Some(format!("encrypted (to {}) and ENCRYPT_TO is not set", fps.join(", "))),
        (Some(_), []) => Some("not encrypted and ENCRYPT_TO is set: encryption starts with a full".into()),
        (Some(r), fps) => {
            let have = r.fingerprints();
            let gone: Vec<&str> = fps.iter().filter(|f| !have.contains(f)).map(String::as_str).collect();
            match gone.is_empty() {
                true => None,
                false => Some(format!("encrypted to {}, which ENCRYPT_TO no longer names", gone.join(", "))),
            }
        }
    }
}

/// What the first incremental builds on.
struct Base {
    origin: Origin,
    createtxg: u64,
    /// Index into the local snapshots when the base is one of them.
    index: Option<usize>,
    record: usize,
}

/// Plan a backup. `src.snapshots` holds the dataset's snapshots that match the prefix,
/// ordered by createtxg; `health` is index for index with `records`.
pub fn plan(
    ctx: &Context,
    compressor: &Compressor,
    snapshot_prefix: &str,
    src: &Source,
    records: &[BackupRecord],
    health: &[Health],
    req: &Request,
) -> Result<Vec<Step>, Failure> {
    let ds = &ctx.dataset;
    let local = src.snapshots;
    if local.is_empty() {
        // Backups send snapshots, they do not take them: say how to take one.
        return Err(Failure::new(
            ExitCode::NotFound,
            format!(
                "no snapshots of {ds} match prefix '{snapshot_prefix}': take one with `zsnap-snapshot --dataset {ds} \
                 daily` (or zfs snapshot {ds}@NAME)"
            ),
        ));
    }
    let target = match &req.snapshot {
        Some(name) => local.iter().position(|s| &s.name == name).ok_or_else(|| {
            Failure::new(
                ExitCode::NotFound,
                format!("snapshot {ds}@{name} does not exist or does not match prefix '{snapshot_prefix}'"),
            )
        })?,
        None => local.len() - 1,
    };
    let remote: Vec<Option<(&BackupRecord, bool)>> =
        local[..=target].iter().map(|s| in_s3(s, records, health)).collect();
    let position = |r: &BackupRecord| records.iter().position(|x| x == r);
    // Every record a base is chosen from comes from `records`, so it has a position.
    let index_of = |r: &BackupRecord| position(r).unwrap_or(0);
    // A base whose stream was made with options an incremental cannot follow (raw vs not,
    // -L vs not) is passed over, and said so.
    let refused = |r: &BackupRecord| {
        src.options.incremental_refused(r.send).or_else(|| encryption_refused(ctx.encrypt_to.as_ref(), &r.encrypted_to))
    };
    let mut passed_over: Option<String> = None;
    let mut base: Option<Base> = None;
    if !req.full {
        for i in (0..=target).rev() {
            let Some((r, true)) = remote[i] else { continue };
            match refused(r) {
                Some(why) => {
                    passed_over.get_or_insert_with(|| format!("@{} is in S3 but {why}", local[i].name));
                }
                None => {
                    let origin = Origin::of(&local[i]);
                    base = Some(Base { origin, createtxg: local[i].createtxg, index: Some(i), record: index_of(r) });
                    break;
                }
            }
        }
        // A bookmark newer than that base (its snapshot destroyed by rotation) is better:
        // the incremental from it is smaller, and without it there may be no base at all.
        let newer = |txg: u64| base.as_ref().is_none_or(|b| txg > b.createtxg);
        let mark = src
            .bookmarks
            .iter()
            .filter(|b| b.createtxg < local[target].createtxg && newer(b.createtxg))
            .filter_map(|b| mark_in_s3(b, records, health).map(|r| (b, r)))
            .filter(|(_, r)| refused(r).is_none())
            .max_by_key(|(b, _)| b.createtxg);
        if let Some((b, r)) = mark {
            let origin = Origin { name: b.name.clone(), guid: b.guid, bookmark: true };
            base = Some(Base { origin, createtxg: b.createtxg, index: None, record: index_of(r) });
        }
    }
    let health_of = |r: &BackupRecord| position(r).and_then(|i| health.get(i));
    // One chain, one set of readers: incrementals go to the recipients of the chain they
    // extend (those ENCRYPT_TO still names), a full to all of ENCRYPT_TO.
    let encrypt = match (&ctx.encrypt_to, &base) {
        (Some(r), Some(b)) => Some(r.only(&records[b.record].encrypted_to)),
        (Some(r), None) => Some(r.clone()),
        (None, _) => None,
    };
    let replicas = (&req.replicas[..], &req.replica_args[..]);
    let sender = Sender { ctx, compressor, src, lock: req.lock, encrypt: encrypt.as_ref(), replicas };

    let mut steps = Vec::new();
    match &base {
        Some(b) => {
            let base_name = match b.origin.bookmark {
                true => format!("bookmark #{}", b.origin.name),
                false => format!("@{}", b.origin.name),
            };
            let mut prev = b.origin.clone();
            for (i, snap) in local[..=target].iter().enumerate() {
                if Some(i) == b.index {
                    if let Some((r, _)) = remote[i] {
                        let role =
                            if i == target { "the newest matching snapshot" } else { "base of the next incremental" };
                        steps.push(skip(ctx, snap, r, format!("{}, restorable; {role}", where_in_s3(snap, r))));
                    }
                } else if snap.createtxg <= b.createtxg {
                    match remote[i] {
                        Some((r, true)) => steps.push(skip(ctx, snap, r, where_in_s3(snap, r))),
                        Some((r, false)) => steps.push(skip(
                            ctx,
                            snap,
                            r,
                            format!("{}; not re-sent, newer {base_name} is restorable", broken_reason(r, health_of(r))),
                        )),
                        None => steps.push(Step::Skip {
                            snapshot: snap.clone(),
                            url: None,
                            reason: format!(
                                "not in S3, and older than {base_name}, the newest in S3: an incremental only goes forward"
                            ),
                        }),
                    }
                } else {
                    let mut reason = if prev == b.origin {
                        match b.origin.bookmark {
                            true => format!(
                                "incremental from bookmark #{} (same guid as its destroyed snapshot), the newest in S3 \
                                 with a restorable chain",
                                prev.name
                            ),
                            false => format!(
                                "incremental from @{}, the newest snapshot in S3 with a restorable chain",
                                prev.name
                            ),
                        }
                    } else {
                        format!("incremental from @{}, sent just before", prev.name)
                    };
                    if let Some((r, false)) = remote[i] {
                        reason.push_str(&format!(" (again: {})", broken_reason(r, health_of(r))));
                    }
                    sender.push(&mut steps, snap, Some(&prev), reason)?;
                    prev = Origin::of(snap);
                }
            }
            if b.index == Some(target) {
                steps.push(Step::Nothing {
                    reason: format!("up to date: @{} is in S3 with a restorable chain", local[target].name),
                });
            }
        }
        None => {
            let mut not_sent = Vec::new();
            for (i, snap) in local[..target].iter().enumerate() {
                match remote[i] {
                    Some((r, ok)) => {
                        let why = if ok { where_in_s3(snap, r) } else { broken_reason(r, health_of(r)) };
                        steps.push(skip(ctx, snap, r, why));
                    }
                    None => not_sent.push(format!("@{}", snap.name)),
                }
            }
            let snap = &local[target];
            let mut reason = if req.full {
                format!("--full: full backup of @{}", snap.name)
            } else if let Some(why) = &passed_over {
                format!("{why}: full backup of @{}", snap.name)
            } else {
                let broken: Vec<String> = (0..=target)
                    .filter_map(|i| remote[i].map(|(r, _)| broken_reason(r, health_of(r))))
                    .filter(|s| !s.is_empty())
                    .collect();
                let mut r = format!("no snapshot of {ds} up to @{} is in S3 with a restorable chain", snap.name);
                if let Some(first) = broken.first() {
                    r.push_str(&format!(" ({first})"));
                }
                r.push_str(&format!(": full backup of @{}", snap.name));
                r
            };
            if !not_sent.is_empty() {
                reason.push_str(&format!("; older snapshots not in S3 are not sent: {}", not_sent.join(", ")));
            }
            sender.push(&mut steps, snap, None, reason)?;
        }
    }
    if let (Some(lock), Some(b)) = (req.lock, &base) {
        let extends = steps.iter().any(|s| matches!(s, Step::Send(s) if s.kind == Kind::Inc));
        if extends {
            let chain = crate::catalog::chain::chain(health, b.record).unwrap_or_default();
            let first_send = steps.iter().position(|s| matches!(s, Step::Send(_))).unwrap_or(steps.len());
            let locks = lock_steps(ctx, chain.iter().map(|&c| ctx.url(&records[c].key)).collect(), lock);
            steps.splice(first_send..first_send, locks);
        }
    }
    Ok(steps)
}

/// How every send of one plan is made: where to, compressed how, from what source, locked
/// how long.
struct Sender<'a> {
    ctx: &'a Context,
    compressor: &'a Compressor,
    src: &'a Source<'a>,
    lock: Option<LockUntil>,
    encrypt: Option<&'a crate::crypt::Recipients>,
    replicas: (&'a [String], &'a [String]),
}

impl Sender<'_> {
    /// A send, and the bookmark that follows it where zfs has bookmarks and none of that
    /// snapshot (or of that name) exists yet.
    fn push(
        &self,
        steps: &mut Vec<Step>,
        snap: &Snapshot,
        from: Option<&Origin>,
        reason: String,
    ) -> Result<(), Failure> {
        steps.push(Step::Send(Box::new(self.send(snap, from, reason)?)));
        let src = self.src;
        let exists = src.bookmarks.iter().any(|b| b.guid == snap.guid || b.name == snap.name);
        if src.bookmark_sent && !exists {
            let command = join(&bookmark_argv(&self.ctx.dataset, &snap.name));
            steps.push(Step::Bookmark { snapshot: snap.name.clone(), command });
        }
        Ok(())
    }
}

/// `s3put --extend-lock` over `urls`, as few commands as fit (see [`super::pack_lines`]).
fn lock_steps(ctx: &Context, urls: Vec<String>, lock: LockUntil) -> Vec<Step> {
    let line = |batch: &[String]| {
        join(&S3putExtendLock { lock, urls: batch.to_vec(), connection: ctx.connection.clone() }.argv())
    };
    super::pack_lines(&urls, &line)
        .into_iter()
        .map(|(urls, command)| Step::Lock { urls, until: lock.until, command })
        .collect()
}

fn skip(ctx: &Context, snap: &Snapshot, r: &BackupRecord, reason: String) -> Step {
    Step::Skip { snapshot: snap.clone(), url: Some(ctx.url(&r.key)), reason }
}

impl Sender<'_> {
    fn send(&self, snap: &Snapshot, from: Option<&Origin>, reason: String) -> Result<Send, Failure> {
        let Sender { ctx, compressor, src, lock, encrypt, replicas } = *self;
        let kind = if from.is_some() { Kind::Inc } else { Kind::Full };
        let fields = KeyFields {
            dataset: ctx.dataset.clone(),
            snapshot: snap.name.clone(),
            kind,
            guid: snap.guid,
            from: from.map(|f| (f.guid, f.name.clone())),
            time: snap.creation,
            compressor: compressor.recorded(),
            send: src.options,
            encrypted_to: encrypt.map(|r| r.fingerprints()).unwrap_or_default(),
        };
        let key = key::encode(&ctx.prefix, &fields)
            .map_err(|e| Failure::usage(format!("cannot name a backup of {}@{}: {e}", ctx.dataset, snap.name)))?;
        let url = ctx.url(&key);
        let zfs_send = zfs_send_argv(&ctx.dataset, src.options, from, &snap.name);
        let estimated = src.estimates.and_then(|m| m.get(&(from.map_or(0, |f| f.guid), snap.guid))).copied();
        // Part sizing needs an upper bound, or s3put runs out of parts mid-stream (exit 73).
        // zfs send -nP says it; without it, an incremental never carries more than the
        // snapshot's data, and a stream carries it uncompressed: the logical size, not
        // `referenced` (which is after ZFS compression, 26x smaller for text). Without a ratio,
        // s3put's default part size is the safe choice.
        let call = S3putUpload {
            url: url.clone(),
            expect_guid: snap.guid,
            // The gate checks the parent too: 0 means the stream must be a full.
            expect_from: from.map_or(0, |f| f.guid),
            // Also implied by the key's send=w; said here so the command shows it.
            expect_raw: src.options.raw(),
            // zfs send's own arguments are quoted inside the --exec string, which bash parses.
            exec: zfs_send.clone(),
            tees: replicas.0.iter().map(|r| tee_argv(&ctx.dataset, snap, from, replicas.1, r)).collect(),
            compress: compressor.s3put_arg(),
            expected_size: estimated.or(snap.logical_referenced.filter(|&l| l > 0)),
            lock,
            encrypt_to: encrypt.map(|r| r.keys().to_vec()).unwrap_or_default(),
            connection: ctx.connection.clone(),
        };
        let bytes_estimate = estimated.or(match (from, local_parent(src, from)) {
            (Some(_), Some(f)) => Some(inc_estimate(f, snap)),
            (Some(_), None) => Some(snap.logical_referenced.unwrap_or(snap.referenced)),
            (None, _) => Some(snap.logical_referenced.unwrap_or(snap.referenced)),
        });
        Ok(Send {
            snapshot: snap.clone(),
            kind,
            from: from.cloned(),
            options: src.options,
            zfs_send,
            compressor: compressor.recorded(),
            encrypted_to: fields.encrypted_to.clone(),
            replicas: replicas.0.to_vec(),
            key,
            url,
            bytes_estimate,
            estimated: estimated.is_some(),
            command: join(&call.argv()),
            reason,
        })
    }
}

/// The local snapshot an origin names (none for a bookmark).
fn local_parent<'a>(src: &Source<'a>, from: Option<&Origin>) -> Option<&'a Snapshot> {
    let f = from.filter(|f| !f.bookmark)?;
    src.snapshots.iter().find(|s| s.guid == f.guid)
}

/// `zsync-ssh --tee SNAP --expect-guid G --expect-from F [ARGS] DS TARGET`: the replica's
/// receive of the stream on its way to s3put. The same stream, so the same encryption:
/// an encrypted dataset's raw send reaches the replica still encrypted.
fn tee_argv(dataset: &str, snap: &Snapshot, from: Option<&Origin>, args: &[String], target: &str) -> Vec<String> {
    let mut v: Vec<String> = vec!["zsync-ssh".into(), "--tee".into(), snap.name.clone()];
    v.extend(["--expect-guid".into(), snap.guid.to_string()]);
    v.extend(["--expect-from".into(), from.map_or(0, |f| f.guid).to_string()]);
    v.extend(args.iter().cloned());
    v.extend([dataset.to_string(), target.to_string()]);
    v
}

/// `zfs send [OPTIONS] [-i @FROM | -i DS#MARK] DS@SNAP`.
pub fn zfs_send_argv(dataset: &str, options: SendOptions, from: Option<&Origin>, snapshot: &str) -> Vec<String> {
    let mut v: Vec<String> = vec!["zfs".into(), "send".into()];
    v.extend(options.args());
    if let Some(f) = from {
        let origin = if f.bookmark { f.full_name(dataset) } else { format!("@{}", f.name) };
        v.extend(["-i".into(), origin]);
    }
    v.push(format!("{dataset}@{snapshot}"));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::chain::{self, tests::legacy, tests::rec};

    fn snap(name: &str, guid: u64, txg: u64) -> Snapshot {
        Snapshot {
            dataset: "tank/data".into(),
            name: name.into(),
            guid,
            createtxg: txg,
            creation: 1000 + txg as i64,
            used: 10,
            referenced: 1000,
            logical_referenced: Some(1500),
            holds: 0,
        }
    }

    fn ctx() -> Context {
        Context { bucket: "bkt".into(), prefix: "p/".into(), dataset: "tank/data".into(), ..Default::default() }
    }

    /// (action, snapshot, kind or "", from or "") per step.
    fn summary(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Skip { snapshot, url, .. } => {
                    format!("skip {}{}", snapshot.name, if url.is_some() { "" } else { " (not in S3)" })
                }
                Step::Send(s) => match &s.from {
                    Some(f) => format!("send {} inc from {}", s.snapshot.name, f.name),
                    None => format!("send {} full", s.snapshot.name),
                },
                Step::Lock { urls, .. } => format!("lock {} objects", urls.len()),
                Step::Bookmark { snapshot, .. } => format!("bookmark {snapshot}"),
                Step::Nothing { .. } => "none".into(),
            })
            .collect()
    }

    fn run(local: &[Snapshot], records: &[BackupRecord], req: Request) -> Result<Vec<Step>, Failure> {
        let health = chain::health(records);
        let src = Source { snapshots: local, ..Source::default() };
        plan(&ctx(), &Compressor::Zstd(None), "", &src, records, &health, &req)
    }

    #[test]
    fn locked_backups_extend_their_chain_first() {
        let local = [snap("s1", 1, 1), snap("s2", 2, 2), snap("s3", 3, 3)];
        let records = [rec("s1", 1, None, 1), rec("s2", 2, Some((1, "s1")), 2)];
        let lock = LockUntil { mode: "GOVERNANCE", until: 1_795_392_000 };
        let req = Request { lock: Some(lock), ..Request::default() };
        let steps = run(&local, &records, req.clone()).unwrap();
        assert_eq!(summary(&steps), vec!["skip s1", "skip s2", "lock 2 objects", "send s3 inc from s2"]);
        let Step::Lock { command, .. } = &steps[2] else { panic!("{steps:?}") };
        assert_eq!(
            command,
            "s3put --extend-lock --lock-mode GOVERNANCE --lock-until 2026-11-23T00:00:00Z \
             s3://bkt/tank/data/@s1/zsnap1,guid=1 s3://bkt/tank/data/@s2/zsnap1,guid=2"
        );
        let Step::Send(s) = &steps[3] else { panic!() };
        assert!(s.command.contains(" --lock-mode GOVERNANCE --lock-until 2026-11-23T00:00:00Z "), "{}", s.command);
        // A full needs no older object: nothing to extend.
        let steps = run(&local, &[], req).unwrap();
        assert_eq!(summary(&steps), vec!["send s3 full"]);
    }

    #[test]
    fn table() {
        let (s1, s2, s3) = (snap("s1", 1, 1), snap("s2", 2, 2), snap("s3", 3, 3));
        let full1 = rec("s1", 1, None, 1);
        let inc2 = rec("s2", 2, Some((1, "s1")), 2);
        let inc3_on_missing = rec("s3", 3, Some((99, "gone")), 3);
        type Case<'a> = (&'a str, Vec<Snapshot>, Vec<BackupRecord>, Request, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            ("first run", vec![s1.clone(), s2.clone()], vec![], Request::default(), vec!["send s2 full"]),
            (
                "up to date",
                vec![s1.clone(), s2.clone()],
                vec![full1.clone(), inc2.clone()],
                Request::default(),
                vec!["skip s1", "skip s2", "none"],
            ),
            (
                "two new snapshots go one by one",
                vec![s1.clone(), s2.clone(), s3.clone()],
                vec![full1.clone()],
                Request::default(),
                vec!["skip s1", "send s2 inc from s1", "send s3 inc from s2"],
            ),
            (
                "renamed snapshot, same guid",
                vec![snap("renamed", 1, 1), s2.clone()],
                vec![full1.clone()],
                Request::default(),
                vec!["skip renamed", "send s2 inc from renamed"],
            ),
            (
                "remote-only snapshot is ignored",
                vec![s1.clone(), s3.clone()],
                vec![full1.clone(), inc2.clone()],
                Request::default(),
                vec!["skip s1", "send s3 inc from s1"],
            ),
            (
                "--full",
                vec![s1.clone(), s2.clone()],
                vec![full1.clone(), inc2.clone()],
                Request { full: true, ..Request::default() },
                vec!["skip s1", "send s2 full"],
            ),
            (
                "--snapshot stops early",
                vec![s1.clone(), s2.clone(), s3.clone()],
                vec![full1.clone()],
                Request { snapshot: Some("s2".into()), ..Request::default() },
                vec!["skip s1", "send s2 inc from s1"],
            ),
            (
                "base with broken chain falls back",
                vec![s1.clone(), s2.clone(), s3.clone()],
                vec![full1.clone(), inc3_on_missing.clone()],
                Request::default(),
                vec!["skip s1", "send s2 inc from s1", "send s3 inc from s2"],
            ),
            (
                "only a broken record: full",
                vec![s3.clone()],
                vec![inc3_on_missing.clone()],
                Request::default(),
                vec!["send s3 full"],
            ),
            (
                "zfs3backup base matched by name",
                vec![snap("d1", 11, 1), snap("d2", 12, 2)],
                vec![legacy("d1", None, 1)],
                Request::default(),
                vec!["skip d1", "send d2 inc from d1"],
            ),
            (
                "local gap older than base",
                vec![s1.clone(), s2.clone(), s3.clone()],
                vec![rec("s2", 2, None, 2)],
                Request::default(),
                vec!["skip s1 (not in S3)", "skip s2", "send s3 inc from s2"],
            ),
        ];
        for (name, local, records, req, want) in cases {
            let steps = run(&local, &records, req).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(summary(&steps), want, "{name}");
        }
    }

    #[test]
    fn reasons_and_commands() {
        let local = [snap("renamed", 1, 1), snap("s2", 2, 2)];
        let steps = run(&local, &[rec("s1", 1, None, 1)], Request::default()).unwrap();
        let Step::Skip { reason, url, .. } = &steps[0] else { panic!() };
        assert!(reason.contains("in S3 as @s1 (same guid)"), "{reason}");
        assert_eq!(url.as_deref(), Some("s3://bkt/tank/data/@s1/zsnap1,guid=1"));
        let Step::Send(s) = &steps[1] else { panic!() };
        assert_eq!(s.key, "p/tank/data/@s2/zsnap1,kind=inc,guid=2,from=1,fromsnap=renamed,time=1002,z=zstd");
        assert_eq!(
            s.command,
            "s3put --zfs-stream --resume --expect-guid 2 --expect-from 1 --exec 'zfs send -i @renamed tank/data@s2' \
             --compress zstd --expected-size 1500 s3://bkt/p/tank/data/@s2/zsnap1,kind=inc,guid=2,from=1,fromsnap=renamed,time=1002,z=zstd"
        );
        let j = steps[1].to_json("tank/data");
        assert_eq!(j["guid"], "2");
        assert_eq!(j["from_guid"], "1");
        assert_eq!(j["kind"], "inc");

        let steps = run(&[snap("s3", 3, 3)], &[rec("s3", 3, Some((99, "gone")), 3)], Request::default()).unwrap();
        let Step::Send(s) = &steps[0] else { panic!() };
        assert!(s.reason.contains("parent @gone (guid 99) of @s3 is not in S3"), "{}", s.reason);
        let steps = run(&[snap("a", 1, 1), snap("b", 2, 2)], &[], Request::default()).unwrap();
        let Step::Send(s) = &steps[0] else { panic!() };
        assert!(s.reason.contains("older snapshots not in S3 are not sent: @a"), "{}", s.reason);
    }

    #[test]
    fn custom_compressor_connection_and_quoting() {
        let mut c = ctx();
        c.connection = vec!["--endpoint".into(), "http://h:1".into(), "--profile".into(), "my prof".into()];
        let comp = Compressor::Custom {
            name: "xz".into(),
            commands: crate::config::CustomCompressor { compress: "xz -T0".into(), decompress: "xz -d".into() },
        };
        let local = [snap("with space", 7, 1)];
        let src = Source { snapshots: &local, ..Source::default() };
        let steps = plan(&c, &comp, "", &src, &[], &[], &Request::default()).unwrap();
        let Step::Send(s) = &steps[0] else { panic!() };
        assert_eq!(
            s.command,
            "s3put --zfs-stream --resume --expect-guid 7 --expect-from 0 --exec 'zfs send '\\''tank/data@with space'\\''' --filter 'xz -T0' \
             --expected-size 1500 --endpoint http://h:1 --profile 'my prof' \
             's3://bkt/p/tank/data/@with space/zsnap1,kind=full,guid=7,time=1001,z=x-xz'"
        );
    }

    #[test]
    fn errors() {
        let e =
            plan(&ctx(), &Compressor::None, "daily-", &Source::default(), &[], &[], &Request::default()).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                ExitCode::NotFound,
                "no snapshots of tank/data match prefix 'daily-': take one with `zsnap-snapshot --dataset tank/data \
                 daily` (or zfs snapshot tank/data@NAME)"
            )
        );
        let e =
            run(&[snap("s1", 1, 1)], &[], Request { snapshot: Some("nope".into()), ..Request::default() }).unwrap_err();
        assert_eq!(e.code, ExitCode::NotFound);
        assert!(e.message.contains("tank/data@nope"), "{}", e.message);
    }

    fn mark(name: &str, guid: u64, txg: u64) -> Bookmark {
        Bookmark { dataset: "tank/data".into(), name: name.into(), guid, createtxg: txg, creation: 1000 + txg as i64 }
    }

    fn run_src(src: Source, records: &[BackupRecord], req: Request) -> Vec<Step> {
        let health = chain::health(records);
        plan(&ctx(), &Compressor::Zstd(None), "", &src, records, &health, &req).unwrap()
    }

    fn sends(steps: &[Step]) -> Vec<&Send> {
        steps.iter().filter_map(|s| if let Step::Send(s) = s { Some(s.as_ref()) } else { None }).collect()
    }

    #[test]
    fn encrypted_datasets_are_sent_raw_unless_told_otherwise() {
        let none = SendOptions::default();
        assert!(send_options(none, true, false).unwrap().raw(), "encrypted: raw, no flag needed");
        assert!(!send_options(none, false, false).unwrap().raw());
        assert!(!send_options(none, true, true).unwrap().raw(), "--decrypt-send");
        assert!(send_options(SendOptions::RAW, true, true).is_err(), "-w with --decrypt-send");
        let local = [snap("s1", 1, 1), snap("s2", 2, 2)];
        let src = Source { snapshots: &local, options: send_options(none, true, false).unwrap(), ..Source::default() };
        let steps = run_src(src, &[], Request::default());
        let s = sends(&steps)[0];
        assert_eq!(s.zfs_send, ["zfs", "send", "-w", "tank/data@s2"]);
        assert!(s.key.ends_with(",z=zstd,send=w"), "{}", s.key);
        assert!(s.command.contains(" --expect-raw --exec 'zfs send -w tank/data@s2' "), "{}", s.command);
        assert_eq!(steps[0].to_json("tank/data")["raw"], true);
    }

    #[test]
    fn an_incremental_follows_only_a_parent_zfs_recv_accepts() {
        let local = [snap("s1", 1, 1), snap("s2", 2, 2)];
        let plain = rec("s1", 1, None, 1);
        let raw = BackupRecord { send: SendOptions::RAW, ..plain.clone() };
        let o = |t: &str| SendOptions::parse(t).unwrap();
        let cases = [
            // (parent's options, new options, expected sends)
            (plain.clone(), o("-c"), "send s2 inc from s1"),
            (plain.clone(), o("-e -p"), "send s2 inc from s1"),
            (raw.clone(), o("-w"), "send s2 inc from s1"),
            (raw.clone(), o("-w -c"), "send s2 inc from s1"),
            (plain.clone(), o("-w"), "send s2 full"),
            (raw.clone(), o(""), "send s2 full"),
            (plain.clone(), o("-L"), "send s2 full"),
        ];
        for (parent, options, want) in cases {
            let src = Source { snapshots: &local, options, ..Source::default() };
            let steps = run_src(src, std::slice::from_ref(&parent), Request::default());
            let got: Vec<String> = summary(&steps).into_iter().filter(|s| s.starts_with("send")).collect();
            assert_eq!(got, [want], "{:?} on {:?}", options.letters(), parent.send.letters());
            if want.ends_with("full") {
                assert!(sends(&steps)[0].reason.contains("@s1 is in S3 but"), "{}", sends(&steps)[0].reason);
            }
        }
    }

    #[test]
    fn incrementals_from_a_bookmark_once_the_snapshot_is_gone() {
        // s1 was backed up and bookmarked, then destroyed by rotation.
        let local = [snap("s2", 2, 2), snap("s3", 3, 3)];
        let marks = [mark("s1", 1, 1)];
        let records = [rec("s1", 1, None, 1)];
        let src = Source { snapshots: &local, bookmarks: &marks, bookmark_sent: true, ..Source::default() };
        let steps = run_src(src, &records, Request::default());
        assert_eq!(
            summary(&steps),
            ["send s2 inc from s1", "bookmark s2", "send s3 inc from s2", "bookmark s3"],
            "{steps:#?}"
        );
        let s = sends(&steps);
        assert_eq!(s[0].zfs_send, ["zfs", "send", "-i", "tank/data#s1", "tank/data@s2"]);
        assert!(s[0].reason.contains("bookmark #s1"), "{}", s[0].reason);
        assert!(s[0].key.contains(",from=1,fromsnap=s1,"), "{}", s[0].key);
        assert_eq!(s[1].zfs_send, ["zfs", "send", "-i", "@s2", "tank/data@s3"]);
        let Step::Bookmark { command, .. } = &steps[1] else { panic!() };
        assert_eq!(command, "zfs bookmark tank/data@s2 'tank/data#s2'");
        // A bookmark newer than the newest snapshot in S3 wins: smaller incremental.
        let local = [snap("s1", 1, 1), snap("s3", 3, 3)];
        let marks = [mark("s1", 1, 1), mark("s2", 2, 2)];
        let records = [rec("s1", 1, None, 1), rec("s2", 2, Some((1, "s1")), 2)];
        let src = Source { snapshots: &local, bookmarks: &marks, bookmark_sent: true, ..Source::default() };
        let steps = run_src(src, &records, Request::default());
        assert_eq!(summary(&steps), ["skip s1", "send s3 inc from s2", "bookmark s3"]);
        // A bookmark not in S3 is no base, nor one whose record is not restorable; and
        // a snapshot that already has a bookmark gets no second one.
        let local = [snap("s3", 3, 3)];
        let marks = [mark("s2", 2, 2), mark("s3", 3, 3)];
        let src = Source { snapshots: &local, bookmarks: &marks, bookmark_sent: true, ..Source::default() };
        let steps = run_src(src, &[rec("s2", 2, Some((9, "gone")), 2)], Request::default());
        assert_eq!(summary(&steps), ["send s3 full"]);
        // --full ignores bookmarks; zfs without bookmarks makes none.
        let local = [snap("s2", 2, 2)];
        let marks = [mark("s1", 1, 1)];
        let src = Source { snapshots: &local, bookmarks: &marks, bookmark_sent: false, ..Source::default() };
        let steps = run_src(src, &[rec("s1", 1, None, 1)], Request { full: true, ..Request::default() });
        assert_eq!(summary(&steps), ["send s2 full"]);
    }

    #[test]
    fn zfs_send_estimates_size_the_parts() {
        let local = [snap("s1", 1, 1), snap("s2", 2, 2)];
        let estimates: HashMap<(u64, u64), u64> = [((1, 2), 777_000)].into();
        let src = Source { snapshots: &local, estimates: Some(&estimates), ..Source::default() };
        let steps = run_src(src, &[rec("s1", 1, None, 1)], Request::default());
        let s = sends(&steps)[0];
        assert_eq!((s.bytes_estimate, s.estimated), (Some(777_000), true));
        assert!(s.command.contains(" --expected-size 777000 "), "{}", s.command);
        assert_eq!(steps[1].to_json("tank/data")["estimate_source"], "zfs send -nP");
        let src = Source { snapshots: &local, ..Source::default() };
        let steps = run_src(src, &[rec("s1", 1, None, 1)], Request::default());
        let s = sends(&steps)[0];
        assert!(!s.estimated && s.command.contains(" --expected-size 1500 "), "{}", s.command);
    }
}
