//! The extra certificate authorities for a self-hosted S3 server behind a private CA:
//! `AWS_CA_BUNDLE`, else `ca_bundle` in the profile's section of the AWS config file, read
//! the way the AWS CLI reads them (the Rust SDK reads neither: awslabs/aws-sdk-rust#1362).
//! The bundle is added to the system roots, never in place of them, and verification stays
//! on. A bundle that cannot be read or holds no usable certificate is refused before any
//! request, so a typo never silently falls back to the system roots alone.

use crate::cli::{ExitCode, Failure};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// A bundle read and checked: every certificate in it parses as a trust anchor, so the
/// HTTP client's own (panicking) parse of the same bytes cannot fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaBundle {
    /// Where it was named: `AWS_CA_BUNDLE` or `ca_bundle of profile 'P' in FILE`.
    pub origin: String,
    pub path: String,
    pub pem: Vec<u8>,
    pub certificates: usize,
}

/// Where the bundle is named, if anywhere: (origin, path). `AWS_CA_BUNDLE` beats the
/// profile, as for the AWS CLI; an empty value counts as unset.
pub fn choose(env_bundle: Option<&str>, config: Option<(&str, &str)>, profile: &str) -> Option<(String, String)> {
    if let Some(p) = env_bundle.filter(|p| !p.is_empty()) {
        return Some(("AWS_CA_BUNDLE".to_string(), p.to_string()));
    }
    let (file, text) = config?;
    let path = profile_value(text, profile, "ca_bundle")?;
    Some((format!("ca_bundle of profile '{profile}' in {file}"), path))
}

/// The value of `key` in `profile`'s section of an AWS config file's text: `[default]` or
/// `[profile default]` for the default profile, `[profile NAME]` (only) for the others. Lines
/// starting with `#` or `;` are comments, indented lines are sub-properties (`s3 =` blocks),
/// and a later section of the same name adds to an earlier one, as in aws-config's parser.
pub fn profile_value(text: &str, profile: &str, key: &str) -> Option<String> {
    let mut in_profile = false;
    let mut found = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let name = rest.split(']').next().unwrap_or("").trim();
            // In the config file only the default profile may go without `profile `.
            let name = match name.strip_prefix("profile") {
                Some(n) if n.starts_with(char::is_whitespace) => Some(n.trim()),
                _ => Some(name).filter(|n| *n == "default"),
            };
            in_profile = name == Some(profile);
            continue;
        }
        if !in_profile || line.starts_with(char::is_whitespace) {
            continue;
        }
        if let Some((k, v)) = trimmed.split_once('=') {
            if k.trim() == key {
                // An inline comment needs whitespace before it, as in aws-config.
                let v = v.split(" #").next().unwrap_or("").split(" ;").next().unwrap_or("");
                found = Some(v.trim().to_string()).filter(|v| !v.is_empty());
            }
        }
    }
    found
}

/// How many certificates `pem` holds, each checked the way the TLS client will load it;
/// or why it cannot serve as a bundle.
pub fn check_pem(pem: &[u8]) -> Result<usize, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not a valid PEM file ({e})"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_string());
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| format!("certificate {} cannot be a trust anchor ({e})", i + 1))?;
    }
    Ok(roots.len())
}

/// Read the bundle named by the environment or the profile (`profile`: the --profile flag,
/// else `AWS_PROFILE`, else `default`). None when neither names one.
pub fn resolve(profile: Option<&str>) -> Result<Option<CaBundle>, Failure> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let profile = profile.map(str::to_string).or_else(|| env("AWS_PROFILE")).unwrap_or_else(|| "default".into());
    let env_bundle = env("AWS_CA_BUNDLE");
    let config_file = env("AWS_CONFIG_FILE").or_else(|| env("HOME").map(|h| format!("{h}/.aws/config")));
    // Only read the config file when the environment names no bundle: it may not exist.
    let config_text = match (&env_bundle, &config_file) {
        (None, Some(f)) => std::fs::read_to_string(f).ok().map(|t| (f.clone(), t)),
        _ => None,
    };
    let config = config_text.as_ref().map(|(f, t)| (f.as_str(), t.as_str()));
    let Some((origin, path)) = choose(env_bundle.as_deref(), config, &profile) else { return Ok(None) };
    let path = expand_home(&path, env("HOME").as_deref());
    let fail = |why: String| Failure::new(ExitCode::DnsTls, format!("CA bundle {path} ({origin}) {why}"));
    let pem = std::fs::read(&path).map_err(|e| fail(format!("cannot be read: {e}")))?;
    let certificates = check_pem(&pem).map_err(fail)?;
    Ok(Some(CaBundle { origin, path, pem, certificates }))
}

