//! Self-hosted S3 behind a private CA: the bench's Garage behind a TLS front (socat) with a
//! certificate from a private CA made at test time. Without a bundle every binary refuses it
//! (71, or zsnap-health's critical 2) naming the certificate; `AWS_CA_BUNDLE`, or
//! `ca_bundle` in the profile's section of the AWS config file, makes it trusted beside the
//! system roots (never instead of them); a bundle that cannot serve is exit 71 before any
//! request.

use crate::common::*;
use std::path::PathBuf;
use std::process::Command;

/// A test's TLS front on the bench and a directory of its own for certificates and
/// AWS config files (also the commands' HOME, so no real ~/.aws is read).
struct Lab {
    ctx: Ctx,
    front: TlsFront,
    dir: PathBuf,
}

impl Lab {
    fn new(name: &str) -> Lab {
        let ctx = Ctx::new(name);
        let dir = ctx.bench.work.join(format!("tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("lab dir");
        std::fs::write(dir.join("zsnap.conf"), "").expect("empty zsnap.conf");
        let front = TlsFront::start(&dir, "front", &ctx.bench.endpoint);
        Lab { ctx, front, dir }
    }

    /// `bin` pointed at the TLS front, with no bundle, profile or system-root override from
    /// the machine's environment; `env` then sets what the test means to.
    fn cmd(&self, bin: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = self.ctx.cmd(bin);
        c.args(args)
            .env("ZSNAP_S3_ENDPOINT", &self.front.endpoint)
            .env("HOME", &self.dir)
            .env("AWS_CONFIG_FILE", self.dir.join("no-such-config"))
            .env("ZSNAP_CONFIG", self.dir.join("zsnap.conf"))
            .env_remove("AWS_CA_BUNDLE")
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR");
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    fn run(&self, bin: &str, args: &[&str], env: &[(&str, &str)], input: Option<&[u8]>) -> Output {
        run(self.cmd(bin, args, env), input, TIMEOUT)
    }

    /// s3put then s3get of `bytes` (5 MiB parts) through the front; both must
    /// succeed and the object read back must be the bytes put, exactly.
    fn round_trip(&self, key: &str, bytes: &[u8], env: &[(&str, &str)]) {
        let url = self.ctx.url(key);
        let put = self.run("s3put", &["--part-size", "5M", &url], env, Some(bytes)).success();
        let parts = bytes.len().div_ceil(5 * MIB);
        assert_eq!(put.json_lines()[0]["parts"], parts, "{key}: parts through the front");
        let got = self.run("s3get", &["--part-size", "5M", &url], env, None).success();
        assert!(got.stdout == bytes, "{key}: {} bytes back for {} put", got.stdout.len(), bytes.len());
    }

    /// `zsnap-plan list` of this test's prefix through the front.
    fn plan_list(&self, env: &[(&str, &str)]) -> Output {
        let args =
            ["--bucket", &self.ctx.bench.bucket, "--s3-prefix", &self.ctx.prefix, "--dataset", "tank/tls", "list"];
        self.run("zsnap-plan", &args, env, None)
    }

    fn health(&self, env: &[(&str, &str)]) -> Output {
        let args = ["--bucket", &self.ctx.bench.bucket, "--s3-prefix", &self.ctx.prefix, "--json"];
        self.run("zsnap-health", &args, env, None)
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_self_signed_server_is_refused_without_its_bundle() {
    let lab = Lab::new("tls-refused");
    // The object exists (put over plain HTTP), so only the certificate stands in the way.
    lab.ctx.put("obj", b"private", &[]).success();
    let url = lab.ctx.url("obj");
    let refused = |out: Output, code: i32, bin: &str| {
        let out = out.fails(code, "TLS failed");
        assert!(out.stderr.starts_with(&format!("{bin}: ")), "{}", out.stderr);
        assert!(out.stderr.contains("certificate"), "names the certificate problem: {}", out.stderr);
        assert!(out.stderr.contains("UnknownIssuer"), "says who is not trusted: {}", out.stderr);
    };
    refused(lab.run("s3put", &[&lab.ctx.url("new")], &[], Some(b"never stored")), 71, "s3put");
    refused(lab.run("s3get", &[&url], &[], None), 71, "s3get");
    refused(lab.plan_list(&[]), 71, "zsnap-plan");
    // zsnap-health reports an unreadable bucket as its critical verdict, with the cause.
    let health = lab.health(&[]);
    assert_eq!(health.code(), 2, "zsnap-health: {}", health.stderr);
    assert!(health.stderr.contains("TLS failed") && health.stderr.contains("certificate"), "{}", health.stderr);
    // Another CA's certificate in the bundle trusts that CA, not this server.
    let other = private_ca(&lab.dir, "other").display().to_string();
    refused(lab.run("s3get", &[&url], &[("AWS_CA_BUNDLE", &other)], None), 71, "s3get");
    let keys = lab.ctx.pending_uploads();
    assert!(keys.is_empty(), "a refused put leaves no upload: {keys:?}");
}

#[test]
fn aws_ca_bundle_trusts_the_server_beside_the_system_roots() {
    let lab = Lab::new("tls-env");
    let ca = lab.front.ca.display().to_string();
    let env = [("AWS_CA_BUNDLE", ca.as_str())];
    lab.round_trip("env.bin", &data(7 * MIB + 321, 61), &env);
    let list = lab.plan_list(&env).success();
    assert!(list.stderr.is_empty(), "{}", list.stderr);
    let summary = lab.health(&env).json_lines().pop().expect("summary line");
    assert!(summary.get("error").is_none(), "zsnap-health read the bucket: {summary}");

    // A bundle as distributions ship them (many CAs, text between them) with ours appended.
    let system = std::fs::read("/etc/ssl/certs/ca-certificates.crt").expect("the system's CA bundle");
    let mut many = system.clone();
    many.extend(std::fs::read(&lab.front.ca).expect("our CA"));
    std::fs::write(lab.dir.join("many.pem"), &many).expect("write bundle");
    lab.round_trip("many.bin", &data(MIB, 62), &[("AWS_CA_BUNDLE", &lab.path("many.pem"))]);

    // The bundle adds to the system roots: with a second front's certificate as the
    // "system" roots (SSL_CERT_FILE, which the system-root loader reads), both fronts are
    // trusted at once.
    let second = TlsFront::start(&lab.dir, "second", &lab.ctx.bench.endpoint);
    let system_root = second.ca.display().to_string();
    let both = [("AWS_CA_BUNDLE", ca.as_str()), ("SSL_CERT_FILE", system_root.as_str())];
    lab.round_trip("first-front.bin", &data(6 * MIB, 63), &both);
    let url = lab.ctx.url("first-front.bin");
    let mut c = lab.cmd("s3get", &[&url], &both);
    c.env("ZSNAP_S3_ENDPOINT", &second.endpoint);
    let got = run(c, None, TIMEOUT).success();
    assert!(got.stdout == data(6 * MIB, 63), "read back through the second front");
}

#[test]
fn ca_bundle_in_the_profile_trusts_the_server() {
    let lab = Lab::new("tls-profile");
    std::fs::copy(&lab.front.ca, lab.dir.join("lab-ca.pem")).expect("copy CA");
    // `~` is the commands' HOME (the lab dir), as the AWS CLI expands it.
    let config = "[default]\nregion = us-east-1\n\n[profile lab]\nregion = us-east-1\nca_bundle = ~/lab-ca.pem\n";
    std::fs::write(lab.dir.join("aws-config"), config).expect("aws config");
    let file = lab.path("aws-config");
    let url = lab.ctx.url("profile.bin");
    let bytes = data(5 * MIB + 77, 64);
    // --profile on one binary, AWS_PROFILE on the others.
    let env = [("AWS_CONFIG_FILE", file.as_str())];
    lab.run("s3put", &["--profile", "lab", &url], &env, Some(&bytes)).success();
    let profile = [("AWS_CONFIG_FILE", file.as_str()), ("AWS_PROFILE", "lab")];
    let got = lab.run("s3get", &[&url], &profile, None).success();
    assert!(got.stdout == bytes, "{} bytes back for {} put", got.stdout.len(), bytes.len());
    lab.plan_list(&profile).success();
    // The default profile names no bundle: refused.
    lab.run("s3get", &[&url], &env, None).fails(71, "certificate");
    // AWS_CA_BUNDLE beats the profile, as for the AWS CLI: a missing one is not skipped.
    let missing = lab.path("missing.pem");
    let env_too = [("AWS_CONFIG_FILE", file.as_str()), ("AWS_PROFILE", "lab"), ("AWS_CA_BUNDLE", missing.as_str())];
    lab.run("s3get", &[&url], &env_too, None).fails(71, &format!("CA bundle {missing} (AWS_CA_BUNDLE) cannot be read"));
}

#[test]
fn a_bundle_that_cannot_serve_is_one_line_and_exit_71() {
    let lab = Lab::new("tls-bad");
    let url = lab.ctx.url("never");
    std::fs::write(lab.dir.join("random.pem"), data(4096, 65)).expect("write");
    let missing = lab.path("missing.pem");
    let random = lab.path("random.pem");
    // A private key is PEM, but no certificate.
    let key = lab.front.key.display().to_string();
    let cases = [
        (missing.as_str(), "cannot be read: No such file or directory"),
        (random.as_str(), "holds no PEM certificate"),
        (key.as_str(), "holds no PEM certificate"),
        (lab.dir.to_str().expect("utf-8"), "cannot be read: Is a directory"),
    ];
    for (path, why) in cases {
        let env = [("AWS_CA_BUNDLE", path)];
        let want = format!("CA bundle {path} (AWS_CA_BUNDLE) {why}");
        lab.run("s3put", &[&url], &env, Some(b"never stored")).fails(71, &want);
        lab.run("s3get", &[&url], &env, None).fails(71, &want);
        lab.plan_list(&env).fails(71, &want);
        // zsnap-health's verdict for a bucket it cannot read is critical, with the cause.
        lab.health(&env).fails(2, &want);
    }
    // The same from a profile names the profile and its file.
    std::fs::write(lab.dir.join("aws-config"), format!("[profile lab]\nca_bundle = {missing}\n")).expect("config");
    let file = lab.path("aws-config");
    let env = [("AWS_CONFIG_FILE", file.as_str()), ("AWS_PROFILE", "lab")];
    let want = format!("CA bundle {missing} (ca_bundle of profile 'lab' in {file}) cannot be read");
    lab.run("s3get", &[&url], &env, None).fails(71, &want);
    assert!(lab.ctx.pending_uploads().is_empty(), "nothing was started");
}
