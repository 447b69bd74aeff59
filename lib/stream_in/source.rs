//! The source end: starting a producer, counting what is read from it, and saying how a
//! child process ended in the words the failure messages use.

use crate::cli::{ExitCode, Failure};
use std::io::Read;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counts what passes through it into a shared counter (the progress line's input side).
pub(super) struct Counted<R> {
    pub(super) inner: R,
    pub(super) count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

pub(super) fn spawn_producer(cmd: &str) -> Result<Child, Failure> {
    Command::new("bash")
        .args(["-o", "pipefail", "-c", cmd])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::new(ExitCode::LocalIo, format!("cannot start producer `{cmd}`: {e}")))
}

/// A `--filter` command (s3put's compressor, s3get's decompressor), run with `bash -o
/// pipefail -c` between two pipes: its stdin to feed, its stdout to read.
pub fn spawn_filter(cmd: &str) -> Result<(Child, ChildStdin, ChildStdout), Failure> {
    let mut child = Command::new("bash")
        .args(["-o", "pipefail", "-c", cmd])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::new(ExitCode::LocalIo, format!("cannot start filter `{cmd}`: {e}")))?;
    match (child.stdin.take(), child.stdout.take()) {
        (Some(stdin), Some(stdout)) => Ok((child, stdin, stdout)),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            Err(Failure::new(ExitCode::Internal, "filter has no stdin or stdout"))
        }
    }
}

/// How a child ended: `Ok` for exit 0, else its description.
pub(super) fn wait_status(child: &mut Child) -> Result<(), String> {
    match child.wait() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(describe_status(s)),
        Err(e) => Err(format!("could not be waited for ({e})")),
    }
}

pub(super) fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => format!("ended with {status}"),
    }
}
