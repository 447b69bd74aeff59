//! The toolkit on a real OpenZFS 2.3 (the guest `tests/run --openzfs` boots), through the
//! unchanged scripts and binaries with the guest's zfs first on PATH: encrypted datasets
//! sent raw with the key unloaded and restored encrypted, send options, a zvol, a chain
//! continued from a bookmark after its snapshot was destroyed, zfs send -nP sizes, and a
//! cut zsync-ssh transfer resumed from receive_resume_token, and zsnap-backup --replica
//! feeding S3 and a replica one raw stream. Every test's name starts with
//! openzfs_ (plain `tests/run` skips them by that prefix).

use crate::common::*;
use std::collections::BTreeMap;

const KEY_FILE: &str = "/root/zsnap-test.key";
const MARKER: &str = "ZSNAP-PLAINTEXT-MARKER-0123456789";

fn lines(out: &Output) -> Vec<serde_json::Value> {
    out.json_lines()
}

/// Keys (relative to the site's prefix) of the site's committed objects, oldest first.
fn keys_of(site: &GuestSite) -> Vec<String> {
    let out = site.run("zsnap-plan", &["list"]).success();
    lines(&out).iter().map(|l| l["key"].as_str().unwrap_or("").to_string()).collect()
}

/// Write `bytes` random bytes (seeded in the guest: /dev/urandom) and a text file.
fn write_files(site: &GuestSite, tag: &str, random: usize) {
    let mnt = site.guest.prop("mountpoint", &site.data);
    site.guest
        .sh(&format!(
            "head -c {random} /dev/urandom > {mnt}/{tag}.bin && seq 1 5000 | sed 's/^/{MARKER} {tag} /' > {mnt}/{tag}.txt \
             && sync"
        ))
        .success();
}

fn encrypted_site(name: &str) -> GuestSite {
    Guest::get().sh(&format!("printf %s zsnap-test-passphrase > {KEY_FILE}")).success();
    GuestSite::new(name, &format!("-o encryption=aes-256-gcm -o keyformat=passphrase -o keylocation=file://{KEY_FILE}"))
}

