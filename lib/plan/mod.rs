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

/// Objects per command at most: one DeleteObjects request carries 1,000 keys.
pub const URLS_PER_COMMAND: usize = 1_000;
/// Bytes per command line at most: a plan line is run as `bash -c LINE`, one argument,
/// which Linux caps at 128 KiB (MAX_ARG_STRLEN); the rest is margin.
pub const LINE_BUDGET: usize = 120 * 1024;

/// `urls` in order, cut into as few command lines as fit: each `line(batch)` holds at most
/// [`URLS_PER_COMMAND`] URLs and [`LINE_BUDGET`] bytes. Returns (batch, line) pairs.
pub fn pack_lines(urls: &[String], line: &dyn Fn(&[String]) -> String) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let mut rest = urls;
    while !rest.is_empty() {
        // Grow the batch while the quoted URLs fit beside the command's own words.
        let base = line(&[]).len();
        let (mut n, mut len) = (0, base);
        while n < rest.len() && n < URLS_PER_COMMAND {
            let add = quote(&rest[n]).len() + 1;
            if n > 0 && len + add > LINE_BUDGET {
                break;
            }
            len += add;
            n += 1;
        }
        let batch = rest[..n].to_vec();
        let text = line(&batch);
        out.push((batch, text));
        rest = &rest[n..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_hold_a_thousand_urls_or_fit_the_argument_limit() {
        let line = |b: &[String]| join(&[vec!["s3put".to_string(), "--delete".to_string()], b.to_vec()].concat());
        let short: Vec<String> = (0..2_500).map(|i| format!("s3://b/tank/@s{i}/zsnap1,kind=full")).collect();
        let lines = pack_lines(&short, &line);
        assert_eq!(lines.iter().map(|(b, _)| b.len()).collect::<Vec<_>>(), vec![1_000, 1_000, 500]);
        assert_eq!(lines.iter().flat_map(|(b, _)| b.clone()).collect::<Vec<_>>(), short);
        // Long keys (and ones that need quoting): fewer a line, never past the limit.
        let long: Vec<String> = (0..900).map(|i| format!("s3://b/{}/it's @{i}", "p".repeat(400))).collect();
        let lines = pack_lines(&long, &line);
        assert!(lines.len() > 1);
        assert!(lines.iter().all(|(b, l)| l.len() <= LINE_BUDGET && l.matches("s3://").count() == b.len()));
        assert_eq!(lines.iter().map(|(b, _)| b.len()).sum::<usize>(), 900);
        assert!(pack_lines(&[], &line).is_empty());
    }

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
