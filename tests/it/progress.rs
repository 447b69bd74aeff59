//! Progress on stderr (issue 16): off a terminal only with --progress (or ZSNAP_PROGRESS=1),
//! as lines at --progress-interval and a final summary in binary units; on a terminal (a
//! pty from util-linux `script`) one line rewritten with \r. stdout never changes.

use crate::common::*;
use crate::zsync_ssh::Sync;
use std::process::Command;

/// 6 MiB exactly: the summary must say `6.0 MiB (6291456 bytes)`.
const SIZE: usize = 6 * MIB;

/// A producer that writes the first half of `file`, pauses, then writes the rest: a stream
/// slow enough for lines at a short interval to be drawn while it runs (the pause shapes
/// the stream; nothing waits on it).
fn slow_producer(file: &std::path::Path, pause: &str) -> String {
    let f = file.display();
    format!("head -c {} '{f}'; sleep {pause}; tail -c +{} '{f}'", SIZE / 2, SIZE / 2 + 1)
}

fn stderr_lines(out: &Output) -> Vec<&str> {
    out.stderr.lines().collect()
}

fn last_line(out: &Output) -> &str {
    out.stderr.trim_end().lines().last().unwrap_or("")
}

/// Every percent on stderr, as numbers (`~100%` counts as 100).
fn percents(text: &str) -> Vec<u64> {
    text.split('(')
        .skip(1)
        .filter_map(|s| s.split_once("%)").map(|(p, _)| p.trim_start_matches('~')))
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn s3put_and_s3get_report_progress_off_a_terminal_with_a_final_summary() {
    let ctx = Ctx::new("progress");
    let d = data(SIZE, 161);
    let file = ctx.bench.work.join(format!("progress-{}.bin", std::process::id()));
    std::fs::write(&file, &d).expect("write");

    let mut c = ctx.cmd("s3put");
    c.args(["--progress", "--progress-interval", "0.2", "--expected-size", "6M", "-p", "5M"])
        .args(["--exec", &slow_producer(&file, "1")])
        .arg(ctx.url("p"));
    let put = run(c, None, TIMEOUT).success();
    // stdout: the one JSON line, its fields as before (mb_per_s stays decimal MB/s).
    let line = put.json();
    assert_eq!(line["bytes"], SIZE as u64, "{line}");
    assert!(line["mb_per_s"].is_number(), "{line}");
    // Lines while it ran: against the estimate, with a rate; one at least during the pause.
    let running: Vec<&str> = stderr_lines(&put).into_iter().filter(|l| l.contains(" of ~6.0 MiB (")).collect();
    assert!(!running.is_empty(), "no line while running:\n{}", put.stderr);
    assert!(running.iter().all(|l| l.starts_with("s3put: read ") && l.contains("/s")), "{}", put.stderr);
    assert!(running.iter().any(|l| l.contains("read 3.0 MiB of ~6.0 MiB (50%)")), "{}", put.stderr);
    let last = last_line(&put);
    assert!(last.starts_with("s3put: read 6.0 MiB (6291456 bytes), 100% in "), "{}", put.stderr);
    assert!(last.contains(" MiB/s average, uploaded 6.0 MiB"), "{}", put.stderr);
    assert!(!put.stderr.contains("MB/s"), "one unit system on stderr: {}", put.stderr);

    let get = ctx.get("p", &["--progress", "--progress-interval", "0.2"]).success();
    assert!(get.stdout == d, "s3get's bytes changed");
    let last = last_line(&get);
    assert!(last.starts_with("s3get: downloaded 6.0 MiB (6291456 bytes), 100% in "), "{}", get.stderr);
    assert!(last.contains("/s average, crc32 ") && last.contains("verified: "), "{}", get.stderr);
    assert!(percents(&get.stderr).iter().all(|&p| p <= 100), "{}", get.stderr);

    // The environment the scripts set does what the flag does.
    let mut c = ctx.cmd("s3get");
    c.env("ZSNAP_PROGRESS", "1").arg(ctx.url("p"));
    let get = run(c, None, TIMEOUT).success();
    assert!(get.stdout == d);
    assert!(last_line(&get).starts_with("s3get: downloaded 6.0 MiB (6291456 bytes), 100%"), "{}", get.stderr);

    // Without a terminal and without --progress: nothing, as before.
    let put = ctx.put("quiet", &d, &[]).success();
    assert_eq!(put.stderr, "");
    let get = ctx.get("quiet", &[]).success();
    assert!(get.stdout == d);
    assert_eq!(get.stderr, "");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_stream_past_its_estimate_never_shows_more_than_100_percent() {
    let ctx = Ctx::new("progress-over");
    let d = data(SIZE, 162);
    let file = ctx.bench.work.join(format!("progress-over-{}.bin", std::process::id()));
    std::fs::write(&file, &d).expect("write");
    let mut c = ctx.cmd("s3put");
    c.args(["--progress-interval", "0.2", "--expected-size", "1M", "-p", "5M"])
        .args(["--exec", &slow_producer(&file, "1")])
        .arg(ctx.url("over"));
    let put = run(c, None, TIMEOUT).success();
    assert_eq!(put.json()["bytes"], SIZE as u64);
    // During the pause 3 MiB of an estimated 1 MiB are read: `~100%`, and no ETA at all.
    assert!(put.stderr.contains("read 3.0 MiB of ~1.0 MiB (~100%)"), "{}", put.stderr);
    assert!(!put.stderr.contains("ETA"), "{}", put.stderr);
    assert!(percents(&put.stderr).iter().all(|&p| p <= 100), "{}", put.stderr);
    assert!(last_line(&put).starts_with("s3put: read 6.0 MiB (6291456 bytes), 100% in "), "{}", put.stderr);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_bad_progress_setting_is_one_clear_line() {
    let ctx = Ctx::new("progress-bad");
    let mut c = ctx.cmd("s3get");
    c.env("ZSNAP_PROGRESS", "yes").arg(ctx.url("nothing"));
    run(c, None, TIMEOUT).fails(64, "ZSNAP_PROGRESS: 'yes' is not 0, 1 or tty");
    ctx.put("k", b"x", &["--progress-interval", "0"]).fails(64, "--progress-interval: '0' is not a number of seconds");
}

/// `script -qec CMD /dev/null`: CMD on a pty; what it wrote there, \r and escapes included.
fn on_a_terminal(ctx: &Ctx, cmd: &str, env: &[(&str, String)]) -> Option<Output> {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("util-linux script not found: the terminal mode is tested by its unit tests only");
        return None;
    }
    let mut c = Command::new("script");
    c.args(["-qec", cmd, "/dev/null"]);
    for (k, v) in ctx.cmd("s3put").get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    Some(run(c, None, TIMEOUT))
}

#[test]
fn on_a_terminal_one_line_is_rewritten_in_place() {
    let ctx = Ctx::new("progress-tty");
    let d = data(SIZE, 163);
    let file = ctx.bench.work.join(format!("progress-tty-{}.bin", std::process::id()));
    std::fs::write(&file, &d).expect("write");
    let producer = slow_producer(&file, "1.5");
    let cmd =
        format!("{} --expected-size 6M -p 5M --exec \"{producer}\" {}", bin_path("s3put").display(), ctx.url("tty"));
    let Some(out) = on_a_terminal(&ctx, &cmd, &[]) else { return };
    let out = out.success();
    let text = out.text();
    // Once a second during the pause: the line drawn from column 0, cleared to its end.
    assert!(text.contains("\rs3put: read 3.0 MiB of ~6.0 MiB (50%), "), "{text:?}");
    assert!(text.contains("\x1b[K"), "{text:?}");
    // The last state replaces it, then the line ends; the JSON line comes after it.
    assert!(text.contains("\rs3put: read 6.0 MiB (6291456 bytes), 100% in "), "{text:?}");
    let json = text.lines().last().unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    assert_eq!(v["bytes"], SIZE as u64);
    let got = ctx.get("tty", &[]).success();
    assert!(got.stdout == d);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn zsnap_backup_and_restore_show_their_steps_progress() {
    let site = Site::new("progress-br", "pbr");
    site.write("a.bin", &data(3 * MIB, 164));
    site.snapshot("s1");
    let out = site.run("zsnap-backup", &["--progress", "--progress-interval", "0.5"]).success();
    let sent = out.json_lines();
    assert_eq!(sent.len(), 1, "{}", out.stderr);
    let input = sent[0]["input_bytes"].as_u64().expect("input_bytes");
    // The final line of the upload: the stream's exact size, 100% of the plan's estimate.
    let want = format!("s3put: read {} ({input} bytes), 100% in ", zsnap::cli::output::human_bytes(input));
    assert!(out.stderr.lines().any(|l| l.starts_with(&want)), "{want:?} not in:\n{}", out.stderr);

    let target = site.pool.ds("restored");
    let out = site.run("zsnap-restore", &["--progress", "latest", "--target", &target]).success();
    assert!(
        out.stderr.lines().any(|l| l.starts_with("s3get: downloaded ") && l.contains(", 100% in ")),
        "{}",
        out.stderr
    );
    assert_eq!(out.json()["action"], "restored");

    // On a terminal the steps' stderr still reaches it, through the script's tee, and the
    // script tells s3put so: its line is drawn in place.
    site.write("b.bin", &data(MIB, 165));
    site.snapshot("s2");
    let mut env: Vec<(&str, String)> = Vec::new();
    let c = site.cmd("zsnap-backup", &[]);
    let owned: Vec<(String, String)> = c
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_string_lossy().into_owned(), v?.to_string_lossy().into_owned())))
        .collect();
    for (k, v) in &owned {
        env.push((k.as_str(), v.clone()));
    }
    let script = repo_path("scripts/zsnap-backup").display().to_string();
    let Some(out) = on_a_terminal(&site.ctx, &script, &env) else { return };
    let text = out.success().text();
    assert!(text.contains("\rs3put: read ") && text.contains("\x1b[K"), "{text:?}");
}

#[test]
fn zsync_ssh_reports_each_transfer() {
    let s = Sync::new("progress-sync");
    s.write("a.bin", &data(2 * MIB, 166));
    s.snapshot("s1");
    let out = s.sync(&["--progress", "--progress-interval", "0.5"]).success();
    let summary = out.json_lines().into_iter().last().expect("summary line");
    let bytes = summary["bytes"].as_u64().expect("bytes");
    let want = format!(": sent {} ({bytes} bytes) in ", zsnap::cli::output::human_bytes(bytes));
    let last = out.stderr.lines().find(|l| l.starts_with("zsync-ssh: full ") && l.contains(&want));
    assert!(last.is_some_and(|l| l.contains("/s average")), "{want:?} not in:\n{}", out.stderr);
    assert!(!out.stderr.contains("MB/s"), "{}", out.stderr);
    s.assert_same_files();
}
