//! zsnap-plan against a real zfs-fuse pool and Garage: what it plans for a fresh dataset, an
//! up-to-date one, new snapshots, a missing middle incremental, a foreign object, a
//! zfs3backup bucket, a wrong prefix and missing datasets. Objects are uploaded with plain
//! `s3put --exec 'zfs send …'` under the keys zsnap-plan chose, and the restore chains it
//! prints are received with plain `s3get | zfs recv`, so the plans are checked end to end.

use crate::common::{self, *};
use serde_json::Value;
use std::process::Command;

/// Write a file named for the snapshot into `ds` (of `pool`), then snapshot it.
fn snapshot(pool: &Pool, ds: &str, snap: &str, file_seed: u64) {
    let rel = ds.strip_prefix(&format!("{}/", pool.name)).expect("dataset of this pool");
    let path = pool.mount.join(rel).join(format!("{snap}.bin"));
    std::fs::write(&path, common::data(MIB / 2, file_seed)).expect("write");
    pool.zfs(&["snapshot", &format!("{ds}@{snap}")]).success();
}

fn q(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// zsnap-plan on `dataset`, in this test's prefix, recording no compression (the objects
/// are uploaded uncompressed by plain s3put). Later flags in `args` override these.
fn plan(ctx: &Ctx, dataset: &str, args: &[&str]) -> Output {
    let conf = ctx.bench.work.join(format!("plan-{}.conf", std::process::id()));
    std::fs::write(&conf, "[main]\n").expect("write config");
    let mut c = ctx.cmd("zsnap-plan");
    for var in ["ZSNAP_DATASET", "ZSNAP_BUCKET", "ZSNAP_S3_PREFIX", "ZSNAP_SNAPSHOT_PREFIX", "ZSNAP_COMPRESSOR"] {
        c.env_remove(var);
    }
    c.env("ZSNAP_CONFIG", &conf);
    c.args(["--bucket", &ctx.bench.bucket, "--s3-prefix", &ctx.prefix, "--dataset", dataset, "--compressor", "none"]);
    c.args(args);
    run(c, None, TIMEOUT)
}

/// Whether this tree's s3put and s3get have the stream gate and codecs the printed
/// commands use (`--zfs-stream`, `--decompress`). Then the tests run the exact commands
/// zsnap-plan prints; otherwise plain equivalents of them.
fn gate_built() -> bool {
    static GATE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *GATE.get_or_init(|| {
        let help = |bin: &str| {
            let mut c = Command::new(bin_path(bin));
            c.arg("--help");
            String::from_utf8_lossy(&run(c, None, TIMEOUT).success().stdout).into_owned()
        };
        help("s3put").contains("--zfs-stream") && help("s3get").contains("--decompress")
    })
}

/// Upload what a `send` line asks for: its exact command when s3put has the stream gate,
/// else plain `s3put --exec 'zfs send …'` under the same key.
fn upload(ctx: &Ctx, send: &Value) {
    assert_eq!(send["action"], "send", "{send}");
    if gate_built() {
        sh(ctx, send["command"].as_str().expect("command")).success();
        return;
    }
    let (ds, snap) = (send["dataset"].as_str().unwrap_or(""), send["snapshot"].as_str().unwrap_or(""));
    let zfs_send = match send["from"].as_str() {
        Some(from) => format!("zfs send -i @{from} {ds}@{snap}"),
        None => format!("zfs send {ds}@{snap}"),
    };
    let key = send["key"].as_str().expect("key");
    sh(ctx, &format!("s3put --exec {} {}", q(&zfs_send), q(key))).success();
}

/// Receive one `recv` step: its exact command when s3get has --decompress and the stream
/// check, else plain `s3get KEY [| DECOMPRESS] | zfs recv TARGET`.
fn receive(ctx: &Ctx, step: &Value, decompress: &str) {
    assert_eq!(step["action"], "recv", "{step}");
    if gate_built() {
        sh(ctx, step["command"].as_str().expect("command")).success();
        return;
    }
    let key = step["key"].as_str().expect("key");
    let target = step["target"].as_str().expect("target");
    sh(ctx, &format!("s3get {} {decompress}| zfs recv {}", q(key), q(target))).success();
}

/// Start a multipart upload and leave it in progress.
fn start_upload(ctx: &Ctx, key: &str) {
    let rt = zsnap::commands::runtime().expect("runtime");
    rt.block_on(async {
        let s3 = zsnap::cli::s3_flags::S3Args {
            endpoint: Some(ctx.bench.endpoint.clone()),
            region: Some("us-east-1".into()),
            ..Default::default()
        };
        let client = zsnap::s3::client::connect(&s3).await;
        client.create_multipart_upload().bucket(&ctx.bench.bucket).key(key).send().await.expect("create upload");
    });
}

fn actions(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let mut s = format!("{} {}", l["action"].as_str().unwrap_or("?"), l["snapshot"].as_str().unwrap_or(""));
            if let Some(k) = l["kind"].as_str() {
                s.push_str(&format!(" {k}"));
            }
            if let Some(f) = l["from"].as_str() {
                s.push_str(&format!(" from {f}"));
            }
            s.trim_end().to_string()
        })
        .collect()
}

