//! The backup and restore scripts end to end, on a real zfs-fuse pool and Garage: full and
//! incremental backups restored with identical files, killed stages committing nothing, a
//! broken chain refused before the pool is touched, renamed and remote-only snapshots,
//! foreign objects, a zfs3backup-format bucket, the lock, and --dry-run's promise.

use crate::common::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

fn lines(out: &Output) -> Vec<serde_json::Value> {
    out.json_lines()
}

/// Three snapshots with different contents; returns the trees as of @s1, @s2 and @s3.
fn three_snapshots(site: &Site) -> [BTreeMap<String, Vec<u8>>; 3] {
    site.write("a.bin", &data(3 * MIB, 41));
    site.write("b.txt", b"first\n");
    site.snapshot("s1");
    let t1 = tree(&site.dir());
    site.write("c.bin", &data(2 * MIB + 5, 42));
    site.write("b.txt", b"second\n");
    site.snapshot("s2");
    let t2 = tree(&site.dir());
    std::fs::remove_file(site.dir().join("a.bin")).expect("rm");
    site.write("d.bin", &data(MIB + 3, 43));
    site.snapshot("s3");
    let t3 = tree(&site.dir());
    [t1, t2, t3]
}

#[test]
fn full_then_incremental_then_restore_latest_and_middle() {
    let site = Site::new("br-round", "br");
    site.write("a.bin", &data(3 * MIB, 41));
    site.write("b.txt", b"first\n");
    site.snapshot("s1");
    let t1 = tree(&site.dir());

    let out = site.run("zsnap-backup", &[]).success();
    let sent = lines(&out);
    assert_eq!(sent.len(), 1, "one full backup\n{}", out.stderr);
    assert_eq!(sent[0]["stream"]["kind"], "full", "{}", sent[0]);

    site.write("c.bin", &data(2 * MIB + 5, 42));
    site.write("b.txt", b"second\n");
    site.snapshot("s2");
    let t2 = tree(&site.dir());
    std::fs::remove_file(site.dir().join("a.bin")).expect("rm");
    site.write("d.bin", &data(MIB + 3, 43));
    site.snapshot("s3");
    let t3 = tree(&site.dir());

    let out = site.run("zsnap-backup", &[]).success();
    let sent = lines(&out);
    assert_eq!(sent.len(), 2, "two incrementals, one per snapshot\n{}", out.stderr);
    for s in &sent {
        assert_eq!(s["stream"]["kind"], "incremental", "{s}");
    }
    // Up to date: nothing more to send.
    let again = site.run("zsnap-backup", &[]).success();
    assert!(again.stdout.is_empty(), "{}", again.stderr);

    // Off a terminal, list is JSON lines without --json; --table asks for the table.
    let list = site.run("zsnap-restore", &["list"]).success();
    let listed = lines(&list);
    let names: Vec<_> = listed.iter().map(|l| l["snapshot"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(names, ["s1", "s2", "s3"]);
    assert_eq!(listed[1]["n"], 2);
    let table = site.run("zsnap-restore", &["list", "--table"]).success();
    assert!(table.text().starts_with("N "), "{}", table.text());

    site.destroy(&site.data);
    assert!(!site.exists(&site.data));
    let done = site.run("zsnap-restore", &["latest"]).success().json();
    assert_eq!(
        (done["action"].as_str(), done["target"].as_str(), done["snapshot"].as_str(), done["steps"].as_u64()),
        (Some("restored"), Some(site.data.as_str()), Some("s3"), Some(3)),
        "the result line: {done}"
    );
    assert_same(&tree(&site.dir()), &t3, "latest restored in place");
    assert_eq!(site.snapshots_of(&site.data), ["s1", "s2", "s3"]);

    let mid = site.pool.ds("mid");
    site.run("zsnap-restore", &["2", "--target", &mid]).success();
    assert_same(&tree(&site.pool.mount.join("mid")), &t2, "@s2 restored by number");

    // save: the full's verified stream to a file, which zfs recv accepts as it is.
    let file = site.ctx.bench.work.join(format!("{}-s1.zfs", site.pool.name));
    let file_s = file.display().to_string();
    let done = site.run("zsnap-restore", &["save", "s1", &file_s]).success().json();
    assert_eq!(done["action"], "saved", "{done}");
    assert_eq!(done["bytes"], std::fs::metadata(&file).expect("saved file").len(), "{done}");
    let saved = site.pool.ds("saved");
    let mut c = Command::new("bash");
    c.args(["-c", &format!("zfs recv {saved} < '{file_s}'")]);
    run(c, None, TIMEOUT).success();
    assert_same(&tree(&site.pool.mount.join("saved")), &t1, "@s1 from a saved stream");
    // An existing FILE is kept unless --force; a missing directory is refused up front.
    let stream = std::fs::read(&file).expect("saved stream");
    std::fs::write(&file, b"keep me").expect("overwrite");
    site.run("zsnap-restore", &["save", "s1", &file_s]).fails(64, &format!("{file_s} exists; give --force"));
    assert_eq!(std::fs::read(&file).expect("file"), b"keep me", "FILE untouched without --force");
    site.run("zsnap-restore", &["save", "s1", &file_s, "--force"]).success();
    assert_eq!(std::fs::read(&file).expect("file"), stream, "--force wrote the same verified stream");
    let nowhere = site.ctx.bench.work.join("no-such-dir").join("s1.zfs");
    site.run("zsnap-restore", &["save", "s1", &nowhere.display().to_string()])
        .fails(74, "does not exist; nothing was downloaded");
    let _ = std::fs::remove_file(&file);

    let m = site.run("zsnap-restore", &["mount", &mid]).success();
    assert_eq!(String::from_utf8_lossy(&m.stdout).trim(), site.pool.mount.join("mid").display().to_string());
}

/// A compressor stand-in that passes 1 MB through and then kills a pipeline stage with
/// SIGKILL (zfs send, itself, or s3put), then passes the rest on as if nothing happened.
/// zfs-fuse's `zfs` rewrites its own argv (`zfs send pool/data s1`, no `@`), so the
/// pattern names the dataset only.
fn killer(site: &Site) -> PathBuf {
    let path = site.ctx.bench.work.join(format!("{}-killer.sh", site.pool.name));
    let script = r#"#!/bin/bash
what=$1 pattern=$2
case $what in
send) head -c 1000000; pkill -KILL -f "^zfs send .*$pattern" ;;
self) head -c 1000000; kill -KILL $$ ;;
s3put)
    # Let s3put start its multipart upload (two 16 MiB parts), wait until the server
    # lists it, then kill s3put: the upload stays behind, uncommitted.
    head -c 40000000
    for _ in $(seq 600); do
        [[ -n "$(s3put --list-uploads "$pattern")" ]] && break
        sleep 0.05
    done
    pkill -KILL -f "^[^ ]*s3put --zfs-stream .*$pattern" ;;
