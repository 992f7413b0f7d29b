//! Where CPU-heavy work (image decoding, thumbnails) runs: a blocking pool
//! in production, so it never stalls the async workers; inline under
//! simulation, where threads would make a seed irreproducible.

/// The executor for CPU-bound work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Offload {
    /// tokio's blocking pool (production).
    #[default]
    BlockingPool,
    /// On the calling task (simulation, tests that need determinism).
    Inline,
}

/// The work could not finish: the runtime is shutting down.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("offloaded work was cancelled (runtime shutting down)")]
pub struct Cancelled;

impl Offload {
    /// Runs `work` and returns its result. A panic in `work` is resumed on
    /// the caller.
    ///
    /// # Errors
    /// [`Cancelled`] when the runtime shuts down first.
    #[allow(clippy::disallowed_methods)] // this is the seam
    pub async fn run<R: Send + 'static>(
        self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, Cancelled> {
        match self {
            Self::Inline => Ok(work()),
            Self::BlockingPool => match tokio::task::spawn_blocking(work).await {
                Ok(result) => Ok(result),
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(_) => Err(Cancelled),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_executors_return_the_result() {
        assert_eq!(Offload::Inline.run(|| 6 * 7).await.unwrap(), 42);
        assert_eq!(Offload::BlockingPool.run(|| 6 * 7).await.unwrap(), 42);
    }
}
