//! Client-side encryption (age): a backup host with only the public recipient backs up a
//! full and incrementals, prunes and passes health; the stored bytes are age files with no
//! plaintext in them; only the identity restores, and a missing identity, a wrong one and
//! a flipped byte each fail with their own code, the target left as it was.

use crate::common::*;
use age::secrecy::ExposeSecret;
use std::path::PathBuf;

const MARKER: &[u8] = b"ZSNAP-PLAINTEXT-MARKER-7f3a9c";

/// A new identity written to a file of the test's; returns (identity file, recipient).
fn identity(site: &Site, tag: &str) -> (PathBuf, String) {
    let id = age::x25519::Identity::generate();
    let path = site.ctx.bench.work.join(format!("{}-{tag}.key", site.pool.name));
    std::fs::write(&path, format!("# zsnap test identity\n{}\n", id.to_string().expose_secret())).expect("identity");
    (path, id.to_public().to_string())
}

/// A file whose plaintext would show in any unencrypted copy.
fn marked(len: usize, seed: u64) -> Vec<u8> {
    let mut v = data(len, seed);
    for at in (0..len.saturating_sub(MARKER.len())).step_by(64 << 10) {
        v[at..at + MARKER.len()].copy_from_slice(MARKER);
    }
    v
}

fn stored(site: &Site, key: &str) -> Vec<u8> {
    let mut c = rclone(&site.ctx);
    c.args(["cat", &format!("t:{}/{}{key}", site.ctx.bench.bucket, site.ctx.prefix)]);
    run(c, None, TIMEOUT).success().stdout
}

#[test]
fn a_host_with_only_the_recipient_backs_up_and_only_the_identity_restores() {
    let mut site = Site::new("enc-roundtrip", "en");
    let (key, recipient) = identity(&site, "id");
    let (other, _) = identity(&site, "other");
    let fp = zsnap::crypt::fingerprint(&recipient);
    // The backup host's settings: the recipient only; no compression, so any plaintext
    // that reached the bucket would show.
    site.set("ZSNAP_ENCRYPT_TO", &recipient);
    site.set("ZSNAP_COMPRESSOR", "none");

    site.write("a.bin", &marked(3 * MIB, 101));
    site.snapshot("s1");
    let out = site.run("zsnap-backup", &[]).success();
    let r = out.json();
    assert_eq!(r["encrypted_to"], serde_json::json!([fp]), "{r}");
    site.write("b.bin", &marked(MIB, 102));
    site.snapshot("s2");
    site.write("c.bin", &marked(MIB, 103));
    site.snapshot("s3");
    site.run("zsnap-backup", &[]).success();
    let t3 = tree(&site.dir());

    let keys = site.keys();
    assert_eq!(keys.len(), 3, "{keys:?}");
    for k in &keys {
        assert!(k.ends_with(&format!(",enc=age.{fp}")), "the key records the recipient: {k}");
        let bytes = stored(&site, k);
        assert!(bytes.starts_with(b"age-encryption.org/v1\n-> X25519 "), "{k} is an age file");
        assert!(!bytes.windows(MARKER.len()).any(|w| w == MARKER), "{k} holds plaintext");
    }
    assert!(keys.iter().any(|k| k.contains("kind=inc")), "incrementals are encrypted too: {keys:?}");
    let list = site.run("zsnap-restore", &["list", "--json"]).success().json_lines();
    assert!(list.iter().all(|l| l["encrypted_to"] == serde_json::json!([fp])), "{list:?}");

    // Prune and health need no secret; --deep says in one line that it needs the identity.
    site.run("zsnap-prune", &["--dry-run"]).success();
    site.run("zsnap-health", &[]).success();
    let deep = site.run("zsnap-health", &["--deep"]);
    assert_eq!(deep.code(), 2, "{}", deep.stderr);
    assert!(deep.text().contains("--deep needs --identity"), "{}\n{}", deep.text(), deep.stderr);
    site.run("zsnap-health", &["--deep", "--identity", &key.display().to_string()]).success();
    // The restore drill decrypts with the identity given as a flag, and without one says
    // what it needs (it received nothing).
    let drill =
        site.run("zsnap-health", &["--restore-drill", &site.pool.name, "--identity", &key.display().to_string()]);
    assert!(
        drill.json_lines().iter().any(|l| l["check"] == "restore-drill" && l["severity"] == "ok"),
        "{}\n{}",
        drill.text(),
        drill.stderr
    );
    let blind = site.run("zsnap-health", &["--restore-drill", &site.pool.name]);
    assert_eq!(blind.code(), 2, "{}", blind.stderr);
    assert!(blind.text().contains("give --identity FILE"), "{}", blind.text());

    // Without the identity, with another one, and with a flipped byte: refused, each with its
    // own code, and the target never created.
    let target = site.pool.ds("r");
    let out = site.run("zsnap-restore", &["latest", "--target", &target]).fails(64, "is encrypted (to ");
    assert!(out.stderr.contains("give --identity FILE or set AGE_IDENTITY_FILE"), "{}", out.stderr);
    assert!(!site.exists(&target));
    site.run("zsnap-restore", &["latest", "--target", &target, "--identity", &other.display().to_string()])
        .fails(81, "opens only");
    assert!(!site.exists(&target));

    // With it: the same files.
    site.run("zsnap-restore", &["latest", "--target", &target, "--identity", &key.display().to_string()]).success();
    assert_same(&tree(&site.pool.mount.join("r")), &t3, "restored with the identity");

    let fresh = site.pool.ds("f");
    site.corrupt("s3");
    let out = site.run("zsnap-restore", &["latest", "--target", &fresh, "--identity", &key.display().to_string()]);
    let out = out.fails_last(65, "zsnap-restore", "is destroyed again");
    assert!(out.stderr.contains("encrypted data is corrupt or cut"), "{}", out.stderr);
    assert!(!site.exists(&fresh), "nothing of a corrupt chain is kept");
}

