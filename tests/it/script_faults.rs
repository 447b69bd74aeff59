//! Faults during the scripts themselves (zsnap issue 14): zsnap-backup, zsnap-restore
//! (restore and save), zsnap-prune and zsync-ssh run against a server that fails the way
//! real ones do (the fault proxy in front of Garage: 500s, 503s, resets, cut bodies,
//! stalls), and with `zfs recv` or ssh killed mid-stream. What must hold: nothing is
//! committed that is not whole, every restore is byte-exact or refused with the right code,
//! the pool is as it was after a failure, and the next run succeeds.
//!
//! Stand-ins first on PATH make a few MiB into several requests (s3put with 5 MiB parts,
//! s3get with 1 MiB ranges) and kill a stream after N bytes when told to (zfs recv, ssh):
//! deterministic, never timed.

use crate::common::fault_proxy::{Fault, FaultProxy, Pick, Request, Rule, Schedule};
use crate::common::*;
use crate::zsync_ssh::Sync;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The seed of every fault rate here: the same faults hit the same requests on every run.
/// ZSNAP_FAULT_SEED overrides it, to soak the scripts with other schedules.
fn seed() -> u64 {
    std::env::var("ZSNAP_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(14)
}

/// How long a run against a stalled server may take: two attempts of the 2 s read timeout
/// (`STALL_FLAGS`) with backoff, per command, and the script around them.
const STALL_BOUND: Duration = Duration::from_secs(60);

/// Flags that make a stall fail fast.
const STALL_FLAGS: [&str; 4] = ["--read-timeout", "2s", "--retries", "1"];

/// Where the real `zfs` and `ssh` are, found on PATH before the stand-ins go first.
fn real(prog: &str) -> String {
    let out = std::process::Command::new("bash").args(["-c", &format!("command -v {prog}")]).output().expect("bash");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success() && path.starts_with('/'), "{prog} is not on PATH");
    path
}

