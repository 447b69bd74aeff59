//! The stream gate, s3put/s3get and zsnap-health --deep on a matrix of real OpenZFS 2.3
//! streams (tests/fixtures/openzfs, made on the bench's guest by its `generate`): full, -i,
//! -I, -p, -R, -R -I, -c (lz4, zstd), -L, -L -c -e, -e, a sparse file, a zvol, raw -w full
//! and incremental, an incremental from a bookmark, and a resumed `zfs send -t`. Every one
//! passes the gate with the guids `zfs get guid` gave, comes back byte-identical, and (but
//! the compound -R/-I ones, which are not backup objects) is stored with its chain under
//! zsnap1 keys that `zsnap-health --deep` finds whole. Damaged ones commit nothing.
//! Needs only the Garage bench: the streams are files, no pool is used.

use crate::common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const DIR: &str = "tests/fixtures/openzfs";
const HEADER: &str = "name\tparent\tcommand\tbytes\tsha256\tcrc32\ttoguid\tfromguid\tsnapshot\ttime";

/// One line of MANIFEST.tsv, with its stream decompressed and checked against it.
struct Fixture {
    name: String,
    parent: Option<String>,
    command: String,
    /// The snapshot sent (for -R and -I, the one named on the command line).
    snapshot: String,
    toguid: String,
    /// Of the origin (snapshot or bookmark); "0" for a full stream.
    fromguid: String,
    time: i64,
    stream: Vec<u8>,
}

impl Fixture {
    /// The option letters of the `zfs send` command (`-L -c -e` gives `Lce`).
    fn flags(&self) -> String {
        let words: Vec<&str> = self.command.split_whitespace().collect();
        assert_eq!(&words[..2], ["zfs", "send"], "{}: {}", self.name, self.command);
        words[2..].iter().filter_map(|w| w.strip_prefix('-')).collect()
    }

    fn has(&self, flag: char) -> bool {
        self.flags().contains(flag)
    }

    /// Compound in FORMAT.md's sense (-R, -I: several snapshots): never a backup object.
    fn multi_snapshot(&self) -> bool {
        self.has('R') || self.has('I')
    }

    /// What the gate must call it: OpenZFS writes a compound header for -p too.
    fn kind(&self) -> &'static str {
        if self.multi_snapshot() || self.has('p') {
            "compound"
        } else if self.parent.is_some() {
            "incremental"
        } else {
            "full"
        }
    }

    fn raw(&self) -> bool {
        self.has('w')
    }

    /// The key's `send=` letters, in the key's order (L c e p w).
    fn send_letters(&self) -> String {
        "Lcepw".chars().filter(|&c| self.has(c)).collect()
    }

    fn snap(&self) -> &str {
        self.snapshot.split_once('@').map(|(_, s)| s).unwrap_or_else(|| panic!("{}: no @", self.snapshot))
    }
}

fn sha256(data: &[u8]) -> String {
    let out = run(Command::new("sha256sum"), Some(data), TIMEOUT).success();
    out.text().split_whitespace().next().unwrap_or_default().to_string()
}

/// Every fixture, in manifest order (each parent before its children), each stream checked
/// against its line: length, CRC-32 and sha256.
fn fixtures() -> Vec<Fixture> {
    let manifest = std::fs::read_to_string(repo_path(&format!("{DIR}/MANIFEST.tsv"))).expect("MANIFEST.tsv");
    let mut lines = manifest.lines();
    assert_eq!(lines.next(), Some(HEADER), "MANIFEST.tsv header");
    let mut all: Vec<Fixture> = Vec::new();
    for line in lines {
        let c: Vec<&str> = line.split('\t').collect();
        assert_eq!(c.len(), 10, "MANIFEST.tsv line {line:?}");
        let name = c[0].to_string();
        let path = repo_path(&format!("{DIR}/{name}.zfs.zst"));
        let packed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let stream = zstd::decode_all(&packed[..]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(stream.len().to_string(), c[3], "{name}: length");
        assert_eq!(crc32fast::hash(&stream).to_string(), c[5], "{name}: crc32");
        assert_eq!(sha256(&stream), c[4], "{name}: sha256");
        let parent = (c[1] != "-").then(|| c[1].to_string());
        if let Some(p) = &parent {
            assert!(all.iter().any(|f| &f.name == p), "{name}: parent {p} is not listed before it");
        }
        assert!(!all.iter().any(|f| f.name == name), "{name} listed twice");
        all.push(Fixture {
            name,
            parent,
            command: c[2].to_string(),
            stream,
            toguid: c[6].to_string(),
            fromguid: c[7].to_string(),
            snapshot: c[8].to_string(),
            time: c[9].parse().unwrap_or_else(|e| panic!("{line:?}: time: {e}")),
        });
    }
    all
}

fn by_name<'a>(all: &'a [Fixture], name: &str) -> &'a Fixture {
    all.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no fixture {name}"))
}