#[test]
fn turning_encryption_on_or_off_starts_a_new_full_and_added_recipients_wait_for_it() {
    let mut site = Site::new("enc-chains", "ec");
    let (_, first) = identity(&site, "a");
    let (_, second) = identity(&site, "b");
    let (fa, fb) = (zsnap::crypt::fingerprint(&first), zsnap::crypt::fingerprint(&second));
    site.write("a.bin", &data(MIB, 111));
    site.snapshot("s1");
    site.run("zsnap-backup", &[]).success();

    // On: the plaintext chain is not extended by an encrypted incremental.
    site.set("ZSNAP_ENCRYPT_TO", &first);
    site.snapshot("s2");
    let r = site.run("zsnap-backup", &[]).success().json();
    assert!(r["key"].as_str().unwrap_or("").contains("kind=full"), "encryption starts with a full: {r}");
    // A recipient added: incrementals stay with the chain's, a --full takes both.
    site.set("ZSNAP_ENCRYPT_TO", &format!("{first} {second}"));
    site.snapshot("s3");
    let plan = site.run("zsnap-plan", &["backup"]).success().json_lines();
    let send = plan.iter().find(|l| l["action"] == "send").expect("a send");
    assert_eq!((send["kind"].as_str(), send["encrypted_to"].clone()), (Some("inc"), serde_json::json!([fa])));
    let r = site.run("zsnap-backup", &["--full"]).success().json();
    let mut both = vec![fa.clone(), fb];
    both.sort();
    assert_eq!(r["encrypted_to"], serde_json::json!(both), "{r}");
    // Off: a new plaintext full, not an incremental of the encrypted chain.
    site.set("ZSNAP_ENCRYPT_TO", "");
    site.write("d.bin", &data(MIB, 112));
    site.snapshot("s4");
    let plan = site.run("zsnap-plan", &["backup"]).success().json_lines();
    let send = plan.iter().find(|l| l["action"] == "send").expect("a send");
    assert!(send["encrypted_to"] == serde_json::json!([]), "{send}");
    assert!(send["kind"] == "full" || send["from"] == "s1", "never an incremental of an encrypted chain: {send}");
}

