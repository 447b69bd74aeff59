//! Key names of docs/FORMAT.md: encoding a backup's key and reading one back. Pure.
//! Invariant: `parse(encode(x)) == x` for every valid record, and every name that goes into
//! a key is checked first, so a key can never be ambiguous (`,` `=` `/` `@` never appear
//! inside a value).

use super::{Kind, KEY_TAG};
use crate::zfs::send::SendOptions;

/// Why a name cannot be used in a key, said for a person.
fn bad_chars(what: &str, name: &str) -> String {
    format!("{what} '{name}' may only hold letters, digits, '_', '-', ':', '.' and space")
}

/// ZFS's own rule for a name component: letters, digits, `_ - : .` and space.
fn component_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.' | ' ')
}

/// `pool/fs/child`: non-empty components joined by `/`.
pub fn validate_dataset(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("dataset name is empty".into());
    }
    for part in name.split('/') {
        if part.is_empty() {
            return Err(format!("dataset '{name}' has an empty component"));
        }
        if !part.chars().all(component_ok) {
            return Err(bad_chars("dataset", name));
        }
    }
    Ok(())
}

/// The part after `@`.
pub fn validate_snapshot(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("snapshot name is empty".into());
    }
    if !name.chars().all(component_ok) {
        return Err(bad_chars("snapshot", name));
    }
    Ok(())
}

/// Every field of a zsnap1 key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFields {
    pub dataset: String,
    pub snapshot: String,
    pub kind: Kind,
    pub guid: u64,
    /// (parent guid, parent snapshot name), for incrementals only.
    pub from: Option<(u64, String)>,
    /// The snapshot's `creation`, Unix seconds.
    pub time: i64,
    /// Recorded compressor: `none`, `zstd`, `gzip`, `lz4` or `x-NAME`.
    pub compressor: String,
    /// The `zfs send` options the stream was made with (`send=`, omitted when none); `w`
    /// means raw: the stored bytes are the dataset's encrypted blocks.
    pub send: SendOptions,
    /// The fingerprints of the age recipients the stored bytes are encrypted to, sorted
    /// (`enc=age.FP.FP`, omitted when not encrypted).
    pub encrypted_to: Vec<String>,
}

/// What a key under the prefix is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParsedKey {
    Zsnap(KeyFields),
    /// zfs3backup's `<dataset>@<snapshot>`; the rest is in its metadata.
    Legacy {
        dataset: String,
        snapshot: String,
    },
    /// Anything else, with the reason it is not a backup.
    Foreign(String),
}

/// `S3_PREFIX` as stored: empty, or ending in `/` (added when missing).
pub fn normalize_prefix(prefix: &str) -> Result<String, String> {
    if prefix.starts_with('/') {
        return Err(format!("S3 prefix '{prefix}' must not start with '/'"));
    }
    if prefix.contains("//") {
        return Err(format!("S3 prefix '{prefix}' must not contain '//'"));
    }
    if prefix.is_empty() || prefix.ends_with('/') {
        Ok(prefix.to_string())
    } else {
        Ok(format!("{prefix}/"))
    }
}

/// The key of one backup, relative to the bucket. `prefix` is already normalized.
pub fn encode(prefix: &str, f: &KeyFields) -> Result<String, String> {
    validate_dataset(&f.dataset)?;
    validate_snapshot(&f.snapshot)?;
    validate_compressor(&f.compressor)?;
    let mut key = format!("{prefix}{}/@{}/{KEY_TAG}kind={},guid={}", f.dataset, f.snapshot, f.kind.as_str(), f.guid);
    match (&f.kind, &f.from) {
        (Kind::Inc, Some((g, name))) => {
            validate_snapshot(name)?;
            key.push_str(&format!(",from={g},fromsnap={name}"));
        }
        (Kind::Full, None) => {}
        (Kind::Inc, None) => return Err(format!("incremental @{} has no parent", f.snapshot)),
        (Kind::Full, Some(_)) => return Err(format!("full @{} cannot have a parent", f.snapshot)),
    }
    key.push_str(&format!(",time={},z={}", f.time, f.compressor));
    if !f.send.is_empty() {
        key.push_str(&format!(",send={}", f.send.letters()));
    }
    if !f.encrypted_to.is_empty() {
        if let Some(bad) = f.encrypted_to.iter().find(|fp| !is_fingerprint(fp)) {
            return Err(format!("'{bad}' is not a recipient fingerprint"));
        }
        key.push_str(&format!(",enc=age.{}", f.encrypted_to.join(".")));
    }
    Ok(key)
}

/// 8 lowercase hex digits, as [`crate::crypt::fingerprint`] makes them.
fn is_fingerprint(fp: &str) -> bool {
    fp.len() == 8 && fp.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// `age.FP.FP…`: the recipients' fingerprints, sorted.
fn parse_enc(value: &str) -> Option<Vec<String>> {
    let fps: Vec<String> = value.strip_prefix("age.")?.split('.').map(str::to_string).collect();
    (fps.iter().all(|f| is_fingerprint(f)) && fps.windows(2).all(|w| w[0] < w[1])).then_some(fps)
}

fn validate_compressor(z: &str) -> Result<(), String> {
    let ok = match z.strip_prefix("x-") {
        Some(name) => !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        None => !z.is_empty() && z.chars().all(|c| c.is_ascii_alphanumeric()),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("compressor name '{z}' is not a key-safe word"))
    }
}

