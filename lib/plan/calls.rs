//! The command lines planners print, built from typed values in one place. Each call's
//! `argv()` is what a script runs; the tests below parse every shape of it back through
//! the binary's own parser, so a flag renamed on one side only fails here, not in a
//! user's cron job.

use super::backup::LockUntil;
use super::join;
use crate::config::CompressArg;

/// `s3put --zfs-stream … --exec 'zfs send …' URL`: one backup object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3putUpload {
    pub url: String,
    pub expect_guid: u64,
    /// 0 for a full stream.
    pub expect_from: u64,
    /// Refuse a stream that is not raw (also implied by a key with `send=w`).
    pub expect_raw: bool,
    /// The producer's argv (`zfs send …`), quoted into one `--exec` word.
    pub exec: Vec<String>,
    /// Commands the stream passes through before s3put reads it (`zsync-ssh --tee …`),
    /// piped after `exec` inside the same word.
    pub tees: Vec<Vec<String>>,
    pub compress: CompressArg,
    pub expected_size: Option<u64>,
    pub lock: Option<LockUntil>,
    /// `age1…` recipients to encrypt to (none: not encrypted).
    pub encrypt_to: Vec<String>,
    /// Connection flags to repeat (`--endpoint …`).
    pub connection: Vec<String>,
}

impl S3putUpload {
    pub fn argv(&self) -> Vec<String> {
        // --resume: a backup cut off by an outage is continued by the next run (under the
        // dataset's lock, so one writer per key), not sent again from its first byte.
        let mut v: Vec<String> = vec!["s3put".into(), "--zfs-stream".into(), "--resume".into()];
        v.extend(["--expect-guid".into(), self.expect_guid.to_string()]);
        v.extend(["--expect-from".into(), self.expect_from.to_string()]);
        if self.expect_raw {
            v.push("--expect-raw".into());
        }
        let producer: Vec<String> = std::iter::once(&self.exec).chain(&self.tees).map(|c| join(c)).collect();
        v.extend(["--exec".into(), producer.join(" | ")]);
        match &self.compress {
            CompressArg::Compress(c) => v.extend(["--compress".into(), c.clone()]),
            CompressArg::Filter(cmd) => v.extend(["--filter".into(), cmd.clone()]),
        }
        if let Some(n) = self.expected_size {
            v.extend(["--expected-size".into(), n.to_string()]);
        }
        if let Some(l) = self.lock {
            v.extend(lock_args(l));
        }
        for r in &self.encrypt_to {
            v.extend(["--encrypt-to".into(), r.clone()]);
        }
        v.extend(self.connection.iter().cloned());
        v.push(self.url.clone());
        v
    }
}

/// `s3put --extend-lock --lock-mode M --lock-until T URL…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3putExtendLock {
    pub lock: LockUntil,
    pub urls: Vec<String>,
    pub connection: Vec<String>,
}

impl S3putExtendLock {
    pub fn argv(&self) -> Vec<String> {
        let mut v: Vec<String> = vec!["s3put".into(), "--extend-lock".into()];
        v.extend(lock_args(self.lock));
        v.extend(self.connection.iter().cloned());
        v.extend(self.urls.iter().cloned());
        v
    }
}

/// `s3put --delete URL…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3putDelete {
    pub urls: Vec<String>,
    pub connection: Vec<String>,
}

impl S3putDelete {
    pub fn argv(&self) -> Vec<String> {
        let mut v: Vec<String> = vec!["s3put".into(), "--delete".into()];
        v.extend(self.connection.iter().cloned());
        v.extend(self.urls.iter().cloned());
        v
    }
}

/// `s3get [--decompress Z --zfs-stream [--expect-guid G --expect-from F]] URL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3getCall {
    /// Decrypt (age) first, with these identity flags (empty: `AGE_IDENTITY_FILE`).
    pub decrypt: Option<Vec<String>>,
    pub url: String,
    /// In-process decompression (with the stream gate).
    pub decompress: Option<String>,
    /// Or a custom compressor's command that undoes it (`--filter`, with the gate).
    pub filter: Option<String>,
    /// (guid, from guid; 0 for a full), checked by the gate.
    pub expect: Option<(u64, u64)>,
    pub connection: Vec<String>,
}

