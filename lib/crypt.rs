//! Client-side encryption in the age format (age-encryption.org/v1): X25519 recipients on
//! the way out, identities on the way back. The stored object is a plain age file, so
//! `age -d -i KEY` opens it too.
//!
//! Where it sits: s3put runs gate → compress → encrypt → parts, s3get runs parts →
//! decrypt → decompress → gate, so the gate always judges the plaintext send stream, and
//! the object's CRC32 covers the stored (encrypted) bytes, checkable without any key.
//! age authenticates every 64 KiB chunk and the end of the stream: a flipped bit or a cut
//! object fails at the chunk it hits.
//!
//! A recipient is named in keys and reports by its fingerprint ([`fingerprint`]): the first
//! 8 hex digits of the SHA-256 of its `age1…` string; never the key itself.

pub mod seal;

use crate::cli::{ExitCode, Failure};
use age::x25519;
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::str::FromStr;

/// Where a recipients or identity file's lines come from, for messages.
fn lines_of(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// `age1…` recipients to encrypt to, in the order given, without duplicates.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Recipients {
    /// The `age1…` strings.
    keys: Vec<String>,
}

impl Recipients {
    /// Each word is an `age1…` recipient or the path of a recipients file (one per line, `#`
    /// comments), as `age -r` / `age -R` take them.
    pub fn parse(words: &[String]) -> Result<Recipients, String> {
        fn add(keys: &mut Vec<String>, k: &str, from: &str) -> Result<(), String> {
            x25519::Recipient::from_str(k)
                .map_err(|e| format!("{from}: '{k}' is not an age X25519 recipient ({e})"))?;
            if !keys.iter().any(|have| have == k) {
                keys.push(k.to_string());
            }
            Ok(())
        }
        let mut keys: Vec<String> = Vec::new();
        for w in words {
            if w.starts_with("age1") {
                add(&mut keys, w, "--encrypt-to")?;
                continue;
            }
            let text = std::fs::read_to_string(w)
                .map_err(|e| format!("cannot read recipients file {w}: {e} (a recipient starts with age1)"))?;
            let mut named = false;
            for (n, line) in lines_of(&text) {
                add(&mut keys, line, &format!("{w} line {n}"))?;
                named = true;
            }
            if !named {
                return Err(format!("recipients file {w} names no recipient"));
            }
        }
        if keys.is_empty() {
            return Err("no recipient to encrypt to".into());
        }
        Ok(Recipients { keys })
    }

    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Their fingerprints, sorted (the order recipients are given in does not matter).
    pub fn fingerprints(&self) -> Vec<String> {
        let mut f: Vec<String> = self.keys.iter().map(|k| fingerprint(k)).collect();
        f.sort();
        f
    }

    /// Only those whose fingerprint is in `wanted`.
    pub fn only(&self, wanted: &[String]) -> Recipients {
        Recipients { keys: self.keys.iter().filter(|k| wanted.contains(&fingerprint(k))).cloned().collect() }
    }

    /// An age writer over `out`, sealing on up to `threads` threads; the header is written
    /// now. Call `finish` at the end, or the file is cut (and fails to decrypt).
    pub fn encrypt<W: Write>(&self, threads: usize, out: W) -> io::Result<seal::Sealer<W>> {
        let parsed: Vec<x25519::Recipient> =
            self.keys.iter().filter_map(|k| x25519::Recipient::from_str(k).ok()).collect();
        if parsed.is_empty() {
            return Err(io::Error::other("cannot encrypt: no recipient"));
        }
        let refs: Vec<&dyn age::Recipient> = parsed.iter().map(|r| r as &dyn age::Recipient).collect();
        seal::Sealer::new(&refs, threads, out)
    }
}

