//! A real distributed object store under zsnap: each test starts its own three-node Garage
//! cluster (bench/garage-cluster, replication factor 3: a write needs 2 of the 3 nodes, a
//! read 2 of 3) and talks to node 0. One node killed mid-transfer: a backup and a restore
//! still complete, byte-exact. Two killed: Garage answers 503 (no quorum), so a backup and a
//! restore fail with 69 (unreachable), commit nothing and leave the target as it was; the
//! one upload the backup could not abort is named in its message. The nodes back:
//! zsnap-health --deep passes and the next backup works. Killing node 0, the endpoint
//! itself, is also 69, and another node's endpoint serves the same bucket.
//!
//! "Mid-transfer" is made deterministic by a valve: a `zfs` first on PATH that holds a
//! send's output (or a recv's input) after its first bytes until the test opens it, so a
//! node dies while s3put has parts stored and more to send, or while s3get has ranges left
//! to fetch.

use crate::common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Bound on one bench-script call (a start forms a cluster of three debug-built nodes).
const BENCH_TIMEOUT: Duration = Duration::from_secs(180);

// At most two clusters at once, each on its own block of ports: slot k uses
// BASEPORT = bench port + 20 + 30k, and its nodes BASEPORT..BASEPORT+23, so both stay inside
// bench port + 20..+79, clear of the bench's Garage (+0..+3), server_stopped_mid_upload's
// (+5..+8) and moto (+10).
static SLOTS: Mutex<[bool; 2]> = Mutex::new([false; 2]);
static FREED: Condvar = Condvar::new();

struct Slot(usize);

