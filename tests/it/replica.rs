//! zsnap-backup --replica: one zfs send feeds both the S3 upload and a replica's zfs recv on
//! the second host (bench/host2), through `zsync-ssh --tee` inside s3put's --exec. Each
//! sink reports its own JSON line; a replica that is behind, diverged or unreachable never
//! stops the upload, and the run then exits 82 with S3 holding every backup.

use crate::common::*;
use crate::zsync_from_s3::Seeded;
use serde_json::Value;

fn backup(s: &Seeded, extra: &[&str]) -> Output {
    let target = format!("{}:{}", crate::zsync_ssh::env("ZSNAP_HOST2"), s.dst);
    let mut args = vec!["--replica", &target, "--replica-ssh-config", &s.ssh_config];
    args.extend_from_slice(extra);
    s.site.run("zsnap-backup", &args)
}

/// The replica lines and the s3put lines of a run's stdout.
fn sinks(out: &Output) -> (Vec<Value>, Vec<Value>) {
    out.json_lines().into_iter().partition(|l| l["sink"] == "replica")
}

fn snap(s: &Seeded, name: &str, len: usize, seed: u64) {
    s.site.write(&format!("{name}.bin"), &data(len, seed));
    s.site.snapshot(name);
}

#[test]
fn one_send_feeds_s3_and_the_replica() {
    let s = Seeded::new("replica-one", "rpa");
    snap(&s, "s1", MIB, 31);

    let dry = backup(&s, &["--dry-run"]).success();
    let line = dry.text();
    assert!(
        line.contains("--exec 'zfs send ") && line.contains(" | zsync-ssh --tee s1 --expect-guid "),
        "the tee is inside s3put's producer: {line}"
    );
    assert!(s.remote_all().is_empty(), "a dry run receives nothing");

    let out = backup(&s, &[]).success();
    let (replica, uploads) = sinks(&out);
    assert_eq!(uploads.len(), 1, "{}", out.text());
    assert_eq!(replica.len(), 1, "{}", out.text());
    let r = &replica[0];
    assert_eq!(
        (r["action"].as_str(), r["result"].as_str(), r["exit"].as_i64()),
        (Some("sent"), Some("ok"), Some(0)),
        "{r}"
    );
    assert!(r["from_guid"].is_null(), "a full stream: {r}");
    assert_eq!(r["guid"].as_str().map(str::to_string), Some(s.site.pool.guid(&format!("{}@s1", s.site.data))));
    // The replica got exactly the bytes S3 got: the stream's length is both sinks' count.
    assert_eq!(r["bytes"], uploads[0]["input_bytes"], "{r} vs {}", uploads[0]);
    assert_eq!(s.remote_snapshots(), ["s1"]);

    snap(&s, "s2", MIB / 2, 32);
    snap(&s, "s3", MIB / 3, 33);
    let out = backup(&s, &[]).success();
    let (replica, uploads) = sinks(&out);
    assert_eq!((uploads.len(), replica.len()), (2, 2), "{}", out.text());
    assert!(replica.iter().all(|r| r["action"] == "sent" && !r["from_guid"].is_null()), "{replica:?}");
    assert_eq!(s.remote_snapshots(), ["s1", "s2", "s3"]);
    for name in ["s1", "s2", "s3"] {
        assert_eq!(s.remote_guid(name), s.site.pool.guid(&format!("{}@{name}", s.site.data)), "{name} by guid");
    }
    s.assert_same_files();
    // And S3 has the same chain: the catalog sees both sends.
    let keys = s.site.keys();
    assert_eq!(keys.iter().filter(|k| k.contains("/@s")).count(), 3, "{keys:?}");
    // After that, plain zsync-ssh agrees the replica is up to date.
    assert_eq!(s.zsync(&[]).success().json()["action"], "none");
}

