//! `zsnap-plan status`: local snapshots (and bookmarks) and S3 side by side, then a summary
//! with the policy in force and the bytes stored against the quota.

use super::inputs::{Inputs, LocalNeed, Needs};
use super::render::{line, table, Rendered};
use super::Format;
use crate::cli::output::human_bytes;
use crate::cli::Failure;
use crate::plan::status::{self, Row, Summary};
use serde_json::Value;

pub fn needs() -> Needs {
    Needs { local: LocalNeed::Required, policy: true, others: true, ..Needs::default() }
}

pub fn decide(i: &Inputs) -> Result<(Vec<Row<'_>>, Summary), Failure> {
    let c = &i.catalog;
    let (mut rows, summary) = status::status(
        i.snapshots(),
        i.settings.snapshot_prefix(),
        &c.records,
        &i.health,
        &c.uncommitted,
        c.foreign.len(),
    );
    status::mark_bookmarks(&mut rows, i.bookmarks());
    Ok((rows, summary))
}

pub fn render<'a>((rows, summary): &'a (Vec<Row<'a>>, Summary), i: &'a Inputs, f: Format) -> Rendered<'a> {
    if f != Format::Table {
        let mut sum = summary.to_json(&i.ctx);
        add_usage(&mut sum, i);
        return Rendered::stream(rows.iter().map(|r| line(&r.line(&i.ctx))).chain(std::iter::once(line(&sum))));
    }
    Rendered::text(match f {
        Format::Table => {
            let mut t = table(
                &["SNAPSHOT", "LOCAL", "REMOTE", "KIND", "SIZE", "RESTORABLE"],
                rows.iter()
                    .map(|r| {
                        vec![
                            match r.remote_name {
                                Some(n) => format!("{} (in S3 as @{n})", r.snapshot),
                                None => r.snapshot.to_string(),
                            },
                            match (r.local, r.bookmark) {
                                (true, _) => "yes".into(),
                                (false, Some(b)) => format!("#{b}"),
                                (false, None) => "no".into(),
                            },
                            r.remote.as_str().into(),
                            r.record.map(super::render::kind_cell).unwrap_or_default(),
                            r.record.map(|x| human_bytes(x.bytes)).unwrap_or_default(),
                            match &r.health {
                                Some(crate::catalog::Health::Broken { missing }) => format!("no: {missing}"),
                                Some(_) => "yes".into(),
                                None => "".into(),
                            },
                        ]
                    })
                    .collect(),
            );
            t.push_str(&format!(
                "{} local, {} committed ({} restorable, {} broken), {} local only, {} remote only, \
                 {} uncommitted uploads, {} foreign objects\n",
                summary.local,
                summary.backups,
                summary.restorable,
                summary.broken,
                summary.local_only,
                summary.remote_only,
                summary.uncommitted,
                summary.foreign
            ));
            t.push_str(&usage_line(i));
            t
        }
        _ => String::new(),
    })
}

fn stored(i: &Inputs) -> u64 {
    i.catalog.records.iter().map(|r| r.bytes).sum()
}

/// The summary gains the policy in force and the bytes stored against the quota (and,
/// with a client quota, the whole client's bytes against it).
fn add_usage(summary: &mut Value, i: &Inputs) {
    let e = &i.effective;
    if let Some(obj) = summary.as_object_mut() {
        obj.insert("bytes".into(), stored(i).into());
        obj.insert("quota".into(), e.policy.quota.into());
        if let Some(others) = i.others {
            obj.insert("client_bytes".into(), (others + stored(i)).into());
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

/// The table's footer: usage against the quota, and where the policy comes from.
fn usage_line(i: &Inputs) -> String {
    let e = &i.effective;
    let mut line = format!("stored {}", against(stored(i), e.policy.quota));
    if let Some(others) = i.others {
        line.push_str(&format!("; the client stores {}", against(others + stored(i), e.policy.client_quota)));
    }
    format!("{line}; keep {}; {}\n", e.policy.describe(), e.summary())
}
