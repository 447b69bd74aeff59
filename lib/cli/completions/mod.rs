//! Shell completions (bash, zsh, fish) rendered from the same flag tables as `--help` and
//! the man pages, so a flag added to a table is completed with no other edit. Rendering is
//! pure: a [`Program`] (its flags, what their values are, its commands) in, a script out.
//! `BIN --completions SHELL` prints a binary's; `zsnap-plan --completions SHELL SCRIPT`
//! prints a zsnap-* script's, whose pass-through flags are zsnap-plan's own.

mod bash;
mod fish;
mod scripts;
mod zsh;

pub use scripts::{Script, SCRIPTS};

use super::flags::{Flag, Page};
use super::Failure;
use lexopt::ValueExt;

/// The shells we write completions for, as `--completions` names them.
pub const SHELLS: &[&str] = &["bash", "zsh", "fish"];

/// The snapshot types (`calendar::Period`), as words to complete; a test keeps them equal.
pub const PERIODS: &[&str] = &["hourly", "daily", "weekly", "monthly", "yearly"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Shell {
    pub fn parse(name: &str) -> Option<Shell> {
        match name {
            "bash" => Some(Shell::Bash),
            "zsh" => Some(Shell::Zsh),
            "fish" => Some(Shell::Fish),
            _ => None,
        }
    }
}

/// What a flag's value is completed with, read off the value's name in the flag table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hint {
    /// Nothing can be guessed (a bucket, a size); the next word is still the value, not a flag.
    Any,
    File,
    /// The local datasets, from `zfs list -H -o name` (no zfs: nothing).
    Dataset,
    Choices(&'static [&'static str]),
}

impl Hint {
    pub fn for_value(name: &str) -> Hint {
        match name {
            "FILE" => Hint::File,
            "DATASET" => Hint::Dataset,
            "SHELL" => Hint::Choices(SHELLS),
            _ => Hint::Any,
        }
    }
}

/// A first word (a subcommand, or a script's positional word) and the words that may follow it.
#[derive(Clone, Copy, Debug)]
pub struct Command {
    pub name: &'static str,
    pub doc: &'static str,
    pub args: &'static [&'static str],
}

/// One flag as completion sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opt {
    pub short: Option<char>,
    pub long: &'static str,
    /// `None` for a switch.
    pub value: Option<Hint>,
    /// Its value's name (`FILE`), for zsh's message.
    pub value_name: &'static str,
    /// One line, for zsh and fish to show beside the flag.
    pub summary: String,
}

impl Opt {
    pub fn of(flag: &Flag) -> Opt {
        Opt {
            short: flag.short,
            long: flag.long,
            value: flag.value.map(Hint::for_value),
            value_name: flag.value.unwrap_or(""),
            summary: summary(flag.doc),
        }
    }

    /// `-d` and `--dataset`, or only the long one.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.short.map(|c| format!("-{c}")).into_iter().collect();
        v.push(format!("--{}", self.long));
        v
    }
}

/// Everything a completion script is made from.
pub struct Program<'a> {
    pub name: &'a str,
    pub opts: Vec<Opt>,
    pub commands: &'a [Command],
    /// The command that printed it (quoted, with the version), named in its header so a
    /// reader knows how to regenerate it.
    pub generator: String,
}

impl<'a> Program<'a> {
    /// A binary's, from its page: every group's flags, each once.
    pub fn of_page(page: &'a Page, commands: &'a [Command]) -> Program<'a> {
        let mut opts: Vec<Opt> = Vec::new();
        for flag in page.groups.iter().flat_map(|(_, flags)| flags.iter()) {
            if !opts.iter().any(|o| o.long == flag.long) {
                opts.push(Opt::of(flag));
            }
        }
        Program { name: page.name, opts, commands, generator: String::new() }
    }

    /// The flags whose value is the next word (bash and fish must skip it when looking for
    /// the command word).
    pub fn value_names(&self) -> Vec<String> {
        self.opts.iter().filter(|o| o.value.is_some()).flat_map(|o| o.names()).collect()
    }

    pub fn all_names(&self) -> Vec<String> {
        self.opts.iter().flat_map(|o| o.names()).collect()
    }

    /// A shell identifier made from the program's name (`zsnap-plan` -> `zsnap_plan`).
    pub fn ident(&self) -> String {
        self.name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
    }
}

