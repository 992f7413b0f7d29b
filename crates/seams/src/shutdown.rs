//! Stopping long-lived work when its server stops.

use std::future::Future;

use tokio::sync::watch;

/// Runs `work` until it ends or `shutdown` turns true. With no signal, or
/// once its sender is gone without signalling, `work` runs to its end.
pub async fn until_shutdown(
    shutdown: Option<watch::Receiver<bool>>,
    work: impl Future<Output = ()>,
) {
    let stopped = async {
        if let Some(mut stop) = shutdown
            && stop.wait_for(|s| *s).await.is_ok()
        {
            return;
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        biased;
        () = stopped => {}
        () = work => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stops_work_when_signalled_and_not_before() {
        let (stop, receiver) = watch::channel(false);
        let (done, mut finished) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(until_shutdown(Some(receiver), async move {
            let _done = done;
            std::future::pending::<()>().await;
        }));
        assert!(finished.try_recv().is_err(), "still running");
        stop.send_replace(true);
        task.await.expect("task");
        assert!(finished.await.is_err(), "the work was dropped");
        // No signal: the work runs to its end.
        until_shutdown(None, async {}).await;
    }
}
