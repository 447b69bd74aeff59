//! zsnap beside a real zfs3backup 0.2.2 on one bucket and prefix (zfs-fuse + Garage): its
//! objects are read as `legacy` with no guid by list and status alike, a zsnap incremental
//! goes on top of them, and when zfs3backup then stores the same snapshot again from the
//! same parent, zsnap-health and zsnap-status warn and name both keys.
//!
//! zfs3backup 0.2.2 is Python 2 code (`import ConfigParser`, print statements), so it runs
//! from a Python 2.7 virtualenv (ZSNAP_ZFS3BACKUP_VENV, default /opt/zsnap-zfs3backup; see
//! [`VENV_HELP`]). It has no endpoint setting (it calls `boto3.resource('s3')`), so botocore
//! is pointed at Garage the way botocore allows: an `endpoints.json` in AWS_DATA_PATH and
//! path-style addressing in AWS_CONFIG_FILE. zfs-fuse 0.7 lacks three things it calls
//! (`zfs list -t snap`, the `written` column, `zfs send -nvP`); a `zfs` first on its PATH
//! answers those from zfs-fuse and runs the real zfs for everything else, so the streams,
//! keys and metadata in the bucket are zfs3backup's own (its pput, its pigz compressor).

use crate::common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

const VENV_HELP: &str = "install it with: /usr/bin/python3 -m venv /opt/zsnap-virtualenv && \
/opt/zsnap-virtualenv/bin/pip install virtualenv==20.21.1 && /opt/zsnap-virtualenv/bin/virtualenv -p \
\"$(pyenv root)/versions/2.7.18/bin/python\" /opt/zsnap-zfs3backup && /opt/zsnap-zfs3backup/bin/pip install \
zfs3backup==0.2.2 (Python 2: its py2 wheel; under Python 3 it neither installs nor runs)";

fn venv() -> PathBuf {
    let dir = PathBuf::from(std::env::var("ZSNAP_ZFS3BACKUP_VENV").unwrap_or_else(|_| "/opt/zsnap-zfs3backup".into()));
    let bin = dir.join("bin/zfs3backup");
    assert!(bin.exists(), "zfs3backup 0.2.2 is not installed: {} is missing; {VENV_HELP}", bin.display());
    dir
}

/// The `zfs` zfs3backup sees: zfs-fuse, with the three calls it lacks answered.
const ZFS_SHIM: &str = r#"#!/usr/bin/env bash
set -euo pipefail
real=REAL_ZFS
if [[ "$*" == "list -Ht snap -o name,used,refer,mountpoint,written" ]]; then
    "$real" list -H -t snapshot -o name,used,referenced,mountpoint | sed 's/$/\t-/'
    exit
fi
if [[ "${1-}" == send && "${2-}" == -nvP ]]; then
    shift 2
    printf 'size\t%s\n' "$("$real" send "$@" | wc -c)"
    exit
fi
exec "$real" "$@"
"#;

/// zfs3backup's command line and environment for a site: its dataset, prefix and Garage.
struct Zfs3backup {
    venv: PathBuf,
    dir: PathBuf,
}

impl Zfs3backup {
    fn new(site: &Site) -> Zfs3backup {
        let venv = venv();
        let dir = site.ctx.bench.work.join(format!("{}-zfs3backup", site.pool.name));
        std::fs::create_dir_all(dir.join("bin")).expect("mkdir");
        let mut which = Command::new("bash");
        which.args(["-c", "command -v zfs"]);
        let which = run(which, None, TIMEOUT).success();
        let real = which.text().trim().to_string();
        let shim = dir.join("bin/zfs");
        std::fs::write(&shim, ZFS_SHIM.replace("REAL_ZFS", &real)).expect("write zfs shim");
        let mut chmod = Command::new("chmod");
        chmod.arg("+x").arg(&shim);
        run(chmod, None, TIMEOUT).success();
        let host = site.ctx.bench.endpoint.trim_start_matches("http://").trim_end_matches('/');
        let endpoints = serde_json::json!({
            "version": 3,
            "partitions": [{
                "partition": "aws", "partitionName": "Garage on 127.0.0.1", "dnsSuffix": "localhost",
                "regionRegex": "^us\\-east\\-1$", "regions": {"us-east-1": {"description": "Garage"}},
                "defaults": {"hostname": "{service}.{region}.{dnsSuffix}", "protocols": ["http"], "signatureVersions": ["v4"]},
                "services": {"s3": {"endpoints": {"us-east-1": {"hostname": host, "protocols": ["http"], "signatureVersions": ["s3v4"]}}}}
            }]
        });
        std::fs::write(dir.join("endpoints.json"), endpoints.to_string()).expect("write endpoints.json");
        std::fs::write(dir.join("aws-config"), "[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n")
            .expect("write aws config");
        Zfs3backup { venv, dir }
    }