fn files_of(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).expect("read file")))
        .collect();
    v.sort();
    v
}

#[test]
fn backup_list_restore_status_and_a_missing_middle() {
    let ctx = Ctx::new("plan-main");
    let pool = Pool::new(&ctx, "m");
    let data = pool.ds("data");
    pool.zfs(&["create", &data]).success();
    snapshot(&pool, &data, "s1", 1);
    let g1 = pool.guid(&format!("{data}@s1"));

    // A fresh dataset: one full.
    let lines = plan(&ctx, &data, &["backup"]).success().json_lines();
    assert_eq!(actions(&lines), vec!["send s1 full"]);
    let l = &lines[0];
    assert_eq!(l["guid"], Value::String(g1.clone()), "guids are decimal strings");
    let key = l["key"].as_str().unwrap_or("");
    let want = format!("{}{data}/@s1/zsnap1,kind=full,guid={g1},time=", ctx.prefix_url());
    assert!(key.starts_with(&want) && key.ends_with(",z=none"), "{key}");
    let cmd = l["command"].as_str().unwrap_or("");
    assert!(
        cmd.starts_with(&format!(
            "s3put --zfs-stream --resume --expect-guid {g1} --expect-from 0 --exec 'zfs send {data}@s1' --compress none"
        )),
        "{cmd}"
    );
    assert!(cmd.contains("--expected-size "), "{cmd}");
    assert!(!l["reason"].as_str().unwrap_or("").is_empty());
    let out = plan(&ctx, &data, &["--format", "sh", "backup"]).success();
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{cmd}\n"), "sh prints exactly the commands");
    upload(&ctx, l);

    // Up to date.
    let lines = plan(&ctx, &data, &["backup"]).success().json_lines();
    assert_eq!(actions(&lines), vec!["skip s1", "none"]);
    assert!(plan(&ctx, &data, &["--format", "sh", "backup"]).success().stdout.is_empty());

    // Two new snapshots: one incremental each, in order.
    snapshot(&pool, &data, "s2", 2);
    snapshot(&pool, &data, "s3", 3);
    let lines = plan(&ctx, &data, &["backup"]).success().json_lines();
    assert_eq!(actions(&lines), vec!["skip s1", "send s2 inc from s1", "send s3 inc from s2"]);
    assert_eq!(lines[1]["from_guid"], Value::String(g1.clone()));
    assert!(lines[1]["command"].as_str().unwrap_or("").contains(&format!("--expect-from {g1}")));
    upload(&ctx, &lines[1]);
    upload(&ctx, &lines[2]);

    let list = plan(&ctx, &data, &["list"]).success().json_lines();
    let got: Vec<(u64, String, String, bool)> = list
        .iter()
        .map(|e| {
            (
                e["n"].as_u64().unwrap_or(0),
                e["snapshot"].as_str().unwrap_or("").to_string(),
                e["kind"].as_str().unwrap_or("").to_string(),
                e["restorable"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "s1".into(), "full".into(), true),
            (2, "s2".into(), "inc".into(), true),
            (3, "s3".into(), "inc".into(), true)
        ]
    );
    assert!(list.iter().all(|e| e["bytes"].as_u64().unwrap_or(0) > 0));

    // Restore: the whole chain into a new dataset; receive only its first step for now.
    let target = pool.ds("restored");
    let steps = plan(&ctx, &data, &["restore", "latest", "--target", &target]).success().json_lines();
    assert_eq!(actions(&steps), vec!["recv s1 full", "recv s2 inc", "recv s3 inc"]);
    assert_eq!((steps[2]["step"].as_u64(), steps[2]["of"].as_u64()), (Some(3), Some(3)));
    let c = steps[0]["command"].as_str().unwrap_or("");
    assert!(c.starts_with(&format!("s3get --decompress none --zfs-stream --expect-guid {g1} ")), "{c}");
    assert!(c.ends_with(&format!("| zfs recv {target}")), "{c}");
    receive(&ctx, &steps[0], "");

    // The target has part of the chain: only the rest.
    let steps = plan(&ctx, &data, &["restore", "s3", "--target", &target]).success().json_lines();
    assert_eq!(actions(&steps), vec!["recv s2 inc", "recv s3 inc"]);
    assert!(steps[0]["reason"].as_str().unwrap_or("").contains("already has @s1"), "{}", steps[0]);
    for s in &steps {
        receive(&ctx, s, "");
    }
    assert_eq!(files_of(&pool.mount.join("restored")), files_of(&pool.mount.join("data")));
    let lines = plan(&ctx, &data, &["restore", "3", "--target", &target]).success().json_lines();
    assert_eq!(actions(&lines), vec!["none"]);

    // A target that shares nothing with the chain is refused.
    let unrelated = pool.ds("unrelated");
    pool.zfs(&["create", &unrelated]).success();
    snapshot(&pool, &unrelated, "x", 9);
    plan(&ctx, &data, &["restore", "s3", "--target", &unrelated]).fails(64, "shares no snapshot");

    // A missing middle incremental: s5 is in S3, s4 is not.
    snapshot(&pool, &data, "s4", 4);
    snapshot(&pool, &data, "s5", 5);
    let g4 = pool.guid(&format!("{data}@s4"));
    let lines = plan(&ctx, &data, &["backup"]).success().json_lines();
    assert_eq!(actions(&lines), vec!["skip s1", "skip s2", "skip s3", "send s4 inc from s3", "send s5 inc from s4"]);
    upload(&ctx, &lines[4]);
    plan(&ctx, &data, &["restore", "s5", "--target", &pool.ds("new")])
        .fails(66, &format!("parent @s4 (guid {g4}) of @s5 is not in S3"));
    // s3 is still the base; s5 goes again after s4.
    let lines = plan(&ctx, &data, &["backup"]).success().json_lines();
    assert_eq!(actions(&lines), vec!["skip s1", "skip s2", "skip s3", "send s4 inc from s3", "send s5 inc from s4"]);
    assert!(lines[4]["reason"].as_str().unwrap_or("").contains("again"), "{}", lines[4]);

    // A foreign object under the dataset's prefix.
    ctx.put(&format!("{data}/README"), b"not a backup\n", &[]).success();
    let rows = plan(&ctx, &data, &["status"]).success().json_lines();
    let summary = rows.last().expect("summary line");
    assert_eq!(summary["summary"], true);
    assert_eq!(
        (summary["local"].as_u64(), summary["backups"].as_u64(), summary["broken"].as_u64()),
        (Some(5), Some(4), Some(1)),
        "{summary}"
    );
    assert_eq!(summary["foreign"].as_u64(), Some(1), "{summary}");
    let row = |name: &str| rows.iter().find(|r| r["snapshot"] == name).cloned().unwrap_or(Value::Null);
    assert_eq!((row("s4")["local"].as_bool(), row("s4")["remote"].as_str()), (Some(true), Some("absent")));
    assert_eq!(row("s5")["restorable"], false);
    assert!(row("s5")["broken"].as_str().unwrap_or("").contains("@s4"), "{}", row("s5"));

    // An upload left in progress (as after kill -9): shown as uncommitted, never used.
    snapshot(&pool, &data, "s6", 6);
    let (g5, g6) = (pool.guid(&format!("{data}@s5")), pool.guid(&format!("{data}@s6")));
    let key = format!("{}{data}/@s6/zsnap1,kind=inc,guid={g6},from={g5},fromsnap=s5,time=1,z=none", ctx.prefix);
    start_upload(&ctx, &key);
    let rows = plan(&ctx, &data, &["status"]).success().json_lines();
    let s6 = rows.iter().find(|r| r["snapshot"] == "s6").cloned().unwrap_or(Value::Null);
    assert_eq!((s6["local"].as_bool(), s6["remote"].as_str()), (Some(true), Some("uncommitted")), "{s6}");
    assert_eq!(rows.last().map(|s| s["uncommitted"].clone()), Some(Value::from(1)));
    let lines = plan(&ctx, &data, &["backup"]).success().json_lines();
    assert_eq!(actions(&lines).last().map(String::as_str), Some("send s6 inc from s5"));
    let mut c = ctx.cmd("s3put");
    c.args(["--abort-uploads", &ctx.prefix_url()]);
    run(c, None, TIMEOUT).success();

    let table = plan(&ctx, &data, &["--format", "table", "status"]).success();
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(table.contains("1 foreign objects") && table.contains("SNAPSHOT"), "{table}");
}

#[test]
fn zfs3backup_objects_are_read_by_name() {
    let ctx = Ctx::new("plan-legacy");
    let pool = Pool::new(&ctx, "l");
    let ds = pool.ds("old");
    pool.zfs(&["create", &ds]).success();
    snapshot(&pool, &ds, "d1", 11);
    snapshot(&pool, &ds, "d2", 12);
    // As zfs3backup wrote them: <prefix><dataset>@<snapshot>, isfull=true on the full and only
    // parent=pool/fs@snap on the incremental, pigz-compressed.
    let url = |snap: &str| ctx.url(&format!("{ds}@{snap}"));
    sh(
        &ctx,
        &format!(
            "s3put --meta isfull=true --meta compressor=pigz1 --exec {} {}",
            q(&format!("zfs send {ds}@d1 | gzip -1")),
            q(&url("d1"))
        ),
    )
    .success();
    sh(
        &ctx,
        &format!(
            "s3put --meta parent={ds}@d1 --meta compressor=pigz1 --exec {} {}",
            q(&format!("zfs send -i @d1 {ds}@d2 | gzip -1")),
            q(&url("d2"))
        ),
    )
    .success();

    let list = plan(&ctx, &ds, &["list"]).success().json_lines();
    assert_eq!(list.len(), 2, "{list:?}");
    for e in &list {
        assert_eq!((e["legacy"].as_bool(), e["compressor"].as_str()), (Some(true), Some("gzip")), "{e}");
        assert_eq!(e["guid"], Value::Null);
        assert_eq!(e["restorable"], true);
    }
    assert_eq!(list[1]["from"], "d1");

    // A zsnap incremental on top of the zfs3backup objects.
    snapshot(&pool, &ds, "d3", 13);
    let lines = plan(&ctx, &ds, &["backup"]).success().json_lines();
    assert_eq!(actions(&lines), vec!["skip d1", "skip d2", "send d3 inc from d2"]);
    assert!(lines[1]["reason"].as_str().unwrap_or("").contains("zfs3backup"), "{}", lines[1]);
    let g2 = pool.guid(&format!("{ds}@d2"));
    assert!(lines[2]["command"].as_str().unwrap_or("").contains(&format!("--expect-from {g2}")));

    // Restore by name, decompressed by the recorded compressor, without a guid check.
    let target = pool.ds("back");
    let steps = plan(&ctx, &ds, &["restore", "d2", "--target", &target]).success().json_lines();
    assert_eq!(actions(&steps), vec!["recv d1 full", "recv d2 inc"]);
    for s in &steps {
        let c = s["command"].as_str().unwrap_or("");
        assert!(c.starts_with("s3get --decompress gzip --zfs-stream s3://") && !c.contains("--expect-guid"), "{c}");
        receive(&ctx, s, "| gzip -d ");
    }
    let got = pool.zfs(&["list", "-H", "-t", "snapshot", "-o", "name", "-r", &target]).success();
    let got = String::from_utf8_lossy(&got.stdout).to_string();
    assert!(got.contains(&format!("{target}@d1")) && got.contains(&format!("{target}@d2")), "{got}");
}

#[test]
fn missing_things_and_wrong_settings() {
    let ctx = Ctx::new("plan-errors");
    let pool = Pool::new(&ctx, "e");
    let data = pool.ds("data");
    let empty = pool.ds("empty");
    pool.zfs(&["create", &data]).success();
    pool.zfs(&["create", &empty]).success();
    snapshot(&pool, &data, "s1", 21);

    let nope = pool.ds("nope");
    plan(&ctx, &nope, &["backup"]).fails(66, &format!("dataset {nope} does not exist"));
    plan(&ctx, &empty, &["backup"]).fails(66, &format!("no snapshots of {empty} match prefix ''"));
    plan(&ctx, &data, &["--snapshot-prefix", "daily-", "backup"])
        .fails(66, &format!("no snapshots of {data} match prefix 'daily-'"));
    plan(&ctx, &data, &["backup", "--snapshot", "s9"]).fails(66, &format!("{data}@s9"));

    let lines = plan(&ctx, &data, &["backup"]).success().json_lines();
    upload(&ctx, &lines[0]);
    plan(&ctx, &data, &["restore", "nope"]).fails(66, &format!("no backup of {data}@nope"));
    plan(&ctx, &data, &["restore", "2"]).fails(66, "list shows 1..1");

    // A wrong prefix sees nothing: a full again, and nothing to restore.
    let other = format!("{}other/", ctx.prefix);
    let lines = plan(&ctx, &data, &["--s3-prefix", &other, "backup"]).success().json_lines();
    assert_eq!(actions(&lines), vec!["send s1 full"]);
    plan(&ctx, &data, &["--s3-prefix", &other, "restore", "latest"]).fails(66, "no backups of");
    assert!(plan(&ctx, &data, &["--s3-prefix", &other, "list"]).success().stdout.is_empty());

    // Save: one object to a file through FILE.part.
    let s = plan(&ctx, &data, &["save", "1", "/tmp/x y.zfs"]).success().json_lines();
    let c = s[0]["command"].as_str().unwrap_or("");
    assert!(c.contains("> '/tmp/x y.zfs.part' && mv -fT '/tmp/x y.zfs.part' '/tmp/x y.zfs' || "), "{c}");
    assert!(c.ends_with("rm -f '/tmp/x y.zfs.part'; exit $rc; }"), "the part file goes on failure: {c}");

    // Settings.
    plan(&ctx, &data, &["--config", "/nonexistent/zsnap.conf", "list"]).fails(66, "/nonexistent/zsnap.conf");
    let bad = ctx.bench.work.join(format!("bad-{}.conf", std::process::id()));
    std::fs::write(&bad, "[main]\nBUKET=x\n").expect("write");
    plan(&ctx, &data, &["--config", bad.to_str().unwrap_or(""), "list"]).fails(64, ":2: unknown key BUKET");
    // A retention value no prune could use is refused by config, where every script starts.
    std::fs::write(&bad, "[main]\nKEEP_DAILY=many\n").expect("write");
    plan(&ctx, &data, &["--config", bad.to_str().unwrap_or(""), "config"]).fails(64, "KEEP_DAILY");
    let out = plan(&ctx, &data, &["--format", "sh", "config"]).success();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains(&format!("ZSNAP_DATASET='{data}'\n")), "{text}");
    assert!(text.contains(&format!("ZSNAP_S3_URL='s3://{}/{}'\n", ctx.bench.bucket, ctx.prefix)), "{text}");
    plan(&ctx, &data, &["--compressor", "bzip2", "list"]).fails(64, "flag --compressor");
}

