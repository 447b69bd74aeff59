//! zsnap: back up ZFS snapshots to S3-compatible object storage with small Unix tools.
//!
//! The binaries in `bins/` are thin: they parse flags with [`cli`] and call into the
//! areas here. Data flows one way: read (stdin, S3, zfs), decide (pure functions), act.

pub mod calendar;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod compress;
pub mod config;
pub mod crypt;
pub mod health;
pub mod plan;
pub mod s3;
pub mod stream_in;
pub mod sync;
pub mod zfs;
