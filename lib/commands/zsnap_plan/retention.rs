//! zsnap-plan's retention commands: `policy`, `prune`, `snapshot TYPE` / `rotate`, and the
//! policy and quota lines of `status`. Rendering only, plus the one I/O loop prune needs:
//! reading the lock state of every object the plan would delete.

use super::{commands, lines, table, Format, Rules};
use crate::calendar;
use crate::catalog::{BackupRecord, Catalog};
use crate::cli::output::human_bytes;
use crate::cli::Failure;
use crate::config::policy::{Effective, RetentionPolicy};
use crate::plan::prune::{self, Lock, Prune};
use crate::plan::snapshot::Step;
use crate::plan::Context;
use crate::s3::client::Client;
use serde_json::Value;
use std::collections::HashMap;

/// Plan, read the locks of what it would delete (one HEAD each), and plan again until
/// every object it would delete has a known lock state. Each round only adds objects, so
/// it ends; usually after one round.
pub async fn read_locks(
    client: &Client,
    bucket: &str,
    catalog: &Catalog,
    policy: &RetentionPolicy,
    now: i64,
) -> Result<HashMap<String, Lock>, Failure> {
    let records = &catalog.records;
    let health = catalog.health();
    let mut locks: HashMap<String, Lock> = HashMap::new();
    loop {
        let p = prune::plan(records, &health, policy, now, &locks);
        if p.unknown_locks.is_empty() {
            return Ok(locks);
        }
        let keys: Vec<String> = p.unknown_locks.iter().map(|&i| records[i].key.clone()).collect();
        let states = crate::s3::objects::lock_states(client, bucket, &keys).await?;
        for (key, st) in keys.into_iter().zip(states) {
            locks.insert(key, Lock { until: st.retain_until, legal_hold: st.legal_hold });
        }
    }
}

pub fn policy_output(e: &Effective, f: Format) -> String {
    match f {
        Format::Table => {
            let v = e.to_json();
            let mut rows: Vec<Vec<String>> = e
                .sources
                .iter()
                .map(|(field, source)| {
                    let value = match *field {
                        "min_age" => format!("{}s", e.policy.min_age),
                        "quota" => e.policy.quota.map(human_bytes).unwrap_or_else(|| "none".into()),
                        "lock_mode" => v["lock_mode"].as_str().unwrap_or("none").to_string(),
                        "lock_days" => e.policy.lock.map(|l| l.days.to_string()).unwrap_or_else(|| "0".into()),
                        other => v[other].to_string(),
                    };
                    vec![field.to_string(), value, source.clone()]
                })
                .collect();
            rows.extend(e.overruled.iter().map(|o| vec!["overruled".into(), "".into(), o.clone()]));
            let mut t = table(&["FIELD", "VALUE", "FROM"], rows);
            t.push_str(&e.summary());
            t.push('\n');
            t
        }
        _ => lines(std::iter::once(e.to_json())),
    }
}

pub fn prune_output(ctx: &Context, p: &Prune, records: &[BackupRecord], rules: &Rules, f: Format) -> String {
    match f {
        Format::Json => lines(
            (0..records.len())
                .map(|i| p.record_json(ctx, records, rules.locks, i))
                .chain(std::iter::once(p.summary_json(ctx, rules.effective.to_json()))),
        ),
        Format::Sh => commands(p.commands(ctx, records).iter().map(String::as_str)),
        Format::Table => {
            let rows = (0..records.len())
                .map(|i| {
                    let (r, v) = (&records[i], &p.verdicts[i]);
                    vec![
                        if v.keep { "keep" } else { "delete" }.into(),
                        r.snapshot.clone(),
                        r.kind.as_str().into(),
                        calendar::minutes(r.time),
                        human_bytes(r.bytes),
                        v.reason.clone(),
                    ]
                })
                .collect();
            let mut t = table(&["ACTION", "SNAPSHOT", "KIND", "CREATED (UTC)", "SIZE", "REASON"], rows);
            t.push_str(&format!(
                "{} backups: keep {}, delete {} ({} of {} freed); {}\n",
                records.len(),
                records.len() - p.delete_order.len(),
                p.delete_order.len(),
                human_bytes(p.bytes_before - p.bytes_after),
                human_bytes(p.bytes_before),
                rules.effective.summary()
            ));
            if let Some(q) = &p.quota_problem {
                t.push_str(&format!("warning: {q}\n"));
            }
            t
        }
    }
}

pub fn snapshot_output(dataset: &str, steps: &[Step], f: Format) -> String {
    match f {
        Format::Json => lines(steps.iter().map(|s| s.to_json(dataset))),
        Format::Sh => commands(steps.iter().filter_map(Step::command)),
        Format::Table => table(
            &["ACTION", "SNAPSHOT", "TYPE", "REASON"],
            steps
                .iter()
                .map(|s| {
                    let v = s.to_json(dataset);
                    let cell = |k: &str| v[k].as_str().unwrap_or("").to_string();
                    vec![cell("action"), cell("snapshot"), cell("type"), cell("reason")]
                })
                .collect(),
        ),
    }
}

fn stored(records: &[BackupRecord]) -> u64 {
    records.iter().map(|r| r.bytes).sum()
}

/// `status`'s summary gains the policy in force and the bytes stored against the quota.
pub fn add_usage(summary: &mut Value, records: &[BackupRecord], e: &Effective) {
    if let Some(obj) = summary.as_object_mut() {
        obj.insert("bytes".into(), stored(records).into());
        obj.insert("quota".into(), e.policy.quota.into());
        obj.insert("policy".into(), e.to_json());
    }
}

/// `status`'s table footer: usage against the quota, and where the policy comes from.
pub fn usage_line(records: &[BackupRecord], e: &Effective) -> String {
    let quota = match e.policy.quota {
        Some(q) => format!(" of quota {} ({}%)", human_bytes(q), stored(records).saturating_mul(100) / q.max(1)),
        None => " (no quota)".into(),
    };
    format!("{} stored{quota}; keep {}; {}\n", human_bytes(stored(records)), e.policy.describe(), e.summary())
}
