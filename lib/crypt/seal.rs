//! The age encryptor on the way out: an age v1 file (age-encryption.org/v1) written by our
//! own code, so its 64 KiB chunks can be sealed in place and several at once.
//!
//! Why not the `age` crate's writer: it copies every chunk twice and allocates one per
//! chunk, and seals one chunk after the other on one thread; in a backup that thread is
//! on the critical path, beside zfs send, the compressor and the uploads. The format is
//! small and fixed, so we write it here and keep the crate for what must not be ours:
//! wrapping the file key to each X25519 recipient (its `Recipient`) and every decryption
//! (restores and the tests, which open what this writes with the crate's reader).
//!
//! The file, as the spec lays it out:
//! - the header: `age-encryption.org/v1`, one stanza per recipient (the file key wrapped
//!   to it), then `---` and the HMAC-SHA256 of everything before it, keyed with
//!   HKDF-SHA256(file key, salt "", info "header");
//! - a 16-byte random nonce;
//! - the payload: STREAM of ChaCha20-Poly1305 under HKDF-SHA256(file key, salt nonce,
//!   info "payload"), 64 KiB of plaintext per chunk plus its 16-byte tag, chunk nonces an
//!   11-byte big-endian counter and a last-chunk flag byte. Only the last chunk may be
//!   short, and it is empty only when the whole plaintext is.

use age_core::format::{FileKey, Stanza};
use age_core::secrecy::ExposeSecret;
use base64::prelude::{Engine, BASE64_STANDARD_NO_PAD};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::{self, Write};

/// Plaintext bytes per chunk, and what sealing adds to each.
pub const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
const SEALED: usize = CHUNK + TAG;
/// Chunks sealed together (4 MiB of plaintext): enough work per batch that sharing it
/// among threads costs little, small enough to stay a small part of a part's memory.
/// (Four in unit tests, so batch edges are crossed with little data.)
const BATCH_CHUNKS: usize = if cfg!(test) { 4 } else { 64 };

/// A new random file key, and the header that carries it to `recipients`.
fn header(recipients: &[&dyn age::Recipient]) -> io::Result<(FileKey, Vec<u8>)> {
    let mut key = [0u8; 16];
    getrandom::getrandom(&mut key).map_err(|e| io::Error::other(format!("no randomness for a file key: {e}")))?;
    let file_key = FileKey::new(Box::new(key));
    let mut stanzas = Vec::new();
    for r in recipients {
        let (mut s, _labels) =
            r.wrap_file_key(&file_key).map_err(|e| io::Error::other(format!("cannot encrypt: {e}")))?;
        stanzas.append(&mut s);
    }
    let header = header_text(&stanzas, &file_key);
    Ok((file_key, header))
}

/// The header's bytes: magic line, stanzas, `---` and the MAC over all of that.
fn header_text(stanzas: &[Stanza], file_key: &FileKey) -> Vec<u8> {
    let mut h = b"age-encryption.org/v1\n".to_vec();
    for s in stanzas {
        h.extend_from_slice(b"->");
        for word in std::iter::once(&s.tag).chain(s.args.iter()) {
            h.push(b' ');
            h.extend_from_slice(word.as_bytes());
        }
        h.push(b'\n');
        // Body lines of 64 columns; the last one is short, empty if it must be.
        let body = BASE64_STANDARD_NO_PAD.encode(&s.body);
        let mut rest = body.as_bytes();
        while rest.len() >= 64 {
            h.extend_from_slice(&rest[..64]);
            h.push(b'\n');
            rest = &rest[64..];
        }
        h.extend_from_slice(rest);
        h.push(b'\n');
    }
    h.extend_from_slice(b"---");
    let mac_key = age_core::primitives::hkdf(&[], b"header", file_key.expose_secret());
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&mac_key).expect("HMAC takes a key of any length");
    mac.update(&h);
    h.push(b' ');
    h.extend_from_slice(BASE64_STANDARD_NO_PAD.encode(mac.finalize().into_bytes()).as_bytes());
    h.push(b'\n');
    h
}

