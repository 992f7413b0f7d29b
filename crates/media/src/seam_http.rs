//! aws-sdk-s3's HTTP client over the network seam, for plain-HTTP
//! S3-compatible endpoints (the embedded server): the SDK's connections then
//! go through the same injected [`Network`] as every other component, so a
//! test or the simulation decides where they lead. HTTPS endpoints (AWS S3)
//! keep the SDK's own TLS client.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use meridian_seams::net::{Io, SharedNetwork};

/// A connection opened through the seam.
struct SeamConnection(TokioIo<Io>);

impl Connection for SeamConnection {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for SeamConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for SeamConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Opens connections for hyper through the seam.
#[derive(Clone)]
struct SeamConnector(SharedNetwork);

impl tower::Service<http::Uri> for SeamConnector {
    type Response = SeamConnection;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<SeamConnection>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let network = self.0.clone();
        Box::pin(async move {
            if uri.scheme_str() != Some("http") {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("the seam client speaks plain HTTP only, not {uri}"),
                ));
            }
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?;
            let port = uri.port_u16().unwrap_or(80);
            let io = network.connect(format!("{host}:{port}")).await?;
            Ok(SeamConnection(TokioIo::new(io)))
        })
    }
}

/// The SDK's HTTP client over the network seam.
#[derive(Clone)]
pub struct SeamHttpClient {
    client: Client<SeamConnector, SdkBody>,
}

impl std::fmt::Debug for SeamHttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeamHttpClient")
    }
}

impl SeamHttpClient {
    /// A client opening its connections through `network`.
    pub fn new(network: SharedNetwork) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build(SeamConnector(network)),
        }
    }
}

impl HttpConnector for SeamHttpClient {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        HttpConnectorFuture::new(async move {
            let request = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::other(e.into(), None))?;
            let response = client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    ConnectorError::io(e.into())
                } else {
                    ConnectorError::other(e.into(), None)
                }
            })?;
            let (parts, body) = response.into_parts();
            let response = http::Response::from_parts(parts, SdkBody::from_body_1_x(body));
            HttpResponse::try_from(response).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

impl HttpClient for SeamHttpClient {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

/// Makes a presigned request (an upload's PUT, a download's GET) through
/// the network seam, as a plain HTTP client would: the simulation's clients
/// upload this way. Returns the status and the body.
///
/// # Errors
/// When the connection fails.
pub async fn send_presigned(
    network: SharedNetwork,
    presigned: &crate::presigned::Presigned,
    body: Vec<u8>,
) -> io::Result<(u16, bytes::Bytes)> {
    use http_body_util::BodyExt;
    let client: Client<SeamConnector, SdkBody> =
        Client::builder(TokioExecutor::new()).build(SeamConnector(network));
    let mut request = http::Request::builder()
        .method(presigned.method.as_str())
        .uri(presigned.url.as_str());
    for (name, value) in &presigned.headers {
        request = request.header(name, value);
    }
    let request = request
        .body(SdkBody::from(body))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let response = client.request(request).await.map_err(io::Error::other)?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(io::Error::other)?
        .to_bytes();
    Ok((status, bytes))
}