/// Read a key (relative to the bucket) found under `prefix`.
pub fn parse(prefix: &str, key: &str) -> ParsedKey {
    let Some(rest) = key.strip_prefix(prefix) else {
        return ParsedKey::Foreign(format!("not under prefix '{prefix}'"));
    };
    match rest.split_once("/@") {
        Some((dataset, tail)) => parse_zsnap(dataset, tail),
        None => parse_legacy(rest),
    }
}

fn parse_zsnap(dataset: &str, tail: &str) -> ParsedKey {
    let foreign = |why: String| ParsedKey::Foreign(why);
    if let Err(e) = validate_dataset(dataset) {
        return foreign(e);
    }
    let Some((snapshot, base)) = tail.split_once('/') else {
        return foreign("no object name after the snapshot".into());
    };
    if let Err(e) = validate_snapshot(snapshot) {
        return foreign(e);
    }
    let Some(fields) = base.strip_prefix(KEY_TAG) else {
        return foreign(format!("base name does not start with '{KEY_TAG}'"));
    };
    let (mut kind, mut guid, mut from, mut fromsnap, mut time, mut z) = (None, None, None, None, None, None);
    let mut send = SendOptions::default();
    let mut encrypted_to = Vec::new();
    for pair in fields.split(',') {
        let Some((name, value)) = pair.split_once('=') else {
            return foreign(format!("field '{pair}' is not name=value"));
        };
        match name {
            "kind" => kind = Some(value),
            "guid" => guid = Some(value),
            "from" => from = Some(value),
            "fromsnap" => fromsnap = Some(value),
            "time" => time = Some(value),
            "z" => z = Some(value),
            // An option this reader does not know could change how the stream must be
            // received: such a key is not taken for a backup it understands.
            "send" => match SendOptions::from_letters(value) {
                Some(o) => send = o,
                None => return foreign(format!("send options '{value}' are not known to this version")),
            },
            // Likewise an encryption this reader cannot undo.
            "enc" => match parse_enc(value) {
                Some(fps) => encrypted_to = fps,
                None => return foreign(format!("encryption '{value}' is not known to this version")),
            },
            // Readers ignore names they do not know (newer writers may add fields).
            _ => {}
        }
    }
    let kind = match kind {
        Some("full") => Kind::Full,
        Some("inc") => Kind::Inc,
        Some(other) => return foreign(format!("kind '{other}' is not full or inc")),
        None => return foreign("no kind".into()),
    };
    let Some(guid) = guid.and_then(|g| g.parse::<u64>().ok()) else {
        return foreign("guid missing or not a decimal number".into());
    };
    let Some(time) = time.and_then(|t| t.parse::<i64>().ok()) else {
        return foreign("time missing or not a number".into());
    };
    let Some(z) = z.filter(|z| validate_compressor(z).is_ok()) else {
        return foreign("compressor (z) missing or malformed".into());
    };
    let from = match (kind, from, fromsnap) {
        (Kind::Full, None, None) => None,
        (Kind::Inc, Some(g), Some(name)) => {
            let Ok(g) = g.parse::<u64>() else {
                return foreign(format!("from '{g}' is not a decimal guid"));
            };
            if validate_snapshot(name).is_err() {
                return foreign(format!("fromsnap '{name}' is not a snapshot name"));
            }
            Some((g, name.to_string()))
        }
        (Kind::Full, _, _) => return foreign("a full backup with from/fromsnap".into()),
        (Kind::Inc, _, _) => return foreign("an incremental without from and fromsnap".into()),
    };
    ParsedKey::Zsnap(KeyFields {
        dataset: dataset.to_string(),
        snapshot: snapshot.to_string(),
        kind,
        guid,
        from,
        time,
        compressor: z.to_string(),
        send,
        encrypted_to,
    })
}