/// An age file being written to `out`: the header and nonce are written on creation, the
/// payload as chunks fill, the last chunk by [`Sealer::finish`] (without which the file is
/// cut and fails to decrypt).
pub struct Sealer<W: Write> {
    out: W,
    aead: ChaCha20Poly1305,
    /// Chunks already written.
    counter: u64,
    /// The batch being filled, laid out as it is written: chunk i's plaintext at
    /// i × SEALED, its tag after it once sealed. Only the last chunk may be partial.
    buf: Vec<u8>,
    /// Plaintext bytes in `buf`.
    filled: usize,
    threads: usize,
}

impl<W: Write> Sealer<W> {
    /// Start an age file to `recipients` over `out`, sealing on up to `threads` threads.
    pub fn new(recipients: &[&dyn age::Recipient], threads: usize, mut out: W) -> io::Result<Self> {
        let (file_key, header) = header(recipients)?;
        let mut nonce = [0u8; 16];
        getrandom::getrandom(&mut nonce).map_err(|e| io::Error::other(format!("no randomness for a nonce: {e}")))?;
        out.write_all(&header)?;
        out.write_all(&nonce)?;
        let payload_key = age_core::primitives::hkdf(&nonce, b"payload", file_key.expose_secret());
        Ok(Sealer {
            out,
            aead: ChaCha20Poly1305::new(&payload_key.into()),
            counter: 0,
            buf: Vec::with_capacity(BATCH_CHUNKS * SEALED),
            filled: 0,
            threads: threads.max(1),
        })
    }

    /// Seal every chunk in the batch and write them; `last` marks its final chunk as the
    /// file's last.
    fn flush_batch(&mut self, last: bool) -> io::Result<()> {
        let chunks = self.filled.div_ceil(CHUNK).max(1);
        let (aead, first, threads) = (&self.aead, self.counter, self.threads);
        // Room for each chunk's tag after its plaintext.
        self.buf.resize(self.filled + chunks * TAG, 0);
        let mut pieces: Vec<(u64, &mut [u8])> =
            self.buf.chunks_mut(SEALED).enumerate().map(|(i, c)| (first + i as u64, c)).collect();
        let seal = |work: &mut [(u64, &mut [u8])]| -> Result<(), chacha20poly1305::aead::Error> {
            for (n, piece) in work.iter_mut() {
                let len = piece.len() - TAG;
                let is_last = last && *n == first + chunks as u64 - 1;
                let tag = aead.encrypt_in_place_detached(&chunk_nonce(*n, is_last).into(), b"", &mut piece[..len])?;
                piece[len..].copy_from_slice(&tag);
            }
            Ok(())
        };
        let sealed = if threads > 1 && pieces.len() > 1 {
            let share = pieces.len().div_ceil(threads);
            std::thread::scope(|s| {
                let mut parts = pieces.chunks_mut(share);
                let mine = parts.next();
                let others: Vec<_> = parts.map(|p| s.spawn(move || seal(p))).collect();
                let mut res = mine.map_or(Ok(()), seal);
                for h in others {
                    res = res.and(h.join().unwrap_or(Err(chacha20poly1305::aead::Error)));
                }
                res
            })
        } else {
            seal(&mut pieces)
        };
        sealed.map_err(|_| io::Error::other("sealing a chunk failed"))?;
        self.out.write_all(&self.buf)?;
        self.counter += chunks as u64;
        self.buf.clear();
        self.filled = 0;
        Ok(())
    }

    /// Seal what is left as the last chunk (an empty one for an empty file) and return
    /// the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_batch(true)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A chunk's nonce: the 11-byte big-endian counter, then 1 for the last chunk, else 0.
fn chunk_nonce(counter: u64, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    n
}

impl<W: Write> Write for Sealer<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        while !data.is_empty() {
            // A full batch is written only once more data shows its last chunk is not
            // the file's last.
            if self.filled == BATCH_CHUNKS * CHUNK {
                self.flush_batch(false)?;
            }
            // Into the current chunk's slot, which starts after the tags of the chunks
            // before it.
            let in_chunk = self.filled % CHUNK;
            let n = data.len().min(CHUNK - in_chunk);
            if in_chunk == 0 && self.filled > 0 {
                // Leave room for the previous chunk's tag.
                self.buf.resize(self.buf.len() + TAG, 0);
            }
            self.buf.extend_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Chunks are written whole: a flush cannot seal a partial one.
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;
    use std::io::Read;

