//! `zsync-ssh --tee`: one `zfs send` stream passing through on its way to S3 (stdin to
//! stdout, unchanged) is also received by a replica. Whether the replica can take it is
//! decided first from its snapshots (pure, [`decide`]): by guid, as every zsync-ssh run
//! decides, and it only moves forward. A replica that cannot take it, or fails while
//! receiving, never stops the stream: the other sink (s3put, which commits by its own
//! rules) still gets every byte, and the replica's outcome is a JSON line of its own.

use super::pipeline::{blame, Ended, Location, Stage};
use super::plan::Target;
use crate::cli::{ExitCode, Failure};
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the replica does with the stream passing through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Passing {
    /// Receive it: the replica's newest snapshot is the stream's base (or, for a full
    /// stream, the replica does not exist yet).
    Receive,
    /// The replica already holds the stream's snapshot (a resumed upload runs the send again).
    Have { snapshot: String },
    /// It cannot take it; the stream only passes through.
    Refuse { code: ExitCode, reason: String },
}

/// Whether the replica (`target`) can receive the stream of snapshot `guid` whose base is
/// `from` (0: a full stream). `fix` is the command that would bring it in line, for the
/// reason. Pure.
pub fn decide(target: &Target, guid: u64, from: u64, fix: &str) -> Passing {
    let refuse = |code, reason: String| Passing::Refuse { code, reason };
    let (snapshots, modified) = match target {
        Target::Missing if from == 0 => return Passing::Receive,
        Target::Missing => {
            return refuse(
                ExitCode::NotFound,
                format!("the replica does not exist and this stream is incremental: seed it with `{fix}`"),
            )
        }
        Target::Present { snapshots, modified } => (snapshots, *modified),
    };
    if let Some(s) = snapshots.iter().find(|s| s.guid == guid) {
        return Passing::Have { snapshot: s.name.clone() };
    }
    let newest = snapshots.last().map_or_else(|| "none".to_string(), |s| format!("@{}", s.name));
    if from == 0 {
        return refuse(
            ExitCode::Diverged,
            format!(
                "the replica exists (newest snapshot {newest}) and this is a full stream, which would start a \
                 new chain: destroy the replica to reseed it"
            ),
        );
    }
    let Some(at) = snapshots.iter().rposition(|s| s.guid == from) else {
        return refuse(
            ExitCode::NotFound,
            format!(
                "the replica lacks this stream's base (guid {from}; its newest snapshot is {newest}): it is behind \
                 or unrelated; catch it up with `{fix}`"
            ),
        );
    };
    let base = &snapshots[at].name;
    let after = snapshots.len() - at - 1;
    if after > 0 {
        return refuse(
            ExitCode::Diverged,
            format!(
                "the replica has {after} snapshot(s) after the base @{base}: it diverged; `{fix} --rollback` \
                 discards them"
            ),
        );
    }
    if modified == Some(true) {
        return refuse(
            ExitCode::Diverged,
            format!("the replica was written since its newest snapshot @{base}; `{fix} --rollback` discards that"),
        );
    }
    Passing::Receive
}

/// The replica's receiving pipeline: `[compressor | mbuffer |] ssh HOST 'zfs recv DST'`.
pub struct Sink {
    pub stages: Vec<Stage>,
    pub target: Location,
    /// Names the transfer in messages (`tank/data@s2 to host2:pool/data`).
    pub what: String,
    pub idle: Duration,
}

/// How the stream passed: the bytes read, whether our stdout closed early (the other sink
/// went away), a read error, and the replica's outcome (`None`: no replica was fed).
pub struct Passed {
    pub bytes: u64,
    pub stdout_closed: bool,
    pub read_error: Option<std::io::Error>,
    pub replica: Option<Result<(), Failure>>,
}

