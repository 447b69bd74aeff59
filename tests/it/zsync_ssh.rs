//! zsync-ssh end to end: a source pool on the machine's zfs-fuse, the target on a second
//! zfs-fuse "host" (bench/host2: own namespaces, reached by ssh). Files are compared on both
//! sides after every sync; failures must leave the target at its last good snapshot.

use crate::common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run with `bash tests/run` (it starts bench/host2)"))
}

/// A source dataset on this machine's zfs-fuse and its replica's name on the second host
/// (also used by tests/it/script_faults.rs).
pub(crate) struct Sync {
    pub(crate) _ctx: Ctx,
    pub(crate) pool: Pool,
    pub(crate) src: String,
    pub(crate) dst: String,
    pub(crate) host2_dir: String,
    pub(crate) ssh_config: String,
}

static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Sync {
    pub(crate) fn new(tag: &str) -> Sync {
        let ctx = Ctx::new(tag);
        let pool = Pool::new(&ctx, tag);
        let src = pool.ds("data");
        pool.zfs(&["create", &src]).success();
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dst = format!("{}/{tag}{}x{n}", env("ZSNAP_HOST2_POOL"), std::process::id());
        Sync { _ctx: ctx, pool, src, dst, host2_dir: env("ZSNAP_HOST2_DIR"), ssh_config: env("ZSNAP_HOST2_SSH_CONFIG") }
    }

    pub(crate) fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.pool.mount.join("data").join(name), bytes).expect("write");
    }

    pub(crate) fn snapshot(&self, snap: &str) {
        self.pool.zfs(&["snapshot", &format!("{}@{snap}", self.src)]).success();
    }

    pub(crate) fn cmd(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(bin_path("zsync-ssh"));
        c.args(["-F", &self.ssh_config]).args(extra).arg(&self.src).arg(format!("{}:{}", env("ZSNAP_HOST2"), self.dst));
        c
    }

    pub(crate) fn sync(&self, extra: &[&str]) -> Output {
        run(self.cmd(extra), None, TIMEOUT)
    }

    /// Run COMMAND on the second host.
    pub(crate) fn remote(&self, args: &[&str]) -> Output {
        let mut c = Command::new(repo_path("bench/host2"));
        c.args(["exec", &self.host2_dir]).args(args);
        run(c, None, TIMEOUT)
    }

    pub(crate) fn remote_snapshots(&self) -> Vec<String> {
        let out = self.remote(&["zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", &self.dst]).success();
        let prefix = format!("{}@", self.dst);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    /// Every file on the source equals the target's copy (read inside the second host).
    pub(crate) fn assert_same_files(&self) {
        let local = files_of(&self.pool.mount.join("data"));
        let dir = format!("{}/mnt/{}", self.host2_dir, self.dst.split_once('/').expect("pool/ds").1);
        let out = self.remote(&["sh", "-c", &format!("cd '{dir}' && ls -1")]).success();
        let remote_names: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
        let local_names: Vec<String> = local.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(remote_names, local_names, "different files");
        for (name, bytes) in local {
            let got = self.remote(&["cat", &format!("{dir}/{name}")]).success().stdout;
            assert!(got == bytes, "{name} differs on the target");
        }
    }
}

