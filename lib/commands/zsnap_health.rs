//! `zsnap-health`: is every backup complete, intact and fresh. It reads the bucket (one
//! listing pass over the prefix, or the dataset's, and one ListMultipartUploads), decides with the pure checks in
//! `health`, and prints findings; it exits 0, 1 or 2 by the worst finding, never a count.

use crate::catalog::{self, key};
use crate::cli::flags::{Flag, Page};
use crate::cli::output::emit;
use crate::cli::s3_flags::{self, S3Args};
use crate::cli::settings_flags;
use crate::cli::values::parse_duration;
use crate::cli::{early_exit, ExitCode, Failure, COMMON_FLAGS};
use crate::config;
use crate::crypt::Identities;
use crate::health::scope::{self, Place, Scope, Target, Wanted};
use crate::health::{self, DatasetSummary, Finding, Severity, Thresholds};
use crate::plan::restore;
use crate::s3::client::{self, Client};
use crate::s3::uploads;
use lexopt::prelude::*;
use serde_json::{json, Value};
use std::ffi::OsString;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

const FLAGS: &[Flag] = &[
    Flag {
        short: Some('d'),
        long: "dataset",
        value: Some("DATASET"),
        doc: "Check only this dataset. Default $ZSNAP_DATASET, then DATASET in [main]; without one, every \
              dataset with backups under the prefix.",
    },
    Flag {
        short: None,
        long: "all",
        value: None,
        doc: "Check every dataset of the config's [fs:DATASET] sections, each with its own settings (as if \
              given with --dataset; one listing per bucket and prefix), and report each, one with no backup \
              as critical. Not with --dataset; a config without [fs:] sections is refused (64).",
    },
    Flag {
        short: None,
        long: "recursive",
        value: None,
        doc: "Check the dataset (--dataset, $ZSNAP_DATASET or DATASET) and its descendants: those with backups \
              under its bucket and prefix, and those with an [fs:] section (checked where it puts them). \
              Reads no pool: a descendant that has neither is not seen. The dataset itself with no backup is \
              critical.",
    },
    Flag {
        short: None,
        long: "warn-age",
        value: Some("AGE"),
        doc: "Warning when a dataset's newest backup (snapshot creation time) is this old (default 26h).",
    },
    Flag {
        short: None,
        long: "crit-age",
        value: Some("AGE"),
        doc: "Critical when a dataset's newest backup is this old (default 50h).",
    },
    Flag {
        short: None,
        long: "stale-uploads",
        value: Some("AGE"),
        doc: "Warning for multipart uploads in progress at least this long (default 24h).",
    },
    Flag { short: None, long: "clean", value: None, doc: "Abort the stale uploads found." },
    Flag {
        short: None,
        long: "deep",
        value: None,
        doc: "Also download every committed object, decompress it by its recorded compressor, and check its \
              byte count, CRC32, every send-stream END fletcher-4 checksum and its guids against the key (and so \
              the chain's guid continuity). Needs no pool.",
    },
    Flag {
        short: None,
        long: "identity",
        value: Some("FILE"),
        doc: "With --deep: the age identity file that decrypts encrypted backups (default $AGE_IDENTITY_FILE, \
              then IDENTITY_FILE), so their streams are checked too. Without it, encrypted backups are not \
              checked and one critical finding (deep:identity) says so; everything else needs no secret.",
    },
    Flag {
        short: None,
        long: "sample",
        value: Some("N"),
        doc: "With --deep: only N objects per dataset, spread out, newest always.",
    },
    Flag {
        short: None,
        long: "chain",
        value: Some("SNAPSHOT|latest"),
        doc: "With --deep: only the objects of the chain that restores SNAPSHOT.",
    },
    Flag {
        short: None,
        long: "restore-drill",
        value: Some("POOL"),
        doc: "Receive each dataset's latest chain into POOL/zsnap-drill-PID with the commands zsnap-plan \
              restore prints, compare its snapshot guids with the chain, and destroy it.",
    },
    Flag { short: None, long: "json", value: None, doc: "JSON lines (default when stdout is not a terminal)." },
    Flag { short: None, long: "table", value: None, doc: "A table for people, even when stdout is not a terminal." },
    Flag {
        short: None,
        long: "prometheus",
        value: Some("FILE"),
        doc: "Write a node_exporter textfile to FILE (through FILE.tmp and a rename).",
    },
    Flag {
        short: None,
        long: "ping",
        value: Some("URL"),
        doc: "POST the summary to URL on ok or warning, to URL/fail on critical (10 s bound). A failed \
              ping is reported on stderr and changes nothing else.",
    },
    Flag {
        short: None,
        long: "now",
        value: Some("SECONDS"),
        doc: "Judge ages as if it were this Unix time (for tests and what-ifs).",
    },
];

