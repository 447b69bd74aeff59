//! zsnap-plan: what to send, restore or prune, printed as data. See lib/commands/zsnap_plan.rs.
fn main() {
    zsnap::cli::exit::exit_with("zsnap-plan", zsnap::commands::zsnap_plan::main(std::env::args_os()))
}
