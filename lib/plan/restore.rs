//! What to receive. The chain (full, then incrementals in order) that reaches the chosen
//! backup, following parents by guid (zfs3backup objects: by name), is refused before
//! anything runs when a link is missing. When the target dataset already holds part of the
//! chain, only the rest is received.

use super::{quote, Context};
use crate::catalog::{BackupRecord, Health, Kind};
use crate::cli::{ExitCode, Failure};
use crate::zfs::snapshots::Snapshot;
use serde_json::{json, Value};

/// Which backup: as `list` numbers them, the newest, or by snapshot name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Number(usize),
    Latest,
    Name(String),
}

impl Selector {
    /// `3`, `latest`, `daily-1`, or `@3` for a snapshot whose name is a number.
    pub fn parse(text: &str) -> Result<Selector, Failure> {
        if text == "latest" {
            return Ok(Selector::Latest);
        }
        if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
            return text
                .parse()
                .map(Selector::Number)
                .map_err(|_| Failure::usage(format!("'{text}' is not a backup number")));
        }
        let name = text.strip_prefix('@').unwrap_or(text);
        crate::catalog::key::validate_snapshot(name).map_err(Failure::usage)?;
        Ok(Selector::Name(name.to_string()))
    }
}

/// The record a selector names (index into `records`). Among several records of one
/// snapshot, the restorable one with the shortest chain.
pub fn select(ctx: &Context, records: &[BackupRecord], health: &[Health], sel: &Selector) -> Result<usize, Failure> {
    let where_ = ctx.url(&format!("{}{}/", ctx.prefix, ctx.dataset));
    let none = || Failure::new(ExitCode::NotFound, format!("no backups of {} in {where_}", ctx.dataset));
    match sel {
        Selector::Number(n) => {
            if records.is_empty() {
                return Err(none());
            }
            if *n == 0 || *n > records.len() {
                return Err(Failure::new(
                    ExitCode::NotFound,
                    format!("no backup number {n} of {}: list shows 1..{}", ctx.dataset, records.len()),
                ));
            }
            Ok(n - 1)
        }
        Selector::Latest => records.len().checked_sub(1).ok_or_else(none),
        Selector::Name(name) => {
            let rank = |i: usize| health[i].depth().unwrap_or(usize::MAX);
            (0..records.len()).filter(|&i| &records[i].snapshot == name).min_by_key(|&i| rank(i)).ok_or_else(|| {
                Failure::new(ExitCode::NotFound, format!("no backup of {}@{name} in {where_}", ctx.dataset))
            })
        }
    }
}