/// The label of a recipient in keys and reports.
pub fn fingerprint(recipient: &str) -> String {
    let digest = Sha256::digest(recipient.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// The environment variable a passphrase-protected identity file's passphrase is read
/// from (unattended restores; a person can decrypt the file with `age -d` instead).
pub const PASSPHRASE_ENV: &str = "ZSNAP_IDENTITY_PASSPHRASE";

/// X25519 identities from identity files (`AGE-SECRET-KEY-1…` lines, as `age-keygen`
/// writes them), or from such a file itself encrypted with a passphrase (`age -p`, scrypt):
/// the break-glass key kept off line, usable only with its passphrase.
pub struct Identities {
    keys: Vec<x25519::Identity>,
    /// The files they came from, for messages.
    files: Vec<String>,
}

impl Identities {
    pub fn load(files: &[String]) -> Result<Identities, Failure> {
        let mut keys = Vec::new();
        for f in files {
            let bytes = std::fs::read(f)
                .map_err(|e| Failure::new(ExitCode::NoIdentity, format!("cannot read identity file {f}: {e}")))?;
            let text = match bytes.starts_with(b"age-encryption.org/v1\n") {
                true => unlock(f, &bytes, std::env::var(PASSPHRASE_ENV).ok())?,
                false => String::from_utf8(bytes)
                    .map_err(|_| Failure::new(ExitCode::NoIdentity, format!("identity file {f} is not text")))?,
            };
            let before = keys.len();
            for (n, line) in lines_of(&text) {
                let id = x25519::Identity::from_str(line).map_err(|_| {
                    Failure::new(
                        ExitCode::NoIdentity,
                        format!("{f} line {n} is not an age X25519 identity (AGE-SECRET-KEY-1...)"),
                    )
                })?;
                keys.push(id);
            }
            if keys.len() == before {
                return Err(Failure::new(ExitCode::NoIdentity, format!("identity file {f} holds no identity")));
            }
        }
        Ok(Identities { keys, files: files.to_vec() })
    }

    /// The fingerprints of the recipients these identities open.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys.iter().map(|k| fingerprint(&k.to_public().to_string())).collect()
    }

    pub fn files(&self) -> String {
        self.files.join(", ")
    }

    /// A reader of the plaintext of the age file `input`, once its header names one of
    /// these identities. `what` names the object in messages.
    pub fn decrypt<R: Read>(&self, input: R, what: &str) -> Result<age::stream::StreamReader<R>, Failure> {
        let dec = age::Decryptor::new(input).map_err(|e| header_failure(e, what))?;
        dec.decrypt(self.keys.iter().map(|k| k as &dyn age::Identity)).map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => Failure::new(
                ExitCode::NoIdentity,
                format!("{what} is encrypted to other recipients: no identity in {} opens it", self.files()),
            ),
            other => header_failure(other, what),
        })
    }
}

/// The text of a passphrase-protected identity file.
fn unlock(file: &str, bytes: &[u8], passphrase: Option<String>) -> Result<String, Failure> {
    let no = |m: String| Failure::new(ExitCode::NoIdentity, m);
    let Some(pass) = passphrase.filter(|p| !p.is_empty()) else {
        return Err(no(format!("identity file {file} is passphrase-protected: set {PASSPHRASE_ENV}")));
    };
    let dec = age::Decryptor::new(bytes).map_err(|e| no(format!("identity file {file}: {e}")))?;
    let id = age::scrypt::Identity::new(age::secrecy::SecretString::from(pass));
    let mut r = dec
        .decrypt(std::iter::once(&id as &dyn age::Identity))
        .map_err(|e| no(format!("cannot unlock identity file {file} with {PASSPHRASE_ENV}: {e}")))?;
    let mut text = String::new();
    r.read_to_string(&mut text).map_err(|e| no(format!("cannot unlock identity file {file}: {e}")))?;
    Ok(text)
}

fn header_failure(e: age::DecryptError, what: &str) -> Failure {
    match e {
        age::DecryptError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            Failure::new(ExitCode::Data, format!("{what}: the age header is cut"))
        }
        age::DecryptError::Io(io) => {
            Failure::new(ExitCode::Data, format!("{what}: reading the age header failed: {io}"))
        }
        age::DecryptError::UnknownFormat | age::DecryptError::InvalidHeader => {
            Failure::new(ExitCode::Data, format!("{what} is not an age file (it was stored without encryption?)"))
        }
        other => Failure::new(ExitCode::Data, format!("{what}: the age header does not verify: {other}")),
    }
}

