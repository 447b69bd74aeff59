//! Resumable uploads (`s3put --resume`, which zsnap-backup always passes): an upload cut
//! off after some parts is continued by the next run, which reads the whole stream again,
//! checks each part against the stored one (size, CRC32) and sends only what is missing;
//! a stream that changed starts over. Killed at several points: between parts, mid-part,
//! and with a part in flight.

use crate::common::*;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const PART: usize = 5 * MIB;

/// The test's in-progress upload of `key`: (upload id, parts stored, bytes stored).
fn stored(ctx: &Ctx, key: &str) -> Option<(String, u64, u64)> {
    let url = ctx.url(key);
    let ups: Vec<_> = ctx.pending_uploads().into_iter().filter(|u| u["url"] == url.as_str()).collect();
    assert!(ups.len() <= 1, "one upload in progress at most: {ups:?}");
    ups.first().map(|u| {
        (
            u["upload_id"].as_str().expect("upload_id").to_string(),
            u["parts"].as_u64().expect("parts"),
            u["stored_bytes"].as_u64().expect("stored_bytes"),
        )
    })
}

/// s3put --resume with a stdin the test holds: feed `fed` bytes, wait until `parts` parts
/// are stored, then kill -9 it (nothing it does afterwards can hide the cut).
fn cut_after(ctx: &Ctx, key: &str, fed: &[u8], parts: u64) -> (String, u64) {
    let (id, n, bytes) = cut_with(ctx, key, fed, parts, &["--part-size", "5M"]);
    assert_eq!(bytes, n * PART as u64, "only whole parts are stored");
    (id, n)
}

/// s3put --resume --concurrency 1 with `args`, fed `fed`, killed (-9) once `parts` parts
/// are stored: the upload's id, its stored parts and their bytes.
fn cut_with(ctx: &Ctx, key: &str, fed: &[u8], parts: u64, args: &[&str]) -> (String, u64, u64) {
    let mut c = ctx.cmd("s3put");
    c.args(["--resume", "--concurrency", "1"]).args(args).arg(ctx.url(key));
    c.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().expect("spawn s3put");
    child.stdin.as_mut().expect("stdin").write_all(fed).expect("feed s3put");
    ctx.wait_until(&format!("{parts} parts of {key} to be stored"), Duration::from_secs(120), || {
        stored(ctx, key).is_some_and(|(_, n, _)| n >= parts)
    });
    kill9(&mut child);
    stored(ctx, key).expect("the cut upload stays in progress")
}

fn kill9(child: &mut Child) {
    let _ = child.kill();
    wait_bounded(child, "s3put", TIMEOUT);
}

fn resume(ctx: &Ctx, key: &str, input: &[u8]) -> serde_json::Value {
    ctx.put(key, input, &["--resume", "--part-size", "5M", "--concurrency", "1"]).success().json()
}

#[test]
fn a_cut_upload_is_continued_without_sending_its_stored_parts_again() {
    let ctx = Ctx::new("resume-points");
    let whole = data(5 * PART + MIB, 91);
    // (key, bytes fed before the kill, parts to wait for)
    for (key, fed, parts) in [
        // Between parts: exactly two parts read, both stored, the third not begun.
        ("between", 2 * PART, 2),
        // Mid-part: the third part half read when killed.
        ("mid", 2 * PART + PART / 2, 2),
        // In flight: the third part read whole and on its way up (or just stored) when killed.
        ("flight", 3 * PART, 2),
    ] {
        let (id, n) = cut_after(&ctx, key, &whole[..fed], parts);
        let r = resume(&ctx, key, &whole);
        assert_eq!(r["resumed"], id.as_str(), "{key}: continued the cut upload: {r}");
        assert_eq!(r["reused_parts"], n, "{key}: every stored part reused: {r}");
        assert_eq!(r["saved_bytes"], n * PART as u64, "{key}: {r}");
        // Re-sent: only what was not stored, at most the one part that was in flight.
        assert!(r["parts"].as_u64().expect("parts") - n <= 4, "{key}: {r}");
        assert!(n >= (fed / PART) as u64 - 1, "{key}: at most one part lost to the kill ({n} stored)");
        assert_eq!(r["bytes"], whole.len(), "{key}: {r}");
        assert_eq!(r["crc32"], format!("{:08x}", crc32fast::hash(&whole)), "{key}: {r}");
        let got = ctx.get(key, &[]).success().stdout;
        assert!(got == whole, "{key}: the resumed object must be byte-exact");
        assert!(stored(&ctx, key).is_none(), "{key}: nothing left in progress");
    }
}

