//! What a backup is in S3: key names (see docs/FORMAT.md), and reading a listing into
//! backup records. Planning needs nothing but ListObjectsV2 (plus ListMultipartUploads
//! for uncommitted leftovers, and one HEAD per zfs3backup object for its metadata).
//!
//! Layout: `key` encodes and parses names (pure), `listing` turns listing rows into a
//! [`Catalog`] (pure) and reads them from S3 (thin I/O), `chain` decides which records
//! can be restored (pure).

pub mod chain;
pub mod key;
pub mod listing;

pub use chain::{Health, MissingLink};

/// Every zsnap backup object's base name starts with this tag (format version 1).
pub const KEY_TAG: &str = "zsnap1,";

/// A full stream, or an incremental from exactly one parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Full,
    Inc,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Inc => "inc",
        }
    }
}

/// One committed backup object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupRecord {
    pub dataset: String,
    /// The snapshot's name when it was sent (identity is the guid).
    pub snapshot: String,
    /// `None` for zfs3backup objects: they are identified by name.
    pub guid: Option<u64>,
    pub kind: Kind,
    pub from_guid: Option<u64>,
    pub from_snap: Option<String>,
    /// Snapshot creation (zsnap keys) or upload time (zfs3backup objects), Unix seconds.
    pub time: i64,
    /// `none`, `zstd`, `gzip`, `lz4`, `x-NAME`, or whatever a zfs3backup object recorded.
    pub compressor: String,
    /// Stored size, from the listing.
    pub bytes: u64,
    /// Key relative to the bucket.
    pub key: String,
    /// A zfs3backup object (`<dataset>@<snapshot>`, metadata instead of key fields).
    pub legacy: bool,
    /// The `zfs send` options it was made with (none for zfs3backup objects).
    pub send: crate::zfs::send::SendOptions,
    /// Fingerprints of the age recipients it is encrypted to; empty when it is not.
    pub encrypted_to: Vec<String>,
}

impl BackupRecord {
    /// The (toguid, fromguid) its send stream must carry, 0 as fromguid for a full; `None`
    /// for zfs3backup objects, whose guids were never recorded.
    pub fn stream_guids(&self) -> Option<(u64, u64)> {
        self.guid.map(|g| (g, self.from_guid.unwrap_or(0)))
    }

    /// Whether this record holds the local snapshot `name` with `guid`: by guid, or by
    /// name for zfs3backup objects, which have none.
    pub fn holds(&self, guid: u64, name: &str) -> bool {
        match self.guid {
            Some(g) => g == guid,
            None => self.snapshot == name,
        }
    }

    /// Whether `self` and `other` are one backup stored twice: the same snapshot sent from
    /// the same parent (a full and an incremental of one snapshot are two ways to restore
    /// it, not a copy). By guid where both have one; by name where either is a zfs3backup
    /// object, which records none: zfs3backup and zsnap writing one prefix store each
    /// snapshot twice this way.
    pub fn same_backup(&self, other: &BackupRecord) -> bool {
        if self.kind != other.kind || self.key == other.key {
            return false;
        }
        match (self.guid, other.guid) {
            (Some(a), Some(b)) => a == b && self.from_guid == other.from_guid,
            _ => self.snapshot == other.snapshot && self.from_snap == other.from_snap,
        }
    }

    /// Which tool wrote it, for messages that name both copies.
    pub fn writer(&self) -> &'static str {
        match self.legacy {
            true => "zfs3backup",
            false => "zsnap",
        }
    }

    /// `@snap (guid G)`, or `@snap` for a zfs3backup object.
    pub fn describe(&self) -> String {
        match self.guid {
            Some(g) => format!("@{} (guid {g})", self.snapshot),
            None => format!("@{} (zfs3backup object)", self.snapshot),
        }
    }
}

/// A multipart upload in progress whose key parses as a backup of this dataset: shown,
/// never used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uncommitted {
    pub snapshot: String,
    pub guid: Option<u64>,
    pub key: String,
    pub initiated: Option<i64>,
}

/// Everything S3 holds for one dataset under one prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    pub dataset: String,
    /// Normalized: empty or ending in `/`.
    pub prefix: String,
    /// Committed records in list order: oldest first, parents before their children.
    pub records: Vec<BackupRecord>,
    pub uncommitted: Vec<Uncommitted>,
    /// Keys under the listed prefix that are no backup, with the reason.
    pub foreign: Vec<(String, String)>,
}

impl Catalog {
    /// Health of every record, index for index with `records`.
    pub fn health(&self) -> Vec<Health> {
        chain::health(&self.records)
    }
}
