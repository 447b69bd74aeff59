//! `list` and `status` as data: committed backups numbered as restore and save take them,
//! and local and remote side by side (one row per snapshot, joined by guid; zfs3backup
//! objects by name). Pure.

use super::Context;
use crate::catalog::{BackupRecord, Health, Uncommitted};
use crate::zfs::snapshots::{Bookmark, Snapshot};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

fn broken(h: &Health) -> Option<String> {
    match h {
        Health::Broken { missing } => Some(missing.to_string()),
        Health::Restorable { .. } => None,
    }
}

/// Why a record can or cannot be restored, for people; `root` names the full its chain
/// starts from.
fn health_reason(h: &Health, root: Option<&str>) -> String {
    match h {
        Health::Restorable { depth: 1, .. } => "restorable: a full backup".into(),
        Health::Restorable { depth, .. } => {
            format!("restorable: full @{} and {} incremental(s)", root.unwrap_or("?"), depth - 1)
        }
        Health::Broken { missing } => format!("not restorable: {missing}"),
    }
}

/// The name of the full each restorable record's chain starts from, index for index.
fn root_names<'a>(records: &'a [BackupRecord], health: &[Health]) -> Vec<Option<&'a str>> {
    crate::catalog::chain::roots(health).into_iter().map(|r| r.map(|r| records[r].snapshot.as_str())).collect()
}

/// One `list` entry: a committed record, numbered from 1 in list order, as restore and
/// save take numbers. Everything is borrowed and the reason is worded only when printed:
/// at 100,000 backups a string per entry held at once is ~10 MiB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed<'a> {
    pub n: usize,
    pub record: &'a BackupRecord,
    pub health: &'a Health,
    /// The full its chain starts from, when it is restorable.
    root: Option<&'a str>,
    /// A local bookmark with the record's guid (filled in when the dataset is local).
    pub bookmark: Option<&'a str>,
}

/// A guid as JSON shows it: a string (JSON numbers lose precision past 2^53), or null.
fn guid_text(g: Option<u64>) -> Option<String> {
    g.map(|g| g.to_string())
}

/// A `list` entry's JSON line, serialized straight from borrowed fields: at 100,000 lines,
/// building a `serde_json::Value` map for each was a fifth of the command's CPU.
#[derive(Serialize)]
pub struct ListedLine<'a> {
    n: usize,
    dataset: &'a str,
    snapshot: &'a str,
    guid: Option<String>,
    kind: &'static str,
    from: Option<&'a str>,
    from_guid: Option<String>,
    time: i64,
    bytes: u64,
    compressor: &'a str,
    send_options: String,
    raw: bool,
    /// Who can read it (fingerprints; empty: not encrypted).
    encrypted_to: &'a [String],
    restorable: bool,
    broken: Option<String>,
    legacy: bool,
    bookmark: Option<&'a str>,
    key: String,
    reason: String,
}

impl<'a> Listed<'a> {
    pub fn line(&self, ctx: &Context) -> ListedLine<'a> {
        let r = self.record;
        ListedLine {
            n: self.n,
            dataset: &r.dataset,
            snapshot: &r.snapshot,
            guid: guid_text(r.guid),
            kind: r.kind.as_str(),
            from: r.from_snap.as_deref(),
            from_guid: guid_text(r.from_guid),
            time: r.time,
            bytes: r.bytes,
            compressor: &r.compressor,
            send_options: r.send.letters(),
            raw: r.send.raw(),
            encrypted_to: &r.encrypted_to,
            restorable: self.health.is_restorable(),
            broken: broken(self.health),
            legacy: r.legacy,
            bookmark: self.bookmark,
            key: ctx.url(&r.key),
            reason: self.reason(),
        }
    }

    #[cfg(test)]
    pub fn to_json(&self, ctx: &Context) -> Value {
        serde_json::to_value(self.line(ctx)).expect("a list line serializes")
    }

    /// Why it can or cannot be restored.
    pub fn reason(&self) -> String {
        health_reason(self.health, self.root)
    }

    /// Why it cannot be restored, when it cannot.
    pub fn broken(&self) -> Option<String> {
        broken(self.health)
    }
}

