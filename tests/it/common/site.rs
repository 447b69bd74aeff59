//! A dataset on its own pool with the scripts pointed at a private corner of a bucket: the
//! harness for tests that run zsnap-backup, -restore, -prune and friends end to end. Its
//! environment can be overridden (another key, bucket or endpoint) to play another client.

use super::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Site {
    pub ctx: Ctx,
    pub pool: Pool,
    pub data: String,
    pub config: PathBuf,
    pub locks: PathBuf,
    /// Set after the bench's settings: another client's key, bucket or endpoint.
    pub env: Vec<(String, String)>,
}

impl Site {
    pub fn new(name: &str, tag: &str) -> Site {
        let ctx = Ctx::new(name);
        let pool = Pool::new(&ctx, tag);
        Site::on(ctx, pool)
    }

    /// A site on `pool` whose bucket is `ctx`'s (another server's, e.g. a test's own cluster).
    pub fn on(ctx: Ctx, pool: Pool) -> Site {
        let data = pool.ds("data");
        pool.zfs(&["create", &data]).success();
        let config = ctx.bench.work.join(format!("{}.conf", pool.name));
        std::fs::write(&config, "").expect("write config");
        let locks = ctx.bench.work.join(format!("{}-locks", pool.name));
        Site { ctx, pool, data, config, locks, env: Vec::new() }
    }

    /// Play another client: its own key (and, with `set`, bucket or endpoint).
    pub fn set(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    pub fn bucket(&self) -> String {
        self.env.iter().find(|(k, _)| k == "ZSNAP_BUCKET").map_or(self.ctx.bench.bucket.clone(), |(_, v)| v.clone())
    }

    /// `s3://BUCKET/PREFIX` of this site.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{}{key}", self.bucket(), self.ctx.prefix)
    }

    pub fn dir(&self) -> PathBuf {
        self.pool.mount.join("data")
    }

