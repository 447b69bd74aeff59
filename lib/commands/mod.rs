//! One module per binary: its flag table and page, parsing into a typed `Args`
//! (no I/O), and `main`, which does the work through the library areas.

pub mod s3get;
pub mod s3put;
pub mod zsnap_health;
pub mod zsnap_plan;
pub mod zsync_ssh;

use crate::cli::Failure;

/// Build the multi-threaded runtime the S3 binaries run on.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(crate::cli::ExitCode::Internal, format!("cannot start runtime: {e}")))
}
