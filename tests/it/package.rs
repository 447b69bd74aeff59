//! `make deb` and `.ci/install`'s toolchain step. The package is built from the tests' own
//! binaries and read back with dpkg-deb (exactly the listed files, root-owned, the conffile,
//! the fields), then installed, removed and purged in a scratch root with `dpkg --root`, and
//! its commands run from there under cron's PATH. The toolchain step runs with a fake cargo,
//! rustup and curl, so the upgrade path is exercised without the network.

use crate::common::*;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::install::{BINS, SCRIPTS, UNITS};
const CONFFILE: &str = "etc/zsnap/zsnap.conf";
/// dpkg needs ldconfig and start-stop-daemon on its PATH, whatever the test's is.
const DPKG_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// A fresh directory of this test's own under the bench's work directory.
fn scratch(tag: &str) -> PathBuf {
    let dir = PathBuf::from(need("ZSNAP_TEST_WORK")).join(format!("package-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let mut c = cmd("dpkg-deb", args);
    c.arg(deb);
    run(c, None, TIMEOUT).success().text()
}

/// `dpkg --root ROOT ARGS...`, logging into the root, with dependencies not checked (the
/// scratch root has no other package; the Depends field is checked on its own).
fn dpkg_in(root: &Path, args: &[&str]) -> Output {
    let mut c = cmd("dpkg", &[&format!("--root={}", root.display()), "--log=/dev/null", "--force-depends"]);
    c.args(args).env("PATH", DPKG_PATH);
    run(c, None, TIMEOUT)
}

/// Every file under `root` but dpkg's own database and log (var/), relative to it.
fn files_under(root: &Path) -> BTreeSet<String> {
    let mut all = crate::install::files_under(root);
    all.retain(|f| !f.starts_with("var/"));
    all
}

fn expected_files() -> BTreeSet<String> {
    let mut want = BTreeSet::new();
    for b in BINS.iter().chain(SCRIPTS.iter()) {
        want.insert(format!("usr/bin/{b}"));
        want.insert(format!("usr/share/man/man1/{b}.1.gz"));
        want.insert(format!("usr/share/bash-completion/completions/{b}"));
        want.insert(format!("usr/share/zsh/site-functions/_{b}"));
        want.insert(format!("usr/share/fish/vendor_completions.d/{b}.fish"));
    }
    want.insert("usr/lib/zsnap/zsnap-common.sh".to_string());
    for doc in ["copyright", "zsnap.conf.example", "zsnap.cron.example"] {
        want.insert(format!("usr/share/doc/zsnap/{doc}"));
    }
    for u in UNITS {
        want.insert(format!("usr/lib/systemd/system/{u}"));
    }
    want.insert(CONFFILE.to_string());
    want
}

/// The tests' binaries without their debug symbols (a debug build is ~1.2 GB; the package
/// of it need not be), in a directory for `make deb BUILT=...`.
fn stripped_binaries(dir: &Path) -> PathBuf {
    let built = dir.join("bin");
    std::fs::create_dir_all(&built).expect("bin dir");
    for b in BINS {
        let mut c = Command::new("strip");
        c.arg("--strip-debug").arg("-o").arg(built.join(b)).arg(bin_path(b));
        run(c, None, TIMEOUT).success();
    }
    built
}

#[test]
fn deb_holds_exactly_the_install_layout_and_installs_removes_and_purges() {
    let dir = scratch("deb");
    let built = stripped_binaries(&dir);
    let deb = dir.join("zsnap.deb");
    let mut c = Command::new("make");
    c.arg("-C").arg(repo_path("")).args(["--no-print-directory", "deb", "DEB_COMPRESS=none"]);
    c.arg(format!("BUILT={}", built.display()))
        .arg(format!("DEB={}", deb.display()))
        .arg(format!("DEBWORK={}", dir.join("work").display()));
    run(c, None, TIMEOUT).success();

    // The fields: name, the crate's version, this machine's architecture, the Depends.
    let version = env!("CARGO_PKG_VERSION");
    let arch = run(cmd("dpkg", &["--print-architecture"]), None, TIMEOUT).success().text().trim().to_string();
    let field = |name: &str| {
        dpkg_deb(&["--field"], &deb).lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
    };
    assert_eq!(field("Package").as_deref(), Some("zsnap"));
    assert_eq!(field("Version").as_deref(), Some(version));
    assert_eq!(field("Architecture").as_deref(), Some(arch.as_str()));
    let depends = field("Depends").expect("a Depends field");
    let depends: Vec<&str> = depends.split(", ").collect();
    for d in ["bash", "util-linux", "zfsutils-linux | zfs-fuse", "ca-certificates"] {
        assert!(depends.contains(&d), "Depends lacks {d}: {depends:?}");
    }
    assert!(
        depends.iter().any(|d| d.starts_with("libc6 (>= ")),
        "shared-library Depends from dpkg-shlibdeps: {depends:?}"
    );
    assert!(field("Recommends").is_some_and(|r| r.contains("openssh-client")), "zsync-ssh runs ssh");
    let size: u64 = field("Installed-Size").and_then(|s| s.parse().ok()).expect("Installed-Size in KiB");
    let binaries: u64 = BINS.iter().map(|b| std::fs::metadata(built.join(b)).expect("binary").len()).sum();
    assert!(size >= binaries / 1024, "Installed-Size {size} KiB < the binaries' {} KiB", binaries / 1024);
    // The default file name, as .ci/run and the README give it.
    let mut c = Command::new("make");
    c.arg("-C").arg(repo_path("")).args(["-s", "--no-print-directory", "deb-path"]);
    assert_eq!(run(c, None, TIMEOUT).success().text(), format!("target/zsnap_{version}_{arch}.deb\n"));

    // Exactly the install layout, owned by root, no directory or file of the build tree.
    let listing = dpkg_deb(&["--contents"], &deb);
    let mut files = BTreeSet::new();
    for line in listing.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(words.len() >= 6 && words[1] == "root/root", "not root's: {line}");
        let path = words[5].trim_start_matches("./");
        if !words[0].starts_with('d') {
            files.insert(path.to_string());
        }
    }
    assert_eq!(files, expected_files(), "packaged files\n{listing}");
    for part in [dir.display().to_string(), "target/".to_string(), "DEBIAN".to_string(), "debian/".to_string()] {
        assert!(!listing.contains(&part), "the package holds {part}:\n{listing}");
    }
    let mut c = cmd("dpkg-deb", &["-I"]);
    c.arg(&deb).arg("conffiles");
    assert_eq!(run(c, None, TIMEOUT).success().text(), format!("/{CONFFILE}\n"), "conffiles");
    let mut c = cmd("dpkg-deb", &["-I"]);
    c.arg(&deb).arg("md5sums");
    let sums = run(c, None, TIMEOUT).success().text();
    let summed: BTreeSet<String> =
        sums.lines().filter_map(|l| l.split_once("  ").map(|(_, p)| p.to_string())).collect();
    let mut not_conf = expected_files();
    not_conf.remove(CONFFILE);
    assert_eq!(summed, not_conf, "md5sums lists every file but the conffile");

    // Installed into a scratch root.
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("var/lib/dpkg/info")).expect("dpkg dirs");
    std::fs::create_dir_all(root.join("var/lib/dpkg/updates")).expect("dpkg dirs");
    std::fs::write(root.join("var/lib/dpkg/status"), b"").expect("dpkg status");
    let deb_arg = deb.display().to_string();
    dpkg_in(&root, &["-i", &deb_arg]).success();
    assert_eq!(files_under(&root), expected_files(), "installed files");
    for b in BINS {
        let have = std::fs::read(root.join("usr/bin").join(b)).expect("installed binary");
        assert!(have == std::fs::read(built.join(b)).expect("built binary"), "usr/bin/{b} is not the built one");
    }
    for x in BINS.iter().chain(SCRIPTS.iter()) {
        let mode = std::fs::metadata(root.join("usr/bin").join(x)).expect("installed").permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "usr/bin/{x} mode");
        let mut c = cmd("gzip", &["-dc"]);
        c.arg(root.join(format!("usr/share/man/man1/{x}.1.gz")));
        let page = run(c, None, TIMEOUT).success().stdout;
        assert!(
            page == std::fs::read(repo_path(&format!("man/{x}.1"))).expect("man page"),
            "{x}.1.gz is not man/{x}.1"
        );
    }
    let conf = std::fs::read(root.join(CONFFILE)).expect("conffile");
    assert!(
        conf == std::fs::read(repo_path("dist/zsnap.conf.example")).expect("example"),
        "the conffile is the example"
    );
    // It does nothing until edited: no dataset, no bucket.
    let mut c = Command::new(root.join("usr/bin/zsnap-plan"));
    c.arg("--config").arg(root.join(CONFFILE)).arg("config").env_clear();
    let settings = run(c, None, TIMEOUT).success().json();
    assert!(settings["dataset"].is_null() && settings["bucket"].is_null(), "{settings}");
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/zsnap-backup.service")).expect("unit");
    assert!(unit.contains("\nExecStart=/usr/bin/zsnap-backup\n"), "{unit}");

    // From cron's PATH and nothing else, the installed commands find each other.
    let cron = |prog: &str, args: &[&str]| {
        let mut c = Command::new(root.join("usr/bin").join(prog));
        c.args(args).env_clear().env("PATH", "/usr/bin:/bin");
        run(c, None, TIMEOUT).success().text()
    };
    assert_eq!(cron("zsnap-backup", &["--version"]), format!("zsnap-backup {version}\n"));
    assert!(cron("s3put", &["--help"]).contains("Usage: s3put"), "s3put --help");
    assert!(cron("zsnap-restore", &["--help"]).contains("Usage: zsnap-restore"));

    // Reinstalled over the admin's edit: kept, without a question (stdin is closed).
    let edited = [conf.as_slice(), b"DATASET=tank/edited\n"].concat();
    std::fs::write(root.join(CONFFILE), &edited).expect("edit the conffile");
    dpkg_in(&root, &["-i", &deb_arg]).success();
    assert!(std::fs::read(root.join(CONFFILE)).expect("kept") == edited, "a reinstall keeps the admin's edit");
    assert_eq!(files_under(&root), expected_files(), "reinstalled files");

    // Removed: only the admin's (edited) conffile stays; purged: nothing.
    dpkg_in(&root, &["-r", "zsnap"]).success();
    assert_eq!(files_under(&root), BTreeSet::from([CONFFILE.to_string()]), "left after dpkg -r");
    assert!(std::fs::read(root.join(CONFFILE)).expect("kept") == edited, "dpkg -r keeps the admin's edit");
    let status = dpkg_in(&root, &["-s", "zsnap"]).success().text();
    assert!(status.contains("Status: deinstall ok config-files"), "{status}");
    dpkg_in(&root, &["--purge", "zsnap"]).success();
    assert!(files_under(&root).is_empty(), "left after purge: {:?}", files_under(&root));
    assert!(!root.join("etc/zsnap").exists() && !root.join("usr/lib/zsnap").exists(), "zsnap's directories gone");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn deb_without_a_build_says_so_in_one_line() {
    let dir = scratch("nobuild");
    let deb = dir.join("zsnap.deb");
    let mut c = Command::new("make");
    c.arg("-C").arg(repo_path("")).args(["-s", "--no-print-directory", "deb", "BUILT=/nonexistent"]);
    c.arg(format!("DEB={}", deb.display())).arg(format!("DEBWORK={}", dir.join("work").display()));
    let out = run(c, None, TIMEOUT);
    assert_ne!(out.code(), 0, "a package without binaries must fail");
    assert!(out.stderr.contains("/nonexistent/s3put is missing: run make first"), "{}", out.stderr);
    assert!(!deb.exists(), "no package written");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A scratch machine for `.ci/install --toolchain`: HOME, a PATH of only the tools the step
/// uses (so no real cargo, rustup or curl is found), and a log the fakes append to.
struct Toolbox {
    dir: PathBuf,
    bin: PathBuf,
    home: PathBuf,
    log: PathBuf,
}

impl Toolbox {
    fn new(tag: &str) -> Toolbox {
        let dir = scratch(&format!("toolchain-{tag}"));
        let bin = dir.join("bin");
        let home = dir.join("home");
        std::fs::create_dir_all(&bin).expect("bin");
        std::fs::create_dir_all(&home).expect("home");
        for tool in ["bash", "sh", "sed", "dpkg", "mktemp", "rm", "dirname", "cat", "chmod", "mkdir", "printf"] {
            let path = ["/usr/bin", "/bin"].iter().map(|d| Path::new(d).join(tool)).find(|p| p.exists());
            let path = path.unwrap_or_else(|| panic!("{tool} is not in /usr/bin or /bin"));
            std::os::unix::fs::symlink(path, bin.join(tool)).expect("symlink");
        }
        let log = dir.join("log");
        Toolbox { dir, bin, home, log }
    }

    /// An executable shell script NAME in DIR, whose `$LOG` is the box's log.
    fn fake(&self, dir: &Path, name: &str, body: &str) {
        std::fs::create_dir_all(dir).expect("dir");
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\nLOG='{}'\n{body}\n", self.log.display())).expect("write fake");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// A `cargo` that prints VERSION, in DIR.
    fn cargo(&self, dir: &Path, version: &str) {
        self.fake(dir, "cargo", &format!("echo 'cargo {version} (fake 2026-01-01)'"));
    }

    /// What the toolchain install would leave: a new cargo in $HOME/.cargo/bin.
    fn installs_cargo(&self, version: &str) -> String {
        let cargo_bin = self.home.join(".cargo/bin");
        format!(
            "mkdir -p '{d}' && printf '#!/bin/sh\\necho \"cargo {version} (fake)\"\\n' >'{d}/cargo' && chmod 755 '{d}/cargo'",
            d = cargo_bin.display()
        )
    }

    fn run(&self) -> Output {
        let mut c = Command::new(self.bin.join("bash"));
        c.arg(repo_path(".ci/install")).arg("--toolchain").env_clear();
        c.env("PATH", &self.bin).env("HOME", &self.home);
        run(c, None, Duration::from_secs(30))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Toolbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Versions around Cargo.toml's rust-version (MAJOR.MINOR): just older, equal, and newer with
/// a three-digit minor (1.100 > 1.94 only when compared as numbers).
fn around_needed() -> (String, String, String) {
    let needed = env!("CARGO_PKG_RUST_VERSION");
    let (major, minor) = needed.split_once('.').expect("rust-version is MAJOR.MINOR");
    let minor: u32 = minor.split('.').next().and_then(|m| m.parse().ok()).expect("a minor version");
    assert!(minor > 0 && minor < 100, "the cases below assume 0 < minor < 100, not {needed}");
    (format!("{major}.{}.9", minor - 1), format!("{major}.{minor}.0"), format!("{major}.100.0"))
}

#[test]
fn toolchain_step_keeps_a_new_enough_cargo() {
    let readme = std::fs::read_to_string(repo_path("README.md")).expect("README");
    let needed = env!("CARGO_PKG_RUST_VERSION");
    assert!(readme.contains(&format!("Building needs Rust >= {needed} ")), "the README names rust-version {needed}");
    let (_, equal, newer) = around_needed();
    for version in [equal, newer] {
        let tb = Toolbox::new("new-enough");
        tb.cargo(&tb.bin, &version);
        tb.fake(&tb.bin, "rustup", "echo \"rustup $*\" >>\"$LOG\"; exit 1");
        tb.fake(&tb.bin, "curl", "echo \"curl $*\" >>\"$LOG\"; exit 1");
        let out = tb.run().success();
        assert_eq!(tb.log(), "", "cargo {version} is enough: nothing installed\n{}", out.stderr);
    }
}

#[test]
fn toolchain_step_updates_an_old_cargo_with_rustup() {
    let (older, _, _) = around_needed();
    let tb = Toolbox::new("rustup");
    tb.cargo(&tb.bin, &older);
    // rustup installs the new toolchain's cargo into $HOME/.cargo/bin, ahead of the old one.
    let install = tb.installs_cargo("1.200.0");
    tb.fake(&tb.bin, "rustup", &format!("echo \"rustup $*\" >>\"$LOG\"; case \"$1\" in toolchain) {install};; esac"));
    let out = tb.run().success();
    let log = tb.log();
    assert!(log.starts_with("rustup toolchain install stable --profile minimal"), "{log}");
    assert!(log.contains("--component rustfmt") && log.contains("--component clippy"), ".ci/run needs both: {log}");
    assert!(
        out.stderr.contains(&format!("cargo {older}, Rust >= {} needed", env!("CARGO_PKG_RUST_VERSION"))),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("using cargo 1.200.0"), "the new cargo is the one found:\n{}", out.stderr);
}

#[test]
fn toolchain_step_without_rustup_runs_the_whole_downloaded_rustup_init() {
    let tb = Toolbox::new("init");
    // No cargo at all. curl writes the installer to its -o file; it is run from there.
    let init = format!(
        "LOG='{}'; echo \"rustup-init $*\" >>\"$LOG\"; {}",
        tb.log.display(),
        tb.installs_cargo(&around_needed().1)
    );
    let script = init.replace('\'', "'\\''");
    tb.fake(
        &tb.bin,
        "curl",
        &format!(
            "echo \"curl $*\" >>\"$LOG\"; while [ $# -gt 0 ]; do [ \"$1\" = -o ] && out=$2; shift; done; printf '%s\\n' '{script}' >\"$out\""
        ),
    );
    let out = tb.run().success();
    let log = tb.log();
    assert!(log.contains("https://sh.rustup.rs") && log.contains("--proto =https"), "{log}");
    assert!(log.contains("rustup-init -y --profile minimal --default-toolchain stable"), "{log}");
    assert!(out.stderr.contains("cargo not found"), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("using cargo {}", around_needed().1)), "{}", out.stderr);
}

#[test]
fn toolchain_step_that_cannot_install_names_the_version_needed() {
    let needed = env!("CARGO_PKG_RUST_VERSION");
    let (older, _, _) = around_needed();
    // An old cargo and a rustup that fails (no network).
    let tb = Toolbox::new("fail-rustup");
    tb.cargo(&tb.bin, &older);
    tb.fake(&tb.bin, "rustup", "echo \"rustup $*\" >>\"$LOG\"; echo 'error: could not download' >&2; exit 1");
    let out = tb.run();
    assert!(tb.log().starts_with("rustup toolchain install stable"), "{}", tb.log());
    out.fails_last(127, ".ci/install", &format!("Rust >= {needed} is needed (cargo: {older})"));
    // No cargo, no rustup, and a download that fails: the installer never runs.
    let tb = Toolbox::new("fail-curl");
    tb.fake(&tb.bin, "curl", "echo \"curl $*\" >>\"$LOG\"; echo 'curl: (6) Could not resolve host' >&2; exit 6");
    let out = tb.run();
    assert!(tb.log().starts_with("curl ") && !tb.log().contains("rustup-init"), "{}", tb.log());
    out.fails_last(127, ".ci/install", &format!("Rust >= {needed} is needed (cargo: not found)"));
}
