//! What every binary shares: the exit-code table, the error type that carries one,
//! the flag table that feeds `--help` and the man pages, the S3 connection flags,
//! value parsers (sizes, durations), output helpers, and the shell completions rendered from
//! the same flag tables.

pub mod completions;
pub mod exit;
pub mod flags;
pub mod output;
pub mod s3_flags;
pub mod settings_flags;
pub mod values;

pub use exit::{ExitCode, Failure};

/// Resolves to the number of the first SIGINT, SIGTERM, SIGPIPE or SIGHUP received, so
/// long work can clean up (abort an upload) before exiting with 128 + that number.
///
/// A SIGPIPE the kernel raises because we wrote to a connection the server dropped is not
/// a request to stop (the write fails with EPIPE and is retried); the kernel sends it with
/// our own PID as the sender, which is how it is told apart from `kill -PIPE`.
pub async fn first_signal() -> i32 {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGPIPE, SIGTERM};
    use signal_hook::iterator::exfiltrator::WithOrigin;
    use signal_hook::iterator::SignalsInfo;
    let Ok(mut signals) = SignalsInfo::<WithOrigin>::new([SIGINT, SIGTERM, SIGPIPE, SIGHUP]) else {
        return std::future::pending().await;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let me = std::process::id() as i32;
    let spawned = std::thread::Builder::new().name("signals".into()).spawn(move || {
        for info in signals.forever() {
            let from_self = info.process.as_ref().is_some_and(|p| p.pid == me);
            if info.signal == SIGPIPE && from_self {
                continue;
            }
            let _ = tx.send(info.signal);
            return;
        }
    });
    if spawned.is_err() {
        return std::future::pending().await;
    }
    match rx.await {
        Ok(n) => n,
        Err(_) => std::future::pending().await,
    }
}

/// What `--help`, `--version` and `--man` print; checked before anything else.
pub fn early_exit(arg: &lexopt::Arg<'_>, page: &flags::Page) -> Option<String> {
    use lexopt::Arg::{Long, Short};
    match arg {
        Short('h') | Long("help") => Some(flags::render_help(page)),
        Short('V') | Long("version") => Some(format!("{} {}\n", page.name, env!("CARGO_PKG_VERSION"))),
        Long("man") => Some(flags::render_man(page)),
        _ => None,
    }
}

/// The flags every binary has.
pub const COMMON_FLAGS: &[flags::Flag] = &[
    flags::Flag { short: Some('h'), long: "help", value: None, doc: "Print this help and exit." },
    flags::Flag { short: Some('V'), long: "version", value: None, doc: "Print the version (NAME VERSION) and exit." },
    flags::Flag { short: None, long: "man", value: None, doc: "Print this page as a roff man page and exit." },
    flags::Flag {
        short: None,
        long: "completions",
        value: Some("SHELL"),
        doc: "Print the completion script for SHELL (bash, zsh or fish) and exit; make install puts them where \
              the shells look. zsnap-plan --completions SHELL SCRIPT prints a zsnap-* script's (zsnap-backup, \
              zsnap-restore, zsnap-status, zsnap-prune, zsnap-snapshot).",
    },
];
