//! /etc/zsnap/zsnap.conf and the precedence flags > environment > file `[fs:DATASET]`
//! section > file `[main]` section > defaults. The one place configuration is read: parsing
//! and resolving are pure (the environment comes in as a lookup function); `load` only
//! reads the file.

pub mod compressor;
pub mod policy;

pub use compressor::{CompressArg, Compressor, CustomCompressor, Decompress};

use crate::catalog::key;
use crate::cli::{ExitCode, Failure};
use std::collections::BTreeMap;
use std::fmt;

pub const DEFAULT_PATH: &str = "/etc/zsnap/zsnap.conf";
pub const DEFAULT_COMPRESSOR: &str = "zstd";

/// Keys of `[main]` and `[fs:DATASET]` sections.
const SETTING_KEYS: &[&str] = &[
    "BUCKET",
    "S3_PREFIX",
    "DATASET",
    "SNAPSHOT_PREFIX",
    "COMPRESSOR",
    "SEND_OPTIONS",
    "ENCRYPT_TO",
    "IDENTITY_FILE",
    "REPLICA",
    "REPLICA_SSH_CONFIG",
    "ENDPOINT",
    "REGION",
    "PROFILE",
];

/// One `KEY=VALUE` line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    value: String,
    line: usize,
}

/// A parsed configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigFile {
    pub path: String,
    main: BTreeMap<String, Entry>,
    fs: BTreeMap<String, BTreeMap<String, Entry>>,
    pub compressors: BTreeMap<String, CustomCompressor>,
}

enum Section {
    None,
    Main,
    Fs(String),
    Compressor(String),
}

impl ConfigFile {
    /// Parse INI-style text: `[main]`, `[fs:pool/dataset]`, `[compressor:NAME]` sections of
    /// `KEY=VALUE` lines; `#` and `;` start comments. Anything unknown is an error naming
    /// `path:line`, so a typo never silently falls back to a default.
    pub fn parse(path: &str, text: &str) -> Result<ConfigFile, Failure> {
        let err = |line: usize, msg: String| Failure::usage(format!("{path}:{line}: {msg}"));
        let mut file = ConfigFile { path: path.to_string(), ..Default::default() };
        let mut section = Section::None;
        let mut pending: BTreeMap<String, (usize, BTreeMap<String, String>)> = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(inner) = line.strip_prefix('[') {
                let name = inner.strip_suffix(']').ok_or_else(|| err(n, format!("'{line}' is not a [section]")))?;
                section = if name == "main" {
                    Section::Main
                } else if let Some(ds) = name.strip_prefix("fs:") {
                    key::validate_dataset(ds).map_err(|e| err(n, e))?;
                    file.fs.entry(ds.to_string()).or_default();
                    Section::Fs(ds.to_string())
                } else if let Some(c) = name.strip_prefix("compressor:") {
                    if c.is_empty() || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-') {
                        return Err(err(
                            n,
                            format!("compressor name '{c}' may only hold letters, digits, '_' and '-'"),
                        ));
                    }
                    if compressor::Compressor::parse(c, &BTreeMap::new()).is_ok() {
                        return Err(err(n, format!("[compressor:{c}] would hide the built-in compressor '{c}'")));
                    }
                    pending.entry(c.to_string()).or_insert((n, BTreeMap::new()));
                    Section::Compressor(c.to_string())
                } else {
                    return Err(err(
                        n,
                        format!("unknown section [{name}] (expected [main], [fs:DATASET] or [compressor:NAME])"),
                    ));
                };
                continue;
            }
            let (k, v) = line.split_once('=').ok_or_else(|| err(n, format!("'{line}' is not KEY=VALUE")))?;
            let (k, v) = (k.trim(), unquote(v.trim()));
            match &section {
                Section::None => return Err(err(n, format!("{k} is outside any section (start with [main])"))),
                Section::Main | Section::Fs(_) => {
                    if !SETTING_KEYS.contains(&k) && !policy::config_keys().any(|p| p == k) {
                        return Err(err(n, format!("unknown key {k}{}", zfs3backup_hint(k))));
                    }
                    let entry = Entry { value: v.to_string(), line: n };
                    match &section {
                        Section::Fs(ds) => {
                            if k == "DATASET" {
                                return Err(err(n, "DATASET belongs in [main], not in an [fs:…] section".into()));
                            }
                            file.fs.entry(ds.clone()).or_default().insert(k.to_string(), entry);
                        }
                        _ => {
                            file.main.insert(k.to_string(), entry);
                        }
                    }
                }
                Section::Compressor(c) => {
                    if k != "COMPRESS" && k != "DECOMPRESS" {
                        return Err(err(
                            n,
                            format!("unknown key {k} in [compressor:{c}] (known: COMPRESS, DECOMPRESS)"),
                        ));
                    }
                    if v.is_empty() {
                        return Err(err(n, format!("{k} in [compressor:{c}] is empty")));
                    }
                    if let Some(p) = pending.get_mut(c) {
                        p.1.insert(k.to_string(), v.to_string());
                    }
                }
            }
        }
        for (name, (line, kv)) in pending {
            match (kv.get("COMPRESS"), kv.get("DECOMPRESS")) {
                (Some(c), Some(d)) => {
                    file.compressors.insert(name, CustomCompressor { compress: c.clone(), decompress: d.clone() });
                }
                _ => return Err(err(line, format!("[compressor:{name}] needs both COMPRESS and DECOMPRESS"))),
            }
        }
        Ok(file)
    }

    /// The datasets that have an `[fs:DATASET]` section, in name order (a parent before its
    /// children): what `--all` runs for.
    pub fn datasets(&self) -> Vec<String> {
        self.fs.keys().cloned().collect()
    }
}