impl Slot {
    fn take() -> Slot {
        let limit = Duration::from_secs(1800);
        let start = Instant::now();
        let mut slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(k) = slots.iter().position(|used| !used) {
                slots[k] = true;
                return Slot(k);
            }
            let left = limit
                .checked_sub(start.elapsed())
                .unwrap_or_else(|| panic!("no cluster slot free within {limit:?}: two other cluster tests held them"));
            slots = FREED.wait_timeout(slots, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        SLOTS.lock().unwrap_or_else(|e| e.into_inner())[self.0] = false;
        FREED.notify_one();
    }
}

/// A running three-node cluster, stopped (by PID, through the bench script) when dropped.
struct Cluster {
    dir: PathBuf,
    env: BTreeMap<String, String>,
    /// The bench's work directory (pools and valves go there).
    work: PathBuf,
    /// Its health as node 0 sees it, in the test's failure reports.
    noted: u64,
    /// Released after the nodes stopped (fields drop after `drop`).
    _slot: Slot,
}

fn bench_script(args: &[&str]) -> Output {
    let mut c = Command::new(repo_path("bench/garage-cluster"));
    c.args(args);
    run(c, None, BENCH_TIMEOUT)
}

impl Cluster {
    fn start(tag: &str) -> Cluster {
        let slot = Slot::take();
        let bench = Bench::get();
        let bench_port: u16 =
            bench.endpoint.rsplit(':').next().and_then(|p| p.parse().ok()).expect("the bench endpoint's port");
        let base = bench_port + 20 + 30 * slot.0 as u16;
        let dir = bench.work.join(format!("cluster-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = dir.display().to_string();
        bench_script(&["start", &d, &base.to_string()]).success();
        let text = std::fs::read_to_string(dir.join("env")).expect("the cluster's env file");
        let env: BTreeMap<String, String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        let config0 = env["ZSNAP_CLUSTER_CONFIGS"].split(' ').next().expect("node 0's config").to_string();
        let noted = note("garage json-api GetClusterHealth (node 0)".into(), None, move || {
            let mut c = Command::new(garage_bin());
            c.args(["-c", &config0, "json-api", "GetClusterHealth"]);
            c
        });
        Cluster { dir, env, work: bench.work, noted, _slot: slot }
    }

    fn var(&self, name: &str) -> &str {
        self.env.get(name).unwrap_or_else(|| panic!("{name} is not in the cluster's env"))
    }

    fn endpoint(&self, node: usize) -> String {
        self.var("ZSNAP_CLUSTER_ENDPOINTS").split(' ').nth(node).expect("node's endpoint").to_string()
    }

    /// The cluster as the harness's bench: node 0's endpoint, the cluster's key and bucket.
    fn bench(&self) -> Bench {
        Bench {
            endpoint: self.endpoint(0),
            bucket: self.var("ZSNAP_CLUSTER_BUCKET").to_string(),
            access_key: self.var("AWS_ACCESS_KEY_ID").to_string(),
            secret_key: self.var("AWS_SECRET_ACCESS_KEY").to_string(),
            garage_config: self.var("ZSNAP_CLUSTER_CONFIGS").split(' ').next().expect("config").to_string(),
            work: self.work.clone(),
        }
    }

    /// A dataset on its own 512 MiB pool (room for two copies of a 144 MiB dataset), backed
    /// up to this cluster through node 0.
    fn site(&self, name: &str, tag: &str) -> Site {
        let ctx = Ctx::on(name, self.bench());
        let pool = Pool::sized(&ctx, tag, Some("512M"));
        Site::on(ctx, pool)
    }

    /// kill -9 one node, as a crash.
    fn kill(&self, node: usize) {
        bench_script(&["kill", &self.dir.display().to_string(), &node.to_string()]).success();
    }

    /// Start a killed node again on its data; returns once the running nodes see it.
    fn revive(&self, node: usize) {
        bench_script(&["revive", &self.dir.display().to_string(), &node.to_string()]).success();
    }

    /// (key, stored parts) of every in-progress upload under the site's prefix, through a
    /// peer client (boto3 from moto's venv): ListMultipartUploads, then ListParts.
    fn stored_parts(&self, site: &Site) -> Vec<(String, usize)> {
        let python = PathBuf::from(need("ZSNAP_MOTO_VENV")).join("bin/python");
        let script = "import sys, boto3\n\
                      from botocore.config import Config\n\
                      s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',\n\
                      \x20   config=Config(s3={'addressing_style': 'path'}, retries={'max_attempts': 1}))\n\
                      for u in s3.list_multipart_uploads(Bucket=sys.argv[2], Prefix=sys.argv[3]).get('Uploads', []):\n\
                      \x20   parts = s3.list_parts(Bucket=sys.argv[2], Key=u['Key'], UploadId=u['UploadId'])\n\
                      \x20   print(len(parts.get('Parts', [])), u['Key'])\n";
        let mut c = Command::new(python);
        c.arg("-c")
            .arg(script)
            .args([&self.endpoint(0), self.var("ZSNAP_CLUSTER_BUCKET"), &site.ctx.prefix])
            .env("AWS_ACCESS_KEY_ID", self.var("AWS_ACCESS_KEY_ID"))
            .env("AWS_SECRET_ACCESS_KEY", self.var("AWS_SECRET_ACCESS_KEY"))
            .env_remove("AWS_PROFILE");
        let out = run(c, None, Duration::from_secs(60)).success();
        out.text()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(n, key)| (key.to_string(), n.parse().expect("a part count")))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        forget(self.noted);
        let d = self.dir.display().to_string();
        let mut c = Command::new(repo_path("bench/garage-cluster"));
        c.args(["stop", &d]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let stopped = c.spawn().map(|mut child| {
            let start = Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(s)) => break s.success(),
                    Ok(None) if start.elapsed() > BENCH_TIMEOUT => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break false;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                    Err(_) => break false,
                }
            }
        });
        // A failed test keeps the nodes' logs for its report; a passed one frees the disk.
        if stopped.unwrap_or(false) && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Which side of zfs a valve holds.
#[derive(Clone, Copy)]
enum Hold {
    /// `zfs send`'s output (not `-n` dry runs): the backup's producer.
    Send,
    /// `zfs recv`'s input: the restore's consumer.
    Recv,
}

/// A `zfs` first on the site's PATH that runs the real one, but lets only the first `bytes`
/// of one side of it through, marks `held`, and lets the rest through once the test opens
/// it (bounded: 120 s unopened fails the command).
struct Valve {
    dir: PathBuf,
}

/// The zfs on this process's PATH.
fn real_zfs() -> PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join("zfs"))
        .find(|p| p.is_file())
        .expect("zfs on PATH")
}