#[test]
fn a_catalog_longer_than_one_listing_page() {
    let ctx = Ctx::new("plan-pages");
    // No local dataset needed for list and status: this one exists only in S3.
    let ds = format!("zsnapnopool{}/data", std::process::id());
    let n: u64 = 1_050;
    let keys: Vec<String> = (1..=n)
        .map(|g| match g {
            1 => format!("{}{ds}/@s{g:04}/zsnap1,kind=full,guid={g},time={g},z=none", ctx.prefix),
            _ => format!(
                "{}{ds}/@s{g:04}/zsnap1,kind=inc,guid={g},from={},fromsnap=s{:04},time={g},z=none",
                ctx.prefix,
                g - 1,
                g - 1
            ),
        })
        .collect();
    let rt = zsnap::commands::runtime().expect("runtime");
    rt.block_on(async {
        use futures_util::StreamExt;
        let s3 = zsnap::cli::s3_flags::S3Args {
            endpoint: Some(ctx.bench.endpoint.clone()),
            region: Some("us-east-1".into()),
            ..Default::default()
        };
        let client = zsnap::s3::client::connect(&s3).await;
        let puts = futures_util::stream::iter(keys.iter().map(|k| {
            let client = client.clone();
            let bucket = ctx.bench.bucket.clone();
            async move { client.put_object().bucket(bucket).key(k).body(Vec::new().into()).send().await }
        }))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
        assert!(puts.iter().all(|r| r.is_ok()), "a put failed");
    });
    let list = plan(&ctx, &ds, &["list"]).success().json_lines();
    assert_eq!(list.len(), n as usize);
    assert_eq!(list[n as usize - 1]["n"], n);
    assert_eq!(list[n as usize - 1]["snapshot"], format!("s{n:04}"));
    assert!(list.iter().all(|e| e["restorable"] == true));
    // A target in a pool that does not exist is refused before anything is read from S3...
    plan(&ctx, &ds, &["restore", "latest", "--target", &format!("{ds}x")]).fails(66, "does not exist");
    // ...one whose pool exists gets the whole chain.
    let pool = Pool::new(&ctx, "pg");
    let steps = plan(&ctx, &ds, &["restore", "latest", "--target", &pool.ds("x")]).success().json_lines();
    assert_eq!(steps.len(), n as usize, "the whole chain, full first");
    assert_eq!(steps[0]["kind"], "full");
    // status compares with the local dataset, so it must exist (list above did not need it).
    plan(&ctx, &ds, &["status"]).fails(66, &format!("dataset {ds} does not exist"));
}
