//! Which committed records can be restored. Pure. A committed full is a chain root; an
//! incremental is restorable iff one of its parents (by guid; by name for zfs3backup
//! objects, which have no guid) is committed and itself restorable. A broken record names
//! the first missing link, so the message points at the object to find or re-send.

use super::{BackupRecord, Kind};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
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
    /// Restorable through `parent` (an index; `None` for a full), `depth` records long
    /// counting this one. Stored as a pointer, not the whole chain, so 10,000 chained
    /// records take linear memory.
    Restorable {
        parent: Option<usize>,
        depth: usize,
    },
    Broken {
        missing: MissingLink,
    },
}

impl Health {
    pub fn is_restorable(&self) -> bool {
        matches!(self, Health::Restorable { .. })
    }

    /// Length of the chain that restores this record (full first, this one last).
    pub fn depth(&self) -> Option<usize> {
        match self {
            Health::Restorable { depth, .. } => Some(*depth),
            Health::Broken { .. } => None,
        }
    }
}

/// Indexes of the records to receive to restore `records[i]`, full first; `None` when
/// its chain is broken.
pub fn chain(health: &[Health], i: usize) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    let mut cur = Some(i);
    while let Some(c) = cur {
        match health.get(c)? {
            Health::Restorable { parent, .. } => {
                out.push(c);
                cur = *parent;
            }
            Health::Broken { .. } => return None,
        }
        if out.len() > health.len() {
            return None;
        }
    }
    out.reverse();
    Some(out)
}

/// The full at the root of every restorable record's chain (in linear time).
pub fn roots(health: &[Health]) -> Vec<Option<usize>> {
    let mut order: Vec<usize> = (0..health.len()).filter(|&i| health[i].is_restorable()).collect();
    order.sort_by_key(|&i| health[i].depth());
    let mut root = vec![None; health.len()];
    for i in order {
        root[i] = match &health[i] {
            Health::Restorable { parent: None, .. } => Some(i),
            Health::Restorable { parent: Some(p), .. } => root[*p],
            Health::Broken { .. } => None,
        };
    }
    root
}

/// Candidate parents by guid and, for zfs3backup objects, by name. Built once per catalog
/// at 100,000 records, so it allocates per duplicate, not per record: the first record of
/// a guid or name sits in the map itself, later ones (copies of one snapshot) in `more`.
struct Index<'a> {
    by_guid: HashMap<u64, usize>,
    more_guid: HashMap<u64, Vec<usize>>,
    /// Records without a guid (zfs3backup), by name: any incremental may name one.
    legacy_by_name: HashMap<&'a str, Vec<usize>>,
    /// Every record by name, only when some incremental has a parent name but no parent
    /// guid (a zfs3backup incremental): it may follow any record of that name.
    all_by_name: Option<HashMap<&'a str, Vec<usize>>>,
}

impl<'a> Index<'a> {
    fn new(records: &'a [BackupRecord]) -> Self {
        let mut by_guid: HashMap<u64, usize> = HashMap::with_capacity(records.len());
        let mut more_guid: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut legacy_by_name: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, r) in records.iter().enumerate() {
            match r.guid.map(|g| (g, by_guid.entry(g))) {
                Some((_, Entry::Vacant(e))) => {
                    e.insert(i);
                }
                Some((g, Entry::Occupied(_))) => more_guid.entry(g).or_default().push(i),
                None => legacy_by_name.entry(r.snapshot.as_str()).or_default().push(i),
            }
        }
        let by_name_needed = records.iter().any(|r| r.kind != Kind::Full && r.from_guid.is_none());
        let all_by_name = by_name_needed.then(|| {
            let mut m: HashMap<&str, Vec<usize>> = HashMap::new();
            for (i, r) in records.iter().enumerate() {
                m.entry(r.snapshot.as_str()).or_default().push(i);
            }
            m
        });
        Index { by_guid, more_guid, legacy_by_name, all_by_name }
    }

    /// Records that can serve as the parent of `records[i]`: same guid as its `from`; or,
    /// when either side has no guid (zfs3backup), the same name as its `fromsnap`. Into
    /// `out` (cleared first), sorted, without `i` itself.
    fn parents_into(&self, records: &[BackupRecord], i: usize, out: &mut Vec<usize>) {
        out.clear();
        let r = &records[i];
        if r.kind == Kind::Full {
            return;
        }
        if let Some(fg) = r.from_guid {
            out.extend(self.by_guid.get(&fg).copied());
            out.extend(self.more_guid.get(&fg).into_iter().flatten().copied());
        }
        if let Some(name) = r.from_snap.as_deref() {
            let names = match (&self.all_by_name, r.from_guid) {
                (Some(all), None) => all.get(name),
                _ => self.legacy_by_name.get(name),
            };
            out.extend(names.into_iter().flatten().copied());
        }
        out.retain(|&j| j != i);
        out.sort_unstable();
        out.dedup();
    }

    fn parents(&self, records: &[BackupRecord], i: usize) -> Vec<usize> {
        let mut out = Vec::new();
        self.parents_into(records, i, &mut out);
        out
    }
}

