//! Multipart uploads left in progress (by `kill -9`, a power cut, or a server that went
//! away before the abort). They are invisible as objects but cost storage; these list
//! and abort them.

use super::client::Client;
use super::error::failure;
use super::S3Url;
use crate::cli::Failure;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    /// Seconds since the Unix epoch, when the server says.
    pub initiated: Option<i64>,
}

impl PendingUpload {
    pub fn to_json(&self, bucket: &str, action: &str) -> serde_json::Value {
        serde_json::json!({
            "action": action,
            "url": format!("s3://{bucket}/{}", self.key),
            "upload_id": self.upload_id,
            "initiated": self.initiated,
        })
    }
}

/// Every in-progress upload under `url.key` (a prefix), all pages.
pub async fn list(client: &Client, url: &S3Url) -> Result<Vec<PendingUpload>, Failure> {
    let mut out = Vec::new();
    let mut key_marker: Option<String> = None;
    let mut id_marker: Option<String> = None;
    loop {
        let page = client
            .list_multipart_uploads()
            .bucket(&url.bucket)
            .prefix(&url.key)
            .set_key_marker(key_marker.take())
            .set_upload_id_marker(id_marker.take())
            .send()
            .await
            .map_err(|e| failure(format!("listing uploads in {url} failed"), &e))?;
        for u in page.uploads() {
            if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
                out.push(PendingUpload {
                    key: key.to_string(),
                    upload_id: id.to_string(),
                    initiated: u.initiated().map(|d| d.secs()),
                });
            }
        }
        if page.is_truncated() != Some(true) {
            return Ok(out);
        }
        key_marker = page.next_key_marker().map(str::to_string);
        id_marker = page.next_upload_id_marker().map(str::to_string);
        if key_marker.is_none() && id_marker.is_none() {
            return Ok(out);
        }
    }
}

/// Pure: which uploads are older than `min_age` at `now`. Uploads with no start time are
/// kept out (we cannot tell their age).
pub fn older_than(uploads: Vec<PendingUpload>, min_age: Duration, now: SystemTime) -> Vec<PendingUpload> {
    let now = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    uploads
        .into_iter()
        .filter(|u| min_age.is_zero() || u.initiated.is_some_and(|t| now - t >= min_age.as_secs() as i64))
        .collect()
}

pub async fn abort(client: &Client, bucket: &str, upload: &PendingUpload) -> Result<(), Failure> {
    client.abort_multipart_upload().bucket(bucket).key(&upload.key).upload_id(&upload.upload_id).send().await.map_err(
        |e| failure(format!("aborting upload {} of s3://{bucket}/{} failed", upload.upload_id, upload.key), &e),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_filter() {
        let u = |k: &str, t: Option<i64>| PendingUpload { key: k.into(), upload_id: "x".into(), initiated: t };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let all = vec![u("old", Some(1_000)), u("new", Some(9_990)), u("unknown", None)];
        let keys = |v: Vec<PendingUpload>| v.into_iter().map(|u| u.key).collect::<Vec<_>>();
        assert_eq!(keys(older_than(all.clone(), Duration::from_secs(60), now)), vec!["old"]);
        assert_eq!(keys(older_than(all, Duration::ZERO, now)), vec!["old", "new", "unknown"]);
    }
}