#[test]
fn full_incremental_nothing_and_rename() {
    let s = Sync::new("zsfull");
    s.write("a", &data(300_000, 1));
    s.snapshot("s1");
    s.write("b", &data(200_000, 2));
    s.snapshot("s2");
    let j = s.sync(&[]).success().json();
    assert_eq!((j["action"].as_str(), j["sent"].clone()), (Some("sent"), serde_json::json!(["s1", "s2"])), "{j}");
    assert!(j["common"].is_null());
    assert_eq!(s.remote_snapshots(), ["s1", "s2"]);
    s.assert_same_files();

    s.write("c", &data(100_000, 3));
    s.snapshot("s3");
    let j = s.sync(&["-c", "zstd", "-b", "16M"]).success().json();
    assert_eq!(j["sent"], serde_json::json!(["s3"]), "{j}");
    assert_eq!(j["common"]["snapshot"], "s2");
    s.assert_same_files();

    let out = s.sync(&[]).success();
    assert_eq!(out.json()["action"], "none");
    assert!(out.stderr.is_empty(), "quiet when nothing to do: {}", out.stderr);
    assert_eq!(s.sync(&["--exit-nothing", "3"]).code(), 3);

    // Renamed on the source: still the common snapshot, by guid.
    s.pool.zfs(&["rename", &format!("{}@s3", s.src), &format!("{}@renamed", s.src)]).success();
    s.write("d", &data(50_000, 4));
    s.snapshot("s4");
    let j = s.sync(&["-I"]).success().json();
    assert_eq!(
        (j["common"]["snapshot"].as_str(), j["common"]["target_snapshot"].as_str()),
        (Some("renamed"), Some("s3"))
    );
    assert_eq!(j["sent"], serde_json::json!(["s4"]));
    assert_eq!(s.remote_snapshots(), ["s1", "s2", "s3", "s4"]);
    s.assert_same_files();
    // No hold is left behind: every base can be destroyed (zfs-fuse has no `zfs holds`).
    for snap in ["s1", "s2", "renamed"] {
        s.pool.zfs(&["destroy", &format!("{}@{snap}", s.src)]).success();
    }
}

#[test]
fn diverged_refused_then_rollback_and_no_common_refused() {
    let s = Sync::new("zsdiv");
    s.write("a", &data(100_000, 5));
    s.snapshot("s1");
    s.sync(&[]).success();
    s.remote(&["zfs", "snapshot", &format!("{}@theirs", s.dst)]).success();
    s.write("b", &data(100_000, 6));
    s.snapshot("s2");
    let out = s.sync(&[]).fails(79, "receiver-only: theirs");
    let j = out.json();
    assert_eq!(j["action"], "refused");
    assert_eq!(
        (j["sender_only"].clone(), j["receiver_only"].clone()),
        (serde_json::json!(["s2"]), serde_json::json!(["theirs"]))
    );
    assert_eq!(s.remote_snapshots(), ["s1", "theirs"], "refused: untouched");
    let j = s.sync(&["--rollback"]).success().json();
    assert_eq!(j["sent"], serde_json::json!(["s2"]));
    assert_eq!(s.remote_snapshots(), ["s1", "s2"]);
    s.assert_same_files();

    // The common snapshot pruned on the target: no common guid, a clear refusal.
    s.remote(&["zfs", "destroy", &format!("{}@s1", s.dst)]).success();
    s.remote(&["zfs", "destroy", &format!("{}@s2", s.dst)]).success();
    s.remote(&["zfs", "snapshot", &format!("{}@other", s.dst)]).success();
    let out = s.sync(&["--rollback"]).fails(79, "no common snapshot");
    assert_eq!(out.json()["common"], serde_json::Value::Null);
}

