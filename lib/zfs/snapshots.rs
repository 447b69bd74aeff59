//! Local snapshots: running `zfs get` and parsing it into `Snapshot`s.
//!
//! `zfs get -H -p -o name,property,value guid,createtxg,creation,used,referenced -d 1 DS`
//! is the one form that works on both zfs-fuse (no `zfs list -p`, no `zfs get -t`) and
//! OpenZFS; depth 1 covers the dataset's own snapshots (children's are filtered out).
//! On OpenZFS the same listing also holds the dataset's bookmarks (`DS#NAME`, whose
//! guid is that of the snapshot they mark) and, where the `zfs` has encryption, the
//! dataset's `encryption` property: one `zfs get` says all a backup plan needs locally.

use super::error::{ZfsError, ZfsErrorKind};
use super::features::Features;
use crate::cli::Failure;
use std::collections::BTreeMap;
use std::process::Command;

/// One local snapshot, as plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub dataset: String,
    /// The part after `@`.
    pub name: String,
    pub guid: u64,
    /// Transaction group it was created in: orders snapshots even within one second.
    pub createtxg: u64,
    /// Unix seconds.
    pub creation: i64,
    pub used: u64,
    /// Allocated bytes, after ZFS compression.
    pub referenced: u64,
    /// `referenced` × `compressratio`: about what a full send stream carries (streams are
    /// uncompressed). `None` when zfs gave no ratio.
    pub logical_referenced: Option<u64>,
    /// User holds (`userrefs`): a held snapshot cannot be destroyed, so rotation skips it.
    pub holds: u64,
}

/// A bookmark of the dataset (`DS#NAME`): the guid and txg of the snapshot it was made
/// from, enough to send an incremental from after that snapshot is destroyed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bookmark {
    pub dataset: String,
    /// The part after `#`.
    pub name: String,
    pub guid: u64,
    pub createtxg: u64,
    pub creation: i64,
}

/// What one `zfs get` says about a dataset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Ordered by createtxg.
    pub snapshots: Vec<Snapshot>,
    /// Ordered by createtxg; empty where zfs has no bookmarks.
    pub bookmarks: Vec<Bookmark>,
    /// The dataset's `encryption` (`off`, `aes-256-gcm`, …); `None` where zfs has no
    /// encryption.
    pub encryption: Option<String>,
}

impl Listing {
    /// Whether sends of this dataset must be raw (`zfs send -w`) to stay encrypted.
    pub fn encrypted(&self) -> bool {
        self.encryption.as_deref().is_some_and(|e| e != "off" && e != "-")
    }
}

const PROPERTIES: &str = "guid,createtxg,creation,used,referenced,compressratio,userrefs";

/// The `zfs` arguments that list `dataset`'s snapshots (and, where `features` has them,
/// its bookmarks and encryption).
pub fn command_args(dataset: &str, features: &Features) -> Vec<String> {
    let mut props = PROPERTIES.to_string();
    if features.encryption() {
        props.push_str(",encryption");
    }
    let mut v: Vec<String> = ["get", "-H", "-p", "-o", "name,property,value"].iter().map(|s| s.to_string()).collect();
    if features.bookmarks() {
        // zfs get lists bookmarks with -t only (the default is filesystems and volumes
        // with their snapshots on some releases).
        v.extend(["-t".into(), "filesystem,volume,snapshot,bookmark".into()]);
    }
    v.extend([props, "-d".into(), "1".into(), dataset.to_string()]);
    v
}

/// Parse `zfs get -H -p` output into `dataset`'s own snapshots, ordered by createtxg.
pub fn parse(dataset: &str, output: &str) -> Result<Vec<Snapshot>, String> {
    Ok(parse_listing(dataset, output)?.snapshots)
}

