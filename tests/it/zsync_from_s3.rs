//! zsync-ssh --from-s3: a replica on the second host (bench/host2) seeded and caught up from
//! the chain zsnap-backup stored, each object through s3get's gate into the replica's zfs
//! recv; afterwards plain zsync-ssh continues from the common snapshot by guid. A corrupt
//! object fails with s3get's 65 and leaves the replica at its last whole snapshot.

use crate::common::site::Site;
use crate::common::*;
use crate::zsync_ssh::env;
use std::process::Command;

static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A site that backs up to S3 and a replica's name on the second host (also used by
/// tests/it/replica.rs).
pub(crate) struct Seeded {
    pub(crate) site: Site,
    pub(crate) dst: String,
    pub(crate) ssh_config: String,
}

impl Seeded {
    pub(crate) fn new(name: &str, tag: &str) -> Seeded {
        let site = Site::new(name, tag);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dst = format!("{}/{tag}{}s{n}", env("ZSNAP_HOST2_POOL"), std::process::id());
        Seeded { site, dst, ssh_config: env("ZSNAP_HOST2_SSH_CONFIG") }
    }

    /// A snapshot with a file of its own, backed up.
    pub(crate) fn backed_up(&self, snap: &str, len: usize, seed: u64) {
        self.site.write(&format!("{snap}.bin"), &data(len, seed));
        self.site.snapshot(snap);
        self.site.run("zsnap-backup", &[]).success();
    }

    pub(crate) fn zsync(&self, extra: &[&str]) -> Output {
        let mut args = vec!["-F", &self.ssh_config];
        args.extend_from_slice(extra);
        let target = format!("{}:{}", env("ZSNAP_HOST2"), self.dst);
        args.push(&self.site.data);
        args.push(&target);
        self.site.run("zsync-ssh", &args)
    }

    pub(crate) fn remote(&self, args: &[&str]) -> Output {
        let mut c = Command::new(repo_path("bench/host2"));
        c.args(["exec", &env("ZSNAP_HOST2_DIR")]).args(args);
        run(c, None, TIMEOUT)
    }

    /// Every dataset, snapshot and (on OpenZFS) partial receive under the replica's pool
    /// that belongs to this replica, as `zfs list -t all` names them.
    pub(crate) fn remote_all(&self) -> Vec<String> {
        let pool = env("ZSNAP_HOST2_POOL");
        let out = self.remote(&["zfs", "list", "-H", "-t", "all", "-o", "name", "-r", &pool]).success();
        let mine = |l: &&str| {
            l.strip_prefix(self.dst.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with(['@', '/', '%']))
        };
        out.text().lines().filter(mine).map(str::to_string).collect()
    }

    pub(crate) fn remote_snapshots(&self) -> Vec<String> {
        let prefix = format!("{}@", self.dst);
        self.remote_all().iter().filter_map(|l| l.strip_prefix(&prefix).map(str::to_string)).collect()
    }

    pub(crate) fn remote_guid(&self, snap: &str) -> String {
        let out = self.remote(&["zfs", "get", "-H", "-p", "-o", "value", "guid", &format!("{}@{snap}", self.dst)]);
        out.success().text().trim().to_string()
    }

    /// The replica's files equal the source's.
    pub(crate) fn assert_same_files(&self) {
        let dir = format!("{}/mnt/{}", env("ZSNAP_HOST2_DIR"), self.dst.split_once('/').expect("pool/ds").1);
        for (name, bytes) in files_of(&self.site.dir()) {
            let got = self.remote(&["cat", &format!("{dir}/{name}")]).success().stdout;
            assert!(got == bytes, "{name} differs on the replica");
        }
    }
}

