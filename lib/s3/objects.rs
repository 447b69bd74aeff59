//! Retention's S3 side: reading a bucket's and an object's Object Lock state, batch
//! deletes, and raising a retention date. Thin I/O over the client; the few decisions (is it locked now, what
//! an extension changes, which failure a batch of deletes amounts to) are pure functions.
//! Invariants: a retention is never shortened, and a per-key error inside a DeleteObjects
//! answer is data (in [`Deleted::error`]), not a request failure.

use super::client::Client;
use super::error::{classify_service, failure};
use crate::calendar::rfc3339;
use crate::cli::{ExitCode, Failure};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{Delete, ObjectIdentifier, ObjectLockEnabled, ObjectLockRetention, ObjectLockRetentionMode};
use aws_smithy_types::DateTime;
use futures_util::{StreamExt, TryStreamExt};
use std::collections::HashMap;

/// DeleteObjects takes at most this many keys a request.
pub const DELETE_BATCH: usize = 1000;

/// HEADs in flight at once.
const HEADS_AT_ONCE: usize = 16;

/// The per-key code [`delete_unlocked`] reports for a key it refused to delete.
pub const LOCKED_CODE: &str = "ObjectLocked";

/// Object Lock state of one object as HEAD reports it.
///
/// On AWS, HEAD includes the lock headers only for keys allowed s3:GetObjectRetention and
/// s3:GetObjectLegalHold; without them a locked object looks unlocked here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockState {
    /// GOVERNANCE or COMPLIANCE.
    pub mode: Option<String>,
    /// Unix seconds.
    pub retain_until: Option<i64>,
    pub legal_hold: bool,
}

impl LockState {
    /// Whether S3 would refuse to delete this version at `now` (unix seconds).
    pub fn is_locked_at(&self, now: i64) -> bool {
        self.legal_hold || (self.mode.is_some() && self.retain_until.is_some_and(|t| t > now))
    }

    /// "GOVERNANCE until 2027-01-31T00:00:00Z", "legal hold", or both.
    fn describe(&self) -> String {
        let retention = match (&self.mode, self.retain_until) {
            (Some(m), Some(t)) => Some(format!("{m} until {}", rfc3339(t))),
            (Some(m), None) => Some(m.clone()),
            (None, Some(t)) => Some(format!("retained until {}", rfc3339(t))),
            (None, None) => None,
        };
        match (retention, self.legal_hold) {
            (Some(r), true) => format!("{r}, legal hold"),
            (Some(r), false) => r,
            (None, _) => "legal hold".to_string(),
        }
    }
}

/// One HEAD's Object Lock headers.
pub async fn lock_state(client: &Client, bucket: &str, key: &str) -> Result<LockState, Failure> {
    let what = format!("reading the Object Lock state of s3://{bucket}/{key} failed");
    let head = super::head::head(client, bucket, key, what).await?;
    Ok(LockState { mode: head.lock_mode, retain_until: head.retain_until, legal_hold: head.legal_hold })
}

/// Lock states of many keys, 16 HEADs at a time, in input order. The first failure (a
/// key that does not exist: exit 66) ends it.
pub async fn lock_states(client: &Client, bucket: &str, keys: &[String]) -> Result<Vec<LockState>, Failure> {
    futures_util::stream::iter(keys.iter().map(|k| lock_state(client, bucket, k)))
        .buffered(HEADS_AT_ONCE)
        .try_collect()
        .await
}

/// One result per key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deleted {
    pub key: String,
    /// The server's (code, message) for this key; `None` when it was deleted.
    pub error: Option<(String, String)>,
}

