//! Which of a replica's snapshots `zsync-ssh --prune-target` destroys (pure). The retention
//! rules are zsnap's own (`plan::prune::rules_by_time`, the KEEP_* settings); on top of
//! them the common snapshot (the base of the next sync) and everything after it, snapshots
//! not matching the snapshot prefix, and held snapshots are always kept.

use crate::config::policy::RetentionPolicy;
use crate::zfs::snapshots::Snapshot;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub snapshot: Snapshot,
    pub destroy: bool,
    pub reason: String,
}

/// A verdict for each of `target` (the replica's snapshots in createtxg order) after a
/// sync whose common snapshot has `common_guid`. A replica that does not hold it keeps
/// everything: without a base, nothing can be told apart from the replica's own history.
pub fn decide(target: &[Snapshot], common_guid: u64, prefix: &str, policy: &RetentionPolicy, now: i64) -> Vec<Verdict> {
    let keep = |s: &Snapshot, reason: &str| Verdict { snapshot: s.clone(), destroy: false, reason: reason.into() };
    let Some(at) = target.iter().rposition(|s| s.guid == common_guid) else {
        return target
            .iter()
            .map(|s| keep(s, "the replica does not hold the common snapshot: nothing is pruned"))
            .collect();
    };
    // The policy sees the prefix's snapshots up to the common one, which is then its newest.
    let candidates: Vec<usize> = (0..=at).filter(|&i| target[i].name.starts_with(prefix)).collect();
    let times: Vec<i64> = candidates.iter().map(|&i| target[i].creation).collect();
    let rules = crate::plan::prune::rules_by_time(&times, policy, now);
    let mut verdicts: Vec<Verdict> = target.iter().map(|s| keep(s, "")).collect();
    for (i, v) in verdicts.iter_mut().enumerate() {
        let s = &target[i];
        v.reason = if i == at {
            "the common snapshot: the base of the next sync".into()
        } else if i > at {
            "newer than the common snapshot".into()
        } else if !s.name.starts_with(prefix) {
            format!("does not match the snapshot prefix '{prefix}': never pruned")
        } else if s.holds > 0 {
            format!("{} hold(s)", s.holds)
        } else {
            String::new()
        };
    }
    for (k, &i) in candidates.iter().enumerate() {
        let v = &mut verdicts[i];
        if !v.reason.is_empty() {
            continue;
        }
        if rules[k].is_empty() {
            v.destroy = true;
            v.reason = format!("no rule keeps it (policy: {})", policy.describe());
        } else {
            v.reason = format!("kept by {}", rules[k].join("; "));
        }
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;
    /// 2026-11-23 00:00 UTC.
    const T0: i64 = 1_795_392_000;

    fn snaps(list: &[(&str, i64)]) -> Vec<Snapshot> {
        list.iter()
            .enumerate()
            .map(|(i, (name, creation))| Snapshot {
                dataset: "p/d".into(),
                name: name.to_string(),
                guid: i as u64 + 1,
                createtxg: 10 + i as u64,
                creation: *creation,
                used: 0,
                referenced: 0,
                logical_referenced: None,
                holds: 0,
            })
            .collect()
    }

    fn only(keep_last: u64) -> RetentionPolicy {
        RetentionPolicy { keep_last, ..crate::plan::prune::tests::none() }
    }

    fn destroyed(v: &[Verdict]) -> Vec<&str> {
        v.iter().filter(|v| v.destroy).map(|v| v.snapshot.name.as_str()).collect()
    }

    #[test]
    fn keeps_the_policy_the_common_and_what_is_newer() {
        let ten: Vec<(String, i64)> = (1..=10).map(|k| (format!("s{k}"), T0 - (10 - k) * H)).collect();
        let list: Vec<(&str, i64)> = ten.iter().map(|(n, t)| (n.as_str(), *t)).collect();
        let t = snaps(&list);
        // (what, common guid, prefix, policy, destroyed)
        let cases: Vec<(&str, u64, &str, RetentionPolicy, Vec<&str>)> = vec![
            ("last 3 of 10", 10, "", only(3), vec!["s1", "s2", "s3", "s4", "s5", "s6", "s7"]),
            (
                "only the newest: the common one",
                10,
                "",
                only(0),
                vec!["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"],
            ),
            // The common snapshot is s7: s8..s10 are newer and stay; the policy counts to s7.
            ("common before the newest", 7, "", only(2), vec!["s1", "s2", "s3", "s4", "s5"]),
            ("prefix: s1 and s10 only", 10, "s1", only(0), vec!["s1"]),
            (
                "hourly periods",
                10,
                "",
                RetentionPolicy { keep_hourly: 4, ..only(0) },
                vec!["s1", "s2", "s3", "s4", "s5", "s6"],
            ),
            ("no common snapshot on the replica", 99, "", only(0), vec![]),
        ];
        for (what, common, prefix, policy, want) in cases {
            let v = decide(&t, common, prefix, &policy, T0);
            assert_eq!(destroyed(&v), want, "{what}");
            assert!(v.iter().all(|v| !v.reason.is_empty()), "{what}: every verdict has a reason");
            assert!(v.iter().any(|v| v.snapshot.guid == common) == (common <= 10), "{what}");
            if let Some(c) = v.iter().find(|v| v.snapshot.guid == common) {
                assert!(!c.destroy && c.reason.contains("base of the next sync"), "{what}: {}", c.reason);
            }
        }
    }

    #[test]
    fn holds_and_min_age() {
        let mut t = snaps(&[("a", T0 - 5 * H), ("b", T0 - 4 * H), ("c", T0 - H), ("d", T0)]);
        t[0].holds = 1;
        let v = decide(&t, 4, "", &RetentionPolicy { min_age: 2 * H as u64, ..only(0) }, T0);
        assert_eq!(destroyed(&v), ["b"]);
        assert_eq!(v[0].reason, "1 hold(s)");
        assert!(v[2].reason.contains("min-age"), "{}", v[2].reason);
    }

    #[test]
    fn same_second_snapshots_go_by_txg() {
        // All in the same second (as a test's or a burst's snapshots are): txg order decides.
        let t = snaps(&[("x1", T0), ("x2", T0), ("x3", T0), ("x4", T0)]);
        let v = decide(&t, 4, "x", &only(2), T0);
        assert_eq!(destroyed(&v), ["x1", "x2"]);
        assert!(v[2].reason.contains("last 2"), "{}", v[2].reason);
    }
}