/// The chain to `records[i]`, or the missing link as a failure (exit 66).
pub fn chain_to(ctx: &Context, records: &[BackupRecord], health: &[Health], i: usize) -> Result<Vec<usize>, Failure> {
    match &health[i] {
        Health::Restorable { .. } => crate::catalog::chain::chain(health, i)
            .ok_or_else(|| Failure::new(ExitCode::Internal, format!("chain of {} is inconsistent", records[i].key))),
        Health::Broken { missing } => Err(Failure::new(
            ExitCode::NotFound,
            format!(
                "cannot restore {}@{}: {missing} (looked for it under {})",
                ctx.dataset,
                records[i].snapshot,
                ctx.url(&format!("{}{}/@{}/", ctx.prefix, ctx.dataset, missing.snapshot))
            ),
        )),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recv {
    pub step: usize,
    pub of: usize,
    pub record: BackupRecord,
    pub target: String,
    pub command: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Recv(Box<Recv>),
    Nothing { reason: String },
}

fn guid_json(r: &BackupRecord) -> Value {
    r.guid.map(|g| Value::String(g.to_string())).unwrap_or(Value::Null)
}

impl Step {
    pub fn to_json(&self, ctx: &Context) -> Value {
        match self {
            Step::Recv(r) => json!({
                "action": "recv",
                "step": r.step,
                "of": r.of,
                "dataset": ctx.dataset,
                "snapshot": r.record.snapshot,
                "guid": guid_json(&r.record),
                "kind": r.record.kind.as_str(),
                "key": ctx.url(&r.record.key),
                "compressor": r.record.compressor,
                "raw": r.record.send.raw(),
                "target": r.target,
                "command": r.command,
                "reason": r.reason,
            }),
            Step::Nothing { reason } => json!({"action": "none", "dataset": ctx.dataset, "reason": reason}),
        }
    }

    pub fn command(&self) -> Option<&str> {
        match self {
            Step::Recv(r) => Some(&r.command),
            Step::Nothing { .. } => None,
        }
    }
}

/// What the user asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub selector: Selector,
    pub target: String,
    pub force: bool,
}

/// The records to receive on top of what the target holds: the shortest path back from
/// `chosen` over parent links to a snapshot the target has (by guid; by name for zfs3backup
/// objects), oldest first, with that target snapshot. The snapshot the path starts from
/// need not be in S3 at all (an incremental applies to the target's own copy). `None`
/// when the target holds no ancestor of `chosen` (nor `chosen` itself).
fn rest_after_target<'a>(
    records: &[BackupRecord],
    chosen: usize,
    have: &'a [Snapshot],
) -> Option<(Vec<usize>, &'a Snapshot)> {
    let held = |i: usize| have.iter().find(|t| records[i].holds(t.guid, &t.name));
    let parent_held = |i: usize| {
        let r = &records[i];
        have.iter().find(|t| match (r.kind, r.from_guid, r.from_snap.as_deref()) {
            (Kind::Full, _, _) => false,
            (Kind::Inc, Some(g), _) => g == t.guid,
            (Kind::Inc, None, Some(name)) => name == t.name,
            (Kind::Inc, None, None) => false,
        })
    };
    let path_from = |first: Option<usize>, child_of: &[Option<usize>]| {
        let mut rest = Vec::new();
        let mut cur = first;
        while let Some(c) = cur {
            rest.push(c);
            cur = child_of[c];
        }
        rest
    };
    let parents = crate::catalog::chain::all_parents(records);
    // Breadth first, so the nearest held ancestor (the target's newest link) wins.
    let mut child_of: Vec<Option<usize>> = vec![None; records.len()];
    let mut seen = vec![false; records.len()];
    let mut queue = std::collections::VecDeque::from([chosen]);
    seen[chosen] = true;
    while let Some(i) = queue.pop_front() {
        if let Some(t) = held(i) {
            return Some((path_from(child_of[i], &child_of), t));
        }
        if let Some(t) = parent_held(i) {
            return Some((path_from(Some(i), &child_of), t));
        }
        for &p in &parents[i] {
            if !seen[p] {
                seen[p] = true;
                child_of[p] = Some(i);
                queue.push_back(p);
            }
        }
    }
    None
}

