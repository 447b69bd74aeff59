//! Integration-test harness: runs the real binaries against the real bench that
//! `tests/run` starts (Garage on 127.0.0.1, zfs-fuse). A missing bench is a failure,
//! never a skip. Every command has a bounded timeout; a failed assertion prints the
//! command, its exit status, stdout and stderr, and then the test's state: `zfs list` of
//! its pools and the objects under its prefixes (see [`test_state`]). A test's prefix is
//! emptied when its [`Ctx`] is dropped.
#![allow(dead_code)]

pub mod fault_proxy;
pub mod guest;
pub mod site;
pub mod tls_front;
// Not every test file plays a site.
#[allow(unused_imports)]
pub use guest::*;
#[allow(unused_imports)]
pub use site::*;
#[allow(unused_imports)]
pub use tls_front::*;

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Default bound on any one command.
pub const TIMEOUT: Duration = Duration::from_secs(180);

/// What `tests/run` exported about the bench.
#[derive(Clone)]
pub struct Bench {
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub garage_config: String,
    pub work: PathBuf,
}

pub fn need(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests with `bash tests/run` (it starts Garage and zfs-fuse)")
    })
}

impl Bench {
    pub fn get() -> Bench {
        Bench {
            endpoint: need("ZSNAP_S3_ENDPOINT"),
            bucket: need("ZSNAP_TEST_BUCKET"),
            access_key: need("AWS_ACCESS_KEY_ID"),
            secret_key: need("AWS_SECRET_ACCESS_KEY"),
            garage_config: need("ZSNAP_GARAGE_CONFIG"),
            work: PathBuf::from(need("ZSNAP_TEST_WORK")),
        }
    }

    /// Run the `garage` CLI against the bench's server (key and bucket admin).
    pub fn garage(&self, args: &[&str]) -> Output {
        let mut c = Command::new(garage_bin());
        c.arg("-c").arg(&self.garage_config).args(args);
        run(c, None, TIMEOUT)
    }
}

pub fn garage_bin() -> String {
    std::env::var("ZSNAP_GARAGE").unwrap_or_else(|_| "garage".into())
}

/// A test's own corner of the bucket: `t/<name>-<pid>-<n>/`, listed in the test's failure
/// reports and emptied when dropped.
pub struct Ctx {
    pub bench: Bench,
    pub prefix: String,
    /// Its listing in [`test_state`].
    noted: u64,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Flags that keep one rclone call short when the server is slow or gone.
const RCLONE_BOUNDS: [&str; 8] =
    ["--contimeout", "5s", "--timeout", "15s", "--retries", "1", "--low-level-retries", "2"];

impl Ctx {
    pub fn new(name: &str) -> Ctx {
        Ctx::on(name, Bench::get())
    }

    /// A corner of another server's bucket (a test's own Garage cluster, say).
    pub fn on(name: &str, bench: Bench) -> Ctx {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("t/{name}-{}-{n}/", std::process::id());
        let (b, at) = (bench.clone(), format!("t:{}/{prefix}", bench.bucket));
        let noted = note(format!("rclone lsl {at}"), None, move || {
            let mut c = rclone_on(&b);
            c.args(RCLONE_BOUNDS).args(["lsl", &at]);
            c
        });
        Ctx { bench, prefix, noted }
    }

    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{}{}", self.bench.bucket, self.prefix, key)
    }

    pub fn prefix_url(&self) -> String {
        format!("s3://{}/{}", self.bench.bucket, self.prefix)
    }

    /// A command for one of our binaries, pointed at the bench.
    pub fn cmd(&self, bin: &str) -> Command {
        let mut c = Command::new(bin_path(bin));
        c.env("ZSNAP_S3_ENDPOINT", &self.bench.endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.bench.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.bench.secret_key)
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_PROFILE");
        c
    }

    pub fn put(&self, key: &str, data: &[u8], extra: &[&str]) -> Output {
        let mut c = self.cmd("s3put");
        c.args(extra).arg(self.url(key));
        run(c, Some(data), TIMEOUT)
    }

    pub fn get(&self, key: &str, extra: &[&str]) -> Output {
        let mut c = self.cmd("s3get");
        c.args(extra).arg(self.url(key));
        run(c, None, TIMEOUT)
    }

    /// In-progress multipart uploads under this test's prefix.
    pub fn pending_uploads(&self) -> Vec<serde_json::Value> {
        let mut c = self.cmd("s3put");
        c.args(["--list-uploads", &self.prefix_url()]);
        let out = run(c, None, TIMEOUT).success();
        out.json_lines()
    }

