//! TLS on a [`Listener`]: the gateway terminating its clients' TLS itself.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::prepared::prepared;
use super::{Io, Listener};

/// How long a client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `inner`'s connections under TLS, as `config` serves it; a connection
/// whose handshake fails or takes over ten seconds is dropped.
///
/// # Errors
/// When `inner` cannot say its address.
pub fn tls_listener(
    inner: Box<dyn Listener>,
    config: Arc<rustls::ServerConfig>,
) -> io::Result<Box<dyn Listener>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    prepared(inner, move |io| {
        let acceptor = acceptor.clone();
        async move {
            let peer = io.peer();
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await;
            // A failed handshake is the client's problem: nothing to hand on.
            match handshake {
                Ok(Ok(stream)) => Some(Io::new(stream, peer)),
                _ => None,
            }
        }
    })
}
