//! The check of one gateway: `GET /readyz` in plain HTTP/1.1 over the
//! network seam, healthy on 200. A gateway whose client port speaks TLS is
//! checked on its plaintext admin listener (`[edge] gateway_admin_port`).

use std::net::SocketAddr;

use futures::future::BoxFuture;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use meridian_seams::net::SharedNetwork;

use crate::health::Probe;

/// `/readyz` over HTTP through the network seam.
pub struct HttpProbe {
    network: SharedNetwork,
}

impl HttpProbe {
    /// Checks through `network`.
    pub fn new(network: SharedNetwork) -> Self {
        Self { network }
    }
}

impl Probe for HttpProbe {
    fn check(&self, target: SocketAddr) -> BoxFuture<'static, Result<(), String>> {
        let network = self.network.clone();
        Box::pin(async move {
            let io = network
                .connect(target.to_string())
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            // The connection's driver ends with the check (dropped with it).
            let driver = tokio::spawn(connection);
            let request = hyper::Request::get("/readyz")
                .header(hyper::header::HOST, target.to_string())
                .body(Empty::<Bytes>::new())
                .map_err(|e| format!("request: {e}"))?;
            let answer = sender.send_request(request).await;
            driver.abort();
            let status = answer.map_err(|e| format!("request: {e}"))?.status();
            if status == hyper::StatusCode::OK {
                Ok(())
            } else {
                Err(format!("/readyz answered {status}"))
            }
        })
    }
}
