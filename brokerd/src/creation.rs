//! One creation at a time per name: how topics and channels come into being without a
//! check-then-insert race and without holding a shared lock across disk I/O.
//!
//! Invariants:
//! - For each name at most one creation runs at a time. The first caller that misses the
//!   name registers a gate (a tokio mutex) and creates while holding it; every concurrent
//!   caller waits on that gate and then looks again, so all of them end with the same object.
//! - A creation runs in a task of its own: a caller that goes away (a closed connection, a
//!   cancelled request) never leaves a creation half done, and its gate is always removed.
//! - The map of gates is behind a std mutex held only to look up, insert or remove a gate,
//!   never across an `.await`; publishes and lookups of existing objects never touch it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ferry_store::StoreError;

/// Why a topic or channel could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// Its files could not be made (disk full, permissions...); nothing was left behind.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The topic is being deleted or the broker is stopping.
    #[error("exiting")]
    Exiting,
    /// The creation task panicked or was cancelled.
    #[error("creation failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A replica's Raft node could not start (its files were removed).
    #[error("replica failed: {0}")]
    Replica(String),
}

/// The gates of the creations in progress, by name.
#[derive(Debug, Default)]
pub(crate) struct Creations {
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Creations {
    fn gates(&self) -> MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.gates.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What `find` returns, or else the result of `create`, run in a task of its own and at
    /// most once at a time for `name`. `create` must make what it creates findable before it
    /// returns. A creation that fails is tried again by the next caller.
    pub async fn find_or_create<T, E, Fut>(
        self: &Arc<Self>,
        name: &str,
        find: impl Fn() -> Option<T>,
        create: impl Fn() -> Fut,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: Send + 'static + From<tokio::task::JoinError>,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        loop {
            if let Some(found) = find() {
                return Ok(found);
            }
            let gate = self.gates().entry(name.to_owned()).or_default().clone();
            let held = gate.clone().lock_owned().await;
            let still_ours = self
                .gates()
                .get(name)
                .is_some_and(|g| Arc::ptr_eq(g, &gate));
            if !still_ours {
                // The creation we waited for ended (made the object, or failed): look again.
                continue;
            }
            if let Some(found) = find() {
                self.gates().remove(name);
                return Ok(found);
            }
            let creation = create();
            let this = self.clone();
            let key = name.to_owned();
            let task = tokio::spawn(async move {
                let result = creation.await;
                this.gates().remove(&key);
                drop(held);
                result
            });
            return task.await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Debug)]
    struct Failed;
    impl From<tokio::task::JoinError> for Failed {
        fn from(_: tokio::task::JoinError) -> Self {
            Failed
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_creation() {
        let creations = Arc::new(Creations::default());
        let made: Arc<Mutex<Option<Arc<u32>>>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (creations, made, runs) = (creations.clone(), made.clone(), runs.clone());
            tasks.spawn(async move {
                let find = || made.lock().unwrap().clone();
                let create = || {
                    let (made, runs) = (made.clone(), runs.clone());
                    async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        let v = Arc::new(7);
                        *made.lock().unwrap() = Some(v.clone());
                        Ok::<_, Failed>(v)
                    }
                };
                creations.find_or_create("x", find, create).await.unwrap()
            });
        }
        let first = made.clone();
        while let Some(r) = tasks.join_next().await {
            let v = r.unwrap();
            assert!(Arc::ptr_eq(&v, first.lock().unwrap().as_ref().unwrap()));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(creations.gates().is_empty());
    }

    #[tokio::test]
    async fn a_failed_creation_is_tried_again() {
        let creations = Arc::new(Creations::default());
        let attempts = Arc::new(AtomicUsize::new(0));
        let create = || {
            let attempts = attempts.clone();
            async move {
                if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(Failed)
                } else {
                    Ok(1u8)
                }
            }
        };
        assert!(
            creations
                .find_or_create("x", || None, create)
                .await
                .is_err()
        );
        assert_eq!(
            creations
                .find_or_create("x", || None, create)
                .await
                .unwrap(),
            1
        );
        assert!(creations.gates().is_empty());
    }
}
