//! How zsnap-plan prints: JSON lines, shell commands one per line, or a table for people.
//! Every command's `render` builds a [`Rendered`] from these; nothing else formats output.
//! A command with a line per backup streams its JSON lines ([`Rendered::stream`]): at
//! 100,000 backups the whole text would be tens of MiB held at once.

use crate::cli::Failure;
use serde::Serialize;
use serde_json::Value;

/// What a command prints, and what it says besides.
#[derive(Default)]
pub struct Rendered<'a> {
    /// stdout.
    pub text: String,
    /// JSON lines for stdout after `text`, made and written one at a time.
    pub stream: Option<Box<dyn Iterator<Item = serde_json::Result<String>> + 'a>>,
    /// Lines for stderr, said whatever the exit status (e.g. a quota the backup will pass).
    pub notes: Vec<String>,
    /// A problem to exit 1 with after printing (a quota prune cannot meet).
    pub warning: Option<String>,
}

impl<'a> Rendered<'a> {
    pub fn text(text: String) -> Rendered<'a> {
        Rendered { text, ..Rendered::default() }
    }

    /// JSON lines, one at a time (each from [`line`]).
    pub fn stream(lines: impl Iterator<Item = serde_json::Result<String>> + 'a) -> Rendered<'a> {
        Rendered { stream: Some(Box::new(lines)), ..Rendered::default() }
    }

    /// Say the notes on stderr, print the text and the stream on stdout; the warning to
    /// exit 1 with is left to the caller.
    pub fn print(self) -> Result<Option<String>, Failure> {
        for note in &self.notes {
            eprintln!("zsnap-plan: {note}");
        }
        crate::cli::output::emit(&self.text)?;
        if let Some(lines) = self.stream {
            crate::cli::output::emit_lines(lines)?;
        }
        Ok(self.warning)
    }
}

/// One JSON line for [`Rendered::stream`]: a row's own line struct, serialized straight
/// from its fields, or a `Value`.
pub fn line(value: &impl Serialize) -> serde_json::Result<String> {
    serde_json::to_string(value)
}

/// One JSON value per line.
pub fn lines(values: impl Iterator<Item = Value>) -> String {
    let mut s = String::new();
    for v in values {
        s.push_str(&v.to_string());
        s.push('\n');
    }
    s
}

/// One command per line, as scripts run them.
pub fn commands<'a>(cmds: impl Iterator<Item = &'a str>) -> String {
    let mut s = String::new();
    for c in cmds {
        s.push_str(c);
        s.push('\n');
    }
    s
}

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let render = |cells: Vec<String>| {
        let n = cells.len();
        let mut line = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                line.push_str(&c);
            } else {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        line.trim_end().to_string() + "\n"
    };
    let mut out = render(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&render(r));
    }
    out
}

/// A backup's kind as tables show it: `full`, `inc`, with ` raw` for a raw stream and
/// ` legacy` for a zfs3backup object (matched by name, no guid), as the JSON's `legacy`.
pub fn kind_cell(r: &crate::catalog::BackupRecord) -> String {
    let mut cell = r.kind.as_str().to_string();
    if r.send.raw() {
        cell.push_str(" raw");
    }
    if r.legacy {
        cell.push_str(" legacy");
    }
    cell
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(&["A", "LONGER"], vec![vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\n");
    }

    #[test]
    fn kinds_say_raw_and_legacy() {
        use crate::catalog::chain::tests::{legacy, rec};
        assert_eq!(kind_cell(&legacy("d2", Some("d1"), 1)), "inc legacy");
        assert_eq!(kind_cell(&rec("s1", 1, None, 1)), "full");
    }
}
