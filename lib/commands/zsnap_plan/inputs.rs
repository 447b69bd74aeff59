//! All of zsnap-plan's reading, in one place and one order: a command says what it needs
//! ([`Needs`]), [`read`] fetches exactly that, and the command decides from the
//! [`Inputs`] without further I/O. Local zfs comes first, so a missing dataset is reported
//! before any S3 request; then one listing of the dataset's prefix, the central policy,
//! the client's other datasets, lock states (see [`read_locks`]), and `zfs send -nP` sizes, each only when
//! needed.

use super::local::{self, Local};
use super::Args;
use crate::catalog::{self, Catalog, Health};
use crate::cli::{ExitCode, Failure};
use crate::config::policy::{self, Effective, RetentionPolicy};
use crate::config::Settings;
use crate::plan::{backup, prune, Context};
use crate::s3::client::{self, Client};
use crate::zfs::snapshots::{self, Snapshot};

/// Whether the command reads the local dataset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LocalNeed {
    #[default]
    None,
    /// It must exist (a typo must not look like "nothing backed up").
    Required,
    /// Read it if it is there (e.g. to show bookmarks); a host without it is fine.
    Optional,
}

/// The `zfs send` argv whose size `zfs send -nP` should give, by (from guid, to guid).
pub type Sizing = Vec<((u64, u64), Vec<String>)>;

/// Decides, from the inputs read so far, which sends to size.
pub type Sizer = Box<dyn Fn(&Inputs) -> Result<Sizing, Failure>>;

/// What a command must read.
#[derive(Default)]
pub struct Needs {
    pub local: LocalNeed,
    /// A backup: the snapshots matching the prefix, and the send options for this request.
    pub backup: Option<backup::Request>,
    /// A restore's target dataset (which need not exist).
    pub target: Option<String>,
    /// The central policy object (else local settings and defaults only).
    pub policy: bool,
    /// The client's other datasets' bytes, when a client quota is in force.
    pub others: bool,
    /// The lock state of every object a prune of this mode would delete.
    pub locks: Option<prune::Mode>,
    /// Which sends to size with `zfs send -nP`, decided from what was read so far.
    pub sizing: Option<Sizer>,
    /// The identity (restores and saves of encrypted backups check it opens them).
    pub identity: bool,
}

/// Everything a command decides from.
pub struct Inputs {
    pub settings: Settings,
    pub ctx: Context,
    pub now: i64,
    pub catalog: Catalog,
    /// Index for index with `catalog.records`.
    pub health: Vec<Health>,
    pub effective: Effective,
    /// The effective policy with the quota this dataset may use (its share of a client
    /// quota, see `prune::budget`).
    pub policy: RetentionPolicy,
    /// Bytes of the client's other datasets, when a client quota needed them.
    pub others: Option<u64>,
    pub locks: prune::Locks,
    pub local: Option<Local>,
    /// A restore's target and its snapshots (`None` when it does not exist).
    pub target: Option<(String, Option<Vec<Snapshot>>)>,
}

impl Inputs {
    /// The local snapshots read (none when the command did not need them).
    pub fn snapshots(&self) -> &[Snapshot] {
        self.local.as_ref().map(|l| l.listing.snapshots.as_slice()).unwrap_or_default()
    }

    pub fn bookmarks(&self) -> &[snapshots::Bookmark] {
        self.local.as_ref().map(|l| l.listing.bookmarks.as_slice()).unwrap_or_default()
    }
}

