//! Parsers for flag values people type: sizes (`64M`, `1.5GiB`), durations (`90s`, `26h`),
//! `K=V` pairs and HTTP-style byte ranges. Pure; every error names the flag at fault.

use super::Failure;
use std::time::Duration;

/// `123`, `5M`, `5MiB`, `1.5G`, `2T`: binary multiples (M = MiB), as zfs and dd users expect.
pub fn parse_size(flag: &str, text: &str) -> Result<u64, Failure> {
    let bad = || Failure::usage(format!("--{flag}: '{text}' is not a size (e.g. 64M, 1.5G, 2T)"));
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        "P" | "PB" | "PIB" => 1 << 50,
        _ => return Err(bad()),
    };
    if num.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(bad);
    }
    let f: f64 = num.parse().map_err(|_| bad())?;
    let v = f * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(v.round() as u64)
}

/// `90`, `90s`, `15m`, `26h`, `7d`, `2w`.
pub fn parse_duration(flag: &str, text: &str) -> Result<Duration, Failure> {
    let bad = || Failure::usage(format!("--{flag}: '{text}' is not a duration (e.g. 90s, 15m, 26h, 7d)"));
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    n.checked_mul(secs).map(Duration::from_secs).ok_or_else(bad)
}

/// A plain number, with the flag named when it is not one.
pub fn parse_number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, Failure> {
    text.trim().parse().map_err(|_| Failure::usage(format!("--{flag}: '{text}' is not a number")))
}

/// `KEY=VALUE` for S3 user metadata. Keys are restricted to what survives every S3
/// server as an HTTP header name (`x-amz-meta-KEY`): ASCII letters, digits, `-` and `_`.
pub fn parse_meta(text: &str) -> Result<(String, String), Failure> {
    let (k, v) = text.split_once('=').ok_or_else(|| Failure::usage(format!("--meta: '{text}' is not KEY=VALUE")))?;
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(Failure::usage(format!("--meta: key '{k}' may only hold ASCII letters, digits, '-' and '_'")));
    }
    if !v.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) {
        return Err(Failure::usage(format!("--meta: value of '{k}' must be printable ASCII")));
    }
    Ok((k.to_ascii_lowercase(), v.to_string()))
}

/// A byte range as HTTP writes it, inclusive: `START-END` or `START-` (to the end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end_inclusive: Option<u64>,
}

pub fn parse_range(text: &str) -> Result<ByteRange, Failure> {
    let bad = || Failure::usage(format!("--range: '{text}' is not START-END or START- (bytes, inclusive)"));
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let start: u64 = a.trim().parse().map_err(|_| bad())?;
    let end_inclusive = if b.trim().is_empty() {
        None
    } else {
        let end: u64 = b.trim().parse().map_err(|_| bad())?;
        if end < start {
            return Err(Failure::usage(format!("--range: end {end} is before start {start}")));
        }
        Some(end)
    };
    Ok(ByteRange { start, end_inclusive })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("123", Some(123)),
            ("5M", Some(5 << 20)),
            ("5MiB", Some(5 << 20)),
            ("5mb", Some(5 << 20)),
            ("1.5G", Some(3 << 29)),
            ("2T", Some(2 << 40)),
            ("", None),
            ("M", None),
            ("5X", None),
            ("-1", None),
            ("99999999999P", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size("part-size", text).ok(), *want, "{text}");
        }
        let e = parse_size("part-size", "5X").unwrap_err();
        assert!(e.message.contains("--part-size"), "{}", e.message);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("older-than", "90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("older-than", "15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("older-than", "26h").unwrap(), Duration::from_secs(93_600));
        assert_eq!(parse_duration("older-than", "7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_duration("older-than", "h").is_err());
        assert!(parse_duration("older-than", "3y").is_err());
    }

    #[test]
    fn meta() {
        assert_eq!(parse_meta("Zsnap-Kind=full").unwrap(), ("zsnap-kind".into(), "full".into()));
        assert_eq!(parse_meta("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_meta("novalue").is_err());
        assert!(parse_meta("bad key=1").is_err());
        assert!(parse_meta("k=caf\u{e9}").is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("0-99").unwrap(), ByteRange { start: 0, end_inclusive: Some(99) });
        assert_eq!(parse_range("100-").unwrap(), ByteRange { start: 100, end_inclusive: None });
        assert!(parse_range("9-1").is_err());
        assert!(parse_range("x-1").is_err());
        assert!(parse_range("12").is_err());
    }
}