/// Batch DeleteObjects (at most 1000 keys a request), batches sent in the order given
/// (callers put children before parents), Quiet=false so every key gets a result.
/// Results come back in input order. A key that does not exist counts as deleted (S3
/// semantics); in a versioned bucket a delete only adds a delete marker, so the bytes
/// stay until a lifecycle rule expires the noncurrent version.
pub async fn delete_keys(client: &Client, bucket: &str, keys: &[String]) -> Result<Vec<Deleted>, Failure> {
    let mut out = Vec::with_capacity(keys.len());
    for batch in keys.chunks(DELETE_BATCH) {
        let what = || match batch {
            [one] => format!("deleting s3://{bucket}/{one}"),
            _ => format!("deleting {} objects in s3://{bucket} (the first {})", batch.len(), batch[0]),
        };
        let objects = batch
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Failure::new(ExitCode::Internal, format!("{}: {e}", what())))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(false)
            .build()
            .map_err(|e| Failure::new(ExitCode::Internal, format!("{}: {e}", what())))?;
        let answer = client
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| failure(format!("{} failed", what()), &e))?;
        let mut results: HashMap<&str, Option<(String, String)>> = HashMap::new();
        for d in answer.deleted() {
            if let Some(k) = d.key() {
                results.insert(k, None);
            }
        }
        for e in answer.errors() {
            if let Some(k) = e.key() {
                let code = e.code().unwrap_or("").to_string();
                results.insert(k, Some((code, e.message().unwrap_or("").to_string())));
            }
        }
        for k in batch {
            // Quiet=false means every key is answered; a server that skips one has not
            // told us it is gone.
            let error = results.get(k.as_str()).cloned().unwrap_or_else(|| {
                Some(("NoResult".to_string(), "the server's answer does not mention this key".to_string()))
            });
            out.push(Deleted { key: k.clone(), error });
        }
    }
    Ok(out)
}

/// [`delete_keys`] for the keys not under Object Lock at `now`. The bucket's Object Lock
/// configuration is read once: without Object Lock nothing can be locked, so the keys go
/// straight to DeleteObjects; with it, one HEAD per key first. A locked key is not sent:
/// in a versioned bucket (every Object Lock bucket is one) a plain delete would succeed by
/// hiding the locked version behind a delete marker, which reads as gone while the bytes
/// stay. It comes back with the error code [`LOCKED_CODE`]. A key that does not exist is
/// sent (and counts as deleted).
pub async fn delete_unlocked(
    client: &Client,
    bucket: &str,
    keys: &[String],
    now: i64,
) -> Result<Vec<Deleted>, Failure> {
    let states: Vec<LockState> = match keys.is_empty() || !bucket_has_object_lock(client, bucket).await? {
        true => vec![LockState::default(); keys.len()],
        false => {
            futures_util::stream::iter(keys.iter().map(|k| async move {
                match lock_state(client, bucket, k).await {
                    Err(f) if f.code == ExitCode::NotFound => Ok(LockState::default()),
                    other => other,
                }
            }))
            .buffered(HEADS_AT_ONCE)
            .try_collect()
            .await?
        }
    };
    let free: Vec<String> =
        keys.iter().zip(&states).filter(|(_, s)| !s.is_locked_at(now)).map(|(k, _)| k.clone()).collect();
    let mut deleted = delete_keys(client, bucket, &free).await?.into_iter();
    let mut out = Vec::with_capacity(keys.len());
    for (k, s) in keys.iter().zip(&states) {
        if s.is_locked_at(now) {
            let why =
                format!("under Object Lock ({}); a delete would only hide it behind a delete marker", s.describe());
            out.push(Deleted { key: k.clone(), error: Some((LOCKED_CODE.to_string(), why)) });
        } else if let Some(d) = deleted.next() {
            out.push(d);
        }
    }
    Ok(out)
}