    /// What the `age` crate's own reader makes of `stored` with `id`.
    fn open(stored: &[u8], id: &age::x25519::Identity) -> Result<Vec<u8>, String> {
        let dec = age::Decryptor::new(stored).map_err(|e| format!("header: {e}"))?;
        let mut r = dec.decrypt(std::iter::once(id as &dyn age::Identity)).map_err(|e| format!("key: {e}"))?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(|e| format!("payload: {e}"))?;
        Ok(out)
    }

    fn seal(data: &[u8], ids: &[&age::x25519::Identity], threads: usize, write_size: usize) -> Vec<u8> {
        let recipients: Vec<age::x25519::Recipient> = ids.iter().map(|i| i.to_public()).collect();
        let refs: Vec<&dyn age::Recipient> = recipients.iter().map(|r| r as &dyn age::Recipient).collect();
        let mut w = Sealer::new(&refs, threads, Vec::new()).unwrap();
        for piece in data.chunks(write_size.max(1)) {
            w.write_all(piece).unwrap();
        }
        w.finish().unwrap()
    }

    /// Deterministic bytes that differ from chunk to chunk, so a chunk out of place shows.
    fn bytes(n: usize) -> Vec<u8> {
        let mut x: u32 = 0x9e37_79b9;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    #[test]
    fn the_age_crate_opens_every_size_around_chunk_and_batch_edges() {
        let id = age::x25519::Identity::generate();
        let batch = BATCH_CHUNKS * CHUNK;
        for n in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, batch - 1, batch, batch + 1, 2 * batch + 7] {
            let data = bytes(n);
            for (threads, write_size) in [(1, 1 << 20), (3, 1 << 20), (2, 4096), (2, CHUNK + 3)] {
                let stored = seal(&data, &[&id], threads, write_size);
                // Header + nonce + one tag per chunk (at least one chunk).
                let chunks = n.div_ceil(CHUNK).max(1);
                let header = stored.len() - 16 - n - chunks * TAG;
                assert!(stored[..header].starts_with(b"age-encryption.org/v1\n-> X25519 "), "n={n}");
                assert_eq!(open(&stored, &id).as_deref(), Ok(&data[..]), "n={n} threads={threads} writes={write_size}");
            }
        }
    }

    #[test]
    fn every_recipient_opens_it_and_no_one_else() {
        let (a, b, c) =
            (age::x25519::Identity::generate(), age::x25519::Identity::generate(), age::x25519::Identity::generate());
        let data = bytes(5 * CHUNK + 11);
        let stored = seal(&data, &[&a, &b], 2, 1 << 20);
        assert_eq!(open(&stored, &a).as_deref(), Ok(&data[..]));
        assert_eq!(open(&stored, &b).as_deref(), Ok(&data[..]));
        assert!(open(&stored, &c).unwrap_err().starts_with("key:"));
        // A fresh file key and nonce each time: the same plaintext never seals the same.
        assert_ne!(seal(&data, &[&a], 1, 1 << 20), stored);
        assert!(!a.to_string().expose_secret().is_empty());
    }

    #[test]
    fn a_cut_a_flipped_byte_or_a_forged_header_fails_to_open() {
        let id = age::x25519::Identity::generate();
        let data = bytes(2 * CHUNK + 5);
        let stored = seal(&data, &[&id], 2, 1 << 20);
        // Cut after the first whole chunk: the reader must not take it as the end.
        let cut = stored.len() - (CHUNK + 5 + TAG);
        assert!(open(&stored[..cut], &id).unwrap_err().starts_with("payload:"));
        let mut flipped = stored.clone();
        let at = stored.len() / 2;
        flipped[at] ^= 0x40;
        assert!(open(&flipped, &id).unwrap_err().starts_with("payload:"));
        // The MAC covers the stanzas: one changed byte of the magic line's neighbour fails.
        let mut forged = stored.clone();
        let dash = stored.windows(4).position(|w| w == b"\n---").unwrap();
        forged[dash - 1] ^= 0x01;
        assert!(open(&forged, &id).is_err());
    }
}
