//! Turning an SDK error into one line a sysadmin can act on, and the exit code for it.
//! The classification looks at the S3 error code first, then the HTTP status, then the
//! transport error's cause chain (refused, timed out, DNS, TLS).

use crate::cli::{ExitCode, Failure};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use std::error::Error as StdError;

/// What kind of failure an SDK error is, independent of the operation.
pub fn classify<E, R>(err: &SdkError<E, R>) -> (ExitCode, String)
where
    E: ProvideErrorMetadata + StdError + 'static,
    R: std::fmt::Debug + HasStatus + 'static,
{
    match err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status();
            let code = se.err().code().unwrap_or("");
            let msg = se.err().message().unwrap_or("");
            classify_service(code, msg, status)
        }
        SdkError::TimeoutError(_) => (ExitCode::Unreachable, "timed out".to_string()),
        SdkError::ResponseError(_) => (ExitCode::Protocol, format!("unreadable response: {}", cause_chain(err))),
        SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_) => classify_transport(&cause_chain(err)),
        _ => (ExitCode::Failure, cause_chain(err)),
    }
}

/// Read an S3 error code and HTTP status.
pub fn classify_service(code: &str, msg: &str, status: u16) -> (ExitCode, String) {
    let detail = if msg.is_empty() { code.to_string() } else { format!("{code}: {msg}") };
    // Some servers (Garage, MinIO) say AccessDenied for an unknown key or a wrong secret;
    // their message tells the two apart from a real permission denial.
    let lower = msg.to_ascii_lowercase();
    let bad_key = ["invalid signature", "no such key: gk", "signature does not match", "access key", "invalid key"];
    let code =
        if code == "AccessDenied" && bad_key.iter().any(|k| lower.contains(k)) { "InvalidAccessKeyId" } else { code };
    let (exit, what) = match (code, status) {
        ("NoSuchBucket", _) => (ExitCode::NoSuchBucket, "no such bucket"),
        ("NoSuchKey" | "NotFound", _) | ("", 404) => (ExitCode::NotFound, "no such object"),
        ("NoSuchUpload", _) => (ExitCode::NotFound, "no such multipart upload"),
        (
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "InvalidToken"
            | "ExpiredToken"
            | "TokenRefreshRequired"
            | "AuthorizationHeaderMalformed"
            | "InvalidSecurity",
            _,
        ) => (ExitCode::BadCredentials, "bad credentials: check the access key, secret and region"),
        ("AccessDenied" | "AllAccessDisabled" | "AccountProblem", _) | ("", 403) => {
            (ExitCode::AccessDenied, "access denied: the key may not do this")
        }
        (
            "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "TooManyRequests"
            | "RequestThrottled",
            _,
        )
        | (_, 429) => (ExitCode::Throttled, "throttled by the server past --retries"),
        ("PreconditionFailed", _) | ("", 412) => (ExitCode::Data, "object changed while it was being read"),
        ("InvalidRange", _) | ("", 416) => (ExitCode::Usage, "range is outside the object"),
        (
            "EntityTooLarge"
            | "EntityTooSmall"
            | "InvalidPart"
            | "InvalidPartOrder"
            | "BadDigest"
            | "InvalidDigest"
            | "XAmzContentChecksumMismatch"
            | "InvalidRequest",
            _,
        ) => (ExitCode::Protocol, "the server rejected the request"),
        // Not a throttle (those have their code, above): the server cannot serve at all, e.g.
        // a Garage or Ceph cluster without a quorum of its nodes, or a load balancer with no
        // backend up. Unreachable, like a dead endpoint: a client that sees the connection
        // cut mid-request instead (the server answered early) must get the same code.
        (_, 503) => (ExitCode::Unreachable, "server unavailable (503) past --retries"),
        _ => (ExitCode::Protocol, "unexpected answer from the server"),
    };
    let shown = if detail.is_empty() { format!("HTTP {status}") } else { detail };
    (exit, format!("{what} ({shown})"))
}

