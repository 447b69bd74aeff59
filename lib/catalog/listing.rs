//! From a bucket listing to a [`Catalog`]. The decisions are pure functions over listing
//! rows `(key, size, last_modified)`, in-progress uploads and zfs3backup metadata; the S3
//! requests themselves are lib/s3's (list, head, uploads), which hand back those rows.
//!
//! One ListObjectsV2 pass over `<prefix><dataset>` finds both layouts (`<dataset>/@…` and
//! zfs3backup's `<dataset>@…`): 1,000 keys a page, so 10,000 backups cost 10 list requests,
//! plus one ListMultipartUploads and one HEAD per zfs3backup object. One pass over the
//! whole `<prefix>` reads every dataset's catalog at once ([`read_all`]).

use super::key::{self, ParsedKey};
use super::{chain, BackupRecord, Catalog, Kind, Uncommitted};
use crate::cli::Failure;
use crate::s3::client::Client;
use crate::s3::head::head_metadata;
use crate::s3::list::list_objects;
pub use crate::s3::list::ListedObject;
use crate::s3::uploads::{self, PendingUpload};
use crate::s3::S3Url;
use futures_util::StreamExt;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};

/// A listing sorted into what it holds for one dataset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sorted {
    pub records: Vec<BackupRecord>,
    /// zfs3backup objects of this dataset: need their metadata (one HEAD each).
    pub legacy: Vec<(ListedObject, String)>,
    pub foreign: Vec<(String, String)>,
}

/// The listed prefix for one dataset: covers both key layouts.
pub fn list_prefix(prefix: &str, dataset: &str) -> String {
    format!("{prefix}{dataset}")
}

/// The datasets among `wanted` that `key` lies under (`<prefix><dataset>/…` or
/// `<prefix><dataset>@…`): every cut of the key at a `/` or `@`, looked up, so the cost is
/// the key's length, not the number of datasets.
fn datasets_under<'a>(prefix: &str, wanted: &HashSet<&'a str>, key: &str) -> Vec<&'a str> {
    let Some(rest) = key.strip_prefix(prefix) else { return Vec::new() };
    rest.match_indices(['/', '@']).filter_map(|(at, _)| wanted.get(&rest[..at]).copied()).collect()
}

/// Sort listing rows. Backups of other datasets that share the listed prefix (children
/// such as `tank/data/child`, or `tank/data2`) are neither ours nor foreign: skipped.
pub fn sort_rows(prefix: &str, dataset: &str, rows: Vec<ListedObject>) -> Sorted {
    sort_by_dataset(prefix, &[dataset.to_string()], rows).remove(dataset).unwrap_or_default()
}

/// [`sort_rows`] for several datasets in one pass over one listing (of the whole prefix):
/// each row goes to the dataset its key names, a foreign key to every wanted dataset it
/// lies under. Every wanted dataset gets an entry, empty if nothing is listed for it.
pub fn sort_by_dataset(prefix: &str, datasets: &[String], rows: Vec<ListedObject>) -> BTreeMap<String, Sorted> {
    let mut out: BTreeMap<String, Sorted> = datasets.iter().map(|d| (d.clone(), Sorted::default())).collect();
    let wanted: HashSet<&str> = datasets.iter().map(String::as_str).collect();
    // One dataset's listing is (nearly) all its records: reserved once rather than doubled
    // as it grows (at 100,000 records the slack would be 6 MiB, the copies 20 MiB).
    if let ([_], Some(sorted)) = (datasets, out.values_mut().next()) {
        sorted.records.reserve_exact(rows.len());
    }
    for row in rows {
        match key::parse(prefix, &row.key) {
            ParsedKey::Zsnap(f) => {
                let Some(sorted) = out.get_mut(&f.dataset) else { continue };
                let (from_guid, from_snap) = match f.from {
                    Some((g, n)) => (Some(g), Some(n)),
                    None => (None, None),
                };
                sorted.records.push(BackupRecord {
                    dataset: f.dataset,
                    snapshot: f.snapshot,
                    guid: Some(f.guid),
                    kind: f.kind,
                    from_guid,
                    from_snap,
                    time: f.time,
                    compressor: f.compressor,
                    bytes: row.size,
                    key: row.key,
                    legacy: false,
                    send: f.send,
                    encrypted_to: f.encrypted_to,
                });
            }
            ParsedKey::Legacy { dataset: d, snapshot } => {
                if let Some(sorted) = out.get_mut(&d) {
                    sorted.legacy.push((row, snapshot));
                }
            }
            // `tank/data2/x` is another dataset's business, not foreign to `tank/data`.
            ParsedKey::Foreign(why) => {
                for d in datasets_under(prefix, &wanted, &row.key) {
                    if let Some(sorted) = out.get_mut(d) {
                        sorted.foreign.push((row.key.clone(), why.clone()));
                    }
                }
            }
        }
    }
    out
}

