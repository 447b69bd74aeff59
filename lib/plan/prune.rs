//! Which backups to delete, chain-aware. Pure: records, their health, a policy, lock states
//! and `now` in; a verdict with its reason for every object out.
//!
//! Invariants: a kept object's whole restore chain is kept (an incremental never loses its
//! parent); the newest backup (the base of the next incremental), everything younger than
//! the minimum age, every locked object and every object that cannot be restored (left for
//! a person to look at) is kept; an object whose lock state is unknown is never deleted
//! (the caller reads it and plans again). A quota deletes the oldest backups first but
//! never breaks a chain to get there: a quota that cannot be met is reported.

use super::{join, Context};
use crate::calendar::{self, Period};
use crate::catalog::{BackupRecord, Health};
use crate::cli::output::human_bytes;
use crate::config::policy::RetentionPolicy;
// The planner judges locks as S3 reports them (a HEAD each, on a bucket with Object Lock),
// by the same rule s3put --delete applies.
use crate::s3::objects::LockState;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// What is known of the objects' locks: the states read (a HEAD each), and whether the
/// bucket can lock at all. On a bucket without Object Lock every object is unlocked, and
/// nothing per object is read or stored (100,000 keys would be 100,000 map entries).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Locks {
    read: HashMap<String, LockState>,
    none_lockable: bool,
}

static UNLOCKED: LockState = LockState { mode: None, retain_until: None, legal_hold: false };

impl Locks {
    /// The bucket has no Object Lock configuration: no object can be locked.
    pub fn none_lockable() -> Locks {
        Locks { read: HashMap::new(), none_lockable: true }
    }

    pub fn get(&self, key: &str) -> Option<&LockState> {
        self.read.get(key).or(self.none_lockable.then_some(&UNLOCKED))
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.none_lockable || self.read.contains_key(key)
    }

    pub fn insert(&mut self, key: String, state: LockState) {
        self.read.insert(key, state);
    }
}

impl Extend<(String, LockState)> for Locks {
    fn extend<I: IntoIterator<Item = (String, LockState)>>(&mut self, states: I) {
        self.read.extend(states);
    }
}

impl FromIterator<(String, LockState)> for Locks {
    fn from_iter<I: IntoIterator<Item = (String, LockState)>>(states: I) -> Locks {
        Locks { read: states.into_iter().collect(), none_lockable: false }
    }
}

/// The quota prune applies to one dataset: its own `quota`, and what the client's quota
/// leaves once its other datasets under the prefix (`others` bytes) are counted.
pub fn budget(policy: &RetentionPolicy, others: u64) -> Option<u64> {
    let share = policy.client_quota.map(|q| q.saturating_sub(others));
    match (policy.quota, share) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub keep: bool,
    /// The rules that keep it (`newest`, `daily 2026-11-30`, `lock`, …); empty when it is
    /// kept only as a parent, or deleted.
    pub rules: Vec<String>,
    /// Kept records whose chain goes through this one (indexes).
    pub needed_by: Vec<usize>,
    /// Shared where many records have the same one ("no rule keeps it …"): at 100,000
    /// backups a copy each was 9 MiB.
    pub reason: Arc<str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prune {
    /// Index for index with the records.
    pub verdicts: Vec<Verdict>,
    /// Records to delete, children before parents: stopping part-way never leaves an
    /// incremental without its parent.
    pub delete_order: Vec<usize>,
    /// Records the plan would delete but whose lock state it was not given; they are kept
    /// in this plan. Read their locks and plan again.
    pub unknown_locks: Vec<usize>,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub quota: Option<u64>,
    /// Why the quota is not met, when it is not.
    pub quota_problem: Option<String>,
    pub mode: Mode,
}

/// One snapshot stored in S3 (maybe as several objects): what the policy selects.
struct Group {
    /// The object that restores it with the shortest chain.
    chosen: usize,
    time: i64,
    rules: Vec<String>,
    /// Rules that a quota may not override (newest, minimum age).
    protected: bool,
    dropped_for_quota: bool,
}

/// Who keeps each record: its own pins, and how many kept children use it as parent.
struct Keep<'a> {
    parent: &'a [Option<usize>],
    selected: Vec<bool>,
    locked: Vec<bool>,
    broken: Vec<bool>,
    unknown: Vec<bool>,
    children: Vec<usize>,
}

impl Keep<'_> {
    fn kept(&self, i: usize) -> bool {
        self.selected[i] || self.locked[i] || self.broken[i] || self.unknown[i] || self.children[i] > 0
    }

    /// `i` just became kept: its ancestors gain a kept child, up to the first already kept.
    fn propagate_up(&mut self, mut i: usize) {
        while let Some(p) = self.parent[i] {
            let was = self.kept(p);
            self.children[p] += 1;
            if was {
                break;
            }
            i = p;
        }
    }

    fn select(&mut self, i: usize) {
        let was = self.kept(i);
        self.selected[i] = true;
        if !was {
            self.propagate_up(i);
        }
    }

    /// Drop the selection of `i`; returns the records no longer kept.
    fn deselect(&mut self, i: usize) -> Vec<usize> {
        self.selected[i] = false;
        if self.kept(i) {
            return Vec::new();
        }
        let mut freed = vec![i];
        let mut c = i;
        while let Some(p) = self.parent[c] {
            self.children[p] -= 1;
            if self.kept(p) {
                break;
            }
            freed.push(p);
            c = p;
        }
        freed
    }
}

