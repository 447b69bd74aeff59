//! Building an S3 client from [`S3Args`]: the standard AWS credential chain, our timeouts
//! and retry policy, the system's CAs plus any CA bundle (`AWS_CA_BUNDLE`, a profile's
//! `ca_bundle`), and checksums only "when required" so servers other than AWS (R2, B2,
//! Ceph, Garage) accept our requests; integrity headers we send ourselves.

use crate::cli::s3_flags::S3Args;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use std::time::Duration;

pub use aws_sdk_s3::Client;

/// Long enough for a busy server's answer, short enough that a server that took the request
/// and went silent fails the request (after retries) within about two minutes, not twelve.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(20);

pub async fn connect(args: &S3Args) -> Client {
    let region = RegionProviderChain::first_try(args.region.clone().map(Region::new))
        .or_default_provider()
        .or_else(Region::new("us-east-1"));
    let retry = RetryConfig::standard()
        .with_max_attempts(args.retries() + 1)
        .with_initial_backoff(Duration::from_millis(200))
        .with_max_backoff(Duration::from_secs(20));
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(args.connect_timeout.unwrap_or(Duration::from_secs(10)))
        .read_timeout(args.read_timeout.unwrap_or(DEFAULT_READ_TIMEOUT))
        .build();
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).region(region).retry_config(retry).timeout_config(timeouts);
    if let Some(p) = &args.profile {
        loader = loader.profile_name(p);
    }
    // A private CA may also front the credential endpoints (SSO, STS, a TLS-intercepting
    // proxy): they get the same trust. Without a bundle they keep the SDK's own client.
    if let Some(b) = &args.ca_bundle {
        loader = loader.http_client(super::answer_timeout::http_client(Some(b)));
    }
    let shared = loader.load().await;
    let mut conf = aws_sdk_s3::config::Builder::from(&shared)
        .http_client(super::answer_timeout::http_client(args.ca_bundle.as_ref()))
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if let Some(e) = &args.endpoint {
        conf = conf.endpoint_url(e);
    }
    // Custom endpoints (Garage, MinIO, Ceph) rarely have wildcard DNS for buckets.
    conf = conf.force_path_style(args.path_style.unwrap_or(args.endpoint.is_some()));
    if let Some(count) = super::request_count::CountRequests::from_env() {
        conf = conf.interceptor(count);
    }
    Client::from_conf(conf.build())
}