#[test]
fn s3put_and_s3get_encrypt_and_decrypt_without_the_scripts() {
    let ctx = Ctx::new("enc-binaries");
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    let key = ctx.bench.work.join(format!("enc-binaries-{}.key", std::process::id()));
    std::fs::write(&key, id.to_string().expose_secret()).expect("identity");
    let body = marked(7 * MIB, 121);
    let r = ctx.put("obj", &body, &["--encrypt-to", &recipient, "--part-size", "5M"]).success().json();
    assert_eq!(r["encrypted_to"], serde_json::json!([zsnap::crypt::fingerprint(&recipient)]));
    let raw = ctx.get("obj", &[]).success().stdout;
    assert!(raw.starts_with(b"age-encryption.org/v1\n") && !raw.windows(MARKER.len()).any(|w| w == MARKER));
    let back = ctx.get("obj", &["--decrypt", "--identity", &key.display().to_string()]).success().stdout;
    assert!(back == body, "decrypted byte for byte");
    ctx.get("obj", &["--decrypt"]).fails(64, "give --identity FILE or set AGE_IDENTITY_FILE");
    let other = ctx.bench.work.join(format!("enc-binaries-{}-other.key", std::process::id()));
    std::fs::write(&other, age::x25519::Identity::generate().to_string().expose_secret()).expect("other");
    ctx.get("obj", &["--decrypt", "--identity", &other.display().to_string()]).fails(81, "no identity in");
    // A zsnap1 key must be given exactly the recipients it names.
    let k = "tank/d/@s1/zsnap1,kind=full,guid=1,time=2,z=none";
    ctx.put(k, b"x", &["--zfs-stream", "--encrypt-to", &recipient]).fails(64, "the key says not encrypted");
}

/// A custom compressor pair (how encryption was done before ENCRYPT_TO) keeps working, and
/// its DECOMPRESS now runs inside s3get (--filter), so the gate stands between it and zfs
/// recv: a DECOMPRESS that cuts the stream is refused and nothing of it is kept.
#[test]
fn a_custom_decompress_runs_behind_the_gate() {
    let site = Site::new("enc-custom", "eu");
    std::fs::write(&site.config, "[compressor:gz]\nCOMPRESS=gzip -1 -c\nDECOMPRESS=gzip -d -c\n").expect("config");
    site.write("a.bin", &data(2 * MIB, 131));
    site.snapshot("s1");
    site.run("zsnap-backup", &["--compressor", "gz"]).success();
    let t1 = tree(&site.dir());
    let plan = site.run("zsnap-restore", &["latest", "--target", &site.pool.ds("x"), "--dry-run"]).success();
    assert!(plan.text().starts_with("s3get --filter 'gzip -d -c' --zfs-stream --expect-guid "), "{}", plan.text());
    let ok = site.pool.ds("ok");
    site.run("zsnap-restore", &["latest", "--target", &ok]).success();
    assert_same(&tree(&site.pool.mount.join("ok")), &t1, "restored through the custom DECOMPRESS");

    // The same object read back through a DECOMPRESS that cuts it short.
    std::fs::write(&site.config, "[compressor:gz]\nCOMPRESS=gzip -1 -c\nDECOMPRESS=gzip -d -c | head -c 300000\n")
        .expect("config");
    let cut = site.pool.ds("cut");
    let out = site.run("zsnap-restore", &["latest", "--target", &cut]);
    assert!(matches!(out.code(), 65 | 67), "the gate refuses the cut stream: {}", out.stderr);
    assert!(!site.exists(&cut), "nothing of it is kept");
}