impl S3getCall {
    pub fn argv(&self) -> Vec<String> {
        let mut v: Vec<String> = vec!["s3get".into()];
        if let Some(id) = &self.decrypt {
            v.push("--decrypt".into());
            v.extend(id.iter().cloned());
        }
        match (&self.decompress, &self.filter) {
            (Some(z), _) => v.extend(["--decompress".into(), z.clone()]),
            (None, Some(cmd)) => v.extend(["--filter".into(), cmd.clone()]),
            (None, None) => {}
        }
        v.push("--zfs-stream".into());
        if let Some((g, from)) = self.expect {
            v.extend(["--expect-guid".into(), g.to_string(), "--expect-from".into(), from.to_string()]);
        }
        v.extend(self.connection.iter().cloned());
        v.push(self.url.clone());
        v
    }
}

fn lock_args(l: LockUntil) -> [String; 4] {
    ["--lock-mode".into(), l.mode.into(), "--lock-until".into(), crate::calendar::rfc3339(l.until)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{s3get, s3put};
    use crate::compress::Codec;
    use std::ffi::OsString;

    /// The whole argv, program name first, as the binary's `main` gets it.
    fn os(v: &[String]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn put(argv: &[String]) -> s3put::Args {
        match s3put::parse(os(argv)) {
            Ok(Ok(a)) => a,
            Ok(Err(text)) => panic!("{argv:?} printed {text}"),
            Err(f) => panic!("{argv:?}: {f}"),
        }
    }

    const KEY: &str = "s3://bkt/p/tank/d/@s2/zsnap1,kind=inc,guid=22,from=11,fromsnap=s1,time=5,z=zstd";
    const RAW_KEY: &str = "s3://bkt/p/tank/d/@s1/zsnap1,kind=full,guid=11,time=5,z=zstd,send=w";

    fn connection() -> Vec<String> {
        ["--endpoint", "http://127.0.0.1:3900", "--region", "eu-1", "--profile", "my prof"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn uploads_parse_back_to_what_the_planner_meant() {
        let lock = LockUntil { mode: "GOVERNANCE", until: 1_795_392_000 };
        let recipient = age::x25519::Identity::generate().to_public().to_string();
        let tee: Vec<String> =
            ["zsync-ssh", "--tee", "s2", "--expect-guid", "22", "--expect-from", "11", "-F", "my cfg"]
                .iter()
                .map(|s| s.to_string())
                .chain(["tank/d".to_string(), "root@nas:pool/d".to_string()])
                .collect();
        let crate::commands::zsync_ssh::Args { tee: Some(t), source, target_dataset, .. } =
            crate::commands::zsync_ssh::parse(os(&tee)).expect("parses").expect("not help")
        else {
            panic!("--tee parsed");
        };
        assert_eq!((t.snapshot.as_str(), t.guid, t.from, source.as_str()), ("s2", 22, 11, "tank/d"));
        assert_eq!(target_dataset, "pool/d");
        let calls = [
            S3putUpload {
                url: KEY.into(),
                expect_guid: 22,
                expect_from: 11,
                expect_raw: false,
                exec: vec!["zfs".into(), "send".into(), "-i".into(), "@s1".into(), "tank/d@s2".into()],
                tees: vec![],
                compress: CompressArg::Compress("zstd:9".into()),
                expected_size: Some(123 << 20),
                lock: Some(lock),
                encrypt_to: vec![],
                connection: connection(),
            },
            S3putUpload {
                url: RAW_KEY.into(),
                expect_guid: 11,
                expect_from: 0,
                expect_raw: true,
                exec: vec!["zfs".into(), "send".into(), "-w".into(), "tank/d@s1 x".into()],
                tees: vec![],
                compress: CompressArg::Filter("xz -T0".into()),
                expected_size: None,
                lock: None,
                encrypt_to: vec![],
                connection: vec![],
            },
            S3putUpload {
                url: format!("{KEY},enc=age.{}", crate::crypt::fingerprint(&recipient)),
                expect_guid: 22,
                expect_from: 11,
                expect_raw: false,
                exec: vec!["zfs".into(), "send".into(), "tank/d@s2".into()],
                tees: vec![tee.clone(), vec!["zsync-ssh".into(), "--tee".into(), "s2".into(), "x".into()]],
                compress: CompressArg::Compress("lz4".into()),
                expected_size: None,
                lock: None,
                encrypt_to: vec![recipient.clone()],
                connection: vec![],
            },
        ];
        for call in calls {
            let a = put(&call.argv());
            let s3put::Action::Upload { spec, input, expected, .. } = a.action else { panic!("{call:?}") };
            assert_eq!(spec.url.to_string(), call.url);
            assert!(spec.resume, "backups resume what an earlier run left");
            assert_eq!(input.encrypt.as_ref().map(|r| r.keys().to_vec()).unwrap_or_default(), call.encrypt_to);
            let gate = input.gate.expect("--zfs-stream");
            assert_eq!(
                (gate.expect_guid, gate.expect_from, gate.expect_raw),
                (Some(call.expect_guid), Some(call.expect_from), call.expect_raw)
            );
            let producer: Vec<String> = std::iter::once(&call.exec).chain(&call.tees).map(|c| join(c)).collect();
            assert_eq!(input.source, crate::stream_in::Source::Exec(producer.join(" | ")));
            match &call.compress {
                CompressArg::Compress(c) => assert_eq!(input.codec, Codec::parse(c).unwrap()),
                CompressArg::Filter(f) => assert_eq!(input.filter.as_deref(), Some(f.as_str())),
            }
            assert_eq!(expected, call.expected_size);
            assert_eq!(spec.lock_mode.as_deref(), call.lock.map(|l| l.mode));
            assert_eq!(spec.lock_until.map(|t| t.secs()), call.lock.map(|l| l.until));
            // Without the flag the environment's endpoint (if any) applies: not ours to check.
            if let Some(e) = call.connection.get(1) {
                assert_eq!(a.s3.endpoint.as_ref(), Some(e));
            }
        }
    }

    #[test]
    fn lock_and_delete_calls_parse_back() {
        let urls: Vec<String> = vec!["s3://bkt/a".into(), "s3://bkt/b c".into()];
        let lock = LockUntil { mode: "COMPLIANCE", until: 1_800_000_000 };
        let a = put(&S3putExtendLock { lock, urls: urls.clone(), connection: connection() }.argv());
        let s3put::Action::ExtendLock { keys, mode, until } = a.action else { panic!() };
        assert_eq!((keys, mode.as_str(), until), (vec!["a".to_string(), "b c".to_string()], "COMPLIANCE", lock.until));
        let a = put(&S3putDelete { urls, connection: vec![] }.argv());
        let s3put::Action::Delete { keys } = a.action else { panic!() };
        assert_eq!(keys, ["a", "b c"]);
    }

    #[test]
    fn downloads_parse_back() {
        for call in [
            S3getCall {
                decrypt: None,
                url: KEY.into(),
                decompress: Some("zstd".into()),
                filter: None,
                expect: Some((22, 11)),
                connection: connection(),
            },
            S3getCall {
                decrypt: Some(vec!["--identity".into(), "/etc/zsnap/key.txt".into()]),
                url: KEY.into(),
                decompress: Some("lz4".into()),
                filter: None,
                expect: None,
                connection: vec![],
            },
            S3getCall {
                decrypt: None,
                url: KEY.into(),
                decompress: None,
                filter: Some("age -d -i k | xz -d".into()),
                expect: Some((22, 11)),
                connection: vec![],
            },
        ] {
            let argv = call.argv();
            let a = match s3get::parse(os(&argv)) {
                Ok(Ok(a)) => a,
                other => panic!("{argv:?}: {:?}", other.err()),
            };
            assert_eq!(a.spec.url.to_string(), call.url);
            let codec = call.decompress.as_deref().map(|z| Codec::parse(z).unwrap()).unwrap_or(Codec::None);
            assert_eq!(a.codec, codec);
            let gate = call.expect.map_or((None, None), |(g, f)| (Some(g), Some(f)));
            assert_eq!(a.gate, Some(gate), "every restore stream passes the gate");
            assert_eq!(a.filter, call.filter);
            assert_eq!(a.decrypt.is_some(), call.decrypt.is_some());
            assert_eq!(
                a.decrypt.map(|d| d.identity_files),
                call.decrypt.map(|d| d.get(1).cloned().into_iter().collect())
            );
            if let Some(e) = call.connection.get(1) {
                assert_eq!(a.s3.endpoint.as_ref(), Some(e));
            }
        }
    }
}