/// Plan a restore. `target_snapshots` is `None` when the target dataset does not exist.
pub fn plan(
    ctx: &Context,
    records: &[BackupRecord],
    health: &[Health],
    req: &Request,
    target_snapshots: Option<&[Snapshot]>,
) -> Result<Vec<Step>, Failure> {
    let chosen = select(ctx, records, health, &req.selector)?;
    let want = &records[chosen];
    let target = &req.target;
    let mut first_reason = None;
    // What the target already holds decides where the chain starts, and a chain whose
    // missing link lies before that point is no obstacle.
    let from_target = target_snapshots.and_then(|have| rest_after_target(records, chosen, have));
    let chain = match &from_target {
        Some((rest, _)) => rest.clone(),
        None => chain_to(ctx, records, health, chosen)?,
    };
    if let Some(have) = target_snapshots {
        match from_target {
            Some((rest, t)) => {
                let newer: Vec<String> =
                    have.iter().filter(|s| s.createtxg > t.createtxg).map(|s| format!("@{}", s.name)).collect();
                if rest.is_empty() {
                    return Ok(vec![Step::Nothing {
                        reason: format!("{target} already has @{} (guid {}): nothing to receive", t.name, t.guid),
                    }]);
                }
                if !newer.is_empty() {
                    return Err(Failure::usage(format!(
                        "{target} has snapshots after @{} that are not in the chain ({}): zfs recv would refuse; \
                         roll back with `zfs rollback -r {target}@{}` or use --target",
                        t.name,
                        newer.join(", "),
                        t.name
                    )));
                }
                first_reason = Some(format!(
                    "{target} already has @{} (guid {}): receiving only the rest of the chain{}",
                    t.name,
                    t.guid,
                    if req.force { "" } else { " (if it changed since, zfs recv refuses: add --force to roll back)" }
                ));
            }
            None if have.is_empty() && req.force => {
                first_reason = Some(format!("{target} exists without snapshots; --force: zfs recv -F overwrites it"));
            }
            None if have.is_empty() => {
                return Err(Failure::usage(format!(
                    "{target} exists and shares no snapshot with the chain of @{}: use --force to overwrite it \
                     (it has no snapshots), or --target NEW",
                    want.snapshot
                )));
            }
            None => {
                return Err(Failure::usage(format!(
                    "{target} exists and shares no snapshot with the chain of @{}: destroy it or restore to \
                     --target NEW",
                    want.snapshot
                )));
            }
        }
    }
    let todo = &chain[..];
    // Every object the chain decrypts is checked before the first is downloaded.
    for &i in todo {
        ctx.identity
            .check(&format!("{} ({})", records[i].describe(), ctx.url(&records[i].key)), &records[i].encrypted_to)?;
    }
    let mut steps = Vec::with_capacity(todo.len());
    for (n, &i) in todo.iter().enumerate() {
        let r = &records[i];
        let get = ctx.s3get(&r.key, &r.compressor, r.stream_guids(), !r.encrypted_to.is_empty()).map_err(|e| {
            Failure::usage(format!("cannot restore {}: object {} was {e}", r.describe(), ctx.url(&r.key)))
        })?;
        let recv =
            if req.force { format!("zfs recv -F {}", quote(target)) } else { format!("zfs recv {}", quote(target)) };
        let mut reason = match (r.kind, n) {
            (Kind::Full, _) if target_snapshots.is_none() => {
                format!("full backup of @{}; creates {target}", r.snapshot)
            }
            (Kind::Full, _) => format!("full backup of @{}", r.snapshot),
            (Kind::Inc, _) => {
                format!("incremental from @{} to @{}", r.from_snap.as_deref().unwrap_or("?"), r.snapshot)
            }
        };
        if n == 0 {
            if let Some(first) = &first_reason {
                reason = format!("{first}; {reason}");
            }
        }
        if i == chosen && todo.len() > 1 {
            reason.push_str("; the snapshot asked for");
        }
        if r.send.raw() && n + 1 == todo.len() {
            reason.push_str(&format!(
                "; raw (encrypted) backup: {target} arrives encrypted and locked, `zfs load-key {target}` \
                 (then zfs mount) opens it"
            ));
        }
        steps.push(Step::Recv(Box::new(Recv {
            step: n + 1,
            of: todo.len(),
            record: r.clone(),
            target: target.clone(),
            command: format!("{get} | {recv}"),
            reason,
        })));
    }
    Ok(steps)
}

/// The one command that writes a backup's decompressed, verified stream to `file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Save {
    pub record: BackupRecord,
    pub file: String,
    pub command: String,
    pub reason: String,
}

impl Save {
    pub fn to_json(&self, ctx: &Context) -> Value {
        json!({
            "action": "save",
            "dataset": ctx.dataset,
            "snapshot": self.record.snapshot,
            "guid": guid_json(&self.record),
            "kind": self.record.kind.as_str(),
            "from": self.record.from_snap,
            "key": ctx.url(&self.record.key),
            "compressor": self.record.compressor,
            "file": self.file,
            "command": self.command,
            "reason": self.reason,
        })
    }
}

