//! Which committed records can be restored. Pure. A committed full is a chain root; an
//! incremental is restorable iff one of its parents (by guid; by name for zfs3backup
//! objects, which have no guid) is committed and itself restorable. A broken record names
//! the first missing link, so the message points at the object to find or re-send.

use super::{BackupRecord, Kind};
use std::fmt;

/// The object a chain lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingLink {
    /// Name of the missing parent snapshot.
    pub snapshot: String,
    /// Its guid, when the child recorded one.
    pub guid: Option<u64>,
    /// The snapshot whose record needs it.
    pub needed_by: String,
}

impl fmt::Display for MissingLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.guid {
            Some(g) => write!(f, "parent @{} (guid {g}) of @{} is not in S3", self.snapshot, self.needed_by),
            None => write!(f, "parent @{} (by name) of @{} is not in S3", self.snapshot, self.needed_by),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Indexes of the records to receive, full first, this record last.
    Restorable {
        chain: Vec<usize>,
    },
    Broken {
        missing: MissingLink,
    },
}

impl Health {
    pub fn is_restorable(&self) -> bool {
        matches!(self, Health::Restorable { .. })
    }

    pub fn chain(&self) -> Option<&[usize]> {
        match self {
            Health::Restorable { chain } => Some(chain),
            Health::Broken { .. } => None,
        }
    }
}

/// Records that can serve as the parent of `records[i]`.
pub fn parents(records: &[BackupRecord], i: usize) -> Vec<usize> {
    let r = &records[i];
    if r.kind == Kind::Full {
        return Vec::new();
    }
    let (from_guid, from_snap) = (r.from_guid, r.from_snap.as_deref());
    (0..records.len())
        .filter(|&j| j != i)
        .filter(|&j| {
            let p = &records[j];
            match (from_guid, p.guid) {
                (Some(fg), Some(pg)) => fg == pg,
                // A zfs3backup parent, or a zfs3backup child: only the name can match.
                _ => from_snap.is_some_and(|n| n == p.snapshot),
            }
        })
        .collect()
}

/// Health of every record, index for index.
pub fn health(records: &[BackupRecord]) -> Vec<Health> {
    let mut memo: Vec<Option<Health>> = vec![None; records.len()];
    let mut visiting = vec![false; records.len()];
    for i in 0..records.len() {
        resolve(records, i, &mut memo, &mut visiting);
    }
    memo.into_iter().map(|h| h.expect("every record resolved")).collect()
}