pub static PAGE: Page = Page {
    name: "zsnap-health",
    synopsis: "zsnap-health [OPTIONS]",
    about: "check that every backup in S3 is complete, restorable and fresh",
    description: "zsnap-health lists the bucket (no pool or zfs needed) and checks, per dataset: every \
incremental's parent (by guid) is committed and itself restorable, a full exists, no snapshot is stored twice \
with the same parent, and the newest backup's snapshot is younger than --warn-age and --crit-age. Multipart \
uploads in progress longer than --stale-uploads are listed (and aborted with --clean).

Output: one JSON line per finding {\"dataset\",\"check\",\"severity\",\"subject\",\"message\"}, one per \
dataset {\"dataset\",\"status\",\"backups\",\"broken\",\"bytes\",\"newest\",\"age_seconds\",\"chain_length\"}, \
then {\"summary\":true,\"status\":\"ok|warning|critical\",\"datasets\",\"findings\",\"stale_uploads\"}, \
also when S3 cannot be read (with \"error\"). With --prometheus, the metrics zsnap_backup_age_seconds, \
zsnap_backup_bytes, zsnap_backup_chain_length, zsnap_backup_status (per dataset), zsnap_uploads_stale and \
zsnap_health_status.

Exit status is the verdict: 0 ok, 1 warning, 2 critical. An S3 failure (missing bucket, bad credentials, \
unreachable endpoint) is critical: exit 2 with one line naming it; a bad flag is 64.",
    groups: &[
        ("Settings", settings_flags::WHERE),
        ("Checks and output", FLAGS),
        ("S3 connection", s3_flags::FLAGS),
        ("General", COMMON_FLAGS),
    ],
    environment: &[
        ("ZSNAP_CONFIG", "configuration file (instead of /etc/zsnap/zsnap.conf)"),
        ("ZSNAP_BUCKET, ZSNAP_S3_PREFIX, ZSNAP_DATASET", "defaults for --bucket, --s3-prefix, --dataset"),
        ("ZSNAP_S3_ENDPOINT", "default for --endpoint"),
        ("AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, AWS_REGION", "as for the AWS CLI"),
        s3_flags::CA_BUNDLE,
    ],
    examples: &[
        ("zsnap-health -b backups", "Every dataset under the bucket's root."),
        ("zsnap-health -d tank/data --warn-age 2h --crit-age 6h --json", "An hourly backup, for a monitor."),
        (
            "zsnap-health --prometheus /var/lib/node_exporter/zsnap.prom --ping https://hc-ping.com/UUID",
            "From cron: metrics and a dead man's switch.",
        ),
    ],
    see_also: "zsnap-plan(1), zsnap-status(1), s3put(1)",
};

/// `--all` or `--recursive`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Each {
    All,
    Recursive,
}

pub struct Args {
    pub flags: config::Flags,
    pub each: Option<Each>,
    pub s3: S3Args,
    pub thresholds: Thresholds,
    pub clean: bool,
    pub deep: bool,
    /// What `--deep` decrypts with: the identity file (resolved with the settings), read
    /// once for every dataset; its error is reported only where a backup is encrypted.
    pub identities: Option<Result<Arc<Identities>, String>>,
    pub drill: Option<String>,
    pub sample: Option<usize>,
    pub chain: Option<restore::Selector>,
    pub json: Option<bool>,
    pub prometheus: Option<String>,
    pub ping: Option<String>,
    pub now: Option<i64>,
}

