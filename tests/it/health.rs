//! zsnap-health on real backups (zfs-fuse + Garage): a healthy chain, a deleted middle
//! incremental, an old newest backup, a stale upload cleaned, pings, and S3 failures.

use crate::common::*;
use std::io::{Read, Write};
use std::time::Duration;

/// Three snapshots backed up: a full and two incrementals.
fn backed_up(name: &str, tag: &str) -> Site {
    let site = Site::new(name, tag);
    for (i, snap) in ["s1", "s2", "s3"].iter().enumerate() {
        site.write(&format!("f{i}"), &data(100_000, i as u64));
        site.snapshot(snap);
        site.run("zsnap-backup", &[]).success();
    }
    site
}

fn health(site: &Site, args: &[&str]) -> Output {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    site.run("zsnap-health", &all)
}

fn summary(out: &Output) -> serde_json::Value {
    out.json_lines().pop().expect("a summary line")
}

#[test]
fn healthy_then_broken_then_old() {
    let site = backed_up("health", "h");
    let ok = health(&site, &[]).success();
    let s = summary(&ok);
    assert_eq!((s["summary"].as_bool(), s["status"].as_str()), (Some(true), Some("ok")), "{}", ok.stderr);
    // zsnap-status shows the same verdict after its table, and exits with it.
    let st = site.run("zsnap-status", &["--json", "--health"]).success();
    assert_eq!(summary(&st)["status"], "ok");

    // Without --dataset: every dataset under the prefix.
    let mut c = site.cmd("zsnap-health", &["--json"]);
    c.env_remove("ZSNAP_DATASET");
    let all = run(c, None, TIMEOUT).success();
    assert!(all.json_lines().iter().any(|l| l["dataset"] == site.data.as_str() && l["status"] == "ok"));

    // Old newest backup: judged at a later --now.
    let later = |h: i64| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 + h * 3600;
        t.to_string()
    };
    let warn = health(&site, &["--now", &later(30)]);
    assert_eq!(warn.code(), 1, "{}", warn.stderr);
    assert_eq!(summary(&warn)["status"], "warning");
    let crit = health(&site, &["--now", &later(60)]);
    assert_eq!(crit.code(), 2);
    assert!(crit.json_lines().iter().any(|l| l["check"] == "freshness"));

    // Prometheus textfile, written whole.
    let prom = site.ctx.bench.work.join(format!("{}.prom", site.pool.name));
    health(&site, &["--prometheus", prom.to_str().unwrap()]).success();
    let text = std::fs::read_to_string(&prom).expect("prom file");
    assert!(text.contains(&format!("zsnap_backup_chain_length{{dataset=\"{}\"}} 3", site.data)), "{text}");

    // A restore drill on the healthy chain: received, guids compared, scratch destroyed.
    let drill = health(&site, &["--restore-drill", &site.pool.name]).success();
    assert!(drill.json_lines().iter().any(|l| l["check"] == "restore-drill" && l["severity"] == "ok"));
    let left = site.pool.zfs(&["list", "-H", "-o", "name", "-r", &site.pool.name]).success();
    assert!(!String::from_utf8_lossy(&left.stdout).contains("zsnap-drill-"), "scratch dataset left behind");

    // --deep reads every object; then one byte flipped inside the newest object (re-uploaded
    // whole, so S3's CRC32 matches the bad bytes): the plain check only lists and passes,
    // --deep names the object and the check that failed.
    health(&site, &["--deep"]).success();
    let newest = site.corrupt("s3");
    health(&site, &[]).success();
    let deep = health(&site, &["--deep"]);
    assert_eq!(deep.code(), 2, "{}", deep.stderr);
    let lines = deep.json_lines();
    let hit = lines.iter().find(|l| l["check"].as_str().is_some_and(|c| c.starts_with("deep:"))).expect("deep finding");
    let ds_line = lines.iter().find(|l| l["backups"].is_u64()).expect("the dataset's line");
    assert_eq!(ds_line["status"], "critical", "the dataset's line carries the deep finding: {ds_line}");
    assert_eq!(hit["subject"].as_str(), Some(format!("{}{newest}", site.ctx.prefix).as_str()), "{lines:?}");
    assert_eq!(health(&site, &["--deep", "--chain", "s2"]).code(), 0, "the chain to @s2 is intact");

    // The restore drill receives the latest chain (through the corrupt @s3: refused) …
    let drill = health(&site, &["--restore-drill", &site.pool.name]);
    assert_eq!(drill.code(), 2, "{}", drill.stderr);
    assert!(drill.json_lines().iter().any(|l| l["check"] == "restore-drill" && l["severity"] == "critical"));
    let scratch = format!("{}/zsnap-drill-", site.pool.name);
    let left = site.pool.zfs(&["list", "-H", "-o", "name", "-r", &site.pool.name]).success();
    assert!(!String::from_utf8_lossy(&left.stdout).contains(&scratch), "scratch dataset left behind");

    // Delete the middle incremental: it and everything after it are named.
    let middle = site.keys().into_iter().find(|k| k.contains("/@s2/")).expect("s2 key");
    let mut c = rclone(&site.ctx);
    c.args(["deletefile", &format!("t:{}/{}{middle}", site.ctx.bench.bucket, site.ctx.prefix)]);
    run(c, None, TIMEOUT).success();
    let broken = health(&site, &[]);
    assert_eq!(broken.code(), 2, "{}", broken.stderr);
    let lines = broken.json_lines();
    let chain: Vec<&serde_json::Value> = lines.iter().filter(|l| l["check"] == "chain").collect();
    assert_eq!(chain.len(), 1, "{lines:?}");
    assert_eq!(chain[0]["subject"], "@s3");
    assert!(chain[0]["message"].as_str().unwrap().contains("parent @s2"), "{lines:?}");
    assert_eq!(summary(&broken)["status"], "critical");
    assert_eq!(site.run("zsnap-status", &["--json", "--health"]).code(), 2);
}

