//! s3get: S3 to stdout, in order and verified. See `s3get --help` and lib/commands/s3get.rs.
fn main() {
    zsnap::cli::exit::exit_with("s3get", zsnap::commands::s3get::main(std::env::args_os()))
}
