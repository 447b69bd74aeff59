//! The OpenZFS 2.x guest that `bench/openzfs up` boots (`tests/run --openzfs`): its `zfs`
//! and `zpool` run over ssh through the wrappers in `ZSNAP_OPENZFS_BIN`, so the binaries
//! and scripts run unchanged on this host with that directory first on PATH. A missing
//! guest is a failure, never a skip.

use super::*;
use std::collections::BTreeMap;
use std::process::Command;

/// What `bench/openzfs up` exported.
pub struct Guest {
    /// Directory holding `zfs`, `zpool` and `guest` (runs any command in the guest).
    pub bin: String,
    pub ssh_config: String,
    pub host: String,
    pub pool: String,
    pub pool2: String,
}

fn need(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run these tests with `bash tests/run --openzfs` (it boots the OpenZFS guest)")
    })
}

impl Guest {
    pub fn get() -> Guest {
        Guest {
            bin: need("ZSNAP_OPENZFS_BIN"),
            ssh_config: need("ZSNAP_OPENZFS_SSH_CONFIG"),
            host: need("ZSNAP_OPENZFS_HOST"),
            pool: need("ZSNAP_OPENZFS_POOL"),
            pool2: need("ZSNAP_OPENZFS_POOL2"),
        }
    }

    /// `PATH` with the guest's zfs first, then our binaries and scripts.
    pub fn path(&self) -> String {
        let bins = bin_path("s3put").parent().expect("bin dir").display().to_string();
        let scripts = repo_path("scripts").display().to_string();
        format!("{}:{bins}:{scripts}:{}", self.bin, std::env::var("PATH").unwrap_or_default())
    }

    /// Run a shell script in the guest (bash, with pipefail).
    pub fn sh(&self, script: &str) -> Output {
        let mut c = Command::new(format!("{}/guest", self.bin));
        c.args(["bash", "-o", "pipefail", "-c", script]);
        run(c, None, TIMEOUT)
    }

    /// Like [`sh`], with `input` on stdin.
    pub fn sh_with(&self, script: &str, input: &[u8]) -> Output {
        let mut c = Command::new(format!("{}/guest", self.bin));
        c.args(["bash", "-o", "pipefail", "-c", script]);
        run(c, Some(input), TIMEOUT)
    }

    pub fn zfs(&self, args: &[&str]) -> Output {
        let mut c = Command::new(format!("{}/zfs", self.bin));
        c.args(args);
        run(c, None, TIMEOUT)
    }

    /// One property's value (`zfs get -H -p -o value`).
    pub fn prop(&self, name: &str, ds: &str) -> String {
        let out = self.zfs(&["get", "-H", "-p", "-o", "value", name, ds]).success();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn exists(&self, ds: &str) -> bool {
        self.zfs(&["list", "-H", "-o", "name", ds]).code() == 0
    }

    /// File name → sha256 of every file under a mounted dataset (recursively).
    pub fn sums(&self, ds: &str) -> BTreeMap<String, String> {
        let mnt = self.prop("mountpoint", ds);
        let out = self.sh(&format!("cd {mnt} && find . -type f -print0 | sort -z | xargs -0 -r sha256sum")).success();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once("  ").map(|(sum, name)| (name.to_string(), sum.to_string())))
            .collect()
    }
}

/// A dataset of the guest's pool with the scripts pointed at a private corner of the
/// bucket, like [`Site`] on zfs-fuse.
pub struct GuestSite {
    pub ctx: Ctx,
    pub guest: Guest,
    pub data: String,
    pub config: PathBuf,
    pub locks: PathBuf,
    pub env: Vec<(String, String)>,
    /// Whether dropping the site destroys the dataset (not for a [`GuestSite::shadow`]).
    owns: bool,
    /// The listing of its datasets in [`test_state`] (the owner's).
    noted: Option<u64>,
}