#[test]
fn ssh_killed_mid_transfer_then_completes() {
    let s = Sync::new("zskill");
    s.write("a", &data(100_000, 7));
    s.snapshot("s1");
    s.sync(&[]).success();
    s.write("big", &data(96 * MIB, 8));
    s.snapshot("s2");
    let mut c = s.cmd(&[]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
    let child = c.spawn().expect("spawn zsync-ssh");
    let pid = child.id();
    // Wait (bounded) for its ssh child to have read 8 MiB of the stream, then kill ssh.
    let start = Instant::now();
    let ssh = loop {
        assert!(start.elapsed() < Duration::from_secs(120), "ssh never carried 8 MiB");
        let kids = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let found = kids.split_whitespace().find(|k| {
            std::fs::read_to_string(format!("/proc/{k}/comm")).map(|c| c.trim() == "ssh").unwrap_or(false)
                && std::fs::read_to_string(format!("/proc/{k}/io"))
                    .ok()
                    .and_then(|io| {
                        io.lines().find_map(|l| l.strip_prefix("rchar: ").and_then(|v| v.trim().parse::<u64>().ok()))
                    })
                    .is_some_and(|n| n > 8 << 20)
        });
        if let Some(k) = found {
            break k.to_string();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let killed = Command::new("kill").args(["-KILL", &ssh]).status().expect("kill");
    assert!(killed.success());
    let out = finish(child, "zsync-ssh (ssh killed)", TIMEOUT);
    let out = out.fails_last(67, "zsync-ssh", "killed by signal 9");
    assert_eq!(out.json()["action"], "failed");
    assert_eq!(s.remote_snapshots(), ["s1"], "the target stays at its last good snapshot");
    // The next run completes (once the cut receive on the target has given up).
    let start = Instant::now();
    loop {
        let out = s.sync(&[]);
        if out.code() == 0 {
            assert_eq!(out.json()["sent"], serde_json::json!(["s2"]));
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "rerun kept failing: {}", out.stderr);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(s.remote_snapshots(), ["s1", "s2"]);
    s.assert_same_files();
}

#[test]
fn remote_disk_full_keeps_the_last_good_snapshot() {
    let s = Sync::new("zsfull2");
    let dir = env("ZSNAP_HOST2_DIR");
    let pool = format!("zsnapsmall{}", std::process::id());
    let file = format!("{dir}/{pool}.img");
    s.remote(&["truncate", "-s", "64M", &file]).success();
    s.remote(&["zpool", "create", "-o", "cachefile=none", "-m", &format!("{dir}/{pool}-mnt"), &pool, &file]).success();
    let mut t = Sync::new("zsfull3");
    t.dst = format!("{pool}/data");
    t.write("a", &data(100_000, 9));
    t.snapshot("s1");
    t.sync(&[]).success();
    t.write("big", &data(100 * MIB, 10));
    t.snapshot("s2");
    let out = t.sync(&[]).fails_last(67, "zsync-ssh", "out of space");
    assert!(out.stderr.contains("host2"), "names the host: {}", out.stderr);
    assert_eq!(t.remote_snapshots(), ["s1"]);
    // zfs-fuse says "pool is busy" for a moment after a receive; retry that answer only,
    // in bounded steps, as bench/zfs does for the host's pools.
    let start = Instant::now();
    loop {
        let out = s.remote(&["zpool", "destroy", "-f", &pool]);
        if out.code() == 0 {
            break;
        }
        assert!(out.stderr.contains("busy") && start.elapsed() < Duration::from_secs(20), "{}", out.stderr);
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn refusals_and_errors_are_one_line() {
    let s = Sync::new("zserr");
    s.sync(&[]).fails(66, "has no snapshots");
    let mut c = Command::new(bin_path("zsync-ssh"));
    c.args(["-F", &s.ssh_config, "nopool/none", &format!("host2:{}", s.dst)]);
    run(c, None, TIMEOUT).fails(66, "source dataset nopool/none does not exist");
    s.write("a", &data(1000, 11));
    s.snapshot("s1");
    let mut c = Command::new(bin_path("zsync-ssh"));
    c.args(["-o", "ConnectTimeout=5", &s.src, &format!("nohost.invalid:{}", s.dst)]);
    run(c, None, TIMEOUT).fails(71, "nohost.invalid");
    let out = s.sync(&["--dry-run", "-c", "zstd", "--format", "sh"]).success();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.starts_with(&format!("zfs send {}@s1 | zstd -q -c -T0 | ssh ", s.src)), "{text}");
    assert!(s.remote(&["zfs", "list", &s.dst]).code() != 0, "dry run changed nothing");
    s.sync(&["--format", "sh"]).fails(64, "--format sh prints the commands of a --dry-run");
}

/// --dry-run prints JSON (each action's command inside its line) or, with --format sh, only
/// the commands: never both, and the commands are the ones a real run then executes.
#[test]
fn dry_run_is_json_or_commands_never_both() {
    let s = Sync::new("zsdry");
    for (k, snap) in ["s1", "s2"].iter().enumerate() {
        s.write(snap, &data(50_000, 20 + k as u64));
        s.snapshot(snap);
    }
    let json = s.sync(&["--dry-run", "-c", "zstd"]).success();
    let lines = json.json_lines();
    assert_eq!(lines.len(), 3, "a line per transfer, then the summary: {}", json.text());
    let (first, second, summary) = (&lines[0], &lines[1], &lines[2]);
    assert_eq!(
        (first["action"].as_str(), first["kind"].as_str(), first["snapshot"].as_str()),
        (Some("send"), Some("full"), Some("s1"))
    );
    assert_eq!(
        (second["kind"].as_str(), second["from"].as_str(), second["snapshot"].as_str()),
        (Some("inc"), Some("s1"), Some("s2"))
    );
    assert_eq!(second["target"].as_str(), Some(format!("{}:{}", env("ZSNAP_HOST2"), s.dst).as_str()));
    assert_eq!(
        (summary["action"].as_str(), summary["sent"].clone()),
        (Some("dry-run"), serde_json::json!(["s1", "s2"]))
    );

    let sh = s.sync(&["--dry-run", "-c", "zstd", "--format", "sh"]).success();
    let commands: Vec<String> = sh.text().lines().map(str::to_string).collect();
    let from_json: Vec<String> =
        lines[..2].iter().map(|l| l["command"].as_str().expect("command").to_string()).collect();
    assert_eq!(commands, from_json, "the same commands, and nothing else");
    assert!(commands.iter().all(|c| serde_json::from_str::<serde_json::Value>(c).is_err()), "no JSON in sh");
    assert!(
        commands[1].starts_with(&format!("zfs send -i {src}@s1 {src}@s2 | zstd -q -c -T0 | ssh ", src = s.src)),
        "{}",
        commands[1]
    );
    assert!(s.remote(&["zfs", "list", &s.dst]).code() != 0, "dry runs changed nothing");

    // Up to date: no action lines, only the summary (JSON), or nothing at all (sh).
    s.sync(&[]).success();
    assert_eq!(s.sync(&["--dry-run"]).success().json()["action"], "none");
    assert!(s.sync(&["--dry-run", "--format", "sh"]).success().stdout.is_empty());
}

/// The replica config of the prune tests: keep the last 3 snapshots, no period rules.
fn keep_last(s: &Sync, n: u32) -> String {
    let conf = s._ctx.bench.work.join(format!("{}-prune.conf", s.pool.name));
    let text = format!(
        "[main]\nKEEP_LAST=1\n[fs:{}]\nKEEP_LAST={n}\nKEEP_HOURLY=0\nKEEP_DAILY=0\nKEEP_WEEKLY=0\nKEEP_MONTHLY=0\n",
        s.src
    );
    std::fs::write(&conf, text).expect("write config");
    conf.display().to_string()
}

/// --prune-target applies zsnap's retention policy (here KEEP_LAST=3 from the dataset's
/// [fs:] section) to the replica after the sync: it keeps exactly the policy's set, the
/// common snapshot, and what does not match the prefix; --dry-run destroys nothing.
#[test]
fn prune_target_keeps_the_policy_and_the_common_snapshot() {
    let s = Sync::new("zsprune");
    let names: Vec<String> = (1..=10).map(|k| format!("zs-{k:02}")).collect();
    for (k, name) in names.iter().enumerate() {
        s.write(&format!("f{k}"), &data(20_000, 40 + k as u64));
        s.snapshot(name);
        if k == 2 {
            s.snapshot("manual");
        }
    }
    // -I carries "manual" too; it does not match the prefix, so prune never touches it.
    let j = s.sync(&["-I", "-s", "zs-"]).success().json();
    assert_eq!(j["sent"], serde_json::json!(["zs-01", "zs-10"]), "{j}");
    let all: Vec<String> = s.remote_snapshots();
    assert_eq!(all.len(), 11, "{all:?}");
    let conf = keep_last(&s, 3);

    let dry = s.sync(&["-s", "zs-", "--prune-target", "--config", &conf, "--dry-run"]).success();
    let lines = dry.json_lines();
    let (destroys, summary) = lines.split_at(lines.len() - 1);
    let doomed: Vec<&str> = destroys.iter().map(|l| l["snapshot"].as_str().expect("snapshot")).collect();
    assert_eq!(doomed, ["zs-01", "zs-02", "zs-03", "zs-04", "zs-05", "zs-06", "zs-07"], "{}", dry.text());
    for l in destroys {
        assert_eq!(l["action"], "destroy");
        let cmd = l["command"].as_str().expect("command");
        assert!(
            cmd.starts_with("ssh ")
                && cmd.ends_with(&format!("'zfs destroy {}@{}'", s.dst, l["snapshot"].as_str().unwrap())),
            "{cmd}"
        );
        assert!(l["reason"].as_str().unwrap_or("").contains("no rule keeps it (policy: last 3)"), "{l}");
    }
    assert_eq!(summary[0]["action"], "none");
    assert_eq!(summary[0]["to_prune"].as_array().map(Vec::len), Some(7));
    let sh = s.sync(&["-s", "zs-", "--prune-target", "--config", &conf, "--dry-run", "--format", "sh"]).success();
    let cmds: Vec<String> = sh.text().lines().map(str::to_string).collect();
    let from_json: Vec<&str> = destroys.iter().map(|l| l["command"].as_str().unwrap()).collect();
    assert_eq!(cmds, from_json);
    assert_eq!(s.remote_snapshots(), all, "a dry run destroys nothing");

    let out = s.sync(&["-s", "zs-", "--prune-target", "--config", &conf]).success();
    let lines = out.json_lines();
    let summary = lines.last().expect("summary");
    assert_eq!(summary["pruned"], serde_json::json!(doomed), "{}", out.text());
    assert_eq!(lines.len(), 8, "a line per destroyed snapshot, then the summary");
    assert_eq!(s.remote_snapshots(), ["manual", "zs-08", "zs-09", "zs-10"]);
    s.assert_same_files();

    // The next sync sends zs-11 and then prunes by the new common snapshot.
    s.write("g", &data(10_000, 60));
    s.snapshot("zs-11");
    let j = s.sync(&["-s", "zs-", "--prune-target", "--config", &conf]).success().json_lines();
    let summary = j.last().expect("summary");
    assert_eq!(
        (summary["sent"].clone(), summary["pruned"].clone()),
        (serde_json::json!(["zs-11"]), serde_json::json!(["zs-08"]))
    );
    assert_eq!(summary["common"]["snapshot"], "zs-10");
    assert_eq!(s.remote_snapshots(), ["manual", "zs-09", "zs-10", "zs-11"]);
    // The replica still continues incrementally from the common snapshot.
    s.write("h", &data(10_000, 61));
    s.snapshot("zs-12");
    let j = s.sync(&["-s", "zs-"]).success().json();
    assert_eq!(
        (j["sent"].clone(), j["common"]["snapshot"].clone()),
        (serde_json::json!(["zs-12"]), serde_json::json!("zs-11"))
    );
    s.assert_same_files();
}

/// An ssh that stops reading (here a stand-in that sleeps instead of running zfs recv)
/// hangs nothing: --idle-timeout kills the pipeline and exits 69 naming it.
#[test]
fn an_ssh_that_stops_reading_is_killed_by_the_idle_timeout() {
    let s = Sync::new("zsidle");
    s.write("a", &data(100_000, 70));
    s.snapshot("s1");
    s.sync(&[]).success();
    s.write("big", &data(8 * MIB, 71));
    s.snapshot("s2");
    let mut which = Command::new("sh");
    which.args(["-c", "command -v ssh"]);
    let real_ssh = run(which, None, TIMEOUT).success().text().trim().to_string();
    let dir = s._ctx.bench.work.join(format!("{}-stuck-ssh", s.pool.name));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let wrapper = dir.join("ssh");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\ncase \"$*\" in *'zfs recv'*) exec sleep 600 ;; esac\nexec '{real_ssh}' \"$@\"\n"),
    )
    .expect("write wrapper");
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let mut c = s.cmd(&["--idle-timeout", "2s"]);
    c.env("PATH", format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default()));
    let start = Instant::now();
    let out = run(c, None, TIMEOUT);
    let took = start.elapsed();
    let out =
        out.fails(69, &format!("no byte moved for 2s (--idle-timeout): ssh {} stopped reading", env("ZSNAP_HOST2")));
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert_eq!(out.json()["action"], "failed");
    assert_eq!(s.remote_snapshots(), ["s1"], "the target keeps its last good snapshot");

    // A zfs send that stops producing is named as such.
    let mut which = Command::new("sh");
    which.args(["-c", "command -v zfs"]);
    let real_zfs = run(which, None, TIMEOUT).success().text().trim().to_string();
    let wrapper = dir.join("zfs");
    std::fs::write(&wrapper, format!("#!/bin/sh\n[ \"$1\" = send ] && exec sleep 600\nexec '{real_zfs}' \"$@\"\n"))
        .expect("write wrapper");
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    std::fs::remove_file(dir.join("ssh")).expect("rm ssh stand-in");
    let mut c = s.cmd(&["--idle-timeout", "2s"]);
    c.env("PATH", format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default()));
    run(c, None, TIMEOUT).fails(69, "no byte moved for 2s (--idle-timeout): zfs send stopped writing");
    assert_eq!(s.remote_snapshots(), ["s1"]);

    // Without the stand-ins the next run completes.
    assert_eq!(s.sync(&[]).success().json()["sent"], serde_json::json!(["s2"]));
    s.assert_same_files();
}

/// The README's recipes: one `zfs send` feeding both the stream gate (s3put) and a replica's
/// zfs recv, then a second replica seeded from S3 with s3get, which zsync-ssh then continues
/// incrementally (the common snapshot is found by guid, wherever the bytes came from).
#[test]
fn one_send_two_sinks_and_a_replica_seeded_from_s3() {
    let s = Sync::new("zstee");
    s.write("a", &data(2 * MIB, 5));
    s.snapshot("s1");
    let guid = s.pool.guid(&format!("{}@s1", s.src));
    let key = s._ctx.url(&format!("{}/@s1/zsnap1,kind=full,guid={guid},time=1,z=zstd", s.src));
    let host = env("ZSNAP_HOST2");
    let fifo = s._ctx.bench.work.join(format!("{}-tee", s.pool.name));
    let script = format!(
        "set -o pipefail; mkfifo '{f}'; s3put --zfs-stream --compress zstd {key} < '{f}' & up=$!; \
         zfs send {src}@s1 | tee '{f}' | ssh -F '{cfg}' {host} zfs recv {dst}; rc=$?; \
         wait $up || exit $?; exit $rc",
        f = fifo.display(),
        src = s.src,
        cfg = s.ssh_config,
        dst = s.dst,
    );
    let out = sh(&s._ctx, &script).success();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"kind\":\"full\""), "{}", out.stderr);
    assert_eq!(s.remote_snapshots(), ["s1"]);
    s.assert_same_files();

    // A new replica from the S3 copy alone, verified on the way.
    let seeded = format!("{}2", s.dst);
    let script = format!(
        "s3get --decompress zstd --zfs-stream --expect-guid {guid} {key} | ssh -F '{cfg}' {host} zfs recv {seeded}",
        cfg = s.ssh_config,
    );
    sh(&s._ctx, &script).success();
    let rg = s.remote(&["zfs", "get", "-H", "-p", "-o", "value", "guid", &format!("{seeded}@s1")]).success();
    assert_eq!(String::from_utf8_lossy(&rg.stdout).trim(), guid, "the seeded replica holds the same snapshot");

    // zsync-ssh continues the seeded replica with an incremental.
    s.write("b", &data(MIB, 6));
    s.snapshot("s2");
    let mut c = Command::new(bin_path("zsync-ssh"));
    c.args(["-F", &s.ssh_config]).arg(&s.src).arg(format!("{host}:{seeded}"));
    let out = run(c, None, TIMEOUT).success();
    let summary = out.json();
    assert_eq!(summary["action"], "sent", "{summary}");
    assert_eq!(summary["common"]["guid"], guid.as_str(), "{summary}");
}
