//! The central promise: a cut stream never becomes an object. Killed producers,
//! signals, kill -9 of s3put, and a server that goes away mid-upload.

use crate::common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn producer_killed_mid_stream_commits_nothing() {
    let ctx = Ctx::new("producer-killed");
    for (key, cmd, part) in [
        // Killed after 30 MiB: several parts are already up when it dies.
        ("multi", "head -c 30M /dev/urandom; kill -9 $$", "5M"),
        // Dies within the first part: the single PUT must never be sent.
        ("single", "head -c 1M /dev/urandom; kill -9 $$", "5M"),
        // Fails with a status, not a signal.
        ("status", "head -c 7M /dev/urandom; exit 3", "5M"),
        // A failing stage of a pipeline (pipefail).
        ("pipeline", "head -c 6M /dev/urandom | (head -c 2M; exit 4) | cat", "5M"),
    ] {
        let mut c = ctx.cmd("s3put");
        c.args(["--exec", cmd, "--part-size", part]).arg(ctx.url(key));
        let out = run(c, None, TIMEOUT).fails(67, "nothing was committed");
        assert!(out.stdout.is_empty(), "no JSON report for a failed upload");
        ctx.get(key, &[]).fails(66, "no such object");
    }
    assert!(ctx.pending_uploads().is_empty(), "aborted uploads must not linger");
}

#[test]
fn producer_that_succeeds_commits() {
    let ctx = Ctx::new("producer-ok");
    let mut c = ctx.cmd("s3put");
    c.args(["--exec", "head -c 12M /dev/zero | cat", "-p", "5M"]).arg(ctx.url("ok"));
    let r = run(c, None, TIMEOUT).success().json();
    assert_eq!(r["bytes"], 12 * MIB as u64);
    assert!(ctx.get("ok", &[]).success().stdout == vec![0u8; 12 * MIB]);
}

/// Start s3put with a stdin we hold open, feed `first` bytes, and wait until its
/// multipart upload is visible as in progress.
fn start_upload(ctx: &Ctx, cmd: Command, first: &[u8]) -> std::process::Child {
    let mut c = cmd;
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn s3put");
    child.stdin.as_mut().expect("stdin").write_all(first).expect("feed s3put");
    ctx.wait_until("the multipart upload to start", Duration::from_secs(60), || !ctx.pending_uploads().is_empty());
    child
}

#[test]
fn sigterm_sigint_and_sigpipe_abort_the_upload() {
    let ctx = Ctx::new("signals");
    for (sig, code) in [("TERM", 143), ("INT", 130), ("PIPE", 141)] {
        let key = format!("sig{sig}");
        let mut c = ctx.cmd("s3put");
        c.args(["-p", "5M"]).arg(ctx.url(&key));
        let child = start_upload(&ctx, c, &data(12 * MIB, 21));
        let killed = Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status();
        assert!(killed.map(|s| s.success()).unwrap_or(false));
        // Our end of stdin stays open: s3put must stop on the signal alone.
        let out = finish(child, "s3put (signalled)", TIMEOUT).fails(code, "upload aborted");
        assert!(out.stdout.is_empty());
        ctx.get(&key, &[]).fails(66, "no such object");
        assert!(ctx.pending_uploads().is_empty(), "SIG{sig} must abort the multipart upload");
    }
}

