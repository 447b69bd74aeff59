//! What a backup is in S3: key names (see docs/FORMAT.md), and reading a listing into
//! backup records. Planning needs nothing but ListObjectsV2 (plus ListMultipartUploads
//! for uncommitted leftovers).

/// Every zsnap backup object's base name starts with this tag (format version 1).
pub const KEY_TAG: &str = "zsnap1,";
