//! Every flag is defined once, with its doc text; `--help` and the man page are both
//! rendered from these tables, so the two cannot drift (a test compares `man/*.1` with
//! the rendered page).

use super::exit;

/// One command-line flag as users see it.
#[derive(Clone, Copy, Debug)]
pub struct Flag {
    pub short: Option<char>,
    pub long: &'static str,
    /// Name of the value (`N`, `URL`), or `None` for a switch.
    pub value: Option<&'static str>,
    pub doc: &'static str,
}

/// Everything a binary says about itself.
pub struct Page {
    pub name: &'static str,
    pub synopsis: &'static str,
    pub about: &'static str,
    /// Paragraphs separated by blank lines.
    pub description: &'static str,
    /// Groups of flags with a heading each.
    pub groups: &'static [(&'static str, &'static [Flag])],
    /// Environment variables read: (name, meaning).
    pub environment: &'static [(&'static str, &'static str)],
    /// (command, what it does)
    pub examples: &'static [(&'static str, &'static str)],
    pub see_also: &'static str,
}

impl Flag {
    fn left_column(&self) -> String {
        let mut s = match self.short {
            Some(c) => format!("-{c}, --{}", self.long),
            None => format!("    --{}", self.long),
        };
        if let Some(v) = self.value {
            s.push(' ');
            s.push_str(v);
        }
        s
    }
}

/// Plain-text help for `--help`.
pub fn render_help(page: &Page) -> String {
    let mut s = format!("{} - {}\n\nUsage: {}\n\n", page.name, page.about, page.synopsis);
    for para in page.description.split("\n\n") {
        s.push_str(&wrap(&para.replace('\n', " "), 2, 88));
        s.push('\n');
    }
    for (heading, flags) in page.groups {
        s.push_str(&format!("{heading}:\n"));
        for f in *flags {
            let left = f.left_column();
            s.push_str(&format!("  {left}\n"));
            s.push_str(&wrap(f.doc, 10, 88));
        }
        s.push('\n');
    }
    if !page.environment.is_empty() {
        s.push_str("ENVIRONMENT:\n");
        for (name, meaning) in page.environment {
            s.push_str(&format!("  {name}\n"));
            s.push_str(&wrap(meaning, 10, 88));
        }
        s.push('\n');
    }
    if !page.examples.is_empty() {
        s.push_str("EXAMPLES:\n");
        for (cmd, what) in page.examples {
            s.push_str(&wrap(what, 2, 88));
            s.push_str(&format!("    {cmd}\n"));
        }
        s.push('\n');
    }
    s.push_str(&exit::table_text());
    s
}

/// A roff man page (section 1) from the same table.
pub fn render_man(page: &Page) -> String {
    let mut s = String::new();
    s.push_str(&format!(".TH {} 1 \"\" \"zsnap\" \"zsnap manual\"\n", page.name.to_uppercase()));
    s.push_str(&format!(".SH NAME\n{} \\- {}\n", page.name, roff(page.about)));
    s.push_str(&format!(".SH SYNOPSIS\n.B {}\n", roff(page.synopsis)));
    s.push_str(".SH DESCRIPTION\n");
    for (i, para) in page.description.split("\n\n").enumerate() {
        if i > 0 {
            s.push_str(".PP\n");
        }
        s.push_str(&roff(&para.replace('\n', " ")));
        s.push('\n');
    }
    for (heading, flags) in page.groups {
        s.push_str(&format!(".SH {}\n", heading.to_uppercase()));
        for f in *flags {
            s.push_str(".TP\n");
            let mut line = String::new();
            if let Some(c) = f.short {
                line.push_str(&format!("\\fB\\-{c}\\fR, "));
            }
            line.push_str(&format!("\\fB\\-\\-{}\\fR", roff(f.long)));
            if let Some(v) = f.value {
                line.push_str(&format!(" \\fI{}\\fR", roff(v)));
            }
            s.push_str(&line);
            s.push('\n');
            s.push_str(&roff(f.doc));
            s.push('\n');
        }
    }
    if !page.environment.is_empty() {
        s.push_str(".SH ENVIRONMENT\n");
        for (name, meaning) in page.environment {
            s.push_str(&format!(".TP\n.B {}\n{}\n", roff(name), roff(meaning)));
        }
    }
    s.push_str(".SH EXIT STATUS\n");
    for (code, name, meaning) in exit::TABLE {
        s.push_str(&format!(".TP\n.B {code}\n{} \\- {}\n", roff(name), roff(meaning)));
    }
    if !page.examples.is_empty() {
        s.push_str(".SH EXAMPLES\n");
        for (cmd, what) in page.examples {
            s.push_str(&format!("{}\n.PP\n.RS\n.nf\n{}\n.fi\n.RE\n.PP\n", roff(what), roff(cmd)));
        }
    }
    s.push_str(&format!(".SH SEE ALSO\n{}\n", roff(page.see_also)));
    s
}

/// Escape text for roff: backslashes, hyphens, and a leading dot or quote.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

fn wrap(text: &str, indent: usize, width: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent + line.len() + 1 + word.len() > width {
            out.push_str(&format!("{pad}{line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&format!("{pad}{line}\n"));
    }
    out
}

/// Look a flag up by its long name, for messages that tell the user which flag to change.
pub fn find<'a>(page: &'a Page, long: &str) -> Option<&'a Flag> {
    page.groups.iter().flat_map(|(_, flags)| flags.iter()).find(|f| f.long == long)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: &[Flag] = &[
        Flag { short: Some('c'), long: "concurrency", value: Some("N"), doc: "parts in flight" },
        Flag { short: None, long: "progress", value: None, doc: "show progress" },
    ];
    const PAGE: Page = Page {
        name: "demo",
        synopsis: "demo [OPTIONS] s3://BUCKET/KEY",
        about: "a demo",
        description: "First paragraph.\n\nSecond -paragraph.",
        groups: &[("Options", FLAGS)],
        environment: &[("AWS_PROFILE", "profile to use")],
        examples: &[("demo -c 2 s3://b/k", "Upload.")],
        see_also: "s3get(1)",
    };

    #[test]
    fn help_lists_every_flag_and_the_exit_codes() {
        let h = render_help(&PAGE);
        assert!(h.contains("-c, --concurrency N"), "{h}");
        assert!(h.contains("    --progress\n"), "{h}");
        assert!(h.contains("EXIT CODES:"), "{h}");
        assert!(h.contains("AWS_PROFILE"), "{h}");
    }

    #[test]
    fn man_escapes_hyphens_and_has_every_section() {
        let m = render_man(&PAGE);
        for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH EXIT STATUS", ".SH SEE ALSO"] {
            assert!(m.contains(section), "missing {section}:\n{m}");
        }
        assert!(m.contains("\\fB\\-\\-concurrency\\fR \\fIN\\fR"), "{m}");
        assert!(m.contains("Second \\-paragraph."), "{m}");
    }

    #[test]
    fn find_by_long_name() {
        assert_eq!(find(&PAGE, "progress").map(|f| f.long), Some("progress"));
        assert!(find(&PAGE, "nope").is_none());
    }
}