fn secs(flag: &str, v: String) -> Result<i64, Failure> {
    Ok(parse_duration(flag, &v)?.as_secs() as i64)
}

/// Parse the command line. `Ok(Err(text))` means print `text` and exit 0 (help, man).
pub fn parse(argv: impl IntoIterator<Item = OsString>) -> Result<Result<Args, String>, Failure> {
    let mut p = lexopt::Parser::from_iter(argv);
    let mut a = Args {
        flags: config::Flags::default(),
        each: None,
        s3: S3Args::default(),
        thresholds: Thresholds::default(),
        clean: false,
        deep: false,
        identities: None,
        drill: None,
        sample: None,
        chain: None,
        json: None,
        prometheus: None,
        ping: None,
        now: None,
    };
    while let Some(arg) = p.next()? {
        if crate::cli::completions::asked(&arg) {
            return crate::cli::completions::take(&mut p, &PAGE, &[], &[]).map(Err);
        }
        if let Some(text) = early_exit(&arg, &PAGE) {
            return Ok(Err(text));
        }
        if let Some(name) = settings_flags::name_of(&arg) {
            settings_flags::take(name, &mut p, &mut a.flags)?;
            continue;
        }
        match arg {
            Long("warn-age") => a.thresholds.warn_age = secs("warn-age", p.value()?.string()?)?,
            Long("crit-age") => a.thresholds.crit_age = secs("crit-age", p.value()?.string()?)?,
            Long("stale-uploads") => a.thresholds.stale_uploads = secs("stale-uploads", p.value()?.string()?)?,
            Long("all") | Long("recursive") => {
                let each = if matches!(arg, Long("all")) { Each::All } else { Each::Recursive };
                if a.each.is_some_and(|e| e != each) {
                    return Err(Failure::usage("--all and --recursive do not go together: give one"));
                }
                a.each = Some(each);
            }
            Long("clean") => a.clean = true,
            Long("deep") => a.deep = true,
            Long("identity") => a.flags.identity = Some(p.value()?.string()?),
            Long("restore-drill") => a.drill = Some(p.value()?.string()?),
            Long("sample") => a.sample = Some(crate::cli::values::parse_number("sample", &p.value()?.string()?)?),
            Long("chain") => a.chain = Some(restore::Selector::parse(&p.value()?.string()?)?),
            Long("json") => a.json = Some(true),
            Long("table") => a.json = Some(false),
            Long("prometheus") => a.prometheus = Some(p.value()?.string()?),
            Long("ping") => a.ping = Some(p.value()?.string()?),
            Long("now") => a.now = Some(crate::cli::values::parse_number("now", &p.value()?.string()?)?),
            Long(name) => {
                let name = name.to_string();
                if !a.s3.take(&name, &mut p)? {
                    return Err(Failure::usage(format!("invalid option '--{name}' (see --help)")));
                }
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    if !a.deep && (a.sample.is_some() || a.chain.is_some()) {
        return Err(Failure::usage("--sample and --chain need --deep"));
    }
    if a.each == Some(Each::All) && a.flags.dataset.is_some() {
        return Err(Failure::usage("--all checks every [fs:DATASET] section of the config: give it without --dataset"));
    }
    if a.thresholds.crit_age < a.thresholds.warn_age {
        return Err(Failure::usage("--crit-age must not be shorter than --warn-age"));
    }
    a.flags.endpoint = a.s3.endpoint.take();
    a.flags.region = a.s3.region.take();
    a.flags.profile = a.s3.profile.take();
    Ok(Ok(a))
}

/// What a run found.
#[derive(Default)]
struct Outcome {
    findings: Vec<Finding>,
    datasets: Vec<DatasetSummary>,
    stale_uploads: usize,
    error: Option<String>,
}

impl Outcome {
    fn status(&self) -> Severity {
        if self.error.is_some() {
            Severity::Critical
        } else {
            health::overall(&self.findings)
        }
    }

    fn summary(&self) -> Value {
        let mut v = json!({
            "summary": true,
            "status": self.status().name(),
            "datasets": self.datasets.len(),
            "findings": self.findings.iter().filter(|f| f.severity != Severity::Ok).count(),
            "critical": self.findings.iter().filter(|f| f.severity == Severity::Critical).count(),
            "warning": self.findings.iter().filter(|f| f.severity == Severity::Warning).count(),
            "stale_uploads": self.stale_uploads,
        });
        if let Some(e) = &self.error {
            v["error"] = json!(e);
        }
        v
    }
}

pub fn main(argv: impl IntoIterator<Item = OsString>) -> Result<(), Failure> {
    let mut args = match parse(argv)? {
        Ok(a) => a,
        Err(text) => {
            return crate::cli::output::emit(&text);
        }
    };
    let env = |k: &str| std::env::var(k).ok();
    let settings = config::load(&args.flags, &env)?;
    let scope = match (args.each, &settings.dataset.value) {
        (Some(Each::All), _) if settings.fs_datasets.is_empty() => {
            return Err(Failure::usage(format!(
                "--all needs [fs:DATASET] sections in the config, and {} has none",
                settings.config_file.as_deref().unwrap_or("/etc/zsnap/zsnap.conf (not found)")
            )))
        }
        (Some(Each::All), _) => Scope::All(settings.fs_datasets.clone()),
        (Some(Each::Recursive), _) => Scope::Tree(settings.dataset()?.to_string()),
        (None, Some(d)) => Scope::One(d.clone()),
        (None, None) => Scope::Prefix,
    };
    // Each dataset where its own settings put it, as if given with --dataset.
    let place_of = |ds: Option<&str>| -> Result<Place, Failure> {
        let own;
        let s = match ds {
            Some(d) if settings.dataset.value.as_deref() != Some(d) => {
                own = config::load(&config::Flags { dataset: Some(d.to_string()), ..args.flags.clone() }, &env)?;
                &own
            }
            _ => &settings,
        };
        Ok(Place {
            bucket: s
                .bucket()
                .map_err(|e| match ds {
                    Some(d) => Failure::usage(format!("{d}: {}", e.message)),
                    None => e,
                })?
                .to_string(),
            prefix: s.s3_prefix().to_string(),
            endpoint: s.endpoint.value.clone(),
            region: s.region.value.clone(),
            profile: s.profile.value.clone(),
            identity: s.identity.value.clone(),
        })
    };
    let targets = scope::targets(&scope, &settings.fs_datasets, &place_of)?;
    let now = args.now.unwrap_or_else(crate::calendar::now);
    let mut outcome = Outcome::default();
    let several = targets.len() > 1;
    let runtime = crate::commands::runtime()?;
    let mut failed: Option<Failure> = None;
    for target in &targets {
        // The checks (deep downloads, the drill's commands) use this place's settings.
        let checked = reach(&mut args, &target.place).and_then(|s3| {
            runtime.block_on(async {
                let client = client::connect(&s3).await;
                check(&client, &args, target, now, &mut outcome).await
            })
        });
        // One place failing does not keep the others from being checked.
        if let Err(f) = checked {
            if several {
                let names = match &target.wanted {
                    Wanted::Named(v) => v.clone(),
                    Wanted::Tree { root, .. } => vec![root.clone()],
                    Wanted::Every => vec![String::new()],
                };
                for ds in names {
                    outcome.findings.push(Finding::new(Severity::Critical, &ds, "s3", None, f.message.clone()));
                }
            }
            failed.get_or_insert(f);
        }
    }
    // An S3 failure is a critical verdict for monitoring, reported like any other.
    if let Some(f) = &failed {
        outcome.error = Some(f.message.clone());
    }
    let json = args.json.unwrap_or(!std::io::stdout().is_terminal());
    let text = if json { json_lines(&outcome) } else { table(&outcome) };
    let written = emit(&text);
    if let Some(file) = &args.prometheus {
        if let Err(e) = write_atomically(file, &prometheus(&outcome, now)) {
            eprintln!("zsnap-health: {}", e.message);
            if failed.is_none() {
                return Err(e);
            }
        }
    }
    if let Some(url) = &args.ping {
        if let Err(e) = ping(url, outcome.status(), &outcome.summary().to_string()) {
            eprintln!("zsnap-health: ping {url} failed (verdict unchanged): {e}");
        }
    }
    written?;
    match (failed, outcome.status()) {
        (Some(f), _) => Err(Failure::new(ExitCode::Critical, f.message)),
        (None, Severity::Ok) => Ok(()),
        (None, Severity::Warning) => Err(Failure::new(ExitCode::Warning, "")),
        (None, Severity::Critical) => Err(Failure::new(ExitCode::Critical, "")),
    }
}

/// Point `args` at `place` (its connection, and what --deep decrypts with) and return the
/// connection settings, the environment filled in.
fn reach(args: &mut Args, place: &Place) -> Result<S3Args, Failure> {
    let s3 = args.s3.at(place.endpoint.clone(), place.region.clone(), place.profile.clone())?;
    args.s3 = s3.clone();
    if args.deep || args.drill.is_some() {
        // Read once per place (a passphrase-protected file runs scrypt each time).
        args.identities = place
            .identity
            .as_ref()
            .map(|f| Identities::load(std::slice::from_ref(f)).map(Arc::new).map_err(|e| e.message));
    }
    Ok(s3)
}

async fn check(client: &Client, args: &Args, target: &Target, now: i64, out: &mut Outcome) -> Result<(), Failure> {
    let (bucket, prefix) = (target.place.bucket.as_str(), target.place.prefix.as_str());
    // One listing pass (and one ListMultipartUploads) for one dataset or a hundred.
    let (listed, mut pending) = catalog::listing::read_all(client, bucket, prefix, target.wanted.listing()).await?;
    let catalogs = target.wanted.pick(prefix, listed);
    pending.retain(|u| target.wanted.keeps_upload(prefix, &u.key));
    if catalogs.is_empty() {
        // Nothing backed up anywhere is the worst verdict, not "all 0 datasets are fine": an
        // empty or mistyped prefix must not look healthy to monitoring.
        out.findings.push(Finding::new(
            Severity::Critical,
            "",
            "empty",
            None,
            format!("no committed backup of any dataset under s3://{bucket}/{prefix} (is --s3-prefix right?)"),
        ));
    }
    for cat in &catalogs {
        let ds = cat.dataset.as_str();
        let (found, summary) = health::check_catalog(cat, now, &args.thresholds);
        out.findings.extend(found);
        out.datasets.push(summary);
        if args.deep {
            deep(client, args, bucket, prefix, cat, out).await;
        }
        if let Some(pool) = &args.drill {
            let ctx = crate::plan::Context {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                dataset: ds.to_string(),
                identity: drill_identity(target.place.identity.as_deref(), args.identities.as_ref()),
                ..Default::default()
            };
            let env = drill_env(&args.s3);
            let drilled = match (&args.identities, holds_encrypted(cat)) {
                // The identity could not be read: say why, not "give --identity".
                (Some(Err(message)), true) => Err(message.clone()),
                _ => tokio::task::block_in_place(|| health::drill::run(&ctx, cat, pool, &env)),
            };
            let (severity, message) = match drilled {
                Ok(m) => (Severity::Ok, m),
                Err(m) => (Severity::Critical, format!("restore drill failed: {m}")),
            };
            out.findings.push(Finding::new(severity, ds, "restore-drill", None, message));
        }
        // The dataset's line says the worst of all its findings, the deep and drill ones too.
        let worst = out.findings.iter().filter(|f| f.dataset == *ds).map(|f| f.severity).max();
        if let (Some(w), Some(line)) = (worst, out.datasets.last_mut()) {
            line.status = line.status.max(w);
        }
    }
    let dataset_of = |k: &str| match key::parse(prefix, k) {
        key::ParsedKey::Zsnap(f) => f.dataset,
        key::ParsedKey::Legacy { dataset, .. } => dataset,
        key::ParsedKey::Foreign(_) => String::new(),
    };
    let stale = health::stale_uploads(&pending, now, &args.thresholds, &dataset_of);
    // Counted over every place checked; once aborted, they are stale no more.
    if !args.clean {
        out.stale_uploads += stale.len();
    }
    for (upload, mut finding) in stale {
        if args.clean {
            uploads::abort(client, bucket, &upload).await?;
            // Gone now: nothing left to look at, but say what was done.
            finding.severity = Severity::Ok;
            finding.message.push_str(": aborted");
        }
        out.findings.push(finding);
    }
    Ok(())
}

/// Whether any backup of the catalog is encrypted (so --deep and the drill need the identity).
fn holds_encrypted(cat: &catalog::Catalog) -> bool {
    cat.records.iter().any(|r| !r.encrypted_to.is_empty())
}

/// What the drill's restore decrypts with: the identity file this place resolved (flag,
/// AGE_IDENTITY_FILE or IDENTITY_FILE), named on its s3get lines, and what it opens.
fn drill_identity(file: Option<&str>, loaded: Option<&Result<Arc<Identities>, String>>) -> crate::plan::IdentityUse {
    match (file, loaded) {
        (Some(f), Some(Ok(ids))) => crate::plan::IdentityUse {
            args: vec!["--identity".to_string(), f.to_string()],
            opens: Some(ids.fingerprints()),
        },
        _ => Default::default(),
    }
}

/// What the drill's s3get commands need: our own directory first on PATH (the s3get next
/// to this binary), and the resolved S3 settings as the environment they read.
fn drill_env(s3: &S3Args) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let dir = std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.display().to_string()));
    let path = std::env::var("PATH").unwrap_or_default();
    env.push(("PATH".to_string(), dir.map_or(path.clone(), |d| format!("{d}:{path}"))));
    for (k, v) in [("ZSNAP_S3_ENDPOINT", &s3.endpoint), ("AWS_REGION", &s3.region), ("AWS_PROFILE", &s3.profile)] {
        if let Some(v) = v {
            env.push((k.to_string(), v.clone()));
        }
    }
    env
}