/// Parse `zfs get -H -p` output into `dataset`'s snapshots, bookmarks and encryption.
pub fn parse_listing(dataset: &str, output: &str) -> Result<Listing, String> {
    // name -> property -> value, for snapshots and bookmarks; children are skipped.
    let mut props: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut marks: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut encryption = None;
    for (n, line) in output.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut cols = line.split('\t');
        let (Some(name), Some(prop), Some(value), None) = (cols.next(), cols.next(), cols.next(), cols.next()) else {
            return Err(format!("line {}: expected NAME<TAB>PROPERTY<TAB>VALUE, got {line:?}", n + 1));
        };
        if name == dataset {
            if prop == "encryption" {
                encryption = Some(value.to_string());
            }
            continue;
        }
        let (map, ds, item) = match (name.split_once('@'), name.split_once('#')) {
            (Some((ds, snap)), _) => (&mut props, ds, snap),
            (None, Some((ds, mark))) => (&mut marks, ds, mark),
            (None, None) => continue,
        };
        if ds != dataset {
            continue;
        }
        map.entry(item.to_string()).or_default().insert(prop.to_string(), value.to_string());
    }
    let mut bookmarks = Vec::with_capacity(marks.len());
    for (name, p) in marks {
        let what = format!("{dataset}#{name}");
        bookmarks.push(Bookmark {
            dataset: dataset.to_string(),
            guid: number(&p, &what, "guid")?,
            createtxg: number(&p, &what, "createtxg")?,
            creation: number(&p, &what, "creation")?,
            name,
        });
    }
    bookmarks.sort_by_key(|b| b.createtxg);
    let mut out = Vec::with_capacity(props.len());
    for (name, p) in props {
        let what = format!("{dataset}@{name}");
        let referenced = number(&p, &what, "referenced")?;
        out.push(Snapshot {
            logical_referenced: p.get("compressratio").and_then(|r| logical(referenced, r)),
            // `-` on datasets and on zfs versions without holds: none.
            holds: p.get("userrefs").and_then(|v| v.parse().ok()).unwrap_or(0),
            dataset: dataset.to_string(),
            guid: number(&p, &what, "guid")?,
            createtxg: number(&p, &what, "createtxg")?,
            creation: number(&p, &what, "creation")?,
            used: number(&p, &what, "used")?,
            referenced,
            name,
        });
    }
    out.sort_by_key(|s| s.createtxg);
    Ok(Listing { snapshots: out, bookmarks, encryption })
}

/// `zfs bookmark DS@SNAP DS#SNAP`: the bookmark zsnap makes of a sent snapshot, named
/// like it (rotation knows zsnap's bookmarks by that name and the snapshot's guid).
pub fn bookmark_argv(dataset: &str, snapshot: &str) -> Vec<String> {
    vec!["zfs".into(), "bookmark".into(), format!("{dataset}@{snapshot}"), format!("{dataset}#{snapshot}")]
}

/// Property `k` of snapshot or bookmark `what` as a number, or why not.
fn number<T: std::str::FromStr>(p: &BTreeMap<String, String>, what: &str, k: &str) -> Result<T, String> {
    let v = p.get(k).ok_or_else(|| format!("{what}: zfs printed no {k}"))?;
    v.parse().map_err(|_| format!("{what}: {k} '{v}' is not a number"))
}

/// `referenced` scaled by a `compressratio` as zfs prints it (`26.68x` on zfs-fuse,
/// `26.68` with -p on OpenZFS), in integer hundredths so it stays exact.
fn logical(referenced: u64, ratio: &str) -> Option<u64> {
    let r = ratio.trim().trim_end_matches('x');
    let (whole, frac) = r.split_once('.').unwrap_or((r, "0"));
    let frac = format!("{frac:0<2}");
    let hundredths = whole.parse::<u64>().ok()?.checked_mul(100)?.checked_add(frac.get(..2)?.parse::<u64>().ok()?)?;
    u64::try_from(u128::from(referenced) * u128::from(hundredths.max(100)) / 100).ok()
}

/// Keep snapshots whose name starts with `prefix` (empty: all).
pub fn matching(snapshots: Vec<Snapshot>, prefix: &str) -> Vec<Snapshot> {
    snapshots.into_iter().filter(|s| s.name.starts_with(prefix)).collect()
}

/// What a failed `zfs get` said: a missing dataset is [`ZfsErrorKind::NotFound`].
pub fn get_error(dataset: &str, stderr: &str) -> ZfsError {
    if stderr.contains("does not exist") {
        ZfsError::new(ZfsErrorKind::NotFound, format!("dataset {dataset} does not exist"))
    } else {
        let line = stderr.split_whitespace().collect::<Vec<_>>().join(" ");
        ZfsError::new(ZfsErrorKind::Failed, format!("zfs get on {dataset} failed: {line}"))
    }
}