/// How often `MARKER` occurs in the decompressed stream of an object.
fn marker_count(site: &GuestSite, url: &str) -> usize {
    let out = site.host_sh(&format!("s3get --decompress zstd '{url}' | grep -a -c '{MARKER}' || true")).success();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

#[test]
fn openzfs_encrypted_dataset_is_sent_raw_and_restores_encrypted() {
    let site = encrypted_site("ozenc");
    let g = &site.guest;
    write_files(&site, "one", 100_000);
    site.snapshot("s1");
    let out = site.run("zsnap-backup", &[]).success();
    let sent = lines(&out);
    assert_eq!(sent.len(), 1, "one full\n{}", out.stderr);
    assert_eq!(sent[0]["stream"]["raw"], true, "{}", sent[0]);
    let keys = keys_of(&site);
    assert!(keys[0].ends_with(",send=w"), "the key records a raw send: {}", keys[0]);
    assert_eq!(marker_count(&site, &keys[0]), 0, "plaintext in the stored stream of a raw send");

    // The same snapshot sent with --decrypt-send under another prefix does carry the
    // plaintext: the check above can fail.
    let plain = GuestSite::shadow(&site, "ozencplain");
    let out = plain.run("zsnap-backup", &["--decrypt-send"]).success();
    assert!(out.stderr.contains("DECRYPTED"), "{}", out.stderr);
    let plain_keys = keys_of(&plain);
    assert!(!plain_keys[0].contains("send=w"), "{}", plain_keys[0]);
    assert!(marker_count(&plain, &plain_keys[0]) > 0, "a decrypted send carries the plaintext");

    // A second snapshot, then the key is unloaded (a locked backup host): the incremental
    // is sent raw all the same.
    write_files(&site, "two", 50_000);
    site.snapshot("s2");
    let want = g.sums(&site.data);
    g.sh(&format!("zfs unmount {0} && zfs unload-key {0}", site.data)).success();
    assert_eq!(g.prop("keystatus", &site.data), "unavailable");
    let out = site.run("zsnap-backup", &[]).success();
    let sent = lines(&out);
    assert_eq!(sent.len(), 1, "one incremental\n{}", out.stderr);
    assert_eq!(sent[0]["stream"]["kind"], "incremental", "{}", sent[0]);
    assert_eq!(sent[0]["stream"]["raw"], true, "{}", sent[0]);
    let keys = keys_of(&site);
    assert!(keys[1].contains(",kind=inc,") && keys[1].ends_with(",send=w"), "{}", keys[1]);
    assert_eq!(marker_count(&site, &keys[1]), 0);

    // status and list say raw; health --deep verifies raw streams like any other.
    let list = site.run("zsnap-plan", &["list"]).success();
    assert!(lines(&list).iter().all(|l| l["raw"] == true), "{}", list.text());
    let status = site.run("zsnap-plan", &["status", "--format", "table"]).success();
    assert!(status.text().contains("full raw") && status.text().contains("inc raw"), "{}", status.text());
    site.run("zsnap-health", &["--json", "--deep"]).success();

    // Restored: encrypted, locked, and the key opens it to the same files.
    let target = format!("{}r", site.data);
    let out = site.run("zsnap-restore", &["latest", "--target", &target]).success();
    assert!(out.stderr.contains(&format!("zfs load-key {target}")), "{}", out.stderr);
    assert_eq!(g.prop("encryption", &target), "aes-256-gcm");
    assert_eq!(g.prop("keystatus", &target), "unavailable");
    g.sh(&format!("zfs load-key -L file://{KEY_FILE} {target} && zfs mount {target}")).success();
    g.sh(&format!("zfs load-key {0} && zfs mount {0}", site.data)).success();
    assert_eq!(g.sums(&target), want, "restored files");
    assert_eq!(g.sums(&site.data), want);
    g.sh(&format!("zfs destroy -r {target}")).success();
}

#[test]
fn openzfs_send_options_are_passed_recorded_and_restore() {
    let mut site = GuestSite::new("ozopts", "-o recordsize=1M -o compression=lz4");
    site.set("ZSNAP_SEND_OPTIONS", "-L -c -e");
    write_files(&site, "one", 1_500_000);
    site.snapshot("s1");
    site.run("zsnap-backup", &[]).success();
    write_files(&site, "two", 300_000);
    site.snapshot("s2");
    let want = site.guest.sums(&site.data);
    let plan = site.run("zsnap-plan", &["backup"]).success();
    let send = lines(&plan).into_iter().find(|l| l["action"] == "send").expect("a send");
    assert_eq!(send["send_options"], "Lce", "{send}");
    assert_eq!(send["estimate_source"], "zfs send -nP", "{send}");
    assert!(send["command"].as_str().unwrap_or("").contains("zfs send -L -c -e -i @s1"), "{send}");
    site.run("zsnap-backup", &[]).success();
    let keys = keys_of(&site);
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.ends_with(",send=Lce")), "{keys:?}");
    site.run("zsnap-health", &["--json", "--deep"]).success();
    let target = format!("{}r", site.data);
    site.run("zsnap-restore", &["latest", "--target", &target]).success();
    assert_eq!(site.guest.sums(&target), want);
    site.guest.sh(&format!("zfs destroy -r {target}")).success();

    // Dropping -L under a chain made with it is what zfs recv refuses: a full instead.
    site.set("ZSNAP_SEND_OPTIONS", "-c");
    write_files(&site, "three", 10_000);
    site.snapshot("s3");
    let plan = site.run("zsnap-plan", &["backup"]).success();
    let send = lines(&plan).into_iter().find(|l| l["action"] == "send").expect("a send");
    assert_eq!(send["kind"], "full", "{send}");
    assert!(send["reason"].as_str().unwrap_or("").contains("-L"), "{send}");

    // Not allowed, and not known: one line each, nothing sent.
    site.run("zsnap-backup", &["--send-option", "-R"]).fails(64, "send option '-R' is not allowed");
    assert_eq!(keys_of(&site).len(), 2);
}

