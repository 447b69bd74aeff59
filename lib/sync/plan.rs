//! What to send to a replica, decided from two snapshot lists (pure, no I/O).
//!
//! Snapshots are matched by guid, never by name: a renamed snapshot is still the common
//! one. The replica may only move forward: if it has snapshots after the common one, or was
//! written since its newest snapshot, it has diverged and nothing is sent unless the caller
//! allows a rollback to the common snapshot.

use crate::zfs::snapshots::Snapshot;

/// What the caller knows about the target dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Missing,
    Present {
        /// Ordered by createtxg.
        snapshots: Vec<Snapshot>,
        /// Written since its newest snapshot: `Some(true)` known modified, `Some(false)` known
        /// clean, `None` unknown (metadata-only changes such as atime are invisible on zfs-fuse).
        modified: Option<bool>,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Only snapshots whose name starts with this are sent (empty: all).
    pub prefix: String,
    /// One `zfs send -I` stream for all missing snapshots instead of one `-i` per snapshot.
    pub intermediates: bool,
    /// Roll the target back to the common snapshot when it has diverged.
    pub rollback: bool,
}

/// One `zfs send`; names are the source's names (after `@`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Full { to: String, guid: u64 },
    Incremental { from: String, to: String, guid: u64, intermediates: bool },
}

impl Step {
    /// The snapshot this step leaves on the target.
    pub fn to(&self) -> &str {
        match self {
            Step::Full { to, .. } | Step::Incremental { to, .. } => to,
        }
    }

    /// The guid of the snapshot this step leaves on the target.
    pub fn guid(&self) -> u64 {
        match self {
            Step::Full { guid, .. } | Step::Incremental { guid, .. } => *guid,
        }
    }

    /// The source snapshot to hold while this step runs: the incremental base, or the
    /// snapshot itself for a full (it becomes the next base).
    pub fn hold(&self) -> &str {
        match self {
            Step::Full { to, .. } => to,
            Step::Incremental { from, .. } => from,
        }
    }
}

/// The newest snapshot both sides hold, matched by guid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Common {
    pub source: String,
    pub target: String,
    pub guid: u64,
}

/// Why the target cannot simply be brought forward, with both sides' extra snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    pub common: Option<Common>,
    /// Source snapshots (matching the prefix) after the common one.
    pub sender_only: Vec<String>,
    /// Target snapshots after the common one (all of them when there is no common one).
    pub receiver_only: Vec<String>,
    pub modified: bool,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to send: the target holds the newest matching snapshot.
    Nothing {
        common: Common,
    },
    /// Send `steps` in order; first roll the target back to `rollback_to` (a target
    /// snapshot name) when set, or overwrite an existing empty target when `force_full`.
    Send {
        common: Option<Common>,
        steps: Vec<Step>,
        rollback_to: Option<String>,
        force_full: bool,
    },
    Diverged(Divergence),
    /// The source has no snapshot to send (none at all, or none matching the prefix).
    NoSource,
}

