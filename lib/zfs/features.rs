//! What the local `zfs` can do, found out in one place so that nothing else branches on a
//! version number.
//!
//! The probe is `zfs` with no arguments: every implementation prints its whole usage
//! (every command and every option letter it accepts) and exits 2, without touching a
//! pool. OpenZFS 2.x lists `send [-DLPbcehnpsVvw]`, `receive [-vMnsFhu]`, `bookmark`,
//! `load-key` and `version`; zfs-fuse 0.7 lists `send [-RDp]` and none of those commands.
//! When `version` is listed, `zfs version` gives the name shown in status output.

use super::error::{ZfsError, ZfsErrorKind};
use crate::cli::Failure;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};

/// The capabilities of one `zfs` binary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// `zfs version`'s first line (e.g. `zfs-2.3.9-0+deb13u1`); `None` where there is no
    /// such command (zfs-fuse).
    pub version: Option<String>,
    /// Option letters `zfs send` accepts.
    pub send: BTreeSet<char>,
    /// Option letters `zfs receive` accepts.
    pub receive: BTreeSet<char>,
    /// Commands `zfs` has (`bookmark`, `load-key`, …).
    pub commands: BTreeSet<String>,
}

impl Features {
    /// Read `zfs`'s usage text (and `zfs version`'s output, when there is one).
    pub fn parse(usage: &str, version: Option<&str>) -> Features {
        let mut f = Features {
            version: version.and_then(|v| v.lines().map(str::trim).find(|l| !l.is_empty())).map(str::to_string),
            ..Features::default()
        };
        let mut current: Option<String> = None;
        for line in usage.lines() {
            // A command's synopsis starts with a tab and its name; its continuation lines
            // start with a tab and spaces.
            let Some(rest) = line.strip_prefix('\t') else {
                current = None;
                continue;
            };
            if !rest.starts_with(' ') {
                current = rest.split_whitespace().next().map(str::to_string);
                if let Some(c) = &current {
                    f.commands.insert(c.clone());
                }
            }
            let set = match current.as_deref() {
                Some("send") => &mut f.send,
                Some("receive") | Some("recv") => &mut f.receive,
                _ => continue,
            };
            for word in rest.split_whitespace() {
                let w = word.trim_start_matches('[');
                if let Some(letters) = w.strip_prefix('-').filter(|l| !l.starts_with('-')) {
                    set.extend(letters.chars().filter(char::is_ascii_alphabetic));
                }
            }
        }
        f
    }

    /// Run the probe against the `zfs` on PATH; a [`Failure`] because its callers only
    /// pass the error on to `main`.
    pub fn detect() -> Result<Features, Failure> {
        Ok(Features::detect_with("this host", &mut |args| run(args))?)
    }

    /// Run the probe with `run` (which runs `zfs ARGS` somewhere, e.g. over ssh, and
    /// returns its stdout and stderr); `place` names that somewhere in messages.
    pub fn detect_with(
        place: &str,
        run: &mut dyn FnMut(&[&str]) -> std::io::Result<String>,
    ) -> Result<Features, ZfsError> {
        let failed = |m: String| ZfsError::new(ZfsErrorKind::Failed, m);
        let usage = run(&[]).map_err(|e| failed(format!("cannot run zfs on {place}: {e}")))?;
        if !usage.contains("send") {
            let line = usage.split_whitespace().collect::<Vec<_>>().join(" ");
            return Err(failed(format!("zfs on {place} printed no usage to probe: {line}")));
        }
        let mut f = Features::parse(&usage, None);
        if f.commands.contains("version") {
            f.version = run(&["version"]).ok().and_then(|v| Features::parse("", Some(&v)).version);
        }
        Ok(f)
    }

    /// Native encryption: datasets may have an `encryption` property other than off.
    pub fn encryption(&self) -> bool {
        self.commands.contains("load-key")
    }

    /// `zfs bookmark`, and incrementals from a bookmark.
    pub fn bookmarks(&self) -> bool {
        self.commands.contains("bookmark")
    }

    /// `zfs send -nP`: the stream's size without sending it.
    pub fn size_estimate(&self) -> bool {
        self.send.contains(&'n') && self.send.contains(&'P')
    }

    /// `zfs recv -s`: a cut receive here keeps its state for resuming.
    pub fn resumable_receive(&self) -> bool {
        self.receive.contains(&'s')
    }