/// What a batch of deletes amounts to: `None` when every key was deleted, else one
/// failure naming the first key of the worst kind: access denied (exit 77, the key lacks
/// s3:DeleteObject), then locked (77), then anything else (its own code).
pub fn delete_failure(bucket: &str, results: &[Deleted]) -> Option<Failure> {
    let failed: Vec<(&str, &str, &str)> = results
        .iter()
        .filter_map(|d| d.error.as_ref().map(|(c, m)| (d.key.as_str(), c.as_str(), m.as_str())))
        .collect();
    let head = format!("deleting {} of {} objects in s3://{bucket} failed", failed.len(), results.len());
    if let Some((key, _, _)) = failed.iter().find(|(_, c, _)| *c == "AccessDenied") {
        return Some(Failure::new(
            ExitCode::AccessDenied,
            format!(
                "{head}: access denied (AccessDenied) for {key} (this key may not delete; prune needs an \
                 admin key with s3:DeleteObject)"
            ),
        ));
    }
    if let Some((key, _, why)) = failed.iter().find(|(_, c, _)| *c == LOCKED_CODE) {
        return Some(Failure::new(ExitCode::AccessDenied, format!("{head}: {key} is {why}")));
    }
    let (key, code, message) = failed.first()?;
    let (exit, what) = classify_service(code, message, 0);
    let exit = if exit == ExitCode::Protocol { ExitCode::Failure } else { exit };
    Some(Failure::new(exit, format!("{head}: {what} for {key}")))
}

/// The retention an extension to at least (`mode`, `until`) sets, or `None` when `before`
/// already holds that long. The date only grows; an active COMPLIANCE lock stays
/// COMPLIANCE (S3 cannot weaken it); an expired one is replaced by `mode`.
pub fn extension(before: &LockState, mode: &str, until: i64, now: i64) -> Option<(String, i64)> {
    let active = before.mode.is_some() && before.retain_until.is_some_and(|t| t > now);
    let new_mode = match before.mode.as_deref() {
        Some("COMPLIANCE") if active => "COMPLIANCE",
        _ => mode,
    };
    let new_until = if active { before.retain_until.unwrap_or(until).max(until) } else { until };
    if active && before.mode.as_deref() == Some(new_mode) && before.retain_until == Some(new_until) {
        return None;
    }
    Some((new_mode.to_string(), new_until))
}

/// Raise an object's retention to at least `until` (PutObjectRetention in `mode`); never
/// shortens: returns the state before, and whether it changed anything. A bucket without
/// Object Lock is a failure (exit 76), checked before anything is written; so is a server
/// that accepts the retention but does not show it afterwards.
pub async fn extend_lock(
    client: &Client,
    bucket: &str,
    key: &str,
    mode: &str,
    until: i64,
) -> Result<(LockState, bool), Failure> {
    if mode != "GOVERNANCE" && mode != "COMPLIANCE" {
        return Err(Failure::usage(format!("lock mode '{mode}' is not GOVERNANCE or COMPLIANCE")));
    }
    require_object_lock(client, bucket).await?;
    let before = lock_state(client, bucket, key).await?;
    let now = crate::calendar::now();
    let Some((new_mode, new_until)) = extension(&before, mode, until, now) else {
        return Ok((before, false));
    };
    let retention = ObjectLockRetention::builder()
        .mode(ObjectLockRetentionMode::from(new_mode.as_str()))
        .retain_until_date(DateTime::from_secs(new_until))
        .build();
    client
        .put_object_retention()
        .bucket(bucket)
        .key(key)
        .retention(retention)
        .send()
        .await
        .map_err(|e| failure(format!("setting the retention of s3://{bucket}/{key} failed"), &e))?;
    let after = lock_state(client, bucket, key).await?;
    if after.mode.as_deref() != Some(new_mode.as_str()) || after.retain_until.is_none_or(|t| t < new_until) {
        return Err(Failure::new(
            ExitCode::Protocol,
            format!(
                "setting the retention of s3://{bucket}/{key} to {new_mode} until {} was accepted, but HEAD \
                 shows {}: the server does not keep Object Lock",
                rfc3339(new_until),
                if after == LockState::default() { "no lock".to_string() } else { after.describe() }
            ),
        ));
    }
    Ok((before, true))
}