/// `f` and its ancestors, the root first.
fn chain<'a>(all: &'a [Fixture], f: &'a Fixture) -> Vec<&'a Fixture> {
    let mut v = vec![f];
    while let Some(p) = &v[v.len() - 1].parent {
        v.push(by_name(all, p));
    }
    v.reverse();
    v
}

/// A stream summary's substreams as (toguid, fromguid, toname); a plain stream is its own.
fn substreams(s: &Value) -> Vec<(String, String, String)> {
    let one = |x: &Value| {
        let t = |k: &str| x[k].as_str().unwrap_or_else(|| panic!("no {k} in {x}")).to_string();
        (t("toguid"), t("fromguid"), t("toname"))
    };
    match s["substreams"].as_array() {
        Some(subs) => subs.iter().map(one).collect(),
        None => vec![one(s)],
    }
}

#[test]
fn matrix_manifest_covers_every_kind_of_stream() {
    let all = fixtures();
    let names: BTreeSet<&str> = all.iter().map(|f| f.name.as_str()).collect();
    // Exactly the fixtures on disk, and small.
    let mut on_disk = BTreeSet::new();
    let mut packed = 0;
    for e in std::fs::read_dir(repo_path(DIR)).expect("fixture dir") {
        let e = e.expect("dir entry");
        let file = e.file_name().to_string_lossy().into_owned();
        if let Some(name) = file.strip_suffix(".zfs.zst") {
            on_disk.insert(name.to_string());
            packed += e.metadata().expect("metadata").len();
        }
    }
    assert_eq!(on_disk.iter().map(String::as_str).collect::<BTreeSet<_>>(), names, "fixtures vs MANIFEST.tsv");
    assert!(packed < 2 * MIB as u64, "fixtures take {packed} bytes");

    // The matrix: every form of `zfs send` asked for, by the command's options.
    let flags: BTreeSet<String> = all.iter().map(|f| f.flags()).collect();
    for want in ["", "i", "I", "p", "R", "RI", "c", "L", "Lce", "e", "w", "wi", "t"] {
        assert!(flags.contains(want), "no `zfs send -{want}` stream: {flags:?}");
    }
    let cmd = |name: &str| by_name(&all, name).command.clone();
    assert!(cmd("bookmark").contains("#b1 "), "{}", cmd("bookmark"));
    assert!(cmd("c-lz4").contains("/lz4@") && cmd("c-zstd").contains("/zstd@"));
    assert!(cmd("zvol").contains("/vol@") && cmd("sparse").contains("/sparse@"));
    for f in &all {
        // Parents: an incremental has one, from that parent's snapshot; a full has none.
        match &f.parent {
            None => assert_eq!(f.fromguid, "0", "{}", f.name),
            Some(p) => {
                let p = by_name(&all, p);
                assert!(
                    f.fromguid == p.toguid,
                    "{}: from {} but parent {} is {}",
                    f.name,
                    f.fromguid,
                    p.name,
                    p.toguid
                );
                assert_eq!(f.raw(), p.raw(), "{}: raw and its parent", f.name);
            }
        }
        assert!(f.snapshot.contains("/fx/") && f.time > 1_700_000_000, "{}", f.name);
        if !f.has('t') {
            assert!(f.command.ends_with(&f.snapshot), "{}: {} does not send {}", f.name, f.command, f.snapshot);
        }
    }
}

