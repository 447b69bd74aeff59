//! Chain, freshness and deep checks of backups in S3, and their verdicts.
//!
//! `verdict` is pure: a dataset's [`Catalog`], the in-progress uploads, `now` and the
//! thresholds go in, [`Finding`]s and a per-dataset summary come out. `deep` downloads
//! and verifies objects (I/O).

pub mod deep;
pub mod drill;
pub mod scope;

use crate::catalog::{chain, BackupRecord, Catalog, Health, Kind};
use crate::cli::output::human_age;
use crate::s3::uploads::PendingUpload;
use std::collections::HashMap;

/// How bad a finding is; the worst one is the exit code (0, 1, 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Ok,
    Warning,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Severity::Ok => 0,
            Severity::Warning => 1,
            Severity::Critical => 2,
        }
    }
}

/// One thing a check found, naming the object or snapshot at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// Empty for findings about the bucket as a whole (e.g. an upload of no dataset).
    pub dataset: String,
    /// `chain`, `duplicate`, `freshness`, `empty`, `stale-upload`, `deep:crc32`, … .
    pub check: String,
    /// The snapshot (`@name`) or key the finding is about, when there is one.
    pub subject: Option<String>,
    pub message: String,
}

impl Finding {
    pub fn new(severity: Severity, dataset: &str, check: &str, subject: Option<String>, message: String) -> Self {
        Finding { severity, dataset: dataset.to_string(), check: check.to_string(), subject, message }
    }
}

/// Ages in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub warn_age: i64,
    pub crit_age: i64,
    pub stale_uploads: i64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { warn_age: 26 * 3600, crit_age: 50 * 3600, stale_uploads: 24 * 3600 }
    }
}

/// One dataset at a glance (the table's row, the metrics' labels).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetSummary {
    pub dataset: String,
    pub status: Severity,
    pub backups: usize,
    pub broken: usize,
    /// Stored bytes of every committed backup.
    pub bytes: u64,
    /// The newest committed backup: snapshot name and creation time.
    pub newest: Option<(String, i64)>,
    pub age: Option<i64>,
    /// Records to receive to restore the newest restorable backup.
    pub chain_length: usize,
}

