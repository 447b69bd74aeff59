//! One HEAD request, answered as plain data: an object's user metadata and its Object Lock
//! headers. The one place that sends HeadObject for metadata or lock state; s3get's
//! download has its own HEAD because it also asks for checksums and probes a codeless 404.

use super::client::Client;
use super::error::failure;
use crate::cli::Failure;
use aws_sdk_s3::types::ObjectLockLegalHoldStatus;
use std::collections::HashMap;
use std::fmt::Display;

/// What HEAD says about one object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectHead {
    /// User metadata (`x-amz-meta-…`), names lowercased: servers differ in the case they
    /// return, and zfs3backup's names were written in several.
    pub metadata: HashMap<String, String>,
    /// GOVERNANCE or COMPLIANCE.
    pub lock_mode: Option<String>,
    /// Unix seconds.
    pub retain_until: Option<i64>,
    pub legal_hold: bool,
}

/// HEAD `s3://bucket/key`; a failure reads `<what>: <classified SDK error>`, so each
/// caller says what it was reading the object for.
pub async fn head(client: &Client, bucket: &str, key: &str, what: impl Display) -> Result<ObjectHead, Failure> {
    let head = client.head_object().bucket(bucket).key(key).send().await.map_err(|e| failure(what, &e))?;
    Ok(ObjectHead {
        metadata: head
            .metadata()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
        lock_mode: head.object_lock_mode().map(|m| m.as_str().to_string()),
        retain_until: head.object_lock_retain_until_date().map(|d| d.secs()),
        legal_hold: head.object_lock_legal_hold_status() == Some(&ObjectLockLegalHoldStatus::On),
    })
}

/// An object's user metadata, names lowercased.
pub async fn head_metadata(client: &Client, bucket: &str, key: &str) -> Result<HashMap<String, String>, Failure> {
    Ok(head(client, bucket, key, format!("reading metadata of s3://{bucket}/{key} failed")).await?.metadata)
}