fn resolve(records: &[BackupRecord], i: usize, memo: &mut [Option<Health>], visiting: &mut [bool]) -> Health {
    if let Some(h) = &memo[i] {
        return h.clone();
    }
    let r = &records[i];
    let missing = MissingLink {
        snapshot: r.from_snap.clone().unwrap_or_default(),
        guid: r.from_guid,
        needed_by: r.snapshot.clone(),
    };
    if visiting[i] {
        // Only hand-made keys can loop; treat the loop as a missing root.
        return Health::Broken { missing };
    }
    visiting[i] = true;
    let h = if r.kind == Kind::Full {
        Health::Restorable { chain: vec![i] }
    } else {
        let mut best: Option<Vec<usize>> = None;
        let mut deeper: Option<MissingLink> = None;
        for p in parents(records, i) {
            match resolve(records, p, memo, visiting) {
                Health::Restorable { chain } => {
                    if best.as_ref().is_none_or(|b| chain.len() < b.len()) {
                        best = Some(chain);
                    }
                }
                Health::Broken { missing } => {
                    deeper.get_or_insert(missing);
                }
            }
        }
        match best {
            Some(mut chain) => {
                chain.push(i);
                Health::Restorable { chain }
            }
            None => Health::Broken { missing: deeper.unwrap_or(missing) },
        }
    };
    visiting[i] = false;
    memo[i] = Some(h.clone());
    h
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A zsnap record; `from` is (guid, name) of the parent.
    pub fn rec(snap: &str, guid: u64, from: Option<(u64, &str)>, time: i64) -> BackupRecord {
        BackupRecord {
            dataset: "tank/data".into(),
            snapshot: snap.into(),
            guid: Some(guid),
            kind: if from.is_some() { Kind::Inc } else { Kind::Full },
            from_guid: from.map(|f| f.0),
            from_snap: from.map(|f| f.1.to_string()),
            time,
            compressor: "zstd".into(),
            bytes: 100,
            key: format!("tank/data/@{snap}/zsnap1,guid={guid}"),
            legacy: false,
        }
    }

    /// A zfs3backup record; `parent` is the parent's snapshot name.
    pub fn legacy(snap: &str, parent: Option<&str>, time: i64) -> BackupRecord {
        BackupRecord {
            dataset: "tank/data".into(),
            snapshot: snap.into(),
            guid: None,
            kind: if parent.is_some() { Kind::Inc } else { Kind::Full },
            from_guid: None,
            from_snap: parent.map(str::to_string),
            time,
            compressor: "gzip".into(),
            bytes: 100,
            key: format!("tank/data@{snap}"),
            legacy: true,
        }
    }

    fn chains(records: &[BackupRecord]) -> Vec<Result<Vec<usize>, String>> {
        health(records)
            .into_iter()
            .map(|h| match h {
                Health::Restorable { chain } => Ok(chain),
                Health::Broken { missing } => Err(missing.to_string()),
            })
            .collect()
    }

    #[test]
    fn healthy_chain() {
        let r = [rec("s1", 1, None, 1), rec("s2", 2, Some((1, "s1")), 2), rec("s3", 3, Some((2, "s2")), 3)];
        assert_eq!(chains(&r), vec![Ok(vec![0]), Ok(vec![0, 1]), Ok(vec![0, 1, 2])]);
    }

    #[test]
    fn missing_middle_names_the_link() {
        let r = [rec("s1", 1, None, 1), rec("s3", 3, Some((2, "s2")), 3), rec("s4", 4, Some((3, "s3")), 4)];
        let c = chains(&r);
        assert_eq!(c[0], Ok(vec![0]));
        assert_eq!(c[1], Err("parent @s2 (guid 2) of @s3 is not in S3".into()));
        assert_eq!(c[2], Err("parent @s2 (guid 2) of @s3 is not in S3".into()), "the root cause, not the symptom");
    }

    #[test]
    fn renamed_parent_matches_by_guid_not_name() {
        let r = [rec("old-name", 1, None, 1), rec("s2", 2, Some((1, "new-name")), 2)];
        assert_eq!(chains(&r)[1], Ok(vec![0, 1]));
        // Same name, different guid: not the parent.
        let r = [rec("s1", 9, None, 1), rec("s2", 2, Some((1, "s1")), 2)];
        assert!(chains(&r)[1].is_err());
    }

    #[test]
    fn legacy_by_name_and_mixed() {
        let r = [
            legacy("d1", None, 1),
            legacy("d2", Some("d1"), 2),
            rec("d3", 3, Some((77, "d2")), 3),
            legacy("d5", Some("d4"), 5),
        ];
        let c = chains(&r);
        assert_eq!(c[1], Ok(vec![0, 1]));
        assert_eq!(c[2], Ok(vec![0, 1, 2]), "a zsnap incremental on a zfs3backup base, matched by name");
        assert_eq!(c[3], Err("parent @d4 (by name) of @d5 is not in S3".into()));
    }

    #[test]
    fn shortest_restorable_chain_wins() {
        // s3 exists as an incremental on a broken s2 and as a full of its own.
        let r = [rec("s2", 2, Some((1, "s1")), 2), rec("s3", 3, Some((2, "s2")), 3), rec("s3", 3, None, 3)];
        let r2 = [r[0].clone(), r[1].clone(), r[2].clone(), rec("s4", 4, Some((3, "s3")), 4)];
        assert_eq!(chains(&r2)[3], Ok(vec![2, 3]));
    }

    #[test]
    fn loops_are_broken_not_endless() {
        let r = [rec("a", 1, Some((2, "b")), 1), rec("b", 2, Some((1, "a")), 2)];
        assert!(chains(&r).iter().all(|c| c.is_err()));
    }
}