/// Copy `input` to `output` until end of input, feeding `sink` the same bytes. A replica
/// that fails, or stops reading for `sink.idle`, is dropped (its stages killed) and the copy
/// goes on; when `output` closes, the replica still gets the rest of the stream.
pub fn pass(mut input: impl Read, mut output: impl Write, sink: Option<Sink>) -> Passed {
    let mut feeding = match sink.map(Feeder::start) {
        Some(Ok(f)) => Some(f),
        Some(Err(f)) => return drain(input, output, Some(Err(f))),
        None => None,
    };
    let mut buf = vec![0u8; 1 << 20];
    let (mut bytes, mut stdout_closed, mut read_error) = (0u64, false, None);
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                read_error = Some(e);
                break;
            }
        };
        bytes += n as u64;
        let chunk: Arc<[u8]> = Arc::from(&buf[..n]);
        if let Some(f) = &mut feeding {
            f.feed(chunk.clone());
        }
        if !stdout_closed && output.write_all(&chunk).is_err() {
            stdout_closed = true;
        }
        if stdout_closed && !feeding.as_ref().is_some_and(Feeder::alive) {
            break;
        }
    }
    if !stdout_closed && output.flush().is_err() {
        stdout_closed = true;
    }
    // A stream that ended in a read error is cut: the replica must not get a chance to
    // commit what it holds (zfs recv would refuse it without an END record anyway).
    let replica = feeding.map(|f| f.finish(read_error.is_some()));
    Passed { bytes, stdout_closed, read_error, replica }
}

/// Pass the whole stream through with no replica fed (it could not be started).
fn drain(input: impl Read, output: impl Write, replica: Option<Result<(), Failure>>) -> Passed {
    let mut p = pass(input, output, None);
    p.replica = replica;
    p
}

/// The replica's stages running, a writer thread feeding the first, and a watchdog that
/// kills them all when the bytes stop moving for `idle` while there are bytes to give.
struct Feeder {
    tx: Option<mpsc::SyncSender<Arc<[u8]>>>,
    writer: JoinHandle<bool>,
    watchdog: (mpsc::Sender<()>, JoinHandle<bool>),
    children: Arc<Mutex<Vec<Child>>>,
    errs: Vec<JoinHandle<String>>,
    sink: Sink,
}

impl Feeder {
    fn start(sink: Sink) -> Result<Feeder, Failure> {
        let (children, stdin, errs) = spawn(&sink.stages).map_err(|f| f.context(&sink.what))?;
        let children = Arc::new(Mutex::new(children));
        let (moved, writing) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        // Up to 8 MiB queued: bursts are smoothed, a stalled replica is noticed by the watchdog.
        let (tx, rx) = mpsc::sync_channel::<Arc<[u8]>>(8);
        let (m, w) = (moved.clone(), writing.clone());
        let writer = std::thread::spawn(move || write_all(rx, stdin, &m, &w));
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let (c, idle) = (children.clone(), sink.idle);
        let watchdog = std::thread::spawn(move || watch(&done_rx, &moved, &writing, idle, &c));
        Ok(Feeder { tx: Some(tx), writer, watchdog: (done_tx, watchdog), children, errs, sink })
    }

    /// Queue a chunk for the replica; once it stopped taking them, drop it.
    fn feed(&mut self, chunk: Arc<[u8]>) {
        if let Some(tx) = &self.tx {
            if tx.send(chunk).is_err() {
                self.tx = None;
            }
        }
    }

    fn alive(&self) -> bool {
        self.tx.is_some()
    }

    /// End of the stream: close the replica's input (or kill it when the stream was cut),
    /// wait for every stage, and say how it went.
    fn finish(mut self, cut: bool) -> Result<(), Failure> {
        if cut {
            kill_all(&self.children);
        }
        self.tx = None;
        let wrote_all = self.writer.join().unwrap_or(false);
        let _ = self.watchdog.0.send(());
        let stalled = self.watchdog.1.join().unwrap_or(false);
        let statuses: Vec<std::process::ExitStatus> = {
            let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
            children.iter_mut().map(|c| c.wait().unwrap_or_default()).collect()
        };
        let what = &self.sink.what;
        if stalled {
            return Err(Failure::new(
                ExitCode::Unreachable,
                format!(
                    "{what}: no byte moved for {}s (--idle-timeout): {} stopped reading, so the replica was dropped; \
                     it keeps its last good snapshot",
                    self.sink.idle.as_secs(),
                    self.sink.stages[0].name
                ),
            ));
        }
        let ended: Vec<Ended> = statuses
            .into_iter()
            .zip(self.errs)
            .map(|(s, e)| {
                use std::os::unix::process::ExitStatusExt;
                Ended { code: s.code(), signal: s.signal(), stderr: e.join().unwrap_or_default() }
            })
            .collect();
        if let Some(f) = blame(&self.sink.stages, &ended, &self.sink.target, what) {
            return Err(f);
        }
        if cut {
            return Err(Failure::new(
                ExitCode::StreamCut,
                format!("{what}: the stream was cut; the replica keeps its last good snapshot"),
            ));
        }
        if !wrote_all {
            return Err(Failure::new(
                ExitCode::StreamCut,
                format!(
                    "{what}: {} stopped reading before the end; the replica keeps its last good snapshot",
                    self.sink.stages[0].name
                ),
            ));
        }
        Ok(())
    }
}

