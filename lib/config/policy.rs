//! Retention policy: keep counts per period, minimum age, quota and Object Lock, and where
//! each value came from. Sources, strongest first: the bucket's policy object
//! (`<prefix>policy.json`, the central control), then local settings (environment,
//! `[fs:…]`, `[main]`), then defaults. Where the policy object sets a field, a local value
//! is used only when it is stricter (keeps more, longer, or caps lower); a looser one is
//! ignored and said so. Pure: the object's text and the local settings come in as data.

use super::{Setting, Source};
use crate::calendar::Period;
use crate::cli::{values, ExitCode, Failure};
use serde_json::{json, Map, Value};

/// The object a client's central policy lives in, relative to its prefix.
pub const OBJECT_NAME: &str = "policy.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LockMode {
    Governance,
    Compliance,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

/// Object Lock for new backups: each is locked for `days` from its upload, and its
/// ancestors' locks are extended to the same date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockRule {
    pub mode: LockMode,
    pub days: u64,
}

/// What to keep. Periods are UTC calendar periods; for each, the newest backup of each of
/// the last `keep(p)` periods that have one is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub keep_last: u64,
    pub keep_hourly: u64,
    pub keep_daily: u64,
    pub keep_weekly: u64,
    pub keep_monthly: u64,
    pub keep_yearly: u64,
    /// Seconds: nothing younger is deleted.
    pub min_age: u64,
    /// Bytes stored for this dataset; `None`: no quota.
    pub quota: Option<u64>,
    /// Bytes stored for every dataset under the prefix (the client's share of the bucket).
    pub client_quota: Option<u64>,
    pub lock: Option<LockRule>,
}

impl Default for RetentionPolicy {
    /// The Go snapshot manager's defaults: 24 hourly, 7 daily, 4 weekly, 12 monthly.
    fn default() -> Self {
        RetentionPolicy {
            keep_last: 0,
            keep_hourly: 24,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 12,
            keep_yearly: 0,
            min_age: 0,
            quota: None,
            client_quota: None,
            lock: None,
        }
    }
}

impl RetentionPolicy {
    pub fn keep(&self, p: Period) -> u64 {
        match p {
            Period::Hourly => self.keep_hourly,
            Period::Daily => self.keep_daily,
            Period::Weekly => self.keep_weekly,
            Period::Monthly => self.keep_monthly,
            Period::Yearly => self.keep_yearly,
        }
    }

    /// `last 1, 24 hourly, 7 daily, 4 weekly, 12 monthly`: the rules that keep anything.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.keep_last > 0 {
            parts.push(format!("last {}", self.keep_last));
        }
        for p in Period::ALL {
            if self.keep(p) > 0 {
                parts.push(format!("{} {}", self.keep(p), p.name()));
            }
        }
        if parts.is_empty() {
            "only the newest".into()
        } else {
            parts.join(", ")
        }
    }
}

/// How a field's value reads and which way is stricter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A count: more keeps more.
    Count,
    /// A duration in seconds: longer keeps longer.
    Age,
    /// A byte quota: lower is the tighter cap.
    Quota,
    /// GOVERNANCE < COMPLIANCE.
    Mode,
}

/// Every policy field: JSON name, config key, environment variable, kind.
const FIELDS: &[(&str, &str, &str, Kind)] = &[
    ("keep_last", "KEEP_LAST", "ZSNAP_KEEP_LAST", Kind::Count),
    ("keep_hourly", "KEEP_HOURLY", "ZSNAP_KEEP_HOURLY", Kind::Count),
    ("keep_daily", "KEEP_DAILY", "ZSNAP_KEEP_DAILY", Kind::Count),
    ("keep_weekly", "KEEP_WEEKLY", "ZSNAP_KEEP_WEEKLY", Kind::Count),
    ("keep_monthly", "KEEP_MONTHLY", "ZSNAP_KEEP_MONTHLY", Kind::Count),
    ("keep_yearly", "KEEP_YEARLY", "ZSNAP_KEEP_YEARLY", Kind::Count),
    ("min_age", "MIN_AGE", "ZSNAP_MIN_AGE", Kind::Age),
    ("quota", "QUOTA", "ZSNAP_QUOTA", Kind::Quota),
    ("client_quota", "CLIENT_QUOTA", "ZSNAP_CLIENT_QUOTA", Kind::Quota),
    ("lock_mode", "LOCK_MODE", "ZSNAP_LOCK_MODE", Kind::Mode),
    ("lock_days", "LOCK_DAYS", "ZSNAP_LOCK_DAYS", Kind::Count),
];

