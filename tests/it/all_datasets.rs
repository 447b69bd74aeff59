//! `--all` (every `[fs:DATASET]` section of the config) and `--recursive` (a dataset and its
//! descendants) on zfs-fuse and Garage: each dataset run as if given with --dataset (its own
//! settings, lock, chain and exit status), one failing (its lock held) not stopping the
//! others, a JSON line per dataset and a summary, the worst exit code; restores of a tree's
//! chains byte-exact; prune, status, snapshot and zsnap-health over the same sets.

use crate::common::*;
use serde_json::Value;
use std::io::BufRead;
use std::process::{Command, Stdio};

/// The loop's lines (not the commands' own): one per dataset, then the summary.
fn each_lines(out: &Output) -> (Vec<Value>, Value) {
    let lines: Vec<Value> = out.json_lines().into_iter().filter(|l| l.get("scope").is_some()).collect();
    let (summary, per): (Vec<Value>, Vec<Value>) = lines.into_iter().partition(|l| l["summary"] == true);
    assert_eq!(summary.len(), 1, "one summary line\n{}\n{}", out.text(), out.stderr);
    (per, summary[0].clone())
}

/// (dataset, result, exit) of each dataset's line.
fn results(per: &[Value]) -> Vec<(String, String, i64)> {
    per.iter()
        .map(|l| {
            (
                l["dataset"].as_str().unwrap_or_default().to_string(),
                l["result"].as_str().unwrap_or_default().to_string(),
                l["exit"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

fn row(ds: &str, result: &str, exit: i64) -> (String, String, i64) {
    (ds.to_string(), result.to_string(), exit)
}

/// Datasets with backups under the site's prefix, from the keys (a peer's listing).
fn backed_up(site: &Site, ds: &str) -> Vec<String> {
    site.keys().into_iter().filter(|k| k.starts_with(&format!("{ds}/@"))).collect()
}

/// `flock` holding zsnap's lock on `ds` (the lock file zsnap-common.sh's lock_dataset
/// uses) until the returned child's stdin is closed.
fn hold_lock(site: &Site, ds: &str) -> std::process::Child {
    std::fs::create_dir_all(&site.locks).expect("lock dir");
    let file = site.locks.join(format!("{}.lock", ds.replace('/', "%").replace(' ', "_")));
    let mut c = Command::new("flock");
    c.arg("-n").arg(&file).args(["-c", "echo held; read -r _"]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = c.spawn().expect("flock");
    // flock -n never waits: the line comes at once, or EOF if the lock was taken.
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read flock");
    assert_eq!(line, "held\n", "flock did not take the lock on {ds}");
    child
}

fn release(mut child: std::process::Child) {
    drop(child.stdin.take());
    wait_bounded(&mut child, "flock", TIMEOUT);
}

fn sha256(path: &std::path::Path) -> String {
    let mut c = Command::new("sha256sum");
    c.arg(path);
    let out = run(c, None, TIMEOUT).success();
    out.text().split_whitespace().next().unwrap_or_default().to_string()
}

/// Three datasets a, b, c beside the site's own, each with a file and a snapshot, and a
/// config with an [fs:] section for each (b's with its own snapshot prefix).
fn three(site: &Site) -> [String; 3] {
    let names = ["a", "b", "c"].map(|n| site.pool.ds(n));
    for (i, ds) in names.iter().enumerate() {
        site.pool.zfs(&["create", ds]).success();
        std::fs::write(site.mountpoint(ds).join("f.bin"), data(200_000 + i, 40 + i as u64)).expect("write");
    }
    let conf = format!("[fs:{}]\n[fs:{}]\nSNAPSHOT_PREFIX=zb-\n[fs:{}]\n", names[0], names[1], names[2]);
    std::fs::write(&site.config, conf).expect("config");
    names
}

#[test]
fn backup_all_goes_on_past_a_held_lock_and_exits_with_it() {
    let site = Site::new("all-backup", "al");
    let [a, b, c] = three(&site);
    for (ds, snap) in [(&a, "s1"), (&b, "zb-s1"), (&c, "s1")] {
        site.pool.zfs(&["snapshot", &format!("{ds}@{snap}")]).success();
    }

    // b's lock is held: a and c are backed up all the same, and the run exits 72.
    let lock = hold_lock(&site, &b);
    let out = site.run("zsnap-backup", &["--all"]);
    assert_eq!(out.code(), 72, "{}", out.stderr);
    let (per, summary) = each_lines(&out);
    assert_eq!(results(&per), [row(&a, "ok", 0), row(&b, "failed", 72), row(&c, "ok", 0)]);
    assert_eq!(summary["datasets"], 3);
    assert_eq!(
        (summary["ok"].as_u64(), summary["failed"].as_u64(), summary["exit"].as_i64()),
        (Some(2), Some(1), Some(72))
    );
    // Each upload's own s3put line comes first, then the dataset's.
    let lines = out.json_lines();
    let first = lines.iter().position(|l| l["scope"].is_string()).expect("a dataset line");
    assert!(lines[0]["key"].as_str().is_some_and(|k| k.contains(&format!("{a}/@s1/"))), "{lines:?}");
    assert_eq!(first, 1, "a's s3put line, then a's line: {lines:?}");
    assert!(out.stderr.contains(&format!("another zsnap run holds the lock on {b}")), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("zsnap-backup: {b}: failed (exit 72)\n")), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("zsnap-backup: {a}: ok\n")), "{}", out.stderr);
    assert_eq!(backed_up(&site, &a).len(), 1);
    assert!(backed_up(&site, &b).is_empty(), "nothing of b was sent");
    assert_eq!(backed_up(&site, &c).len(), 1);
    assert!(backed_up(&site, &site.data).is_empty(), "$ZSNAP_DATASET is not one of --all's");
    release(lock);

    // Lock free: b goes (with its own prefix, zb-), a and c have nothing to send.
    site.pool.zfs(&["snapshot", &format!("{b}@other")]).success();
    let out = site.run("zsnap-backup", &["--all"]).success();
    let (per, summary) = each_lines(&out);
    assert_eq!(results(&per), [row(&a, "ok", 0), row(&b, "ok", 0), row(&c, "ok", 0)]);
    assert_eq!((summary["ok"].as_u64(), summary["exit"].as_i64()), (Some(3), Some(0)));
    let keys = backed_up(&site, &b);
    assert!(keys.len() == 1 && keys[0].starts_with(&format!("{b}/@zb-s1/")), "b's [fs:] prefix applies: {keys:?}");

    // Refusals, each one line and 64, before anything runs.
    site.run("zsnap-backup", &["--all", "--dataset", &a]).fails(64, "--all runs for every [fs:DATASET] section");
    site.run("zsnap-backup", &["--all", "--recursive"]).fails(64, "--all and --recursive do not go together");
    std::fs::write(&site.config, "[main]\n").expect("config");
    let conf = site.config.display().to_string();
    site.run("zsnap-backup", &["--all"]).fails(64, &format!("{conf} has none"));
    site.run("zsnap-prune", &["--all"]).fails(64, "[fs:DATASET] sections");
}

#[test]
fn recursive_backs_up_each_descendant_as_its_own_chain() {
    let site = Site::new("all-tree", "at");
    let root = site.pool.ds("tree");
    let tree = [root.clone(), format!("{root}/x"), format!("{root}/x/y")];
    for (i, ds) in tree.iter().enumerate() {
        site.pool.zfs(&["create", ds]).success();
        std::fs::write(site.mountpoint(ds).join("f.bin"), data(300_000 + i, 70 + i as u64)).expect("write");
    }
    site.pool.zfs(&["snapshot", "-r", &format!("{root}@s1")]).success();

    let out = site.run("zsnap-backup", &["--recursive", "--dataset", &root]).success();
    let (per, summary) = each_lines(&out);
    assert_eq!(results(&per), tree.iter().map(|d| row(d, "ok", 0)).collect::<Vec<_>>());
    assert_eq!((summary["scope"].as_str(), summary["ok"].as_u64()), (Some("recursive"), Some(3)));
    // Three chains, each under its own dataset's name, none holding another's stream.
    for ds in &tree {
        let keys = backed_up(&site, ds);
        assert!(keys.len() == 1 && keys[0].contains(",kind=full,"), "{ds}: {keys:?}");
    }
    // An incremental for each on the next run.
    for ds in &tree {
        std::fs::write(site.mountpoint(ds).join("g.bin"), data(50_000, ds.len() as u64)).expect("write");
    }
    site.pool.zfs(&["snapshot", "-r", &format!("{root}@s2")]).success();
    let out = site.run("zsnap-backup", &["--recursive", "--dataset", &root]).success();
    assert_eq!(each_lines(&out).1["ok"], 3);

    // Each restores on its own, byte-exact.
    for (i, ds) in tree.iter().enumerate() {
        assert!(backed_up(&site, ds).iter().any(|k| k.contains("/@s2/") && k.contains(",kind=inc,")), "{ds}");
        let target = site.pool.ds(&format!("r{i}"));
        site.run("zsnap-restore", &["--dataset", ds, "latest", "--target", &target]).success();
        for f in ["f.bin", "g.bin"] {
            let (got, want) = (site.mountpoint(&target).join(f), site.mountpoint(ds).join(f));
            assert_eq!(sha256(&got), sha256(&want), "{ds} {f}");
            assert!(std::fs::read(&got).expect("restored") == std::fs::read(&want).expect("source"), "{ds} {f}");
        }
    }

    // Status over the tree: each dataset's lines, then its own; a missing dataset is 66.
    let out = site.run("zsnap-status", &["--recursive", "--dataset", &root, "--json"]).success();
    let (per, _) = each_lines(&out);
    assert_eq!(per.len(), 3);
    let missing = site.pool.ds("nope");
    site.run("zsnap-backup", &["--recursive", "--dataset", &missing])
        .fails(66, &format!("dataset {missing} does not exist"));

    // zsnap-health --recursive: the tree from S3 (no pool read), each healthy.
    let out = site.run("zsnap-health", &["--recursive", "--dataset", &root, "--json"]).success();
    let checked: Vec<String> = out
        .json_lines()
        .iter()
        .filter(|l| l.get("backups").is_some() && l["status"] == "ok")
        .filter_map(|l| l["dataset"].as_str().map(str::to_string))
        .collect();
    assert_eq!(checked, tree, "{}", out.text());
    let out = site.run("zsnap-health", &["--recursive", "--dataset", &missing, "--json"]);
    assert_eq!(out.code(), 2, "a tree with nothing backed up is critical\n{}", out.text());
}

#[test]
fn snapshot_status_prune_and_health_for_all() {
    let site = Site::new("all-ops", "ao");
    let [a, b, c] = three(&site);

    // One typed snapshot each, named by each dataset's own prefix.
    let out = site.run("zsnap-snapshot", &["--all", "hourly"]).success();
    let (per, summary) = each_lines(&out);
    assert_eq!(results(&per), [row(&a, "ok", 0), row(&b, "ok", 0), row(&c, "ok", 0)]);
    assert_eq!(summary["exit"], 0);
    for ds in [&a, &b, &c] {
        let snaps = site.snapshots_of(ds);
        let want = if ds == &b { "zb-hourly-" } else { "hourly-" };
        assert!(snaps.len() == 1 && snaps[0].starts_with(want), "{ds}: {snaps:?}");
    }
    assert!(site.snapshots_of(&site.data).is_empty(), "$ZSNAP_DATASET is not one of --all's");
    site.run("zsnap-backup", &["--all"]).success();

    // Status: each dataset's own lines, its line, and a summary.
    let out = site.run("zsnap-status", &["--all", "--json"]).success();
    let (per, summary) = each_lines(&out);
    assert_eq!(results(&per), [row(&a, "ok", 0), row(&b, "ok", 0), row(&c, "ok", 0)]);
    assert_eq!(summary["ok"], 3);
    assert_eq!(out.json_lines().iter().filter(|l| l["summary"] == true && l.get("scope").is_none()).count(), 3);
    // In a table, each under a heading.
    let table = site.run("zsnap-status", &["--all", "--table"]).success().text();
    for ds in [&a, &b, &c] {
        assert!(table.contains(&format!("{ds}:\n")), "{table}");
    }
    assert!(!table.contains("\"scope\""), "{table}");

    // Prune: the plan for each (nothing to delete: each has only its newest), then --yes.
    let out = site.run("zsnap-prune", &["--all", "--json"]).success();
    let (per, _) = each_lines(&out);
    assert_eq!(per.len(), 3);
    let keeps = out.json_lines().iter().filter(|l| l["action"] == "keep").count();
    assert_eq!(keeps, 3, "{}", out.text());
    let out = site.run("zsnap-prune", &["--all", "--yes"]).success();
    assert_eq!(each_lines(&out).1["ok"], 3);
    assert!(out.stderr.contains(&format!("zsnap-prune: {c}: nothing to delete")), "{}", out.stderr);

    // A config dataset that does not exist: status fails for it alone (66), and the
    // health check of every [fs:] dataset calls it critical.
    let gone = site.pool.ds("gone");
    let conf = std::fs::read_to_string(&site.config).expect("config");
    std::fs::write(&site.config, format!("{conf}[fs:{gone}]\n")).expect("config");
    let out = site.run("zsnap-status", &["--all", "--json"]);
    assert_eq!(out.code(), 66, "{}", out.stderr);
    let (per, summary) = each_lines(&out);
    assert_eq!(results(&per)[3], row(&gone, "failed", 66));
    assert_eq!((summary["ok"].as_u64(), summary["failed"].as_u64()), (Some(3), Some(1)));
    let out = site.run("zsnap-health", &["--all", "--json"]);
    assert_eq!(out.code(), 2, "{}", out.text());
    let lines = out.json_lines();
    let status_of =
        |ds: &str| lines.iter().find(|l| l["dataset"] == ds && l.get("backups").is_some()).map(|l| l["status"].clone());
    for ds in [&a, &b, &c] {
        assert_eq!(status_of(ds), Some(Value::from("ok")), "{ds}: {lines:?}");
    }
    assert_eq!(status_of(&gone), Some(Value::from("critical")));
    assert!(status_of(&site.data).is_none(), "only the [fs:] datasets are checked");
    site.run("zsnap-health", &["--all", "--dataset", &a]).fails(64, "without --dataset");
}

/// `[fs:]` sections that put datasets under different prefixes: each dataset is backed up
/// and checked where its own section says, zsnap-health listing each place once.
#[test]
fn each_dataset_where_its_own_section_puts_it() {
    let site = Site::new("all-places", "ap");
    let [a, b, _] = three(&site);
    let prefix = site.ctx.prefix.clone();
    std::fs::write(&site.config, format!("[main]\nS3_PREFIX={prefix}\n[fs:{a}]\n[fs:{b}]\nS3_PREFIX={prefix}side/\n"))
        .expect("config");
    for ds in [&a, &b] {
        site.pool.zfs(&["snapshot", &format!("{ds}@s1")]).success();
    }
    // The config's prefixes, not the harness's $ZSNAP_S3_PREFIX (which would beat them).
    let run_here = |prog: &str, args: &[&str]| {
        let mut c = site.cmd(prog, args);
        c.env_remove("ZSNAP_S3_PREFIX");
        run(c, None, TIMEOUT)
    };
    let out = run_here("zsnap-backup", &["--all"]).success();
    assert_eq!(results(&each_lines(&out).0), [row(&a, "ok", 0), row(&b, "ok", 0)]);
    assert_eq!(backed_up(&site, &a).len(), 1);
    let side: Vec<String> = site.keys().into_iter().filter(|k| k.starts_with(&format!("side/{b}/@s1/"))).collect();
    assert_eq!(side.len(), 1, "b under its own prefix: {:?}", site.keys());
    assert!(backed_up(&site, &b).is_empty());

    let status = |out: &Output, ds: &str| {
        out.json_lines().iter().find(|l| l["dataset"] == ds && l.get("backups").is_some()).map(|l| l["status"].clone())
    };
    let out = run_here("zsnap-health", &["--all", "--json"]).success();
    assert_eq!((status(&out, &a), status(&out, &b)), (Some("ok".into()), Some("ok".into())), "{}", out.text());
    // b's object gone from its prefix: b is critical, a still ok, and the verdict is 2.
    site.delete_key(&side[0]);
    let out = run_here("zsnap-health", &["--all", "--json"]);
    assert_eq!(out.code(), 2, "{}", out.text());
    assert_eq!((status(&out, &a), status(&out, &b)), (Some("ok".into()), Some("critical".into())), "{}", out.text());
}