/// The datasets with a backup (zsnap or zfs3backup) among listing rows, in name order.
pub fn datasets_in(prefix: &str, rows: &[ListedObject]) -> Vec<String> {
    let found: BTreeSet<String> = backup_sizes(prefix, rows).into_iter().map(|(d, _)| d).collect();
    found.into_iter().collect()
}

/// zfs3backup's compressor names as ours: pigz at any level and gzip write gzip members.
pub fn legacy_compressor(name: Option<&str>) -> String {
    match name.map(str::trim) {
        None | Some("") | Some("none") => "none".into(),
        Some(n) if n == "gzip" || n.starts_with("pigz") => "gzip".into(),
        Some(other) => other.to_string(),
    }
}

/// A zfs3backup object from its listing row and user metadata. zfs3backup (like z3 before
/// it) marks a full with `isfull=true` (older versions: `is_full`) and an incremental with
/// only `parent=pool/fs@snap`; an object with neither is not one of its backups.
pub fn legacy_record(
    dataset: &str,
    snapshot: &str,
    row: &ListedObject,
    meta: &HashMap<String, String>,
) -> Result<BackupRecord, String> {
    let flag = ["isfull", "is_full"].iter().find_map(|k| meta.get(*k)).map(|v| v.trim().to_ascii_lowercase());
    let parent = meta.get("parent").map(|p| p.trim()).filter(|p| !p.is_empty());
    let (kind, from_snap) = match (flag.as_deref(), parent) {
        (Some("true"), _) => (Kind::Full, None),
        // `pool/fs@snap`; the part after `@` names the parent. A value that is no snapshot
        // name (one zfs3backup fork wrote a literal `{parent}`) matches nothing, so the
        // record shows up as broken rather than vanishing.
        (_, Some(p)) => (Kind::Inc, Some(p.rsplit_once('@').map(|(_, s)| s).unwrap_or(p).to_string())),
        (Some(other), None) => {
            return Err(format!("zfs3backup metadata isfull='{other}' without a parent"));
        }
        (None, None) => return Err("no zfs3backup metadata (isfull or parent)".into()),
    };
    Ok(BackupRecord {
        dataset: dataset.to_string(),
        snapshot: snapshot.to_string(),
        guid: None,
        kind,
        from_guid: None,
        from_snap,
        time: row.last_modified.unwrap_or(0),
        compressor: legacy_compressor(meta.get("compressor").map(String::as_str)),
        bytes: row.size,
        key: row.key.clone(),
        legacy: true,
        send: Default::default(),
        encrypted_to: Vec::new(),
    })
}

/// In-progress uploads whose key is a backup of this dataset.
pub fn uncommitted(prefix: &str, dataset: &str, pending: &[PendingUpload]) -> Vec<Uncommitted> {
    uncommitted_by_dataset(prefix, pending).remove(dataset).unwrap_or_default()
}

