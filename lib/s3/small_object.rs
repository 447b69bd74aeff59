//! Reading a small object (a policy file) whole into memory. The size is checked from the
//! GET's Content-Length before the body is read, so an unexpectedly large object costs no
//! more than its headers.

use super::client::Client;
use super::error::failure;
use crate::cli::{ExitCode, Failure};
use std::fmt::Display;

/// What a GET of a small object found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SmallObject {
    /// No such key (the bucket exists: a missing bucket is an error).
    Missing,
    /// Larger than the limit asked for; the body was not read.
    TooLarge {
        size: u64,
    },
    Body(Vec<u8>),
}

/// GET `s3://bucket/key` when it has at most `max_bytes`. A failure reads
/// `<what>: <cause>`: the SDK's error classified, or a body cut mid-read (exit 69).
pub async fn get_small_object(
    client: &Client,
    bucket: &str,
    key: &str,
    max_bytes: u64,
    what: impl Display,
) -> Result<SmallObject, Failure> {
    let resp = match client.get_object().bucket(bucket).key(key).send().await {
        Ok(r) => r,
        Err(e) => {
            let f = failure(&what, &e);
            return if f.code == ExitCode::NotFound { Ok(SmallObject::Missing) } else { Err(f) };
        }
    };
    let size = resp.content_length().unwrap_or(0).max(0) as u64;
    if size > max_bytes {
        return Ok(SmallObject::TooLarge { size });
    }
    let body = resp
        .body
        .collect()
        .await
        .map_err(|e| Failure::new(ExitCode::Unreachable, format!("{what}: {e}")))?
        .into_bytes();
    Ok(SmallObject::Body(body.to_vec()))
}
