//! The S3 connection flags every binary takes (endpoint, region, profile, addressing,
//! timeouts, retries). Precedence: flag > environment > AWS config files > default.

use super::flags::Flag;
use super::values::{parse_duration, parse_number};
use super::Failure;
use lexopt::ValueExt;
use std::time::Duration;

pub const FLAGS: &[Flag] = &[
    Flag {
        short: None,
        long: "endpoint",
        value: Some("URL"),
        doc: "S3 endpoint, e.g. http://127.0.0.1:3900 or https://s3.example.net. Default: \
              $ZSNAP_S3_ENDPOINT, then $AWS_ENDPOINT_URL_S3, then $AWS_ENDPOINT_URL, then AWS itself.",
    },
    Flag {
        short: None,
        long: "region",
        value: Some("NAME"),
        doc: "Region to sign requests for. Default: $AWS_REGION, $AWS_DEFAULT_REGION, the \
              profile's region, else us-east-1.",
    },
    Flag {
        short: None,
        long: "profile",
        value: Some("NAME"),
        doc: "Profile from ~/.aws/config and ~/.aws/credentials (SSO and credential_process \
              profiles work). Default: $AWS_PROFILE. Credentials otherwise come from the standard \
              chain: environment, profile files, web identity, ECS, then EC2 IMDSv2.",
    },
    Flag {
        short: None,
        long: "path-style",
        value: None,
        doc: "Address buckets as ENDPOINT/BUCKET/KEY. The default whenever --endpoint is set \
              ($ZSNAP_S3_PATH_STYLE=0 turns it off).",
    },
    Flag {
        short: None,
        long: "virtual-host",
        value: None,
        doc: "Address buckets as BUCKET.ENDPOINT/KEY (the default for AWS itself).",
    },
    Flag {
        short: None,
        long: "connect-timeout",
        value: Some("DURATION"),
        doc: "Give up connecting to the endpoint after this long (per attempt). Default 10s.",
    },
    Flag {
        short: None,
        long: "read-timeout",
        value: Some("DURATION"),
        doc: "Give up on a request that gets no answer this long after it was sent (per attempt; \
              for a part, from its last byte; a body that stops moving fails after 20s). Default 20s.",
    },
    Flag {
        short: None,
        long: "retries",
        value: Some("N"),
        doc: "Retry each request (each part or range) up to N times with exponential backoff and \
              jitter on throttling, 5xx and connection errors. Default 5. A server that takes \
              requests and never answers fails each one within (N+1) x --read-timeout plus \
              about 6s of backoff: about 2 minutes at the defaults.",
    },
];

/// The CA bundle's entry, in every binary's ENVIRONMENT that speaks S3.
pub const CA_BUNDLE: (&str, &str) = (
    "AWS_CA_BUNDLE",
    "PEM file of CA certificates to trust besides the system's, for a server behind a private CA \
     (else ca_bundle in the profile's section of ~/.aws/config); one that cannot be read or \
     holds no certificate exits 71 before any request. Verification is never turned off.",
);

pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("ZSNAP_S3_ENDPOINT", "default for --endpoint"),
    ("ZSNAP_S3_PATH_STYLE", "1 or 0: default for --path-style / --virtual-host"),
    ("AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN", "static credentials"),
    ("AWS_PROFILE, AWS_REGION, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3", "as for the AWS CLI"),
    ("AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE", "where the profile files are"),
    CA_BUNDLE,
];

/// Parsed S3 connection settings, before any I/O.
#[derive(Clone, Debug, Default)]
pub struct S3Args {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    pub path_style: Option<bool>,
    pub connect_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub retries: Option<u32>,
    /// Extra CA certificates to trust beside the system's (`AWS_CA_BUNDLE`, a profile's
    /// `ca_bundle`), read and checked by [`S3Args::with_env`].
    pub ca_bundle: Option<crate::s3::ca_bundle::CaBundle>,
}

