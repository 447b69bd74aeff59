//! zsnap-health: is every backup complete, intact and fresh. See lib/commands/zsnap_health.rs.
fn main() {
    zsnap::cli::exit::exit_with("zsnap-health", zsnap::commands::zsnap_health::main(std::env::args_os()))
}
