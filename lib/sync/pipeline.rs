//! The exact commands of a transfer (pure): `zfs send | [compress] | [mbuffer] | ssh HOST
//! '[decompress |] zfs recv'`, the same words `--dry-run` prints, and which stage to blame
//! when one fails: the first stage that failed on its own (not of a broken pipe).

use super::plan::Step;
use crate::cli::{ExitCode, Failure};
use crate::plan::join;
use crate::zfs::send::SendOptions;

/// Where a zfs command runs: here, or on a host through ssh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Local,
    /// `ssh` is the whole ssh command before the host (`ssh -o … -p …`).
    Remote {
        host: String,
        ssh: Vec<String>,
    },
}

impl Location {
    /// `argv` as run at this location: unchanged, or one quoted remote command line.
    pub fn argv(&self, argv: &[String]) -> Vec<String> {
        match self {
            Location::Local => argv.to_vec(),
            Location::Remote { host, ssh } => {
                let mut v = ssh.clone();
                v.push(host.clone());
                v.push(join(argv));
                v
            }
        }
    }

    /// `host:` for messages, or nothing for local.
    pub fn label(&self) -> String {
        match self {
            Location::Local => "localhost".into(),
            Location::Remote { host, .. } => host.clone(),
        }
    }
}

/// The ssh command before the host: the user's options first (ssh keeps the first value it
/// sees), then ours, so `-o BatchMode=no` still wins over our BatchMode=yes.
pub fn ssh_command(config: Option<&str>, options: &[String], port: Option<u16>, identity: Option<&str>) -> Vec<String> {
    let mut v = vec!["ssh".to_string()];
    if let Some(c) = config {
        v.extend(["-F".into(), c.into()]);
    }
    for o in options {
        v.extend(["-o".into(), o.clone()]);
    }
    if let Some(p) = port {
        v.extend(["-p".into(), p.to_string()]);
    }
    if let Some(i) = identity {
        v.extend(["-i".into(), i.into()]);
    }
    // Never wait for a password or a host-key question in cron; notice a dead peer.
    v.extend(["-o".into(), "BatchMode=yes".into(), "-o".into(), "ServerAliveInterval=15".into()]);
    v
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compress {
    None,
    Zstd,
    Pigz,
    Lz4,
}

impl Compress {
    pub fn parse(text: &str) -> Result<Compress, Failure> {
        match text {
            "none" => Ok(Compress::None),
            "zstd" => Ok(Compress::Zstd),
            "pigz" => Ok(Compress::Pigz),
            "lz4" => Ok(Compress::Lz4),
            _ => Err(Failure::usage(format!("--compress: '{text}' is not zstd, pigz, lz4 or none"))),
        }
    }

    pub fn compress(self) -> Option<Vec<String>> {
        let w: &[&str] = match self {
            Compress::None => return None,
            Compress::Zstd => &["zstd", "-q", "-c", "-T0"],
            Compress::Pigz => &["pigz", "-c"],
            Compress::Lz4 => &["lz4", "-q", "-c"],
        };
        Some(words(w))
    }

    pub fn decompress(self) -> Option<Vec<String>> {
        let w: &[&str] = match self {
            Compress::None => return None,
            Compress::Zstd => &["zstd", "-q", "-d", "-c"],
            Compress::Pigz => &["pigz", "-d", "-c"],
            Compress::Lz4 => &["lz4", "-q", "-d", "-c"],
        };
        Some(words(w))
    }
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

/// `zfs send [OPTIONS]` for one step of `source` (`-w` among the options for an
/// encrypted source).
pub fn send_argv(source: &str, options: SendOptions, step: &Step) -> Vec<String> {
    let mut v = words(&["zfs", "send"]);
    v.extend(options.args());
    match step {
        Step::Full { to, .. } => v.push(format!("{source}@{to}")),
        Step::Incremental { from, to, intermediates, .. } => {
            let flag = if *intermediates { "-I" } else { "-i" };
            v.extend([flag.to_string(), format!("{source}@{from}"), format!("{source}@{to}")]);
        }
    }
    v
}

/// `zfs send -n -P ARGS`: the size of the same send without sending it (where zfs has
/// -nP), for the progress line; `None` for what is not a `zfs send`.
pub fn estimate_argv(send: &[String]) -> Option<Vec<String>> {
    match send {
        [zfs, verb, rest @ ..] if verb == "send" => {
            let mut v = vec![zfs.clone(), verb.clone(), "-n".into(), "-P".into()];
            v.extend(rest.iter().cloned());
            Some(v)
        }
        _ => None,
    }
}

/// `zfs send -t TOKEN`: the rest of an interrupted stream (OpenZFS).
pub fn resume_send_argv(token: &str) -> Vec<String> {
    words(&["zfs", "send", "-t", token])
}

/// `zfs recv`: `-s` keeps a cut stream's state for resuming (OpenZFS), `-F` rolls back
/// changes made since the newest snapshot.
pub fn recv_argv(target: &str, resumable: bool, force: bool) -> Vec<String> {
    let mut v = words(&["zfs", "recv"]);
    if resumable {
        v.push("-s".into());
    }
    if force {
        v.push("-F".into());
    }
    v.push(target.into());
    v
}

/// One process of the pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// What messages call it: `zfs send`, `zstd`, `ssh host2`, `zfs recv`.
    pub name: String,
    pub argv: Vec<String>,
    /// Its exit status is one of zsnap's codes (s3get): a failure of its own exits with it.
    pub zsnap_codes: bool,
}

impl Stage {
    fn new(name: impl Into<String>, argv: Vec<String>) -> Stage {
        Stage { name: name.into(), argv, zsnap_codes: false }
    }
}

/// The stages of one transfer, in order.
pub fn stages(
    send: Vec<String>,
    compress: Compress,
    buffer: Option<&str>,
    target: &Location,
    recv: Vec<String>,
) -> Vec<Stage> {
    stages_from(Stage::new("zfs send", send), compress, buffer, target, recv)
}

/// The stages of one object of the chain in S3 into the replica: `s3get` (its stream gate
/// checks every record before zfs recv sees it) in place of `zfs send`.
pub fn s3get_stages(
    s3get: Vec<String>,
    compress: Compress,
    buffer: Option<&str>,
    target: &Location,
    recv: Vec<String>,
) -> Vec<Stage> {
    let first = Stage { name: "s3get".into(), argv: s3get, zsnap_codes: true };
    stages_from(first, compress, buffer, target, recv)
}

fn stages_from(
    first: Stage,
    compress: Compress,
    buffer: Option<&str>,
    target: &Location,
    recv: Vec<String>,
) -> Vec<Stage> {
    let mut v = vec![first];
    v.extend(receiving_stages(compress, buffer, target, recv));
    v
}

/// The stages after the stream's source: `[compressor | mbuffer |] ssh HOST '[decompressor
/// |] zfs recv DST'`, or a local `zfs recv` (zsync-ssh --tee writes into the first).
pub fn receiving_stages(compress: Compress, buffer: Option<&str>, target: &Location, recv: Vec<String>) -> Vec<Stage> {
    let mut v = Vec::new();
    match target {
        Location::Local => v.push(Stage::new("zfs recv", recv)),
        Location::Remote { host, ssh } => {
            if let Some(c) = compress.compress() {
                v.push(Stage::new(c[0].clone(), c));
            }
            if let Some(size) = buffer {
                v.push(Stage::new("mbuffer", words(&["mbuffer", "-q", "-m", size])));
            }
            let remote = match compress.decompress() {
                Some(d) => format!("{} | {}", join(&d), join(&recv)),
                None => join(&recv),
            };
            let mut argv = ssh.clone();
            argv.push(host.clone());
            argv.push(remote);
            v.push(Stage::new(format!("ssh {host}"), argv));
        }
    }
    v
}

/// The pipeline as one shell line, exactly what runs (for --dry-run).
pub fn shell_line(stages: &[Stage]) -> String {
    stages.iter().map(|s| join(&s.argv)).collect::<Vec<_>>().join(" | ")
}

/// How one stage ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stderr: String,
}

