//! `zsync-ssh`: push snapshots to another host's `zfs recv` over ssh. Filled in by the zsync work.
use crate::cli::Failure;
use std::ffi::OsString;

pub fn main(_argv: impl IntoIterator<Item = OsString>) -> Result<(), Failure> {
    Err(Failure::new(crate::cli::ExitCode::Internal, "not yet implemented"))
}