#[test]
fn a_changed_stream_starts_over() {
    let ctx = Ctx::new("resume-changed");
    let whole = data(4 * PART, 92);
    let mut changed = whole.clone();
    changed[PART + 17] ^= 0xff;

    // From a producer: the mismatch in part 2 aborts the old upload and sends all again.
    let (id, _) = cut_after(&ctx, "exec", &whole[..3 * PART], 3);
    let file = ctx.bench.work.join(format!("resume-changed-{}", std::process::id()));
    std::fs::write(&file, &changed).expect("write changed");
    let mut c = ctx.cmd("s3put");
    c.args(["--resume", "--part-size", "5M", "--exec", &format!("cat '{}'", file.display())]).arg(ctx.url("exec"));
    let out = run(c, None, TIMEOUT).success();
    assert!(out.stderr.contains(&format!("part 2 of the stream differs from part 2 of upload {id}")), "{}", out.stderr);
    assert!(out.stderr.contains("starting over"), "{}", out.stderr);
    let r = out.json();
    assert_eq!((r["resumed"].clone(), r["reused_parts"].clone()), (serde_json::Value::Null, 0.into()), "{r}");
    assert!(ctx.get("exec", &[]).success().stdout == changed, "the new stream, whole");
    assert!(stored(&ctx, "exec").is_none(), "the old upload is aborted");
    let _ = std::fs::remove_file(&file);

    // From stdin, which cannot be read twice: refused (65), old upload aborted, and the next
    // run sends the stream as a new upload.
    cut_after(&ctx, "stdin", &whole[..2 * PART], 2);
    let out = ctx.put("stdin", &changed, &["--resume", "--part-size", "5M"]);
    out.fails_last(65, "s3put", "run again to send the stream as a new upload");
    assert!(stored(&ctx, "stdin").is_none(), "the old upload is aborted");
    ctx.get("stdin", &[]).fails(66, "no such object");
    let r = resume(&ctx, "stdin", &changed);
    assert_eq!(r["reused_parts"], 0, "{r}");
    assert!(ctx.get("stdin", &[]).success().stdout == changed);
}

#[test]
fn with_resume_a_signal_keeps_the_upload_for_the_next_run() {
    let ctx = Ctx::new("resume-signal");
    let whole = data(3 * PART + 3, 93);
    let mut c = ctx.cmd("s3put");
    c.args(["--resume", "--part-size", "5M", "--concurrency", "1"]).arg(ctx.url("k"));
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn s3put");
    child.stdin.as_mut().expect("stdin").write_all(&whole[..2 * PART]).expect("feed");
    ctx.wait_until("2 parts stored", Duration::from_secs(120), || stored(&ctx, "k").is_some_and(|(_, n, _)| n >= 2));
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    let out = finish(child, "s3put --resume", TIMEOUT);
    assert_eq!(out.code(), 143, "{}", out.stderr);
    assert!(out.stderr.contains("is kept") && out.stderr.contains("--resume"), "{}", out.stderr);
    ctx.get("k", &[]).fails(66, "no such object");
    let (id, n, _) = stored(&ctx, "k").expect("kept in progress");
    assert_eq!(n, 2);
    let r = resume(&ctx, "k", &whole);
    assert_eq!((r["resumed"].as_str(), r["reused_parts"].as_u64()), (Some(id.as_str()), Some(2)), "{r}");
    assert!(ctx.get("k", &[]).success().stdout == whole);
}

