//! One exit-code table for all zsnap binaries. Codes follow sysexits(3) where one fits,
//! so cron mail and shell scripts can tell a bad flag from a dead endpoint from a cut stream.
//! Low codes (1, 2) are verdicts (health warning/critical), never counts. The library
//! areas that do not speak in exit codes (lib/zfs) have their error kinds mapped here.

use crate::zfs::error::{ZfsError, ZfsErrorKind};
use crate::zfs::stream::{StreamError, StreamErrorKind};
use std::fmt;

/// An exit status with a stable meaning across every binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    Ok,
    /// A check found something to look at (zsnap-health).
    Warning,
    /// A check found something broken (zsnap-health).
    Critical,
    /// Unexpected failure that fits no other row.
    Failure,
    Usage,
    /// Bytes did not verify: truncated, corrupt, wrong length or checksum.
    Data,
    /// The object, dataset or snapshot named does not exist.
    NotFound,
    /// The producer feeding stdin failed, was killed, or the stream was cut.
    StreamCut,
    NoSuchBucket,
    Unreachable,
    Internal,
    DnsTls,
    /// Another run holds the lock on this dataset (the scripts' flock).
    Locked,
    TooLarge,
    LocalIo,
    Throttled,
    Protocol,
    AccessDenied,
    BadCredentials,
    /// zsync-ssh: the target has changes the source lacks; nothing was sent.
    Diverged,
    /// Our stdout was closed by the reader (EPIPE); not an error of ours.
    ClosedStdout,
    /// The backup is encrypted and no identity given opens it (or one could not be read).
    NoIdentity,
    /// zsnap-backup --replica: every upload is in S3, but a replica did not receive.
    Replica,
    /// Stopped by a signal: 128 + the signal number, as shells report it.
    Signal(i32),
}

/// The table printed in `--help` footers and every man page: (code, name, meaning).
pub const TABLE: &[(i32, &str, &str)] = &[
    (0, "ok", "success"),
    (1, "warning", "a check found something to look at (zsnap-health)"),
    (2, "critical", "a check found something broken (zsnap-health)"),
    (3, "failure", "unexpected failure that fits no other code"),
    (64, "usage", "bad flag, argument or URL"),
    (65, "data", "bytes did not verify: truncated, corrupt, wrong length or CRC32"),
    (66, "not-found", "the object, dataset or snapshot does not exist"),
    (67, "stream-cut", "the producer failed or was killed; nothing was committed"),
    (68, "no-such-bucket", "the bucket does not exist"),
    (69, "unreachable", "the endpoint refused, timed out or was unavailable (503), after retries"),
    (70, "internal", "a bug in zsnap"),
    (71, "dns-tls", "the endpoint's name did not resolve or TLS failed"),
    (72, "locked", "another zsnap run holds the lock on this dataset (scripts)"),
    (73, "too-large", "the stream needs more parts than --max-parts allows"),
    (74, "local-io", "reading stdin or writing a local file failed"),
    (75, "throttled", "the server kept throttling (SlowDown) past --retries"),
    (76, "protocol", "the server answered with an unexpected error"),
    (77, "access-denied", "the credentials are valid but not allowed to do this"),
    (78, "bad-credentials", "no credentials, unknown access key or wrong secret"),
    (79, "diverged", "the replica has changes the source lacks; nothing was sent (zsync-ssh)"),
    (80, "closed-stdout", "the reader closed our stdout (EPIPE); output stopped early"),
    (81, "no-identity", "the backup is encrypted to other recipients: no identity given opens it"),
    (82, "replica", "the backups are in S3, but a replica did not receive them (zsnap-backup --replica)"),
    (130, "interrupted", "SIGINT (128+2); likewise 141 SIGPIPE, 143 SIGTERM"),
];

/// Every code but `Signal`, in table order.
pub const ALL: &[ExitCode] = &[
    ExitCode::Ok,
    ExitCode::Warning,
    ExitCode::Critical,
    ExitCode::Failure,
    ExitCode::Usage,
    ExitCode::Data,
    ExitCode::NotFound,
    ExitCode::StreamCut,
    ExitCode::NoSuchBucket,
    ExitCode::Unreachable,
    ExitCode::Internal,
    ExitCode::DnsTls,
    ExitCode::Locked,
    ExitCode::TooLarge,
    ExitCode::LocalIo,
    ExitCode::Throttled,
    ExitCode::Protocol,
    ExitCode::AccessDenied,
    ExitCode::BadCredentials,
    ExitCode::Diverged,
    ExitCode::ClosedStdout,
    ExitCode::NoIdentity,
    ExitCode::Replica,
];

/// The code for a number a user gave (e.g. zsync-ssh --exit-nothing N): the table's
/// variant when N is in it; any other N still exits as N.
pub fn from_code(n: i32) -> ExitCode {
    ALL.iter().copied().find(|c| c.code() == n).unwrap_or(ExitCode::Signal(n - 128))
}