impl GuestSite {
    /// `create` is the rest of a `zfs create` line for the dataset (options), e.g.
    /// `-o recordsize=1M`.
    pub fn new(name: &str, create: &str) -> GuestSite {
        let ctx = Ctx::new(name);
        let guest = Guest::get();
        let data = format!("{}/{name}{}", guest.pool, std::process::id());
        guest.sh(&format!("zfs destroy -r {data} 2>/dev/null; zfs create {create} {data}")).success();
        let config = ctx.bench.work.join(format!("{name}.conf"));
        std::fs::write(&config, "").expect("write config");
        let locks = ctx.bench.work.join(format!("{name}-locks"));
        // Both pools, but only this test's datasets: the site's, its restores (DATA…) and
        // replicas named like it on the second pool.
        let (zfs, pools) = (format!("{}/zfs", guest.bin), [guest.pool.clone(), guest.pool2.clone()]);
        let mine = format!("/{}", data.rsplit('/').next().unwrap_or(&data));
        let title = format!("zfs list -t all -r {} {} (in the guest), lines with {mine}", pools[0], pools[1]);
        let noted = note(title, Some(mine), move || {
            let mut c = Command::new(&zfs);
            c.args(["list", "-t", "all", "-r"]).args(&pools);
            c
        });
        GuestSite { ctx, guest, data, config, locks, env: Vec::new(), owns: true, noted: Some(noted) }
    }

    /// Another client of the same dataset: its own corner of the bucket (prefix), config
    /// and locks; the dataset stays `other`'s.
    pub fn shadow(other: &GuestSite, name: &str) -> GuestSite {
        let ctx = Ctx::new(name);
        let config = ctx.bench.work.join(format!("{name}.conf"));
        std::fs::write(&config, "").expect("write config");
        let locks = ctx.bench.work.join(format!("{name}-locks"));
        let env = other.env.clone();
        GuestSite { ctx, guest: Guest::get(), data: other.data.clone(), config, locks, env, owns: false, noted: None }
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    pub fn snapshot(&self, snap: &str) {
        self.guest.zfs(&["snapshot", &format!("{}@{snap}", self.data)]).success();
    }

    pub fn guid(&self, snap: &str) -> String {
        self.guest.prop("guid", &format!("{}@{snap}", self.data))
    }

    /// The environment every command of this site gets: the bench's S3 settings, the
    /// guest's zfs first on PATH, this site's dataset, prefix, config and lock directory.
    fn envs(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .ctx
            .cmd("s3put")
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_string_lossy().into_owned(), v?.to_string_lossy().into_owned())))
            .collect();
        v.extend([
            ("PATH".to_string(), self.guest.path()),
            ("ZSNAP_BUCKET".to_string(), self.ctx.bench.bucket.clone()),
            ("ZSNAP_S3_PREFIX".to_string(), self.ctx.prefix.clone()),
            ("ZSNAP_DATASET".to_string(), self.data.clone()),
            ("ZSNAP_CONFIG".to_string(), self.config.display().to_string()),
            ("ZSNAP_LOCK_DIR".to_string(), self.locks.display().to_string()),
        ]);
        v.extend(self.env.iter().cloned());
        v
    }

    pub fn cmd(&self, prog: &str, args: &[&str]) -> Command {
        let script = repo_path("scripts").join(prog);
        let mut c = if script.exists() { Command::new(script) } else { Command::new(bin_path(prog)) };
        c.args(args).envs(self.envs());
        c
    }

    pub fn run(&self, prog: &str, args: &[&str]) -> Output {
        run(self.cmd(prog, args), None, TIMEOUT)
    }

    /// A shell pipeline on this host with the same environment (the guest's zfs on PATH).
    pub fn host_sh(&self, script: &str) -> Output {
        let mut c = Command::new("bash");
        c.args(["-o", "pipefail", "-c", script]).envs(self.envs());
        run(c, None, TIMEOUT)
    }
}

impl Drop for GuestSite {
    fn drop(&mut self) {
        if let Some(id) = self.noted {
            forget(id);
        }
        if !self.owns {
            return;
        }
        let _ = self.guest.sh(&format!("zfs destroy -r {} 2>/dev/null || true", self.data));
    }
}