/// Every committed record as a `list` entry, numbered from 1 in list order.
pub fn list<'a>(records: &'a [BackupRecord], health: &'a [Health]) -> Vec<Listed<'a>> {
    records
        .iter()
        .zip(health)
        .zip(root_names(records, health))
        .enumerate()
        .map(|(i, ((record, health), root))| Listed { n: i + 1, record, health, root, bookmark: None })
        .collect()
}

/// Note on each entry the local bookmark that has its guid, if any.
pub fn mark_listed<'a>(entries: &mut [Listed<'a>], bookmarks: &'a [Bookmark]) {
    let name_of = bookmark_names(bookmarks);
    for e in entries {
        e.bookmark = name_of(e.record.guid);
    }
}

/// The name of a bookmark with a given guid, looked up in one hash map.
fn bookmark_names<'a>(bookmarks: &'a [Bookmark]) -> impl Fn(Option<u64>) -> Option<&'a str> + 'a {
    let by_guid: HashMap<u64, &str> = bookmarks.iter().map(|b| (b.guid, b.name.as_str())).collect();
    move |guid| guid.and_then(|g| by_guid.get(&g).copied())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remote {
    Committed,
    Uncommitted,
    Absent,
}

impl Remote {
    pub fn as_str(self) -> &'static str {
        match self {
            Remote::Committed => "committed",
            Remote::Uncommitted => "uncommitted",
            Remote::Absent => "absent",
        }
    }
}

const ONLY_UNFINISHED: &str = "only an unfinished upload (never used; s3put --abort-uploads removes it)";

/// One `status` row. Like [`Listed`], it borrows its names from the listings and words
/// its reason only when printed: at 100,000 backups, owned copies were a third of what
/// status held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row<'a> {
    /// Local name when the snapshot exists locally, else the name in S3.
    pub snapshot: &'a str,
    /// The name in S3 when it differs (renamed since it was sent).
    pub remote_name: Option<&'a str>,
    /// The guid S3 records for the snapshot (a local-only snapshot: its own). `None` when S3
    /// holds it only as zfs3backup objects: they record none and are matched by name, and
    /// `list` says the same.
    pub guid: Option<u64>,
    /// The local snapshot's guid, when it is local.
    pub local_guid: Option<u64>,
    pub local: bool,
    pub remote: Remote,
    /// Best committed record: restorable first, then shortest chain.
    pub record: Option<&'a BackupRecord>,
    /// How many committed objects hold this snapshot.
    pub copies: usize,
    pub health: Option<&'a Health>,
    /// The full the best record's chain starts from, when it is restorable.
    root: Option<&'a str>,
    /// The objects that hold this snapshot from the same parent more than once
    /// (`BackupRecord::same_backup`), in list order; empty when there are none.
    pub duplicates: Vec<&'a BackupRecord>,
    pub uncommitted_key: Option<&'a str>,
    /// A local bookmark with this guid (`DS#NAME`'s NAME): the base of the next
    /// incremental even once the snapshot is destroyed.
    pub bookmark: Option<&'a str>,
    /// Sort key: creation time, then createtxg or list position, then the order made in
    /// (unique, so an unstable sort without a buffer gives the stable order).
    order: (i64, usize, usize),
}

/// A `status` row's JSON line, serialized straight from borrowed fields (as
/// [`ListedLine`]).
#[derive(Serialize)]
pub struct RowLine<'a> {
    snapshot: &'a str,
    remote_name: Option<&'a str>,
    guid: Option<String>,
    local_guid: Option<String>,
    local: bool,
    remote: &'static str,
    bookmark: Option<&'a str>,
    kind: Option<&'static str>,
    raw: Option<bool>,
    send_options: Option<String>,
    encrypted_to: Option<&'a [String]>,
    bytes: Option<u64>,
    copies: usize,
    /// A zfs3backup object: identified by name, no guid recorded.
    legacy: Option<bool>,
    duplicates: Vec<String>,
    restorable: Option<bool>,
    broken: Option<String>,
    key: Option<String>,
    reason: String,
}