/// `--deep` over the selected records of one dataset: a finding per object that fails.
async fn deep(client: &Client, args: &Args, bucket: &str, prefix: &str, cat: &catalog::Catalog, out: &mut Outcome) {
    let ds = cat.dataset.as_str();
    let health = cat.health();
    let ids = match (&args.identities, holds_encrypted(cat)) {
        (Some(Ok(ids)), true) => Some(ids.clone()),
        (Some(Err(message)), true) => {
            out.findings.push(Finding::new(Severity::Critical, ds, "deep:identity", None, message.clone()));
            return;
        }
        _ => None,
    };
    let picked = match (&args.chain, args.sample) {
        (Some(sel), _) => {
            let ctx = crate::plan::Context {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                dataset: ds.to_string(),
                ..Default::default()
            };
            match restore::select(&ctx, &cat.records, &health, sel)
                .and_then(|i| restore::chain_to(&ctx, &cat.records, &health, i))
            {
                Ok(c) => c,
                // The chain check has already named what is missing; say why nothing was read.
                Err(f) => {
                    out.findings.push(Finding::new(Severity::Critical, ds, "deep:chain", None, f.message));
                    return;
                }
            }
        }
        (None, Some(n)) => health::deep::sample(cat.records.len(), n),
        (None, None) => (0..cat.records.len()).collect(),
    };
    let retries = args.s3.retries();
    let locked = picked.iter().filter(|&&i| !cat.records[i].encrypted_to.is_empty()).count();
    if locked > 0 && ids.is_none() {
        out.findings.push(Finding::new(
            Severity::Critical,
            ds,
            "deep:identity",
            None,
            format!("{locked} encrypted backup(s) of {ds} were not checked: --deep needs --identity FILE (or AGE_IDENTITY_FILE)"),
        ));
    }
    for i in picked {
        let r = &cat.records[i];
        if !r.encrypted_to.is_empty() && ids.is_none() {
            continue;
        }
        if let Err(e) = health::deep::verify(client, bucket, r, retries, ids.clone()).await {
            let severity = if e.check == "compressor" { Severity::Warning } else { Severity::Critical };
            out.findings.push(Finding::new(
                severity,
                ds,
                &format!("deep:{}", e.check),
                Some(r.key.clone()),
                format!("{}: {} check failed: {}", r.describe(), e.check, e.message),
            ));
        }
    }
}

