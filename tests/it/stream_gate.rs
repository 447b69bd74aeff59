//! The stream gate on real zfs-fuse streams and the real S3 bench: whole streams (full,
//! -i, -I, -R, -D) are stored and come back byte-identical, also compressed and restored
//! with zfs recv; cut, killed, corrupt, garbage and empty streams commit nothing, even
//! from a bare stdin pipe where end of input looks the same either way.

use crate::common::{self, *};
use std::process::Command;

/// `zfs send ARGS` into memory (zfs-fuse's streams are byte-identical on every run).
fn send(args: &str) -> Vec<u8> {
    let mut c = Command::new("bash");
    c.args(["-o", "pipefail", "-c", &format!("zfs send {args}")]);
    run(c, None, TIMEOUT).success().stdout
}

/// A dataset with three snapshots; returns the files as they were at @s2.
fn populate(pool: &Pool) -> (String, Vec<(String, Vec<u8>)>) {
    let data = pool.ds("data");
    pool.zfs(&["create", &data]).success();
    let dir = pool.mount.join("data");
    // Half noise, half text: big enough for several 5M parts, and compressible.
    let text: Vec<u8> = (0..).flat_map(|i: u32| format!("line {i} of a.bin\n").into_bytes()).take(3 * MIB).collect();
    std::fs::write(dir.join("a.bin"), [common::data(3 * MIB, 41), text].concat()).expect("write");
    std::fs::write(dir.join("b.txt"), b"first\n".repeat(1000)).expect("write");
    pool.zfs(&["snapshot", &format!("{data}@s1")]).success();
    std::fs::write(dir.join("c.bin"), common::data(MIB + 5, 42)).expect("write");
    std::fs::write(dir.join("b.txt"), b"second\n".repeat(1000)).expect("write");
    pool.zfs(&["snapshot", &format!("{data}@s2")]).success();
    let at_s2 = files_of(&dir);
    std::fs::write(dir.join("d.txt"), b"third\n").expect("write");
    pool.zfs(&["snapshot", &format!("{data}@s3")]).success();
    (data, at_s2)
}

/// Nothing under `key`, and no upload left in progress under the test's prefix.
fn nothing_stored(ctx: &Ctx, key: &str) {
    ctx.get(key, &[]).fails(66, "no such object");
    assert!(ctx.pending_uploads().is_empty(), "uploads left in progress after {key}");
}

#[test]
fn real_streams_pass_the_gate_and_come_back_identical() {
    let ctx = Ctx::new("gate-real");
    let pool = Pool::new(&ctx, "real");
    let (data, _) = populate(&pool);
    let (g1, g2, g3) =
        (pool.guid(&format!("{data}@s1")), pool.guid(&format!("{data}@s2")), pool.guid(&format!("{data}@s3")));
    for (key, args, kind, toguid, fromguid, subs) in [
        ("full", format!("{data}@s1"), "full", g1.clone(), "0".to_string(), 1),
        ("inc", format!("-i @s1 {data}@s2"), "incremental", g2.clone(), g1.clone(), 1),
        ("incI", format!("-I @s1 {data}@s3"), "compound", g3.clone(), g1.clone(), 2),
        ("R", format!("-R {data}@s3"), "compound", g3.clone(), "0".to_string(), 3),
        ("D", format!("-D {data}@s2"), "full", g2.clone(), "0".to_string(), 1),
    ] {
        let stream = send(&args);
        // -p 5M: the bigger streams go up as multipart uploads, the small ones as one PUT.
        let r = ctx.put(key, &stream, &["--zfs-stream", "-p", "5M"]).success().json();
        let s = &r["stream"];
        assert_eq!(s["kind"], kind, "{key}: {r}");
        assert_eq!(s["toguid"], toguid.as_str(), "{key}: {r}");
        assert_eq!(s["fromguid"], fromguid.as_str(), "{key}: {r}");
        assert_eq!(s["bytes"], stream.len() as u64, "{key}: {r}");
        assert_eq!(r["bytes"], stream.len() as u64, "{key}: {r}");
        assert_eq!(r["compressor"], "none", "{key}: {r}");
        assert_eq!(s["dedup"], key == "D", "{key}: {r}");
        if kind == "compound" {
            assert_eq!(s["substreams"].as_array().map(|a| a.len()), Some(subs), "{key}: {r}");
        }
        let back = ctx.get(key, &[]).success().stdout;
        assert!(back == stream, "{key}: the stream came back different");
        // And s3get's own gate agrees.
        let back = ctx.get(key, &["--zfs-stream", "--expect-guid", &toguid]).success().stdout;
        assert!(back == stream, "{key}: s3get --zfs-stream changed the bytes");
    }
    // From a live pipe too, with the snapshot named by guid.
    let out = sh(
        &ctx,
        &format!(
            "zfs send -i @s2 {data}@s3 | s3put --zfs-stream --expect-guid {g3} --expect-from {g2} {}",
            ctx.url("pipe")
        ),
    );
    assert_eq!(out.success().json()["stream"]["toname"], format!("{data}@s3"));
}