#[test]
fn stale_uploads_are_reported_and_cleaned() {
    let site = backed_up("health-up", "u");
    // An upload left in progress, as kill -9 leaves one (started through the SDK via rclone
    // would complete; s3put --list-uploads is what we check against).
    let mut c = site.ctx.cmd("s3put");
    c.args(["-p", "5M"]).arg(site.ctx.url(&format!("{}/@s9/partial", site.data)));
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = c.spawn().expect("s3put");
    child.stdin.as_mut().expect("stdin").write_all(&data(12 * MIB, 7)).expect("feed s3put");
    site.ctx.wait_until("an upload in progress", Duration::from_secs(60), || !site.ctx.pending_uploads().is_empty());
    let _ = child.kill();
    let _ = child.wait();
    let out = health(&site, &["--stale-uploads", "0s"]);
    assert_eq!(out.code(), 1, "{}", out.stderr);
    assert!(out.json_lines().iter().any(|l| l["check"] == "stale-upload"));
    health(&site, &["--stale-uploads", "0s", "--clean"]).success();
    assert!(site.ctx.pending_uploads().is_empty());
    health(&site, &["--stale-uploads", "0s"]).success();
}

/// A one-shot HTTP server on 127.0.0.1 that records request lines.
fn listener() -> (String, std::sync::mpsc::Receiver<String>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://127.0.0.1:{}/ping", l.local_addr().expect("addr").port());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 8192];
            let n = s.read(&mut buf).unwrap_or(0);
            let first = String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string();
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nOK");
            let _ = tx.send(first);
        }
    });
    (url, rx)
}