impl Valve {
    fn on(site: &mut Site, hold: Hold, bytes: u64) -> Valve {
        let n = VALVES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = site.ctx.bench.work.join(format!("{}-valve{n}", site.pool.name));
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).expect("valve dir");
        let (send, recv) = match hold {
            Hold::Send => ("hold", "pass"),
            Hold::Recv => ("pass", "hold"),
        };
        let script = format!(
            r#"#!/usr/bin/env bash
# zfs with a test's valve: see tests/it/cluster.rs.
real='{real}' dir='{dir}' bytes={bytes}
hold() {{
    head -c "$bytes"
    : >"$dir/held"
    for _ in $(seq 2400); do [[ -e "$dir/open" ]] && break; sleep 0.05; done
    [[ -e "$dir/open" ]] || {{ echo "zfs (valve): not opened within 120 s" >&2; exit 1; }}
    cat
}}
pass() {{ cat; }}
case "${{1:-}}" in
send)
    for a in "$@"; do [[ "$a" == -*n* ]] && exec "$real" "$@"; done
    set -o pipefail
    "$real" "$@" | {send}
    exit ;;
recv | receive)
    set -o pipefail
    {recv} | "$real" "$@"
    exit ;;
esac
exec "$real" "$@"
"#,
            real = real_zfs().display(),
            dir = dir.display(),
        );
        let zfs = bin.join("zfs");
        std::fs::write(&zfs, script).expect("write the valve");
        std::fs::set_permissions(&zfs, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod the valve");
        site.env.retain(|(k, _)| k != "PATH");
        let path = site
            .cmd("zsnap-backup", &[])
            .get_envs()
            .find(|(k, _)| *k == "PATH")
            .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
            .expect("the site's PATH");
        site.set("PATH", &format!("{}:{path}", bin.display()));
        Valve { dir }
    }

    /// Wait (bounded) until the first bytes went through and the valve holds the rest.
    fn wait_held(&self, ctx: &Ctx, running: &mut Background) {
        ctx.wait_until("the valve to hold the transfer", Duration::from_secs(120), || {
            if let Ok(Some(s)) = running.child().try_wait() {
                panic!("the command ended ({s}) before the valve held its transfer");
            }
            self.dir.join("held").exists()
        });
    }

    fn open(&self) {
        std::fs::write(self.dir.join("open"), b"").expect("open the valve");
    }

    /// Let everything through from now on (the site keeps the valve on its PATH).
    fn disarm(&self) {
        self.open();
    }
}

impl Drop for Valve {
    /// Never leave a command held (a failed assertion): it goes on, and ends.
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("open"), b"");
    }
}

static VALVES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A script running while the test kills nodes. Dropped unfinished (a failed assertion),
/// it is stopped with SIGTERM, which the scripts forward to their pipeline (s3put then
/// aborts its upload), so no stage is left holding the pool.
struct Background {
    child: Option<Child>,
    what: String,
}

fn spawn(site: &Site, prog: &str, args: &[&str]) -> Background {
    let mut c = site.cmd(prog, args);
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap_or_else(|e| panic!("cannot run {prog}: {e}"));
    Background { child: Some(child), what: format!("{prog} {}", args.join(" ")) }
}

