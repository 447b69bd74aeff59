//! `zsnap-health`: is every backup complete, intact and fresh. Filled in by the health work.
use crate::cli::Failure;
use std::ffi::OsString;

pub fn main(_argv: impl IntoIterator<Item = OsString>) -> Result<(), Failure> {
    Err(Failure::new(crate::cli::ExitCode::Internal, "not yet implemented"))
}
