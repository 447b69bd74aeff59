//! The flags that say where a dataset's backups are (`--config`, `--bucket`, `--s3-prefix`)
//! and which dataset (`--dataset`), shared by zsnap-plan and zsnap-health: one table, one
//! parser, filling [`crate::config::Flags`] for `config::load`.

use super::flags::Flag;
use super::Failure;
use crate::config::Flags;
use lexopt::prelude::*;

/// Where the backups are; every binary that reads the configuration has these.
pub const WHERE: &[Flag] = &[
    Flag {
        short: None,
        long: "config",
        value: Some("FILE"),
        doc: "Configuration file (default $ZSNAP_CONFIG, else /etc/zsnap/zsnap.conf, which may be missing). \
              A file named here or in $ZSNAP_CONFIG must exist.",
    },
    Flag { short: Some('b'), long: "bucket", value: Some("NAME"), doc: "Bucket. Default $ZSNAP_BUCKET, then BUCKET." },
    Flag {
        short: None,
        long: "s3-prefix",
        value: Some("PREFIX"),
        doc: "Key prefix, e.g. zsnap/web1/ ('/' is added when missing). Default $ZSNAP_S3_PREFIX, then S3_PREFIX, \
              else empty.",
    },
];

/// Which of [`WHERE`] or `--dataset` (whose doc each binary words for itself) `arg` is, if
/// any: a name that does not borrow the parser, for [`take`].
pub fn name_of(arg: &lexopt::Arg) -> Option<&'static str> {
    match arg {
        Long("config") => Some("config"),
        Short('b') | Long("bucket") => Some("bucket"),
        Long("s3-prefix") => Some("s3-prefix"),
        Short('d') | Long("dataset") => Some("dataset"),
        _ => None,
    }
}

/// Read the value of the flag [`name_of`] named into `flags`.
pub fn take(name: &str, p: &mut lexopt::Parser, flags: &mut Flags) -> Result<(), Failure> {
    let slot = match name {
        "config" => &mut flags.config,
        "bucket" => &mut flags.bucket,
        "s3-prefix" => &mut flags.s3_prefix,
        _ => &mut flags.dataset,
    };
    *slot = Some(p.value()?.string()?);
    Ok(())
}