/// Run zfs. `Ok(None)` when the dataset does not exist (restore's target may not).
/// A [`Failure`] because its callers only pass the error on to `main`.
pub fn list_if_exists(dataset: &str) -> Result<Option<Vec<Snapshot>>, Failure> {
    match list(dataset) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind == ZfsErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Every snapshot of exactly `dataset`, ordered by createtxg.
pub fn list(dataset: &str) -> Result<Vec<Snapshot>, ZfsError> {
    Ok(zfs_get(dataset, &Features::default())?.snapshots)
}

/// [`zfs_get`] with its error as a [`Failure`], for callers that only pass it on to `main`.
pub fn read(dataset: &str, features: &Features) -> Result<Listing, Failure> {
    Ok(zfs_get(dataset, features)?)
}

/// Snapshots, bookmarks and encryption of `dataset`, as far as `features` has them: one
/// `zfs get` here.
pub fn zfs_get(dataset: &str, features: &Features) -> Result<Listing, ZfsError> {
    let out = Command::new("zfs")
        .args(command_args(dataset, features))
        .output()
        .map_err(|e| ZfsError::new(ZfsErrorKind::Failed, format!("cannot run zfs: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(get_error(dataset, &stderr));
    }
    parse_listing(dataset, &String::from_utf8_lossy(&out.stdout))
        .map_err(|e| ZfsError::new(ZfsErrorKind::Unreadable, format!("cannot read zfs get output: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "\
p/d\tguid\t3081875124545189775
p/d\tcreatetxg\t7
p/d\tcreation\t1795424120
p/d\tused\t237568
p/d\treferenced\t122880
p/d@b\tguid\t18203086585856280859
p/d@b\tcreatetxg\t19
p/d@b\tcreation\t1795424120
p/d@b\tused\t0
p/d@b\treferenced\t122880
p/d@b\tcompressratio\t26.68x
p/d@b\tuserrefs\t2
p/d@with space\tguid\t5048149443884892815
p/d@with space\tcreatetxg\t30
p/d@with space\tcreation\t1795424121
p/d@with space\tused\t10
p/d@with space\treferenced\t1
p/d@a\tguid\t4933935310680933476
p/d@a\tcreatetxg\t14
p/d@a\tcreation\t1795424120
p/d@a\tused\t0
p/d@a\treferenced\t122880
p/d/child\tguid\t15547374770614783807
p/d/child@c\tguid\t5071522000272583885
p/d/child@c\tcreatetxg\t24
";

    #[test]
    fn parses_own_snapshots_in_txg_order() {
        let v = parse("p/d", OUT).unwrap();
        let names: Vec<&str> = v.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["a", "b", "with space"]);
        assert_eq!(v[1].guid, 18203086585856280859);
        assert_eq!((v[2].creation, v[2].used, v[2].referenced), (1795424121, 10, 1));
        assert_eq!(v[1].logical_referenced, Some(3_278_438), "122880 x 26.68");
        assert_eq!(v[0].logical_referenced, None, "no ratio printed");
        assert_eq!((v[0].holds, v[1].holds), (0, 2));
        assert!(parse("p", OUT).unwrap().is_empty(), "the pool's own snapshots only");
    }

    #[test]
    fn compress_ratios() {
        assert_eq!(logical(1000, "1.00x"), Some(1000));
        assert_eq!(logical(1000, "2.5"), Some(2500));
        assert_eq!(logical(1000, "26.68"), Some(26_680));
        assert_eq!(logical(1000, "3x"), Some(3000));
        assert_eq!(logical(1000, "0.50x"), Some(1000), "never below what is allocated");
        assert_eq!(logical(1000, "-"), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("p/d", "p/d@a guid 1\n").unwrap_err().contains("line 1"));
        assert!(parse("p/d", "p/d@a\tguid\tx\np/d@a\tcreatetxg\t1\n").is_err());
        assert!(parse("p/d", "p/d@a\tguid\t1\n").unwrap_err().contains("zfs printed no"));
    }

    #[test]
    fn prefix_filter_and_missing_dataset() {
        let v = matching(parse("p/d", OUT).unwrap(), "with");
        assert_eq!(v.len(), 1);
        assert_eq!(matching(parse("p/d", OUT).unwrap(), "").len(), 3);
        let e = get_error("tank/x", "cannot open 'tank/x': dataset does not exist\n");
        assert_eq!((e.kind, e.message.as_str()), (ZfsErrorKind::NotFound, "dataset tank/x does not exist"));
        assert_eq!(get_error("tank/x", "boom").kind, ZfsErrorKind::Failed);
    }
}
