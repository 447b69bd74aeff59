//! `s3://BUCKET/KEY` as typed on a command line.

use crate::cli::Failure;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub key: String,
}

impl S3Url {
    /// Parse `s3://BUCKET/KEY`. With `allow_prefix`, the key may be empty or end in `/`
    /// (for commands that work on a prefix).
    pub fn parse(text: &str, allow_prefix: bool) -> Result<S3Url, Failure> {
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| Failure::usage(format!("'{text}' is not an s3://BUCKET/KEY URL")))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.len() < 3
            || bucket.len() > 63
            || !bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            return Err(Failure::usage(format!(
                "'{text}': bucket name '{bucket}' must be 3-63 characters of a-z, 0-9, '-' and '.'"
            )));
        }
        if !allow_prefix && (key.is_empty() || key.ends_with('/')) {
            return Err(Failure::usage(format!("'{text}' names no object: expected s3://{bucket}/KEY")));
        }
        if key.len() > 1024 {
            return Err(Failure::usage(format!("'{text}': key is longer than 1024 bytes")));
        }
        Ok(S3Url { bucket: bucket.to_string(), key: key.to_string() })
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let u = S3Url::parse("s3://my-bucket/a/b@c.zfs", false).unwrap();
        assert_eq!((u.bucket.as_str(), u.key.as_str()), ("my-bucket", "a/b@c.zfs"));
        assert_eq!(u.to_string(), "s3://my-bucket/a/b@c.zfs");
        assert_eq!(S3Url::parse("s3://bkt", true).unwrap().key, "");
        assert_eq!(S3Url::parse("s3://bkt/pre/", true).unwrap().key, "pre/");
    }

    #[test]
    fn rejects() {
        for bad in ["http://b/k", "s3://", "s3://ab/k", "s3://Bucket/k", "s3://bkt", "s3://bkt/", "s3://bkt/dir/"] {
            let e = S3Url::parse(bad, false).unwrap_err();
            assert!(e.message.contains(bad) || e.message.contains("bucket"), "{bad}: {}", e.message);
        }
    }
}
