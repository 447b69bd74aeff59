//! Typed local snapshots and their rotation (the Go manager's `snapshot <type>` and
//! `rotate`). Pure. A typed snapshot is named `<prefix><type>-YYYY-MM-DD-HHMMSS` (UTC);
//! rotation keeps the newest `keep_<type>` of each type and destroys the rest, but never
//! the newest snapshot already committed in S3 (the base of the next incremental) unless a
//! bookmark of it keeps that base, one with a hold, one younger than the minimum age, or
//! any snapshot not named by us.
//!
//! Bookmarks: zsnap's own (named like the committed snapshot they mark, same guid) are
//! kept for the base and for every snapshot kept; the others are destroyed. Bookmarks
//! zsnap did not make are never touched.

use super::join;
use crate::calendar::{self, Period};
use crate::catalog::{BackupRecord, Health};
use crate::config::policy::RetentionPolicy;
use crate::zfs::snapshots::{Bookmark, Snapshot};
use serde_json::{json, Value};

/// `<prefix><type>-YYYY-MM-DD-HHMMSS` for a snapshot taken at `now`.
pub fn name(prefix: &str, period: Period, now: i64) -> String {
    let c = calendar::civil(now);
    format!(
        "{prefix}{}-{:04}-{:02}-{:02}-{:02}{:02}{:02}",
        period.name(),
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second
    )
}

/// The type of a snapshot named by [`name`] with this prefix; `None` for any other name,
/// which rotation then never touches.
pub fn type_of(prefix: &str, snapshot: &str) -> Option<Period> {
    let rest = snapshot.strip_prefix(prefix)?;
    let (kind, stamp) = rest.split_once('-')?;
    let shape = stamp.len() == 17
        && stamp.char_indices().all(|(i, c)| if [4, 7, 10].contains(&i) { c == '-' } else { c.is_ascii_digit() });
    if shape {
        Period::parse(kind)
    } else {
        None
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Create { snapshot: String, period: Period, command: String },
    Keep { snapshot: Snapshot, period: Option<Period>, reason: String },
    Destroy { snapshot: Snapshot, period: Period, reason: String, command: String },
    KeepBookmark { bookmark: Bookmark, reason: String },
    DestroyBookmark { bookmark: Bookmark, reason: String, command: String },
}

impl Step {
    pub fn to_json(&self, dataset: &str) -> Value {
        match self {
            Step::Create { snapshot, period, command } => json!({
                "action": "create", "dataset": dataset, "snapshot": snapshot, "type": period.name(),
                "command": command, "reason": format!("new {} snapshot", period.name()),
            }),
            Step::Keep { snapshot, period, reason } => json!({
                "action": "keep", "dataset": dataset, "snapshot": snapshot.name, "guid": snapshot.guid.to_string(),
                "type": period.map(Period::name), "reason": reason,
            }),
            Step::Destroy { snapshot, period, reason, command } => json!({
                "action": "destroy", "dataset": dataset, "snapshot": snapshot.name,
                "guid": snapshot.guid.to_string(), "type": period.name(), "command": command, "reason": reason,
            }),
            Step::KeepBookmark { bookmark, reason } => json!({
                "action": "keep", "dataset": dataset, "bookmark": bookmark.name, "guid": bookmark.guid.to_string(),
                "reason": reason,
            }),
            Step::DestroyBookmark { bookmark, reason, command } => json!({
                "action": "destroy", "dataset": dataset, "bookmark": bookmark.name,
                "guid": bookmark.guid.to_string(), "command": command, "reason": reason,
            }),
        }
    }

    pub fn command(&self) -> Option<&str> {
        match self {
            Step::Create { command, .. } | Step::Destroy { command, .. } | Step::DestroyBookmark { command, .. } => {
                Some(command)
            }
            Step::Keep { .. } | Step::KeepBookmark { .. } => None,
        }
    }
}

/// What to do: snapshot `dataset` as `period` (or only rotate, `None`) at `now`.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub dataset: &'a str,
    /// The snapshot prefix: typed names start with it.
    pub prefix: &'a str,
    pub period: Option<Period>,
    pub now: i64,
}

