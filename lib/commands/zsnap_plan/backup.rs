//! `zsnap-plan backup`: what to send (see `plan::backup`), with the lock the policy asks
//! for, sized by `zfs send -nP` where the local zfs has it.

use super::inputs::{missing, Inputs, LocalNeed, Needs, Sizing};
use super::render::{commands, lines, table, Rendered};
use super::Format;
use crate::cli::output::human_bytes;
use crate::cli::Failure;
use crate::plan::backup::{self, Step};

pub fn needs(req: &backup::Request) -> Needs {
    // The sends a first plan makes: `inputs::read` sizes them, and `decide` plans again.
    let first = req.clone();
    let sizing = move |i: &Inputs| -> Result<Sizing, Failure> {
        Ok(plan(i, &first)?
            .iter()
            .filter_map(|s| match s {
                Step::Send(s) => Some(((s.from.as_ref().map_or(0, |f| f.guid), s.snapshot.guid), s.zfs_send.clone())),
                _ => None,
            })
            .collect())
    };
    Needs {
        local: LocalNeed::Required,
        backup: Some(req.clone()),
        policy: true,
        sizing: Some(Box::new(sizing)),
        ..Needs::default()
    }
}

/// The plan and, when the sends would take the dataset past its quota, what to say.
pub struct Decided {
    pub steps: Vec<Step>,
    pub quota: Option<String>,
}

pub fn decide(i: &Inputs, req: &backup::Request) -> Result<Decided, Failure> {
    let steps = plan(i, req)?;
    let quota = quota_warning(i, &steps);
    Ok(Decided { steps, quota })
}

/// The backup plan for the request, with the lock the policy asks for. Pure.
fn plan(i: &Inputs, req: &backup::Request) -> Result<Vec<Step>, Failure> {
    let local = i.local.as_ref().ok_or_else(|| missing("local dataset"))?;
    let mut req = req.clone();
    req.lock = i.effective.policy.lock.map(|l| backup::LockUntil {
        mode: l.mode.as_str(),
        until: i.now.saturating_add(i64::try_from(l.days).unwrap_or(i64::MAX).saturating_mul(86_400)),
    });
    let s = &i.settings;
    req.replicas = s.replicas();
    for r in &req.replicas {
        let (_, ds) = crate::commands::zsync_ssh::split_target(r)
            .map_err(|f| Failure::usage(format!("replica {}", f.message)))?;
        crate::catalog::key::validate_dataset(&ds)
            .map_err(|e| Failure::usage(format!("replica '{r}' (from {}): {e}", s.replica.source)))?;
    }
    req.replica_args = match &s.replica_ssh_config.value {
        Some(f) => vec!["-F".into(), f.clone()],
        None => Vec::new(),
    };
    backup::plan(&i.ctx, &s.compressor, s.snapshot_prefix(), &local.source(), &i.catalog.records, &i.health, &req)
}

/// Said before the upload, not refused: a backup is never skipped for space. The
/// estimate is of the uncompressed stream, so this errs on the side of warning.
fn quota_warning(i: &Inputs, steps: &[Step]) -> Option<String> {
    let quota = i.policy.quota?;
    let stored: u64 = i.catalog.records.iter().map(|r| r.bytes).sum();
    let coming: u64 = steps
        .iter()
        .filter_map(|s| match s {
            Step::Send(s) => s.bytes_estimate,
            _ => None,
        })
        .sum();
    (stored.saturating_add(coming) > quota).then(|| {
        format!(
            "warning: {}: {} stored and up to {} to send (zfs send's estimate, before compression) exceed its quota \
             of {}; zsnap-prune will have to make room",
            i.ctx.dataset,
            human_bytes(stored),
            human_bytes(coming),
            human_bytes(quota)
        )
    })
}

pub fn render<'a>(d: &'a Decided, i: &'a Inputs, f: Format) -> Rendered<'a> {
    let ds = &i.ctx.dataset;
    let text = match f {
        Format::Json => lines(d.steps.iter().map(|s| s.to_json(ds))),
        Format::Sh => commands(d.steps.iter().filter_map(|s| match s {
            Step::Send(s) => Some(s.command.as_str()),
            Step::Lock { command, .. } | Step::Bookmark { command, .. } => Some(command.as_str()),
            Step::Skip { .. } | Step::Nothing { .. } => None,
        })),
        Format::Table => {
            table(&["ACTION", "SNAPSHOT", "KIND", "FROM", "ESTIMATE", "REASON"], d.steps.iter().map(row).collect())
        }
    };
    let mut notes: Vec<String> = d.quota.iter().cloned().collect();
    // The commands alone do not say what is left out: a snapshot not in S3 that is not sent.
    if f == Format::Sh {
        let left: Vec<String> = d
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Skip { snapshot, url: None, reason } => Some(format!("@{} ({reason})", snapshot.name)),
                _ => None,
            })
            .collect();
        if !left.is_empty() {
            notes.push(format!("not sent: {}", left.join("; ")));
        }
    }
    Rendered { text, notes, ..Rendered::default() }
}

fn row(s: &Step) -> Vec<String> {
    let empty = String::new;
    match s {
        Step::Skip { snapshot, reason, .. } => {
            vec!["skip".into(), snapshot.name.clone(), empty(), empty(), empty(), reason.clone()]
        }
        Step::Send(s) => vec![
            "send".into(),
            s.snapshot.name.clone(),
            match s.options.is_empty() {
                true => s.kind.as_str().into(),
                false => format!("{} -{}", s.kind.as_str(), s.options.letters()),
            },
            s.from.as_ref().map(|f| format!("{}{}", if f.bookmark { "#" } else { "@" }, f.name)).unwrap_or_default(),
            s.bytes_estimate
                .map(|b| format!("{}{}", human_bytes(b), if s.estimated { "" } else { "?" }))
                .unwrap_or_default(),
            s.reason.clone(),
        ],
        Step::Bookmark { snapshot, .. } => vec![
            "bookmark".into(),
            snapshot.clone(),
            empty(),
            empty(),
            empty(),
            "keeps the chain's base after the snapshot is destroyed".into(),
        ],
        Step::Lock { urls, until, .. } => vec![
            "lock".into(),
            format!("{} objects", urls.len()),
            empty(),
            empty(),
            empty(),
            format!("extend to {}: the chain under the new backups", crate::calendar::rfc3339(*until)),
        ],
        Step::Nothing { reason } => vec!["none".into(), empty(), empty(), empty(), empty(), reason.clone()],
    }
}
