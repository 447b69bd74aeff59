//! Retention end to end on zfs-fuse and Garage: the bucket's policy object overruling a
//! looser local config, zsnap-prune deleting only what no kept chain needs (then
//! zsnap-health is healthy and every kept snapshot restores byte for byte), a quota that
//! cannot be met reported instead of forced, two clients with their own keys and buckets,
//! and typed local snapshots rotated around the S3 base and holds.

use crate::common::*;
use serde_json::Value;

const NO_PERIODS: &str = "KEEP_HOURLY=0\nKEEP_DAILY=0\nKEEP_WEEKLY=0\nKEEP_MONTHLY=0\n";

fn by_action(lines: &[Value], action: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["action"] == action)
        .map(|l| l["snapshot"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn summary(lines: &[Value]) -> Value {
    lines.iter().find(|l| l["summary"] == true).cloned().expect("a summary line")
}

#[test]
fn the_policy_object_overrules_local_config_and_prune_keeps_whole_chains() {
    let site = Site::new("ret-policy", "rp");
    std::fs::write(&site.config, format!("[main]\nKEEP_LAST=1\n{NO_PERIODS}")).expect("config");
    let trees = site.three_chains(60);

    // Local settings alone: keep the newest; s4 stays as its parent.
    let plan = site.run("zsnap-plan", &["prune"]).success().json_lines();
    assert_eq!(by_action(&plan, "delete"), ["s1", "s2", "s3"]);
    let s4 = plan.iter().find(|l| l["snapshot"] == "s4").expect("s4");
    assert_eq!(s4["reason"], "needed by kept @s5 (parent in their chain)");
    assert_eq!(summary(&plan)["policy"]["managed"], false);

    // The bucket's policy object keeps 3: local KEEP_LAST=1 is looser and ignored.
    let policy = r#"{"keep_last": 3, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}"#;
    site.ctx.put("policy.json", policy.as_bytes(), &[]).success();
    let plan = site.run("zsnap-plan", &["prune"]).success().json_lines();
    assert_eq!(by_action(&plan, "delete"), ["s1"]);
    assert_eq!(by_action(&plan, "keep"), ["s2", "s3", "s4", "s5"]);
    let p = &summary(&plan)["policy"];
    let object = site.url("policy.json");
    assert_eq!((p["managed"].as_bool(), p["keep_last"].as_u64()), (Some(true), Some(3)));
    assert_eq!(p["sources"]["keep_last"], format!("bucket policy {object} keep_last"));
    assert!(p["overruled"][0].as_str().unwrap_or("").starts_with("KEEP_LAST=1 from "), "{p}");
    let shown = site.run("zsnap-plan", &["policy"]).success().json();
    assert_eq!(shown["policy_object"], object);
    let status = site.run("zsnap-status", &["--json"]).success().json_lines();
    assert_eq!(summary(&status)["policy"]["policy_object"], object);

    // --dry-run is exactly the one delete the real run makes.
    let dry = site.run("zsnap-prune", &["--dry-run"]).success();
    let dry = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert_eq!(dry.lines().count(), 1, "{dry}");
    assert!(dry.starts_with("s3put --delete ") && dry.contains("/@s1/zsnap1,kind=full"), "{dry}");
    let out = site.run("zsnap-prune", &["--yes"]).success();
    let deleted = out.json_lines();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["deleted"], true);
    let list = site.run("zsnap-restore", &["list", "--json"]).success().json_lines();
    let names: Vec<&str> = list.iter().filter_map(|l| l["snapshot"].as_str()).collect();
    assert_eq!(names, ["s2", "s3", "s4", "s5"]);

    // Healthy afterwards, and every kept snapshot restores to its exact files.
    site.run("zsnap-health", &[]).success();
    for snap in names {
        let target = site.pool.ds(&format!("r-{snap}"));
        site.run("zsnap-restore", &[snap, "--target", &target]).success();
        assert_same(&tree(&site.mountpoint(&target)), &trees[snap], snap);
    }
    // Nothing more to do.
    let again = site.run("zsnap-prune", &["--yes"]).success();
    assert!(again.stdout.is_empty() && again.stderr.contains("nothing to delete"), "{}", again.stderr);
}

#[test]
fn a_quota_that_would_break_a_chain_is_reported_not_forced() {
    let site = Site::new("ret-quota", "rq");
    std::fs::write(&site.config, format!("[main]\nKEEP_LAST=3\nQUOTA=1K\n{NO_PERIODS}")).expect("config");
    for snap in ["s1", "s2", "s3"] {
        site.write(&format!("{snap}.bin"), &data(MIB, 7));
        site.snapshot(snap);
        site.run("zsnap-backup", &[]).success();
    }
    let out = site.run("zsnap-plan", &["prune"]).fails(1, "quota 1.0 KiB cannot be met without breaking a chain");
    assert!(out.json_lines().iter().all(|l| l["action"] != "delete"));
    assert!(out.stderr.contains("@s3"), "names the newest backup: {}", out.stderr);
    let out = site.run("zsnap-prune", &["--yes"]);
    assert_eq!(out.code(), 1, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "nothing was deleted");
    assert_eq!(site.run("zsnap-restore", &["list", "--json"]).success().json_lines().len(), 3);
    // Status shows the usage against the quota.
    let status = site.run("zsnap-status", &["--json"]).success().json_lines();
    let s = summary(&status);
    assert_eq!(s["quota"], 1024);
    assert!(s["bytes"].as_u64().unwrap_or(0) > 1024, "{s}");

    // A policy object with a typo stops every command that reads it, naming it.
    site.ctx.put("policy.json", br#"{"keep_dialy": 1}"#, &[]).success();
    let object = site.url("policy.json");
    site.run("zsnap-plan", &["prune"]).fails(65, &format!("policy object {object}: unknown field \"keep_dialy\""));
    site.run("zsnap-prune", &["--yes"]).fails(65, "unknown field");
    // Bad inputs: one line each, nothing done.
    let mut gone = site.cmd("zsnap-prune", &["--yes"]);
    gone.env("ZSNAP_BUCKET", "no-such-bucket-zsnap");
    run(gone, None, TIMEOUT).fails(68, "no-such-bucket-zsnap");
    let mut missing = site.cmd("zsnap-snapshot", &["daily"]);
    missing.env("ZSNAP_DATASET", format!("{}/nope", site.pool.name));
    run(missing, None, TIMEOUT).fails(66, "does not exist");
    site.run("zsnap-prune", &["--bogus"]).fails(64, "unknown argument '--bogus'");
}

#[test]
fn two_clients_with_their_own_keys_and_buckets_cannot_read_each_other() {
    let a = Site::new("ret-client-a", "ca");
    let mut b = Site::new("ret-client-b", "cb");
    // Client B: its own key, allowed on its own bucket only.
    let pid = std::process::id();
    let (key, secret) = (format!("GK{:024x}", 0xb0b0_0000_u64 + u64::from(pid)), format!("{:064x}", pid));
    let bucket = format!("zsnap-client-b-{pid}");
    let g = &a.ctx.bench;
    g.garage(&["key", "import", "-n", &format!("client-b-{pid}"), "--yes", &key, &secret]).success();
    g.garage(&["bucket", "create", &bucket]).success();
    g.garage(&["bucket", "allow", "--read", "--write", &bucket, "--key", &key]).success();
    b.set("AWS_ACCESS_KEY_ID", &key);
    b.set("AWS_SECRET_ACCESS_KEY", &secret);
    b.set("ZSNAP_BUCKET", &bucket);

    for site in [&a, &b] {
        site.write("own.bin", &data(MIB, u64::from(site.pool.name.len() as u32)));
        site.snapshot("s1");
        site.run("zsnap-backup", &[]).success();
    }
    // Each sees its own backups...
    for site in [&a, &b] {
        assert_eq!(site.run("zsnap-restore", &["list", "--json"]).success().json_lines().len(), 1);
    }
    // ...and neither can list or read the other's.
    let mut a_at_b = a.cmd("zsnap-plan", &["list"]);
    a_at_b.env("ZSNAP_BUCKET", &bucket).env("ZSNAP_S3_PREFIX", &b.ctx.prefix).env("ZSNAP_DATASET", &b.data);
    run(a_at_b, None, TIMEOUT).fails(77, "access denied");
    let b_object = b.run("zsnap-plan", &["list"]).success().json_lines()[0]["key"].as_str().unwrap_or("").to_string();
    a.run("s3get", &[&b_object]).fails(77, "access denied");
    let mut b_at_a = b.cmd("zsnap-plan", &["list"]);
    b_at_a.env("ZSNAP_BUCKET", &a.ctx.bench.bucket).env("ZSNAP_S3_PREFIX", &a.ctx.prefix).env("ZSNAP_DATASET", &a.data);
    run(b_at_a, None, TIMEOUT).fails(77, "access denied");
    // B restores its own.
    let target = b.pool.ds("restored");
    b.run("zsnap-restore", &["latest", "--target", &target]).success();
    assert_same(&tree(&b.mountpoint(&target)), &tree(&b.dir()), "client B's restore");
}

#[test]
fn typed_snapshots_rotate_around_the_s3_base_and_holds() {
    let site = Site::new("ret-snap", "rs");
    std::fs::write(&site.config, "[main]\nKEEP_HOURLY=2\nKEEP_DAILY=0\nKEEP_WEEKLY=0\nKEEP_MONTHLY=0\n")
        .expect("config");
    site.snapshot("manual");
    let t0 = 1_795_392_000; // 2026-11-23 00:00 UTC
    let hourly = |h: i64| {
        let now = (t0 + h * 3600).to_string();
        site.write("f.txt", now.as_bytes());
        site.run("zsnap-snapshot", &["hourly", "--now", &now]).success();
        format!("hourly-2026-11-23-{h:02}0000")
    };
    let a = hourly(0);
    site.run("zsnap-backup", &[]).success(); // @A is the base of the next incremental
    let b = hourly(1);
    let c = hourly(2);
    assert_eq!(site.snapshots_of(&site.data), ["manual", a.as_str(), b.as_str(), c.as_str()]);
    site.pool.zfs(&["hold", "keep", &format!("{}@{b}", site.data)]).success();
    let d = hourly(3);
    // The dry run is the exact commands: a snapshot, then C destroyed (B is held, A is the base).
    let now = (t0 + 4 * 3600).to_string();
    let dry = site.run("zsnap-snapshot", &["hourly", "--now", &now, "--dry-run"]).success();
    let e = "hourly-2026-11-23-040000";
    assert_eq!(
        String::from_utf8_lossy(&dry.stdout),
        format!("zfs snapshot {ds}@{e}\nzfs destroy {ds}@{c}\n", ds = site.data)
    );
    assert_eq!(hourly(4), e);
    assert_eq!(site.snapshots_of(&site.data), ["manual", a.as_str(), b.as_str(), d.as_str(), e]);
    // Once E is in S3, A is no longer the base and goes; B keeps its hold.
    site.run("zsnap-backup", &[]).success();
    site.run("zsnap-snapshot", &["--rotate", "--now", &now]).success();
    assert_eq!(site.snapshots_of(&site.data), ["manual", b.as_str(), d.as_str(), e]);
    let plan = site.run("zsnap-plan", &["rotate", "--now", &now]).success().json_lines();
    let held = plan.iter().find(|l| l["snapshot"] == b.as_str()).expect("B");
    assert_eq!(held["reason"], "1 hold(s)");
    site.pool.zfs(&["release", "keep", &format!("{}@{b}", site.data)]).success();
    site.run("zsnap-snapshot", &["fortnightly"]).fails(64, "unknown argument 'fortnightly'");
}

#[test]
fn a_client_quota_counts_the_clients_other_datasets() {
    let mut site = Site::new("ret-client-quota", "rcq");
    std::fs::write(&site.config, format!("[main]\nKEEP_LAST=2\n{NO_PERIODS}")).expect("config");
    // Another dataset of the same client, under the same prefix.
    let other = site.pool.ds("other");
    site.pool.zfs(&["create", &other]).success();
    std::fs::write(site.mountpoint(&other).join("o.bin"), data(MIB, 90)).expect("write");
    site.pool.zfs(&["snapshot", &format!("{other}@o1")]).success();
    let mut c = site.cmd("zsnap-backup", &[]);
    c.env("ZSNAP_DATASET", &other);
    run(c, None, TIMEOUT).success();
    backup_two_fulls(&site);
    let bytes = |ds: &str| -> Vec<u64> {
        let mut c = site.cmd("zsnap-plan", &["list"]);
        c.env("ZSNAP_DATASET", ds);
        run(c, None, TIMEOUT).success().json_lines().iter().map(|l| l["bytes"].as_u64().unwrap_or(0)).collect()
    };
    let (theirs, ours) = (bytes(&other)[0], bytes(&site.data));
    assert!(site.run("zsnap-plan", &["prune"]).success().json_lines().iter().all(|l| l["action"] != "delete"));

    // Room for the other dataset and our newest backup only: our older one goes.
    let quota = theirs + ours[1] + 100;
    site.set("ZSNAP_CLIENT_QUOTA", &quota.to_string());
    let plan = site.run("zsnap-plan", &["prune"]).success().json_lines();
    assert_eq!(by_action(&plan, "delete"), ["s1"]);
    assert_eq!(summary(&plan)["quota"], ours[1] + 100, "this dataset's share");
    let status = site.run("zsnap-status", &["--json"]).success().json_lines();
    let s = summary(&status);
    assert_eq!(
        (s["client_bytes"].as_u64(), s["client_quota"].as_u64()),
        (Some(theirs + ours[0] + ours[1]), Some(quota))
    );
    // Less than the other dataset alone: nothing may go but the newest stays; said why.
    site.set("ZSNAP_CLIENT_QUOTA", &(theirs / 2).to_string());
    let out = site.run("zsnap-plan", &["prune"]).fails(1, "share of the client quota");
    assert_eq!(by_action(&out.json_lines(), "delete"), ["s1"]);
}

/// Two full backups, @s1 and @s2.
fn backup_two_fulls(site: &Site) {
    for snap in ["s1", "s2"] {
        site.write(&format!("{snap}.bin"), &data(MIB, snap.len() as u64 + 3));
        site.snapshot(snap);
        site.run("zsnap-backup", &["--full"]).success();
    }
}

/// An orphan on purpose: a middle object of a chain deleted, a healing full of the newest
/// snapshot sent; `zsnap-prune --broken` lists exactly the orphan, `--yes` deletes it, and
/// zsnap-health is then ok. Nothing a complete chain needs is touched.
#[test]
fn prune_broken_deletes_exactly_the_orphans_a_healing_full_leaves() {
    let site = Site::new("ret-broken", "rb");
    let mut trees = Vec::new();
    for (i, snap) in ["s1", "s2", "s3"].iter().enumerate() {
        site.write(&format!("f{i}"), &data(60_000, 70 + i as u64));
        site.snapshot(snap);
        site.run("zsnap-backup", &[]).success();
        trees.push(tree(&site.dir()));
    }
    let middle = site.keys().into_iter().find(|k| k.contains("/@s2/")).expect("the @s2 object");
    site.delete_key(&middle);
    let orphan = site.keys().into_iter().find(|k| k.contains("/@s3/zsnap1,kind=inc")).expect("the @s3 incremental");

    // Nothing as new restores yet: the orphan is the only copy of @s3, and --broken keeps it.
    let crit = site.run("zsnap-health", &["--json"]);
    assert_eq!(crit.code(), 2, "{}", crit.stderr);
    let chain = crit.json_lines().into_iter().find(|l| l["check"] == "chain").expect("a chain finding");
    assert!(
        chain["message"]
            .as_str()
            .unwrap_or("")
            .contains("send a full (zsnap-backup --full) and then run zsnap-prune --broken"),
        "{chain}"
    );
    let plan = site.run("zsnap-prune", &["--broken", "--json"]).success().json_lines();
    assert!(by_action(&plan, "delete").is_empty(), "{plan:?}");

    // The healing full of @s3; health names the orphan for zsnap-prune --broken.
    site.run("zsnap-backup", &["--full"]).success();
    let crit = site.run("zsnap-health", &["--json"]);
    assert_eq!(crit.code(), 2, "{}", crit.stderr);
    let chain = crit.json_lines().into_iter().find(|l| l["check"] == "chain").expect("a chain finding");
    assert!(
        chain["message"].as_str().unwrap_or("").ends_with("run zsnap-prune --broken to delete this orphan"),
        "{chain}"
    );
    let before = site.keys();
    assert_eq!(before.len(), 3, "{before:?}");

    // Shown, not done: exactly the orphan, and every other object kept with its reason.
    let plan = site.run("zsnap-prune", &["--broken", "--json"]).success().json_lines();
    let deletes: Vec<&Value> = plan.iter().filter(|l| l["action"] == "delete").collect();
    assert_eq!(deletes.len(), 1, "{plan:?}");
    assert_eq!(deletes[0]["key"], site.url(&orphan));
    assert!(
        deletes[0]["reason"].as_str().unwrap_or("").starts_with("orphan: cannot be restored (parent @s2"),
        "{}",
        deletes[0]
    );
    assert_eq!(by_action(&plan, "keep"), ["s1", "s3"]);
    assert_eq!(summary(&plan)["mode"], "broken");
    assert_eq!(site.keys(), before, "without --yes nothing is deleted");
    let table = site.run("zsnap-prune", &["--broken", "--table"]).success().text();
    assert!(table.contains("delete 1") && table.contains("--broken: only orphans"), "{table}");

    let dry = site.run("zsnap-prune", &["--broken", "--dry-run"]).success().text();
    assert_eq!(dry.lines().count(), 1, "{dry}");
    assert!(dry.starts_with("s3put --delete ") && dry.contains(&orphan), "{dry}");
    let out = site.run("zsnap-prune", &["--broken", "--yes"]).success();
    let deleted = out.json_lines();
    assert_eq!((deleted.len(), &deleted[0]["deleted"]), (1, &Value::Bool(true)), "{}", out.stderr);
    let after = site.keys();
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.iter().all(|k| k.contains("kind=full")) && !after.contains(&orphan), "{after:?}");

    // Healthy, and the healed chain restores @s3's exact files.
    site.run("zsnap-health", &[]).success();
    let target = site.pool.ds("r-s3");
    site.run("zsnap-restore", &["s3", "--target", &target]).success();
    assert_same(&tree(&site.mountpoint(&target)), &trees[2], "s3");
    let again = site.run("zsnap-prune", &["--broken", "--yes"]).success();
    assert!(again.stderr.contains("nothing to delete"), "{}", again.stderr);
}
