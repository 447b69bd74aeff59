//! Every bad input to s3put/s3get gives one clear line and its own exit code, and
//! leaves nothing behind: credentials, permissions, buckets, endpoints, DNS, TLS,
//! throttling, part limits, closed or full stdout.

use crate::common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Both binaries, against one broken setting, fail with `code` and name `needle`.
fn both_fail(ctx: &Ctx, env: &[(&str, &str)], args: &[&str], code: i32, needle: &str) {
    let mut put = ctx.cmd("s3put");
    put.envs(env.iter().copied()).args(args).arg(ctx.url("k"));
    run(put, Some(b"data"), TIMEOUT).fails(code, needle);
    let mut get = ctx.cmd("s3get");
    get.envs(env.iter().copied()).args(args).arg(ctx.url("k"));
    run(get, None, TIMEOUT).fails(code, needle);
}

#[test]
fn wrong_secret_is_bad_credentials() {
    let ctx = Ctx::new("bad-secret");
    ctx.put("k", b"data", &[]).success();
    let wrong = format!("{}00", &ctx.bench.secret_key[2..]);
    both_fail(&ctx, &[("AWS_SECRET_ACCESS_KEY", &wrong)], &[], 78, "bad credentials");
}

#[test]
fn unknown_access_key_is_bad_credentials() {
    let ctx = Ctx::new("bad-key");
    both_fail(&ctx, &[("AWS_ACCESS_KEY_ID", "GK0123456789abcdef01234567")], &[], 78, "bad credentials");
}

#[test]
fn no_credentials_at_all() {
    let ctx = Ctx::new("no-creds");
    let mut put = ctx.cmd("s3put");
    put.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("HOME", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .arg(ctx.url("k"));
    run(put, Some(b"data"), TIMEOUT).fails(78, "no usable credentials");
}

#[test]
fn key_without_permission_is_access_denied() {
    let ctx = Ctx::new("denied");
    ctx.put("k", b"data", &[]).success();
    // A real key that exists on the server but was never allowed on this bucket.
    let ak = format!("GK{:024x}", std::process::id() as u128 * 7919 + 17);
    let sk = format!("{:064x}", std::process::id() as u128 * 104_729 + 3);
    let imported =
        ctx.bench.garage(&["key", "import", "-n", &format!("denied-{}", std::process::id()), "--yes", &ak, &sk]);
    assert!(imported.code() == 0 || imported.stderr.contains("already"), "key import failed: {}", imported.stderr);
    both_fail(&ctx, &[("AWS_ACCESS_KEY_ID", &ak), ("AWS_SECRET_ACCESS_KEY", &sk)], &[], 77, "access denied");
}

#[test]
fn missing_bucket() {
    let ctx = Ctx::new("no-bucket");
    let url = "s3://zsnap-no-such-bucket/k";
    let mut put = ctx.cmd("s3put");
    put.arg(url);
    run(put, Some(b"data"), TIMEOUT).fails(68, "no such bucket");
    let mut get = ctx.cmd("s3get");
    get.arg(url);
    run(get, None, TIMEOUT).fails(68, "no such bucket");
}

#[test]
fn missing_key() {
    let ctx = Ctx::new("no-key");
    ctx.get("nothing-here", &[]).fails(66, "no such object");
}

#[test]
fn unreachable_endpoint() {
    let ctx = Ctx::new("unreachable");
    let e = format!("http://127.0.0.1:{}", closed_port());
    both_fail(&ctx, &[], &["--endpoint", &e, "--retries", "1"], 69, "unreachable");
}

#[test]
fn unresolvable_endpoint() {
    let ctx = Ctx::new("dns");
    // `.invalid` never resolves (RFC 2606); the connect timeout bounds a slow resolver.
    let args = ["--endpoint", "http://zsnap-test.invalid:3900", "--retries", "0", "--connect-timeout", "5s"];
    let mut put = ctx.cmd("s3put");
    put.args(args).arg(ctx.url("k"));
    let out = run(put, Some(b"data"), TIMEOUT);
    // A resolver that answers says "did not resolve"; one that cannot be reached times out.
    assert!(
        (out.code() == 71 && out.stderr.contains("did not resolve"))
            || (out.code() == 69 && out.stderr.contains("unreachable")),
        "{}: {}",
        out.code(),
        out.stderr
    );
}

#[test]
fn tls_to_a_plain_http_server_fails_as_tls() {
    let ctx = Ctx::new("tls");
    let e = ctx.bench.endpoint.replace("http://", "https://");
    both_fail(&ctx, &[], &["--endpoint", &e, "--retries", "0"], 71, "TLS failed");
}

/// A fake S3 endpoint on 127.0.0.1 that answers every request with 503 SlowDown.
fn slowdown_server() -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for stream in l.incoming().flatten() {
            h.fetch_add(1, Ordering::SeqCst);
            let mut r = BufReader::new(stream);
            let mut len = 0usize;
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
            let resp = format!(
                "HTTP/1.1 503 Slow Down\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{xml}",
                xml.len()
            );
            let mut s = r.into_inner();
            let _ = s.write_all(resp.as_bytes());
        }
    });
    (format!("http://{addr}"), hits)
}

