//! A TLS front on 127.0.0.1 for a plain-HTTP server (the bench's Garage): socat terminating
//! TLS with a certificate from a private CA made at test time by `openssl`, so the tests
//! see what a self-hosted S3 behind a private CA looks like. Stopped (its whole
//! process group: socat forks a child per connection) on drop.

use super::*;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TlsFront {
    /// `https://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The private CA that signed the front's certificate: as a bundle, it makes the front
    /// trusted.
    pub ca: PathBuf,
    /// The front's private key (PEM, but no certificate).
    pub key: PathBuf,
    child: Child,
}

/// A private CA and a server certificate it signed, for 127.0.0.1 and localhost, under
/// `dir`: `NAME-ca.pem` (and `.key`), `NAME.pem` and `NAME.key`. Returns the CA's
/// certificate, the one a bundle must hold (a self-signed certificate used directly as the
/// server's would be refused as a CA used as an end entity).
pub fn private_ca(dir: &Path, name: &str) -> PathBuf {
    let p = |f: &str| dir.join(f).display().to_string();
    let (ca, ca_key) = (p(&format!("{name}-ca.pem")), p(&format!("{name}-ca.key")));
    let (cert, key, csr, ext) =
        (p(&format!("{name}.pem")), p(&format!("{name}.key")), p(&format!("{name}.csr")), p(&format!("{name}.ext")));
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write extensions");
    let openssl = |args: &[&str]| {
        let mut c = Command::new("openssl");
        c.args(args);
        run(c, None, TIMEOUT).success();
    };
    let subject = format!("/CN=zsnap test {name} CA");
    let rsa = ["-newkey", "rsa:2048", "-nodes"];
    openssl(
        &[&["req", "-x509"][..], &rsa, &["-days", "2", "-keyout", &ca_key, "-out", &ca, "-subj", &subject]].concat(),
    );
    openssl(&[&["req"][..], &rsa, &["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]].concat());
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    PathBuf::from(ca)
}

impl TlsFront {
    /// TLS on a free port of 127.0.0.1, forwarding to `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(dir: &Path, name: &str, upstream: &str) -> TlsFront {
        let ca = private_ca(dir, name);
        let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        let to = upstream.trim_start_matches("http://").trim_end_matches('/');
        let port = closed_port();
        let mut c = Command::new("socat");
        c.arg(format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={},key={}",
            cert.display(),
            key.display()
        ))
        .arg(format!("TCP:{to}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
        let child = c.spawn().unwrap_or_else(|e| panic!("cannot run socat (apt-get install socat): {e}"));
        let mut front = TlsFront { endpoint: format!("https://127.0.0.1:{port}"), ca, key: key.clone(), child };
        // Ready once it accepts connections; bounded, and a socat that died says so.
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(s)) = front.child.try_wait() {
                panic!("socat exited before listening on {port}: {s}");
            }
            assert!(start.elapsed() < Duration::from_secs(20), "socat did not listen on {port} within 20s");
            std::thread::sleep(Duration::from_millis(20));
        }
        front
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        // socat's per-connection children share its process group (ours alone).
        let _ = Command::new("kill").args(["-TERM", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.wait();
    }
}