/// Whether an answer to GetObjectLockConfiguration says plainly that the bucket has no
/// Object Lock: not configured (AWS, MinIO, Ceph, moto: ObjectLockConfigurationNotFoundError)
/// or not implemented (Garage: NotImplemented, HTTP 501). Narrower than what
/// [`require_object_lock`] refuses on, because here "no lock" lets deletes go out without
/// a per-object check: an unclear answer (access denied, a bare 400, no such bucket) must
/// fail instead.
pub fn says_no_object_lock(code: &str, status: u16) -> bool {
    match code {
        "ObjectLockConfigurationNotFoundError" | "NotImplemented" | "MethodNotAllowed" => true,
        "" => matches!(status, 405 | 501),
        _ => false,
    }
}

/// Whether `bucket` has Object Lock enabled, from one GetObjectLockConfiguration. This is
/// what spares a prune a HEAD per object on buckets without Object Lock: none of their
/// objects can be locked. Any answer other than "enabled" or a plain "not configured / not
/// implemented" is a failure with its own exit code.
pub async fn bucket_has_object_lock(client: &Client, bucket: &str) -> Result<bool, Failure> {
    match client.get_object_lock_configuration().bucket(bucket).send().await {
        Ok(out) => Ok(matches!(
            out.object_lock_configuration().and_then(|c| c.object_lock_enabled()),
            Some(ObjectLockEnabled::Enabled)
        )),
        Err(e) => {
            let code = e.code().unwrap_or("");
            let status = e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
            match says_no_object_lock(code, status) {
                true => Ok(false),
                false => Err(failure(format!("reading the Object Lock configuration of s3://{bucket} failed"), &e)),
            }
        }
    }
}