    pub fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.dir().join(name), bytes).unwrap_or_else(|e| panic!("write {name}: {e}"));
    }

    pub fn snapshot(&self, snap: &str) {
        self.pool.zfs(&["snapshot", &format!("{}@{snap}", self.data)]).success();
    }

    /// A script or binary with the bench's S3 settings, the built binaries and scripts on
    /// PATH, and this site's dataset, prefix, config, lock directory and overrides.
    pub fn cmd(&self, prog: &str, args: &[&str]) -> Command {
        let script = repo_path("scripts").join(prog);
        let mut c = if script.exists() { Command::new(script) } else { Command::new(bin_path(prog)) };
        c.args(args);
        for (k, v) in self.ctx.cmd("s3put").get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        let bins = bin_path("s3put").parent().expect("bin dir").display().to_string();
        let scripts = repo_path("scripts").display().to_string();
        c.env("PATH", format!("{bins}:{scripts}:{}", std::env::var("PATH").unwrap_or_default()))
            .env("ZSNAP_BUCKET", &self.ctx.bench.bucket)
            .env("ZSNAP_S3_PREFIX", &self.ctx.prefix)
            .env("ZSNAP_DATASET", &self.data)
            .env("ZSNAP_CONFIG", &self.config)
            .env("ZSNAP_LOCK_DIR", &self.locks);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, prog: &str, args: &[&str]) -> Output {
        run(self.cmd(prog, args), None, TIMEOUT)
    }

    /// Like [`run`], with `input` on stdin.
    pub fn run_with(&self, prog: &str, args: &[&str], input: &[u8]) -> Output {
        run(self.cmd(prog, args), Some(input), TIMEOUT)
    }

    pub fn destroy(&self, ds: &str) {
        let mut c = Command::new(repo_path("bench/zfs"));
        c.args(["destroy", ds]);
        run(c, None, TIMEOUT).success();
    }

    pub fn exists(&self, ds: &str) -> bool {
        self.pool.zfs(&["list", "-H", "-o", "name", ds]).code() == 0
    }

    pub fn snapshots_of(&self, ds: &str) -> Vec<String> {
        let out = self.pool.zfs(&["list", "-H", "-t", "snapshot", "-o", "name", "-r", ds]).success();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{ds}@")).map(str::to_string))
            .collect()
    }

    /// Every object key under this site's prefix, through a peer client (rclone, with the
    /// bench's Garage key), not our code.
    pub fn keys(&self) -> Vec<String> {
        let mut c = rclone(&self.ctx);
        c.args(["lsf", "-R", "--files-only", &format!("t:{}/{}", self.bucket(), self.ctx.prefix)]);
        let out = run(c, None, TIMEOUT).success();
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
    }

    pub fn delete_key(&self, key: &str) {
        let mut c = rclone(&self.ctx);
        c.args(["deletefile", &format!("t:{}/{}{key}", self.bucket(), self.ctx.prefix)]);
        run(c, None, TIMEOUT).success();
    }

    /// Flip one byte in the middle of the stored object holding `@snap` (re-uploaded whole,
    /// so S3's checksums match the bad bytes): only the stream's own checks can catch it.
    /// Returns the object's key under the prefix.
    pub fn corrupt(&self, snap: &str) -> String {
        let key = self.keys().into_iter().find(|k| k.contains(&format!("/@{snap}/"))).expect("the object");
        let mut c = rclone(&self.ctx);
        c.args(["cat", &format!("t:{}/{}{key}", self.ctx.bench.bucket, self.ctx.prefix)]);
        let mut bytes = run(c, None, TIMEOUT).success().stdout;
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        let bad = self.ctx.bench.work.join(format!("{}-bad-{snap}", self.pool.name));
        std::fs::write(&bad, &bytes).expect("write corrupt copy");
        let mut c = self.ctx.cmd("s3put");
        c.args(["--exec", &format!("cat {}", bad.display())]).arg(self.ctx.url(&key));
        run(c, None, TIMEOUT).success();
        key
    }

    /// Five snapshots backed up in three chains, [s1] [s2 s3] [s4 s5] (s2 and s4 are fulls),
    /// their data from `seed` on; returns each one's tree.
    pub fn three_chains(&self, seed: u64) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
        let mut trees = BTreeMap::new();
        for (k, snap) in ["s1", "s2", "s3", "s4", "s5"].iter().enumerate() {
            self.write(&format!("{snap}.bin"), &data(MIB + k * 1000, seed + k as u64));
            self.write("common.txt", snap.as_bytes());
            self.snapshot(snap);
            trees.insert(snap.to_string(), tree(&self.dir()));
            let full = matches!(*snap, "s2" | "s4");
            self.run("zsnap-backup", if full { &["--full"] } else { &[] }).success();
        }
        trees
    }

    /// A stand-in compressor, `[compressor:hold]` in this site's config (the config is
    /// replaced): it passes the first `first` bytes on, runs the shell command `then`, waits
    /// (60 s at most) for the file whose path it returns to exist, then passes the rest on.
    /// The bytes are the stream's every time; DECOMPRESS is `cat`.
    pub fn hold_compressor(&self, first: u64, then: &str) -> PathBuf {
        let go = self.ctx.bench.work.join(format!("{}-go", self.pool.name));
        let hold = self.ctx.bench.work.join(format!("{}-hold.sh", self.pool.name));
        let script = format!(
            "#!/bin/bash\nhead -c {first}\n{then}\nfor _ in $(seq 1200); do [[ -e {go} ]] && break; sleep 0.05; done\ncat\n",
            go = go.display()
        );
        std::fs::write(&hold, script).expect("write hold");
        let conf = format!("[compressor:hold]\nCOMPRESS=bash {}\nDECOMPRESS=cat\n", hold.display());
        std::fs::write(&self.config, conf).expect("config");
        go
    }

    /// Where a dataset of this pool is mounted.
    pub fn mountpoint(&self, ds: &str) -> PathBuf {
        let rel = ds.strip_prefix(&format!("{}/", self.pool.name)).unwrap_or(ds);
        self.pool.mount.join(rel)
    }
}

/// File name → contents, for exact comparisons of restored trees.
pub fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files_of(dir).into_iter().collect()
}

pub fn assert_same(got: &BTreeMap<String, Vec<u8>>, want: &BTreeMap<String, Vec<u8>>, what: &str) {
    let g: Vec<_> = got.keys().collect();
    let w: Vec<_> = want.keys().collect();
    assert_eq!(g, w, "{what}: different files");
    for (name, bytes) in want {
        assert!(got[name] == *bytes, "{what}: {name} differs");
    }
}
