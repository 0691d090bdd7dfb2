//! Runs template work on dedicated threads with a large stack, never on the async runtime's
//! worker threads: at most `workers` at a time, a bounded number waiting, and each awaited
//! for at most the time budget.
//!
//! A thread cannot be stopped from outside, so a render that outlives its budget is answered
//! with the time error at once and keeps its slot until fuel ends it; the capped filters and
//! the output limit keep that short. Memory is not bounded here: that is what the process
//! isolation adds.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use clarion_domain::ports::RenderError;
use tokio::sync::{Semaphore, oneshot};

/// The stack of a render thread. MiniJinja recurses for nested blocks, macros and
/// expressions; the nesting limit keeps that far below this, and the memory is only
/// reserved, not used.
pub(crate) const RENDER_STACK_BYTES: usize = 16 * 1024 * 1024;
/// How many renders may wait for a free worker, per worker, before more are refused.
pub(crate) const WAITING_PER_WORKER: usize = 64;
/// The setting that bounds a render's time, named in errors.
pub(crate) const TIME_LIMIT: &str = "templates.render_timeout_ms";

/// Bounded concurrency with a bounded queue in front of it, shared by both isolations.
#[derive(Debug)]
pub(crate) struct Slots {
    running: Arc<Semaphore>,
    waiting: Semaphore,
    workers: usize,
}

impl Slots {
    pub(crate) fn new(workers: usize) -> Self {
        let workers = workers.max(1);
        Self {
            running: Arc::new(Semaphore::new(workers)),
            waiting: Semaphore::new(workers.saturating_mul(WAITING_PER_WORKER)),
            workers,
        }
    }

    /// Waits for a free slot, or refuses at once when the queue is full.
    pub(crate) async fn acquire(
        &self,
        field: &str,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, RenderError> {
        let busy = || RenderError::Unavailable {
            field: field.to_owned(),
            detail: format!(
                "all {} template renderers are busy and {} renders are waiting; try again",
                self.workers,
                self.workers.saturating_mul(WAITING_PER_WORKER)
            ),
        };
        let queued = self.waiting.try_acquire().map_err(|_| busy())?;
        let slot = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| busy())?;
        drop(queued);
        Ok(slot)
    }
}

/// Runs jobs on fresh render threads.
#[derive(Debug)]
pub(crate) struct ThreadRunner {
    slots: Slots,
    timeout: Duration,
}

impl ThreadRunner {
    pub(crate) fn new(workers: usize, timeout: Duration) -> Self {
        Self {
            slots: Slots::new(workers),
            timeout,
        }
    }

    /// Runs `job` on a render thread and waits for it, at most for the time budget.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        field: &str,
        job: impl FnOnce() -> Result<T, RenderError> + Send + 'static,
    ) -> Result<T, RenderError> {
        let slot = self.slots.acquire(field).await?;
        let (send, receive) = oneshot::channel();
        let owned_field = field.to_owned();
        let spawned = std::thread::Builder::new()
            .name("clarion-render".to_owned())
            .stack_size(RENDER_STACK_BYTES)
            .spawn(move || {
                let result = catch_unwind(AssertUnwindSafe(job)).unwrap_or_else(|_| {
                    Err(RenderError::Other {
                        field: owned_field,
                        detail: "the template engine failed".to_owned(),
                    })
                });
                // The waiter may have given up after the time budget.
                let _ = send.send(result);
                drop(slot);
            });
        if let Err(error) = spawned {
            return Err(RenderError::Unavailable {
                field: field.to_owned(),
                detail: format!("no render thread could be started: {error}"),
            });
        }
        match tokio::time::timeout(self.timeout, receive).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RenderError::Other {
                field: field.to_owned(),
                detail: "the render thread stopped without an answer".to_owned(),
            }),
            Err(_) => Err(timed_out(field, self.timeout)),
        }
    }
}

/// The error for a render that took longer than `timeout`.
pub(crate) fn timed_out(field: &str, timeout: Duration) -> RenderError {
    RenderError::Limit {
        field: field.to_owned(),
        limit: TIME_LIMIT.to_owned(),
        detail: format!(
            "compiling and rendering the template took longer than {} ms",
            timeout.as_millis()
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;

    use super::*;

    /// Polls a future once: its output if it is ready, `None` if it waits.
    async fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            Poll::Ready(match Pin::new(&mut *future).poll(cx) {
                Poll::Ready(output) => Some(output),
                Poll::Pending => None,
            })
        })
        .await
    }

    #[tokio::test]
    async fn renders_beyond_the_queue_are_refused_at_once_and_the_queued_ones_wait() {
        let slots = Slots::new(1);
        let running = slots.acquire("body").await;
        assert!(running.is_ok());
        let mut queued: Vec<_> = (0..WAITING_PER_WORKER)
            .map(|_| Box::pin(slots.acquire("body")))
            .collect();
        for waiter in &mut queued {
            assert!(poll_once(waiter).await.is_none());
        }

        let refused = slots.acquire("body").await;

        assert!(
            matches!(&refused, Err(RenderError::Unavailable { field, detail })
                if field == "body" && detail.contains("busy")),
            "{refused:?}"
        );
        drop(running);
        assert!(matches!(poll_once(&mut queued[0]).await, Some(Ok(_))));
    }
}
