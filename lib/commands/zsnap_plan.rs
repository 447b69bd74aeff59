//! `zsnap-plan`: pure decisions printed as data. Filled in by the catalog/plan work.
use crate::cli::Failure;
use std::ffi::OsString;

pub fn main(_argv: impl IntoIterator<Item = OsString>) -> Result<(), Failure> {
    Err(Failure::new(crate::cli::ExitCode::Internal, "not yet implemented"))
}
