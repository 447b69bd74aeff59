//! s3put → Garage → s3get round trips at the sizes where part logic changes, metadata
//! seen by a peer client, objects written by peers read back, and s3get's verification.

use crate::common::*;
use std::process::Command;

/// Upload, check the JSON report, download, compare bytes.
fn round_trip(ctx: &Ctx, key: &str, data: &[u8], put_args: &[&str], get_args: &[&str]) -> serde_json::Value {
    let put = ctx.put(key, data, put_args).success();
    let report = put.json();
    assert_eq!(report["bytes"], data.len() as u64, "{report}");
    assert_eq!(report["crc32"], format!("{:08x}", crc32fast::hash(data)), "{report}");
    assert_eq!(report["key"], ctx.url(key));
    let got = ctx.get(key, get_args).success();
    assert!(got.stdout == data, "downloaded bytes differ ({} vs {} bytes)", got.stdout.len(), data.len());
    report
}

#[test]
fn empty_stream_needs_allow_empty() {
    let ctx = Ctx::new("empty");
    ctx.put("e", b"", &[]).fails(67, "stdin is empty");
    ctx.get("e", &[]).fails(66, "no such object");
    let r = round_trip(&ctx, "e", b"", &["--allow-empty"], &[]);
    assert_eq!(r["parts"], 1);
}

#[test]
fn one_byte() {
    let ctx = Ctx::new("one-byte");
    let r = round_trip(&ctx, "b", b"x", &[], &[]);
    assert_eq!(r["multipart"], false);
}

#[test]
fn exactly_one_part_is_a_single_put() {
    let ctx = Ctx::new("one-part");
    let d = data(5 * MIB, 1);
    let r = round_trip(&ctx, "p", &d, &["--part-size", "5M"], &[]);
    assert_eq!((r["multipart"].as_bool(), r["parts"].as_u64()), (Some(false), Some(1)), "{r}");
}

#[test]
fn one_part_plus_one_byte_is_two_parts() {
    let ctx = Ctx::new("one-part-plus");
    let d = data(5 * MIB + 1, 2);
    let r = round_trip(&ctx, "p", &d, &["--part-size", "5M"], &["--part-size", "1M"]);
    assert_eq!((r["multipart"].as_bool(), r["parts"].as_u64()), (Some(true), Some(2)), "{r}");
    assert_eq!(r["part_size"], 5 * MIB as u64);
}

#[test]
fn many_parts_concurrency_1_and_8() {
    let ctx = Ctx::new("many-parts");
    let d = data(42 * MIB + 12345, 3);
    for c in ["1", "8"] {
        let key = format!("c{c}");
        let r = round_trip(&ctx, &key, &d, &["--part-size", "5M", "--concurrency", c], &["-c", c, "-p", "3M"]);
        assert_eq!(r["parts"], 9, "{r}");
    }
}

#[test]
fn expected_size_picks_the_part_size() {
    let ctx = Ctx::new("expected");
    let d = data(20 * MIB, 4);
    let r = round_trip(&ctx, "x", &d, &["--expected-size", "20M"], &[]);
    // 20 MiB fits 10,000 parts of the 16 MiB floor: two parts.
    assert_eq!((r["part_size"].as_u64(), r["parts"].as_u64()), (Some(16 * MIB as u64), Some(2)), "{r}");
}

#[test]
fn ranges_are_exact() {
    let ctx = Ctx::new("range");
    let d = data(3 * MIB, 5);
    ctx.put("r", &d, &[]).success();
    let got = ctx.get("r", &["--range", "100-199"]).success();
    assert!(got.stdout == d[100..200]);
    let got = ctx.get("r", &["--range", "1048570-", "-p", "64K"]).success();
    assert!(got.stdout == d[1_048_570..]);
    ctx.get("r", &["--range", "99999999-"]).fails(64, "--range");
}