/// Write the stand-ins into `dir` and return it. Each runs the real program unless told
/// otherwise by its variable; see the comments in the scripts.
fn stand_ins(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("stand-in dir");
    let bins = bin_path("s3put").parent().expect("bin dir").display().to_string();
    let scripts = [
        (
            "s3put",
            format!(
                "#!/bin/bash\n# 5 MiB parts for uploads, so a few MiB make a multipart upload (--delete takes none).\n\
                 for a in \"$@\"; do\n    if [[ $a == --exec || $a == --zfs-stream ]]; then exec {bins}/s3put --part-size 5M \"$@\"; fi\n\
                 done\nexec {bins}/s3put \"$@\"\n"
            ),
        ),
        ("s3get", format!("#!/bin/bash\n# 1 MiB ranges: a few MiB make several GETs.\nexec {bins}/s3get --part-size 1M \"$@\"\n")),
        (
            "zfs",
            format!(
                r#"#!/bin/bash
# With ZSNAP_FAULT_KILL_RECV_AFTER=N, `zfs recv` is killed (SIGKILL) once N bytes of its
# stream have been handed to it, and this stand-in then dies of SIGKILL too: the pipeline
# sees a killed zfs recv. Anything else runs the real zfs.
real={zfs}
n=${{ZSNAP_FAULT_KILL_RECV_AFTER:-}}
if [[ -z $n || ( ${{1:-}} != recv && ${{1:-}} != receive ) ]]; then exec "$real" "$@"; fi
fifo=$(mktemp -u "${{TMPDIR:-/tmp}}/zsnap-recv.XXXXXX")
mkfifo "$fifo"
"$real" "$@" <"$fifo" &
pid=$!
exec 3>"$fifo"
rm -f "$fifo"
head -c "$n" >&3
kill -KILL "$pid"
wait "$pid" 2>/dev/null
echo "zfs stand-in: killed zfs recv (pid $pid) after $n bytes" >&2
kill -KILL $$
"#,
                zfs = real("zfs")
            ),
        ),
        (
            "ssh",
            format!(
                r#"#!/bin/bash
# With ZSNAP_FAULT_SSH_CUT_AFTER=N, an ssh that runs `zfs recv` passes N bytes of its stdin
# on and then dies mid-stream: killed by SIGKILL, or with ZSNAP_FAULT_SSH_HOW=drop as a
# dropped connection (ssh's exit 255 and its message). Anything else runs the real ssh.
real={ssh}
n=${{ZSNAP_FAULT_SSH_CUT_AFTER:-}}
if [[ -z $n || ${{!#}} != *"zfs recv"* ]]; then exec "$real" "$@"; fi
fifo=$(mktemp -u "${{TMPDIR:-/tmp}}/zsnap-ssh.XXXXXX")
mkfifo "$fifo"
"$real" "$@" <"$fifo" &
pid=$!
exec 3>"$fifo"
rm -f "$fifo"
head -c "$n" >&3
kill -KILL "$pid"
wait "$pid" 2>/dev/null
if [[ ${{ZSNAP_FAULT_SSH_HOW:-kill}} == drop ]]; then
    echo "Connection to ${{*: -2:1}} closed by remote host." >&2
    exit 255
fi
kill -KILL $$
"#,
                ssh = real("ssh")
            ),
        ),
    ];
    for (name, text) in scripts {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write stand-in");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod stand-in");
    }
    dir.to_path_buf()
}

/// PATH with `first` before our binaries and scripts.
fn path_with(first: &Path) -> String {
    let bins = bin_path("s3put").parent().expect("bin dir").display().to_string();
    let scripts = repo_path("scripts").display().to_string();
    format!("{}:{bins}:{scripts}:{}", first.display(), std::env::var("PATH").unwrap_or_default())
}

/// A site whose scripts find the stand-ins first.
fn site(name: &str, tag: &str) -> Site {
    let mut site = Site::new(name, tag);
    let dir = stand_ins(&site.ctx.bench.work.join(format!("{}-bin", site.pool.name)));
    site.set("PATH", &path_with(&dir));
    site
}

fn unset(site: &mut Site, key: &str) {
    site.env.retain(|(k, _)| k != key);
}

/// `args` followed by `--endpoint` of the proxy (and `extra`).
fn via(proxy: &FaultProxy, args: &[&str], extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    v.extend(["--endpoint".to_string(), proxy.endpoint()]);
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn run_via(site: &Site, prog: &str, proxy: &FaultProxy, args: &[&str], extra: &[&str]) -> (Output, Duration) {
    let args = via(proxy, args, extra);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let start = Instant::now();
    let out = site.run(prog, &refs);
    (out, start.elapsed())
}

/// The proxy's record, for assertion messages.
fn record(proxy: &FaultProxy) -> String {
    format!("faults injected: {:?}\nrequests:\n{}", proxy.injected_by_kind(), proxy.log())
}

/// `out.success()`, with the proxy's record on stderr first when it failed.
fn succeeded(out: Output, proxy: &FaultProxy) -> Output {
    if out.code() != 0 {
        eprintln!("{}", record(proxy));
    }
    out.success()
}

/// At least `n` faults were injected since the proxy had injected `before`.
fn assert_injected(proxy: &FaultProxy, before: u64, n: u64, what: &str) {
    eprintln!("{what}: {} requests, faults injected: {:?}", proxy.requests(), proxy.injected_by_kind());
    assert!(proxy.injected() >= before + n, "{what}: fewer than {n} faults injected\n{}", record(proxy));
}

/// Every dataset, snapshot and clone of the site's pool (`%recv` clones too), by name.
fn everything(site: &Site) -> Vec<String> {
    let out = site.pool.zfs(&["list", "-H", "-t", "all", "-o", "name", "-r", &site.pool.name]).success();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// The files of a mounted dataset as they are now: remounted first, since zfs-fuse serves
/// files read before a `zfs recv -F` from the kernel's cache of them.
fn files_now(site: &Site, ds: &str) -> BTreeMap<String, Vec<u8>> {
    site.pool.zfs(&["umount", ds]).success();
    site.pool.zfs(&["mount", ds]).success();
    tree(&site.mountpoint(ds))
}

/// Committed backup objects (`zsnap1,` keys) under the site's prefix.
fn committed(site: &Site) -> Vec<String> {
    site.keys().into_iter().filter(|k| k.contains("zsnap1,")).collect()
}

fn listed(site: &Site) -> Vec<String> {
    let list = site.run("zsnap-restore", &["list", "--json"]).success().json_lines();
    list.iter().filter_map(|l| l["snapshot"].as_str().map(str::to_string)).collect()
}

/// Two snapshots, backed up straight to the bench: a full @s1 and an incremental @s2.
fn two_backups(site: &Site) -> (BTreeMap<String, Vec<u8>>, BTreeMap<String, Vec<u8>>) {
    site.write("a.bin", &data(6 * MIB + 11, 1411));
    site.write("n.txt", b"one\n");
    site.snapshot("s1");
    let t1 = tree(&site.dir());
    site.run("zsnap-backup", &[]).success();
    site.write("b.bin", &data(4 * MIB + 7, 1412));
    site.write("n.txt", b"two\n");
    site.snapshot("s2");
    let t2 = tree(&site.dir());
    site.run("zsnap-backup", &[]).success();
    (t1, t2)
}

/// The proxy on its own, with s3put and s3get: each kind of fault does what it says, is
/// counted, and the clients react as the exit-code table says.
#[test]
fn the_fault_proxy_injects_what_it_is_told() {
    let ctx = Ctx::new("sf-proxy");
    let bench = Bench::get();
    let body = data(7 * MIB + 5, 1401);
    let proxy = FaultProxy::start(&bench.endpoint, Schedule::pass());
    let put = |key: &str, extra: &[&str]| {
        let mut c = ctx.cmd("s3put");
        c.args(["--endpoint", &proxy.endpoint(), "--part-size", "5M"]).args(extra).arg(ctx.url(key));
        run(c, Some(&body), TIMEOUT)
    };
    let get = |key: &str, extra: &[&str]| {
        let mut c = ctx.cmd("s3get");
        c.args(["--endpoint", &proxy.endpoint(), "--part-size", "1M"]).args(extra).arg(ctx.url(key));
        let start = Instant::now();
        (run(c, None, TIMEOUT), start.elapsed())
    };

    // Passing through: the bytes are the bytes, nothing injected.
    put("pass", &[]).success();
    assert!(get("pass", &[]).0.success().stdout == body, "bytes through the proxy differ");
    assert!(proxy.requests() >= 5, "{}", record(&proxy));
    assert_eq!(proxy.injected(), 0, "{}", record(&proxy));

    // A 500 on every UploadPart, no retries: the server's error, named.
    proxy.set(Schedule::with(Rule::new("parts", Request::is_upload_part, Pick::Always(Fault::internal_error()))));
    put("err500", &["--retries", "0"]).fails(76, "InternalError");
    // SlowDown past the retries is throttling (75); resets are an unreachable server (69).
    proxy.set(Schedule::with(Rule::new("parts", Request::is_upload_part, Pick::Always(Fault::slow_down()))));
    put("slow", &["--retries", "1"]).fails(75, "throttled");
    proxy.set(Schedule::with(Rule::new("parts", Request::is_upload_part, Pick::Always(Fault::ResetBeforeBody))));
    put("reset", &["--retries", "1"]).fails(69, "upload of part");
    ctx.get("err500", &[]).fails(66, "no such object");
    assert!(ctx.pending_uploads().is_empty(), "every failed upload was aborted");
    let kinds = proxy.injected_by_kind();
    for k in ["500 InternalError", "503 SlowDown", "reset before body"] {
        assert!(kinds.get(k).copied().unwrap_or(0) >= 1, "{k} not injected\n{}", record(&proxy));
    }

    // The first two attempts of every request fail (a 503, a reset after the request was
    // read): retries absorb both.
    proxy.set(Schedule {
        rules: vec![Rule::new(
            "1st",
            |_| true,
            Pick::Rate {
                seed: seed(),
                percent: 100,
                faults: vec![Fault::unavailable(), Fault::ResetAfterRequest],
                max_per_request: 2,
            },
        )],
    });
    let before = proxy.injected();
    put("retried", &[]).success();
    assert!(proxy.injected() >= before + 6, "two faults for each of at least 3 requests\n{}", record(&proxy));
    proxy.set(Schedule::pass());
    assert!(ctx.get("retried", &[]).success().stdout == body);

    // Bodies cut after 1000 bytes, twice per range: s3get retries the range.
    proxy.set(Schedule::with(Rule::new(
        "gets",
        Request::is_object_get,
        Pick::Rate { seed: seed(), percent: 100, faults: vec![Fault::CutBody(1000)], max_per_request: 2 },
    )));
    let (out, _) = get("pass", &[]);
    assert!(out.success().stdout == body, "bytes after cut bodies differ");
    assert!(proxy.injected_by_kind().get("cut body").copied().unwrap_or(0) >= 8, "{}", record(&proxy));

    // A stall: the read timeout ends it, 69 within the bound, and the proxy held it.
    for stall in [Fault::Stall, Fault::StallBody(1000)] {
        proxy.set(Schedule::with(Rule::new("gets", Request::is_object_get, Pick::Always(stall.clone()))));
        let (out, took) = get("pass", &STALL_FLAGS);
        let out = out.fails(69, "timed out");
        assert!(out.stdout.len() < MIB, "{stall:?}: nothing past the stall");
        assert!(took < STALL_BOUND, "{stall:?}: took {took:?}");
        assert!(proxy.injected_by_kind().get(&stall.kind()).copied().unwrap_or(0) >= 2, "{}", record(&proxy));
    }
    // The client gave up and closed: no request is held any more.
    ctx.wait_until("the stalled requests to be let go", Duration::from_secs(20), || proxy.stalled() == 0);
}

/// A CompleteMultipartUpload the server carried out but whose answer was lost (cut after
/// 100 bytes): the SDK retries it and the server answers NoSuchUpload. s3put finds the
/// object there (HEAD: its size and CRC32 are the stream's) and succeeds; it used to exit
/// 66 saying "nothing is visible" (and zsnap-backup "nothing of it was kept") about a
/// backup that was in S3, whole.
#[test]
fn a_lost_answer_to_complete_is_not_a_failed_upload() {
    let ctx = Ctx::new("sf-complete");
    let body = data(12 * MIB + 1, 1402);
    let complete = |r: &Request| r.method == "POST" && r.query.contains("uploadId=");
    let proxy = FaultProxy::start(
        &ctx.bench.endpoint,
        Schedule::with(Rule::new("complete", complete, Pick::Nth(vec![1], Fault::CutBody(100)))),
    );
    let mut c = ctx.cmd("s3put");
    c.args(["--endpoint", &proxy.endpoint(), "--part-size", "5M"]).arg(ctx.url("k"));
    let out = run(c, Some(&body), TIMEOUT);
    assert_eq!(proxy.injected_by_kind().get("cut body").copied(), Some(1), "{}", record(&proxy));
    assert!(ctx.get("k", &[]).success().stdout == body, "the object is committed whole");
    succeeded(out, &proxy);
}

/// zsnap-backup: a stalled server fails the run with 69 within a bound and commits
/// nothing; the next run (no faults) sends the full; a run through 30% faults (500, 503,
/// resets, cut bodies) succeeds; both restore byte for byte, and no upload is left open.
#[test]
fn backup_against_a_faulty_server_commits_only_whole_streams() {
    let site = site("sf-backup", "sfb");
    site.write("a.bin", &data(12 * MIB + 3, 1421));
    site.snapshot("s1");
    let t1 = tree(&site.dir());
    let stall = Rule::new("parts", Request::is_upload_part, Pick::Always(Fault::Stall));
    let proxy = FaultProxy::start(&site.ctx.bench.endpoint, Schedule::with(stall));

    let (out, took) = run_via(&site, "zsnap-backup", &proxy, &[], &STALL_FLAGS);
    let out = out.fails_last(69, "zsnap-backup", "step 1 of 1 failed (exit 69)");
    assert!(out.stderr.contains("timed out"), "the message names the timeout: {}", out.stderr);
    assert!(took < STALL_BOUND, "took {took:?}");
    assert!(proxy.injected() >= 2, "{}", record(&proxy));
    assert!(committed(&site).is_empty(), "committed {:?}", committed(&site));
    // zsnap-backup resumes: the stalled upload is kept (nothing visible) for the next run.
    assert!(out.stderr.contains("is kept (nothing is visible)"), "{}", out.stderr);
    assert_eq!(site.ctx.pending_uploads().len(), 1, "the upload is kept for the next run");
    assert!(listed(&site).is_empty());

    // The next run, without faults, sends the full (continuing the kept upload).
    proxy.set(Schedule::pass());
    let (out, _) = run_via(&site, "zsnap-backup", &proxy, &[], &[]);
    let sent = out.success().json_lines();
    assert_eq!((sent.len(), sent[0]["stream"]["kind"].as_str()), (1, Some("full")), "{sent:?}");

    // The incremental through 30% faults: retries absorb them.
    site.write("b.bin", &data(9 * MIB + 1, 1422));
    std::fs::remove_file(site.dir().join("a.bin")).expect("rm");
    site.snapshot("s2");
    let t2 = tree(&site.dir());
    proxy.set(Schedule::with(Rule::rate(seed(), 30)));
    let before = proxy.injected();
    let (out, _) = run_via(&site, "zsnap-backup", &proxy, &[], &[]);
    let out = succeeded(out, &proxy);
    assert_injected(&proxy, before, 1, "zsnap-backup");
    let sent = out.json_lines();
    assert_eq!((sent.len(), sent[0]["stream"]["kind"].as_str()), (1, Some("incremental")), "{sent:?}");
    assert!(sent[0]["parts"].as_u64().unwrap_or(0) >= 2, "a multipart upload: {sent:?}");
    assert!(site.ctx.pending_uploads().is_empty(), "no upload left open\n{}", record(&proxy));
    assert_eq!(listed(&site), ["s1", "s2"]);

    // Straight from the bench: both restore byte for byte.
    for (snap, want) in [("s1", &t1), ("s2", &t2)] {
        let target = site.pool.ds(&format!("r{snap}"));
        site.run("zsnap-restore", &[snap, "--target", &target]).success();
        assert_same(&tree(&site.mountpoint(&target)), want, snap);
    }
}

/// zsnap-restore and save through 30% faults: byte-exact.
#[test]
fn restore_and_save_against_a_faulty_server_are_byte_exact() {
    let site = site("sf-restore", "sfr");
    let (_, t2) = two_backups(&site);
    let proxy = FaultProxy::start(&site.ctx.bench.endpoint, Schedule::with(Rule::rate(seed(), 30)));

    let target = site.pool.ds("r");
    let (out, _) = run_via(&site, "zsnap-restore", &proxy, &["latest", "--target", &target], &[]);
    succeeded(out, &proxy);
    assert_injected(&proxy, 0, 1, "zsnap-restore");
    assert_eq!(site.snapshots_of(&target), ["s1", "s2"]);
    assert_same(&tree(&site.mountpoint(&target)), &t2, "restored through faults");

    // save through faults equals save straight from the bench, byte for byte.
    let file = |tag: &str| site.ctx.bench.work.join(format!("{}-{tag}.zfs", site.pool.name)).display().to_string();
    let (faulty, clean) = (file("faulty"), file("clean"));
    let before = proxy.injected();
    let (out, _) = run_via(&site, "zsnap-restore", &proxy, &["save", "2", &faulty], &[]);
    succeeded(out, &proxy);
    assert_injected(&proxy, before, 1, "zsnap-restore save");
    site.run("zsnap-restore", &["save", "2", &clean]).success();
    let (a, b) = (std::fs::read(&faulty).expect("saved"), std::fs::read(&clean).expect("saved"));
    assert!(a.len() > MIB && a == b, "saved streams differ ({} and {} bytes)", a.len(), b.len());
    for f in [&faulty, &clean] {
        let _ = std::fs::remove_file(f);
    }
}

/// zsnap-restore against a stalled server: 69 within a bound, naming the timeout; a target
/// the run created is destroyed again, an existing one rolled back to where it was; save
/// leaves no file; the next run succeeds.
#[test]
fn a_stalled_restore_fails_69_and_leaves_the_pool_as_it_was() {
    let site = site("sf-stall", "sfs");
    let (t1, t2) = two_backups(&site);
    // The first MiB of an object passes (zfs recv has begun), then every later range stalls:
    // with no answer at all, or after 64 KiB of its body.
    let proxy = FaultProxy::start(&site.ctx.bench.endpoint, Schedule::pass());
    let stall =
        |f: Fault| proxy.set(Schedule::with(Rule::new("later ranges", Request::is_later_range, Pick::Always(f))));

    stall(Fault::Stall);
    let fresh = site.pool.ds("fresh");
    let before = everything(&site);
    let (out, took) = run_via(&site, "zsnap-restore", &proxy, &["latest", "--target", &fresh], &STALL_FLAGS);
    // zfs-fuse creates no dataset for a cut full stream; OpenZFS may, and then it is destroyed.
    let out = out.fails_last(69, "zsnap-restore", "nothing of it was kept");
    assert!(out.stderr.contains("timed out"), "the message names the timeout: {}", out.stderr);
    assert!(took < STALL_BOUND, "took {took:?}");
    assert!(!site.exists(&fresh), "a half-restored {fresh} was left behind");
    assert_eq!(everything(&site), before, "the pool is as it was");

    // An existing target at @s1 gets @s2, which stalls mid-body: back to @s1.
    let kept = site.pool.ds("kept");
    site.run("zsnap-restore", &["s1", "--target", &kept]).success();
    let before = everything(&site);
    stall(Fault::StallBody(64 << 10));
    let (out, took) = run_via(&site, "zsnap-restore", &proxy, &["latest", "--target", &kept], &STALL_FLAGS);
    let out = out.fails_last(69, "zsnap-restore", "is rolled back to @s1");
    assert!(out.stderr.contains("timed out"), "the message names the timeout: {}", out.stderr);
    assert!(took < STALL_BOUND, "took {took:?}");
    assert_eq!(everything(&site), before, "the pool is as it was");
    assert_same(&tree(&site.mountpoint(&kept)), &t1, "the existing target as it was");

    let file = site.ctx.bench.work.join(format!("{}-save", site.pool.name));
    let (out, took) =
        run_via(&site, "zsnap-restore", &proxy, &["save", "1", &file.display().to_string()], &STALL_FLAGS);
    out.fails_last(69, "zsnap-restore", "step 1 of 1 failed (exit 69)");
    assert!(took < STALL_BOUND, "took {took:?}");
    assert!(!file.exists() && !PathBuf::from(format!("{}.part", file.display())).exists(), "no FILE, no FILE.part");
    assert!(proxy.injected_by_kind().len() == 2, "both kinds of stall\n{}", record(&proxy));

    // The next runs, without faults, succeed. (Reading the target's files above changed its
    // atimes: --force lets zfs recv roll that back.)
    proxy.set(Schedule::pass());
    let (out, _) = run_via(&site, "zsnap-restore", &proxy, &["latest", "--target", &fresh], &[]);
    out.success();
    assert_same(&tree(&site.mountpoint(&fresh)), &t2, "fresh target after the stall");
    let (out, _) = run_via(&site, "zsnap-restore", &proxy, &["latest", "--target", &kept, "--force"], &[]);
    out.success();
    assert_eq!(site.snapshots_of(&kept), ["s1", "s2"]);
    assert_same(&files_now(&site, &kept), &t2, "existing target after the stall");
}

/// `zfs recv` killed mid-stream (by the zfs stand-in, after 2 MB of the stream): the
/// restore fails with the killed stage's status and says what it undid; no half-received
/// dataset, snapshot or `%recv` clone is left; the next run succeeds.
#[test]
fn a_killed_zfs_recv_leaves_the_pool_as_it_was() {
    let mut site = site("sf-recv", "sfk");
    let (t1, t2) = two_backups(&site);
    const KILL: &str = "ZSNAP_FAULT_KILL_RECV_AFTER";

    let fresh = site.pool.ds("fresh");
    let before = everything(&site);
    site.set(KILL, "2000000");
    let out = site.run("zsnap-restore", &["latest", "--target", &fresh]);
    let out = out.fails_last(137, "zsnap-restore", "step 1 of 2 failed (exit 137)");
    assert!(out.stderr.contains("nothing of it was kept"), "{}", out.stderr);
    assert!(out.stderr.contains("killed zfs recv"), "the stand-in did kill it: {}", out.stderr);
    assert!(!site.exists(&fresh), "a half-restored {fresh} was left behind");
    assert_eq!(everything(&site), before, "the pool is as it was");

    // An existing target at @s1: the incremental's recv is killed, the target rolled back.
    unset(&mut site, KILL);
    let kept = site.pool.ds("kept");
    site.run("zsnap-restore", &["s1", "--target", &kept]).success();
    let before = everything(&site);
    site.set(KILL, "1000000");
    let out = site.run("zsnap-restore", &["latest", "--target", &kept]);
    out.fails_last(137, "zsnap-restore", "is rolled back to @s1");
    assert_eq!(everything(&site), before, "the pool is as it was");
    assert_same(&tree(&site.mountpoint(&kept)), &t1, "the existing target as it was");

    unset(&mut site, KILL);
    site.run("zsnap-restore", &["latest", "--target", &fresh]).success();
    assert_same(&tree(&site.mountpoint(&fresh)), &t2, "fresh target after the kill");
    site.run("zsnap-restore", &["latest", "--target", &kept, "--force"]).success();
    assert_same(&files_now(&site, &kept), &t2, "existing target after the kill");
}

/// zsnap-prune: a stalled delete fails the run with 69 and deletes nothing; deletes that
/// fail (a 500) or whose answer is lost after the server did them (a reset) are retried,
/// among 30% faults on everything else; what stays is exactly what the plan keeps, and
/// every kept snapshot restores byte for byte.
#[test]
fn prune_against_a_faulty_server_never_breaks_a_kept_chain() {
    let site = site("sf-prune", "sfp");
    std::fs::write(&site.config, "[main]\nKEEP_LAST=2\nKEEP_HOURLY=0\nKEEP_DAILY=0\nKEEP_WEEKLY=0\nKEEP_MONTHLY=0\n")
        .expect("config");
    // Three chains: [s1] [s2 s3] [s4 s5]; keeping two keeps s4 (s5's parent) and s5.
    let trees = site.three_chains(1430);
    let plan = site.run("zsnap-plan", &["prune"]).success().json_lines();
    let deleting: Vec<&str> =
        plan.iter().filter(|l| l["action"] == "delete").filter_map(|l| l["snapshot"].as_str()).collect();
    assert_eq!(deleting, ["s1", "s2", "s3"]);
    let keys = site.keys();

    let stall = Rule::new("deletes", Request::is_delete, Pick::Always(Fault::Stall));
    let proxy = FaultProxy::start(&site.ctx.bench.endpoint, Schedule::with(stall));
    let (out, took) = run_via(&site, "zsnap-prune", &proxy, &["--yes"], &STALL_FLAGS);
    let out = out.fails_last(69, "zsnap-prune", "failed (exit 69)");
    assert!(out.stderr.contains("timed out"), "the message names the timeout: {}", out.stderr);
    assert!(took < STALL_BOUND, "took {took:?}");
    assert!(proxy.injected() >= 2, "{}", record(&proxy));
    assert_eq!(site.keys(), keys, "a stalled prune deleted something");

    proxy.set(Schedule {
        rules: vec![
            Rule::new("1st delete", Request::is_delete, Pick::Nth(vec![1], Fault::internal_error())),
            Rule::new("2nd delete", Request::is_delete, Pick::Nth(vec![1], Fault::ResetAfterForward)),
            Rule::rate(seed(), 30),
        ],
    });
    let (out, _) = run_via(&site, "zsnap-prune", &proxy, &["--yes"], &[]);
    let deleted = succeeded(out, &proxy).json_lines();
    let kinds = proxy.injected_by_kind();
    for k in ["500 InternalError", "reset after forward"] {
        assert!(kinds.get(k).copied().unwrap_or(0) >= 1, "{k} not injected\n{}", record(&proxy));
    }
    assert_eq!(deleted.len(), 3, "{deleted:?}");
    assert!(deleted.iter().all(|d| d["deleted"] == true), "{deleted:?}");
    assert_eq!(listed(&site), ["s4", "s5"]);
    for snap in ["s4", "s5"] {
        let target = site.pool.ds(&format!("r{snap}"));
        site.run("zsnap-restore", &[snap, "--target", &target]).success();
        assert_same(&tree(&site.mountpoint(&target)), &trees[snap], snap);
    }
    // Nothing more to do, through the faults too.
    let (out, _) = run_via(&site, "zsnap-prune", &proxy, &["--yes"], &[]);
    let out = out.success();
    assert!(out.stdout.is_empty() && out.stderr.contains("nothing to delete"), "{}", out.stderr);
}

/// zsync-ssh with its ssh dying mid-stream (the ssh stand-in, after 3 MB): killed by a
/// signal, or as a dropped connection. Each fails with 67 naming ssh and the host; the
/// target keeps its last good snapshot with nothing half-received; the next run completes.
#[test]
fn zsync_ssh_with_ssh_dying_mid_stream_keeps_the_last_good_snapshot() {
    let s = Sync::new("sfssh");
    let dir = stand_ins(&s._ctx.bench.work.join(format!("{}-bin", s.pool.name)));
    s.write("a", &data(200_000, 1441));
    s.snapshot("s1");
    s.sync(&[]).success();
    s.write("big", &data(10 * MIB, 1442));
    s.snapshot("s2");
    let all = || {
        let out = s.remote(&["zfs", "list", "-H", "-t", "all", "-o", "name", "-r", &s.dst]).success();
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect::<Vec<_>>()
    };
    let before = all();
    let host = crate::zsync_ssh::env("ZSNAP_HOST2");
    for (how, needle) in
        [("kill", "killed by signal 9".to_string()), ("drop", format!("Connection to {host} closed by remote host"))]
    {
        let mut c = s.cmd(&[]);
        c.env("PATH", path_with(&dir)).env("ZSNAP_FAULT_SSH_CUT_AFTER", "3000000").env("ZSNAP_FAULT_SSH_HOW", how);
        let out = run(c, None, TIMEOUT).fails_last(67, "zsync-ssh", &needle);
        assert!(out.stderr.contains(&format!("ssh to {host}")), "{how}: names ssh and the host: {}", out.stderr);
        assert_eq!(out.json()["action"], "failed");
        assert_eq!(s.remote_snapshots(), ["s1"], "{how}: the target stays at its last good snapshot");
        // The cut receive on the target ends when sshd sees its client gone; then nothing
        // of it is left (no %recv clone, no half snapshot).
        s._ctx.wait_until("the cut receive on the target to end", Duration::from_secs(60), || all() == before);
    }
    let out = s.sync(&[]).success();
    assert_eq!(out.json()["sent"], serde_json::json!(["s2"]));
    assert_eq!(s.remote_snapshots(), ["s1", "s2"]);
    s.assert_same_files();
}