/// Decide what brings `target` up to the newest matching snapshot of `source`.
pub fn decide(source: &[Snapshot], target: &Target, opts: &Options) -> Decision {
    let selected: Vec<&Snapshot> = source.iter().filter(|s| s.name.starts_with(&opts.prefix)).collect();
    let Some(first) = selected.first() else { return Decision::NoSource };
    let names = |v: &[&Snapshot]| v.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    let (snapshots, modified) = match target {
        Target::Missing => {
            let mut steps = vec![Step::Full { to: first.name.clone(), guid: first.guid }];
            steps.extend(chain(first, &selected[1..], opts.intermediates));
            return Decision::Send { common: None, steps, rollback_to: None, force_full: false };
        }
        Target::Present { snapshots, modified } => (snapshots, *modified),
    };
    // The newest source snapshot the target holds, and the target's newest copy of it.
    let found = source.iter().rev().find_map(|s| snapshots.iter().rposition(|t| t.guid == s.guid).map(|at| (s, at)));
    let Some((base, at)) = found else {
        if snapshots.is_empty() && opts.rollback {
            let mut steps = vec![Step::Full { to: first.name.clone(), guid: first.guid }];
            steps.extend(chain(first, &selected[1..], opts.intermediates));
            return Decision::Send { common: None, steps, rollback_to: None, force_full: true };
        }
        let reason = if snapshots.is_empty() {
            "the target exists but has no snapshots (--rollback overwrites it with a full stream)".to_string()
        } else {
            "no common snapshot (by guid): destroy the target to start over with a full stream".to_string()
        };
        return Decision::Diverged(Divergence {
            common: None,
            sender_only: names(&selected),
            receiver_only: snapshots.iter().map(|s| s.name.clone()).collect(),
            modified: modified == Some(true),
            reason,
        });
    };
    let common = Common { source: base.name.clone(), target: snapshots[at].name.clone(), guid: base.guid };
    let receiver_only: Vec<String> = snapshots[at + 1..].iter().map(|s| s.name.clone()).collect();
    let later: Vec<&Snapshot> = selected.iter().copied().filter(|s| s.createtxg > base.createtxg).collect();
    // Only the state after the target's newest snapshot counts as "written since".
    let modified = receiver_only.is_empty() && modified == Some(true);
    if !receiver_only.is_empty() || modified {
        if !opts.rollback {
            let reason = match (receiver_only.len(), modified) {
                (0, _) => format!("the target was written since its newest snapshot ({})", common.target),
                (n, _) => format!("the target has {n} snapshot(s) after the common one ({})", common.target),
            };
            return Decision::Diverged(Divergence {
                common: Some(common),
                sender_only: names(&later),
                receiver_only,
                modified,
                reason,
            });
        }
        let rollback_to = Some(common.target.clone());
        let steps = chain(base, &later, opts.intermediates);
        return Decision::Send { common: Some(common), steps, rollback_to, force_full: false };
    }
    if later.is_empty() {
        return Decision::Nothing { common };
    }
    let steps = chain(base, &later, opts.intermediates);
    Decision::Send { common: Some(common), steps, rollback_to: None, force_full: false }
}

/// The newest source snapshot the target holds (by guid), for what a finished sync leaves:
/// the base of the next one.
pub fn common(source: &[Snapshot], target: &[Snapshot]) -> Option<Common> {
    source.iter().rev().find_map(|s| {
        target.iter().rfind(|t| t.guid == s.guid).map(|t| Common {
            source: s.name.clone(),
            target: t.name.clone(),
            guid: s.guid,
        })
    })
}

/// The target's snapshots once `steps` are received (after the rollback to `rollback_to`,
/// if any), for planning what comes after the sync before it runs (`--dry-run`). A `-I`
/// step brings every source snapshot between its ends.
pub fn after(source: &[Snapshot], target: &[Snapshot], steps: &[Step], rollback_to: Option<&str>) -> Vec<Snapshot> {
    let mut out: Vec<Snapshot> = match rollback_to.and_then(|r| target.iter().position(|t| t.name == r)) {
        Some(at) => target[..=at].to_vec(),
        None => target.to_vec(),
    };
    let mut txg = out.iter().map(|s| s.createtxg).max().unwrap_or(0);
    let index = |name: &str| source.iter().position(|s| s.name == name);
    for step in steps {
        let range = match step {
            Step::Full { to, .. } | Step::Incremental { to, intermediates: false, .. } => index(to).map(|t| t..=t),
            Step::Incremental { from, to, intermediates: true, .. } => {
                index(from).zip(index(to)).map(|(f, t)| f + 1..=t)
            }
        };
        for s in range.map(|r| &source[r]).unwrap_or_default() {
            txg += 1;
            out.push(Snapshot { createtxg: txg, holds: 0, ..s.clone() });
        }
    }
    out
}

/// Incrementals from `base` through `later`: one `-i` per snapshot, or one `-I`.
fn chain(base: &Snapshot, later: &[&Snapshot], intermediates: bool) -> Vec<Step> {
    if later.is_empty() {
        return Vec::new();
    }
    if intermediates {
        let last = later[later.len() - 1];
        return vec![Step::Incremental {
            from: base.name.clone(),
            to: last.name.clone(),
            guid: last.guid,
            intermediates,
        }];
    }
    let mut from = base.name.clone();
    let mut steps = Vec::with_capacity(later.len());
    for s in later {
        steps.push(Step::Incremental { from: from.clone(), to: s.name.clone(), guid: s.guid, intermediates });
        from = s.name.clone();
    }
    steps
}

