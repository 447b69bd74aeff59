//! Real zfs send/recv through s3put and s3get on a file-backed zfs-fuse pool: a full
//! and an incremental backup restored into a new dataset with identical files, and real
//! `zfs send` failures (missing snapshot, cut stream) committing nothing.

use crate::common::{self, *};

#[test]
fn full_and_incremental_round_trip_through_s3() {
    let ctx = Ctx::new("zfs-roundtrip");
    let pool = Pool::new(&ctx, "rt");
    let data = pool.ds("data");
    pool.zfs(&["create", &data]).success();
    let dir = pool.mount.join("data");
    std::fs::write(dir.join("a.bin"), common::data(3 * MIB, 31)).expect("write");
    std::fs::write(dir.join("b.txt"), b"first snapshot\n").expect("write");
    pool.zfs(&["snapshot", &format!("{data}@s1")]).success();
    std::fs::write(dir.join("c.bin"), common::data(2 * MIB + 17, 32)).expect("write");
    std::fs::write(dir.join("b.txt"), b"changed in s2\n").expect("write");
    pool.zfs(&["snapshot", &format!("{data}@s2")]).success();
    let expected = files_of(&dir);

    let full = sh(&ctx, &format!("zfs send {data}@s1 | s3put -p 5M {}", ctx.url("data@s1"))).success().json();
    assert!(full["bytes"].as_u64().unwrap_or(0) > 3 * MIB as u64, "{full}");
    // The incremental goes through --exec, so a failed zfs send would commit nothing.
    let inc = sh(&ctx, &format!("s3put --exec 'zfs send -i @s1 {data}@s2' {}", ctx.url("data@s2"))).success().json();
    assert!(inc["bytes"].as_u64().unwrap_or(0) > 2 * MIB as u64, "{inc}");

    let restored = pool.ds("restored");
    sh(&ctx, &format!("s3get {} | zfs recv {restored}", ctx.url("data@s1"))).success();
    sh(&ctx, &format!("s3get -c 8 -p 1M {} | zfs recv {restored}", ctx.url("data@s2"))).success();
    let got = files_of(&pool.mount.join("restored"));
    assert_eq!(got.len(), expected.len());
    for ((n1, d1), (n2, d2)) in got.iter().zip(&expected) {
        assert_eq!(n1, n2);
        assert!(d1 == d2, "{n1} differs after restore");
    }
    let snaps = pool.zfs(&["list", "-H", "-t", "snapshot", "-o", "name", "-r", &restored]).success();
    let names = String::from_utf8_lossy(&snaps.stdout).to_string();
    assert!(names.contains("restored@s1") && names.contains("restored@s2"), "{names}");
}

#[test]
fn failed_or_cut_zfs_send_commits_nothing() {
    let ctx = Ctx::new("zfs-cut");
    let pool = Pool::new(&ctx, "cut");
    let data = pool.ds("data");
    pool.zfs(&["create", &data]).success();
    std::fs::write(pool.mount.join("data/a.bin"), common::data(6 * MIB, 33)).expect("write");
    pool.zfs(&["snapshot", &format!("{data}@s1")]).success();

    // A snapshot that does not exist: zfs send fails at once.
    let out = sh(&ctx, &format!("s3put --exec 'zfs send {data}@nope' {}", ctx.url("nope")));
    let out = out.fails_last(67, "s3put", "does not exist");
    assert!(out.stderr.contains("nothing was committed"), "{}", out.stderr);
    ctx.get("nope", &[]).fails(66, "no such object");

    // The stream cut after 1 MB: zfs send dies of SIGPIPE, pipefail reports it.
    let out = sh(&ctx, &format!("s3put -p 5M --exec 'zfs send {data}@s1 | head -c 1000000' {}", ctx.url("cut")));
    out.fails_last(67, "s3put", "nothing was committed");
    ctx.get("cut", &[]).fails(66, "no such object");
    assert!(ctx.pending_uploads().is_empty());
}