esac
cat
"#;
    std::fs::write(&path, script).expect("write killer");
    path
}

#[test]
fn a_killed_stage_commits_nothing_and_the_next_run_recovers() {
    let site = Site::new("br-kill", "bk");
    site.write("big.bin", &data(60 * MIB, 51));
    site.snapshot("s1");
    let k = killer(&site).display().to_string();
    let conf = format!(
        "[compressor:killsend]\nCOMPRESS=bash {k} send {ds}\nDECOMPRESS=cat\n\n\
         [compressor:killself]\nCOMPRESS=bash {k} self\nDECOMPRESS=cat\n\n\
         [compressor:kills3put]\nCOMPRESS=bash {k} s3put {pre}\nDECOMPRESS=cat\n",
        ds = site.data,
        pre = site.ctx.prefix_url(),
    );
    std::fs::write(&site.config, conf).expect("config");

    // zfs send or the compressor killed: s3put sees it and aborts (67); s3put killed: 137.
    for (victim, code) in [("killsend", 67), ("killself", 67), ("kills3put", 137)] {
        let out = site.run("zsnap-backup", &["--compressor", victim]);
        assert_eq!(out.code(), code, "{victim}: a killed stage must fail the backup\n{}", out.stderr);
        assert!(out.stderr.contains("zsnap-backup: step 1 of 1 failed"), "{victim}: {}", out.stderr);
        let committed: Vec<_> = site.keys().into_iter().filter(|k| k.contains("zsnap1,")).collect();
        assert!(committed.is_empty(), "{victim}: committed {committed:?}");
        let list = site.run("zsnap-restore", &["list", "--json"]).success();
        assert!(
            list.stdout.is_empty(),
            "{victim}: restore must see no backup\n{}",
            String::from_utf8_lossy(&list.stdout)
        );
    }
    // What s3put kept for --resume (a cut producer) or could not abort (it was killed)
    // shows as uncommitted, never committed.
    let status = site.run("zsnap-status", &["--json"]).success();
    let rows = lines(&status);
    let s1 = rows.iter().find(|r| r["snapshot"] == "s1").unwrap_or_else(|| panic!("no @s1 row: {rows:?}"));
    assert_eq!(s1["remote"], "uncommitted", "{s1}");
    let summary = rows.iter().find(|r| r["summary"] == true).expect("summary line");
    // At most one per compressor the key names (z=...): kills3put's, left by kill -9, and
    // those of the cut producers that had begun an upload, kept for --resume.
    let uncommitted = summary["uncommitted"].as_u64().expect("uncommitted");
    assert!((1..=3).contains(&uncommitted), "{summary}");
    assert_eq!(summary["backups"], 0, "{summary}");

    let out = site.run("zsnap-backup", &["--compressor", "zstd"]).success();
    assert_eq!(lines(&out).len(), 1, "the next run sends the full again");
    let t = tree(&site.dir());
    let r = site.pool.ds("r");
    site.run("zsnap-restore", &["latest", "--target", &r]).success();
    assert_same(&tree(&site.pool.mount.join("r")), &t, "restored after recovery");
}