impl ExitCode {
    pub fn code(self) -> i32 {
        match self {
            ExitCode::Ok => 0,
            ExitCode::Warning => 1,
            ExitCode::Critical => 2,
            ExitCode::Failure => 3,
            ExitCode::Usage => 64,
            ExitCode::Data => 65,
            ExitCode::NotFound => 66,
            ExitCode::StreamCut => 67,
            ExitCode::NoSuchBucket => 68,
            ExitCode::Unreachable => 69,
            ExitCode::Internal => 70,
            ExitCode::DnsTls => 71,
            ExitCode::Locked => 72,
            ExitCode::TooLarge => 73,
            ExitCode::LocalIo => 74,
            ExitCode::Throttled => 75,
            ExitCode::Protocol => 76,
            ExitCode::AccessDenied => 77,
            ExitCode::BadCredentials => 78,
            ExitCode::Diverged => 79,
            ExitCode::ClosedStdout => 80,
            ExitCode::NoIdentity => 81,
            ExitCode::Replica => 82,
            ExitCode::Signal(n) => 128 + n,
        }
    }
}

/// An error on its way to `main`: what went wrong, said once, with the code to exit with.
#[derive(Debug)]
pub struct Failure {
    pub code: ExitCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Failure { code, message: message.into() }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Failure::new(ExitCode::Usage, message)
    }

    /// Prefix the message with what we were doing, keeping the code.
    pub fn context(self, what: impl fmt::Display) -> Self {
        Failure { code: self.code, message: format!("{what}: {}", self.message) }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl From<lexopt::Error> for Failure {
    fn from(e: lexopt::Error) -> Self {
        Failure::usage(e.to_string())
    }
}

/// A refused send stream: one that is empty or cut means the producer failed (67,
/// nothing committed); anything else is bytes that do not verify (65).
impl From<StreamError> for Failure {
    fn from(e: StreamError) -> Failure {
        let code = match e.kind {
            StreamErrorKind::Empty | StreamErrorKind::Cut => ExitCode::StreamCut,
            StreamErrorKind::Corrupt
            | StreamErrorKind::Unsupported
            | StreamErrorKind::WrongSnapshot
            | StreamErrorKind::NotRaw => ExitCode::Data,
        };
        Failure::new(code, e.message)
    }
}

/// Running zfs here: a missing dataset is 66; output we cannot read is the tool
/// answering unexpectedly (76), like a server would.
impl From<ZfsError> for Failure {
    fn from(e: ZfsError) -> Failure {
        let code = match e.kind {
            ZfsErrorKind::NotFound => ExitCode::NotFound,
            ZfsErrorKind::Failed => ExitCode::Failure,
            ZfsErrorKind::Unreadable => ExitCode::Protocol,
        };
        Failure::new(code, e.message)
    }
}

/// Render the exit-code table as plain text for `--help`.
pub fn table_text() -> String {
    let mut s = String::from("EXIT CODES:\n");
    for (code, name, meaning) in TABLE {
        s.push_str(&format!("  {code:>3}  {name:<16} {meaning}\n"));
    }
    s
}

/// Print `prog: message` once on stderr and exit with the failure's code.
pub fn exit_with(prog: &str, result: Result<(), Failure>) -> ! {
    match result {
        Ok(()) => std::process::exit(0),
        Err(f) => {
            if f.code != ExitCode::ClosedStdout && !f.message.is_empty() {
                // One line, always: cron mail and log greps depend on it, and some SDK
                // errors span several lines.
                let line = f.message.split_whitespace().collect::<Vec<_>>().join(" ");
                eprintln!("{prog}: {line}");
            }
            std::process::exit(f.code.code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_in_the_table_once() {
        let all: Vec<ExitCode> = ALL.iter().copied().chain([ExitCode::Signal(2)]).collect();
        for &c in &all {
            let n = TABLE.iter().filter(|(code, _, _)| *code == c.code()).count();
            assert_eq!(n, 1, "{c:?} ({}) must appear once in TABLE", c.code());
        }
        assert_eq!(TABLE.len(), all.len());
    }

    #[test]
    fn library_errors_map_to_codes() {
        let stream = |kind| Failure::from(StreamError { kind, message: "m".into() }).code;
        let cases = [
            (StreamErrorKind::Empty, ExitCode::StreamCut),
            (StreamErrorKind::Cut, ExitCode::StreamCut),
            (StreamErrorKind::Corrupt, ExitCode::Data),
            (StreamErrorKind::Unsupported, ExitCode::Data),
            (StreamErrorKind::WrongSnapshot, ExitCode::Data),
            (StreamErrorKind::NotRaw, ExitCode::Data),
        ];
        for (kind, want) in cases {
            assert_eq!(stream(kind), want, "{kind:?}");
        }
        let f: Failure = crate::zfs::stream::verify(b"").unwrap_err().into();
        assert_eq!((f.code, f.message.as_str()), (ExitCode::StreamCut, "empty stream (no bytes at all)"));
        let zfs = |kind| Failure::from(ZfsError::new(kind, "m")).code;
        assert_eq!(zfs(ZfsErrorKind::NotFound), ExitCode::NotFound);
        assert_eq!(zfs(ZfsErrorKind::Failed), ExitCode::Failure);
        assert_eq!(zfs(ZfsErrorKind::Unreadable), ExitCode::Protocol);
    }
}
