//! `zsnap-plan snapshot TYPE` and `rotate`: take a typed snapshot and rotate local
//! snapshots and zsnap's bookmarks by the policy (see `plan::snapshot`).

use super::inputs::{Inputs, LocalNeed, Needs};
use super::render::{commands, lines, table, Rendered};
use super::Format;
use crate::calendar::Period;
use crate::cli::Failure;
use crate::plan::snapshot::{self, Step};

pub fn needs() -> Needs {
    Needs { local: LocalNeed::Required, policy: true, ..Needs::default() }
}

pub fn decide(i: &Inputs, period: Option<Period>) -> Result<Vec<Step>, Failure> {
    let req = snapshot::Request { dataset: &i.ctx.dataset, prefix: i.settings.snapshot_prefix(), period, now: i.now };
    Ok(snapshot::plan(req, i.snapshots(), i.bookmarks(), &i.catalog.records, &i.health, &i.effective.policy))
}

pub fn render<'a>(steps: &'a [Step], i: &'a Inputs, f: Format) -> Rendered<'a> {
    let ds = &i.ctx.dataset;
    Rendered::text(match f {
        Format::Json => lines(steps.iter().map(|s| s.to_json(ds))),
        Format::Sh => commands(steps.iter().filter_map(Step::command)),
        Format::Table => table(
            &["ACTION", "SNAPSHOT", "TYPE", "REASON"],
            steps
                .iter()
                .map(|s| match s {
                    Step::Create { snapshot, period, .. } => {
                        vec![
                            "create".into(),
                            snapshot.clone(),
                            period.name().into(),
                            format!("new {} snapshot", period.name()),
                        ]
                    }
                    Step::Keep { snapshot, period, reason } => {
                        vec![
                            "keep".into(),
                            snapshot.name.clone(),
                            period.map(Period::name).unwrap_or("").into(),
                            reason.clone(),
                        ]
                    }
                    Step::Destroy { snapshot, period, reason, .. } => {
                        vec!["destroy".into(), snapshot.name.clone(), period.name().into(), reason.clone()]
                    }
                    Step::KeepBookmark { bookmark, reason } => {
                        vec!["keep".into(), format!("#{}", bookmark.name), "bookmark".into(), reason.clone()]
                    }
                    Step::DestroyBookmark { bookmark, reason, .. } => {
                        vec!["destroy".into(), format!("#{}", bookmark.name), "bookmark".into(), reason.clone()]
                    }
                })
                .collect(),
        ),
    })
}
