//! `zfs send` options: which ones zsnap passes through, how an object records them, and
//! which changes between a parent and its incremental `zfs recv` accepts. Pure.
//!
//! Only options that change the stream's form, not what it holds, are allowed: `-c`
//! (compressed blocks as stored), `-L` (records over 128 KiB), `-e` (embedded blocks),
//! `-p` (properties) and `-w` (raw: encrypted blocks as stored, key not needed). `-w` is
//! also chosen by zsnap itself for every encrypted dataset.

use super::features::Features;

/// The allowed options, in the order of their letters in a key (`L c e p w`).
const OPTIONS: &[(char, &str)] =
    &[('L', "large-block"), ('c', "compressed"), ('e', "embed"), ('p', "props"), ('w', "raw")];

/// A set of `zfs send` options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SendOptions {
    bits: u8,
}

impl SendOptions {
    pub const RAW: SendOptions = SendOptions { bits: 1 << 4 };

    fn bit(letter: char) -> Option<u8> {
        OPTIONS.iter().position(|(c, _)| *c == letter).map(|i| 1 << i)
    }

    /// From option words as a user writes them (`-c`, `--compressed`, `-Lce`, or several
    /// separated by spaces or commas, as in `SEND_OPTIONS=-L -c`).
    pub fn parse(text: &str) -> Result<SendOptions, String> {
        let mut o = SendOptions::default();
        for word in text.split(|c: char| c.is_whitespace() || c == ',').filter(|w| !w.is_empty()) {
            if let Some(long) = word.strip_prefix("--") {
                let Some((c, _)) = OPTIONS.iter().find(|(_, l)| *l == long) else {
                    return Err(unsupported(word));
                };
                o.bits |= SendOptions::bit(*c).unwrap_or(0);
            } else if let Some(letters) = word.strip_prefix('-').filter(|l| !l.is_empty()) {
                for c in letters.chars() {
                    o.bits |= SendOptions::bit(c).ok_or_else(|| unsupported(&format!("-{c}")))?;
                }
            } else {
                return Err(unsupported(word));
            }
        }
        Ok(o)
    }

    /// From a key's `send=` field (letters only); `None` for letters it does not know.
    pub fn from_letters(letters: &str) -> Option<SendOptions> {
        let mut o = SendOptions::default();
        for c in letters.chars() {
            o.bits |= SendOptions::bit(c)?;
        }
        Some(o)
    }

    /// The letters in key order, e.g. `Lcw`; empty for none.
    pub fn letters(self) -> String {
        OPTIONS.iter().filter(|(c, _)| self.has(*c)).map(|(c, _)| *c).collect()
    }

    fn has(self, c: char) -> bool {
        SendOptions::bit(c).is_some_and(|b| self.bits & b != 0)
    }

    pub fn is_empty(self) -> bool {
        self.bits == 0
    }

    pub fn raw(self) -> bool {
        self.has('w')
    }

    pub fn with(self, other: SendOptions) -> SendOptions {
        SendOptions { bits: self.bits | other.bits }
    }

    /// `zfs send`'s arguments for these options, e.g. `["-L", "-c"]`.
    pub fn args(self) -> Vec<String> {
        self.letters().chars().map(|c| format!("-{c}")).collect()
    }

    /// The first option this `zfs` does not accept, as a one-line error.
    pub fn check(self, features: &Features) -> Result<(), String> {
        match self.letters().chars().find(|&c| !features.send_accepts(c)) {
            None => Ok(()),
            Some(c) => {
                let long = OPTIONS.iter().find(|(l, _)| *l == c).map_or("", |(_, l)| l);
                Err(format!("zfs send -{c} (--{long}) is not supported by {}", features.name()))
            }
        }
    }

    /// Why `zfs recv` would refuse an incremental made with `self` on top of a parent made
    /// with `parent`, or `None` when it accepts it. A raw incremental needs a raw parent
    /// (and a plain one a plain parent: the received dataset is encrypted or it is not);
    /// once a received dataset has large blocks, every incremental must keep them (-L).
    /// `-c`, `-e` and `-p` may change from one stream to the next.
    pub fn incremental_refused(self, parent: SendOptions) -> Option<String> {
        if self.raw() != parent.raw() {
            return Some(match self.raw() {
                true => "a raw (-w) incremental cannot go on a parent that was not sent raw".into(),
                false => "the parent was sent raw (-w): its incrementals must be raw too".into(),
            });
        }
        if self.has('L') != parent.has('L') {
            return Some("-L (--large-block) must be the same for an incremental as for its parent".into());
        }
        None
    }
}

fn unsupported(word: &str) -> String {
    let allowed: Vec<String> = OPTIONS.iter().map(|(c, l)| format!("-{c} (--{l})")).collect();
    format!("send option '{word}' is not allowed; allowed: {}", allowed.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zfs::features::tests::{openzfs, zfs_fuse};

    #[test]
    fn parses_short_long_and_groups() {
        let cases = [
            ("", ""),
            ("-c", "c"),
            ("--compressed --large-block", "Lc"),
            ("-Lce", "Lce"),
            ("-L,-c, -e", "Lce"),
            ("-w -p", "pw"),
            ("--raw --embed --props", "epw"),
        ];
        for (text, want) in cases {
            assert_eq!(SendOptions::parse(text).unwrap().letters(), want, "{text}");
        }
        for bad in ["-R", "-i", "--replicate", "c", "-D", "--dedup", "-Lx"] {
            let e = SendOptions::parse(bad).unwrap_err();
            assert!(e.contains("is not allowed") && e.contains("-L (--large-block)"), "{bad}: {e}");
        }
        let o = SendOptions::parse("-wL").unwrap();
        assert_eq!(o.args(), ["-L", "-w"]);
        assert_eq!(SendOptions::from_letters(&o.letters()), Some(o));
        assert_eq!(SendOptions::from_letters("Z"), None);
        assert!(o.raw() && !SendOptions::parse("-L").unwrap().raw());
    }

    #[test]
    fn checks_against_what_zfs_accepts() {
        let all = SendOptions::parse("-L -c -e -p -w").unwrap();
        assert_eq!(all.check(&openzfs()), Ok(()));
        assert_eq!(SendOptions::parse("-p").unwrap().check(&zfs_fuse()), Ok(()));
        let e = SendOptions::parse("-c").unwrap().check(&zfs_fuse()).unwrap_err();
        assert!(e.starts_with("zfs send -c (--compressed) is not supported by"), "{e}");
    }

    #[test]
    fn incremental_rules() {
        let o = |t: &str| SendOptions::parse(t).unwrap();
        assert_eq!(o("-c").incremental_refused(o("")), None);
        assert_eq!(o("-e -p").incremental_refused(o("-c")), None);
        assert_eq!(o("-w -c").incremental_refused(o("-w")), None);
        assert!(o("-w").incremental_refused(o("")).is_some());
        assert!(o("").incremental_refused(o("-w")).unwrap().contains("must be raw"));
        assert!(o("-c").incremental_refused(o("-L")).unwrap().contains("-L"));
        assert_eq!(o("-L").incremental_refused(o("-L -c")), None);
    }
}