/// The completion script for `program` in `shell`.
pub fn render(shell: Shell, program: &Program) -> String {
    match shell {
        Shell::Bash => bash::render(program),
        Shell::Zsh => zsh::render(program),
        Shell::Fish => fish::render(program),
    }
}

/// Whether `arg` is `--completions` (then call [`take`] with the parser).
pub fn asked(arg: &lexopt::Arg<'_>) -> bool {
    matches!(arg, lexopt::Arg::Long("completions"))
}

/// Read `--completions`'s SHELL (and, where `scripts` is not empty, an optional script name
/// after it) and render that completion script. A binary's hook:
/// `if completions::asked(&arg) { return completions::take(&mut p, &PAGE, &[], &[]).map(Err); }`
pub fn take(p: &mut lexopt::Parser, page: &Page, commands: &[Command], scripts: &[Script]) -> Result<String, Failure> {
    let name = p.value()?.string()?;
    let shell = Shell::parse(&name)
        .ok_or_else(|| Failure::usage(format!("--completions: '{name}' is not bash, zsh or fish")))?;
    let script = if scripts.is_empty() {
        None
    } else {
        p.raw_args()?.next_if(|w| !w.to_string_lossy().starts_with('-')).map(|w| w.to_string_lossy().into_owned())
    };
    let (program, generator) = match script {
        None => (Program::of_page(page, commands), format!("{} --completions {name}", page.name)),
        Some(s) => {
            let found = scripts.iter().find(|x| x.name == s).ok_or_else(|| {
                let names: Vec<&str> = scripts.iter().map(|x| x.name).collect();
                Failure::usage(format!("--completions: '{s}' is not one of {}", names.join(", ")))
            })?;
            (found.program(page), format!("{} --completions {name} {s}", page.name))
        }
    };
    let generator = format!("`{generator}` (zsnap {})", env!("CARGO_PKG_VERSION"));
    Ok(render(shell, &Program { generator, ..program }))
}

