//! What every binary shares: the exit-code table, the error type that carries one,
//! the flag table that feeds `--help` and the man pages, the S3 connection flags,
//! value parsers (sizes, durations) and output helpers.

pub mod exit;
pub mod flags;
pub mod output;
pub mod s3_flags;
pub mod values;

pub use exit::{ExitCode, Failure};

/// Resolves to the number of the first SIGINT, SIGTERM, SIGPIPE or SIGHUP received, so
/// long work can clean up (abort an upload) before exiting with 128 + that number.
pub async fn first_signal() -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let kinds = [
        (SignalKind::interrupt(), 2),
        (SignalKind::terminate(), 15),
        (SignalKind::pipe(), 13),
        (SignalKind::hangup(), 1),
    ];
    let mut streams = Vec::new();
    for (kind, n) in kinds {
        if let Ok(s) = signal(kind) {
            streams.push((s, n));
        }
    }
    let waits = streams.iter_mut().map(|(s, n)| {
        let n = *n;
        Box::pin(async move {
            s.recv().await;
            n
        })
    });
    let (n, _, _) = futures_util::future::select_all(waits).await;
    n
}

/// What `--help`, `--version` and `--man` print; checked before anything else.
pub fn early_exit(arg: &lexopt::Arg<'_>, page: &flags::Page) -> Option<String> {
    use lexopt::Arg::{Long, Short};
    match arg {
        Short('h') | Long("help") => Some(flags::render_help(page)),
        Long("version") => Some(format!("{} {}\n", page.name, env!("CARGO_PKG_VERSION"))),
        Long("man") => Some(flags::render_man(page)),
        _ => None,
    }
}

/// The flags every binary has.
pub const COMMON_FLAGS: &[flags::Flag] = &[
    flags::Flag { short: Some('h'), long: "help", value: None, doc: "Print this help and exit." },
    flags::Flag { short: None, long: "version", value: None, doc: "Print the version and exit." },
    flags::Flag { short: None, long: "man", value: None, doc: "Print this page as a roff man page and exit." },
];