/// Plan a prune. `records` in list order (oldest first, parents before children), `health`
/// index for index; `locks` by key, for the objects whose lock state has been read.
pub fn plan(records: &[BackupRecord], health: &[Health], policy: &RetentionPolicy, now: i64, locks: &Locks) -> Prune {
    let n = records.len();
    let parent: Vec<Option<usize>> = health
        .iter()
        .map(|h| match h {
            Health::Restorable { parent, .. } => *parent,
            Health::Broken { .. } => None,
        })
        .collect();
    let (mut groups, group_of) = group_snapshots(records, health);
    select_by_rules(&mut groups, policy, now);
    let mut keep = Keep {
        parent: &parent,
        selected: vec![false; n],
        locked: (0..n).map(|i| locks.get(&records[i].key).is_some_and(|l| l.is_locked_at(now))).collect(),
        broken: health.iter().map(|h| !h.is_restorable()).collect(),
        unknown: vec![false; n],
        children: vec![0; n],
    };
    for i in 0..n {
        if keep.locked[i] || keep.broken[i] {
            keep.propagate_up(i);
        }
    }
    for g in groups.iter().filter(|g| !g.rules.is_empty()) {
        keep.select(g.chosen);
    }
    let bytes = |keep: &Keep, recs: &[BackupRecord]| -> u64 {
        (0..recs.len()).filter(|&i| keep.kept(i)).map(|i| recs[i].bytes).sum()
    };
    let bytes_before: u64 = records.iter().map(|r| r.bytes).sum();
    let mut usage = bytes(&keep, records);

    // Quota: drop the selection of the oldest snapshots first until under it. Dropping one
    // that a newer kept backup still needs frees nothing; it is selected again afterwards.
    if let Some(q) = policy.quota {
        for g in groups.iter_mut() {
            if usage <= q {
                break;
            }
            if g.rules.is_empty() || g.protected || keep.locked[g.chosen] {
                continue;
            }
            let freed = keep.deselect(g.chosen);
            usage -= freed.iter().map(|&i| records[i].bytes).sum::<u64>();
            g.dropped_for_quota = true;
        }
        for g in groups.iter_mut().filter(|g| g.dropped_for_quota) {
            if keep.kept(g.chosen) {
                keep.select(g.chosen);
                g.dropped_for_quota = false;
            }
        }
    }

    // What is not kept is deleted, unless its lock state is unknown: then it is kept now
    // and named, so the caller can read it and plan again.
    let unknown_locks: Vec<usize> = (0..n).filter(|&i| !keep.kept(i) && !locks.contains_key(&records[i].key)).collect();
    for &i in &unknown_locks {
        if !keep.kept(i) {
            keep.unknown[i] = true;
            keep.propagate_up(i);
        }
    }
    let bytes_after = bytes(&keep, records);
    let quota_problem = policy.quota.filter(|&q| bytes_after > q && unknown_locks.is_empty()).map(|q| {
        let newest = groups.last().map(|g| records[g.chosen].describe()).unwrap_or_default();
        format!(
            "quota {} cannot be met without breaking a chain: {} stay, needed by the newest backup {newest}, \
             backups younger than the minimum age, locked or unrestorable objects, and their parents; \
             send a new full backup so older chains can go",
            human_bytes(q),
            human_bytes(bytes_after)
        )
    });

    let mut kept_children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in (0..n).filter(|&i| keep.kept(i)) {
        if let Some(p) = parent[i] {
            kept_children[p].push(i);
        }
    }
    let no_rule: Arc<str> = format!("no rule keeps it (policy: {})", policy.describe()).into();
    let verdicts = (0..n)
        .map(|i| {
            let g = group_of[i].map(|gi| &groups[gi]);
            let why = Why { keep: &keep, group: g, kept_children: &kept_children[i], no_rule: &no_rule };
            verdict(records, health, policy, locks, why, i)
        })
        .collect();
    let mut delete_order: Vec<usize> = (0..n).filter(|&i| !keep.kept(i)).collect();
    delete_order.reverse();
    Prune {
        verdicts,
        delete_order,
        unknown_locks,
        bytes_before,
        bytes_after,
        quota: policy.quota,
        quota_problem,
        mode: Mode::Policy,
    }
}

/// What a prune deletes: what the retention policy no longer keeps, or (`--broken`) only
/// orphans, the records that cannot be restored once a newer backup restores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Policy,
    Broken,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Policy => "policy",
            Mode::Broken => "broken",
        }
    }
}

/// For each record that cannot be restored (an orphan: a link of its chain is gone), the
/// restorable record that makes it superfluous: a restorable copy of the same snapshot (the
/// healing full), else the newest restorable record when its snapshot is strictly newer.
/// Creation times are whole seconds and snapshots taken within one tie, so a tie says
/// nothing about which is newer: it does not supersede. `None` for restorable records and
/// for orphans that are the only copy of their data.
pub fn orphans(records: &[BackupRecord], health: &[Health]) -> Vec<Option<usize>> {
    let restorable = |i: &usize| health[*i].is_restorable();
    let newest = (0..records.len()).filter(restorable).max_by_key(|&i| (records[i].time, i));
    let copies: HashMap<(Option<u64>, &str), usize> =
        (0..records.len()).filter(restorable).map(|i| (identity(&records[i]), i)).collect();
    (0..records.len())
        .map(|i| {
            if health[i].is_restorable() {
                return None;
            }
            copies.get(&identity(&records[i])).copied().or(newest.filter(|&n| records[n].time > records[i].time))
        })
        .collect()
}

