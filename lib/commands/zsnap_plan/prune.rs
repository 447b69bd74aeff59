//! `zsnap-plan prune`: keep or delete for every committed object, and why (see
//! `plan::prune`); a quota it cannot meet is the exit-1 warning. With `--broken`, only the
//! orphans a newer restorable backup supersedes are deleted (`plan::prune::plan_broken`).

use super::inputs::{Inputs, LocalNeed, Needs};
use super::render::{commands, line, table, Rendered};
use super::Format;
use crate::calendar;
use crate::cli::output::human_bytes;
use crate::cli::{ExitCode, Failure};
use crate::plan::prune::{self, Mode, Prune};

/// The local dataset, where there is one, only tells a mistyped `--dataset` (no backups
/// and no such dataset, exit 66) from one with nothing to prune.
pub fn needs(mode: Mode) -> Needs {
    Needs { policy: true, others: true, locks: Some(mode), local: LocalNeed::Optional, ..Needs::default() }
}

pub fn decide(i: &Inputs, mode: Mode) -> Result<Prune, Failure> {
    if i.catalog.records.is_empty() && i.local.is_none() {
        return Err(Failure::new(
            ExitCode::NotFound,
            format!(
                "no backups of {} under {} and no such dataset here: is --dataset right?",
                i.ctx.dataset,
                i.ctx.url(&i.ctx.prefix)
            ),
        ));
    }
    Ok(match mode {
        Mode::Policy => prune::plan(&i.catalog.records, &i.health, &i.policy, i.now, &i.locks),
        Mode::Broken => prune::plan_broken(&i.catalog.records, &i.health, i.now, &i.locks),
    })
}

pub fn render<'a>(p: &'a Prune, i: &'a Inputs, f: Format) -> Rendered<'a> {
    let (ctx, records) = (&i.ctx, &i.catalog.records);
    let warning = p.quota_problem.clone().map(|w| with_client_share(w, i));
    if f == Format::Json {
        let lines = (0..records.len())
            .map(|n| line(&p.record_line(ctx, records, &i.locks, n)))
            .chain(std::iter::once(line(&p.summary_json(ctx, i.effective.to_json()))));
        return Rendered { warning, ..Rendered::stream(lines) };
    }
    let text = match f {
        Format::Json => String::new(),
        Format::Sh => commands(p.commands(ctx, records).iter().map(String::as_str)),
        Format::Table => {
            let rows = (0..records.len())
                .map(|n| {
                    let (r, v) = (&records[n], &p.verdicts[n]);
                    vec![
                        if v.keep { "keep" } else { "delete" }.into(),
                        r.snapshot.clone(),
                        r.kind.as_str().into(),
                        calendar::minutes(r.time),
                        human_bytes(r.bytes),
                        v.reason.to_string(),
                    ]
                })
                .collect();
            let mut t = table(&["ACTION", "SNAPSHOT", "KIND", "CREATED (UTC)", "SIZE", "REASON"], rows);
            let what = match p.mode {
                Mode::Policy => i.effective.summary(),
                Mode::Broken => "--broken: only orphans that a newer restorable backup supersedes".to_string(),
            };
            t.push_str(&format!(
                "{} backups: keep {}, delete {} ({} of {} freed); {what}\n",
                records.len(),
                records.len() - p.delete_order.len(),
                p.delete_order.len(),
                human_bytes(p.bytes_before - p.bytes_after),
                human_bytes(p.bytes_before),
            ));
            if let Some(q) = &p.quota_problem {
                t.push_str(&format!("warning: {q}\n"));
            }
            t
        }
    };
    Rendered { text, warning, ..Rendered::default() }
}

/// A quota warning, with where the quota came from when the client quota set it.
fn with_client_share(warning: String, i: &Inputs) -> String {
    match (i.others, i.effective.policy.client_quota) {
        (Some(o), Some(c)) => format!(
            "{warning} (the quota is this dataset's share of the client quota {}: the client's other datasets \
             store {})",
            human_bytes(c),
            human_bytes(o)
        ),
        _ => warning,
    }
}
