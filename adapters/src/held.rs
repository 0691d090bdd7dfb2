//! Connections kept between uses, without the pool's check on each return.
//!
//! sqlx checks every connection that comes back to its pool with a round trip of its own
//! (`ping`), whatever the statement before it did: on SQLite a command to the connection's
//! thread and its answer, two thread wake-ups; on PostgreSQL a network round trip. For the
//! statements of the hot paths (a grouped write, a coalesced read) that check doubled what a
//! statement cost. A [`Held`] hands out connections of a pool and takes back those whose use
//! ended well ([`HeldConnection::done`]) without the check; a connection whose user did not
//! say so (an error, a cancelled future, a transaction left open) goes back to the pool, which
//! checks it as before and replaces it if it is broken. A connection that waited unused for a
//! while is checked before it is handed out again, so that one the database closed meanwhile
//! (a restart) is not given to a write.
//!
//! Every use of a pool that a [`Held`] keeps connections of goes through the [`Held`] (the
//! stores' `pool()` for tests gives the kept ones back first): a connection kept here is not
//! in the pool, and a caller waiting on the pool itself could wait for it for ever.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clarion_domain::ports::StoreError;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, Database, Pool};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::faults::db_error;

/// How long a kept connection may wait unused before it is checked again.
const CHECK_AFTER: Duration = Duration::from_secs(1);
/// How long a connection is kept, however busy, before it goes back to the pool once: so
/// that the pool's own rules (its connections' lifetime, their check) still apply to it.
const RETURN_AFTER: Duration = Duration::from_secs(60);

/// Hands out connections of a pool, at most a given number at once, and keeps those whose
/// use ended well. Cloning it shares the connections.
pub(crate) struct Held<DB: Database> {
    shared: Arc<Shared<DB>>,
}

impl<DB: Database> Clone for Held<DB> {
    fn clone(&self) -> Self {
        Held {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<DB: Database> std::fmt::Debug for Held<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("most", &self.shared.most)
            .finish_non_exhaustive()
    }
}

struct Shared<DB: Database> {
    pool: Pool<DB>,
    most: usize,
    permits: Arc<Semaphore>,
    /// Connections whose last use ended well, with the time it ended; the last one kept is
    /// handed out first.
    kept: Mutex<Vec<Kept<DB>>>,
}

impl<DB: Database> Shared<DB> {
    fn kept(&self) -> std::sync::MutexGuard<'_, Vec<Kept<DB>>> {
        // The list is consistent at every point a panic could occur.
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<DB: Database> Held<DB> {
    /// Connections of `pool`, at most `most` handed out at once (at least one), kept between
    /// uses. Others may use `pool` directly only if it has more than `most` connections.
    pub(crate) fn new(pool: Pool<DB>, most: usize) -> Self {
        let most = most.max(1);
        Held {
            shared: Arc::new(Shared {
                pool,
                most,
                permits: Arc::new(Semaphore::new(most)),
                kept: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The pool the connections come from.
    pub(crate) fn pool(&self) -> &Pool<DB> {
        &self.shared.pool
    }

    /// A connection: a kept one if there is one (checked first if it waited long), else one
    /// of the pool. Waits while `most` are handed out.
    ///
    /// # Errors
    /// The pool's error when it has no connection to give (closed, or the database refuses
    /// new connections).
    pub(crate) async fn acquire(&self) -> Result<HeldConnection<DB>, sqlx::Error> {
        let permit = Arc::clone(&self.shared.permits)
            .acquire_owned()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        loop {
            let kept = self.shared.kept().pop();
            let (connection, taken) = match kept {
                Some(kept) if kept.since.elapsed() < CHECK_AFTER => (kept.connection, kept.taken),
                Some(mut kept) => {
                    if kept.connection.ping().await.is_err() {
                        // Back to the pool, which checks it again and closes it.
                        drop(kept);
                        continue;
                    }
                    (kept.connection, kept.taken)
                }
                None => (self.shared.pool.acquire().await?, Instant::now()),
            };
            return Ok(HeldConnection {
                connection: Some(connection),
                taken,
                keep: false,
                _permit: permit,
                shared: Arc::clone(&self.shared),
            });
        }
    }

    /// [`Held::acquire`], with the pool's error as a store error.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the pool has no connection to give.
    pub(crate) async fn get(&self) -> Result<HeldConnection<DB>, StoreError> {
        self.acquire()
            .await
            .map_err(db_error("failed to get a database connection"))
    }

    /// Gives the kept connections back to the pool, so that closing the pool does not wait
    /// for them.
    pub(crate) fn release_kept(&self) {
        let kept = std::mem::take(&mut *self.shared.kept());
        drop(kept);
    }

    /// Closes the pool, after giving it the kept connections back.
    pub(crate) async fn close(&self) {
        self.release_kept();
        self.shared.pool.close().await;
    }
}

/// A connection kept between uses.
struct Kept<DB: Database> {
    connection: PoolConnection<DB>,
    /// When its last use ended.
    since: Instant,
    /// When it was taken from the pool.
    taken: Instant,
}

/// A connection handed out by a [`Held`]. Dropped after [`HeldConnection::done`], it is kept
/// for the next use; dropped without, it goes back to the pool and its check.
pub(crate) struct HeldConnection<DB: Database> {
    connection: Option<PoolConnection<DB>>,
    /// When the connection was taken from the pool.
    taken: Instant,
    keep: bool,
    _permit: OwnedSemaphorePermit,
    shared: Arc<Shared<DB>>,
}

impl<DB: Database> HeldConnection<DB> {
    /// Says that the use ended well: every statement ran to its end and any transaction was
    /// committed or rolled back. Outside a transaction, the connection is then kept for the
    /// next use without the pool's check.
    pub(crate) fn done(mut self) {
        self.keep = true;
    }
}

impl<DB: Database> Deref for HeldConnection<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        // Present until the connection is dropped.
        self.connection
            .as_deref()
            .unwrap_or_else(|| unreachable!("a held connection is present until it is dropped"))
    }
}

impl<DB: Database> DerefMut for HeldConnection<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        self.connection
            .as_deref_mut()
            .unwrap_or_else(|| unreachable!("a held connection is present until it is dropped"))
    }
}

impl<DB: Database> Drop for HeldConnection<DB> {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        if self.keep
            && !connection.is_in_transaction()
            && !self.shared.pool.is_closed()
            && self.taken.elapsed() < RETURN_AFTER
        {
            self.shared.kept().push(Kept {
                connection,
                since: Instant::now(),
                taken: self.taken,
            });
        }
        // Otherwise the connection is dropped here and goes back to the pool, which checks
        // it (and, for the SQLite writer, replaces it if it is left inside a transaction).
    }
}

#[cfg(test)]
mod tests;