/// `curl --aws-sigv4` shows exactly what headers the server stored.
fn curl_head(ctx: &Ctx, key: &str) -> String {
    let b = &ctx.bench;
    let mut c = Command::new("curl");
    c.args(["-sS", "-I", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
        .arg(format!("{}:{}", b.access_key, b.secret_key))
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
        .arg(format!("{}/{}/{}{}", b.endpoint, b.bucket, ctx.prefix, key));
    String::from_utf8_lossy(&run(c, None, TIMEOUT).success().stdout).to_ascii_lowercase()
}

#[test]
fn metadata_is_seen_by_a_peer_client() {
    let ctx = Ctx::new("meta");
    let d = data(12 * MIB, 6);
    for (key, extra) in [
        ("small", &["-m", "Zsnap-Kind=full", "-m", "parent=none"][..]),
        ("multi", &["-p", "5M", "-m", "zsnap-kind=full", "-m", "parent=none"][..]),
    ] {
        let input: &[u8] = if key == "small" { b"hello" } else { &d };
        ctx.put(key, input, extra).success();
        let h = curl_head(&ctx, key);
        assert!(h.contains("x-amz-meta-zsnap-kind: full"), "{h}");
        assert!(h.contains("x-amz-meta-parent: none"), "{h}");
        if key == "small" {
            assert!(h.contains(&format!("x-amz-meta-zsnap-crc32: {:08x}", crc32fast::hash(b"hello"))), "{h}");
            assert!(h.contains("x-amz-meta-zsnap-bytes: 5"), "{h}");
        } else {
            assert!(h.contains(&format!("x-amz-meta-zsnap-part-size: {}", 5 * MIB)), "{h}");
        }
    }
}

#[test]
fn reads_objects_a_peer_uploaded() {
    let ctx = Ctx::new("peer");
    // 12 MiB through rclone's streaming upload: a multipart object without our metadata.
    let d = data(12 * MIB + 7, 7);
    let mut c = rclone(&ctx);
    c.args(["rcat", &format!("t:{}/{}peer", ctx.bench.bucket, ctx.prefix)]);
    run(c, Some(&d), TIMEOUT).success();
    let got = ctx.get("peer", &["--progress"]).success();
    assert!(got.stdout == d);
    assert!(got.stderr.contains("verified: length only"), "{}", got.stderr);
    // And what we wrote, a peer reads byte for byte.
    ctx.put("ours", &d, &["-p", "5M"]).success();
    let mut c = rclone(&ctx);
    c.args(["cat", &format!("t:{}/{}ours", ctx.bench.bucket, ctx.prefix)]);
    assert!(run(c, None, TIMEOUT).success().stdout == d);
}

#[test]
fn multipart_objects_are_verified_by_the_servers_crc32() {
    let ctx = Ctx::new("server-crc");
    let d = data(11 * MIB, 8);
    ctx.put("m", &d, &["-p", "5M"]).success();
    let got = ctx.get("m", &["--progress"]).success();
    assert!(got.stdout == d);
    assert!(got.stderr.contains("verified: crc32 (server"), "{}", got.stderr);
}

#[test]
fn a_wrong_recorded_crc32_fails_the_download() {
    // A peer stores bytes with a zsnap-crc32 that does not match them, as a corrupted or
    // tampered object would look: s3get must exit 65 and say so.
    let ctx = Ctx::new("bad-crc");
    let mut c = rclone(&ctx);
    c.args(["rcat", "--header-upload", "x-amz-meta-zsnap-crc32: deadbeef"])
        .arg(format!("t:{}/{}bad", ctx.bench.bucket, ctx.prefix));
    run(c, Some(b"these bytes do not have crc deadbeef"), TIMEOUT).success();
    ctx.get("bad", &[]).fails(65, "CRC32 mismatch");
}

#[test]
fn a_wrong_recorded_length_fails_before_writing() {
    let ctx = Ctx::new("bad-len");
    let mut c = rclone(&ctx);
    c.args(["rcat", "--header-upload", "x-amz-meta-zsnap-bytes: 999"])
        .arg(format!("t:{}/{}bad", ctx.bench.bucket, ctx.prefix));
    run(c, Some(b"short"), TIMEOUT).success();
    let out = ctx.get("bad", &[]).fails(65, "999");
    assert!(out.stdout.is_empty(), "nothing may be written past a detected error");
}

#[test]
fn memory_stays_within_the_part_bound() {
    // (concurrency + 1) × part size = 3 × 5 MiB, plus the runtime's own ~40 MiB.
    let ctx = Ctx::new("memory");
    let d = data(64 * MIB, 9);
    let mut c = Command::new("/usr/bin/time");
    c.arg("-v").arg(bin_path("s3put")).args(["-p", "5M", "-c", "2", &ctx.url("m")]);
    for (k, v) in ctx.cmd("s3put").get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    let out = run(c, Some(&d), TIMEOUT).success();
    let rss_kib: u64 = out
        .stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes): "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no RSS in {}", out.stderr));
    assert!(rss_kib < (15 + 40) * 1024, "s3put used {rss_kib} KiB for a 64 MiB stream");
}
