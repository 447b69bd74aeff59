//! Pure decisions over plain data: what to back up, what chain restores a snapshot, status.
