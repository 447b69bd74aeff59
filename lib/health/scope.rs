//! Which datasets one zsnap-health run checks, and where each one's backups are. Pure: the
//! settings are resolved by the caller (each dataset as if given with --dataset, so an
//! `[fs:]` section may put it in another bucket or prefix); this groups the datasets by
//! where they are, one listing per place, and picks each place's catalogs from its listing.

use crate::catalog::Catalog;
use std::collections::BTreeMap;

/// What the command line asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// No dataset anywhere: every dataset with backups under the prefix.
    Prefix,
    /// `--dataset` (or $ZSNAP_DATASET, DATASET).
    One(String),
    /// `--all`: the config's `[fs:DATASET]` sections.
    All(Vec<String>),
    /// `--recursive`: the dataset and its descendants.
    Tree(String),
}

/// Where a dataset's backups are and how to reach and read them: what one listing covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    pub bucket: String,
    /// Normalized: empty or ending in `/`.
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    /// What `--deep` decrypts with.
    pub identity: Option<String>,
}

/// The datasets to check in one place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// Every dataset the listing holds.
    Every,
    /// These, in this order, each reported even with no backup at all (critical).
    Named(Vec<String>),
    /// `root` and every dataset under it that the listing holds, and `named` (descendants
    /// with an `[fs:]` section here), each of `root` and `named` reported even when empty.
    Tree { root: String, named: Vec<String> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub place: Place,
    pub wanted: Wanted,
}

/// `ds` is `root` or lies under it.
pub fn in_tree(root: &str, ds: &str) -> bool {
    ds == root || ds.strip_prefix(root).is_some_and(|rest| rest.starts_with('/'))
}

/// One target per place, in the order places first come up. `place_of(None)` is where
/// the run's own settings point (a prefix-wide run); `fs` are the config's `[fs:]`
/// datasets (what a tree's configured descendants are found among).
pub fn targets<E>(
    scope: &Scope,
    fs: &[String],
    place_of: &dyn Fn(Option<&str>) -> Result<Place, E>,
) -> Result<Vec<Target>, E> {
    let named = |names: Vec<String>| -> Result<Vec<Target>, E> {
        let mut order: Vec<Place> = Vec::new();
        let mut by: BTreeMap<Place, Vec<String>> = BTreeMap::new();
        for ds in names {
            let p = place_of(Some(&ds))?;
            if !by.contains_key(&p) {
                order.push(p.clone());
            }
            let v = by.entry(p).or_default();
            if !v.contains(&ds) {
                v.push(ds);
            }
        }
        Ok(order
            .into_iter()
            .map(|p| Target { wanted: Wanted::Named(by.remove(&p).unwrap_or_default()), place: p })
            .collect())
    };
    match scope {
        Scope::Prefix => Ok(vec![Target { place: place_of(None)?, wanted: Wanted::Every }]),
        Scope::One(ds) => named(vec![ds.clone()]),
        Scope::All(list) => named(list.clone()),
        Scope::Tree(root) => {
            let home = place_of(Some(root))?;
            let mut here = Vec::new();
            let mut elsewhere = Vec::new();
            for ds in fs.iter().filter(|d| in_tree(root, d) && *d != root) {
                if place_of(Some(ds))? == home {
                    here.push(ds.clone());
                } else {
                    elsewhere.push(ds.clone());
                }
            }
            let mut out = vec![Target { place: home, wanted: Wanted::Tree { root: root.clone(), named: here } }];
            // A descendant whose [fs:] section puts it elsewhere is checked where it is.
            out.extend(named(elsewhere)?);
            Ok(out)
        }
    }
}

impl Wanted {
    /// The dataset to narrow the listing to, when there is exactly one.
    pub fn listing(&self) -> Option<&str> {
        match self {
            Wanted::Named(v) if v.len() == 1 => Some(&v[0]),
            _ => None,
        }
    }

    fn keeps(&self, ds: &str) -> bool {
        match self {
            Wanted::Every => true,
            Wanted::Named(v) => v.iter().any(|d| d == ds),
            Wanted::Tree { root, named } => in_tree(root, ds) || named.iter().any(|d| d == ds),
        }
    }

    /// Whether an upload in progress under `key` is one of these datasets': what a listing
    /// narrowed to one of them (PREFIX+DATASET) would have shown.
    pub fn keeps_upload(&self, prefix: &str, key: &str) -> bool {
        match self {
            Wanted::Every => true,
            Wanted::Named(v) => v.iter().any(|d| key.starts_with(&format!("{prefix}{d}"))),
            Wanted::Tree { root, named } => {
                std::iter::once(root).chain(named).any(|d| key.starts_with(&format!("{prefix}{d}")))
            }
        }
    }

