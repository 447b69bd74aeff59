//! Listing a prefix as plain rows: every ListObjectsV2 page (1,000 keys each) followed to
//! the end, so callers (the catalog, quotas) decide over `Vec<ListedObject>` without SDK
//! types. The rows come back in the server's order (by key).

use super::client::Client;
use super::error::failure;
use crate::cli::Failure;

/// One row of a ListObjectsV2 answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    /// Unix seconds.
    pub last_modified: Option<i64>,
}

/// Every object under `prefix`, all pages.
pub async fn list_objects(client: &Client, bucket: &str, prefix: &str) -> Result<Vec<ListedObject>, Failure> {
    let mut rows = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.take())
            .send()
            .await
            .map_err(|e| failure(format!("listing s3://{bucket}/{prefix} failed"), &e))?;
        for o in page.contents() {
            if let Some(k) = o.key() {
                rows.push(ListedObject {
                    key: k.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    last_modified: o.last_modified().map(|d| d.secs()),
                });
            }
        }
        token = page.next_continuation_token().map(str::to_string);
        // A server that says "truncated" without a token would loop forever on page one.
        if page.is_truncated() != Some(true) || token.is_none() {
            return Ok(rows);
        }
    }
}