fn finding_json(f: &Finding) -> Value {
    json!({
        "dataset": f.dataset,
        "check": f.check,
        "severity": f.severity.name(),
        "subject": f.subject,
        "message": f.message,
    })
}

fn dataset_json(d: &DatasetSummary) -> Value {
    json!({
        "dataset": d.dataset,
        "status": d.status.name(),
        "backups": d.backups,
        "broken": d.broken,
        "bytes": d.bytes,
        "newest": d.newest.as_ref().map(|n| n.0.clone()),
        "newest_time": d.newest.as_ref().map(|n| n.1),
        "age_seconds": d.age,
        "chain_length": d.chain_length,
    })
}

fn json_lines(o: &Outcome) -> String {
    let mut s = String::new();
    for v in o.findings.iter().map(finding_json).chain(o.datasets.iter().map(dataset_json)) {
        s.push_str(&v.to_string());
        s.push('\n');
    }
    s.push_str(&o.summary().to_string());
    s.push('\n');
    s
}

fn table(o: &Outcome) -> String {
    let mut s = format!(
        "{:<30} {:<9} {:>7} {:>6} {:>10} {:>6}  NEWEST\n",
        "DATASET", "STATUS", "BACKUPS", "BROKEN", "AGE", "CHAIN"
    );
    for d in &o.datasets {
        s.push_str(&format!(
            "{:<30} {:<9} {:>7} {:>6} {:>10} {:>6}  {}\n",
            d.dataset,
            d.status.name(),
            d.backups,
            d.broken,
            d.age.map(crate::cli::output::human_age).unwrap_or_else(|| "-".into()),
            d.chain_length,
            d.newest.as_ref().map(|n| format!("@{}", n.0)).unwrap_or_default()
        ));
    }
    for f in &o.findings {
        let ds = if f.dataset.is_empty() { "-" } else { f.dataset.as_str() };
        s.push_str(&format!("{}: {ds}: {}: {}\n", f.severity.name().to_uppercase(), f.check, f.message));
    }
    match &o.error {
        Some(e) => s.push_str(&format!("status: critical ({e})\n")),
        None => s.push_str(&format!("status: {}\n", o.status().name())),
    }
    s
}