impl S3Args {
    /// Take the long flag `--name` if it is one of ours. Returns `Ok(false)` for anything
    /// else so the binary can report it.
    pub fn take(&mut self, name: &str, parser: &mut lexopt::Parser) -> Result<bool, Failure> {
        match name {
            "endpoint" => self.endpoint = Some(parser.value()?.string()?),
            "region" => self.region = Some(parser.value()?.string()?),
            "profile" => self.profile = Some(parser.value()?.string()?),
            "path-style" => self.path_style = Some(true),
            "virtual-host" => self.path_style = Some(false),
            "connect-timeout" => {
                self.connect_timeout = Some(parse_duration("connect-timeout", &parser.value()?.string()?)?)
            }
            "read-timeout" => self.read_timeout = Some(parse_duration("read-timeout", &parser.value()?.string()?)?),
            "retries" => self.retries = Some(parse_number("retries", &parser.value()?.string()?)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// These flags pointed at a place the settings resolved (flags > environment > config
    /// file, already weighed there), then filled from the environment.
    pub fn at(
        &self,
        endpoint: Option<String>,
        region: Option<String>,
        profile: Option<String>,
    ) -> Result<Self, Failure> {
        let mut s3 = self.clone();
        s3.endpoint = endpoint;
        s3.region = region;
        s3.profile = profile;
        s3.with_env()
    }

    /// Fill what the flags left open from the environment (flags win).
    pub fn with_env(mut self) -> Result<Self, Failure> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if self.endpoint.is_none() {
            self.endpoint =
                env("ZSNAP_S3_ENDPOINT").or_else(|| env("AWS_ENDPOINT_URL_S3")).or_else(|| env("AWS_ENDPOINT_URL"));
        }
        if self.path_style.is_none() {
            self.path_style = match env("ZSNAP_S3_PATH_STYLE").as_deref() {
                None => None,
                Some("1" | "true" | "yes") => Some(true),
                Some("0" | "false" | "no") => Some(false),
                Some(other) => return Err(Failure::usage(format!("ZSNAP_S3_PATH_STYLE: '{other}' is not 1 or 0"))),
            };
        }
        if let Some(e) = &self.endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(Failure::usage(format!("--endpoint: '{e}' must start with http:// or https://")));
            }
        }
        // Read here, before any request, so a bundle that cannot serve is one line and exit
        // 71 instead of a handshake that fails later for a reason nobody sees.
        self.ca_bundle = crate::s3::ca_bundle::resolve(self.profile.as_deref())?;
        Ok(self)
    }

    pub fn retries(&self) -> u32 {
        self.retries.unwrap_or(5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<S3Args, Failure> {
        let mut p = lexopt::Parser::from_args(args.iter().copied());
        let mut s = S3Args::default();
        while let Some(arg) = p.next()? {
            let lexopt::Arg::Long(name) = arg else { return Err(Failure::usage("not a long flag")) };
            let name = name.to_string();
            if !s.take(&name, &mut p)? {
                return Err(Failure::usage(format!("unexpected --{name}")));
            }
        }
        Ok(s)
    }

    #[test]
    fn takes_its_flags() {
        let s = parse(&[
            "--endpoint",
            "http://127.0.0.1:3900",
            "--retries",
            "2",
            "--path-style",
            "--connect-timeout",
            "3s",
        ])
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(s.retries(), 2);
        assert_eq!(s.path_style, Some(true));
        assert_eq!(s.connect_timeout, Some(Duration::from_secs(3)));
    }

    #[test]
    fn rejects_bad_values_naming_the_flag() {
        let e = parse(&["--retries", "lots"]).unwrap_err();
        assert!(e.message.contains("--retries"), "{}", e.message);
        let e = S3Args { endpoint: Some("127.0.0.1:3900".into()), ..Default::default() }.with_env().unwrap_err();
        assert!(e.message.contains("--endpoint"), "{}", e.message);
    }
}