#[test]
fn a_replica_that_cannot_take_the_stream_never_stops_the_upload() {
    let s = Seeded::new("replica-no", "rpb");
    snap(&s, "s1", 100_000, 41);
    // Behind: the replica does not exist, and S3 already holds s1, so the send is incremental.
    s.site.run("zsnap-backup", &[]).success();
    snap(&s, "s2", 100_000, 42);
    let out = backup(&s, &[]).fails_last(82, "zsnap-backup", "replica receive(s) failed");
    let (replica, uploads) = sinks(&out);
    assert_eq!(uploads.len(), 1, "the upload went on: {}", out.text());
    let r = &replica[0];
    assert_eq!(
        (r["action"].as_str(), r["exit"].as_i64(), r["result"].as_str()),
        (Some("refused"), Some(66), Some("failed")),
        "{r}"
    );
    assert!(r["reason"].as_str().unwrap_or("").contains("seed it with `zsync-ssh"), "{r}");
    assert!(s.remote_all().is_empty(), "{:?}", s.remote_all());
    assert_eq!(s.site.keys().iter().filter(|k| k.contains("/@s2/")).count(), 1, "s2 is in S3");

    // Seeded by zsync-ssh, then diverged: a snapshot of its own after the common one.
    s.zsync(&[]).success();
    s.remote(&["zfs", "snapshot", &format!("{}@theirs", s.dst)]).success();
    snap(&s, "s3", 100_000, 43);
    let out = backup(&s, &[]).fails_last(82, "zsnap-backup", "replica receive(s) failed");
    let (replica, uploads) = sinks(&out);
    assert_eq!(
        (uploads.len(), replica[0]["action"].as_str(), replica[0]["exit"].as_i64()),
        (1, Some("refused"), Some(79))
    );
    assert_eq!(s.remote_snapshots(), ["s1", "s2", "theirs"], "left alone");

    // Unreachable: the upload still commits; the line names ssh's failure.
    s.remote(&["zfs", "destroy", &format!("{}@theirs", s.dst)]).success();
    snap(&s, "s4", 100_000, 44);
    let target = format!("nosuchhost.invalid:{}", s.dst);
    let out = s.site.run("zsnap-backup", &["--replica", &target, "--replica-ssh-config", &s.ssh_config]);
    let out = out.fails_last(82, "zsnap-backup", "replica receive(s) failed");
    let (replica, uploads) = sinks(&out);
    assert_eq!(uploads.len(), 1, "s4 goes to S3: {}", out.text());
    let r = &replica[0];
    assert_eq!(
        (r["action"].as_str(), r["result"].as_str(), r["exit"].as_i64()),
        (Some("failed"), Some("failed"), Some(71))
    );
    assert!(r["error"].as_str().unwrap_or("").contains("Could not resolve hostname nosuchhost.invalid"), "{r}");

    // Back in line (catch up by zsync-ssh): the next run sends to both again.
    s.zsync(&[]).success();
    snap(&s, "s5", 100_000, 45);
    let out = backup(&s, &[]).success();
    let (replica, _) = sinks(&out);
    assert_eq!(replica[0]["action"], "sent", "{replica:?}");
    s.assert_same_files();

    // Full on the replica halfway through the stream: zfs recv fails, the upload commits.
    let used = s.remote(&["zfs", "get", "-H", "-p", "-o", "value", "used", &s.dst]).success().text();
    let quota = used.trim().parse::<u64>().expect("used") + 256 * 1024;
    s.remote(&["zfs", "set", &format!("quota={quota}"), &s.dst]).success();
    snap(&s, "s6", 4 * MIB, 46);
    let out = backup(&s, &[]).fails_last(82, "zsnap-backup", "replica receive(s) failed");
    let (replica, uploads) = sinks(&out);
    assert_eq!(uploads.len(), 1, "s6 is in S3: {}", out.text());
    let r = &replica[0];
    assert_eq!((r["action"].as_str(), r["result"].as_str()), (Some("failed"), Some("failed")), "{r}");
    assert!(r["error"].as_str().unwrap_or("").contains("zfs recv on host2"), "{r}");
    assert!(!s.remote_snapshots().contains(&"s6".to_string()), "nothing of s6 is kept: {:?}", s.remote_snapshots());
}

/// A zfs on PATH whose `zfs send` dies after 20,000 bytes (exit 1): a killed producer.
fn dying_send(s: &mut Seeded) {
    let dir = s.site.ctx.bench.work.join(format!("{}-dying", s.site.pool.name));
    std::fs::create_dir_all(&dir).expect("stand-in dir");
    let zfs = std::process::Command::new("bash").args(["-c", "command -v zfs"]).output().expect("zfs");
    let real = String::from_utf8_lossy(&zfs.stdout).trim().to_string();
    let script = format!(
        "#!/bin/bash\nif [[ $1 == send ]]; then '{real}' \"$@\" | head -c 20000; exit 1; fi\nexec '{real}' \"$@\"\n"
    );
    let path = dir.join("zfs");
    std::fs::write(&path, script).expect("write stand-in");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let bins = bin_path("s3put").parent().expect("bin dir").display().to_string();
    let scripts = repo_path("scripts").display().to_string();
    let rest = std::env::var("PATH").unwrap_or_default();
    s.site.set("PATH", &format!("{}:{bins}:{scripts}:{rest}", dir.display()));
}

#[test]
fn a_killed_send_commits_nothing_on_either_sink() {
    let mut s = Seeded::new("replica-cut", "rpd");
    snap(&s, "s1", MIB, 61);
    backup(&s, &[]).success();
    snap(&s, "s2", 2 * MIB, 62);
    dying_send(&mut s);
    let out = backup(&s, &[]).fails_last(67, "zsnap-backup", "step 1 of 1 failed (exit 67)");
    let (replica, uploads) = sinks(&out);
    assert!(uploads.is_empty(), "no s3put line for a cut stream: {}", out.text());
    assert_eq!((replica.len(), replica[0]["action"].as_str()), (1, Some("failed")), "{}", out.text());
    assert_eq!(s.remote_snapshots(), ["s1"], "the replica keeps its last whole snapshot");
    assert!(!s.site.keys().iter().any(|k| k.contains("/@s2/")), "{:?}", s.site.keys());
}

#[test]
fn replica_flags_are_checked() {
    let s = Seeded::new("replica-flags", "rpc");
    snap(&s, "s1", 1000, 51);
    s.site.run("zsnap-backup", &["--all", "--replica", "h:pool/x"]).fails(64, "set REPLICA in each [fs:");
    s.site.run("zsnap-backup", &["--replica", "h:pool/x@snap"]).fails(64, "replica");
    s.site.run("zsync-ssh", &["--tee", "s1", &s.site.data, "h:pool/x"]).fails(64, "--tee needs --expect-guid");
    let tee = ["--tee", "s1", "--expect-guid", "1", "--expect-from", "0", "--dry-run", &s.site.data, "h:pool/x"];
    s.site.run("zsync-ssh", &tee).fails(64, "--dry-run does not go with --tee");
}