#[test]
fn a_missing_middle_incremental_is_refused_before_the_pool_is_touched() {
    let site = Site::new("br-gap", "bg");
    three_snapshots(&site);
    site.run("zsnap-backup", &["--snapshot", "s1"]).success();
    site.run("zsnap-backup", &[]).success();
    let middle = site.keys().into_iter().find(|k| k.contains("/@s2/zsnap1,")).expect("@s2's object");
    site.delete_key(&middle);

    let target = site.pool.ds("r");
    let out = site.run("zsnap-restore", &["latest", "--target", &target]);
    let out = out.fails_last(66, "zsnap-plan", "s2");
    assert!(out.stderr.contains("s3"), "names who needs it: {}", out.stderr);
    assert!(!site.exists(&target), "the pool was touched");
    // The chain up to the gap still restores.
    site.run("zsnap-restore", &["s1", "--target", &target]).success();
}

#[test]
fn renamed_and_remote_only_snapshots_keep_their_identity() {
    let site = Site::new("br-rename", "bn");
    let [_, _, t3] = three_snapshots(&site);
    site.run("zsnap-backup", &["--snapshot", "s1"]).success();
    site.run("zsnap-backup", &[]).success();

    // Renamed locally: same guid, so it is still backed up and still the base.
    site.pool.zfs(&["rename", &format!("{}@s3", site.data), &format!("{}@s3-renamed", site.data)]).success();
    let dry = site.run("zsnap-backup", &["--dry-run"]).success();
    assert!(dry.stdout.is_empty(), "nothing to send after a rename: {}", String::from_utf8_lossy(&dry.stdout));
    site.write("e.bin", &data(MIB, 44));
    site.snapshot("s4");
    let t4 = tree(&site.dir());
    let out = site.run("zsnap-backup", &[]).success();
    let sent = lines(&out);
    assert_eq!(sent.len(), 1, "{}", out.stderr);
    assert_eq!(sent[0]["stream"]["kind"], "incremental", "from the renamed base, not a new full");

    // Remote only: destroyed locally, still listed and restorable.
    site.pool.zfs(&["destroy", &format!("{}@s1", site.data)]).success();
    let status = site.run("zsnap-status", &["--json"]).success();
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(text.contains("s3-renamed") && text.contains("\"s1\""), "{text}");

    let r = site.pool.ds("r");
    site.run("zsnap-restore", &["latest", "--target", &r]).success();
    assert_same(&tree(&site.pool.mount.join("r")), &t4, "latest through a renamed base");
    let r3 = site.pool.ds("r3");
    site.run("zsnap-restore", &["s3", "--target", &r3]).success();
    assert_same(&tree(&site.pool.mount.join("r3")), &t3, "by its name in S3");
}