/// An error reading decrypted bytes: a chunk that does not authenticate, or a cut end.
pub fn read_failure(e: &io::Error, what: &str) -> Failure {
    Failure::new(ExitCode::Data, format!("{what}: the encrypted data is corrupt or cut ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn pair() -> (String, String) {
        let id = x25519::Identity::generate();
        (id.to_string().expose_secret().to_string(), id.to_public().to_string())
    }

    fn tmp(name: &str, text: &str) -> String {
        let p = std::env::temp_dir().join(format!("zsnap-crypt-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    #[test]
    fn round_trip_and_the_wrong_key() {
        let (secret, public) = pair();
        let r = Recipients::parse(std::slice::from_ref(&public)).unwrap();
        let mut stored = Vec::new();
        let mut w = r.encrypt(2, &mut stored).unwrap();
        w.write_all(b"hello zfs stream").unwrap();
        w.finish().unwrap();
        assert!(stored.starts_with(b"age-encryption.org/v1\n"));
        let ids = Identities::load(&[tmp("id", &format!("# key\n{secret}\n"))]).unwrap();
        assert_eq!(ids.fingerprints(), vec![fingerprint(&public)]);
        let mut out = Vec::new();
        ids.decrypt(&stored[..], "obj").unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello zfs stream");

        let (other, _) = pair();
        let wrong = Identities::load(&[tmp("other", &other)]).unwrap();
        let e = wrong.decrypt(&stored[..], "obj").err().unwrap();
        assert_eq!(e.code, ExitCode::NoIdentity);
        assert!(e.message.contains("other recipients"), "{}", e.message);

        // One flipped byte in the payload: the chunk fails to authenticate.
        let mut bad = stored.clone();
        let at = bad.len() - 5;
        bad[at] ^= 1;
        let e = ids.decrypt(&bad[..], "obj").unwrap().read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(read_failure(&e, "obj").code, ExitCode::Data);
        // Plaintext is not an age file.
        assert_eq!(ids.decrypt(&b"plain stream"[..], "obj").err().unwrap().code, ExitCode::Data);
    }

    #[test]
    fn a_passphrase_protected_identity_unlocks_with_its_passphrase_only() {
        let (secret, _) = pair();
        let mut r = age::scrypt::Recipient::new(age::secrecy::SecretString::from("break glass".to_string()));
        r.set_work_factor(10);
        let enc = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient)).unwrap();
        let mut locked = Vec::new();
        let mut w = enc.wrap_output(&mut locked).unwrap();
        w.write_all(format!("{secret}\n").as_bytes()).unwrap();
        w.finish().unwrap();
        let text = unlock("f", &locked, Some("break glass".into())).unwrap();
        assert_eq!(text.trim(), secret);
        assert!(unlock("f", &locked, None).unwrap_err().message.contains(PASSPHRASE_ENV));
        assert_eq!(unlock("f", &locked, Some("wrong".into())).unwrap_err().code, ExitCode::NoIdentity);
    }

    #[test]
    fn recipients_from_words_and_files() {
        let (_, a) = pair();
        let (_, b) = pair();
        let file = tmp("recips", &format!("# offline key\n{b}\n\n{a}\n"));
        let r = Recipients::parse(&[a.clone(), file]).unwrap();
        assert_eq!(r.keys(), [a.clone(), b.clone()]);
        let mut want = vec![fingerprint(&a), fingerprint(&b)];
        want.sort();
        assert_eq!(r.fingerprints(), want);
        assert_eq!(r.only(&[fingerprint(&b)]).keys(), [b]);
        assert!(Recipients::parse(&["age1nope".into()]).unwrap_err().contains("not an age X25519 recipient"));
        assert!(Recipients::parse(&["/nonexistent".into()]).unwrap_err().contains("cannot read recipients file"));
        assert!(Recipients::parse(&[tmp("empty", "# none\n")]).unwrap_err().contains("names no recipient"));
        assert_eq!(fingerprint("x").len(), 8);
    }
}
