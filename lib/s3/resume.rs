//! Resuming a multipart upload that an earlier run left in progress (`s3put --resume`).
//!
//! The earlier run was cut off (server outage, SIGTERM, a killed producer) after storing
//! some parts. The new run reads the whole stream again (the stream gate sees every byte),
//! and for each part it cuts, compares size and CRC32 with the part the server holds under
//! that number (ListParts): a match is not sent again, a part the server lacks is uploaded,
//! and any difference means the stream is not the one the upload began with, so that
//! upload is aborted and the stream starts over as a new upload.
//!
//! Parts are matched by number, so the new run must cut the stream exactly as the earlier
//! one did: each stored part must have the size this run's schedule gives its number
//! (equal parts, or the growth schedule, [`super::part_size::Schedule`]). An upload cut
//! another way (another `--part-size`, `--expected-size` given one time and not the
//! other) is aborted and the stream starts over. S3 does not show an in-progress upload's
//! metadata, so an upload whose stored parts all fall where both ways of cutting agree
//! (16 MiB equal parts and the growth schedule agree on the first 1,600) is continued;
//! its object then records the earlier run's cut. The whole-object CRC32 s3put asks for
//! does not depend on the cut; on a server that keeps only per-part CRC32s, a reader
//! finds the recorded cut gives another part count and checks the length only (see
//! `download::Verifier`) rather than report a false mismatch.
//!
//! Deciding is pure ([`choose`], [`PartVerdict::of`]); [`find`] only reads the server.

use super::client::Client;
use super::error::failure;
use super::part_size::Schedule;
use super::uploads::{self, PendingUpload};
use super::S3Url;
use crate::cli::{ExitCode, Failure};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

/// One part the server already holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPart {
    pub size: u64,
    /// From the part's x-amz-checksum-crc32, when it was sent with one.
    pub crc32: Option<u32>,
    pub etag: String,
}

/// An in-progress upload this run continues.
#[derive(Debug)]
pub struct Resume {
    pub upload_id: String,
    /// By part number.
    pub parts: BTreeMap<u32, StoredPart>,
    /// The first part number whose bytes differed from the stored part (0: none yet).
    mismatched: AtomicU32,
}

impl Resume {
    pub fn new(upload_id: String, parts: BTreeMap<u32, StoredPart>) -> Self {
        Resume { upload_id, parts, mismatched: AtomicU32::new(0) }
    }

    pub fn stored_bytes(&self) -> u64 {
        self.parts.values().map(|p| p.size).sum()
    }

