//! The shell completions the binaries print (`--completions SHELL`, and zsnap-plan's for the
//! scripts), run for real: bash's sourced and called as bash calls it, COMPREPLY checked;
//! fish's asked with `complete -C`; zsh's and fish's syntax-checked. Each script's
//! completion is compared with the flags its own option loop takes, so neither can drift.

use crate::common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const BINS: [&str; 5] = ["s3put", "s3get", "zsnap-plan", "zsnap-health", "zsync-ssh"];
const SCRIPTS: [&str; 5] = ["zsnap-backup", "zsnap-restore", "zsnap-status", "zsnap-prune", "zsnap-snapshot"];
const PERIODS: [&str; 5] = ["hourly", "daily", "weekly", "monthly", "yearly"];
const PLAN_COMMANDS: [&str; 10] =
    ["config", "policy", "backup", "restore", "list", "save", "status", "prune", "snapshot", "rotate"];

/// A directory of this test's own, with the generated completion files in it.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = PathBuf::from(need("ZSNAP_TEST_WORK")).join(format!("completions-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch { dir }
    }

    /// The completion script of `name` (a binary, or a script through zsnap-plan) for `shell`,
    /// written to a file.
    fn completion(&self, shell: &str, name: &str) -> PathBuf {
        let mut c = if SCRIPTS.contains(&name) {
            let mut c = Command::new(bin_path("zsnap-plan"));
            c.args(["--completions", shell, name]);
            c
        } else {
            let mut c = Command::new(bin_path(name));
            c.args(["--completions", shell]);
            c
        };
        c.current_dir(&self.dir);
        let out = run(c, None, TIMEOUT).success();
        let path = self.dir.join(format!("{name}.{shell}"));
        std::fs::write(&path, &out.stdout).expect("write completion");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What bash offers for the command line `words` (the last is the word being completed),
/// calling the function the file registers with `complete -F` as bash would, in `cwd`.
fn bash_offers(file: &Path, cwd: &Path, words: &[&str]) -> Vec<String> {
    const DRIVER: &str = r#"
        source "$1" || exit 3
        shift
        COMP_WORDS=("$@") COMP_CWORD=$(($# - 1)) COMP_LINE="$*"
        COMP_POINT=${#COMP_LINE}
        spec=$(complete -p "$1") || exit 4
        fn=${spec#*-F } fn=${fn%% *}
        "$fn" "$1" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let mut c = Command::new("bash");
    c.args(["--norc", "--noprofile", "-c", DRIVER, "bash"]).arg(file).args(words).current_dir(cwd);
    let out = run(c, None, TIMEOUT).success();
    String::from_utf8(out.stdout).expect("utf-8").lines().filter(|l| !l.is_empty()).map(String::from).collect()
}

fn set(words: &[&str]) -> BTreeSet<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn bash_completes_flags_commands_and_values() {
    let s = Scratch::new("bash");
    // Run where the only file is the one to complete (the generated ones are in s.dir).
    let here = s.dir.join("here");
    std::fs::create_dir_all(&here).expect("cwd");
    std::fs::write(here.join("zsnap.conf"), b"").expect("a file to complete");
    let s3put = s.completion("bash", "s3put");
    let plan = s.completion("bash", "zsnap-plan");
    let backup = s.completion("bash", "zsnap-backup");
    let restore = s.completion("bash", "zsnap-restore");
    let snapshot = s.completion("bash", "zsnap-snapshot");
    let offers = |file: &Path, words: &[&str]| sorted(bash_offers(file, &here, words));
    let words = |w: &[&str]| sorted(w.iter().map(|x| x.to_string()).collect());

    assert_eq!(offers(&s3put, &["s3put", "--enc"]), ["--encrypt-to"]);
    assert_eq!(offers(&plan, &["zsnap-plan", ""]), words(&PLAN_COMMANDS));
    // Flags and their values before the command are not the command.
    assert_eq!(offers(&plan, &["zsnap-plan", "-d", "tank/x", "--format", "sh", "--full", "r"]), ["restore", "rotate"]);
    assert_eq!(offers(&plan, &["zsnap-plan", "--bucket", "=", "b", "p"]), ["policy", "prune"]);
    assert_eq!(offers(&plan, &["zsnap-plan", "snapshot", "d"]), ["daily"]);
    assert_eq!(offers(&plan, &["zsnap-plan", "restore", "l"]), ["latest"]);
    assert!(offers(&plan, &["zsnap-plan", "list", ""]).is_empty());
    // A value is not a flag: nothing to guess for a bucket, files for FILE, shells for SHELL.
    assert!(offers(&plan, &["zsnap-plan", "--bucket", ""]).is_empty());
    assert_eq!(offers(&plan, &["zsnap-plan", "--config", "zs"]), ["zsnap.conf"]);
    assert_eq!(offers(&plan, &["zsnap-plan", "--completions", ""]), ["bash", "fish", "zsh"]);
    assert_eq!(offers(&plan, &["zsnap-plan", "--completions", "=", "z"]), ["zsh"]);
    assert_eq!(offers(&plan, &["zsnap-plan", "--comp"]), ["--completions", "--compressor"]);

    assert_eq!(offers(&backup, &["zsnap-backup", "--da"]), ["--dataset"]);
    assert_eq!(offers(&backup, &["zsnap-backup", "--ful"]), ["--full"]);
    assert_eq!(offers(&restore, &["zsnap-restore", ""]), words(&["latest", "list", "mount", "restore", "save"]));
    assert_eq!(offers(&snapshot, &["zsnap-snapshot", "--dry-run", "w"]), ["weekly"]);
}

#[test]
fn bash_completes_datasets_from_zfs_list() {
    let ctx = Ctx::new("completions-datasets");
    let pool = Pool::new(&ctx, "compl");
    pool.zfs(&["create", &pool.ds("child")]).success();
    let s = Scratch::new("datasets");
    let plan = s.completion("bash", "zsnap-plan");
    let got = bash_offers(&plan, &s.dir, &["zsnap-plan", "--dataset", &pool.name]);
    assert_eq!(got, [pool.name.clone(), pool.ds("child")]);
    let backup = s.completion("bash", "zsnap-backup");
    assert_eq!(bash_offers(&backup, &s.dir, &["zsnap-backup", "--dataset", &pool.ds("ch")]), [pool.ds("child")]);
}

/// A script's option loop (`while (($#)); do case "$1" in ... done`): each flag it names,
/// with whether its arm takes a value (`need_value`), and the plain words it matches.
fn option_loop(script: &str) -> (BTreeMap<String, bool>, BTreeSet<String>) {
    let text = std::fs::read_to_string(repo_path(&format!("scripts/{script}"))).expect("script");
    let body = text.split("while (($#)); do\n").nth(1).and_then(|r| r.split("\ndone\n").next()).expect("option loop");
    let (mut flags, mut words) = (BTreeMap::new(), BTreeSet::new());
    let mut arm: Option<Vec<String>> = None;
    let mut arm_body = String::new();
    let mut finish = |arm: &mut Option<Vec<String>>, arm_body: &str| {
        for p in arm.take().unwrap_or_default() {
            if p.contains('*') {
                continue;
            }
            if p.starts_with('-') {
                flags.insert(p, arm_body.contains("need_value"));
            } else {
                words.insert(p);
            }
        }
    };
    for line in body.lines() {
        // Patterns sit at the `case`'s own indent, arms' bodies deeper.
        let pattern_line = line.starts_with("    ") && !line.starts_with("     ");
        let trimmed = line.trim();
        if pattern_line && !trimmed.starts_with("case ") && trimmed != "esac" && trimmed.contains(')') {
            finish(&mut arm, &arm_body);
            let (pattern, rest) = trimmed.split_once(')').expect("pattern");
            arm = Some(pattern.split('|').map(|p| p.trim().to_string()).collect());
            arm_body = rest.to_string();
        } else {
            arm_body.push_str(line);
        }
    }
    finish(&mut arm, &arm_body);
    (flags, words)
}

/// zsnap-common.sh's pass-through flags: (flag, takes a value).
fn pass_through() -> BTreeMap<String, bool> {
    let text = std::fs::read_to_string(repo_path("scripts/zsnap-common.sh")).expect("zsnap-common.sh");
    let list = |var: &str| -> Vec<String> {
        let start = text.find(&format!("\n{var}=\"")).unwrap_or_else(|| panic!("{var} in zsnap-common.sh"));
        let rest = &text[start + var.len() + 3..];
        let value = &rest[..rest.find('"').expect("closing quote")];
        value.replace("\\\n", " ").split_whitespace().map(String::from).collect()
    };
    let mut all: BTreeMap<String, bool> = list("plan_value_opts").into_iter().map(|f| (f, true)).collect();
    all.extend(list("plan_switches").into_iter().map(|f| (f, false)));
    assert!(all.len() > 10, "{all:?}");
    all
}

#[test]
fn every_script_completes_exactly_the_flags_it_takes() {
    let s = Scratch::new("scripts");
    let passed = pass_through();
    for script in SCRIPTS {
        let (own, words) = option_loop(script);
        assert!(own.contains_key("--help") && own.contains_key("--version"), "{script}: {own:?}");
        let mut want = passed.clone();
        want.extend(own.clone());
        let file = s.completion("bash", script);
        let offered: BTreeSet<String> = bash_offers(&file, &s.dir, &[script, "-"]).into_iter().collect();
        assert_eq!(offered, want.keys().cloned().collect::<BTreeSet<_>>(), "{script}: completion vs its option loop");
        // A value flag's next word is its value (no flags offered there); a switch's is not.
        for (flag, takes_value) in &want {
            let after = bash_offers(&file, &s.dir, &[script, flag, "-"]);
            assert_eq!(!after.contains(&"--help".to_string()), *takes_value, "{script} {flag}: {after:?}");
        }
        // Every value flag has its --flag=VALUE arm too.
        let text = std::fs::read_to_string(repo_path(&format!("scripts/{script}"))).expect("script");
        for (flag, _) in own.iter().filter(|(_, v)| **v) {
            assert!(text.contains(&format!("    {flag}=*)")), "{script}: no {flag}=* arm");
        }
        // The plain words the loop matches (zsnap-snapshot's types) are offered.
        let first: BTreeSet<String> = bash_offers(&file, &s.dir, &[script, ""]).into_iter().collect();
        assert!(first.is_superset(&words), "{script}: offers {first:?}, loop takes {words:?}");
    }
    // zsnap-restore's commands are a second case, on its first word.
    let text = std::fs::read_to_string(repo_path("scripts/zsnap-restore")).expect("zsnap-restore");
    let block = text.split("case \"${words[0]}\" in\n").nth(1).and_then(|r| r.split("\nesac\n").next()).expect("case");
    let commands: BTreeSet<String> = block
        .lines()
        .filter(|l| !l.starts_with(' ') && l.ends_with(')') && !l.contains('*'))
        .map(|l| l.trim_end_matches(')').to_string())
        .collect();
    assert_eq!(commands, set(&["list", "mount", "save"]));
    let file = s.completion("bash", "zsnap-restore");
    let first: BTreeSet<String> = bash_offers(&file, &s.dir, &["zsnap-restore", ""]).into_iter().collect();
    assert!(first.is_superset(&commands), "{first:?}");
}

/// The other shells, and shellcheck on the bash files: needs zsh, fish and shellcheck
/// installed (.ci/install lists them), as the rest of the bench is.
fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()));
    assert!(found, "{name} is not installed: apt-get install {name} (see .ci/install)");
    Command::new(name)
}

#[test]
fn every_completion_is_valid_bash_zsh_and_fish() {
    let s = Scratch::new("syntax");
    for name in BINS.iter().chain(SCRIPTS.iter()) {
        let bash = s.completion("bash", name);
        let mut c = tool("shellcheck");
        c.args(["-s", "bash"]).arg(&bash);
        run(c, None, TIMEOUT).success();
        let zsh = s.completion("zsh", name);
        assert!(std::fs::read_to_string(&zsh).expect("zsh").starts_with(&format!("#compdef {name}\n")));
        let mut c = tool("zsh");
        c.arg("-n").arg(&zsh);
        run(c, None, TIMEOUT).success();
        let fish = s.completion("fish", name);
        let mut c = tool("fish");
        c.arg("-n").arg(&fish);
        run(c, None, TIMEOUT).success();
    }
}

#[test]
fn fish_completes_flags_commands_and_values() {
    let s = Scratch::new("fish");
    let ask = |name: &str, line: &str| -> Vec<String> {
        let file = s.completion("fish", name);
        let mut c = tool("fish");
        c.args(["--no-config", "-c", "source $argv[1]; and complete -C $argv[2]"]).arg(&file).arg(line);
        c.current_dir(&s.dir);
        let out = run(c, None, TIMEOUT).success();
        let text = String::from_utf8(out.stdout).expect("utf-8");
        sorted(text.lines().map(|l| l.split('\t').next().unwrap_or("").to_string()).collect())
    };
    assert_eq!(ask("s3put", "s3put --enc"), ["--encrypt-to"]);
    assert_eq!(ask("zsnap-plan", "zsnap-plan -d tank/x --format sh ").len(), PLAN_COMMANDS.len());
    assert_eq!(ask("zsnap-plan", "zsnap-plan snapshot "), sorted(set(&PERIODS).into_iter().collect()));
    assert_eq!(ask("zsnap-plan", "zsnap-plan --completions "), ["bash", "fish", "zsh"]);
    assert_eq!(ask("zsnap-backup", "zsnap-backup --da"), ["--dataset"]);
}

#[test]
fn completions_refuse_an_unknown_shell_or_script() {
    let mut c = Command::new(bin_path("s3put"));
    c.args(["--completions", "tcsh"]);
    run(c, None, TIMEOUT).fails(64, "--completions: 'tcsh' is not bash, zsh or fish");
    let mut c = Command::new(bin_path("zsnap-plan"));
    c.args(["--completions", "bash", "zsnap-frob"]);
    run(c, None, TIMEOUT).fails(64, "'zsnap-frob' is not one of zsnap-backup");
}