#[test]
fn bad_inputs_get_one_clear_line() {
    let site = Site::new("br-bad", "bb");
    // A dataset with no snapshots.
    site.run("zsnap-backup", &[]).fails_last(66, "zsnap-plan", "no snapshots");
    site.snapshot("s1");
    // A snapshot prefix that matches nothing.
    site.run("zsnap-backup", &["--snapshot-prefix", "daily-"]).fails_last(66, "zsnap-plan", "daily-");
    // A dataset that does not exist.
    let ghost = site.pool.ds("ghost");
    site.run("zsnap-backup", &["--dataset", &ghost]).fails_last(66, "zsnap-plan", "does not exist");
    // Nothing in S3 under a wrong prefix.
    site.run("zsnap-backup", &[]).success();
    let r = site.pool.ds("r");
    site.run("zsnap-restore", &["latest", "--s3-prefix", "no/such/prefix/", "--target", &r]).fails_last(
        66,
        "zsnap-plan",
        "no/such/prefix",
    );
    site.run("zsnap-restore", &["nosuchsnap", "--target", &r]).fails_last(66, "zsnap-plan", "nosuchsnap");
    assert!(!site.exists(&r));
    // A target zfs recv could not create (missing parent or pool): refused before any download.
    let orphan = site.pool.ds("no/such/child");
    site.run("zsnap-restore", &["latest", "--target", &orphan]).fails_last(
        66,
        "zsnap-plan",
        &format!("{} does not exist", site.pool.ds("no/such")),
    );
    site.run("zsnap-restore", &["latest", "--target", "nosuchpool9/r"]).fails_last(66, "zsnap-plan", "nosuchpool9");
    // A mistyped dataset: no backups and no such dataset is 66, as for status.
    site.run("zsnap-prune", &["--dataset", &ghost]).fails_last(66, "zsnap-plan", "is --dataset right?");
    // Foreign objects beside the backups change nothing.
    site.ctx.put("README.txt", b"not a backup", &[]).success();
    site.ctx.put(&format!("{}/@s1/notes.txt", site.data), b"nor this", &[]).success();
    let dry = site.run("zsnap-backup", &["--dry-run"]).success();
    assert!(dry.stdout.is_empty());
    site.run("zsnap-restore", &["latest", "--target", &r]).success();
    let status = site.run("zsnap-status", &["--json"]).success();
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(text.contains("foreign"), "{text}");
}

#[test]
fn dry_run_prints_exactly_what_the_real_run_does() {
    let site = Site::new("br-dry", "bd");
    three_snapshots(&site);
    site.run("zsnap-backup", &["--snapshot", "s1"]).success();
    let before = site.keys();
    let dry = site.run("zsnap-backup", &["--dry-run"]).success();
    assert_eq!(site.keys(), before, "--dry-run uploaded something");
    let planned: Vec<String> = String::from_utf8_lossy(&dry.stdout).lines().map(str::to_string).collect();
    assert_eq!(planned.len(), 2, "{planned:?}");
    let real = site.run("zsnap-backup", &[]).success();
    let ran: Vec<String> = real
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("zsnap-backup: ["))
        .filter_map(|l| l.split_once("] ").map(|(_, cmd)| cmd.to_string()))
        .collect();
    assert_eq!(ran, planned);

    let r = site.pool.ds("r");
    let dry = site.run("zsnap-restore", &["latest", "--target", &r, "--dry-run"]).success();
    assert!(!site.exists(&r), "--dry-run received something");
    assert_eq!(String::from_utf8_lossy(&dry.stdout).lines().count(), 3);
}

