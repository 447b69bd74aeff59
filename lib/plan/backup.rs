//! What to send. Base = the newest local snapshot (up to the target) that S3 holds with a
//! restorable chain, matched by guid (zfs3backup objects: by name). Every later matching
//! snapshot is sent on its own, as an incremental from the one before it (zfs3backup
//! style), so each can later be restored or pruned alone. No base, or `--full`: one full
//! of the target; older snapshots are not sent.

use super::{join, Context};
use crate::catalog::key::{self, KeyFields};
use crate::catalog::{BackupRecord, Health, Kind};
use crate::cli::{ExitCode, Failure};
use crate::config::{CompressArg, Compressor};
use crate::zfs::snapshots::Snapshot;
use serde_json::{json, Value};

/// What the user asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub full: bool,
    /// Back up to this snapshot (name after `@`) instead of the newest.
    pub snapshot: Option<String>,
    /// Object Lock for the new objects; the chain they extend is locked as long.
    pub lock: Option<LockUntil>,
}

/// Lock new backups in `mode` until `until` (Unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockUntil {
    pub mode: &'static str,
    pub until: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Send {
    pub snapshot: Snapshot,
    pub kind: Kind,
    /// The local parent snapshot (incrementals).
    pub from: Option<Snapshot>,
    /// Recorded compressor (`z=`).
    pub compressor: String,
    /// Key relative to the bucket.
    pub key: String,
    pub url: String,
    /// What the stream is expected to weigh (full: referenced; incremental: a guess from
    /// used/referenced).
    pub bytes_estimate: Option<u64>,
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
                "compressor": s.compressor,
                "key": s.url,
                "bytes_estimate": s.bytes_estimate,
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

/// Plan a backup. `local` holds the dataset's snapshots that match the prefix, ordered by
/// createtxg; `health` is index for index with `records`.
pub fn plan(
    ctx: &Context,
    compressor: &Compressor,
    snapshot_prefix: &str,
    local: &[Snapshot],
    records: &[BackupRecord],
    health: &[Health],
    req: &Request,
) -> Result<Vec<Step>, Failure> {
    let ds = &ctx.dataset;
    if local.is_empty() {
        return Err(Failure::new(ExitCode::NotFound, format!("no snapshots of {ds} match prefix '{snapshot_prefix}'")));
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
    let base = if req.full { None } else { (0..=target).rev().find(|&i| remote[i].is_some_and(|(_, ok)| ok)) };
    let health_of = |r: &BackupRecord| records.iter().position(|x| x == r).and_then(|i| health.get(i));

    let mut steps = Vec::new();
    match base {
        Some(b) => {
            for (i, snap) in local[..=target].iter().enumerate() {
                if i < b {
                    match remote[i] {
                        Some((r, true)) => steps.push(skip(ctx, snap, r, where_in_s3(snap, r))),
                        Some((r, false)) => steps.push(skip(
                            ctx,
                            snap,
                            r,
                            format!("{}; not re-sent, newer @{} is restorable", broken_reason(r, health_of(r)), local[b].name),
                        )),
                        None => steps.push(Step::Skip {
                            snapshot: snap.clone(),
                            url: None,
                            reason: format!(
                                "not in S3, and older than @{}, the newest snapshot in S3: an incremental only goes forward",
                                local[b].name
                            ),
                        }),
                    }
                } else if i == b {
                    if let Some((r, _)) = remote[i] {
                        let role =
                            if b == target { "the newest matching snapshot" } else { "base of the next incremental" };
                        steps.push(skip(ctx, snap, r, format!("{}, restorable; {role}", where_in_s3(snap, r))));
                    }
                } else {
                    let from = &local[i - 1];
                    let mut reason = if i == b + 1 {
                        format!("incremental from @{}, the newest snapshot in S3 with a restorable chain", from.name)
                    } else {
                        format!("incremental from @{}, sent just before", from.name)
                    };
                    if let Some((r, false)) = remote[i] {
                        reason.push_str(&format!(" (again: {})", broken_reason(r, health_of(r))));
                    }
                    steps.push(Step::Send(Box::new(send(ctx, compressor, snap, Some(from), reason, req.lock)?)));
                }
            }
            if b == target {
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
            steps.push(Step::Send(Box::new(send(ctx, compressor, snap, None, reason, req.lock)?)));
        }
    }
    if let (Some(lock), Some(b)) = (req.lock, base) {
        let extends = steps.iter().any(|s| matches!(s, Step::Send(s) if s.kind == Kind::Inc));
        let base_record = remote[b].and_then(|(r, _)| records.iter().position(|x| x == r));
        if let (true, Some(i)) = (extends, base_record) {
            let chain = crate::catalog::chain::chain(health, i).unwrap_or_default();
            let first_send = steps.iter().position(|s| matches!(s, Step::Send(_))).unwrap_or(steps.len());
            let locks = lock_steps(ctx, chain.iter().map(|&c| ctx.url(&records[c].key)).collect(), lock);
            steps.splice(first_send..first_send, locks);
        }
    }
    Ok(steps)
}

/// `s3put --extend-lock` over `urls`, at most [`super::prune::COMMAND_BATCH`] a command.
fn lock_steps(ctx: &Context, urls: Vec<String>, lock: LockUntil) -> Vec<Step> {
    urls.chunks(super::prune::COMMAND_BATCH)
        .map(|batch| {
            let mut words: Vec<String> = vec!["s3put".into(), "--extend-lock".into()];
            words.extend(["--lock-mode".into(), lock.mode.into()]);
            words.extend(["--lock-until".into(), crate::calendar::rfc3339(lock.until)]);
            words.extend(ctx.connection.iter().cloned());
            words.extend(batch.iter().cloned());
            Step::Lock { urls: batch.to_vec(), until: lock.until, command: join(&words) }
        })
        .collect()
}

fn skip(ctx: &Context, snap: &Snapshot, r: &BackupRecord, reason: String) -> Step {
    Step::Skip { snapshot: snap.clone(), url: Some(ctx.url(&r.key)), reason }
}

fn send(
    ctx: &Context,
    compressor: &Compressor,
    snap: &Snapshot,
    from: Option<&Snapshot>,
    reason: String,
    lock: Option<LockUntil>,
) -> Result<Send, Failure> {
    let kind = if from.is_some() { Kind::Inc } else { Kind::Full };
    let fields = KeyFields {
        dataset: ctx.dataset.clone(),
        snapshot: snap.name.clone(),
        kind,
        guid: snap.guid,
        from: from.map(|f| (f.guid, f.name.clone())),
        time: snap.creation,
        compressor: compressor.recorded(),
    };
    let key = key::encode(&ctx.prefix, &fields)
        .map_err(|e| Failure::usage(format!("cannot name a backup of {}@{}: {e}", ctx.dataset, snap.name)))?;
    let url = ctx.url(&key);
    // zfs send's own arguments are quoted inside the --exec string, which bash parses.
    let exec = match from {
        Some(f) => join(&[
            "zfs".into(),
            "send".into(),
            "-i".into(),
            format!("@{}", f.name),
            format!("{}@{}", ctx.dataset, snap.name),
        ]),
        None => join(&["zfs".into(), "send".into(), format!("{}@{}", ctx.dataset, snap.name)]),
    };
    let mut args: Vec<String> =
        vec!["s3put".into(), "--zfs-stream".into(), "--expect-guid".into(), snap.guid.to_string()];
    // The gate checks the parent too: 0 means the stream must be a full.
    args.extend(["--expect-from".into(), from.map_or(0, |f| f.guid).to_string()]);
    args.extend(["--exec".into(), exec]);
    match compressor.s3put_arg() {
        CompressArg::Compress(c) => args.extend(["--compress".into(), c]),
        CompressArg::Filter(cmd) => args.extend(["--filter".into(), cmd]),
    }
    // Part sizing needs an upper bound, or s3put runs out of parts mid-stream (exit 73).
    // An incremental never carries more than the snapshot's data, and a stream carries
    // it uncompressed: the logical size, not `referenced` (which is after ZFS compression,
    // 26x smaller for text). Without a ratio, s3put's default part size is the safe choice.
    if let Some(l) = snap.logical_referenced.filter(|&l| l > 0) {
        args.extend(["--expected-size".into(), l.to_string()]);
    }
    if let Some(l) = lock {
        args.extend(["--lock-mode".into(), l.mode.into(), "--lock-until".into(), crate::calendar::rfc3339(l.until)]);
    }
    args.extend(ctx.connection.iter().cloned());
    args.push(url.clone());
    let bytes_estimate = match from {
        Some(f) => Some(inc_estimate(f, snap)),
        None => Some(snap.logical_referenced.unwrap_or(snap.referenced)),
    };
    Ok(Send {
        snapshot: snap.clone(),
        kind,
        from: from.cloned(),
        compressor: compressor.recorded(),
        key,
        url,
        bytes_estimate,
        command: join(&args),
        reason,
    })
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
                Step::Nothing { .. } => "none".into(),
            })
            .collect()
    }

    fn run(local: &[Snapshot], records: &[BackupRecord], req: Request) -> Result<Vec<Step>, Failure> {
        let health = chain::health(records);
        plan(&ctx(), &Compressor::Zstd(None), "", local, records, &health, &req)
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
                Request { full: true, snapshot: None, lock: None },
                vec!["skip s1", "send s2 full"],
            ),
            (
                "--snapshot stops early",
                vec![s1.clone(), s2.clone(), s3.clone()],
                vec![full1.clone()],
                Request { full: false, snapshot: Some("s2".into()), lock: None },
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
            "s3put --zfs-stream --expect-guid 2 --expect-from 1 --exec 'zfs send -i @renamed tank/data@s2' \
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
        let steps = plan(&c, &comp, "", &local, &[], &[], &Request::default()).unwrap();
        let Step::Send(s) = &steps[0] else { panic!() };
        assert_eq!(
            s.command,
            "s3put --zfs-stream --expect-guid 7 --expect-from 0 --exec 'zfs send '\\''tank/data@with space'\\''' --filter 'xz -T0' \
             --expected-size 1500 --endpoint http://h:1 --profile 'my prof' \
             's3://bkt/p/tank/data/@with space/zsnap1,kind=full,guid=7,time=1001,z=x-xz'"
        );
    }

    #[test]
    fn errors() {
        let e = plan(&ctx(), &Compressor::None, "daily-", &[], &[], &[], &Request::default()).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (ExitCode::NotFound, "no snapshots of tank/data match prefix 'daily-'")
        );
        let e = run(&[snap("s1", 1, 1)], &[], Request { full: false, snapshot: Some("nope".into()), lock: None })
            .unwrap_err();
        assert_eq!(e.code, ExitCode::NotFound);
        assert!(e.message.contains("tank/data@nope"), "{}", e.message);
    }
}