/// What to write instead of a zfs3backup key (a copied zfs3backup.conf is the likely
/// source of an unknown key), or the list of known keys.
fn zfs3backup_hint(key: &str) -> String {
    match key {
        "FILESYSTEM" => ": zfs3backup's FILESYSTEM is DATASET here".into(),
        "S3_KEY_ID" | "S3_SECRET" => {
            ": credentials come from the AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, PROFILE)".into()
        }
        "CONCURRENCY" | "MAX_RETRIES" => ": give s3put --concurrency / --retries instead".into(),
        _ => {
            let known: Vec<&str> = SETTING_KEYS.iter().copied().chain(policy::config_keys()).collect();
            format!(" (known: {})", known.join(", "))
        }
    }
}

/// `"x"` or `'x'` around a value is not part of it.
fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

/// Values given as flags (before any other source is consulted).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    pub config: Option<String>,
    pub bucket: Option<String>,
    pub s3_prefix: Option<String>,
    pub dataset: Option<String>,
    pub snapshot_prefix: Option<String>,
    pub compressor: Option<String>,
    /// `--send-option`, repeatable; joined with spaces.
    pub send_options: Option<String>,
    /// `--encrypt-to`, repeatable; joined with spaces.
    pub encrypt_to: Option<String>,
    pub identity: Option<String>,
    /// `--replica`, repeatable; joined with spaces.
    pub replica: Option<String>,
    pub replica_ssh_config: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
}

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    File { path: String, section: String, line: usize },
    Default,
    Unset,
}