/// zsnap-backup resumes: stopped (SIGTERM) after two parts of a full, the next run sends
/// only the rest, and the restore is byte-exact. The stand-in compressor passes two parts
/// and some, then waits for a file: the stream is the same bytes both times.
#[test]
fn zsnap_backup_continues_a_cut_backup() {
    let site = Site::new("resume-backup", "rb");
    site.write("big.bin", &data(40 * MIB, 94));
    site.snapshot("s1");
    let go = site.hold_compressor(34_000_000, "");
    let plan = site.run("zsnap-backup", &["--compressor", "hold", "--dry-run"]).success();
    assert!(plan.text().starts_with("s3put --zfs-stream --resume "), "{}", plan.text());

    let mut c = site.cmd("zsnap-backup", &["--compressor", "hold"]);
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().expect("spawn zsnap-backup");
    let pending = || -> Option<u64> {
        let ups = site.ctx.pending_uploads();
        ups.first().map(|u| u["parts"].as_u64().expect("parts"))
    };
    site.ctx.wait_until("two parts stored", Duration::from_secs(120), || pending().is_some_and(|n| n >= 2));
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    let out = finish(child, "zsnap-backup", TIMEOUT);
    assert_eq!(out.code(), 143, "{}", out.stderr);
    assert!(out.stderr.contains("is kept"), "s3put kept its upload: {}", out.stderr);
    assert!(site.keys().iter().all(|k| !k.contains("zsnap1,")), "nothing committed");
    let stored = pending().expect("the cut upload is in progress");

    std::fs::write(&go, b"").expect("go");
    let out = site.run("zsnap-backup", &["--compressor", "hold"]).success();
    let r = out.json();
    assert_eq!(r["reused_parts"], stored, "{r}");
    assert!(r["saved_bytes"].as_u64().expect("saved") >= 2 * 16 * MIB as u64, "{r}");
    assert!(site.ctx.pending_uploads().is_empty(), "nothing left in progress");
    let t = tree(&site.dir());
    let target = site.pool.ds("r");
    site.run("zsnap-restore", &["latest", "--target", &target]).success();
    assert_same(&tree(&site.pool.mount.join("r")), &t, "the resumed backup restores byte-exact");
}

/// s3put --resume with growing parts (no --part-size; --max-parts 10 scales the schedule
/// to 16, 32, 128… MiB) or with `extra`, killed once `parts` parts are stored.
fn cut_growing(ctx: &Ctx, key: &str, fed: &[u8], parts: u64, extra: &[&str]) -> (String, u64, u64) {
    let args: Vec<&str> = ["--max-parts", "10"].into_iter().chain(extra.iter().copied()).collect();
    cut_with(ctx, key, fed, parts, &args)
}

/// Cut after parts 1 and 2 (16 and 32 MiB), the resumed run reuses both and goes on past
/// the next size change (part 3, 128 MiB, the short last); an upload begun with equal
/// parts (--part-size 16M: its part 2 is 16 MiB, this run's 32) is aborted and the stream
/// starts over instead of being spliced from two ways of cutting.
#[test]
fn a_resumed_upload_keeps_growing_parts_in_step() {
    let ctx = Ctx::new("resume-grow");
    let whole = data(48 * MIB + 20 * MIB + 5, 95);
    let (id, n, bytes) = cut_growing(&ctx, "grow", &whole[..48 * MIB], 2, &[]);
    assert_eq!((n, bytes), (2, 48 * MIB as u64), "parts of 16 and 32 MiB stored");
    let r = ctx.put("grow", &whole, &["--resume", "--max-parts", "10", "--concurrency", "1"]).success().json();
    assert_eq!(r["resumed"], id.as_str(), "{r}");
    assert_eq!((r["reused_parts"].as_u64(), r["saved_bytes"].as_u64()), (Some(2), Some(48 * MIB as u64)), "{r}");
    assert_eq!((r["parts"].as_u64(), r["part_size"].as_u64()), (Some(3), Some(128 * MIB as u64)), "{r}");
    let got = ctx.get("grow", &["--progress"]).success();
    assert!(got.stdout == whole, "the resumed object must be byte-exact");
    assert!(got.stderr.contains("verified: crc32"), "{}", got.stderr);
    assert!(stored(&ctx, "grow").is_none(), "nothing left in progress");

    // Three parts stored: part 2 is not the last, so its size must be this run's part 2's.
    let (id, n, _) = cut_growing(&ctx, "equal", &whole[..48 * MIB], 3, &["--part-size", "16M"]);
    assert_eq!(n, 3);
    let out = ctx.put("equal", &whole, &["--resume", "--max-parts", "10"]).success();
    let why = format!(
        "not resuming upload {id} of {}: its part 2 has {} bytes, this run's part 2 {}",
        ctx.url("equal"),
        16 * MIB,
        32 * MIB
    );
    assert!(out.stderr.contains(&why) && out.stderr.contains("starting over"), "{}", out.stderr);
    let r = out.json();
    assert_eq!((r["resumed"].is_null(), r["reused_parts"].as_u64()), (true, Some(0)), "{r}");
    assert!(ctx.get("equal", &[]).success().stdout == whole);
    assert!(stored(&ctx, "equal").is_none(), "the old upload is aborted");
}
