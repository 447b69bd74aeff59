//! Pure decisions over plain data: what to back up, what chain restores a snapshot, how
//! local and remote compare. Each planner takes snapshots, catalog records and settings,
//! and returns steps that carry the exact shell command to run and the reason for it.
//! Nothing here touches S3 or zfs.

pub mod backup;
pub mod calls;
pub mod prune;
pub mod restore;
pub mod snapshot;
pub mod status;

use crate::config::{CustomCompressor, Decompress};
use std::collections::BTreeMap;

/// Where backups go and how commands reach it: what every planner needs besides data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    pub bucket: String,
    /// Normalized: empty or ending in `/`.
    pub prefix: String,
    pub dataset: String,
    /// Connection flags the printed commands must repeat (those from flags or the config
    /// file; the environment is inherited), e.g. `["--endpoint", "http://…"]`.
    pub connection: Vec<String>,
    pub customs: BTreeMap<String, CustomCompressor>,
}

impl Context {
    /// `s3://BUCKET/KEY` for a key relative to the bucket.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// `s3get` reading `key`, decompressed per `compressor`, with `--zfs-stream` checks and,
    /// when known, the stream's guid and parent guid (0 for a full) checked against `guids`;
    /// the result is a pipeline whose stdout is the raw stream.
    pub fn s3get(&self, key: &str, compressor: &str, guids: Option<(u64, u64)>) -> Result<String, String> {
        let (decompress, after) = match crate::config::compressor::decompress_for(compressor, &self.customs)? {
            Decompress::Codec(z) => (Some(z), None),
            // The bytes s3get sees are the custom compressor's: only the command can undo them.
            Decompress::Command(cmd) => (None, Some(cmd)),
        };
        let call = calls::S3getCall {
            url: self.url(key),
            expect: decompress.as_ref().and(guids),
            decompress,
            connection: self.connection.clone(),
        };
        let mut line = join(&call.argv());
        if let Some(cmd) = after {
            line.push_str(" | ");
            line.push_str(&cmd);
        }
        Ok(line)
    }
}

/// Quote one word for a POSIX shell: unchanged when it holds only safe characters,
/// otherwise in single quotes (a `'` inside becomes `'\''`).
pub fn quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-+=:,./@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Quote and join words into one command line.
pub fn join(words: &[String]) -> String {
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        let cases = [
            ("tank/data@daily-1", "tank/data@daily-1"),
            ("", "''"),
            ("a b", "'a b'"),
            ("it's", "'it'\\''s'"),
            ("$(rm -rf /)", "'$(rm -rf /)'"),
            ("s3://b/p/tank/@s/zsnap1,kind=full,guid=1", "s3://b/p/tank/@s/zsnap1,kind=full,guid=1"),
            ("zfs send -i @a tank@b", "'zfs send -i @a tank@b'"),
        ];
        for (word, want) in cases {
            assert_eq!(quote(word), want, "{word}");
        }
    }

    #[test]
    fn s3get_lines() {
        let mut ctx = Context { bucket: "bkt".into(), ..Default::default() };
        ctx.customs.insert("xz".into(), CustomCompressor { compress: "xz".into(), decompress: "xz -d".into() });
        ctx.connection = vec!["--endpoint".into(), "http://127.0.0.1:3900".into()];
        assert_eq!(
            ctx.s3get("k", "zstd", Some((5, 0))).unwrap(),
            "s3get --decompress zstd --zfs-stream --expect-guid 5 --expect-from 0 --endpoint http://127.0.0.1:3900 s3://bkt/k"
        );
        assert_eq!(
            ctx.s3get("a b", "x-xz", Some((5, 4))).unwrap(),
            "s3get --endpoint http://127.0.0.1:3900 's3://bkt/a b' | xz -d"
        );
        assert!(ctx.s3get("k", "bzip2", None).is_err());
    }
}