#[test]
fn pings_and_s3_failures() {
    let site = backed_up("health-ping", "p");
    let (url, rx) = listener();
    health(&site, &["--ping", &url]).success();
    let got = rx.recv_timeout(Duration::from_secs(10)).expect("success ping");
    assert!(got.starts_with("POST /ping "), "{got}");
    let late =
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 400_000).to_string();
    assert_eq!(health(&site, &["--ping", &url, "--now", &late]).code(), 2);
    let got = rx.recv_timeout(Duration::from_secs(10)).expect("failure ping");
    assert!(got.starts_with("POST /ping/fail "), "{got}");

    // An unreachable ping URL: reported, bounded, verdict unchanged.
    let dead = format!("http://127.0.0.1:{}/x", closed_port());
    let start = std::time::Instant::now();
    let out = health(&site, &["--ping", &dead]);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert!(out.stderr.contains("ping"), "{}", out.stderr);
    assert!(start.elapsed() < Duration::from_secs(30));

    // A missing bucket and wrong credentials: critical, one line, JSON summary still printed.
    let out = health(&site, &["--bucket", "no-such-bucket-zsnap"]);
    assert_eq!(summary(&out)["status"], "critical");
    out.fails(2, "no-such-bucket-zsnap");
    let mut c = site.cmd("zsnap-health", &["--json", "--retries", "0"]);
    c.env("AWS_SECRET_ACCESS_KEY", "wrong");
    let out = run(c, None, TIMEOUT);
    assert!(summary(&out)["error"].is_string());
    out.fails(2, "zsnap-health");
}

/// No committed backup anywhere under the prefix (empty or mistyped) is critical, not an
/// "ok" over zero datasets.
#[test]
fn a_prefix_without_any_backup_is_critical() {
    let mut site = Site::new("hl-empty", "he");
    site.set("ZSNAP_DATASET", "");
    site.set("ZSNAP_S3_PREFIX", &format!("{}typo/", site.ctx.prefix));
    let out = site.run("zsnap-health", &["--json"]);
    assert_eq!(out.code(), 2, "{}", out.stderr);
    let lines = out.json_lines();
    let empty = lines.iter().find(|l| l["check"] == "empty").expect("an empty finding");
    assert_eq!(empty["severity"], "critical", "{empty}");
    assert!(empty["message"].as_str().unwrap_or("").contains("typo/"), "{empty}");
}

/// --deep reads an object whose parts grew, as a bare pipe into s3put stores it: the
/// backup's bytes stored again with no size and --max-parts 10 (parts of 16, 32, 128…
/// MiB), so the object crosses two size changes, and the deep check passes.
#[test]
fn deep_reads_an_object_with_growing_parts() {
    let site = Site::new("health-grow", "g");
    site.write("big.bin", &data(60 * MIB, 12));
    site.snapshot("s1");
    site.run("zsnap-backup", &[]).success();
    let key = site.keys().into_iter().find(|k| k.contains("/@s1/")).expect("the object");
    let mut c = rclone(&site.ctx);
    c.args(["cat", &format!("t:{}/{}{key}", site.ctx.bench.bucket, site.ctx.prefix)]);
    let bytes = run(c, None, TIMEOUT).success().stdout;
    assert!(bytes.len() > 48 * MIB, "past parts 1 and 2: {} bytes", bytes.len());
    let copy = site.ctx.bench.work.join(format!("{}-grown", site.pool.name));
    std::fs::write(&copy, &bytes).expect("write the copy");
    let mut c = site.ctx.cmd("s3put");
    c.args(["--max-parts", "10", "--exec", &format!("cat {}", copy.display())]).arg(site.ctx.url(&key));
    let r = run(c, None, TIMEOUT).success().json();
    assert!(r["part_schedule"].as_str().is_some_and(|s| s.starts_with("grow1:16M*1,32M*1,128M*1,")), "{r}");
    assert_eq!(r["parts"], 3, "{r}");
    let deep = health(&site, &["--deep"]).success();
    assert_eq!(summary(&deep)["status"], "ok", "{}", deep.stderr);
    let _ = std::fs::remove_file(&copy);
}