/// The config keys of the policy, for the config file's list of known keys.
pub fn config_keys() -> impl Iterator<Item = &'static str> {
    FIELDS.iter().map(|f| f.1)
}

/// (config key, environment variable) of every policy field, for resolving local settings.
pub fn local_names() -> impl Iterator<Item = (&'static str, &'static str)> {
    FIELDS.iter().map(|f| (f.1, f.2))
}

/// One value as a number: counts and days as they are, ages in seconds, quotas in bytes,
/// lock modes 1 (GOVERNANCE) or 2 (COMPLIANCE).
fn parse_value(kind: Kind, text: &str) -> Result<u64, String> {
    let t = text.trim();
    match kind {
        Kind::Count => t.parse::<u64>().map_err(|_| format!("'{t}' is not a whole number")),
        Kind::Age => values::parse_duration("x", t)
            .map(|d| d.as_secs())
            .map_err(|_| format!("'{t}' is not a duration (e.g. 90s, 12h, 7d, 2w)")),
        Kind::Quota => values::parse_size("x", t).map_err(|_| format!("'{t}' is not a size (e.g. 500G, 2T)")),
        Kind::Mode => match t.to_ascii_uppercase().as_str() {
            "GOVERNANCE" => Ok(1),
            "COMPLIANCE" => Ok(2),
            _ => Err(format!("'{t}' is not GOVERNANCE or COMPLIANCE")),
        },
    }
}

/// A JSON value as text for `parse_value`: numbers and strings are both accepted.
fn json_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn stricter(kind: Kind, a: u64, b: u64) -> bool {
    match kind {
        Kind::Quota => a < b,
        _ => a > b,
    }
}

/// The fields a policy object sets for one dataset: its top level, overridden by its
/// `datasets` entry for the dataset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CentralPolicy {
    /// `s3://bucket/prefix/policy.json`.
    pub url: String,
    values: Vec<(&'static str, u64, String)>,
}

/// Parse a policy object. Unknown fields and bad values are errors naming the object, so
/// a typo in the central control never silently falls back to a looser default.
pub fn parse_central(url: &str, text: &str, dataset: &str) -> Result<CentralPolicy, Failure> {
    let bad = |msg: String| Failure::new(ExitCode::Data, format!("policy object {url}: {msg}"));
    let root: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let obj = root.as_object().ok_or_else(|| bad("not a JSON object".into()))?;
    let mut values = Vec::new();
    read_fields(url, obj, "", &mut values, &bad, true)?;
    if let Some(ds) = obj.get("datasets") {
        let map = ds.as_object().ok_or_else(|| bad("\"datasets\" is not an object".into()))?;
        if let Some(own) = map.get(dataset) {
            let own = own.as_object().ok_or_else(|| bad(format!("\"datasets\".\"{dataset}\" is not an object")))?;
            read_fields(url, own, &format!("datasets.{dataset}."), &mut values, &bad, false)?;
        }
    }
    Ok(CentralPolicy { url: url.to_string(), values })
}