/// node_exporter textfile metrics. Pure.
fn prometheus(o: &Outcome, now: i64) -> String {
    let label = |d: &str| d.replace('\\', "\\\\").replace('"', "\\\"");
    let mut s = String::new();
    let mut gauge = |name: &str, help: &str, rows: Vec<(Option<String>, String)>| {
        s.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (ds, v) in rows {
            match ds {
                Some(d) => s.push_str(&format!("{name}{{dataset=\"{}\"}} {v}\n", label(&d))),
                None => s.push_str(&format!("{name} {v}\n")),
            }
        }
    };
    let per = |f: &dyn Fn(&DatasetSummary) -> String| -> Vec<(Option<String>, String)> {
        o.datasets.iter().map(|d| (Some(d.dataset.clone()), f(d))).collect()
    };
    gauge(
        "zsnap_backup_age_seconds",
        "Age of the newest backup's snapshot.",
        per(&|d| d.age.map_or("NaN".into(), |a| a.to_string())),
    );
    gauge("zsnap_backup_bytes", "Stored bytes of all committed backups.", per(&|d| d.bytes.to_string()));
    gauge("zsnap_backup_count", "Committed backups.", per(&|d| d.backups.to_string()));
    gauge(
        "zsnap_backup_chain_length",
        "Objects to receive to restore the newest restorable backup.",
        per(&|d| d.chain_length.to_string()),
    );
    gauge("zsnap_backup_status", "0 ok, 1 warning, 2 critical.", per(&|d| d.status.code().to_string()));
    gauge(
        "zsnap_uploads_stale",
        "Multipart uploads in progress past the threshold.",
        vec![(None, o.stale_uploads.to_string())],
    );
    gauge(
        "zsnap_health_status",
        "Overall verdict: 0 ok, 1 warning, 2 critical.",
        vec![(None, o.status().code().to_string())],
    );
    gauge("zsnap_health_last_run_timestamp_seconds", "When this check ran.", vec![(None, now.to_string())]);
    s
}

