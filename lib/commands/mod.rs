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

/// What every command's tests need: run its `parse` on `PROG ARGS...` and insist on a
/// parsed `Args` (nothing printed) or on a `Failure`.
#[cfg(test)]
pub(crate) mod parse_test {
    use crate::cli::Failure;
    use std::ffi::OsString;

    type Parsed<A> = Result<Result<A, String>, Failure>;

    fn argv(prog: &str, args: &[&str]) -> Vec<OsString> {
        std::iter::once(prog).chain(args.iter().copied()).map(OsString::from).collect()
    }

    pub fn ok<A>(parse: impl FnOnce(Vec<OsString>) -> Parsed<A>, prog: &str, args: &[&str]) -> A {
        match parse(argv(prog, args)) {
            Ok(Ok(a)) => a,
            Ok(Err(text)) => panic!("{args:?} printed {text}"),
            Err(f) => panic!("{args:?} failed: {f}"),
        }
    }

    pub fn err<A>(parse: impl FnOnce(Vec<OsString>) -> Parsed<A>, prog: &str, args: &[&str]) -> Failure {
        match parse(argv(prog, args)) {
            Err(f) => f,
            Ok(_) => panic!("{args:?} parsed"),
        }
    }
}