#[test]
fn a_second_run_on_the_same_dataset_waits_for_nobody() {
    let site = Site::new("br-lock", "bl");
    site.snapshot("s1");
    std::fs::create_dir_all(&site.locks).expect("lock dir");
    let lock = site.locks.join(format!("{}.lock", site.data.replace('/', "%")));
    // Hold the lock with flock(1) around a second zsnap-backup: it must give up at once.
    let inner = site.cmd("zsnap-backup", &[]);
    let mut c = Command::new("flock");
    c.arg(&lock).arg(inner.get_program()).envs(inner.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
    run(c, None, TIMEOUT).fails(72, "holds the lock");
}

#[test]
fn a_zfs3backup_bucket_restores_and_seeds_incrementals() {
    let site = Site::new("br-legacy", "bz");
    let [_, t2, _] = three_snapshots(&site);
    // What zfs3backup writes: <prefix><dataset>@<snap>, metadata isfull/parent/compressor.
    let legacy = format!("{}legacy/", site.ctx.prefix);
    let full_key = format!("s3://{}/{legacy}{}@s1", site.ctx.bench.bucket, site.data);
    let inc_key = format!("s3://{}/{legacy}{}@s2", site.ctx.bench.bucket, site.data);
    let s = format!(
        "zfs send {d}@s1 | pigz -1 | s3put --meta isfull=true --meta compressor=pigz1 {full_key} && \
         zfs send -i @s1 {d}@s2 | s3put --meta isfull=false --meta parent={d}@s1 --meta compressor=none {inc_key}",
        d = site.data
    );
    sh(&site.ctx, &s).success();

    let r = site.pool.ds("r");
    site.run("zsnap-restore", &["latest", "--s3-prefix", &legacy, "--target", &r]).success();
    assert_same(&tree(&site.pool.mount.join("r")), &t2, "zfs3backup chain restored");

    // The first zsnap backup into that bucket is an incremental on zfs3backup's @s2.
    let out = site.run("zsnap-backup", &["--s3-prefix", &legacy]).success();
    let sent = lines(&out);
    assert_eq!(sent.len(), 1, "{}", out.stderr);
    assert_eq!(sent[0]["stream"]["kind"], "incremental", "{}", sent[0]);
    let r2 = site.pool.ds("r2");
    site.run("zsnap-restore", &["latest", "--s3-prefix", &legacy, "--target", &r2]).success();
    assert_eq!(site.snapshots_of(&r2), ["s1", "s2", "s3"]);
}

/// zfs-fuse has no -c, -nP, bookmarks or encryption: detected, not configured. An option it
/// lacks is refused before anything is sent; the size falls back to the snapshot's, said
/// once; no bookmark step is planned.
#[test]
fn what_this_zfs_lacks_is_detected_and_said() {
    let site = Site::new("br-features", "bf");
    site.write("a.bin", &data(MIB, 51));
    site.snapshot("s1");
    site.run("zsnap-backup", &["--send-option", "-c"]).fails(64, "zfs send -c (--compressed) is not supported by");
    site.run("zsnap-backup", &["--send-option", "--dedup"]).fails(64, "send option '--dedup' is not allowed");
    assert!(site.keys().is_empty(), "nothing stored: {:?}", site.keys());
    let plan = site.run("zsnap-plan", &["backup"]).success();
    assert_eq!(plan.stderr.matches("has no zfs send -nP").count(), 1, "{}", plan.stderr);
    let steps = lines(&plan);
    assert_eq!(steps.len(), 1, "a send and no bookmark: {steps:?}");
    assert_eq!((steps[0]["raw"].as_bool(), steps[0]["estimate_source"].as_str()), (Some(false), Some("guess")));
    // A quota the send would exceed is said before the upload; the backup still runs.
    let mut small = Site { env: vec![("ZSNAP_QUOTA".into(), "1000".into())], ..site };
    let plan = small.run("zsnap-plan", &["backup"]).success();
    assert!(plan.stderr.contains("exceed its quota of 1000 B"), "{}", plan.stderr);
    small.env.clear();
    let site = small;
    let out = site.run("zsnap-backup", &["--send-option", "-p"]).success();
    assert_eq!(lines(&out).len(), 1);
    assert!(site.keys()[0].ends_with(",send=p"), "{:?}", site.keys());
}

/// A restore is all or nothing, and fails with the code of the stage that failed on its
/// own: a corrupt last object is s3get's 65 (not the 1 of the zfs recv it starved), a new
/// target is destroyed again, an existing one rolled back to where the run started; a save
/// that fails leaves no FILE.part.
#[test]
fn a_failed_restore_leaves_the_pool_as_it_was_and_says_why() {
    let site = Site::new("br-atomic", "ba");
    site.write("a.bin", &data(MIB, 61));
    site.snapshot("s1");
    site.run("zsnap-backup", &[]).success();
    site.write("b.bin", &data(MIB, 62));
    site.snapshot("s2");
    let t2 = tree(&site.dir());
    site.write("c.bin", &data(MIB, 63));
    site.snapshot("s3");
    site.run("zsnap-backup", &[]).success();
    site.corrupt("s3");

    let fresh = site.pool.ds("fresh");
    let out = site.run("zsnap-restore", &["latest", "--target", &fresh]);
    out.fails_last(65, "zsnap-restore", "is destroyed again");
    assert!(!site.exists(&fresh), "a half-restored {fresh} was left behind");

    // An existing target with @s1 and @s2 gets only @s3, which fails: back to @s2.
    let kept = site.pool.ds("kept");
    site.run("zsnap-restore", &["2", "--target", &kept]).success();
    let out = site.run("zsnap-restore", &["latest", "--target", &kept]);
    out.fails_last(65, "zsnap-restore", "is rolled back to @s2");
    assert_eq!(site.snapshots_of(&kept), ["s1", "s2"]);
    assert_same(&tree(&site.mountpoint(&kept)), &t2, "the existing target as it was");

    let file = site.ctx.bench.work.join(format!("{}-save", site.pool.name));
    let out = site.run("zsnap-restore", &["save", "3", &file.display().to_string()]);
    assert_eq!(out.code(), 65, "{}", out.stderr);
    assert!(!file.exists(), "no FILE");
    assert!(!file.with_extension("part").exists() && !PathBuf::from(format!("{}.part", file.display())).exists());
}

/// Timeouts and retries given to the scripts reach the s3put and s3get that move the data,
/// not only zsnap-plan.
#[test]
fn timeouts_and_retries_reach_the_commands_that_move_data() {
    let site = Site::new("br-timeouts", "bt");
    site.write("a.bin", &data(MIB, 71));
    site.snapshot("s1");
    let flags = ["--connect-timeout", "4s", "--read-timeout", "9s", "--retries", "1"];
    let mut args = vec!["--dry-run"];
    args.extend(flags);
    let out = site.run("zsnap-backup", &args).success();
    assert!(
        out.text().starts_with("s3put ") && out.text().contains(" --connect-timeout 4s --read-timeout 9s --retries 1 "),
        "{}",
        out.text()
    );
    site.run("zsnap-backup", &[]).success();
    let mut args = vec!["--dry-run", "latest", "--target"];
    let target = site.pool.ds("t");
    args.push(&target);
    args.extend(flags);
    let out = site.run("zsnap-restore", &args).success();
    assert!(
        out.text().starts_with("s3get ") && out.text().contains(" --connect-timeout 4s --read-timeout 9s --retries 1 "),
        "{}",
        out.text()
    );
}

/// `kill -9` of the script cannot be caught: the upload it started goes on, and holds the
/// dataset's lock (its fd is inherited) until it ends, so no second run can race it; what
/// it commits is whole. The stand-in compressor kills the script after 1 MB, then waits
/// for a file before passing the rest on.
#[test]
fn a_kill_9_of_the_script_leaves_its_upload_holding_the_lock() {
    let site = Site::new("br-kill9", "bn");
    site.write("big.bin", &data(8 * MIB, 81));
    site.snapshot("s1");
    let go = site.hold_compressor(1_000_000, &format!("pkill -KILL -f 'zsnap-backup.*{}' || true", site.pool.name));
    // Output to files: the orphan keeps the script's stdout and stderr open.
    let out = site.ctx.bench.work.join(format!("{}-kill9.out", site.pool.name));
    // --dataset on the command line: the stand-in finds the script by it.
    let mut c = site.cmd("zsnap-backup", &["--compressor", "hold", "--dataset", &site.data]);
    c.stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).expect("out"))
        .stderr(std::fs::File::create(out.with_extension("err")).expect("err"));
    let mut child = c.spawn().expect("spawn zsnap-backup");
    let status = wait_bounded(&mut child, "zsnap-backup", TIMEOUT);
    assert_eq!(status.code(), None, "killed by a signal");
    // The orphan upload runs and holds the lock: a second run refuses at once.
    site.run("zsnap-backup", &[]).fails(72, "another zsnap run holds the lock");
    assert!(site.keys().iter().all(|k| !k.contains("zsnap1,")), "nothing committed yet");
    std::fs::write(&go, b"").expect("go");
    site.ctx.wait_until("the orphan upload to commit", TIMEOUT, || site.keys().iter().any(|k| k.contains("zsnap1,")));
    site.ctx.wait_until("the lock to be free", TIMEOUT, || site.run("zsnap-backup", &[]).code() == 0);
    let r = site.pool.ds("r");
    let t = tree(&site.dir());
    site.run("zsnap-restore", &["latest", "--target", &r]).success();
    assert_same(&tree(&site.pool.mount.join("r")), &t, "what the orphan committed is whole");
}

/// "nothing to send" is only said with the snapshots it leaves out, and why.
#[test]
fn nothing_to_send_names_the_snapshots_it_leaves_out() {
    let site = Site::new("br-left", "bl");
    site.write("a.bin", &data(MIB, 91));
    site.snapshot("s1");
    site.snapshot("s2");
    // A full of @s2 only: @s1 is older and never sent.
    site.run("zsnap-backup", &["--snapshot", "s2"]).success();
    let out = site.run("zsnap-backup", &[]).success();
    assert!(out.stdout.is_empty(), "{}", out.text());
    assert!(out.stderr.contains("not sent: @s1 (not in S3, and older than @s2"), "{}", out.stderr);
    assert!(out.stderr.contains("nothing to send: every snapshot that can be sent is in S3"), "{}", out.stderr);
}