#[test]
fn seed_from_s3_then_zsync_continues_by_guid_and_s3_catches_up() {
    let s = Seeded::new("fs3-seed", "fs3a");
    s.backed_up("s1", MIB, 1);
    s.backed_up("s2", MIB / 2, 2);
    s.backed_up("s3", MIB / 3, 3);

    let dry = s.zsync(&["--from-s3", "--dry-run"]).success();
    let lines = dry.json_lines();
    assert_eq!(lines.len(), 4, "a line per object, then the summary: {}", dry.text());
    for (l, snap) in lines.iter().zip(["s1", "s2", "s3"]) {
        assert_eq!((l["action"].as_str(), l["snapshot"].as_str()), (Some("recv"), Some(snap)), "{l}");
        let cmd = l["command"].as_str().expect("command");
        assert!(cmd.contains("s3get --decompress zstd --zfs-stream --expect-guid "), "{cmd}");
        assert!(cmd.ends_with(&format!("'zfs recv {}'", s.dst)), "{cmd}");
        assert!(l["key"].as_str().unwrap_or("").contains(&format!("/@{snap}/zsnap1,")), "{l}");
    }
    assert_eq!(lines[3]["action"], "dry-run");
    assert!(s.remote_all().is_empty(), "a dry run receives nothing");

    let j = s.zsync(&["--from-s3"]).success().json();
    assert_eq!((j["action"].as_str(), j["sent"].clone()), (Some("sent"), serde_json::json!(["s1", "s2", "s3"])), "{j}");
    assert!(j["common"].is_null(), "a new replica: {j}");
    assert_eq!(s.remote_snapshots(), ["s1", "s2", "s3"]);
    for snap in ["s1", "s2", "s3"] {
        assert_eq!(s.remote_guid(snap), s.site.pool.guid(&format!("{}@{snap}", s.site.data)), "{snap} by guid");
    }
    s.assert_same_files();
    assert_eq!(s.zsync(&["--from-s3"]).success().json()["action"], "none", "up to date with S3");

    // A newer snapshot that is not in S3: plain zsync-ssh sends only it, from s3 by guid.
    s.site.write("s4.bin", &data(MIB / 4, 4));
    s.site.snapshot("s4");
    let j = s.zsync(&[]).success().json();
    assert_eq!(
        (j["sent"].clone(), j["common"]["snapshot"].clone()),
        (serde_json::json!(["s4"]), serde_json::json!("s3")),
        "{j}"
    );
    assert!(j["bytes"].as_u64().unwrap_or(u64::MAX) < MIB as u64 / 2, "an incremental, not a full: {j}");
    assert_eq!(s.remote_snapshots(), ["s1", "s2", "s3", "s4"]);

    // S3 catches up: s4 (which the replica has) and s5 are backed up; only s5 is received.
    s.site.run("zsnap-backup", &[]).success();
    s.backed_up("s5", MIB / 5, 5);
    let j = s.zsync(&["--from-s3"]).success().json();
    assert_eq!(j["sent"], serde_json::json!(["s5"]), "{j}");
    let s4 = s.site.pool.guid(&format!("{}@s4", s.site.data));
    assert_eq!(
        (j["common"]["snapshot"].as_str(), j["common"]["guid"].as_str()),
        (Some("s4"), Some(s4.as_str())),
        "{j}"
    );
    assert_eq!(s.remote_snapshots(), ["s1", "s2", "s3", "s4", "s5"]);
    s.assert_same_files();
}

#[test]
fn a_corrupt_object_fails_with_65_and_leaves_no_partial_snapshot() {
    let s = Seeded::new("fs3-bad", "fs3b");
    s.backed_up("s1", MIB, 11);
    s.backed_up("s2", 2 * MIB, 12);
    s.backed_up("s3", MIB, 13);
    s.site.corrupt("s2");

    let out = s.zsync(&["--from-s3"]);
    let out = out.fails_last(65, "zsync-ssh", "s3get exited 65");
    let j = out.json();
    assert_eq!((j["action"].as_str(), j["sent"].clone()), (Some("failed"), serde_json::json!(["s1"])), "{j}");
    let error = j["error"].as_str().unwrap_or("");
    assert!(error.contains("receiving @s2 from S3") && error.contains("/@s2/zsnap1,"), "names the object: {j}");
    // s1 is whole; nothing of s2 (no snapshot, no clone, no partial dataset) is left.
    assert_eq!(s.remote_all(), [s.dst.clone(), format!("{}@s1", s.dst)]);
    let token = s.remote(&["zfs", "get", "-H", "-o", "value", "receive_resume_token", &s.dst]);
    assert!(token.code() != 0 || matches!(token.text().trim(), "-" | ""), "no partial receive state: {}", token.text());

    // A corrupt full on a new replica: the replica is not even created.
    let t = Seeded::new("fs3-badfull", "fs3c");
    t.backed_up("s1", MIB, 14);
    t.site.corrupt("s1");
    t.zsync(&["--from-s3"]).fails_last(65, "zsync-ssh", "s3get exited 65");
    assert!(t.remote_all().is_empty(), "{:?}", t.remote_all());
}

#[test]
fn from_s3_refusals() {
    let s = Seeded::new("fs3-no", "fs3d");
    s.site.write("a", &data(1000, 21));
    s.site.snapshot("s1");
    s.zsync(&["--from-s3"]).fails(66, "no backups of");
    s.zsync(&["--from-s3", "--rollback"]).fails(64, "--rollback is about zfs send");
    s.site.run("zsnap-backup", &[]).success();
    // A replica that shares nothing with the chain is left alone.
    s.remote(&["zfs", "create", &s.dst]).success();
    s.remote(&["zfs", "snapshot", &format!("{}@theirs", s.dst)]).success();
    s.zsync(&["--from-s3"]).fails(79, "refusing to seed");
    assert_eq!(s.remote_snapshots(), ["theirs"]);
}
