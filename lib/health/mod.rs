//! Chain, freshness and deep checks of backups in S3, and their verdicts (pure where possible).
