//! `--deep`: download an object, decompress it by its recorded compressor and run the raw
//! stream through the stream gate, as `s3get --decompress Z --zfs-stream --expect-guid G
//! --expect-from FG` would, but in process and into nothing. No pool or zfs is needed.
//! The gate checks every END's fletcher-4 and that the stream's toguid/fromguid are the
//! key's guid/from; since each incremental's `from` is its parent's guid, passing every
//! link proves guid continuity along the chain.

use crate::catalog::BackupRecord;
use crate::cli::output::{Progress, ProgressMode};
use crate::cli::ExitCode;
use crate::compress::channel::channel;
use crate::compress::{self, Codec};
use crate::crypt::Identities;
use crate::s3::client::Client;
use crate::s3::download::{self, DownloadSpec};
use crate::s3::S3Url;
use crate::zfs::stream::{StreamGate, StreamSummary};
use std::io::Read;
use std::sync::Arc;

/// Why an object did not verify: the check that failed and its one-line message.
#[derive(Debug)]
pub struct DeepError {
    /// `download`, `bytes`, `crc32`, `decompress`, `stream` or `compressor`.
    pub check: &'static str,
    pub message: String,
}

fn err(check: &'static str, message: impl Into<String>) -> DeepError {
    DeepError { check, message: message.into() }
}

/// Verify one committed object end to end.
pub async fn verify(
    client: &Client,
    bucket: &str,
    r: &BackupRecord,
    retries: u32,
    identities: Option<Arc<Identities>>,
) -> Result<StreamSummary, DeepError> {
    let codec = Codec::parse(&r.compressor)
        .map_err(|_| err("compressor", format!("compressor '{}' cannot be checked in process", r.compressor)))?;
    let (guid, from) = match r.stream_guids() {
        Some((g, f)) => (Some(g), Some(f)),
        None => (None, None),
    };
    let url = S3Url { bucket: bucket.to_string(), key: r.key.clone() };
    let (mut sink, input) = channel(2);
    // An encrypted object is decrypted first (the caller has the identity or skips it).
    let identities = identities.filter(|_| !r.encrypted_to.is_empty());
    let what = url.to_string();
    let worker = std::thread::Builder::new()
        .name("health-decode".into())
        .spawn(move || match identities {
            Some(ids) => match ids.decrypt(input, &what) {
                Ok(plain) => decode(codec, guid, from, plain),
                Err(f) => Err(err("decrypt", f.message)),
            },
            None => decode(codec, guid, from, input),
        })
        .map_err(|e| err("download", format!("cannot start decoder thread: {e}")))?;
    let spec = DownloadSpec {
        url: url.clone(),
        chunk_size: 16 << 20,
        concurrency: 4,
        range: None,
        retries,
        body_timeout: Some(crate::s3::client::DEFAULT_READ_TIMEOUT),
    };
    let got = download::download(client, &spec, &mut sink, &Progress::new(ProgressMode::Off)).await;
    drop(sink);
    let decoded = tokio::task::block_in_place(|| worker.join())
        .unwrap_or_else(|_| Err(err("download", "decoder thread panicked")));
    match (got, decoded) {
        // The decoder stopped taking bytes: its error says why.
        (Err(f), Err(d)) if f.code == ExitCode::ClosedStdout => Err(d),
        (Err(f), _) => {
            let check = match f.code {
                ExitCode::Data if f.message.contains("CRC32") => "crc32",
                ExitCode::Data => "bytes",
                _ => "download",
            };
            Err(err(check, f.message))
        }
        (Ok(_), Err(d)) => Err(DeepError { check: d.check, message: format!("{url}: {}", d.message) }),
        (Ok(_), Ok(s)) => Ok(s),
    }
}

fn decode<R: Read + Send>(
    codec: Codec,
    guid: Option<u64>,
    from: Option<u64>,
    input: R,
) -> Result<StreamSummary, DeepError> {
    let mut dec = compress::decoder(codec, input)
        .map_err(|e| err("decompress", format!("cannot start the {} decoder: {e}", codec.name())))?;
    let mut gate = StreamGate::expecting(guid, from);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match dec.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(err("decompress", format!("{} data is corrupt or cut: {e}", codec.name()))),
        };
        gate.feed(&buf[..n]).map_err(|e| err("stream", e.message))?;
    }
    gate.finish().map_err(|e| err("stream", e.message))
}

/// Which records `--deep` reads: all, a spread-out sample of `n` (always with the newest,
/// the one a restore needs most), or one chain. Pure.
pub fn sample(len: usize, n: usize) -> Vec<usize> {
    if n >= len {
        return (0..len).collect();
    }
    if n == 0 {
        return Vec::new();
    }
    // Evenly spaced from the newest back, so repeated runs cover old and new objects.
    let mut picked: Vec<usize> = (0..n).map(|k| len - 1 - k * len / n).collect();
    picked.sort_unstable();
    picked.dedup();
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples() {
        for (len, n, want) in [
            (5, 10, vec![0, 1, 2, 3, 4]),
            (5, 0, vec![]),
            (10, 1, vec![9]),
            (10, 2, vec![4, 9]),
            (10, 3, vec![3, 6, 9]),
        ] {
            assert_eq!(sample(len, n), want, "{len} {n}");
        }
    }
}
