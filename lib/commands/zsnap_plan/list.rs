//! `zsnap-plan list`: the dataset's committed backups, numbered as restore and save take
//! them, with the local bookmark of each where the dataset is on this host.

use super::inputs::{Inputs, LocalNeed, Needs};
use super::render::{line, table, Rendered};
use super::Format;
use crate::cli::output::human_bytes;
use crate::cli::Failure;
use crate::plan::status::{self, Listed};

/// Only S3 is needed; the local dataset, where there is one, adds its bookmarks.
pub fn needs() -> Needs {
    Needs { local: LocalNeed::Optional, ..Needs::default() }
}

pub fn decide(i: &Inputs) -> Result<Vec<Listed<'_>>, Failure> {
    let mut entries = status::list(&i.catalog.records, &i.health);
    status::mark_listed(&mut entries, i.bookmarks());
    Ok(entries)
}

pub fn render<'a>(entries: &'a [Listed], i: &'a Inputs, f: Format) -> Rendered<'a> {
    if f != Format::Table {
        return Rendered::stream(entries.iter().map(|e| line(&e.line(&i.ctx))));
    }
    Rendered::text(match f {
        Format::Table => table(
            &["N", "SNAPSHOT", "KIND", "FROM", "CREATED (UTC)", "SIZE", "Z", "ENCRYPTED TO", "RESTORABLE"],
            entries
                .iter()
                .map(|e| {
                    let r = e.record;
                    vec![
                        e.n.to_string(),
                        match e.bookmark {
                            Some(b) => format!("{} (#{b})", r.snapshot),
                            None => r.snapshot.clone(),
                        },
                        super::render::kind_cell(r),
                        r.from_snap.clone().unwrap_or_default(),
                        crate::calendar::minutes(r.time),
                        human_bytes(r.bytes),
                        r.compressor.clone(),
                        // Who can read it: the recipients' fingerprints.
                        match r.encrypted_to.is_empty() {
                            true => "-".into(),
                            false => r.encrypted_to.join(","),
                        },
                        match e.broken() {
                            Some(b) => format!("no: {b}"),
                            None => "yes".into(),
                        },
                    ]
                })
                .collect(),
        ),
        _ => String::new(),
    })
}
