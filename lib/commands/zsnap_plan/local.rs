//! What zsnap-plan reads from the local zfs: the feature probe, the dataset's snapshots,
//! bookmarks and encryption, the send options that follow from them, and `zfs send -nP`
//! sizes for the sends a plan makes. Thin I/O; the decisions are in `plan::backup`.

use crate::cli::{ExitCode, Failure};
use crate::config::Settings;
use crate::plan::backup;
use crate::zfs::features::Features;
use crate::zfs::send::SendOptions;
use crate::zfs::snapshots::{self, Listing};
use std::collections::HashMap;
use std::process::{Command, Stdio};

/// The local side of a plan.
pub struct Local {
    pub features: Features,
    /// Snapshots (matching the prefix, for a backup), bookmarks and encryption.
    pub listing: Listing,
    /// Options new streams are made with (backup only).
    pub options: SendOptions,
    /// `zfs send -nP` sizes by (from guid or 0, to guid).
    pub estimates: HashMap<(u64, u64), u64>,
}

/// Probe zfs and read `dataset`. For a backup (`req`), the snapshots are those matching
/// the prefix, and the send options are resolved and checked against what zfs accepts
/// before anything is sent.
pub fn read(dataset: &str, settings: &Settings, req: Option<&backup::Request>) -> Result<Local, Failure> {
    let features = Features::detect()?;
    let mut listing = snapshots::read(dataset, &features)?;
    let mut options = SendOptions::default();
    if let Some(req) = req {
        listing.snapshots = snapshots::matching(std::mem::take(&mut listing.snapshots), settings.snapshot_prefix());
        options = backup::checked_send_options(settings.send_options, dataset, &listing, req.decrypt_send, &features)?;
        if listing.encrypted() && req.decrypt_send {
            eprintln!(
                "zsnap-plan: warning: {dataset} is encrypted ({}) and --decrypt-send sends it DECRYPTED: its \
                 plaintext goes to the bucket",
                listing.encryption.as_deref().unwrap_or("?")
            );
        }
    }
    Ok(Local { features, listing, options, estimates: HashMap::new() })
}

impl Local {
    pub fn source(&self) -> backup::Source<'_> {
        backup::Source {
            snapshots: &self.listing.snapshots,
            bookmarks: &self.listing.bookmarks,
            options: self.options,
            bookmark_sent: self.features.bookmarks(),
            estimates: Some(&self.estimates),
        }
    }

    /// Ask `zfs send -nP` the size of every send in `sends`. Where this zfs has no -nP,
    /// say so once and keep the guesses.
    pub fn estimate(&mut self, sends: &super::inputs::Sizing) -> Result<(), Failure> {
        if sends.is_empty() {
            return Ok(());
        }
        if !self.features.size_estimate() {
            eprintln!(
                "zsnap-plan: {} has no zfs send -nP: part sizes and progress use the snapshots' sizes instead",
                self.features.name()
            );
            return Ok(());
        }
        for (key, argv) in sends {
            self.estimates.insert(*key, dry_run_size(argv)?);
        }
        Ok(())
    }
}

/// `zfs send -nP ARGS…`: the `size` line of its parsable output.
fn dry_run_size(zfs_send: &[String]) -> Result<u64, Failure> {
    let mut argv: Vec<String> = zfs_send.iter().skip(2).cloned().collect();
    argv.splice(0..0, ["-n".to_string(), "-P".to_string()]);
    let out = Command::new("zfs")
        .arg("send")
        .args(&argv)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Failure::new(ExitCode::Failure, format!("cannot run zfs: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let what = crate::plan::join(zfs_send);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).split_whitespace().collect::<Vec<_>>().join(" ");
        return Err(Failure::new(ExitCode::Failure, format!("estimating {what} (zfs send -nP) failed: {err}")));
    }
    parse_size(&text)
        .ok_or_else(|| Failure::new(ExitCode::Protocol, format!("zfs send -nP printed no size for {what}: {text}")))
}

/// The `size\tN` line of `zfs send -nP` (OpenZFS prints it last, also for incrementals).
pub fn parse_size(text: &str) -> Option<u64> {
    text.lines().filter_map(|l| l.strip_prefix("size")).find_map(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_size_line() {
        assert_eq!(parse_size("full\ttp/a@s1\t1234\nsize\t1234\n"), Some(1234));
        assert_eq!(parse_size("incremental\ts1\ttp/a@s2\t99\nsize\t99\n"), Some(99));
        assert_eq!(parse_size("full\ttp/a@s1\t1234\n"), None);
    }
}
