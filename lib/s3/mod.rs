//! S3 transport: client setup, streaming multipart upload, ordered ranged download,
//! listing, HEAD and small reads as plain data, in-progress upload cleanup, deletes and
//! Object Lock retention, and turning SDK errors into one line and an exit code. The only
//! module that speaks the SDK: everyone else gets plain rows and [`crate::cli::Failure`]s.

mod answer_timeout;
pub mod ca_bundle;
pub mod client;
pub mod download;
pub mod error;
pub mod head;
pub mod list;
pub mod objects;
pub mod part_size;
pub mod request_count;
pub mod resume;
pub mod small_object;
pub mod upload;
pub mod uploads;
pub mod url;

pub use url::S3Url;

/// User-metadata keys s3put writes and s3get reads (sent as `x-amz-meta-…`).
pub mod meta {
    /// CRC32 (IEEE, as 8 lowercase hex digits) of the whole object, when known at upload time.
    pub const CRC32: &str = "zsnap-crc32";
    /// Byte count of the whole object, when known at upload time.
    pub const BYTES: &str = "zsnap-bytes";
    /// Size of every multipart part but the last, so a reader can check per-part CRC32s.
    /// Only for equal parts: a reader that knows no other key cuts the object by it.
    pub const PART_SIZE: &str = "zsnap-part-size";
    /// How a multipart object's parts grow (`grow1:16M*1600,32M*500,…`), in place of
    /// [`PART_SIZE`]; see [`super::part_size::Schedule`].
    pub const PART_SCHEDULE: &str = "zsnap-part-schedule";
    /// In-process compressor of the stored bytes (`zstd`, `gzip`, `lz4`), when s3put applied one.
    pub const COMPRESSOR: &str = "zsnap-compressor";
}
