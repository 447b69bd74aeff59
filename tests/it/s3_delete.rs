//! `s3put --delete` against Garage: batch DeleteObjects in the order given, one JSON line
//! per key, a missing key counted as deleted, and more keys than one request takes.

use crate::common::*;

#[test]
fn delete_three_one_of_them_missing() {
    let ctx = Ctx::new("delete");
    ctx.put("a", b"a", &[]).success();
    ctx.put("c", &data(6 * MIB, 3), &["--part-size", "5M"]).success();
    let mut c = ctx.cmd("s3put");
    c.args(["--delete", &ctx.url("c"), &ctx.url("missing"), &ctx.url("a")]);
    let out = run(c, None, TIMEOUT).success();
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    let lines = out.json_lines();
    let want: Vec<serde_json::Value> =
        ["c", "missing", "a"].iter().map(|k| serde_json::json!({"key": ctx.url(k), "deleted": true})).collect();
    assert_eq!(lines, want, "in the order given");
    ctx.get("a", &[]).fails(66, "no such object");
    ctx.get("c", &[]).fails(66, "no such object");
}

#[test]
fn more_keys_than_one_request_takes() {
    let ctx = Ctx::new("delete-many");
    let n = 1001;
    let dir = ctx.bench.work.join(format!("delete-many-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    for i in 0..n {
        std::fs::write(dir.join(format!("k{i:04}")), b"x").expect("write");
    }
    let mut c = rclone(&ctx);
    c.args(["copy", "--transfers", "32"]).arg(&dir).arg(format!("t:{}/{}", ctx.bench.bucket, ctx.prefix));
    run(c, None, TIMEOUT).success();
    let _ = std::fs::remove_dir_all(&dir);

    let urls: Vec<String> = (0..n).map(|i| ctx.url(&format!("k{i:04}"))).collect();
    let mut c = ctx.cmd("s3put");
    c.arg("--delete").args(&urls);
    let lines = run(c, None, TIMEOUT).success().json_lines();
    assert_eq!(lines.len(), n);
    assert!(lines.iter().zip(&urls).all(|(l, u)| l["key"] == *u && l["deleted"] == true));
    let mut c = rclone(&ctx);
    c.args(["lsf", &format!("t:{}/{}", ctx.bench.bucket, ctx.prefix)]);
    let left = run(c, None, TIMEOUT).success();
    assert!(left.stdout.is_empty(), "left: {}", String::from_utf8_lossy(&left.stdout));
}

#[test]
fn a_bad_endpoint_is_one_line() {
    let ctx = Ctx::new("delete-down");
    let mut c = ctx.cmd("s3put");
    c.env("ZSNAP_S3_ENDPOINT", format!("http://127.0.0.1:{}", closed_port())).args([
        "--retries",
        "0",
        "--delete",
        &ctx.url("a"),
        &ctx.url("b"),
    ]);
    run(c, None, TIMEOUT).fails(69, "endpoint unreachable");
}
