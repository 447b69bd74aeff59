//! `zsnap-plan restore SELECTOR` and `save SELECTOR FILE`: the chain that restores a
//! backup into a target, or the one command that writes one verified stream to a file.

use super::inputs::{missing, Inputs, Needs};
use super::render::{commands, lines, table, Rendered};
use super::Format;
use crate::cli::output::human_bytes;
use crate::cli::Failure;
use crate::plan::restore::{self, FileState, Save, Selector, Step};
use std::path::Path;

/// The target's snapshots decide where the chain starts; the target defaults to the
/// source dataset's name.
pub fn needs(target: Option<&str>, dataset: Option<&str>) -> Needs {
    Needs { target: target.or(dataset).map(str::to_string), identity: true, ..Needs::default() }
}

pub fn decide(i: &Inputs, selector: &Selector, force: bool) -> Result<Vec<Step>, Failure> {
    let (target, have) = i.target.clone().ok_or_else(|| missing("restore target"))?;
    let req = restore::Request { selector: selector.clone(), target, force };
    restore::plan(&i.ctx, &i.catalog.records, &i.health, &req, have.as_deref())
}

pub fn render<'a>(steps: &'a [Step], i: &'a Inputs, f: Format) -> Rendered<'a> {
    Rendered::text(match f {
        Format::Json => lines(steps.iter().map(|s| s.to_json(&i.ctx))),
        Format::Sh => commands(steps.iter().filter_map(|s| s.command())),
        Format::Table => table(
            &["STEP", "SNAPSHOT", "KIND", "SIZE", "REASON"],
            steps
                .iter()
                .map(|s| match s {
                    Step::Recv(r) => vec![
                        format!("{}/{}", r.step, r.of),
                        r.record.snapshot.clone(),
                        super::render::kind_cell(&r.record),
                        human_bytes(r.record.bytes),
                        r.reason.clone(),
                    ],
                    Step::Nothing { reason } => vec!["-".into(), "".into(), "".into(), "".into(), reason.clone()],
                })
                .collect(),
        ),
    })
}

/// What is at FILE now: read before anything is decided or downloaded.
pub fn file_state(file: &str) -> FileState {
    let path = Path::new(file);
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => FileState::IsDirectory,
        // A symlink to a directory counts as the directory `mv -T` would refuse.
        Ok(_) if path.is_dir() => FileState::IsDirectory,
        Ok(_) => FileState::Exists,
        Err(_) => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            if dir.is_dir() {
                FileState::Absent
            } else {
                FileState::NoDirectory
            }
        }
    }
}

pub fn decide_save(
    i: &Inputs,
    selector: &Selector,
    file: &str,
    state: FileState,
    force: bool,
) -> Result<Save, Failure> {
    restore::save(&i.ctx, &i.catalog.records, &i.health, selector, file, state, force)
}

pub fn render_save<'a>(s: &'a Save, i: &'a Inputs, f: Format) -> Rendered<'a> {
    Rendered::text(match f {
        Format::Json => lines(std::iter::once(s.to_json(&i.ctx))),
        Format::Sh => commands(std::iter::once(s.command.as_str())),
        Format::Table => table(
            &["SNAPSHOT", "KIND", "FILE", "REASON"],
            vec![vec![s.record.snapshot.clone(), s.record.kind.as_str().into(), s.file.clone(), s.reason.clone()]],
        ),
    })
}