impl<'a> Row<'a> {
    pub fn line(&self, ctx: &Context) -> RowLine<'a> {
        let record = self.record;
        RowLine {
            snapshot: self.snapshot,
            remote_name: self.remote_name,
            guid: guid_text(self.guid),
            local_guid: guid_text(self.local_guid),
            local: self.local,
            remote: self.remote.as_str(),
            bookmark: self.bookmark,
            kind: record.map(|r| r.kind.as_str()),
            raw: record.map(|r| r.send.raw()),
            send_options: record.map(|r| r.send.letters()),
            encrypted_to: record.map(|r| r.encrypted_to.as_slice()),
            bytes: record.map(|r| r.bytes),
            copies: self.copies,
            legacy: record.map(|r| r.legacy),
            duplicates: self.duplicates.iter().map(|r| ctx.url(&r.key)).collect(),
            restorable: self.health.map(|h| h.is_restorable()),
            broken: self.health.and_then(broken),
            key: record.map(|r| ctx.url(&r.key)).or_else(|| self.uncommitted_key.map(|k| ctx.url(k))),
            reason: self.reason(),
        }
    }

    #[cfg(test)]
    pub fn to_json(&self, ctx: &Context) -> Value {
        serde_json::to_value(self.line(ctx)).expect("a status line serializes")
    }

    /// Where the snapshot is and whether it restores, with the copies named when one
    /// backup is stored twice.
    pub fn reason(&self) -> String {
        let held = self.health.map(|h| health_reason(h, self.root));
        let mut reason = match (self.local, self.record, held) {
            (true, Some(r), Some(h)) if r.snapshot != self.snapshot => {
                format!("in S3 as @{} (same guid), {h}", r.snapshot)
            }
            (true, Some(_), Some(h)) => format!("in S3, {h}"),
            (false, Some(_), Some(h)) => format!("only in S3 (destroyed or never local), {h}"),
            (true, _, _) if self.uncommitted_key.is_some() => format!("not in S3: {ONLY_UNFINISHED}"),
            (true, _, _) => "not in S3".into(),
            (false, _, _) => ONLY_UNFINISHED.into(),
        };
        if !self.duplicates.is_empty() {
            let named: Vec<String> = self.duplicates.iter().map(|r| format!("{} by {}", r.key, r.writer())).collect();
            reason.push_str(&format!(
                "; stored {} times from the same parent: {}",
                self.duplicates.len(),
                named.join(", ")
            ));
        }
        reason
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub local: usize,
    /// Committed backup objects. (Named so that the word "committed" appears in status
    /// JSON only as a row's `remote` value, which scripts grep for.)
    pub backups: usize,
    pub restorable: usize,
    pub broken: usize,
    pub local_only: usize,
    pub remote_only: usize,
    pub uncommitted: usize,
    pub foreign: usize,
}

impl Summary {
    pub fn to_json(&self, ctx: &Context) -> Value {
        json!({
            "summary": true,
            "dataset": ctx.dataset,
            "local": self.local,
            "backups": self.backups,
            "restorable": self.restorable,
            "broken": self.broken,
            "local_only": self.local_only,
            "remote_only": self.remote_only,
            "uncommitted": self.uncommitted,
            "foreign": self.foreign,
        })
    }
}

/// Note on each row the local bookmark that has its guid, if any.
pub fn mark_bookmarks<'a>(rows: &mut [Row<'a>], bookmarks: &'a [Bookmark]) {
    let name_of = bookmark_names(bookmarks);
    for r in rows {
        r.bookmark = name_of(r.local_guid.or(r.guid));
    }
}

/// Which records hold a snapshot, by lookups built once, so joining n local snapshots with
/// m records costs O((n + m) log m), not O(n·m): at 100,000 backups the scan per snapshot
/// took 43 s. By guid as one sorted array of (guid, index), 16 bytes a record, where a
/// hash map of vectors allocated once per record; zfs3backup records (no guid) by name.
struct Holders<'a> {
    by_guid: Vec<(u64, usize)>,
    /// Records without a guid, by name.
    legacy_by_name: HashMap<&'a str, Vec<usize>>,
    /// Every record's name: built only when an upload without a guid needs it.
    names: HashSet<&'a str>,
}