impl Background {
    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("running")
    }

    fn finish(mut self, when: &str) -> Output {
        let child = self.child.take().expect("running");
        finish(child, &format!("{} ({when})", self.what), TIMEOUT)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The committed backup objects under the site's prefix, through a peer client (rclone).
fn committed(site: &Site) -> Vec<String> {
    site.keys().into_iter().filter(|k| k.contains("/zsnap1,")).collect()
}

// Where a backup is when the valve holds it. s3put cuts these streams into 16 MiB parts
// and starts the multipart upload once it has two (one alone may be a single PUT); the
// valve lets 40 MB through, so parts 1 and 2 can be stored while it holds, and every part
// after them is sent after the valve opens.
const SEND_HELD: u64 = 40_000_000;

#[test]
fn backup_completes_with_one_node_killed_mid_transfer() {
    let cluster = Cluster::start("backup");
    let mut site = cluster.site("cl-backup", "clb");
    site.write("big.bin", &data(96 * MIB, 61));
    site.write("small.txt", b"kept across a crash\n");
    site.snapshot("s1");
    let want = tree(&site.dir());
    let valve = Valve::on(&mut site, Hold::Send, SEND_HELD);
    let mut running = spawn(&site, "zsnap-backup", &["--compressor", "none"]);
    valve.wait_held(&site.ctx, &mut running);
    site.ctx.wait_until("a part of the upload to be stored", Duration::from_secs(120), || {
        cluster.stored_parts(&site).iter().any(|(_, n)| *n >= 1)
    });
    cluster.kill(2);
    valve.open();
    let out = running.finish("node 2 killed mid-transfer").success();
    let sent = out.json_lines();
    assert_eq!(sent.len(), 1, "one full backup\n{}", out.stderr);
    assert_eq!(sent[0]["stream"]["kind"], "full", "{}", sent[0]);
    let keys = committed(&site);
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(site.ctx.pending_uploads().is_empty(), "the upload must be completed, not left in progress");

    // The object is the stream zfs sends, byte for byte (compressor none), through node 0
    // and through node 1, with node 2 still down.
    valve.disarm();
    let stream = site.pool.zfs(&["send", &format!("{}@s1", site.data)]).success().stdout;
    for node in [0, 1] {
        let mut get = site.ctx.cmd("s3get");
        get.args(["--endpoint", &cluster.endpoint(node)]).arg(site.url(&keys[0]));
        let got = run(get, None, TIMEOUT).success().stdout;
        assert!(
            got == stream,
            "node {node}: the object ({} bytes) is not the stream ({} bytes)",
            got.len(),
            stream.len()
        );
    }
    site.destroy(&site.data);
    site.run("zsnap-restore", &["latest"]).success();
    assert_same(&tree(&site.dir()), &want, "restored with node 2 down");

    // Node 2 back: the backup it missed verifies end to end through its own endpoint, with
    // node 0 (the client's endpoint) killed: that is unreachable (69), node 2 is not.
    cluster.revive(2);
    site.run("zsnap-health", &["--deep", "--json"]).success();
    cluster.kill(0);
    site.ctx.get(&keys[0], &["--retries", "1", "--connect-timeout", "2s"]).fails(69, "unreachable");
    let deep = site.run("zsnap-health", &["--deep", "--json", "--endpoint", &cluster.endpoint(2)]).success();
    let ds = deep.json_lines().into_iter().find(|l| l["dataset"] == site.data.as_str()).expect("the dataset's line");
    assert_eq!((ds["status"].as_str(), ds["backups"].as_u64()), (Some("ok"), Some(1)), "{ds}");
}

// How much of a restore is still to fetch when the valve holds it. s3get fetches 16 MiB
// ranges; with --zfs-stream its decoder thread writes one range, a channel holds two more,
// the download loop holds the next one, and three more are in flight: 7 ranges, 112 MiB,
// ahead of zfs recv at most. The valve lets 8 MB through (inside the first range), so of a
// 144 MiB object the last two ranges (32 MiB) are fetched only after the valve opens.
const RESTORED: usize = 144 * MIB;
const RECV_HELD: u64 = 8_000_000;

#[test]
fn restore_completes_with_one_node_killed_mid_transfer() {
    let cluster = Cluster::start("restore");
    let mut site = cluster.site("cl-restore", "clr");
    site.write("big.bin", &data(RESTORED, 62));
    site.write("small.txt", b"restored across a crash\n");
    site.snapshot("s1");
    let want = tree(&site.dir());
    site.run("zsnap-backup", &["--compressor", "none"]).success();
    site.destroy(&site.data);

    let valve = Valve::on(&mut site, Hold::Recv, RECV_HELD);
    let mut running = spawn(&site, "zsnap-restore", &["latest"]);
    valve.wait_held(&site.ctx, &mut running);
    cluster.kill(1);
    valve.open();
    running.finish("node 1 killed mid-transfer").success();
    assert_same(&tree(&site.dir()), &want, "restored with node 1 killed mid-transfer");
    assert_eq!(site.snapshots_of(&site.data), ["s1"]);
}

#[test]
fn two_nodes_down_fail_cleanly_and_the_cluster_recovers() {
    let cluster = Cluster::start("quorum");
    let mut site = cluster.site("cl-quorum", "clq");
    site.write("a.txt", b"first\n");
    site.snapshot("s1");
    let t1 = tree(&site.dir());
    site.write("b.bin", &data(RESTORED, 63));
    site.snapshot("s2");
    site.run("zsnap-backup", &["--compressor", "none", "--snapshot", "s1"]).success();
    site.run("zsnap-backup", &["--compressor", "none"]).success();
    let target = site.pool.ds("r");
    site.run("zsnap-restore", &["s1", "--target", &target]).success();
    let target_dir = site.mountpoint(&target);
    assert_same(&tree(&target_dir), &t1, "@s1 restored");
    let fast = ["--retries", "1", "--connect-timeout", "2s", "--read-timeout", "5s"];

    // A restore of @s2 onto the target, with two nodes killed while it runs: it fails and
    // the target is rolled back to @s1, where it started.
    let valve = Valve::on(&mut site, Hold::Recv, RECV_HELD);
    let mut args = fast.to_vec();
    // --force: reading the target's files (atime) counts as a change to zfs recv.
    args.extend(["latest", "--target", &target, "--force"]);
    let mut running = spawn(&site, "zsnap-restore", &args);
    valve.wait_held(&site.ctx, &mut running);
    cluster.kill(1);
    cluster.kill(2);
    valve.open();
    let out = running.finish("two nodes killed");
    let out = out.fails_last(69, "zsnap-restore", "server unavailable (503)");
    assert!(out.stderr.contains("Could not reach quorum"), "{}", out.stderr);
    assert!(out.stderr.contains("rolled back to @s1"), "{}", out.stderr);
    assert_eq!(site.snapshots_of(&target), ["s1"]);
    assert_same(&tree(&target_dir), &t1, "the target as it was");
    // Planning needs a listing, which needs a quorum too: nothing starts.
    let fresh = site.pool.ds("fresh");
    let mut args = fast.to_vec();
    args.extend(["latest", "--target", &fresh]);
    site.run("zsnap-restore", &args).fails_last(69, "zsnap-plan", "Could not reach quorum");
    assert!(!site.exists(&fresh));
    cluster.revive(1);
    cluster.revive(2);

    // A backup with two nodes killed after its first part was stored: it fails, and no
    // object appears; the upload is kept for the next run (zsnap-backup resumes), and named.
    site.write("c.bin", &data(56 * MIB, 64));
    site.snapshot("s3");
    let valve = Valve::on(&mut site, Hold::Send, SEND_HELD);
    let mut args = fast.to_vec();
    args.extend(["--compressor", "none"]);
    let mut running = spawn(&site, "zsnap-backup", &args);
    valve.wait_held(&site.ctx, &mut running);
    site.ctx.wait_until("a part of the upload to be stored", Duration::from_secs(120), || {
        cluster.stored_parts(&site).iter().any(|(_, n)| *n >= 1)
    });
    cluster.kill(1);
    cluster.kill(2);
    valve.open();
    let out = running.finish("two nodes killed");
    // The part upload is cut (Garage answers 503 before it has the body) or answered 503:
    // both are 69, an outage the next run can continue from.
    let out = out.fails_last(69, "zsnap-backup", "step 1 of 1 failed (exit 69)");
    assert!(out.stderr.contains("is kept (nothing is visible)"), "{}", out.stderr);
    site.run("zsnap-backup", &fast).fails_last(69, "zsnap-plan", "Could not reach quorum");

    // The nodes back: still only @s1 and @s2 committed, the upload kept is the one named.
    cluster.revive(1);
    cluster.revive(2);
    let keys = committed(&site);
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(!keys.iter().any(|k| k.contains("/@s3/")), "{keys:?}");
    let pending = site.ctx.pending_uploads();
    assert_eq!(pending.len(), 1, "the upload kept for the next run: {pending:?}");
    let id = pending[0]["upload_id"].as_str().expect("upload id").to_string();
    assert!(out.stderr.contains(&id), "upload {id} is left but not named: {}", out.stderr);

    // Every stored stream reads back whole and chained by guid, and the next backup works.
    valve.disarm();
    let deep_status = || {
        let deep = site.run("zsnap-health", &["--deep", "--json"]).success();
        let ds =
            deep.json_lines().into_iter().find(|l| l["dataset"] == site.data.as_str()).expect("the dataset's line");
        (ds["status"].as_str().map(str::to_string), ds["backups"].as_u64())
    };
    assert_eq!(deep_status(), (Some("ok".to_string()), Some(2)));
    let out = site.run("zsnap-backup", &["--compressor", "none"]).success();
    let sent = out.json_lines();
    assert_eq!(sent.len(), 1, "the next backup sends @s3\n{}", out.stderr);
    // ...continuing the kept upload: its stored parts are not sent again.
    assert_eq!(sent[0]["resumed"], id.as_str(), "{}", sent[0]);
    assert!(sent[0]["reused_parts"].as_u64().is_some_and(|n| n >= 1), "{}", sent[0]);
    assert!(site.ctx.pending_uploads().is_empty());
    assert!(committed(&site).iter().any(|k| k.contains("/@s3/")), "{:?}", committed(&site));
    assert_eq!(deep_status(), (Some("ok".to_string()), Some(3)));
}
