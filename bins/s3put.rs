//! s3put: stdin to S3, all or nothing. See `s3put --help` and lib/commands/s3put.rs.
fn main() {
    zsnap::cli::exit::exit_with("s3put", zsnap::commands::s3put::main(std::env::args_os()))
}
