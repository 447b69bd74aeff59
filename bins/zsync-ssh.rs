//! zsync-ssh: push snapshots to another host's `zfs recv` over ssh. See lib/commands/zsync_ssh.rs.
fn main() {
    zsnap::cli::exit::exit_with("zsync-ssh", zsnap::commands::zsync_ssh::main(std::env::args_os()))
}
