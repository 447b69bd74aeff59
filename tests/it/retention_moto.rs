//! Retention where Garage cannot go, on moto with zfs-fuse: a backup host's key made from
//! docs/iam/backup-host.json backs up and restores but cannot prune, and Object Lock: new
//! backups locked, the chain under an incremental extended, locked objects never pruned.

use crate::common::*;
use serde_json::Value;

/// A site whose scripts talk to moto in `bucket` with `keys`.
fn moto_site(name: &str, tag: &str, moto: &Moto, bucket: &str, keys: &Keys) -> Site {
    let mut site = Site::new(name, tag);
    site.set("ZSNAP_S3_ENDPOINT", &moto.endpoint);
    site.set("ZSNAP_BUCKET", bucket);
    use_keys(&mut site, keys);
    site
}

fn use_keys(site: &mut Site, keys: &Keys) {
    site.set("AWS_ACCESS_KEY_ID", &keys.access_key);
    site.set("AWS_SECRET_ACCESS_KEY", &keys.secret_key);
}

fn backup(site: &Site, snap: &str, args: &[&str]) {
    site.write(&format!("{snap}.bin"), &data(MIB + 17, snap.len() as u64 * 31));
    site.snapshot(snap);
    site.run("zsnap-backup", args).success();
}

fn listed(site: &Site) -> Vec<String> {
    let list = site.run("zsnap-restore", &["list", "--json"]).success().json_lines();
    list.iter().filter_map(|l| l["snapshot"].as_str().map(str::to_string)).collect()
}

const KEEP_ONE: &str = "[main]\nKEEP_LAST=1\nKEEP_HOURLY=0\nKEEP_DAILY=0\nKEEP_WEEKLY=0\nKEEP_MONTHLY=0\n";