/// `~/x` as the AWS CLI expands it in `ca_bundle`.
fn expand_home(path: &str, home: Option<&str>) -> String {
    match (path.strip_prefix("~/"), home) {
        (Some(rest), Some(h)) => format!("{}/{rest}", h.trim_end_matches('/')),
        _ => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "\
# a comment
[default]
region = eu-west-1
ca_bundle = /etc/ssl/default.pem

[profile garage]
region = garage
s3 =
  ca_bundle = /not/this
ca_bundle=~/garage.pem   # the lab's CA
; another comment
[profile other]
region = us-east-1
[profile garage]
output = json
";

    #[test]
    fn profile_values() {
        let cases = [
            ("default", "ca_bundle", Some("/etc/ssl/default.pem")),
            ("garage", "ca_bundle", Some("~/garage.pem")),
            ("garage", "output", Some("json")),
            ("other", "ca_bundle", None),
            ("missing", "ca_bundle", None),
            ("garage", "s3", None),
        ];
        for (profile, key, want) in cases {
            assert_eq!(profile_value(CONFIG, profile, key).as_deref(), want, "{profile}.{key}");
        }
        assert_eq!(profile_value("[profile default]\nca_bundle = /x\n", "default", "ca_bundle").as_deref(), Some("/x"));
        // `[profilex]` is not profile x, and `[x]` is ignored in the config file (as by
        // aws-config): only `[default]` may go without the prefix.
        assert_eq!(profile_value("[profilex]\nca_bundle = /x\n", "x", "ca_bundle"), None);
        assert_eq!(profile_value("[x]\nca_bundle = /x\n", "x", "ca_bundle"), None);
    }

    #[test]
    fn the_environment_beats_the_profile() {
        let file = Some(("/root/.aws/config", CONFIG));
        assert_eq!(choose(Some("/e.pem"), file, "garage"), Some(("AWS_CA_BUNDLE".into(), "/e.pem".into())));
        assert_eq!(
            choose(Some(""), file, "garage"),
            Some(("ca_bundle of profile 'garage' in /root/.aws/config".into(), "~/garage.pem".into()))
        );
        assert_eq!(choose(None, file, "other"), None);
        assert_eq!(choose(None, None, "default"), None);
        assert_eq!(expand_home("~/garage.pem", Some("/root/")), "/root/garage.pem");
        assert_eq!(expand_home("/etc/x.pem", Some("/root")), "/etc/x.pem");
    }

    /// A throwaway self-signed CA (no key kept): only its parse matters here.
    const CA: &str = "\
-----BEGIN CERTIFICATE-----
MIIBjzCCATWgAwIBAgIUQ4PmyOPFopBzc4w1vjP9f35iFCYwCgYIKoZIzj0EAwIw
HTEbMBkGA1UEAwwSenNuYXAgdW5pdCB0ZXN0IENBMB4XDTI2MTIwMzEyNDMxNVoX
DTM2MTEzMDEyNDMxNVowHTEbMBkGA1UEAwwSenNuYXAgdW5pdCB0ZXN0IENBMFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEwJW6mVCSTz1BkQ3rnOc2QYha023dtjt1
1Yvu1KePGyLqbczR83Z+q5p3/LdkdXluKcHfxvJ9JOHX1exQndyn9qNTMFEwHQYD
VR0OBBYEFN6qWY3LndqZcllLGDXb1qcPhaYHMB8GA1UdIwQYMBaAFN6qWY3LndqZ
cllLGDXb1qcPhaYHMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIh
ALS7vbT++/RgMgvZertiWGBAk7JPJIB5qtAcFA4AreWoAiAKoEZp4mWImk02TnRh
JzRCrPwE/YejUSIY/NCeG9oa+Q==
-----END CERTIFICATE-----
";

    #[test]
    fn bundles_of_certificates() {
        assert_eq!(check_pem(CA.as_bytes()), Ok(1));
        // Text between certificates, as in distributions' bundles, is skipped.
        let two = format!("# our lab\n{CA}\nsome comment\n{CA}");
        assert_eq!(check_pem(two.as_bytes()), Ok(2));
        // A key beside the certificate is not one.
        let with_key = format!("{CA}-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n");
        assert_eq!(check_pem(with_key.as_bytes()), Ok(1));
    }

    #[test]
    fn bundles_that_cannot_serve() {
        assert!(check_pem(b"").unwrap_err().contains("holds no PEM certificate"));
        assert!(check_pem(b"\x30\x82\x01\x0a binary DER").unwrap_err().contains("holds no PEM certificate"));
        let no_end = b"-----BEGIN CERTIFICATE-----\nMIIB\n";
        assert!(check_pem(no_end).unwrap_err().contains("is not a valid PEM file"), "{:?}", check_pem(no_end));
        let not_x509 = b"-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
        assert!(check_pem(not_x509).unwrap_err().contains("certificate 1 cannot be a trust anchor"));
    }
}
