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

/// HEAD of part `n` of an object (`?partNumber=N`): that part's size, as the server cut it.
fn part_length(ctx: &Ctx, key: &str, n: u32) -> u64 {
    let b = &ctx.bench;
    let mut c = Command::new("curl");
    c.args(["-sS", "-I", "--fail", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
        .arg(format!("{}:{}", b.access_key, b.secret_key))
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
        .arg(format!("{}/{}/{}{}?partNumber={n}", b.endpoint, b.bucket, ctx.prefix, key));
    let head = String::from_utf8_lossy(&run(c, None, TIMEOUT).success().stdout).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no content-length for part {n} of {key}: {head}"))
}

/// A stream of unknown length grows its parts. With --max-parts 10 the scaled growth
/// schedule is 16, 32, 128, 256… MiB, so 60 MiB crosses two size changes: parts of 16,
/// 32 and the last 12 MiB, recorded as zsnap-part-schedule (not zsnap-part-size, which an
/// older s3get would cut by), and read back byte-exact.
#[test]
fn piped_parts_grow_and_read_back() {
    let ctx = Ctx::new("grow");
    let d = data(60 * MIB, 10);
    let r = round_trip(&ctx, "g", &d, &["--max-parts", "10", "-c", "2"], &["-p", "5M"]);
    assert_eq!((r["multipart"].as_bool(), r["parts"].as_u64()), (Some(true), Some(3)), "{r}");
    let schedule = "grow1:16M*1,32M*1,128M*1,256M*3,512M*1,1024M*1,5120M*2";
    assert_eq!(r["part_schedule"], schedule, "{r}");
    assert_eq!(r["part_size"], 128 * MIB as u64, "the size of part 3: {r}");
    let h = curl_head(&ctx, "g");
    assert!(h.contains(&format!("x-amz-meta-zsnap-part-schedule: {}", schedule.to_ascii_lowercase())), "{h}");
    assert!(!h.contains("zsnap-part-size"), "{h}");
    // Part by part, the server holds what the schedule says.
    let sizes: Vec<u64> = (1..=3).map(|n| part_length(&ctx, "g", n)).collect();
    assert_eq!(sizes, [16 * MIB as u64, 32 * MIB as u64, 12 * MIB as u64]);
    let got = ctx.get("g", &["--progress"]).success();
    assert!(got.stderr.contains("verified: crc32"), "{}", got.stderr);

    // With the default 10,000 parts the first 1,600 are 16 MiB: 40 MiB is 16 + 16 + 8.
    let d = data(40 * MIB, 11);
    let r = round_trip(&ctx, "d", &d, &[], &[]);
    assert_eq!((r["parts"].as_u64(), r["part_size"].as_u64()), (Some(3), Some(16 * MIB as u64)), "{r}");
    assert!(r["part_schedule"].as_str().is_some_and(|s| s.starts_with("grow1:16M*1600,32M*500,")), "{r}");
    // --expected-size and --part-size keep equal parts and zsnap-part-size, as before.
    let r = round_trip(&ctx, "e", &d, &["--expected-size", "40M"], &[]);
    assert_eq!((r["parts"].as_u64(), r["part_schedule"].is_null()), (Some(3), true), "{r}");
    assert!(curl_head(&ctx, "e").contains(&format!("x-amz-meta-zsnap-part-size: {}", 16 * MIB)));
}

/// Objects whose server checksum is composite (CRC32 of the parts' CRC32s, `…-N`) are
/// checked at the part boundaries their metadata records: equal parts by zsnap-part-size
/// (as every older s3put wrote), growing parts by zsnap-part-schedule. s3put itself asks
/// for full-object checksums, so boto3 uploads these the way a composite-only server
/// would store them.
#[test]
fn composite_checksums_are_checked_at_the_recorded_boundaries() {
    let ctx = Ctx::new("composite");
    let script = "import os, sys, boto3\n\
        s3 = boto3.client('s3', endpoint_url=os.environ['EP'], region_name='us-east-1')\n\
        bucket, key, meta, sizes = sys.argv[1], sys.argv[2], sys.argv[3], [int(s) for s in sys.argv[4].split(',')]\n\
        k, v = meta.split('=', 1)\n\
        up = s3.create_multipart_upload(Bucket=bucket, Key=key, Metadata={k: v}, ChecksumAlgorithm='CRC32')\n\
        parts = []\n\
        for n, size in enumerate(sizes, 1):\n\
        \x20   body = os.urandom(size)\n\
        \x20   p = s3.upload_part(Bucket=bucket, Key=key, UploadId=up['UploadId'], PartNumber=n, Body=body, ChecksumAlgorithm='CRC32')\n\
        \x20   parts.append({'PartNumber': n, 'ETag': p['ETag'], 'ChecksumCRC32': p['ChecksumCRC32']})\n\
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up['UploadId'], MultipartUpload={'Parts': parts})\n\
        print(s3.head_object(Bucket=bucket, Key=key, ChecksumMode='ENABLED').get('ChecksumCRC32'))\n";
    let upload = |key: &str, meta: &str, sizes: &[usize]| {
        let mut c = Command::new(std::path::Path::new(&need("ZSNAP_MOTO_VENV")).join("bin/python"));
        let sizes: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
        c.args(["-c", script, &ctx.bench.bucket, &format!("{}{key}", ctx.prefix), meta, &sizes.join(",")])
            .env("EP", &ctx.bench.endpoint)
            .env("AWS_ACCESS_KEY_ID", &ctx.bench.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &ctx.bench.secret_key)
            .env_remove("AWS_PROFILE");
        let crc = run(c, None, TIMEOUT).success().text();
        assert!(crc.trim().ends_with(&format!("-{}", sizes.len())), "{key}: a composite checksum: {crc}");
    };
    let verified = |key: &str| ctx.get(key, &["--progress"]).success().stderr;
    // Old-style equal parts: 5, 5 and the last 3 MiB.
    upload("equal", &format!("zsnap-part-size={}", 5 * MIB), &[5 * MIB, 5 * MIB, 3 * MIB]);
    assert!(verified("equal").contains("verified: crc32 (server per-part checksums)"));
    // Growing parts: 5, 10 and the last 3 MiB.
    let grown = [5 * MIB, 10 * MIB, 3 * MIB];
    upload("grown", "zsnap-part-schedule=grow1:5M*1,10M*1", &grown);
    assert!(verified("grown").contains("verified: crc32 (server per-part checksums)"));
    // A schedule that cuts the same three parts elsewhere: the per-part check fails (65).
    upload("lying", "zsnap-part-schedule=grow1:5M*1,8M*1", &grown);
    ctx.get("lying", &[]).fails(65, "CRC32 mismatch (crc32 (server per-part checksums))");
    // One that gives another part count is not the object's cut: length only, no false alarm.
    upload("stale", &format!("zsnap-part-size={}", 5 * MIB), &grown);
    assert!(verified("stale").contains("verified: length only"));
    // A schedule version this s3get does not know is not guessed at.
    upload("future", "zsnap-part-schedule=grow9:5M*1,10M*1", &grown);
    assert!(verified("future").contains("verified: length only"));
}