/// Read what `needs` asks for.
pub fn read(args: &Args, settings: Settings, needs: Needs) -> Result<Inputs, Failure> {
    let dataset = settings.dataset()?.to_string();
    let bucket = settings.bucket()?.to_string();
    let s3 = settings.s3_args(&args.s3)?;
    let ctx = Context {
        bucket,
        prefix: settings.s3_prefix().to_string(),
        dataset: dataset.clone(),
        connection: connection_flags(&settings, &args.s3),
        customs: settings.customs.clone(),
        encrypt_to: settings.encrypt_to.clone(),
        identity: identity_use(&settings, needs.identity)?,
    };
    let local = match needs.local {
        LocalNeed::Required => Some(local::read(&dataset, &settings, needs.backup.as_ref())?),
        LocalNeed::Optional => local::read(&dataset, &settings, needs.backup.as_ref()).ok(),
        LocalNeed::None => None,
    };
    let target = match &needs.target {
        Some(t) => Some((t.clone(), read_target(t)?)),
        None => None,
    };
    let now = args.now.unwrap_or_else(crate::calendar::now);
    let (catalog, health, effective, policy, others, locks) = crate::commands::runtime()?.block_on(async {
        let client = client::connect(&s3).await;
        let catalog = catalog::listing::read(&client, &ctx.bucket, &ctx.prefix, &dataset).await?;
        let central = match needs.policy {
            true => policy::read_central(&client, &ctx.bucket, &ctx.prefix, &dataset).await?,
            false => None,
        };
        let effective = policy::resolve(central.as_ref(), &settings.retention)?;
        // A client quota counts the client's other datasets: one listing of the prefix.
        let others = match (needs.others, effective.policy.client_quota) {
            (true, Some(_)) => Some(others_bytes(&client, &ctx.bucket, &ctx.prefix, &dataset).await?),
            _ => None,
        };
        let mut policy = effective.policy.clone();
        policy.quota = prune::budget(&policy, others.unwrap_or(0));
        let health = catalog.health();
        let locks = match needs.locks {
            Some(mode) => read_locks(&client, &ctx.bucket, (&catalog, &health), &policy, now, mode).await?,
            None => prune::Locks::default(),
        };
        Ok::<_, Failure>((catalog, health, effective, policy, others, locks))
    })?;
    let mut inputs = Inputs { settings, ctx, now, catalog, health, effective, policy, others, locks, local, target };
    if let Some(sizing) = needs.sizing {
        let sends = sizing(&inputs)?;
        if let Some(l) = inputs.local.as_mut() {
            l.estimate(&sends)?;
        }
    }
    Ok(inputs)
}

/// `--endpoint`, `--region`, `--profile` (and the addressing, timeout and retry flags given
/// to us) as the printed commands must repeat them, so the s3put and s3get that move the
/// data wait and retry as the user said; what came from the environment is inherited.
/// A restore target's snapshots (`None`: it does not exist). zfs recv creates only the last
/// component of a missing target, so a missing parent or pool is refused here, before
/// anything is downloaded, not by zfs recv after the first object has been read.
fn read_target(target: &str) -> Result<Option<Vec<Snapshot>>, Failure> {
    let have = snapshots::list_if_exists(target)?;
    if have.is_none() {
        let missing = |what: String| Failure::new(ExitCode::NotFound, what);
        match target.rsplit_once('/') {
            Some((parent, _)) if snapshots::list_if_exists(parent)?.is_none() => {
                return Err(missing(format!(
                    "cannot restore into {target}: {parent} does not exist (zfs recv creates only {target} \
                     itself); create it or give another --target"
                )));
            }
            None => return Err(missing(format!("cannot restore into {target}: there is no pool {target}"))),
            Some(_) => {}
        }
    }
    Ok(have)
}

/// The identity restores decrypt with: named on the printed s3get lines when a flag or the
/// config file gave it, and read (with `load`) so the planner knows what it opens.
pub(crate) fn identity_use(s: &Settings, load: bool) -> Result<crate::plan::IdentityUse, Failure> {
    let Some(file) = &s.identity.value else { return Ok(Default::default()) };
    let args = match s.identity.source.must_repeat() {
        true => vec!["--identity".to_string(), file.clone()],
        false => Vec::new(),
    };
    let opens = match load {
        true => Some(crate::crypt::Identities::load(std::slice::from_ref(file))?.fingerprints()),
        false => None,
    };
    Ok(crate::plan::IdentityUse { args, opens })
}

