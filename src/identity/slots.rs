//! The bcrypt slots: how many password verifications run at once, and in which order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::types::AuthError;

/// bcrypt runs at most one per core, so a flood of bad logins queues instead of taking every
/// blocking thread and starving token signing. Checks of credentials from a pair or address
/// that failed recently ("suspect") must first pass a lane of half the slots, so they never
/// fill the queue ahead of first attempts: a user's cold login waits for at most that many
/// checks, however many guesses are queued. The suspect queue is bounded; past it, a fast 503
/// for the suspect side only.
pub(super) struct BcryptSlots {
    slots: Arc<tokio::sync::Semaphore>,
    suspect_lane: Arc<tokio::sync::Semaphore>,
    suspect_waiting: AtomicUsize,
}

/// Suspect checks allowed to wait for the lane at once.
const MAX_SUSPECT_WAITING: usize = 64;

impl BcryptSlots {
    pub(super) fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(cores)),
            suspect_lane: Arc::new(tokio::sync::Semaphore::new((cores / 2).max(1))),
            suspect_waiting: AtomicUsize::new(0),
        }
    }

    pub(super) async fn acquire(&self, suspect: bool) -> Result<Slot, AuthError> {
        let closed = |_| AuthError::Unavailable("password verification is shutting down".into());
        let lane = if suspect {
            if self.suspect_waiting.fetch_add(1, Ordering::AcqRel) >= MAX_SUSPECT_WAITING {
                self.suspect_waiting.fetch_sub(1, Ordering::AcqRel);
                return Err(AuthError::Unavailable(
                    "too many password checks after failed logins are waiting; try again shortly"
                        .into(),
                ));
            }
            let waiting = Waiting(&self.suspect_waiting);
            let lane = self.suspect_lane.clone().acquire_owned().await;
            drop(waiting);
            Some(lane.map_err(closed)?)
        } else {
            None
        };
        let slot = self.slots.clone().acquire_owned().await.map_err(closed)?;
        Ok(Slot(slot, lane))
    }
}

/// Counts a waiter until dropped, also when the waiting request is abandoned.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(super) struct Slot(
    #[allow(dead_code)] tokio::sync::OwnedSemaphorePermit,
    #[allow(dead_code)] Option<tokio::sync::OwnedSemaphorePermit>,
);
