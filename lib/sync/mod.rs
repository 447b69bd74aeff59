//! Replication planning for zsync-ssh: common snapshot by guid, what to send, divergence.