    /// The catalogs to check, from the listing's: the wanted ones, and an empty one for
    /// each dataset asked for by name that has nothing (so it is reported as such, never
    /// left out). Named keeps its order; a tree is in name order (parents first).
    pub fn pick(&self, prefix: &str, listed: Vec<Catalog>) -> Vec<Catalog> {
        let empty = |ds: &str| Catalog { dataset: ds.to_string(), prefix: prefix.to_string(), ..Default::default() };
        let mut by: BTreeMap<String, Catalog> =
            listed.into_iter().filter(|c| self.keeps(&c.dataset)).map(|c| (c.dataset.clone(), c)).collect();
        match self {
            Wanted::Every => by.into_values().collect(),
            Wanted::Named(v) => v.iter().map(|d| by.remove(d).unwrap_or_else(|| empty(d))).collect(),
            Wanted::Tree { root, named } => {
                for d in std::iter::once(root).chain(named) {
                    by.entry(d.clone()).or_insert_with(|| empty(d));
                }
                by.into_values().collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(bucket: &str) -> Place {
        Place { bucket: bucket.into(), ..Default::default() }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// tank/x's [fs:] section puts it in bucket "other"; everything else is in "main".
    fn place_of(ds: Option<&str>) -> Result<Place, String> {
        match ds {
            Some("tank/x") | Some("tank/a/x") => Ok(place("other")),
            Some("tank/bad") => Err("no bucket for tank/bad".into()),
            _ => Ok(place("main")),
        }
    }

    #[test]
    fn trees() {
        // (root, dataset, in the tree)
        for (root, ds, want) in [
            ("tank/a", "tank/a", true),
            ("tank/a", "tank/a/b", true),
            ("tank/a", "tank/a/b/c", true),
            ("tank/a", "tank/ab", false),
            ("tank/a", "tank", false),
            ("tank", "tank/a", true),
        ] {
            assert_eq!(in_tree(root, ds), want, "{root} {ds}");
        }
    }

    #[test]
    fn targets_group_by_place() {
        let fs = names(&["tank/a", "tank/a/b", "tank/a/x", "tank/x", "tank/z"]);
        // (scope, [(bucket, wanted)])
        let cases: Vec<(Scope, Vec<(&str, Wanted)>)> = vec![
            (Scope::Prefix, vec![("main", Wanted::Every)]),
            (Scope::One("tank/x".into()), vec![("other", Wanted::Named(names(&["tank/x"])))]),
            (
                Scope::All(fs.clone()),
                vec![
                    ("main", Wanted::Named(names(&["tank/a", "tank/a/b", "tank/z"]))),
                    ("other", Wanted::Named(names(&["tank/a/x", "tank/x"]))),
                ],
            ),
            (
                Scope::Tree("tank/a".into()),
                vec![
                    ("main", Wanted::Tree { root: "tank/a".into(), named: names(&["tank/a/b"]) }),
                    ("other", Wanted::Named(names(&["tank/a/x"]))),
                ],
            ),
            (Scope::Tree("tank/q".into()), vec![("main", Wanted::Tree { root: "tank/q".into(), named: vec![] })]),
        ];
        for (scope, want) in cases {
            let got = targets(&scope, &fs, &place_of).unwrap();
            let got: Vec<(&str, Wanted)> = got.iter().map(|t| (t.place.bucket.as_str(), t.wanted.clone())).collect();
            assert_eq!(got, want, "{scope:?}");
        }
        let e = targets(&Scope::All(names(&["tank/a", "tank/bad"])), &fs, &place_of).unwrap_err();
        assert_eq!(e, "no bucket for tank/bad");
    }

    #[test]
    fn picks_what_was_asked_and_reports_the_missing() {
        let cat = |d: &str| Catalog { dataset: d.into(), prefix: "p/".into(), ..Default::default() };
        let listed = || vec![cat("tank/a"), cat("tank/a/b"), cat("tank/ab"), cat("tank/z")];
        let ds = |v: Vec<Catalog>| v.into_iter().map(|c| c.dataset).collect::<Vec<_>>();
        // (wanted, datasets checked)
        for (wanted, want) in [
            (Wanted::Every, vec!["tank/a", "tank/a/b", "tank/ab", "tank/z"]),
            (Wanted::Named(names(&["tank/z", "tank/gone", "tank/a"])), vec!["tank/z", "tank/gone", "tank/a"]),
            (
                Wanted::Tree { root: "tank/a".into(), named: names(&["tank/a/c"]) },
                vec!["tank/a", "tank/a/b", "tank/a/c"],
            ),
            (Wanted::Tree { root: "tank/q".into(), named: vec![] }, vec!["tank/q"]),
        ] {
            assert_eq!(ds(wanted.pick("p/", listed())), want, "{wanted:?}");
        }
        let w = Wanted::Named(names(&["tank/a", "tank/z"]));
        assert!(w.keeps_upload("p/", "p/tank/a/@s1/x") && w.keeps_upload("p/", "p/tank/z@s1"));
        assert!(!w.keeps_upload("p/", "p/tank/b/@s1/x") && Wanted::Every.keeps_upload("p/", "q/x"));
        assert_eq!(w.listing(), None);
        assert_eq!(Wanted::Named(names(&["tank/a"])).listing(), Some("tank/a"));
    }
}