/// A flag's doc cut to its first sentence, and to about 80 characters: what fits beside the
/// flag in a completion menu. "e.g. x" does not end a sentence; a period before a capital does.
pub fn summary(doc: &str) -> String {
    let text = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut end = text.len();
    for (i, _) in text.match_indices(". ") {
        let before = &text[..i];
        let next = text[i + 2..].chars().next().unwrap_or(' ');
        let abbrev = ["e.g", "i.e", "etc"].iter().any(|a| before.ends_with(a));
        if !abbrev && (next.is_ascii_uppercase() || next == '$') {
            end = i;
            break;
        }
    }
    let first = text[..end].trim_end_matches('.');
    const MAX: usize = 80;
    if first.chars().count() <= MAX {
        return first.to_string();
    }
    // Cut at the last space that leaves room for "...".
    let limit = first.char_indices().nth(MAX - 3).map_or(first.len(), |(i, _)| i);
    let cut = first[..limit].rfind(' ').unwrap_or(limit);
    format!("{}...", first[..cut].trim_end_matches([',', ';', ':', '.']))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const FLAGS: &[Flag] = &[
        Flag { short: Some('d'), long: "dataset", value: Some("DATASET"), doc: "Dataset, e.g. tank/data. Default x." },
        Flag { short: None, long: "config", value: Some("FILE"), doc: "Configuration file." },
        Flag { short: Some('b'), long: "bucket", value: Some("NAME"), doc: "Bucket [main]: it's 'x'." },
        Flag { short: Some('n'), long: "dry-run", value: None, doc: "Print, run nothing." },
        Flag { short: None, long: "completions", value: Some("SHELL"), doc: "Print a completion script." },
    ];
    /// A flag that is in two groups, as settings flags can be.
    const AGAIN: &[Flag] = &[FLAGS[0]];
    pub const PAGE: Page = Page {
        name: "demo-tool",
        synopsis: "demo-tool [OPTIONS] go|stop",
        about: "a demo",
        description: "",
        groups: &[("Options", FLAGS), ("Again", AGAIN)],
        environment: &[],
        examples: &[],
        see_also: "",
    };
    pub const COMMANDS: &[Command] = &[
        Command { name: "go", doc: "start: now", args: PERIODS },
        Command { name: "stop", doc: "stop it", args: &[] },
    ];

    pub fn demo(commands: &'static [Command]) -> Program<'static> {
        Program { generator: "`demo-tool --completions x`".into(), ..Program::of_page(&PAGE, commands) }
    }

    #[test]
    fn hints_come_from_the_value_names() {
        let p = demo(COMMANDS);
        let hint = |long: &str| p.opts.iter().find(|o| o.long == long).and_then(|o| o.value);
        assert_eq!(hint("dataset"), Some(Hint::Dataset));
        assert_eq!(hint("config"), Some(Hint::File));
        assert_eq!(hint("bucket"), Some(Hint::Any));
        assert_eq!(hint("completions"), Some(Hint::Choices(SHELLS)));
        assert_eq!(hint("dry-run"), None);
        // A flag in two groups is offered once.
        assert_eq!(p.opts.iter().filter(|o| o.long == "dataset").count(), 1);
        assert_eq!(p.value_names(), ["-d", "--dataset", "--config", "-b", "--bucket", "--completions"]);
        assert_eq!(p.ident(), "demo_tool");
    }

    #[test]
    fn summaries_are_one_short_sentence() {
        assert_eq!(summary("Dataset, e.g. tank/data. Default $ZSNAP_DATASET."), "Dataset, e.g. tank/data");
        assert_eq!(summary("Print the version (NAME VERSION) and exit."), "Print the version (NAME VERSION) and exit");
        assert_eq!(summary("Key prefix. $X wins."), "Key prefix");
        assert_eq!(summary("a  b\n   c"), "a b c");
        let long = summary(&"word ".repeat(40));
        assert!(long.ends_with("...") && long.chars().count() <= 80, "{long}");
        assert_eq!(summary(""), "");
    }

    #[test]
    fn periods_are_the_calendars() {
        let names: Vec<&str> = crate::calendar::Period::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(PERIODS, names);
    }

    fn take_args(args: &[&str], scripts: &[Script]) -> Result<String, Failure> {
        let mut p = lexopt::Parser::from_args(args.iter().copied());
        assert!(matches!(p.next(), Ok(Some(lexopt::Arg::Long("completions")))));
        take(&mut p, &PAGE, COMMANDS, scripts)
    }

    #[test]
    fn take_reads_the_shell_and_a_script_name() {
        let bash = take_args(&["--completions", "bash"], &[]).expect("bash");
        assert!(bash.contains("complete -F _demo_tool demo-tool"), "{bash}");
        assert!(bash.contains("generated by `demo-tool --completions bash` (zsnap "), "{bash}");
        let fish = take_args(&["--completions=fish", "ignored"], &[]).expect("fish");
        assert!(fish.contains("complete -c demo-tool"), "{fish}");
        let e = take_args(&["--completions", "tcsh"], &[]).expect_err("tcsh");
        assert_eq!(e.code, crate::cli::ExitCode::Usage);
        assert!(e.message.contains("'tcsh' is not bash, zsh or fish"), "{}", e.message);
        let script = take_args(&["--completions", "bash", "zsnap-backup"], SCRIPTS).expect("script");
        assert!(script.contains("complete -F _zsnap_backup zsnap-backup"), "{script}");
        assert!(script.contains("`demo-tool --completions bash zsnap-backup`"), "{script}");
        let e = take_args(&["--completions", "zsh", "s3put"], SCRIPTS).expect_err("not a script");
        assert!(e.message.contains("'s3put' is not one of zsnap-backup, "), "{}", e.message);
        let e = take_args(&["--completions"], &[]).expect_err("no shell");
        assert_eq!(e.code, crate::cli::ExitCode::Usage);
    }

    /// Every real table's names are plain words, so the renderers need not quote them.
    #[test]
    fn real_tables_have_plain_names() {
        use crate::commands::*;
        let pages = [&s3put::PAGE, &s3get::PAGE, &zsnap_plan::PAGE, &zsnap_health::PAGE, &zsync_ssh::PAGE];
        let plain = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        for page in pages {
            let p = Program::of_page(page, zsnap_plan::COMMANDS);
            for o in &p.opts {
                assert!(plain(o.long), "{}: --{}", page.name, o.long);
            }
            assert!(p.opts.iter().any(|o| o.long == "completions"), "{} has --completions", page.name);
        }
        for s in SCRIPTS {
            let p = s.program(&zsnap_plan::PAGE);
            assert!(p.opts.iter().all(|o| plain(o.long)) && p.commands.iter().all(|c| plain(c.name)));
        }
    }
}
