//! Whether a stream may be committed: every cause that can say no, gathered once the
//! source, filter and producer are done, weighed in one fixed order. Pure.

use crate::cli::{ExitCode, Failure};
use crate::zfs::stream::{StreamError, StreamSummary};

/// Why reading the source stopped before its end.
#[derive(Debug)]
pub(super) enum Stop {
    /// The gate refused bytes (our decision; the producer may die of SIGPIPE because of it).
    Gate(StreamError),
    /// Reading the source failed.
    Read(std::io::Error),
    /// The sink or compressor refused bytes (too many parts, upload ended).
    Sink(Failure),
    /// The filter closed its stdin before taking the whole stream.
    FilterClosed,
}

/// Everything that decides whether a stream may be committed.
pub(super) struct Outcome {
    pub(super) stop: Option<Stop>,
    /// Exit of `--filter` (`Err(description)` if it failed), with its command.
    pub(super) filter: Option<(String, Result<(), String>)>,
    /// Exit of `--exec`, likewise.
    pub(super) producer: Option<(String, Result<(), String>)>,
    /// The gate's verdict at the end of input (only when reading got to the end).
    pub(super) finish: Option<Result<StreamSummary, StreamError>>,
    pub(super) input_bytes: u64,
    pub(super) allow_empty: bool,
}

/// Decide the commit. The first cause wins: a refusal we made mid-stream (the producer
/// dying of SIGPIPE after it is a consequence), then a failed filter (same reason), then
/// a failed producer, then the gate's verdict on the end of the stream, then emptiness.
pub(super) fn verdict(o: Outcome) -> Result<Option<StreamSummary>, Failure> {
    let failed = |what: &str, cmd: &str, how: &str, tail: &str| {
        Failure::new(ExitCode::StreamCut, format!("{what} `{cmd}` {how}: {tail}"))
    };
    match o.stop {
        Some(Stop::Gate(e)) => return Err(e.into()),
        Some(Stop::Sink(f)) => return Err(f),
        Some(Stop::Read(e)) => return Err(Failure::new(ExitCode::LocalIo, format!("reading stdin failed: {e}"))),
        Some(Stop::FilterClosed) | None => {}
    }
    if let Some((cmd, Err(how))) = &o.filter {
        return Err(failed("filter", cmd, how, "nothing was committed"));
    }
    if let Some((cmd, Err(how))) = &o.producer {
        return Err(failed("producer", cmd, how, "the stream is cut, nothing was committed"));
    }
    if matches!(o.stop, Some(Stop::FilterClosed)) {
        let cmd = o.filter.as_ref().map(|f| f.0.as_str()).unwrap_or("?");
        return Err(failed("filter", cmd, "stopped reading its input before the end", "nothing was committed"));
    }
    let summary = match o.finish {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => return Err(e.into()),
        None => None,
    };
    if o.input_bytes == 0 && !o.allow_empty {
        return Err(Failure::new(
            ExitCode::StreamCut,
            "stdin is empty: refusing to store an empty object (--allow-empty allows it)",
        ));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zfs::stream::StreamGate;

    fn outcome() -> Outcome {
        Outcome { stop: None, filter: None, producer: None, finish: None, input_bytes: 10, allow_empty: false }
    }

    fn gate_err(data: &[u8]) -> StreamError {
        let mut g = StreamGate::new();
        match g.feed(data) {
            Err(e) => e,
            Ok(()) => g.finish().err().unwrap_or_else(|| panic!("{data:?} verified")),
        }
    }

    #[test]
    fn verdict_weighs_causes_in_order() {
        let failed = |cmd: &str| Some((cmd.to_string(), Err("exited with status 1".to_string())));
        let ok = |cmd: &str| Some((cmd.to_string(), Ok(())));
        assert!(verdict(outcome()).unwrap().is_none());
        // Our mid-stream refusal beats the producer dying of the SIGPIPE it caused.
        let garbage = gate_err(&[7u8; 400]);
        let v = verdict(Outcome { stop: Some(Stop::Gate(garbage)), producer: failed("zfs send"), ..outcome() });
        assert_eq!(v.unwrap_err().code, ExitCode::Data);
        // A failing filter beats the producer it made fail.
        let v = verdict(Outcome {
            stop: Some(Stop::FilterClosed),
            filter: failed("false"),
            producer: failed("zfs send"),
            ..outcome()
        });
        let e = v.unwrap_err();
        assert_eq!(e.code, ExitCode::StreamCut);
        assert!(e.message.starts_with("filter `false` exited with status 1"), "{}", e.message);
        let v = verdict(Outcome { stop: Some(Stop::FilterClosed), filter: ok("head -c 1"), ..outcome() });
        assert!(v.unwrap_err().message.contains("stopped reading its input"));
        // A failed producer beats the gate's "cut" at the end (the cut is its doing).
        let cut = gate_err(&[]);
        let v = verdict(Outcome { producer: failed("zfs send"), finish: Some(Err(cut.clone())), ..outcome() });
        assert!(v.unwrap_err().message.starts_with("producer `zfs send` exited with status 1"));
        let v = verdict(Outcome { producer: ok("zfs send"), finish: Some(Err(cut)), ..outcome() });
        assert_eq!(v.unwrap_err().code, ExitCode::StreamCut);
        // Empty input is refused unless allowed, also when a codec made bytes of it.
        let v = verdict(Outcome { input_bytes: 0, ..outcome() });
        assert!(v.unwrap_err().message.starts_with("stdin is empty"));
        assert!(verdict(Outcome { input_bytes: 0, allow_empty: true, ..outcome() }).is_ok());
    }
}