/// Whether a dataset was written since its newest snapshot, from `zfs get -p all` output
/// (property → value) and that snapshot. OpenZFS has `written`; zfs-fuse does not, so there
/// a change in `referenced`, or blocks held only by the newest snapshot (`used` > 0), are
/// taken as writes. Changes that move neither (atime, chmod) surface as the receive's
/// "destination has been modified" error instead.
pub fn modified_since(props: &std::collections::BTreeMap<String, String>, newest: Option<&Snapshot>) -> Option<bool> {
    let newest = newest?;
    if let Some(w) = props.get("written").and_then(|v| v.parse::<u64>().ok()) {
        return Some(w > 0);
    }
    let referenced = props.get("referenced")?.parse::<u64>().ok()?;
    Some(referenced != newest.referenced || newest.used > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Snapshots from (name, guid) pairs, in txg order.
    fn snaps(list: &[(&str, u64)]) -> Vec<Snapshot> {
        list.iter()
            .enumerate()
            .map(|(i, (name, guid))| Snapshot {
                dataset: "p/d".into(),
                name: name.to_string(),
                guid: *guid,
                createtxg: 10 + i as u64,
                creation: 0,
                used: 0,
                referenced: 100,
                logical_referenced: None,
                holds: 0,
            })
            .collect()
    }

    fn present(list: &[(&str, u64)]) -> Target {
        Target::Present { snapshots: snaps(list), modified: Some(false) }
    }

    fn inc(from: &str, to: &str, guid: u64) -> Step {
        Step::Incremental { from: from.into(), to: to.into(), guid, intermediates: false }
    }

    fn common(source: &str, target: &str, guid: u64) -> Option<Common> {
        Some(Common { source: source.into(), target: target.into(), guid })
    }

    #[test]
    fn decisions() {
        let src = snaps(&[("a", 1), ("b", 2), ("c", 3)]);
        let plain = Options::default();
        let cases: Vec<(&str, Target, Options, Decision)> = vec![
            (
                "missing target: full of the first, then one -i each",
                Target::Missing,
                plain.clone(),
                Decision::Send {
                    common: None,
                    steps: vec![Step::Full { to: "a".into(), guid: 1 }, inc("a", "b", 2), inc("b", "c", 3)],
                    rollback_to: None,
                    force_full: false,
                },
            ),
            (
                "incremental from the newest common",
                present(&[("a", 1)]),
                plain.clone(),
                Decision::Send {
                    common: common("a", "a", 1),
                    steps: vec![inc("a", "b", 2), inc("b", "c", 3)],
                    rollback_to: None,
                    force_full: false,
                },
            ),
            (
                "one -I with --intermediates",
                present(&[("a", 1)]),
                Options { intermediates: true, ..plain.clone() },
                Decision::Send {
                    common: common("a", "a", 1),
                    steps: vec![Step::Incremental { from: "a".into(), to: "c".into(), guid: 3, intermediates: true }],
                    rollback_to: None,
                    force_full: false,
                },
            ),
            (
                "up to date",
                present(&[("a", 1), ("b", 2), ("c", 3)]),
                plain.clone(),
                Decision::Nothing { common: common("c", "c", 3).unwrap() },
            ),
            (
                "renamed on the target: matched by guid",
                present(&[("a", 1), ("old-b", 2)]),
                plain.clone(),
                Decision::Send {
                    common: common("b", "old-b", 2),
                    steps: vec![inc("b", "c", 3)],
                    rollback_to: None,
                    force_full: false,
                },
            ),
            (
                "diverged: target-only snapshot after the common one",
                present(&[("a", 1), ("x", 99)]),
                plain.clone(),
                Decision::Diverged(Divergence {
                    common: common("a", "a", 1),
                    sender_only: vec!["b".into(), "c".into()],
                    receiver_only: vec!["x".into()],
                    modified: false,
                    reason: "the target has 1 snapshot(s) after the common one (a)".into(),
                }),
            ),
            (
                "diverged with --rollback: roll back to the common one, then send",
                present(&[("a", 1), ("x", 99)]),
                Options { rollback: true, ..plain.clone() },
                Decision::Send {
                    common: common("a", "a", 1),
                    steps: vec![inc("a", "b", 2), inc("b", "c", 3)],
                    rollback_to: Some("a".into()),
                    force_full: false,
                },
            ),
            (
                "written since its newest snapshot",
                Target::Present { snapshots: snaps(&[("a", 1)]), modified: Some(true) },
                plain.clone(),
                Decision::Diverged(Divergence {
                    common: common("a", "a", 1),
                    sender_only: vec!["b".into(), "c".into()],
                    receiver_only: vec![],
                    modified: true,
                    reason: "the target was written since its newest snapshot (a)".into(),
                }),
            ),
            (
                "no common snapshot: refused even with --rollback",
                present(&[("z", 50)]),
                Options { rollback: true, ..plain.clone() },
                Decision::Diverged(Divergence {
                    common: None,
                    sender_only: vec!["a".into(), "b".into(), "c".into()],
                    receiver_only: vec!["z".into()],
                    modified: false,
                    reason: "no common snapshot (by guid): destroy the target to start over with a full stream".into(),
                }),
            ),
            (
                "empty target with --rollback: overwritten by a full",
                present(&[]),
                Options { rollback: true, intermediates: true, ..plain.clone() },
                Decision::Send {
                    common: None,
                    steps: vec![
                        Step::Full { to: "a".into(), guid: 1 },
                        Step::Incremental { from: "a".into(), to: "c".into(), guid: 3, intermediates: true },
                    ],
                    rollback_to: None,
                    force_full: true,
                },
            ),
            (
                "prefix: only matching snapshots are sent, any common one is a base",
                present(&[("a", 1)]),
                Options { prefix: "c".into(), ..plain.clone() },
                Decision::Send {
                    common: common("a", "a", 1),
                    steps: vec![inc("a", "c", 3)],
                    rollback_to: None,
                    force_full: false,
                },
            ),
            (
                "prefix matching nothing",
                Target::Missing,
                Options { prefix: "daily-".into(), ..plain.clone() },
                Decision::NoSource,
            ),
        ];
        for (what, target, opts, want) in cases {
            assert_eq!(decide(&src, &target, &opts), want, "{what}");
        }
    }

    #[test]
    fn common_and_what_the_target_holds_after() {
        let src = snaps(&[("a", 1), ("b", 2), ("x", 7), ("c", 3)]);
        let names = |v: &[Snapshot]| v.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        assert_eq!(super::common(&src, &snaps(&[("a", 1), ("old-b", 2)])), common_of("b", "old-b", 2));
        assert_eq!(super::common(&src, &snaps(&[("z", 9)])), None);
        let target = snaps(&[("a", 1), ("theirs", 99)]);
        let steps = vec![inc("a", "b", 2), inc("b", "c", 3)];
        assert_eq!(names(&after(&src, &target, &steps, Some("a"))), ["a", "b", "c"], "rolled back, then b and c");
        assert_eq!(names(&after(&src, &target, &steps, None)), ["a", "theirs", "b", "c"]);
        let all = vec![Step::Incremental { from: "a".into(), to: "c".into(), guid: 3, intermediates: true }];
        let got = after(&src, &target[..1], &all, None);
        assert_eq!(names(&got), ["a", "b", "x", "c"], "-I brings the intermediates");
        assert!(got.windows(2).all(|w| w[0].createtxg < w[1].createtxg), "txg order");
        assert_eq!(got[3].guid, 3);
        let full = vec![Step::Full { to: "a".into(), guid: 1 }, inc("a", "b", 2)];
        assert_eq!(names(&after(&src, &[], &full, None)), ["a", "b"]);
    }

    fn common_of(source: &str, target: &str, guid: u64) -> Option<Common> {
        Some(Common { source: source.into(), target: target.into(), guid })
    }

    #[test]
    fn modified_from_properties() {
        let newest = &snaps(&[("a", 1)])[0];
        let props = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(modified_since(&props(&[("written", "0"), ("referenced", "5")]), Some(newest)), Some(false));
        assert_eq!(modified_since(&props(&[("written", "4096")]), Some(newest)), Some(true));
        assert_eq!(modified_since(&props(&[("referenced", "100")]), Some(newest)), Some(false), "zfs-fuse, clean");
        assert_eq!(modified_since(&props(&[("referenced", "200")]), Some(newest)), Some(true), "zfs-fuse, grown");
        let mut overwritten = newest.clone();
        overwritten.used = 4096;
        assert_eq!(modified_since(&props(&[("referenced", "100")]), Some(&overwritten)), Some(true));
        assert_eq!(modified_since(&props(&[]), Some(newest)), None);
        assert_eq!(modified_since(&props(&[("written", "0")]), None), None, "no snapshot");
    }
}