    /// Wait (bounded) until `check` holds, polling; panics with `what` on timeout.
    pub fn wait_until(&self, what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
        let start = Instant::now();
        while !check() {
            assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Ctx {
    /// Delete every object under this prefix of the bench's bucket (only that: a test
    /// playing another client on another bucket or server cleans up after itself), in one
    /// bounded rclone call whose failure is ignored.
    fn drop(&mut self) {
        forget(self.noted);
        if !self.prefix.starts_with("t/") || self.prefix.len() <= 2 || !self.prefix.ends_with('/') {
            return;
        }
        let mut c = rclone_on(&self.bench);
        c.args(RCLONE_BOUNDS).args(["purge", &format!("t:{}/{}", self.bench.bucket, self.prefix)]);
        let _ = bounded(c, Duration::from_secs(60));
    }
}

pub fn bin_path(bin: &str) -> PathBuf {
    match bin {
        "s3put" => PathBuf::from(env!("CARGO_BIN_EXE_s3put")),
        "s3get" => PathBuf::from(env!("CARGO_BIN_EXE_s3get")),
        "zsnap-plan" => PathBuf::from(env!("CARGO_BIN_EXE_zsnap-plan")),
        "zsnap-health" => PathBuf::from(env!("CARGO_BIN_EXE_zsnap-health")),
        "zsync-ssh" => PathBuf::from(env!("CARGO_BIN_EXE_zsync-ssh")),
        other => panic!("unknown binary {other}"),
    }
}

/// A finished command, kept whole for assertions and failure reports.
pub struct Output {
    pub cmd: String,
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        self.status.code().unwrap_or_else(|| 128 + self.status.signal().unwrap_or(0))
    }

    fn report(&self) -> String {
        format!(
            "command: {}\nexit: {}\nstdout ({} bytes): {}\nstderr: {}{}",
            self.cmd,
            self.code(),
            self.stdout.len(),
            String::from_utf8_lossy(&self.stdout[..self.stdout.len().min(2000)]),
            self.stderr,
            test_state()
        )
    }

    pub fn success(self) -> Self {
        assert_eq!(self.code(), 0, "expected success\n{}", self.report());
        self
    }

    /// Assert the exit code and that stderr is one line naming `needle`.
    pub fn fails(self, code: i32, needle: &str) -> Self {
        assert_eq!(self.code(), code, "wrong exit code\n{}", self.report());
        assert!(self.stderr.contains(needle), "stderr lacks {needle:?}\n{}", self.report());
        assert_eq!(self.stderr.trim_end().lines().count(), 1, "error must be one line\n{}", self.report());
        self
    }

    /// Like [`fails`], for commands whose children may print their own lines first: our
    /// message must be the last line, and `needle` anywhere in stderr.
    pub fn fails_last(self, code: i32, prog: &str, needle: &str) -> Self {
        assert_eq!(self.code(), code, "wrong exit code\n{}", self.report());
        assert!(self.stderr.contains(needle), "stderr lacks {needle:?}\n{}", self.report());
        let last = self.stderr.trim_end().lines().last().unwrap_or("");
        assert!(last.starts_with(&format!("{prog}: ")), "last line must be ours\n{}", self.report());
        self
    }

    /// stdout as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", self.report()))
    }

    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&self.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}\n{}", self.report())))
            .collect()
    }
}

