//! zsnap-plan's retention commands: `policy`, `prune`, `snapshot TYPE` / `rotate`, and the
//! policy and quota lines of `status`. Rendering only, plus the one I/O loop prune needs:
//! reading the lock state of every object the plan would delete.

use super::{commands, lines, table, Format, Rules};
use crate::calendar;
use crate::catalog::{BackupRecord, Catalog};
use crate::cli::output::human_bytes;
use crate::cli::Failure;
use crate::config::policy::{Effective, RetentionPolicy};
use crate::plan::prune::{self, Prune};
use crate::plan::snapshot::Step;
use crate::plan::Context;
use crate::s3::client::Client;
use crate::s3::objects::LockState;
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
) -> Result<HashMap<String, LockState>, Failure> {
    let records = &catalog.records;
    let health = catalog.health();
    let mut locks: HashMap<String, LockState> = HashMap::new();
    loop {
        let p = prune::plan(records, &health, policy, now, &locks);
        if p.unknown_locks.is_empty() {
            return Ok(locks);
        }
        let keys: Vec<String> = p.unknown_locks.iter().map(|&i| records[i].key.clone()).collect();
        let states = crate::s3::objects::lock_states(client, bucket, &keys).await?;
        locks.extend(keys.into_iter().zip(states));
    }
}

/// Bytes the client's other datasets under `prefix` store.
pub async fn others_bytes(client: &Client, bucket: &str, prefix: &str, dataset: &str) -> Result<u64, Failure> {
    let all = crate::catalog::listing::backups_under(client, bucket, prefix).await?;
    Ok(all.into_iter().filter(|(d, _)| d != dataset).map(|(_, size)| size).sum())
}

/// A quota warning, with where the quota came from when the client quota set it.
pub fn with_client_share(warning: String, rules: &Rules) -> String {
    match (rules.others, rules.effective.policy.client_quota) {
        (Some(o), Some(c)) => format!(
            "{warning} (the quota is this dataset's share of the client quota {}: the client's other datasets \
             store {})",
            human_bytes(c),
            human_bytes(o)
        ),
        _ => warning,
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

/// `status`'s summary gains the policy in force and the bytes stored against the quota
/// (and, with a client quota, the whole client's bytes against it).
pub fn add_usage(summary: &mut Value, records: &[BackupRecord], rules: &Rules) {
    let e = rules.effective;
    if let Some(obj) = summary.as_object_mut() {
        obj.insert("bytes".into(), stored(records).into());
        obj.insert("quota".into(), e.policy.quota.into());
        if let Some(others) = rules.others {
            obj.insert("client_bytes".into(), (others + stored(records)).into());
            obj.insert("client_quota".into(), e.policy.client_quota.into());
        }
        obj.insert("policy".into(), e.to_json());
    }
}

fn against(used: u64, quota: Option<u64>) -> String {
    match quota {
        Some(q) => format!("{} of {} ({}%)", human_bytes(used), human_bytes(q), used.saturating_mul(100) / q.max(1)),
        None => format!("{} (no quota)", human_bytes(used)),
    }
}

/// `status`'s table footer: usage against the quota, and where the policy comes from.
pub fn usage_line(records: &[BackupRecord], rules: &Rules) -> String {
    let e = rules.effective;
    let mut line = format!("stored {}", against(stored(records), e.policy.quota));
    if let Some(others) = rules.others {
        line.push_str(&format!("; the client stores {}", against(others + stored(records), e.policy.client_quota)));
    }
    format!("{line}; keep {}; {}\n", e.policy.describe(), e.summary())
}
