//! `make install` and what it ships: exactly the listed files (and `make uninstall` removes
//! exactly them), the installed scripts working from cron's `PATH=/usr/bin:/bin` on a real
//! pool and bucket, the systemd units passing `systemd-analyze verify`, the example config
//! loading, the cron.d example naming installed commands, and the shell completions being
//! what the binaries print.

use crate::common::*;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What `make install` (and so the .deb, `tests/it/package.rs`) puts in place.
pub(crate) const BINS: [&str; 5] = ["s3put", "s3get", "zsnap-plan", "zsnap-health", "zsync-ssh"];
pub(crate) const SCRIPTS: [&str; 5] =
    ["zsnap-backup", "zsnap-restore", "zsnap-prune", "zsnap-status", "zsnap-snapshot"];
pub(crate) const UNITS: [&str; 8] = [
    "zsnap-snapshot@.service",
    "zsnap-snapshot@.timer",
    "zsnap-backup.service",
    "zsnap-backup.timer",
    "zsnap-prune.service",
    "zsnap-prune.timer",
    "zsnap-health.service",
    "zsnap-health.timer",
];

/// A fresh directory of this test's own under the bench's work directory.
fn scratch(tag: &str) -> PathBuf {
    let dir = PathBuf::from(need("ZSNAP_TEST_WORK")).join(format!("install-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `make TARGET VARS...` in the repository, with the debug binaries the tests built.
fn make(target: &str, vars: &[String]) -> Output {
    let built = bin_path("s3put").parent().expect("bin dir").display().to_string();
    let mut c = Command::new("make");
    c.arg("-C").arg(repo_path("")).arg("--no-print-directory").arg(target).arg(format!("BUILT={built}")).args(vars);
    run(c, None, TIMEOUT)
}

/// Every file under `root`, relative to it.
pub(crate) fn files_under(root: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.insert(path.strip_prefix(root).expect("under root").display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

fn expected_files(prefix: &str) -> BTreeSet<String> {
    let p = prefix.trim_start_matches('/');
    let mut want = BTreeSet::new();
    for b in BINS.iter().chain(SCRIPTS.iter()) {
        want.insert(format!("{p}/bin/{b}"));
        want.insert(format!("{p}/share/man/man1/{b}.1"));
        want.insert(format!("{p}/share/bash-completion/completions/{b}"));
        want.insert(format!("{p}/share/zsh/site-functions/_{b}"));
        want.insert(format!("{p}/share/fish/vendor_completions.d/{b}.fish"));
    }
    want.insert(format!("{p}/lib/zsnap/zsnap-common.sh"));
    want.insert(format!("{p}/share/doc/zsnap/zsnap.conf.example"));
    want.insert(format!("{p}/share/doc/zsnap/zsnap.cron.example"));
    for u in UNITS {
        want.insert(format!("{p}/lib/systemd/system/{u}"));
    }
    want
}

#[test]
fn install_puts_exactly_the_listed_files_and_uninstall_removes_them() {
    let dest = scratch("files");
    let vars = [format!("DESTDIR={}", dest.display()), "PREFIX=/usr".to_string()];
    make("install", &vars).success();
    assert_eq!(files_under(&dest), expected_files("/usr"), "installed files");
    let usr = dest.join("usr");
    for b in BINS.iter().chain(SCRIPTS.iter()) {
        let mode = std::fs::metadata(usr.join("bin").join(b)).expect("installed").permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "bin/{b} mode");
    }
    for (installed, source) in [
        ("lib/zsnap/zsnap-common.sh", "scripts/zsnap-common.sh"),
        ("bin/zsnap-backup", "scripts/zsnap-backup"),
        ("share/man/man1/zsnap-plan.1", "man/zsnap-plan.1"),
        ("share/doc/zsnap/zsnap.conf.example", "dist/zsnap.conf.example"),
    ] {
        let have = std::fs::read(usr.join(installed)).expect("installed file");
        assert!(have == std::fs::read(repo_path(source)).expect("source file"), "{installed} differs from {source}");
    }
    // The completions are what the binaries print now (zsnap-plan prints the scripts').
    for (installed, bin, args) in [
        ("share/bash-completion/completions/s3put", "s3put", &["--completions", "bash"][..]),
        ("share/zsh/site-functions/_zsnap-plan", "zsnap-plan", &["--completions", "zsh"][..]),
        (
            "share/fish/vendor_completions.d/zsnap-backup.fish",
            "zsnap-plan",
            &["--completions", "fish", "zsnap-backup"][..],
        ),
    ] {
        let mut c = Command::new(bin_path(bin));
        c.args(args);
        let want = run(c, None, TIMEOUT).success().stdout;
        assert!(std::fs::read(usr.join(installed)).expect("installed completion") == want, "{installed} differs");
        let mode = std::fs::metadata(usr.join(installed)).expect("installed").permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "{installed} mode");
    }
    // Units and the cron example name the installed paths (PREFIX, not DESTDIR).
    for u in UNITS {
        let text = std::fs::read_to_string(usr.join("lib/systemd/system").join(u)).expect("unit");
        assert!(!text.contains("@BINDIR@") && !text.contains(&dest.display().to_string()), "{u}:\n{text}");
        if u.ends_with(".service") {
            assert!(text.contains("\nExecStart=/usr/bin/zsnap-"), "{u} runs an installed command:\n{text}");
            assert!(text.contains("\nType=oneshot\n"), "{u} is oneshot");
        } else {
            assert!(text.contains("\nPersistent=true\n") && text.contains("\nRandomizedDelaySec="), "{u}:\n{text}");
        }
    }
    let cron = std::fs::read_to_string(usr.join("share/doc/zsnap/zsnap.cron.example")).expect("cron example");
    assert!(cron.contains("\nPATH=/usr/bin:/usr/bin:/bin:/usr/sbin:/sbin\n"), "{cron}");

    // A second install over the first changes nothing; uninstall leaves no file behind,
    // nor zsnap's own directories, and keeps the shared ones.
    make("install", &vars).success();
    assert_eq!(files_under(&dest), expected_files("/usr"));
    std::fs::write(usr.join("bin/someone-else"), b"x").expect("a file that is not ours");
    make("uninstall", &vars).success();
    assert_eq!(files_under(&dest), BTreeSet::from(["usr/bin/someone-else".to_string()]), "left after uninstall");
    assert!(!usr.join("lib/zsnap").exists() && !usr.join("share/doc/zsnap").exists(), "zsnap's directories removed");
    assert!(usr.join("share/man/man1").is_dir(), "shared directories kept");
    let _ = std::fs::remove_dir_all(&dest);
}

#[test]
fn install_without_a_build_says_so_in_one_line() {
    let dest = scratch("nobuild");
    let mut c = Command::new("make");
    c.arg("-C").arg(repo_path("")).args(["--no-print-directory", "-s", "install", "BUILT=/nonexistent"]);
    c.arg(format!("DESTDIR={}", dest.display()));
    let out = run(c, None, TIMEOUT);
    assert_ne!(out.code(), 0, "install without binaries must fail");
    assert!(out.stderr.contains("/nonexistent/s3put is missing: run make first"), "{}", out.stderr);
    assert!(files_under(&dest).is_empty(), "nothing installed");
    let _ = std::fs::remove_dir_all(&dest);
}

/// An installed command with nothing of the caller's environment but cron's PATH and `env`.
fn cron_cmd(path: &Path, args: &[&str], env: &[(String, String)]) -> Command {
    let mut c = Command::new(path);
    c.args(args).env_clear().env("PATH", "/usr/bin:/bin");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

#[test]
fn installed_scripts_work_from_crons_path() {
    let dest = scratch("cron");
    make("install", &[format!("DESTDIR={}", dest.display()), "PREFIX=/usr".to_string()]).success();
    let bin = dest.join("usr/bin");
    let version = env!("CARGO_PKG_VERSION");
    for s in SCRIPTS {
        let help = run(cron_cmd(&bin.join(s), &["--help"], &[]), None, TIMEOUT).success();
        assert!(help.text().contains(&format!("Usage: {s}")), "{s} --help:\n{}", help.text());
        for flag in ["--version", "-V"] {
            let out = run(cron_cmd(&bin.join(s), &[flag], &[]), None, TIMEOUT).success();
            assert_eq!(out.text(), format!("{s} {version}\n"), "{s} {flag}");
        }
    }
    for b in BINS {
        let out = run(cron_cmd(&bin.join(b), &["-V"], &[]), None, TIMEOUT).success();
        assert_eq!(out.text(), format!("{b} {version}\n"));
    }

    // A real dataset and bucket: the dry run needs zsnap-plan (beside the script) and zfs
    // (in /usr/sbin, not on cron's PATH); the backup also s3put, run by the plan's commands.
    let site = Site::new("install-cron", "inst");
    let env: Vec<(String, String)> = site
        .cmd("zsnap-backup", &[])
        .get_envs()
        .filter(|(k, _)| *k != "PATH")
        .filter_map(|(k, v)| Some((k.to_string_lossy().into_owned(), v?.to_string_lossy().into_owned())))
        .collect();
    site.write("a.bin", &data(300_000, 7));
    site.snapshot("s1");
    let backup = bin.join("zsnap-backup");
    let dry = run(cron_cmd(&backup, &["--dry-run"], &env), None, TIMEOUT).success();
    let plan = dry.text();
    assert!(plan.contains("s3put ") && plan.contains(&format!("zfs send {}@s1", site.data)), "dry run:\n{plan}");
    assert!(site.keys().is_empty(), "a dry run stores nothing");
    let out = run(cron_cmd(&backup, &[], &env), None, TIMEOUT).success();
    assert_eq!(out.json_lines().len(), 1, "one full backup\n{}", out.stderr);
    assert!(site.keys().iter().any(|k| k.contains("/@s1/")), "{:?}", site.keys());
    let status = run(cron_cmd(&bin.join("zsnap-status"), &["--json"], &env), None, TIMEOUT).success();
    assert!(status.text().contains("\"s1\""), "{}", status.text());

    // A tree missing a command the script needs: one line naming it, before anything runs.
    std::fs::remove_file(bin.join("s3put")).expect("remove s3put");
    run(cron_cmd(&bin.join("zsnap-prune"), &["--yes"], &env), None, TIMEOUT).fails(127, "s3put not found");
    std::fs::remove_file(bin.join("zsnap-plan")).expect("remove zsnap-plan");
    run(cron_cmd(&backup, &["--dry-run"], &env), None, TIMEOUT).fails(127, "zsnap-plan not found");
    let _ = std::fs::remove_dir_all(&dest);
}

/// The units installed for a PREFIX inside the scratch directory, so every ExecStart
/// exists where the unit says; verify instantiates the templates for each snapshot type.
#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let root = scratch("units");
    let prefix = root.join("usr");
    make("install", &[format!("PREFIX={}", prefix.display())]).success();
    let units = prefix.join("lib/systemd/system");
    let verify = |dir: &Path, names: &[&str]| {
        let mut c = Command::new("systemd-analyze");
        // The trailing ':' keeps systemd's own directories (timers.target and friends).
        c.args(["verify", "--man=no"]).args(names).env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()));
        run(c, None, TIMEOUT)
    };
    let mut names: Vec<String> = UNITS.iter().filter(|u| !u.contains('@')).map(|u| u.to_string()).collect();
    for kind in ["hourly", "daily", "weekly", "monthly", "yearly"] {
        names.push(format!("zsnap-snapshot@{kind}.service"));
        names.push(format!("zsnap-snapshot@{kind}.timer"));
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let out = verify(&units, &names);
    let ours: Vec<&str> = out.stderr.lines().chain(std::str::from_utf8(&out.stdout).unwrap_or("").lines()).collect();
    let ours: Vec<&&str> = ours.iter().filter(|l| l.contains("zsnap")).collect();
    assert!(out.code() == 0 && ours.is_empty(), "systemd-analyze verify: exit {}\n{}", out.code(), out.stderr);

    // The check can fail: a unit with an unknown key and a missing command is reported.
    let bad = root.join("bad");
    std::fs::create_dir_all(&bad).expect("bad dir");
    let unit = std::fs::read_to_string(units.join("zsnap-backup.service")).expect("unit");
    let broken = unit.replace("ExecStart=", "Bogus=1\nExecStart=/nonexistent");
    std::fs::write(bad.join("zsnap-backup.service"), broken).expect("write");
    let out = verify(&bad, &["zsnap-backup.service"]);
    assert!(out.stderr.contains("Unknown key 'Bogus'") && out.stderr.contains("/nonexistent"), "{}", out.stderr);
    let _ = std::fs::remove_dir_all(&root);
}

/// The example config loads as shipped, and with every example setting uncommented; it
/// shows every key the config knows.
#[test]
fn example_config_loads_and_shows_every_key() {
    let example = repo_path("dist/zsnap.conf.example");
    let plan = |config: &Path| {
        let mut c = Command::new(bin_path("zsnap-plan"));
        c.arg("--config").arg(config).arg("config").env_clear();
        run(c, None, TIMEOUT)
    };
    let shipped = plan(&example).success().json();
    assert_eq!(shipped["config_file"], example.display().to_string());

    let text = std::fs::read_to_string(&example).expect("example");
    let dir = scratch("config");
    // The known keys, from the parser's own message for an unknown one.
    let probe = dir.join("probe.conf");
    std::fs::write(&probe, "[main]\nNO_SUCH_KEY=1\n").expect("write");
    let err = plan(&probe).stderr;
    let known = err.split("(known: ").nth(1).and_then(|s| s.split(')').next()).expect("known keys in the message");
    let keys: Vec<&str> = known.split(", ").collect();
    assert!(keys.len() > 15, "{err}");
    for k in &keys {
        assert!(text.contains(&format!("\n#{k}=")), "the example lacks {k}");
    }
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with('[') || rest.split_once('=').is_some_and(|(k, _)| keys.contains(&k)) => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replace("#COMPRESS=", "COMPRESS=")
        .replace("#DECOMPRESS=", "DECOMPRESS=");
    let full = dir.join("full.conf");
    std::fs::write(&full, &uncommented).expect("write");
    let settings = plan(&full).success().json();
    assert_eq!(settings["dataset"], "tank/data", "{settings}");
    assert_eq!(settings["bucket"], "my-backups");
    assert_eq!(settings["s3_prefix"], "hosts/web1/");
    assert_eq!(settings["compressor"], "lz4", "the [fs:tank/data] section applies");
    assert!(settings["encrypt_to"].as_array().is_some_and(|a| a.len() == 1), "{settings}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The cron.d example: its PATH holds where zsnap is installed, and every job line is five
/// time fields, a user and commands that the install put there.
#[test]
fn cron_example_names_installed_commands() {
    let dest = scratch("crond");
    make("install", &[format!("DESTDIR={}", dest.display()), "PREFIX=/opt/zsnap".to_string()]).success();
    let text = std::fs::read_to_string(dest.join("opt/zsnap/share/doc/zsnap/zsnap.cron.example")).expect("example");
    let path = text.lines().find_map(|l| l.strip_prefix("PATH=")).expect("a PATH line");
    let dirs: Vec<&str> = path.split(':').collect();
    for d in ["/opt/zsnap/bin", "/usr/bin", "/bin"] {
        assert!(dirs.contains(&d), "PATH={path} lacks {d}");
    }
    let mut jobs = 0;
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty() && !l.contains('=')) {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(words.len() > 6, "not a cron.d job line: {line}");
        assert_eq!(words[5], "root", "{line}");
        let command = words[6..].join(" ");
        for part in command.split("&&") {
            let prog = part.split_whitespace().next().expect("a command");
            assert!(dest.join("opt/zsnap/bin").join(prog).exists(), "{prog} is not installed ({line})");
        }
        jobs += 1;
    }
    assert!(jobs >= 4, "{text}");
    for needed in ["zsnap-snapshot hourly && zsnap-backup", "zsnap-prune --yes", "zsnap-health --prometheus"] {
        assert!(text.contains(needed), "the example lacks {needed}");
    }
    let _ = std::fs::remove_dir_all(&dest);
}