#[test]
fn matrix_every_stream_passes_the_gate_and_comes_back_identical() {
    let ctx = Ctx::new("matrix-gate");
    let all = fixtures();
    // name → its substreams' toguids, as the gate read them.
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in &all {
        let key = format!("gate/{}", f.name);
        let r = ctx.put(&key, &f.stream, &["--zfs-stream", "--compress", "zstd"]).success().json();
        let (n, len) = (&f.name, f.stream.len() as u64);
        assert_eq!((r["compressor"].as_str(), r["input_bytes"].as_u64()), (Some("zstd"), Some(len)), "{n}: {r}");
        let s = &r["stream"];
        assert_eq!(s["bytes"], len, "{n}: {r}");
        assert_eq!(s["kind"], f.kind(), "{n}: {r}");
        assert_eq!(s["raw"], f.raw(), "{n}: {r}");
        assert_eq!(s["dedup"], false, "{n}: {r}");
        assert!(s["records"].as_u64().unwrap_or(0) >= 3, "{n}: {r}");
        assert_eq!(s["toname"], f.snapshot.as_str(), "{n}: {r}");
        // The origin is the first substream's; the guid is that of the snapshot sent (for
        // -R, the last substream named like the header, not a child's that follows it).
        assert_eq!(s["fromguid"], f.fromguid.as_str(), "{n}: {r}");
        let subs = substreams(s);
        assert_eq!(s["toguid"], f.toguid.as_str(), "{n}: {r}");
        // The snapshot sent is in it with the guid zfs gave, and every substream builds on
        // the parent stream or an earlier substream: the manifest's chain, as the gate saw it.
        assert!(
            subs.iter().any(|(to, _, name)| to == &f.toguid && name == &f.snapshot),
            "{n}: {} (guid {}) is not among its substreams: {r}",
            f.snapshot,
            f.toguid
        );
        let mut known: BTreeSet<String> =
            f.parent.as_ref().map(|p| seen[p].iter().cloned().collect()).unwrap_or_default();
        for (to, from, name) in &subs {
            assert!(from == "0" || known.contains(from), "{n}: {name} from {from}, which it does not follow: {r}");
            known.insert(to.clone());
        }
        if f.kind() == "compound" {
            let count = subs.len();
            assert!(count >= if f.multi_snapshot() { 2 } else { 1 }, "{n}: {count} substreams: {r}");
        }
        seen.insert(f.name.clone(), subs.into_iter().map(|(to, ..)| to).collect());

        // Stored compressed; back through the decoder and s3get's own gate, byte for byte.
        let stored = ctx.get(&key, &[]).success().stdout;
        assert_eq!(r["bytes"], stored.len() as u64, "{n}: {r}");
        assert!(
            zstd::decode_all(&stored[..]).ok().as_deref() == Some(&f.stream[..]),
            "{n}: the object is not the stream"
        );
        let mut args = vec!["--decompress", "zstd", "--zfs-stream"];
        if f.kind() != "compound" {
            args.extend(["--expect-guid", &f.toguid, "--expect-from", &f.fromguid]);
        }
        let back = ctx.get(&key, &args).success().stdout;
        assert!(back == f.stream, "{n}: the stream came back different");
    }
    assert!(ctx.pending_uploads().is_empty());
}

/// The zsnap1 key of `f` (in its chain) for the backups of `dataset`.
fn backup_key(all: &[Fixture], f: &Fixture, dataset: &str) -> String {
    let mut key = format!("{dataset}/@{}/zsnap1,", f.snap());
    match &f.parent {
        None => key.push_str(&format!("kind=full,guid={}", f.toguid)),
        Some(p) => {
            let p = by_name(all, p);
            key.push_str(&format!("kind=inc,guid={},from={},fromsnap={}", f.toguid, p.toguid, p.snap()));
        }
    }
    key.push_str(&format!(",time={},z=zstd", f.time));
    let letters = f.send_letters();
    if !letters.is_empty() {
        key.push_str(&format!(",send={letters}"));
    }
    key
}

fn health(ctx: &Ctx, dataset: &str, now: i64) -> Output {
    let config = ctx.bench.work.join("matrix-empty.conf");
    std::fs::write(&config, "").expect("write config");
    let mut c = ctx.cmd("zsnap-health");
    c.args(["--json", "--deep", "--dataset", dataset, "--s3-prefix", &ctx.prefix, "--bucket", &ctx.bench.bucket])
        .args(["--now", &now.to_string()])
        .env("ZSNAP_CONFIG", &config);
    run(c, None, TIMEOUT)
}

#[test]
fn matrix_backup_chains_pass_zsnap_health_deep() {
    let ctx = Ctx::new("matrix-health");
    let all = fixtures();
    let mut checked = 0;
    for f in &all {
        let links = chain(&all, f);
        if links.iter().any(|l| l.multi_snapshot()) {
            continue;
        }
        let dataset = format!("fx/{}", f.name);
        for l in &links {
            let key = backup_key(&all, l, &dataset);
            let r = ctx.put(&key, &l.stream, &["--zfs-stream", "--compress", "zstd"]).success().json();
            assert_eq!(r["stream"]["toguid"], l.toguid.as_str(), "{key}: {r}");
        }
        let now = links.iter().map(|l| l.time).max().unwrap_or(0) + 60;
        let out = health(&ctx, &dataset, now).success();
        let lines = out.json_lines();
        let summary = lines.last().expect("a summary line");
        assert_eq!(
            (summary["status"].as_str(), summary["findings"].as_u64()),
            (Some("ok"), Some(0)),
            "{dataset}: {lines:?}"
        );
        let ds = lines.iter().find(|l| l["dataset"] == dataset.as_str() && l["status"].is_string());
        let ds = ds.unwrap_or_else(|| panic!("{dataset}: no dataset line in {lines:?}"));
        assert_eq!(ds["status"], "ok", "{dataset}: {ds}");
        assert_eq!(ds["backups"], links.len(), "{dataset}: {ds}");
        assert_eq!(ds["chain_length"], links.len(), "{dataset}: {ds}");
        assert_eq!(ds["broken"], 0, "{dataset}: {ds}");
        checked += 1;
    }
    assert_eq!(checked, all.iter().filter(|f| !f.multi_snapshot()).count());
    assert!(checked >= 14, "only {checked} chains checked");
}

