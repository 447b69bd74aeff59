//! Compressor names: what a user may write (`zstd:19`, `pigz4`, a `[compressor:NAME]`
//! section), what is recorded in a key (`z=`), and how s3put/s3get are told. Pure.

use std::collections::BTreeMap;

/// A custom command pair from a `[compressor:NAME]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomCompressor {
    pub compress: String,
    pub decompress: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compressor {
    Zstd(Option<u8>),
    Gzip(Option<u8>),
    Lz4,
    None,
    Custom { name: String, commands: CustomCompressor },
}

/// How s3put is told to compress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompressArg {
    /// `--compress CODEC` (s3put's in-process codecs).
    Compress(String),
    /// `--filter COMMAND`.
    Filter(String),
}

/// How a stored object is decompressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decompress {
    /// `s3get --decompress CODEC`.
    Codec(String),
    /// Piped through this command after s3get.
    Command(String),
}

fn level(text: &str, max: u8) -> Option<u8> {
    text.parse::<u8>().ok().filter(|l| (1..=max).contains(l))
}

impl Compressor {
    /// Read a COMPRESSOR value. `customs` are the `[compressor:NAME]` sections.
    pub fn parse(spec: &str, customs: &BTreeMap<String, CustomCompressor>) -> Result<Compressor, String> {
        let bad_level = |what: &str, max: u8| format!("'{spec}': {what} level must be 1..={max}");
        let s = spec.trim();
        if let Some(c) = customs.get(s) {
            return Ok(Compressor::Custom { name: s.to_string(), commands: c.clone() });
        }
        match s.split_once(':') {
            Some(("zstd", l)) => level(l, 22).map(|l| Compressor::Zstd(Some(l))).ok_or_else(|| bad_level("zstd", 22)),
            Some(("gzip", l)) => level(l, 9).map(|l| Compressor::Gzip(Some(l))).ok_or_else(|| bad_level("gzip", 9)),
            Some(_) => Err(unknown(spec)),
            None => match s {
                "zstd" => Ok(Compressor::Zstd(None)),
                "gzip" | "pigz" => Ok(Compressor::Gzip(None)),
                "lz4" => Ok(Compressor::Lz4),
                "none" => Ok(Compressor::None),
                // zfs3backup's pigz1, pigz4 …: gzip at that level.
                p if p.starts_with("pigz") => {
                    level(&p[4..], 9).map(|l| Compressor::Gzip(Some(l))).ok_or_else(|| bad_level("pigz", 9))
                }
                _ => Err(unknown(spec)),
            },
        }
    }

    /// The `z=` value recorded in keys.
    pub fn recorded(&self) -> String {
        match self {
            Compressor::Zstd(_) => "zstd".into(),
            Compressor::Gzip(_) => "gzip".into(),
            Compressor::Lz4 => "lz4".into(),
            Compressor::None => "none".into(),
            Compressor::Custom { name, .. } => format!("x-{name}"),
        }
    }

    /// The normalized spelling (`zstd:19`, `gzip:4` for `pigz4`, or the section name).
    pub fn spec(&self) -> String {
        match self {
            Compressor::Zstd(Some(l)) => format!("zstd:{l}"),
            Compressor::Gzip(Some(l)) => format!("gzip:{l}"),
            Compressor::Custom { name, .. } => name.clone(),
            other => other.recorded(),
        }
    }

    pub fn s3put_arg(&self) -> CompressArg {
        match self {
            Compressor::Custom { commands, .. } => CompressArg::Filter(commands.compress.clone()),
            other => CompressArg::Compress(other.spec()),
        }
    }
}

fn unknown(spec: &str) -> String {
    format!(
        "compressor '{spec}' is not zstd[:LEVEL], gzip[:LEVEL], pigz[LEVEL], lz4, none or a [compressor:NAME] section"
    )
}

/// How to decompress an object recorded with `z`, or why we cannot.
pub fn decompress_for(z: &str, customs: &BTreeMap<String, CustomCompressor>) -> Result<Decompress, String> {
    match z {
        "zstd" | "gzip" | "lz4" | "none" => Ok(Decompress::Codec(z.to_string())),
        _ => match z.strip_prefix("x-").and_then(|name| customs.get(name)) {
            Some(c) => Ok(Decompress::Command(c.decompress.clone())),
            None if z.starts_with("x-") => Err(format!(
                "compressed with custom compressor '{z}', but no [compressor:{}] section is configured",
                &z[2..]
            )),
            None => Err(format!("compressed with '{z}', which zsnap cannot decompress")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let mut customs = BTreeMap::new();
        customs.insert("xz".to_string(), CustomCompressor { compress: "xz -T0".into(), decompress: "xz -d".into() });
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("zstd", Some(("zstd", "zstd"))),
            ("zstd:19", Some(("zstd", "zstd:19"))),
            ("gzip", Some(("gzip", "gzip"))),
            ("gzip:6", Some(("gzip", "gzip:6"))),
            ("pigz", Some(("gzip", "gzip"))),
            ("pigz1", Some(("gzip", "gzip:1"))),
            ("pigz4", Some(("gzip", "gzip:4"))),
            ("lz4", Some(("lz4", "lz4"))),
            ("none", Some(("none", "none"))),
            ("xz", Some(("x-xz", "xz"))),
            ("zstd:0", None),
            ("zstd:23", None),
            ("gzip:10", None),
            ("pigz0", None),
            ("pigzx", None),
            ("bzip2", None),
            ("lz4:3", None),
            ("", None),
        ];
        for (spec, want) in cases {
            let got = Compressor::parse(spec, &customs).ok().map(|c| (c.recorded(), c.spec()));
            assert_eq!(got.as_ref().map(|(a, b)| (a.as_str(), b.as_str())), *want, "{spec}");
        }
        let c = Compressor::parse("xz", &customs).unwrap();
        assert_eq!(c.s3put_arg(), CompressArg::Filter("xz -T0".into()));
        assert_eq!(Compressor::parse("pigz4", &customs).unwrap().s3put_arg(), CompressArg::Compress("gzip:4".into()));
    }

    #[test]
    fn decompression() {
        let mut customs = BTreeMap::new();
        customs.insert("xz".to_string(), CustomCompressor { compress: "xz".into(), decompress: "xz -d".into() });
        assert_eq!(decompress_for("gzip", &customs), Ok(Decompress::Codec("gzip".into())));
        assert_eq!(decompress_for("x-xz", &customs), Ok(Decompress::Command("xz -d".into())));
        assert!(decompress_for("x-lzma", &customs).unwrap_err().contains("[compressor:lzma]"));
        assert!(decompress_for("bzip2", &customs).unwrap_err().contains("cannot decompress"));
    }
}