/// Plan a `--broken` prune: delete the orphans that a newer restorable backup supersedes
/// ([`orphans`]), children before parents, and nothing else. A restorable record is never
/// deleted, so no complete chain loses a link; a locked orphan stays, and one whose lock
/// state is unknown stays and is named in `unknown_locks`, as in [`plan`].
pub fn plan_broken(records: &[BackupRecord], health: &[Health], now: i64, locks: &Locks) -> Prune {
    let by = orphans(records, health);
    let restorable: Arc<str> = "restorable: --broken deletes only backups that cannot be restored".into();
    let mut unknown_locks = Vec::new();
    let mut deleted = vec![false; records.len()];
    let verdicts = (0..records.len())
        .map(|i| {
            let r = &records[i];
            let lock = locks.get(&r.key);
            let keep =
                |rules: Vec<String>, reason: Arc<str>| Verdict { keep: true, rules, needed_by: Vec::new(), reason };
            match (&health[i], by[i]) {
                (Health::Restorable { .. }, _) => keep(Vec::new(), Arc::clone(&restorable)),
                (Health::Broken { missing }, None) => keep(
                    vec!["unrestorable".into()],
                    format!(
                        "cannot be restored ({missing}), but no restorable backup is as new: it is the only copy of \
                         its data; re-send the missing object, or send a full (zsnap-backup --full) first"
                    )
                    .into(),
                ),
                (Health::Broken { .. }, Some(_)) if lock.is_some_and(|l| l.is_locked_at(now)) => {
                    let until = lock.and_then(|l| l.retain_until);
                    let why = until
                        .map_or("legal hold".to_string(), |u| format!("object lock until {}", calendar::rfc3339(u)));
                    keep(vec!["lock".into()], format!("orphan, but {why}").into())
                }
                (Health::Broken { .. }, Some(_)) if lock.is_none() => {
                    unknown_locks.push(i);
                    keep(Vec::new(), "orphan; lock state not read yet".into())
                }
                (Health::Broken { missing }, Some(n)) => {
                    deleted[i] = true;
                    Verdict {
                        keep: false,
                        rules: Vec::new(),
                        needed_by: Vec::new(),
                        reason: format!(
                            "orphan: cannot be restored ({missing}); {} {} restores a snapshot at least as new",
                            records[n].kind.as_str(),
                            records[n].describe()
                        )
                        .into(),
                    }
                }
            }
        })
        .collect();
    // List order puts parents first: reversed, an orphan goes before the orphans it builds on.
    let delete_order: Vec<usize> = (0..records.len()).rev().filter(|&i| deleted[i]).collect();
    let bytes_before: u64 = records.iter().map(|r| r.bytes).sum();
    let freed: u64 = delete_order.iter().map(|&i| records[i].bytes).sum();
    Prune {
        verdicts,
        delete_order,
        unknown_locks,
        bytes_before,
        bytes_after: bytes_before - freed,
        quota: None,
        quota_problem: None,
        mode: Mode::Broken,
    }
}

/// The identity of the snapshot a record holds: its guid, or its name for zfs3backup
/// objects (which have no guid).
fn identity(r: &BackupRecord) -> (Option<u64>, &str) {
    match r.guid {
        Some(g) => (Some(g), ""),
        None => (None, r.snapshot.as_str()),
    }
}

/// Restorable records grouped by snapshot, oldest first; each group's chosen object is the
/// one with the shortest chain. Also each record's group, index for index (`None` for a
/// record that cannot be restored): the verdicts look it up there, not in a second map.
fn group_snapshots(records: &[BackupRecord], health: &[Health]) -> (Vec<Group>, Vec<Option<usize>>) {
    let mut index: HashMap<(Option<u64>, &str), usize> = HashMap::new();
    // About one group per record: reserved, not doubled as it grows.
    let mut groups: Vec<Group> = Vec::with_capacity(records.len());
    let mut group_of = vec![None; records.len()];
    for (i, r) in records.iter().enumerate() {
        let Some(depth) = health[i].depth() else { continue };
        let gi = *index.entry(identity(r)).or_insert_with(|| {
            groups.push(Group {
                chosen: i,
                time: r.time,
                rules: Vec::new(),
                protected: false,
                dropped_for_quota: false,
            });
            groups.len() - 1
        });
        let g = &mut groups[gi];
        if health[g.chosen].depth().is_some_and(|d| depth < d) {
            g.chosen = i;
        }
        group_of[i] = Some(gi);
    }
    drop(index);
    // List order is oldest first already (nothing moves); where it is not, a stable sort
    // keeps it for equal times, and each record's group number follows its group.
    if groups.is_sorted_by_key(|g| g.time) {
        return (groups, group_of);
    }
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&g| groups[g].time);
    let mut moved_to = vec![0; groups.len()];
    for (new, &old) in order.iter().enumerate() {
        moved_to[old] = new;
    }
    for g in group_of.iter_mut().flatten() {
        *g = moved_to[*g];
    }
    crate::catalog::listing::permute(&mut groups, &order);
    (groups, group_of)
}

/// The rules that keep each of `times` (one creation time per snapshot, in createtxg
/// order) by the same selection `plan` applies to backups: newest, last N, the newest of
/// each of the last N periods, minimum age. No chains, locks or quota: for snapshots that
/// stand alone, such as a replica's (`zsync-ssh --prune-target`). Empty: no rule keeps it.
pub fn rules_by_time(times: &[i64], policy: &RetentionPolicy, now: i64) -> Vec<Vec<String>> {
    let mut groups: Vec<Group> = times
        .iter()
        .enumerate()
        .map(|(i, &time)| Group { chosen: i, time, rules: Vec::new(), protected: false, dropped_for_quota: false })
        .collect();
    // Stable: snapshots of the same second keep their txg order.
    groups.sort_by_key(|g| g.time);
    select_by_rules(&mut groups, policy, now);
    let mut rules = vec![Vec::new(); times.len()];
    for g in groups {
        rules[g.chosen] = g.rules;
    }
    rules
}