fn describe(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run to completion with stdin fed from `input`, killing it after `limit`.
pub fn run(mut c: Command, input: Option<&[u8]>, limit: Duration) -> Output {
    let cmd = describe(&c);
    c.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    let feeder = input.map(|data| {
        let mut stdin = child.stdin.take().expect("piped stdin");
        let data = data.to_vec();
        // A consumer that exits early closes the pipe; that is its business, not ours.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        })
    });
    let out = finish(child, &cmd, limit);
    if let Some(f) = feeder {
        let _ = f.join();
    }
    out
}

/// Collect a running child's output, killing it after `limit`.
pub fn finish(mut child: Child, cmd: &str, limit: Duration) -> Output {
    let mut so = child.stdout.take().expect("piped stdout");
    let mut se = child.stderr.take().expect("piped stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    });
    let status = wait_bounded(&mut child, cmd, limit);
    Output {
        cmd: cmd.to_string(),
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

pub fn wait_bounded(child: &mut Child, cmd: &str, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return s,
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{cmd} did not finish within {limit:?}; killed");
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for {cmd}: {e}"),
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), cheap and incompressible enough.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

pub const MIB: usize = 1 << 20;

/// A listener on 127.0.0.1 that is immediately closed: connecting to it is refused.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A throwaway pool on a sparse file, listed in the test's failure reports and destroyed
/// (with busy-retries) on drop.
pub struct Pool {
    pub name: String,
    pub file: PathBuf,
    pub mount: PathBuf,
    /// Its listing in [`test_state`].
    noted: u64,
}

impl Pool {
    pub fn new(ctx: &Ctx, tag: &str) -> Pool {
        Pool::sized(ctx, tag, None)
    }

    /// A pool of `size` (bench/zfs's SIZE, e.g. "512M"; its default is 256M).
    pub fn sized(ctx: &Ctx, tag: &str, size: Option<&str>) -> Pool {
        let name = format!("zsnaptest{tag}{}", std::process::id());
        let file = ctx.bench.work.join(format!("{name}.img"));
        let mount = ctx.bench.work.join(format!("{name}-mnt"));
        let mut c = Command::new(repo_path("bench/zfs"));
        c.args(["pool", &name]).arg(&file).arg(&mount).args(size);
        run(c, None, TIMEOUT).success();
        let pool = name.clone();
        let noted = note(format!("zfs list -t all -r {name}"), None, move || {
            let mut c = Command::new("zfs");
            c.args(["list", "-t", "all", "-r", &pool]);
            c
        });
        Pool { name, file, mount, noted }
    }

    pub fn zfs(&self, args: &[&str]) -> Output {
        let mut c = Command::new("zfs");
        c.args(args);
        run(c, None, TIMEOUT)
    }

    pub fn ds(&self, rel: &str) -> String {
        format!("{}/{rel}", self.name)
    }

    /// The guid of `ds@snap`, exact (`-p`: without it zfs-fuse rounds it to "9.01E").
    pub fn guid(&self, snapshot: &str) -> String {
        let out = self.zfs(&["get", "-H", "-p", "-o", "value", "guid", snapshot]).success();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        forget(self.noted);
        let mut c = Command::new(repo_path("bench/zfs"));
        c.args(["destroy-pool", &self.name]).arg(&self.file);
        let _ = c.status();
    }
}

/// Run a shell pipeline (with pipefail) with the bench's S3 settings and our binaries
/// first on PATH.
pub fn sh(ctx: &Ctx, script: &str) -> Output {
    sh_with(ctx, &["-o", "pipefail"], script)
}

/// [`sh`] with bash options of the caller's choosing (e.g. none, to let a pipeline's
/// last stage alone decide the status).
pub fn sh_with(ctx: &Ctx, opts: &[&str], script: &str) -> Output {
    let mut c = Command::new("bash");
    c.args(opts).args(["-c", script]);
    for (k, v) in ctx.cmd("s3put").get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    let bins = bin_path("s3put").parent().expect("bin dir").display().to_string();
    c.env("PATH", format!("{bins}:{}", std::env::var("PATH").unwrap_or_default()));
    run(c, None, TIMEOUT)
}

pub fn files_of(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).expect("read file")))
        .collect();
    v.sort();
    v
}

/// rclone as a peer client on the bench (config from the environment only).
pub fn rclone(ctx: &Ctx) -> Command {
    rclone_on(&ctx.bench)
}

/// [`rclone`], for the bench's remote `t:`.
fn rclone_on(b: &Bench) -> Command {
    let mut c = Command::new("rclone");
    c.env_remove("AWS_CA_BUNDLE")
        .env("RCLONE_CONFIG_T_TYPE", "s3")
        .env("RCLONE_CONFIG_T_PROVIDER", "Other")
        .env("RCLONE_CONFIG_T_ENDPOINT", &b.endpoint)
        .env("RCLONE_CONFIG_T_ACCESS_KEY_ID", &b.access_key)
        .env("RCLONE_CONFIG_T_SECRET_ACCESS_KEY", &b.secret_key)
        .env("RCLONE_CONFIG_T_REGION", "us-east-1")
        .env("RCLONE_CONFIG_T_FORCE_PATH_STYLE", "true")
        .env("RCLONE_CONFIG", "/dev/null");
    c
}

/// A key pair for one S3 user.
#[derive(Clone, Debug)]
pub struct Keys {
    pub access_key: String,
    pub secret_key: String,
}

/// The moto server `tests/run` starts (bench/moto) for what Garage lacks: versioning,
/// Object Lock and IAM policies. Its IAM checks are on, so every request needs an IAM
/// user's key; `admin` may do everything. Each test makes its own buckets and users.
pub struct Moto {
    pub endpoint: String,
    pub admin: Keys,
    pub python: PathBuf,
}

static MOTO_COUNTER: AtomicU32 = AtomicU32::new(0);

impl Moto {
    pub fn get() -> Moto {
        Moto {
            endpoint: need("ZSNAP_MOTO_ENDPOINT"),
            admin: Keys {
                access_key: need("ZSNAP_MOTO_ACCESS_KEY_ID"),
                secret_key: need("ZSNAP_MOTO_SECRET_ACCESS_KEY"),
            },
            python: PathBuf::from(need("ZSNAP_MOTO_VENV")).join("bin/python"),
        }
    }

    /// A name no other test (or run of this one) uses: `TAG-PID-N`.
    pub fn unique(&self, tag: &str) -> String {
        format!("{tag}-{}-{}", std::process::id(), MOTO_COUNTER.fetch_add(1, Ordering::SeqCst))
    }

    /// Run a Python snippet as admin, with boto3 from moto's venv; `args` are sys.argv[1:],
    /// and `s3` and `iam` are clients on the server. The snippet prints what the test reads.
    pub fn python(&self, script: &str, args: &[&str]) -> Output {
        let prelude = "import json, os, sys, boto3\n\
                       s3 = boto3.client('s3', endpoint_url=os.environ['ZSNAP_MOTO_ENDPOINT'])\n\
                       iam = boto3.client('iam', endpoint_url=os.environ['ZSNAP_MOTO_ENDPOINT'])\n";
        let mut c = Command::new(&self.python);
        c.arg("-c")
            .arg(format!("{prelude}{script}"))
            .args(args)
            .env("ZSNAP_MOTO_ENDPOINT", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.admin.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.admin.secret_key)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env_remove("AWS_PROFILE");
        run(c, None, TIMEOUT)
    }

    /// A new bucket; with `object_lock`, created with ObjectLockEnabledForBucket (which
    /// makes it versioned, as on AWS).
    pub fn bucket(&self, tag: &str, object_lock: bool) -> String {
        let name = format!("zsnap-{}", self.unique(tag));
        let script = "s3.create_bucket(Bucket=sys.argv[1], ObjectLockEnabledForBucket=sys.argv[2] == '1')";
        self.python(script, &[&name, if object_lock { "1" } else { "0" }]).success();
        name
    }

    /// A new IAM user whose one inline policy is `policy`; returns its key.
    pub fn user(&self, tag: &str, policy: &serde_json::Value) -> Keys {
        let name = self.unique(tag);
        let script = "iam.create_user(UserName=sys.argv[1])\n\
                      iam.put_user_policy(UserName=sys.argv[1], PolicyName='only', PolicyDocument=sys.argv[2])\n\
                      k = iam.create_access_key(UserName=sys.argv[1])['AccessKey']\n\
                      print(k['AccessKeyId'], k['SecretAccessKey'])";
        let out = self.python(script, &[&name, &policy.to_string()]).success();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut words = text.split_whitespace();
        match (words.next(), words.next()) {
            (Some(a), Some(s)) => Keys { access_key: a.to_string(), secret_key: s.to_string() },
            _ => panic!("no access key from iam.create_access_key: {text:?}"),
        }
    }

    /// A command for one of our binaries, pointed at moto with `keys`.
    pub fn cmd(&self, bin: &str, keys: &Keys) -> Command {
        let mut c = Command::new(bin_path(bin));
        c.env("ZSNAP_S3_ENDPOINT", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", &keys.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &keys.secret_key)
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_PROFILE");
        c
    }

    /// `s3put ARGS` as `keys`, stdin from `input`.
    pub fn s3put(&self, keys: &Keys, args: &[&str], input: Option<&[u8]>) -> Output {
        let mut c = self.cmd("s3put", keys);
        c.args(args);
        run(c, input, TIMEOUT)
    }

    /// `s3get URL` as `keys`.
    pub fn s3get(&self, keys: &Keys, url: &str) -> Output {
        let mut c = self.cmd("s3get", keys);
        c.arg(url);
        run(c, None, TIMEOUT)
    }
}

// What a failed test had: listings of its pools and objects, registered by whoever makes
// them (Ctx, Pool, GuestSite) for as long as they live. Each test runs on its own thread,
// so a thread-local list is that test's; threads a test spawns report without it.

/// One listing of the running test's state.
struct Probe {
    id: u64,
    title: String,
    command: Box<dyn Fn() -> Command>,
    /// Keep only the header and the lines containing this.
    only: Option<String>,
}

thread_local! {
    static PROBES: RefCell<Vec<Probe>> = const { RefCell::new(Vec::new()) };
    /// Whether the state was already put into this thread's panic message.
    static SHOWN: Cell<bool> = const { Cell::new(false) };
}

static PROBE_IDS: AtomicU64 = AtomicU64::new(0);

/// Bound on one listing's time, and on the lines and width it shows.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
const PROBE_LINES: usize = 40;
const PROBE_WIDTH: usize = 200;

/// Add a listing to this test's failure reports until [`forget`] (the owner's drop).
/// `only` keeps the header and the lines containing it (a shared pool's other datasets).
pub(crate) fn note(title: String, only: Option<String>, command: impl Fn() -> Command + 'static) -> u64 {
    install_panic_hook();
    let id = PROBE_IDS.fetch_add(1, Ordering::SeqCst);
    let probe = Probe { id, title, command: Box::new(command), only };
    let _ = PROBES.try_with(|p| p.try_borrow_mut().map(|mut v| v.push(probe)));
    id
}

pub(crate) fn forget(id: u64) {
    let _ = PROBES.try_with(|p| p.try_borrow_mut().map(|mut v| v.retain(|x| x.id != id)));
}

/// The running test's state for a failure report: each listing bounded in time and lines;
/// one that cannot be made says why in a line. Empty when the test registered nothing.
pub fn test_state() -> String {
    let probes: Vec<(String, Command, Option<String>)> = PROBES
        .try_with(|p| {
            p.try_borrow()
                .map(|v| v.iter().map(|x| (x.title.clone(), (x.command)(), x.only.clone())).collect())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    if probes.is_empty() {
        return String::new();
    }
    let _ = SHOWN.try_with(|s| s.set(true));
    let mut out = String::from("\nthe test's state:");
    for (title, c, only) in probes {
        out.push_str(&format!("\n--- {title}"));
        let body = match bounded(c, PROBE_TIMEOUT) {
            Ok((0, stdout, _)) => {
                let text = String::from_utf8_lossy(&stdout).into_owned();
                let lines: Vec<&str> = text
                    .lines()
                    .enumerate()
                    .filter(|(i, l)| only.as_deref().is_none_or(|o| *i == 0 || l.contains(o)))
                    .map(|(_, l)| l)
                    .collect();
                if lines.is_empty() {
                    vec!["(nothing)".to_string()]
                } else {
                    let mut v: Vec<String> = lines.iter().take(PROBE_LINES).map(|l| clip(l)).collect();
                    if lines.len() > PROBE_LINES {
                        v.push(format!("… {} more lines", lines.len() - PROBE_LINES));
                    }
                    v
                }
            }
            Ok((code, _, stderr)) => {
                let first = String::from_utf8_lossy(&stderr).lines().find(|l| !l.trim().is_empty()).map(clip);
                vec![format!("(cannot list: exit {code}: {})", first.unwrap_or_default())]
            }
            Err(e) => vec![format!("(cannot list: {e})")],
        };
        for line in body {
            out.push('\n');
            out.push_str(&line);
        }
    }
    out
}

fn clip(line: &str) -> String {
    match line.char_indices().nth(PROBE_WIDTH) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

/// A failed assertion that did not come through an [`Output`] (whose report has the state
/// already) still shows the test's state, after the panic message.
fn install_panic_hook() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            if !SHOWN.try_with(|s| s.replace(false)).unwrap_or(true) {
                let state = test_state();
                if !state.is_empty() {
                    eprintln!("{}", state.trim_start());
                }
                let _ = SHOWN.try_with(|s| s.set(false));
            }
        }));
    });
}

/// Run `c` for at most `limit`, never panicking: (exit code, stdout, stderr), or why not.
/// A child left holding the pipes after the kill (ssh under a wrapper) is not waited for.
fn bounded(mut c: Command, limit: Duration) -> Result<(i32, Vec<u8>, Vec<u8>), String> {
    use std::os::unix::process::ExitStatusExt;
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|e| format!("cannot run {}: {e}", describe(&c)))?;
    let reader = |mut pipe: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = pipe.read_to_end(&mut v);
            let _ = tx.send(v);
        });
        rx
    };
    let out = child.stdout.take().map(|p| reader(Box::new(p)));
    let err = child.stderr.take().map(|p| reader(Box::new(p)));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {limit:?}; killed"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting: {e}")),
        }
    };
    let collect = |rx: Option<mpsc::Receiver<Vec<u8>>>| {
        rx.and_then(|rx| {
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1)).ok()
        })
        .unwrap_or_default()
    };
    let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok((code, collect(out), collect(err)))
}
