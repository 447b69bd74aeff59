//! The man pages in man/ are rendered from the same flag tables as `--help`; this keeps
//! the committed files from drifting. Regenerate with `BIN --man > man/BIN.1`.

use crate::common::*;
use std::process::Command;

fn output_of(bin: &str, flag: &str) -> String {
    let out = run(
        {
            let mut c = Command::new(bin_path(bin));
            c.arg(flag);
            c
        },
        None,
        TIMEOUT,
    )
    .success();
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn man_pages_match_the_binaries() {
    for bin in ["s3put", "s3get", "zsnap-plan", "zsnap-health", "zsync-ssh"] {
        let want = output_of(bin, "--man");
        let path = repo_path(&format!("man/{bin}.1"));
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(have == want, "{} is stale: run `target/debug/{bin} --man > man/{bin}.1`", path.display());
    }
}

#[test]
fn help_names_every_flag_and_the_exit_codes() {
    for bin in ["s3put", "s3get", "zsnap-plan", "zsnap-health", "zsync-ssh"] {
        let help = output_of(bin, "--help");
        let man = output_of(bin, "--man");
        for line in help.lines().filter(|l| l.trim_start().starts_with("--") || l.trim_start().starts_with('-')) {
            let flag = line.split_whitespace().find(|w| w.starts_with("--")).expect("long flag");
            let roff = flag.trim_end_matches(',').replace('-', "\\-");
            assert!(man.contains(&roff), "{bin}: {flag} is in --help but not the man page");
        }
        for code in ["64", "65", "66", "67", "68", "69", "77", "78"] {
            assert!(help.contains(&format!("  {code}  ")), "{bin} --help lacks exit code {code}");
        }
    }
}

/// The scripts' man pages are written by hand: each must exist and name every option the
/// script's --help lists, and every script must pass its --help without touching anything.
#[test]
fn every_script_has_a_man_page_naming_its_options() {
    for script in ["zsnap-backup", "zsnap-restore", "zsnap-status", "zsnap-prune", "zsnap-snapshot"] {
        let mut c = Command::new("bash");
        c.arg(repo_path(&format!("scripts/{script}"))).arg("--help");
        let help = String::from_utf8(run(c, None, TIMEOUT).success().stdout).expect("utf-8");
        let path = repo_path(&format!("man/{script}.1"));
        let man = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut n = 0;
        for word in help.split(|c: char| c.is_whitespace() || c == ',').filter(|w| w.starts_with("--")) {
            let flag = word.trim_end_matches(['.', ')']);
            assert!(man.contains(&flag.replace('-', "\\-")), "{script}: {flag} is in --help but not in man/{script}.1");
            n += 1;
        }
        assert!(n > 3, "{script} --help lists too few options:\n{help}");
        assert!(man.contains(".SH EXIT STATUS"), "{script}.1 has no EXIT STATUS");
    }
}

/// Every binary's output goes through one writer: `--help` to a full disk is one line and
/// exit 74, to a pipe nobody reads is exit 80 and no message; never a panic.
#[test]
fn help_and_man_to_a_full_disk_or_a_closed_pipe() {
    use std::io::Read;
    use std::process::Stdio;
    let with_stdout = |bin: &str, flag: &str, stdout: Stdio| {
        let mut c = Command::new(bin_path(bin));
        c.arg(flag).stdin(Stdio::null()).stdout(stdout).stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn");
        let mut err = String::new();
        child.stderr.take().expect("stderr").read_to_string(&mut err).expect("read stderr");
        let status = wait_bounded(&mut child, bin, TIMEOUT);
        (status.code().unwrap_or(-1), err)
    };
    for bin in ["s3put", "s3get", "zsnap-plan", "zsnap-health", "zsync-ssh"] {
        for flag in ["--help", "--man"] {
            let full = std::fs::File::create("/dev/full").expect("/dev/full");
            let (code, err) = with_stdout(bin, flag, full.into());
            assert_eq!(code, 74, "{bin} {flag} > /dev/full: {err}");
            assert_eq!(err, format!("{bin}: writing stdout failed: No space left on device (os error 28)\n"));
            let (reader, writer) = std::io::pipe().expect("pipe");
            drop(reader);
            assert_eq!(with_stdout(bin, flag, writer.into()), (80, String::new()), "{bin} {flag} into a closed pipe");
        }
    }
}

/// The scripts pass zsnap-plan's settings and connection flags through from a list of their
/// own (scripts/zsnap-common.sh); it must be exactly zsnap-plan's, values and switches apart.
#[test]
fn the_scripts_pass_through_exactly_zsnap_plans_settings_flags() {
    let help = output_of("zsnap-plan", "--help");
    let (mut values, mut switches) = (Vec::new(), Vec::new());
    let mut group = "";
    for line in help.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            group = line.trim_end_matches(':');
            continue;
        }
        if !matches!(group, "Settings" | "Dataset settings" | "S3 connection") {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        // Flag lines start with the flag; doc lines may mention flags too.
        if !words.first().is_some_and(|w| w.starts_with('-')) {
            continue;
        }
        let Some(i) = words.iter().position(|w| w.starts_with("--")) else { continue };
        let flag = words[i].trim_end_matches(',').to_string();
        // --format is the scripts' own business (they always ask for sh or table).
        if flag == "--format" {
            continue;
        }
        match words.get(i + 1) {
            Some(v) if v.chars().all(|c| c.is_ascii_uppercase()) => values.push(flag),
            _ => switches.push(flag),
        }
    }
    let common = std::fs::read_to_string(repo_path("scripts/zsnap-common.sh")).expect("zsnap-common.sh");
    let list = |var: &str| -> Vec<String> {
        let start = common.find(&format!("{var}=\"")).unwrap_or_else(|| panic!("{var} in zsnap-common.sh"));
        let rest = &common[start + var.len() + 2..];
        let text = &rest[..rest.find('"').expect("closing quote")];
        let mut v: Vec<String> = text.replace("\\\n", " ").split_whitespace().map(str::to_string).collect();
        v.sort();
        v
    };
    values.sort();
    switches.sort();
    assert!(values.len() > 5 && !switches.is_empty(), "parsed too little of --help: {values:?} {switches:?}");
    assert_eq!(list("plan_value_opts"), values, "zsnap-common.sh's plan_value_opts");
    assert_eq!(list("plan_switches"), switches, "zsnap-common.sh's plan_switches");
}

/// `-V` and `--version` print `NAME VERSION` on every binary and script, the version being
/// Cargo.toml's: the scripts carry it in zsnap-common.sh, which must not drift from it.
#[test]
fn every_binary_and_script_prints_its_version() {
    let version = env!("CARGO_PKG_VERSION");
    for bin in ["s3put", "s3get", "zsnap-plan", "zsnap-health", "zsync-ssh"] {
        for flag in ["-V", "--version"] {
            assert_eq!(output_of(bin, flag), format!("{bin} {version}\n"), "{bin} {flag}");
        }
    }
    for script in ["zsnap-backup", "zsnap-restore", "zsnap-status", "zsnap-prune", "zsnap-snapshot"] {
        for flag in ["-V", "--version"] {
            let mut c = Command::new("bash");
            c.arg(repo_path(&format!("scripts/{script}"))).arg(flag);
            let out = run(c, None, TIMEOUT).success();
            assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{script} {version}\n"), "{script} {flag}");
            assert!(out.stderr.is_empty(), "{script} {flag}: {}", out.stderr);
        }
    }
}