impl Source {
    /// Flags and the file are what the printed commands must repeat; the environment is
    /// inherited by whatever runs them.
    pub fn must_repeat(&self) -> bool {
        matches!(self, Source::Flag(_) | Source::File { .. })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(name) => write!(f, "flag --{name}"),
            Source::Env(name) => write!(f, "environment {name}"),
            Source::File { path, section, line } => write!(f, "{path}:{line} [{section}]"),
            Source::Default => f.write_str("default"),
            Source::Unset => f.write_str("unset"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub value: Option<String>,
    pub source: Source,
}

/// Every setting resolved, with its origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The file read, if any.
    pub config_file: Option<String>,
    pub dataset: Setting,
    pub bucket: Setting,
    /// Normalized: empty or ending in `/`.
    pub s3_prefix: Setting,
    pub snapshot_prefix: Setting,
    pub compressor_setting: Setting,
    pub compressor: Compressor,
    /// `zfs send` options for backups (`SEND_OPTIONS`); raw is added for encrypted datasets.
    pub send_options_setting: Setting,
    pub send_options: crate::zfs::send::SendOptions,
    /// `ENCRYPT_TO`: age recipients (`age1…` or recipients files) backups are encrypted to.
    pub encrypt_to_setting: Setting,
    pub encrypt_to: Option<crate::crypt::Recipients>,
    /// `IDENTITY_FILE` / `AGE_IDENTITY_FILE`: what restores and `--deep` decrypt with.
    pub identity: Setting,
    /// `REPLICA`: replicas each backup's stream also feeds (space-separated targets).
    pub replica: Setting,
    /// `REPLICA_SSH_CONFIG`: the ssh configuration file (ssh -F) for reaching them.
    pub replica_ssh_config: Setting,
    pub endpoint: Setting,
    pub region: Setting,
    pub profile: Setting,
    pub customs: BTreeMap<String, CustomCompressor>,
    /// Local retention settings (config key → setting), weaker than a policy object.
    pub retention: Vec<(&'static str, Setting)>,
    /// The file's `[fs:DATASET]` sections, in name order: the datasets of `--all`.
    pub fs_datasets: Vec<String>,
}

impl Settings {
    /// The config file read (or the default one, which may be missing), for messages.
    fn file_named(&self) -> String {
        match &self.config_file {
            Some(f) => f.clone(),
            None => format!("{DEFAULT_PATH} (not found)"),
        }
    }

    pub fn dataset(&self) -> Result<&str, Failure> {
        self.dataset.value.as_deref().ok_or_else(|| {
            Failure::usage(format!(
                "no dataset: set --dataset, ZSNAP_DATASET or DATASET in [main] of {}",
                self.file_named()
            ))
        })
    }

    pub fn bucket(&self) -> Result<&str, Failure> {
        self.bucket.value.as_deref().ok_or_else(|| {
            Failure::usage(format!("no bucket: set --bucket, ZSNAP_BUCKET or BUCKET in {}", self.file_named()))
        })
    }

    /// The connection flags pointed at the endpoint, region and profile these settings
    /// resolved, the rest filled from the environment.
    pub fn s3_args(&self, flags: &crate::cli::s3_flags::S3Args) -> Result<crate::cli::s3_flags::S3Args, Failure> {
        flags.at(self.endpoint.value.clone(), self.region.value.clone(), self.profile.value.clone())
    }

    /// The replicas of `REPLICA` / `--replica`, in order.
    pub fn replicas(&self) -> Vec<String> {
        self.replica.value.as_deref().unwrap_or("").split_whitespace().map(str::to_string).collect()
    }

    pub fn s3_prefix(&self) -> &str {
        self.s3_prefix.value.as_deref().unwrap_or("")
    }

    pub fn snapshot_prefix(&self) -> &str {
        self.snapshot_prefix.value.as_deref().unwrap_or("")
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn s3_url(&self) -> Option<String> {
        self.bucket.value.as_ref().map(|b| format!("s3://{b}/{}", self.s3_prefix()))
    }
}

/// Pick one setting. `env_names` are tried in order; `fs` is the dataset's section.
fn pick(
    flag: (&'static str, &Option<String>),
    env_names: &[&'static str],
    env: &dyn Fn(&str) -> Option<String>,
    file: Option<&ConfigFile>,
    fs: Option<&str>,
    file_key: &str,
    default: Option<&str>,
) -> Setting {
    if let Some(v) = flag.1 {
        return Setting { value: Some(v.clone()), source: Source::Flag(flag.0) };
    }
    for name in env_names {
        if let Some(v) = env(name).filter(|v| !v.is_empty()) {
            return Setting { value: Some(v), source: Source::Env(name) };
        }
    }
    if let Some(f) = file {
        let in_fs = fs.and_then(|ds| f.fs.get(ds).and_then(|s| s.get(file_key)).map(|e| (format!("fs:{ds}"), e)));
        if let Some((section, e)) = in_fs.or_else(|| f.main.get(file_key).map(|e| ("main".to_string(), e))) {
            return Setting {
                value: Some(e.value.clone()),
                source: Source::File { path: f.path.clone(), section, line: e.line },
            };
        }
    }
    match default {
        Some(d) => Setting { value: Some(d.to_string()), source: Source::Default },
        None => Setting { value: None, source: Source::Unset },
    }
}

/// Resolve every setting. Pure: the environment is a lookup, the file already parsed.
pub fn resolve(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
    file: Option<&ConfigFile>,
) -> Result<Settings, Failure> {
    let dataset = pick(("dataset", &flags.dataset), &["ZSNAP_DATASET"], env, file, None, "DATASET", None);
    if let Some(d) = &dataset.value {
        key::validate_dataset(d).map_err(|e| Failure::usage(format!("{e} (from {})", dataset.source)))?;
    }
    let fs = dataset.value.as_deref();
    let bucket = pick(("bucket", &flags.bucket), &["ZSNAP_BUCKET"], env, file, fs, "BUCKET", None);
    if let Some(b) = &bucket.value {
        crate::s3::S3Url::parse(&format!("s3://{b}"), true)
            .map_err(|_| Failure::usage(format!("bucket '{b}' (from {}) is not a valid bucket name", bucket.source)))?;
    }
    let mut s3_prefix =
        pick(("s3-prefix", &flags.s3_prefix), &["ZSNAP_S3_PREFIX"], env, file, fs, "S3_PREFIX", Some(""));
    let normalized = key::normalize_prefix(s3_prefix.value.as_deref().unwrap_or(""))
        .map_err(|e| Failure::usage(format!("{e} (from {})", s3_prefix.source)))?;
    s3_prefix.value = Some(normalized);
    let snapshot_prefix = pick(
        ("snapshot-prefix", &flags.snapshot_prefix),
        &["ZSNAP_SNAPSHOT_PREFIX"],
        env,
        file,
        fs,
        "SNAPSHOT_PREFIX",
        Some(""),
    );
    let compressor_setting = pick(
        ("compressor", &flags.compressor),
        &["ZSNAP_COMPRESSOR"],
        env,
        file,
        fs,
        "COMPRESSOR",
        Some(DEFAULT_COMPRESSOR),
    );
    let customs = file.map(|f| f.compressors.clone()).unwrap_or_default();
    let compressor = Compressor::parse(compressor_setting.value.as_deref().unwrap_or(DEFAULT_COMPRESSOR), &customs)
        .map_err(|e| Failure::usage(format!("{e} (from {})", compressor_setting.source)))?;
    let send_options_setting =
        pick(("send-option", &flags.send_options), &["ZSNAP_SEND_OPTIONS"], env, file, fs, "SEND_OPTIONS", Some(""));
    let send_options = crate::zfs::send::SendOptions::parse(send_options_setting.value.as_deref().unwrap_or(""))
        .map_err(|e| Failure::usage(format!("{e} (from {})", send_options_setting.source)))?;
    let encrypt_to_setting =
        pick(("encrypt-to", &flags.encrypt_to), &["ZSNAP_ENCRYPT_TO"], env, file, fs, "ENCRYPT_TO", None);
    let encrypt_to = match encrypt_to_setting.value.as_deref().map(str::split_whitespace) {
        Some(words) => {
            let words: Vec<String> = words.map(str::to_string).collect();
            let r = crate::crypt::Recipients::parse(&words)
                .map_err(|e| Failure::usage(format!("{e} (ENCRYPT_TO from {})", encrypt_to_setting.source)))?;
            Some(r)
        }
        None => None,
    };
    let identity = pick(("identity", &flags.identity), &["AGE_IDENTITY_FILE"], env, file, fs, "IDENTITY_FILE", None);
    let replica = pick(("replica", &flags.replica), &["ZSNAP_REPLICA"], env, file, fs, "REPLICA", None);
    let replica_ssh_config = pick(
        ("replica-ssh-config", &flags.replica_ssh_config),
        &["ZSNAP_REPLICA_SSH_CONFIG"],
        env,
        file,
        fs,
        "REPLICA_SSH_CONFIG",
        None,
    );
    let endpoint = pick(
        ("endpoint", &flags.endpoint),
        &["ZSNAP_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"],
        env,
        file,
        fs,
        "ENDPOINT",
        None,
    );
    if let Some(e) = &endpoint.value {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(Failure::usage(format!(
                "endpoint '{e}' (from {}) must start with http:// or https://",
                endpoint.source
            )));
        }
    }
    let region = pick(("region", &flags.region), &["AWS_REGION", "AWS_DEFAULT_REGION"], env, file, fs, "REGION", None);
    let profile = pick(("profile", &flags.profile), &["AWS_PROFILE"], env, file, fs, "PROFILE", None);
    let retention = policy::local_names()
        .map(|(k, e)| (k, pick(("", &None), &[e], env, file, fs, k, None)))
        .filter(|(_, s)| s.value.is_some())
        .collect();
    Ok(Settings {
        config_file: file.map(|f| f.path.clone()),
        dataset,
        bucket,
        s3_prefix,
        snapshot_prefix,
        compressor_setting,
        compressor,
        send_options_setting,
        send_options,
        encrypt_to_setting,
        encrypt_to,
        identity,
        replica,
        replica_ssh_config,
        endpoint,
        region,
        profile,
        customs,
        retention,
        fs_datasets: file.map(ConfigFile::datasets).unwrap_or_default(),
    })
}

/// Find and read the file (`--config`, `$ZSNAP_CONFIG`, else the default, which may be
/// missing), then resolve.
pub fn load(flags: &Flags, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, Failure> {
    let explicit = flags.config.clone().or_else(|| env("ZSNAP_CONFIG").filter(|v| !v.is_empty()));
    let path = explicit.clone().unwrap_or_else(|| DEFAULT_PATH.to_string());
    let file = match std::fs::read_to_string(&path) {
        Ok(text) => Some(ConfigFile::parse(&path, &text)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure::new(ExitCode::NotFound, format!("config file {path} does not exist")))
        }
        Err(e) => return Err(Failure::new(ExitCode::LocalIo, format!("cannot read config file {path}: {e}"))),
    };
    resolve(flags, env, file.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# comment
[main]
BUCKET=main-bucket
DATASET=tank/data
S3_PREFIX=hosts/web1
COMPRESSOR=pigz4
REGION = eu-west-1

[fs:tank/data]
SNAPSHOT_PREFIX=daily-
COMPRESSOR=\"xz\"

[fs:tank/other]
BUCKET=other-bucket

[compressor:xz]
COMPRESS=xz -T0 -6
DECOMPRESS=xz -d
";

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    fn file() -> ConfigFile {
        ConfigFile::parse("/etc/zsnap/zsnap.conf", FILE).unwrap()
    }

    #[test]
    fn precedence() {
        let f = file();
        // (flags, env, dataset, bucket, compressor recorded, snapshot prefix)
        let none: &[(&str, &str)] = &[];
        let s = resolve(&Flags::default(), &env_of(none), Some(&f)).unwrap();
        assert_eq!(s.dataset.value.as_deref(), Some("tank/data"));
        assert_eq!(s.bucket.value.as_deref(), Some("main-bucket"));
        assert_eq!(s.s3_prefix(), "hosts/web1/");
        assert_eq!(s.snapshot_prefix(), "daily-");
        assert_eq!(s.compressor.recorded(), "x-xz", "[fs:] beats [main]");
        assert_eq!(s.compressor_setting.source.to_string(), "/etc/zsnap/zsnap.conf:11 [fs:tank/data]");
        assert_eq!(s.region.value.as_deref(), Some("eu-west-1"));
        assert_eq!(s.s3_url().as_deref(), Some("s3://main-bucket/hosts/web1/"));

        let s = resolve(&Flags::default(), &env_of(&[("ZSNAP_DATASET", "tank/other")]), Some(&f)).unwrap();
        assert_eq!(s.bucket.value.as_deref(), Some("other-bucket"), "the section follows the env's dataset");
        assert_eq!(s.compressor.spec(), "gzip:4", "[main] when the section lacks it");
        assert_eq!(s.snapshot_prefix(), "");

        let env = env_of(&[("ZSNAP_BUCKET", "env-bucket"), ("ZSNAP_COMPRESSOR", "lz4"), ("AWS_REGION", "r2")]);
        let s = resolve(&Flags::default(), &env, Some(&f)).unwrap();
        assert_eq!(s.bucket.value.as_deref(), Some("env-bucket"));
        assert_eq!(s.bucket.source, Source::Env("ZSNAP_BUCKET"));
        assert_eq!(s.compressor.recorded(), "lz4");
        assert_eq!(s.region.value.as_deref(), Some("r2"));

        let flags =
            Flags { bucket: Some("flag-bucket".into()), compressor: Some("zstd:19".into()), ..Default::default() };
        let s = resolve(&flags, &env, Some(&f)).unwrap();
        assert_eq!(s.bucket.value.as_deref(), Some("flag-bucket"));
        assert_eq!(s.bucket.source.to_string(), "flag --bucket");
        assert_eq!(s.compressor.spec(), "zstd:19");

        let s = resolve(&Flags::default(), &env_of(none), None).unwrap();
        assert_eq!(s.compressor.spec(), "zstd");
        assert_eq!(s.compressor_setting.source, Source::Default);
        assert!(s.bucket().is_err() && s.dataset().is_err());
        assert!(s.fs_datasets.is_empty(), "no file, no [fs:] datasets");
    }

    #[test]
    fn fs_sections_are_the_datasets_of_all() {
        let none: &[(&str, &str)] = &[];
        let s = resolve(&Flags::default(), &env_of(none), Some(&file())).unwrap();
        assert_eq!(s.fs_datasets, ["tank/data", "tank/other"]);
        // An empty section still names a dataset; name order puts a parent before its children.
        let f = ConfigFile::parse("f.conf", "[fs:tank/b/c]\n[main]\nBUCKET=x\n[fs:tank/b]\nKEEP_DAILY=3\n").unwrap();
        assert_eq!(f.datasets(), ["tank/b", "tank/b/c"]);
    }

    #[test]
    fn bad_values_name_their_source() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("ZSNAP_COMPRESSOR", "bzip2")], "environment ZSNAP_COMPRESSOR"),
            (&[("ZSNAP_DATASET", "tank//x")], "environment ZSNAP_DATASET"),
            (&[("ZSNAP_S3_PREFIX", "/abs")], "environment ZSNAP_S3_PREFIX"),
            (&[("ZSNAP_BUCKET", "Bad_Bucket")], "environment ZSNAP_BUCKET"),
            (&[("ZSNAP_S3_ENDPOINT", "localhost:3900")], "environment ZSNAP_S3_ENDPOINT"),
        ];
        for (env, needle) in cases {
            let pairs: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let lookup = move |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let e = resolve(&Flags::default(), &lookup, None).unwrap_err();
            assert_eq!(e.code, ExitCode::Usage);
            assert!(e.message.contains(needle), "{}", e.message);
        }
    }

    #[test]
    fn file_errors_name_file_and_line() {
        let cases: &[(&str, &str)] = &[
            ("[main]\nBUKET=x\n", "f.conf:2: unknown key BUKET (known: BUCKET,"),
            ("[main]\nFILESYSTEM=tank\n", "f.conf:2: unknown key FILESYSTEM: zfs3backup's FILESYSTEM is DATASET"),
            ("[main]\nS3_SECRET=x\n", "f.conf:2: unknown key S3_SECRET: credentials come from the AWS chain"),
            ("[mian]\n", "f.conf:1: unknown section [mian]"),
            ("BUCKET=x\n", "f.conf:1: BUCKET is outside any section"),
            ("[main]\njust words\n", "f.conf:2: 'just words' is not KEY=VALUE"),
            ("[fs:tank/a]\nDATASET=tank/a\n", "f.conf:2: DATASET belongs in [main]"),
            ("[fs:tank//a]\n", "f.conf:1:"),
            ("[compressor:xz]\nCOMPRESS=xz\n", "f.conf:1: [compressor:xz] needs both"),
            ("[compressor:xz]\nLEVEL=3\n", "f.conf:2: unknown key LEVEL"),
            ("[compressor:zstd]\nCOMPRESS=a\nDECOMPRESS=b\n", "hide the built-in"),
            ("[main\n", "f.conf:1:"),
        ];
        for (text, needle) in cases {
            let e = ConfigFile::parse("f.conf", text).unwrap_err();
            assert_eq!(e.code, ExitCode::Usage);
            assert!(e.message.contains(needle), "{text:?}: {}", e.message);
        }
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let flags = Flags { config: Some("/nonexistent/zsnap.conf".into()), ..Default::default() };
        let none: &[(&str, &str)] = &[];
        let e = load(&flags, &env_of(none)).unwrap_err();
        assert_eq!(e.code, ExitCode::NotFound);
        assert!(e.message.contains("/nonexistent/zsnap.conf"), "{}", e.message);
        let e = load(&Flags::default(), &env_of(&[("ZSNAP_CONFIG", "/nonexistent/b.conf")])).unwrap_err();
        assert!(e.message.contains("/nonexistent/b.conf"), "{}", e.message);
    }

    #[test]
    fn replicas_per_dataset_section_flags_first() {
        let text = "[main]\nREPLICA=nas:pool/all\n[fs:tank/a]\nREPLICA=nas:pool/a  root@b:pool/a\nREPLICA_SSH_CONFIG=/etc/zsnap/ssh\n";
        let file = ConfigFile::parse("/etc/z.conf", text).unwrap();
        let for_ds = |ds: &str, replica: Option<&str>| {
            let flags = Flags { dataset: Some(ds.into()), replica: replica.map(str::to_string), ..Default::default() };
            resolve(&flags, &|_| None, Some(&file)).unwrap()
        };
        let a = for_ds("tank/a", None);
        assert_eq!(a.replicas(), ["nas:pool/a", "root@b:pool/a"]);
        assert_eq!(a.replica_ssh_config.value.as_deref(), Some("/etc/zsnap/ssh"));
        assert_eq!(for_ds("tank/b", None).replicas(), ["nas:pool/all"]);
        assert_eq!(for_ds("tank/a", Some("x:pool/y")).replicas(), ["x:pool/y"]);
        let none = resolve(&Flags::default(), &|_| None, None).unwrap();
        assert!(none.replicas().is_empty());
    }
}
