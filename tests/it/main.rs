//! The integration tests, one target (`cargo test --test it`) with one module per area, all
//! on the real bench that `tests/run` starts. A test's full name is `MODULE::TEST`, so
//! `bash tests/run transport::` runs one module; the `openzfs` module needs the OpenZFS
//! guest (`bash tests/run --openzfs`) and plain `tests/run` skips it by `openzfs::`.

mod common;

mod all_datasets;
mod backup_restore;
mod cluster;
mod completions;
mod credentials;
mod docs;
mod encryption;
mod first_backup;
mod health;
mod install;
mod object_lock;
mod openzfs;
mod package;
mod plan;
mod progress;
mod replica;
mod resume;
mod retention;
mod retention_moto;
mod s3_delete;
mod scale;
mod script_faults;
mod stream_gate;
mod stream_matrix;
mod timeouts;
mod tls;
mod transport;
mod transport_errors;
mod transport_interrupts;
mod zfs3backup;
mod zfs_pipeline;
mod zsync_from_s3;
mod zsync_ssh;