#[test]
fn compressed_backups_restore_with_zfs_recv() {
    let ctx = Ctx::new("gate-codecs");
    let pool = Pool::new(&ctx, "codec");
    let (data, at_s2) = populate(&pool);
    let full = send(&format!("{data}@s1"));
    for codec in ["zstd", "gzip", "lz4"] {
        let (k1, k2) = (format!("{codec}-s1"), format!("{codec}-s2"));
        let r = sh(
            &ctx,
            &format!("s3put --exec 'zfs send {data}@s1' --zfs-stream --compress {codec} -p 5M {}", ctx.url(&k1)),
        )
        .success()
        .json();
        assert_eq!(r["compressor"], codec, "{r}");
        assert_eq!(r["input_bytes"], full.len() as u64, "{r}");
        assert!(r["bytes"].as_u64().unwrap_or(u64::MAX) < full.len() as u64 * 3 / 4, "{codec} did not compress: {r}");
        sh(&ctx, &format!("zfs send -i @s1 {data}@s2 | s3put --zfs-stream -z {codec} {}", ctx.url(&k2))).success();

        // Decompressed it is the very same stream.
        let back = ctx.get(&k1, &["--decompress", codec]).success().stdout;
        assert!(back == full, "{codec}: decompressed stream differs");

        let target = pool.ds(&format!("restored-{codec}"));
        for k in [&k1, &k2] {
            sh(&ctx, &format!("s3get --decompress {codec} --zfs-stream {} | zfs recv {target}", ctx.url(k))).success();
        }
        let got = files_of(&pool.mount.join(format!("restored-{codec}")));
        assert!(got == at_s2, "{codec}: restored files differ from @s2");
    }
    // The command-line tools read our formats.
    for (codec, tool) in [("zstd", "zstd -dc"), ("gzip", "gzip -dc"), ("lz4", "lz4 -dc")] {
        let have = sh(&ctx, &format!("command -v {}", tool.split(' ').next().unwrap_or(tool)));
        if have.code() != 0 {
            continue;
        }
        let out = sh(&ctx, &format!("s3get {} | {tool}", ctx.url(&format!("{codec}-s1")))).success();
        assert!(out.stdout == full, "{tool} read something else");
    }
}

#[test]
fn cut_killed_corrupt_garbage_and_empty_streams_commit_nothing() {
    let ctx = Ctx::new("gate-bad");
    let pool = Pool::new(&ctx, "bad");
    let (data, _) = populate(&pool);
    let stream = send(&format!("{data}@s1"));
    let len = stream.len();
    assert!(len > 6 * MIB, "stream of {len} bytes");

    // `head` exits 0: without the gate, this cut stream would be stored as a backup.
    let out = sh_with(
        &ctx,
        &[],
        &format!("zfs send {data}@s1 | head -c 5500000 | s3put --zfs-stream -p 5M {}", ctx.url("head")),
    );
    // zfs send may say something about its broken pipe first; our line is the last.
    out.fails_last(67, "s3put", "stream cut after 5500000 bytes (no END record)");
    nothing_stored(&ctx, "head");

    // Cut anywhere: inside the first record, in the middle, just before and inside END.
    for (key, at) in [("cut100", 100), ("cut-mid", len / 2), ("cut-noend", len - 312), ("cut-1", len - 1)] {
        ctx.put(key, &stream[..at], &["--zfs-stream", "-p", "5M"]).fails(67, &format!("stream cut after {at} bytes"));
        nothing_stored(&ctx, key);
    }

    // zfs send killed with SIGKILL while s3put reads what it sent so far.
    let script = format!(
        "set -u; exec 3>&2 2>/dev/null; fifo=$(mktemp -u); mkfifo \"$fifo\"; zfs send {data}@s1 > \"$fifo\" & zpid=$!; \
         {{ head -c 3000000; kill -9 $zpid; }} < \"$fifo\" | s3put --zfs-stream -p 5M {} 2>&3; rc=$?; rm -f \"$fifo\"; exit $rc",
        ctx.url("killed")
    );
    // bash's own "Killed" notice goes to /dev/null; s3put's stderr is kept (fd 3).
    sh_with(&ctx, &[], &script).fails(67, "stream cut after 3000000 bytes");
    nothing_stored(&ctx, "killed");

    // One flipped bit deep in the data: only the END checksum can tell.
    let mut flipped = stream.clone();
    flipped[len / 2] ^= 0x04;
    let out = ctx.put("flipped", &flipped, &["--zfs-stream", "-p", "5M"]);
    out.fails(65, &format!("END checksum mismatch for {data}@s1 at byte {}", len - 312));
    nothing_stored(&ctx, "flipped");

    ctx.put("garbage", &common::data(3 * MIB, 5), &["--zfs-stream"])
        .fails(65, "not a zfs send stream (bad magic at byte 0)");
    nothing_stored(&ctx, "garbage");
    ctx.put("empty", b"", &["--zfs-stream"]).fails(67, "empty stream");
    nothing_stored(&ctx, "empty");
    let trailing = [stream.clone(), b"x".to_vec()].concat();
    ctx.put("trailing", &trailing, &["--zfs-stream", "-z", "zstd"]).fails(65, "data after the final END record");
    nothing_stored(&ctx, "trailing");

    // The same with compression in between: nothing of it is stored either.
    ctx.put("cut-zstd", &stream[..len / 2], &["--zfs-stream", "-z", "zstd", "-p", "5M"]).fails(67, "stream cut");
    nothing_stored(&ctx, "cut-zstd");

    // s3get --zfs-stream finds a corrupt object stored without the gate.
    ctx.put("stored-flipped", &flipped, &[]).success();
    let out = ctx.get("stored-flipped", &["--zfs-stream"]);
    let out = out.fails(65, "END checksum mismatch");
    assert!(out.stdout.len() < len, "nothing after the bad END may be written");
    ctx.put("stored-cut", &stream[..len - 400], &[]).success();
    ctx.get("stored-cut", &["--zfs-stream"]).fails(67, "stream cut");
    ctx.get("stored-cut", &["--decompress", "zstd"]).fails(65, "zstd data is corrupt or cut");
}