impl Ended {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Died because the stage after it went away (SIGPIPE or EPIPE), not a cause.
    fn broken_pipe(&self) -> bool {
        self.signal == Some(13) || self.code == Some(141) || self.stderr.to_ascii_lowercase().contains("broken pipe")
    }
}

/// Collapse a program's stderr to its last meaningful line.
pub fn last_line(stderr: &str) -> String {
    let joined = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>();
    // zfs wraps one message over two lines ("...has been modified\nsince most recent snapshot").
    let tail = match joined.len() {
        0 => String::new(),
        1 => joined[0].to_string(),
        n if !joined[n - 1].contains(':') && !joined[n - 1].starts_with("usage") => {
            format!("{} {}", joined[n - 2], joined[n - 1])
        }
        n => joined[n - 1].to_string(),
    };
    tail.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The failure to report for a finished pipeline, or `None` when every stage exited 0.
/// `what` names the transfer (`tank/d@b to host2:pool/d`).
pub fn blame(stages: &[Stage], ended: &[Ended], target: &Location, what: &str) -> Option<Failure> {
    let failed: Vec<usize> = (0..ended.len()).filter(|&i| !ended[i].ok()).collect();
    // s3get says "my reader went away" with exit 80, as others die of SIGPIPE.
    let cut_off = |i: usize| ended[i].broken_pipe() || (stages[i].zsnap_codes && ended[i].code == Some(80));
    let &i = failed.iter().find(|&&i| !cut_off(i)).or(failed.last())?;
    let (stage, e) = (&stages[i], &ended[i]);
    let detail = last_line(&e.stderr);
    let is_ssh = stage.name.starts_with("ssh ");
    if is_ssh || stage.name == "zfs recv" {
        return Some(receiver_failure(e, &detail, target, what));
    }
    let how = match (e.code, e.signal) {
        (_, Some(s)) => format!("was killed by signal {s}"),
        (Some(c), _) => format!("exited {c}"),
        _ => "failed".into(),
    };
    let code = match e.code {
        // s3get said what failed with a code of the table (65 corrupt, 69 unreachable …).
        Some(c) if stage.zsnap_codes && c != 0 => crate::cli::exit::from_code(c),
        _ if detail.contains("does not exist") => ExitCode::NotFound,
        _ => ExitCode::StreamCut,
    };
    let detail = if detail.is_empty() { String::new() } else { format!(": {detail}") };
    Some(Failure::new(code, format!("{what}: {} {how}{detail}; the target keeps its last good snapshot", stage.name)))
}

/// A failure of `ssh HOST 'zfs recv …'` (or of a local `zfs recv`), by what it printed.
pub fn receiver_failure(e: &Ended, detail: &str, target: &Location, what: &str) -> Failure {
    let host = target.label();
    let kept = "; the target keeps its last good snapshot";
    let (code, msg) = if let Some(s) = e.signal {
        (ExitCode::StreamCut, format!("ssh to {host} was killed by signal {s}{kept}"))
    } else if e.code == Some(255) && matches!(target, Location::Remote { .. }) {
        ssh_failure(&host, detail)
    } else if e.code == Some(127) {
        (ExitCode::Failure, format!("a command was not found on {host} (is zfs installed there?): {detail}"))
    } else if detail.contains("has been modified") || detail.contains("does not match incremental source") {
        (
            ExitCode::Diverged,
            format!("zfs recv on {host} refused: {detail} (the target diverged; --rollback rolls it back)"),
        )
    } else if detail.contains("permission denied") || detail.contains("Permission denied") {
        (ExitCode::AccessDenied, format!("zfs recv on {host} was denied: {detail}"))
    } else if detail.contains("out of space") || detail.contains("No space left") {
        (ExitCode::StreamCut, format!("zfs recv on {host} failed: {detail} (disk full on the target){kept}"))
    } else if detail.contains("does not exist") {
        (ExitCode::NotFound, format!("zfs recv on {host} failed: {detail}"))
    } else {
        let d = if detail.is_empty() { format!("exit {}", e.code.unwrap_or(-1)) } else { detail.to_string() };
        (ExitCode::StreamCut, format!("zfs recv on {host} failed: {d}{kept}"))
    };
    Failure::new(code, format!("{what}: {msg}"))
}

/// ssh's own failure (exit 255), by its message.
pub fn ssh_failure(host: &str, detail: &str) -> (ExitCode, String) {
    let d = if detail.is_empty() { "connection closed".to_string() } else { detail.to_string() };
    let code = if d.contains("Could not resolve hostname") || d.contains("Name or service not known") {
        ExitCode::DnsTls
    } else if d.contains("Connection refused") || d.contains("timed out") || d.contains("No route to host") {
        ExitCode::Unreachable
    } else if d.contains("Permission denied") || d.contains("Host key verification failed") {
        ExitCode::BadCredentials
    } else {
        ExitCode::StreamCut
    };
    (code, format!("ssh to {host} failed: {d}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote() -> Location {
        Location::Remote {
            host: "backup@nas".into(),
            ssh: ssh_command(None, &["Compression=no".into()], Some(2222), None),
        }
    }

    #[test]
    fn size_estimates_ask_the_same_send_with_n_and_p() {
        let send = send_argv("tank/a", SendOptions::default(), &Step::Full { to: "s1".into(), guid: 1 });
        let want = words(&["zfs", "send", "-n", "-P", "tank/a@s1"]);
        assert_eq!(estimate_argv(&send), Some(want));
        assert_eq!(estimate_argv(&words(&["s3get", "s3://b/k"])), None);
        assert_eq!(estimate_argv(&[]), None);
    }

    #[test]
    fn pipelines() {
        let inc = Step::Incremental { from: "a".into(), to: "b b".into(), guid: 2, intermediates: false };
        let full = Step::Full { to: "a".into(), guid: 1 };
        let all = Step::Incremental { from: "a".into(), to: "c".into(), guid: 3, intermediates: true };
        let cases: Vec<(Vec<Stage>, &str)> = vec![
            (
                stages(send_argv("tank/d", SendOptions::RAW, &inc), Compress::Zstd, Some("256M"), &remote(), recv_argv("pool/d", false, false)),
                "zfs send -w -i tank/d@a 'tank/d@b b' | zstd -q -c -T0 | mbuffer -q -m 256M | ssh -o Compression=no -p 2222 \
                 -o BatchMode=yes -o ServerAliveInterval=15 backup@nas 'zstd -q -d -c | zfs recv pool/d'",
            ),
            (
                stages(send_argv("tank/d", SendOptions::default(), &full), Compress::None, None, &remote(), recv_argv("pool/d", true, true)),
                "zfs send tank/d@a | ssh -o Compression=no -p 2222 -o BatchMode=yes -o ServerAliveInterval=15 backup@nas \
                 'zfs recv -s -F pool/d'",
            ),
            (
                stages(send_argv("tank/d", SendOptions::default(), &all), Compress::Lz4, None, &Location::Local, recv_argv("tank/copy", false, false)),
                "zfs send -I tank/d@a tank/d@c | zfs recv tank/copy",
            ),
            (
                stages(resume_send_argv("1-abc"), Compress::Pigz, None, &remote(), recv_argv("pool/d", true, false)),
                "zfs send -t 1-abc | pigz -c | ssh -o Compression=no -p 2222 -o BatchMode=yes -o ServerAliveInterval=15 \
                 backup@nas 'pigz -d -c | zfs recv -s pool/d'",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(shell_line(&got), want);
        }
        let s = stages(
            send_argv("t/d", SendOptions::default(), &full),
            Compress::Zstd,
            None,
            &remote(),
            recv_argv("p/d", false, false),
        );
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["zfs send", "zstd", "ssh backup@nas"]);
    }

    fn ended(code: Option<i32>, signal: Option<i32>, stderr: &str) -> Ended {
        Ended { code, signal, stderr: stderr.into() }
    }

    #[test]
    fn blame_the_first_stage_that_failed_on_its_own() {
        let s = stages(
            send_argv("t/d", SendOptions::default(), &Step::Full { to: "a".into(), guid: 1 }),
            Compress::Zstd,
            None,
            &remote(),
            recv_argv("p/d", false, false),
        );
        let ok = || ended(Some(0), None, "");
        let pipe = || ended(None, Some(13), "");
        type Case = (Vec<Ended>, Option<(i32, &'static str)>);
        let cases: Vec<Case> = vec![
            (vec![ok(), ok(), ok()], None),
            (vec![pipe(), pipe(), ended(None, Some(9), "")], Some((67, "ssh to backup@nas was killed by signal 9"))),
            (
                vec![ended(Some(1), None, "WARNING: could not send t/d@a:\nincremental source does not exist\n"), ok(), ended(Some(1), None, "cannot receive: invalid backup stream")],
                Some((66, "zfs send exited 1: WARNING: could not send t/d@a: incremental source does not exist")),
            ),
            (vec![pipe(), pipe(), ended(Some(1), None, "cannot receive new filesystem stream: out of space\n")], Some((67, "disk full on the target"))),
            (
                vec![ok(), ok(), ended(Some(1), None, "cannot receive incremental stream: destination p/d has been modified\nsince most recent snapshot\n")],
                Some((79, "destination p/d has been modified since most recent snapshot (the target diverged")),
            ),
            (vec![pipe(), pipe(), ended(Some(255), None, "ssh: Could not resolve hostname nas: Name or service not known\n")], Some((71, "ssh to backup@nas failed: ssh: Could not resolve"))),
            (vec![pipe(), pipe(), ended(Some(255), None, "backup@nas: Permission denied (publickey).\n")], Some((78, "Permission denied (publickey)"))),
            (vec![pipe(), pipe(), ended(Some(255), None, "ssh: connect to host nas port 2222: Connection refused\n")], Some((69, "Connection refused"))),
            (vec![pipe(), pipe(), ended(Some(127), None, "sh: 1: zfs: not found\n")], Some((3, "not found on backup@nas"))),
            (vec![pipe(), ended(Some(1), None, "zstd: error 70 : Write error : cannot write block : Broken pipe"), ended(Some(1), None, "cannot receive: permission denied")], Some((77, "denied"))),
            (vec![ok(), ended(Some(1), None, "zstd: out of memory"), ended(Some(1), None, "invalid backup stream")], Some((67, "zstd exited 1: zstd: out of memory"))),
        ];
        for (e, want) in cases {
            let got = blame(&s, &e, &remote(), "t/d@a to backup@nas:p/d");
            match (got, want) {
                (None, None) => {}
                (Some(f), Some((code, needle))) => {
                    assert_eq!(f.code.code(), code, "{}", f.message);
                    assert!(f.message.contains(needle), "{} lacks {needle}", f.message);
                    assert!(f.message.starts_with("t/d@a to backup@nas:p/d: "), "{}", f.message);
                }
                (got, want) => panic!("got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn s3get_fails_with_its_own_code() {
        let s = s3get_stages(
            words(&["s3get", "--zfs-stream", "s3://b/k"]),
            Compress::None,
            None,
            &remote(),
            recv_argv("p/d", false, false),
        );
        assert_eq!(
            shell_line(&s),
            "s3get --zfs-stream s3://b/k | ssh -o Compression=no -p 2222 -o BatchMode=yes -o ServerAliveInterval=15 \
             backup@nas 'zfs recv p/d'"
        );
        let cut = ended(Some(1), None, "cannot receive new filesystem stream: incomplete stream");
        let what = "s3://b/k to backup@nas:p/d";
        for (code, stderr, want) in [
            (65, "s3get: s3://b/k: stream: END checksum mismatch", 65),
            (69, "s3get: s3://b/k: endpoint unreachable", 69),
            (66, "s3get: s3://b/k does not exist", 66),
        ] {
            let f = blame(&s, &[ended(Some(code), None, stderr), cut.clone()], &remote(), what).expect("a failure");
            assert_eq!(f.code.code(), want, "{}", f.message);
            assert!(f.message.contains("s3get exited") && f.message.contains(stderr), "{}", f.message);
        }
        // zfs recv failing on its own while s3get is cut off by it: the receiver is to blame.
        let pipe = ended(Some(80), None, "");
        let full = ended(Some(1), None, "cannot receive new filesystem stream: out of space");
        let f = blame(&s, &[pipe, full], &remote(), what).expect("a failure");
        assert!(f.message.contains("disk full"), "{}", f.message);
    }

    #[test]
    fn locations() {
        assert_eq!(Location::Local.argv(&words(&["zfs", "list"])), ["zfs", "list"]);
        let r = Location::Remote { host: "h".into(), ssh: words(&["ssh"]) };
        assert_eq!(r.argv(&words(&["zfs", "get", "a b"])), ["ssh", "h", "zfs get 'a b'"]);
        assert_eq!(
            ssh_command(Some("/c"), &[], None, Some("/k")),
            words(&["ssh", "-F", "/c", "-i", "/k", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=15"])
        );
        assert!(Compress::parse("gzip").is_err());
        assert_eq!(last_line("a\n\nfoo: bar\n"), "foo: bar");
    }
}
