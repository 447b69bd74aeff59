//! The zsnap-* scripts parse their flags in bash, so their completions are made from this
//! table: each script's own flags (its option loop's `case` patterns) and the zsnap-plan
//! flags every script passes through (zsnap-common.sh's `plan_value_opts` and
//! `plan_switches`), whose value names and docs come from zsnap-plan's own table.
//! tests/it/completions.rs compares both with the scripts, so neither side can drift.

use super::{Command, Opt, Program, PERIODS};
use crate::cli::flags::{self, Flag, Page};

/// zsnap-plan's flags that `take_global` passes through, long names only (the scripts take
/// no short forms of them).
pub const PASS_THROUGH: &[&str] = &[
    "dataset",
    "snapshot-prefix",
    "compressor",
    "encrypt-to",
    "identity",
    "bucket",
    "s3-prefix",
    "config",
    "endpoint",
    "region",
    "profile",
    "connect-timeout",
    "read-timeout",
    "retries",
    "path-style",
    "virtual-host",
];

/// One script: its own flags and its positional words.
pub struct Script {
    pub name: &'static str,
    pub flags: &'static [Flag],
    pub commands: &'static [Command],
}

const fn switch(short: Option<char>, long: &'static str, doc: &'static str) -> Flag {
    Flag { short, long, value: None, doc }
}

const HELP: Flag = switch(Some('h'), "help", "Print the help and exit.");
const VERSION: Flag = switch(Some('V'), "version", "Print the version (NAME VERSION) and exit.");
const DRY_RUN: Flag = switch(Some('n'), "dry-run", "Print the exact commands, run nothing.");
const ALL: Flag = switch(None, "all", "Run for every [fs:DATASET] section of the config.");
const RECURSIVE: Flag = switch(None, "recursive", "Run for the dataset and each of its descendants.");
const JSON: Flag = switch(None, "json", "JSON lines.");
const TABLE: Flag = switch(None, "table", "A table, even when stdout is not a terminal.");
const NOW: Flag =
    Flag { short: None, long: "now", value: Some("SECONDS"), doc: "Decide as if it were this time (Unix seconds)." };

const fn period(name: &'static str, doc: &'static str) -> Command {
    Command { name, doc, args: &[] }
}

pub const SCRIPTS: &[Script] = &[
    Script {
        name: "zsnap-backup",
        flags: &[
            DRY_RUN,
            HELP,
            VERSION,
            switch(None, "full", "Send a full stream of the target snapshot even if a base exists."),
            switch(None, "decrypt-send", "Send an encrypted dataset DECRYPTED (its plaintext goes to the bucket)."),
            Flag { short: None, long: "send-option", value: Some("OPT"), doc: "Pass a zfs send option through." },
            Flag { short: None, long: "snapshot", value: Some("NAME"), doc: "Back up to this snapshot." },
            Flag {
                short: None,
                long: "replica",
                value: Some("HOST:DATASET"),
                doc: "Each send also feeds this replica's zfs recv.",
            },
            Flag { short: None, long: "replica-ssh-config", value: Some("FILE"), doc: "ssh -F FILE for the replicas." },
            ALL,
            RECURSIVE,
        ],
        commands: &[],
    },
    Script {
        name: "zsnap-restore",
        flags: &[
            DRY_RUN,
            HELP,
            VERSION,
            JSON,
            TABLE,
            switch(None, "force", "restore: roll the target back as needed; save: overwrite FILE."),
            Flag {
                short: None,
                long: "target",
                value: Some("DATASET"),
                doc: "Receive into this dataset instead of the source's name.",
            },
        ],
        commands: &[
            Command { name: "list", doc: "the backups in S3, numbered", args: &[] },
            Command { name: "restore", doc: "restore SNAPSHOT, latest or N", args: &["latest"] },
            Command { name: "latest", doc: "restore the newest backup", args: &[] },
            Command { name: "save", doc: "write one backup's verified stream to FILE", args: &["latest"] },
            Command { name: "mount", doc: "mount a restored dataset and print where", args: &[] },
        ],
    },
    Script {
        name: "zsnap-status",
        flags: &[
            HELP,
            VERSION,
            switch(None, "json", "JSON lines instead of a table."),
            TABLE,
            switch(None, "health", "Then zsnap-health's verdicts; exit with its verdict."),
            ALL,
            RECURSIVE,
        ],
        commands: &[],
    },
    Script {
        name: "zsnap-prune",
        flags: &[
            HELP,
            VERSION,
            switch(None, "yes", "Delete (needs a key allowed to delete)."),
            switch(None, "broken", "Delete only orphans instead of applying the policy."),
            DRY_RUN,
            JSON,
            TABLE,
            NOW,
            ALL,
            RECURSIVE,
        ],
        commands: &[],
    },
    Script {
        name: "zsnap-snapshot",
        flags: &[
            HELP,
            VERSION,
            DRY_RUN,
            switch(None, "rotate", "Only rotate: destroy what the policy no longer keeps."),
            NOW,
            ALL,
            RECURSIVE,
        ],
        commands: &[
            period(PERIODS[0], "take an hourly snapshot, then rotate"),
            period(PERIODS[1], "take a daily snapshot, then rotate"),
            period(PERIODS[2], "take a weekly snapshot, then rotate"),
            period(PERIODS[3], "take a monthly snapshot, then rotate"),
            period(PERIODS[4], "take a yearly snapshot, then rotate"),
        ],
    },
];

impl Script {
    /// Its completion program: its own flags, then the pass-through flags as `plan`
    /// (zsnap-plan's page) defines them, long forms only.
    pub fn program(&self, plan: &Page) -> Program<'static> {
        let mut opts: Vec<Opt> = self.flags.iter().map(Opt::of).collect();
        for long in PASS_THROUGH {
            // A name zsnap-plan lacks is a bug the unit test below catches; skip it here.
            if let Some(flag) = flags::find(plan, long) {
                opts.push(Opt { short: None, ..Opt::of(flag) });
            }
        }
        Program { name: self.name, opts, commands: self.commands, generator: String::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::zsnap_plan;

    #[test]
    fn pass_through_flags_are_zsnap_plans() {
        for long in PASS_THROUGH {
            assert!(flags::find(&zsnap_plan::PAGE, long).is_some(), "zsnap-plan has no --{long}");
        }
        let backup = SCRIPTS[0].program(&zsnap_plan::PAGE);
        assert_eq!(backup.opts.len(), SCRIPTS[0].flags.len() + PASS_THROUGH.len());
        let dataset = backup.opts.iter().find(|o| o.long == "dataset").expect("--dataset");
        assert_eq!((dataset.short, dataset.value), (None, Some(super::super::Hint::Dataset)));
    }

    #[test]
    fn snapshot_types_are_the_periods() {
        let snapshot = SCRIPTS.iter().find(|s| s.name == "zsnap-snapshot").expect("zsnap-snapshot");
        let names: Vec<&str> = snapshot.commands.iter().map(|c| c.name).collect();
        assert_eq!(names, PERIODS);
    }
}