/// FILE.tmp then rename, so node_exporter never reads half a file.
fn write_atomically(file: &str, text: &str) -> Result<(), Failure> {
    let tmp = format!("{file}.tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, file))
        .map_err(|e| Failure::new(ExitCode::LocalIo, format!("writing {file} failed: {e}")))
}

/// healthchecks.io style: the summary POSTed to URL, or URL/fail when critical; bounded.
fn ping(url: &str, status: Severity, body: &str) -> Result<(), String> {
    let target = match status {
        Severity::Critical => format!("{}/fail", url.trim_end_matches('/')),
        _ => url.to_string(),
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(true)
        .build()
        .into();
    agent.post(&target).header("content-type", "application/json").send(body).map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Result<Result<Args, String>, Failure> {
        parse(std::iter::once("zsnap-health").chain(args.iter().copied()).map(OsString::from))
    }

    #[test]
    fn flags() {
        let a = parse_args(&["--warn-age", "2h", "--crit-age", "3h", "--stale-uploads", "0s", "--clean", "--json"])
            .unwrap()
            .unwrap();
        assert_eq!(a.thresholds, Thresholds { warn_age: 7200, crit_age: 10800, stale_uploads: 0 });
        assert!(a.clean && a.json == Some(true));
        assert_eq!(a.each, None);
        assert_eq!(parse_args(&["--all"]).unwrap().unwrap().each, Some(Each::All));
        assert_eq!(parse_args(&["-d", "tank/a", "--recursive"]).unwrap().unwrap().each, Some(Each::Recursive));
        for (args, needle) in [
            (&["--warn-age", "x"][..], "--warn-age"),
            (&["--warn-age", "3h", "--crit-age", "2h"][..], "--crit-age"),
            (&["--bogus"][..], "--bogus"),
            (&["--all", "--dataset", "tank/a"][..], "give it without --dataset"),
            (&["--recursive", "--all"][..], "--all and --recursive do not go together"),
        ] {
            let e = parse_args(args).err().unwrap_or_else(|| panic!("{args:?} parsed"));
            assert_eq!(e.code, ExitCode::Usage, "{args:?}");
            assert!(e.message.contains(needle), "{args:?}: {}", e.message);
        }
    }

    #[test]
    fn metrics_and_summary() {
        let o = Outcome {
            datasets: vec![DatasetSummary {
                dataset: "tank/d".into(),
                status: Severity::Warning,
                backups: 3,
                broken: 0,
                bytes: 30,
                newest: Some(("s3".into(), 100)),
                age: Some(50),
                chain_length: 3,
            }],
            stale_uploads: 1,
            ..Default::default()
        };
        let m = prometheus(&o, 150);
        assert!(m.contains("zsnap_backup_age_seconds{dataset=\"tank/d\"} 50\n"), "{m}");
        assert!(m.contains("zsnap_backup_status{dataset=\"tank/d\"} 1\n"), "{m}");
        assert!(m.contains("zsnap_uploads_stale 1\n"), "{m}");
        let s = o.summary();
        assert_eq!((s["summary"].as_bool(), s["status"].as_str()), (Some(true), Some("ok")));
        let failed = Outcome { error: Some("bucket x does not exist".into()), ..Default::default() };
        assert_eq!(failed.summary()["status"], "critical");
    }
}