/// Read a transport failure (no HTTP answer) from its cause chain.
pub fn classify_transport(chain: &str) -> (ExitCode, String) {
    let c = chain.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| c.contains(n));
    if has(&[
        "no credentials",
        "credentials provider",
        "failed to load credentials",
        "credentialsnotloaded",
        "loading credentials",
    ]) {
        (
            ExitCode::BadCredentials,
            format!("no usable credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or --profile): {chain}"),
        )
    } else if has(&[
        "dns error",
        "failed to lookup",
        "name or service not known",
        "no such host",
        "temporary failure in name resolution",
    ]) {
        (ExitCode::DnsTls, format!("endpoint name did not resolve: {chain}"))
    } else if has(&["tls", "certificate", "handshake", "invalidcontenttype", "corrupt message", "ssl"]) {
        (ExitCode::DnsTls, format!("TLS failed: {chain}"))
    } else if has(&[
        "connection refused",
        "timed out",
        "timeout",
        "connection reset",
        "broken pipe",
        "unreachable",
        "connect error",
        "io error",
    ]) {
        (ExitCode::Unreachable, format!("endpoint unreachable: {chain}"))
    } else {
        (ExitCode::Failure, chain.to_string())
    }
}

/// "a: b: c" from an error and its sources, without repeats.
pub fn cause_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// Classify and wrap as a [`Failure`] with context, e.g. `upload of s3://b/k failed`.
pub fn failure<E, R>(what: impl std::fmt::Display, err: &SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + StdError + 'static,
    R: std::fmt::Debug + HasStatus + 'static,
{
    let (code, msg) = classify(err);
    Failure::new(code, format!("{what}: {msg}"))
}

/// Whether retrying could help: the SDK already retried these, but a body that failed
/// mid-stream (after the response started) is ours to retry.
pub fn is_transient(code: ExitCode) -> bool {
    matches!(code, ExitCode::Unreachable | ExitCode::Throttled | ExitCode::Failure)
}

/// The HTTP status of a raw response, abstracted so tests need no SDK types.
pub trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_smithy_runtime_api::http::Response {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_codes() {
        let cases: &[(&str, u16, ExitCode)] = &[
            ("NoSuchBucket", 404, ExitCode::NoSuchBucket),
            ("NoSuchKey", 404, ExitCode::NotFound),
            ("", 404, ExitCode::NotFound),
            ("InvalidAccessKeyId", 403, ExitCode::BadCredentials),
            ("SignatureDoesNotMatch", 403, ExitCode::BadCredentials),
            ("AccessDenied", 403, ExitCode::AccessDenied),
            ("", 403, ExitCode::AccessDenied),
            ("SlowDown", 503, ExitCode::Throttled),
            ("", 429, ExitCode::Throttled),
            ("", 503, ExitCode::Unreachable),
            ("ServiceUnavailable", 503, ExitCode::Unreachable),
            ("PreconditionFailed", 412, ExitCode::Data),
            ("InternalError", 500, ExitCode::Protocol),
        ];
        for (code, status, want) in cases {
            assert_eq!(classify_service(code, "", *status).0, *want, "{code} {status}");
        }
        let (code, _) = classify_service("AccessDenied", "Forbidden: Invalid signature", 403);
        assert_eq!(code, ExitCode::BadCredentials, "Garage's wrong-secret answer");
        let (code, _) = classify_service("AccessDenied", "Forbidden: No such key: GK00", 403);
        assert_eq!(code, ExitCode::BadCredentials, "Garage's unknown-key answer");
        let quorum = "Internal error: Could not reach quorum of 2 (sets=None). 1 of 3 request succeeded";
        let (code, msg) = classify_service("ServiceUnavailable", quorum, 503);
        assert_eq!(code, ExitCode::Unreachable, "Garage without a quorum of its nodes");
        assert!(msg.starts_with("server unavailable (503)") && msg.contains("quorum"), "{msg}");
        let (_, msg) = classify_service("AccessDenied", "Forbidden: no permission", 403);
        assert!(msg.contains("access denied") && msg.contains("Forbidden: no permission"), "{msg}");
    }

    #[test]
    fn transport_causes() {
        let cases: &[(&str, ExitCode)] = &[
            ("dispatch failure: io error: client error (Connect): tcp connect error: Connection refused (os error 111)", ExitCode::Unreachable),
            ("dispatch failure: other: client error (Connect): dns error: failed to lookup address information: Name or service not known", ExitCode::DnsTls),
            ("dispatch failure: io error: client error (Connect): received corrupt message of type InvalidContentType", ExitCode::DnsTls),
            ("dispatch failure: other: the credentials provider was not enabled: no providers in chain provided credentials", ExitCode::BadCredentials),
            ("dispatch failure: timeout: HTTP connect timeout occurred after 10s", ExitCode::Unreachable),
            ("something new", ExitCode::Failure),
        ];
        for (chain, want) in cases {
            assert_eq!(classify_transport(chain).0, *want, "{chain}");
        }
    }
}
