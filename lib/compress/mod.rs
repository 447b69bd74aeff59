//! In-process compression and decompression (zstd, gzip, lz4, none) for s3put and s3get.
