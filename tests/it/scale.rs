//! Requests per command at scale (issue 17): every planning command reads the catalog with
//! one ListObjectsV2 page per 1,000 keys and a fixed handful of other requests, however
//! many backups there are. The test seeds fake backup keys (empty objects: listing is
//! what is measured) with rclone, runs each command with ZSNAP_COUNT_REQUESTS (one line per
//! HTTP attempt, lib/s3/request_count.rs) and asserts the exact count by operation at 100
//! and at 2,000 backups, so a HEAD (or anything else) per object fails it.

use crate::common::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Backups are an hour apart from here; a full every 10, incrementals in between (so a
/// prune has whole chains to delete).
const T0: i64 = 1_700_000_000;

/// The key of backup `i` of `dataset` under `prefix`, as zsnap-backup names it.
fn key(prefix: &str, dataset: &str, i: usize) -> String {
    let (g, t) = (1_000_000 + i, T0 + 3600 * i as i64);
    match i % 10 {
        0 => format!("{prefix}{dataset}/@auto-{i}/zsnap1,kind=full,guid={g},time={t},z=zstd"),
        _ => format!(
            "{prefix}{dataset}/@auto-{i}/zsnap1,kind=inc,guid={g},from={},fromsnap=auto-{},time={t},z=zstd",
            g - 1,
            i - 1
        ),
    }
}

/// `n` backups of each dataset under the site's prefix: a tree of empty files under the
/// test's work directory, copied in by one rclone call.
fn seed(site: &Site, datasets: &[&str], n: usize) {
    let tree = site.ctx.bench.work.join(format!("{}-seed", site.pool.name));
    let _ = std::fs::remove_dir_all(&tree);
    for d in datasets {
        for i in 0..n {
            let file = tree.join(key("", d, i));
            std::fs::create_dir_all(file.parent().expect("a parent")).expect("seed directory");
            std::fs::write(&file, b"").expect("seed file");
        }
    }
    let to = format!("t:{}/{}", site.ctx.bench.bucket, site.ctx.prefix);
    let mut c = rclone(&site.ctx);
    c.args(["copy", "--transfers", "16", "--checkers", "16", "--no-check-dest", "--s3-no-check-bucket"])
        .args(["--s3-no-head", "--contimeout", "5s", "--timeout", "30s", "--retries", "1"])
        .arg(&tree)
        .arg(&to);
    run(c, None, TIMEOUT).success();
    std::fs::remove_dir_all(&tree).expect("remove the seed tree");
    let listed = site.keys().len();
    assert_eq!(listed, datasets.len() * n, "seeded keys in {to}");
}

/// Run `prog` with the request count on: its output and the requests by operation.
/// `every` drops ZSNAP_DATASET, so zsnap-health checks every dataset under the prefix.
fn counted(site: &Site, prog: &str, args: &[&str], every: bool) -> (Output, BTreeMap<String, usize>) {
    let file = site.ctx.bench.work.join(format!("{}-requests", site.pool.name));
    let _ = std::fs::remove_file(&file);
    let mut c = site.cmd(prog, args);
    c.env("ZSNAP_COUNT_REQUESTS", &file);
    if every {
        c.env_remove("ZSNAP_DATASET");
    }
    let out = run(c, None, TIMEOUT);
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let mut by_op = BTreeMap::new();
    for op in text.lines() {
        *by_op.entry(op.to_string()).or_insert(0) += 1;
    }
    (out, by_op)
}

fn ops(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().filter(|(_, n)| *n > 0).map(|(k, n)| (k.to_string(), *n)).collect()
}

/// What every command should cost with `n` backups of the site's dataset (and `others`
/// backups of other datasets beside it, which the whole-prefix health listing also pages
/// through): `(command, args, requests by operation)`.
fn expected(n: usize, others: usize, now: &str) -> Vec<(&'static str, Vec<String>, BTreeMap<String, usize>)> {
    let pages = |keys: usize| keys.div_ceil(1000).max(1);
    let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        ("zsnap-plan", a(&["list"]), ops(&[("ListObjectsV2", pages(n)), ("ListMultipartUploads", 1)])),
        // status and backup also read the central policy object (absent: one GetObject).
        (
            "zsnap-plan",
            a(&["status"]),
            ops(&[("ListObjectsV2", pages(n)), ("ListMultipartUploads", 1), ("GetObject", 1)]),
        ),
        (
            "zsnap-plan",
            a(&["backup", "--now", now]),
            ops(&[("ListObjectsV2", pages(n)), ("ListMultipartUploads", 1), ("GetObject", 1)]),
        ),
        // Prune: one GetObjectLockConfiguration (Garage: NotImplemented), no HEAD per object.
        (
            "zsnap-plan",
            a(&["prune", "--now", now]),
            ops(&[
                ("ListObjectsV2", pages(n)),
                ("ListMultipartUploads", 1),
                ("GetObject", 1),
                ("GetObjectLockConfiguration", 1),
            ]),
        ),
        ("zsnap-health", a(&["--now", now]), ops(&[("ListObjectsV2", pages(n)), ("ListMultipartUploads", 1)])),
        // Every dataset under the prefix ("every": without ZSNAP_DATASET): still one
        // listing pass and one uploads listing.
        (
            "zsnap-health",
            a(&["--now", now, "every"]),
            ops(&[("ListObjectsV2", pages(n + others)), ("ListMultipartUploads", 1)]),
        ),
    ]
}

fn check_counts(n: usize) {
    let site = Site::new(&format!("scale{n}"), &format!("sc{n}"));
    site.snapshot("local1");
    // Not `data-sibling`: the dataset's listing (`<prefix>POOL/data`) would page through it.
    let sibling = site.pool.ds("other");
    seed(&site, &[&site.data, &sibling], n);
    let now = (T0 + 3600 * n as i64).to_string();
    for (prog, args, want) in expected(n, n, &now) {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        let every = args.last() == Some(&"every");
        args.retain(|a| *a != "every");
        let (out, got) = counted(&site, prog, &args, every);
        assert_eq!(out.code(), 0, "{prog} {args:?} failed: {}", out.stderr);
        assert_eq!(got, want, "requests of {prog} {args:?} with {n} backups (stderr: {})", out.stderr);
        if every {
            let summary = out.json_lines().into_iter().find(|l| l["summary"] == true).expect("a summary");
            assert_eq!(summary["datasets"], 2, "{}", String::from_utf8_lossy(&out.stdout));
        }
        if args[0] == "list" {
            assert_eq!(out.json_lines().len(), n, "one line per backup");
        }
        if args[0] == "prune" {
            let plan = out.json_lines();
            let deleted = plan.iter().filter(|l| l["action"] == "delete").count();
            assert!(deleted > n / 2, "the default policy deletes most of {n} hourly backups: {deleted}");
        }
    }
}

#[test]
fn requests_per_command_do_not_grow_with_100_backups() {
    check_counts(100);
}

#[test]
fn requests_per_command_do_not_grow_with_2000_backups() {
    check_counts(2000);
}

/// The seeded keys parse as what they say (a full every 10, the rest incrementals).
#[test]
fn seeded_keys_are_backup_keys() {
    assert!(key("p/", "tank/d", 0).ends_with("/@auto-0/zsnap1,kind=full,guid=1000000,time=1700000000,z=zstd"));
    assert!(key("p/", "tank/d", 101).contains("kind=inc,guid=1000101,from=1000100,fromsnap=auto-100,"));
    assert!(key("p/", "tank/d", 110).contains("kind=full,guid=1000110,time="));
    assert!(Path::new(&key("", "tank/d", 5)).starts_with("tank/d/@auto-5"));
}
