//! The embedded S3 server of local runs and tests: `s3s` (the S3 protocol,
//! SigV4 checked on every request, presigned URLs included) over `s3s-fs`
//! (objects as files under a data directory), served on a listener from the
//! network seam. aws-sdk-s3 talks to it exactly as to AWS S3.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use meridian_seams::net::Listener;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the embedded server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// The data directory cannot be created or opened.
    #[error("embedded S3 data directory {path}: {reason}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        reason: String,
    },
    /// The listener has no address.
    #[error("embedded S3 listener: {0}")]
    Listener(#[from] std::io::Error),
}

/// A running embedded S3 server.
#[derive(Debug)]
pub struct EmbeddedS3 {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl EmbeddedS3 {
    /// Serves the objects under `root` (each bucket a directory; `buckets`
    /// are created when missing) on `listener`, accepting requests signed
    /// with the one key pair given.
    ///
    /// # Errors
    /// When `root` cannot be created or opened.
    pub async fn start(
        root: &Path,
        buckets: &[String],
        listener: Box<dyn Listener>,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Result<Self, EmbeddedError> {
        let data_dir = |e: std::io::Error| EmbeddedError::DataDir {
            path: root.display().to_string(),
            reason: e.to_string(),
        };
        tokio::fs::create_dir_all(root).await.map_err(data_dir)?;
        for bucket in buckets {
            tokio::fs::create_dir_all(root.join(bucket))
                .await
                .map_err(data_dir)?;
        }
        let fs = s3s_fs::FileSystem::new(root).map_err(|e| EmbeddedError::DataDir {
            path: root.display().to_string(),
            reason: format!("{e:?}"),
        })?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(access_key_id, secret_access_key));
        let server = Self::serve_service(builder.build(), listener)?;
        tracing::info!(addr = %server.addr, root = %root.display(), "embedded S3 server listening");
        Ok(server)
    }

    /// Serves `backend` (in memory) on `listener`, SigV4 checked with the
    /// one key pair given. `max_clock_skew_secs` bounds how far a signature's
    /// time may be from the server's wall clock (S3's own is 15 minutes);
    /// the simulation, whose clock is not the machine's, raises it.
    ///
    /// # Errors
    /// When the listener has no address.
    pub fn start_in_memory(
        backend: crate::memory::MemoryS3,
        listener: Box<dyn Listener>,
        access_key_id: &str,
        secret_access_key: &str,
        max_clock_skew_secs: u32,
    ) -> Result<Self, EmbeddedError> {
        let mut builder = S3ServiceBuilder::new(backend);
        builder.set_auth(SimpleAuth::from_single(access_key_id, secret_access_key));
        let mut config = s3s::config::S3Config::default();
        config.presigned_url_max_skew_time_secs = max_clock_skew_secs;
        builder.set_config(std::sync::Arc::new(s3s::config::StaticConfigProvider::new(
            std::sync::Arc::new(config),
        )));
        Self::serve_service(builder.build(), listener)
    }

    fn serve_service(
        service: s3s::service::S3Service,
        listener: Box<dyn Listener>,
    ) -> Result<Self, EmbeddedError> {
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(listener, service, stopped));
        Ok(Self { addr, stop, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint URL for clients (`http://127.0.0.1:port`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets open requests finish for up to five seconds,
    /// and closes the listener.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

/// The S3 service answering browsers too: a web client (the gateway's
/// `/app`) PUTs and GETs presigned URLs from its own origin, which a
/// browser allows only after a CORS preflight. Preflights are answered
/// here and responses name the asking origin, as a bucket's CORS rule
/// makes S3 do (every origin: what a request may do is still decided by
/// its signature).
#[derive(Clone)]
struct WithCors(s3s::service::S3Service);

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for WithCors {
    type Response = s3s::HttpResponse;
    type Error = s3s::HttpError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn call(&self, request: http::Request<hyper::body::Incoming>) -> Self::Future {
        use http::header;
        let origin = request.headers().get(header::ORIGIN).cloned();
        let preflight = request.method() == http::Method::OPTIONS
            && request
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if preflight {
            let mut response = http::Response::new(s3s::Body::empty());
            *response.status_mut() = http::StatusCode::NO_CONTENT;
            let headers = response.headers_mut();
            if let Some(asked) = request
                .headers()
                .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            {
                headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
            }
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                http::HeaderValue::from_static("GET, PUT, HEAD"),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                http::HeaderValue::from_static("600"),
            );
            allow(headers, origin);
            return Box::pin(async move { Ok(response) });
        }
        let answer = hyper::service::Service::call(&self.0, request);
        Box::pin(async move {
            let mut response = answer.await?;
            if origin.is_some() {
                let headers = response.headers_mut();
                headers.insert(
                    header::ACCESS_CONTROL_EXPOSE_HEADERS,
                    http::HeaderValue::from_static("ETag"),
                );
                allow(headers, origin);
            }
            Ok(response)
        })
    }
}

/// Lets `origin` read the response (nothing without one).
fn allow(headers: &mut http::HeaderMap, origin: Option<http::HeaderValue>) {
    if let Some(origin) = origin {
        headers.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(http::header::VARY, http::HeaderValue::from_static("Origin"));
    }
}

async fn serve(
    mut listener: Box<dyn Listener>,
    service: s3s::service::S3Service,
    mut stopped: watch::Receiver<bool>,
) {
    let service = WithCors(service);
    let http = ConnectionBuilder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        let io = tokio::select! {
            biased;
            _ = stopped.wait_for(|s| *s) => break,
            accepted = listener.accept() => match accepted {
                Ok(io) => io,
                Err(error) => {
                    tracing::warn!(%error, "embedded S3: accept failed");
                    continue;
                }
            },
        };
        let connection = http.serve_connection(TokioIo::new(io), service.clone());
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("embedded S3: connections still open after 5 s; dropping them");
    }
}
