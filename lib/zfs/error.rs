//! The error of running `zfs` here: a kind (which `lib/cli` turns into an exit code; this
//! area does not know the numbers) and one line naming the dataset or host at fault.
//! The send-stream gate has its own, [`super::stream::StreamError`].

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZfsErrorKind {
    /// The dataset named does not exist.
    NotFound,
    /// zfs could not be started, or failed for a reason it printed.
    Failed,
    /// zfs answered, but with output we cannot read.
    Unreadable,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZfsError {
    pub kind: ZfsErrorKind,
    pub message: String,
}

impl ZfsError {
    pub fn new(kind: ZfsErrorKind, message: impl Into<String>) -> Self {
        ZfsError { kind, message: message.into() }
    }
}

impl fmt::Display for ZfsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ZfsError {}
