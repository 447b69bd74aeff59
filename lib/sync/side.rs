//! Running zfs on one side of a replication, here or through ssh: list snapshots, read the
//! target's properties, probe for resumable receive, roll back, hold and release. Thin:
//! every decision about the answers is made in `plan` and `pipeline`.

use super::pipeline::{last_line, ssh_failure, Location};
use crate::cli::{ExitCode, Failure};
use crate::zfs::features::Features;
use crate::zfs::snapshots::{self, Listing, Snapshot};
use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};

/// A place zfs runs.
pub struct Side {
    pub location: Location,
}

impl Side {
    /// Run `argv` (a zfs command) at this side; `Err` only when it could not be started.
    pub fn run(&self, argv: &[String]) -> Result<Output, Failure> {
        let words = self.location.argv(argv);
        Command::new(&words[0])
            .args(&words[1..])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Failure::new(ExitCode::Failure, format!("cannot run {}: {e}", words[0])))
    }

    /// A failure of `what` from a finished command: ssh's own errors (exit 255) first.
    fn failure(&self, what: &str, out: &Output) -> Failure {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let detail = last_line(&stderr);
        if let (Some(255), Location::Remote { host, .. }) = (out.status.code(), &self.location) {
            let (code, msg) = ssh_failure(host, &detail);
            return Failure::new(code, format!("{what}: {msg}"));
        }
        if out.status.code() == Some(127) {
            let msg = format!("{what}: zfs was not found on {} ({detail})", self.location.label());
            return Failure::new(ExitCode::Failure, msg);
        }
        if detail.contains("permission denied") || detail.contains("Permission denied") {
            return Failure::new(ExitCode::AccessDenied, format!("{what} on {}: {detail}", self.location.label()));
        }
        let code = if detail.contains("does not exist") { ExitCode::NotFound } else { ExitCode::Failure };
        Failure::new(code, format!("{what} on {} failed: {detail}", self.location.label()))
    }

    /// Run and require exit 0; stdout as text.
    fn check(&self, what: &str, argv: &[String]) -> Result<String, Failure> {
        let out = self.run(argv)?;
        if !out.status.success() {
            return Err(self.failure(what, &out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The dataset's own snapshots in txg order, or `None` when it does not exist.
    pub fn snapshots(&self, dataset: &str) -> Result<Option<Vec<Snapshot>>, Failure> {
        Ok(self.listing(dataset, &Features::default())?.map(|l| l.snapshots))
    }

    /// Snapshots, bookmarks and encryption of the dataset, as far as `features` (this
    /// side's zfs) has them; `None` when it does not exist.
    pub fn listing(&self, dataset: &str, features: &Features) -> Result<Option<Listing>, Failure> {
        let mut argv = vec!["zfs".to_string()];
        argv.extend(snapshots::command_args(dataset, features));
        let out = self.run(&argv)?;
        if !out.status.success() {
            let f = self.failure(&format!("listing snapshots of {dataset}"), &out);
            return if f.code == ExitCode::NotFound { Ok(None) } else { Err(f) };
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let list = snapshots::parse_listing(dataset, &text).map_err(|e| {
            Failure::new(ExitCode::Protocol, format!("cannot read zfs get output from {}: {e}", self.location.label()))
        })?;
        Ok(Some(list))
    }

    /// What this side's zfs supports (one probe; see `zfs::features`). An ssh failure is
    /// reported as such, not as a zfs without features.
    pub fn features(&self) -> Result<Features, Failure> {
        let mut ssh_failed = None;
        let f = Features::detect_with(&self.location.label(), &mut |args| {
            let argv: Vec<String> = std::iter::once("zfs").chain(args.iter().copied()).map(String::from).collect();
            let out = self.run(&argv).map_err(|f| std::io::Error::other(f.message))?;
            if out.status.code() == Some(255) && matches!(self.location, Location::Remote { .. }) {
                ssh_failed = Some(self.failure("probing zfs", &out));
            }
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            Ok(text)
        });
        match ssh_failed {
            Some(f) => Err(f),
            None => Ok(f?),
        }
    }

    /// Every property zfs has for `dataset` (`zfs get -p all`): works on zfs-fuse and
    /// OpenZFS alike; properties one of them lacks (written, receive_resume_token) are absent.
    pub fn properties(&self, dataset: &str) -> Result<BTreeMap<String, String>, Failure> {
        let argv = words(&["zfs", "get", "-H", "-p", "-o", "property,value", "all", dataset]);
        let text = self.check(&format!("reading properties of {dataset}"), &argv)?;
        Ok(text.lines().filter_map(|l| l.split_once('\t')).map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    /// Discard a cut receive's saved state (`zfs recv -A`), e.g. when the source cannot resume.
    pub fn abort_resume(&self, dataset: &str) -> Result<(), Failure> {
        self.check(&format!("discarding the partial receive of {dataset}"), &words(&["zfs", "recv", "-A", dataset]))
            .map(|_| ())
    }

    /// `zfs rollback -r DS@SNAP`: destroys the snapshots after SNAP and any writes since.
    pub fn rollback(&self, dataset: &str, snapshot: &str) -> Result<(), Failure> {
        let target = format!("{dataset}@{snapshot}");
        self.check(&format!("rolling back to {target}"), &words(&["zfs", "rollback", "-r", &target])).map(|_| ())
    }

    /// Bookmark `dataset@snapshot` as zsnap does (see `snapshots::bookmark_argv`).
    pub fn bookmark(&self, dataset: &str, snapshot: &str) -> Result<(), Failure> {
        let what = format!("bookmarking {dataset}@{snapshot}");
        self.check(&what, &snapshots::bookmark_argv(dataset, snapshot)).map(|_| ())
    }

    /// `zfs destroy DS@SNAP` (one snapshot; never -r or -R).
    pub fn destroy(&self, dataset: &str, snapshot: &str) -> Result<(), Failure> {
        let target = format!("{dataset}@{snapshot}");
        self.check(&format!("destroying {target}"), &words(&["zfs", "destroy", &target])).map(|_| ())
    }

    pub fn hold(&self, tag: &str, snapshot: &str) -> Result<(), Failure> {
        self.check(&format!("holding {snapshot}"), &words(&["zfs", "hold", tag, snapshot])).map(|_| ())
    }

    pub fn release(&self, tag: &str, snapshot: &str) -> Result<(), Failure> {
        self.check(&format!("releasing {snapshot}"), &words(&["zfs", "release", tag, snapshot])).map(|_| ())
    }
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

/// A `zfs hold` on a source snapshot, released when dropped: on success, on failure, and
/// when a signal makes the run return early. (A `kill -9` leaves it; `zfs release TAG SNAP`
/// removes it.)
pub struct Hold<'a> {
    side: &'a Side,
    tag: String,
    snapshot: String,
}

impl<'a> Hold<'a> {
    pub fn take(side: &'a Side, tag: &str, snapshot: &str) -> Result<Hold<'a>, Failure> {
        side.hold(tag, snapshot)?;
        Ok(Hold { side, tag: tag.to_string(), snapshot: snapshot.to_string() })
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if let Err(f) = self.side.release(&self.tag, &self.snapshot) {
            eprintln!("zsync-ssh: warning: {f} (remove it with: zfs release {} {})", self.tag, self.snapshot);
        }
    }
}
