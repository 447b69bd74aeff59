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
    /// Backups are encrypted to these recipients (`ENCRYPT_TO`).
    pub encrypt_to: Option<crate::crypt::Recipients>,
    /// What restores decrypt with.
    pub identity: IdentityUse,
}

/// The identity a restore of encrypted backups decrypts with, as far as planning needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityUse {
    /// `["--identity", FILE]` when the printed s3get commands must name it (a flag or the
    /// config file named it; `AGE_IDENTITY_FILE` is inherited).
    pub args: Vec<String>,
    /// The fingerprints of the recipients it opens; `None` when no identity is set.
    pub opens: Option<Vec<String>>,
}

impl IdentityUse {
    /// Whether an object encrypted to `fps` can be opened, said in one line with its own
    /// code when not: no identity at all (64), or one for other recipients (81).
    pub fn check(&self, what: &str, fps: &[String]) -> Result<(), crate::cli::Failure> {
        use crate::cli::{ExitCode, Failure};
        if fps.is_empty() {
            return Ok(());
        }
        match &self.opens {
            None => Err(Failure::usage(format!(
                "{what} is encrypted (to {}): give --identity FILE or set AGE_IDENTITY_FILE",
                fps.join(", ")
            ))),
            Some(have) if !have.iter().any(|h| fps.contains(h)) => Err(Failure::new(
                ExitCode::NoIdentity,
                format!(
                    "{what} is encrypted to {}, and the identity given opens only {}: nothing was downloaded",
                    fps.join(", "),
                    have.join(", ")
                ),
            )),
            Some(_) => Ok(()),
        }
    }
}

impl Context {
    /// `s3://BUCKET/KEY` for a key relative to the bucket.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// `s3get` reading `key`, decompressed per `compressor`, with `--zfs-stream` checks and,
    /// when known, the stream's guid and parent guid (0 for a full) checked against `guids`;
    /// the result is a pipeline whose stdout is the raw stream.
    pub fn s3get(
        &self,
        key: &str,
        compressor: &str,
        guids: Option<(u64, u64)>,
        encrypted: bool,
    ) -> Result<String, String> {
        self.s3get_call(key, compressor, guids, encrypted).map(|c| join(&c.argv()))
    }

    /// The same s3get as a typed call (zsync-ssh --from-s3 runs its argv).
    pub fn s3get_call(
        &self,
        key: &str,
        compressor: &str,
        guids: Option<(u64, u64)>,
        encrypted: bool,
    ) -> Result<calls::S3getCall, String> {
        let (decompress, filter) = match crate::config::compressor::decompress_for(compressor, &self.customs)? {
            Decompress::Codec(z) => (Some(z), None),
            // The bytes are the custom compressor's: its command undoes them, inside s3get,
            // so the gate still stands between it and zfs recv.
            Decompress::Command(cmd) => (None, Some(cmd)),
        };
        let call = calls::S3getCall {
            decrypt: encrypted.then(|| self.identity.args.clone()),
            url: self.url(key),
            expect: guids,
            decompress,
            filter,
            connection: self.connection.clone(),
        };
        Ok(call)
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
            ctx.s3get("k", "zstd", Some((5, 0)), false).unwrap(),
            "s3get --decompress zstd --zfs-stream --expect-guid 5 --expect-from 0 --endpoint http://127.0.0.1:3900 s3://bkt/k"
        );
        assert_eq!(
            ctx.s3get("a b", "x-xz", Some((5, 4)), false).unwrap(),
            "s3get --filter 'xz -d' --zfs-stream --expect-guid 5 --expect-from 4 --endpoint http://127.0.0.1:3900 \
             's3://bkt/a b'"
        );
        assert!(ctx.s3get("k", "bzip2", None, false).is_err());
        ctx.identity.args = vec!["--identity".into(), "/k".into()];
        assert_eq!(
            ctx.s3get("k", "zstd", Some((5, 0)), true).unwrap(),
            "s3get --decrypt --identity /k --decompress zstd --zfs-stream --expect-guid 5 --expect-from 0 \
             --endpoint http://127.0.0.1:3900 s3://bkt/k"
        );
    }
}