/// The started stages, the first one's stdin, and one stderr collector per stage.
type Started = (Vec<Child>, ChildStdin, Vec<JoinHandle<String>>);

/// Start the stages wired stdout to stdin; the first one's stdin is ours to write.
fn spawn(stages: &[Stage]) -> Result<Started, Failure> {
    let mut children: Vec<Child> = Vec::with_capacity(stages.len());
    let mut errs = Vec::with_capacity(stages.len());
    let mut first_in = None;
    let mut prev = None;
    for (i, stage) in stages.iter().enumerate() {
        let stdin = match prev.take() {
            Some(out) => Stdio::from(out),
            None => Stdio::piped(),
        };
        let last = i + 1 == stages.len();
        let spawned = Command::new(&stage.argv[0])
            .args(&stage.argv[1..])
            .stdin(stdin)
            .stdout(if last { Stdio::null() } else { Stdio::piped() })
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                for c in &mut children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(Failure::new(ExitCode::Failure, format!("cannot start {}: {e}", stage.name)));
            }
        };
        if i == 0 {
            first_in = child.stdin.take();
        }
        prev = child.stdout.take();
        let err = child.stderr.take();
        errs.push(std::thread::spawn(move || super::transfer::collect(err)));
        children.push(child);
    }
    match first_in {
        Some(stdin) => Ok((children, stdin, errs)),
        None => Err(Failure::new(ExitCode::Internal, "the replica's pipeline has no stages")),
    }
}

/// The writer thread: every chunk into the first stage; `false` when it stopped reading.
fn write_all(rx: mpsc::Receiver<Arc<[u8]>>, mut stdin: ChildStdin, moved: &AtomicU64, writing: &AtomicBool) -> bool {
    for chunk in rx {
        writing.store(true, Ordering::Relaxed);
        // In pipe-sized pieces, so a slow reader still shows as moving to the watchdog.
        for piece in chunk.chunks(64 << 10) {
            if stdin.write_all(piece).is_err() {
                return false;
            }
            moved.fetch_add(piece.len() as u64, Ordering::Relaxed);
        }
        writing.store(false, Ordering::Relaxed);
    }
    true
}

/// The watchdog: `true` when it killed the stages because nothing moved for `idle` while
/// the writer was blocked giving them bytes.
fn watch(
    done: &mpsc::Receiver<()>,
    moved: &AtomicU64,
    writing: &AtomicBool,
    idle: Duration,
    children: &Mutex<Vec<Child>>,
) -> bool {
    let mut last = (moved.load(Ordering::Relaxed), Instant::now());
    loop {
        match done.recv_timeout(Duration::from_millis(200)) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return false,
        }
        let n = moved.load(Ordering::Relaxed);
        if n != last.0 {
            last = (n, Instant::now());
        } else if writing.load(Ordering::Relaxed) && last.1.elapsed() >= idle {
            kill_all(children);
            return true;
        }
    }
}