/// Nothing under `key`, and no upload left in progress under the test's prefix.
fn nothing_stored(ctx: &Ctx, key: &str) {
    ctx.get(key, &[]).fails(66, "no such object");
    assert!(ctx.pending_uploads().is_empty(), "uploads left in progress after {key}");
}

#[test]
fn matrix_damaged_streams_commit_nothing_and_fail_the_checks() {
    let ctx = Ctx::new("matrix-damage");
    let all = fixtures();
    let (raw, plain) = (by_name(&all, "raw-full"), by_name(&all, "full"));

    // A raw stream one byte short: cut (67), under a plain key and under its backup key.
    let len = raw.stream.len();
    let short = &raw.stream[..len - 1];
    let want = format!("stream cut after {} bytes", len - 1);
    ctx.put("cut/raw-full", short, &["--zfs-stream", "--compress", "zstd"]).fails(67, &want);
    nothing_stored(&ctx, "cut/raw-full");
    let key = backup_key(&all, raw, "fx/cut");
    assert!(key.ends_with(",send=w"), "{key}");
    ctx.put(&key, short, &["--zfs-stream", "--compress", "zstd"]).fails(67, &want);
    nothing_stored(&ctx, &key);

    // A stream that is not raw under a send=w key: 65, before anything is stored.
    let key = format!("fx/notraw/@s1/zsnap1,kind=full,guid={},time={},z=zstd,send=w", plain.toguid, plain.time);
    let out = ctx.put(&key, &plain.stream, &["--zfs-stream", "--compress", "zstd"]);
    out.fails(65, "not raw");
    nothing_stored(&ctx, &key);

    // One flipped bit in the encrypted payload: the next record's checksum sees it (65).
    let mut flipped = raw.stream.clone();
    flipped[len / 2] ^= 0x08;
    ctx.put("flip/raw-full", &flipped, &["--zfs-stream", "--compress", "zstd"]).fails(65, "checksum mismatch");
    nothing_stored(&ctx, "flip/raw-full");

    // An incremental under its backup key, but from another parent: 65.
    let inc = by_name(&all, "inc");
    let liar = backup_key(&all, inc, "fx/liar").replace(&format!("from={}", plain.toguid), "from=12345");
    ctx.put(&liar, &inc.stream, &["--zfs-stream"]).fails(65, "expected an incremental from guid 12345");
    nothing_stored(&ctx, &liar);

    // zsnap-health --deep fails (2) on an object that is not whole: stored under a backup
    // key through --exec without the gate, as a careless writer could.
    let file = ctx.bench.work.join(format!("matrix-{}-raw-full.zfs", std::process::id()));
    std::fs::write(&file, &raw.stream).expect("write stream");
    let key = backup_key(&all, raw, "fx/bad");
    let exec = format!("head -c {} {}", len - 1000, file.display());
    let mut c = ctx.cmd("s3put");
    c.args(["--exec", &exec, "--compress", "zstd"]).arg(ctx.url(&key));
    run(c, None, TIMEOUT).success();
    let _ = std::fs::remove_file(&file);
    let out = health(&ctx, "fx/bad", raw.time + 60);
    assert_eq!(out.code(), 2, "{}\n{}", out.stderr, out.text());
    let lines = out.json_lines();
    let cut = |l: &Value| {
        l["check"] == "deep:stream"
            && l["severity"] == "critical"
            && l["message"].as_str().is_some_and(|m| m.contains(&format!("stream cut after {} bytes", len - 1000)))
    };
    assert!(lines.iter().any(cut), "{lines:?}");
    assert_eq!(lines.last().map(|l| l["status"].clone()), Some("critical".into()), "{lines:?}");
    // And s3get --zfs-stream says the same of it.
    ctx.get(&key, &["--decompress", "zstd", "--zfs-stream"]).fails(67, "stream cut");

    // A broken chain: an incremental whose parent was never stored.
    let key = backup_key(&all, inc, "fx/orphan");
    ctx.put(&key, &inc.stream, &["--zfs-stream", "--compress", "zstd"]).success();
    let out = health(&ctx, "fx/orphan", inc.time + 60);
    assert_eq!(out.code(), 2, "{}\n{}", out.stderr, out.text());
    let lines = out.json_lines();
    assert!(lines.iter().any(|l| l["check"] == "chain" && l["severity"] == "critical"), "{lines:?}");
}
