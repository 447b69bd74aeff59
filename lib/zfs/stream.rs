//! Send-stream reader and verifier (the stream gate). Filled in by the stream-gate work.