/// Create a snapshot of the requested type (when given) and rotate. `local` is every
/// snapshot of the dataset in createtxg order, `bookmarks` every bookmark.
pub fn plan(
    req: Request,
    local: &[Snapshot],
    bookmarks: &[Bookmark],
    records: &[BackupRecord],
    health: &[Health],
    policy: &RetentionPolicy,
) -> Vec<Step> {
    let Request { dataset, prefix, period, now } = req;
    let mut steps = Vec::new();
    let created = period.map(|p| {
        let snapshot = name(prefix, p, now);
        let command = join(&["zfs".into(), "snapshot".into(), format!("{dataset}@{snapshot}")]);
        steps.push(Step::Create { snapshot: snapshot.clone(), period: p, command });
        (snapshot, p)
    });
    let committed =
        |guid: u64, name: &str| records.iter().zip(health).any(|(r, h)| h.is_restorable() && r.holds(guid, name));
    // The base of the next incremental: the newest snapshot or zsnap bookmark in S3.
    let ours = |b: &Bookmark| records.iter().any(|r| r.guid == Some(b.guid) && r.snapshot == b.name);
    let newest_snap = local.iter().rev().find(|s| committed(s.guid, &s.name)).map(|s| (s.createtxg, s.guid));
    let newest_mark = bookmarks.iter().rev().find(|b| ours(b) && committed(b.guid, "")).map(|b| (b.createtxg, b.guid));
    let base = newest_snap.max(newest_mark).map(|(_, g)| g);
    // A bookmark of the base keeps the chain going: the snapshot itself may then go.
    let base_marked = base.is_some_and(|g| bookmarks.iter().any(|b| b.guid == g));
    // Newest first; the new snapshot (not taken yet) is the newest of its type.
    let typed: Vec<(usize, Period)> =
        (0..local.len()).rev().filter_map(|i| type_of(prefix, &local[i].name).map(|p| (i, p))).collect();
    let count_new = |p: Period| usize::from(created.as_ref().is_some_and(|c| c.1 == p));
    let keep_last =
        usize::try_from(policy.keep_last).unwrap_or(usize::MAX).saturating_sub(usize::from(created.is_some()));
    let cutoff = now.saturating_sub(i64::try_from(policy.min_age).unwrap_or(i64::MAX));
    let mut rank_of_type: Vec<usize> = vec![0; Period::ALL.len()];
    let mut verdicts: Vec<Option<Step>> = vec![None; local.len()];
    for (rank_all, &(i, p)) in typed.iter().enumerate() {
        let s = &local[i];
        let slot = Period::ALL.iter().position(|&q| q == p).unwrap_or(0);
        let rank = rank_of_type[slot] + count_new(p);
        rank_of_type[slot] += 1;
        let want = usize::try_from(policy.keep(p)).unwrap_or(usize::MAX);
        let mut why = Vec::new();
        if rank < want {
            why.push(format!("{} {} of {want}", p.name(), rank + 1));
        }
        if rank_all < keep_last {
            why.push(format!("last {}", rank_all + 1 + usize::from(created.is_some())));
        }
        if base == Some(s.guid) && !base_marked {
            why.push("newest snapshot committed in S3: the base of the next incremental".into());
        }
        if s.holds > 0 {
            why.push(format!("{} hold(s)", s.holds));
        }
        if policy.min_age > 0 && s.creation > cutoff {
            why.push("younger than the minimum age".into());
        }
        verdicts[i] = Some(if why.is_empty() {
            Step::Destroy {
                snapshot: s.clone(),
                period: p,
                reason: format!("older than the newest {want} {} snapshot(s)", p.name()),
                command: join(&["zfs".into(), "destroy".into(), format!("{dataset}@{}", s.name)]),
            }
        } else {
            Step::Keep { snapshot: s.clone(), period: Some(p), reason: why.join("; ") }
        });
    }
    let mut kept_guids = Vec::new();
    for (i, v) in verdicts.into_iter().enumerate() {
        let v = v.unwrap_or_else(|| Step::Keep {
            snapshot: local[i].clone(),
            period: None,
            reason: format!("not a typed snapshot ({prefix}TYPE-YYYY-MM-DD-HHMMSS): never rotated"),
        });
        if matches!(v, Step::Keep { .. }) {
            kept_guids.push(local[i].guid);
        }
        steps.push(v);
    }
    for b in bookmarks.iter().filter(|b| ours(b)) {
        let step = if base == Some(b.guid) {
            Step::KeepBookmark {
                bookmark: b.clone(),
                reason: "bookmark of the newest backup in S3: the base of the next incremental".into(),
            }
        } else if kept_guids.contains(&b.guid) {
            Step::KeepBookmark { bookmark: b.clone(), reason: "its snapshot is kept".into() }
        } else {
            Step::DestroyBookmark {
                bookmark: b.clone(),
                reason: "older than the base of the next incremental, and its snapshot is gone or destroyed".into(),
                command: join(&["zfs".into(), "destroy".into(), format!("{dataset}#{}", b.name)]),
            }
        };
        steps.push(step);
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::chain::{health, tests::rec};

    const T0: i64 = 1_795_392_000; // 2026-11-23 00:00 UTC

    fn snap(name: &str, guid: u64, txg: u64, creation: i64) -> Snapshot {
        Snapshot {
            dataset: "tank/data".into(),
            name: name.into(),
            guid,
            createtxg: txg,
            creation,
            used: 0,
            referenced: 0,
            logical_referenced: None,
            holds: 0,
        }
    }

    fn req(period: Option<Period>) -> Request<'static> {
        Request { dataset: "tank/data", prefix: "", period, now: T0 }
    }

    fn actions(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Create { snapshot, .. } => format!("create {snapshot}"),
                Step::Keep { snapshot, .. } => format!("keep {}", snapshot.name),
                Step::Destroy { snapshot, .. } => format!("destroy {}", snapshot.name),
                Step::KeepBookmark { bookmark, .. } => format!("keep #{}", bookmark.name),
                Step::DestroyBookmark { bookmark, .. } => format!("destroy #{}", bookmark.name),
            })
            .collect()
    }

    #[test]
    fn names_round_trip() {
        let n = name("zs-", Period::Hourly, T0 + 3 * 3600 + 65);
        assert_eq!(n, "zs-hourly-2026-11-23-030105");
        assert_eq!(type_of("zs-", &n), Some(Period::Hourly));
        for other in ["hourly-2026-11-23-030105", "zs-hourly-2026-11-23", "zs-often-2026-11-23-030105", "zs-daily-x"] {
            assert_eq!(type_of("zs-", other), None, "{other}");
        }
        assert_eq!(type_of("", "daily-2026-11-23-000000"), Some(Period::Daily));
    }

    #[test]
    fn rotation_keeps_counts_per_type_and_protects_base_and_holds() {
        let policy = RetentionPolicy { keep_hourly: 2, keep_daily: 1, ..RetentionPolicy::default() };
        let mut local = vec![
            snap("manual", 1, 1, T0 - 100),
            snap("hourly-2026-11-22-200000", 2, 2, T0 - 4 * 3600),
            snap("daily-2026-11-22-210000", 3, 3, T0 - 3 * 3600),
            snap("hourly-2026-11-22-210000", 4, 4, T0 - 3 * 3600),
            snap("hourly-2026-11-22-220000", 5, 5, T0 - 2 * 3600),
            snap("hourly-2026-11-22-230000", 6, 6, T0 - 3600),
        ];
        local[1].holds = 1;
        // S3 holds @hourly-…-210000 (guid 4): the base of the next incremental.
        let records = vec![rec("hourly-2026-11-22-210000", 4, None, T0 - 3 * 3600)];
        let h = health(&records);
        let steps = plan(req(Some(Period::Hourly)), &local, &[], &records, &h, &policy);
        assert_eq!(
            actions(&steps),
            vec![
                "create hourly-2026-11-23-000000",
                "keep manual",
                "keep hourly-2026-11-22-200000",
                "keep daily-2026-11-22-210000",
                "keep hourly-2026-11-22-210000",
                "destroy hourly-2026-11-22-220000",
                "keep hourly-2026-11-22-230000",
            ]
        );
        assert_eq!(steps[0].command(), Some("zfs snapshot tank/data@hourly-2026-11-23-000000"));
        assert_eq!(steps[5].command(), Some("zfs destroy tank/data@hourly-2026-11-22-220000"));
        let Step::Keep { reason, .. } = &steps[4] else { panic!() };
        assert!(reason.contains("base of the next incremental"), "{reason}");
        let Step::Keep { reason, .. } = &steps[2] else { panic!() };
        assert_eq!(reason, "1 hold(s)");
        let Step::Keep { reason, .. } = &steps[1] else { panic!() };
        assert!(reason.contains("never rotated"));
    }

    #[test]
    fn rotate_only_and_min_age() {
        let local: Vec<Snapshot> = (0..5)
            .map(|k| {
                snap(&name("", Period::Daily, T0 - (5 - k) * 86_400), k as u64 + 1, k as u64, T0 - (5 - k) * 86_400)
            })
            .collect();
        let policy = RetentionPolicy { keep_daily: 1, min_age: 2 * 86_400 + 1, ..RetentionPolicy::default() };
        let steps = plan(req(None), &local, &[], &[], &[], &policy);
        let acts = actions(&steps);
        assert_eq!(acts.iter().filter(|a| a.starts_with("destroy")).count(), 3, "{acts:?}");
        assert!(acts[3].starts_with("keep") && acts[4].starts_with("keep"));
    }

    #[test]
    fn a_bookmark_of_the_base_lets_rotation_destroy_the_snapshot() {
        let policy = RetentionPolicy { keep_hourly: 1, ..RetentionPolicy::default() };
        let h1 = "hourly-2026-11-22-210000";
        let h2 = "hourly-2026-11-22-220000";
        let h3 = "hourly-2026-11-22-230000";
        let local = vec![snap(h2, 2, 2, T0 - 7200), snap(h3, 3, 3, T0 - 3600)];
        let mark = |n: &str, g: u64, t: u64| Bookmark {
            dataset: "tank/data".into(),
            name: n.into(),
            guid: g,
            createtxg: t,
            creation: T0 - 10_000 + t as i64,
        };
        // h1 and h2 are in S3, bookmarked by zsnap; h1's snapshot is gone; "keepme" is a
        // bookmark of someone else's.
        let marks = vec![mark(h1, 1, 1), mark("keepme", 1, 1), mark(h2, 2, 2)];
        let records = vec![rec(h1, 1, None, T0 - 10_800), rec(h2, 2, Some((1, h1)), T0 - 7200)];
        let h = health(&records);
        let steps = plan(req(None), &local, &marks, &records, &h, &policy);
        assert_eq!(
            actions(&steps),
            [format!("destroy {h2}"), format!("keep {h3}"), format!("destroy #{h1}"), format!("keep #{h2}")]
        );
        assert_eq!(steps[2].command(), Some(format!("zfs destroy 'tank/data#{h1}'").as_str()));
        // Without the bookmark, the base snapshot is kept as before.
        let steps = plan(req(None), &local, &[], &records, &h, &policy);
        assert_eq!(actions(&steps), [format!("keep {h2}"), format!("keep {h3}")]);
    }
}