#[test]
fn openzfs_zvol_round_trips() {
    let g = Guest::get();
    let name = format!("{}/ozvol{}", g.pool, std::process::id());
    g.sh(&format!(
        "zfs destroy -r {name} 2>/dev/null; zfs create -V 8M -o volblocksize=16k {name} && udevadm settle && \
         head -c 3000000 /dev/urandom | dd of=/dev/zvol/{name} bs=64k conv=fsync status=none"
    ))
    .success();
    let mut site = GuestSite::new("ozvolsite", "");
    site.set("ZSNAP_DATASET", &name);
    site.guest.zfs(&["snapshot", &format!("{name}@v1")]).success();
    let out = site.run("zsnap-backup", &[]).success();
    assert_eq!(lines(&out).len(), 1, "{}", out.stderr);
    // Overwrite part of the volume: the next backup is an incremental of the blocks changed.
    g.sh(&format!("head -c 500000 /dev/urandom | dd of=/dev/zvol/{name} bs=64k seek=8 conv=fsync,notrunc status=none"))
        .success();
    site.guest.zfs(&["snapshot", &format!("{name}@v2")]).success();
    let out = site.run("zsnap-backup", &[]).success();
    let sent = lines(&out);
    assert_eq!((sent.len(), sent[0]["stream"]["kind"].as_str()), (1, Some("incremental")), "{}", out.stderr);
    site.run("zsnap-health", &["--json", "--deep"]).success();
    let target = format!("{name}r");
    site.run("zsnap-restore", &["latest", "--target", &target]).success();
    let sum = |ds: &str| {
        let out = g.sh(&format!("udevadm settle; sha256sum < /dev/zvol/{ds}")).success();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(sum(&target), sum(&name), "the restored volume's bytes");
    g.sh(&format!("zfs destroy -r {target}; zfs destroy -r {name}")).success();
}

#[test]
fn openzfs_incremental_from_a_bookmark_after_the_snapshot_is_destroyed() {
    let site = GuestSite::new("ozmark", "");
    let g = &site.guest;
    write_files(&site, "one", 200_000);
    site.snapshot("s1");
    let guid1 = site.guid("s1");
    site.run("zsnap-backup", &[]).success();
    // The committed snapshot was bookmarked, with its guid.
    assert_eq!(g.prop("guid", &format!("{}#s1", site.data)), guid1);
    let status = site.run("zsnap-plan", &["status"]).success();
    assert!(lines(&status).iter().any(|l| l["bookmark"] == "s1"), "{}", status.text());
    let list = site.run("zsnap-plan", &["list"]).success();
    assert_eq!(lines(&list)[0]["bookmark"], "s1", "{}", list.text());

    // Rotation destroys @s1; the chain goes on from #s1.
    g.zfs(&["destroy", &format!("{}@s1", site.data)]).success();
    write_files(&site, "two", 100_000);
    site.snapshot("s2");
    let want = g.sums(&site.data);
    let plan = site.run("zsnap-plan", &["backup"]).success();
    let send = lines(&plan).into_iter().find(|l| l["action"] == "send").expect("a send");
    assert_eq!((send["kind"].as_str(), send["from_bookmark"].as_bool()), (Some("inc"), Some(true)), "{send}");
    assert_eq!(send["from_guid"], guid1.as_str());
    let out = site.run("zsnap-backup", &[]).success();
    let sent = lines(&out);
    assert_eq!(sent[0]["stream"]["kind"], "incremental", "{}", out.stderr);
    let status = site.run("zsnap-plan", &["status", "--format", "table"]).success();
    assert!(status.text().contains("#s1"), "the remote-only @s1 shows its bookmark:\n{}", status.text());

    site.run("zsnap-health", &["--json", "--deep"]).success();
    let target = format!("{}r", site.data);
    site.run("zsnap-restore", &["latest", "--target", &target]).success();
    assert_eq!(g.sums(&target), want, "restored through the bookmark's chain");
    g.sh(&format!("zfs destroy -r {target}")).success();
}

#[test]
fn openzfs_cut_zsync_resumes_from_the_receive_token() {
    let site = GuestSite::new("ozsync", "");
    let g = &site.guest;
    write_files(&site, "one", 2_500_000);
    site.snapshot("s1");
    let dst = format!("{}/ozsync{}", g.pool2, std::process::id());
    g.sh(&format!("zfs destroy -r {dst} 2>/dev/null || true")).success();
    let full = {
        let out = g.zfs(&["send", "-nP", &format!("{}@s1", site.data)]).success();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines().find_map(|l| l.strip_prefix("size\t")).and_then(|v| v.trim().parse::<u64>().ok()).expect("size")
    };
    // An ssh in front of the real one that lets only the first 1 MB of the first receive's
    // stream through, as a dropped connection would.
    let dir = site.ctx.bench.work.join(format!("ozsync-ssh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let ssh = dir.join("ssh");
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/bash\nfor a in \"$@\"; do\n  if [[ $a == *'zfs recv'* && ! -e {d}/cut ]]; then\n    touch {d}/cut\n    \
             head -c 1000000 | /usr/bin/ssh \"$@\"\n    exit $?\n  fi\ndone\nexec /usr/bin/ssh \"$@\"\n",
            d = dir.display()
        ),
    )
    .expect("write ssh");
    std::process::Command::new("chmod").arg("+x").arg(&ssh).status().expect("chmod");
    let zsync = |extra: &[&str]| {
        let mut c = site.cmd("zsync-ssh", &["-F", &g.ssh_config]);
        c.args(extra).arg(&site.data).arg(format!("{}:{dst}", g.host));
        c.env("PATH", format!("{}:{}", dir.display(), g.path()));
        run(c, None, TIMEOUT)
    };
    let cut = zsync(&[]);
    assert_ne!(cut.code(), 0, "the cut transfer fails\n{}", cut.stderr);
    let token = g.prop("receive_resume_token", &dst);
    assert!(token.len() > 10, "a resumable receive left a token, got '{token}'\n{}", cut.stderr);

    let resumed = zsync(&[]).success();
    let summary = resumed.json_lines().pop().expect("summary");
    assert!(summary["sent"].as_array().is_some_and(|s| s.iter().any(|x| x == "(resumed)")), "{summary}");
    let bytes = summary["bytes"].as_u64().expect("bytes");
    assert!(bytes < full, "resumed with {bytes} bytes, a full stream is {full}");
    assert!(bytes > 0);
    assert_eq!(g.prop("receive_resume_token", &dst), "-");
    assert_eq!(g.sums(&dst), g.sums(&site.data), "the replica's files");
    let want: BTreeMap<String, String> = g.sums(&site.data);
    assert!(!want.is_empty());
    g.sh(&format!("zfs destroy -r {dst}")).success();
}

#[test]
fn openzfs_zsync_replicates_an_encrypted_dataset_raw_with_the_key_unloaded() {
    let site = encrypted_site("ozzenc");
    let g = &site.guest;
    write_files(&site, "one", 100_000);
    site.snapshot("s1");
    let want = g.sums(&site.data);
    g.sh(&format!("zfs unmount {0} && zfs unload-key {0}", site.data)).success();
    let dst = format!("{}/ozzenc{}", g.pool2, std::process::id());
    g.sh(&format!("zfs destroy -r {dst} 2>/dev/null || true")).success();
    let mut c = site.cmd("zsync-ssh", &["-F", &g.ssh_config]);
    c.arg(&site.data).arg(format!("{}:{dst}", g.host));
    let out = run(c, None, TIMEOUT).success();
    let summary = out.json_lines().pop().expect("summary");
    assert_eq!(summary["raw"], true, "{summary}");
    assert_eq!(g.prop("encryption", &dst), "aes-256-gcm", "the replica stays encrypted");
    assert_eq!(g.prop("keystatus", &dst), "unavailable");
    // The sent snapshot was bookmarked on the source.
    assert_eq!(g.prop("guid", &format!("{}#s1", site.data)), site.guid("s1"));
    g.sh(&format!("zfs load-key -L file://{KEY_FILE} {dst} && zfs mount {dst}")).success();
    assert_eq!(g.sums(&dst), want);
    g.sh(&format!("zfs destroy -r {dst}; zfs load-key {}", site.data)).success();
}

#[test]
fn openzfs_backup_with_a_replica_sends_an_encrypted_dataset_raw_to_both_sinks() {
    let site = encrypted_site("ozrep");
    let g = &site.guest;
    write_files(&site, "one", 100_000);
    site.snapshot("s1");
    g.sh(&format!("zfs unmount {0} && zfs unload-key {0}", site.data)).success();
    let dst = format!("{}/ozrep{}", g.pool2, std::process::id());
    g.sh(&format!("zfs destroy -r {dst} 2>/dev/null || true")).success();
    let target = format!("{}:{dst}", g.host);
    let backup = || site.run("zsnap-backup", &["--replica", &target, "--replica-ssh-config", &g.ssh_config]);

    let out = backup().success();
    let (replica, uploads): (Vec<_>, Vec<_>) = lines(&out).into_iter().partition(|l| l["sink"] == "replica");
    assert_eq!((uploads.len(), replica.len()), (1, 1), "{}", out.text());
    assert_eq!(uploads[0]["stream"]["raw"], true, "{}", uploads[0]);
    assert_eq!(replica[0]["action"], "sent", "{}", replica[0]);
    assert_eq!(replica[0]["bytes"], uploads[0]["input_bytes"], "the same stream to both sinks");
    // Neither sink holds plaintext: the bucket's object is the raw stream, and the replica is
    // encrypted with the source's key, which is loaded nowhere.
    assert_eq!(marker_count(&site, &keys_of(&site)[0]), 0);
    assert_eq!(g.prop("encryption", &dst), "aes-256-gcm", "the replica stays encrypted");
    assert_eq!(g.prop("keystatus", &dst), "unavailable");

    g.sh(&format!("zfs load-key {0} && zfs mount {0}", site.data)).success();
    write_files(&site, "two", 50_000);
    site.snapshot("s2");
    let want = g.sums(&site.data);
    g.sh(&format!("zfs unmount {0} && zfs unload-key {0}", site.data)).success();
    let out = backup().success();
    let replica: Vec<_> = lines(&out).into_iter().filter(|l| l["sink"] == "replica").collect();
    assert_eq!((replica.len(), replica[0]["action"].as_str()), (1, Some("sent")), "{}", out.text());
    assert_eq!(g.prop("guid", &format!("{dst}@s2")), site.guid("s2"), "the replica has s2 by guid");
    g.sh(&format!("zfs load-key -L file://{KEY_FILE} {dst} && zfs mount {dst}")).success();
    assert_eq!(g.sums(&dst), want);
    g.sh(&format!("zfs destroy -r {dst}; zfs load-key {}", site.data)).success();
}