    pub fn note_mismatch(&self, number: u32) {
        let _ = self.mismatched.compare_exchange(0, number, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The part that did not match, if one did not.
    pub fn mismatch(&self) -> Option<u32> {
        match self.mismatched.load(Ordering::SeqCst) {
            0 => None,
            n => Some(n),
        }
    }
}

/// What to do with a part the stream has just produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartVerdict {
    /// The server has no part with this number: send it.
    Upload,
    /// The server holds exactly these bytes (size and CRC32): do not send them again.
    Reuse { etag: String },
    /// The server holds other bytes under this number: the stream changed.
    Mismatch { why: String },
}

impl PartVerdict {
    pub fn of(stored: Option<&StoredPart>, size: u64, crc32: u32) -> PartVerdict {
        match stored {
            None => PartVerdict::Upload,
            Some(p) if p.size != size => {
                PartVerdict::Mismatch { why: format!("the stored part has {} bytes, the stream's {size}", p.size) }
            }
            Some(StoredPart { crc32: Some(c), etag, .. }) if *c == crc32 => PartVerdict::Reuse { etag: etag.clone() },
            Some(StoredPart { crc32: Some(c), .. }) => {
                PartVerdict::Mismatch { why: format!("the stored part's CRC32 is {c:08x}, the stream's {crc32:08x}") }
            }
            Some(StoredPart { crc32: None, .. }) => {
                PartVerdict::Mismatch { why: "the stored part has no CRC32".into() }
            }
        }
    }
}

/// Pure: whether an upload that failed with `code` is kept for the next `--resume` rather
/// than aborted. Kept when the stream may well be fine and the next run can continue it
/// (the server or network went away, we were stopped, the producer was cut off); aborted
/// when its bytes are wrong or the next run could not continue it either.
pub fn keep_after(code: ExitCode) -> bool {
    matches!(
        code,
        ExitCode::Unreachable
            | ExitCode::Throttled
            | ExitCode::DnsTls
            | ExitCode::Protocol
            | ExitCode::StreamCut
            | ExitCode::LocalIo
            | ExitCode::Signal(_)
    )
}

/// What `--resume` found for the key.
#[derive(Debug)]
pub enum Choice {
    /// No upload in progress for this key: start one.
    Fresh,
    /// Continue this one.
    Resume(Resume),
    /// An upload is in progress but cannot be continued (why); it is aborted and the
    /// stream goes up as a new upload.
    Discard { upload_id: String, why: String },
}

/// Pure: whether the newest in-progress upload of the key (its parts listed) can be
/// continued with parts cut by `schedule`. Every part but the highest-numbered one must
/// be exactly the size `schedule` gives its number (the stream is cut the same way
/// again), the highest no larger, and each must carry a CRC32 to be compared against.
pub fn choose(upload_id: String, parts: BTreeMap<u32, StoredPart>, schedule: &Schedule) -> Choice {
    let last = parts.keys().next_back().copied();
    let cut_otherwise = "cut another way: another --part-size, or --expected-size given one time and not the other?";
    if let Some((n, p)) = parts.iter().find(|(n, p)| Some(**n) != last && p.size != schedule.part_size(**n)) {
        let want = schedule.part_size(*n);
        let why = format!("its part {n} has {} bytes, this run's part {n} {want} ({cut_otherwise})", p.size);
        return Choice::Discard { upload_id, why };
    }
    if let Some((n, p)) = parts.iter().next_back() {
        let want = schedule.part_size(*n);
        if p.size > want {
            let why = format!(
                "its last part has {} bytes, more than this run's part {n} of {want} ({cut_otherwise})",
                p.size
            );
            return Choice::Discard { upload_id, why };
        }
    }
    if parts.values().any(|p| p.crc32.is_none()) {
        let why = "its parts carry no CRC32 to compare with (sent with --no-checksum?)".to_string();
        return Choice::Discard { upload_id, why };
    }
    Choice::Resume(Resume::new(upload_id, parts))
}

/// The newest in-progress upload of exactly `url`'s key (several can exist after crashes;
/// the older ones are left for `--abort-uploads`), and what to do with it.
pub async fn find(client: &Client, url: &S3Url, schedule: &Schedule) -> Result<Choice, Failure> {
    let pending = uploads::list(client, url).await?;
    let Some(newest) = newest_for(pending, &url.key) else { return Ok(Choice::Fresh) };
    let parts = list_parts(client, url, &newest.upload_id).await?;
    Ok(choose(newest.upload_id, parts, schedule))
}

/// Pure: the newest upload of exactly `key` (a prefix listing also returns longer keys).
fn newest_for(pending: Vec<PendingUpload>, key: &str) -> Option<PendingUpload> {
    pending.into_iter().filter(|u| u.key == key).max_by_key(|u| u.initiated.unwrap_or(i64::MIN))
}

/// Every part of the upload, all pages (1,000 parts each).
pub async fn list_parts(client: &Client, url: &S3Url, upload_id: &str) -> Result<BTreeMap<u32, StoredPart>, Failure> {
    let mut parts = BTreeMap::new();
    let mut marker: Option<String> = None;
    loop {
        let page = client
            .list_parts()
            .bucket(&url.bucket)
            .key(&url.key)
            .upload_id(upload_id)
            .set_part_number_marker(marker.take())
            .send()
            .await
            .map_err(|e| failure(format!("listing the parts of upload {upload_id} of {url} failed"), &e))?;
        for p in page.parts() {
            let (Some(n), Some(etag)) = (p.part_number(), p.e_tag()) else { continue };
            let crc32 = p.checksum_crc32().and_then(decode_crc);
            parts.insert(n as u32, StoredPart { size: p.size().unwrap_or(0).max(0) as u64, crc32, etag: etag.into() });
        }
        marker = page.next_part_number_marker().map(str::to_string);
        // A server that says "truncated" without a marker would loop on page one.
        if page.is_truncated() != Some(true) || marker.is_none() {
            return Ok(parts);
        }
    }
}

/// x-amz-checksum-crc32 is the big-endian CRC32 in base64.
fn decode_crc(b64: &str) -> Option<u32> {
    let bytes = aws_smithy_types::base64::decode(b64).ok()?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(size: u64, crc: Option<u32>) -> StoredPart {
        StoredPart { size, crc32: crc, etag: format!("e{size}") }
    }

    #[test]
    fn a_part_is_reused_only_when_size_and_crc_match() {
        let p = part(10, Some(7));
        assert_eq!(PartVerdict::of(None, 10, 7), PartVerdict::Upload);
        assert_eq!(PartVerdict::of(Some(&p), 10, 7), PartVerdict::Reuse { etag: "e10".into() });
        assert!(matches!(PartVerdict::of(Some(&p), 10, 8), PartVerdict::Mismatch { why } if why.contains("00000007")));
        assert!(matches!(PartVerdict::of(Some(&p), 9, 7), PartVerdict::Mismatch { why } if why.contains("10 bytes")));
        assert!(matches!(PartVerdict::of(Some(&part(10, None)), 10, 7), PartVerdict::Mismatch { .. }));
    }

    #[test]
    fn an_upload_is_continued_only_when_cut_the_same_way() {
        let map = |v: &[(u32, u64, Option<u32>)]| v.iter().map(|&(n, s, c)| (n, part(s, c))).collect();
        let id = || "u".to_string();
        let ten = &Schedule::Equal(10);
        // Parts 1 and 3 stored (2 was in flight), the last one short: fine.
        assert!(
            matches!(choose(id(), map(&[(1, 10, Some(1)), (3, 4, Some(3))]), ten), Choice::Resume(r) if r.stored_bytes() == 14)
        );
        assert!(matches!(choose(id(), BTreeMap::new(), ten), Choice::Resume(_)));
        let why = |c: Choice| match c {
            Choice::Discard { why, .. } => why,
            other => panic!("{other:?}"),
        };
        assert!(why(choose(id(), map(&[(1, 8, Some(1)), (2, 8, Some(2))]), ten)).contains("part 1 has 8 bytes"));
        assert!(why(choose(id(), map(&[(1, 12, Some(1))]), ten)).contains("more than"));
        assert!(why(choose(id(), map(&[(1, 10, None)]), ten)).contains("no CRC32"));
    }

    #[test]
    fn a_grown_upload_is_continued_only_by_the_same_schedule() {
        let map = |v: &[(u32, u64)]| v.iter().map(|&(n, s)| (n, part(s, Some(n)))).collect();
        let id = || "u".to_string();
        let grow = &Schedule::Grow(vec![(10, 2), (20, 2), (40, 1)]);
        // Across the size change, part 4 in flight, part 5 (40) the short last: fine.
        let ok = choose(id(), map(&[(1, 10), (2, 10), (3, 20), (5, 33)]), grow);
        assert!(matches!(ok, Choice::Resume(r) if r.stored_bytes() == 73));
        // Past the table's end the last run goes on.
        assert!(matches!(choose(id(), map(&[(5, 40), (6, 40), (7, 1)]), grow), Choice::Resume(_)));
        let why = |c: Choice| match c {
            Choice::Discard { why, .. } => why,
            other => panic!("{other:?}"),
        };
        // Begun with equal parts of 10 (e.g. --part-size), continued growing: part 3 differs.
        let w = why(choose(id(), map(&[(1, 10), (2, 10), (3, 10), (4, 10)]), grow));
        assert!(w.contains("part 3 has 10 bytes, this run's part 3 20") && w.contains("--expected-size"), "{w}");
        // Begun growing, continued with equal parts.
        let w = why(choose(id(), map(&[(1, 10), (2, 10), (3, 20), (4, 20)]), &Schedule::Equal(10)));
        assert!(w.contains("part 3 has 20 bytes"), "{w}");
        assert!(why(choose(id(), map(&[(1, 10), (3, 21)]), grow)).contains("its last part has 21 bytes"));
    }

    #[test]
    fn the_newest_upload_of_exactly_the_key() {
        let u = |k: &str, id: &str, t: Option<i64>| PendingUpload { key: k.into(), upload_id: id.into(), initiated: t };
        let all = vec![u("a/k", "old", Some(1)), u("a/k", "new", Some(5)), u("a/k2", "other", Some(9))];
        assert_eq!(newest_for(all.clone(), "a/k").map(|u| u.upload_id), Some("new".into()));
        assert!(newest_for(all, "a/x").is_none());
    }

    #[test]
    fn crc_header_decodes() {
        assert_eq!(decode_crc("y/Q5Jg=="), Some(0xCBF4_3926));
        assert_eq!(decode_crc("nope"), None);
    }

    #[test]
    fn kept_for_the_next_run_only_when_it_can_be_continued() {
        for c in [ExitCode::Unreachable, ExitCode::Throttled, ExitCode::StreamCut, ExitCode::Signal(15)] {
            assert!(keep_after(c), "{c:?}");
        }
        for c in
            [ExitCode::Data, ExitCode::TooLarge, ExitCode::AccessDenied, ExitCode::NoSuchBucket, ExitCode::Internal]
        {
            assert!(!keep_after(c), "{c:?}");
        }
    }

    #[test]
    fn the_first_mismatch_is_kept() {
        let r = Resume::new("u".into(), BTreeMap::new());
        assert_eq!(r.mismatch(), None);
        r.note_mismatch(3);
        r.note_mismatch(5);
        assert_eq!(r.mismatch(), Some(3));
    }
}