pub(crate) fn connection_flags(s: &Settings, flags: &crate::cli::s3_flags::S3Args) -> Vec<String> {
    let mut out = Vec::new();
    for (flag, setting) in [("--endpoint", &s.endpoint), ("--region", &s.region), ("--profile", &s.profile)] {
        if let (Some(v), true) = (&setting.value, setting.source.must_repeat()) {
            out.extend([flag.to_string(), v.clone()]);
        }
    }
    match flags.path_style {
        Some(true) => out.push("--path-style".into()),
        Some(false) => out.push("--virtual-host".into()),
        None => {}
    }
    for (flag, t) in [("--connect-timeout", flags.connect_timeout), ("--read-timeout", flags.read_timeout)] {
        if let Some(t) = t {
            out.extend([flag.to_string(), format!("{}s", t.as_secs())]);
        }
    }
    if let Some(n) = flags.retries {
        out.extend(["--retries".to_string(), n.to_string()]);
    }
    out
}

/// Plan a prune, read the locks of what it would delete, and plan again until every object
/// it would delete has a known lock state. The first plan takes every object as unlocked,
/// so it deletes what the policy alone would (and holds no per-object reason: at 100,000
/// backups, one "lock state not read yet" each was 9 MiB). The bucket's Object Lock
/// configuration is read once, and only when that plan deletes something: without Object
/// Lock no object can be locked, so no per-object request is made; with it, one HEAD per
/// object the plan would delete (a retention or legal hold is set per object, so nothing
/// less can tell). Each later round only adds objects, so it ends; usually at once.
async fn read_locks(
    client: &Client,
    bucket: &str,
    (catalog, health): (&Catalog, &[Health]),
    policy: &RetentionPolicy,
    now: i64,
    mode: prune::Mode,
) -> Result<prune::Locks, Failure> {
    let records = &catalog.records;
    let plan = |locks: &prune::Locks| match mode {
        prune::Mode::Policy => prune::plan(records, health, policy, now, locks),
        prune::Mode::Broken => prune::plan_broken(records, health, now, locks),
    };
    let mut wanted = plan(&prune::Locks::none_lockable()).delete_order;
    if wanted.is_empty() {
        // Locks only keep more: nothing is deleted whatever they are.
        return Ok(prune::Locks::default());
    }
    if !crate::s3::objects::bucket_has_object_lock(client, bucket).await? {
        return Ok(prune::Locks::none_lockable());
    }
    let mut locks = prune::Locks::default();
    while !wanted.is_empty() {
        let keys: Vec<String> = wanted.iter().map(|&i| records[i].key.clone()).collect();
        let states = crate::s3::objects::lock_states(client, bucket, &keys).await?;
        locks.extend(keys.into_iter().zip(states));
        wanted = plan(&locks).unknown_locks;
    }
    Ok(locks)
}

/// Bytes the client's other datasets under `prefix` store.
async fn others_bytes(client: &Client, bucket: &str, prefix: &str, dataset: &str) -> Result<u64, Failure> {
    let all = catalog::listing::backups_under(client, bucket, prefix).await?;
    Ok(all.into_iter().filter(|(d, _)| d != dataset).map(|(_, size)| size).sum())
}

/// For commands that must not be asked for without their inputs.
pub fn missing(what: &str) -> Failure {
    Failure::new(ExitCode::Internal, format!("zsnap-plan read no {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_flags_repeat_flags_and_file_not_env() {
        let flags = crate::config::Flags { region: Some("eu-1".into()), ..Default::default() };
        let env = |k: &str| (k == "ZSNAP_S3_ENDPOINT").then(|| "http://env:1".to_string());
        let file = crate::config::ConfigFile::parse("f.conf", "[main]\nPROFILE=backup\n").unwrap();
        let s = crate::config::resolve(&flags, &env, Some(&file)).unwrap();
        let given = crate::cli::s3_flags::S3Args {
            path_style: Some(false),
            read_timeout: Some(std::time::Duration::from_secs(7)),
            retries: Some(1),
            ..Default::default()
        };
        assert_eq!(
            connection_flags(&s, &given),
            vec!["--region", "eu-1", "--profile", "backup", "--virtual-host", "--read-timeout", "7s", "--retries", "1"]
        );
    }
}