/// Mark the groups the policy's rules keep, with the rule names.
fn select_by_rules(groups: &mut [Group], policy: &RetentionPolicy, now: i64) {
    let Some(last) = groups.len().checked_sub(1) else { return };
    groups[last].rules.push("newest".into());
    groups[last].protected = true;
    let keep_last = usize::try_from(policy.keep_last).unwrap_or(usize::MAX);
    for (k, g) in groups.iter_mut().rev().take(keep_last).enumerate() {
        g.rules.push(format!("last {}", k + 1));
    }
    for p in Period::ALL {
        let want = policy.keep(p);
        let (mut taken, mut seen) = (0u64, None);
        for g in groups.iter_mut().rev() {
            if taken == want {
                break;
            }
            let b = p.bucket(g.time);
            if seen != Some(b) {
                seen = Some(b);
                taken += 1;
                g.rules.push(format!("{} {}", p.name(), p.label(g.time)));
            }
        }
    }
    if policy.min_age > 0 {
        let cutoff = now.saturating_sub(i64::try_from(policy.min_age).unwrap_or(i64::MAX));
        for g in groups.iter_mut().filter(|g| g.time > cutoff) {
            g.rules.push("min-age".into());
            g.protected = true;
        }
    }
}

/// What the plan decided about one record, for its verdict: who keeps it, its snapshot's
/// group, its kept children, and the reason shared by every record no rule keeps.
struct Why<'a> {
    keep: &'a Keep<'a>,
    group: Option<&'a Group>,
    kept_children: &'a [usize],
    no_rule: &'a Arc<str>,
}

fn verdict(
    records: &[BackupRecord],
    health: &[Health],
    policy: &RetentionPolicy,
    locks: &Locks,
    why_kept: Why,
    i: usize,
) -> Verdict {
    let Why { keep, group, kept_children, no_rule } = why_kept;
    let r = &records[i];
    let names = |v: &[usize]| v.iter().map(|&c| format!("@{}", records[c].snapshot)).collect::<Vec<_>>().join(", ");
    let mut rules: Vec<String> = Vec::new();
    let mut why: Vec<String> = Vec::new();
    if keep.selected[i] {
        rules.extend(group.map(|g| g.rules.clone()).unwrap_or_default());
        why.push(format!("kept by {}", rules.join("; ")));
    }
    if keep.locked[i] {
        rules.push("lock".into());
        let until = locks.get(&r.key).and_then(|l| l.retain_until);
        why.push(match until {
            Some(u) => format!("object lock until {}", calendar::rfc3339(u)),
            None => "legal hold".into(),
        });
    }
    if let Health::Broken { missing } = &health[i] {
        rules.push("unrestorable".into());
        why.push(format!(
            "cannot be restored ({missing}): left for you to look at, prune deletes only restorable backups"
        ));
    }
    if keep.unknown[i] {
        why.push("lock state not read yet".into());
    }
    if !kept_children.is_empty() {
        why.push(format!("needed by kept {} (parent in their chain)", names(kept_children)));
    }
    let kept = keep.kept(i);
    let reason: Arc<str> = if kept {
        why.join("; ").into()
    } else {
        match group {
            Some(g) if g.dropped_for_quota => format!(
                "quota {}: oldest backups deleted first (was kept by {})",
                human_bytes(policy.quota.unwrap_or(0)),
                g.rules.join("; ")
            )
            .into(),
            Some(g) if g.chosen != i && keep.kept(g.chosen) => format!(
                "another object of @{} is kept ({}), which restores with a shorter chain",
                r.snapshot,
                records[g.chosen].kind.as_str()
            )
            .into(),
            _ => Arc::clone(no_rule),
        }
    };
    Verdict { keep: kept, rules, needed_by: kept_children.to_vec(), reason }
}

/// One record's verdict as a JSON line, serialized straight from borrowed fields: at
/// 100,000 lines a `serde_json::Value` map each cost a fifth of the command's CPU.
#[derive(Serialize)]
pub struct RecordLine<'a> {
    action: &'static str,
    dataset: &'a str,
    snapshot: &'a str,
    guid: Option<String>,
    kind: &'static str,
    from: Option<&'a str>,
    time: i64,
    bytes: u64,
    key: String,
    rules: &'a [String],
    needed_by: Vec<&'a str>,
    locked_until: Option<String>,
    reason: &'a str,
}