/// Every check that needs only the listing, for one dataset.
pub fn check_catalog(cat: &Catalog, now: i64, t: &Thresholds) -> (Vec<Finding>, DatasetSummary) {
    let ds = cat.dataset.as_str();
    let records = &cat.records;
    let health = cat.health();
    let mut out = Vec::new();

    // Chain: every record whose chain is broken, named with its first missing link, so
    // the object to find or re-send and everything that depends on it are all listed.
    // Each says what to do: once a newer backup restores, the orphan is only clutter that
    // keeps this check critical, and `zsnap-prune --broken` removes exactly such records.
    let superseded = crate::plan::prune::orphans(records, &health);
    for ((r, h), by) in records.iter().zip(&health).zip(superseded) {
        if let Health::Broken { missing } = h {
            let todo = match by {
                Some(n) => format!(
                    "{} {} restores a snapshot at least as new: run zsnap-prune --broken to delete this orphan",
                    records[n].kind.as_str(),
                    records[n].describe()
                ),
                None => "re-send the missing object, or send a full (zsnap-backup --full) and then run \
                         zsnap-prune --broken to delete this orphan"
                    .to_string(),
            };
            out.push(Finding::new(
                Severity::Critical,
                ds,
                "chain",
                Some(format!("@{}", r.snapshot)),
                format!("{} {} cannot be restored: {missing}; {todo}", r.kind.as_str(), r.describe()),
            ));
        }
    }

    // Duplicates: a full and an incremental of one snapshot are two ways to restore it
    // (fine); two objects of the same snapshot from the same parent are one backup stored
    // twice (`BackupRecord::same_backup`), also when zfs3backup wrote one and zsnap the other.
    for group in duplicate_groups(records) {
        let first = &records[group[0]];
        let how = match &first.from_snap {
            Some(p) if first.kind == crate::catalog::Kind::Inc => format!("from the same parent @{p}"),
            _ => "as a full".to_string(),
        };
        let copies: Vec<String> =
            group.iter().map(|&i| format!("by {} as {}", records[i].writer(), records[i].key)).collect();
        let mut message = format!("@{} is stored {} times {how}: {}", first.snapshot, group.len(), copies.join(", "));
        if group.iter().any(|&i| records[i].legacy) && group.iter().any(|&i| !records[i].legacy) {
            message.push_str(
                "; zfs3backup and zsnap both back up this prefix, which stores every snapshot twice: stop \
                 zfs3backup (docs/FORMAT.md, migrating)",
            );
        }
        out.push(Finding::new(Severity::Warning, ds, "duplicate", Some(format!("@{}", first.snapshot)), message));
    }

    // Freshness of the newest remote backup, by the snapshot's creation time in the key.
    let newest = records.iter().max_by_key(|r| r.time);
    let age = newest.map(|r| now - r.time);
    match (newest, age) {
        (Some(r), Some(a)) => {
            let sev = if a >= t.crit_age {
                Severity::Critical
            } else if a >= t.warn_age {
                Severity::Warning
            } else {
                Severity::Ok
            };
            if sev != Severity::Ok {
                let limit = if sev == Severity::Critical { t.crit_age } else { t.warn_age };
                out.push(Finding::new(
                    sev,
                    ds,
                    "freshness",
                    Some(format!("@{}", r.snapshot)),
                    format!(
                        "newest backup {} is {} old (limit {})",
                        r.describe(),
                        human_age(a.max(0)),
                        human_age(limit)
                    ),
                ));
            }
        }
        _ => {
            out.push(Finding::new(Severity::Critical, ds, "empty", None, format!("no committed backup of {ds} in S3")))
        }
    }

    // The chain that restores the newest restorable backup: what a restore would need.
    let chain_length = (0..records.len())
        .filter(|&i| health[i].is_restorable())
        .max_by_key(|&i| (records[i].time, i))
        .and_then(|i| chain::chain(&health, i))
        .map_or(0, |c| c.len());
    let summary = DatasetSummary {
        dataset: ds.to_string(),
        status: out.iter().map(|f| f.severity).max().unwrap_or(Severity::Ok),
        backups: records.len(),
        broken: health.iter().filter(|h| !h.is_restorable()).count(),
        bytes: records.iter().map(|r| r.bytes).sum(),
        newest: newest.map(|r| (r.snapshot.clone(), r.time)),
        age,
        chain_length,
    };
    (out, summary)
}

/// Groups of records that are one backup stored more than once, each in list order, the
/// groups by their first record. By guid, and by name for zfs3backup objects (a zfs3backup
/// object and a zsnap one of the same name and parent): hash lookups, linear in the records.
pub fn duplicate_groups(records: &[BackupRecord]) -> Vec<Vec<usize>> {
    let mut by_guid: HashMap<(u64, Kind, Option<u64>), Vec<usize>> = HashMap::new();
    let mut by_name: HashMap<(&str, Kind, Option<&str>), Vec<usize>> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        match r.guid {
            Some(g) => by_guid.entry((g, r.kind, r.from_guid)).or_default().push(i),
            None => by_name.entry((r.snapshot.as_str(), r.kind, r.from_snap.as_deref())).or_default().push(i),
        }
    }
    // A zsnap record joins the zfs3backup object of its name and parent, when there is one.
    for (i, r) in records.iter().enumerate().filter(|(_, r)| r.guid.is_some()) {
        if let Some(group) = by_name.get_mut(&(r.snapshot.as_str(), r.kind, r.from_snap.as_deref())) {
            group.push(i);
        }
    }
    let mut groups: Vec<Vec<usize>> =
        by_guid.into_values().chain(by_name.into_values()).filter(|g| g.len() > 1).collect();
    for g in &mut groups {
        g.sort_unstable();
        g.dedup();
    }
    debug_assert!(groups.iter().all(|g| g.windows(2).all(|w| records[w[0]].same_backup(&records[w[1]]))));
    groups.sort();
    groups
}