/// What is at a save's FILE before anything is downloaded (read by the command layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileState {
    /// Nothing there, and its directory exists.
    Absent,
    /// A file (or anything that is not a directory) is there.
    Exists,
    /// A directory is there: the stream cannot take its name.
    IsDirectory,
    /// Its directory does not exist (or is not a directory).
    NoDirectory,
}

/// Plan `save`: the stream goes to FILE.part and is renamed only when s3get succeeded,
/// so FILE never holds a cut stream; on any failure FILE.part is removed. An existing
/// FILE is replaced only with `force`, and a missing directory is refused before a byte
/// is downloaded (hours of download would otherwise end in a failed rename).
pub fn save(
    ctx: &Context,
    records: &[BackupRecord],
    health: &[Health],
    sel: &Selector,
    file: &str,
    state: FileState,
    force: bool,
) -> Result<Save, Failure> {
    match state {
        FileState::Absent => {}
        FileState::Exists if force => {}
        FileState::Exists => {
            return Err(Failure::usage(format!("save: {file} exists; give --force to overwrite it")));
        }
        FileState::IsDirectory => {
            return Err(Failure::new(ExitCode::LocalIo, format!("save: {file} is a directory; name a file")));
        }
        FileState::NoDirectory => {
            return Err(Failure::new(
                ExitCode::LocalIo,
                format!("save: the directory of {file} does not exist; nothing was downloaded"),
            ));
        }
    }
    let i = select(ctx, records, health, sel)?;
    let r = &records[i];
    ctx.identity.check(&format!("{} ({})", r.describe(), ctx.url(&r.key)), &r.encrypted_to)?;
    let get = ctx
        .s3get(&r.key, &r.compressor, r.stream_guids(), !r.encrypted_to.is_empty())
        .map_err(|e| Failure::usage(format!("cannot save {}: object {} was {e}", r.describe(), ctx.url(&r.key))))?;
    let part = format!("{file}.part");
    // FILE.part never outlives a failure (a full disk stays full otherwise).
    let (p, f) = (quote(&part), quote(file));
    // -T: FILE is the file itself, never a directory to move into (one may appear meanwhile).
    let command = format!("{get} > {p} && mv -fT {p} {f} || {{ rc=$?; rm -f {p}; exit $rc; }}");
    let mut reason = match r.kind {
        Kind::Full => format!("full stream of @{}", r.snapshot),
        Kind::Inc => format!("incremental stream from @{} to @{}", r.from_snap.as_deref().unwrap_or("?"), r.snapshot),
    };
    if let Health::Broken { missing } = &health[i] {
        reason.push_str(&format!("; note: its chain is broken ({missing})"));
    }
    Ok(Save { record: r.clone(), file: file.to_string(), command, reason })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::chain::{self, tests::legacy, tests::rec};

    fn ctx() -> Context {
        Context { bucket: "bkt".into(), prefix: "p/".into(), dataset: "tank/data".into(), ..Default::default() }
    }

    fn snap(name: &str, guid: u64, txg: u64) -> Snapshot {
        Snapshot {
            dataset: "tank/data".into(),
            name: name.into(),
            guid,
            createtxg: txg,
            creation: txg as i64,
            used: 0,
            referenced: 0,
            logical_referenced: None,
            holds: 0,
        }
    }

    fn healthy() -> Vec<BackupRecord> {
        vec![rec("s1", 1, None, 1), rec("s2", 2, Some((1, "s1")), 2), rec("s3", 3, Some((2, "s2")), 3)]
    }

    fn req(sel: &str, force: bool) -> Request {
        Request { selector: Selector::parse(sel).unwrap(), target: "tank/restored".into(), force }
    }

    fn snaps_of(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Recv(r) => format!("{}/{} {}", r.step, r.of, r.record.snapshot),
                Step::Nothing { .. } => "none".into(),
            })
            .collect()
    }

    fn run(records: &[BackupRecord], r: &Request, target: Option<&[Snapshot]>) -> Result<Vec<Step>, Failure> {
        plan(&ctx(), records, &chain::health(records), r, target)
    }

    #[test]
    fn selectors() {
        assert_eq!(Selector::parse("latest").unwrap(), Selector::Latest);
        assert_eq!(Selector::parse("3").unwrap(), Selector::Number(3));
        assert_eq!(Selector::parse("@3").unwrap(), Selector::Name("3".into()));
        assert_eq!(Selector::parse("daily-1").unwrap(), Selector::Name("daily-1".into()));
        assert_eq!(Selector::parse("a/b").unwrap_err().code, ExitCode::Usage);
    }

    #[test]
    fn table() {
        let recs = healthy();
        type Case<'a> = (&'a str, Request, Option<Vec<Snapshot>>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            ("whole chain into a new dataset", req("s3", false), None, vec!["1/3 s1", "2/3 s2", "3/3 s3"]),
            ("by number", req("2", false), None, vec!["1/2 s1", "2/2 s2"]),
            ("latest", req("latest", false), None, vec!["1/3 s1", "2/3 s2", "3/3 s3"]),
            ("target has part of the chain", req("s3", false), Some(vec![snap("s1", 1, 1)]), vec!["1/2 s2", "2/2 s3"]),
            (
                "target has part, renamed",
                req("s3", false),
                Some(vec![snap("s1", 1, 1), snap("x", 2, 2)]),
                vec!["1/1 s3"],
            ),
            ("target already has it", req("s2", false), Some(vec![snap("s1", 1, 1), snap("s2", 2, 2)]), vec!["none"]),
            (
                "target has the newest link",
                req("s3", false),
                Some(vec![snap("s1", 1, 1), snap("s2", 2, 2)]),
                vec!["1/1 s3"],
            ),
            ("empty target with --force", req("s1", true), Some(vec![]), vec!["1/1 s1"]),
        ];
        for (name, r, target, want) in cases {
            let steps = run(&recs, &r, target.as_deref()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(snaps_of(&steps), want, "{name}");
        }
    }

    #[test]
    fn refusals() {
        let recs = vec![rec("s1", 1, None, 1), rec("s3", 3, Some((2, "s2")), 3), rec("s4", 4, Some((3, "s3")), 4)];
        let e = run(&recs, &req("s4", false), None).unwrap_err();
        assert_eq!(e.code, ExitCode::NotFound);
        assert!(e.message.contains("parent @s2 (guid 2) of @s3 is not in S3"), "{}", e.message);
        assert!(e.message.contains("s3://bkt/p/tank/data/@s2/"), "{}", e.message);

        let recs = healthy();
        let cases: Vec<(Request, Option<Vec<Snapshot>>, ExitCode, &str)> = vec![
            (req("s9", false), None, ExitCode::NotFound, "no backup of tank/data@s9 in s3://bkt/p/tank/data/"),
            (req("7", false), None, ExitCode::NotFound, "list shows 1..3"),
            (req("0", false), None, ExitCode::NotFound, "no backup number 0"),
            (req("s3", false), Some(vec![snap("other", 99, 1)]), ExitCode::Usage, "destroy it or restore to --target"),
            (req("s3", true), Some(vec![snap("other", 99, 1)]), ExitCode::Usage, "shares no snapshot"),
            (req("s3", false), Some(vec![]), ExitCode::Usage, "use --force"),
            (
                req("s3", false),
                Some(vec![snap("s1", 1, 1), snap("local-only", 50, 5)]),
                ExitCode::Usage,
                "snapshots after @s1 that are not in the chain (@local-only)",
            ),
        ];
        for (r, target, code, needle) in cases {
            let e = run(&recs, &r, target.as_deref()).unwrap_err();
            assert_eq!(e.code, code, "{}", e.message);
            assert!(e.message.contains(needle), "{}", e.message);
        }
        let e = run(&[], &req("latest", false), None).unwrap_err();
        assert_eq!(e.code, ExitCode::NotFound);
    }

    #[test]
    fn a_gap_before_what_the_target_holds_is_no_obstacle() {
        // s2 is missing from S3, but the target already has s3: only s4 is needed.
        let recs = vec![rec("s1", 1, None, 1), rec("s3", 3, Some((2, "s2")), 3), rec("s4", 4, Some((3, "s3")), 4)];
        let have = vec![snap("s1", 1, 1), snap("s2", 2, 2), snap("s3", 3, 3)];
        let steps = run(&recs, &req("s4", false), Some(&have)).unwrap();
        assert_eq!(snaps_of(&steps), vec!["1/1 s4"]);
        // The target has s2, the object missing from S3: s3 applies to it.
        let steps = run(&recs, &req("s4", false), Some(&have[..2])).unwrap();
        assert_eq!(snaps_of(&steps), vec!["1/2 s3", "2/2 s4"]);
        // With only s1 on the target, the gap is fatal and named.
        let e = run(&recs, &req("s4", false), Some(&have[..1])).unwrap_err();
        assert_eq!(e.code, ExitCode::NotFound);
        assert!(e.message.contains("parent @s2 (guid 2) of @s3"), "{}", e.message);
    }

    #[test]
    fn commands() {
        let recs = healthy();
        let steps = run(&recs, &req("s2", true), None).unwrap();
        assert_eq!(
            steps[1].command().unwrap(),
            "s3get --decompress zstd --zfs-stream --expect-guid 2 --expect-from 1 s3://bkt/tank/data/@s2/zsnap1,guid=2 | zfs recv -F tank/restored"
        );
        let j = steps[1].to_json(&ctx());
        assert_eq!((j["step"].as_u64(), j["of"].as_u64(), j["guid"].as_str()), (Some(2), Some(2), Some("2")));
        // zfs3backup objects: decompressed by their recorded compressor, no guid check.
        let recs = vec![legacy("d1", None, 1), legacy("d2", Some("d1"), 2)];
        let steps = run(&recs, &req("d2", false), None).unwrap();
        assert_eq!(
            steps[1].command().unwrap(),
            "s3get --decompress gzip --zfs-stream s3://bkt/tank/data@d2 | zfs recv tank/restored"
        );
        assert_eq!(steps[1].to_json(&ctx())["guid"], Value::Null);
    }

    #[test]
    fn save_command() {
        let recs = healthy();
        let s =
            save(&ctx(), &recs, &chain::health(&recs), &Selector::Number(2), "/tmp/my file", FileState::Absent, false)
                .unwrap();
        assert_eq!(
            s.command,
            "s3get --decompress zstd --zfs-stream --expect-guid 2 --expect-from 1 s3://bkt/tank/data/@s2/zsnap1,guid=2 \
             > '/tmp/my file.part' && mv -fT '/tmp/my file.part' '/tmp/my file' || { rc=$?; rm -f '/tmp/my file.part'; \
             exit $rc; }"
        );
    }

    #[test]
    fn save_refuses_an_existing_file_without_force_and_a_missing_directory() {
        let recs = healthy();
        let h = chain::health(&recs);
        let sel = Selector::Number(2);
        let e = save(&ctx(), &recs, &h, &sel, "/tmp/f", FileState::Exists, false).unwrap_err();
        assert_eq!(e.code, ExitCode::Usage);
        assert_eq!(e.message, "save: /tmp/f exists; give --force to overwrite it");
        assert!(save(&ctx(), &recs, &h, &sel, "/tmp/f", FileState::Exists, true).is_ok());
        let e = save(&ctx(), &recs, &h, &sel, "/nope/f", FileState::NoDirectory, true).unwrap_err();
        assert_eq!(e.code, ExitCode::LocalIo);
        assert!(e.message.contains("/nope/f") && e.message.contains("does not exist"), "{}", e.message);
        let e = save(&ctx(), &recs, &h, &sel, "/tmp", FileState::IsDirectory, true).unwrap_err();
        assert_eq!(e.code, ExitCode::LocalIo);
    }
}