/// Fail clearly unless `bucket` has Object Lock enabled. Servers without it (Garage) or
/// buckets created without it would otherwise answer PutObjectRetention with anything
/// from an error to a silent 200, and store an upload's lock headers as nothing at all.
pub async fn require_object_lock(client: &Client, bucket: &str) -> Result<(), Failure> {
    let no_lock = |why: &str| {
        Failure::new(
            ExitCode::Protocol,
            format!(
                "s3://{bucket} has no Object Lock ({why}): retention needs a bucket created with Object Lock \
                 enabled, on a server that supports it"
            ),
        )
    };
    match client.get_object_lock_configuration().bucket(bucket).send().await {
        Ok(out) => match out.object_lock_configuration().and_then(|c| c.object_lock_enabled()) {
            Some(ObjectLockEnabled::Enabled) => Ok(()),
            _ => Err(no_lock("its Object Lock configuration is not Enabled")),
        },
        Err(e) => {
            let code = e.code().unwrap_or("").to_string();
            let status = e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
            let unsupported = matches!(
                code.as_str(),
                "ObjectLockConfigurationNotFoundError" | "NotImplemented" | "MethodNotAllowed" | "InvalidRequest"
            ) || matches!(status, 400 | 404 | 405 | 501);
            if unsupported && code != "NoSuchBucket" {
                let shown = if code.is_empty() { format!("HTTP {status}") } else { code };
                Err(no_lock(&format!("GetObjectLockConfiguration answered {shown}")))
            } else {
                Err(failure(format!("reading the Object Lock configuration of s3://{bucket} failed"), &e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(mode: &str, until: i64) -> LockState {
        LockState { mode: Some(mode.into()), retain_until: Some(until), legal_hold: false }
    }

    #[test]
    fn locked_means_a_future_date_or_a_legal_hold() {
        assert!(!LockState::default().is_locked_at(100));
        assert!(lock("GOVERNANCE", 101).is_locked_at(100));
        assert!(!lock("GOVERNANCE", 100).is_locked_at(100), "expired at the second it names");
        assert!(LockState { legal_hold: true, ..LockState::default() }.is_locked_at(100));
        let no_mode = LockState { retain_until: Some(500), ..LockState::default() };
        assert!(!no_mode.is_locked_at(100));
    }

    #[test]
    fn extensions_never_shorten_or_weaken() {
        let now = 1_000;
        // (before, mode asked, until asked, the retention to set)
        type Case = (LockState, &'static str, i64, Option<(&'static str, i64)>);
        let cases: &[Case] = &[
            (LockState::default(), "GOVERNANCE", 2_000, Some(("GOVERNANCE", 2_000))),
            (lock("GOVERNANCE", 3_000), "GOVERNANCE", 2_000, None),
            (lock("GOVERNANCE", 2_000), "GOVERNANCE", 2_000, None),
            (lock("GOVERNANCE", 2_000), "GOVERNANCE", 3_000, Some(("GOVERNANCE", 3_000))),
            (lock("GOVERNANCE", 3_000), "COMPLIANCE", 2_000, Some(("COMPLIANCE", 3_000))),
            (lock("COMPLIANCE", 3_000), "GOVERNANCE", 4_000, Some(("COMPLIANCE", 4_000))),
            (lock("COMPLIANCE", 3_000), "GOVERNANCE", 2_000, None),
            // An expired lock constrains nothing: the new one is what was asked for.
            (lock("COMPLIANCE", 500), "GOVERNANCE", 2_000, Some(("GOVERNANCE", 2_000))),
        ];
        for (before, mode, until, want) in cases {
            let got = extension(before, mode, *until, now);
            let want = want.map(|(m, t)| (m.to_string(), t));
            assert_eq!(got, want, "{before:?} + {mode} {until}");
        }
    }

    fn d(key: &str, error: Option<(&str, &str)>) -> Deleted {
        Deleted { key: key.into(), error: error.map(|(c, m)| (c.into(), m.into())) }
    }

    #[test]
    fn a_batch_fails_by_its_worst_key() {
        assert!(delete_failure("b", &[d("a", None), d("c", None)]).is_none());
        assert!(delete_failure("b", &[]).is_none());
        let all = [
            d("a", None),
            d("x", Some(("InternalError", "boom"))),
            d("l", Some((LOCKED_CODE, "under Object Lock (GOVERNANCE until 2030-01-01T00:00:00Z)"))),
            d("k", Some(("AccessDenied", "Access Denied"))),
        ];
        let f = delete_failure("b", &all).expect("failure");
        assert_eq!(f.code, ExitCode::AccessDenied);
        assert_eq!(
            f.message,
            "deleting 3 of 4 objects in s3://b failed: access denied (AccessDenied) for k (this key may not \
             delete; prune needs an admin key with s3:DeleteObject)"
        );
        let f = delete_failure("b", &all[..3]).expect("failure");
        assert_eq!(f.code, ExitCode::AccessDenied);
        assert!(f.message.contains("l is under Object Lock (GOVERNANCE"), "{}", f.message);
        let f = delete_failure("b", &all[..2]).expect("failure");
        assert_eq!(f.code, ExitCode::Failure);
        assert!(f.message.ends_with("(InternalError: boom) for x"), "{}", f.message);
        let f = delete_failure("b", &[d("s", Some(("SlowDown", "")))]).expect("failure");
        assert_eq!(f.code, ExitCode::Throttled);
    }

    #[test]
    fn only_a_plain_no_counts_as_no_object_lock() {
        assert!(says_no_object_lock("ObjectLockConfigurationNotFoundError", 404));
        assert!(says_no_object_lock("NotImplemented", 501), "Garage");
        assert!(says_no_object_lock("", 501));
        assert!(!says_no_object_lock("AccessDenied", 403));
        assert!(!says_no_object_lock("NoSuchBucket", 404));
        assert!(!says_no_object_lock("", 400), "an unexplained 400 says nothing about locks");
        assert!(!says_no_object_lock("", 0), "no answer at all");
        assert!(!says_no_object_lock("InternalError", 500));
    }

    #[test]
    fn lock_descriptions() {
        assert_eq!(lock("GOVERNANCE", 0).describe(), "GOVERNANCE until 1970-01-01T00:00:00Z");
        let held = LockState { legal_hold: true, ..lock("COMPLIANCE", 0) };
        assert_eq!(held.describe(), "COMPLIANCE until 1970-01-01T00:00:00Z, legal hold");
        assert_eq!(LockState { legal_hold: true, ..LockState::default() }.describe(), "legal hold");
    }
}
