//! README.md's "Your first backup", run from the README itself: each fenced block marked
//! `<!-- first-backup: NAME -->` is read from README.md and run as written, against the
//! bench's Garage, on a zfs-fuse pool of its own. What is changed, and only that: the
//! endpoint and region (Garage signs for one region), the example keys and bucket, `tank`
//! (the test's pool) and /etc/zsnap (a directory of the test's). Each provider's config
//! is also parsed unchanged. The restore is compared byte for byte.

use crate::common::*;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::process::Command;

const EXAMPLE_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const EXAMPLE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const EXAMPLE_BUCKET: &str = "my-zsnap-backups";

/// The body of the fenced block right after `<!-- first-backup: NAME -->` in README.md.
fn block(name: &str) -> String {
    let readme = std::fs::read_to_string(repo_path("README.md")).expect("README.md");
    let marker = format!("<!-- first-backup: {name} -->");
    assert_eq!(readme.matches(&marker).count(), 1, "README.md must have {marker} exactly once");
    let rest = &readme[readme.find(&marker).expect("marker") + marker.len()..];
    let fence = rest.find("```").unwrap_or_else(|| panic!("no fenced block after {marker}"));
    assert!(rest[..fence].trim().is_empty(), "{marker} must come right before its block");
    let body = &rest[fence..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    let end = body.find("\n```").unwrap_or_else(|| panic!("the block after {marker} is not closed"));
    body[..=end].to_string()
}

/// `KEY=VALUE` of an ini block.
fn setting(ini: &str, key: &str) -> Option<String> {
    ini.lines().find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// One reader of the README on a machine of their own: a pool with `tank/data`'s files,
/// /etc/zsnap and a home directory.
struct Reader {
    ctx: Ctx,
    pool: Pool,
    etc: PathBuf,
    home: PathBuf,
    files: Vec<(String, Vec<u8>)>,
}

impl Reader {
    fn new(name: &str, tag: &str, seed: u64) -> Reader {
        let ctx = Ctx::new(name);
        let pool = Pool::new(&ctx, tag);
        let root = ctx.bench.work.join(format!("{}-root", pool.name));
        let (etc, home) = (root.join("etc/zsnap"), root.join("root"));
        std::fs::create_dir_all(&home).expect("home");
        pool.zfs(&["create", &pool.ds("data")]).success();
        let files = vec![
            ("big.bin".to_string(), data(3 * MIB + 17, seed)),
            ("notes.txt".to_string(), b"the only copy\n".to_vec()),
        ];
        for (name, bytes) in &files {
            std::fs::write(pool.mount.join("data").join(name), bytes).expect("write a file");
        }
        Reader { ctx, pool, etc, home, files }
    }

    /// A README text as it runs here.
    fn local(&self, text: &str) -> String {
        text.replace("/etc/zsnap", &self.etc.display().to_string())
            .replace("tank/", &format!("{}/", self.pool.name))
            .replace(EXAMPLE_KEY_ID, &self.ctx.bench.access_key)
            .replace(EXAMPLE_SECRET, &self.ctx.bench.secret_key)
            .replace(EXAMPLE_BUCKET, &self.ctx.bench.bucket)
    }

    /// bash running `blocks` (README block names) in order, in a clean environment: the
    /// built binaries and scripts on PATH, this reader's HOME, config path, lock directory
    /// and, to keep tests apart, the test's prefix in the bucket. No AWS variable is set.
    fn sh(&self, blocks: &[&str], then: &str) -> Output {
        let mut script = String::new();
        for b in blocks {
            script.push_str(&self.local(&block(b)));
        }
        script.push_str(then);
        let bins = bin_path("s3put").parent().expect("bin dir").display().to_string();
        let scripts = repo_path("scripts").display().to_string();
        let mut c = Command::new("bash");
        c.args(["-euo", "pipefail", "-c", &script])
            .env_clear()
            .env("PATH", format!("{bins}:{scripts}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"))
            .env("HOME", &self.home)
            .env("ZSNAP_CONFIG", self.etc.join("zsnap.conf"))
            .env("ZSNAP_LOCK_DIR", self.etc.join("locks"))
            .env("ZSNAP_S3_PREFIX", &self.ctx.prefix);
        run(c, None, TIMEOUT)
    }

    /// The README's config for `provider`, checked unchanged (`zsnap-plan config` takes
    /// every key and reports the README's endpoint and region), then written as
    /// /etc/zsnap/zsnap.conf with `endpoint` and Garage's region.
    fn configure(&self, provider: &str, endpoint: &str) {
        let ini = block(&format!("config {provider}"));
        let raw = self.etc.with_file_name(format!("{provider}-as-in-readme.conf"));
        std::fs::create_dir_all(&self.etc).expect("etc");
        std::fs::write(&raw, &ini).expect("write the README's config");
        let mut c = Command::new(bin_path("zsnap-plan"));
        c.arg("config").env("ZSNAP_CONFIG", &raw).env("HOME", &self.home);
        for var in ["ZSNAP_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION"]
        {
            c.env_remove(var);
        }
        for var in ["ZSNAP_DATASET", "ZSNAP_BUCKET", "ZSNAP_S3_PREFIX", "AWS_PROFILE", "AWS_CONFIG_FILE"] {
            c.env_remove(var);
        }
        let shown = run(c, None, TIMEOUT).success().json();
        assert_eq!(shown["endpoint"].as_str().map(str::to_string), setting(&ini, "ENDPOINT"), "{provider}: {shown}");
        assert_eq!(shown["region"].as_str().map(str::to_string), setting(&ini, "REGION"), "{provider}: {shown}");
        assert_eq!(shown["dataset"], "tank/data", "{provider}");

        let mut lines: Vec<String> = self
            .local(&ini)
            .lines()
            .map(|l| match l.split_once('=') {
                Some(("ENDPOINT", _)) => format!("ENDPOINT={endpoint}"),
                Some(("REGION", _)) => "REGION=us-east-1".to_string(),
                _ => l.to_string(),
            })
            .collect();
        if setting(&ini, "ENDPOINT").is_none() {
            lines.push(format!("ENDPOINT={endpoint}"));
        }
        std::fs::write(self.etc.join("zsnap.conf"), lines.join("\n") + "\n").expect("write zsnap.conf");
    }

    /// Steps 3 and 4 of the README with the credentials blocks `creds`: the backup before
    /// any snapshot fails as the README says, the first backup stores one object, the
    /// restore test passes, the restored files are the originals byte for byte, and the
    /// clean-up removes the scratch dataset.
    fn walk_through(&self, creds: &[&str]) {
        let said = self.local(&block("no-snapshot"));
        self.sh(creds, "zsnap-backup\n").fails(66, said.trim_end());

        let ran = self.sh(&[creds, &["run"][..]].concat(), "").success();
        let objects = self.objects();
        assert_eq!(objects.len(), 1, "one backup stored: {objects:?}\n{}", ran.stderr);
        assert!(objects[0].contains("/@daily-") && objects[0].contains("kind=full"), "{objects:?}");
        let snaps =
            self.pool.zfs(&["list", "-H", "-t", "snapshot", "-o", "name", "-r", &self.pool.ds("data")]).success();
        assert_eq!(snaps.text().lines().count(), 1, "zsnap-snapshot took one snapshot: {}", snaps.text());

        let restored = self.sh(&[creds, &["restore"][..]].concat(), "").success();
        assert!(restored.text().contains("restore test passed"), "{}\n{}", restored.text(), restored.stderr);
        let at = self.pool.mount.join("restore-test");
        for (name, bytes) in &self.files {
            let got = std::fs::read(at.join(name)).unwrap_or_else(|e| panic!("restored {name}: {e}"));
            assert_eq!(sha256(&got), sha256(bytes), "restored {name}");
        }

        // zfs-fuse says "dataset is busy" for a while after a mount was read (OpenZFS does
        // not): the block is retried only while it says so, within about 10 s, as bench/zfs
        // does.
        let mut cleanup = self.sh(&["cleanup"], "");
        for _ in 0..40 {
            if cleanup.code() == 0 || !cleanup.stderr.contains("dataset is busy") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
            cleanup = self.sh(&["cleanup"], "");
        }
        cleanup.success();
        let gone = self.pool.zfs(&["list", "-H", "-o", "name", &self.pool.ds("restore-test")]);
        assert_ne!(gone.code(), 0, "the scratch dataset is destroyed");
    }

    /// Object keys under the test's prefix, through rclone (a peer client).
    fn objects(&self) -> Vec<String> {
        let mut c = rclone(&self.ctx);
        c.args(["lsf", "-R", "--files-only", &format!("t:{}/{}", self.ctx.bench.bucket, self.ctx.prefix)]);
        run(c, None, TIMEOUT).success().text().lines().map(str::to_string).collect()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(root) = self.etc.parent().and_then(|p| p.parent()) {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

#[test]
fn aws() {
    let r = Reader::new("first-aws", "fbaws", 71);
    r.configure("aws", &r.ctx.bench.endpoint);
    r.walk_through(&["credentials"]);
}

#[test]
fn backblaze_b2() {
    let r = Reader::new("first-b2", "fbb2", 72);
    r.configure("b2", &r.ctx.bench.endpoint);
    r.walk_through(&["credentials"]);
}

#[test]
fn cloudflare_r2() {
    let r = Reader::new("first-r2", "fbr2", 73);
    r.configure("r2", &r.ctx.bench.endpoint);
    r.walk_through(&["credentials"]);
}

/// With the credentials from a profile in ~/.aws/credentials instead of zsnap.env.
#[test]
fn wasabi_with_a_profile() {
    let r = Reader::new("first-wasabi", "fbwas", 74);
    r.configure("wasabi", &r.ctx.bench.endpoint);
    r.walk_through(&["credentials profile"]);
}

/// MinIO behind a private CA: the endpoint is a TLS front whose certificate the system
/// does not trust; the README's private-CA block makes the whole walk-through work.
#[test]
fn minio_behind_a_private_ca() {
    let r = Reader::new("first-minio", "fbmin", 75);
    let front = TlsFront::start(&r.ctx.bench.work, &format!("{}-front", r.pool.name), &r.ctx.bench.endpoint);
    r.configure("minio", &front.endpoint);
    std::fs::copy(&front.ca, r.etc.join("minio-ca.pem")).expect("install the CA");
    // Without the block, the server is refused for its certificate.
    r.sh(&["credentials"], "zsnap-restore list\n").fails(71, "invalid peer certificate: UnknownIssuer");
    r.walk_through(&["credentials", "private-ca"]);
}

/// What the README says of each provider holds together: the region in an endpoint's host
/// is the REGION given, R2 signs for `auto`, AWS needs no endpoint.
#[test]
fn the_providers_settings_agree_with_their_endpoints() {
    let get = |p: &str, k: &str| setting(&block(&format!("config {p}")), k);
    assert_eq!(get("aws", "ENDPOINT"), None);
    let r2 = get("r2", "ENDPOINT").expect("r2 endpoint");
    assert!(r2.starts_with("https://ACCOUNT_ID.") && r2.ends_with(".r2.cloudflarestorage.com"), "{r2}");
    assert_eq!(get("r2", "REGION").as_deref(), Some("auto"));
    for (p, host) in [("b2", "backblazeb2.com"), ("wasabi", "wasabisys.com")] {
        let region = get(p, "REGION").expect("region");
        assert_eq!(get(p, "ENDPOINT"), Some(format!("https://s3.{region}.{host}")), "{p}");
    }
    assert_eq!(get("minio", "REGION").as_deref(), Some("us-east-1"));
    for p in ["aws", "minio", "b2", "wasabi", "r2"] {
        assert_eq!(get(p, "DATASET").as_deref(), Some("tank/data"), "{p}");
        assert_eq!(get(p, "BUCKET").as_deref(), Some(EXAMPLE_BUCKET), "{p}");
    }
}
