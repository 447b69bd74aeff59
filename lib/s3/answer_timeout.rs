//! The HTTP client under every S3 request, with a read timeout that means "no answer".
//!
//! The SDK's read timeout runs from the moment a request is handed to the connection, so it
//! also runs while a part's body is still being written: on a slow uplink a large part
//! times out although bytes flow, and a timeout long enough for that part lets a server that
//! took the body and never answers hold every request for minutes. Here, for a request with
//! a body, the read timeout starts only once the body's last byte has been taken by the
//! connection; a body that stops moving is the SDK's stalled-stream protection's to catch.
//! Requests without a body keep the SDK's own timeout. Either way the timeout is an error
//! the SDK retries, like any other transport fault.

use super::ca_bundle::CaBundle;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::{tls, Builder, ConnectorBuilder};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use http_body::Body;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;

/// The SDK's default rustls client (proxies from the environment, as the SDK does), wrapped
/// so that a request with a body is timed from the end of its body. It trusts the system's
/// roots and, with `ca_bundle`, that bundle's certificates too (checked by
/// [`super::ca_bundle::check_pem`], so loading them here cannot fail).
pub fn http_client(ca_bundle: Option<&CaBundle>) -> SharedHttpClient {
    let mut trust = tls::TrustStore::default().with_native_roots(true);
    if let Some(b) = ca_bundle {
        trust = trust.with_pem_certificate(b.pem.clone());
    }
    // build() only moves its fields (aws-smithy-http-client 1.5). Were it ever to fail, the
    // bundle would be missing and a private CA's server refused (exit 71): never unverified.
    let context = tls::TlsContext::builder().with_trust_store(trust).build().unwrap_or_default();
    let inner = Builder::new().build_with_connector_fn(move |settings, components| {
        let mut conn =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc));
        conn.set_tls_context(context.clone());
        conn.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            conn.set_sleep_impl(c.sleep_impl());
        }
        conn.set_proxy_config(Some(ProxyConfig::from_env()));
        conn.build()
    });
    SharedHttpClient::new(AnswerTimeout { inner })
}

#[derive(Debug)]
struct AnswerTimeout {
    inner: SharedHttpClient,
}

impl HttpClient for AnswerTimeout {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        let mut untimed = HttpConnectorSettings::builder();
        untimed.set_connect_timeout(settings.connect_timeout());
        SharedHttpConnector::new(Connector {
            timed: self.inner.http_connector(settings, components),
            untimed: self.inner.http_connector(&untimed.build(), components),
            read_timeout: settings.read_timeout(),
        })
    }
}

#[derive(Debug)]
struct Connector {
    /// The inner connector with the SDK's read timeout, for requests without a body.
    timed: SharedHttpConnector,
    /// The same without a read timeout; ours runs from the end of the body.
    untimed: SharedHttpConnector,
    read_timeout: Option<Duration>,
}

impl HttpConnector for Connector {
    fn call(&self, mut request: HttpRequest) -> HttpConnectorFuture {
        let limit = match self.read_timeout {
            Some(limit) if request.body().content_length() != Some(0) => limit,
            _ => return self.timed.call(request),
        };
        let (sent, body_sent) = oneshot::channel();
        let body = std::mem::replace(request.body_mut(), SdkBody::taken());
        *request.body_mut() = SdkBody::from_body_1_x(SaysWhenSent::new(body, sent));
        let answer = self.untimed.call(request);
        HttpConnectorFuture::new(async move {
            tokio::pin!(answer);
            tokio::select! {
                r = &mut answer => r,
                _ = async {
                    // A body dropped unsent (the connection failed) ends `answer` too.
                    if body_sent.await.is_err() {
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(limit).await;
                } => Err(ConnectorError::timeout(
                    format!("HTTP read timeout: timed out after {limit:?} with no answer to a request sent whole (--read-timeout)")
                        .into(),
                )),
            }
        })
    }
}

/// At most this much of a body is handed to the connection at a time. A part arrives as
/// one frame of up to gigabytes, which the connection would take at once and then spend
/// minutes writing: in pieces, it takes the last one only once all but its write buffer
/// and the sockets' (a few MiB on Linux) has gone, so the timeout starts near the true end.
const PIECE: usize = 128 << 10;

/// A request body, handed over in pieces, that reports once when its last byte has been
/// taken.
struct SaysWhenSent {
    inner: Pin<Box<SdkBody>>,
    /// The rest of a frame being handed over piece by piece.
    rest: Bytes,
    sent: Option<oneshot::Sender<()>>,
}

impl SaysWhenSent {
    fn new(inner: SdkBody, sent: oneshot::Sender<()>) -> Self {
        SaysWhenSent { inner: Box::pin(inner), rest: Bytes::new(), sent: Some(sent) }
    }

    fn say_sent(&mut self) {
        if let Some(tx) = self.sent.take() {
            let _ = tx.send(());
        }
    }

    fn piece(&mut self) -> Bytes {
        let piece = self.rest.split_to(self.rest.len().min(PIECE));
        if self.rest.is_empty() && self.inner.is_end_stream() {
            self.say_sent();
        }
        piece
    }
}

impl Body for SaysWhenSent {
    type Data = Bytes;
    type Error = aws_smithy_types::body::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if !self.rest.is_empty() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(self.piece()))));
        }
        match self.inner.as_mut().poll_frame(cx) {
            Poll::Ready(None) => {
                self.say_sent();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    self.rest = data;
                    Poll::Ready(Some(Ok(http_body::Frame::data(self.piece()))))
                }
                // Trailers (aws-chunked checksums) come last: the body is sent with them.
                Err(frame) => {
                    if self.inner.is_end_stream() {
                        self.say_sent();
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let inner = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}
