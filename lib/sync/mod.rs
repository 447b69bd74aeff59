//! Replication for zsync-ssh: decide what to send from both sides' snapshots (pure, in
//! `plan`), build the exact pipeline and classify its failures (pure, in `pipeline`), and
//! run zfs on either side and the pipeline itself (thin I/O, in `side` and `transfer`), and
//! which of the replica's snapshots `--prune-target` destroys (pure, in `prune`), and a replica
//! fed from a stream passing through to S3 (`tee`).

pub mod pipeline;
pub mod plan;
pub mod prune;
pub mod side;
pub mod tee;
pub mod transfer;