#[test]
fn a_backup_hosts_key_backs_up_and_restores_but_cannot_prune() {
    let moto = Moto::get();
    let bucket = moto.bucket("hosts", false);
    let mut site = moto_site("ret-iam", "mi", &moto, &bucket, &moto.admin);
    let template = std::fs::read_to_string(repo_path("docs/iam/backup-host.json")).expect("backup-host.json");
    let policy: Value = serde_json::from_str(&template.replace("BUCKET", &bucket).replace("PREFIX", &site.ctx.prefix))
        .expect("the documented policy is JSON");
    let host = moto.user("backup-host", &policy);
    use_keys(&mut site, &host);
    std::fs::write(&site.config, KEEP_ONE).expect("config");

    backup(&site, "s1", &[]);
    backup(&site, "s2", &["--full"]);
    assert_eq!(listed(&site), ["s1", "s2"]);
    let target = site.pool.ds("restored");
    site.run("zsnap-restore", &["latest", "--target", &target]).success();
    assert_same(&tree(&site.mountpoint(&target)), &tree(&site.dir()), "restore with the backup host's key");

    // The plan can be made with this key; the delete is refused, and nothing is gone.
    let plan = site.run("zsnap-plan", &["prune"]).success().json_lines();
    assert!(plan.iter().any(|l| l["action"] == "delete" && l["snapshot"] == "s1"));
    let out = site.run("zsnap-prune", &["--yes"]);
    let out = out.fails_last(77, "zsnap-prune", "this key may not delete");
    assert!(out.stderr.contains("prune needs an admin key"), "{}", out.stderr);
    assert_eq!(listed(&site), ["s1", "s2"]);
    // Nor may it rewrite the central policy.
    let policy_url = format!("s3://{bucket}/{}policy.json", site.ctx.prefix);
    let put = site.run_with("s3put", &[&policy_url], br#"{"keep_last": 100}"#);
    assert_eq!(put.code(), 77, "{}", put.stderr);

    // The admin's key prunes.
    use_keys(&mut site, &moto.admin);
    site.run("zsnap-prune", &["--yes"]).success();
    assert_eq!(listed(&site), ["s2"]);
    site.run("zsnap-health", &[]).success();
}

/// Each object's retention date (Unix seconds), by snapshot name, read with boto3.
fn retain_until(moto: &Moto, bucket: &str, site: &Site) -> Vec<(String, i64)> {
    let list = site.run("zsnap-plan", &["list"]).success().json_lines();
    let mut out = Vec::new();
    for l in list {
        let url = l["key"].as_str().unwrap_or_default();
        let key = url.strip_prefix(&format!("s3://{bucket}/")).unwrap_or(url);
        let script = "h = s3.head_object(Bucket=sys.argv[1], Key=sys.argv[2])\n\
                      d = h.get('ObjectLockRetainUntilDate')\n\
                      print(int(d.timestamp()) if d else 0, h.get('ObjectLockMode', ''))";
        let o = moto.python(script, &[bucket, key]).success();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let mut words = text.split_whitespace();
        let until: i64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        assert_eq!(words.next(), Some("GOVERNANCE"), "{key}: {text}");
        out.push((l["snapshot"].as_str().unwrap_or_default().to_string(), until));
    }
    out
}

#[test]
fn object_lock_covers_the_chain_and_locked_objects_are_never_pruned() {
    let moto = Moto::get();
    let bucket = moto.bucket("locked", true);
    let mut site = moto_site("ret-lock", "ml", &moto, &bucket, &moto.admin);
    std::fs::write(&site.config, format!("{KEEP_ONE}LOCK_MODE=GOVERNANCE\nLOCK_DAYS=1\n")).expect("config");
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;

    backup(&site, "s1", &[]);
    let locks = retain_until(&moto, &bucket, &site);
    assert!((start + 86_400..start + 86_400 + 600).contains(&locks[0].1), "s1 locked for a day: {locks:?}");

    // A longer lock for the next incremental: its parent is extended to the same date first.
    site.set("ZSNAP_LOCK_DAYS", "3");
    let dry = site.run("zsnap-backup", &["--dry-run"]).success();
    assert!(String::from_utf8_lossy(&dry.stdout).is_empty(), "nothing new yet");
    site.write("s2.bin", &data(MIB, 2));
    site.snapshot("s2");
    let dry = site.run("zsnap-backup", &["--dry-run"]).success();
    let dry = String::from_utf8_lossy(&dry.stdout).into_owned();
    let lines: Vec<&str> = dry.lines().collect();
    assert_eq!(lines.len(), 2, "{dry}");
    assert!(
        lines[0].starts_with("s3put --extend-lock --lock-mode GOVERNANCE --lock-until ") && lines[0].contains("/@s1/")
    );
    assert!(lines[1].contains(" --lock-mode GOVERNANCE --lock-until ") && lines[1].contains("/@s2/"), "{dry}");
    site.run("zsnap-backup", &[]).success();
    let locks = retain_until(&moto, &bucket, &site);
    assert_eq!(locks.len(), 2);
    assert!(locks[1].1 >= start + 3 * 86_400, "s2 locked for 3 days: {locks:?}");
    assert!(locks[0].1 >= locks[1].1, "the parent is locked at least as long as its child: {locks:?}");

    // A new full: s1 and s2 are no longer needed, but locked: kept, and said why.
    site.set("ZSNAP_LOCK_DAYS", "1");
    backup(&site, "s3", &["--full"]);
    let plan = site.run("zsnap-plan", &["prune"]).success().json_lines();
    for snap in ["s1", "s2"] {
        let l = plan.iter().find(|l| l["snapshot"] == snap).expect("in the plan");
        assert_eq!(l["action"], "keep", "{l}");
        assert!(l["reason"].as_str().unwrap_or("").contains("object lock until"), "{l}");
    }
    let out = site.run("zsnap-prune", &["--yes"]).success();
    assert!(out.stderr.contains("nothing to delete"), "{}", out.stderr);
    assert_eq!(listed(&site), ["s1", "s2", "s3"]);
    // Judged after the locks run out, the same policy deletes them.
    let later = (start + 4 * 86_400).to_string();
    let plan = site.run("zsnap-plan", &["prune", "--now", &later]).success().json_lines();
    let deletes: Vec<&str> =
        plan.iter().filter(|l| l["action"] == "delete").filter_map(|l| l["snapshot"].as_str()).collect();
    assert_eq!(deletes, ["s1", "s2"]);
}