impl<'a> Holders<'a> {
    fn new(records: &'a [BackupRecord], uncommitted: &[Uncommitted]) -> Self {
        let mut by_guid: Vec<(u64, usize)> = Vec::with_capacity(records.len());
        let mut legacy_by_name: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            match r.guid {
                Some(g) => by_guid.push((g, i)),
                None => legacy_by_name.entry(r.snapshot.as_str()).or_default().push(i),
            }
        }
        by_guid.sort_unstable();
        let names = match uncommitted.iter().any(|u| u.guid.is_none()) {
            true => records.iter().map(|r| r.snapshot.as_str()).collect(),
            false => HashSet::new(),
        };
        Holders { by_guid, legacy_by_name, names }
    }

    /// The records with `guid`, in index order.
    fn with_guid(&self, guid: u64) -> impl Iterator<Item = usize> + '_ {
        let from = self.by_guid.partition_point(|&(g, _)| g < guid);
        self.by_guid[from..].iter().take_while(move |&&(g, _)| g == guid).map(|&(_, i)| i)
    }

    fn legacy_named(&self, name: &str) -> &[usize] {
        self.legacy_by_name.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    /// The records that hold the snapshot (`guid`, `name`) as [`BackupRecord::holds`]
    /// decides, in index order.
    fn holding(&self, guid: u64, name: &str) -> Vec<usize> {
        let mut out: Vec<usize> = self.with_guid(guid).chain(self.legacy_named(name).iter().copied()).collect();
        out.sort_unstable();
        out
    }

    /// The records of the same snapshot as `r`: the same guid, or for a zfs3backup record
    /// the same name among records without a guid. Includes `r`.
    fn same_snapshot(&self, r: &BackupRecord) -> impl Iterator<Item = usize> + '_ {
        let legacy = match r.guid {
            Some(_) => &[][..],
            None => self.legacy_named(&r.snapshot),
        };
        r.guid.into_iter().flat_map(|g| self.with_guid(g)).chain(legacy.iter().copied())
    }

    /// Whether a committed record has the upload's snapshot: by guid where both have one,
    /// else by name.
    fn commits(&self, u: &Uncommitted) -> bool {
        match u.guid {
            Some(g) => self.with_guid(g).next().is_some() || self.legacy_by_name.contains_key(u.snapshot.as_str()),
            None => self.names.contains(u.snapshot.as_str()),
        }
    }
}

/// The first in-progress upload of a local snapshot: by guid, or by name for uploads
/// without one (zfs3backup keys); hash lookups, as [`Holders`].
struct Pending<'a> {
    by_guid: HashMap<u64, usize>,
    by_name: HashMap<&'a str, usize>,
}

impl<'a> Pending<'a> {
    fn new(uncommitted: &'a [Uncommitted]) -> Self {
        let (mut by_guid, mut by_name) = (HashMap::new(), HashMap::new());
        for (u, unc) in uncommitted.iter().enumerate() {
            match unc.guid {
                Some(g) => by_guid.entry(g).or_insert(u),
                None => by_name.entry(unc.snapshot.as_str()).or_insert(u),
            };
        }
        Pending { by_guid, by_name }
    }

    fn first_for(&self, guid: u64, name: &str) -> Option<usize> {
        [self.by_guid.get(&guid), self.by_name.get(name)].into_iter().flatten().copied().min()
    }
}

/// The records among `held` (records of one snapshot) that hold it from the same parent
/// as another of them: one backup stored twice.
fn duplicates_of<'a>(records: &'a [BackupRecord], held: &[usize]) -> Vec<&'a BackupRecord> {
    let twice = |i: usize| held.iter().any(|&j| records[i].same_backup(&records[j]));
    held.iter().copied().filter(|&i| twice(i)).map(|i| &records[i]).collect()
}

/// The guid a row shows: what S3 records, so it agrees with `list`; `None` when only
/// zfs3backup objects (no guid, matched by name) hold it.
fn recorded_guid(records: &[BackupRecord], held: &[usize], local: Option<u64>) -> Option<u64> {
    match held.is_empty() {
        true => local,
        false => held.iter().find_map(|&i| records[i].guid),
    }
}