    /// `zfs send -t`: this side can send the rest of a cut stream.
    pub fn resume_send(&self) -> bool {
        self.send.contains(&'t')
    }

    /// Whether `zfs send` accepts option letter `c`.
    pub fn send_accepts(&self, c: char) -> bool {
        self.send.contains(&c)
    }

    /// What this zfs is called in messages.
    pub fn name(&self) -> String {
        self.version.clone().unwrap_or_else(|| "a zfs without 'zfs version' (zfs-fuse or older)".into())
    }
}

/// `zfs ARGS` with stdin closed; its stdout and stderr together (usage goes to stderr).
fn run(args: &[&str]) -> std::io::Result<String> {
    let out = Command::new("zfs").args(args).stdin(Stdio::null()).output()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(text)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `zfs` with no arguments on zfs-fuse 0.7 (Debian), the send and receive part.
    pub const ZFS_FUSE: &str = "missing command
usage: zfs command args ...
where 'command' is one of the following:

\tcreate [-p] [-o property=value] ... <filesystem>
\tsnapshot [-r] [-o property=value] ... <filesystem@snapname|volume@snapname>
\tget [-rHp] [-d max] [-o \"all\" | field[,...]] [-s source[,...]]
\t    <\"all\" | property[,...]> [filesystem|volume|snapshot] ...

\tsend [-RDp] [-[iI] snapshot] <snapshot>
\treceive [-vnF] <filesystem|volume|snapshot>
\treceive [-vnF] -d <filesystem>

\thold [-r] <tag> <snapshot> ...
";

    /// The same on OpenZFS 2.3.
    pub const OPENZFS: &str = "usage: zfs command args ...
where 'command' is one of the following:

\tversion [-j]

\tcreate [-Pnpuv] [-o property=value] ... <filesystem>
\tsnapshot [-r] [-o property=value] ... <filesystem|volume>@<snap> ...
\tsend [-DLPbcehnpsVvw] [-i|-I snapshot]
\t     [-R [-X dataset[,dataset]...]]     <snapshot>
\tsend [-DnVvPLecw] [-i snapshot|bookmark] <filesystem|volume|snapshot>
\tsend [-DnPpVvLec] [-i bookmark|snapshot] --redact <bookmark> <snapshot>
\tsend [-nVvPe] -t <receive_resume_token>
\tsend [-PnVv] --saved filesystem
\treceive [-vMnsFhu] [-o <property>=<value>] ... [-x <property>] ...
\t    <filesystem|volume|snapshot>
\treceive [-vMnsFhu] [-o <property>=<value>] ... [-x <property>] ... 
\t    [-d | -e] <filesystem>
\treceive -A <filesystem|volume>
\tbookmark <snapshot|bookmark> <newbookmark>
\tload-key [-rn] [-L <keylocation>] <-a | filesystem|volume>
";

    pub fn openzfs() -> Features {
        Features::parse(OPENZFS, Some("zfs-2.3.9-0+deb13u1\nzfs-kmod-2.3.9-0+deb13u1\n"))
    }

    pub fn zfs_fuse() -> Features {
        Features::parse(ZFS_FUSE, None)
    }

    #[test]
    fn zfs_2_3_usage_has_everything() {
        let f = openzfs();
        assert_eq!(f.version.as_deref(), Some("zfs-2.3.9-0+deb13u1"));
        assert!(f.send_accepts('w') && f.encryption() && f.bookmarks() && f.size_estimate());
        assert!(f.resumable_receive() && f.resume_send());
        for c in ['c', 'L', 'e', 'p', 'w', 'R', 'i', 'I', 't', 'X'] {
            assert!(f.send_accepts(c), "send -{c}");
        }
        assert_eq!(f.receive.iter().collect::<String>(), "AFMdehnosuvx");
    }

    #[test]
    fn zfs_fuse_has_little() {
        let f = zfs_fuse();
        assert_eq!(f.version, None);
        assert!(!f.send_accepts('w') && !f.encryption() && !f.bookmarks() && !f.size_estimate());
        assert!(!f.resumable_receive() && !f.resume_send());
        assert_eq!(f.send.iter().collect::<String>(), "DIRip");
        assert_eq!(f.receive.iter().collect::<String>(), "Fdnv");
        assert!(f.name().contains("zfs-fuse"));
        assert!(f.commands.contains("hold") && !f.commands.contains("bookmark"));
    }
}
