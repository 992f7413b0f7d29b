//! A [`Listener`] whose connections each go through a preparation (a TLS
//! handshake, a proxy's header) before `accept` hands them on. Each
//! preparation runs in a task of its own, so a client that connects and
//! says nothing holds that task until its deadline, never the listener.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Io, Listener};

/// Prepared connections waiting for `accept`.
const READY_BACKLOG: usize = 256;

struct Prepared {
    ready: mpsc::Receiver<io::Result<Io>>,
    local: SocketAddr,
    accepting: JoinHandle<()>,
}

/// `inner`'s connections, each handed on once `prepare` returns it (and
/// dropped when it returns `None`).
///
/// # Errors
/// When `inner` cannot say its address.
pub(super) fn prepared<F, Fut>(
    mut inner: Box<dyn Listener>,
    prepare: F,
) -> io::Result<Box<dyn Listener>>
where
    F: Fn(Io) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<Io>> + Send + 'static,
{
    let local = inner.local_addr()?;
    let (ready_tx, ready) = mpsc::channel(READY_BACKLOG);
    let accepting = tokio::spawn(async move {
        loop {
            let connection = inner.accept().await;
            let ready = ready_tx.clone();
            match connection {
                Ok(io) => {
                    let preparing = prepare(io);
                    tokio::spawn(async move {
                        if let Some(io) = preparing.await {
                            let _ = ready.send(Ok(io)).await;
                        }
                    });
                }
                // Accept errors go to the server, which logs and goes on.
                Err(error) => {
                    if ready.send(Err(error)).await.is_err() {
                        return;
                    }
                }
            }
            if ready_tx.is_closed() {
                return;
            }
        }
    });
    Ok(Box::new(Prepared {
        ready,
        local,
        accepting,
    }))
}

impl Drop for Prepared {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl Listener for Prepared {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Io>> {
        Box::pin(async move {
            self.ready
                .recv()
                .await
                .unwrap_or_else(|| Err(io::Error::other("the listener stopped")))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
