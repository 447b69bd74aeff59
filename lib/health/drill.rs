//! `--restore-drill POOL`: receive the latest chain into a scratch dataset with the very
//! commands `zsnap-plan restore` prints, check its snapshot guids against the chain, and
//! destroy it (retrying "dataset is busy" a bounded number of times, as zfs-fuse needs).

use crate::catalog::Catalog;
use crate::plan::{restore, Context};
use crate::zfs::snapshots;
use std::process::Command;
use std::time::Duration;

/// Run the drill for one dataset; `Ok` says what was received, `Err` what went wrong.
/// `env` is passed to every command (the resolved S3 settings; PATH with our binaries).
pub fn run(ctx: &Context, cat: &Catalog, pool: &str, env: &[(String, String)]) -> Result<String, String> {
    let scratch = format!("{pool}/zsnap-drill-{}", std::process::id());
    let health = cat.health();
    let req = restore::Request { selector: restore::Selector::Latest, target: scratch.clone(), force: false };
    let steps = restore::plan(ctx, &cat.records, &health, &req, None).map_err(|f| f.message)?;
    let received = receive(&steps, env);
    // Whatever happened, the scratch dataset must go.
    let destroyed = destroy(&scratch);
    let want = received?;
    destroyed?;
    Ok(want)
}

fn receive(steps: &[restore::Step], env: &[(String, String)]) -> Result<String, String> {
    let mut want = Vec::new();
    let mut target = String::new();
    for s in steps {
        if let restore::Step::Recv(r) = s {
            let out = Command::new("bash")
                .args(["-o", "pipefail", "-c", &r.command])
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .output()
                .map_err(|e| format!("cannot run bash: {e}"))?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                let line = err.split_whitespace().collect::<Vec<_>>().join(" ");
                return Err(format!("step {} of {} (@{}) failed: {line}", r.step, r.of, r.record.snapshot));
            }
            want.push((r.record.snapshot.clone(), r.record.guid));
            target = r.target.clone();
        }
    }
    if want.is_empty() {
        return Err("nothing to receive".into());
    }
    let have = snapshots::list(&target).map_err(|f| f.message)?;
    for (name, guid) in &want {
        if let Some(g) = guid {
            if !have.iter().any(|s| s.guid == *g) {
                return Err(format!("@{name} (guid {g}) is not in the received {target}"));
            }
        }
    }
    Ok(format!("received {} backups into {target}, guids match; destroyed", want.len()))
}

/// `zfs destroy -r`, retried while zfs says the dataset is busy (a mount still settling).
fn destroy(ds: &str) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..8 {
        let out =
            Command::new("zfs").args(["destroy", "-r", ds]).output().map_err(|e| format!("cannot run zfs: {e}"))?;
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        if out.status.success() || err.contains("does not exist") {
            return Ok(());
        }
        last = err.split_whitespace().collect::<Vec<_>>().join(" ");
        if !err.contains("busy") {
            break;
        }
        std::thread::sleep(Duration::from_millis(250 << attempt.min(3)));
    }
    Err(format!("cannot destroy the scratch dataset {ds}: {last}"))
}