/// Records that can serve as the parent of `records[i]`.
pub fn parents(records: &[BackupRecord], i: usize) -> Vec<usize> {
    Index::new(records).parents(records, i)
}

/// The candidate parents of every record, index for index.
pub fn all_parents(records: &[BackupRecord]) -> Vec<Vec<usize>> {
    let index = Index::new(records);
    (0..records.len()).map(|i| index.parents(records, i)).collect()
}

/// Health of every record, index for index. Iterative (no recursion), so a chain of any
/// length is fine; a loop (only hand-made keys can make one) counts as a missing link.
pub fn health(records: &[BackupRecord]) -> Vec<Health> {
    let index = Index::new(records);
    let mut memo: Vec<Option<Health>> = vec![None; records.len()];
    let mut expanded = vec![false; records.len()];
    // Reused for every record: at 100,000 records an allocation each is a tenth of a second.
    let (mut stack, mut parents) = (Vec::new(), Vec::new());
    for root in 0..records.len() {
        if memo[root].is_some() {
            continue;
        }
        stack.clear();
        stack.push(root);
        while let Some(&i) = stack.last() {
            if memo[i].is_some() {
                stack.pop();
                continue;
            }
            let r = &records[i];
            if r.kind == Kind::Full {
                memo[i] = Some(Health::Restorable { parent: None, depth: 1 });
                stack.pop();
                continue;
            }
            index.parents_into(records, i, &mut parents);
            if !expanded[i] {
                expanded[i] = true;
                let before = stack.len();
                stack.extend(parents.iter().copied().filter(|&p| memo[p].is_none() && !expanded[p]));
                if stack.len() > before {
                    continue;
                }
            }
            // Every parent is resolved now, or is waiting further down the stack (a loop).
            let mut best: Option<(usize, usize)> = None;
            let mut deeper: Option<MissingLink> = None;
            for &p in &parents {
                match &memo[p] {
                    Some(Health::Restorable { depth, .. }) if best.is_none_or(|(_, d)| *depth < d) => {
                        best = Some((p, *depth));
                    }
                    Some(Health::Broken { missing }) => {
                        deeper.get_or_insert_with(|| missing.clone());
                    }
                    _ => {}
                }
            }
            memo[i] = Some(match best {
                Some((p, d)) => Health::Restorable { parent: Some(p), depth: d + 1 },
                None => Health::Broken {
                    missing: deeper.unwrap_or_else(|| MissingLink {
                        snapshot: r.from_snap.clone().unwrap_or_default(),
                        guid: r.from_guid,
                        needed_by: r.snapshot.clone(),
                    }),
                },
            });
            stack.pop();
        }
    }
    memo.into_iter()
        .map(|h| {
            h.unwrap_or(Health::Broken {
                missing: MissingLink { snapshot: String::new(), guid: None, needed_by: String::new() },
            })
        })
        .collect()
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
            send: Default::default(),
            encrypted_to: Vec::new(),
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
            send: Default::default(),
            encrypted_to: Vec::new(),
        }
    }

    fn chains(records: &[BackupRecord]) -> Vec<Result<Vec<usize>, String>> {
        let h = health(records);
        (0..records.len())
            .map(|i| match &h[i] {
                Health::Restorable { .. } => chain(&h, i).ok_or_else(|| "no chain".to_string()),
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
    fn ten_thousand_in_one_chain() {
        let mut r = vec![rec("s0", 1, None, 0)];
        for g in 2..=10_000u64 {
            r.push(rec(&format!("s{g}"), g, Some((g - 1, "x")), g as i64));
        }
        r.reverse(); // children before parents: the worst order for a naive walk
        let h = health(&r);
        assert_eq!(h[0].depth(), Some(10_000));
        assert_eq!(chain(&h, 0).map(|c| c.len()), Some(10_000));
        assert!(h.iter().all(Health::is_restorable));
    }

    #[test]
    fn loops_are_broken_not_endless() {
        let r = [rec("a", 1, Some((2, "b")), 1), rec("b", 2, Some((1, "a")), 2)];
        assert!(chains(&r).iter().all(|c| c.is_err()));
    }
}