    fn run(&self, site: &Site, args: &[&str]) -> Output {
        let mut c = Command::new(self.venv.join("bin/zfs3backup"));
        c.args(["--s3-prefix", &site.ctx.prefix, "--dataset", &site.data, "--snapshot-prefix", "s"]).args(args);
        let path = format!(
            "{}:{}:{}",
            self.dir.join("bin").display(),
            self.venv.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.env_clear()
            .env("PATH", path)
            .env("HOME", &self.dir)
            .env("SKIP_CONFIG_FILE", "true")
            .env("BUCKET", &site.ctx.bench.bucket)
            .env("S3_STORAGE_CLASS", "STANDARD")
            .env("CONCURRENCY", "2")
            .env("MAX_RETRIES", "1")
            .env("PYTHONWARNINGS", "ignore")
            .env("AWS_ACCESS_KEY_ID", &site.ctx.bench.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &site.ctx.bench.secret_key)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_S3_US_EAST_1_REGIONAL_ENDPOINT", "regional")
            .env("AWS_DATA_PATH", &self.dir)
            .env("AWS_CONFIG_FILE", self.dir.join("aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.dir.join("none"))
            .env("AWS_METADATA_SERVICE_NUM_ATTEMPTS", "0");
        run(c, None, TIMEOUT)
    }
}

fn by_snapshot<'a>(lines: &'a [Value], snap: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["snapshot"] == snap).collect()
}

#[test]
fn zsnap_and_zfs3backup_on_one_prefix_agree_and_warn_about_twice_stored_snapshots() {
    let site = Site::new("z3", "z3");
    let z3 = Zfs3backup::new(&site);
    let mut trees = Vec::new();
    for (i, snap) in ["s1", "s2", "s3"].iter().enumerate() {
        site.write(&format!("f{i}"), &data(80_000, 90 + i as u64));
        site.snapshot(snap);
        trees.push(tree(&site.dir()));
    }
    // zfs3backup as its README says: a full of @s1, then incrementals of what follows up to
    // @s2 (its newest snapshot is always the target, so @s3 waits).
    let out = z3.run(&site, &["backup", "--full", "--snapshot", "s1"]).success();
    assert!(out.text().contains(&format!("backed up {}@s1", site.data)), "{}", out.stderr);
    let out = z3.run(&site, &["backup", "--snapshot", "s2"]).success();
    assert!(out.text().contains(&format!("backed up {}@s2", site.data)), "{}", out.stderr);
    let keys = site.keys();
    assert_eq!(keys, [format!("{}@s1", site.data), format!("{}@s2", site.data)], "zfs3backup's own layout");

    // list and status agree: legacy, no guid (zfs3backup records none); status adds the
    // local snapshot's guid as local_guid.
    let list = site.run("zsnap-plan", &["list"]).success().json_lines();
    let status = site.run("zsnap-plan", &["status"]).success().json_lines();
    for (n, snap) in ["s1", "s2"].iter().enumerate() {
        let (l, s) = (&list[n], by_snapshot(&status, snap)[0]);
        assert_eq!(
            (l["legacy"].as_bool(), &l["guid"], l["compressor"].as_str()),
            (Some(true), &Value::Null, Some("gzip")),
            "{l}"
        );
        assert_eq!((s["legacy"].as_bool(), &s["guid"]), (Some(true), &l["guid"]), "status agrees with list: {s}");
        assert_eq!(s["local_guid"], site.pool.guid(&format!("{}@{snap}", site.data)), "{s}");
        assert_eq!(l["restorable"], true, "{l}");
    }
    let table = site.run("zsnap-plan", &["--format", "table", "status"]).success().text();
    assert!(table.lines().any(|l| l.starts_with("s2 ") && l.contains("inc legacy")), "{table}");
    site.run("zsnap-health", &[]).success();

    // zsnap goes on from zfs3backup's @s2; then zfs3backup, which sees only its own keys,
    // stores @s3 again from the same parent.
    let sent = site.run("zsnap-backup", &[]).success().json_lines();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let out = z3.run(&site, &["backup"]).success();
    assert!(out.text().contains(&format!("backed up {}@s3", site.data)), "{}", out.stderr);
    let zsnap_key = site.keys().into_iter().find(|k| k.contains("/@s3/zsnap1,kind=inc")).expect("zsnap's @s3");
    assert!(zsnap_key.contains(",fromsnap=s2,"), "{zsnap_key}");
    let legacy_key = format!("{}@s3", site.data);
    assert!(site.keys().contains(&legacy_key), "{:?}", site.keys());

    // zsnap-health: a warning (exit 1) naming both keys and who wrote each.
    let warn = site.run("zsnap-health", &["--json"]);
    assert_eq!(warn.code(), 1, "{}", warn.stderr);
    let lines = warn.json_lines();
    let dup: Vec<&Value> = lines.iter().filter(|l| l["check"] == "duplicate").collect();
    assert_eq!(dup.len(), 1, "{lines:?}");
    assert_eq!((dup[0]["severity"].as_str(), dup[0]["subject"].as_str()), (Some("warning"), Some("@s3")));
    let message = dup[0]["message"].as_str().unwrap_or("");
    let p = &site.ctx.prefix;
    assert!(message.contains(&format!("by zfs3backup as {p}{legacy_key}")), "{message}");
    assert!(message.contains(&format!("by zsnap as {p}{zsnap_key}")), "{message}");
    assert!(message.contains("zfs3backup and zsnap both back up this prefix"), "{message}");

    // zsnap-status: the row names both copies, and --health exits with the warning.
    let status = site.run("zsnap-plan", &["status"]).success().json_lines();
    let s3 = by_snapshot(&status, "s3")[0];
    let dups: Vec<&str> =
        s3["duplicates"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    assert_eq!(dups.len(), 2, "{s3}");
    assert!(dups.contains(&site.url(&legacy_key).as_str()) && dups.contains(&site.url(&zsnap_key).as_str()), "{s3}");
    assert_eq!(s3["copies"], 2);
    assert!(s3["reason"].as_str().unwrap_or("").contains("stored 2 times from the same parent"), "{s3}");
    let with_health = site.run("zsnap-status", &["--json", "--health"]);
    assert_eq!(with_health.code(), 1, "{}", with_health.stderr);

    // Either way @s3 restores to its exact files: zfs3backup's @s1 and @s2, then a copy of @s3.
    let target = site.pool.ds("back");
    site.run("zsnap-restore", &["s3", "--target", &target]).success();
    assert_same(&tree(&site.mountpoint(&target)), &trees[2], "s3 through zfs3backup's chain");
}