fn read_fields(
    url: &str,
    obj: &Map<String, Value>,
    path: &str,
    out: &mut Vec<(&'static str, u64, String)>,
    bad: &dyn Fn(String) -> Failure,
    top: bool,
) -> Result<(), Failure> {
    for (name, v) in obj {
        if top && (name == "datasets" || name == "version" || name == "comment") {
            continue;
        }
        let Some(&(field, _, _, kind)) = FIELDS.iter().find(|f| f.0 == name) else {
            let known: Vec<&str> = FIELDS.iter().map(|f| f.0).collect();
            return Err(bad(format!("unknown field \"{path}{name}\" (known: {}, datasets)", known.join(", "))));
        };
        let text = json_text(v).ok_or_else(|| bad(format!("\"{path}{name}\" must be a number or a string")))?;
        let n = parse_value(kind, &text).map_err(|e| bad(format!("\"{path}{name}\": {e}")))?;
        out.retain(|(f, _, _)| *f != field);
        out.push((field, n, format!("{url} {path}{name}")));
    }
    Ok(())
}

/// The policy in force, with each field's source and what was overruled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effective {
    pub policy: RetentionPolicy,
    /// (field, source) in FIELDS order: `bucket policy s3://…`, a config source, `default`.
    pub sources: Vec<(&'static str, String)>,
    /// Local values that were looser than the policy object and therefore ignored.
    pub overruled: Vec<String>,
    /// The policy object read, if there was one.
    pub central: Option<String>,
}

impl Effective {
    pub fn to_json(&self) -> Value {
        let p = &self.policy;
        json!({
            "keep_last": p.keep_last,
            "keep_hourly": p.keep_hourly,
            "keep_daily": p.keep_daily,
            "keep_weekly": p.keep_weekly,
            "keep_monthly": p.keep_monthly,
            "keep_yearly": p.keep_yearly,
            "min_age_seconds": p.min_age,
            "quota_bytes": p.quota,
            "client_quota_bytes": p.client_quota,
            "lock_mode": p.lock.map(|l| l.mode.as_str()),
            "lock_days": p.lock.map(|l| l.days),
            "policy_object": self.central,
            "managed": self.central.is_some(),
            "sources": self.sources.iter().map(|(f, s)| (f.to_string(), Value::from(s.clone()))).collect::<Map<_, _>>(),
            "overruled": self.overruled,
        })
    }

    /// `bucket policy s3://…` or `local settings`: one line for status.
    pub fn summary(&self) -> String {
        match &self.central {
            Some(url) => format!("policy from {url} (server-managed: local settings may only tighten it)"),
            None => "policy from local settings and defaults (no policy object in the bucket)".into(),
        }
    }
}

/// Combine the policy object (if any), local settings (config key → setting) and defaults.
pub fn resolve(central: Option<&CentralPolicy>, local: &[(&'static str, Setting)]) -> Result<Effective, Failure> {
    let defaults = RetentionPolicy::default();
    let mut chosen: Vec<(&'static str, Option<u64>, String)> = Vec::new();
    let mut overruled = Vec::new();
    for &(field, conf, _, kind) in FIELDS {
        let local_value = match local.iter().find(|(k, _)| *k == conf) {
            Some((_, Setting { value: Some(text), source })) => {
                let n = parse_value(kind, text).map_err(|e| Failure::usage(format!("{conf} (from {source}): {e}")))?;
                Some((n, source.to_string()))
            }
            _ => None,
        };
        let central_value =
            central.and_then(|c| c.values.iter().find(|(f, _, _)| *f == field).map(|(_, n, src)| (*n, src.clone())));
        let pick = match (central_value, local_value) {
            (Some((c, csrc)), Some((l, lsrc))) => {
                if stricter(kind, l, c) {
                    (Some(l), format!("{lsrc} (stricter than {csrc})"))
                } else {
                    if l != c {
                        overruled.push(format!("{conf}={} from {lsrc} is looser than {csrc}: ignored", show(kind, l)));
                    }
                    (Some(c), format!("bucket policy {csrc}"))
                }
            }
            (Some((c, csrc)), None) => (Some(c), format!("bucket policy {csrc}")),
            (None, Some((l, lsrc))) => (Some(l), lsrc),
            (None, None) => (None, Source::Default.to_string()),
        };
        chosen.push((field, pick.0, pick.1));
    }
    let get = |f: &str| chosen.iter().find(|c| c.0 == f).and_then(|c| c.1);
    let count = |f: &str, d: u64| get(f).unwrap_or(d);
    let lock = match (get("lock_mode"), get("lock_days")) {
        (None, None) | (None, Some(0)) => None,
        (Some(m), Some(days)) if days > 0 => {
            Some(LockRule { mode: if m == 2 { LockMode::Compliance } else { LockMode::Governance }, days })
        }
        _ => return Err(Failure::usage("LOCK_MODE and LOCK_DAYS (lock_mode, lock_days) go together")),
    };
    let policy = RetentionPolicy {
        keep_last: count("keep_last", defaults.keep_last),
        keep_hourly: count("keep_hourly", defaults.keep_hourly),
        keep_daily: count("keep_daily", defaults.keep_daily),
        keep_weekly: count("keep_weekly", defaults.keep_weekly),
        keep_monthly: count("keep_monthly", defaults.keep_monthly),
        keep_yearly: count("keep_yearly", defaults.keep_yearly),
        min_age: count("min_age", defaults.min_age),
        quota: get("quota"),
        client_quota: get("client_quota"),
        lock,
    };
    Ok(Effective {
        policy,
        sources: chosen.into_iter().map(|(f, _, s)| (f, s)).collect(),
        overruled,
        central: central.map(|c| c.url.clone()),
    })
}

fn show(kind: Kind, n: u64) -> String {
    match kind {
        Kind::Mode => if n == 2 { "COMPLIANCE" } else { "GOVERNANCE" }.into(),
        Kind::Quota => crate::cli::output::human_bytes(n),
        Kind::Age => format!("{n}s"),
        Kind::Count => n.to_string(),
    }
}

/// A policy object larger than this is refused: it is a few hundred bytes of JSON.
const MAX_OBJECT_BYTES: u64 = 1 << 20;

/// Read `<prefix>policy.json` from the bucket: `None` when there is none. Any other failure
/// (access denied, bucket missing) is an error: a central policy that cannot be read must
/// not silently give way to looser local settings.
pub async fn read_central(
    client: &crate::s3::client::Client,
    bucket: &str,
    prefix: &str,
    dataset: &str,
) -> Result<Option<CentralPolicy>, Failure> {
    use crate::s3::small_object::{get_small_object, SmallObject};
    let key = format!("{prefix}{OBJECT_NAME}");
    let url = format!("s3://{bucket}/{key}");
    let what = format!("reading policy object {url} failed");
    let body = match get_small_object(client, bucket, &key, MAX_OBJECT_BYTES, what).await? {
        SmallObject::Missing => return Ok(None),
        SmallObject::TooLarge { .. } => {
            return Err(Failure::new(ExitCode::Data, format!("policy object {url} is larger than 1 MiB")));
        }
        SmallObject::Body(b) => b,
    };
    let text = std::str::from_utf8(&body)
        .map_err(|_| Failure::new(ExitCode::Data, format!("policy object {url}: not UTF-8 text")))?;
    parse_central(&url, text, dataset).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, Setting)> {
        pairs
            .iter()
            .map(|(k, v)| {
                let source = Source::File { path: "z.conf".into(), section: "main".into(), line: 3 };
                (*k, Setting { value: Some(v.to_string()), source })
            })
            .collect()
    }

    const URL: &str = "s3://b/web1/policy.json";

    #[test]
    fn defaults_are_the_go_managers() {
        let e = resolve(None, &[]).unwrap();
        assert_eq!(e.policy, RetentionPolicy::default());
        assert_eq!(e.policy.describe(), "24 hourly, 7 daily, 4 weekly, 12 monthly");
        assert!(e.sources.iter().all(|(_, s)| s == "default"));
        assert_eq!(e.central, None);
    }

    #[test]
    fn local_settings_without_a_policy_object() {
        let e = resolve(None, &local(&[("KEEP_DAILY", "3"), ("QUOTA", "10G"), ("MIN_AGE", "2d")])).unwrap();
        assert_eq!((e.policy.keep_daily, e.policy.quota, e.policy.min_age), (3, Some(10 << 30), 172_800));
        assert_eq!(e.sources[2], ("keep_daily", "z.conf:3 [main]".to_string()));
    }

    #[test]
    fn the_policy_object_wins_over_looser_local_values() {
        let c = parse_central(
            URL,
            r#"{"keep_daily": 7, "keep_hourly": 0, "quota": "100G", "min_age": "1d",
                "datasets": {"tank/data": {"quota": 50000000000}, "tank/other": {"quota": "1T"}}}"#,
            "tank/data",
        )
        .unwrap();
        let l = local(&[("KEEP_DAILY", "2"), ("KEEP_HOURLY", "48"), ("QUOTA", "1T"), ("MIN_AGE", "1h")]);
        let e = resolve(Some(&c), &l).unwrap();
        assert_eq!(e.policy.keep_daily, 7, "looser local daily ignored");
        assert_eq!(e.policy.keep_hourly, 48, "a stricter local value is taken");
        assert_eq!(e.policy.quota, Some(50_000_000_000), "the dataset's own entry, and local 1T is looser");
        assert_eq!(e.policy.min_age, 86_400);
        assert_eq!(e.central.as_deref(), Some(URL));
        assert!(e.sources.contains(&("keep_daily", format!("bucket policy {URL} keep_daily"))), "{:?}", e.sources);
        assert!(e.sources.contains(&("quota", format!("bucket policy {URL} datasets.tank/data.quota"))));
        assert_eq!(e.overruled.len(), 3, "{:?}", e.overruled);
        assert!(e.overruled[0].starts_with("KEEP_DAILY=2 from z.conf:3 [main] is looser than"), "{:?}", e.overruled);
        // A tighter local quota is a tighter cap.
        let e = resolve(Some(&c), &local(&[("QUOTA", "1G")])).unwrap();
        assert_eq!(e.policy.quota, Some(1 << 30));
    }

    #[test]
    fn lock_rule() {
        let e = resolve(None, &local(&[("LOCK_MODE", "governance"), ("LOCK_DAYS", "30")])).unwrap();
        assert_eq!(e.policy.lock, Some(LockRule { mode: LockMode::Governance, days: 30 }));
        let c = parse_central(URL, r#"{"lock_mode":"COMPLIANCE","lock_days":90}"#, "t").unwrap();
        let e = resolve(Some(&c), &local(&[("LOCK_MODE", "GOVERNANCE"), ("LOCK_DAYS", "7")])).unwrap();
        assert_eq!(e.policy.lock, Some(LockRule { mode: LockMode::Compliance, days: 90 }));
        assert!(resolve(None, &local(&[("LOCK_DAYS", "30")])).is_err(), "a lock needs a mode");
    }

    #[test]
    fn bad_policy_objects_name_the_object_and_field() {
        for (text, needle) in [
            ("[1]", "not a JSON object"),
            ("{", "not JSON"),
            (r#"{"keep_dialy": 3}"#, "unknown field \"keep_dialy\""),
            (r#"{"keep_daily": -1}"#, "\"keep_daily\": '-1' is not a whole number"),
            (r#"{"quota": "lots"}"#, "\"quota\": 'lots' is not a size"),
            (r#"{"keep_daily": true}"#, "must be a number or a string"),
            (r#"{"datasets": {"t": {"keep_weekly": "x"}}}"#, "\"datasets.t.keep_weekly\""),
            (r#"{"datasets": {"t": {"datasets": {}}}}"#, "unknown field \"datasets.t.datasets\""),
        ] {
            let e = parse_central(URL, text, "t").unwrap_err();
            assert_eq!(e.code, ExitCode::Data);
            assert!(e.message.contains(URL) && e.message.contains(needle), "{text}: {}", e.message);
        }
        let e = resolve(None, &local(&[("KEEP_DAILY", "many")])).unwrap_err();
        assert!(e.message.contains("KEEP_DAILY (from z.conf:3 [main])"), "{}", e.message);
    }
}