/// In-progress uploads older than the threshold (one whose start the server did not say
/// counts as stale only at a zero threshold), named by key. `dataset_of` says whose
/// upload a key is, for the finding's dataset.
pub fn stale_uploads(
    uploads: &[PendingUpload],
    now: i64,
    t: &Thresholds,
    dataset_of: &dyn Fn(&str) -> String,
) -> Vec<(PendingUpload, Finding)> {
    uploads
        .iter()
        .filter(|u| match u.initiated {
            Some(start) => now - start >= t.stale_uploads,
            None => t.stale_uploads == 0,
        })
        .map(|u| {
            let since = u.initiated.map_or("an unknown time".to_string(), |s| human_age((now - s).max(0)));
            let f = Finding::new(
                Severity::Warning,
                &dataset_of(&u.key),
                "stale-upload",
                Some(u.key.clone()),
                format!("upload {} of {} in progress for {since}, never committed", u.upload_id, u.key),
            );
            (u.clone(), f)
        })
        .collect()
}

/// The verdict of a run: the worst finding.
pub fn overall(findings: &[Finding]) -> Severity {
    findings.iter().map(|f| f.severity).max().unwrap_or(Severity::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(snap: &str, guid: u64, from: Option<(u64, &str)>, time: i64) -> BackupRecord {
        BackupRecord {
            dataset: "tank/d".into(),
            snapshot: snap.into(),
            guid: Some(guid),
            kind: if from.is_some() { Kind::Inc } else { Kind::Full },
            from_guid: from.map(|f| f.0),
            from_snap: from.map(|f| f.1.to_string()),
            time,
            compressor: "zstd".into(),
            bytes: 10,
            key: format!("tank/d/@{snap}/{guid}-{}", from.map_or(0, |f| f.0)),
            legacy: false,
            send: Default::default(),
            encrypted_to: Vec::new(),
        }
    }

    fn cat(records: Vec<BackupRecord>) -> Catalog {
        Catalog { dataset: "tank/d".into(), records, ..Default::default() }
    }

    const H: i64 = 3600;

    /// (name, records, expected (severity, check, subject) findings, chain length)
    type Case = (&'static str, Vec<BackupRecord>, Vec<(Severity, &'static str, &'static str)>, usize);

    #[test]
    fn verdicts() {
        let t = Thresholds::default();
        let now = 1_000 * H;
        let fresh = now - H;
        let s1 = || rec("s1", 1, None, fresh - 2);
        let s2 = || rec("s2", 2, Some((1, "s1")), fresh - 1);
        let s3 = || rec("s3", 3, Some((2, "s2")), fresh);
        // (case, records, expected (severity, check, subject) findings, chain length)
        let cases: Vec<Case> = vec![
            ("healthy chain", vec![s1(), s2(), s3()], vec![], 3),
            (
                "missing middle: its dependents named",
                vec![s1(), s3(), rec("s4", 4, Some((3, "s3")), fresh)],
                vec![(Severity::Critical, "chain", "@s3"), (Severity::Critical, "chain", "@s4")],
                1,
            ),
            ("no full", vec![s2()], vec![(Severity::Critical, "chain", "@s2")], 0),
            ("empty", vec![], vec![(Severity::Critical, "empty", "")], 0),
            ("full and inc of one guid is fine", vec![s1(), s2(), rec("s2", 2, None, fresh - 1)], vec![], 1),
            (
                "same guid, same parent twice",
                vec![s1(), s2(), {
                    let mut d = s2();
                    d.key.push_str("-copy");
                    d
                }],
                vec![(Severity::Warning, "duplicate", "@s2")],
                2,
            ),
            (
                "26h old: warning",
                vec![rec("s1", 1, None, now - 27 * H)],
                vec![(Severity::Warning, "freshness", "@s1")],
                1,
            ),
            (
                "50h old: critical",
                vec![rec("s1", 1, None, now - 50 * H)],
                vec![(Severity::Critical, "freshness", "@s1")],
                1,
            ),
            ("just under the limit", vec![rec("s1", 1, None, now - 26 * H + 1)], vec![], 1),
        ];
        for (name, records, want, chain_len) in cases {
            let (found, summary) = check_catalog(&cat(records), now, &t);
            let got: Vec<(Severity, &str, &str)> =
                found.iter().map(|f| (f.severity, f.check.as_str(), f.subject.as_deref().unwrap_or(""))).collect();
            assert_eq!(got, want, "{name}: {found:#?}");
            assert_eq!(summary.chain_length, chain_len, "{name}");
            assert_eq!(summary.status, overall(&found), "{name}");
        }
    }

    #[test]
    fn one_snapshot_stored_by_zfs3backup_and_by_zsnap_is_a_duplicate() {
        use crate::catalog::chain::tests::legacy;
        let now = 100 * H;
        let (l1, l2) = (legacy("s1", None, now - 3), legacy("s2", Some("s1"), now - 2));
        // (case, records, duplicate subjects)
        let cases = [
            (
                "zsnap's @s3 on zfs3backup's @s2, then zfs3backup's own @s3",
                vec![l1.clone(), l2.clone(), rec("s3", 3, Some((2, "s2")), now), legacy("s3", Some("s2"), now)],
                vec!["@s3"],
            ),
            (
                "the same name from another parent is another backup",
                vec![l1.clone(), l2.clone(), rec("s3", 3, Some((1, "s1")), now), legacy("s3", Some("s2"), now)],
                vec![],
            ),
            ("a zsnap full and a zfs3backup full of one name", vec![l1.clone(), rec("s1", 1, None, now)], vec!["@s1"]),
            (
                "a zsnap full beside a zfs3backup incremental is fine",
                vec![l1.clone(), l2.clone(), rec("s2", 2, None, now)],
                vec![],
            ),
        ];
        for (name, records, want) in cases {
            let (found, summary) = check_catalog(&cat(records.clone()), now, &Thresholds::default());
            let dups: Vec<&Finding> = found.iter().filter(|f| f.check == "duplicate").collect();
            let subjects: Vec<&str> = dups.iter().map(|f| f.subject.as_deref().unwrap_or("")).collect();
            assert_eq!(subjects, want, "{name}: {found:#?}");
            for f in dups {
                assert_eq!(f.severity, Severity::Warning, "{name}");
                // Both keys, each with the tool that wrote it.
                for r in records.iter().filter(|r| Some(format!("@{}", r.snapshot)) == f.subject) {
                    assert!(f.message.contains(&format!("by {} as {}", r.writer(), r.key)), "{name}: {}", f.message);
                }
                assert!(f.message.contains("zfs3backup and zsnap both back up this prefix"), "{}", f.message);
            }
            assert_eq!(summary.status, overall(&found), "{name}");
        }
    }

    #[test]
    fn a_broken_chain_names_the_missing_object() {
        let now = 100 * H;
        let (found, _) = check_catalog(
            &cat(vec![rec("s1", 1, None, now - 10), rec("s3", 3, Some((2, "s2")), now)]),
            now,
            &Thresholds::default(),
        );
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("parent @s2 (guid 2) of @s3 is not in S3"), "{}", found[0].message);
        assert!(
            found[0]
                .message
                .ends_with("send a full (zsnap-backup --full) and then run zsnap-prune --broken to delete this orphan"),
            "{}",
            found[0].message
        );
        // After a healing full of @s3, the orphan is named for zsnap-prune --broken.
        let mut healed = rec("s3", 3, None, now);
        healed.key.push_str("-full");
        let records = vec![rec("s1", 1, None, now - 10), rec("s3", 3, Some((2, "s2")), now), healed];
        let (found, _) = check_catalog(&cat(records), now, &Thresholds::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].message.ends_with(
                "full @s3 (guid 3) restores a snapshot at least as new: run zsnap-prune --broken to delete this orphan"
            ),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn stale_upload_ages() {
        let u = |k: &str, at: Option<i64>| PendingUpload { key: k.into(), upload_id: "id".into(), initiated: at };
        let now = 100 * H;
        let all = [u("old", Some(now - 25 * H)), u("new", Some(now - H)), u("unknown", None)];
        let of = |_: &str| "tank/d".to_string();
        // (threshold, keys reported)
        for (limit, want) in [(24 * H, vec!["old"]), (H, vec!["old", "new"]), (0, vec!["old", "new", "unknown"])] {
            let t = Thresholds { stale_uploads: limit, ..Default::default() };
            let got: Vec<String> = stale_uploads(&all, now, &t, &of).into_iter().map(|(u, _)| u.key).collect();
            assert_eq!(got, want, "threshold {limit}");
        }
    }

    #[test]
    fn ages_read_well() {
        for (secs, text) in [(5, "5s"), (61, "1m1s"), (3 * H + 120, "3h2m"), (50 * H, "2d2h")] {
            assert_eq!(human_age(secs), text);
        }
    }
}