#[test]
fn expectations_filters_and_the_zsnap_key_rule() {
    let ctx = Ctx::new("gate-rules");
    let pool = Pool::new(&ctx, "rules");
    let (data, _) = populate(&pool);
    let (g1, g2) = (pool.guid(&format!("{data}@s1")), pool.guid(&format!("{data}@s2")));
    let inc = send(&format!("-i @s1 {data}@s2"));

    // The wrong snapshot is refused at its BEGIN record.
    let out = ctx.put("wrong", &inc, &["--zfs-stream", "--expect-guid", &g1]);
    out.fails(65, &format!("stream is {data}@s2 (guid {g2}), expected guid {g1}"));
    nothing_stored(&ctx, "wrong");
    ctx.put("notfull", &inc, &["--zfs-stream", "--expect-from", "0"]).fails(65, "expected a full stream");
    nothing_stored(&ctx, "notfull");
    ctx.put("right", &inc, &["--zfs-stream", "--expect-guid", &g2, "--expect-from", &g1]).success();
    ctx.get("right", &["--zfs-stream", "--expect-guid", &g1]).fails(65, "expected guid");
    ctx.put("noflag", &inc, &["--expect-guid", &g2]).fails(64, "need --zfs-stream");

    // A custom compressor through --filter, read back with the in-process decoder.
    let full = send(&format!("{data}@s1"));
    let r = ctx.put("filtered", &full, &["--zfs-stream", "--filter", "gzip -1", "-p", "5M"]).success().json();
    assert_eq!((r["compressor"].as_str(), r["filter"].as_str()), (Some("filter"), Some("gzip -1")), "{r}");
    assert!(r["bytes"].as_u64().unwrap_or(u64::MAX) < full.len() as u64, "{r}");
    let back = ctx.get("filtered", &["--decompress", "gzip", "--zfs-stream"]).success().stdout;
    assert!(back == full, "gzip -1 round trip changed the stream");

    // A failing filter, and one that stops reading early, commit nothing.
    ctx.put("filter-false", &full, &["--zfs-stream", "--filter", "cat >/dev/null; false"])
        .fails(67, "filter `cat >/dev/null; false` exited with status 1");
    nothing_stored(&ctx, "filter-false");
    ctx.put("filter-early", &full, &["--zfs-stream", "--filter", "head -c 1000", "-p", "5M"])
        .fails(67, "stopped reading its input before the end");
    nothing_stored(&ctx, "filter-early");
    // A failing filter is caught without the gate too.
    ctx.put("filter-fails", &full, &["--filter", "gzip -1; exit 3"]).fails(67, "exited with status 3");
    nothing_stored(&ctx, "filter-fails");

    // zsnap backup keys are never written from a bare pipe.
    let key = format!("{data}/@s2/zsnap1,kind=inc,guid={g2},from={g1},fromsnap=s1,time=1,z=none");
    let out = ctx.put(&key, &inc, &[]);
    out.fails(64, "refusing to store a zsnap backup key from a bare pipe: a cut stream could not be detected");
    ctx.get(&key, &[]).fails(66, "no such object");
    ctx.put(&key, &inc, &["--zfs-stream", "--expect-guid", &g2, "--expect-from", &g1]).success();
    assert!(ctx.get(&key, &[]).success().stdout == inc);
    // The key's guids are checked against the stream without any --expect flag.
    let liar = format!("{data}/@s1/zsnap1,kind=full,guid={g1},time=1,z=none");
    ctx.put(&liar, &inc, &["--zfs-stream"]).fails(65, &format!("stream is {data}@s2 (guid {g2}), expected guid {g1}"));
    ctx.get(&liar, &[]).fails(66, "no such object");
    let full = format!("{data}/@s2/zsnap1,kind=full,guid={g2},time=1,z=none");
    ctx.put(&full, &inc, &["--zfs-stream"]).fails(65, "expected a full stream");
    ctx.get(&full, &[]).fails(66, "no such object");
    assert!(ctx.pending_uploads().is_empty());
}