#[test]
fn kill_9_leaves_no_object_and_cleanup_aborts_the_upload() {
    let ctx = Ctx::new("kill9");
    let mut c = ctx.cmd("s3put");
    c.args(["-p", "5M"]).arg(ctx.url("k"));
    let mut child = start_upload(&ctx, c, &data(12 * MIB, 22));
    child.kill().expect("kill -9");
    let _ = child.wait();
    ctx.get("k", &[]).fails(66, "no such object");
    let pending = ctx.pending_uploads();
    assert_eq!(pending.len(), 1, "{pending:?}");
    // Uploads younger than the threshold are left alone...
    let mut c = ctx.cmd("s3put");
    c.args(["--abort-uploads", "--older-than", "1h", &ctx.prefix_url()]);
    assert!(run(c, None, TIMEOUT).success().stdout.is_empty());
    // ...and without one, aborted.
    let mut c = ctx.cmd("s3put");
    c.args(["--abort-uploads", &ctx.prefix_url()]);
    let aborted = run(c, None, TIMEOUT).success().json_lines();
    assert_eq!(aborted.len(), 1);
    assert_eq!(aborted[0]["action"], "aborted");
    assert_eq!(aborted[0]["url"], ctx.url("k"));
    assert!(ctx.pending_uploads().is_empty());
}

#[test]
fn server_stopped_mid_upload() {
    // A private Garage, so stopping it disturbs no other test.
    let ctx = Ctx::new("server-stop");
    let dir = ctx.bench.work.join(format!("garage-stop-{}", std::process::id()));
    let garage = repo_path("bench/garage");
    // Beside the bench's Garage (which uses its port, +1 and +3), so that several
    // worktrees can run the suite at once on different ZSNAP_TEST_PORTs.
    let bench_port: u16 = ctx.bench.endpoint.rsplit(':').next().and_then(|p| p.parse().ok()).expect("endpoint port");
    let port = (bench_port + 5).to_string();
    let start = || {
        let mut c = Command::new(&garage);
        c.args(["start", dir.to_str().expect("utf-8 path"), &port]);
        run(c, None, Duration::from_secs(60)).success();
    };
    let stop = || {
        let mut c = Command::new(&garage);
        c.args(["stop", dir.to_str().expect("utf-8 path")]);
        run(c, None, Duration::from_secs(60)).success();
    };
    start();
    let env = std::fs::read_to_string(dir.join("env")).expect("garage env");
    let var = |name: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("{name} not in env"))
            .to_string()
    };
    let private = |bin: &str| {
        let mut c = Command::new(bin_path(bin));
        c.env("ZSNAP_S3_ENDPOINT", var("ZSNAP_S3_ENDPOINT"))
            .env("AWS_ACCESS_KEY_ID", var("AWS_ACCESS_KEY_ID"))
            .env("AWS_SECRET_ACCESS_KEY", var("AWS_SECRET_ACCESS_KEY"))
            .env("AWS_REGION", "us-east-1");
        c
    };
    let url = format!("s3://{}/stop/k", var("ZSNAP_TEST_BUCKET"));
    let prefix = format!("s3://{}/stop/", var("ZSNAP_TEST_BUCKET"));
    let pending = || {
        let mut c = private("s3put");
        c.args(["--list-uploads", &prefix]);
        run(c, None, TIMEOUT).success().json_lines()
    };

    let mut c = private("s3put");
    c.args(["-p", "5M", "--retries", "1", "--connect-timeout", "2s", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn s3put");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&data(12 * MIB, 23)).expect("feed");
    ctx.wait_until("the multipart upload to start", Duration::from_secs(60), || !pending().is_empty());
    stop();
    // The rest of the stream arrives while the server is down.
    let _ = stdin.write_all(&data(12 * MIB, 24));
    drop(stdin);
    let out = finish(child, "s3put (server stopped)", TIMEOUT).fails(69, "unreachable");
    assert!(out.stderr.contains("--abort-uploads"), "must say how to clean up: {}", out.stderr);

    start();
    let mut get = private("s3get");
    get.arg(&url);
    run(get, None, TIMEOUT).fails(66, "no such object");
    assert_eq!(pending().len(), 1, "the interrupted upload is listed once the server is back");
    let mut c = private("s3put");
    c.args(["--abort-uploads", &prefix]);
    assert_eq!(run(c, None, TIMEOUT).success().json_lines().len(), 1);
    assert!(pending().is_empty());
    stop();
}