/// In-progress uploads whose key is a backup, by dataset, in one pass.
pub fn uncommitted_by_dataset(prefix: &str, pending: &[PendingUpload]) -> HashMap<String, Vec<Uncommitted>> {
    let mut out: HashMap<String, Vec<Uncommitted>> = HashMap::new();
    for u in pending {
        let (dataset, one) = match key::parse(prefix, &u.key) {
            ParsedKey::Zsnap(f) => (
                f.dataset,
                Uncommitted { snapshot: f.snapshot, guid: Some(f.guid), key: u.key.clone(), initiated: u.initiated },
            ),
            ParsedKey::Legacy { dataset, snapshot } => {
                (dataset, Uncommitted { snapshot, guid: None, key: u.key.clone(), initiated: u.initiated })
            }
            ParsedKey::Foreign(_) => continue,
        };
        out.entry(dataset).or_default().push(one);
    }
    out
}

/// Put the records in list order and build the catalog. List order is oldest first, but a
/// parent always comes before its children: times alone cannot say, since snapshots taken
/// in one second tie, and a zfs3backup object's time is its upload time while a zsnap
/// key's is the snapshot's creation (a zsnap incremental on a zfs3backup base can look
/// older than its parent).
pub fn assemble(
    prefix: &str,
    dataset: &str,
    mut records: Vec<BackupRecord>,
    uncommitted: Vec<Uncommitted>,
    foreign: Vec<(String, String)>,
) -> Catalog {
    records.sort_by(|a, b| (a.time, &a.snapshot, &a.key).cmp(&(b.time, &b.snapshot, &b.key)));
    // Kahn's topological sort, taking the oldest ready record first; records in a loop
    // (only hand-made keys) go last, oldest first.
    let parents = chain::all_parents(&records);
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); records.len()];
    let mut waiting: Vec<usize> = parents.iter().map(Vec::len).collect();
    for (i, ps) in parents.iter().enumerate() {
        for &p in ps {
            children[p].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..records.len()).filter(|&i| waiting[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(records.len());
    let mut placed = vec![false; records.len()];
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        placed[i] = true;
        for &c in &children[i] {
            waiting[c] -= 1;
            if waiting[c] == 0 {
                ready.push(Reverse(c));
            }
        }
    }
    order.extend((0..records.len()).filter(|&i| !placed[i]));
    // In place, not into a second vector: at 100,000 records one is 20 MiB.
    permute(&mut records, &order);
    Catalog { dataset: dataset.to_string(), prefix: prefix.to_string(), records, uncommitted, foreign }
}

/// Reorder `v` in place so that the new `v[k]` is the old `v[order[k]]` (`order` a
/// permutation of its indices), following each cycle once: O(n) swaps, none when `order`
/// is already the identity (the usual case: the listing sorted by time is list order).
pub(crate) fn permute<T>(v: &mut [T], order: &[usize]) {
    let mut done = vec![false; v.len()];
    for start in 0..v.len() {
        let mut at = start;
        while !done[at] {
            done[at] = true;
            let next = order[at];
            if next == start {
                break;
            }
            v.swap(at, next);
            at = next;
        }
    }
}

/// Read everything S3 holds for `dataset` under `prefix` (normalized) in `bucket`.
pub async fn read(client: &Client, bucket: &str, prefix: &str, dataset: &str) -> Result<Catalog, Failure> {
    let (mut catalogs, _) = read_all(client, bucket, prefix, Some(dataset)).await?;
    Ok(catalogs.pop().unwrap_or_default())
}

/// The catalog of `dataset`, or of every dataset with a backup under `prefix` (in name
/// order), from one ListObjectsV2 pass and one ListMultipartUploads whatever their number
/// (plus a HEAD per zfs3backup object); the in-progress uploads listed come back too.
pub async fn read_all(
    client: &Client,
    bucket: &str,
    prefix: &str,
    dataset: Option<&str>,
) -> Result<(Vec<Catalog>, Vec<PendingUpload>), Failure> {
    let listed = match dataset {
        Some(d) => list_prefix(prefix, d),
        None => prefix.to_string(),
    };
    let rows = list_objects(client, bucket, &listed).await?;
    let datasets = match dataset {
        Some(d) => vec![d.to_string()],
        None => datasets_in(prefix, &rows),
    };
    let mut sorted = sort_by_dataset(prefix, &datasets, rows);
    // One HEAD per zfs3backup object, 16 at a time: a large old bucket stays quick.
    let legacy: Vec<(String, ListedObject, String)> = sorted
        .iter_mut()
        .flat_map(|(d, s)| std::mem::take(&mut s.legacy).into_iter().map(|(row, snap)| (d.clone(), row, snap)))
        .collect();
    let heads: Vec<Result<HashMap<String, String>, Failure>> =
        futures_util::stream::iter(legacy.iter().map(|(_, row, _)| head_metadata(client, bucket, &row.key)))
            .buffered(16)
            .collect()
            .await;
    for ((d, row, snapshot), meta) in legacy.into_iter().zip(heads) {
        let Some(s) = sorted.get_mut(&d) else { continue };
        match legacy_record(&d, &snapshot, &row, &meta?) {
            Ok(r) => s.records.push(r),
            Err(why) => s.foreign.push((row.key, why)),
        }
    }
    let pending = uploads::list(client, &S3Url { bucket: bucket.to_string(), key: listed }).await?;
    let mut unc = uncommitted_by_dataset(prefix, &pending);
    let catalogs = sorted
        .into_iter()
        .map(|(d, s)| {
            let u = unc.remove(&d).unwrap_or_default();
            assemble(prefix, &d, s.records, u, s.foreign)
        })
        .collect();
    Ok((catalogs, pending))
}

/// The dataset each backup key under `prefix` belongs to, with its stored size; other keys
/// are left out. Pure: what a whole-prefix listing says about every dataset of a client.
pub fn backup_sizes(prefix: &str, rows: &[ListedObject]) -> Vec<(String, u64)> {
    rows.iter()
        .filter_map(|r| match key::parse(prefix, &r.key) {
            ParsedKey::Zsnap(f) => Some((f.dataset, r.size)),
            ParsedKey::Legacy { dataset, .. } => Some((dataset, r.size)),
            ParsedKey::Foreign(_) => None,
        })
        .collect()
}

/// [`backup_sizes`] of everything under `prefix` (one ListObjectsV2 pass over the prefix).
pub async fn backups_under(client: &Client, bucket: &str, prefix: &str) -> Result<Vec<(String, u64)>, Failure> {
    Ok(backup_sizes(prefix, &list_objects(client, bucket, prefix).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_follows_every_cycle() {
        for order in [vec![0, 1, 2, 3, 4], vec![4, 3, 2, 1, 0], vec![1, 2, 0, 4, 3], vec![2, 0, 1, 3, 4], vec![]] {
            let old: Vec<String> = (0..order.len()).map(|i| format!("r{i}")).collect();
            let mut v = old.clone();
            permute(&mut v, &order);
            let want: Vec<String> = order.iter().map(|&i| old[i].clone()).collect();
            assert_eq!(v, want, "{order:?}");
        }
    }

    fn row(key: &str, size: u64) -> ListedObject {
        ListedObject { key: key.into(), size, last_modified: Some(1000) }
    }

    #[test]
    fn listing_to_catalog() {
        let rows = vec![
            row("p/tank/data/@s2/zsnap1,kind=inc,guid=2,from=1,fromsnap=s1,time=20,z=zstd", 5),
            row("p/tank/data/@s1/zsnap1,kind=full,guid=1,time=10,z=zstd", 50),
            row("p/tank/data/@s1/notes.txt", 1),
            row("p/tank/data/child/@c/zsnap1,kind=full,guid=9,time=10,z=zstd", 7),
            row("p/tank/data2@x", 7),
            row("p/tank/data@old", 40),
            row("p/tank/data/README", 1),
            row("p/tank/data2/README", 1),
        ];
        let s = sort_rows("p/", "tank/data", rows);
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.records[0].bytes, 5);
        assert_eq!(s.legacy.len(), 1);
        assert_eq!(s.legacy[0].1, "old");
        let foreign: Vec<&str> = s.foreign.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(foreign, vec!["p/tank/data/@s1/notes.txt", "p/tank/data/README"]);

        let pending = vec![
            PendingUpload {
                key: "p/tank/data/@s3/zsnap1,kind=inc,guid=3,from=2,fromsnap=s2,time=30,z=zstd".into(),
                upload_id: "u".into(),
                initiated: Some(5),
            },
            PendingUpload { key: "p/tank/data/other".into(), upload_id: "v".into(), initiated: None },
        ];
        let unc = uncommitted("p/", "tank/data", &pending);
        assert_eq!(unc.len(), 1);
        assert_eq!((unc[0].snapshot.as_str(), unc[0].guid), ("s3", Some(3)));

        let cat = assemble("p/", "tank/data", s.records, unc, s.foreign);
        let names: Vec<&str> = cat.records.iter().map(|r| r.snapshot.as_str()).collect();
        assert_eq!(names, vec!["s1", "s2"]);
    }

    #[test]
    fn one_listing_sorts_every_dataset() {
        let rows = vec![
            row("p/tank/a/@s/zsnap1,kind=full,guid=1,time=2,z=none", 5),
            row("p/tank/a/b/@s/zsnap1,kind=full,guid=2,time=2,z=none", 7),
            row("p/tank/a/b/notes.txt", 1),
            row("p/tank/c@old", 11),
            row("p/tank/z/@s/zsnap1,kind=full,guid=3,time=2,z=none", 5),
            row("p/policy.json", 100),
        ];
        assert_eq!(datasets_in("p/", &rows), ["tank/a", "tank/a/b", "tank/c", "tank/z"]);
        let wanted = ["tank/a".to_string(), "tank/a/b".to_string(), "tank/c".to_string(), "tank/none".to_string()];
        let all = sort_by_dataset("p/", &wanted, rows.clone());
        let keys: Vec<&String> = all.keys().collect();
        assert_eq!(keys, ["tank/a", "tank/a/b", "tank/c", "tank/none"], "tank/z was not asked for");
        let guids = |d: &str| all[d].records.iter().map(|r| r.guid).collect::<Vec<_>>();
        assert_eq!((guids("tank/a"), guids("tank/a/b")), (vec![Some(1)], vec![Some(2)]));
        assert_eq!(all["tank/c"].legacy.len(), 1);
        // A foreign key counts for every dataset it lies under, as one dataset's listing sees it.
        let foreign = |d: &str| all[d].foreign.iter().map(|f| f.0.as_str()).collect::<Vec<_>>();
        assert_eq!(foreign("tank/a"), ["p/tank/a/b/notes.txt"]);
        assert_eq!(foreign("tank/a/b"), ["p/tank/a/b/notes.txt"]);
        assert_eq!(all["tank/none"], Sorted::default());
        for d in &wanted {
            assert_eq!(all[d], sort_rows("p/", d, rows.clone()), "{d}: one pass is many single passes");
        }
    }

    #[test]
    fn backups_by_dataset() {
        let rows = vec![
            row("p/tank/a/@s/zsnap1,kind=full,guid=1,time=2,z=none", 5),
            row("p/tank/a/b/@s/zsnap1,kind=full,guid=2,time=2,z=none", 7),
            row("p/tank/c@old", 11),
            row("p/policy.json", 100),
            row("p/tank/a/@s/notes.txt", 1),
        ];
        let got = backup_sizes("p/", &rows);
        assert_eq!(got, vec![("tank/a".into(), 5), ("tank/a/b".into(), 7), ("tank/c".into(), 11)]);
    }

    #[test]
    fn ties_in_time_put_parents_first() {
        let rows = vec![
            row("tank/@b/zsnap1,kind=inc,guid=2,from=1,fromsnap=c,time=10,z=zstd", 1),
            row("tank/@c/zsnap1,kind=full,guid=1,time=10,z=zstd", 1),
        ];
        let s = sort_rows("", "tank", rows);
        let cat = assemble("", "tank", s.records, vec![], vec![]);
        let names: Vec<&str> = cat.records.iter().map(|r| r.snapshot.as_str()).collect();
        assert_eq!(names, vec!["c", "b"]);
    }

    #[test]
    fn a_zsnap_child_of_a_zfs3backup_parent_comes_after_it() {
        // The zfs3backup objects were uploaded (time = LastModified) after the zsnap
        // incremental's snapshot was created (time = creation).
        let zsnap = "p/tank/@s3/zsnap1,kind=inc,guid=3,from=2,fromsnap=s2,time=100,z=zstd";
        let s = sort_rows("p/", "tank", vec![row(zsnap, 1)]);
        let mut records = s.records;
        let legacy = |snap: &str, parent: Option<&str>| {
            let r = ListedObject { key: format!("p/tank@{snap}"), size: 1, last_modified: Some(500) };
            let mut m = HashMap::new();
            match parent {
                Some(p) => m.insert("parent".to_string(), format!("tank@{p}")),
                None => m.insert("isfull".to_string(), "true".to_string()),
            };
            legacy_record("tank", snap, &r, &m).unwrap()
        };
        records.push(legacy("s2", Some("s1")));
        records.push(legacy("s1", None));
        let cat = assemble("p/", "tank", records, vec![], vec![]);
        let names: Vec<&str> = cat.records.iter().map(|r| r.snapshot.as_str()).collect();
        assert_eq!(names, vec!["s1", "s2", "s3"]);
    }

    #[test]
    fn legacy_metadata() {
        let meta = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let r = row("tank/data@d2", 9);
        // As zfs3backup writes them: incrementals carry only `parent`.
        let inc = legacy_record("tank/data", "d2", &r, &meta(&[("parent", "tank/data@d1"), ("compressor", "pigz4")]))
            .unwrap();
        assert_eq!((inc.kind, inc.from_snap.as_deref(), inc.compressor.as_str()), (Kind::Inc, Some("d1"), "gzip"));
        assert!(inc.legacy && inc.guid.is_none());
        let inc = legacy_record("tank/data", "d2", &r, &meta(&[("isfull", "false"), ("parent", "tank/data@d1")]));
        assert_eq!(inc.map(|i| i.kind), Ok(Kind::Inc));
        let full = legacy_record("tank/data", "d1", &r, &meta(&[("isfull", "true")])).unwrap();
        assert_eq!((full.kind, full.compressor.as_str()), (Kind::Full, "none"));
        let old = legacy_record("tank/data", "d1", &r, &meta(&[("is_full", "true"), ("size", "123")])).unwrap();
        assert_eq!(old.kind, Kind::Full, "z3's older underscore spelling");
        let bad = legacy_record("tank/data", "d2", &r, &meta(&[("parent", "{parent}")])).unwrap();
        assert_eq!(bad.from_snap.as_deref(), Some("{parent}"), "kept, so the chain shows as broken");
        assert!(legacy_record("tank/data", "d1", &r, &meta(&[])).unwrap_err().contains("isfull or parent"));
        assert!(legacy_record("tank/data", "d1", &r, &meta(&[("isfull", "false")])).unwrap_err().contains("parent"));
        assert_eq!(legacy_compressor(Some("pigz1")), "gzip");
        assert_eq!(legacy_compressor(Some("gzip")), "gzip");
        assert_eq!(legacy_compressor(Some("bzip2")), "bzip2");
    }
}