fn kill_all(children: &Mutex<Vec<Child>>) {
    let mut children = children.lock().unwrap_or_else(|p| p.into_inner());
    for c in children.iter_mut() {
        let _ = c.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zfs::snapshots::Snapshot;

    fn snap(name: &str, guid: u64) -> Snapshot {
        Snapshot {
            dataset: "pool/r".into(),
            name: name.into(),
            guid,
            createtxg: guid,
            creation: 0,
            used: 0,
            referenced: 0,
            logical_referenced: None,
            holds: 0,
        }
    }

    fn present(snaps: &[(&str, u64)], modified: Option<bool>) -> Target {
        Target::Present { snapshots: snaps.iter().map(|(n, g)| snap(n, *g)).collect(), modified }
    }

    fn refused(p: Passing) -> (ExitCode, String) {
        match p {
            Passing::Refuse { code, reason } => (code, reason),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_replica_takes_only_what_moves_it_forward() {
        let fix = "zsync-ssh tank/d host:pool/r";
        assert_eq!(decide(&Target::Missing, 10, 0, fix), Passing::Receive);
        assert_eq!(decide(&present(&[("a", 1), ("b", 2)], Some(false)), 3, 2, fix), Passing::Receive);
        assert_eq!(decide(&present(&[("a", 1), ("b", 2)], None), 3, 2, fix), Passing::Receive);
        // Renamed on the replica: matched by guid.
        assert_eq!(decide(&present(&[("x", 1), ("y", 2)], Some(false)), 3, 2, fix), Passing::Receive);
        assert_eq!(
            decide(&present(&[("a", 1), ("b2", 2)], Some(true)), 2, 1, fix),
            Passing::Have { snapshot: "b2".into() }
        );
        assert_eq!(decide(&present(&[("a", 1)], None), 1, 0, fix), Passing::Have { snapshot: "a".into() });
    }

    #[test]
    fn refusals_say_why_and_what_to_run() {
        let fix = "zsync-ssh tank/d host:pool/r";
        let (code, why) = refused(decide(&Target::Missing, 3, 2, fix));
        assert_eq!(code, ExitCode::NotFound);
        assert!(why.contains("does not exist") && why.contains(fix), "{why}");

        let (code, why) = refused(decide(&present(&[("a", 1)], Some(false)), 5, 0, fix));
        assert_eq!(code, ExitCode::Diverged);
        assert!(why.contains("full stream") && why.contains("@a"), "{why}");

        let (code, why) = refused(decide(&present(&[("a", 1)], Some(false)), 3, 2, fix));
        assert_eq!(code, ExitCode::NotFound);
        assert!(why.contains("behind") && why.contains("guid 2") && why.contains(fix), "{why}");

        let (code, why) = refused(decide(&present(&[("a", 1), ("b", 2), ("own", 9)], Some(false)), 3, 2, fix));
        assert_eq!(code, ExitCode::Diverged);
        assert!(why.contains("1 snapshot(s) after the base @b") && why.contains("--rollback"), "{why}");

        let (code, why) = refused(decide(&present(&[("a", 1), ("b", 2)], Some(true)), 3, 2, fix));
        assert_eq!(code, ExitCode::Diverged);
        assert!(why.contains("written since") && why.contains("@b"), "{why}");
    }

    fn sink(script: &str, idle: Duration) -> Sink {
        Sink {
            stages: vec![Stage {
                name: "zfs recv".into(),
                argv: vec!["bash".into(), "-c".into(), script.into()],
                zsnap_codes: false,
            }],
            target: Location::Local,
            what: "t@s to r".into(),
            idle,
        }
    }

    #[test]
    fn every_byte_reaches_both_sinks() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let dir = std::env::temp_dir().join(format!("zsnap-tee-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let file = dir.join("replica");
        let s = sink(&format!("cat > '{}'", file.display()), Duration::from_secs(30));
        let mut out = Vec::new();
        let p = pass(&data[..], &mut out, Some(s));
        assert_eq!((p.bytes, p.stdout_closed, p.read_error.is_none()), (data.len() as u64, false, true));
        assert!(matches!(p.replica, Some(Ok(()))), "{:?}", p.replica.as_ref().map(|r| r.as_ref().err()));
        assert!(out == data, "stdout differs");
        assert!(std::fs::read(&file).expect("replica file") == data, "replica differs");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failing_replica_never_stops_the_stream() {
        let data = vec![7u8; 5 << 20];
        let mut out = Vec::new();
        let p = pass(
            &data[..],
            &mut out,
            Some(sink(
                "head -c 1000 >/dev/null; echo 'cannot receive: out of space' >&2; exit 1",
                Duration::from_secs(30),
            )),
        );
        assert!(out == data, "stdout got {} of {} bytes", out.len(), data.len());
        let f = p.replica.expect("fed").expect_err("replica failed");
        assert!(f.message.contains("out of space"), "{}", f.message);

        let mut out = Vec::new();
        let p = pass(&data[..], &mut out, Some(sink("exec /nonexistent/zfs", Duration::from_secs(30))));
        assert!(out == data);
        assert!(p.replica.expect("fed").is_err());
    }

    #[test]
    fn a_stalled_replica_is_dropped_after_the_idle_timeout() {
        let data = vec![1u8; 32 << 20];
        let mut out = Vec::new();
        let p = pass(&data[..], &mut out, Some(sink("exec sleep 60", Duration::from_secs(1))));
        assert!(out == data);
        let f = p.replica.expect("fed").expect_err("stalled");
        assert_eq!(f.code, ExitCode::Unreachable, "{}", f.message);
        assert!(f.message.contains("--idle-timeout"), "{}", f.message);
    }
}
