//! `zsnap-plan policy`: the retention policy in force and where each value came from.

use super::inputs::{Inputs, Needs};
use super::render::{lines, table, Rendered};
use super::Format;
use crate::cli::output::human_bytes;
use crate::config::policy::Effective;

pub fn needs() -> Needs {
    Needs { policy: true, ..Needs::default() }
}

pub fn render<'a>(e: &'a Effective, _: &'a Inputs, f: Format) -> Rendered<'a> {
    Rendered::text(match f {
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
    })
}
