//! Admission control: how many incidents the agent holds at once, live or waiting for a live
//! actor. The API takes a [`Slot`] before it commits a new incident and answers 503 with
//! `Retry-After` when none is free, so nothing is accepted that the agent cannot hold: an
//! accepted incident is never dropped, and the memory of the waiting queue is bounded. A
//! slot travels with the incident to the supervisor and is given back when the incident's
//! actor ends (its slot is dropped).
//!
//! Reserving is one atomic compare-and-swap, no lock: the HTTP handlers take slots
//! concurrently and never together pass the capacity. Only [`Admission::reserve_over`]
//! (the webhook, which must not refuse an alert it already started to record) goes past it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Longest `Retry-After` the API asks for, in seconds.
pub const RETRY_AFTER_SECS_MAX: u64 = 5;

/// The slots of one agent: `live_max` incidents with an actor, `queue_max` more waiting.
#[derive(Debug)]
pub struct Admission {
    /// Incident actors alive at once (the supervisor's cap).
    live_max: usize,
    /// `live_max` plus the most incidents waiting for a live actor.
    capacity: usize,
    /// Slots held now (API reservations in flight, live, waiting, or backing off).
    taken: AtomicUsize,
}

/// One incident's place in the agent, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(live_max: usize, queue_max: usize) -> Arc<Self> {
        Arc::new(Admission {
            live_max: live_max.max(1),
            capacity: live_max.max(1).saturating_add(queue_max),
            taken: AtomicUsize::new(0),
        })
    }

    /// Incidents held at once: live max plus queue max.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Slots held now.
    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::Acquire)
    }

    pub fn is_full(&self) -> bool {
        self.taken() >= self.capacity
    }

    /// A slot, when one is free.
    pub fn reserve(self: &Arc<Self>) -> Option<Slot> {
        let mut n = self.taken.load(Ordering::Acquire);
        loop {
            if n >= self.capacity {
                return None;
            }
            match self
                .taken
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Some(Slot {
                        admission: self.clone(),
                    });
                }
                Err(now) => n = now,
            }
        }
    }

    /// A slot even past the capacity: for what is already committed and must be handled
    /// (an alert the webhook recorded). The callers bound how far past it they go.
    pub fn reserve_over(self: &Arc<Self>) -> Slot {
        self.taken.fetch_add(1, Ordering::AcqRel);
        Slot {
            admission: self.clone(),
        }
    }

    /// How long a refused client should wait: one second per round of live actors ahead of
    /// it in the queue, from 1 to [`RETRY_AFTER_SECS_MAX`].
    pub fn retry_after_secs(&self) -> u64 {
        let waiting = self.taken().saturating_sub(self.live_max);
        let rounds = waiting.div_ceil(self.live_max) as u64;
        rounds.clamp(1, RETRY_AFTER_SECS_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_taken_up_to_the_capacity_and_given_back_when_dropped() {
        let a = Admission::new(2, 3);
        assert_eq!(a.capacity(), 5);
        let slots: Vec<Slot> = (0..5).map(|_| a.reserve().unwrap()).collect();
        assert!(a.is_full());
        assert!(a.reserve().is_none());
        assert_eq!(a.taken(), 5);
        drop(slots);
        assert_eq!(a.taken(), 0);
        let one = a.reserve().unwrap();
        assert_eq!(a.taken(), 1);
        drop(one);
        assert!(!a.is_full());
    }

    #[test]
    fn reserving_over_the_capacity_is_counted_and_given_back() {
        let a = Admission::new(1, 0);
        let first = a.reserve().unwrap();
        assert!(a.reserve().is_none());
        let over = a.reserve_over();
        assert_eq!(a.taken(), 2);
        drop(first);
        assert!(
            a.reserve().is_none(),
            "still full while the overshoot lives"
        );
        drop(over);
        assert!(a.reserve().is_some());
    }

    #[test]
    fn retry_after_grows_with_the_queue_and_stays_bounded() {
        let a = Admission::new(2, 100);
        assert_eq!(a.retry_after_secs(), 1);
        let held: Vec<Slot> = (0..6).map(|_| a.reserve().unwrap()).collect();
        assert_eq!(
            a.retry_after_secs(),
            2,
            "4 waiting behind 2 live: two rounds"
        );
        let more: Vec<Slot> = (0..90).map(|_| a.reserve().unwrap()).collect();
        assert_eq!(a.retry_after_secs(), RETRY_AFTER_SECS_MAX);
        drop((held, more));
    }

    #[test]
    fn concurrent_reservations_never_pass_the_capacity() {
        // Goal: the compare-and-swap holds under contention. Method: 8 threads each try 10,000
        // reservations at once, keeping what they get for a while and dropping it; the count
        // seen is never above the capacity, and every slot comes back.
        let a = Admission::new(3, 4);
        let peak = Arc::new(AtomicUsize::new(0));
        let granted = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                let (a, peak, granted) = (a.clone(), peak.clone(), granted.clone());
                s.spawn(move || {
                    let mut kept = Vec::new();
                    for i in 0..10_000 {
                        if let Some(slot) = a.reserve() {
                            granted.fetch_add(1, Ordering::Relaxed);
                            kept.push(slot);
                        }
                        peak.fetch_max(a.taken(), Ordering::Relaxed);
                        if i % 3 == 0 {
                            kept.clear();
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::Relaxed) <= 7, "{peak:?}");
        assert!(granted.load(Ordering::Relaxed) > 7);
        assert_eq!(a.taken(), 0);
    }
}
