//! Local snapshots: running `zfs get` and parsing it into `Snapshot`s.