/// Join local snapshots (all of them, ordered by createtxg) with committed records and
/// in-progress uploads. Rows come oldest first: local snapshots that match the prefix or
/// are in S3, then whatever only S3 holds.
pub fn status<'a>(
    local: &'a [Snapshot],
    snapshot_prefix: &str,
    records: &'a [BackupRecord],
    health: &'a [Health],
    uncommitted: &'a [Uncommitted],
    foreign: usize,
) -> (Vec<Row<'a>>, Summary) {
    let roots = root_names(records, health);
    let holders = Holders::new(records, uncommitted);
    let pending = Pending::new(uncommitted);
    let mut used = vec![false; records.len()];
    let mut used_unc = vec![false; uncommitted.len()];
    let rank = |i: usize| (!health[i].is_restorable(), health[i].depth().unwrap_or(0));
    // At most a row per local snapshot and per record: reserved, not doubled as it grows.
    let mut rows = Vec::with_capacity(local.len() + records.len());
    for s in local {
        let held = holders.holding(s.guid, &s.name);
        // Snapshots outside the prefix are shown only when S3 holds them, so a backup made
        // under another prefix is not mistaken for one whose snapshot is gone.
        if !s.name.starts_with(snapshot_prefix) && held.is_empty() {
            continue;
        }
        for &i in &held {
            used[i] = true;
        }
        let best = held.iter().copied().min_by_key(|&i| rank(i));
        let unc = pending.first_for(s.guid, &s.name);
        if let Some(u) = unc {
            used_unc[u] = true;
        }
        let remote = match (best, unc) {
            (Some(_), _) => Remote::Committed,
            (None, Some(_)) => Remote::Uncommitted,
            (None, None) => Remote::Absent,
        };
        rows.push(Row {
            snapshot: &s.name,
            remote_name: best.map(|i| records[i].snapshot.as_str()).filter(|&n| n != s.name),
            guid: recorded_guid(records, &held, Some(s.guid)),
            local_guid: Some(s.guid),
            local: true,
            remote,
            record: best.map(|i| &records[i]),
            copies: held.len(),
            health: best.map(|i| &health[i]),
            root: best.and_then(|i| roots[i]),
            duplicates: duplicates_of(records, &held),
            uncommitted_key: unc.map(|u| uncommitted[u].key.as_str()),
            bookmark: None,
            order: (s.creation, s.createtxg as usize, rows.len()),
        });
    }
    // Remote-only snapshots: one row per guid (zfs3backup: per name).
    for i in 0..records.len() {
        if used[i] {
            continue;
        }
        let r = &records[i];
        let same: Vec<usize> = holders.same_snapshot(r).filter(|&j| !used[j]).collect();
        for &j in &same {
            used[j] = true;
        }
        let best = same.iter().copied().min_by_key(|&j| rank(j)).unwrap_or(i);
        rows.push(Row {
            snapshot: &records[best].snapshot,
            remote_name: None,
            guid: r.guid,
            local_guid: None,
            local: false,
            remote: Remote::Committed,
            record: Some(&records[best]),
            copies: same.len(),
            health: Some(&health[best]),
            root: roots[best],
            duplicates: duplicates_of(records, &same),
            uncommitted_key: None,
            bookmark: None,
            order: (r.time, i, rows.len()),
        });
    }
    for (u, unc) in uncommitted.iter().enumerate() {
        if used_unc[u] || holders.commits(unc) {
            continue;
        }
        rows.push(Row {
            snapshot: &unc.snapshot,
            remote_name: None,
            guid: unc.guid,
            local_guid: None,
            local: false,
            remote: Remote::Uncommitted,
            record: None,
            copies: 0,
            health: None,
            root: None,
            duplicates: Vec::new(),
            uncommitted_key: Some(&unc.key),
            bookmark: None,
            order: (i64::MAX, u, rows.len()),
        });
    }
    rows.sort_unstable_by_key(|r| r.order);
    let summary = Summary {
        local: rows.iter().filter(|r| r.local).count(),
        backups: records.len(),
        restorable: health.iter().filter(|h| h.is_restorable()).count(),
        broken: health.iter().filter(|h| !h.is_restorable()).count(),
        local_only: rows.iter().filter(|r| r.local && r.remote != Remote::Committed).count(),
        remote_only: rows.iter().filter(|r| !r.local && r.remote == Remote::Committed).count(),
        uncommitted: uncommitted.len(),
        foreign,
    };
    (rows, summary)
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
            creation: txg as i64,
            used: 0,
            referenced: 0,
            logical_referenced: None,
            holds: 0,
        }
    }

    #[test]
    fn hash_lookups_agree_with_holds() {
        // Two copies of guid 1 (renamed once), a zfs3backup record sharing a name with a
        // zsnap one, and one with a name of its own.
        let records = vec![
            rec("a", 1, None, 1),
            rec("a-renamed", 1, None, 2),
            rec("b", 2, Some((1, "a")), 3),
            legacy("b", None, 0),
            legacy("c", None, 0),
        ];
        let h = Holders::new(
            &records,
            &[Uncommitted { snapshot: "u".into(), guid: None, key: "k".into(), initiated: None }],
        );
        let snaps = [(1, "a"), (1, "x"), (2, "b"), (9, "b"), (9, "c"), (9, "a"), (3, "none")];
        for (guid, name) in snaps {
            let brute: Vec<usize> = (0..records.len()).filter(|&i| records[i].holds(guid, name)).collect();
            assert_eq!(h.holding(guid, name), brute, "{guid} {name}");
        }
        assert_eq!(h.same_snapshot(&records[1]).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(
            h.same_snapshot(&records[3]).collect::<Vec<_>>(),
            [3],
            "a zfs3backup record is not the zsnap one of its name"
        );
        let unc =
            |snapshot: &str, guid| Uncommitted { snapshot: snapshot.into(), guid, key: "k".into(), initiated: None };
        for (u, want) in [
            (unc("z", Some(2)), true),
            (unc("c", Some(7)), true),
            (unc("a", Some(7)), false),
            (unc("a", None), true),
            (unc("z", None), false),
        ] {
            let brute = records.iter().any(|r| match (r.guid, u.guid) {
                (Some(a), Some(b)) => a == b,
                _ => r.snapshot == u.snapshot,
            });
            assert_eq!((h.commits(&u), brute), (want, want), "{u:?}");
        }
        let pending = [unc("p", Some(5)), unc("q", None), unc("p2", Some(5))];
        let p = Pending::new(&pending);
        assert_eq!(
            (p.first_for(5, "q"), p.first_for(5, "x"), p.first_for(6, "q"), p.first_for(6, "p")),
            (Some(0), Some(0), Some(1), None)
        );
    }

    #[test]
    fn status_is_linear_in_the_records() {
        // 200,000 remote-only records: the old scan per record would take hours here.
        let records: Vec<BackupRecord> = (0..200_000).map(|g| rec(&format!("s{g}"), g, None, g as i64)).collect();
        let health = chain::health(&records);
        let start = std::time::Instant::now();
        let local = [snap("s7", 7, 1)];
        let (rows, sum) = status(&local, "s", &records, &health, &[], 0);
        assert_eq!((rows.len(), sum.local, sum.remote_only), (200_000, 1, 199_999));
        assert!(start.elapsed() < std::time::Duration::from_secs(20), "took {:?}", start.elapsed());
    }

    #[test]
    fn side_by_side() {
        let records = vec![
            rec("s1", 1, None, 1),
            rec("old-name", 2, Some((1, "s1")), 2),
            rec("gone", 3, Some((2, "old-name")), 3),
            rec("s5", 5, Some((4, "s4")), 5),
            legacy("d0", None, 0),
        ];
        let health = chain::health(&records);
        let local = [snap("s1", 1, 1), snap("s2", 2, 2), snap("s4", 4, 4), snap("s6", 6, 6)];
        let unc = vec![Uncommitted { snapshot: "s6".into(), guid: Some(6), key: "k6".into(), initiated: None }];
        let (rows, sum) = status(&local, "s", &records, &health, &unc, 2);
        let (rows_d, _) = status(&local, "d", &records, &health, &unc, 2);
        assert_eq!(rows_d.iter().filter(|r| r.local).count(), 2, "s1, s2 are in S3 whatever the prefix");
        let got: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {:?}",
                    r.snapshot,
                    if r.local { "local" } else { "-" },
                    r.remote.as_str(),
                    r.health.as_ref().map(|h| h.is_restorable())
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                "d0 - committed Some(true)",
                "s1 local committed Some(true)",
                "s2 local committed Some(true)",
                "gone - committed Some(true)",
                "s4 local absent None",
                "s5 - committed Some(false)",
                "s6 local uncommitted None",
            ]
        );
        assert_eq!(rows[2].remote_name, Some("old-name"));
        assert_eq!(
            sum,
            Summary {
                local: 4,
                backups: 5,
                restorable: 4,
                broken: 1,
                local_only: 2,
                remote_only: 3,
                uncommitted: 1,
                foreign: 2
            }
        );
        let j = rows[5].to_json(&Context { bucket: "b".into(), ..Default::default() });
        assert_eq!(j["broken"], "parent @s4 (guid 4) of @s5 is not in S3");
        assert_eq!(
            j["reason"],
            "only in S3 (destroyed or never local), not restorable: parent @s4 (guid 4) of @s5 is not in S3"
        );
        assert_eq!(rows[2].reason(), "in S3 as @old-name (same guid), restorable: full @s1 and 1 incremental(s)");
    }

    #[test]
    fn zfs3backup_objects_are_legacy_without_a_guid_as_list_says() {
        // zfs3backup stored d1 (full) and d2; zsnap then sent d3 on d2, and zfs3backup sent
        // its own d3 from d2 as well: one backup stored twice.
        let records = vec![
            legacy("d1", None, 1),
            legacy("d2", Some("d1"), 2),
            rec("d3", 3, Some((12, "d2")), 3),
            legacy("d3", Some("d2"), 4),
        ];
        let health = chain::health(&records);
        let local = [snap("d1", 11, 1), snap("d2", 12, 2), snap("d3", 3, 3)];
        let (rows, _) = status(&local, "d", &records, &health, &[], 0);
        let ctx = Context { bucket: "b".into(), ..Default::default() };
        let listed: Vec<Value> = list(&records, &health).iter().map(|e| e.to_json(&ctx)).collect();
        let rows: Vec<Value> = rows.iter().map(|r| r.to_json(&ctx)).collect();
        // (row, legacy, guid as list says it, local guid, duplicates)
        for (row, legacy, guid, local_guid, dups) in
            [(0, true, Value::Null, "11", 0), (1, true, Value::Null, "12", 0), (2, false, json!("3"), "3", 2)]
        {
            let r = &rows[row];
            assert_eq!((r["legacy"].as_bool(), &r["guid"]), (Some(legacy), &guid), "{r}");
            assert_eq!(r["local_guid"], local_guid, "{r}");
            assert_eq!(r["duplicates"].as_array().map(Vec::len), Some(dups), "{r}");
        }
        for (row, entry) in [(0, 0), (1, 1)] {
            assert_eq!(rows[row]["guid"], listed[entry]["guid"], "status and list agree on a zfs3backup object");
            assert_eq!(rows[row]["legacy"], listed[entry]["legacy"]);
        }
        let reason = rows[2]["reason"].as_str().unwrap_or("");
        assert!(
            reason.contains(
                "stored 2 times from the same parent: tank/data/@d3/zsnap1,guid=3 by zsnap, tank/data@d3 by zfs3backup"
            ),
            "{reason}"
        );
    }

    #[test]
    fn list_numbers_from_one() {
        let records = vec![rec("s1", 1, None, 1), rec("s2", 2, Some((1, "s1")), 2)];
        let health = chain::health(&records);
        let ctx = Context { bucket: "b".into(), ..Default::default() };
        let v: Vec<Value> = list(&records, &health).iter().map(|e| e.to_json(&ctx)).collect();
        assert_eq!(v[0]["n"], 1);
        assert_eq!(v[1]["n"], 2);
        assert_eq!(v[1]["guid"], "2");
        assert_eq!(v[1]["from"], "s1");
        assert_eq!(v[1]["restorable"], true);
        assert_eq!(v[1]["reason"], "restorable: full @s1 and 1 incremental(s)");
    }
}