fn parse_legacy(rest: &str) -> ParsedKey {
    let Some((dataset, snapshot)) = rest.split_once('@') else {
        return ParsedKey::Foreign("neither a zsnap1 nor a zfs3backup key".into());
    };
    if validate_dataset(dataset).is_err() || validate_snapshot(snapshot).is_err() {
        return ParsedKey::Foreign("neither a zsnap1 nor a zfs3backup key".into());
    }
    ParsedKey::Legacy { dataset: dataset.to_string(), snapshot: snapshot.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(ds: &str, snap: &str) -> KeyFields {
        KeyFields {
            dataset: ds.into(),
            snapshot: snap.into(),
            kind: Kind::Full,
            guid: 18203086585856280859,
            from: None,
            time: 1795424120,
            compressor: "zstd".into(),
            send: SendOptions::default(),
            encrypted_to: Vec::new(),
        }
    }

    #[test]
    fn encodes_the_documented_layout() {
        let k = encode("zsnap/web1/", &full("tank/data", "daily-1")).unwrap();
        assert_eq!(
            k,
            "zsnap/web1/tank/data/@daily-1/zsnap1,kind=full,guid=18203086585856280859,time=1795424120,z=zstd"
        );
        let inc = KeyFields { kind: Kind::Inc, from: Some((7, "daily-0".into())), ..full("tank/data", "daily-1") };
        let k = encode("", &inc).unwrap();
        assert_eq!(
            k,
            "tank/data/@daily-1/zsnap1,kind=inc,guid=18203086585856280859,from=7,fromsnap=daily-0,time=1795424120,z=zstd"
        );
    }

    #[test]
    fn round_trips() {
        let cases = [
            ("", full("tank", "s1")),
            ("p/", full("tank/a b/c:d", "zfs-auto-snap:daily-2026-01-01")),
            ("x/y/", KeyFields { kind: Kind::Inc, from: Some((1, "a.b".into())), ..full("pool/fs", "c_d") }),
            ("", KeyFields { compressor: "x-xz9".into(), time: -5, ..full("p", "s") }),
            ("", KeyFields { send: SendOptions::parse("-w -L").unwrap(), ..full("p/enc", "s") }),
            ("", KeyFields { encrypted_to: vec!["0a1b2c3d".into(), "ffee0011".into()], ..full("p/age", "s") }),
        ];
        for (prefix, f) in cases {
            let key = encode(prefix, &f).unwrap();
            assert_eq!(parse(prefix, &key), ParsedKey::Zsnap(f.clone()), "{key}");
        }
    }

    #[test]
    fn send_options_are_recorded_after_the_compressor() {
        let f = KeyFields { send: SendOptions::parse("--raw --compressed").unwrap(), ..full("tank/enc", "s") };
        let k = encode("", &f).unwrap();
        assert_eq!(k, "tank/enc/@s/zsnap1,kind=full,guid=18203086585856280859,time=1795424120,z=zstd,send=cw");
        let ParsedKey::Foreign(why) = parse("", "tank/@s/zsnap1,kind=full,guid=1,time=2,z=none,send=cQ") else {
            panic!()
        };
        assert!(why.contains("'cQ'"), "{why}");
    }

    #[test]
    fn readers_accept_any_order_and_unknown_fields() {
        let k = "tank/@s/zsnap1,z=lz4,time=3,extra=1,guid=9,kind=full";
        let ParsedKey::Zsnap(f) = parse("", k) else { panic!("{k}") };
        assert_eq!((f.guid, f.time, f.compressor.as_str()), (9, 3, "lz4"));
    }

    #[test]
    fn encode_rejects_bad_names() {
        for (ds, snap) in
            [("tank/", "s"), ("tank//a", "s"), ("", "s"), ("tank", "a/b"), ("tank", "a,b"), ("ta=nk", "s")]
        {
            assert!(encode("", &full(ds, snap)).is_err(), "{ds}@{snap}");
        }
        assert!(encode("", &KeyFields { kind: Kind::Inc, ..full("t", "s") }).is_err());
        assert!(encode("", &KeyFields { compressor: "zs,td".into(), ..full("t", "s") }).is_err());
    }

    #[test]
    fn classifies_keys() {
        let cases: &[(&str, &str)] = &[
            ("p/tank/data@daily-1", "legacy"),
            ("p/tank/data/@s1/zsnap1,kind=full,guid=1,time=2,z=none", "zsnap"),
            ("p/tank/data/@s1/notes.txt", "foreign"),
            ("p/tank/data/README", "foreign"),
            ("p/tank/data/@s1/zsnap1,kind=full,guid=x,time=2,z=none", "foreign"),
            ("p/tank/data/@s1/zsnap1,kind=inc,guid=1,time=2,z=none", "foreign"),
            ("p/tank/data/@s1/zsnap1,kind=full,guid=1,from=3,fromsnap=a,time=2,z=none", "foreign"),
            ("p/tank/data/@s1/zsnap1,kind=diff,guid=1,time=2,z=none", "foreign"),
            ("p/tank/data/@s1/zsnap1,kind=full,guid=1,time=2", "foreign"),
            ("p/tank/data/@s/1/zsnap1,kind=full,guid=1,time=2,z=none", "foreign"),
            ("q/tank/data@s", "foreign"),
            ("p/tank@a@b", "foreign"),
        ];
        for (key, want) in cases {
            let got = match parse("p/", key) {
                ParsedKey::Zsnap(_) => "zsnap",
                ParsedKey::Legacy { .. } => "legacy",
                ParsedKey::Foreign(_) => "foreign",
            };
            assert_eq!(got, *want, "{key}");
        }
        assert_eq!(
            parse("", "tank/data@daily-1"),
            ParsedKey::Legacy { dataset: "tank/data".into(), snapshot: "daily-1".into() }
        );
    }

    #[test]
    fn prefixes() {
        assert_eq!(normalize_prefix("").unwrap(), "");
        assert_eq!(normalize_prefix("a").unwrap(), "a/");
        assert_eq!(normalize_prefix("a/b/").unwrap(), "a/b/");
        assert!(normalize_prefix("/a").is_err());
        assert!(normalize_prefix("a//b").is_err());
    }
}