#[test]
fn throttling_past_retries() {
    let ctx = Ctx::new("throttle");
    let (endpoint, hits) = slowdown_server();
    let mut put = ctx.cmd("s3put");
    put.args(["--endpoint", &endpoint, "--retries", "2"]).arg(ctx.url("k"));
    run(put, Some(b"data"), TIMEOUT).fails(75, "throttled");
    assert!(hits.load(Ordering::SeqCst) >= 2, "the request must have been retried");
    let mut get = ctx.cmd("s3get");
    get.args(["--endpoint", &endpoint, "--retries", "1"]).arg(ctx.url("k"));
    run(get, None, TIMEOUT).fails(75, "");
}

#[test]
fn stream_larger_than_the_part_limit_fails_before_the_extra_part() {
    let ctx = Ctx::new("too-large");
    let d = data(10 * MIB + 1, 11);
    let out = ctx.put("big", &d, &["--part-size", "5M", "--max-parts", "2"]).fails(73, "--max-parts");
    assert!(out.stderr.contains("--expected-size") && out.stderr.contains("upload aborted"), "{}", out.stderr);
    ctx.get("big", &[]).fails(66, "no such object");
    assert!(ctx.pending_uploads().is_empty(), "the upload must have been aborted");
    // Exactly at the limit is fine.
    ctx.put("fits", &d[..10 * MIB], &["--part-size", "5M", "--max-parts", "2"]).success();
}

#[test]
fn closed_stdout_ends_s3get_quietly() {
    let ctx = Ctx::new("epipe");
    ctx.put("k", &data(8 * MIB, 12), &[]).success();
    let mut c = std::process::Command::new("bash");
    c.arg("-c")
        .arg(format!("set -o pipefail; {} -p 1M {} | head -c 10 >/dev/null", bin_path("s3get").display(), ctx.url("k")))
        .envs(ctx.cmd("s3get").get_envs().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))));
    let out = run(c, None, TIMEOUT);
    assert_eq!(out.code(), 80, "{}", out.stderr);
    assert!(out.stderr.is_empty(), "a closed stdout is not an error to report: {}", out.stderr);
}

#[test]
fn full_disk_on_stdout() {
    let ctx = Ctx::new("enospc");
    ctx.put("k", &data(MIB, 13), &[]).success();
    let mut c = ctx.cmd("s3get");
    c.arg(ctx.url("k"));
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full");
    let out = c.stdout(full).stderr(std::process::Stdio::piped()).output().expect("run s3get");
    assert_eq!(out.status.code(), Some(74));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left on device") && err.contains(&ctx.url("k")), "{err}");
}

#[test]
fn bad_flags_are_usage_errors() {
    let ctx = Ctx::new("usage");
    ctx.put("k", b"x", &["--part-size", "1M"]).fails(64, "--part-size");
    ctx.put("k", b"x", &["--meta", "no-equals"]).fails(64, "--meta");
    ctx.get("k", &["--range", "x"]).fails(64, "--range");
    let mut c = ctx.cmd("s3put");
    c.args(["--endpoint", "127.0.0.1:3900", "s3://bkt/k"]);
    run(c, Some(b"x"), TIMEOUT).fails(64, "--endpoint");
}
