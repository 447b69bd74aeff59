//! Everything about ZFS itself: the send-stream reader that gates uploads, and running
//! `zfs` to list snapshots (parsing its output into plain data).

pub mod snapshots;
pub mod stream;
