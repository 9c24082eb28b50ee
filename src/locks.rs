//! One async lock per key, in this process: what serializes work on one thing (a service's
//! restart plan, the alerts of one failure) without making other things wait. The map keeps
//! no more than [`KEYS_KEPT_MAX`] idle entries: keys come from untrusted input (alert
//! fingerprints), so locks nobody holds are dropped once there are that many.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Idle keys kept before the locks nobody holds or waits for are dropped.
pub const KEYS_KEPT_MAX: usize = 4_096;

#[derive(Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    /// Waits for the key's lock; the guard releases it when dropped.
    pub async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            if locks.len() >= KEYS_KEPT_MAX {
                // Held or awaited locks have clones outside the map.
                locks.retain(|_, l| Arc::strong_count(l) > 1);
            }
            locks.entry(key.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Keys in the map (held, awaited or idle).
    pub fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_lock_is_held_until_its_guard_drops_and_keys_do_not_wait_on_each_other() {
        let locks = KeyedLocks::default();
        let held = locks.lock("a").await;
        let other = tokio::time::timeout(Duration::from_millis(200), locks.lock("b")).await;
        assert!(other.is_ok(), "another key is not blocked");
        let same = tokio::time::timeout(Duration::from_millis(50), locks.lock("a")).await;
        assert!(same.is_err(), "the same key waits");
        drop(held);
        let again = tokio::time::timeout(Duration::from_millis(200), locks.lock("a")).await;
        assert!(again.is_ok());
    }

    #[tokio::test]
    async fn idle_keys_are_dropped_and_held_ones_kept() {
        let locks = KeyedLocks::default();
        let held = locks.lock("kept").await;
        for i in 0..(KEYS_KEPT_MAX * 3) {
            drop(locks.lock(&format!("k{i}")).await);
        }
        assert!(locks.len() <= KEYS_KEPT_MAX, "{}", locks.len());
        let waiting = tokio::time::timeout(Duration::from_millis(50), locks.lock("kept")).await;
        assert!(waiting.is_err(), "the held lock survived the pruning");
        drop(held);
    }
}