impl Prune {
    /// One JSON line per record, in list order.
    pub fn record_line<'a>(
        &'a self,
        ctx: &Context,
        records: &'a [BackupRecord],
        locks: &Locks,
        i: usize,
    ) -> RecordLine<'a> {
        let r = &records[i];
        let v = &self.verdicts[i];
        RecordLine {
            action: if v.keep { "keep" } else { "delete" },
            dataset: &r.dataset,
            snapshot: &r.snapshot,
            guid: r.guid.map(|g| g.to_string()),
            kind: r.kind.as_str(),
            from: r.from_snap.as_deref(),
            time: r.time,
            bytes: r.bytes,
            key: ctx.url(&r.key),
            rules: &v.rules,
            needed_by: v.needed_by.iter().map(|&c| records[c].snapshot.as_str()).collect(),
            locked_until: locks.get(&r.key).and_then(|l| l.retain_until).map(calendar::rfc3339),
            reason: &v.reason,
        }
    }

    pub fn summary_json(&self, ctx: &Context, policy: Value) -> Value {
        let delete = self.delete_order.len();
        json!({
            "summary": true,
            "dataset": ctx.dataset,
            "backups": self.verdicts.len(),
            "keep": self.verdicts.len() - delete,
            "delete": delete,
            "bytes": self.bytes_before,
            "bytes_after": self.bytes_after,
            "bytes_freed": self.bytes_before - self.bytes_after,
            "quota": self.quota,
            "quota_met": self.quota_problem.is_none(),
            "quota_problem": self.quota_problem,
            // What was asked: the policy, or only orphans (--broken).
            "mode": self.mode.as_str(),
            "policy": policy,
        })
    }

    /// The delete commands, children first, as few as fit (see [`super::pack_lines`]):
    /// up to 1,000 objects each, one DeleteObjects request.
    pub fn commands(&self, ctx: &Context, records: &[BackupRecord]) -> Vec<String> {
        let urls: Vec<String> = self.delete_order.iter().map(|&i| ctx.url(&records[i].key)).collect();
        let line = |batch: &[String]| {
            join(&super::calls::S3putDelete { urls: batch.to_vec(), connection: ctx.connection.clone() }.argv())
        };
        super::pack_lines(&urls, &line).into_iter().map(|(_, l)| l).collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::catalog::chain::{health, tests::rec};

    const H: i64 = 3600;
    const D: i64 = 86_400;
    /// 2026-11-23 00:00 UTC, a Monday.
    const T0: i64 = 1_795_392_000;

    /// A policy that keeps nothing by period or count (also zsync-ssh's prune tests').
    pub(crate) fn none() -> RetentionPolicy {
        RetentionPolicy {
            keep_last: 0,
            keep_hourly: 0,
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
            keep_yearly: 0,
            ..RetentionPolicy::default()
        }
    }

    /// `count` snapshots `step` seconds apart from `start`, a new full every `chain`.
    fn series(count: usize, start: i64, step: i64, chain: usize) -> Vec<BackupRecord> {
        (0..count)
            .map(|k| {
                let g = k as u64 + 1;
                let from = (k % chain != 0).then(|| (g - 1, "prev"));
                rec(&format!("s{g}"), g, from, start + k as i64 * step)
            })
            .collect()
    }

    /// A GOVERNANCE retention until `until`.
    fn governance(until: Option<i64>) -> LockState {
        LockState { mode: Some("GOVERNANCE".into()), retain_until: until, legal_hold: false }
    }

    /// Every record unlocked (as Garage reports them).
    fn unlocked(records: &[BackupRecord]) -> Locks {
        records.iter().map(|r| (r.key.clone(), LockState::default())).collect()
    }

    fn run(records: &[BackupRecord], policy: &RetentionPolicy, now: i64) -> Prune {
        let h = health(records);
        let p = plan(records, &h, policy, now, &unlocked(records));
        check_invariants(records, &h, &p, policy, now);
        p
    }

    fn kept_names(records: &[BackupRecord], p: &Prune) -> Vec<String> {
        (0..records.len()).filter(|&i| p.verdicts[i].keep).map(|i| records[i].snapshot.clone()).collect()
    }

    /// What must hold for every plan.
    fn check_invariants(records: &[BackupRecord], h: &[Health], p: &Prune, policy: &RetentionPolicy, now: i64) {
        let n = records.len();
        assert_eq!(p.verdicts.len(), n);
        for i in 0..n {
            let v = &p.verdicts[i];
            assert!(!v.reason.is_empty(), "record {i} has no reason");
            if v.keep {
                if let Health::Restorable { parent: Some(par), .. } = h[i] {
                    assert!(p.verdicts[par].keep, "kept @{} lost its parent", records[i].snapshot);
                }
            }
            if !h[i].is_restorable() {
                assert!(v.keep, "an unrestorable record was deleted");
            }
            if policy.min_age > 0 && records[i].time > now - policy.min_age as i64 && h[i].is_restorable() {
                let newest_copy_kept = (0..n).any(|j| p.verdicts[j].keep && records[j].guid == records[i].guid);
                assert!(newest_copy_kept, "a snapshot younger than min age lost every copy");
            }
        }
        if let Some(last) = (0..n).filter(|&i| h[i].is_restorable()).max_by_key(|&i| (records[i].time, i)) {
            let g = records[last].guid;
            assert!((0..n).any(|j| p.verdicts[j].keep && records[j].guid == g), "the newest snapshot was deleted");
        }
        // Children before parents, each delete exactly once.
        let pos: HashMap<usize, usize> = p.delete_order.iter().enumerate().map(|(k, &i)| (i, k)).collect();
        assert_eq!(pos.len(), p.delete_order.len());
        for &i in &p.delete_order {
            assert!(!p.verdicts[i].keep);
            if let Health::Restorable { parent: Some(par), .. } = h[i] {
                if let Some(&pp) = pos.get(&par) {
                    assert!(pp > pos[&i], "parent deleted before its child");
                }
            }
        }
        let kept_bytes: u64 = (0..n).filter(|&i| p.verdicts[i].keep).map(|i| records[i].bytes).sum();
        assert_eq!(kept_bytes, p.bytes_after);
        if let Some(q) = p.quota {
            assert_eq!(p.quota_problem.is_none(), p.bytes_after <= q, "{:?}", p.quota_problem);
        }
    }

    #[test]
    fn hourly_for_400_days_with_weekly_fulls() {
        let records = series(400 * 24, T0 - 400 * D, H, 168);
        let now = T0;
        let p = run(&records, &RetentionPolicy::default(), now);
        let selected: Vec<usize> = (0..records.len()).filter(|&i| !p.verdicts[i].rules.is_empty()).collect();
        // 24 hourly + 7 daily + 4 weekly + 12 monthly, overlapping at the newest end.
        let hourly = selected.iter().filter(|&&i| p.verdicts[i].rules.iter().any(|r| r.starts_with("hourly"))).count();
        let monthly =
            selected.iter().filter(|&&i| p.verdicts[i].rules.iter().any(|r| r.starts_with("monthly"))).count();
        assert_eq!((hourly, monthly), (24, 12));
        // Deletes happen only where a whole weekly chain has no kept snapshot: every kept
        // chain is kept back to its full.
        assert!(!p.delete_order.is_empty());
        for &i in &p.delete_order {
            assert!(p.verdicts[i].reason.starts_with("no rule keeps it"), "{}", p.verdicts[i].reason);
        }
        let chains_kept = (0..records.len()).filter(|&i| p.verdicts[i].keep && records[i].from_guid.is_none()).count();
        assert!(chains_kept >= 12, "at least one chain per kept month");
    }

    #[test]
    fn chains_of_every_length_keep_whole_chains() {
        for chain in [1usize, 2, 7, 24, 168, 500] {
            let records = series(1000, T0 - 1000 * H, H, chain);
            let p = run(&records, &RetentionPolicy { keep_last: 3, ..none() }, T0);
            // The 3 newest are selected; their chain back to its full is kept; nothing else.
            let newest_full = (0..1000).rev().find(|&i| i <= 997 && i % chain == 0).expect("a full");
            let want: Vec<String> = (newest_full..1000).map(|i| format!("s{}", i + 1)).collect();
            assert_eq!(kept_names(&records, &p), want, "chain length {chain}");
            if chain > 3 && 997 - newest_full > 0 {
                let v = &p.verdicts[newest_full];
                assert!(v.rules.is_empty() && v.reason.starts_with("needed by kept @"), "{}", v.reason);
            }
        }
    }

    #[test]
    fn gaps_count_only_periods_that_have_backups() {
        // Daily backups, then nothing for 30 days, then 3 more days.
        let mut records = series(10, T0 - 50 * D, D, 1);
        records.extend(series(3, T0 - 3 * D, D, 1).into_iter().enumerate().map(|(k, mut r)| {
            r.snapshot = format!("late{k}");
            r.guid = Some(100 + k as u64);
            r.key = format!("late{k}");
            r
        }));
        let p = run(&records, &RetentionPolicy { keep_daily: 7, ..none() }, T0);
        assert_eq!(kept_names(&records, &p), vec!["s7", "s8", "s9", "s10", "late0", "late1", "late2"]);
        let v = &p.verdicts[9];
        assert!(v.reason.contains("daily 2026-10-13"), "{}", v.reason);
    }

    #[test]
    fn periods_keep_the_newest_of_each() {
        // Four snapshots a day for 10 days; keep 3 daily: the last of each of the last 3 days.
        let records = series(40, T0 - 10 * D, 6 * H, 1);
        let p = run(&records, &RetentionPolicy { keep_daily: 3, ..none() }, T0);
        assert_eq!(kept_names(&records, &p), vec!["s32", "s36", "s40"]);
        assert_eq!(p.verdicts[39].rules, vec!["newest", "daily 2026-11-22"]);
    }

    #[test]
    fn min_age_keeps_young_backups_whatever_the_rules() {
        let records = series(48, T0 - 48 * H, H, 1);
        let p = run(&records, &RetentionPolicy { min_age: 12 * 3600, ..none() }, T0);
        // Times T0-48h … T0-1h: those after T0-12h are younger than 12h.
        assert_eq!(p.verdicts.iter().filter(|v| v.keep).count(), 11);
        assert!(p.verdicts[40].rules.contains(&"min-age".to_string()));
    }

    #[test]
    fn quota_deletes_oldest_chains_first_and_never_breaks_one() {
        // Three chains of 4 (100 bytes each): 1200 bytes, every snapshot selected.
        let records = series(12, T0 - 12 * D, D, 4);
        let all = RetentionPolicy { keep_last: 12, ..none() };
        // (quota, kept snapshots, quota met)
        let cases: &[(u64, &[&str], bool)] = &[
            (1200, &["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12"], true),
            (1199, &["s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12"], true),
            (800, &["s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12"], true),
            (799, &["s9", "s10", "s11", "s12"], true),
            (400, &["s9", "s10", "s11", "s12"], true),
            // The newest chain alone is 400 bytes: not met, and not broken to meet it.
            (399, &["s9", "s10", "s11", "s12"], false),
            (0, &["s9", "s10", "s11", "s12"], false),
        ];
        for (q, want, met) in cases {
            let p = run(&records, &RetentionPolicy { quota: Some(*q), ..all.clone() }, T0);
            assert_eq!(kept_names(&records, &p), *want, "quota {q}");
            assert_eq!(p.quota_problem.is_none(), *met, "quota {q}: {:?}", p.quota_problem);
            for &i in &p.delete_order {
                assert!(p.verdicts[i].reason.starts_with("quota "), "{q}: {}", p.verdicts[i].reason);
            }
        }
        let p = run(&records, &RetentionPolicy { quota: Some(0), ..all }, T0);
        let problem = p.quota_problem.unwrap_or_default();
        assert!(problem.contains("cannot be met without breaking a chain") && problem.contains("@s12"), "{problem}");
        assert!(p.verdicts[8].reason.contains("kept by last 4"), "selection restored: {}", p.verdicts[8].reason);
    }

    #[test]
    fn quota_spares_young_and_locked_backups() {
        let records = series(8, T0 - 8 * D, D, 1);
        let mut locks = unlocked(&records);
        locks.insert(records[0].key.clone(), governance(Some(T0 + D)));
        let policy = RetentionPolicy { keep_last: 8, quota: Some(300), min_age: 2 * D as u64 + 1, ..none() };
        let h = health(&records);
        let p = plan(&records, &h, &policy, T0, &locks);
        check_invariants(&records, &h, &p, &policy, T0);
        assert_eq!(kept_names(&records, &p), vec!["s1", "s7", "s8"]);
        assert!(p.verdicts[0].reason.contains("object lock until 2026-11-24T00:00:00Z"), "{}", p.verdicts[0].reason);
        assert!(p.quota_problem.is_none());
    }

    #[test]
    fn locked_objects_and_their_chains_stay() {
        let records = series(10, T0 - 10 * D, D, 10);
        let mut locks = unlocked(&records);
        locks.insert(records[4].key.clone(), governance(Some(T0 + 30 * D)));
        let h = health(&records);
        let p = plan(&records, &h, &none(), T0, &locks);
        check_invariants(&records, &h, &p, &none(), T0);
        // s5 is locked: s1…s5 stay (its chain); s6…s9 go; s10 is the newest.
        assert_eq!(kept_names(&records, &p), vec!["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10"]);
        // (s10's chain runs through s6…s9, so they stay too.)
        let records = series(10, T0 - 10 * D, D, 5);
        let mut locks = unlocked(&records);
        locks.insert(records[1].key.clone(), LockState { legal_hold: true, ..LockState::default() });
        let h = health(&records);
        let p = plan(&records, &h, &none(), T0, &locks);
        assert_eq!(kept_names(&records, &p), vec!["s1", "s2", "s6", "s7", "s8", "s9", "s10"]);
        assert_eq!(p.verdicts[1].rules, vec!["lock"]);
        assert!(p.verdicts[1].reason.contains("legal hold"));
    }

    #[test]
    fn a_bucket_that_cannot_lock_knows_every_lock_without_a_read() {
        let records = series(20, T0, H, 5);
        let h = health(&records);
        let unlockable = Locks::none_lockable();
        assert!(unlockable.contains_key("k") && unlockable.get("k").is_some_and(|l| !l.is_locked_at(T0)));
        let policy = RetentionPolicy { keep_last: 3, ..none() };
        let p = plan(&records, &h, &policy, T0 + 10 * D, &unlockable);
        assert!(p.unknown_locks.is_empty() && !p.delete_order.is_empty(), "{p:?}");
        assert_eq!(p, plan(&records, &h, &policy, T0 + 10 * D, &unlocked(&records)), "as if every lock was read");
        assert!(!Locks::default().contains_key("k"));
    }

    #[test]
    fn unknown_locks_are_never_deleted() {
        let records = series(6, T0 - 6 * D, D, 1);
        let h = health(&records);
        let mut locks = Locks::default();
        let p = plan(&records, &h, &none(), T0, &locks);
        assert_eq!(p.unknown_locks, vec![0, 1, 2, 3, 4]);
        assert!(p.delete_order.is_empty() && p.verdicts.iter().all(|v| v.keep));
        // Read them: s2 turns out locked.
        for &i in &p.unknown_locks {
            locks.insert(records[i].key.clone(), LockState::default());
        }
        locks.insert(records[1].key.clone(), governance(Some(T0 + 1)));
        let p = plan(&records, &h, &none(), T0, &locks);
        assert!(p.unknown_locks.is_empty());
        assert_eq!(kept_names(&records, &p), vec!["s2", "s6"]);
        // An expired lock does not keep anything.
        locks.insert(records[1].key.clone(), governance(Some(T0)));
        assert_eq!(kept_names(&records, &plan(&records, &h, &none(), T0, &locks)), vec!["s6"]);
    }

    #[test]
    fn duplicates_and_broken_records() {
        // s3 stored twice (incremental, and a full); s5's parent is missing.
        let records = vec![
            rec("s1", 1, None, T0 - 5 * D),
            rec("s2", 2, Some((1, "s1")), T0 - 4 * D),
            rec("s3", 3, Some((2, "s2")), T0 - 3 * D),
            rec("s3", 3, None, T0 - 3 * D),
            rec("s5", 5, Some((4, "s4")), T0 - 2 * D),
            rec("s6", 6, Some((3, "s3")), T0 - D),
        ];
        let mut records = records;
        records[3].key = "full-s3".into();
        let p = run(&records, &none(), T0);
        assert_eq!(kept_names(&records, &p), vec!["s3", "s5", "s6"]);
        assert!(p.verdicts[3].keep, "the full copy of s3 is s6's shorter chain");
        assert!(p.verdicts[2].reason.starts_with("another object of @s3 is kept (full)"), "{}", p.verdicts[2].reason);
        assert!(p.verdicts[4].reason.contains("cannot be restored (parent @s4"), "{}", p.verdicts[4].reason);
        assert_eq!(p.delete_order, vec![2, 1, 0], "children first");
    }

    #[test]
    fn broken_deletes_only_orphans_a_newer_backup_supersedes() {
        // s1 full, s2 (its object gone), s3 and s4 on s2; then a healing full of s4, and s5
        // on it. A second dataset history: t2 on a missing t1 with nothing newer restorable.
        let records = vec![
            rec("s1", 1, None, T0 - 6 * D),
            rec("s3", 3, Some((2, "s2")), T0 - 4 * D),
            rec("s4", 4, Some((3, "s3")), T0 - 3 * D),
            rec("s4", 4, None, T0 - 3 * D),
            rec("s5", 5, Some((4, "s4")), T0 - 2 * D),
        ];
        let mut records = records;
        records[3].key = "full-s4".into();
        let h = health(&records);
        let p = plan_broken(&records, &h, T0, &unlocked(&records));
        assert_eq!(p.delete_order, vec![2, 1], "the orphans, children first");
        assert!(
            p.verdicts[1].reason.starts_with("orphan: cannot be restored (parent @s2 (guid 2) of @s3"),
            "{}",
            p.verdicts[1].reason
        );
        assert!(
            p.verdicts[1].reason.ends_with("inc @s5 (guid 5) restores a snapshot at least as new"),
            "{}",
            p.verdicts[1].reason
        );
        for i in [0, 3, 4] {
            assert!(p.verdicts[i].keep && p.verdicts[i].reason.starts_with("restorable"), "{i}: {:?}", p.verdicts[i]);
        }
        assert_eq!(p.bytes_before - p.bytes_after, 200);
        // What stays is every restorable record, each still restorable.
        let left: Vec<BackupRecord> =
            (0..records.len()).filter(|&i| p.verdicts[i].keep).map(|i| records[i].clone()).collect();
        assert!(health(&left).iter().all(Health::is_restorable));

        // Snapshots of one second tie: an older full of the same second does not supersede.
        let tie = vec![rec("u1", 21, None, T0 - D), rec("u3", 23, Some((22, "u2")), T0 - D)];
        let p = plan_broken(&tie, &health(&tie), T0, &unlocked(&tie));
        assert!(p.delete_order.is_empty(), "{:?}", p.verdicts);

        // Nothing newer restores: the orphan is the only copy, kept.
        let only = vec![rec("t0", 10, None, T0 - 9 * D), rec("t2", 12, Some((11, "t1")), T0 - D)];
        let p = plan_broken(&only, &health(&only), T0, &unlocked(&only));
        assert!(p.delete_order.is_empty());
        assert!(p.verdicts[1].reason.contains("no restorable backup is as new"), "{}", p.verdicts[1].reason);

        // Locked orphans stay; unknown locks are named, never deleted.
        let mut locks = unlocked(&records);
        locks.insert(records[2].key.clone(), governance(Some(T0 + D)));
        let p = plan_broken(&records, &h, T0, &locks);
        assert_eq!(p.delete_order, vec![1]);
        assert!(p.verdicts[2].reason.contains("object lock until"), "{}", p.verdicts[2].reason);
        let p = plan_broken(&records, &h, T0, &Locks::default());
        assert_eq!((p.delete_order.len(), p.unknown_locks.clone()), (0, vec![1, 2]));
    }

    #[test]
    fn the_client_quota_leaves_a_share_for_each_dataset() {
        let p = |quota, client_quota| RetentionPolicy { quota, client_quota, ..none() };
        assert_eq!(budget(&p(None, None), 500), None);
        assert_eq!(budget(&p(Some(100), None), 500), Some(100));
        assert_eq!(budget(&p(None, Some(1000)), 400), Some(600));
        assert_eq!(budget(&p(Some(100), Some(1000)), 400), Some(100));
        assert_eq!(budget(&p(Some(700), Some(1000)), 400), Some(600));
        assert_eq!(budget(&p(None, Some(1000)), 4000), Some(0), "others over it: nothing left");
    }

    #[test]
    fn groups_follow_time_where_list_order_does_not() {
        // A zsnap child can look older than its zfs3backup-era parent: list order (parents
        // first) is then not time order, and the groups are sorted with their numbers.
        let records = vec![
            rec("a", 1, None, 50),
            rec("b", 2, Some((1, "a")), 10),
            rec("a-copy", 1, None, 60),
            rec("c", 3, Some((2, "b")), 30),
        ];
        let h = health(&records);
        let (groups, group_of) = group_snapshots(&records, &h);
        let times: Vec<i64> = groups.iter().map(|g| g.time).collect();
        assert_eq!(times, [10, 30, 50]);
        for (i, g) in group_of.iter().enumerate() {
            let g = g.map(|g| &groups[g]).expect("every record restores");
            assert_eq!(identity(&records[g.chosen]), identity(&records[i]), "record {i}");
        }
        assert_eq!(group_of[0], group_of[2], "two objects of one snapshot, one group");
    }

    #[test]
    fn empty_and_single() {
        let p = run(&[], &RetentionPolicy::default(), T0);
        assert!(p.verdicts.is_empty() && p.delete_order.is_empty() && p.quota_problem.is_none());
        let one = series(1, T0 - D, D, 1);
        let p = run(&one, &RetentionPolicy { quota: Some(1), ..none() }, T0);
        assert_eq!(p.verdicts[0].rules, vec!["newest"]);
        assert!(p.quota_problem.is_some());
    }

    #[test]
    fn commands_are_batched_children_first() {
        let records = series(2_250, T0 - 2_250 * D, D, 1);
        let ctx = Context {
            bucket: "bkt".into(),
            connection: vec!["--endpoint".into(), "http://h:1".into()],
            ..Default::default()
        };
        let p = run(&records, &none(), T0);
        let cmds = p.commands(&ctx, &records);
        // 1,000 objects a command (one DeleteObjects each), the newest (children) first.
        assert_eq!(cmds.len(), 3);
        assert!(cmds[0].starts_with("s3put --delete --endpoint http://h:1 s3://bkt/tank/data/@s2249/"), "{}", cmds[0]);
        assert_eq!(cmds[0].matches(" s3://").count(), 1_000);
        assert_eq!(cmds[2].matches(" s3://").count(), 249);
        assert!(cmds.iter().all(|c| c.len() < 128 * 1024));
    }

    #[test]
    fn many_random_catalogs_hold_the_invariants() {
        // xorshift: gaps, chain lengths, quotas and policies of every shape.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m.max(1)
        };
        for _ in 0..200 {
            let count = next(300) as usize + 1;
            let mut t = T0 - 200 * D;
            let mut records = Vec::new();
            let chain = next(40) as usize + 1;
            for k in 0..count {
                t += (next(6) as i64 + 1) * H * if next(20) == 0 { 100 } else { 1 };
                let g = k as u64 + 1;
                let from = (k % chain != 0).then(|| (g - 1, "p"));
                let mut r = rec(&format!("s{g}"), g, from, t);
                r.bytes = next(1000) + 1;
                if next(50) == 0 {
                    r.from_guid = Some(999_999); // a broken link
                }
                records.push(r);
            }
            let total: u64 = records.iter().map(|r| r.bytes).sum();
            let policy = RetentionPolicy {
                keep_last: next(5),
                keep_hourly: next(30),
                keep_daily: next(10),
                keep_weekly: next(6),
                keep_monthly: next(13),
                keep_yearly: next(2),
                min_age: next(3) * 86_400,
                quota: (next(2) == 0).then(|| next(total + 1)),
                client_quota: None,
                lock: None,
            };
            let now = t + next(100) as i64 * H;
            run(&records, &policy, now);
            // --broken: every restorable record stays, and stays restorable without the orphans.
            let h = health(&records);
            let p = plan_broken(&records, &h, now, &unlocked(&records));
            let left: Vec<BackupRecord> =
                (0..records.len()).filter(|&i| p.verdicts[i].keep).map(|i| records[i].clone()).collect();
            let restorable = |h: &[Health]| h.iter().filter(|h| h.is_restorable()).count();
            assert_eq!(restorable(&health(&left)), restorable(&h), "--broken broke a chain");
            assert!(p.delete_order.iter().all(|&i| !h[i].is_restorable()));
        }
    }
}
