//! Everything about ZFS itself: the send-stream reader that gates uploads, and running
//! `zfs` to list snapshots (parsing its output into plain data), and the one probe of what
//! the local `zfs` supports.

pub mod error;
pub mod features;
pub mod send;
pub mod snapshots;
pub mod stream;
